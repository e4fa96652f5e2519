//! The `MasterLink` actor: the agent's one connection to the master.
//!
//! Life of a connection: connect and handshake ([`connection`]), send `Register`, wait
//! for `Registered`, then heartbeat at the master's interval and replay the spool. When
//! anything fails or the master closes the connection, the link drops it, puts finished
//! results on disk, and reconnects after a jittered exponential backoff ([`backoff`]);
//! the next `Register` lists every attempt still running here or finished with a result
//! the master has not acknowledged, then the spool replays what the master may have
//! missed, in order.
//!
//! When a result is forgotten: a `TaskFinished` counts as delivered once it is flushed to
//! the socket, but the link forgets it only when the master answers `ResultStored` for
//! its attempt, which the master sends after the result is durably committed (or when it
//! no longer needs it). Until then the attempt stays listed in registrations and
//! heartbeats, and a reconnect replays the result; on a live connection it is not sent
//! again. A `ResultStored` for an attempt still running here means the master no longer
//! counts it (it answers so, along with a `Cancel`, for an attempt a registration lists
//! that is no longer current): the attempt is killed at once, and its result, once
//! sent, acknowledged like any other. One for an unknown attempt is ignored.
//!
//! An attempt given back (`TaskReturned`: stopped by the shutdown, or an assignment
//! refused) has no result: it leaves the list of attempts at once and its message is
//! delivered best-effort, like logs. The master requeues the task either way: on reading
//! it, or when this agent registers again without the attempt or is declared lost.
//!
//! Every connection gets an epoch number; events of an older connection (a late read, a
//! write finishing after a reconnect) are recognised by their epoch and ignored.
//!
//! App messages (web server, bundle requests, app reports and logs, from the `deploy`
//! module) take another way: the link's app outbox (`app_outbox`) writes them only while
//! registered and keeps nothing for a later connection; the link tells the deployer of
//! each registration, and hands it the master's `Deploy`, `Bundle` and `Undeploy`.
//!
//! Writes: one write at a time carries the pending control message (register or
//! heartbeat, which jump the queue), a flight of spooled task messages, then app messages. Spooled
//! messages leave the spool only after the write was flushed (results only once
//! acknowledged), so a connection that dies mid-write loses nothing. A result starts a
//! write at once; any other task message waits up to [`LINGER`] (1 ms) for company, and
//! an attempt's last lines are handed over together with its result: a short task's
//! start, lines and result cost the master one or two wake-ups, not three.

mod app_outbox;
mod backoff;
mod connection;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use furrow_protocol::{
    AgentMessage, GpuInfo, Heartbeat, LogBatch, LogLine, LogStream, MasterMessage, ProtocolError,
    Registered, Registration, TaskRef, TaskReturned,
};
use futures::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::config::Tuning;
use crate::deploy::DeployerEvent;
use crate::resources::{HostInfo, ResourceMonitor, SampleLoad};
use crate::spool::Spool;
use crate::supervisor::{AssignOutcome, AssignTask, CancelTask, StaleTask, TaskSupervisor};
use app_outbox::AppOutbox;
use backoff::Backoff;
use connection::{Connection, MasterWriter};

/// Most messages written in one flight.
const FLIGHT_MESSAGES: usize = 256;
/// About the most log bytes written in one flight.
const FLIGHT_BYTES: usize = 1024 * 1024;

/// How long a task message other than a result may wait for company before it is
/// written: a task's start then goes out with the next result of another slot, or the
/// next lines, in one write, where each was a write of its own and a wake-up of the
/// master. Results are written at once.
const LINGER: Duration = Duration::from_millis(1);
/// Shortest heartbeat interval honoured, whatever the master asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Log text of apps waiting for a slow master before lines are dropped.
const APP_LOG_BUDGET: usize = 4 * 1024 * 1024;

/// An app message for the master (see `app_outbox`): written while the link is
/// registered, dropped otherwise, never kept for a later connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AppOutbound(pub AgentMessage);

/// A task message from a runner (or the supervisor) for the master.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskReport(pub AgentMessage);

/// Stop the link: wait up to `drain` for the spooled task messages to be written and the
/// results to be acknowledged, put the unacknowledged results on disk, close the
/// connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopLink {
    pub drain: Duration,
}

/// Register again with a new profile (a configuration reload). Answers whether it differs
/// from the current one.
///
/// The link reconnects to do so rather than sending a second `Register` on the live
/// connection: that one could cross an `Assign` already on its way, and the master,
/// missing the attempt from the list of running ones, would put it back in the queue
/// while this agent starts it. A new connection carries no such message.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Reidentify(pub Profile);

/// The part of the registration a configuration reload can change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    /// Display name.
    pub name: String,
    /// Tags for the master's requirements.
    pub tags: Vec<String>,
    /// Software offered, name to version.
    pub software: BTreeMap<String, String>,
    /// GPUs reported: those detected, or those the configuration names.
    pub gpus: Vec<GpuInfo>,
}

/// What the link registers the agent as.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub agent_id: Uuid,
    pub host: HostInfo,
    pub slots: u32,
    pub profile: Profile,
}

/// Where and how the link connects.
#[derive(Debug, Clone)]
pub(crate) struct LinkSetup {
    pub master: String,
    pub max_frame: usize,
    pub identity: Identity,
    pub tuning: Tuning,
    /// Where the job types the master sends are kept.
    pub jobtypes: std::sync::Arc<crate::jobtypes::JobTypes>,
    /// The farm's join token, for a first connection (or after the master forgot this
    /// agent's credential).
    pub join_token: Option<String>,
    /// Where this agent's own credential is kept.
    pub state: crate::state::StateDir,
    /// TLS to the master, when it serves it.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl LinkSetup {
    /// What the handshake presents: this agent's credential and the join token, either
    /// of which the master may accept.
    fn credentials(&self) -> Option<String> {
        let presented: Vec<String> = [self.state.credential(), self.join_token.clone()]
            .into_iter()
            .flatten()
            .collect();
        (!presented.is_empty()).then(|| presented.join(" "))
    }
}

/// The job-type files of the agent's directory, to tell the master now (when
/// registered) and after every registration.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PublishJobTypes(pub Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Not connected; a reconnect is scheduled (or the link is stopping).
    Disconnected,
    /// A connection attempt is under way.
    Connecting,
    /// Connected; `Register` sent, `Registered` not yet received.
    Registering,
    /// Registered: heartbeats run and the spool drains.
    Registered,
}

/// An event of the connection's read half.
struct Incoming {
    epoch: u64,
    /// `None` when the master closed the connection.
    item: Option<Result<MasterMessage, ProtocolError>>,
}

/// The agent's connection to the master.
pub(crate) struct MasterLink {
    setup: LinkSetup,
    supervisor: Addr<TaskSupervisor>,
    monitor: Addr<ResourceMonitor>,
    spool: Spool,
    /// Attempts assigned here whose result the master has not acknowledged: running, or
    /// finished and kept in the spool (written or not).
    tasks: BTreeMap<TaskRef, Phase>,
    epoch: u64,
    state: LinkState,
    backoff: Backoff,
    /// When the current connection registered.
    registered_at: Option<Instant>,
    /// The write half; `None` while a write is under way or when disconnected.
    writer: Option<MasterWriter>,
    write_task: Option<SpawnHandle>,
    /// A write is about to start (see [`MasterLink::pump`]).
    pump_deferred: bool,
    /// A write will start after [`LINGER`] (see [`MasterLink::pump_soon`]).
    linger: Option<SpawnHandle>,
    /// A register or heartbeat waiting for the writer.
    control: Option<AgentMessage>,
    reader: Option<SpawnHandle>,
    heartbeat: Option<SpawnHandle>,
    register_timer: Option<SpawnHandle>,
    drain_waiters: Vec<oneshot::Sender<()>>,
    stopping: bool,
    /// The identity changed during a write: reconnect once it is flushed.
    reregister_pending: bool,
    /// The agent's own job-type files, told to the master after each registration.
    published: Vec<String>,
    /// App messages for the master, while registered.
    apps: AppOutbox,
    /// Where deployments go, when this agent runs apps.
    deployer: Option<Recipient<DeployerEvent>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Finished,
}

impl MasterLink {
    /// A link for `setup`, sending assignments to `supervisor` and replaying `spool`.
    pub fn new(
        setup: LinkSetup,
        supervisor: Addr<TaskSupervisor>,
        monitor: Addr<ResourceMonitor>,
        spool: Spool,
    ) -> Self {
        let tasks = spool
            .pending_results()
            .into_iter()
            .map(|task| (task, Phase::Finished))
            .collect();
        let backoff = Backoff::new(setup.tuning.backoff_start, setup.tuning.backoff_max);
        Self {
            setup,
            supervisor,
            monitor,
            spool,
            tasks,
            epoch: 0,
            state: LinkState::Disconnected,
            backoff,
            registered_at: None,
            writer: None,
            write_task: None,
            pump_deferred: false,
            linger: None,
            control: None,
            reader: None,
            heartbeat: None,
            register_timer: None,
            drain_waiters: Vec::new(),
            stopping: false,
            reregister_pending: false,
            published: Vec::new(),
            apps: AppOutbox::new(APP_LOG_BUDGET),
            deployer: None,
        }
    }

    /// Hands deployments (and word of each registration) to `deployer`.
    pub fn with_deployer(mut self, deployer: Recipient<DeployerEvent>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Every attempt the master should consider running here.
    fn running(&self) -> Vec<TaskRef> {
        self.tasks.keys().copied().collect()
    }

    fn registration(&self) -> Registration {
        let identity = &self.setup.identity;
        let profile = &identity.profile;
        Registration {
            agent_id: identity.agent_id,
            name: profile.name.clone(),
            hostname: identity.host.hostname.clone(),
            os: identity.host.os.clone(),
            cpus: identity.host.cpus,
            ram_mb: identity.host.ram_mb,
            gpus: profile.gpus.clone(),
            tags: profile.tags.clone(),
            software: profile.software.clone(),
            slots: identity.slots,
            version: env!("CARGO_PKG_VERSION").to_string(),
            running: self.running(),
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.epoch += 1;
        let epoch = self.epoch;
        self.state = LinkState::Connecting;
        let open = connection::open(
            self.setup.master.clone(),
            self.setup.identity.agent_id,
            self.setup.credentials(),
            self.setup.tls.clone(),
            self.setup.max_frame,
            self.setup.tuning.connect_timeout,
        );
        ctx.spawn(open.into_actor(self).map(move |result, link, ctx| {
            if link.epoch != epoch || link.stopping {
                return;
            }
            match result {
                Ok(connection) => link.connected(connection, ctx),
                Err(e) => {
                    link.state = LinkState::Disconnected;
                    if e.is_refusal() {
                        // Needs an operator (upgrade, credentials): say so loudly, and
                        // keep trying so the agent comes back once it is fixed.
                        error!(error = %e, "the master refused this agent");
                    } else {
                        warn!(error = %e, "cannot reach the master");
                    }
                    let delay = link.backoff.next_delay();
                    link.reconnect_after(delay, ctx);
                }
            }
        }));
    }

    fn reconnect_after(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to the master later"
        );
        ctx.run_later(delay, |link, ctx| {
            if link.state == LinkState::Disconnected && !link.stopping {
                link.connect(ctx);
            }
        });
    }

    fn connected(&mut self, connection: Connection, ctx: &mut Context<Self>) {
        let Connection {
            reader,
            writer,
            master,
        } = connection;
        info!(master = %self.setup.master, master_id = %master.node_id, master_version = %master.software, "connected to the master");
        let epoch = self.epoch;
        self.state = LinkState::Registering;
        let events = reader
            .map(move |item| Incoming {
                epoch,
                item: Some(item),
            })
            .chain(futures::stream::once(async move {
                Incoming { epoch, item: None }
            }));
        self.reader = Some(ctx.add_stream(events));
        self.writer = Some(writer);
        self.control = Some(AgentMessage::Register(self.registration()));
        self.register_timer = Some(ctx.run_later(
            self.setup.tuning.register_timeout,
            move |link, ctx| {
                if link.epoch == epoch && link.state == LinkState::Registering {
                    link.disconnect("the master did not answer the registration in time", ctx);
                }
            },
        ));
        self.pump(ctx);
    }

    /// Drops the current connection (if any) and schedules the next one.
    fn disconnect(&mut self, reason: &str, ctx: &mut Context<Self>) {
        if matches!(self.state, LinkState::Disconnected | LinkState::Connecting) {
            return;
        }
        warn!(
            reason,
            running = self.tasks.len(),
            spooled = self.spool.len(),
            unacknowledged = self.spool.unacked_len(),
            "lost the connection to the master"
        );
        self.drop_connection(ctx);
        if self.stopping {
            // Nothing more can be delivered; let the stop go ahead.
            self.wake_drain_waiters();
        } else {
            let delay = self.backoff.next_delay();
            self.reconnect_after(delay, ctx);
        }
    }

    /// Closes the current connection and forgets everything tied to it; task messages
    /// not yet flushed, and results not yet acknowledged, stay in the spool for the next
    /// connection.
    fn drop_connection(&mut self, ctx: &mut Context<Self>) {
        self.epoch += 1;
        self.state = LinkState::Disconnected;
        self.reregister_pending = false;
        for handle in [
            self.reader.take(),
            self.heartbeat.take(),
            self.register_timer.take(),
            self.write_task.take(),
        ]
        .into_iter()
        .flatten()
        {
            ctx.cancel_future(handle);
        }
        self.writer = None;
        self.control = None;
        self.apps.clear();
        // Short delays again only after a connection that held: a master that accepts
        // and then falls over at once must not draw reconnects every 200 ms.
        if self
            .registered_at
            .take()
            .is_some_and(|at| at.elapsed() >= self.setup.tuning.backoff_max)
        {
            self.backoff.reset();
        }
        self.spool.abort_flight();
        // The master may have lost what it read but did not acknowledge (a crash within
        // its group-commit window): say it again on the next connection.
        self.spool.resend_unacked();
        self.spool.persist_results();
    }

    /// Closes the connection on purpose and opens a new one at once, whose registration
    /// carries the current identity. Called only between writes, so no message is half
    /// sent.
    fn reregister(&mut self, ctx: &mut Context<Self>) {
        info!(
            name = %self.setup.identity.profile.name,
            tags = ?self.setup.identity.profile.tags,
            software = ?self.setup.identity.profile.software,
            gpus = self.setup.identity.profile.gpus.len(),
            "reconnecting to register the new configuration"
        );
        self.drop_connection(ctx);
        self.connect(ctx);
    }

    fn on_message(&mut self, message: MasterMessage, ctx: &mut Context<Self>) {
        match message {
            MasterMessage::Registered(registered) => self.registered(registered, ctx),
            MasterMessage::Assign(assignment) => {
                let task = assignment.task;
                if self.tasks.contains_key(&task) {
                    warn!(
                        task_id = task.task_id,
                        attempt = task.attempt,
                        "ignoring a repeated assignment"
                    );
                    return;
                }
                self.tasks.insert(task, Phase::Running);
                // One pending request per assignment read from the master; the
                // supervisor answers each at once, so these do not pile up.
                let request = self.supervisor.send(AssignTask(assignment));
                ctx.spawn(request.into_actor(self).map(move |outcome, link, ctx| {
                    let refusal = match outcome {
                        Ok(AssignOutcome::Refused(reason)) => reason,
                        Ok(AssignOutcome::Started | AssignOutcome::Duplicate) => return,
                        Err(_) => "refused: the agent is shutting down".to_string(),
                    };
                    // Not run here: the attempt is given back, with the reason in its
                    // log, and the master queues the task again without a failure.
                    link.enqueue(
                        AgentMessage::Logs(LogBatch {
                            task,
                            lines: vec![LogLine {
                                at_ms: Utc::now().timestamp_millis(),
                                stream: LogStream::Agent,
                                text: refusal.clone(),
                            }],
                        }),
                        ctx,
                    );
                    link.enqueue(
                        AgentMessage::TaskReturned(TaskReturned {
                            task,
                            reason: refusal,
                        }),
                        ctx,
                    );
                }));
            }
            MasterMessage::Cancel(task) => {
                // As above: one small pending request per message read.
                let request = self.supervisor.send(CancelTask(task));
                ctx.spawn(request.into_actor(self).map(|_, _, _| ()));
            }
            MasterMessage::ResultStored(task) => self.result_stored(task, ctx),
            // An attempt the master no longer counts: killed at once if it runs here,
            // its result forgotten if it ended; what a version-5 master says with
            // `Cancel` then `ResultStored`.
            MasterMessage::Stale(task) => self.result_stored(task, ctx),
            MasterMessage::Credential(credential) => {
                match self.setup.state.save_credential(&credential) {
                    Ok(()) => info!("joined the farm; this agent's credential is saved"),
                    Err(e) => error!(
                        error = %e,
                        "cannot save this agent's credential; it will join with the join token again"
                    ),
                }
            }
            MasterMessage::Deploy(deployment) => {
                self.hand_to_deployer(DeployerEvent::Deploy(deployment))
            }
            MasterMessage::Bundle(chunk) => self.hand_to_deployer(DeployerEvent::Bundle(chunk)),
            MasterMessage::Undeploy(app) => self.hand_to_deployer(DeployerEvent::Undeploy(app)),
            MasterMessage::JobType(definition) => {
                let (name, version) = (definition.name.clone(), definition.version);
                match self.setup.jobtypes.receive(definition) {
                    Ok(()) => debug!(name, version, "job type received"),
                    Err(e) => {
                        warn!(name, version, error = %e, "job type from the master refused")
                    }
                }
            }
        }
    }

    /// Hands an app message of the master to the deployer. Its mailbox is not bounded
    /// by actix for `do_send`; what arrives is bounded by the master: one `Deploy` or
    /// `Undeploy` per app and change, and one bundle piece per request the deployer made.
    fn hand_to_deployer(&self, event: DeployerEvent) {
        match &self.deployer {
            Some(deployer) => deployer.do_send(event),
            None => warn!(
                "ignoring an app deployment: this agent runs no web server (start it with --webserver)"
            ),
        }
    }

    /// The master stored the result of `task`: forget it. Or the master no longer needs
    /// an attempt still running here: kill it.
    fn result_stored(&mut self, task: TaskRef, ctx: &mut Context<Self>) {
        match self.tasks.get(&task) {
            Some(Phase::Finished) => {
                debug!(
                    task_id = task.task_id,
                    attempt = task.attempt,
                    "the master stored the result"
                );
                self.forget_result(task);
            }
            // The master answers attempts it lists as no longer current both ways (it
            // cannot tell a running one from a finished one); this one still runs, and
            // another attempt of its task may already run elsewhere. Its cancel came
            // first, but a cancel leaves a grace that a task ignoring SIGTERM would use.
            Some(Phase::Running) => {
                info!(
                    task_id = task.task_id,
                    attempt = task.attempt,
                    "the master no longer counts an attempt running here"
                );
                // As for a cancel: one small pending request per message read.
                let request = self.supervisor.send(StaleTask(task));
                ctx.spawn(request.into_actor(self).map(|_, _, _| ()));
            }
            // Acknowledged twice (a replay crossing the first answer), or a result an
            // earlier agent process delivered.
            None => debug!(
                task_id = task.task_id,
                attempt = task.attempt,
                "ignoring the acknowledgement of an unknown attempt"
            ),
        }
    }

    fn registered(&mut self, registered: Registered, ctx: &mut Context<Self>) {
        if self.state != LinkState::Registering {
            debug!("ignoring a repeated registration answer");
            return;
        }
        if let Some(timer) = self.register_timer.take() {
            ctx.cancel_future(timer);
        }
        if registered.agent_id != self.setup.identity.agent_id {
            warn!(ours = %self.setup.identity.agent_id, theirs = %registered.agent_id, "the master knows this agent by another id");
        }
        self.state = LinkState::Registered;
        self.registered_at = Some(Instant::now());
        let interval = Duration::from_millis(registered.heartbeat_interval_ms).max(MIN_HEARTBEAT);
        self.heartbeat = Some(ctx.run_interval(interval, |link, ctx| link.send_heartbeat(ctx)));
        info!(
            name = %self.setup.identity.profile.name,
            tags = ?self.setup.identity.profile.tags,
            running = self.tasks.len(),
            spooled = self.spool.len(),
            heartbeat_ms = interval.as_millis() as u64,
            "registered with the master"
        );
        if !self.published.is_empty() {
            self.enqueue(AgentMessage::JobTypes(self.published.clone()), ctx);
        }
        if let Some(deployer) = &self.deployer {
            // It announces its web server and reports every app again.
            deployer.do_send(DeployerEvent::Registered);
        }
        self.pump(ctx);
    }

    fn send_heartbeat(&mut self, ctx: &mut Context<Self>) {
        let epoch = self.epoch;
        let sample = self.monitor.send(SampleLoad);
        ctx.spawn(sample.into_actor(self).map(move |sample, link, ctx| {
            let Ok(sample) = sample else { return };
            if link.epoch != epoch || link.state != LinkState::Registered {
                return;
            }
            // Finished attempts are listed until their results are acknowledged: the
            // heartbeat may overtake a result, and the master must not take the attempt
            // for lost.
            link.control = Some(AgentMessage::Heartbeat(Heartbeat {
                free_ram_mb: sample.free_ram_mb,
                load: sample.load,
                running: link.running(),
            }));
            link.pump(ctx);
        }));
    }

    /// Drops a finished attempt and its result (nothing if it was dropped already).
    fn forget_result(&mut self, task: TaskRef) {
        if self.tasks.remove(&task).is_some() {
            let found = self.spool.result_stored(task);
            debug_assert!(found, "a finished attempt keeps its result in the spool");
        }
        if self.drained() {
            self.wake_drain_waiters();
        }
    }

    /// Whether every task message was written and every result acknowledged.
    fn drained(&self) -> bool {
        !self.spool.has_results() && self.spool.len() == 0
    }

    /// Queues a task message and sends it if the master is there.
    fn enqueue(&mut self, message: AgentMessage, ctx: &mut Context<Self>) {
        match &message {
            AgentMessage::TaskFinished(finished) => {
                if self.tasks.get(&finished.task) == Some(&Phase::Finished) {
                    debug!(
                        task_id = finished.task.task_id,
                        attempt = finished.task.attempt,
                        "dropping a second result"
                    );
                    return;
                }
                self.tasks.insert(finished.task, Phase::Finished);
            }
            AgentMessage::TaskReturned(returned) => {
                if self.tasks.get(&returned.task) == Some(&Phase::Finished) {
                    debug!(
                        task_id = returned.task.task_id,
                        attempt = returned.task.attempt,
                        "dropping the return of an attempt that has a result"
                    );
                    return;
                }
                // A returned attempt is over here: it is no longer listed, and nothing
                // waits for an acknowledgement. Its message is delivered best-effort,
                // like logs: if the agent exits before it is flushed, the master still
                // requeues the task, when this agent registers again without it or is
                // declared lost.
                self.tasks.remove(&returned.task);
            }
            _ => {}
        }
        let result = matches!(
            message,
            AgentMessage::TaskFinished(_) | AgentMessage::TaskReturned(_)
        );
        let persist = self.state != LinkState::Registered;
        self.spool.push(message, persist);
        if result {
            self.pump(ctx);
        } else {
            self.pump_soon(ctx);
        }
    }

    /// Starts a write within [`LINGER`], unless one starts sooner.
    fn pump_soon(&mut self, ctx: &mut Context<Self>) {
        if self.writer.is_none() || self.pump_deferred || self.linger.is_some() {
            return;
        }
        self.linger = Some(ctx.run_later(LINGER, |link, ctx| {
            link.linger = None;
            link.pump(ctx);
        }));
    }

    /// Starts a write when the writer is free and there is something to write: once the
    /// messages that arrived together are all queued (the actor's mailbox is read before
    /// its spawned futures run), so that a burst of them (the results, starts and logs
    /// of several slots) goes out in one write rather than one write each.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(linger) = self.linger.take() {
            ctx.cancel_future(linger);
        }
        if self.writer.is_none() || self.pump_deferred {
            return;
        }
        self.pump_deferred = true;
        ctx.spawn(actix::fut::ready(()).map(|(), link: &mut Self, ctx| {
            link.pump_deferred = false;
            link.pump_now(ctx);
        }));
    }

    fn pump_now(&mut self, ctx: &mut Context<Self>) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        let mut batch: Vec<AgentMessage> = self.control.take().into_iter().collect();
        if self.state == LinkState::Registered {
            batch.extend(self.spool.take_flight(FLIGHT_MESSAGES, FLIGHT_BYTES));
            // App messages are not kept if this write fails (see `app_outbox`).
            batch.extend(self.apps.take(FLIGHT_MESSAGES));
        }
        if batch.is_empty() {
            self.writer = Some(writer);
            return;
        }
        let epoch = self.epoch;
        let write = async move {
            let mut unsendable = Vec::new();
            for message in batch {
                let result_of = match &message {
                    AgentMessage::TaskFinished(finished) => Some(finished.task),
                    _ => None,
                };
                match writer.feed(message).await {
                    Ok(()) => {}
                    // This one message cannot be encoded (too large for a frame): it is
                    // dropped, the connection is fine.
                    Err(e @ (ProtocolError::FrameTooLarge { .. } | ProtocolError::Encode(_))) => {
                        error!(error = %e, "dropping a message that cannot be sent");
                        unsendable.extend(result_of);
                    }
                    Err(e) => return (writer, Err(e), unsendable),
                }
            }
            let flushed = writer.flush().await;
            (writer, flushed, unsendable)
        };
        self.write_task = Some(ctx.spawn(write.into_actor(self).map(
            move |(writer, flushed, unsendable), link, ctx| {
                if link.epoch != epoch {
                    return;
                }
                link.write_task = None;
                match flushed {
                    Ok(()) => {
                        link.writer = Some(writer);
                        // Delivered; the results wait in the spool for their
                        // acknowledgement, and their attempts stay listed until then.
                        for task in link.spool.confirm_flight() {
                            debug!(
                                task_id = task.task_id,
                                attempt = task.attempt,
                                "result delivered"
                            );
                        }
                        // Never acknowledged, such a result would keep its attempt
                        // listed for good; forgotten, the attempt is requeued by the
                        // master when this agent next registers without it.
                        for task in unsendable {
                            link.forget_result(task);
                        }
                        if link.drained() {
                            link.wake_drain_waiters();
                        }
                        if link.reregister_pending {
                            link.reregister(ctx);
                            return;
                        }
                        link.pump(ctx);
                    }
                    Err(e) => link.disconnect(&format!("writing to the master failed: {e}"), ctx),
                }
            },
        )));
    }

    fn wake_drain_waiters(&mut self) {
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl Actor for MasterLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
    }
}

impl StreamHandler<Incoming> for MasterLink {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Context<Self>) {
        if incoming.epoch != self.epoch {
            return;
        }
        match incoming.item {
            Some(Ok(message)) => self.on_message(message, ctx),
            Some(Err(e)) => self.disconnect(&format!("reading from the master failed: {e}"), ctx),
            None => self.disconnect("the master closed the connection", ctx),
        }
    }

    /// The default stops the actor; a connection ending is handled above instead.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<TaskReport> for MasterLink {
    type Result = ();

    fn handle(&mut self, TaskReport(message): TaskReport, ctx: &mut Context<Self>) {
        self.enqueue(message, ctx);
    }
}

impl Handler<AppOutbound> for MasterLink {
    type Result = ();

    fn handle(&mut self, AppOutbound(message): AppOutbound, ctx: &mut Context<Self>) {
        self.apps.push(message, self.state == LinkState::Registered);
        self.pump(ctx);
    }
}

/// The agent is stopping: tell the master to give it no more work (before the running
/// attempts are given back).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AnnounceDrain;

impl Handler<AnnounceDrain> for MasterLink {
    type Result = ();

    fn handle(&mut self, _msg: AnnounceDrain, ctx: &mut Context<Self>) {
        if self.state == LinkState::Registered {
            self.enqueue(AgentMessage::Draining, ctx);
        }
    }
}

impl Handler<PublishJobTypes> for MasterLink {
    type Result = ();

    fn handle(&mut self, PublishJobTypes(sources): PublishJobTypes, ctx: &mut Context<Self>) {
        self.published = sources;
        if self.state == LinkState::Registered && !self.published.is_empty() {
            self.enqueue(AgentMessage::JobTypes(self.published.clone()), ctx);
        }
    }
}

impl Handler<Reidentify> for MasterLink {
    type Result = bool;

    fn handle(&mut self, Reidentify(profile): Reidentify, ctx: &mut Context<Self>) -> bool {
        if self.setup.identity.profile == profile {
            return false;
        }
        self.setup.identity.profile = profile;
        if self.stopping {
            return true;
        }
        match self.state {
            // The next registration is built from the new identity anyway.
            LinkState::Disconnected | LinkState::Connecting => {}
            LinkState::Registering | LinkState::Registered => {
                if self.write_task.is_some() {
                    self.reregister_pending = true;
                } else {
                    self.reregister(ctx);
                }
            }
        }
        true
    }
}

impl Handler<StopLink> for MasterLink {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, StopLink { drain }: StopLink, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        // Waits (up to `drain`) for the spool to empty: results to be acknowledged, and
        // the last task messages (the attempts given back at shutdown) to be written.
        let waiter = (self.state == LinkState::Registered && !self.drained()).then(|| {
            let (tx, rx) = oneshot::channel();
            self.drain_waiters.push(tx);
            rx
        });
        let wait = async move {
            if let Some(rx) = waiter {
                let _ = tokio::time::timeout(drain, rx).await;
            }
        };
        Box::pin(wait.into_actor(self).map(|(), link, ctx| {
            link.spool.persist_results();
            let left = link.spool.pending_results().len();
            if left > 0 {
                warn!(
                    results = left,
                    "results the master has not acknowledged are kept on disk for the next start"
                );
            }
            ctx.stop();
        }))
    }
}
