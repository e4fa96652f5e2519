//! Running the servers' own commands (config tests, reload commands) and signalling
//! process groups.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{WebServerError, WebServerKind};

/// How long a config test or reload command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of a command: whether it exited 0, and its stderr then stdout, trimmed.
pub(super) struct CommandOutput {
    pub success: bool,
    pub text: String,
}

/// Runs `program args` to completion (bounded by [`COMMAND_TIMEOUT`]) and collects its output.
pub(super) async fn run(program: &Path, args: &[String]) -> Result<CommandOutput, WebServerError> {
    let command_line = display_command(program, args);
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|source| WebServerError::Spawn {
        command: command_line.clone(),
        source,
    })?;
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(WebServerError::Spawn {
                command: command_line,
                source,
            });
        }
        Err(_) => {
            return Ok(CommandOutput {
                success: false,
                text: format!("{command_line} did not finish within {COMMAND_TIMEOUT:?}"),
            });
        }
    };
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    if !output.status.success() && text.is_empty() {
        text = format!("exited with {}", output.status);
    }
    Ok(CommandOutput {
        success: output.status.success(),
        text,
    })
}

/// Runs a configuration test; a failure becomes [`WebServerError::ConfigRejected`] with the
/// server's own output.
pub(super) async fn check(
    kind: WebServerKind,
    program: &Path,
    args: &[String],
) -> Result<(), WebServerError> {
    let output = run(program, args).await?;
    if output.success {
        tracing::debug!(server = %kind, "configuration test passed");
        Ok(())
    } else {
        tracing::warn!(server = %kind, output = %output.text, "configuration test failed");
        Err(WebServerError::ConfigRejected {
            kind,
            command: display_command(program, args),
            output: output.text,
        })
    }
}

/// A command line for messages.
pub(super) fn display_command(program: &Path, args: &[String]) -> String {
    let mut line = program.display().to_string();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// Sends `signal` to process group `pgid`; a group that no longer exists is not an error.
pub(super) fn signal_group(pgid: u32, signal: Signal) -> Result<(), nix::Error> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Err(nix::Error::EINVAL);
    };
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Whether any process of group `pgid` still exists.
pub(super) fn group_alive(pgid: u32) -> bool {
    i32::try_from(pgid)
        .map(|raw| killpg(Pid::from_raw(raw), None).is_ok())
        .unwrap_or(false)
}

/// Whether process `pid` exists.
pub(super) fn process_alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// The command line of process `pid`, arguments joined by spaces (empty if unreadable).
pub(super) fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// The last `lines` lines of a log file, for error messages.
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
