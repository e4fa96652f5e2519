//! The state table: every task of every unfinished job with its explicit state, and the
//! job's counts derived from those states in one place ([`Job::set_state`]).
//!
//! A job's tasks have consecutive ids in frame order (the store allocates them so), so a
//! job keeps them in a vector indexed by `id - first_task_id`; frame lookups for per-frame
//! dependencies are binary searches. Finished tasks stay until their job finishes (a
//! rerun or a dependent frame may need them); a finished job leaves memory.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use furrow_protocol::{BlockedAgent, FrameBatch, JobId, TaskCounts, TaskId, WorkState};
use uuid::Uuid;

use super::agents::AgentEntry;
use super::id_runs::IdRuns;
use super::types::{Control, JobSpec};

/// Why a running attempt was asked to stop, which decides where its task goes when the
/// attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The task ends cancelled.
    Cancel,
    /// The task waits again without a failure counted (pause with kill).
    Requeue,
    /// The task runs again from scratch (rerun of a running task).
    Rerun,
}

/// The attempt a running task is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Its agent.
    pub agent: Uuid,
    /// When its process started, ms.
    pub started_at: Option<i64>,
    /// Progress 0..1.
    pub progress: f32,
    /// Set once it was asked to stop.
    pub stop: Option<Stop>,
    /// GPUs it holds.
    pub gpus: Vec<u32>,
}

/// The outcome of a task's last finished attempt.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Error text.
    pub error: Option<String>,
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its frames.
    pub frames: FrameBatch,
    /// Its state.
    pub state: WorkState,
    /// Attempt of the last assignment (0 when never assigned).
    pub attempt: u32,
    /// Failed attempts.
    pub failures: u32,
    /// Outcome of the last finished attempt, when it said something.
    pub last: Option<Box<Outcome>>,
    /// The running attempt.
    pub run: Option<Box<Run>>,
    /// Memory limit raised after an attempt ran out, MiB (0: the job's). 32 bits (4 PiB)
    /// keep a task at 56 bytes: a million queued tasks are most of a master's memory.
    raised_ram_mb: u32,
}

impl Task {
    /// A task never assigned.
    pub fn new(frames: FrameBatch, state: WorkState) -> Self {
        Self {
            frames,
            state,
            attempt: 0,
            failures: 0,
            last: None,
            run: None,
            raised_ram_mb: 0,
        }
    }

    /// Memory limit raised after an attempt ran out, MiB (0: the job's).
    pub fn ram_mb(&self) -> u64 {
        u64::from(self.raised_ram_mb)
    }

    /// Raises (or resets, with 0) the task's memory limit.
    pub fn set_ram_mb(&mut self, ram_mb: u64) {
        self.raised_ram_mb = u32::try_from(ram_mb).unwrap_or(u32::MAX);
    }
}

/// One unfinished job.
#[derive(Debug)]
pub struct Job {
    /// Its settings.
    pub spec: Arc<JobSpec>,
    /// Paused or cancelled by request.
    pub control: Control,
    /// Id of `tasks[0]`.
    pub first_task_id: TaskId,
    /// Every task, by id.
    pub tasks: Vec<Task>,
    /// Tasks per state, kept by [`Job::set_state`].
    counts: TaskCounts,
    /// Queued tasks in frame order (as runs of ids: a fresh job is one entry), kept by
    /// [`Job::set_state`].
    queued: IdRuns,
    /// Failures per agent; an agent at `blocklist_after` gets no more tasks.
    pub failures_on: BTreeMap<Uuid, u32>,
    /// Running tasks per agent.
    pub agents: HashMap<Uuid, u32>,
    /// Parents not yet done.
    pub waiting_on: BTreeSet<JobId>,
    /// Whether each agent (at its offer's generation) meets the requirements: matching
    /// tags and version ranges once per agent, not once per decision.
    fits: RefCell<HashMap<Uuid, (u64, bool)>>,
    /// How long its successful attempts ran lately, in milliseconds (a moving average;
    /// none before the first one since the master started).
    run_ms: Option<f64>,
}

/// Tasks of a job whose attempts lately ran shorter than this go to agents ahead of a
/// free slot (see [`Job::pipelines`]).
pub const PIPELINE_BELOW_MS: f64 = 1_000.0;

impl Job {
    /// A job whose tasks all start in `state`.
    pub fn new(
        spec: Arc<JobSpec>,
        first_task_id: TaskId,
        tasks: Vec<Task>,
        control: Control,
    ) -> Self {
        let mut job = Self {
            spec,
            control,
            first_task_id,
            tasks: Vec::new(),
            counts: TaskCounts::default(),
            queued: IdRuns::new(),
            failures_on: BTreeMap::new(),
            agents: HashMap::new(),
            waiting_on: BTreeSet::new(),
            fits: RefCell::new(HashMap::new()),
            run_ms: None,
        };
        for (i, task) in tasks.iter().enumerate() {
            job.counts.add(task.state, 1);
            if task.state == WorkState::Queued {
                job.queued.insert(first_task_id + i as i64);
            }
        }
        job.tasks = tasks;
        job
    }

    /// Tasks per state.
    pub fn counts(&self) -> TaskCounts {
        self.counts
    }

    /// A successful attempt ran `ms` milliseconds.
    pub fn ran(&mut self, ms: i64) {
        let ms = ms.max(0) as f64;
        self.run_ms = Some(match self.run_ms {
            Some(average) => average + (ms - average) / 4.0,
            None => ms,
        });
    }

    /// Whether its next task may go to an agent whose slots are all busy, to wait there
    /// for the first one free: when its tasks lately took under [`PIPELINE_BELOW_MS`], a
    /// slot would otherwise idle for a round trip to the master after each of them,
    /// while a task that waits on an agent delays the job by at most one short task.
    pub fn pipelines(&self) -> bool {
        self.run_ms.is_some_and(|ms| ms < PIPELINE_BELOW_MS)
    }

    /// The id of the first queued task, in frame order.
    pub fn first_queued(&self) -> Option<TaskId> {
        self.queued.first()
    }

    /// The memory the next queued task reserves.
    pub fn next_ram_mb(&self) -> u64 {
        let raised = self
            .first_queued()
            .and_then(|id| self.task(id))
            .map_or(0, Task::ram_mb);
        raised.max(self.spec.needs.ram_mb)
    }

    /// Whether any task waits for an agent.
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    fn index(&self, id: TaskId) -> Option<usize> {
        let index = usize::try_from(id.checked_sub(self.first_task_id)?).ok()?;
        (index < self.tasks.len()).then_some(index)
    }

    /// A task by id.
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.index(id).map(|i| &self.tasks[i])
    }

    /// A task by id, to change anything but its state.
    pub fn task_mut(&mut self, id: TaskId) -> Option<&mut Task> {
        self.index(id).map(|i| &mut self.tasks[i])
    }

    /// Moves a task to `state`, keeping the counts and the queued index.
    pub fn set_state(&mut self, id: TaskId, state: WorkState) {
        let Some(index) = self.index(id) else {
            return;
        };
        let old = self.tasks[index].state;
        if old == state {
            return;
        }
        self.counts.sub(old, 1);
        self.counts.add(state, 1);
        if old == WorkState::Queued {
            self.queued.remove(id);
        }
        if state == WorkState::Queued {
            self.queued.insert(id);
        }
        self.tasks[index].state = state;
    }

    /// Ids of the tasks in one of `states`.
    pub fn ids_in(&self, states: &[WorkState]) -> Vec<TaskId> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| states.contains(&t.state))
            .map(|(i, _)| self.first_task_id + i as i64)
            .collect()
    }

    /// The state a task that is not running should wait in now.
    pub fn waiting_state(&self, frames_ready: bool) -> WorkState {
        match self.control {
            Control::Cancelled => WorkState::Cancelled,
            Control::Paused => WorkState::Paused,
            Control::Active if !frames_ready => WorkState::Blocked,
            Control::Active => WorkState::Queued,
        }
    }

    /// The tasks covering `frame` (tasks are in frame order and do not overlap).
    pub fn tasks_with_frame(&self, frame: i64) -> Option<TaskId> {
        let index = self.tasks.partition_point(|t| t.frames.end < frame);
        let task = self.tasks.get(index)?;
        let inside = task.frames.start <= frame
            && frame <= task.frames.end
            && (frame - task.frames.start) % task.frames.step.max(1) == 0;
        inside.then(|| self.first_task_id + index as i64)
    }

    /// Whether every frame of `frames` that this job renders is done.
    pub fn frames_done(&self, frames: &FrameBatch) -> bool {
        let step = frames.step.max(1);
        let mut frame = frames.start;
        // Batches are bounded (a task of the parent is looked up per frame), and the
        // frames of one task are few; a long batch stops at the first frame not done.
        while frame <= frames.end {
            if let Some(id) = self.tasks_with_frame(frame)
                && self.task(id).is_some_and(|t| t.state != WorkState::Done)
            {
                return false;
            }
            frame += step;
        }
        true
    }

    /// Whether the agent could run this job's tasks when idle (cached per offer).
    pub fn fits(&self, agent_id: Uuid, agent: &AgentEntry) -> bool {
        if let Some(&(generation, fits)) = self.fits.borrow().get(&agent_id)
            && generation == agent.generation
        {
            return fits;
        }
        let fits = self.spec.needs.fits(&agent.offer);
        self.fits
            .borrow_mut()
            .insert(agent_id, (agent.generation, fits));
        fits
    }

    /// Replaces the job's settings (and forgets matches made against the old ones).
    pub fn set_spec(&mut self, spec: Arc<JobSpec>) {
        self.spec = spec;
        self.fits.borrow_mut().clear();
    }

    /// Whether an agent is blocklisted for this job.
    pub fn blocklisted(&self, agent: Uuid) -> bool {
        let limit = self.spec.settings.blocklist_after;
        limit > 0 && self.failures_on.get(&agent).is_some_and(|&n| n >= limit)
    }

    /// The blocklisted agents.
    pub fn blocklist(&self) -> Vec<BlockedAgent> {
        let limit = self.spec.settings.blocklist_after;
        if limit == 0 {
            return Vec::new();
        }
        self.failures_on
            .iter()
            .filter(|&(_, &n)| n >= limit)
            .map(|(&agent, &failures)| BlockedAgent { agent, failures })
            .collect()
    }

    /// Whether nothing of the job can run any more.
    pub fn is_finished(&self) -> bool {
        self.counts.unfinished() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Arc<JobSpec> {
        Arc::new(crate::scheduler::core::tests::spec(1, 0, 0))
    }

    fn batch(start: i64, end: i64) -> FrameBatch {
        FrameBatch {
            start,
            end,
            step: 1,
        }
    }

    #[test]
    fn a_task_stays_small() {
        // A million queued tasks: 56 MB. Growing it is a decision, not an accident.
        assert!(
            std::mem::size_of::<Task>() <= 56,
            "{}",
            std::mem::size_of::<Task>()
        );
        let mut task = Task::new(batch(1, 1), WorkState::Queued);
        task.set_ram_mb(u64::MAX);
        assert_eq!(task.ram_mb(), u64::from(u32::MAX));
    }

    #[test]
    fn counts_follow_every_state_change() {
        let tasks = (1..=4)
            .map(|f| Task::new(batch(f, f), WorkState::Queued))
            .collect();
        let mut job = Job::new(spec(), 10, tasks, Control::Active);
        assert_eq!(job.counts().queued, 4);
        job.set_state(10, WorkState::Running);
        job.set_state(11, WorkState::Done);
        job.set_state(11, WorkState::Done);
        job.set_state(99, WorkState::Done);
        let c = job.counts();
        assert_eq!((c.queued, c.running, c.done), (2, 1, 1));
        assert_eq!(job.first_queued(), Some(12));
        assert_eq!(job.ids_in(&[WorkState::Queued]), vec![12, 13]);
        for id in 10..14 {
            job.set_state(id, WorkState::Done);
        }
        assert!(job.is_finished());
        assert!(!job.has_queued());
    }

    #[test]
    fn frames_are_found_by_binary_search() {
        let tasks = vec![
            Task::new(batch(1, 2), WorkState::Done),
            Task::new(batch(3, 4), WorkState::Queued),
            Task::new(
                FrameBatch {
                    start: 10,
                    end: 20,
                    step: 5,
                },
                WorkState::Done,
            ),
        ];
        let job = Job::new(spec(), 1, tasks, Control::Active);
        assert_eq!(job.tasks_with_frame(2), Some(1));
        assert_eq!(job.tasks_with_frame(4), Some(2));
        assert_eq!(job.tasks_with_frame(15), Some(3));
        assert_eq!(job.tasks_with_frame(12), None);
        assert_eq!(job.tasks_with_frame(99), None);
        assert!(job.frames_done(&batch(1, 2)));
        assert!(!job.frames_done(&batch(2, 3)));
        // Frames the parent does not render do not hold anything back.
        assert!(job.frames_done(&batch(5, 9)));
    }
}
