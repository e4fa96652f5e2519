//! What the scheduler core takes in and gives out.

use furrow_protocol::{JobId, Json, MasterMessage, TaskRef};
use uuid::Uuid;

use super::policy::requirements::Needs;
use crate::store::records::{
    AttemptRow, BulkWrite, JobRow, JobSettings, OutputRows, PreviewRow, TaskRow,
};

/// A job's settings as the scheduler uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Job id (allocated in submission order, so it also orders jobs by age).
    pub id: JobId,
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// Version of the job type.
    pub jobtype_version: u32,
    /// Parameters.
    pub params: Json,
    /// Attempt time limit.
    pub timeout_secs: Option<u64>,
    /// Higher first.
    pub priority: i32,
    /// Failed attempts retried per task.
    pub retries: u32,
    /// Queue, weight, agent limits, requirements, dependencies, blocklisting, notes.
    pub settings: JobSettings,
    /// The requirements of `settings`, parsed.
    pub needs: Needs,
}

/// Whether a job runs, is held back, or was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Control {
    /// Its tasks are dispatched.
    #[default]
    Active,
    /// Its waiting tasks are held back.
    Paused,
    /// It was cancelled.
    Cancelled,
}

impl Control {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Active => "active",
            Control::Paused => "paused",
            Control::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name (unknown names are active).
    pub fn parse(name: &str) -> Self {
        match name {
            "paused" => Control::Paused,
            "cancelled" => Control::Cancelled,
            _ => Control::Active,
        }
    }
}

/// Something the actor must do on the core's behalf.
// Nearly every effect is a `Send` of an assignment: boxing it would cost an allocation per
// assignment to shrink the rare small variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message to an agent (assignments and acknowledgements of results only once
    /// the rows recorded before them are committed).
    Send {
        /// The agent.
        agent: Uuid,
        /// The message.
        message: MasterMessage,
    },
    /// An attempt started: its log file may be written.
    OpenLog {
        /// The attempt.
        task: TaskRef,
        /// Its job.
        job_id: JobId,
        /// The agent it runs on: the only one whose lines are written to it.
        agent: Uuid,
        /// The attempt ran before: restored at the master's start, or taken back from
        /// an agent that was lost. Its log may have text already, which it extends.
        resumed: bool,
    },
    /// An attempt is over from the master's point of view: flush and close its log.
    CloseLog {
        /// The attempt.
        task: TaskRef,
        /// Its job.
        job_id: JobId,
    },
}

/// One write for the store, in the order the core made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A task's whole mutable state.
    Task(TaskRow),
    /// A job's counts and settings.
    Job(JobRow),
    /// A statement over many rows (applied after the rows recorded before it).
    Bulk(BulkWrite),
    /// How an attempt ended.
    Attempt(AttemptRow),
    /// Files an attempt produced.
    Outputs(OutputRows),
    /// The preview image of a frame.
    Preview(PreviewRow),
}

/// How a task message was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It concerned the current attempt and was applied.
    Applied,
    /// It concerned an attempt that is no longer current (or an unknown task): ignored.
    Stale,
}

/// A request the core refused, with the kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The job is not in the scheduler: it is finished, or unknown.
    NotLoaded,
    /// No such job, task or queue (404).
    NotFound(String),
    /// Invalid input (400).
    BadRequest(String),
    /// Makes no sense in the current state (409).
    Conflict(String),
}

impl From<Refusal> for furrow_protocol::ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotLoaded => Self::not_found("the job is neither queued nor running"),
            Refusal::NotFound(m) => Self::not_found(m),
            Refusal::BadRequest(m) => Self::bad_request(m),
            Refusal::Conflict(m) => Self::conflict(m),
        }
    }
}
