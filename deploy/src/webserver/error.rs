//! Errors of the web-server module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::WebServerKind;

/// What went wrong while validating, rendering, installing or running a web server.
#[derive(Debug, thiserror::Error)]
pub enum WebServerError {
    /// The mount's fields are not acceptable (they could break or inject configuration).
    #[error("invalid mount for app {app:?}: {reason}")]
    InvalidMount {
        /// The app named by the mount.
        app: String,
        /// Which field and why.
        reason: String,
    },
    /// The server's own configuration test rejected the configuration; nothing was changed.
    #[error(
        "{kind} rejected the configuration ({command}); the previous configuration stays in place:\n{output}"
    )]
    ConfigRejected {
        /// The server.
        kind: WebServerKind,
        /// The test command that was run.
        command: String,
        /// What the server printed (its own error message).
        output: String,
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
    /// A command (server binary, test or reload command) could not be started.
    #[error("could not run {command}: {source} (is it installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The system error.
        source: std::io::Error,
    },
    /// The reload command failed.
    #[error("reloading {kind} failed ({command}): {output}")]
    ReloadFailed {
        /// The server.
        kind: WebServerKind,
        /// The reload command or signal.
        command: String,
        /// What it printed, or why it failed.
        output: String,
    },
    /// The managed server did not start listening, or exited while starting.
    #[error(
        "{kind} did not start on {listen}: {reason}; its error log {log} ends with:\n{log_tail}"
    )]
    StartFailed {
        /// The server.
        kind: WebServerKind,
        /// The address it should listen on.
        listen: SocketAddr,
        /// Why we gave up.
        reason: String,
        /// Its error log.
        log: PathBuf,
        /// The last lines of its error log.
        log_tail: String,
    },
    /// The managed server is not running (it exited or was stopped).
    #[error("{kind} is not running: {state}")]
    NotRunning {
        /// The server.
        kind: WebServerKind,
        /// How it ended.
        state: String,
    },
    /// After the reload, the server did not serve the new configuration in time.
    #[error(
        "{kind} on {address} did not serve the {expected} of app {app:?} within {timeout:?} after the reload (last probe: {last}); check the server's error log"
    )]
    NotVerified {
        /// The server.
        kind: WebServerKind,
        /// The app.
        app: String,
        /// The address probed.
        address: SocketAddr,
        /// What was expected ("new snippet" or "removal").
        expected: &'static str,
        /// How long we polled.
        timeout: Duration,
        /// The last probe's outcome.
        last: String,
    },
    /// Stopping the managed server failed.
    #[error("could not stop {kind} (pid {pid}): {reason}")]
    StopFailed {
        /// The server.
        kind: WebServerKind,
        /// Its pid.
        pid: u32,
        /// Why.
        reason: String,
    },
}

impl WebServerError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        WebServerError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(app: &str, reason: impl Into<String>) -> Self {
        WebServerError::InvalidMount {
            app: app.to_owned(),
            reason: reason.into(),
        }
    }
}
