//! Furrow master: stores jobs, hands their tasks to agents, collects their logs, and
//! serves the REST API and the live dashboard.
//!
//! # A tour
//!
//! One actix `System` runs these actors; the long-lived ones run under a `Supervisor`:
//!
//! - [`listener::Listener`] accepts TCP connections, runs the protocol handshake and
//!   starts one session per connection: [`session::AgentSession`] for agents,
//!   [`session::ClientSession`] for tools. A session is never restarted.
//! - [`registry::Registry`] owns the live agent table (a `DashMap` the web handlers read
//!   directly), and turns silence and dropped connections into "lost" agents.
//! - [`scheduler::Scheduler`] owns the queue of runnable tasks and assigns them, by
//!   priority, then age, then frame order, one task per free slot. Its decisions live in
//!   [`scheduler::core`], which is plain data and fully unit-tested.
//! - [`store::Store`] is the only writer to the database (SQLite in WAL mode by default,
//!   PostgreSQL on request): submissions commit before they are acknowledged, and task
//!   transitions are batched into group commits.
//! - [`logs::LogCollector`] appends task output to per-attempt files and serves reads.
//!
//! Requests of both front ends, the REST API ([`http`]) and the protocol's client API,
//! are functions of one [`service::Service`].
//!
//! # Invariants
//!
//! - No database round trip per heartbeat, per log line or per scheduling decision.
//! - Every task message carries `(task_id, attempt)`; only the current attempt counts.
//!   An assignment reaches its agent only after it is committed, so attempt numbers are
//!   never handed out twice, not even across a crash.
//! - Every `TaskFinished` is answered with `ResultStored`, and only after the group commit
//!   that records its transition (for a result that changes nothing, the next group
//!   commit) is durable. Until then the agent keeps the result, lists the attempt as
//!   running and replays it after a reconnect; so a result the master read is never lost
//!   to a dropped connection or a crash, and the task is not run again. A replayed result
//!   of an attempt already settled changes nothing and is acknowledged again.
//! - The scheduler holds only unfinished work, so its cost does not grow with history.
//! - Nothing a peer sends can panic the master: bad input closes that one connection or
//!   answers `{"error": ...}` with a 4xx status.
//!
//! # Running
//!
//! ```no_run
//! let config = furrow_master::MasterConfig {
//!     data_dir: "furrow-data".into(),
//!     ..Default::default()
//! };
//! furrow_master::run(config)?; // until SIGINT or SIGTERM
//! # Ok::<(), furrow_master::MasterError>(())
//! ```

#![warn(missing_docs)]

pub mod apps;
pub mod auth;
pub mod changes;
mod config;
mod error;
pub mod health;
pub mod http;
pub mod jobtypes;
pub mod listener;
pub mod logs;
mod master;
pub mod registry;
pub mod scheduler;
pub mod service;
pub mod session;
pub mod store;

pub use auth::{ADMIN_TOKEN_FILE, JOIN_TOKEN_FILE};
pub use config::{DEFAULT_FORGET_AGENTS_AFTER, InheritedListeners, MasterConfig};
pub use error::MasterError;
pub use master::{ADDR_FILE, BoundAddrs, FINGERPRINT_FILE, LOCK_FILE, MasterHandle, run, spawn};
