//! Rows handed to the store by the other actors, and rows read back.

use chrono::{DateTime, TimeZone, Utc};
use furrow_protocol::{
    BlockedAgent, FrameBatch, FrameRange, JobId, JobSubmission, JobView, Json, Requirements,
    TaskCounts, TaskId, WorkState,
};
use uuid::Uuid;

use crate::scheduler::Control;
use crate::scheduler::queues::{self, Queue};

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
    /// The version of the job type.
    pub jobtype_version: u32,
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
    /// Scheduling settings and metadata (validated).
    pub settings: JobSettings,
    /// The frame ranges, in frame order.
    pub ranges: Vec<FrameRange>,
    /// One entry per task, in frame order (the ranges cut into batches).
    pub batches: Vec<FrameBatch>,
}

/// The fields of a job beyond its command: scheduling, dependencies, metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Weight in its queue.
    pub weight: u32,
    /// Queue path (`""` is the root).
    pub queue: String,
    /// Agents it gets first.
    pub min_agents: u32,
    /// Most agents at once.
    pub max_agents: Option<u32>,
    /// Requirements per task.
    pub requirements: Requirements,
    /// Stall timeout.
    pub stall_timeout_secs: Option<u64>,
    /// Jobs it waits for.
    pub depends_on: Vec<JobId>,
    /// Frame N waits only for frame N of those jobs.
    pub depends_per_frame: bool,
    /// Free text.
    pub notes: String,
    /// Who submitted it.
    pub user: String,
    /// Failures after which an agent is blocklisted (0: never).
    pub blocklist_after: u32,
}

impl JobSettings {
    /// The settings of a submission, as given (validation is the service's).
    pub fn of(submission: &JobSubmission) -> Self {
        Self {
            weight: submission.weight,
            queue: submission.queue.clone(),
            min_agents: submission.min_agents,
            max_agents: submission.max_agents.filter(|&m| m > 0),
            requirements: submission.requirements.clone(),
            stall_timeout_secs: submission.stall_timeout_secs,
            depends_on: submission.depends_on.clone(),
            depends_per_frame: submission.depends_per_frame,
            notes: submission.notes.clone(),
            user: submission.user.clone(),
            blocklist_after: submission.blocklist_after,
        }
    }
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
    /// The version of the job type.
    pub jobtype_version: u32,
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
    /// Scheduling settings and metadata.
    pub settings: JobSettings,
    /// Paused or cancelled by request.
    pub control: Control,
    /// Agents blocklisted for this job, with their failures.
    pub blocklist: Vec<BlockedAgent>,
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
            jobtype_version: self.jobtype_version,
            params: self.params.clone(),
            frames: self.frames.clone(),
            batch: self.batch,
            priority: self.priority,
            retries: self.retries,
            timeout_secs: self.timeout_secs,
            weight: self.settings.weight,
            queue: queues::display(&self.settings.queue),
            min_agents: self.settings.min_agents,
            max_agents: self.settings.max_agents,
            requirements: self.settings.requirements.clone(),
            stall_timeout_secs: self.settings.stall_timeout_secs,
            depends_on: self.settings.depends_on.clone(),
            depends_per_frame: self.settings.depends_per_frame,
            notes: self.settings.notes.clone(),
            user: self.settings.user.clone(),
            blocklist_after: self.settings.blocklist_after,
            blocklist: self.blocklist.clone(),
            paused: self.control == Control::Paused,
            state: job_state(self.counts, self.control),
            task_counts: self.counts,
            created_at: from_ms(self.created_at),
            finished_at: self.finished_at.map(from_ms),
        }
    }
}

/// A job's state from its counts and its control: a paused job with nothing running is
/// paused; a cancelled one still running its last tasks is running until they stop.
pub fn job_state(counts: TaskCounts, control: Control) -> WorkState {
    let state = counts.job_state();
    match control {
        Control::Paused if counts.unfinished() > 0 && counts.running == 0 => WorkState::Paused,
        _ => state,
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
    /// GPU indices the current attempt holds.
    pub gpus: Vec<u32>,
    /// Memory limit raised after an attempt ran out (0: the job's).
    pub ram_mb: u64,
}

/// A job's counts and changeable settings after transitions (a snapshot, the latest wins).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// Job id.
    pub id: JobId,
    /// Counts.
    pub counts: TaskCounts,
    /// Completion time once finished, ms.
    pub finished_at: Option<i64>,
    /// Paused or cancelled.
    pub control: Control,
    /// Priority.
    pub priority: i32,
    /// Settings that can change after submission.
    pub settings: JobSettings,
    /// Blocklisted agents.
    pub blocklist: Vec<BlockedAgent>,
}

/// The files an attempt produced (a file produced again replaces its row).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRows {
    /// Job.
    pub job_id: JobId,
    /// Task.
    pub task_id: TaskId,
    /// When the attempt ended, ms.
    pub at: i64,
    /// The files.
    pub files: Vec<furrow_protocol::OutputFile>,
}

/// The preview image of a frame (the newest replaces the older).
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewRow {
    /// Job.
    pub job_id: JobId,
    /// Frame.
    pub frame: i64,
    /// Task that produced it.
    pub task_id: TaskId,
    /// MIME type.
    pub mime: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The encoded image.
    pub data: Vec<u8>,
}

/// How one attempt of a task went, recorded when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    /// Task.
    pub task_id: TaskId,
    /// Attempt.
    pub attempt: u32,
    /// Job.
    pub job_id: JobId,
    /// Agent it ran on.
    pub agent: Option<Uuid>,
    /// Start, ms.
    pub started_at: Option<i64>,
    /// End, ms.
    pub finished_at: i64,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// `done`, `failed`, `cancelled` or `requeued`.
    pub outcome: &'static str,
    /// What went wrong.
    pub error: Option<String>,
}

/// A new frame range for a job, cut into its tasks, with the ids the store reserved
/// for them.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFrames {
    /// The normalised frame specification.
    pub frames: String,
    /// Frames per task.
    pub batch: u32,
    /// Id of the first task; the others follow in frame order.
    pub first_task_id: TaskId,
    /// The ranges.
    pub ranges: Vec<FrameRange>,
    /// The tasks.
    pub batches: Vec<FrameBatch>,
}

/// A write over many rows at once, applied in order with the rows around it.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkWrite {
    /// Moves a job's tasks that are in one of `from` to `to`; with `reset`, also clears
    /// their failures, exit code, error, progress, agent and times (a rerun).
    TaskStates {
        /// The job.
        job_id: JobId,
        /// States moved.
        from: Vec<WorkState>,
        /// New state.
        to: WorkState,
        /// Clear the outcome of earlier attempts.
        reset: bool,
    },
    /// Deletes a job, its tasks and its log index.
    DeleteJob {
        /// The job.
        job_id: JobId,
    },
    /// Replaces every task of a job that has not run yet (a new frame range).
    ReplaceTasks {
        /// The job.
        job_id: JobId,
        /// Its new frames and tasks.
        frames: NewFrames,
    },
    /// Creates or changes a queue.
    PutQueue(Queue),
    /// Deletes a queue.
    DeleteQueue(String),
    /// Changes whether an agent gets work, and its tags set through the API.
    AgentSettings {
        /// The agent.
        id: Uuid,
        /// Enabled.
        enabled: bool,
        /// Tags overriding the agent's own.
        tags: Option<Vec<String>>,
    },
    /// Forgets an agent: its row, with the settings made through the API, and the link
    /// of its credentials to it.
    DeleteAgent(Uuid),
    /// Forgets an agent long unseen: its row only. Its credentials stay bound to it, so
    /// it may come back.
    ForgetAgent(Uuid),
    /// Stores a version of a declarative job type (an existing version is kept).
    PutJobType {
        /// Its name.
        name: String,
        /// Its version.
        version: u32,
        /// The definition file.
        source: String,
    },
    /// Creates a path map.
    PutPathMap(furrow_protocol::PathMapView),
    /// Deletes a path map.
    DeletePathMap(i64),
    /// Creates a user or changes their role or password.
    PutUser(UserRow),
    /// Deletes a user and revokes their tokens.
    DeleteUser {
        /// The user.
        name: String,
        /// When (the tokens' revocation time).
        at: i64,
    },
    /// Stores a new token (its hash).
    PutToken(TokenRow),
    /// Revokes tokens.
    RevokeTokens {
        /// The tokens.
        ids: Vec<String>,
        /// When.
        at: i64,
    },
    /// Appends to the audit log.
    Audit(AuditRow),
    /// Creates an app or changes its placement, web server or current release.
    PutApp(AppRow),
    /// Stores a new release of an app.
    PutAppRelease(AppReleaseRow),
    /// Appends to an app's history.
    AppEvent(AppEventRow),
    /// Deletes an app with its releases and history.
    DeleteApp(String),
}

/// A stored app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    /// Its name.
    pub name: String,
    /// Tags selecting its agents (JSON list).
    pub tags: Vec<String>,
    /// Web server kind.
    pub webserver: String,
    /// The release every agent is asked to serve.
    pub current_release: Option<u32>,
    /// Its notification rules (JSON list).
    pub notifications: Vec<furrow_protocol::AppNotification>,
    /// Who created it.
    pub created_by: String,
    /// When, ms.
    pub created_at: i64,
}

/// A stored release of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppReleaseRow {
    /// The app.
    pub app: String,
    /// Its number.
    pub number: u32,
    /// The bundle's version.
    pub version: String,
    /// The bundle's SHA-256.
    pub digest: String,
    /// The bundle's size.
    pub size: u64,
    /// `upload`, `inbox` or `config`.
    pub source: String,
    /// The manifest's text.
    pub manifest: String,
    /// The config spec's text, if the bundle has one.
    pub spec: Option<String>,
    /// `yaml` or `ini`.
    pub spec_format: Option<String>,
    /// The configuration (JSON map; secret values sealed).
    pub config: String,
    /// Who made it.
    pub created_by: String,
    /// When, ms.
    pub created_at: i64,
}

/// An entry of an app's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEventRow {
    /// Unique, increasing.
    pub id: i64,
    /// The app.
    pub app: String,
    /// When, ms.
    pub at: i64,
    /// Who.
    pub by: String,
    /// What.
    pub action: String,
    /// The release concerned.
    pub release: Option<u32>,
    /// Details.
    pub detail: String,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Login name.
    pub name: String,
    /// Role name.
    pub role: String,
    /// Argon2 hash in PHC format.
    pub password_hash: Option<String>,
    /// Created, ms.
    pub created_at: i64,
}

/// A stored token: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id.
    pub id: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// Kind name.
    pub kind: String,
    /// User it acts as (or who created a join token).
    pub user: String,
    /// Label.
    pub label: String,
    /// Agent of an agent credential.
    pub agent_id: Option<Uuid>,
    /// Created, ms.
    pub created_at: i64,
    /// Expires, ms.
    pub expires_at: Option<i64>,
    /// Revoked, ms.
    pub revoked_at: Option<i64>,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Increasing id.
    pub id: i64,
    /// When, ms.
    pub at: i64,
    /// Who.
    pub user: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where.
    pub peer: String,
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
    /// Tags as JSON (as the agent announced them).
    pub tags: String,
    /// Software as JSON.
    pub software: String,
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
    /// Where the attempt's text starts in the file.
    pub file_offset: u64,
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
    /// Exit code of the last finished attempt.
    pub exit_code: Option<i32>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Start of the current attempt, ms.
    pub started_at: Option<i64>,
    /// GPU indices of a running task.
    pub gpus: Vec<u32>,
    /// Memory limit raised after an attempt ran out (0: the job's).
    pub ram_mb: u64,
}

/// An agent's settings made through the API, which outlive restarts of either side.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentSettingsRow {
    /// Whether it gets work.
    pub enabled: bool,
    /// Tags overriding the agent's own.
    pub tags: Option<Vec<String>>,
}
