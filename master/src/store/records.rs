//! Rows handed to the store by the other actors, and rows read back.

use chrono::{DateTime, TimeZone, Utc};
use furrow_protocol::{
    FrameBatch, FrameRange, JobId, JobView, Json, TaskCounts, TaskId, WorkState,
};
use uuid::Uuid;

/// Milliseconds since the epoch of `at`.
pub fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The time `ms` milliseconds after the epoch (the epoch itself when out of range).
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    to_ms(Utc::now())
}

/// A validated job to insert with its tasks.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// Job-type parameters.
    pub params: serde_json::Value,
    /// Normalised frame specification.
    pub frames: String,
    /// Frames per task.
    pub batch: u32,
    /// Priority.
    pub priority: i32,
    /// Retries per task.
    pub retries: u32,
    /// Attempt time limit.
    pub timeout_secs: Option<u64>,
    /// The frame ranges, in the order given.
    pub ranges: Vec<FrameRange>,
    /// One entry per task, in frame order (the ranges cut into batches).
    pub batches: Vec<FrameBatch>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// Parameters.
    pub params: Json,
    /// Normalised frames.
    pub frames: String,
    /// Frames per task.
    pub batch: u32,
    /// Priority.
    pub priority: i32,
    /// Retries per task.
    pub retries: u32,
    /// Attempt time limit.
    pub timeout_secs: Option<u64>,
    /// Task counts.
    pub counts: TaskCounts,
    /// Submission time, ms.
    pub created_at: i64,
    /// Completion time, ms.
    pub finished_at: Option<i64>,
}

impl JobRecord {
    /// The API view of the job.
    pub fn view(&self) -> JobView {
        JobView {
            id: self.id,
            title: self.title.clone(),
            jobtype: self.jobtype.clone(),
            params: self.params.clone(),
            frames: self.frames.clone(),
            batch: self.batch,
            priority: self.priority,
            retries: self.retries,
            timeout_secs: self.timeout_secs,
            state: self.counts.job_state(),
            task_counts: self.counts,
            created_at: from_ms(self.created_at),
            finished_at: self.finished_at.map(from_ms),
        }
    }
}

/// The mutable columns of a task after a transition. The latest row of a task wins within
/// a group commit, so each row carries the whole mutable state, never a delta.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    /// Task id.
    pub id: TaskId,
    /// State.
    pub state: WorkState,
    /// Agent of the current attempt.
    pub agent: Option<Uuid>,
    /// Current attempt.
    pub attempt: u32,
    /// Failed attempts.
    pub failures: u32,
    /// Exit code of the last finished attempt.
    pub exit_code: Option<i32>,
    /// Progress.
    pub progress: f32,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Start of the current attempt, ms.
    pub started_at: Option<i64>,
    /// Completion, ms.
    pub finished_at: Option<i64>,
}

/// A job's counts after transitions (a snapshot, the latest wins).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobRow {
    /// Job id.
    pub id: JobId,
    /// Counts.
    pub counts: TaskCounts,
    /// Completion time once finished, ms.
    pub finished_at: Option<i64>,
}

/// An agent's identity and resources (persisted on registration and state changes).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    /// Agent id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Hostname.
    pub hostname: String,
    /// OS.
    pub os: String,
    /// CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub ram_mb: u64,
    /// GPUs as JSON.
    pub gpus: String,
    /// Tags as JSON.
    pub tags: String,
    /// Slots.
    pub slots: u32,
    /// Software version.
    pub version: String,
    /// Last seen, ms.
    pub last_seen: i64,
}

/// An entry of the task log index.
#[derive(Debug, Clone, PartialEq)]
pub struct LogIndexRow {
    /// Task.
    pub task_id: TaskId,
    /// Attempt.
    pub attempt: u32,
    /// Job.
    pub job_id: JobId,
    /// Path relative to the data directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// An unfinished task loaded at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTask {
    /// Task id.
    pub id: TaskId,
    /// Job id.
    pub job_id: JobId,
    /// Frames.
    pub frames: FrameBatch,
    /// State (queued, running or paused).
    pub state: WorkState,
    /// Agent of a running task.
    pub agent: Option<Uuid>,
    /// Current attempt.
    pub attempt: u32,
    /// Failures so far.
    pub failures: u32,
}
