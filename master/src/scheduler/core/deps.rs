//! Dependencies between jobs: a job waits (its tasks `blocked`) until every job of its
//! `depends_on` is done; with `depends_per_frame`, frame N waits only for frame N of
//! those jobs. A parent that ends failed, cancelled or deleted fails the tasks still
//! waiting for it, with a reason naming it.

use furrow_protocol::{JobId, TaskId, WorkState};

use super::{Core, ParentState, Write, task_row};
use crate::scheduler::state::Outcome;

impl Core {
    /// Records the parents of a new (or restored) job and blocks its tasks that must
    /// wait. Parents not in memory have ended: done ones hold nothing back, others fail
    /// the job's waiting tasks.
    pub(super) fn link_parents(&mut self, job_id: JobId, parents: &[(JobId, ParentState)]) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let depends_on = job.spec.settings.depends_on.clone();
        let mut failed = None;
        for parent in depends_on {
            if self.jobs.contains_key(&parent) && parent != job_id {
                self.dependents.entry(parent).or_default().insert(job_id);
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.waiting_on.insert(parent);
                }
                continue;
            }
            let said = parents
                .iter()
                .find(|(id, _)| *id == parent)
                .map(|(_, state)| *state);
            let end = match (self.recent_ends.get(&parent), said) {
                (Some(end), _) => Some(*end),
                (None, Some(ParentState::Ended(end))) => Some(end),
                (None, Some(ParentState::Gone)) => None,
                // Unfinished when checked and not in memory now: it ended in between
                // and long enough ago to be forgotten, which cannot happen within one
                // submission; treat it as gone rather than wait forever.
                (None, Some(ParentState::Unfinished)) | (None, None) => None,
            };
            match end {
                Some(WorkState::Done) => {}
                Some(end) => {
                    failed.get_or_insert(format!("depends on job {parent}, which {}", ended(end)));
                }
                None => {
                    failed.get_or_insert(format!("depends on job {parent}, which was deleted"));
                }
            }
        }
        if let Some(reason) = failed {
            self.fail_waiting(job_id, &reason);
            return;
        }
        self.reblock(job_id);
    }

    /// Moves every waiting task of a job to blocked or queued as its dependencies say
    /// (paused and cancelled jobs keep their tasks where they are).
    pub(super) fn reblock(&mut self, job_id: JobId) {
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if job.waiting_on.is_empty() && job.counts().blocked == 0 {
            return;
        }
        let ids = job.ids_in(&[WorkState::Queued, WorkState::Blocked]);
        let mut moves = Vec::new();
        for id in ids {
            let ready = self.frames_ready_for(job_id, id);
            let Some(job) = self.jobs.get(&job_id) else {
                return;
            };
            let target = job.waiting_state(ready);
            if job.task(id).is_some_and(|t| t.state != target) {
                moves.push((id, target));
            }
        }
        self.apply_moves(job_id, moves);
    }

    /// Sets states and records rows; one bulk write when every task of the job moves
    /// the same way from the same state.
    pub(super) fn apply_moves(&mut self, job_id: JobId, moves: Vec<(TaskId, WorkState)>) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if moves.is_empty() {
            return;
        }
        let from = job.task(moves[0].0).map(|t| t.state);
        let to = moves[0].1;
        let uniform = moves.len() > 64
            && moves
                .iter()
                .all(|(id, target)| *target == to && job.task(*id).map(|t| t.state) == from)
            && from.is_some_and(|from| job.counts().get(from) == moves.len() as u64);
        for (id, target) in &moves {
            job.set_state(*id, *target);
        }
        if let (true, Some(from)) = (uniform, from) {
            self.writes
                .push(Write::Bulk(crate::store::records::BulkWrite::TaskStates {
                    job_id,
                    from: vec![from],
                    to,
                    reset: false,
                }));
        } else {
            for (id, _) in &moves {
                self.writes
                    .push(Write::Task(task_row(job, *id, None, None)));
            }
        }
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
    }

    /// Whether the frames of a task of `job_id` may run as far as dependencies go.
    pub(super) fn frames_ready_for(&self, job_id: JobId, task_id: TaskId) -> bool {
        let Some(job) = self.jobs.get(&job_id) else {
            return true;
        };
        if job.waiting_on.is_empty() {
            return true;
        }
        if !job.spec.settings.depends_per_frame {
            return false;
        }
        let Some(task) = job.task(task_id) else {
            return true;
        };
        job.waiting_on.iter().all(|parent| {
            self.jobs
                .get(parent)
                .is_none_or(|p| p.frames_done(&task.frames))
        })
    }

    /// A task of `parent_id` is done: release the frames of per-frame dependents it held.
    pub(super) fn frames_done(&mut self, parent_id: JobId, task_id: TaskId) {
        let Some(children) = self.dependents.get(&parent_id).cloned() else {
            return;
        };
        let Some(frames) = self
            .jobs
            .get(&parent_id)
            .and_then(|p| p.task(task_id))
            .map(|t| t.frames)
        else {
            return;
        };
        for child_id in children {
            let Some(child) = self.jobs.get(&child_id) else {
                continue;
            };
            if !child.spec.settings.depends_per_frame {
                continue;
            }
            let mut candidates = Vec::new();
            let step = frames.step.max(1);
            let mut frame = frames.start;
            while frame <= frames.end {
                if let Some(id) = child.tasks_with_frame(frame)
                    && child
                        .task(id)
                        .is_some_and(|t| t.state == WorkState::Blocked)
                    && !candidates.contains(&id)
                {
                    candidates.push(id);
                }
                frame += step;
            }
            let mut moves = Vec::new();
            for id in candidates {
                if self.frames_ready_for(child_id, id) {
                    let target = child.waiting_state(true);
                    moves.push((id, target));
                }
            }
            self.apply_moves(child_id, moves);
        }
        self.dispatch();
    }

    /// `parent_id` ended in `end`: its dependents stop waiting for it, or fail.
    pub(super) fn parent_ended(&mut self, parent_id: JobId, end: WorkState, at: i64) {
        let Some(children) = self.dependents.remove(&parent_id) else {
            return;
        };
        for child_id in children {
            if let Some(child) = self.jobs.get_mut(&child_id) {
                child.waiting_on.remove(&parent_id);
            }
            if end == WorkState::Done {
                self.reblock(child_id);
            } else {
                let reason = format!("depends on job {parent_id}, which {}", ended(end));
                self.fail_waiting(child_id, &reason);
            }
            self.finish_job_if_done(child_id, at);
        }
        self.dispatch();
    }

    /// A parent was deleted: its dependents fail.
    pub(super) fn parent_deleted(&mut self, parent_id: JobId, at: i64) {
        let Some(children) = self.dependents.remove(&parent_id) else {
            return;
        };
        for child_id in children {
            if let Some(child) = self.jobs.get_mut(&child_id) {
                child.waiting_on.remove(&parent_id);
            }
            let reason = format!("depends on job {parent_id}, which was deleted");
            self.fail_waiting(child_id, &reason);
            self.finish_job_if_done(child_id, at);
        }
    }

    /// Fails a job's blocked tasks (and, for a whole-job dependency, its queued ones)
    /// with `reason`.
    fn fail_waiting(&mut self, job_id: JobId, reason: &str) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let states: &[WorkState] = if job.spec.settings.depends_per_frame {
            &[WorkState::Blocked]
        } else {
            &[WorkState::Blocked, WorkState::Queued, WorkState::Paused]
        };
        let ids = job.ids_in(states);
        let at = crate::store::records::now_ms();
        for id in ids {
            if let Some(task) = job.task_mut(id) {
                task.last = Some(Box::new(Outcome {
                    exit_code: None,
                    error: Some(reason.to_string()),
                }));
            }
            job.set_state(id, WorkState::Failed);
            self.writes
                .push(Write::Task(task_row(job, id, None, Some(at))));
        }
        self.dirty_jobs.insert(job_id);
        self.refresh_ready(job_id);
        self.finish_job_if_done(job_id, at);
    }
}

/// How a parent's end reads in a reason.
fn ended(end: WorkState) -> &'static str {
    match end {
        WorkState::Cancelled => "was cancelled",
        WorkState::Done => "is done",
        _ => "failed",
    }
}
