//! Rebuilding the core from the store at startup.

use std::collections::HashMap;
use std::sync::Arc;

use furrow_protocol::{JobId, TaskRef, WorkState};

use super::{Core, Effect, ParentState};
use crate::scheduler::agents::Reservation;
use crate::scheduler::queues::{Queue, Queues};
use crate::scheduler::state::{Job, Outcome, Run, Task};
use crate::scheduler::types::{Control, JobSpec};
use crate::store::records::LoadedTask;

/// A stored unfinished job for [`Core::load`].
#[derive(Debug, Clone)]
pub struct LoadedJob {
    /// Its settings.
    pub spec: JobSpec,
    /// Paused or cancelled.
    pub control: Control,
    /// Failures per agent.
    pub failures_on: Vec<(uuid::Uuid, u32)>,
}

impl Core {
    /// Restores the queues, the unfinished jobs and every task of theirs after a
    /// restart (`tasks` in id order). Running tasks stay with their agents, which are
    /// offline until they register again (or are declared lost). `ended` says how the
    /// finished parents of these jobs ended.
    pub fn load(
        &mut self,
        queues: Vec<Queue>,
        jobs: Vec<LoadedJob>,
        tasks: Vec<LoadedTask>,
        ended: &HashMap<JobId, WorkState>,
    ) {
        self.queues = Queues::new(queues);
        let mut by_job: HashMap<JobId, Vec<LoadedTask>> = HashMap::new();
        for task in tasks {
            by_job.entry(task.job_id).or_default().push(task);
        }
        let mut ids = Vec::new();
        for loaded in jobs {
            let id = loaded.spec.id;
            let mut tasks = by_job.remove(&id).unwrap_or_default();
            tasks.sort_unstable_by_key(|t| t.id);
            let Some(first) = tasks.first().map(|t| t.id) else {
                continue;
            };
            let contiguous = tasks
                .iter()
                .enumerate()
                .all(|(i, t)| t.id == first + i as i64);
            if !contiguous {
                tracing::error!(
                    job_id = id,
                    "stored tasks of a job are not contiguous; the job is not scheduled"
                );
                continue;
            }
            let needs = loaded.spec.needs.clone();
            let mut table = Vec::with_capacity(tasks.len());
            let mut runs = Vec::new();
            for t in &tasks {
                let mut task = Task::new(t.frames, t.state);
                task.attempt = t.attempt;
                task.failures = t.failures;
                task.set_ram_mb(t.ram_mb);
                if t.exit_code.is_some() || t.last_error.is_some() {
                    task.last = Some(Box::new(Outcome {
                        exit_code: t.exit_code,
                        error: t.last_error.clone(),
                    }));
                }
                match (t.state, t.agent) {
                    (WorkState::Running, Some(agent)) => {
                        task.run = Some(Box::new(Run {
                            agent,
                            started_at: t.started_at,
                            progress: 0.0,
                            stop: None,
                            gpus: t.gpus.clone(),
                        }));
                        runs.push((t.id, t.attempt, agent, t.gpus.clone()));
                    }
                    // Running without an agent cannot happen; treat it as queued.
                    (WorkState::Running, None) => task.state = WorkState::Queued,
                    _ => {}
                }
                table.push(task);
            }
            let ram_of: HashMap<_, _> = tasks.iter().map(|t| (t.id, t.ram_mb)).collect();
            let mut job = Job::new(Arc::new(loaded.spec), first, table, loaded.control);
            job.failures_on = loaded.failures_on.into_iter().collect();
            for (task_id, attempt, agent, gpus) in runs {
                *job.agents.entry(agent).or_default() += 1;
                self.running.insert(task_id, id);
                self.agents.assign(
                    agent,
                    task_id,
                    Reservation {
                        cpus: needs.cpus,
                        ram_mb: needs.ram_mb.max(ram_of.get(&task_id).copied().unwrap_or(0)),
                        gpus,
                    },
                );
                self.effects.push(Effect::OpenLog {
                    task: TaskRef { task_id, attempt },
                    job_id: id,
                    agent,
                    resumed: true,
                });
            }
            self.jobs.insert(id, job);
            ids.push(id);
        }
        for &id in &ids {
            let parents: Vec<(JobId, ParentState)> = self
                .jobs
                .get(&id)
                .map(|j| j.spec.settings.depends_on.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|p| {
                    let state = ended
                        .get(&p)
                        .map_or(ParentState::Gone, |s| ParentState::Ended(*s));
                    (p, state)
                })
                .collect();
            self.link_parents(id, &parents);
            self.refresh_ready(id);
            self.dirty_jobs.insert(id);
        }
        let now = crate::store::records::now_ms();
        for id in ids {
            self.finish_job_if_done(id, now);
        }
    }
}
