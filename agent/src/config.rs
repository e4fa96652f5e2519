//! What the agent is told at start, and the fixed tuning behind it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use furrow_deploy::webserver::WebServerKind;

use furrow_protocol::DEFAULT_MAX_FRAME;

use crate::{AgentError, ListError};

/// Smallest maximum frame size that still carries a useful log batch.
const MIN_MAX_FRAME: usize = 4096;

/// Configuration of an agent.
///
/// ```
/// let mut config = furrow_agent::AgentConfig::new("127.0.0.1:7420", "/var/lib/furrow-agent");
/// assert_eq!(config.max_frame, furrow_protocol::DEFAULT_MAX_FRAME);
/// // What `--software` and `--gpus` flags would set, in the configuration file's syntax.
/// config.software = furrow_agent::parse_software("blender 4.2.1, ffmpeg 5.1")?;
/// config.gpus = Some(furrow_agent::parse_gpus("0, 1")?);
/// # Ok::<(), furrow_agent::ListError>(())
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
    /// Software the agent offers, name to version (`blender` → `4.2.1`), reported at
    /// registration for the master to match against job requirements. Names and versions
    /// are single words; [`parse_software`] reads the `blender 4.2.1, ffmpeg 5.1` form.
    pub software: BTreeMap<String, String>,
    /// GPU device indices (as `CUDA_VISIBLE_DEVICES` numbers them) the agent reports and
    /// hands out to tasks, instead of the ones `nvidia-smi` detects; `None` detects them.
    /// An index that was detected keeps its model name and memory; one that was not is
    /// reported as `gpu N` with 0 MiB. `Some(vec![])` reports no GPU at all.
    /// [`parse_gpus`] reads the `0, 1` form.
    pub gpus: Option<Vec<u32>>,
    /// Holds the agent id file, per-task working directories, the process-group files of
    /// running tasks and results the master has not acknowledged.
    pub state_dir: PathBuf,
    /// Maximum frame size in both directions.
    pub max_frame: usize,
    /// A file setting `name`, `tags`, `software` and `gpus`, over the values above: read
    /// at start (the agent does not start if it is missing or invalid) and again on
    /// SIGHUP, which re-registers the agent with the master under the new values (an
    /// invalid file is then logged and the current values kept). One `key = value` per
    /// line, `#` comments, list entries separated by commas; a key left out keeps the value
    /// above, an empty value clears it (`gpus =` means no GPU):
    ///
    /// ```text
    /// name = render-07
    /// tags = blender, gpu
    /// software = blender 3.4.1, ffmpeg 5.1
    /// gpus = 0, 1
    /// ```
    pub config_file: Option<PathBuf>,
    /// A directory of declarative job-type files (`*.toml`) this agent runs, watched for
    /// changes and published to the master; `None` for none.
    pub jobtypes_dir: Option<PathBuf>,
    /// Look for Blender and ffmpeg on the `PATH` at start and offer the versions found as
    /// software (the configured `software` wins over what is found).
    pub detect_software: bool,
    /// The farm's join token (`fwj_...`): the first connection presents it, and the master
    /// then gives this agent a credential of its own, kept in the state directory and
    /// presented from then on. `None` when the agent already holds a credential.
    pub join_token: Option<String>,
    /// How to check the master's TLS certificate; `None` for a master without TLS.
    pub tls: Option<furrow_protocol::tls::Verify>,
    /// The web server this agent mounts deployed apps on; `None` runs no apps.
    pub webserver: Option<WebServerConfig>,
}

/// The web server an agent mounts apps on, and where its apps' instances listen.
///
/// ```
/// use furrow_agent::{WebServerConfig, WebServerMode};
/// let config = WebServerConfig {
///     kind: "nginx".parse()?,
///     address: "127.0.0.1:8080".parse()?,
///     mode: WebServerMode::Managed,
///     app_ports: furrow_agent::parse_port_range("20000-20999")?,
/// };
/// assert_eq!(config.app_ports, 20000..=20999);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebServerConfig {
    /// nginx, Apache or lighttpd.
    pub kind: WebServerKind,
    /// Where the mounts are served: the address a managed server listens on, or the
    /// address of the host's own server (used to verify each change).
    pub address: SocketAddr,
    /// Whether the agent runs the server itself or uses the host's.
    pub mode: WebServerMode,
    /// The TCP ports (on 127.0.0.1) handed to app instances that listen on a port.
    pub app_ports: RangeInclusive<u16>,
}

/// Who runs the web server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebServerMode {
    /// The agent runs a private server from `<state_dir>/webserver` and restarts it (with
    /// backoff) when it dies.
    Managed,
    /// The host's own server includes `include_dir`, where the agent writes its snippets;
    /// changes are checked and applied with the server's own commands (the defaults of
    /// `furrow_deploy::webserver::SystemOptions` when `None`).
    System {
        /// The directory the host's server includes.
        include_dir: PathBuf,
        /// The command that reloads the server (`nginx -s reload`...).
        reload_command: Option<Vec<String>>,
        /// The command that tests the configuration (`nginx -t`...).
        check_command: Option<Vec<String>>,
    },
}

/// The default `--app-ports` range.
pub const DEFAULT_APP_PORTS: RangeInclusive<u16> = 20000..=20999;

/// Parses a port range `FIRST-LAST` (`20000-20999`), or a single port.
///
/// ```
/// assert_eq!(furrow_agent::parse_port_range("20000-20099").unwrap(), 20000..=20099);
/// assert!(furrow_agent::parse_port_range("20099-20000").is_err());
/// ```
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, ListError> {
    let port = |word: &str| {
        word.trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| {
                ListError(format!(
                    "port range `{text}`: `{}` is not a port (1 to 65535)",
                    word.trim()
                ))
            })
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => {
            let only = port(text)?;
            (only, only)
        }
    };
    if first > last {
        return Err(ListError(format!(
            "port range `{text}` is empty: write the lower port first, e.g. 20000-20999"
        )));
    }
    Ok(first..=last)
}

impl WebServerConfig {
    /// Checks what the agent could not work with.
    fn validate(&self) -> Result<(), String> {
        if self.address.port() == 0 {
            return Err(format!(
                "the web server address {} has no port: give --webserver-port",
                self.address
            ));
        }
        let (first, last) = (*self.app_ports.start(), *self.app_ports.end());
        if first == 0 || first > last {
            return Err(format!(
                "the app port range {first}-{last} is empty or includes port 0"
            ));
        }
        if self.app_ports.contains(&self.address.port()) {
            return Err(format!(
                "the web server port {} is inside the app port range {first}-{last}; choose another --webserver-port or --app-ports",
                self.address.port()
            ));
        }
        if let WebServerMode::System {
            include_dir,
            reload_command,
            check_command,
        } = &self.mode
        {
            if !include_dir.is_absolute() {
                return Err(format!(
                    "the web server include directory {} must be an absolute path",
                    include_dir.display()
                ));
            }
            for (what, command) in [("reload", reload_command), ("check", check_command)] {
                if command.as_ref().is_some_and(|words| words.is_empty()) {
                    return Err(format!("the web server {what} command is empty"));
                }
            }
        }
        Ok(())
    }
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
            software: BTreeMap::new(),
            gpus: None,
            state_dir: state_dir.into(),
            max_frame: DEFAULT_MAX_FRAME,
            config_file: None,
            jobtypes_dir: None,
            detect_software: true,
            join_token: None,
            tls: None,
            webserver: None,
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
        check_software(&self.software).map_err(|e| AgentError::Config(e.to_string()))?;
        if let Some(gpus) = &self.gpus {
            check_gpus(gpus).map_err(|e| AgentError::Config(e.to_string()))?;
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
        if let Some(webserver) = &self.webserver {
            webserver.validate().map_err(AgentError::Config)?;
        }
        Ok(())
    }
}

/// Parses a software list: `name version` pairs separated by commas, such as
/// `blender 3.4.1, ffmpeg 5.1`. Blank entries are skipped, so an empty text is an empty
/// list. The error names the entry that is wrong: one without a version, one with more
/// than a name and a version, or a name given twice.
///
/// ```
/// let software = furrow_agent::parse_software("blender 3.4.1, ffmpeg 5.1").unwrap();
/// assert_eq!(software["blender"], "3.4.1");
/// assert_eq!(software["ffmpeg"], "5.1");
/// let error = furrow_agent::parse_software("blender").unwrap_err();
/// assert!(error.to_string().contains("`blender` has no version"));
/// ```
pub fn parse_software(list: &str) -> Result<BTreeMap<String, String>, ListError> {
    let mut software = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let [name, version] = words[..] else {
            let reason = if words.len() == 1 {
                format!(
                    "software `{entry}` has no version; write `name version`, e.g. `blender 4.2.1`"
                )
            } else {
                format!(
                    "software entry `{entry}` is more than a name and a version; separate entries with commas"
                )
            };
            return Err(ListError(reason));
        };
        if software
            .insert(name.to_string(), version.to_string())
            .is_some()
        {
            return Err(ListError(format!("software `{name}` is listed twice")));
        }
    }
    Ok(software)
}

/// Parses a list of GPU device indices separated by commas, such as `0, 1`. Blank entries
/// are skipped, so an empty text is an empty list (no GPU). The error names the entry that
/// is not an index, or the index given twice.
///
/// ```
/// assert_eq!(furrow_agent::parse_gpus("0, 2").unwrap(), [0, 2]);
/// assert_eq!(furrow_agent::parse_gpus("").unwrap(), Vec::<u32>::new());
/// assert!(furrow_agent::parse_gpus("0, one").is_err());
/// ```
pub fn parse_gpus(list: &str) -> Result<Vec<u32>, ListError> {
    let gpus = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry.parse::<u32>().map_err(|_| {
                ListError(format!(
                    "gpu `{entry}` is not a device index (a number such as 0)"
                ))
            })
        })
        .collect::<Result<Vec<u32>, ListError>>()?;
    check_gpus(&gpus)?;
    Ok(gpus)
}

/// Refuses names and versions the list form could not express, so a configuration built
/// in code means the same as one written out.
fn check_software(software: &BTreeMap<String, String>) -> Result<(), ListError> {
    let unusable =
        |word: &str| word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == ',');
    for (name, version) in software {
        if unusable(name) || unusable(version) {
            return Err(ListError(format!(
                "software `{name}` `{version}`: names and versions must be single words without commas"
            )));
        }
    }
    Ok(())
}

fn check_gpus(gpus: &[u32]) -> Result<(), ListError> {
    for (position, index) in gpus.iter().enumerate() {
        if gpus[..position].contains(index) {
            return Err(ListError(format!("gpu {index} is listed twice")));
        }
    }
    Ok(())
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
    /// The longest a new release's instances may take to become healthy before the
    /// switch to it is abandoned.
    pub app_health_timeout: Duration,
    /// The first wait before restarting a managed web server that died; doubled after
    /// each further death, up to a minute.
    pub webserver_restart: Duration,
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
            app_health_timeout: Duration::from_secs(30),
            webserver_restart: Duration::from_millis(500),
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
                    gpus: Some(vec![0, 1, 0]),
                    ..good.clone()
                },
                "gpu 0 is listed twice",
            ),
            (
                AgentConfig {
                    software: BTreeMap::from([("blender".into(), "4 .2".into())]),
                    ..good.clone()
                },
                "single words",
            ),
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

    #[test]
    fn refuses_unusable_web_server_settings() {
        let webserver = WebServerConfig {
            kind: WebServerKind::Nginx,
            address: "127.0.0.1:8080".parse().unwrap(),
            mode: WebServerMode::Managed,
            app_ports: DEFAULT_APP_PORTS,
        };
        let with = |webserver: WebServerConfig| AgentConfig {
            webserver: Some(webserver),
            ..AgentConfig::new("127.0.0.1:1", "/tmp/x")
        };
        assert!(with(webserver.clone()).validate().is_ok());
        let cases = [
            (
                WebServerConfig {
                    address: "127.0.0.1:0".parse().unwrap(),
                    ..webserver.clone()
                },
                "--webserver-port",
            ),
            (
                WebServerConfig {
                    address: "127.0.0.1:20005".parse().unwrap(),
                    ..webserver.clone()
                },
                "inside the app port range",
            ),
            (
                WebServerConfig {
                    mode: WebServerMode::System {
                        include_dir: "relative".into(),
                        reload_command: None,
                        check_command: None,
                    },
                    ..webserver.clone()
                },
                "absolute path",
            ),
        ];
        for (webserver, needle) in cases {
            let err = with(webserver).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("20000-20999").unwrap(), 20000..=20999);
        assert_eq!(parse_port_range(" 8000 ").unwrap(), 8000..=8000);
        for (text, needle) in [
            ("0-10", "`0` is not a port"),
            ("10-x", "`x` is not a port"),
            ("20-10", "is empty"),
        ] {
            let err = parse_port_range(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn software_lists_parse_into_names_and_versions() {
        let software = parse_software(" blender 3.4.1 ,, ffmpeg   5.1,").unwrap();
        assert_eq!(
            software,
            BTreeMap::from([
                ("blender".to_string(), "3.4.1".to_string()),
                ("ffmpeg".to_string(), "5.1".to_string()),
            ])
        );
        assert!(parse_software("  ").unwrap().is_empty());
        let cases = [
            ("blender", "software `blender` has no version"),
            ("blender 3.4, ffmpeg", "software `ffmpeg` has no version"),
            (
                "blender 3.4 lts",
                "`blender 3.4 lts` is more than a name and a version",
            ),
            (
                "blender 3.4, blender 4.2",
                "software `blender` is listed twice",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_software(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn gpu_lists_parse_into_indices() {
        assert_eq!(parse_gpus("2, 0,").unwrap(), [2, 0]);
        assert_eq!(parse_gpus(" ").unwrap(), Vec::<u32>::new());
        let cases = [
            ("0, x", "gpu `x` is not a device index"),
            ("-1", "gpu `-1` is not a device index"),
            ("0 1", "gpu `0 1` is not a device index"),
            ("1, 0, 1", "gpu 1 is listed twice"),
        ];
        for (text, needle) in cases {
            let err = parse_gpus(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
