//! What the scheduler core takes in and gives out.

use furrow_protocol::{JobId, Json, MasterMessage, TaskRef};
use uuid::Uuid;

/// What a job contributes to its assignments.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Job id (allocated in submission order, so it also orders jobs by age).
    pub id: JobId,
    /// Title.
    pub title: String,
    /// Job type.
    pub jobtype: String,
    /// Parameters.
    pub params: Json,
    /// Attempt time limit.
    pub timeout_secs: Option<u64>,
    /// Higher first.
    pub priority: i32,
    /// Failed attempts retried per task.
    pub retries: u32,
}

/// Something the actor must do on the core's behalf.
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
    },
    /// An attempt is over from the master's point of view: flush and close its log.
    CloseLog {
        /// The attempt.
        task: TaskRef,
        /// Its job.
        job_id: JobId,
    },
}

/// How a task message was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It concerned the current attempt and was applied.
    Applied,
    /// It concerned an attempt that is no longer current (or an unknown task): ignored.
    Stale,
}
