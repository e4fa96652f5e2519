//! Settings of one master process.

use std::path::PathBuf;
use std::time::Duration;

/// How long a lost agent is kept by default: a week, so machines switched off over a
/// weekend or a holiday are still listed when they return.
pub const DEFAULT_FORGET_AGENTS_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything the master needs to know to run.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Directory for the SQLite file, task logs and `master.addr`.
    pub data_dir: PathBuf,
    /// TCP address for agents and tools (port 0 picks a free port).
    pub listen: String,
    /// HTTP address of the REST API and dashboard (port 0 picks a free port).
    pub http: String,
    /// `None`: SQLite file `<data_dir>/furrow.db` in WAL mode; `postgres://...`: PostgreSQL.
    pub database_url: Option<String>,
    /// Heartbeat interval told to agents when they register.
    pub heartbeat_interval: Duration,
    /// An agent is lost after this long without a heartbeat or a reconnection.
    pub heartbeat_timeout: Duration,
    /// A lost agent unseen for this long is forgotten: it leaves the agent list and the
    /// dashboard, its row leaves the database, and its history (the attempts it ran)
    /// stays. It comes back when it registers again. Agents given settings through the
    /// API (disabled, tags) are kept until removed by hand. `None`: never.
    pub forget_agents_after: Option<Duration>,
    /// Maximum frame size on the TCP port, both directions.
    pub max_frame: usize,
    /// Host names the REST API and dashboard answer to, besides IP addresses and
    /// `localhost` (a request naming any other host is refused: DNS rebinding).
    pub http_names: Vec<String>,
    /// Certificate chain and private key (PEM files): serve TLS on both ports.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Listening sockets handed over by the parent process (`furrow up`) as open file
    /// descriptors, used instead of binding `listen` and `http`: the parent keeps them
    /// across restarts of the master, so their ports never change hands and agents that
    /// connect meanwhile wait in the backlog.
    pub inherited: Option<InheritedListeners>,
}

/// File descriptors of listening TCP sockets a master takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InheritedListeners {
    /// The agents' and tools' port.
    pub listen_fd: i32,
    /// The HTTP port.
    pub http_fd: i32,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("furrow-data"),
            listen: furrow_protocol::DEFAULT_LISTEN.to_string(),
            http: furrow_protocol::DEFAULT_HTTP.to_string(),
            database_url: None,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(15),
            forget_agents_after: Some(DEFAULT_FORGET_AGENTS_AFTER),
            max_frame: furrow_protocol::DEFAULT_MAX_FRAME,
            http_names: Vec::new(),
            tls: None,
            inherited: None,
        }
    }
}
