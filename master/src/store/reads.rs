//! Reads: the service layer's queries and the startup load of unfinished work.
//!
//! Reads go straight to the pool (WAL lets them run beside the store's commits); they may
//! trail the newest transitions by one group-commit interval.

use furrow_protocol::{FrameBatch, JobId, Json, TaskCounts, TaskId, TaskView, WorkState};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::Db;
use super::entities::{agent, job, task, task_log};
use super::records::{AgentRow, JobRecord, LoadedTask, from_ms};

/// Read access to the database, shared by the service layer.
#[derive(Clone, Debug)]
pub struct StoreReader {
    db: Db,
}

/// What the scheduler and registry need at startup.
#[derive(Debug, Default)]
pub struct LoadedState {
    /// Unfinished jobs.
    pub jobs: Vec<JobRecord>,
    /// Their unfinished tasks, in id order.
    pub tasks: Vec<LoadedTask>,
    /// Every known agent.
    pub agents: Vec<AgentRow>,
    /// Largest job id in use.
    pub max_job_id: JobId,
    /// Largest task id in use.
    pub max_task_id: TaskId,
}

/// The columns the startup load reads from a task.
type LoadRow = (i64, i64, i64, i64, i64, String, Option<String>, i32, i32);

fn state_of(name: &str) -> Result<WorkState, DbErr> {
    WorkState::parse(name).ok_or_else(|| DbErr::Custom(format!("unknown state {name:?} in store")))
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn job_record(row: job::Model) -> JobRecord {
    JobRecord {
        id: row.id,
        params: Json(serde_json::from_str(&row.params).unwrap_or(serde_json::Value::Null)),
        title: row.title,
        jobtype: row.jobtype,
        frames: row.frames,
        batch: u32::try_from(row.batch).unwrap_or(1),
        priority: row.priority,
        retries: u32::try_from(row.retries).unwrap_or(0),
        timeout_secs: row.timeout_secs.map(non_negative),
        counts: TaskCounts {
            queued: non_negative(row.queued),
            running: non_negative(row.running),
            done: non_negative(row.done),
            failed: non_negative(row.failed),
            paused: non_negative(row.paused),
        },
        created_at: row.created_at,
        finished_at: row.finished_at,
    }
}

/// The API view of a task row.
pub fn task_view(row: &task::Model) -> Result<TaskView, DbErr> {
    Ok(TaskView {
        id: row.id,
        job_id: row.job_id,
        frame: row.frame,
        frame_end: row.frame_end,
        step: row.step,
        state: state_of(&row.state)?,
        agent: row.agent.as_deref().and_then(|a| Uuid::parse_str(a).ok()),
        attempt: u32::try_from(row.attempt).unwrap_or(0),
        exit_code: row.exit_code,
        progress: row.progress as f32,
        last_error: row.last_error.clone(),
        created_at: from_ms(row.created_at),
        started_at: row.started_at.map(from_ms),
        finished_at: row.finished_at.map(from_ms),
    })
}

impl StoreReader {
    /// A reader over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.db.backend_name()
    }

    /// A page of jobs, newest first, and the number of jobs.
    pub async fn list_jobs(&self, limit: u64, offset: u64) -> Result<(Vec<JobRecord>, u64), DbErr> {
        let conn = self.db.conn();
        let total = job::Entity::find().count(conn).await?;
        let rows = job::Entity::find()
            .order_by_desc(job::Column::Id)
            .limit(limit)
            .offset(offset)
            .all(conn)
            .await?;
        Ok((rows.into_iter().map(job_record).collect(), total))
    }

    /// One job.
    pub async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, DbErr> {
        let row = job::Entity::find_by_id(id).one(self.db.conn()).await?;
        Ok(row.map(job_record))
    }

    /// A page of a job's tasks in frame order (the job must exist; its task count is the
    /// total).
    pub async fn list_tasks(
        &self,
        job_id: JobId,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<TaskView>, DbErr> {
        let rows = task::Entity::find()
            .filter(task::Column::JobId.eq(job_id))
            .order_by_asc(task::Column::Id)
            .limit(limit)
            .offset(offset)
            .all(self.db.conn())
            .await?;
        rows.iter().map(task_view).collect()
    }

    /// One task.
    pub async fn get_task(&self, id: TaskId) -> Result<Option<task::Model>, DbErr> {
        task::Entity::find_by_id(id).one(self.db.conn()).await
    }

    /// The log index entry of an attempt.
    pub async fn get_log_index(
        &self,
        task_id: TaskId,
        attempt: u32,
    ) -> Result<Option<task_log::Model>, DbErr> {
        task_log::Entity::find_by_id((task_id, attempt as i32))
            .one(self.db.conn())
            .await
    }

    /// Unfinished jobs and tasks, every agent, and the largest ids in use.
    pub async fn load(&self) -> Result<LoadedState, DbErr> {
        let conn = self.db.conn();
        let finished = [WorkState::Done.as_str(), WorkState::Failed.as_str()];
        let jobs: Vec<JobRecord> = job::Entity::find()
            .filter(job::Column::State.is_not_in(finished))
            .order_by_asc(job::Column::Id)
            .all(conn)
            .await?
            .into_iter()
            .map(job_record)
            .collect();
        let unfinished = [
            WorkState::Queued.as_str(),
            WorkState::Running.as_str(),
            WorkState::Paused.as_str(),
        ];
        let job_ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let mut tasks = Vec::new();
        // Bounded IN lists keep every statement within the backends' parameter limits.
        for chunk in job_ids.chunks(500) {
            let rows: Vec<LoadRow> = task::Entity::find()
                .select_only()
                .columns([
                    task::Column::Id,
                    task::Column::JobId,
                    task::Column::Frame,
                    task::Column::FrameEnd,
                    task::Column::Step,
                    task::Column::State,
                    task::Column::Agent,
                    task::Column::Attempt,
                    task::Column::Failures,
                ])
                .filter(task::Column::JobId.is_in(chunk.iter().copied()))
                .filter(task::Column::State.is_in(unfinished))
                .order_by_asc(task::Column::Id)
                .into_tuple()
                .all(conn)
                .await?;
            tasks.reserve(rows.len());
            for (id, job_id, frame, frame_end, step, state, agent, attempt, failures) in rows {
                tasks.push(LoadedTask {
                    id,
                    job_id,
                    frames: FrameBatch {
                        start: frame,
                        end: frame_end,
                        step,
                    },
                    state: state_of(&state)?,
                    agent: agent.as_deref().and_then(|a| Uuid::parse_str(a).ok()),
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    failures: u32::try_from(failures).unwrap_or(0),
                });
            }
        }
        let agents = agent::Entity::find()
            .order_by_asc(agent::Column::Name)
            .all(conn)
            .await?
            .into_iter()
            .filter_map(|row| {
                Some(AgentRow {
                    id: Uuid::parse_str(&row.id).ok()?,
                    name: row.name,
                    hostname: row.hostname,
                    os: row.os,
                    cpus: u32::try_from(row.cpus).unwrap_or(0),
                    ram_mb: non_negative(row.ram_mb),
                    gpus: row.gpus,
                    tags: row.tags,
                    slots: u32::try_from(row.slots).unwrap_or(0),
                    version: row.version,
                    last_seen: row.last_seen,
                })
            })
            .collect();
        let max_job_id = job::Entity::find()
            .select_only()
            .column_as(job::Column::Id.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(conn)
            .await?
            .flatten()
            .unwrap_or(0);
        let max_task_id = task::Entity::find()
            .select_only()
            .column_as(task::Column::Id.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(conn)
            .await?
            .flatten()
            .unwrap_or(0);
        Ok(LoadedState {
            jobs,
            tasks,
            agents,
            max_job_id,
            max_task_id,
        })
    }
}
