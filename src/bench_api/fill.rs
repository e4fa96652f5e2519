//! Step 1 of `furrow bench api`: the store it measures, filled with rows the master
//! wrote.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use furrow_protocol::{CommandParams, JobId, JobSubmission, Json, Requirements};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

use super::{ApiArgs, Master};

/// Where the bench keeps its farm: a temporary data directory and, on PostgreSQL, a
/// database of its own; both removed when dropped.
pub(super) struct Site {
    pub(super) data_dir: PathBuf,
    pub(super) database_url: Option<String>,
    postgres: Option<(String, String)>,
}

impl Site {
    pub(super) async fn new(server_url: Option<&str>) -> Result<Self> {
        let data_dir =
            std::env::temp_dir().join(format!("furrow-bench-api-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir)?;
        let Some(server_url) = server_url else {
            return Ok(Self {
                data_dir,
                database_url: None,
                postgres: None,
            });
        };
        let name = format!("furrow_bench_{}", std::process::id());
        let mut options = sea_orm::ConnectOptions::new(server_url.to_string());
        options.sqlx_logging(false);
        let admin = Database::connect(options)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {server_url}"))?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        admin.close().await.ok();
        let base = server_url
            .rsplit_once('/')
            .map_or(server_url, |(base, _)| base);
        Ok(Self {
            data_dir,
            database_url: Some(format!("{base}/{name}")),
            postgres: Some((server_url.to_string(), name)),
        })
    }

    pub(super) async fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some((server_url, name)) = &self.postgres
            && let Ok(admin) = Database::connect({
                let mut options = sea_orm::ConnectOptions::new(server_url.clone());
                options.sqlx_logging(false);
                options
            })
            .await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            admin.close().await.ok();
        }
    }
}

pub(super) fn echo_job(title: &str, frames: String) -> Result<JobSubmission> {
    let params = CommandParams {
        command: vec![
            "echo".into(),
            "rendered".into(),
            "frame".into(),
            "{frame}".into(),
        ],
        shell: false,
        env: Default::default(),
        app: None,
    };
    Ok(JobSubmission::new(
        title,
        Json(serde_json::to_value(params)?),
        frames,
    ))
}

/// Waits until `done` says yes, polling every 20 ms, for at most `limit`.
pub(super) async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    while !done().await? {
        if started.elapsed() > limit {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What the fill made: the big job and a frame of it that ran (with a log).
pub(super) struct Filled {
    pub(super) big: JobId,
    pub(super) ran_frame: i64,
}

/// Step 1: a small job run for real, the big job submitted (its first tasks run), then
/// the small job's rows copied into the other jobs.
pub(super) async fn fill(site: &Site, args: &ApiArgs) -> Result<Filled> {
    let (master, _) = Master::start(site).await?;
    let agent = master.agent(site, 4)?;
    let client = &master.client;
    let small = client
        .submit_job(echo_job("small", format!("1-{}", args.small_tasks))?)
        .await?;
    wait_until(
        "the small job is done",
        Duration::from_secs(120),
        || async { Ok(client.get_job(small.id).await?.state.is_finished()) },
    )
    .await?;
    let submitted = Instant::now();
    let big = client
        .submit_job(JobSubmission {
            requirements: Requirements::default(),
            ..echo_job("big", format!("1-{}", args.big_job))?
        })
        .await?;
    println!(
        "fill: the big job's {} tasks committed in {:.2} s (submission acknowledged)",
        args.big_job,
        submitted.elapsed().as_secs_f64()
    );
    wait_until(
        "the big job's first tasks run",
        Duration::from_secs(120),
        || async { Ok(client.get_job(big.id).await?.task_counts.done >= 20) },
    )
    .await?;
    // A draining agent gives its running tasks back: the rest of the job stays queued.
    agent.stop();
    wait_until(
        "the big job's tasks come back",
        Duration::from_secs(60),
        || async { Ok(client.get_job(big.id).await?.task_counts.running == 0) },
    )
    .await?;
    let counts = client.get_job(big.id).await?.task_counts;
    let done = client
        .browse_tasks(
            big.id,
            furrow_protocol::TaskQuery {
                state: Some(furrow_protocol::WorkState::Done),
                ..furrow_protocol::TaskQuery::first(1)
            },
        )
        .await?;
    let ran_frame = done
        .items
        .first()
        .map(|t| t.frame)
        .context("no task of the big job ran")?;
    println!(
        "fill: big job {}: {} queued, {} done",
        big.id, counts.queued, counts.done
    );
    master.process.stop();

    let copies = args.jobs.saturating_sub(2);
    let started = Instant::now();
    let db = furrow_master::store::Db::open(site.database_url.as_deref(), &site.data_dir).await?;
    copy_job(&db, small.id, copies).await?;
    if db.backend() == DbBackend::Postgres {
        // Two million rows were just written: autovacuum would vacuum and analyze these
        // tables during the reads that follow, and a read waiting on it took 150-190 ms.
        // Done here instead, as a farm's routine maintenance would have done it.
        db.conn()
            .execute_unprepared("VACUUM (ANALYZE) jobs, tasks, attempts, task_logs")
            .await?;
    }
    db.close().await?;
    println!(
        "fill: {copies} copies of the small job ({} tasks) written in {:.1} s",
        copies * args.small_tasks,
        started.elapsed().as_secs_f64()
    );
    Ok(Filled {
        big: big.id,
        ran_frame,
    })
}

/// The columns of a table, in order.
async fn columns(db: &furrow_master::store::Db, table: &str) -> Result<Vec<String>> {
    let sql = match db.backend() {
        DbBackend::Postgres => format!(
            "SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' \
             AND table_schema = current_schema() ORDER BY ordinal_position"
        ),
        _ => format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
    };
    let rows = db
        .conn()
        .query_all_raw(Statement::from_string(db.backend(), sql))
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get_by_index::<String>(0)?))
        .collect()
}

/// Copies job `template` (its row, its tasks and their attempts) `copies` times after
/// the largest ids in use, in transactions of 10,000 jobs.
async fn copy_job(db: &furrow_master::store::Db, template: JobId, copies: u64) -> Result<()> {
    let conn = db.conn();
    let backend = db.backend();
    let one = |sql: String| Statement::from_string(backend, sql);
    let scalar = |row: Option<sea_orm::QueryResult>| -> Result<i64> {
        Ok(row
            .context("no row")?
            .try_get_by_index::<Option<i64>>(0)?
            .unwrap_or(0))
    };
    let max_job = scalar(
        conn.query_one_raw(one("SELECT MAX(id) FROM jobs".into()))
            .await?,
    )?;
    let max_task = scalar(
        conn.query_one_raw(one("SELECT MAX(id) FROM tasks".into()))
            .await?,
    )?;
    let first_task = scalar(
        conn.query_one_raw(one(format!(
            "SELECT MIN(id) FROM tasks WHERE job_id = {template}"
        )))
        .await?,
    )?;
    let tasks = scalar(
        conn.query_one_raw(one(format!(
            "SELECT COUNT(*) FROM tasks WHERE job_id = {template}"
        )))
        .await?,
    )?;
    // Each column as itself, but the ids, shifted for copy number k (from 1).
    let select = |table_columns: &[String], shifts: &[(&str, String)]| -> String {
        table_columns
            .iter()
            .map(|c| {
                shifts
                    .iter()
                    .find(|(name, _)| name == c)
                    .map_or(c.clone(), |(_, expr)| expr.clone())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let job_columns = columns(db, "jobs").await?;
    let task_columns = columns(db, "tasks").await?;
    let attempt_columns = columns(db, "attempts").await?;
    const CHUNK: u64 = 10_000;
    let mut from = 1;
    while from <= copies {
        let to = (from + CHUNK - 1).min(copies);
        let job_id = format!("{max_job} + k");
        let task_id = format!("{max_task} + (k - 1) * {tasks} + (task_id - {first_task}) + 1");
        let series = format!(
            "WITH RECURSIVE seq(k) AS (SELECT CAST({from} AS BIGINT) UNION ALL \
             SELECT k + 1 FROM seq WHERE k < {to}) "
        );
        let statements = [
            format!(
                "{series}INSERT INTO jobs ({}) SELECT {} FROM jobs, seq WHERE id = {template}",
                job_columns.join(", "),
                select(&job_columns, &[("id", job_id.clone())])
            ),
            format!(
                "{series}INSERT INTO tasks ({}) SELECT {} FROM tasks, seq WHERE job_id = {template}",
                task_columns.join(", "),
                select(
                    &task_columns,
                    &[
                        ("id", task_id.replace("task_id", "id")),
                        ("job_id", job_id.clone())
                    ]
                )
            ),
            format!(
                "{series}INSERT INTO attempts ({}) SELECT {} FROM attempts, seq WHERE job_id = {template}",
                attempt_columns.join(", "),
                select(
                    &attempt_columns,
                    &[("task_id", task_id.clone()), ("job_id", job_id.clone())]
                )
            ),
        ];
        let txn = sea_orm::TransactionTrait::begin(conn).await?;
        for sql in statements {
            txn.execute_unprepared(&sql).await?;
        }
        txn.commit().await?;
        from = to + 1;
    }
    if backend == DbBackend::Postgres {
        conn.execute_unprepared("ANALYZE jobs, tasks, attempts")
            .await?;
    }
    Ok(())
}
