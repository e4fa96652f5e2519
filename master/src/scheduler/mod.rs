//! The `Scheduler` actor: owns the queue of runnable tasks and decides assignments.
//!
//! It is event-driven: a submission, a registration, a finished task or a lost agent
//! triggers a dispatch at once; there is no polling loop and no database query per
//! decision. The decisions themselves live in [`core`]; this actor feeds it events and
//! carries out its effects (messages to agent sessions, log files, group commits).
//!
//! Assignments and `ResultStored` acknowledgements reach an agent only after the group
//! commit that records them is durable. They go to the agent's current session; when the
//! connection that carried a result is gone, the agent replays the result after it
//! reconnects, and the replay is acknowledged.

pub mod core;
mod slots;
mod types;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use furrow_protocol::{
    MasterMessage, TaskFinished, TaskProgress, TaskRef, TaskReturned, TaskStarted,
};
use tracing::{debug, info, warn};
use uuid::Uuid;

pub use self::core::{Core, Effect, JobSpec, Verdict};
use crate::logs::{AttemptClosed, AttemptOpened, LogCollector};
use crate::store::records::{JobRecord, LoadedTask, to_ms};
use crate::store::{CommitBatch, InsertedJob, Store};

/// How often the health counts are refreshed.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A message for an agent's session.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ToAgent(pub MasterMessage);

/// Numbers the health endpoint reads without asking the actor.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Tasks queued.
    pub queued: AtomicU64,
    /// Tasks running.
    pub running: AtomicU64,
}

/// A committed job to schedule.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddJob(pub InsertedJob);

/// An agent registered on a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentUp {
    /// The agent.
    pub agent_id: Uuid,
    /// Its slots.
    pub slots: u32,
    /// Attempts it says it runs.
    pub running: Vec<TaskRef>,
    /// Its session.
    pub link: Recipient<ToAgent>,
}

/// An agent's connection dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentDown {
    /// The agent.
    pub agent_id: Uuid,
}

/// An agent is lost: requeue its tasks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentLost {
    /// The agent.
    pub agent_id: Uuid,
}

/// What an agent said about one of its attempts.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// The process started.
    Started(TaskStarted),
    /// Progress changed.
    Progress(TaskProgress),
    /// The attempt ended.
    Finished(TaskFinished),
    /// The agent gave the attempt back without an outcome.
    Returned(TaskReturned),
}

/// A task event from an agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromAgent {
    /// The agent that sent it.
    pub agent_id: Uuid,
    /// The event.
    pub event: TaskEvent,
}

/// Whether `message` may reach its agent only after the rows recorded before it are
/// committed.
///
/// - An assignment: an attempt an agent has seen is always durable, so after a crash the
///   master never hands the same attempt number out twice (which would break fencing).
/// - A `ResultStored`: the agent forgets a result only once the transition it caused is
///   durable. For a result that changed nothing (a stale attempt, or a replay of one
///   settled before), the attempt may have been settled by an earlier message whose rows
///   are still in the group-commit window; waiting for the next commit covers them too.
fn waits_for_commit(message: &MasterMessage) -> bool {
    matches!(
        message,
        MasterMessage::Assign(_) | MasterMessage::ResultStored(_)
    )
}

/// The scheduler actor.
pub struct Scheduler {
    core: Core,
    links: HashMap<Uuid, Recipient<ToAgent>>,
    store: Addr<Store>,
    logs: Addr<LogCollector>,
    stats: Arc<SchedulerStats>,
}

/// The scheduling view of a stored job.
pub fn job_spec(record: &JobRecord) -> JobSpec {
    JobSpec {
        id: record.id,
        title: record.title.clone(),
        jobtype: record.jobtype.clone(),
        params: record.params.clone(),
        timeout_secs: record.timeout_secs,
        priority: record.priority,
        retries: record.retries,
    }
}

impl Scheduler {
    /// A scheduler restored from the unfinished work in the store.
    pub fn new(
        jobs: &[JobRecord],
        tasks: Vec<LoadedTask>,
        store: Addr<Store>,
        logs: Addr<LogCollector>,
        stats: Arc<SchedulerStats>,
    ) -> Self {
        let mut core = Core::new();
        let specs = jobs.iter().map(|j| (job_spec(j), j.counts)).collect();
        core.load(specs, tasks);
        info!(
            queued = core.queued_count(),
            running = core.running_count(),
            "scheduler loaded unfinished work"
        );
        Self {
            core,
            links: HashMap::new(),
            store,
            logs,
            stats,
        }
    }

    /// Carries out what the core decided.
    ///
    /// Messages that tell an agent something is durable go out only once the rows
    /// recorded before them are committed (see [`waits_for_commit`]). Waiting costs one
    /// group commit of latency, never a database round trip per decision.
    fn apply(&mut self, ctx: &mut Context<Self>) {
        let mut after_commit = Vec::new();
        for effect in self.core.take_effects() {
            match effect {
                Effect::Send { agent, message } if waits_for_commit(&message) => {
                    after_commit.push((agent, message));
                }
                Effect::Send { agent, message } => self.send(agent, message),
                Effect::OpenLog { task, job_id } => {
                    self.logs.do_send(AttemptOpened { task, job_id });
                }
                Effect::CloseLog { task, job_id } => {
                    self.logs.do_send(AttemptClosed { task, job_id });
                }
            }
        }
        let (tasks, jobs) = self.core.take_commit();
        if after_commit.is_empty() {
            if !tasks.is_empty() || !jobs.is_empty() {
                self.store.do_send(CommitBatch {
                    tasks,
                    jobs,
                    durable: false,
                });
            }
        } else {
            // Rows are committed in the order they reach the store, so once this batch
            // is durable so is every row the core recorded before it, including those
            // of earlier events that were still in the group-commit window.
            let committed = self.store.send(CommitBatch {
                tasks,
                jobs,
                durable: true,
            });
            ctx.spawn(committed.into_actor(self).map(move |result, act, _| {
                match result {
                    Ok(Ok(())) => {
                        for (agent, message) in after_commit {
                            // The agent may have re-registered during the commit without
                            // listing this attempt, which requeued it: an assignment that
                            // is no longer current must not reach the new session.
                            if let MasterMessage::Assign(assign) = &message
                                && act.core.running_on(assign.task.task_id)
                                    != Some((agent, assign.task.attempt))
                            {
                                debug!(task = assign.task.task_id, attempt = assign.task.attempt, "assignment superseded before its commit; not sent");
                                continue;
                            }
                            act.send(agent, message);
                        }
                    }
                    // The store only answers with an error when it stops. The attempts
                    // stay assigned and are requeued when their agents are lost; the
                    // agents keep their results and replay them after reconnecting.
                    Ok(Err(e)) => {
                        warn!(error = %e, messages = after_commit.len(), "messages to agents not sent: not committed");
                    }
                    Err(e) => {
                        warn!(error = %e, messages = after_commit.len(), "messages to agents not sent: store unavailable");
                    }
                }
            }));
        }
    }

    /// Publishes the counts the health endpoint reads.
    fn publish_stats(&self) {
        self.stats
            .queued
            .store(self.core.queued_count(), Ordering::Relaxed);
        self.stats
            .running
            .store(self.core.running_count() as u64, Ordering::Relaxed);
    }

    fn send(&self, agent: Uuid, message: MasterMessage) {
        match self.links.get(&agent) {
            Some(link) => link.do_send(ToAgent(message)),
            None => debug!(agent = %agent, "no session for agent; message dropped"),
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Senders use `do_send`, which bypasses the mailbox capacity. The inflow is
        // bounded all the same: sessions send a handful of events per attempt (started,
        // progress, finished) and the registry one per agent state change, so what can be
        // queued is proportional to the running tasks and the agents, and each event is
        // handled in memory without I/O.
        // Effects of the load (log files of running attempts) go out now.
        self.apply(ctx);
        // Counting queued tasks walks the unfinished jobs, so it runs on a timer rather
        // than after every event.
        self.publish_stats();
        ctx.run_interval(STATS_EVERY, |act, _| act.publish_stats());
    }
}

impl Supervised for Scheduler {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("scheduler restarting");
    }
}

impl Handler<AddJob> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AddJob, ctx: &mut Context<Self>) {
        let inserted = msg.0;
        self.core.add_job(
            job_spec(&inserted.record),
            inserted.first_task_id,
            &inserted.batches,
        );
        self.apply(ctx);
    }
}

impl Handler<AgentUp> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentUp, ctx: &mut Context<Self>) {
        self.links.insert(msg.agent_id, msg.link);
        self.core
            .agent_registered(msg.agent_id, msg.slots, &msg.running);
        self.apply(ctx);
    }
}

impl Handler<AgentDown> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentDown, ctx: &mut Context<Self>) {
        self.links.remove(&msg.agent_id);
        self.core.agent_offline(msg.agent_id);
        self.apply(ctx);
    }
}

impl Handler<AgentLost> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentLost, ctx: &mut Context<Self>) {
        self.links.remove(&msg.agent_id);
        self.core.agent_lost(msg.agent_id);
        self.apply(ctx);
    }
}

impl Handler<FromAgent> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: FromAgent, ctx: &mut Context<Self>) {
        let (task, verdict) = match &msg.event {
            TaskEvent::Started(started) => (
                started.task,
                self.core.task_started(started.task, to_ms(started.at)),
            ),
            TaskEvent::Progress(progress) => (
                progress.task,
                self.core.task_progress(progress.task, progress.progress),
            ),
            TaskEvent::Finished(finished) => (
                finished.task,
                self.core.task_finished(msg.agent_id, finished),
            ),
            TaskEvent::Returned(returned) => {
                let verdict = self.core.task_returned(msg.agent_id, returned);
                if verdict == Verdict::Applied {
                    info!(
                        agent = %msg.agent_id,
                        task_id = returned.task.task_id,
                        attempt = returned.task.attempt,
                        reason = %returned.reason,
                        "an agent gave a task back; it is queued again"
                    );
                }
                (returned.task, verdict)
            }
        };
        if verdict == Verdict::Stale {
            debug!(
                agent = %msg.agent_id,
                task_id = task.task_id,
                attempt = task.attempt,
                "ignoring a message about an attempt that is no longer current"
            );
            // An agent still working on an attempt that was taken from it is told to
            // stop, so the work is not done twice. (A stale result is acknowledged by
            // the core, so the agent stops replaying it; a returned attempt has already
            // ended there.)
            if !matches!(msg.event, TaskEvent::Finished(_) | TaskEvent::Returned(_))
                && let Some(link) = self.links.get(&msg.agent_id)
            {
                link.do_send(ToAgent(MasterMessage::Cancel(task)));
            }
        }
        self.apply(ctx);
    }
}
