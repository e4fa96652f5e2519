//! sea-orm entities of the tables created by [`super::migration`], used for reads.

/// `jobs`: one row per submitted job, with denormalised task counts that the store keeps
/// current in the same transactions that move its tasks.
pub mod job {
    use sea_orm::entity::prelude::*;

    /// A job row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        /// Job id (allocated by the store).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        /// Title.
        pub title: String,
        /// Job type.
        pub jobtype: String,
        /// Version of the job type.
        pub jobtype_version: i64,
        /// Job-type parameters as JSON text.
        pub params: String,
        /// Normalised frame specification.
        pub frames: String,
        /// Frames per task.
        pub batch: i32,
        /// Priority.
        pub priority: i32,
        /// Retries per task.
        pub retries: i32,
        /// Attempt time limit.
        pub timeout_secs: Option<i64>,
        /// Derived state.
        pub state: String,
        /// Queued tasks.
        pub queued: i64,
        /// Running tasks.
        pub running: i64,
        /// Done tasks.
        pub done: i64,
        /// Failed tasks.
        pub failed: i64,
        /// Paused tasks.
        pub paused: i64,
        /// Submission time, ms since the epoch.
        pub created_at: i64,
        /// Completion time, ms since the epoch.
        pub finished_at: Option<i64>,
        /// Weight in its queue.
        pub weight: i64,
        /// Queue path (`""` is the root).
        pub queue: String,
        /// Agents it gets first.
        pub min_agents: i64,
        /// Most agents at once.
        pub max_agents: Option<i64>,
        /// Requirements as JSON text.
        pub requirements: String,
        /// Stall timeout in seconds.
        pub stall_timeout_secs: Option<i64>,
        /// Job ids it depends on, as JSON text.
        pub depends_on: String,
        /// Frame-by-frame dependency (0 or 1).
        pub depends_per_frame: i64,
        /// Free text.
        pub notes: String,
        /// Who submitted it.
        pub user_name: String,
        /// Failures after which an agent is blocklisted.
        pub blocklist_after: i64,
        /// `active`, `paused` or `cancelled`.
        pub control: String,
        /// Blocked tasks.
        pub blocked: i64,
        /// Cancelled tasks.
        pub cancelled: i64,
        /// Blocklisted agents as JSON text.
        pub blocklist: String,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `tasks`: one row per task (a batch of frames).
pub mod task {
    use sea_orm::entity::prelude::*;

    /// A task row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        /// Task id (allocated by the store, in frame order within a job).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        /// Owning job.
        pub job_id: i64,
        /// First frame.
        pub frame: i64,
        /// Last frame.
        pub frame_end: i64,
        /// Frame step.
        pub step: i64,
        /// State name.
        pub state: String,
        /// Agent of the current attempt (UUID text).
        pub agent: Option<String>,
        /// Current attempt.
        pub attempt: i32,
        /// Failed attempts so far.
        pub failures: i32,
        /// Exit code of the last finished attempt.
        pub exit_code: Option<i32>,
        /// Progress of the current attempt.
        pub progress: f64,
        /// Error of the last failed attempt.
        pub last_error: Option<String>,
        /// Creation time, ms.
        pub created_at: i64,
        /// Start of the current attempt, ms.
        pub started_at: Option<i64>,
        /// Completion time, ms.
        pub finished_at: Option<i64>,
        /// GPU indices of the current attempt (`0,2`).
        pub gpus: Option<String>,
        /// Memory limit raised after an attempt ran out (0: the job's).
        pub ram_mb: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `agents`: every agent that ever registered, so offline ones can be listed.
pub mod agent {
    use sea_orm::entity::prelude::*;

    /// An agent row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        /// Agent UUID as text.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Display name.
        pub name: String,
        /// Hostname.
        pub hostname: String,
        /// Operating system.
        pub os: String,
        /// Logical CPUs.
        pub cpus: i32,
        /// Memory in MiB.
        pub ram_mb: i64,
        /// GPUs as JSON text.
        pub gpus: String,
        /// Tags as JSON text.
        pub tags: String,
        /// Task slots.
        pub slots: i32,
        /// Agent software version.
        pub version: String,
        /// First registration, ms.
        pub created_at: i64,
        /// Last time heard from, ms (written on state changes, not per heartbeat).
        pub last_seen: i64,
        /// Whether it gets work (0 or 1; set through the API).
        pub enabled: i64,
        /// Tags set through the API, overriding its own, as JSON text.
        pub tags_override: Option<String>,
        /// Software as JSON text.
        pub software: String,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `task_logs`: where each attempt's log is.
pub mod task_log {
    use sea_orm::entity::prelude::*;

    /// An index row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_logs")]
    pub struct Model {
        /// Task.
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: i64,
        /// Attempt.
        #[sea_orm(primary_key, auto_increment = false)]
        pub attempt: i32,
        /// Job of the task.
        pub job_id: i64,
        /// File path relative to the data directory.
        pub path: String,
        /// Size in bytes when last indexed.
        pub size: i64,
        /// When last indexed, ms.
        pub updated_at: i64,
        /// Where the attempt's text starts in the file (0 in a file of its own; in its
        /// job's pack of short logs, where it was appended).
        pub file_offset: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `queues`: the queue tree (the root is implicit).
pub mod queue {
    use sea_orm::entity::prelude::*;

    /// A queue row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "queues")]
    pub struct Model {
        /// Path without leading slash.
        #[sea_orm(primary_key, auto_increment = false)]
        pub path: String,
        /// Priority.
        pub priority: i32,
        /// Weight.
        pub weight: i64,
        /// Minimum of agents.
        pub min_agents: i64,
        /// Maximum of agents.
        pub max_agents: Option<i64>,
        /// Creation time, ms.
        pub created_at: i64,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
