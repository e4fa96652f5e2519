//! Reads: the service layer's queries and the startup load of unfinished work.
//!
//! Reads go straight to the pool (WAL lets them run beside the store's commits); they may
//! trail the newest transitions by one group-commit interval.

use furrow_protocol::{FrameBatch, FrameSet, JobId, Json, TaskCounts, TaskId, TaskView, WorkState};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::Db;
use super::entities::{agent, job, task, task_log};
use super::records::{AgentRow, JobRecord, LoadedTask, from_ms};
use super::sql::statement;

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

    /// Appends the unfinished tasks of `job` to `tasks`.
    ///
    /// A large job is mostly tasks that were never assigned; those are not read row by
    /// row but rebuilt from the job's frame specification, with the database returning
    /// only the id runs where they are (so a million untouched tasks cost one row). Tasks
    /// that have been assigned at least once are read in full.
    async fn load_job_tasks(
        &self,
        job: &JobRecord,
        tasks: &mut Vec<LoadedTask>,
    ) -> Result<(), DbErr> {
        let conn = self.db.conn();
        let backend = self.db.backend();
        let first_id = conn
            .query_one_raw(statement(
                backend,
                "SELECT MIN(id) FROM tasks WHERE job_id = ?",
                vec![job.id.into()],
            ))
            .await?
            .and_then(|row| row.try_get_by_index::<Option<i64>>(0).ok().flatten());
        let batches = job
            .frames
            .parse::<FrameSet>()
            .ok()
            .map(|set| set.batches(job.batch).collect::<Vec<_>>())
            .filter(|batches| batches.len() as u64 == job.counts.total());
        let (Some(first_id), Some(batches)) = (first_id, batches) else {
            return self.load_rows(job.id, false, tasks).await;
        };
        let runs = conn
            .query_all_raw(statement(
                backend,
                "SELECT MIN(id), MAX(id) FROM (SELECT id, id - ROW_NUMBER() OVER (ORDER BY id) \
                 AS run FROM tasks WHERE job_id = ? AND state = 'queued' AND attempt = 0) \
                 AS untouched GROUP BY run",
                vec![job.id.into()],
            ))
            .await?;
        let start = tasks.len();
        for run in runs {
            let low: i64 = run.try_get_by_index(0)?;
            let high: i64 = run.try_get_by_index(1)?;
            for id in low..=high {
                let Some(frames) = usize::try_from(id - first_id)
                    .ok()
                    .and_then(|i| batches.get(i))
                else {
                    // The rows do not match the specification: read them all instead.
                    tasks.truncate(start);
                    return self.load_rows(job.id, false, tasks).await;
                };
                tasks.push(LoadedTask {
                    id,
                    job_id: job.id,
                    frames: *frames,
                    state: WorkState::Queued,
                    agent: None,
                    attempt: 0,
                    failures: 0,
                });
            }
        }
        self.load_rows(job.id, true, tasks).await?;
        tasks[start..].sort_unstable_by_key(|task| task.id);
        Ok(())
    }

    /// Appends the unfinished tasks of a job read row by row; only those assigned at
    /// least once when `touched_only`.
    async fn load_rows(
        &self,
        job_id: JobId,
        touched_only: bool,
        tasks: &mut Vec<LoadedTask>,
    ) -> Result<(), DbErr> {
        let unfinished = [
            WorkState::Queued.as_str(),
            WorkState::Running.as_str(),
            WorkState::Paused.as_str(),
        ];
        let mut query = task::Entity::find()
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
            .filter(task::Column::JobId.eq(job_id))
            .filter(task::Column::State.is_in(unfinished));
        if touched_only {
            query = query.filter(
                Condition::any()
                    .add(task::Column::State.ne(WorkState::Queued.as_str()))
                    .add(task::Column::Attempt.gt(0)),
            );
        }
        let rows: Vec<LoadRow> = query
            .order_by_asc(task::Column::Id)
            .into_tuple()
            .all(self.db.conn())
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
        Ok(())
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
        let mut tasks = Vec::new();
        for job in &jobs {
            self.load_job_tasks(job, &mut tasks).await?;
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
