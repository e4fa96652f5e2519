//! What to run: a process of a release, how many instances, how they listen, how their
//! health is checked, how they are stopped and restarted, and how they are isolated.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::SuperviseError;
use super::isolation::Isolation;

/// How an instance receives its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listen {
    /// A TCP port on 127.0.0.1 from the [`PortPool`](super::PortPool), given as `{port}`
    /// and `$PORT`. The port stays the instance's across restarts.
    Port,
    /// A unix socket `<run_dir>/<app>/<release>/<name>-<i>.sock`, given as `{socket}` and
    /// `$SOCKET`; removed before each start and after the stop.
    Socket,
    /// No listener (a worker).
    None,
}

/// How an instance shows it is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthCheck {
    /// `GET <path>` on the instance's port or socket answers 2xx or 3xx.
    Http(String),
    /// The command (placeholders substituted) exits 0. It runs on the host, or, for an
    /// isolated instance, in a namespace like the instance's, as its ids, with its
    /// environment.
    Command(Vec<String>),
}

/// When health is checked and what counts as unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthPolicy {
    /// Between checks of a running instance.
    pub interval: Duration,
    /// One check's limit.
    pub timeout: Duration,
    /// How long a new instance may take to become ready; past it, the start counts as a
    /// crash (the instance is killed and restarted with backoff).
    pub ready_timeout: Duration,
    /// Consecutive failed checks before a running instance is `Unhealthy`.
    pub failures_before_unhealthy: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            ready_timeout: Duration::from_secs(60),
            failures_before_unhealthy: 3,
        }
    }
}

/// How exits are answered: restart after a capped exponential backoff, give up after too
/// many crashes in a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RestartPolicy {
    /// The wait before the first restart; doubled for every further crash in the window.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// Crashes within `window` after which the instance is `GaveUp` (no more restarts
    /// until [`SupervisorHandle::restart`](super::SupervisorHandle::restart)).
    pub give_up_after: u32,
    /// The window crashes are counted in.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            give_up_after: 5,
            window: Duration::from_secs(300),
        }
    }
}

impl RestartPolicy {
    /// The wait before restarting after the `crashes`-th crash in the window (1-based).
    pub fn backoff(&self, crashes: u32) -> Duration {
        let doublings = crashes.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// One process of a release, run as `instances` supervised instances.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The app (letters, digits, `-`, `_`).
    pub app: String,
    /// The release (letters, digits, `-`, `_`, `.`): in logs, the status view, and the
    /// socket and pid file paths, so two releases of an app can run side by side.
    pub release: String,
    /// The process name within the app (`web`, `worker`; letters, digits, `-`, `_`).
    pub name: String,
    /// The program and its arguments. `{port}`, `{socket}`, `{instance}`, `{app}`,
    /// `{release}` are replaced per instance, here and in `env` values.
    pub command: Vec<String>,
    /// The working directory (inside the namespace when isolated); `None` inherits ours
    /// (the app directory when isolated).
    pub cwd: Option<PathBuf>,
    /// Extra environment; `PORT`/`SOCKET`, `FURROW_APP`, `FURROW_RELEASE`,
    /// `FURROW_PROCESS` and `FURROW_INSTANCE` are always set.
    pub env: Vec<(String, String)>,
    /// How instances listen.
    pub listen: Listen,
    /// How many instances run.
    pub instances: u32,
    /// The health check; without one, an instance is ready once its port or socket
    /// accepts a connection (at once for [`Listen::None`]).
    pub health: Option<HealthCheck>,
    /// Health timings.
    pub health_policy: HealthPolicy,
    /// Sent to the instance's process group to stop it.
    pub stop_signal: Signal,
    /// How long after `stop_signal` the group is killed with `SIGKILL`.
    pub stop_grace: Duration,
    /// Restarts.
    pub restart: RestartPolicy,
    /// Isolation of the processes.
    pub isolation: Isolation,
}

impl ProcessSpec {
    /// A spec with the defaults: one instance on a port, no health check, `SIGTERM` with
    /// 10 s grace, the default restart policy, no isolation.
    pub fn new(app: &str, release: &str, name: &str, command: Vec<String>) -> Self {
        ProcessSpec {
            app: app.to_owned(),
            release: release.to_owned(),
            name: name.to_owned(),
            command,
            cwd: None,
            env: Vec::new(),
            listen: Listen::Port,
            instances: 1,
            health: None,
            health_policy: HealthPolicy::default(),
            stop_signal: Signal::SIGTERM,
            stop_grace: Duration::from_secs(10),
            restart: RestartPolicy::default(),
            isolation: Isolation::None,
        }
    }

    /// Checks names, counts and consistency.
    pub fn validate(&self) -> Result<(), SuperviseError> {
        let invalid = |reason: String| {
            Err(SuperviseError::InvalidSpec {
                app: self.app.clone(),
                process: self.name.clone(),
                reason,
            })
        };
        for (what, value) in [("app", &self.app), ("process name", &self.name)] {
            let valid = !value.is_empty()
                && value.len() <= 64
                && value.as_bytes()[0].is_ascii_alphanumeric()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return invalid(format!(
                    "the {what} {value:?} must be 1-64 ASCII letters, digits, '-' or '_'"
                ));
            }
        }
        // The release names files and directories (two releases run side by side during a
        // switch), so it gets the same strict alphabet plus '.'.
        let release_valid = !self.release.is_empty()
            && self.release.len() <= 64
            && self.release.as_bytes()[0].is_ascii_alphanumeric()
            && self
                .release
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !release_valid {
            return invalid(format!(
                "the release {:?} must be 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit",
                self.release
            ));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return invalid("the command is empty".into());
        }
        if self.instances == 0 {
            return invalid("instances must be at least 1".into());
        }
        if let (Some(HealthCheck::Http(_)), Listen::None) = (&self.health, self.listen) {
            return invalid(
                "an HTTP health check needs the process to listen on a port or socket".into(),
            );
        }
        if let Some(HealthCheck::Http(path)) = &self.health
            && (!path.starts_with('/')
                || path.contains(|c: char| c.is_whitespace() || c.is_control()))
        {
            return invalid(format!(
                "the health path {path:?} must start with '/' and have no spaces"
            ));
        }
        if let Some(HealthCheck::Command(command)) = &self.health
            && command.is_empty()
        {
            return invalid("the health command is empty".into());
        }
        if self.health_policy.failures_before_unhealthy == 0 {
            return invalid("health_policy.failures_before_unhealthy must be at least 1".into());
        }
        if self.health_policy.interval.is_zero() {
            return invalid("health_policy.interval must not be zero".into());
        }
        if self.restart.give_up_after == 0 {
            return invalid("restart.give_up_after must be at least 1".into());
        }
        for (key, _) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return invalid(format!("environment variable name {key:?} is not valid"));
            }
        }
        self.isolation.validate().or_else(invalid)
    }
}

/// Per-instance values for placeholders.
pub(super) struct Placeholders<'a> {
    pub app: &'a str,
    pub release: &'a str,
    pub instance: u32,
    pub port: Option<u16>,
    pub socket: Option<&'a str>,
}

impl Placeholders<'_> {
    /// Replaces `{port}`, `{socket}`, `{instance}`, `{app}` and `{release}` in `text`.
    pub fn apply(&self, text: &str) -> String {
        if !text.contains('{') {
            return text.to_owned();
        }
        text.replace(
            "{port}",
            &self.port.map(|p| p.to_string()).unwrap_or_default(),
        )
        .replace("{socket}", self.socket.unwrap_or_default())
        .replace("{instance}", &self.instance.to_string())
        .replace("{app}", self.app)
        .replace("{release}", self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            give_up_after: 5,
            window: Duration::from_secs(60),
        };
        let waits: Vec<u128> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 700, 700]);
        assert_eq!(policy.backoff(1000), Duration::from_millis(700));
    }

    #[test]
    fn placeholders_are_substituted() {
        let values = Placeholders {
            app: "shop",
            release: "r7",
            instance: 2,
            port: Some(20001),
            socket: None,
        };
        assert_eq!(
            values.apply("--bind=127.0.0.1:{port}"),
            "--bind=127.0.0.1:20001"
        );
        assert_eq!(values.apply("{app}-{release}-{instance}"), "shop-r7-2");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut spec = ProcessSpec::new("shop", "r1", "web", vec!["python3".into()]);
        spec.validate().unwrap();
        spec.health = Some(HealthCheck::Http("/health".into()));
        spec.listen = Listen::None;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("HTTP health check")
        );
        spec.listen = Listen::Port;
        spec.name = "../web".into();
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("process name")
        );
        spec.name = "web".into();
        spec.instances = 0;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("instances")
        );
    }
}
