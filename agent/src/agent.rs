//! Starting and stopping an agent: the startup sequence, the actors, the signal loop.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::Tuning;
use crate::jobtypes::JobTypes;
use crate::link::{Identity, LinkSetup, MasterLink, StopLink};
use crate::resources::{HostInfo, ResourceMonitor};
use crate::runner::{OutputLimits, RunnerEnv};
use crate::signals::{AgentSignal, Signals};
use crate::spool::Spool;
use crate::state::{StateDir, StateLock};
use crate::supervisor::{ShutdownTasks, TaskSupervisor};
use crate::{AgentConfig, AgentError, orphans, workdir};

/// Mailbox of the link: runners wait (backpressure) when it is full, so a burst of
/// output from many tasks slows them down instead of growing a queue.
const LINK_MAILBOX: usize = 256;

/// A running agent inside an actix system.
///
/// [`run`] is the usual entry point; `Agent::start` is for embedding the
/// agent in an actix system that already runs (tests, or a program with its own).
///
/// ```no_run
/// # async fn example() -> Result<(), furrow_agent::AgentError> {
/// use furrow_agent::{Agent, AgentConfig};
///
/// // Inside a running actix system (`#[actix_rt::main]`, `System::new().block_on`).
/// let agent = Agent::start(AgentConfig::new("127.0.0.1:7420", "/var/lib/furrow-agent")).await?;
/// println!("agent {} started", agent.agent_id());
/// agent.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Agent {
    agent_id: Uuid,
    link: Addr<MasterLink>,
    supervisor: Addr<TaskSupervisor>,
    tuning: Tuning,
    /// Held until the agent is stopped.
    _lock: StateLock,
}

impl Agent {
    /// Starts an agent in the current actix system.
    ///
    /// Before connecting, it kills the process groups of tasks a previous agent process
    /// left running (see the crate docs), clears their working directories, and loads
    /// results that were never delivered. Fails only on an invalid configuration or an
    /// unusable state directory; an unreachable master is retried forever.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        Self::start_tuned(config, Tuning::default()).await
    }

    pub(crate) async fn start_tuned(
        config: AgentConfig,
        tuning: Tuning,
    ) -> Result<Self, AgentError> {
        config.validate()?;
        let state = StateDir::open(&config.state_dir)?;
        let lock = state.lock()?;
        let agent_id = state.agent_id()?;
        let reaped = orphans::reap_stale_groups(&state);
        if !reaped.is_empty() {
            warn!(
                groups = reaped.len(),
                "killed task processes left behind by a previous agent process"
            );
        }
        workdir::clear_leftovers(&state);
        let spool = Spool::open(&state.spool_dir(), tuning.spool_log_bytes);

        let host = HostInfo::probe().await;
        let slots = config.slots.unwrap_or(host.cpus).max(1);
        let name = config
            .name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| host.hostname.clone());
        info!(%agent_id, %name, master = %config.master, slots, cpus = host.cpus, ram_mb = host.ram_mb, gpus = host.gpus.len(), "starting agent");

        let env = Arc::new(RunnerEnv {
            jobtypes: JobTypes::builtin(),
            state,
            output: OutputLimits::for_max_frame(config.max_frame),
            kill_grace: tuning.kill_grace,
            keep_failed_dirs: tuning.keep_failed_dirs,
        });
        let setup = LinkSetup {
            master: config.master.clone(),
            max_frame: config.max_frame,
            identity: Identity {
                agent_id,
                name,
                host,
                tags: config.tags.clone(),
                slots,
            },
            tuning: tuning.clone(),
        };
        let monitor = ResourceMonitor.start();
        // The link and the supervisor know each other: create the link's context first
        // so its address exists before the supervisor starts.
        let mut link_context = Context::<MasterLink>::new();
        link_context.set_mailbox_capacity(LINK_MAILBOX);
        let link = link_context.address();
        let supervisor = TaskSupervisor::new(slots, env, link.clone().recipient()).start();
        link_context.run(MasterLink::new(setup, supervisor.clone(), monitor, spool));
        Ok(Self {
            agent_id,
            link,
            supervisor,
            tuning,
            _lock: lock,
        })
    }

    /// The agent's stable id.
    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }

    /// Stops the agent: refuses new assignments, cancels running tasks (SIGTERM to their
    /// process groups, SIGKILL after a grace), gives their results a few seconds to reach
    /// the master (the rest stay on disk for the next start), and closes the connection.
    pub async fn shutdown(self) {
        info!("stopping: cancelling running tasks");
        let _ = self.supervisor.send(ShutdownTasks).await;
        let _ = self
            .link
            .send(StopLink {
                drain: self.tuning.shutdown_drain,
            })
            .await;
        info!("agent stopped");
    }
}

/// Runs an agent until SIGTERM or SIGINT, then stops it cleanly and returns `Ok`.
/// SIGHUP is logged ("reload requested"); configuration reload is not implemented yet.
/// A second SIGTERM or SIGINT during the stop kills the tasks at once and returns.
///
/// Blocks the calling thread, which becomes the agent's actix system: call it from a
/// thread that is not already running an async runtime (plain `main`, not
/// `#[tokio::main]`). Task processes are tied to this thread through PR_SET_PDEATHSIG.
///
/// ```no_run
/// let mut config = furrow_agent::AgentConfig::new("10.0.0.1:7420", "/var/lib/furrow-agent");
/// config.tags = vec!["blender".into()];
/// furrow_agent::run(config)?;
/// # Ok::<(), furrow_agent::AgentError>(())
/// ```
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    let system = System::new();
    system.block_on(async move {
        // Installed before anything starts, so an early SIGTERM is not fatal.
        let mut signals = Signals::install().map_err(AgentError::Runtime)?;
        let agent = Agent::start(config).await?;
        loop {
            match signals.next().await {
                AgentSignal::Hangup => info!("reload requested"),
                signal => {
                    info!(?signal, "stop requested");
                    break;
                }
            }
        }
        let second_stop = async {
            loop {
                match signals.next().await {
                    AgentSignal::Hangup => info!("reload requested"),
                    signal => return signal,
                }
            }
        };
        tokio::select! {
            () = agent.shutdown() => {}
            signal = second_stop => {
                // Dropping the runs kills their process groups (see the runner's guard).
                warn!(?signal, "second stop request: exiting without waiting for tasks");
            }
        }
        Ok(())
    })
}
