//! Hand-written statements of the write path, valid on SQLite and PostgreSQL.
//!
//! They are written as SQL because they are the hot path: task rows are inserted as
//! multi-row `VALUES` lists of numeric literals (no per-row round trip, no parameter
//! limit), and transitions are short keyed `UPDATE`s inside one group-commit transaction.

use std::fmt::Write as _;

use furrow_protocol::{FrameBatch, TaskId, WorkState};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::records::{AgentRow, JobRow, LogIndexRow, NewJob, TaskRow};

/// Tasks per `INSERT` statement; about 60 bytes of SQL each.
const TASK_CHUNK: usize = 5_000;

/// Builds a statement from SQL with `?` placeholders, numbering them for PostgreSQL.
pub fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    match backend {
        DbBackend::Postgres => {
            let mut numbered = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    let _ = write!(numbered, "${n}");
                } else {
                    numbered.push(c);
                }
            }
            Statement::from_sql_and_values(backend, numbered, values)
        }
        _ => Statement::from_sql_and_values(backend, sql, values),
    }
}

fn opt_i64(value: Option<i64>) -> Value {
    Value::BigInt(value)
}

/// Inserts the job row.
pub async fn insert_job<C: ConnectionTrait>(
    db: &C,
    id: i64,
    job: &NewJob,
    created_at: i64,
) -> Result<(), DbErr> {
    let sql = "INSERT INTO jobs (id, title, jobtype, params, frames, batch, priority, retries, \
               timeout_secs, state, queued, running, done, failed, paused, created_at, finished_at) \
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?, NULL)";
    let timeout = job
        .timeout_secs
        .map(|secs| i64::try_from(secs).unwrap_or(i64::MAX));
    let values = vec![
        id.into(),
        job.title.clone().into(),
        job.jobtype.clone().into(),
        job.params.to_string().into(),
        job.frames.clone().into(),
        i64::from(job.batch).into(),
        job.priority.into(),
        i64::from(job.retries).into(),
        opt_i64(timeout),
        WorkState::Queued.as_str().into(),
        (job.batches.len() as i64).into(),
        created_at.into(),
    ];
    db.execute_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

/// Inserts the tasks of a job with ids `first_id..`, in chunks.
pub async fn insert_tasks<C: ConnectionTrait>(
    db: &C,
    job_id: i64,
    first_id: TaskId,
    batches: &[FrameBatch],
    created_at: i64,
) -> Result<(), DbErr> {
    let mut sql = String::with_capacity(TASK_CHUNK * 64);
    for (chunk_index, chunk) in batches.chunks(TASK_CHUNK).enumerate() {
        sql.clear();
        sql.push_str(
            "INSERT INTO tasks (id, job_id, frame, frame_end, step, state, attempt, failures, \
             progress, created_at) VALUES ",
        );
        let base = first_id + (chunk_index * TASK_CHUNK) as i64;
        for (i, batch) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            // Only integers are interpolated, so there is nothing to escape.
            let _ = write!(
                sql,
                "({},{},{},{},{},'queued',0,0,0.0,{})",
                base + i as i64,
                job_id,
                batch.start,
                batch.end,
                batch.step,
                created_at
            );
        }
        db.execute_unprepared(&sql).await?;
    }
    Ok(())
}

/// Writes a task's mutable columns.
pub async fn update_task<C: ConnectionTrait>(db: &C, row: &TaskRow) -> Result<(), DbErr> {
    let sql = "UPDATE tasks SET state = ?, agent = ?, attempt = ?, failures = ?, exit_code = ?, \
               progress = ?, last_error = ?, started_at = ?, finished_at = ? WHERE id = ?";
    let values = vec![
        row.state.as_str().into(),
        Value::String(row.agent.map(|a| a.to_string())),
        i64::from(row.attempt).into(),
        i64::from(row.failures).into(),
        Value::Int(row.exit_code),
        f64::from(row.progress).into(),
        Value::String(row.last_error.clone()),
        opt_i64(row.started_at),
        opt_i64(row.finished_at),
        row.id.into(),
    ];
    db.execute_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

/// Writes a job's counts and derived state.
pub async fn update_job<C: ConnectionTrait>(db: &C, row: &JobRow) -> Result<(), DbErr> {
    let sql = "UPDATE jobs SET state = ?, queued = ?, running = ?, done = ?, failed = ?, \
               paused = ?, finished_at = ? WHERE id = ?";
    let c = row.counts;
    let values = vec![
        c.job_state().as_str().into(),
        (c.queued as i64).into(),
        (c.running as i64).into(),
        (c.done as i64).into(),
        (c.failed as i64).into(),
        (c.paused as i64).into(),
        opt_i64(row.finished_at),
        row.id.into(),
    ];
    db.execute_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

/// Inserts or refreshes an agent.
pub async fn upsert_agent<C: ConnectionTrait>(db: &C, row: &AgentRow) -> Result<(), DbErr> {
    let sql = "INSERT INTO agents (id, name, hostname, os, cpus, ram_mb, gpus, tags, slots, \
               version, created_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
               ON CONFLICT (id) DO UPDATE SET name = excluded.name, hostname = excluded.hostname, \
               os = excluded.os, cpus = excluded.cpus, ram_mb = excluded.ram_mb, \
               gpus = excluded.gpus, tags = excluded.tags, slots = excluded.slots, \
               version = excluded.version, last_seen = excluded.last_seen";
    let values = vec![
        row.id.to_string().into(),
        row.name.clone().into(),
        row.hostname.clone().into(),
        row.os.clone().into(),
        i64::from(row.cpus).into(),
        i64::try_from(row.ram_mb).unwrap_or(i64::MAX).into(),
        row.gpus.clone().into(),
        row.tags.clone().into(),
        i64::from(row.slots).into(),
        row.version.clone().into(),
        row.last_seen.into(),
        row.last_seen.into(),
    ];
    db.execute_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

/// Inserts or refreshes a log index entry.
pub async fn upsert_log<C: ConnectionTrait>(
    db: &C,
    row: &LogIndexRow,
    now: i64,
) -> Result<(), DbErr> {
    let sql = "INSERT INTO task_logs (task_id, attempt, job_id, path, size, updated_at) \
               VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, attempt) DO UPDATE SET \
               size = excluded.size, updated_at = excluded.updated_at";
    let values = vec![
        row.task_id.into(),
        i64::from(row.attempt).into(),
        row.job_id.into(),
        row.path.clone().into(),
        i64::try_from(row.size).unwrap_or(i64::MAX).into(),
        now.into(),
    ];
    db.execute_raw(statement(db.get_database_backend(), sql, values))
        .await?;
    Ok(())
}
