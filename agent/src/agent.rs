//! Starting, reloading and stopping an agent: the startup sequence, the actors, the
//! signal loop.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::config::Tuning;
use crate::config_file::Reloadable;
use crate::deploy::{Deployer, DeployerSetup, ShutdownApps};
use crate::jobtype_dir::JobTypeDir;
use crate::jobtypes::JobTypes;
use crate::link::{AnnounceDrain, Identity, LinkSetup, MasterLink, Profile, Reidentify, StopLink};
use crate::resources::{HostInfo, ResourceMonitor, resolve_gpus};
use crate::runner::{OutputLimits, RunnerEnv};
use crate::signals::{self, AgentSignal, Received, Signals};
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
    /// As given at start: a reload lays the configuration file over it again.
    config: AgentConfig,
    /// The host as probed at start; a reload resolves the name and GPUs against it.
    host: HostInfo,
    link: Addr<MasterLink>,
    supervisor: Addr<TaskSupervisor>,
    /// Runs the deployed apps, when the agent has a web server.
    deployer: Option<Addr<Deployer>>,
    tuning: Tuning,
    /// Held until the agent is stopped.
    _lock: StateLock,
}

impl Agent {
    /// Starts an agent in the current actix system.
    ///
    /// Before connecting, it kills the process groups of tasks a previous agent process
    /// left running (see the crate docs), clears their working directories, and loads
    /// results the master never acknowledged. Fails only on an invalid configuration
    /// (including a [configuration file](AgentConfig::config_file) that is missing or
    /// invalid) or an unusable state directory; an unreachable master is retried forever.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        Self::start_tuned(config, Tuning::default()).await
    }

    pub(crate) async fn start_tuned(
        config: AgentConfig,
        tuning: Tuning,
    ) -> Result<Self, AgentError> {
        config.validate()?;
        let settings = Reloadable::resolve(&config).await?;
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

        let mut host = HostInfo::probe().await;
        if config.detect_software {
            host.software = crate::resources::detect_software().await;
        }
        if let Some(web) = &config.webserver {
            let version = crate::resources::webserver_version(web.kind).await;
            host.software.insert(web.kind.to_string(), version);
        }
        let slots = config.slots.unwrap_or(host.cpus).max(1);
        let profile = profile(settings, &host);
        info!(
            %agent_id,
            name = %profile.name,
            tags = ?profile.tags,
            software = ?profile.software,
            master = %config.master,
            slots,
            cpus = host.cpus,
            ram_mb = host.ram_mb,
            gpus = ?profile.gpus.iter().map(|gpu| gpu.index).collect::<Vec<_>>(),
            detected_gpus = host.gpus.len(),
            "starting agent"
        );

        let jobtypes = Arc::new(JobTypes::builtin());
        let env = Arc::new(RunnerEnv {
            jobtypes: jobtypes.clone(),
            state: state.clone(),
            output: OutputLimits::for_max_frame(config.max_frame),
            kill_grace: tuning.kill_grace,
            keep_failed_dirs: tuning.keep_failed_dirs,
        });
        let setup = LinkSetup {
            master: config.master.clone(),
            max_frame: config.max_frame,
            identity: Identity {
                agent_id,
                host: host.clone(),
                slots,
                profile,
            },
            tuning: tuning.clone(),
            jobtypes: jobtypes.clone(),
            join_token: config.join_token.clone(),
            state,
            tls: match &config.tls {
                Some(verify) => Some(
                    furrow_protocol::tls::client_config(verify)
                        .map_err(|e| AgentError::Config(e.to_string()))?,
                ),
                None => None,
            },
        };
        // The web server starts before anything connects: an agent that cannot serve the
        // apps it announces would only report failures.
        let deploy_setup = match &config.webserver {
            Some(webserver) => {
                Some(DeployerSetup::prepare(webserver, &config.state_dir, tuning.clone()).await?)
            }
            None => None,
        };
        let monitor = ResourceMonitor.start();
        // The link and the supervisor know each other: create the link's context first
        // so its address exists before the supervisor starts.
        let mut link_context = Context::<MasterLink>::new();
        link_context.set_mailbox_capacity(LINK_MAILBOX);
        let link = link_context.address();
        let supervisor = TaskSupervisor::new(slots, env, link.clone().recipient()).start();
        let deployer = deploy_setup.map(|setup| Deployer::new(setup, link.clone()).start());
        let mut master_link = MasterLink::new(setup, supervisor.clone(), monitor, spool);
        if let Some(deployer) = &deployer {
            master_link = master_link.with_deployer(deployer.clone().recipient());
        }
        link_context.run(master_link);
        if let Some(dir) = &config.jobtypes_dir {
            JobTypeDir::new(dir.clone(), jobtypes, link.clone()).start();
        }
        Ok(Self {
            agent_id,
            config,
            host,
            link,
            supervisor,
            deployer,
            tuning,
            _lock: lock,
        })
    }

    /// The agent's stable id.
    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }

    /// Reads the [configuration file](AgentConfig::config_file) again and, if the name,
    /// tags, software or GPUs changed, registers with the master again with the new ones (the link
    /// reconnects, so the master sees a fresh registration). Running tasks are not
    /// touched. An unreadable or invalid file is an error and changes nothing; without a
    /// configuration file there is nothing to reload.
    pub async fn reload(&self) -> Result<(), AgentError> {
        let Some(path) = self.config.config_file.as_deref() else {
            warn!("reload requested, but the agent was started without a configuration file");
            return Ok(());
        };
        let settings = Reloadable::resolve(&self.config).await?;
        let profile = profile(settings, &self.host);
        let name = profile.name.clone();
        let tags = profile.tags.clone();
        let software = profile.software.clone();
        let gpus: Vec<u32> = profile.gpus.iter().map(|gpu| gpu.index).collect();
        match self.link.send(Reidentify(profile)).await {
            Ok(changed) => info!(
                file = %path.display(),
                %name,
                ?tags,
                ?software,
                ?gpus,
                changed,
                "configuration reloaded"
            ),
            // Only when the link has stopped, that is when the agent is stopping.
            Err(_) => info!("configuration not applied: the agent is stopping"),
        }
        Ok(())
    }

    /// Stops the agent: refuses new assignments, cancels running tasks (SIGTERM to their
    /// process groups, SIGKILL after a grace), gives the master a few seconds to store
    /// their results (the rest stay on disk for the next start), and closes the
    /// connection.
    pub async fn shutdown(self) {
        info!("stopping: cancelling running tasks");
        // First the master stops sending work, then the running attempts go back to it.
        let _ = self.link.send(AnnounceDrain).await;
        let _ = self.supervisor.send(ShutdownTasks).await;
        if let Some(deployer) = &self.deployer {
            info!("stopping: stopping apps and the web server");
            let _ = deployer.send(ShutdownApps).await;
        }
        let _ = self
            .link
            .send(StopLink {
                drain: self.tuning.shutdown_drain,
            })
            .await;
        info!("agent stopped");
    }
}

/// What the agent registers as, from the configured values and the probed host.
fn profile(settings: Reloadable, host: &HostInfo) -> Profile {
    Profile {
        name: settings.display_name(&host.hostname),
        gpus: resolve_gpus(&host.gpus, settings.gpus.as_deref()),
        tags: settings.tags,
        // What was found on the host, overridden by what is configured.
        software: host
            .software
            .clone()
            .into_iter()
            .chain(settings.software)
            .collect(),
    }
}

/// Runs an agent until SIGTERM or SIGINT, then stops it cleanly and returns `Ok`.
/// SIGHUP reloads the [configuration file](AgentConfig::config_file) (see
/// [`Agent::reload`]); an invalid file is logged and the current configuration kept.
/// A second SIGTERM or SIGINT during the stop kills the tasks at once and returns.
///
/// The signals arrive through a signalfd: `run` first blocks SIGTERM, SIGINT and SIGHUP in
/// the calling thread, and a signal only reaches the signalfd while *every* thread of the
/// process blocks it. So call `run` before the process starts any other thread (straight
/// from `main`, after parsing arguments and installing a logger that starts none): the
/// threads started later, including the agent's own, inherit the mask. A thread that
/// existed before and does not block the signals would take a SIGTERM's default action
/// and kill the process without a clean stop; `run` logs a warning naming such threads.
/// Task processes start with no signal blocked.
///
/// Blocks the calling thread, which becomes the agent's actix system: call it from a
/// thread that is not already running an async runtime (plain `main`, not
/// `#[tokio::main]`). Task processes die with the agent's process, however it ends.
///
/// ```no_run
/// let mut config = furrow_agent::AgentConfig::new("10.0.0.1:7420", "/var/lib/furrow-agent");
/// config.tags = vec!["blender".into()];
/// config.config_file = Some("/etc/furrow/agent.conf".into());
/// furrow_agent::run(config)?;
/// # Ok::<(), furrow_agent::AgentError>(())
/// ```
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    // Before the actix system exists, so that each of its threads inherits the mask.
    signals::block().map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?;
    let unblocked = signals::threads_not_blocking();
    if !unblocked.is_empty() {
        warn!(
            threads = ?unblocked,
            "threads started before furrow_agent::run do not block SIGTERM, SIGINT and SIGHUP; \
             such a signal may kill the agent instead of stopping it cleanly"
        );
    }
    let system = System::new();
    system.block_on(async move {
        let mut signals =
            Signals::open().map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?;
        let agent = Agent::start(config).await?;
        let mut failure = None;
        loop {
            match signals.next().await {
                Ok(Received {
                    signal: AgentSignal::Hangup,
                    sender_pid,
                }) => {
                    info!(sender_pid, "reload requested");
                    if let Err(e) = agent.reload().await {
                        error!(error = %e, "configuration not reloaded; keeping the current one");
                    }
                }
                Ok(Received { signal, sender_pid }) => {
                    info!(?signal, sender_pid, "stop requested");
                    break;
                }
                Err(e) => {
                    // Without its signals the agent could not be stopped cleanly any more.
                    error!(error = %e, "cannot read the agent's signals; stopping");
                    failure = Some(AgentError::Runtime(std::io::Error::other(e)));
                    break;
                }
            }
        }
        let second_stop = async {
            loop {
                match signals.next().await {
                    Ok(Received {
                        signal: AgentSignal::Hangup,
                        ..
                    }) => info!("reload requested while stopping; ignored"),
                    Ok(Received { signal, .. }) => return signal,
                    // Nothing more to hear: let the stop finish.
                    Err(_) => std::future::pending().await,
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
        failure.map_or(Ok(()), Err)
    })
}
