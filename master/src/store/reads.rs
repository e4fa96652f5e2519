//! Reads: the service layer's queries and the startup load of unfinished work.
//!
//! Reads go straight to the pool (WAL lets them run beside the store's commits); they may
//! trail the newest transitions by one group-commit interval.

mod browse;

use std::collections::HashMap;

use furrow_protocol::{
    AttemptView, BlockedAgent, FrameBatch, FrameSet, JobId, Json, OutputView, PathMapSpec,
    PathMapView, Requirements, TaskCounts, TaskId, TaskView, WorkState,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::Db;
use super::entities::{agent, job, queue, task, task_log};
use super::records::{
    AgentRow, AgentSettingsRow, AuditRow, JobRecord, JobSettings, LoadedTask, TokenRow, UserRow,
    from_ms,
};
use super::sql::statement;
use crate::scheduler::Control;
use crate::scheduler::queues::Queue;

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
    /// All their tasks, in id order.
    pub tasks: Vec<LoadedTask>,
    /// How the finished jobs that unfinished ones depend on ended.
    pub ended_parents: HashMap<JobId, WorkState>,
    /// The queues (without the implicit root unless it was changed).
    pub queues: Vec<Queue>,
    /// Every known agent.
    pub agents: Vec<AgentRow>,
    /// Settings made through the API, per agent.
    pub agent_settings: HashMap<Uuid, AgentSettingsRow>,
    /// Largest job id in use.
    pub max_job_id: JobId,
    /// Largest task id in use.
    pub max_task_id: TaskId,
}

/// The columns the startup load reads from a task.
#[derive(Debug, FromQueryResult)]
struct LoadRow {
    id: i64,
    job_id: i64,
    frame: i64,
    frame_end: i64,
    step: i64,
    state: String,
    agent: Option<String>,
    attempt: i32,
    failures: i32,
    exit_code: Option<i32>,
    last_error: Option<String>,
    started_at: Option<i64>,
    gpus: Option<String>,
    ram_mb: i64,
}

/// States a task can wait in; untouched tasks in them are rebuilt from the frame
/// specification rather than read row by row.
const WAITING: [&str; 3] = ["queued", "paused", "blocked"];

/// GPU indices from their stored text.
fn parse_gpus(text: Option<&str>) -> Vec<u32> {
    text.map(|t| t.split(',').filter_map(|g| g.trim().parse().ok()).collect())
        .unwrap_or_default()
}

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
        jobtype_version: u32::try_from(row.jobtype_version).unwrap_or(1),
        frames: row.frames,
        batch: u32::try_from(row.batch).unwrap_or(1),
        priority: row.priority,
        retries: u32::try_from(row.retries).unwrap_or(0),
        timeout_secs: row.timeout_secs.map(non_negative),
        settings: JobSettings {
            weight: u32::try_from(row.weight).unwrap_or(1),
            queue: row.queue,
            min_agents: u32::try_from(row.min_agents).unwrap_or(0),
            max_agents: row.max_agents.and_then(|m| u32::try_from(m).ok()),
            requirements: serde_json::from_str::<Requirements>(&row.requirements)
                .unwrap_or_default(),
            stall_timeout_secs: row.stall_timeout_secs.map(non_negative),
            depends_on: serde_json::from_str(&row.depends_on).unwrap_or_default(),
            depends_per_frame: row.depends_per_frame != 0,
            notes: row.notes,
            user: row.user_name,
            blocklist_after: u32::try_from(row.blocklist_after).unwrap_or(0),
        },
        control: Control::parse(&row.control),
        blocklist: serde_json::from_str::<Vec<BlockedAgent>>(&row.blocklist).unwrap_or_default(),
        counts: TaskCounts {
            queued: non_negative(row.queued),
            running: non_negative(row.running),
            done: non_negative(row.done),
            failed: non_negative(row.failed),
            paused: non_negative(row.paused),
            blocked: non_negative(row.blocked),
            cancelled: non_negative(row.cancelled),
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
    /// The database.
    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    /// A reader over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.db.backend_name()
    }

    /// A page of jobs, newest first, and the number of jobs (kept, not counted).
    pub async fn list_jobs(&self, limit: u64, offset: u64) -> Result<(Vec<JobRecord>, u64), DbErr> {
        let conn = self.db.conn();
        let total = self.db.job_count();
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
                "SELECT MIN(id), MAX(id), state FROM (SELECT id, state, id - ROW_NUMBER() OVER \
                 (PARTITION BY state ORDER BY id) AS run FROM tasks WHERE job_id = ? AND \
                 state IN ('queued', 'paused', 'blocked') AND attempt = 0 AND failures = 0 \
                 AND last_error IS NULL) AS untouched GROUP BY state, run",
                vec![job.id.into()],
            ))
            .await?;
        let start = tasks.len();
        for run in runs {
            let low: i64 = run.try_get_by_index(0)?;
            let high: i64 = run.try_get_by_index(1)?;
            let state: String = run.try_get_by_index(2)?;
            let state = state_of(&state)?;
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
                    state,
                    agent: None,
                    attempt: 0,
                    failures: 0,
                    exit_code: None,
                    last_error: None,
                    started_at: None,
                    gpus: Vec::new(),
                    ram_mb: 0,
                });
            }
        }
        self.load_rows(job.id, true, tasks).await?;
        tasks[start..].sort_unstable_by_key(|task| task.id);
        Ok(())
    }

    /// Appends the tasks of a job read row by row; with `touched_only`, all but the
    /// untouched waiting ones (which the caller rebuilt).
    async fn load_rows(
        &self,
        job_id: JobId,
        touched_only: bool,
        tasks: &mut Vec<LoadedTask>,
    ) -> Result<(), DbErr> {
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
                task::Column::ExitCode,
                task::Column::LastError,
                task::Column::StartedAt,
                task::Column::Gpus,
                task::Column::RamMb,
            ])
            .filter(task::Column::JobId.eq(job_id));
        if touched_only {
            query = query.filter(
                Condition::any()
                    .add(task::Column::State.is_not_in(WAITING))
                    .add(task::Column::Attempt.gt(0))
                    .add(task::Column::Failures.gt(0))
                    .add(task::Column::LastError.is_not_null()),
            );
        }
        let rows: Vec<LoadRow> = query
            .order_by_asc(task::Column::Id)
            .into_model()
            .all(self.db.conn())
            .await?;
        tasks.reserve(rows.len());
        for LoadRow {
            id,
            job_id,
            frame,
            frame_end,
            step,
            state,
            agent,
            attempt,
            failures,
            exit_code,
            last_error,
            started_at,
            gpus,
            ram_mb,
        } in rows
        {
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
                exit_code,
                last_error,
                started_at,
                gpus: parse_gpus(gpus.as_deref()),
                ram_mb: u64::try_from(ram_mb).unwrap_or(0),
            });
        }
        Ok(())
    }

    /// Every recorded attempt of a task, oldest first.
    pub async fn attempts(&self, task_id: TaskId) -> Result<Vec<AttemptView>, DbErr> {
        let rows = self
            .db
            .conn()
            .query_all_raw(statement(
                self.db.backend(),
                "SELECT attempt, agent, started_at, finished_at, exit_code, outcome, error \
                 FROM attempts WHERE task_id = ? ORDER BY attempt",
                vec![task_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let attempt: i32 = row.try_get_by_index(0)?;
                let agent: Option<String> = row.try_get_by_index(1)?;
                let started_at: Option<i64> = row.try_get_by_index(2)?;
                let finished_at: i64 = row.try_get_by_index(3)?;
                Ok(AttemptView {
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    agent: agent.as_deref().and_then(|a| Uuid::parse_str(a).ok()),
                    started_at: started_at.map(from_ms),
                    finished_at: Some(from_ms(finished_at)),
                    exit_code: row.try_get_by_index(4)?,
                    outcome: row.try_get_by_index(5)?,
                    error: row.try_get_by_index(6)?,
                })
            })
            .collect()
    }

    /// Every stored version of every declarative job type: (name, version, source).
    pub async fn jobtypes(&self) -> Result<Vec<(String, u32, String)>, DbErr> {
        let rows = self
            .db
            .conn()
            .query_all_raw(statement(
                self.db.backend(),
                "SELECT name, version, source FROM jobtypes ORDER BY name, version",
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let version: i64 = row.try_get_by_index(1)?;
                Ok((
                    row.try_get_by_index(0)?,
                    u32::try_from(version).unwrap_or(0),
                    row.try_get_by_index(2)?,
                ))
            })
            .collect()
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, DbErr> {
        let rows = self
            .db
            .conn()
            .query_all_raw(statement(
                self.db.backend(),
                "SELECT name, role, password_hash, created_at FROM users ORDER BY name",
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UserRow {
                    name: row.try_get_by_index(0)?,
                    role: row.try_get_by_index(1)?,
                    password_hash: row.try_get_by_index(2)?,
                    created_at: row.try_get_by_index(3)?,
                })
            })
            .collect()
    }

    /// Every token (hashes only), oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, DbErr> {
        let rows = self
            .db
            .conn()
            .query_all_raw(statement(
                self.db.backend(),
                "SELECT id, hash, kind, user_name, label, agent_id, created_at, expires_at, \
                 revoked_at FROM tokens ORDER BY created_at, id",
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let agent: Option<String> = row.try_get_by_index(5)?;
                Ok(TokenRow {
                    id: row.try_get_by_index(0)?,
                    hash: row.try_get_by_index(1)?,
                    kind: row.try_get_by_index(2)?,
                    user: row.try_get_by_index(3)?,
                    label: row.try_get_by_index(4)?,
                    agent_id: agent.and_then(|a| Uuid::parse_str(&a).ok()),
                    created_at: row.try_get_by_index(6)?,
                    expires_at: row.try_get_by_index(7)?,
                    revoked_at: row.try_get_by_index(8)?,
                })
            })
            .collect()
    }

    /// A page of the audit log, newest first, and its size.
    pub async fn audit(&self, limit: u64, offset: u64) -> Result<(Vec<AuditRow>, u64), DbErr> {
        let backend = self.db.backend();
        let conn = self.db.conn();
        let total: i64 = match conn
            .query_one_raw(statement(backend, "SELECT COUNT(*) FROM audit", Vec::new()))
            .await?
        {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        let rows = conn
            .query_all_raw(statement(
                backend,
                "SELECT id, at, user_name, action, target, peer FROM audit ORDER BY id DESC \
                 LIMIT ? OFFSET ?",
                vec![
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                    i64::try_from(offset).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(AuditRow {
                    id: row.try_get_by_index(0)?,
                    at: row.try_get_by_index(1)?,
                    user: row.try_get_by_index(2)?,
                    action: row.try_get_by_index(3)?,
                    target: row.try_get_by_index(4)?,
                    peer: row.try_get_by_index(5)?,
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        Ok((rows, u64::try_from(total).unwrap_or(0)))
    }

    /// The largest audit id stored.
    pub async fn max_audit_id(&self) -> Result<i64, DbErr> {
        let row = self
            .db
            .conn()
            .query_one_raw(statement(
                self.db.backend(),
                "SELECT MAX(id) FROM audit",
                Vec::new(),
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get_by_index::<Option<i64>>(0)?.unwrap_or(0),
            None => 0,
        })
    }

    /// Every path map, oldest first.
    pub async fn path_maps(&self) -> Result<Vec<PathMapView>, DbErr> {
        let rows = self
            .db
            .conn()
            .query_all_raw(statement(
                self.db.backend(),
                "SELECT id, linux, windows, macos, tag FROM path_maps ORDER BY id",
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PathMapView {
                    id: row.try_get_by_index(0)?,
                    map: PathMapSpec {
                        linux: row.try_get_by_index(1)?,
                        windows: row.try_get_by_index(2)?,
                        macos: row.try_get_by_index(3)?,
                        tag: row.try_get_by_index(4)?,
                    },
                })
            })
            .collect()
    }

    /// The files a job produced, in frame order, and whether each frame has a preview.
    pub async fn outputs(&self, job_id: JobId) -> Result<Vec<OutputView>, DbErr> {
        let rows = self
            .db
            .conn()
            .query_all_raw(statement(
                self.db.backend(),
                "SELECT o.task_id, o.frame, o.path, o.size, o.created_at, \
                 (SELECT COUNT(*) FROM previews p WHERE p.job_id = o.job_id AND p.frame = o.frame) \
                 FROM outputs o WHERE o.job_id = ? ORDER BY o.frame, o.path",
                vec![job_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let size: i64 = row.try_get_by_index(3)?;
                let created_at: i64 = row.try_get_by_index(4)?;
                let previews: i64 = row.try_get_by_index(5)?;
                Ok(OutputView {
                    task_id: row.try_get_by_index(0)?,
                    frame: row.try_get_by_index(1)?,
                    path: row.try_get_by_index(2)?,
                    size: u64::try_from(size).unwrap_or(0),
                    preview: previews > 0,
                    created_at: from_ms(created_at),
                })
            })
            .collect()
    }

    /// The preview of a frame: its MIME type and bytes.
    pub async fn preview(
        &self,
        job_id: JobId,
        frame: i64,
    ) -> Result<Option<(String, Vec<u8>)>, DbErr> {
        let row = self
            .db
            .conn()
            .query_one_raw(statement(
                self.db.backend(),
                "SELECT mime, data FROM previews WHERE job_id = ? AND frame = ?",
                vec![job_id.into(), frame.into()],
            ))
            .await?;
        row.map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
            .transpose()
    }

    /// Every task of a job (to bring a finished job back for a rerun), in id order.
    pub async fn job_tasks(&self, job: &JobRecord) -> Result<Vec<LoadedTask>, DbErr> {
        let mut tasks = Vec::new();
        self.load_job_tasks(job, &mut tasks).await?;
        Ok(tasks)
    }

    /// Unfinished jobs and tasks, every agent, and the largest ids in use.
    pub async fn load(&self) -> Result<LoadedState, DbErr> {
        let conn = self.db.conn();
        let finished = [
            WorkState::Done.as_str(),
            WorkState::Failed.as_str(),
            WorkState::Cancelled.as_str(),
        ];
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
        let mut ended_parents = HashMap::new();
        for job in &jobs {
            for parent in &job.settings.depends_on {
                if jobs.iter().any(|j| j.id == *parent) || ended_parents.contains_key(parent) {
                    continue;
                }
                if let Some(record) = self.get_job(*parent).await? {
                    ended_parents.insert(*parent, record.counts.job_state());
                }
            }
        }
        let queues = queue::Entity::find()
            .order_by_asc(queue::Column::Path)
            .all(conn)
            .await?
            .into_iter()
            .map(|row| Queue {
                path: row.path,
                priority: row.priority,
                weight: u32::try_from(row.weight).unwrap_or(1).max(1),
                min_agents: u32::try_from(row.min_agents).unwrap_or(0),
                max_agents: row.max_agents.and_then(|m| u32::try_from(m).ok()),
            })
            .collect();
        let mut agent_settings = HashMap::new();
        let agents = agent::Entity::find()
            .order_by_asc(agent::Column::Name)
            .all(conn)
            .await?
            .into_iter()
            .filter_map(|row| {
                let id = Uuid::parse_str(&row.id).ok()?;
                agent_settings.insert(
                    id,
                    AgentSettingsRow {
                        enabled: row.enabled != 0,
                        tags: row
                            .tags_override
                            .as_deref()
                            .and_then(|t| serde_json::from_str(t).ok()),
                    },
                );
                Some(AgentRow {
                    id,
                    name: row.name,
                    hostname: row.hostname,
                    os: row.os,
                    cpus: u32::try_from(row.cpus).unwrap_or(0),
                    ram_mb: non_negative(row.ram_mb),
                    gpus: row.gpus,
                    tags: row.tags,
                    software: row.software,
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
            ended_parents,
            queues,
            agents,
            agent_settings,
            max_job_id,
            max_task_id,
        })
    }
}
