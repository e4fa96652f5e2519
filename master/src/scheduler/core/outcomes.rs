//! How attempts end: a result applied to its attempt (done, retried, failed, cancelled,
//! back to waiting), a task taken back from its agent, an orphaned attempt adopted again.

use furrow_protocol::{JobId, LimitHit, MasterMessage, TaskFinished, TaskId, TaskRef, WorkState};
use uuid::Uuid;

use super::{Core, Effect, Verdict, Write, task_row};
use crate::scheduler::agents::Reservation;
use crate::scheduler::state::{Outcome, Run, Stop};
use crate::store::records::{AttemptRow, OutputRows, now_ms, to_ms};

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
    /// Applies a result to its attempt if that attempt is current, or is the last
    /// attempt of a task requeued after its agent was lost.
    pub(super) fn record_result(&mut self, from: Uuid, finished: &TaskFinished) -> Verdict {
        let task = finished.task;
        // Only the agent the attempt was given to may end it.
        if self.current_run(task).is_some_and(|run| run.agent == from)
            && let Some(&job_id) = self.running.get(&task.task_id)
            && let Some(run) = self.end_run(job_id, task.task_id)
        {
            self.settle(job_id, task.task_id, Some(*run), finished);
            return Verdict::Applied;
        }
        // A result for the last attempt of a task requeued after its agent was lost: the
        // work was done, so take it rather than run the task again.
        let Some(job_id) = self.take_orphan(from, task) else {
            return Verdict::Stale;
        };
        self.settle(job_id, task.task_id, None, finished);
        Verdict::Applied
    }

    /// Tells `agent` it may forget the result of `task`.
    pub(super) fn acknowledge(&mut self, agent: Uuid, task: TaskRef) {
        self.effects.push(Effect::Send {
            agent,
            message: MasterMessage::ResultStored(task),
        });
    }

    /// Records the outcome of an attempt that is no longer running: done, waiting again
    /// (a retry, or a stop that asked for it), cancelled or failed.
    pub(super) fn settle(
        &mut self,
        job_id: JobId,
        task_id: TaskId,
        run: Option<Run>,
        finished: &TaskFinished,
    ) {
        let at = to_ms(finished.at);
        let ready = self.frames_ready_for(job_id, task_id);
        let raised_ram = self.raised_ram(job_id, task_id, finished);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let stop = run.as_ref().and_then(|r| r.stop);
        let agent = run.as_ref().map(|r| r.agent);
        let started_at = run.as_ref().and_then(|r| r.started_at);
        let mut finished_at = None;
        let succeeded = finished.succeeded();
        let state = match stop {
            Some(Stop::Cancel) => WorkState::Cancelled,
            Some(Stop::Requeue) => job.waiting_state(ready),
            Some(Stop::Rerun) => {
                if let Some(task) = job.task_mut(task_id) {
                    task.failures = 0;
                    task.last = None;
                }
                job.waiting_state(ready)
            }
            None if succeeded => WorkState::Done,
            None if let Some((from, to)) = raised_ram => {
                let Some(task) = job.task_mut(task_id) else {
                    return;
                };
                task.set_ram_mb(to);
                task.last = Some(Box::new(Outcome {
                    exit_code: finished.exit_code,
                    error: Some(format!(
                        "{}; retried with {to} MiB instead of {from} MiB",
                        failure_text(finished)
                    )),
                }));
                job.waiting_state(ready)
            }
            None => {
                let retries = job.spec.retries;
                let Some(task) = job.task_mut(task_id) else {
                    return;
                };
                task.failures = task.failures.saturating_add(1);
                task.last = Some(Box::new(Outcome {
                    exit_code: finished.exit_code,
                    error: Some(failure_text(finished)),
                }));
                let failures = task.failures;
                if let Some(agent) = agent {
                    *job.failures_on.entry(agent).or_default() += 1;
                }
                if failures <= retries {
                    job.waiting_state(ready)
                } else {
                    WorkState::Failed
                }
            }
        };
        if state == WorkState::Done
            && let Some(started) = started_at
        {
            job.ran(at - started);
        }
        if state == WorkState::Done
            && let Some(task) = job.task_mut(task_id)
        {
            task.last = Some(Box::new(Outcome {
                exit_code: finished.exit_code,
                error: None,
            }));
        }
        if state.is_finished() {
            finished_at = Some(at);
        }
        job.set_state(task_id, state);
        let mut row = task_row(job, task_id, agent, finished_at);
        row.started_at = started_at;
        let outcome = match (stop, state) {
            (Some(Stop::Cancel), _) => "cancelled",
            (Some(_), _) => "requeued",
            (None, WorkState::Done) => "done",
            _ => "failed",
        };
        self.writes.push(Write::Attempt(AttemptRow {
            task_id,
            attempt: finished.task.attempt,
            job_id,
            agent,
            started_at,
            finished_at: at,
            exit_code: finished.exit_code,
            outcome,
            error: (!succeeded || stop.is_some()).then(|| failure_text(finished)),
        }));
        if !finished.outputs.is_empty() {
            self.writes.push(Write::Outputs(OutputRows {
                job_id,
                task_id,
                at,
                files: finished.outputs.clone(),
            }));
        }
        self.writes.push(Write::Task(row));
        self.dirty_jobs.insert(job_id);
        if let Some(agent) = agent.filter(|_| outcome == "failed") {
            self.take_back_waiting(job_id, agent);
        }
        self.refresh_ready(job_id);
        if state == WorkState::Done {
            self.frames_done(job_id, task_id);
        }
        self.finish_job_if_done(job_id, at);
    }

    /// When `agent` is blocklisted for the job now, its tasks of the job that wait there
    /// for a slot (assigned ahead, not started) go back to the queue, and the agent is
    /// told they are stale: it runs nothing more of the job.
    fn take_back_waiting(&mut self, job_id: JobId, agent: Uuid) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if !job.blocklisted(agent) {
            return;
        }
        let waiting: Vec<TaskRef> = self
            .agents
            .tasks_of(agent)
            .into_iter()
            .filter(|task_id| self.running.get(task_id) == Some(&job_id))
            .filter_map(|task_id| {
                let task = job.task(task_id)?;
                let run = task.run.as_deref()?;
                (run.agent == agent && run.started_at.is_none()).then_some(TaskRef {
                    task_id,
                    attempt: task.attempt,
                })
            })
            .collect();
        for task in waiting {
            self.take_back(
                task.task_id,
                "taken back before it started: its agent is blocklisted for this job",
            );
            // The agent is told to drop it; what it reports of it then changes nothing.
            self.orphans.remove(&task.task_id);
            self.effects.push(Effect::Send {
                agent,
                message: MasterMessage::Stale(task),
            });
        }
    }

    /// For an attempt killed for using more memory than its limit: the limit it had and
    /// the one its next attempt gets (twice as much, at least half again what it used, at
    /// most what the largest agent has). `None` when the limit cannot grow: then the kill
    /// is an ordinary failure.
    pub(super) fn raised_ram(
        &self,
        job_id: JobId,
        task_id: TaskId,
        finished: &TaskFinished,
    ) -> Option<(u64, u64)> {
        let Some(LimitHit::Memory { used_mb }) = finished.limit else {
            return None;
        };
        let job = self.jobs.get(&job_id)?;
        let current = job.task(task_id)?.ram_mb().max(job.spec.needs.ram_mb);
        let largest = self.agents.iter().map(|(_, a)| a.offer.ram_mb).max()?;
        let wanted = current
            .saturating_mul(2)
            .max(used_mb.saturating_add(used_mb / 2));
        let next = wanted.min(largest);
        (next > current).then_some((current, next))
    }

    /// Takes a task requeued after its agent was lost out of the queue again, if `task`
    /// is its last attempt; returns its job.
    pub(super) fn take_orphan(&mut self, from: Uuid, task: TaskRef) -> Option<JobId> {
        let (job_id, agent) = *self.orphans.get(&task.task_id)?;
        if agent != from {
            return None;
        }
        let job = self.jobs.get_mut(&job_id)?;
        let waiting = job.task(task.task_id).is_some_and(|t| {
            t.attempt == task.attempt
                && task.attempt > 0
                && matches!(
                    t.state,
                    WorkState::Queued | WorkState::Paused | WorkState::Blocked
                )
        });
        if !waiting {
            return None;
        }
        self.orphans.remove(&task.task_id);
        Some(job_id)
    }

    /// Takes back a listed attempt that was requeued when its agent was lost.
    pub(super) fn adopt(&mut self, agent: Uuid, task: TaskRef) -> bool {
        let Some(job_id) = self.take_orphan(agent, task) else {
            return false;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return false;
        };
        let reservation = self
            .agents
            .get(agent)
            .and_then(|a| {
                let ram_mb = job.task(task.task_id).map_or(0, |t| t.ram_mb());
                a.reserve(&job.spec.needs, ram_mb, true)
            })
            .unwrap_or(Reservation {
                cpus: job.spec.needs.cpus,
                ram_mb: job.spec.needs.ram_mb,
                gpus: Vec::new(),
            });
        job.set_state(task.task_id, WorkState::Running);
        if let Some(t) = job.task_mut(task.task_id) {
            t.run = Some(Box::new(Run {
                agent,
                started_at: None,
                progress: 0.0,
                stop: None,
                gpus: reservation.gpus.clone(),
            }));
        }
        *job.agents.entry(agent).or_default() += 1;
        self.running.insert(task.task_id, job_id);
        self.agents.assign(agent, task.task_id, reservation);
        self.dirty_agents.insert(agent);
        self.effects.push(Effect::OpenLog {
            task,
            job_id,
            agent,
            resumed: true,
        });
        self.push_task_row(task.task_id);
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
        true
    }

    /// Ends the running attempt of a task on the master's side: frees what it held and
    /// closes its log. The task's state is the caller's to set.
    pub(super) fn end_run(&mut self, job_id: JobId, task_id: TaskId) -> Option<Box<Run>> {
        let job = self.jobs.get_mut(&job_id)?;
        let attempt = job.task(task_id)?.attempt;
        let run = job.task_mut(task_id)?.run.take()?;
        if let Some(count) = job.agents.get_mut(&run.agent) {
            *count -= 1;
            if *count == 0 {
                job.agents.remove(&run.agent);
            }
        }
        self.running.remove(&task_id);
        self.agents.release(run.agent, task_id);
        self.dirty_agents.insert(run.agent);
        self.effects.push(Effect::CloseLog {
            task: TaskRef { task_id, attempt },
            job_id,
        });
        Some(run)
    }

    /// Moves a running task back to waiting without counting a failure; its next
    /// assignment gets a new attempt, which fences off whatever the old one still sends.
    pub(super) fn requeue(&mut self, task_id: TaskId) {
        self.take_back(
            task_id,
            "taken back from its agent (lost, stopping or refusing work)",
        );
    }

    /// Puts a running task back in the queue, recording why in its attempt; a late result
    /// of that attempt from its agent is still accepted (see `take_orphan`).
    fn take_back(&mut self, task_id: TaskId, why: &str) {
        let Some(&job_id) = self.running.get(&task_id) else {
            return;
        };
        let Some(run) = self.end_run(job_id, task_id) else {
            return;
        };
        let ready = self.frames_ready_for(job_id, task_id);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let state = match run.stop {
            Some(Stop::Cancel) => WorkState::Cancelled,
            _ => job.waiting_state(ready),
        };
        self.writes.push(Write::Attempt(AttemptRow {
            task_id,
            attempt: job.task(task_id).map_or(0, |t| t.attempt),
            job_id,
            agent: Some(run.agent),
            started_at: run.started_at,
            finished_at: now_ms(),
            exit_code: None,
            outcome: if state == WorkState::Cancelled {
                "cancelled"
            } else {
                "requeued"
            },
            error: Some(why.into()),
        }));
        job.set_state(task_id, state);
        self.writes
            .push(Write::Task(task_row(job, task_id, None, None)));
        self.orphans.insert(task_id, (job_id, run.agent));
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
        self.finish_job_if_done(job_id, now_ms());
    }
}
