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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskRef {
    /// The task.
    pub task_id: TaskId,
    /// Its attempt number, starting at 1 and bumped on every (re)assignment.
    pub attempt: u32,
}

/// State of a job or task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Waiting for the jobs (or frames) it depends on.
    Blocked,
    /// Stopped by request; will not run unless rerun.
    Cancelled,
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
            WorkState::Blocked => "blocked",
            WorkState::Cancelled => "cancelled",
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
            "blocked" => WorkState::Blocked,
            "cancelled" => WorkState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the state is final.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            WorkState::Done | WorkState::Failed | WorkState::Cancelled
        )
    }
}

/// A job as submitted through `POST /api/v1/jobs/` or [`crate::ClientRequest::SubmitJob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    /// Human-readable title.
    pub title: String,
    /// Job type that runs the tasks; `command` by default.
    #[serde(default = "default_jobtype")]
    pub jobtype: String,
    /// Version of the job type; its newest when not given.
    #[serde(default)]
    pub jobtype_version: Option<u32>,
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
    /// Share of its queue's slots relative to the other jobs there (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Queue path such as `studio/lighting`; the root queue when empty or `/`.
    #[serde(default)]
    pub queue: String,
    /// Agents the job gets before jobs without a minimum.
    #[serde(default)]
    pub min_agents: u32,
    /// Most agents running the job's tasks at once.
    #[serde(default)]
    pub max_agents: Option<u32>,
    /// What an agent must offer to run one task.
    #[serde(default)]
    pub requirements: Requirements,
    /// An attempt with no output and no progress for this long is killed and counts as
    /// failed.
    #[serde(default)]
    pub stall_timeout_secs: Option<u64>,
    /// Jobs that must be done before this one starts.
    #[serde(default)]
    pub depends_on: Vec<JobId>,
    /// Frame N waits only for frame N of the jobs in `depends_on`.
    #[serde(default)]
    pub depends_per_frame: bool,
    /// Free text.
    #[serde(default)]
    pub notes: String,
    /// Who submitted the job.
    #[serde(default)]
    pub user: String,
    /// An agent that failed this many tasks of the job gets no more of them (0: never).
    #[serde(default = "default_blocklist_after")]
    pub blocklist_after: u32,
    /// Environment variables (in `params.env`) whose values are secret: stored encrypted,
    /// shown to nobody, sent only to the agent that runs a task. Names that look secret
    /// (`*_PASSWORD`, `*_TOKEN`, `*_KEY`, `*SECRET*`...) are secret without being listed.
    #[serde(default)]
    pub secret_env: Vec<String>,
}

impl JobSubmission {
    /// A submission with the defaults of every optional field.
    pub fn new(title: impl Into<String>, params: Json, frames: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            jobtype: default_jobtype(),
            jobtype_version: None,
            params,
            frames: frames.into(),
            batch: default_batch(),
            priority: 0,
            retries: 0,
            timeout_secs: None,
            weight: default_weight(),
            queue: String::new(),
            min_agents: 0,
            max_agents: None,
            requirements: Requirements::default(),
            stall_timeout_secs: None,
            depends_on: Vec::new(),
            depends_per_frame: false,
            notes: String::new(),
            user: String::new(),
            blocklist_after: default_blocklist_after(),
            secret_env: Vec::new(),
        }
    }
}

fn default_weight() -> u32 {
    1
}

fn default_blocklist_after() -> u32 {
    3
}

/// What one task of a job needs from an agent. CPUs, memory and GPUs are reserved on the
/// agent while the task runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Logical CPUs reserved per task.
    #[serde(default)]
    pub cpus: u32,
    /// Memory reserved per task in MiB; a task using more is killed and retried with more.
    #[serde(default)]
    pub ram_mb: u64,
    /// GPUs given to each task (named in `CUDA_VISIBLE_DEVICES`).
    #[serde(default)]
    pub gpus: u32,
    /// Tags the agent must have; `!tag` means it must not have it.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Software the agent must have, with a version range: `{"blender": ">=3.0, <5"}`.
    #[serde(default)]
    pub software: std::collections::BTreeMap<String, String>,
}

impl Requirements {
    /// Whether nothing is required.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn default_jobtype() -> String {
    "command".to_string()
}

fn default_batch() -> u32 {
    1
}

/// Parameters of the built-in `command` job type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// A deployed app to run in: its current release directory and its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// Per-state task counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Tasks waiting for their dependencies.
    pub blocked: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
}

impl TaskCounts {
    /// Total number of tasks.
    pub fn total(&self) -> u64 {
        self.queued
            + self.running
            + self.done
            + self.failed
            + self.paused
            + self.blocked
            + self.cancelled
    }

    /// Tasks that may still run.
    pub fn unfinished(&self) -> u64 {
        self.queued + self.running + self.paused + self.blocked
    }

    /// The count of tasks in `state`.
    pub fn get(&self, state: WorkState) -> u64 {
        match state {
            WorkState::Queued => self.queued,
            WorkState::Running => self.running,
            WorkState::Done => self.done,
            WorkState::Failed => self.failed,
            WorkState::Paused => self.paused,
            WorkState::Blocked => self.blocked,
            WorkState::Cancelled => self.cancelled,
        }
    }

    /// Adds one task in `state`.
    pub fn add(&mut self, state: WorkState, n: u64) {
        match state {
            WorkState::Queued => self.queued += n,
            WorkState::Running => self.running += n,
            WorkState::Done => self.done += n,
            WorkState::Failed => self.failed += n,
            WorkState::Paused => self.paused += n,
            WorkState::Blocked => self.blocked += n,
            WorkState::Cancelled => self.cancelled += n,
        }
    }

    /// Removes `n` tasks in `state` (never below zero).
    pub fn sub(&mut self, state: WorkState, n: u64) {
        let count = match state {
            WorkState::Queued => &mut self.queued,
            WorkState::Running => &mut self.running,
            WorkState::Done => &mut self.done,
            WorkState::Failed => &mut self.failed,
            WorkState::Paused => &mut self.paused,
            WorkState::Blocked => &mut self.blocked,
            WorkState::Cancelled => &mut self.cancelled,
        };
        debug_assert!(*count >= n, "count of {state:?} below zero");
        *count = count.saturating_sub(n);
    }

    /// The job state these counts imply: once nothing can run any more, cancelled if a
    /// task was cancelled, failed if one failed, else done; while work remains, running
    /// while any runs or some finished, paused when all unfinished ones are paused,
    /// blocked when all wait for dependencies; queued otherwise.
    pub fn job_state(&self) -> WorkState {
        if self.unfinished() == 0 {
            if self.cancelled > 0 {
                WorkState::Cancelled
            } else if self.failed > 0 {
                WorkState::Failed
            } else {
                WorkState::Done
            }
        } else if self.running > 0 {
            WorkState::Running
        } else if self.paused > 0 && self.queued == 0 {
            WorkState::Paused
        } else if self.blocked > 0 && self.queued == 0 {
            WorkState::Blocked
        } else if self.done + self.failed > 0 {
            WorkState::Running
        } else {
            WorkState::Queued
        }
    }
}

/// A job as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// Job id.
    pub id: JobId,
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// The version of the job type the job was submitted with.
    pub jobtype_version: u32,
    /// Job-type parameters (with the job type's defaults filled in).
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
    /// Share within its queue relative to the other jobs there.
    pub weight: u32,
    /// Queue path (`/` is the root queue).
    pub queue: String,
    /// Agents the job gets first.
    pub min_agents: u32,
    /// Most agents at once.
    pub max_agents: Option<u32>,
    /// What each task needs from an agent.
    pub requirements: Requirements,
    /// Stall timeout of an attempt in seconds.
    pub stall_timeout_secs: Option<u64>,
    /// Jobs this one waits for.
    pub depends_on: Vec<JobId>,
    /// Whether frame N waits only for frame N of those jobs.
    pub depends_per_frame: bool,
    /// Free text.
    pub notes: String,
    /// Who submitted it.
    pub user: String,
    /// Failures of its tasks on one agent after which that agent gets no more of them.
    pub blocklist_after: u32,
    /// Agents that get no more of this job's tasks, with their failure counts.
    pub blocklist: Vec<BlockedAgent>,
    /// Whether the job is paused by request (running tasks may still finish).
    pub paused: bool,
    /// Overall state derived from the task counts and the job's pause or cancel.
    pub state: WorkState,
    /// Tasks per state.
    pub task_counts: TaskCounts,
    /// When the job was submitted.
    pub created_at: DateTime<Utc>,
    /// When the last of its tasks finished, once it has finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// An agent that gets no more tasks of a job because too many failed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockedAgent {
    /// The agent.
    pub agent: Uuid,
    /// Tasks of the job that failed there.
    pub failures: u32,
}

/// A task as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// One attempt of a task: where and when it ran and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    /// Attempt number.
    pub attempt: u32,
    /// The agent it ran on.
    pub agent: Option<Uuid>,
    /// When its process started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (or was taken back).
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// How it ended: `done`, `failed`, `cancelled` or `requeued`.
    pub outcome: String,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Connection state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Connected and heartbeating.
    Online,
    /// Not connected.
    Offline,
}

/// A GPU of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuInfo {
    /// Device index (what `CUDA_VISIBLE_DEVICES` names).
    #[serde(default)]
    pub index: u32,
    /// Model name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// An agent as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Tags (the agent's own, or those set through the API).
    pub tags: Vec<String>,
    /// Software the agent offers, name to version.
    pub software: std::collections::BTreeMap<String, String>,
    /// Task slots.
    pub slots: u32,
    /// Agent software version.
    pub version: String,
    /// Connection state.
    pub state: AgentState,
    /// Whether it may get new tasks (disabling lets running tasks finish).
    pub enabled: bool,
    /// Capacity not reserved by running tasks.
    pub free: Capacity,
    /// One-minute load average at the last heartbeat.
    pub load: f32,
    /// Tasks the agent runs now.
    pub running: Vec<TaskRef>,
    /// Last time the master heard from it.
    pub last_seen: DateTime<Utc>,
    /// The web server it mounts deployed apps on, if it runs one.
    pub webserver: Option<crate::apps::WebServerView>,
}

/// Resources of an agent not reserved by running tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capacity {
    /// Free slots.
    pub slots: u32,
    /// Free logical CPUs.
    pub cpus: u32,
    /// Free memory in MiB.
    pub ram_mb: u64,
    /// Indices of free GPUs.
    pub gpus: Vec<u32>,
}

/// Changes to an agent through `PATCH /api/v1/agents/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    /// Enable or disable it (sticky across restarts; running tasks finish).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Replace its tags: from then on they take the place of the tags the agent
    /// announces, across restarts of either side.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// An action on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    /// Hold queued tasks back; running ones finish (or, with `kill`, go back to the queue).
    Pause,
    /// Release a paused job.
    Resume,
    /// Kill running tasks; the job ends `cancelled`.
    Cancel,
    /// Run every task again.
    Rerun,
    /// Run the failed and cancelled tasks again.
    RerunFailed,
    /// Forget the job's blocklisted agents.
    ClearBlocklist,
}

impl JobAction {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Pause => "pause",
            JobAction::Resume => "resume",
            JobAction::Cancel => "cancel",
            JobAction::Rerun => "rerun",
            JobAction::RerunFailed => "rerun_failed",
            JobAction::ClearBlocklist => "clear_blocklist",
        }
    }
}

/// `POST /api/v1/jobs/{id}/actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobActionRequest {
    /// The action.
    pub action: JobAction,
    /// With `pause`: stop running tasks and queue them again (no failure counted).
    #[serde(default)]
    pub kill: bool,
}

/// `POST /api/v1/jobs/actions`: one action on many jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobsActionRequest {
    /// The action.
    pub action: JobAction,
    /// The jobs.
    pub ids: Vec<JobId>,
    /// As in [`JobActionRequest`].
    #[serde(default)]
    pub kill: bool,
}

/// An action on one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    /// Run it again (killing the current attempt if it runs).
    Rerun,
    /// Stop it; it ends `cancelled`.
    Cancel,
}

/// `POST /api/v1/jobs/{id}/tasks/{task_id}/actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskActionRequest {
    /// The action.
    pub action: TaskAction,
}

/// Changes to a job through `PATCH /api/v1/jobs/{id}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobPatch {
    /// New priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// New weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// New queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// New minimum of agents.
    #[serde(default)]
    pub min_agents: Option<u32>,
    /// New maximum of agents (0 removes the limit).
    #[serde(default)]
    pub max_agents: Option<u32>,
    /// New requirements (for tasks not yet running).
    #[serde(default)]
    pub requirements: Option<Requirements>,
    /// New frame range; only while no task has run.
    #[serde(default)]
    pub frames: Option<String>,
    /// New notes.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Result of one job's action in a bulk request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionOutcome {
    /// The job.
    pub id: JobId,
    /// Whether the action was applied.
    pub ok: bool,
    /// Why not, when it was not.
    pub error: Option<String>,
}

/// Why a job's tasks wait: `GET /api/v1/jobs/{id}/why`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhyView {
    /// The job.
    pub job_id: JobId,
    /// Its state.
    pub state: WorkState,
    /// Tasks waiting (queued, blocked or paused).
    pub waiting: u64,
    /// Each reason, with numbers.
    pub reasons: Vec<String>,
    /// Whether no agent known to the farm can ever run its tasks as they stand.
    pub never: bool,
}

/// A queue: a node of the queue tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueView {
    /// Full path (`/` for the root, `/studio/lighting` below it).
    pub path: String,
    /// Last part of the path.
    pub name: String,
    /// Path of the parent (`None` for the root).
    pub parent: Option<String>,
    /// Higher runs first, before fair share.
    pub priority: i32,
    /// Share of running slots relative to its siblings.
    pub weight: u32,
    /// Agents the queue gets before queues above their minimum.
    pub min_agents: u32,
    /// Most agents its jobs may use at once (`None`: no limit).
    pub max_agents: Option<u32>,
    /// Tasks running in it and below it.
    pub running: u64,
    /// Tasks waiting in it and below it.
    pub queued: u64,
    /// Its part of all running tasks (0.0 to 1.0).
    pub share: f64,
    /// Unfinished jobs directly in it.
    pub jobs: u64,
}

/// `POST /api/v1/queues/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Parent path; the root when absent.
    #[serde(default)]
    pub parent: Option<String>,
    /// Priority.
    #[serde(default)]
    pub priority: i32,
    /// Weight (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Minimum of agents.
    #[serde(default)]
    pub min_agents: u32,
    /// Maximum of agents.
    #[serde(default)]
    pub max_agents: Option<u32>,
}

/// `PATCH /api/v1/queues/{path}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    /// New priority.
    #[serde(default)]
    pub priority: Option<i32>,
    /// New weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// New minimum.
    #[serde(default)]
    pub min_agents: Option<u32>,
    /// New maximum (0 removes the limit).
    #[serde(default)]
    pub max_agents: Option<u32>,
}

/// One page of a collection, with the size of the whole collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// Items of this page.
    pub items: Vec<T>,
    /// Number of items in the whole collection.
    pub total: u64,
}

/// A piece of a task's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthView {
    /// `ok` when every part of the master answers and the database writes; `degraded`
    /// otherwise, with the reasons in `problems`.
    pub status: String,
    /// What is wrong, one line each (empty when `ok`): a database that cannot write
    /// (submissions are refused meanwhile, nothing acknowledged is lost), an actor that
    /// does not answer.
    pub problems: Vec<String>,
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

/// A parameter of a job type, as `GET /api/v1/jobtypes/` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamView {
    /// Its name in `params`.
    pub name: String,
    /// `string`, `int`, `float`, `bool`, `path`, `enum`, `map` or `list<TYPE>`.
    pub r#type: String,
    /// Whether a job must give it.
    pub required: bool,
    /// Its value when a job gives none.
    pub default: Option<Json>,
    /// Smallest number (or length) accepted.
    pub min: Option<f64>,
    /// Largest number (or length) accepted.
    pub max: Option<f64>,
    /// The words an `enum` accepts (empty for other types).
    #[serde(default)]
    pub values: Vec<String>,
    /// What it is for.
    pub description: String,
}

/// A job type (built in, or defined by a TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobTypeView {
    /// Name jobs refer to it by.
    pub name: String,
    /// Version; a job keeps the version it was submitted with.
    pub version: u32,
    /// What it does.
    pub description: String,
    /// Built into Furrow (no definition file).
    pub builtin: bool,
    /// A job runs its whole frame range as one task.
    pub single_task: bool,
    /// Its parameters.
    pub parameters: Vec<ParamView>,
    /// Software an agent must offer (name → version range).
    pub software: std::collections::BTreeMap<String, String>,
    /// The definition file (declarative types).
    pub source: Option<String>,
}

/// A job-type definition file, as `POST /api/v1/jobtypes/` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobTypeSource {
    /// The TOML text of the definition.
    pub source: String,
}

/// A file a task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputFile {
    /// Its path on the agent (after path mapping).
    pub path: String,
    /// Its size in bytes when the task ended.
    pub size: u64,
    /// The frame it belongs to, when known.
    pub frame: Option<i64>,
}

/// A file a job produced, as `GET /api/v1/jobs/{id}/outputs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputView {
    /// The task that produced it.
    pub task_id: TaskId,
    /// The frame it belongs to, when known.
    pub frame: Option<i64>,
    /// Its path on the agent.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// A preview image is served for its frame.
    pub preview: bool,
    /// When the task ended.
    pub created_at: DateTime<Utc>,
}

/// One storage location under its prefix on each system (empty: not on that system).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PathMapSpec {
    /// Prefix on Linux agents, e.g. `/mnt/projects`.
    #[serde(default)]
    pub linux: String,
    /// Prefix on Windows, e.g. `P:\` or `\\nas\projects`.
    #[serde(default)]
    pub windows: String,
    /// Prefix on macOS, e.g. `/Volumes/projects`.
    #[serde(default)]
    pub macos: String,
    /// Applies only to agents with this tag (empty: every agent).
    #[serde(default)]
    pub tag: String,
}

/// A stored path map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PathMapView {
    /// Its id.
    pub id: i64,
    /// The prefixes and tag.
    pub map: PathMapSpec,
}

/// A path rewrite an agent applies: a path starting with `from` starts with `to` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    /// The prefix to replace.
    pub from: String,
    /// Its replacement.
    pub to: String,
    /// `from` is a Windows prefix (matched case-insensitively, `\` and `/` alike).
    pub from_windows: bool,
    /// `to` is a Windows prefix (the rest of the path takes `\`).
    pub to_windows: bool,
}
