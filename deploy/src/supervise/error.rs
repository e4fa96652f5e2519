//! Errors of the supervision module.

use std::path::PathBuf;
use std::time::Duration;

use super::InstanceStatus;

/// What went wrong while starting or controlling supervised processes.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The spec is not acceptable.
    #[error("invalid process spec for {app}/{process}: {reason}")]
    InvalidSpec {
        /// The app.
        app: String,
        /// The process name.
        process: String,
        /// Which field and why.
        reason: String,
    },
    /// The port range is empty or includes port 0.
    #[error("invalid port range {start}..={end}: it must be non-empty and not include port 0")]
    InvalidPortRange {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// Every port of the pool is allocated or bound by another process.
    #[error(
        "no free port in {start}..={end}: every port is allocated or in use; widen the range or stop apps"
    )]
    PortsExhausted {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// A file or directory operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
    /// The supervisor needs a tokio runtime.
    #[error("the supervisor must be started from within a tokio runtime")]
    NoRuntime,
}

impl SuperviseError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SuperviseError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Not every instance became healthy in time.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The deadline passed; the statuses say where each instance is.
    #[error("{app}/{process}: not all instances healthy within {timeout:?}: {}", describe(.statuses))]
    Timeout {
        /// The app.
        app: String,
        /// The process name.
        process: String,
        /// How long we waited.
        timeout: Duration,
        /// Every instance's status at the deadline.
        statuses: Vec<InstanceStatus>,
    },
    /// An instance gave up (too many crashes) or was stopped: waiting longer cannot help.
    #[error("{app}/{process}: instance {instance} will not become healthy: {}", describe(.statuses))]
    Hopeless {
        /// The app.
        app: String,
        /// The process name.
        process: String,
        /// The first instance found given up or stopped.
        instance: u32,
        /// Every instance's status.
        statuses: Vec<InstanceStatus>,
    },
}

fn describe(statuses: &[InstanceStatus]) -> String {
    statuses
        .iter()
        .map(|status| format!("#{} {}", status.instance, status.state))
        .collect::<Vec<_>>()
        .join(", ")
}
