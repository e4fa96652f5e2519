//! The life of one instance: spawn, readiness, health, exit, backoff, give up, stop.
//!
//! One tokio task per instance owns its child and is the only writer of its status.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::health::{self, Probe};
use super::isolation::Plan;
use super::logs::{LogSink, LogSource, LogStream, pump};
use super::{Endpoint, ExitReason, InstanceState, InstanceStatus, ProcessSpec};

/// Between readiness checks of a starting instance.
const READY_POLL: Duration = Duration::from_millis(50);

/// What the handle asks of an instance task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    /// Stop the process and end the task.
    Stop,
    /// Start again now: from `GaveUp` or `Backoff`, or restart a live process.
    Restart,
}

/// Everything one instance task needs, prepared by the supervisor.
pub(super) struct Instance {
    pub spec: Arc<ProcessSpec>,
    pub index: u32,
    pub endpoint: Endpoint,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub probe: Probe,
    pub pid_file: PathBuf,
    pub plan: Option<Arc<Plan>>,
    pub source: LogSource,
    pub sink: Arc<dyn LogSink>,
    pub status: Arc<watch::Sender<Vec<InstanceStatus>>>,
    /// The live process group (0: none), for the handle's kill on drop.
    pub pgid: Arc<AtomicU32>,
}

/// How a run of the process ended.
enum RunEnd {
    /// It exited or failed to start/become ready: a crash.
    Crashed(ExitReason),
    /// Stopped on request: the task ends.
    Stopped,
    /// Restarted on request: not a crash.
    Restarted,
}

impl Instance {
    fn set(&self, change: impl FnOnce(&mut InstanceStatus)) {
        let index = self.index as usize;
        self.status.send_modify(|all| {
            if let Some(status) = all.get_mut(index) {
                change(status);
            }
        });
    }

    fn set_state(&self, state: InstanceState) {
        tracing::debug!(app = %self.spec.app, process = %self.spec.name, instance = self.index, state = %state, "instance state");
        self.set(|status| status.state = state);
    }

    /// The task body.
    pub async fn run(self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut crashes: VecDeque<Instant> = VecDeque::new();
        let mut first = true;
        loop {
            if !first {
                self.set(|status| status.restarts += 1);
            }
            first = false;
            let end = self.run_once(&mut control).await;
            let reason = match end {
                RunEnd::Stopped => {
                    self.set_state(InstanceState::Stopped);
                    return;
                }
                RunEnd::Restarted => continue,
                RunEnd::Crashed(reason) => reason,
            };
            tracing::warn!(app = %self.spec.app, process = %self.spec.name, instance = self.index, exit = %reason, "instance ended");
            self.set(|status| status.last_exit = Some(reason.clone()));
            let now = Instant::now();
            crashes.push_back(now);
            while crashes
                .front()
                .is_some_and(|at| now.duration_since(*at) > self.spec.restart.window)
            {
                crashes.pop_front();
            }
            let count = crashes.len() as u32;
            if count >= self.spec.restart.give_up_after {
                tracing::error!(app = %self.spec.app, process = %self.spec.name, instance = self.index, crashes = count, "instance gave up");
                self.set_state(InstanceState::GaveUp {
                    crashes: count,
                    last_exit: reason,
                });
                match control.recv().await {
                    Some(Control::Restart) => {
                        crashes.clear();
                        continue;
                    }
                    Some(Control::Stop) | None => {
                        self.set_state(InstanceState::Stopped);
                        return;
                    }
                }
            }
            let wait = self.spec.restart.backoff(count);
            let until = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            self.set_state(InstanceState::Backoff {
                until,
                crashes: count,
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                command = control.recv() => match command {
                    Some(Control::Restart) => {}
                    Some(Control::Stop) | None => {
                        self.set_state(InstanceState::Stopped);
                        return;
                    }
                }
            }
        }
    }

    /// Starts the process once and follows it until it ends or is stopped.
    async fn run_once(&self, control: &mut mpsc::UnboundedReceiver<Control>) -> RunEnd {
        self.set_state(InstanceState::Starting { pid: None });
        if let Endpoint::Socket(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(err) => {
                return RunEnd::Crashed(ExitReason::SpawnFailed {
                    error: err.to_string(),
                });
            }
        };
        let pid = child.id().unwrap_or_default();
        self.pgid.store(pid, Ordering::SeqCst);
        if let Err(err) = std::fs::write(&self.pid_file, format!("{pid}\n")) {
            tracing::warn!(path = %self.pid_file.display(), error = %err, "could not write the pid file");
        }
        for (reader, stream) in [
            (
                child
                    .stdout
                    .take()
                    .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                LogStream::Stdout,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                LogStream::Stderr,
            ),
        ] {
            if let Some(reader) = reader {
                tokio::spawn(pump(
                    reader,
                    stream,
                    self.source.clone(),
                    Arc::clone(&self.sink),
                ));
            }
        }
        self.set_state(InstanceState::Starting { pid: Some(pid) });
        tracing::info!(app = %self.spec.app, process = %self.spec.name, instance = self.index, pid, "instance started");

        let end = self.follow(&mut child, pid, control).await;
        self.cleanup(pid);
        end
    }

    async fn follow(
        &self,
        child: &mut Child,
        pid: u32,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> RunEnd {
        // Readiness.
        let ready = self.wait_ready();
        tokio::pin!(ready);
        tokio::select! {
            status = child.wait() => return RunEnd::Crashed(exit_reason(status)),
            result = &mut ready => {
                if let Err(reason) = result {
                    self.kill_now(child, pid).await;
                    return RunEnd::Crashed(ExitReason::NotReady { reason });
                }
            }
            command = control.recv() => return self.on_control(command, child, pid).await,
        }
        if let Endpoint::Socket(path) = &self.endpoint {
            // The web server's workers (another user) must be able to connect; anyone
            // local could reach a port on 127.0.0.1 just the same.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
        }
        self.set_state(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        // Health.
        let policy = &self.spec.health_policy;
        let mut failures = 0u32;
        let mut ticks = tokio::time::interval_at(Instant::now() + policy.interval, policy.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = child.wait() => return RunEnd::Crashed(exit_reason(status)),
                command = control.recv() => return self.on_control(command, child, pid).await,
                _ = ticks.tick() => {
                    match health::check(&self.probe, &self.endpoint, policy.timeout).await {
                        Ok(()) => {
                            if failures >= policy.failures_before_unhealthy {
                                tracing::info!(app = %self.spec.app, process = %self.spec.name, instance = self.index, "instance healthy again");
                                self.set_state(InstanceState::Running { pid, since: Utc::now() });
                            }
                            failures = 0;
                        }
                        Err(reason) => {
                            failures += 1;
                            if failures == policy.failures_before_unhealthy {
                                tracing::warn!(app = %self.spec.app, process = %self.spec.name, instance = self.index, %reason, "instance unhealthy");
                                self.set_state(InstanceState::Unhealthy { pid, since: Utc::now(), reason });
                            }
                        }
                    }
                }
            }
        }
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.spec.health_policy.ready_timeout;
        loop {
            let last =
                match health::check(&self.probe, &self.endpoint, self.spec.health_policy.timeout)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(reason) => reason,
                };
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    async fn on_control(&self, command: Option<Control>, child: &mut Child, pid: u32) -> RunEnd {
        self.stop_child(child, pid).await;
        match command {
            Some(Control::Restart) => RunEnd::Restarted,
            Some(Control::Stop) | None => RunEnd::Stopped,
        }
    }

    /// The stop signal to the group, `SIGKILL` after the grace period.
    async fn stop_child(&self, child: &mut Child, pid: u32) {
        signal_group(pid, self.spec.stop_signal);
        if tokio::time::timeout(self.spec.stop_grace, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(app = %self.spec.app, process = %self.spec.name, instance = self.index, pid, grace = ?self.spec.stop_grace, "instance ignored the stop signal; killing its group");
            self.kill_now(child, pid).await;
        }
    }

    async fn kill_now(&self, child: &mut Child, pid: u32) {
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }

    /// After the leader is reaped: kill what is left of its group, forget the pid.
    fn cleanup(&self, pid: u32) {
        signal_group(pid, Signal::SIGKILL);
        self.pgid.store(0, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.pid_file);
        if let Endpoint::Socket(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut command = tokio::process::Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let (Some(cwd), None) = (&self.cwd, &self.plan) {
            command.current_dir(cwd);
        }
        let plan = self.plan.clone();
        let supervisor_pid = std::process::id() as libc::pid_t;
        // SAFETY: the closure makes system calls only (see `Plan::enter`); nothing is
        // allocated or locked between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if let Some(plan) = &plan {
                    plan.enter()?;
                }
                // After any setuid (which clears it): die with the supervisor's thread.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != supervisor_pid {
                    // The supervisor died before the prctl.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        command.spawn()
    }
}

fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pgid)
        && raw > 0
    {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

fn exit_reason(status: std::io::Result<std::process::ExitStatus>) -> ExitReason {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Exited { code },
            (None, Some(signal)) => ExitReason::Signaled { signal },
            (None, None) => ExitReason::Exited { code: -1 },
        },
        Err(err) => ExitReason::SpawnFailed {
            error: format!("waiting for the process: {err}"),
        },
    }
}
