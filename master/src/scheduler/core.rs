//! The scheduling state machine, free of actors and I/O so it can be tested directly.
//!
//! It holds only unfinished work: the state table of every unfinished job
//! ([`super::state`]), the agents' capacity ([`super::agents`]) and the queue tree
//! ([`super::queues`]); the dispatch policy ([`super::policy`]) decides, per free slot,
//! which job goes next. A finished job leaves memory, so the cost of a decision depends
//! on the unfinished jobs and the agents, never on history.
//!
//! Every call returns nothing (or a refusal) and records its consequences: messages for
//! agents and log files as [`Effect`]s, rows for the store as [`Write`]s in order
//! ([`Core::take_writes`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use furrow_protocol::{
    Assignment, Capacity, JobId, MasterMessage, TaskCounts, TaskFinished, TaskId, TaskRef,
    TaskReturned, WorkState,
};
use uuid::Uuid;

use super::agents::{Agents, Reservation};
use super::policy::fair_share::{FairClock, Shares};
use super::policy::requirements::Offer;
use super::policy::{self};
use super::queues::Queues;
use super::state::{Job, Run, Task};
use crate::store::records::{JobRow, TaskRow, now_ms};

pub use super::types::{Control, Effect, JobSpec, Refusal, Verdict, Write};

/// How many ended jobs the core remembers, for a submission that names a parent which
/// ended while the submission was being stored.
const RECENT_ENDS: usize = 4_096;

/// The scheduler's state. See the module documentation.
#[derive(Debug, Default)]
pub struct Core {
    jobs: HashMap<JobId, Job>,
    /// Active jobs with queued tasks.
    ready: BTreeSet<JobId>,
    /// Running tasks and their jobs.
    running: HashMap<TaskId, JobId>,
    /// Tasks taken from a lost agent, with their job and that agent: a late result from
    /// it for their last attempt is still accepted, and it adopts them when it registers
    /// again listing them.
    orphans: HashMap<TaskId, (JobId, Uuid)>,
    agents: Agents,
    queues: Queues,
    /// Virtual clocks of fair share, kept across dispatch rounds.
    clock: FairClock,
    /// Parent job → unfinished jobs waiting for it.
    dependents: HashMap<JobId, BTreeSet<JobId>>,
    /// How recently ended jobs ended.
    recent_ends: HashMap<JobId, WorkState>,
    recent_order: VecDeque<JobId>,
    effects: Vec<Effect>,
    writes: Vec<Write>,
    /// Jobs whose row must be written at the next commit.
    dirty_jobs: BTreeSet<JobId>,
    /// Agents whose free capacity changed since the last call of `take_dirty_agents`.
    dirty_agents: HashSet<Uuid>,
}

/// How a parent of a new job stands, as far as the submitter could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentState {
    /// Not finished when the submission was checked.
    Unfinished,
    /// Finished in this state (done, failed or cancelled).
    Ended(WorkState),
    /// Deleted.
    Gone,
}

/// The row of a task as it stands.
fn task_row(job: &Job, task_id: TaskId, agent: Option<Uuid>, finished_at: Option<i64>) -> TaskRow {
    let Some(task) = job.task(task_id) else {
        return TaskRow {
            id: task_id,
            state: WorkState::Queued,
            agent: None,
            attempt: 0,
            failures: 0,
            exit_code: None,
            progress: 0.0,
            last_error: None,
            started_at: None,
            finished_at: None,
            gpus: Vec::new(),
            ram_mb: 0,
        };
    };
    let run = task.run.as_deref();
    TaskRow {
        id: task_id,
        state: task.state,
        agent: run.map(|r| r.agent).or(agent),
        attempt: task.attempt,
        failures: task.failures,
        exit_code: task.last.as_ref().and_then(|l| l.exit_code),
        progress: match task.state {
            WorkState::Done => 1.0,
            _ => run.map_or(0.0, |r| r.progress),
        },
        last_error: task.last.as_ref().and_then(|l| l.error.clone()),
        started_at: run.and_then(|r| r.started_at),
        finished_at,
        gpus: run.map(|r| r.gpus.clone()).unwrap_or_default(),
        ram_mb: task.ram_mb(),
    }
}

impl Core {
    /// An empty scheduler with only the root queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks waiting for a slot.
    pub fn queued_count(&self) -> u64 {
        self.jobs.values().map(|job| job.counts().queued).sum()
    }

    /// Attempts assigned to agents.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The agent and attempt of a running task.
    pub fn running_on(&self, task_id: TaskId) -> Option<(Uuid, u32)> {
        let job = self.jobs.get(self.running.get(&task_id)?)?;
        let task = job.task(task_id)?;
        Some((task.run.as_ref()?.agent, task.attempt))
    }

    /// Counts of an unfinished job.
    pub fn job_counts(&self, job_id: JobId) -> Option<TaskCounts> {
        self.jobs.get(&job_id).map(Job::counts)
    }

    /// An unfinished job.
    pub fn job(&self, job_id: JobId) -> Option<&Job> {
        self.jobs.get(&job_id)
    }

    /// The queue tree.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Every unfinished job.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// Free capacity of an agent the scheduler knows.
    pub fn free_capacity(&self, agent: Uuid) -> Option<Capacity> {
        self.agents.get(agent).map(|a| a.free())
    }

    /// Effects recorded since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Writes recorded since the last call, in order, for one group commit.
    pub fn take_writes(&mut self) -> Vec<Write> {
        let dirty = std::mem::take(&mut self.dirty_jobs);
        for job_id in dirty {
            if let Some(job) = self.jobs.get(&job_id) {
                self.writes.push(Write::Job(job_row(job, None)));
            }
        }
        std::mem::take(&mut self.writes)
    }

    /// Agents whose free capacity changed since the last call.
    pub fn take_dirty_agents(&mut self) -> Vec<Uuid> {
        self.dirty_agents.drain().collect()
    }

    /// Adds a committed job whose tasks have ids `first_task_id..` in frame order.
    /// `parents` says how each job of `depends_on` stood when the submission was checked.
    pub fn add_job(
        &mut self,
        spec: JobSpec,
        first_task_id: TaskId,
        batches: &[furrow_protocol::FrameBatch],
        parents: &[(JobId, ParentState)],
    ) {
        let id = spec.id;
        let tasks = batches
            .iter()
            .map(|frames| Task::new(*frames, WorkState::Queued))
            .collect();
        let job = Job::new(Arc::new(spec), first_task_id, tasks, Control::Active);
        self.jobs.insert(id, job);
        self.link_parents(id, parents);
        self.refresh_ready(id);
        self.dirty_jobs.insert(id);
        self.finish_job_if_done(id, now_ms());
        self.dispatch();
    }

    /// An agent (re)registered with `slots`, keeping up to `ahead` more assignments
    /// waiting for a slot, running `running` (attempts still running or waiting there,
    /// and attempts whose result it has not seen acknowledged). Tasks believed to run there
    /// but not listed are requeued at once; listed attempts that were requeued after the
    /// agent was lost are taken back; listed attempts that are no longer current are
    /// cancelled and acknowledged.
    pub fn agent_registered(
        &mut self,
        agent: Uuid,
        slots: u32,
        ahead: u32,
        offer: Offer,
        enabled: bool,
        running: &[TaskRef],
    ) {
        let listed: HashSet<TaskRef> = running.iter().copied().collect();
        for task_id in self.agents.tasks_of(agent) {
            let Some((_, attempt)) = self.running_on(task_id) else {
                continue;
            };
            if !listed.contains(&TaskRef { task_id, attempt }) {
                self.requeue(task_id);
            }
        }
        self.agents.online(agent, slots, ahead, offer, enabled);
        self.dirty_agents.insert(agent);
        for task in running {
            if self.running_on(task.task_id) == Some((agent, task.attempt)) {
                continue;
            }
            if !self.adopt(agent, *task) {
                // Either the attempt still runs there (it was taken away while the agent
                // was gone) or it finished and its result was settled here, the
                // acknowledgement lost with the connection. Without history the core
                // cannot tell which, so it answers both ways and requeues nothing: the
                // agent ignores a cancel of a finished attempt and an acknowledgement of
                // a running one.
                self.effects.push(Effect::Send {
                    agent,
                    message: MasterMessage::Cancel(*task),
                });
                self.acknowledge(agent, *task);
            }
        }
        self.dispatch();
    }

    /// Whether the agent gets new work, and its tags, changed.
    pub fn agent_configured(&mut self, agent: Uuid, enabled: bool, tags: Option<Vec<String>>) {
        self.agents.configure(agent, enabled, tags);
        self.dirty_agents.insert(agent);
        self.dispatch();
    }

    /// An agent's connection dropped: no new work for it, its tasks stay assigned.
    pub fn agent_offline(&mut self, agent: Uuid) {
        self.agents.offline(agent);
        self.dirty_agents.insert(agent);
    }

    /// An agent is lost: its tasks go back to the queue.
    pub fn agent_lost(&mut self, agent: Uuid) {
        for task_id in self.agents.tasks_of(agent) {
            self.requeue(task_id);
        }
        self.agents.lost(agent);
        self.dirty_agents.insert(agent);
        self.dispatch();
    }

    /// A lost agent was removed: it is forgotten (a lost agent runs nothing).
    pub fn agent_forgotten(&mut self, agent: Uuid) {
        self.agent_lost(agent);
        self.agents.forget(agent);
    }

    /// The process of an attempt started, as agent `from` reports. Only the agent the
    /// attempt was assigned to may report on it.
    pub fn task_started(&mut self, from: Uuid, task: TaskRef, at_ms: i64) -> Verdict {
        let Some(run) = self.current_run(task).filter(|run| run.agent == from) else {
            return Verdict::Stale;
        };
        run.started_at = Some(at_ms);
        self.push_task_row(task.task_id);
        Verdict::Applied
    }

    /// Progress of an attempt changed, as agent `from` reports.
    pub fn task_progress(&mut self, from: Uuid, task: TaskRef, progress: f32) -> Verdict {
        let Some(run) = self.current_run(task).filter(|run| run.agent == from) else {
            return Verdict::Stale;
        };
        run.progress = if progress.is_finite() {
            progress.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.push_task_row(task.task_id);
        Verdict::Applied
    }

    /// An attempt ended, as reported by agent `from`. A failure is retried while the
    /// job's retries allow.
    ///
    /// Whatever the verdict, `from` gets a `ResultStored` for the attempt (the actor sends
    /// it once the next group commit is durable), so it can forget the result: an applied
    /// result is stored by then, and a stale one (an attempt no longer current, unknown,
    /// or settled before: a replay after a lost acknowledgement) is not needed. A stale
    /// result changes nothing else, so a replay is never counted twice.
    pub fn task_finished(&mut self, from: Uuid, finished: &TaskFinished) -> Verdict {
        let verdict = self.record_result(from, finished);
        // An attempt the master no longer counted ended there: a slot it held is free.
        let released = verdict == Verdict::Stale && self.agents.release_held(from);
        // Before the assignment that takes the freed slot: the agent reads the
        // acknowledgement first, so it holds at most one unacknowledged result per slot.
        self.acknowledge(from, finished.task);
        if verdict == Verdict::Applied || released {
            self.dispatch();
        }
        verdict
    }

    /// Agent `from` gave an attempt back without an outcome (it is shutting down, or had
    /// no free slot). If the attempt is current on that agent, the task goes back to the
    /// queue exactly like a task of a lost agent: no failure is counted, and its next
    /// assignment (possibly to another agent) gets a new attempt. A stale or unknown
    /// attempt is ignored. No acknowledgement is needed: the agent does not keep it.
    pub fn task_returned(&mut self, from: Uuid, returned: &TaskReturned) -> Verdict {
        let task = returned.task;
        if self.running_on(task.task_id) != Some((from, task.attempt)) {
            return Verdict::Stale;
        }
        // Given back by an agent still taking work: it had no free slot, whatever the
        // master counted (an attempt taken from it still runs there). Hold one, or the
        // task would bounce back to it at once, again and again.
        if self
            .agents
            .get(from)
            .is_some_and(|agent| agent.takes_work())
        {
            self.agents.hold_slot(from);
        }
        self.requeue(task.task_id);
        self.dispatch();
        Verdict::Applied
    }

    /// Hands queued tasks to agents with free capacity, best job first per slot: first
    /// into free slots, then into seats ahead of a slot, so no task waits on a busy
    /// agent while another has a slot free for it.
    fn dispatch(&mut self) {
        if self.ready.is_empty() || !self.agents.any_free() {
            return;
        }
        let mut shares = Shares::build(self.jobs.values(), &self.queues);
        self.clock.refresh(self.jobs.values());
        self.dispatch_pass(&mut shares, false);
        // Seats ahead of a slot are for jobs that pipeline only: without one ready, the
        // agents with nothing else free are not even looked at.
        if self
            .ready
            .iter()
            .any(|job_id| self.jobs.get(job_id).is_some_and(Job::pipelines))
        {
            self.dispatch_pass(&mut shares, true);
        }
    }

    /// One walk over the agents with room: free slots, or with `ahead` seats ahead too.
    fn dispatch_pass(&mut self, shares: &mut Shares, ahead: bool) {
        for agent_id in self.agents.with_free_slots(ahead) {
            while let Some(agent) = self.agents.get(agent_id) {
                let Some((job_id, reservation)) = policy::pick(
                    &self.ready,
                    &self.jobs,
                    agent_id,
                    agent,
                    shares,
                    &self.queues,
                    &self.clock,
                    ahead,
                ) else {
                    break;
                };
                self.assign(job_id, agent_id, reservation, shares);
            }
            if self.ready.is_empty() {
                break;
            }
        }
    }

    /// Gives the first queued task of `job_id` to `agent`.
    fn assign(
        &mut self,
        job_id: JobId,
        agent: Uuid,
        reservation: Reservation,
        shares: &mut Shares,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(task_id) = job.first_queued() else {
            self.ready.remove(&job_id);
            return;
        };
        job.set_state(task_id, WorkState::Running);
        let spec = job.spec.clone();
        let Some(task) = job.task_mut(task_id) else {
            return;
        };
        task.attempt = task.attempt.saturating_add(1);
        task.run = Some(Box::new(Run {
            agent,
            started_at: None,
            progress: 0.0,
            stop: None,
            gpus: reservation.gpus.clone(),
        }));
        let frames = task.frames;
        let attempt = task.attempt;
        let ram_mb = task.ram_mb().max(spec.needs.ram_mb);
        *job.agents.entry(agent).or_default() += 1;
        shares.assigned(&spec.settings.queue, agent);
        self.clock.charge(job, &self.queues);
        self.running.insert(task_id, job_id);
        self.orphans.remove(&task_id);
        let gpus = reservation.gpus.clone();
        self.agents.assign(agent, task_id, reservation);
        self.dirty_agents.insert(agent);
        let task = TaskRef { task_id, attempt };
        self.effects.push(Effect::OpenLog {
            task,
            job_id,
            agent,
            resumed: false,
        });
        self.effects.push(Effect::Send {
            agent,
            message: MasterMessage::Assign(Assignment {
                task,
                job_id,
                title: spec.title.clone(),
                jobtype: spec.jobtype.clone(),
                jobtype_version: spec.jobtype_version,
                params: spec.params.clone(),
                path_maps: Vec::new(),
                frames,
                timeout_secs: spec.timeout_secs,
                stall_timeout_secs: spec.settings.stall_timeout_secs,
                ram_mb: (ram_mb > 0).then_some(ram_mb),
                gpus,
            }),
        });
        self.push_task_row(task_id);
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
    }

    /// The running attempt `task`, if it is current.
    fn current_run(&mut self, task: TaskRef) -> Option<&mut Run> {
        let job_id = *self.running.get(&task.task_id)?;
        let t = self.jobs.get_mut(&job_id)?.task_mut(task.task_id)?;
        if t.attempt != task.attempt {
            return None;
        }
        t.run.as_deref_mut()
    }

    /// Records the current row of a task of an unfinished job.
    fn push_task_row(&mut self, task_id: TaskId) {
        let job = self
            .running
            .get(&task_id)
            .or_else(|| self.orphans.get(&task_id).map(|(job_id, _)| job_id))
            .and_then(|job_id| self.jobs.get(job_id));
        if let Some(job) = job {
            self.writes
                .push(Write::Task(task_row(job, task_id, None, None)));
        }
    }

    /// Drops a job whose tasks have all finished, recording when it finished, and lets
    /// the jobs waiting for it know.
    fn finish_job_if_done(&mut self, job_id: JobId, at: i64) {
        if !self.jobs.get(&job_id).is_some_and(Job::is_finished) {
            return;
        }
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        self.dirty_jobs.remove(&job_id);
        self.ready.remove(&job_id);
        self.writes.push(Write::Job(job_row(&job, Some(at))));
        for parent in &job.spec.settings.depends_on {
            if let Some(children) = self.dependents.get_mut(parent) {
                children.remove(&job_id);
                if children.is_empty() {
                    self.dependents.remove(parent);
                }
            }
        }
        let end = job.counts().job_state();
        self.remember_end(job_id, end);
        self.parent_ended(job_id, end, at);
    }

    fn remember_end(&mut self, job_id: JobId, end: WorkState) {
        self.recent_ends.insert(job_id, end);
        self.recent_order.push_back(job_id);
        while self.recent_order.len() > RECENT_ENDS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent_ends.remove(&old);
            }
        }
    }

    fn refresh_ready(&mut self, job_id: JobId) {
        let Some(job) = self.jobs.get(&job_id) else {
            self.ready.remove(&job_id);
            return;
        };
        if job.has_queued() && job.control == Control::Active {
            self.ready.insert(job_id);
        } else {
            self.ready.remove(&job_id);
        }
    }
}

/// The row of a job as it stands.
pub(super) fn job_row(job: &Job, finished_at: Option<i64>) -> JobRow {
    let spec = &job.spec;
    JobRow {
        id: spec.id,
        counts: job.counts(),
        finished_at,
        control: job.control,
        priority: spec.priority,
        settings: spec.settings.clone(),
        blocklist: job.blocklist(),
    }
}

pub mod actions;
mod deps;
mod outcomes;
pub mod restore;
mod why;

#[cfg(test)]
#[path = "core_tests.rs"]
pub(crate) mod tests;
