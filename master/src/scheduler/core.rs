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
use std::sync::Arc;

use furrow_protocol::{
    Assignment, FrameBatch, JobId, Json, MasterMessage, TaskCounts, TaskFinished, TaskId, TaskRef,
    WorkState,
};
use uuid::Uuid;

use crate::store::records::{JobRow, LoadedTask, TaskRow, to_ms};

/// What a job contributes to its assignments.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Job id (allocated in submission order, so it also orders jobs by age).
    pub id: JobId,
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// Parameters.
    pub params: Json,
    /// Attempt time limit.
    pub timeout_secs: Option<u64>,
    /// Higher first.
    pub priority: i32,
    /// Failed attempts retried per task.
    pub retries: u32,
}

/// Something the actor must do on the core's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message to an agent.
    Send {
        /// The agent.
        agent: Uuid,
        /// The message.
        message: MasterMessage,
    },
    /// An attempt started: its log file may be written.
    OpenLog {
        /// The attempt.
        task: TaskRef,
        /// Its job.
        job_id: JobId,
    },
    /// An attempt is over from the master's point of view: flush and close its log.
    CloseLog {
        /// The attempt.
        task: TaskRef,
        /// Its job.
        job_id: JobId,
    },
}

/// How a task message was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It concerned the current attempt and was applied.
    Applied,
    /// It concerned an attempt that is no longer current (or an unknown task): ignored.
    Stale,
}

#[derive(Debug, Clone)]
struct Queued {
    frames: FrameBatch,
    /// Attempt of the last assignment (0 when never assigned).
    attempt: u32,
    failures: u32,
    exit_code: Option<i32>,
    last_error: Option<String>,
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

#[derive(Debug)]
struct JobEntry {
    spec: Arc<JobSpec>,
    counts: TaskCounts,
    queued: BTreeMap<TaskId, Queued>,
}

#[derive(Debug, Default)]
struct AgentEntry {
    slots: u32,
    online: bool,
    tasks: BTreeSet<TaskId>,
    /// The free-slot count under which the agent sits in `Core::free`, if it does.
    indexed_free: Option<u32>,
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
    agents: HashMap<Uuid, AgentEntry>,
    /// Online agents with free slots, most free slots first.
    free: BTreeSet<(Reverse<u32>, Uuid)>,
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

    /// Restores unfinished jobs and tasks after a restart. Running tasks stay with their
    /// agents, which are offline until they register again (or are declared lost).
    pub fn load(&mut self, jobs: Vec<(JobSpec, TaskCounts)>, tasks: Vec<LoadedTask>) {
        for (spec, counts) in jobs {
            let id = spec.id;
            // Done and failed counts come from the job row; the rest from the tasks.
            let counts = TaskCounts {
                done: counts.done,
                failed: counts.failed,
                ..TaskCounts::default()
            };
            self.jobs.insert(
                id,
                JobEntry {
                    spec: Arc::new(spec),
                    counts,
                    queued: BTreeMap::new(),
                },
            );
        }
        for task in tasks {
            let Some(job) = self.jobs.get_mut(&task.job_id) else {
                continue;
            };
            job.counts.add(task.state, 1);
            match (task.state, task.agent) {
                (WorkState::Running, Some(agent)) => {
                    self.agents.entry(agent).or_default().tasks.insert(task.id);
                    self.running.insert(
                        task.id,
                        Running {
                            job_id: task.job_id,
                            frames: task.frames,
                            attempt: task.attempt,
                            failures: task.failures,
                            agent,
                            started_at: None,
                            progress: 0.0,
                            exit_code: None,
                            last_error: None,
                        },
                    );
                    self.effects.push(Effect::OpenLog {
                        task: TaskRef {
                            task_id: task.id,
                            attempt: task.attempt,
                        },
                        job_id: task.job_id,
                    });
                }
                (WorkState::Running | WorkState::Queued, _) => {
                    if task.state == WorkState::Running {
                        // Running without an agent cannot happen; treat it as queued.
                        job.counts.running -= 1;
                        job.counts.queued += 1;
                    }
                    job.queued.insert(
                        task.id,
                        Queued {
                            frames: task.frames,
                            attempt: task.attempt,
                            failures: task.failures,
                            exit_code: None,
                            last_error: None,
                        },
                    );
                }
                _ => {}
            }
        }
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.refresh_ready(id);
            self.snapshot_job(id);
        }
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

    /// An agent (re)registered with `slots` slots, running `running`. Tasks believed to
    /// run there but not listed are requeued at once; listed attempts that are no longer
    /// current are cancelled; listed attempts that were requeued after the agent was lost
    /// are taken back.
    pub fn agent_registered(&mut self, agent: Uuid, slots: u32, running: &[TaskRef]) {
        let listed: HashSet<TaskRef> = running.iter().copied().collect();
        let believed: Vec<TaskId> = self
            .agents
            .get(&agent)
            .map(|entry| entry.tasks.iter().copied().collect())
            .unwrap_or_default();
        for task_id in believed {
            let Some(attempt) = self.running.get(&task_id).map(|r| r.attempt) else {
                continue;
            };
            if !listed.contains(&TaskRef { task_id, attempt }) {
                self.requeue(task_id);
            }
        }
        let entry = self.agents.entry(agent).or_default();
        entry.slots = slots;
        entry.online = true;
        for task in running {
            let current = self
                .running
                .get(&task.task_id)
                .is_some_and(|r| r.attempt == task.attempt && r.agent == agent);
            if current {
                continue;
            }
            if !self.adopt(agent, *task) {
                self.effects.push(Effect::Send {
                    agent,
                    message: MasterMessage::Cancel(*task),
                });
            }
        }
        self.refresh_free(agent);
        self.dispatch();
    }

    /// An agent's connection dropped: no new work for it, its tasks stay assigned.
    pub fn agent_offline(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.online = false;
        }
        self.refresh_free(agent);
    }

    /// An agent is lost: its tasks go back to the queue.
    pub fn agent_lost(&mut self, agent: Uuid) {
        let Some(entry) = self.agents.get(&agent) else {
            return;
        };
        let tasks: Vec<TaskId> = entry.tasks.iter().copied().collect();
        for task_id in tasks {
            self.requeue(task_id);
        }
        self.refresh_free_removed(agent);
        self.agents.remove(&agent);
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

    /// An attempt ended. A failure is retried while the job's retries allow.
    pub fn task_finished(&mut self, finished: &TaskFinished) -> Verdict {
        let task = finished.task;
        let at = to_ms(finished.at);
        if self.current_mut(task).is_some() {
            let Some(run) = self.running.remove(&task.task_id) else {
                return Verdict::Stale;
            };
            self.release_slot(run.agent, task.task_id);
            let job_id = run.job_id;
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.counts.running = job.counts.running.saturating_sub(1);
            }
            self.effects.push(Effect::CloseLog { task, job_id });
            self.settle(
                job_id,
                task.task_id,
                run.frames,
                run.attempt,
                run.failures,
                finished,
                at,
            );
            self.dispatch();
            return Verdict::Applied;
        }
        // A result for the last attempt of a task requeued after its agent was lost: the
        // work was done, so take it rather than run the task again.
        let Some(&job_id) = self.orphans.get(&task.task_id) else {
            return Verdict::Stale;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Verdict::Stale;
        };
        let matches = job
            .queued
            .get(&task.task_id)
            .is_some_and(|q| q.attempt == task.attempt && task.attempt > 0);
        if !matches {
            return Verdict::Stale;
        }
        let Some(queued) = job.queued.remove(&task.task_id) else {
            return Verdict::Stale;
        };
        job.counts.queued = job.counts.queued.saturating_sub(1);
        self.orphans.remove(&task.task_id);
        self.refresh_ready(job_id);
        self.settle(
            job_id,
            task.task_id,
            queued.frames,
            queued.attempt,
            queued.failures,
            finished,
            at,
        );
        self.dispatch();
        Verdict::Applied
    }

    /// Records the outcome of an attempt that is no longer running or queued.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        job_id: JobId,
        task_id: TaskId,
        frames: FrameBatch,
        attempt: u32,
        failures: u32,
        finished: &TaskFinished,
        at: i64,
    ) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if finished.succeeded() {
            job.counts.done += 1;
            self.task_rows.push(TaskRow {
                id: task_id,
                state: WorkState::Done,
                agent: None,
                attempt,
                failures,
                exit_code: finished.exit_code,
                progress: 1.0,
                last_error: None,
                started_at: None,
                finished_at: Some(at),
            });
        } else {
            let failures = failures + 1;
            let error = failure_text(finished);
            if failures <= job.spec.retries {
                job.counts.queued += 1;
                job.queued.insert(
                    task_id,
                    Queued {
                        frames,
                        attempt,
                        failures,
                        exit_code: finished.exit_code,
                        last_error: Some(error.clone()),
                    },
                );
                self.task_rows.push(TaskRow {
                    id: task_id,
                    state: WorkState::Queued,
                    agent: None,
                    attempt,
                    failures,
                    exit_code: finished.exit_code,
                    progress: 0.0,
                    last_error: Some(error),
                    started_at: None,
                    finished_at: None,
                });
                self.refresh_ready(job_id);
            } else {
                job.counts.failed += 1;
                self.task_rows.push(TaskRow {
                    id: task_id,
                    state: WorkState::Failed,
                    agent: None,
                    attempt,
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

    /// Takes back a listed attempt that was requeued when its agent was lost.
    fn adopt(&mut self, agent: Uuid, task: TaskRef) -> bool {
        let Some(&job_id) = self.orphans.get(&task.task_id) else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let matches = job
            .queued
            .get(&task.task_id)
            .is_some_and(|q| q.attempt == task.attempt && task.attempt > 0);
        if !matches {
            return false;
        }
        let Some(queued) = job.queued.remove(&task.task_id) else {
            return false;
        };
        self.orphans.remove(&task.task_id);
        job.counts.queued = job.counts.queued.saturating_sub(1);
        job.counts.running += 1;
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
        self.agents
            .entry(agent)
            .or_default()
            .tasks
            .insert(task.task_id);
        self.effects.push(Effect::OpenLog { task, job_id });
        self.refresh_ready(job_id);
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
        self.release_slot(run.agent, task_id);
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
        job.queued.insert(
            task_id,
            Queued {
                frames: run.frames,
                attempt: run.attempt,
                failures: run.failures,
                exit_code: run.exit_code,
                last_error: run.last_error.clone(),
            },
        );
        self.orphans.insert(task_id, job_id);
        self.task_rows.push(TaskRow {
            id: task_id,
            state: WorkState::Queued,
            agent: None,
            attempt: run.attempt,
            failures: run.failures,
            exit_code: run.exit_code,
            progress: 0.0,
            last_error: run.last_error,
            started_at: None,
            finished_at: None,
        });
        self.refresh_ready(job_id);
        self.snapshot_job(job_id);
    }

    /// Hands one queued task to each free slot, best job first.
    fn dispatch(&mut self) {
        while let (Some(&(_, agent)), Some(&(_, job_id))) = (self.free.first(), self.ready.first())
        {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                self.ready.pop_first();
                continue;
            };
            let Some((task_id, queued)) = job.queued.pop_first() else {
                self.refresh_ready(job_id);
                continue;
            };
            let attempt = queued.attempt + 1;
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
            self.agents.entry(agent).or_default().tasks.insert(task_id);
            self.refresh_free(agent);
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

    fn release_slot(&mut self, agent: Uuid, task_id: TaskId) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.tasks.remove(&task_id);
        }
        self.refresh_free(agent);
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

    fn refresh_free(&mut self, agent: Uuid) {
        let Some(entry) = self.agents.get_mut(&agent) else {
            return;
        };
        if let Some(old) = entry.indexed_free.take() {
            self.free.remove(&(Reverse(old), agent));
        }
        let used = entry.tasks.len() as u32;
        if entry.online && entry.slots > used {
            let free = entry.slots - used;
            entry.indexed_free = Some(free);
            self.free.insert((Reverse(free), agent));
        }
    }

    fn refresh_free_removed(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.get_mut(&agent)
            && let Some(old) = entry.indexed_free.take()
        {
            self.free.remove(&(Reverse(old), agent));
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
