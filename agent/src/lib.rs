//! Furrow agent: runs on each worker host, takes task attempts from the master, runs
//! them through job types, and ships their output and results back.
//!
//! A tour, following one task:
//! - [`run`] blocks SIGTERM, SIGINT and SIGHUP, builds an actix system, starts an
//!   [`Agent`] and reads those signals from a signalfd (`signals`): SIGTERM and SIGINT
//!   stop it, SIGHUP reloads its configuration file (`config_file`: name, tags, software,
//!   GPUs) and registers again. Before connecting, the agent kills task processes a
//!   previous agent process left behind (`orphans`), clears their working directories
//!   (`workdir`) and loads results the master never acknowledged (`spool`).
//! - The `MasterLink` actor (`link`) connects, handshakes, registers with the host's
//!   resources (`resources`: the `ResourceMonitor` actor and /proc), heartbeats, and
//!   reconnects with jittered exponential backoff. Task messages wait in the `spool`
//!   while the master is away and are replayed in order after re-registration; a result
//!   stays there until the master answers that it stored it.
//! - An `Assign` goes to the `TaskSupervisor` actor (`supervisor`), which owns the slots
//!   and starts one `TaskRunner` actor per accepted attempt.
//! - The runner (`runner`) resolves the job type (`jobtypes`: the definitions of
//!   furrow-jobtypes, built in, sent by the master before the first assignment that needs
//!   them, or loaded from the agent's own directory, watched by `jobtype_dir`), applies the
//!   assignment's path maps, starts the process in its own process group with no signal
//!   blocked (`process_group`), through the agent's spawner, which kills the group if the
//!   agent dies (`spawner`), and only its assigned GPUs visible
//!   (`CUDA_VISIBLE_DEVICES`), reads its output line by line into batches and through the
//!   job type's parser (progress, files, errors), enforces its limits (`runner::limits`:
//!   time limit, stall timeout, memory limit sampled from /proc by `group_memory`), waits
//!   for the exit (reported by the spawner, which reaps it), checks the files the task reported, makes JPEG previews
//!   of image outputs (`previews`), and reports; a result names the limit that ended it, if
//!   one did, and the files it produced.
//! - `Cancel`, shutdown and the limits kill the task's whole process group: SIGTERM, then
//!   SIGKILL after a grace period. An attempt the master no longer counts (it acknowledges
//!   the attempt while it runs, or assigns a newer attempt of its task here) gets SIGKILL
//!   at once, and a newer attempt starts only once the older one is gone.
//!
//! Where the kernel's fd interfaces come in, each through furrow-sysfd and each behind one
//! small module:
//! - signals: a signalfd (`signals`), so SIGTERM, SIGINT and SIGHUP are events in the
//!   actix system rather than handlers; the mask is set before any thread exists;
//! - time limits and stall timeouts: a timerfd on `CLOCK_MONOTONIC` per deadline; the
//!   memory samples: a periodic one; the SIGTERM → SIGKILL grace and the output drain
//!   after an exit, which every task has: tokio's timer, no fd and no system call
//!   (`time_limit`).
//!
//! State directory layout: see `state`.

#![warn(missing_docs)]

mod agent;
mod config;
mod config_file;
mod deploy;
mod error;
mod group_memory;
mod jobtype_dir;
mod jobtypes;
mod link;
mod orphans;
mod previews;
mod process_group;
mod resources;
mod runner;
mod signals;
mod spawner;
mod spool;
mod state;
mod supervisor;
#[cfg(test)]
mod test_util;
mod time_limit;
mod workdir;

pub use agent::{Agent, run};
pub use config::{
    AgentConfig, DEFAULT_APP_PORTS, WebServerConfig, WebServerMode, parse_gpus, parse_port_range,
    parse_software,
};
pub use error::{AgentError, ListError};
/// The web servers an agent can mount apps on (`nginx`, `apache`, `lighttpd`).
pub use furrow_deploy::webserver::WebServerKind;
