//! The bundle manifest, `furrow-app.yaml`: what an application is called, which processes
//! it runs and how, where it is mounted, what it keeps between releases and which hooks run
//! when it is installed, updated or deleted.
//!
//! Parsing is two steps. [`Manifest::parse`] first reads the YAML strictly (unknown keys,
//! missing required keys and wrong types are refused with the key's path), then checks the
//! meaning of what it read ([`check`]) and reports every problem found at once.

mod check;
mod de;

use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::problem::{Problem, join_problems, yaml_error_parts};

pub use de::StopSignal;

pub(crate) use check::is_identifier;

/// The file name of the manifest at the top level of a bundle.
pub const MANIFEST_FILE: &str = "furrow-app.yaml";

/// Default time limit of one hook command.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time a process gets between its stop signal and `SIGKILL`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The YAML could not be read into the manifest's shape: syntax, unknown key, missing
    /// key or wrong type. `path` is the key path (empty for the document itself).
    #[error("furrow-app.yaml: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Syntax {
        /// Dotted key path of the offending value, e.g. `processes.web.instances`.
        path: String,
        /// What the YAML reader said, with the line and column when it knows them.
        message: String,
    },
    /// The manifest was read but its content is inconsistent; every problem is listed.
    #[error("furrow-app.yaml: {}", join_problems(.0))]
    Invalid(Vec<Problem>),
}

/// A parsed and validated `furrow-app.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The application's name: `[a-z0-9][a-z0-9_-]{0,62}`; it names the app's directory.
    pub name: String,
    /// The bundle's version as its author writes it (free text, not empty).
    pub version: String,
    /// The long-running processes by name, in the manifest's order. May be empty (a static
    /// site).
    #[serde(default)]
    pub processes: IndexMap<String, Process>,
    /// Where the web server mounts the app, if it is served over HTTP.
    #[serde(default)]
    pub mount: Option<Mount>,
    /// Names of per-app directories that outlive releases (under the app's `shared/`).
    #[serde(default)]
    pub writable: Vec<String>,
    /// Shared and bundled dependencies.
    #[serde(default)]
    pub dependencies: Dependencies,
    /// Commands run at points of the app's life.
    #[serde(default)]
    pub hooks: Hooks,
    /// Commands run periodically.
    #[serde(default)]
    pub recurrent: Vec<Recurrent>,
    /// How the app's processes are isolated from the host.
    #[serde(default)]
    pub isolation: Isolation,
}

/// One long-running process of the app.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// The program and its arguments; `{port}` or `{socket}` is replaced per instance.
    pub command: Vec<String>,
    /// What the process listens on.
    pub listen: ListenKind,
    /// How many instances run (1..=64).
    #[serde(default = "one")]
    pub instances: u32,
    /// How to tell that an instance is healthy.
    #[serde(default)]
    pub health: Option<Health>,
    /// The signal that asks the process to stop.
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// How long to wait after the stop signal before killing.
    #[serde(default = "default_stop_grace", deserialize_with = "de::duration")]
    pub stop_grace: Duration,
}

fn one() -> u32 {
    1
}

fn default_stop_grace() -> Duration {
    DEFAULT_STOP_GRACE
}

/// What a process listens on, as declared in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenKind {
    /// A TCP port chosen by the agent, given as `{port}` and `PORT`.
    Port,
    /// A Unix socket path chosen by the agent, given as `{socket}` and `FURROW_APP_SOCKET`.
    Socket,
    /// Nothing: a worker.
    None,
}

/// Where one instance of a process listens, chosen by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP port on the loopback interface.
    Port(u16),
    /// A Unix socket path.
    Socket(std::path::PathBuf),
    /// The process does not listen.
    None,
}

impl Process {
    /// The command with `{port}` and `{socket}` replaced for one instance.
    pub fn command_for(&self, listen: &Listen) -> Vec<String> {
        self.command
            .iter()
            .map(|argument| match listen {
                Listen::Port(port) => argument.replace("{port}", &port.to_string()),
                Listen::Socket(path) => argument.replace("{socket}", &path.to_string_lossy()),
                Listen::None => argument.clone(),
            })
            .collect()
    }
}

/// How the health of an instance is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// An HTTP GET of this path (it starts with `/`) must answer 2xx or 3xx.
    Http(String),
    /// This command, run in the release directory, must exit with status 0.
    Command(Vec<String>),
}

/// Where and how the app is mounted on the web server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// The URL path prefix, starting with `/`.
    pub path: String,
    /// The process whose instances receive the requests; absent for a static site.
    #[serde(default)]
    pub process: Option<String>,
    /// URL path → directory in the bundle, served by the web server itself. A URL path that
    /// does not start with `/` is relative to [`Mount::path`].
    #[serde(default, rename = "static")]
    pub static_dirs: IndexMap<String, String>,
}

impl Mount {
    /// The static routes with their URL paths made absolute, in the manifest's order.
    pub fn static_routes(&self) -> Vec<(String, String)> {
        self.static_dirs
            .iter()
            .map(|(url, dir)| (self.absolute_url(url), dir.clone()))
            .collect()
    }

    fn absolute_url(&self, url: &str) -> String {
        if url.starts_with('/') {
            url.to_string()
        } else {
            format!("{}/{}", self.path.trim_end_matches('/'), url)
        }
    }
}

/// The app's dependencies outside its own sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependencies {
    /// Names of dependency sets installed once per agent, under the agent's shared
    /// dependency directory; a missing one fails the install.
    #[serde(default)]
    pub shared: Vec<String>,
    /// A directory in the bundle holding the app's own dependencies (e.g. `deps`).
    #[serde(default)]
    pub local: Option<String>,
}

/// Commands run at points of the app's life, each a list of commands run in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// After a release is unpacked, before it can become current.
    #[serde(default)]
    pub post_install: Vec<Vec<String>>,
    /// Before a release replaces the current one (not on the first switch).
    #[serde(default)]
    pub pre_update: Vec<Vec<String>>,
    /// After a release has replaced the current one.
    #[serde(default)]
    pub post_update: Vec<Vec<String>>,
    /// Before the app is deleted.
    #[serde(default)]
    pub pre_delete: Vec<Vec<String>>,
    /// Time limit of each command; when exceeded its whole process group is killed.
    #[serde(default = "default_hook_timeout", deserialize_with = "de::duration")]
    pub timeout: Duration,
}

fn default_hook_timeout() -> Duration {
    DEFAULT_HOOK_TIMEOUT
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            post_install: Vec::new(),
            pre_update: Vec::new(),
            post_update: Vec::new(),
            pre_delete: Vec::new(),
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

/// The points of an app's life where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// After unpacking a release.
    PostInstall,
    /// Before switching to a release.
    PreUpdate,
    /// After switching to a release.
    PostUpdate,
    /// Before deleting the app.
    PreDelete,
}

impl HookEvent {
    /// The manifest key of this event (`post_install`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::PostInstall => "post_install",
            HookEvent::PreUpdate => "pre_update",
            HookEvent::PostUpdate => "post_update",
            HookEvent::PreDelete => "pre_delete",
        }
    }
}

impl std::fmt::Display for HookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Hooks {
    /// The commands of one event, in order.
    pub fn commands(&self, event: HookEvent) -> &[Vec<String>] {
        match event {
            HookEvent::PostInstall => &self.post_install,
            HookEvent::PreUpdate => &self.pre_update,
            HookEvent::PostUpdate => &self.post_update,
            HookEvent::PreDelete => &self.pre_delete,
        }
    }
}

/// A command run periodically.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurrent {
    /// A name unique among the app's recurrent commands.
    pub name: String,
    /// The period; more than zero.
    #[serde(deserialize_with = "de::duration")]
    pub every: Duration,
    /// The program and its arguments, run in the current release's directory.
    pub command: Vec<String>,
}

/// How an app's processes are isolated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Plain processes of the agent's user.
    #[default]
    None,
    /// Processes in their own namespaces.
    Namespace,
}

impl Manifest {
    /// Reads and validates a manifest. Every semantic problem is reported at once in
    /// [`ManifestError::Invalid`].
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let manifest: Manifest =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let (path, message) = yaml_error_parts(&error);
                ManifestError::Syntax { path, message }
            })?;
        let problems = check::check(&manifest);
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestError::Invalid(problems))
        }
    }
}
