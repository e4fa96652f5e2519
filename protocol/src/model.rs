//! The farm's records as clients see them, shared by the REST API (JSON) and the wire
//! protocol (bincode). Field names are the REST API's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Json;

/// Database id of a job.
pub type JobId = i64;
/// Database id of a task.
pub type TaskId = i64;

/// Identifies one attempt of one task. Every task message carries it; the master ignores
/// messages about an attempt that is no longer current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskRef {
    /// The task.
    pub task_id: TaskId,
    /// Its attempt number, starting at 1 and bumped on every (re)assignment.
    pub attempt: u32,
}

/// State of a job or task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkState {
    /// Waiting for an agent.
    Queued,
    /// Assigned to an agent (which may not have started it yet).
    Running,
    /// Finished successfully.
    Done,
    /// Finished unsuccessfully and will not be retried.
    Failed,
    /// Held back from scheduling.
    Paused,
}

impl WorkState {
    /// The lower-case name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkState::Queued => "queued",
            WorkState::Running => "running",
            WorkState::Done => "done",
            WorkState::Failed => "failed",
            WorkState::Paused => "paused",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "queued" => WorkState::Queued,
            "running" => WorkState::Running,
            "done" => WorkState::Done,
            "failed" => WorkState::Failed,
            "paused" => WorkState::Paused,
            _ => return None,
        })
    }

    /// Whether the state is final.
    pub fn is_finished(self) -> bool {
        matches!(self, WorkState::Done | WorkState::Failed)
    }
}

/// A job as submitted through `POST /api/v1/jobs/` or [`crate::ClientRequest::SubmitJob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    /// Human-readable title.
    pub title: String,
    /// Job type that runs the tasks; `command` by default.
    #[serde(default = "default_jobtype")]
    pub jobtype: String,
    /// Job-type parameters; for `command`: [`CommandParams`].
    #[serde(default)]
    pub params: Json,
    /// Frame specification: `1-100`, `1-100:5`, `1-10,20-30`.
    pub frames: String,
    /// Frames per task (a batch runs once with its start and end).
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// How often a failed task is retried before it counts as failed.
    #[serde(default)]
    pub retries: u32,
    /// Time limit of one task attempt in seconds; the agent kills it past that.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn default_jobtype() -> String {
    "command".to_string()
}

fn default_batch() -> u32 {
    1
}

/// Parameters of the built-in `command` job type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The argv to run; `{frame}`, `{start}`, `{end}` and `{step}` are substituted in
    /// every argument.
    pub command: Vec<String>,
    /// Run through `/bin/sh -c` with the arguments joined by spaces, instead of directly.
    #[serde(default)]
    pub shell: bool,
    /// Extra environment variables for the process.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Per-state task counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Tasks waiting for an agent.
    pub queued: u64,
    /// Tasks assigned to agents.
    pub running: u64,
    /// Tasks finished successfully.
    pub done: u64,
    /// Tasks that failed for good.
    pub failed: u64,
    /// Tasks held back.
    pub paused: u64,
}

impl TaskCounts {
    /// Total number of tasks.
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.done + self.failed + self.paused
    }

    /// Adds one task in `state`.
    pub fn add(&mut self, state: WorkState, n: u64) {
        match state {
            WorkState::Queued => self.queued += n,
            WorkState::Running => self.running += n,
            WorkState::Done => self.done += n,
            WorkState::Failed => self.failed += n,
            WorkState::Paused => self.paused += n,
        }
    }

    /// The job state these counts imply: failed once nothing can run any more and a task
    /// failed; done when all are done; running while any runs or some finished; paused
    /// when all unfinished ones are paused; queued otherwise.
    pub fn job_state(&self) -> WorkState {
        let unfinished = self.queued + self.running + self.paused;
        if unfinished == 0 {
            if self.failed > 0 {
                WorkState::Failed
            } else {
                WorkState::Done
            }
        } else if self.running > 0 {
            WorkState::Running
        } else if self.queued == 0 {
            WorkState::Paused
        } else if self.done + self.failed > 0 {
            WorkState::Running
        } else {
            WorkState::Queued
        }
    }
}

/// A job as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub id: JobId,
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// Job-type parameters.
    pub params: Json,
    /// Frame specification as normalised by the master.
    pub frames: String,
    /// Frames per task.
    pub batch: u32,
    /// Priority (higher first).
    pub priority: i32,
    /// Retries per task.
    pub retries: u32,
    /// Time limit of one attempt in seconds.
    pub timeout_secs: Option<u64>,
    /// Overall state derived from the task counts (or paused by request).
    pub state: WorkState,
    /// Tasks per state.
    pub task_counts: TaskCounts,
    /// When the job was submitted.
    pub created_at: DateTime<Utc>,
    /// When the last of its tasks finished, once it has finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Task id.
    pub id: TaskId,
    /// Job id.
    pub job_id: JobId,
    /// First frame of the task.
    pub frame: i64,
    /// Last frame of the task (equal to `frame` unless batched).
    pub frame_end: i64,
    /// Frame step.
    pub step: i64,
    /// State.
    pub state: WorkState,
    /// Agent running or having run the current attempt.
    pub agent: Option<Uuid>,
    /// Current attempt (0 until first assigned).
    pub attempt: u32,
    /// Exit code of the last finished attempt.
    pub exit_code: Option<i32>,
    /// Progress of the current attempt, 0.0 to 1.0.
    pub progress: f32,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the task was created.
    pub created_at: DateTime<Utc>,
    /// When the current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Connection state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Connected and heartbeating.
    Online,
    /// Not connected.
    Offline,
}

/// A GPU of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Model name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// An agent as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// Agent id (stable across restarts of the agent).
    pub id: Uuid,
    /// Agent name (the hostname unless set).
    pub name: String,
    /// Hostname.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in MiB.
    pub ram_mb: u64,
    /// Free memory in MiB at the last heartbeat.
    pub free_ram_mb: u64,
    /// GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Tags.
    pub tags: Vec<String>,
    /// Task slots.
    pub slots: u32,
    /// Agent software version.
    pub version: String,
    /// Connection state.
    pub state: AgentState,
    /// One-minute load average at the last heartbeat.
    pub load: f32,
    /// Tasks the agent runs now.
    pub running: Vec<TaskRef>,
    /// Last time the master heard from it.
    pub last_seen: DateTime<Utc>,
}

/// One page of a collection, with the size of the whole collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// Items of this page.
    pub items: Vec<T>,
    /// Number of items in the whole collection.
    pub total: u64,
}

/// A piece of a task's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The attempt the log belongs to.
    pub attempt: u32,
    /// Log text from the requested offset.
    pub text: String,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// Whether the attempt has finished (no more text will come).
    pub complete: bool,
}

/// Health of the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    /// `ok` when the master serves requests.
    pub status: String,
    /// Software version.
    pub version: String,
    /// Which database backend is in use (`sqlite` or `postgres`).
    pub database: String,
    /// Agents online.
    pub agents_online: u64,
    /// Tasks queued in the scheduler.
    pub tasks_queued: u64,
    /// Tasks running.
    pub tasks_running: u64,
}
