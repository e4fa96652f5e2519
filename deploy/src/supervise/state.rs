//! The observable state of supervised instances, serialisable for the REST view.

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where an instance listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
pub enum Endpoint {
    /// A TCP port on 127.0.0.1.
    Port(u16),
    /// A unix socket.
    Socket(PathBuf),
    /// Nothing.
    None,
}

/// How an instance's process ended (or why it never ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// It exited with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// A signal ended it.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// It did not become ready in time (and was killed).
    NotReady {
        /// The last readiness check's outcome.
        reason: String,
    },
    /// It could not be started.
    SpawnFailed {
        /// The system error.
        error: String,
    },
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited { code } => write!(f, "exited with code {code}"),
            ExitReason::Signaled { signal } => write!(f, "killed by signal {signal}"),
            ExitReason::NotReady { reason } => write!(f, "not ready in time ({reason})"),
            ExitReason::SpawnFailed { error } => write!(f, "could not start ({error})"),
        }
    }
}

/// The state of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    /// Spawned (or about to be), not ready yet.
    Starting {
        /// Its pid once spawned.
        pid: Option<u32>,
    },
    /// Ready and passing health checks.
    Running {
        /// Its pid (also its process group).
        pid: u32,
        /// When it became ready (or healthy again).
        since: DateTime<Utc>,
    },
    /// Running but failing health checks (it is not restarted for that).
    Unhealthy {
        /// Its pid.
        pid: u32,
        /// Since when.
        since: DateTime<Utc>,
        /// The last check's failure.
        reason: String,
    },
    /// It crashed; it restarts at `until`.
    Backoff {
        /// When it restarts.
        until: DateTime<Utc>,
        /// Crashes in the restart window.
        crashes: u32,
    },
    /// Too many crashes in the window: no more restarts until asked.
    GaveUp {
        /// Crashes in the window.
        crashes: u32,
        /// How the last run ended.
        last_exit: ExitReason,
    },
    /// Stopped on request (or never started).
    Stopped,
}

impl InstanceState {
    /// Whether the instance serves and passes its checks.
    pub fn is_running(&self) -> bool {
        matches!(self, InstanceState::Running { .. })
    }

    /// The pid of a live process, if any.
    pub fn pid(&self) -> Option<u32> {
        match self {
            InstanceState::Starting { pid } => *pid,
            InstanceState::Running { pid, .. } | InstanceState::Unhealthy { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceState::Starting { pid: Some(pid) } => write!(f, "starting (pid {pid})"),
            InstanceState::Starting { pid: None } => write!(f, "starting"),
            InstanceState::Running { pid, .. } => write!(f, "running (pid {pid})"),
            InstanceState::Unhealthy { pid, reason, .. } => {
                write!(f, "unhealthy (pid {pid}: {reason})")
            }
            InstanceState::Backoff { crashes, .. } => {
                write!(f, "waiting to restart after {crashes} crash(es)")
            }
            InstanceState::GaveUp { crashes, last_exit } => {
                write!(f, "gave up after {crashes} crashes, last {last_exit}")
            }
            InstanceState::Stopped => write!(f, "stopped"),
        }
    }
}

/// One instance as the REST view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// The instance number, from 0.
    pub instance: u32,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Its state.
    pub state: InstanceState,
    /// How many times it was started after the first start.
    pub restarts: u32,
    /// How its previous run ended.
    pub last_exit: Option<ExitReason>,
}
