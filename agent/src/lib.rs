//! Furrow agent: runs on each worker host, takes task attempts from the master, runs
//! them through job types, and ships their output and results back.
//!
//! A tour, following one task:
//! - [`run`] builds an actix system, starts an [`Agent`] and waits for SIGTERM/SIGINT
//!   (`signals`). Before connecting, the agent kills task processes a previous agent
//!   process left behind (`orphans`), clears their working directories (`workdir`) and
//!   loads results never delivered (`spool`).
//! - The `MasterLink` actor (`link`) connects, handshakes, registers with the host's
//!   resources (`resources`: the `ResourceMonitor` actor and /proc), heartbeats, and
//!   reconnects with jittered exponential backoff. Task messages wait in the `spool`
//!   while the master is away and are replayed in order after re-registration.
//! - An `Assign` goes to the `TaskSupervisor` actor (`supervisor`), which owns the slots
//!   and starts one `TaskRunner` actor per accepted attempt.
//! - The runner (`runner`) resolves the job type (`jobtypes`, with the built-in
//!   `command` type and the frame `placeholders`), starts the process in its own process
//!   group (`process_group`), reads its output line by line into batches, enforces the
//!   time limit (`time_limit`), waits for the exit (`exit_wait`), and reports.
//! - `Cancel` and shutdown kill the task's whole process group: SIGTERM, then SIGKILL
//!   after a grace period.
//!
//! State directory layout: see `state`. Process exit, deadlines and signals each sit
//! behind one small module (`exit_wait`, `time_limit`, `signals`) so they can move to
//! furrow-sysfd's pidfd, timerfd and signalfd one file at a time.

#![warn(missing_docs)]

mod agent;
mod config;
mod error;
mod exit_wait;
mod jobtypes;
mod link;
mod orphans;
mod placeholders;
mod process_group;
mod resources;
mod runner;
mod signals;
mod spool;
mod state;
mod supervisor;
mod time_limit;
mod workdir;

pub use agent::{Agent, run};
pub use config::AgentConfig;
pub use error::AgentError;
