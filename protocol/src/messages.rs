//! The messages exchanged after the handshake.
//!
//! Variants are only ever appended, never reordered or removed: bincode encodes a variant
//! by its index. The golden-bytes tests in `tests/golden.rs` pin the encoding.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Json;
use crate::access::{
    AuditView, NewToken, TokenSpec, TokenView, UserPatch, UserSpec, UserView, WhoAmI,
};
use crate::frames::FrameBatch;
use crate::model::{
    ActionOutcome, AgentPatch, AgentView, AttemptView, GpuInfo, HealthView, JobAction, JobId,
    JobPatch, JobSubmission, JobTypeSource, JobTypeView, JobView, LogChunk, OutputView, Page,
    PathMapSpec, PathMapView, QueuePatch, QueueSpec, QueueView, TaskAction, TaskId, TaskRef,
    TaskView, WhyView,
};

/// Agent → master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// First message after the handshake, and again after every reconnect.
    Register(Registration),
    /// Sent every heartbeat interval.
    Heartbeat(Heartbeat),
    /// The process of a task attempt has started.
    TaskStarted(TaskStarted),
    /// Progress of a task attempt changed.
    TaskProgress(TaskProgress),
    /// A task attempt ended.
    TaskFinished(TaskFinished),
    /// Output lines of a task attempt.
    Logs(LogBatch),
    /// A task attempt is given back without an outcome.
    TaskReturned(TaskReturned),
    /// A small image of a frame a task produced (sent before its `TaskFinished`).
    Preview(Preview),
    /// The job-type definition files this agent loaded from its own directory (all of
    /// them, after each registration and each change); the master adds versions it does
    /// not have to its catalogue.
    JobTypes(Vec<String>),
    /// The agent is stopping: it takes no more work, and gives its running attempts back
    /// (`TaskReturned`, sent after this).
    Draining,
    /// Protocol version 8. The web server the agent mounts apps on (sent after each
    /// registration by an agent that runs one).
    WebServer(crate::apps::WebServerView),
    /// Protocol version 8. A piece of a bundle the agent lacks.
    FetchBundle(crate::apps::BundleRequest),
    /// Protocol version 8. How an app stands on the agent (after each change).
    AppReport(crate::apps::AppReport),
    /// Protocol version 8. Output lines of an app's instance.
    AppLogs(crate::apps::AppLogBatch),
}

/// A preview image of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The attempt that produced the frame.
    pub task: TaskRef,
    /// Its job.
    pub job_id: JobId,
    /// The frame.
    pub frame: i64,
    /// `image/jpeg` or `image/png`.
    pub mime: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The encoded image.
    pub data: Vec<u8>,
}

/// A declarative job-type definition the master sends before the first assignment of a
/// connection that needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTypeDefinition {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// The TOML text.
    pub source: String,
}

/// What an agent tells the master about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Stable agent id (kept in the agent's state directory).
    pub agent_id: Uuid,
    /// Display name (the hostname unless set).
    pub name: String,
    /// Hostname.
    pub hostname: String,
    /// Operating system and kernel.
    pub os: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in MiB.
    pub ram_mb: u64,
    /// GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Tags for requirements.
    pub tags: Vec<String>,
    /// Software it offers, name to version (`blender` → `4.2.1`).
    pub software: std::collections::BTreeMap<String, String>,
    /// Number of tasks it runs at once.
    pub slots: u32,
    /// Agent software version.
    pub version: String,
    /// Task attempts it runs right now (non-empty after a reconnect).
    pub running: Vec<TaskRef>,
}

/// Periodic liveness and load report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Free memory in MiB.
    pub free_ram_mb: u64,
    /// One-minute load average.
    pub load: f32,
    /// Task attempts running now.
    pub running: Vec<TaskRef>,
}

/// A task's process has started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStarted {
    /// The attempt.
    pub task: TaskRef,
    /// Process id of the task's process (group leader).
    pub pid: u32,
    /// When it started.
    pub at: DateTime<Utc>,
}

/// A task's progress changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// The attempt.
    pub task: TaskRef,
    /// Progress from 0.0 to 1.0.
    pub progress: f32,
}

/// A task attempt ended. It succeeded when `exit_code == Some(0)` and `error` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFinished {
    /// The attempt.
    pub task: TaskRef,
    /// Exit code, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// What went wrong (could not start, killed by a limit, cancelled...).
    pub error: Option<String>,
    /// The limit that killed it, if one did.
    pub limit: Option<LimitHit>,
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The files it produced (that exist), as its job type reads them from its output.
    #[serde(default)]
    pub outputs: Vec<crate::OutputFile>,
}

/// A limit the agent enforced on an attempt by killing its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitHit {
    /// It ran past `timeout_secs`.
    Timeout,
    /// No output and no progress for `stall_timeout_secs`.
    Stall,
    /// Its processes used more memory than `ram_mb`.
    Memory {
        /// Memory in use when it was killed, MiB.
        used_mb: u64,
    },
}

impl TaskFinished {
    /// Whether the attempt succeeded.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none()
    }
}

/// The agent gives the attempt back without an outcome (it is shutting down, or it had no
/// free slot): the master puts the task back in the queue without counting a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReturned {
    /// The attempt.
    pub task: TaskRef,
    /// Why it is given back.
    pub reason: String,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A line written by the agent itself (start, exit, errors).
    Agent,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the agent read it, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Its stream.
    pub stream: LogStream,
    /// The line without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// Lines of one attempt, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The attempt.
    pub task: TaskRef,
    /// The lines.
    pub lines: Vec<LogLine>,
}

/// Master → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterMessage {
    /// Answer to [`AgentMessage::Register`].
    Registered(Registered),
    /// Run a task attempt.
    Assign(Assignment),
    /// Stop a task attempt (kills its process group).
    Cancel(TaskRef),
    /// The master has durably stored the [`TaskFinished`] of this attempt (or no longer
    /// needs it): the agent may forget the result. Until then the agent keeps it, lists the
    /// attempt in `Registration.running` and replays it after a reconnect.
    ResultStored(TaskRef),
    /// A declarative job type an assignment on this connection is about to use (sent once
    /// per connection and version, before that assignment).
    JobType(JobTypeDefinition),
    /// The agent's own credential, sent once after it joined with a farm join token: the
    /// agent keeps it and presents it from then on.
    Credential(String),
    /// Protocol version 6. The master no longer counts this attempt (it was taken from
    /// the agent, and may run elsewhere): kill it at once if it runs, without a cancel's
    /// grace, and forget its result if it ended. Agents speaking version 5 get
    /// [`MasterMessage::Cancel`] then [`MasterMessage::ResultStored`] instead.
    Stale(TaskRef),
    /// Protocol version 8. Make this release of an app current on the agent.
    Deploy(crate::apps::AppDeployment),
    /// Protocol version 8. A piece of a bundle the agent asked for.
    Bundle(crate::apps::BundleChunk),
    /// Protocol version 8. Remove this app from the agent (its processes, mount and
    /// files; its `pre_delete` hook runs first).
    Undeploy(String),
}

/// The master accepted a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// The id the master knows the agent by.
    pub agent_id: Uuid,
    /// How often to send heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// A task attempt to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The attempt.
    pub task: TaskRef,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The job's title (for logs).
    pub title: String,
    /// The job type that runs it.
    pub jobtype: String,
    /// The version of the job type the job was submitted with.
    pub jobtype_version: u32,
    /// Job-type parameters.
    pub params: Json,
    /// Path rewrites for this agent, longest prefix first.
    pub path_maps: Vec<crate::PathRule>,
    /// The frames this task covers.
    pub frames: FrameBatch,
    /// Time limit of the attempt in seconds.
    pub timeout_secs: Option<u64>,
    /// Kill the attempt when it prints nothing and reports no progress for this long.
    pub stall_timeout_secs: Option<u64>,
    /// Memory limit of the attempt's processes in MiB (their summed resident memory).
    pub ram_mb: Option<u64>,
    /// GPU device indices given to the attempt (`CUDA_VISIBLE_DEVICES`, `FURROW_GPUS`).
    pub gpus: Vec<u32>,
}

/// Client → master, wrapped with a request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEnvelope {
    /// Echoed in the reply.
    pub id: u64,
    /// The request.
    pub request: ClientRequest,
}

/// Master → client, answering the request with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEnvelope {
    /// Id of the request answered.
    pub id: u64,
    /// The answer.
    pub response: ClientResponse,
}

/// Requests of tools; they mirror the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// `GET /api/v1/health`.
    Health,
    /// `POST /api/v1/jobs/`.
    SubmitJob(JobSubmission),
    /// `GET /api/v1/jobs/?limit=&offset=`.
    ListJobs {
        /// Page size.
        limit: u64,
        /// Items to skip.
        offset: u64,
    },
    /// `GET /api/v1/jobs/{id}`.
    GetJob {
        /// The job.
        job_id: JobId,
    },
    /// `GET /api/v1/jobs/{id}/tasks/?limit=&offset=`.
    ListTasks {
        /// The job.
        job_id: JobId,
        /// Page size.
        limit: u64,
        /// Items to skip.
        offset: u64,
    },
    /// `GET /api/v1/agents/?limit=&offset=`.
    ListAgents {
        /// Page size.
        limit: u64,
        /// Items to skip.
        offset: u64,
    },
    /// `GET /api/v1/jobs/{id}/tasks/{task_id}/logs?attempt=&offset=`.
    TaskLog {
        /// The job.
        job_id: JobId,
        /// The task.
        task_id: TaskId,
        /// The attempt; the current one when `None`.
        attempt: Option<u32>,
        /// Byte offset to read from.
        offset: u64,
    },
    /// `POST /api/v1/jobs/{id}/actions` and `POST /api/v1/jobs/actions`.
    JobsAction {
        /// The action.
        action: JobAction,
        /// The jobs.
        ids: Vec<JobId>,
        /// With `pause`: stop running tasks and queue them again.
        kill: bool,
    },
    /// `POST /api/v1/jobs/{id}/tasks/{task_id}/actions`.
    TaskAction {
        /// The job.
        job_id: JobId,
        /// The task.
        task_id: TaskId,
        /// The action.
        action: TaskAction,
    },
    /// `PATCH /api/v1/jobs/{id}`.
    EditJob {
        /// The job.
        job_id: JobId,
        /// The changes.
        patch: JobPatch,
    },
    /// `DELETE /api/v1/jobs/{id}`.
    DeleteJob {
        /// The job.
        job_id: JobId,
    },
    /// `GET /api/v1/jobs/{id}/why`.
    Why {
        /// The job.
        job_id: JobId,
    },
    /// `GET /api/v1/queues/`.
    ListQueues,
    /// `POST /api/v1/queues/`.
    CreateQueue(QueueSpec),
    /// `PATCH /api/v1/queues/{path}`.
    EditQueue {
        /// The queue.
        path: String,
        /// The changes.
        patch: QueuePatch,
    },
    /// `DELETE /api/v1/queues/{path}`.
    DeleteQueue {
        /// The queue.
        path: String,
    },
    /// `PATCH /api/v1/agents/{id}`.
    EditAgent {
        /// The agent.
        agent_id: Uuid,
        /// The changes.
        patch: AgentPatch,
    },
    /// `GET /api/v1/jobs/{id}/tasks/{task_id}/attempts`.
    TaskAttempts {
        /// The job.
        job_id: JobId,
        /// The task.
        task_id: TaskId,
    },
    /// `GET /api/v1/jobtypes/`.
    ListJobTypes,
    /// `GET /api/v1/jobtypes/{name}/{version}` (the newest version when `None`).
    GetJobType {
        /// The type.
        name: String,
        /// Its version.
        version: Option<u32>,
    },
    /// `POST /api/v1/jobtypes/`.
    AddJobType(JobTypeSource),
    /// `GET /api/v1/pathmaps/`.
    ListPathMaps,
    /// `POST /api/v1/pathmaps/`.
    AddPathMap(PathMapSpec),
    /// `DELETE /api/v1/pathmaps/{id}`.
    DeletePathMap {
        /// The map.
        id: i64,
    },
    /// `GET /api/v1/jobs/{id}/outputs`.
    JobOutputs {
        /// The job.
        job_id: JobId,
    },
    /// `DELETE /api/v1/agents/{id}`.
    RemoveAgent {
        /// The agent.
        agent_id: Uuid,
    },
    /// `GET /api/v1/me`.
    WhoAmI,
    /// `GET /api/v1/users/`.
    ListUsers,
    /// `POST /api/v1/users/`.
    AddUser(UserSpec),
    /// `PATCH /api/v1/users/{name}`.
    EditUser {
        /// The user.
        name: String,
        /// The changes.
        patch: UserPatch,
    },
    /// `DELETE /api/v1/users/{name}`.
    RemoveUser {
        /// The user.
        name: String,
    },
    /// `GET /api/v1/tokens/?all=`.
    ListTokens {
        /// Every user's tokens (admins), not only the caller's.
        all: bool,
    },
    /// `POST /api/v1/tokens/`.
    CreateToken(TokenSpec),
    /// `DELETE /api/v1/tokens/{id}`.
    RevokeToken {
        /// The token.
        id: String,
    },
    /// `POST /api/v1/agents/{id}/revoke`.
    RevokeAgent {
        /// The agent.
        agent_id: Uuid,
    },
    /// `GET /api/v1/audit/?limit=&offset=`.
    Audit {
        /// Page size.
        limit: u64,
        /// Items to skip.
        offset: u64,
    },
    /// `POST /api/v1/apps/` (protocol 8).
    CreateApp(crate::apps::AppSpec),
    /// `GET /api/v1/apps/`.
    ListApps,
    /// `GET /api/v1/apps/{name}`.
    GetApp {
        /// The app.
        name: String,
    },
    /// A piece of a bundle on its way to a `DeployApp` (tool connections take small
    /// frames, so a bundle travels in pieces of at most [`crate::BUNDLE_CHUNK`]).
    UploadPart {
        /// The upload, named by the client (letters and digits, at most 64).
        upload: String,
        /// Where `data` goes: the bytes received so far.
        offset: u64,
        /// The piece.
        data: Vec<u8>,
    },
    /// `POST /api/v1/apps/{name}/releases/`: the bundle uploaded in pieces.
    DeployApp {
        /// The app.
        name: String,
        /// The upload holding the bundle.
        upload: String,
    },
    /// `GET /api/v1/apps/{name}/config`.
    AppConfig {
        /// The app.
        name: String,
    },
    /// `PUT /api/v1/apps/{name}/config`.
    ConfigureApp {
        /// The app.
        name: String,
        /// Field name to value.
        values: Json,
    },
    /// `POST /api/v1/apps/{name}/rollback`.
    RollbackApp {
        /// The app.
        name: String,
        /// Which release.
        to: crate::apps::AppRollback,
    },
    /// `GET /api/v1/apps/{name}/logs?q=&since=&limit=`.
    AppLogs {
        /// The app.
        name: String,
        /// A regular expression lines match.
        pattern: Option<String>,
        /// Lines at or after this time (ms since the epoch).
        since_ms: Option<i64>,
        /// At most this many lines, the newest.
        limit: u32,
    },
    /// `DELETE /api/v1/apps/{name}`.
    DeleteApp {
        /// The app.
        name: String,
    },
    /// `PUT /api/v1/apps/{name}/notifications`.
    SetAppNotifications {
        /// The app.
        name: String,
        /// Its rules, all of them.
        rules: Vec<crate::apps::AppNotification>,
    },
    /// `GET /api/v1/jobs/{id}/frames/{frame}`: the task covering a frame.
    TaskAtFrame {
        /// The job.
        job_id: JobId,
        /// A frame of the job.
        frame: i64,
    },
    /// `GET /api/v1/jobs/{id}/tasks/?from_frame=&after_frame=&before_frame=&state=`.
    BrowseTasks {
        /// The job.
        job_id: JobId,
        /// Which page.
        query: crate::browse::TaskQuery,
    },
}

/// Answers to [`ClientRequest`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// Answer to `Health`.
    Health(HealthView),
    /// Answer to `SubmitJob` and `GetJob`.
    Job(JobView),
    /// Answer to `ListJobs`.
    Jobs(Page<JobView>),
    /// Answer to `ListTasks`.
    Tasks(Page<TaskView>),
    /// Answer to `ListAgents`.
    Agents(Page<AgentView>),
    /// Answer to `TaskLog`.
    Log(LogChunk),
    /// The request failed.
    Error(ApiError),
    /// Answer to `JobsAction`: one outcome per job, in the order asked.
    Actions(Vec<ActionOutcome>),
    /// Answer to `TaskAction`.
    Task(TaskView),
    /// Answer to `Why`.
    Why(WhyView),
    /// Answer to `ListQueues`.
    Queues(Vec<QueueView>),
    /// Answer to `CreateQueue` and `EditQueue`.
    Queue(QueueView),
    /// Answer to `EditAgent`.
    Agent(AgentView),
    /// Answer to `DeleteJob` and `DeleteQueue`.
    Deleted,
    /// Answer to `TaskAttempts`.
    Attempts(Vec<AttemptView>),
    /// Answer to `ListJobTypes`.
    JobTypes(Vec<JobTypeView>),
    /// Answer to `GetJobType` and `AddJobType` (`created`: a new version was stored).
    JobType {
        /// The type.
        view: JobTypeView,
        /// Whether it was stored by this request.
        created: bool,
    },
    /// Answer to `ListPathMaps`.
    PathMaps(Vec<PathMapView>),
    /// Answer to `AddPathMap`.
    PathMap(PathMapView),
    /// Answer to `JobOutputs`.
    Outputs(Vec<OutputView>),
    /// Answer to `WhoAmI`.
    Me(WhoAmI),
    /// Answer to `ListUsers`.
    Users(Vec<UserView>),
    /// Answer to `AddUser` and `EditUser`.
    User(UserView),
    /// Answer to `ListTokens`.
    Tokens(Vec<TokenView>),
    /// Answer to `CreateToken`.
    Token(NewToken),
    /// Answer to `Audit`, newest first.
    Audit(Page<AuditView>),
    /// Answer to `CreateApp` and `GetApp`.
    App(crate::apps::AppView),
    /// Answer to `ListApps`.
    Apps(Vec<crate::apps::AppView>),
    /// Answer to `DeployApp` and `ConfigureApp`.
    AppRelease(crate::apps::AppReleaseView),
    /// Answer to `AppConfig`: field name to value, secrets masked.
    AppConfig(Json),
    /// Answer to `RollbackApp`: the release now current.
    AppRolledBack(u32),
    /// Answer to `AppLogs`, oldest first.
    AppLogs(Vec<crate::apps::AppLogLine>),
    /// Answer to `UploadPart`: the bytes received so far.
    Uploaded(u64),
    /// Answer to `SetAppNotifications`: the rules now.
    AppNotifications(Vec<crate::apps::AppNotification>),
}

/// What kind of failure an [`ApiError`] is; the REST API maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request is invalid (400).
    BadRequest,
    /// The thing asked for does not exist (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The master cannot serve it right now (503).
    Unavailable,
    /// A bug or a storage failure (500).
    Internal,
    /// No valid credentials (401).
    Unauthorized,
    /// The caller's role may not do this (403).
    Forbidden,
}

/// A failed request: a kind and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The kind.
    pub kind: ErrorKind,
    /// What was wrong, naming the field when a field was.
    pub message: String,
}

impl ApiError {
    /// A 400 error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::BadRequest,
            message: message.into(),
        }
    }

    /// A 404 error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// A 409 error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Conflict,
            message: message.into(),
        }
    }

    /// A 401 error.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unauthorized,
            message: message.into(),
        }
    }

    /// A 403 error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Forbidden,
            message: message.into(),
        }
    }

    /// A 503 error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message: message.into(),
        }
    }

    /// A 500 error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
}
