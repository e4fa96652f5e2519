//! The messages the `Scheduler` actor takes, and what it shares without messages.

use std::sync::atomic::AtomicU64;

use actix::prelude::*;
use dashmap::DashMap;
use furrow_protocol::{
    ApiError, Capacity, JobAction, JobId, JobPatch, MasterMessage, QueuePatch, QueueSpec,
    QueueView, TaskAction, TaskFinished, TaskId, TaskProgress, TaskRef, TaskReturned, TaskStarted,
    WhyView,
};
use uuid::Uuid;

use super::core::ParentState;
use super::core::actions::Revived;
use super::policy::requirements::{Needs, Offer};
use super::queues::Queue;
use crate::store::InsertedJob;
use crate::store::records::NewFrames;

/// A message for an agent's session.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ToAgent(pub MasterMessage);

/// Numbers the health endpoint and the agent list read without asking the actor.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Tasks queued.
    pub queued: AtomicU64,
    /// Tasks running.
    pub running: AtomicU64,
    /// Free capacity per agent.
    pub free: DashMap<Uuid, Capacity>,
}

/// A committed job to schedule, with how its parents stood when it was checked.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddJob {
    /// The stored job.
    pub inserted: InsertedJob,
    /// Its parents.
    pub parents: Vec<(JobId, ParentState)>,
}

/// An agent registered on a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentUp {
    /// The agent.
    pub agent_id: Uuid,
    /// Its slots.
    pub slots: u32,
    /// Assignments it keeps waiting for a slot, beyond its slots.
    pub ahead: u32,
    /// What it offers (tags as the API set them, if it did).
    pub offer: Offer,
    /// Whether it may get work.
    pub enabled: bool,
    /// Attempts it says it runs.
    pub running: Vec<TaskRef>,
    /// Its session.
    pub link: Recipient<ToAgent>,
}

/// An agent was enabled or disabled, or its tags changed, through the API.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentConfigured {
    /// The agent.
    pub agent_id: Uuid,
    /// Whether it may get work.
    pub enabled: bool,
    /// Its tags now, when they changed.
    pub tags: Option<Vec<String>>,
}

/// A request that changes jobs, tasks or queues; answered once its writes are committed.
#[derive(Debug)]
pub enum ControlRequest {
    /// An action on a job (a finished one must come with `revive` to be rerun).
    JobAction {
        /// The job.
        job_id: JobId,
        /// The action.
        action: JobAction,
        /// Stop running tasks (pause).
        kill: bool,
        /// The finished job, loaded from the store.
        revive: Option<Revived>,
    },
    /// An action on a task.
    TaskAction {
        /// The job.
        job_id: JobId,
        /// The task.
        task_id: TaskId,
        /// The action.
        action: TaskAction,
        /// The finished job, loaded from the store.
        revive: Option<Revived>,
    },
    /// New settings for a job (requirements already parsed).
    EditJob {
        /// The job.
        job_id: JobId,
        /// The changes.
        patch: JobPatch,
        /// The new requirements, parsed.
        needs: Option<Needs>,
    },
    /// New frames for a job none of whose tasks has run.
    ReplaceFrames {
        /// The job.
        job_id: JobId,
        /// Its new frames and tasks.
        frames: NewFrames,
    },
    /// Deletes a job.
    DeleteJob {
        /// The job.
        job_id: JobId,
    },
    /// Creates a queue.
    CreateQueue(QueueSpec),
    /// Changes a queue.
    EditQueue {
        /// The queue.
        path: String,
        /// The changes.
        patch: QueuePatch,
    },
    /// Deletes a queue.
    DeleteQueue {
        /// The queue.
        path: String,
    },
}

/// What a control request did.
#[derive(Debug)]
pub enum ControlOutcome {
    /// Applied.
    Done,
    /// The job is not in the scheduler (finished or unknown): nothing was changed.
    NotLoaded,
    /// The queue as it is now.
    Queue(Queue),
}

/// A control request for the scheduler.
#[derive(Message)]
#[rtype(result = "Result<ControlOutcome, ApiError>")]
pub struct Change(pub ControlRequest);

/// Why a job waits; `None` when it is not unfinished.
#[derive(Message)]
#[rtype(result = "Option<WhyView>")]
pub struct Why(pub JobId);

/// The queue tree with running and waiting counts.
#[derive(Message)]
#[rtype(result = "Vec<QueueView>")]
pub struct ListQueues;

/// An agent's connection dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentDown {
    /// The agent.
    pub agent_id: Uuid,
}

/// An agent is lost: requeue its tasks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentLost {
    /// The agent.
    pub agent_id: Uuid,
}

/// A lost agent was removed: forget it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentForgotten {
    /// The agent.
    pub agent_id: Uuid,
}

/// What an agent said about one of its attempts.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// The process started.
    Started(TaskStarted),
    /// Progress changed.
    Progress(TaskProgress),
    /// The attempt ended.
    Finished(TaskFinished),
    /// The agent gave the attempt back without an outcome.
    Returned(TaskReturned),
}

/// A task event from an agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromAgent {
    /// The agent that sent it.
    pub agent_id: Uuid,
    /// The event.
    pub event: TaskEvent,
}
