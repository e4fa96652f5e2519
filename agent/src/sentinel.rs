//! The sentinel: the first process of every task's process group, which ties the group's
//! life to the agent's.
//!
//! PR_SET_PDEATHSIG reaches one process only: given to the task's own process, it would
//! take `sh` down with a SIGKILLed agent and leave `sleep` and every other child running.
//! So a task starts in two steps:
//!
//! ```text
//! agent ─ posix_spawn ─► sentinel (src/sentinel.c): leads the task's new process group
//!                        (its pid is the group id, the pid the agent reports, records and
//!                        waits on); never execs again
//!                          └─ fork ─► task: PR_SET_PDEATHSIG=SIGKILL from the sentinel,
//!                                     no signal blocked, stdin /dev/null; execs the
//!                                     task's program
//! ```
//!
//! The sentinel is a small C program (`src/sentinel.c`, compiled by `build.rs` and
//! embedded in the agent), run from an in-memory file made once per agent process. It
//! used to be a forked copy of the agent, which made every task start with two copies
//! of the agent's page tables (the fork of a multi-threaded process, its copy-on-write
//! faults and TLB shootdowns, then the sentinel's own fork): about a third of the work
//! of starting a short task. Now the agent spawns without copying itself
//! (`posix_spawn`, as a command without a `pre_exec` hook gets from the standard
//! library) and the sentinel, a process of a few pages, forks cheaply.
//!
//! The sentinel is named `furrow-sentinel` (command and `argv[0]`), blocks every signal,
//! reports through its standard input (a pipe) whether the task's exec succeeded, then
//! closes every file descriptor (holding the task's output pipes, or anything else, would
//! keep them open past their owners) and waits in `sigtimedwait`. On each wake-up it
//! checks:
//! - whether the task exited: it then ends the same way, with `_exit` of the task's code or
//!   by the task's signal (default action restored, core dumps off), so the agent reads
//!   the task's exit status from the sentinel exactly;
//! - whether its parent is still the agent: the agent's death wakes it (its own
//!   PR_SET_PDEATHSIG), and a parent that changed means the agent died however it died,
//!   SIGKILL included; the sentinel then kills the whole group with SIGKILL, itself
//!   included. Checking the parent, rather than trusting the signal, is what tells the
//!   agent's death from anything else: the death of the agent thread that started the
//!   task (the sentinel is handed to another thread of the agent and signalled again
//!   when that one dies), or the agent's own signals to the group (a cancel's SIGTERM),
//!   which reach the sentinel too and are ignored by it.
//!
//! The one-second timeout of the wait is a backstop: the signals make the sentinel act at
//! once, the timeout bounds how long a signal the kernel did not send could go unnoticed.
//!
//! Signals meant for a task go to its group (`kill -TERM -PGID`), as the agent's own do;
//! one sent to the sentinel's pid alone reaches only the sentinel, which ignores it.
//!
//! Processes that leave the group (`setsid`) are out of the sentinel's reach, as they are
//! out of reach of the agent's group signals.
//!
//! Memory sampling leaves the sentinel out (see `group_memory`): its pages are the
//! sentinel's own, not the task's.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::OnceLock;

/// The compiled sentinel (see `build.rs`).
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/furrow-sentinel"));

/// The sentinel's name, in `ps` and `top`.
const NAME: &str = "furrow-sentinel";

/// `MFD_EXEC` (Linux 6.3): asks for an executable memory file where the kernel's
/// `vm.memfd_noexec` setting would otherwise make it not executable.
const MFD_EXEC: libc::c_uint = 0x10;

/// The path the sentinel is started from: an in-memory file holding it, made once.
fn program_path() -> io::Result<&'static PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| install().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot prepare the task sentinel: {e}")))
}

fn install() -> io::Result<PathBuf> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
    let fd = unsafe {
        let fd = libc::memfd_create(c"furrow-sentinel".as_ptr(), libc::MFD_CLOEXEC | MFD_EXEC);
        if fd >= 0 {
            fd
        } else {
            // Kernels before 6.3 refuse the flag; their memory files are executable.
            libc::memfd_create(c"furrow-sentinel".as_ptr(), libc::MFD_CLOEXEC)
        }
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nothing else.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(PROGRAM)?;
    let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    // Kept open for the agent's life: the path names it in every child until it execs
    // (close-on-exec closes it in the sentinel once it runs).
    std::mem::forget(file);
    Ok(path)
}

/// A task's command, run under its sentinel: set its arguments, environment, working
/// directory and output as on any `Command` (through `Deref`), but not its standard input,
/// which is the sentinel's status pipe (the task's is /dev/null).
pub(crate) struct IsolatedCommand {
    command: Command,
    /// The read end of the sentinel's status pipe.
    status: OwnedFd,
}

impl IsolatedCommand {
    /// `program` (searched in the task's `PATH` when it has no slash), in a new process
    /// group led by its sentinel.
    pub fn new(program: impl AsRef<OsStr>) -> io::Result<Self> {
        let sentinel = program_path()?;
        let (status, status_writer) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let mut command = Command::new(sentinel);
        command
            .arg0(NAME)
            .arg(std::process::id().to_string())
            .arg(program)
            .stdin(status_writer)
            .process_group(0);
        Ok(Self { command, status })
    }

    /// Starts the sentinel and, through it, the task. Returns the sentinel (the group's
    /// leader, which exits as the task does) once the task's program runs, or why it
    /// could not start (as the standard library's `spawn` would: a program not found is
    /// `NotFound`).
    pub fn spawn(self) -> io::Result<Child> {
        let Self {
            mut command,
            status,
        } = self;
        let spawned = command.spawn();
        // The status pipe's write end is the sentinel's alone now: without this copy,
        // an early death of the sentinel reads as the end of the pipe.
        drop(command);
        let mut child = spawned.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start the task sentinel: {e}"))
        })?;
        let mut reported = [0u8; 4];
        let mut status = File::from(status);
        let read = loop {
            match status.read(&mut reported) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let failure = match read {
            Ok(4) => match i32::from_ne_bytes(reported) {
                0 => return Ok(child),
                errno => io::Error::from_raw_os_error(errno),
            },
            Ok(_) => io::Error::other(format!(
                "the task sentinel ended before starting the task ({})",
                status_text(child.try_wait())
            )),
            Err(e) => io::Error::other(format!("cannot read the task sentinel's status: {e}")),
        };
        // Nothing of the task runs: the sentinel exits on its own.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        Err(failure)
    }
}

fn status_text(status: io::Result<Option<std::process::ExitStatus>>) -> String {
    match status {
        Ok(Some(status)) => status.to_string(),
        Ok(None) => "still running".into(),
        Err(e) => e.to_string(),
    }
}

impl Deref for IsolatedCommand {
    type Target = Command;

    fn deref(&self) -> &Command {
        &self.command
    }
}

impl DerefMut for IsolatedCommand {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.command
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Stdio};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    use super::IsolatedCommand;
    use crate::orphans::group_members;

    fn sh(script: &str, dir: &std::path::Path) -> IsolatedCommand {
        let mut command = IsolatedCommand::new("sh").unwrap();
        command
            .args(["-c", script])
            .current_dir(dir)
            .stdout(Stdio::null());
        command
    }

    fn spawn(script: &str, dir: &std::path::Path) -> Child {
        sh(script, dir).spawn().unwrap()
    }

    fn status_of(script: &str) -> std::process::ExitStatus {
        let dir = tempfile::tempdir().unwrap();
        spawn(script, dir.path()).wait().unwrap()
    }

    /// Waits until `condition` holds, failing after a generous deadline.
    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_sentinel_exits_as_the_task_did() {
        assert_eq!(status_of("exit 0").code(), Some(0));
        assert_eq!(status_of("exit 7").code(), Some(7));
        assert_eq!(status_of("exit 255").code(), Some(255));
        assert_eq!(status_of("kill -TERM $$").signal(), Some(libc::SIGTERM));
        assert_eq!(status_of("kill -KILL $$").signal(), Some(libc::SIGKILL));
        // A signal that dumps core: the same signal, and no core dump of the sentinel,
        // even where core dumps are on. The task itself dumps none (`ulimit -c 0`).
        let dir = tempfile::tempdir().unwrap();
        let mut command = sh("ulimit -c 0; kill -ABRT $$", dir.path());
        // SAFETY: getrlimit and setrlimit are async-signal-safe. The sentinel starts with
        // core dumps as large as allowed.
        unsafe {
            command.pre_exec(|| {
                let mut limit: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
                Ok(())
            });
        }
        let status = command.spawn().unwrap().wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGABRT));
        assert!(!status.core_dumped());
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(files.is_empty(), "{files:?}");
    }

    #[test]
    fn a_program_that_cannot_start_is_a_spawn_error() {
        let started = Instant::now();
        let error = IsolatedCommand::new("/nonexistent/furrow-nope")
            .unwrap()
            .spawn()
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        let error = IsolatedCommand::new("furrow-no-such-program-on-the-path")
            .unwrap()
            .spawn()
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = IsolatedCommand::new(dir.path())
            .unwrap()
            .spawn()
            .unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_task_finds_its_program_in_its_own_path_and_reads_an_empty_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("furrow-sentinel-test-tool");
        std::fs::write(
            &script,
            "#!/bin/sh\nread line || echo \"stdin empty in $PWD\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut command = IsolatedCommand::new("furrow-sentinel-test-tool").unwrap();
        command
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .current_dir(dir.path())
            .stdout(Stdio::piped());
        let output = command.spawn().unwrap().wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim_end(),
            format!("stdin empty in {}", dir.path().display())
        );
        // A script without `#!` runs with /bin/sh, as execvp runs it.
        let bare = dir.path().join("bare-script");
        std::fs::write(&bare, "echo ran by sh with $1\n").unwrap();
        std::fs::set_permissions(&bare, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut command = IsolatedCommand::new(&bare).unwrap();
        command.arg("an-argument").stdout(Stdio::piped());
        let output = command.spawn().unwrap().wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "ran by sh with an-argument\n"
        );
    }

    #[test]
    fn the_sentinel_leads_the_group_under_its_own_name_holds_no_fd_and_ignores_group_signals() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn("exec sleep 1000", dir.path());
        let pgid = child.id();
        wait_for("the task beside the sentinel", || {
            group_members(pgid).len() == 2
        });
        // It closes its status pipe, the last one, right after reporting the start.
        wait_for("the sentinel to keep no file descriptor open", || {
            std::fs::read_dir(format!("/proc/{pgid}/fd"))
                .unwrap()
                .count()
                == 0
        });
        let name = std::fs::read_to_string(format!("/proc/{pgid}/comm")).unwrap();
        assert_eq!(name.trim_end(), "furrow-sentinel");
        let cmdline = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap();
        let arguments: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let agent = std::process::id().to_string();
        assert_eq!(
            arguments,
            ["furrow-sentinel", &agent, "sh", "-c", "exec sleep 1000"]
        );
        // Its own small program, not a copy of this process.
        let exe = std::fs::read_link(format!("/proc/{pgid}/exe")).unwrap();
        assert!(
            exe.to_string_lossy().starts_with("/memfd:furrow-sentinel"),
            "{exe:?}"
        );
        // A cancel's SIGTERM to the group ends the task but not the sentinel, which then
        // exits as the task did.
        killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }
}
