//! The agent's error type.

use std::path::PathBuf;

use thiserror::Error;

/// Why the agent could not start or run.
///
/// Only problems the agent cannot work around end up here: an unusable configuration or
/// state directory. Network failures never do; the agent keeps reconnecting.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// A file or folder of the state directory could not be read or written.
    #[error("state directory: cannot {action} {path}: {source}")]
    State {
        /// What the agent was doing ("create", "read", "write"...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The agent id file exists but does not hold a UUID.
    #[error(
        "agent id file {path} is corrupt ({reason}); fix it or delete it to register as a new agent"
    )]
    AgentId {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another agent process holds the state directory.
    #[error(
        "another agent is already using the state directory {0}; give each agent on this host its own with --state-dir DIR"
    )]
    StateInUse(PathBuf),
    /// The web server apps are mounted on could not be started or prepared.
    #[error("web server: {0}")]
    WebServer(String),
    /// The runtime could not be set up (signal handlers, actor system).
    #[error("cannot set up the agent runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl AgentError {
    /// A [`AgentError::State`] error.
    pub(crate) fn state(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::State {
            action,
            path: path.into(),
            source,
        }
    }
}

/// A `software` or `gpus` list that does not parse (see [`parse_software`](crate::parse_software)
/// and [`parse_gpus`](crate::parse_gpus)); the message names the entry and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ListError(pub(crate) String);
