//! Rebuilding the core from the store at startup.

use std::collections::BTreeMap;
use std::sync::Arc;

use furrow_protocol::{JobId, TaskCounts, TaskRef, WorkState};

use super::{Core, Effect, JobEntry, JobSpec, Queued, Running};
use crate::store::records::LoadedTask;

impl Core {
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
                    self.slots.assign(agent, task.id);
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
}
