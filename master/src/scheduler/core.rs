//! The scheduling state machine, free of actors and I/O so it can be tested directly.
//!
//! It holds only unfinished work: per job, a map of its queued tasks in frame order; one
//! map of running attempts; and per agent, its slots and running tasks. A finished task
//! leaves memory, and a finished job leaves memory, so the cost of a decision depends on
//! the number of jobs with queued tasks and of agents, never on history.
//!
//! Every call returns nothing and records its consequences: messages for agents and log
//! files as [`Effect`]s, rows for the store in the pending commit ([`Core::take_commit`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::slots::Slots;
use std::sync::Arc;

use furrow_protocol::{
    Assignment, FrameBatch, JobId, MasterMessage, TaskCounts, TaskFinished, TaskId, TaskRef,
    TaskReturned, WorkState,
};
use uuid::Uuid;

use crate::store::records::{JobRow, TaskRow, to_ms};

pub use super::types::{Effect, JobSpec, Verdict};

#[derive(Debug, Clone)]
struct Queued {
    frames: FrameBatch,
    /// Attempt of the last assignment (0 when never assigned).
    attempt: u32,
    failures: u32,
    exit_code: Option<i32>,
    last_error: Option<String>,
}

impl Queued {
    /// The task's row while it waits in the queue.
    fn row(&self, id: TaskId) -> TaskRow {
        TaskRow {
            id,
            state: WorkState::Queued,
            agent: None,
            attempt: self.attempt,
            failures: self.failures,
            exit_code: self.exit_code,
            progress: 0.0,
            last_error: self.last_error.clone(),
            started_at: None,
            finished_at: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Running {
    job_id: JobId,
    frames: FrameBatch,
    attempt: u32,
    failures: u32,
    agent: Uuid,
    started_at: Option<i64>,
    progress: f32,
    exit_code: Option<i32>,
    last_error: Option<String>,
}

impl Running {
    /// The attempt's bookkeeping once it leaves its agent.
    fn into_queued(self) -> Queued {
        Queued {
            frames: self.frames,
            attempt: self.attempt,
            failures: self.failures,
            exit_code: self.exit_code,
            last_error: self.last_error,
        }
    }
}

#[derive(Debug)]
struct JobEntry {
    spec: Arc<JobSpec>,
    counts: TaskCounts,
    queued: BTreeMap<TaskId, Queued>,
}

/// The scheduler's state. See the module documentation.
#[derive(Debug, Default)]
pub struct Core {
    jobs: HashMap<JobId, JobEntry>,
    /// Jobs with queued tasks, in dispatch order: priority (higher first), then age.
    ready: BTreeSet<(Reverse<i32>, JobId)>,
    running: HashMap<TaskId, Running>,
    /// Queued tasks taken from a lost agent, with their job: a late result for their last
    /// attempt is still accepted, and a re-registering agent that lists them adopts them.
    orphans: HashMap<TaskId, JobId>,
    slots: Slots,
    effects: Vec<Effect>,
    task_rows: Vec<TaskRow>,
    job_rows: HashMap<JobId, JobRow>,
}

fn failure_text(finished: &TaskFinished) -> String {
    if let Some(error) = &finished.error {
        error.clone()
    } else if let Some(signal) = finished.signal {
        format!("killed by signal {signal}")
    } else if let Some(code) = finished.exit_code {
        format!("exited with code {code}")
    } else {
        "ended without an exit code".to_string()
    }
}

impl Core {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks waiting for a slot.
    pub fn queued_count(&self) -> u64 {
        self.jobs.values().map(|job| job.queued.len() as u64).sum()
    }

    /// Attempts assigned to agents.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The agent and attempt of a running task.
    pub fn running_on(&self, task_id: TaskId) -> Option<(Uuid, u32)> {
        self.running.get(&task_id).map(|r| (r.agent, r.attempt))
    }

    /// Counts of an unfinished job.
    pub fn job_counts(&self, job_id: JobId) -> Option<TaskCounts> {
        self.jobs.get(&job_id).map(|job| job.counts)
    }

    /// Effects recorded since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Task rows and job snapshots recorded since the last call, for one group commit.
    pub fn take_commit(&mut self) -> (Vec<TaskRow>, Vec<JobRow>) {
        let jobs = self.job_rows.drain().map(|(_, row)| row).collect();
        (std::mem::take(&mut self.task_rows), jobs)
    }

    /// Adds a committed job whose tasks have ids `first_task_id..` in frame order.
    pub fn add_job(&mut self, spec: JobSpec, first_task_id: TaskId, batches: &[FrameBatch]) {
        let id = spec.id;
        let queued: BTreeMap<TaskId, Queued> = batches
            .iter()
            .enumerate()
            .map(|(i, frames)| {
                (
                    first_task_id + i as i64,
                    Queued {
                        frames: *frames,
                        attempt: 0,
                        failures: 0,
                        exit_code: None,
                        last_error: None,
                    },
                )
            })
            .collect();
        let counts = TaskCounts {
            queued: queued.len() as u64,
            ..TaskCounts::default()
        };
        self.jobs.insert(
            id,
            JobEntry {
                spec: Arc::new(spec),
                counts,
                queued,
            },
        );
        self.refresh_ready(id);
        self.finish_job_if_done(id, chrono::Utc::now().timestamp_millis());
        self.dispatch();
    }

    /// An agent (re)registered with `slots` slots, running `running` (attempts still
    /// running there and attempts whose result it has not seen acknowledged). Tasks
    /// believed to run there but not listed are requeued at once; listed attempts that
    /// were requeued after the agent was lost are taken back; listed attempts that are no
    /// longer current are cancelled and acknowledged.
    pub fn agent_registered(&mut self, agent: Uuid, slots: u32, running: &[TaskRef]) {
        let listed: HashSet<TaskRef> = running.iter().copied().collect();
        let believed = self.slots.tasks_of(agent);
        for task_id in believed {
            let Some(attempt) = self.running.get(&task_id).map(|r| r.attempt) else {
                continue;
            };
            if !listed.contains(&TaskRef { task_id, attempt }) {
                self.requeue(task_id);
            }
        }
        self.slots.online(agent, slots);
        for task in running {
            let current = self
                .running
                .get(&task.task_id)
                .is_some_and(|r| r.attempt == task.attempt && r.agent == agent);
            if current {
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

    /// An agent's connection dropped: no new work for it, its tasks stay assigned.
    pub fn agent_offline(&mut self, agent: Uuid) {
        self.slots.offline(agent);
    }

    /// An agent is lost: its tasks go back to the queue.
    pub fn agent_lost(&mut self, agent: Uuid) {
        for task_id in self.slots.tasks_of(agent) {
            self.requeue(task_id);
        }
        self.slots.remove(agent);
        self.dispatch();
    }

    /// The process of an attempt started.
    pub fn task_started(&mut self, task: TaskRef, at_ms: i64) -> Verdict {
        let Some(run) = self.current_mut(task) else {
            return Verdict::Stale;
        };
        run.started_at = Some(at_ms);
        self.push_running_row(task.task_id);
        Verdict::Applied
    }

    /// Progress of an attempt changed.
    pub fn task_progress(&mut self, task: TaskRef, progress: f32) -> Verdict {
        let Some(run) = self.current_mut(task) else {
            return Verdict::Stale;
        };
        run.progress = if progress.is_finite() {
            progress.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.push_running_row(task.task_id);
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
        let verdict = self.record_result(finished);
        // Before the assignment that takes the freed slot: the agent reads the
        // acknowledgement first, so it holds at most one unacknowledged result per slot.
        self.acknowledge(from, finished.task);
        if verdict == Verdict::Applied {
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
        let current = self
            .running
            .get(&task.task_id)
            .is_some_and(|run| run.attempt == task.attempt && run.agent == from);
        if !current {
            return Verdict::Stale;
        }
        self.requeue(task.task_id);
        self.dispatch();
        Verdict::Applied
    }

    /// Applies a result to its attempt if that attempt is current, or is the last
    /// attempt of a task requeued after its agent was lost.
    fn record_result(&mut self, finished: &TaskFinished) -> Verdict {
        let task = finished.task;
        if self.current_mut(task).is_some()
            && let Some(run) = self.running.remove(&task.task_id)
        {
            self.slots.release(run.agent, task.task_id);
            let job_id = run.job_id;
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.counts.running = job.counts.running.saturating_sub(1);
            }
            self.effects.push(Effect::CloseLog { task, job_id });
            let agent = Some(run.agent);
            self.settle(job_id, task.task_id, run.into_queued(), agent, finished);
            return Verdict::Applied;
        }
        // A result for the last attempt of a task requeued after its agent was lost: the
        // work was done, so take it rather than run the task again.
        let Some((job_id, queued)) = self.take_orphan(task) else {
            return Verdict::Stale;
        };
        self.settle(job_id, task.task_id, queued, None, finished);
        Verdict::Applied
    }

    /// Tells `agent` it may forget the result of `task`.
    fn acknowledge(&mut self, agent: Uuid, task: TaskRef) {
        self.effects.push(Effect::Send {
            agent,
            message: MasterMessage::ResultStored(task),
        });
    }

    /// Records the outcome of an attempt that is no longer running or queued: done,
    /// queued again for a retry, or failed.
    fn settle(
        &mut self,
        job_id: JobId,
        task_id: TaskId,
        attempt: Queued,
        agent: Option<Uuid>,
        finished: &TaskFinished,
    ) {
        let at = to_ms(finished.at);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if finished.succeeded() {
            job.counts.done += 1;
            self.task_rows.push(TaskRow {
                id: task_id,
                state: WorkState::Done,
                agent,
                attempt: attempt.attempt,
                failures: attempt.failures,
                exit_code: finished.exit_code,
                progress: 1.0,
                last_error: None,
                started_at: None,
                finished_at: Some(at),
            });
        } else {
            let failures = attempt.failures.saturating_add(1);
            let error = failure_text(finished);
            if failures <= job.spec.retries {
                job.counts.queued += 1;
                let queued = Queued {
                    failures,
                    exit_code: finished.exit_code,
                    last_error: Some(error),
                    ..attempt
                };
                self.task_rows.push(queued.row(task_id));
                job.queued.insert(task_id, queued);
                self.refresh_ready(job_id);
            } else {
                job.counts.failed += 1;
                self.task_rows.push(TaskRow {
                    id: task_id,
                    state: WorkState::Failed,
                    agent,
                    attempt: attempt.attempt,
                    failures,
                    exit_code: finished.exit_code,
                    progress: 0.0,
                    last_error: Some(error),
                    started_at: None,
                    finished_at: Some(at),
                });
            }
        }
        self.snapshot_job(job_id);
        self.finish_job_if_done(job_id, at);
    }

    /// Takes a task requeued after its agent was lost out of the queue again, if `task`
    /// is its last attempt.
    fn take_orphan(&mut self, task: TaskRef) -> Option<(JobId, Queued)> {
        let job_id = *self.orphans.get(&task.task_id)?;
        let job = self.jobs.get_mut(&job_id)?;
        let matches = job
            .queued
            .get(&task.task_id)
            .is_some_and(|q| q.attempt == task.attempt && task.attempt > 0);
        if !matches {
            return None;
        }
        let queued = job.queued.remove(&task.task_id)?;
        job.counts.queued = job.counts.queued.saturating_sub(1);
        self.orphans.remove(&task.task_id);
        self.refresh_ready(job_id);
        self.snapshot_job(job_id);
        Some((job_id, queued))
    }

    /// Takes back a listed attempt that was requeued when its agent was lost.
    fn adopt(&mut self, agent: Uuid, task: TaskRef) -> bool {
        let Some((job_id, queued)) = self.take_orphan(task) else {
            return false;
        };
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.counts.running += 1;
        }
        self.running.insert(
            task.task_id,
            Running {
                job_id,
                frames: queued.frames,
                attempt: queued.attempt,
                failures: queued.failures,
                agent,
                started_at: None,
                progress: 0.0,
                exit_code: queued.exit_code,
                last_error: queued.last_error,
            },
        );
        self.slots.assign(agent, task.task_id);
        self.effects.push(Effect::OpenLog { task, job_id });
        self.push_running_row(task.task_id);
        self.snapshot_job(job_id);
        true
    }

    /// Moves a running task back to its job's queue; its next assignment gets a new
    /// attempt, which fences off whatever the old one still sends.
    fn requeue(&mut self, task_id: TaskId) {
        let Some(run) = self.running.remove(&task_id) else {
            return;
        };
        self.slots.release(run.agent, task_id);
        let job_id = run.job_id;
        self.effects.push(Effect::CloseLog {
            task: TaskRef {
                task_id,
                attempt: run.attempt,
            },
            job_id,
        });
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        job.counts.running = job.counts.running.saturating_sub(1);
        job.counts.queued += 1;
        let queued = run.into_queued();
        self.task_rows.push(queued.row(task_id));
        job.queued.insert(task_id, queued);
        self.orphans.insert(task_id, job_id);
        self.refresh_ready(job_id);
        self.snapshot_job(job_id);
    }

    /// Hands one queued task to each free slot, best job first.
    fn dispatch(&mut self) {
        while let (Some(agent), Some(&(_, job_id))) = (self.slots.best_free(), self.ready.first()) {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                self.ready.pop_first();
                continue;
            };
            let Some((task_id, queued)) = job.queued.pop_first() else {
                self.refresh_ready(job_id);
                continue;
            };
            let attempt = queued.attempt.saturating_add(1);
            job.counts.queued = job.counts.queued.saturating_sub(1);
            job.counts.running += 1;
            let spec = job.spec.clone();
            self.orphans.remove(&task_id);
            self.running.insert(
                task_id,
                Running {
                    job_id,
                    frames: queued.frames,
                    attempt,
                    failures: queued.failures,
                    agent,
                    started_at: None,
                    progress: 0.0,
                    exit_code: queued.exit_code,
                    last_error: queued.last_error,
                },
            );
            self.slots.assign(agent, task_id);
            self.refresh_ready(job_id);
            let task = TaskRef { task_id, attempt };
            self.effects.push(Effect::OpenLog { task, job_id });
            self.effects.push(Effect::Send {
                agent,
                message: MasterMessage::Assign(Assignment {
                    task,
                    job_id,
                    title: spec.title.clone(),
                    jobtype: spec.jobtype.clone(),
                    params: spec.params.clone(),
                    frames: queued.frames,
                    timeout_secs: spec.timeout_secs,
                }),
            });
            self.push_running_row(task_id);
            self.snapshot_job(job_id);
        }
    }

    fn current_mut(&mut self, task: TaskRef) -> Option<&mut Running> {
        self.running
            .get_mut(&task.task_id)
            .filter(|run| run.attempt == task.attempt)
    }

    fn push_running_row(&mut self, task_id: TaskId) {
        let Some(run) = self.running.get(&task_id) else {
            return;
        };
        self.task_rows.push(TaskRow {
            id: task_id,
            state: WorkState::Running,
            agent: Some(run.agent),
            attempt: run.attempt,
            failures: run.failures,
            exit_code: run.exit_code,
            progress: run.progress,
            last_error: run.last_error.clone(),
            started_at: run.started_at,
            finished_at: None,
        });
    }

    fn snapshot_job(&mut self, job_id: JobId) {
        if let Some(job) = self.jobs.get(&job_id) {
            self.job_rows.insert(
                job_id,
                JobRow {
                    id: job_id,
                    counts: job.counts,
                    finished_at: None,
                },
            );
        }
    }

    /// Drops a job whose tasks have all finished, recording when it finished.
    fn finish_job_if_done(&mut self, job_id: JobId, at: i64) {
        let finished = self
            .jobs
            .get(&job_id)
            .is_some_and(|job| job.counts.queued + job.counts.running + job.counts.paused == 0);
        if !finished {
            return;
        }
        if let Some(job) = self.jobs.remove(&job_id) {
            self.job_rows.insert(
                job_id,
                JobRow {
                    id: job_id,
                    counts: job.counts,
                    finished_at: Some(at),
                },
            );
            self.ready.remove(&(Reverse(job.spec.priority), job_id));
        }
    }

    fn refresh_ready(&mut self, job_id: JobId) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let key = (Reverse(job.spec.priority), job_id);
        if job.queued.is_empty() {
            self.ready.remove(&key);
        } else {
            self.ready.insert(key);
        }
    }
}

mod restore;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
