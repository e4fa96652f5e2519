//! What users do to jobs, tasks and queues: pause, resume, cancel, rerun, delete, edit;
//! queues created, changed and deleted. Each either applies wholly or is refused with a
//! reason, and records its writes like any other transition.

use std::sync::Arc;

use furrow_protocol::{
    FrameBatch, JobAction, JobId, JobPatch, QueuePatch, QueueSpec, TaskAction, TaskId, TaskRef,
    WorkState,
};

use super::{Core, Effect, Refusal, Write, task_row};
use crate::scheduler::policy::requirements::Needs;
use crate::scheduler::queues::{self, Queue};
use crate::scheduler::state::{Job, Stop, Task};
use crate::scheduler::types::{Control, JobSpec};
use crate::store::records::{BulkWrite, NewFrames, now_ms};

/// A finished job brought back into memory to run again.
#[derive(Debug, Clone)]
pub struct Revived {
    /// Its settings.
    pub spec: JobSpec,
    /// Id of its first task.
    pub first_task_id: TaskId,
    /// Every task: frames, state, attempt.
    pub tasks: Vec<(FrameBatch, WorkState, u32)>,
}

const WAITING: [WorkState; 3] = [WorkState::Queued, WorkState::Paused, WorkState::Blocked];

impl Core {
    /// Brings a finished job back (for a rerun); a job still in memory is left as it is.
    pub fn revive(&mut self, revived: Revived) {
        let id = revived.spec.id;
        if self.jobs.contains_key(&id) {
            return;
        }
        let tasks = revived
            .tasks
            .iter()
            .map(|(frames, state, attempt)| {
                let mut task = Task::new(*frames, *state);
                task.attempt = *attempt;
                task
            })
            .collect();
        let job = Job::new(
            Arc::new(revived.spec),
            revived.first_task_id,
            tasks,
            Control::Active,
        );
        self.jobs.insert(id, job);
    }

    /// Applies `action` to an unfinished (or revived) job.
    pub fn job_action(
        &mut self,
        job_id: JobId,
        action: JobAction,
        kill: bool,
    ) -> Result<(), Refusal> {
        let Some(job) = self.jobs.get(&job_id) else {
            return Err(Refusal::NotLoaded);
        };
        let control = job.control;
        match action {
            JobAction::Pause => {
                match control {
                    Control::Paused if !kill => {
                        return Err(Refusal::Conflict(format!("job {job_id} is already paused")));
                    }
                    Control::Cancelled => {
                        return Err(Refusal::Conflict(format!(
                            "job {job_id} is cancelled; nothing to pause"
                        )));
                    }
                    _ => {}
                }
                self.set_control(job_id, Control::Paused);
                self.move_all(job_id, &[WorkState::Queued], WorkState::Paused, false);
                if kill {
                    self.stop_running(job_id, None, Stop::Requeue);
                }
            }
            JobAction::Resume => {
                if control != Control::Paused {
                    return Err(Refusal::Conflict(format!("job {job_id} is not paused")));
                }
                self.set_control(job_id, Control::Active);
                self.move_all(job_id, &[WorkState::Paused], WorkState::Queued, false);
                self.reblock(job_id);
            }
            JobAction::Cancel => {
                if control == Control::Cancelled {
                    return Err(Refusal::Conflict(format!(
                        "job {job_id} is already cancelled"
                    )));
                }
                self.set_control(job_id, Control::Cancelled);
                self.move_all(job_id, &WAITING, WorkState::Cancelled, false);
                self.stop_running(job_id, None, Stop::Cancel);
            }
            JobAction::Rerun => {
                if control == Control::Cancelled {
                    self.set_control(job_id, Control::Active);
                }
                let target = self.waiting_target(job_id);
                self.move_all(
                    job_id,
                    &[
                        WorkState::Queued,
                        WorkState::Paused,
                        WorkState::Blocked,
                        WorkState::Done,
                        WorkState::Failed,
                        WorkState::Cancelled,
                    ],
                    target,
                    true,
                );
                self.stop_running(job_id, None, Stop::Rerun);
                self.reblock(job_id);
            }
            JobAction::RerunFailed => {
                let counts = job.counts();
                if counts.failed + counts.cancelled == 0 {
                    return Err(Refusal::Conflict(format!(
                        "job {job_id} has no failed or cancelled tasks"
                    )));
                }
                if control == Control::Cancelled {
                    self.set_control(job_id, Control::Active);
                }
                let target = self.waiting_target(job_id);
                self.move_all(
                    job_id,
                    &[WorkState::Failed, WorkState::Cancelled],
                    target,
                    true,
                );
                self.reblock(job_id);
            }
            JobAction::ClearBlocklist => {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.failures_on.clear();
                }
                self.dirty_jobs.insert(job_id);
            }
        }
        self.refresh_ready(job_id);
        self.finish_job_if_done(job_id, now_ms());
        self.dispatch();
        Ok(())
    }

    /// Applies `action` to one task of an unfinished (or revived) job.
    pub fn task_action(
        &mut self,
        job_id: JobId,
        task_id: TaskId,
        action: TaskAction,
    ) -> Result<(), Refusal> {
        let Some(job) = self.jobs.get(&job_id) else {
            return Err(Refusal::NotLoaded);
        };
        let Some(task) = job.task(task_id) else {
            return Err(Refusal::NotFound(format!(
                "task {task_id} of job {job_id} not found"
            )));
        };
        let state = task.state;
        match (action, state) {
            (TaskAction::Cancel, WorkState::Running) => {
                self.stop_running(job_id, Some(task_id), Stop::Cancel);
            }
            (TaskAction::Cancel, WorkState::Queued | WorkState::Paused | WorkState::Blocked) => {
                self.move_one(job_id, task_id, WorkState::Cancelled, false);
            }
            (TaskAction::Cancel, _) => {
                return Err(Refusal::Conflict(format!(
                    "task {task_id} is {}; only waiting or running tasks can be cancelled",
                    state.as_str()
                )));
            }
            (TaskAction::Rerun, WorkState::Running) => {
                self.stop_running(job_id, Some(task_id), Stop::Rerun);
            }
            (TaskAction::Rerun, _) => {
                if job.control == Control::Cancelled {
                    self.set_control(job_id, Control::Active);
                }
                let ready = self.frames_ready_for(job_id, task_id);
                let target = self
                    .jobs
                    .get(&job_id)
                    .map_or(WorkState::Queued, |j| j.waiting_state(ready));
                self.move_one(job_id, task_id, target, true);
            }
        }
        self.refresh_ready(job_id);
        self.finish_job_if_done(job_id, now_ms());
        self.dispatch();
        Ok(())
    }

    /// Changes an unfinished job's settings. The frame range is changed by the store
    /// (new task ids), not here.
    pub fn edit_job(
        &mut self,
        job_id: JobId,
        patch: &JobPatch,
        needs: Option<Needs>,
    ) -> Result<(), Refusal> {
        let Some(job) = self.jobs.get(&job_id) else {
            return Err(Refusal::NotLoaded);
        };
        let queue = match &patch.queue {
            Some(queue) => {
                let path = queues::normalize(queue)
                    .map_err(|e| Refusal::BadRequest(format!("queue: {e}")))?;
                if self.queues.get(&path).is_none() {
                    return Err(Refusal::BadRequest(format!(
                        "queue: no queue {}",
                        queues::display(&path)
                    )));
                }
                Some(path)
            }
            None => None,
        };
        let mut spec = JobSpec::clone(&job.spec);
        if let Some(priority) = patch.priority {
            spec.priority = priority;
        }
        if let Some(weight) = patch.weight {
            spec.settings.weight = weight;
        }
        if let Some(queue) = queue {
            spec.settings.queue = queue;
        }
        if let Some(min) = patch.min_agents {
            spec.settings.min_agents = min;
        }
        if let Some(max) = patch.max_agents {
            spec.settings.max_agents = (max > 0).then_some(max);
        }
        if let (Some(requirements), Some(needs)) = (&patch.requirements, needs) {
            spec.settings.requirements = requirements.clone();
            spec.needs = needs;
        }
        if let Some(notes) = &patch.notes {
            spec.settings.notes = notes.clone();
        }
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.set_spec(Arc::new(spec));
        }
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
        self.dispatch();
        Ok(())
    }

    /// Replaces the tasks of a job none of whose tasks has run (a new frame range);
    /// refused once any has.
    pub fn replace_frames(&mut self, job_id: JobId, frames: NewFrames) -> Result<(), Refusal> {
        let Some(job) = self.jobs.get(&job_id) else {
            return Err(Refusal::NotLoaded);
        };
        if job.tasks.iter().any(|t| t.attempt > 0) {
            return Err(Refusal::Conflict(format!(
                "frames: job {job_id} has started; the frame range can change only while no task has run"
            )));
        }
        let control = job.control;
        let spec = job.spec.clone();
        let state = if control == Control::Paused {
            WorkState::Paused
        } else {
            WorkState::Queued
        };
        let tasks = frames
            .batches
            .iter()
            .map(|f| Task::new(*f, state))
            .collect();
        let mut new_job = Job::new(spec, frames.first_task_id, tasks, control);
        if let Some(old) = self.jobs.get(&job_id) {
            new_job.waiting_on = old.waiting_on.clone();
        }
        self.jobs.insert(job_id, new_job);
        self.writes
            .push(Write::Bulk(BulkWrite::ReplaceTasks { job_id, frames }));
        if state != WorkState::Queued {
            self.writes.push(Write::Bulk(BulkWrite::TaskStates {
                job_id,
                from: vec![WorkState::Queued],
                to: state,
                reset: false,
            }));
        }
        self.reblock(job_id);
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
        self.finish_job_if_done(job_id, now_ms());
        self.dispatch();
        Ok(())
    }

    /// Deletes a job: running tasks are killed, waiting ones dropped, dependents fail.
    /// A job not in memory (finished) is deleted from the store only.
    pub fn delete_job(&mut self, job_id: JobId) {
        if let Some(job) = self.jobs.get(&job_id) {
            let running = job.ids_in(&[WorkState::Running]);
            for task_id in running {
                let attempt = self
                    .jobs
                    .get(&job_id)
                    .and_then(|j| j.task(task_id))
                    .map(|t| t.attempt);
                if let Some(run) = self.end_run(job_id, task_id)
                    && let Some(attempt) = attempt
                {
                    self.effects.push(Effect::Send {
                        agent: run.agent,
                        message: furrow_protocol::MasterMessage::Cancel(TaskRef {
                            task_id,
                            attempt,
                        }),
                    });
                }
            }
            self.jobs.remove(&job_id);
            self.ready.remove(&job_id);
            self.dirty_jobs.remove(&job_id);
            self.orphans.retain(|_, (j, _)| *j != job_id);
            for children in self.dependents.values_mut() {
                children.remove(&job_id);
            }
        }
        self.writes
            .push(Write::Bulk(BulkWrite::DeleteJob { job_id }));
        self.parent_deleted(job_id, now_ms());
        self.dispatch();
    }

    /// Adds a queue.
    pub fn create_queue(&mut self, spec: &QueueSpec) -> Result<Queue, Refusal> {
        let queue = self.queues.check_new(spec).map_err(Refusal::BadRequest)?;
        if self.queues.get(&queue.path).is_some() {
            return Err(Refusal::Conflict(format!(
                "queue {} already exists",
                queues::display(&queue.path)
            )));
        }
        self.queues.put(queue.clone());
        self.writes
            .push(Write::Bulk(BulkWrite::PutQueue(queue.clone())));
        Ok(queue)
    }

    /// Changes a queue.
    pub fn edit_queue(&mut self, path: &str, patch: &QueuePatch) -> Result<Queue, Refusal> {
        let path = queues::normalize(path).map_err(Refusal::BadRequest)?;
        if self.queues.get(&path).is_none() {
            return Err(Refusal::NotFound(format!(
                "no queue {}",
                queues::display(&path)
            )));
        }
        let queue = self
            .queues
            .patched(&path, patch)
            .map_err(Refusal::BadRequest)?;
        self.queues.put(queue.clone());
        self.writes
            .push(Write::Bulk(BulkWrite::PutQueue(queue.clone())));
        self.dispatch();
        Ok(queue)
    }

    /// Deletes an empty queue without children.
    pub fn delete_queue(&mut self, path: &str) -> Result<(), Refusal> {
        let path = queues::normalize(path).map_err(Refusal::BadRequest)?;
        if path.is_empty() {
            return Err(Refusal::Conflict("the root queue cannot be deleted".into()));
        }
        if self.queues.get(&path).is_none() {
            return Err(Refusal::NotFound(format!(
                "no queue {}",
                queues::display(&path)
            )));
        }
        if self.queues.has_children(&path) {
            return Err(Refusal::Conflict(format!(
                "queue {} has child queues; delete them first",
                queues::display(&path)
            )));
        }
        let jobs = self
            .jobs
            .values()
            .filter(|j| j.spec.settings.queue == path)
            .count();
        if jobs > 0 {
            return Err(Refusal::Conflict(format!(
                "queue {} has {jobs} unfinished jobs; move or finish them first",
                queues::display(&path)
            )));
        }
        self.queues.remove(&path);
        self.writes.push(Write::Bulk(BulkWrite::DeleteQueue(path)));
        Ok(())
    }

    fn set_control(&mut self, job_id: JobId, control: Control) {
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.control = control;
        }
        self.dirty_jobs.insert(job_id);
    }

    /// Where a task that must run again waits, before dependencies are looked at.
    fn waiting_target(&self, job_id: JobId) -> WorkState {
        self.jobs
            .get(&job_id)
            .map_or(WorkState::Queued, |j| j.waiting_state(true))
    }

    /// Moves every task of a job in one of `from` to `to` with one bulk write; with
    /// `reset`, their earlier outcomes are forgotten (a rerun).
    fn move_all(&mut self, job_id: JobId, from: &[WorkState], to: WorkState, reset: bool) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let ids = job.ids_in(from);
        if ids.is_empty() {
            return;
        }
        for id in ids {
            if reset && let Some(task) = job.task_mut(id) {
                task.failures = 0;
                task.last = None;
            }
            job.set_state(id, to);
        }
        self.writes.push(Write::Bulk(BulkWrite::TaskStates {
            job_id,
            from: from.to_vec(),
            to,
            reset,
        }));
        self.dirty_jobs.insert(job_id);
    }

    fn move_one(&mut self, job_id: JobId, task_id: TaskId, to: WorkState, reset: bool) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if reset && let Some(task) = job.task_mut(task_id) {
            task.failures = 0;
            task.last = None;
        }
        job.set_state(task_id, to);
        let finished_at = to.is_finished().then(now_ms);
        self.writes
            .push(Write::Task(task_row(job, task_id, None, finished_at)));
        self.dirty_jobs.insert(job_id);
    }

    /// Asks the agents running tasks of a job (or one task) to stop them; where each
    /// task goes once its attempt ends is `stop`'s.
    fn stop_running(&mut self, job_id: JobId, only: Option<TaskId>, stop: Stop) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let ids = match only {
            Some(id) => vec![id],
            None => job.ids_in(&[WorkState::Running]),
        };
        for id in ids {
            let Some(task) = job.task_mut(id) else {
                continue;
            };
            let attempt = task.attempt;
            let Some(run) = task.run.as_deref_mut() else {
                continue;
            };
            // A cancel outranks a requeue or rerun asked before it.
            if run.stop != Some(Stop::Cancel) {
                run.stop = Some(stop);
            }
            self.effects.push(Effect::Send {
                agent: run.agent,
                message: furrow_protocol::MasterMessage::Cancel(TaskRef {
                    task_id: id,
                    attempt,
                }),
            });
        }
    }
}
