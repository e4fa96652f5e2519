//! Readiness and health checks of one instance.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::Endpoint;
use super::isolation::Plan;
use crate::webserver::probe::{self, ProbeTarget};

/// An instance's check with its placeholders already substituted.
#[derive(Debug, Clone)]
pub(super) enum Probe {
    /// The endpoint accepts a connection (no health check configured).
    Connect,
    /// `GET path` answers 2xx or 3xx.
    Http(String),
    /// The command exits 0. With a `plan` it runs in a namespace like the instance's,
    /// as the app's ids, with exactly `env`; without, on the host.
    Command {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        plan: Option<Arc<Plan>>,
    },
}

/// Runs the check once, bounded by `timeout`; `Err` says why it failed.
pub(super) async fn check(
    probe: &Probe,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<(), String> {
    match probe {
        Probe::Connect => connect(endpoint, timeout).await,
        Probe::Http(path) => {
            let target = match endpoint {
                Endpoint::Port(port) => ProbeTarget::Tcp(([127, 0, 0, 1], *port).into()),
                Endpoint::Socket(path) => ProbeTarget::Unix(path.clone()),
                Endpoint::None => return Err("no endpoint to send the health request to".into()),
            };
            let response = probe::get(&target, "localhost", path, timeout).await?;
            if (200..400).contains(&response.status) {
                Ok(())
            } else {
                Err(format!("GET {path} answered {}", response.status))
            }
        }
        Probe::Command { argv, env, plan } => run_command(argv, env, plan.as_ref(), timeout).await,
    }
}

async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        match endpoint {
            Endpoint::Port(port) => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .map(drop)
                .map_err(|err| format!("connect to port {port}: {err}")),
            Endpoint::Socket(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(drop)
                .map_err(|err| format!("connect to {}: {err}", path.display())),
            Endpoint::None => Ok(()),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no connection within {timeout:?}")))
}

async fn run_command(
    argv: &[String],
    env: &[(String, String)],
    plan: Option<&Arc<Plan>>,
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty health command".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(plan) = plan {
        // The app's command sees what the app sees (its paths, its environment only).
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let plan = Arc::clone(plan);
        // SAFETY: `Plan::enter` makes system calls only; nothing is allocated or locked
        // between fork and exec.
        unsafe {
            command.pre_exec(move || plan.enter());
        }
    }
    let child = command
        .spawn()
        .map_err(|err| format!("could not run {program}: {err}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or_default();
            Err(format!("{program} {}: {last}", output.status))
        }
        Ok(Err(err)) => Err(format!("waiting for {program}: {err}")),
        Err(_) => {
            // kill_on_drop got the leader; its children share the group.
            if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Err(format!("{program} did not finish within {timeout:?}"))
        }
    }
}
