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

mod agents;
pub mod core;
mod id_runs;
mod messages;
pub mod policy;
pub mod queues;
mod state;
mod types;

#[cfg(test)]
use self::core::tests as core_tests_support;
#[cfg(test)]
mod policy_tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use furrow_protocol::{ApiError, JobId, MasterMessage, QueueView, WhyView};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use uuid::Uuid;

pub use self::core::actions::Revived;
pub use self::core::restore::LoadedJob;
pub use self::core::{Core, Effect, JobSpec, ParentState, Verdict};
pub use self::messages::*;
use self::policy::requirements::Needs;
use self::queues::Queue;
pub use self::types::{Control, Refusal, Write};
use crate::logs::LogSink;
use crate::store::records::{JobRecord, JobSettings, LoadedTask, to_ms};
use crate::store::{CommitBatch, Notify, Store, TicketNews};

/// How often the health counts are refreshed.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

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
    logs: LogSink,
    stats: Arc<SchedulerStats>,
    /// Where the store reports committed tickets (set up when the actor starts).
    tickets: Option<mpsc::UnboundedSender<TicketNews>>,
    next_ticket: u64,
    /// What waits for a commit, by ticket, oldest first.
    awaiting: VecDeque<Awaiting>,
}

/// Messages and an answer that wait for the commit of one batch.
struct Awaiting {
    ticket: u64,
    messages: Vec<(Uuid, MasterMessage)>,
    done: Option<oneshot::Sender<Result<(), ApiError>>>,
}

/// The scheduling view of a stored job (requirements that no longer parse, which
/// validation prevents, count as none).
pub fn job_spec(record: &JobRecord) -> JobSpec {
    let settings = &record.settings;
    JobSpec {
        id: record.id,
        title: record.title.clone(),
        jobtype: record.jobtype.clone(),
        jobtype_version: record.jobtype_version,
        params: record.params.clone(),
        timeout_secs: record.timeout_secs,
        priority: record.priority,
        retries: record.retries,
        settings: JobSettings {
            weight: settings.weight.max(1),
            ..settings.clone()
        },
        needs: Needs::parse(&settings.requirements).unwrap_or_default(),
    }
}

/// The stored state the scheduler is rebuilt from.
pub struct Restore {
    /// Unfinished jobs.
    pub jobs: Vec<JobRecord>,
    /// Their tasks.
    pub tasks: Vec<LoadedTask>,
    /// How the finished parents of those jobs ended.
    pub ended_parents: HashMap<JobId, furrow_protocol::WorkState>,
    /// The queues.
    pub queues: Vec<Queue>,
}

impl Scheduler {
    /// A scheduler restored from the unfinished work in the store.
    pub fn new(
        restore: Restore,
        store: Addr<Store>,
        logs: LogSink,
        stats: Arc<SchedulerStats>,
    ) -> Self {
        let mut core = Core::new();
        let jobs = restore
            .jobs
            .iter()
            .map(|record| LoadedJob {
                spec: job_spec(record),
                control: record.control,
                failures_on: record
                    .blocklist
                    .iter()
                    .map(|b| (b.agent, b.failures))
                    .collect(),
            })
            .collect();
        core.load(restore.queues, jobs, restore.tasks, &restore.ended_parents);
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
            tickets: None,
            next_ticket: 0,
            awaiting: VecDeque::new(),
        }
    }

    /// Carries out what the core decided.
    ///
    /// Messages that tell an agent something is durable go out only once the rows
    /// recorded before them are committed (see [`waits_for_commit`]), and so does the
    /// answer to a control request (`done`). Waiting costs one group commit of latency,
    /// never a database round trip per decision.
    fn apply(&mut self, done: Option<oneshot::Sender<Result<(), ApiError>>>) {
        let mut after_commit = Vec::new();
        for effect in self.core.take_effects() {
            match effect {
                Effect::Send { agent, message }
                    if waits_for_commit(&message)
                        || self.cancels_a_pending_assignment(agent, &message, &after_commit) =>
                {
                    after_commit.push((agent, message));
                }
                Effect::Send { agent, message } => self.send(agent, message),
                Effect::OpenLog {
                    task,
                    job_id,
                    agent,
                    resumed,
                } => self.logs.opened(task, job_id, agent, resumed),
                Effect::CloseLog { task, job_id } => self.logs.closed(task, job_id),
            }
        }
        for agent in self.core.take_dirty_agents() {
            match self.core.free_capacity(agent) {
                Some(free) => {
                    self.stats.free.insert(agent, free);
                }
                None => {
                    self.stats.free.remove(&agent);
                }
            }
        }
        let writes = self.core.take_writes();
        if after_commit.is_empty() && done.is_none() {
            if !writes.is_empty() {
                self.store.do_send(CommitBatch {
                    writes,
                    notify: None,
                });
            }
            return;
        }
        // Batches reach the store in the order they are sent (always `do_send`), and
        // rows are committed in that order, so once this batch is durable so is every
        // row the core recorded before it, including those of earlier events that were
        // still waiting for their group commit. The store reports the batch's ticket on
        // one stream ([`StreamHandler<TicketNews>`]), in commit order.
        let Some(tickets) = self.tickets.clone() else {
            warn!("scheduler not started; messages dropped");
            return;
        };
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.awaiting.push_back(Awaiting {
            ticket,
            messages: after_commit,
            done,
        });
        self.store.do_send(CommitBatch {
            writes,
            notify: Some(Notify::Ticket(tickets, ticket)),
        });
    }

    /// Whether `message` cancels an attempt whose assignment still waits for its commit
    /// (in this batch or an earlier one). Sent at once, the cancel would overtake the
    /// assignment: the agent would ignore a cancel of an attempt it does not know, then
    /// start it. Queued behind the assignment, it stops the attempt just after it starts.
    fn cancels_a_pending_assignment(
        &self,
        agent: Uuid,
        message: &MasterMessage,
        batch: &[(Uuid, MasterMessage)],
    ) -> bool {
        let MasterMessage::Cancel(task) = message else {
            return false;
        };
        let assigns = |(to, m): &(Uuid, MasterMessage)| {
            *to == agent && matches!(m, MasterMessage::Assign(a) if a.task == *task)
        };
        batch.iter().any(assigns)
            || self
                .awaiting
                .iter()
                .any(|awaiting| awaiting.messages.iter().any(assigns))
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
        // One entry per batch sent with a ticket, so bounded like the batches themselves.
        let (sender, receiver) = mpsc::unbounded_channel();
        // After a restart, batches sent before it report to a stream that is gone: one
        // empty batch with the newest ticket, committed after all of them, releases what
        // waits for them.
        if !self.awaiting.is_empty() {
            self.store.do_send(CommitBatch {
                writes: Vec::new(),
                notify: Some(Notify::Ticket(sender.clone(), self.next_ticket)),
            });
        }
        self.tickets = Some(sender);
        ctx.add_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(
            receiver,
        ));
        // Senders use `do_send`, which bypasses the mailbox capacity. The inflow is
        // bounded all the same: sessions send a handful of events per attempt (started,
        // progress, finished) and the registry one per agent state change, so what can be
        // queued is proportional to the running tasks and the agents, and each event is
        // handled in memory without I/O.
        // Effects of the load (log files of running attempts) go out now.
        self.apply(None);
        // Counting queued tasks walks the unfinished jobs, so it runs on a timer rather
        // than after every event.
        self.publish_stats();
        ctx.run_interval(STATS_EVERY, |act, _| act.publish_stats());
    }
}

impl StreamHandler<TicketNews> for Scheduler {
    /// Batches up to `ticket` are committed: their messages go out, their answers too.
    /// When a commit failed, those who wait for an answer hear at once that their change
    /// is made but not stored yet; the messages (assignments, result acknowledgements)
    /// wait for the retried commit.
    fn handle(&mut self, news: TicketNews, _ctx: &mut Context<Self>) {
        let ticket = match news {
            Ok(ticket) => ticket,
            Err((failed, error)) => {
                for awaiting in self.awaiting.iter_mut().take_while(|a| a.ticket <= failed) {
                    if let Some(done) = awaiting.done.take() {
                        let _ = done.send(Err(error.clone()));
                    }
                }
                return;
            }
        };
        while self.awaiting.front().is_some_and(|a| a.ticket <= ticket) {
            let Some(awaiting) = self.awaiting.pop_front() else {
                break;
            };
            for (agent, message) in awaiting.messages {
                // The agent may have re-registered during the commit without listing
                // this attempt, which requeued it: an assignment that is no longer
                // current must not reach the new session.
                if let MasterMessage::Assign(assign) = &message
                    && self.core.running_on(assign.task.task_id)
                        != Some((agent, assign.task.attempt))
                {
                    debug!(
                        task = assign.task.task_id,
                        attempt = assign.task.attempt,
                        "assignment superseded before its commit; not sent"
                    );
                    continue;
                }
                self.send(agent, message);
            }
            if let Some(done) = awaiting.done {
                let _ = done.send(Ok(()));
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        warn!("the store's commit stream ended");
    }
}

impl Supervised for Scheduler {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("scheduler restarting");
    }
}

impl Handler<AddJob> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AddJob, _ctx: &mut Context<Self>) {
        let inserted = msg.inserted;
        self.core.add_job(
            job_spec(&inserted.record),
            inserted.first_task_id,
            &inserted.batches,
            &msg.parents,
        );
        self.apply(None);
    }
}

impl Handler<AgentUp> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentUp, _ctx: &mut Context<Self>) {
        self.links.insert(msg.agent_id, msg.link);
        self.core.agent_registered(
            msg.agent_id,
            msg.slots,
            msg.ahead,
            msg.offer,
            msg.enabled,
            &msg.running,
        );
        self.apply(None);
    }
}

impl Handler<AgentConfigured> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentConfigured, _ctx: &mut Context<Self>) {
        self.core
            .agent_configured(msg.agent_id, msg.enabled, msg.tags);
        self.apply(None);
    }
}

impl Handler<Change> for Scheduler {
    type Result = ResponseFuture<Result<ControlOutcome, ApiError>>;

    fn handle(&mut self, Change(request): Change, _ctx: &mut Context<Self>) -> Self::Result {
        let core = &mut self.core;
        let outcome: Result<ControlOutcome, Refusal> = match request {
            ControlRequest::JobAction {
                job_id,
                action,
                kill,
                revive,
            } => {
                if let Some(revived) = revive {
                    core.revive(revived);
                }
                core.job_action(job_id, action, kill)
                    .map(|()| ControlOutcome::Done)
            }
            ControlRequest::TaskAction {
                job_id,
                task_id,
                action,
                revive,
            } => {
                if let Some(revived) = revive {
                    core.revive(revived);
                }
                core.task_action(job_id, task_id, action)
                    .map(|()| ControlOutcome::Done)
            }
            ControlRequest::EditJob {
                job_id,
                patch,
                needs,
            } => core
                .edit_job(job_id, &patch, needs)
                .map(|()| ControlOutcome::Done),
            ControlRequest::ReplaceFrames { job_id, frames } => core
                .replace_frames(job_id, frames)
                .map(|()| ControlOutcome::Done),
            ControlRequest::DeleteJob { job_id } => {
                core.delete_job(job_id);
                Ok(ControlOutcome::Done)
            }
            ControlRequest::CreateQueue(spec) => {
                core.create_queue(&spec).map(ControlOutcome::Queue)
            }
            ControlRequest::EditQueue { path, patch } => {
                core.edit_queue(&path, &patch).map(ControlOutcome::Queue)
            }
            ControlRequest::DeleteQueue { path } => {
                core.delete_queue(&path).map(|()| ControlOutcome::Done)
            }
        };
        let outcome = match outcome {
            Err(Refusal::NotLoaded) => Ok(ControlOutcome::NotLoaded),
            other => other,
        };
        let (sender, committed) = oneshot::channel();
        self.apply(Some(sender));
        Box::pin(async move {
            let outcome = outcome.map_err(ApiError::from)?;
            committed
                .await
                .unwrap_or_else(|_| Err(ApiError::unavailable("the scheduler stopped")))?;
            Ok(outcome)
        })
    }
}

impl Handler<Why> for Scheduler {
    type Result = Option<WhyView>;

    fn handle(&mut self, Why(job_id): Why, _ctx: &mut Context<Self>) -> Self::Result {
        self.core.why(job_id)
    }
}

impl Handler<ListQueues> for Scheduler {
    type Result = Vec<QueueView>;

    fn handle(&mut self, _msg: ListQueues, _ctx: &mut Context<Self>) -> Self::Result {
        self.core.queue_views()
    }
}

impl Handler<AgentDown> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentDown, _ctx: &mut Context<Self>) {
        self.links.remove(&msg.agent_id);
        self.core.agent_offline(msg.agent_id);
        self.apply(None);
    }
}

impl Handler<AgentForgotten> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentForgotten, _ctx: &mut Context<Self>) {
        self.links.remove(&msg.agent_id);
        self.core.agent_forgotten(msg.agent_id);
        self.apply(None);
    }
}

impl Handler<AgentLost> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentLost, _ctx: &mut Context<Self>) {
        self.links.remove(&msg.agent_id);
        self.core.agent_lost(msg.agent_id);
        self.apply(None);
    }
}

impl Handler<FromAgent> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: FromAgent, _ctx: &mut Context<Self>) {
        let (task, verdict) = match &msg.event {
            TaskEvent::Started(started) => (
                started.task,
                self.core
                    .task_started(msg.agent_id, started.task, to_ms(started.at)),
            ),
            TaskEvent::Progress(progress) => (
                progress.task,
                self.core
                    .task_progress(msg.agent_id, progress.task, progress.progress),
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
                        reason = ?returned.reason,
                        "an agent gave a task back; it is queued again"
                    );
                }
                (returned.task, verdict)
            }
        };
        let owner = self
            .core
            .running_on(task.task_id)
            .filter(|(owner, attempt)| *attempt == task.attempt && *owner != msg.agent_id);
        if let Some((owner, _)) = owner {
            warn!(
                agent = %msg.agent_id,
                %owner,
                task_id = task.task_id,
                attempt = task.attempt,
                "refused a report on a task assigned to another agent"
            );
        } else if verdict == Verdict::Stale {
            debug!(
                agent = %msg.agent_id,
                task_id = task.task_id,
                attempt = task.attempt,
                "ignoring a message about an attempt that is no longer current"
            );
            // An agent still working on an attempt that was taken from it is told to
            // stop, so the work is not done twice: told the attempt is stale, it kills
            // it at once rather than after a cancel's grace. (A stale result is
            // acknowledged by the core, so the agent stops replaying it; a returned
            // attempt has already ended there.)
            if !matches!(msg.event, TaskEvent::Finished(_) | TaskEvent::Returned(_))
                && let Some(link) = self.links.get(&msg.agent_id)
            {
                link.do_send(ToAgent(MasterMessage::Stale(task)));
            }
        }
        self.apply(None);
    }
}
