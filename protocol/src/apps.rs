//! Deployed applications on the wire (protocol version 8, [`DEPLOY_VERSION`]).
//!
//! The master holds each app's desired release; an agent the app is placed on gets a
//! [`MasterMessage::Deploy`](crate::MasterMessage::Deploy) naming it (after every
//! registration too, so an agent that was away catches up). The bundle travels once per
//! agent, content-addressed: an agent that lacks it asks for it piece by piece
//! ([`AgentMessage::FetchBundle`](crate::AgentMessage::FetchBundle) →
//! [`MasterMessage::Bundle`](crate::MasterMessage::Bundle)) and checks its SHA-256
//! before use. The agent installs the release, starts its processes, gates the switch on
//! their health, mounts it on its web server, and reports each step
//! ([`AgentMessage::AppReport`](crate::AgentMessage::AppReport)); the apps' output goes
//! to the master in batches ([`AgentMessage::AppLogs`](crate::AgentMessage::AppLogs)).

use serde::{Deserialize, Serialize};

use crate::messages::LogLine;

/// The protocol version from which the deploy messages are spoken. An agent speaking an
/// older version gets no app.
pub const DEPLOY_VERSION: u16 = 8;

/// Most bytes of a bundle in one [`BundleChunk`].
pub const BUNDLE_CHUNK: usize = 1024 * 1024;

/// Make a release of an app current on this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDeployment {
    /// The app's name.
    pub app: String,
    /// The release number (1, 2, ... per app, never reused).
    pub release: u32,
    /// The bundle's SHA-256, lower-case hex: its content address.
    pub digest: String,
    /// The bundle's size in bytes.
    pub size: u64,
    /// The filled-in configuration, rendered in the spec's format (secrets included:
    /// the app reads them), or none for an app without a spec.
    pub config: Option<String>,
    /// Who asked for this release and how (shown in the agent's log).
    pub reason: String,
}

/// A piece of a bundle the agent asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRequest {
    /// The bundle's SHA-256.
    pub digest: String,
    /// Where to start, in bytes.
    pub offset: u64,
}

/// A piece of a bundle, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleChunk {
    /// The bundle's SHA-256.
    pub digest: String,
    /// Where `data` starts.
    pub offset: u64,
    /// The bundle's whole size.
    pub total: u64,
    /// At most [`BUNDLE_CHUNK`] bytes.
    pub data: Vec<u8>,
    /// Set when the master cannot send it (it has no such bundle).
    pub error: Option<String>,
}

/// Where an app stands on one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Fetching the bundle, installing, or starting the release it was asked for.
    Deploying,
    /// The asked-for release serves.
    Running,
    /// The asked-for release failed (install, hook, health or mount) and the one before
    /// it (if any) serves instead.
    Reverted,
    /// The asked-for release failed and nothing serves.
    Failed,
    /// Removed from the agent.
    Removed,
}

/// One process instance of an app on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppInstanceView {
    /// The process name from the manifest.
    pub process: String,
    /// Its instance number, from 0.
    pub instance: u32,
    /// `starting`, `running`, `unhealthy`, `backoff`, `gave_up` or `stopped`.
    pub state: String,
    /// Its process id, while it has one.
    pub pid: Option<u32>,
    /// Where it listens: `127.0.0.1:PORT`, a socket path, or none.
    pub endpoint: Option<String>,
    /// Crashes counted since it last ran well.
    pub crashes: u32,
    /// What went wrong last, if anything.
    pub detail: Option<String>,
}

/// How an app stands on one agent, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    /// The app.
    pub app: String,
    /// The release the master asked for.
    pub target: u32,
    /// The release that serves, if any.
    pub current: Option<u32>,
    /// Where it stands.
    pub state: AppState,
    /// What happened last (an error names what failed, with the tool's own message).
    pub message: Option<String>,
    /// The instances of the serving release.
    pub instances: Vec<AppInstanceView>,
    /// The URL it is mounted at on the agent's web server, when it is.
    pub mount: Option<String>,
}

/// Output lines of one app instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppLogBatch {
    /// The app.
    pub app: String,
    /// The release of the instance.
    pub release: u32,
    /// The process name.
    pub process: String,
    /// The instance number.
    pub instance: u32,
    /// The lines (stream `Agent` for what the agent itself says of the app).
    pub lines: Vec<LogLine>,
}

/// An agent's web server, as the REST view of agents shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebServerView {
    /// `nginx`, `apache` or `lighttpd`.
    pub kind: String,
    /// Where it listens (`127.0.0.1:8080`).
    pub address: String,
}

/// Which agents an app is placed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppSelector {
    /// Every agent carrying all of these tags (an empty list selects every agent).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A new app: `POST /api/v1/apps/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Its name: lower-case letters, digits, `-` and `_`, as its bundles' manifests name
    /// it.
    pub name: String,
    /// Where it runs.
    #[serde(default)]
    pub agents: AppSelector,
    /// The web server kind it is mounted on (`nginx`, `apache` or `lighttpd`); an agent
    /// running another kind, or none, does not get it.
    pub webserver: String,
}

/// One release of an app: a bundle with a configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppReleaseView {
    /// Its number.
    pub release: u32,
    /// The bundle's version (from its manifest).
    pub version: String,
    /// The bundle's SHA-256.
    pub digest: String,
    /// The bundle's size in bytes.
    pub size: u64,
    /// Where the bundle came from: `upload`, `inbox`, or `config` (the release before
    /// it with a new configuration).
    pub source: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its configuration (field name to value), secrets masked.
    pub config: crate::Json,
}

/// How an app stands on one agent, in the app's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppAgentView {
    /// The agent.
    pub agent: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// Whether it is connected.
    pub online: bool,
    /// The release asked of it.
    pub target: Option<u32>,
    /// The release that serves there.
    pub current: Option<u32>,
    /// Where it stands (none before its first report).
    pub state: Option<AppState>,
    /// What happened last.
    pub message: Option<String>,
    /// The instances of the serving release.
    pub instances: Vec<AppInstanceView>,
    /// Where it is mounted there.
    pub mount: Option<String>,
}

/// Something that happened to an app: its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppEventView {
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who (a user, or `agent NAME` for what an agent did on its own).
    pub by: String,
    /// `created`, `deployed`, `configured`, `rolled back`, `reverted`, `failed`, `running`.
    pub action: String,
    /// The release concerned.
    pub release: Option<u32>,
    /// Details.
    pub detail: String,
}

/// An app: `GET /api/v1/apps/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppView {
    /// Its name.
    pub name: String,
    /// Where it runs.
    pub agents: AppSelector,
    /// The web server kind it is mounted on.
    pub webserver: String,
    /// The release every agent is asked to serve.
    pub current: Option<u32>,
    /// Its releases, newest first.
    pub releases: Vec<AppReleaseView>,
    /// How it stands on each agent it is placed on.
    pub placements: Vec<AppAgentView>,
    /// Its history, newest first (the last 100 events).
    pub history: Vec<AppEventView>,
    /// The fields of its configuration, for forms (from the current release's spec).
    pub spec: crate::Json,
    /// Its notification rules.
    pub notifications: Vec<AppNotification>,
}

/// A notification rule: output lines of the app matching `pattern` are posted to
/// `webhook` as JSON (`{"app", "release", "agent", "instance", "stream", "text", "at_ms",
/// "pattern", "suppressed"}`), at most one post per rule every 10 seconds (`suppressed`
/// counts the matches in between).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppNotification {
    /// A regular expression output lines are matched with.
    pub pattern: String,
    /// The `http://` or `https://` URL posted to.
    pub webhook: String,
}

/// `POST /api/v1/apps/{name}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppRollback {
    /// The release to serve again; the one before the current when absent.
    #[serde(default)]
    pub release: Option<u32>,
}

/// A line of an app's output, as a search returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppLogLine {
    /// When the agent read it (milliseconds since the epoch).
    pub at_ms: i64,
    /// The agent's name.
    pub agent: String,
    /// The release.
    pub release: u32,
    /// `process.instance`, e.g. `web.0`.
    pub instance: String,
    /// `stdout`, `stderr` or `agent`.
    pub stream: String,
    /// The line.
    pub text: String,
}
