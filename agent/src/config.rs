//! What the agent is told at start, and the fixed tuning behind it.

use std::path::PathBuf;
use std::time::Duration;

use furrow_protocol::DEFAULT_MAX_FRAME;

use crate::AgentError;

/// Smallest maximum frame size that still carries a useful log batch.
const MIN_MAX_FRAME: usize = 4096;

/// Configuration of an agent.
///
/// ```
/// let config = furrow_agent::AgentConfig::new("127.0.0.1:7420", "/var/lib/furrow-agent");
/// assert_eq!(config.max_frame, furrow_protocol::DEFAULT_MAX_FRAME);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `host:port` of the master's TCP listener.
    pub master: String,
    /// Display name; the hostname when `None`.
    pub name: Option<String>,
    /// Tasks run at once; the CPU count when `None`.
    pub slots: Option<u32>,
    /// Tags the master matches against job requirements.
    pub tags: Vec<String>,
    /// Holds the agent id file, per-task working directories, the process-group files of
    /// running tasks and results the master has not acknowledged.
    pub state_dir: PathBuf,
    /// Maximum frame size in both directions.
    pub max_frame: usize,
    /// A file setting `name` and `tags`, over the values above: read at start (the agent
    /// does not start if it is missing or invalid) and again on SIGHUP, which re-registers
    /// the agent with the master under the new name and tags (an invalid file is then
    /// logged and the current values kept). One `key = value` per line, `#` comments,
    /// tags separated by commas; a key left out keeps the value above:
    ///
    /// ```text
    /// name = render-07
    /// tags = blender, gpu
    /// ```
    pub config_file: Option<PathBuf>,
}

impl AgentConfig {
    /// A configuration with defaults for everything but the master and the state
    /// directory.
    pub fn new(master: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            master: master.into(),
            name: None,
            slots: None,
            tags: Vec::new(),
            state_dir: state_dir.into(),
            max_frame: DEFAULT_MAX_FRAME,
            config_file: None,
        }
    }

    /// Checks the values the agent cannot work with.
    pub(crate) fn validate(&self) -> Result<(), AgentError> {
        if self.master.trim().is_empty() {
            return Err(AgentError::Config(
                "the master address is empty (expected host:port)".into(),
            ));
        }
        if self.slots == Some(0) {
            return Err(AgentError::Config(
                "slots must be at least 1 (or unset for one per cpu)".into(),
            ));
        }
        if self.max_frame < MIN_MAX_FRAME {
            return Err(AgentError::Config(format!(
                "max_frame of {} bytes is too small; use at least {MIN_MAX_FRAME}",
                self.max_frame
            )));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(AgentError::Config("the state directory is empty".into()));
        }
        if self
            .config_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(AgentError::Config(
                "the configuration file path is empty".into(),
            ));
        }
        Ok(())
    }
}

/// Timings and bounds that are not configuration but are gathered here so they read as
/// one policy (and tests can shorten them).
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// First reconnect delay.
    pub backoff_start: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// Time the master has to answer a registration.
    pub register_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a task is cancelled or exceeds its limit.
    pub kill_grace: Duration,
    /// Time allowed at shutdown for the master to acknowledge finished results.
    pub shutdown_drain: Duration,
    /// Log text the link holds while the master is away before it drops lines.
    pub spool_log_bytes: usize,
    /// Failed task working directories kept for inspection.
    pub keep_failed_dirs: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            backoff_start: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            register_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            shutdown_drain: Duration::from_secs(3),
            spool_log_bytes: 32 * 1024 * 1024,
            keep_failed_dirs: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unusable_values_with_reasons() {
        let good = AgentConfig::new("127.0.0.1:1", "/tmp/x");
        assert!(good.validate().is_ok());
        let cases = [
            (AgentConfig::new(" ", "/tmp/x"), "master address"),
            (
                AgentConfig {
                    slots: Some(0),
                    ..good.clone()
                },
                "slots",
            ),
            (
                AgentConfig {
                    max_frame: 10,
                    ..good.clone()
                },
                "max_frame",
            ),
            (AgentConfig::new("h:1", ""), "state directory"),
            (
                AgentConfig {
                    config_file: Some(PathBuf::new()),
                    ..good.clone()
                },
                "configuration file",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
