//! The `Store` actor: the only writer to the database.
//!
//! Submissions run in their own transaction and are answered only after it commits.
//! Everything else (task transitions, job counts, agents, log index entries, bulk
//! changes) is buffered, coalesced per row (the newest row wins, bulk writes keep their
//! place among the rows) and written in one transaction per group commit. An idle store
//! commits at once; while a commit runs, what arrives waits and goes into the next one
//! together (leader/follower group commit), so batches grow with the load and a quiet
//! farm pays no fixed delay. Under load, commits start at most every [`COMMIT_GAP`]:
//! a commit of a few rows costs nearly what one of a hundred does (its statements, the
//! round trips to the database, the log pages written), so a farm of short tasks that
//! would otherwise commit once per transition commits a batch of them instead. All writes
//! take one async lock, so SQLite never sees two writers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use furrow_protocol::{ApiError, FrameBatch, JobId, TaskCounts, TaskId};
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::Db;
use super::records::{
    AgentRow, AttemptRow, BulkWrite, JobRecord, JobRow, LogIndexRow, NewJob, OutputRows,
    PreviewRow, TaskRow, now_ms,
};
use super::sql;
use crate::changes::ChangeFeed;
use crate::scheduler::{Control, Write};

/// The least time between the starts of two group commits. A store idle for longer
/// commits at once; a busy one waits out the rest of the gap, gathering rows. Every
/// commit rewrites the pages its rows share (the job's row, the ends of the attempt and
/// log indexes) and takes SQLite's locks: at 3 ms rather than 1 ms, a four-slot farm of
/// short tasks spent 15% less of the master's CPU, and with two tasks waiting per slot
/// no slot waits for the later refill.
pub const COMMIT_GAP: Duration = Duration::from_millis(3);

/// Pause before retrying a failed group commit.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// While writes keep failing, how often the failure is logged again.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// The store's connection: the only one that writes. See [`Db::connect_writer`].
struct Writer {
    db: Db,
    conn: Option<sea_orm::DatabaseConnection>,
}

impl Writer {
    /// The connection, opened first when there is none.
    async fn connection(&mut self) -> Result<&sea_orm::DatabaseConnection, DbErr> {
        if self.conn.is_none() {
            self.conn = Some(self.db.connect_writer().await?);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| DbErr::Custom("no writer connection".into()))
    }

    /// Begins a transaction, opening the connection first when there is none.
    async fn begin(&mut self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        self.connection().await?.begin().await
    }

    /// Drops the connection after a failed write: a later write opens a fresh one.
    async fn discard(&mut self) {
        if let Some(conn) = self.conn.take()
            && tokio::time::timeout(Duration::from_secs(5), conn.close())
                .await
                .is_err()
        {
            warn!("closing the failed writer connection timed out");
        }
    }
}

/// Why the store cannot write, while it cannot: shared with [`StoreStatus`] readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// When writes began to fail (milliseconds since the epoch).
    pub since_ms: i64,
    /// The latest error.
    pub error: String,
    /// Failed attempts since then.
    pub failures: u64,
}

/// The store's write health, updated by every commit; a change nudges the dashboard.
#[derive(Clone)]
struct WriteHealth(Arc<std::sync::Mutex<WriteState>>, ChangeFeed);

#[derive(Default)]
struct WriteState {
    failure: Option<StoreFailure>,
    last_logged: Option<std::time::Instant>,
}

impl WriteHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a failed write, logging it the first time and then every
    /// [`FAILURE_LOG_EVERY`].
    fn failed(&self, what: &str, error: &DbErr, rows: usize) {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        if state.failure.is_none() {
            self.1.bump();
        }
        let failure = state.failure.get_or_insert_with(|| StoreFailure {
            since_ms: now_ms(),
            error: String::new(),
            failures: 0,
        });
        failure.error = error.to_string();
        failure.failures += 1;
        let failures = failure.failures;
        if state
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_EVERY)
        {
            state.last_logged = Some(now);
            error!(what, error = %error, rows, failures, "store cannot write; retrying");
        }
    }

    /// Records a successful write.
    fn succeeded(&self) {
        let mut state = self.lock();
        if let Some(failure) = state.failure.take() {
            state.last_logged = None;
            self.1.bump();
            info!(
                failures = failure.failures,
                down_ms = now_ms().saturating_sub(failure.since_ms),
                "store writes again"
            );
        }
    }

    fn failure(&self) -> Option<StoreFailure> {
        self.lock().failure.clone()
    }
}

/// Asks the store whether it can write; answered by the actor itself, so an answer also
/// shows it is alive.
#[derive(Message)]
#[rtype(result = "Option<StoreFailure>")]
pub struct StoreStatus;

/// Inserts a job and its tasks; answers after the transaction committed.
#[derive(Message)]
#[rtype(result = "Result<InsertedJob, ApiError>")]
pub struct InsertJob(pub NewJob);

/// A committed submission.
#[derive(Debug)]
pub struct InsertedJob {
    /// The stored job.
    pub record: JobRecord,
    /// Id of its first task; its tasks have consecutive ids in frame order.
    pub first_task_id: TaskId,
    /// The frames of each task, in id order.
    pub batches: Vec<FrameBatch>,
}

/// Writes of the scheduler, in the order it made them, committed in that order in one
/// transaction. With `notify`, the sender learns when they (and everything before them)
/// are committed, in the next group commit, which is not hastened.
///
/// It has no answer of its own and is always sent with `do_send`: a `send` that waits on
/// a full mailbox could be overtaken by a later `do_send`, and an older row would then
/// overwrite a newer one. Sent one way only, batches reach the store in order.
#[derive(Message, Default)]
#[rtype(result = "()")]
pub struct CommitBatch {
    /// The writes, oldest first.
    pub writes: Vec<Write>,
    /// Told once the writes are committed.
    pub notify: Option<Notify>,
}

/// Who learns that a batch was committed.
#[derive(Debug)]
pub enum Notify {
    /// One waiter.
    Once(oneshot::Sender<Result<(), ApiError>>),
    /// A numbered ticket on a channel: a sender with many batches in flight reads the
    /// numbers in commit order from one stream instead of waiting on each.
    Ticket(mpsc::UnboundedSender<TicketNews>, u64),
}

/// What a ticket's reader hears: `Ok(n)` once every batch up to ticket `n` is committed;
/// `Err((n, error))` when a commit holding ticket `n` failed. A failed batch is retried
/// until it commits, so its `Ok` follows; the error lets those who answer a person
/// say at once that the change is not stored yet.
pub type TicketNews = Result<u64, (u64, ApiError)>;

impl Notify {
    fn send(self, result: Result<(), ApiError>) {
        match self {
            Notify::Once(sender) => {
                let _ = sender.send(result);
            }
            // A store that stops drops the channel, which its reader sees.
            Notify::Ticket(sender, ticket) => {
                let _ = sender.send(result.map(|()| ticket).map_err(|e| (ticket, e)));
            }
        }
    }
}

impl From<oneshot::Sender<Result<(), ApiError>>> for Notify {
    fn from(sender: oneshot::Sender<Result<(), ApiError>>) -> Self {
        Notify::Once(sender)
    }
}

/// Reserves `n` consecutive task ids (for a job whose frames change); answers with the
/// first.
#[derive(Message)]
#[rtype(result = "i64")]
pub struct AllocateTaskIds(pub u64);

impl Handler<AllocateTaskIds> for Store {
    type Result = i64;

    fn handle(&mut self, AllocateTaskIds(n): AllocateTaskIds, _ctx: &mut Context<Self>) -> i64 {
        let first = self.next_task_id;
        self.next_task_id += i64::try_from(n).unwrap_or(i64::MAX / 4);
        first
    }
}

/// Persists an agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertAgent(pub AgentRow);

/// Persists log index entries.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertLogIndex(pub Vec<LogIndexRow>);

/// Commits everything buffered so far; answers once it is durable.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Flush;

/// Rows coalesced per key (the newest wins), then the bulk writes made after them. A
/// bulk write closes its segment: rows made after it go into the next one, so they are
/// written after it.
#[derive(Default)]
struct Segment {
    tasks: HashMap<TaskId, TaskRow>,
    jobs: HashMap<JobId, JobRow>,
    agents: HashMap<Uuid, AgentRow>,
    logs: HashMap<(TaskId, u32), LogIndexRow>,
    attempts: Vec<AttemptRow>,
    outputs: Vec<OutputRows>,
    previews: HashMap<(JobId, i64), PreviewRow>,
    bulk: Vec<BulkWrite>,
}

impl Segment {
    /// Adds the segment's rows (not its bulk writes) to `script`.
    fn write_rows(&self, script: &mut sql::Script, now: i64) {
        sql::update_tasks(script, self.tasks.values());
        sql::update_jobs(script, self.jobs.values());
        sql::upsert_agents(script, self.agents.values());
        sql::upsert_logs(script, self.logs.values(), now);
        sql::upsert_attempts(script, &self.attempts);
        sql::upsert_outputs(script, &self.outputs);
        for row in self.previews.values() {
            sql::upsert_preview(script, row, now);
        }
    }

    fn rows(&self) -> usize {
        self.tasks.len()
            + self.jobs.len()
            + self.agents.len()
            + self.logs.len()
            + self.attempts.len()
            + self.outputs.len()
            + self.previews.len()
            + self.bulk.len()
    }
}

#[derive(Default)]
struct Pending {
    segments: Vec<Segment>,
    /// Callers of `Flush`: they want a commit now.
    waiters: Vec<oneshot::Sender<Result<(), ApiError>>>,
    /// Senders of a `CommitBatch` with `notify`: answered by the next commit, whenever
    /// it runs.
    notify: Vec<Notify>,
}

impl Pending {
    fn rows(&self) -> usize {
        self.segments.iter().map(Segment::rows).sum()
    }

    fn is_empty(&self) -> bool {
        self.rows() == 0 && self.waiters.is_empty() && self.notify.is_empty()
    }

    /// The segment rows go into now.
    fn open(&mut self) -> &mut Segment {
        if self.segments.last().is_none_or(|s| !s.bulk.is_empty()) {
            self.segments.push(Segment::default());
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn push(&mut self, write: Write) {
        match write {
            Write::Task(row) => {
                self.open().tasks.insert(row.id, row);
            }
            Write::Job(row) => {
                self.open().jobs.insert(row.id, row);
            }
            Write::Bulk(bulk) => {
                self.open().bulk.push(bulk);
            }
            Write::Attempt(row) => {
                self.open().attempts.push(row);
            }
            Write::Outputs(rows) => {
                self.open().outputs.push(rows);
            }
            Write::Preview(row) => {
                self.open().previews.insert((row.job_id, row.frame), row);
            }
        }
    }

    /// Puts back the writes of a failed commit before the newer ones buffered since.
    fn merge_older(&mut self, mut older: Pending) {
        older.segments.append(&mut self.segments);
        self.segments = older.segments;
        self.waiters.extend(older.waiters);
        self.notify.extend(older.notify);
    }
}

/// The store actor. See the module documentation.
pub struct Store {
    db: Db,
    writer: Arc<Mutex<Writer>>,
    health: WriteHealth,
    pending: Pending,
    committing: bool,
    commit_scheduled: bool,
    /// When the latest group commit started.
    last_commit: Option<Instant>,
    next_job_id: JobId,
    next_task_id: TaskId,
    changes: ChangeFeed,
    /// A WAL checkpoint is running (SQLite only).
    checkpointing: bool,
    /// A write probe is running.
    probing: bool,
    /// The last checkpoint failed.
    checkpoint_failing: bool,
}

/// How often SQLite's write-ahead log is folded back into the database file, off the
/// commit path (see [`Store::checkpoint`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

impl Store {
    /// A store writing to `db`, allocating ids above the given maxima.
    pub fn new(db: Db, max_job_id: JobId, max_task_id: TaskId, changes: ChangeFeed) -> Self {
        Self {
            writer: Arc::new(Mutex::new(Writer {
                db: db.clone(),
                conn: None,
            })),
            health: WriteHealth(Arc::default(), changes.clone()),
            db,
            pending: Pending::default(),
            committing: false,
            commit_scheduled: false,
            last_commit: None,
            next_job_id: max_job_id + 1,
            next_task_id: max_task_id + 1,
            changes,
            checkpointing: false,
            probing: false,
            checkpoint_failing: false,
        }
    }

    /// Folds SQLite's write-ahead log back into the database file without waiting for
    /// readers or writers (a passive checkpoint), on a connection of its own. Left to
    /// SQLite, the commit that crosses the log's threshold would do it, and that commit
    /// (and every transition waiting on it) would take several milliseconds longer.
    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.checkpointing || self.db.backend() != sea_orm::DbBackend::Sqlite {
            return;
        }
        self.checkpointing = true;
        let db = self.db.clone();
        let work = async move {
            db.conn()
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
        };
        ctx.spawn(work.into_actor(self).map(|result, act, _| {
            act.checkpointing = false;
            // Logged when it begins and stops failing, not every 100 ms.
            match result {
                Err(e) if !act.checkpoint_failing => {
                    act.checkpoint_failing = true;
                    warn!(error = %e, "wal checkpoint failed");
                }
                Ok(_) if act.checkpoint_failing => {
                    act.checkpoint_failing = false;
                    info!("wal checkpoint works again");
                }
                _ => {}
            }
        }));
    }

    /// While writes fail and nothing waits to be written (a refused submission leaves
    /// nothing behind), writes a probe row, so the store learns by itself when the
    /// database can write again.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing
            || self.committing
            || !self.pending.is_empty()
            || self.health.failure().is_none()
        {
            return;
        }
        self.probing = true;
        let (writer, health) = (self.writer.clone(), self.health.clone());
        let work = async move {
            match probe(&writer).await {
                Ok(()) => health.succeeded(),
                Err(e) => health.failed("write probe", &e, 0),
            }
        };
        ctx.spawn(work.into_actor(self).map(|(), act, _| act.probing = false));
    }

    /// Starts a group commit now, or leaves it to the one in flight: rows that arrive
    /// while a commit runs wait for it and go together into the next. An idle store
    /// commits at once, so a lone transition never waits for company; a busy one starts
    /// the next commit [`COMMIT_GAP`] after the previous one started.
    fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.commit_scheduled || self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        match self.last_commit.map(|at| at + COMMIT_GAP) {
            Some(due) if due > now => {
                self.commit_scheduled = true;
                ctx.run_later(due - now, |act, ctx| {
                    act.commit_scheduled = false;
                    act.schedule_commit(ctx);
                });
            }
            _ => self.commit_now(ctx),
        }
    }

    fn commit_now(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        self.committing = true;
        self.last_commit = Some(Instant::now());
        let mut batch = std::mem::take(&mut self.pending);
        let waiters = std::mem::take(&mut batch.waiters);
        let notify = std::mem::take(&mut batch.notify);
        let writer = self.writer.clone();
        let health = self.health.clone();
        let work = async move {
            let result = commit(&writer, &batch).await;
            match &result {
                Ok(_) => health.succeeded(),
                Err(e) => health.failed("group commit", e, batch.rows()),
            }
            (result, batch)
        };
        ctx.spawn(work.into_actor(self).map(move |(result, batch), act, ctx| {
            act.committing = false;
            match result {
                Ok(rows) => {
                    debug!(rows, "group commit");
                    for waiter in waiters {
                        let _ = waiter.send(Ok(()));
                    }
                    for notify in notify {
                        notify.send(Ok(()));
                    }
                    if rows > 0 {
                        act.changes.bump();
                    }
                    act.schedule_commit(ctx);
                }
                Err(e) => {
                    // The writes stay and are retried until they commit. Those who made
                    // a change in memory first (the scheduler, the registry) hear now
                    // that it is not stored yet, and their messages (results agents keep
                    // until stored, assignments) wait for the commit. Callers of `Flush`
                    // wait for it too: they change their own state (the access cache:
                    // a revoked token) only once the write is durable, and answering
                    // them now would leave that state behind the database.
                    let error = ApiError::unavailable(format!(
                        "the change is made but not stored yet: the database cannot \
                         write ({e}); it is retried until it can"
                    ));
                    let mut batch = batch;
                    batch.waiters = waiters;
                    batch.notify = notify
                        .into_iter()
                        .filter_map(|notify| match notify {
                            Notify::Once(sender) => {
                                let _ = sender.send(Err(error.clone()));
                                None
                            }
                            Notify::Ticket(sender, ticket) => {
                                let _ = sender.send(Err((ticket, error.clone())));
                                Some(Notify::Ticket(sender, ticket))
                            }
                        })
                        .collect();
                    act.pending.merge_older(batch);
                    act.commit_scheduled = true;
                    ctx.run_later(RETRY_DELAY, |act, ctx| {
                        act.commit_scheduled = false;
                        act.schedule_commit(ctx);
                    });
                }
            }
        }));
    }
}

async fn commit(writer: &Mutex<Writer>, batch: &Pending) -> Result<usize, DbErr> {
    let rows = batch.rows();
    if rows == 0 {
        return Ok(0);
    }
    let mut writer = writer.lock().await;
    let result = write_batch(&mut writer, batch).await;
    match &result {
        Ok(jobs) => writer.db.jobs_changed(*jobs),
        Err(_) => writer.discard().await,
    }
    result.map(|_| rows)
}

/// Writes one row, to learn whether the database can write again while nothing else is
/// waiting to be written.
async fn probe(writer: &Mutex<Writer>) -> Result<(), DbErr> {
    let mut writer = writer.lock().await;
    let result = async {
        let txn = writer.begin().await?;
        txn.execute_unprepared(&format!(
            "INSERT INTO master_state (key, value, updated_at) VALUES ('write_probe', '', {now}) \
             ON CONFLICT (key) DO UPDATE SET updated_at = {now}",
            now = now_ms()
        ))
        .await?;
        txn.commit().await
    }
    .await;
    if result.is_err() {
        writer.discard().await;
    }
    result
}

/// Writes `batch` in one transaction; returns the change it made to the number of jobs.
///
/// Rows only (the usual batch) go as one script: on SQLite a single call to the
/// database's thread, `BEGIN` and `COMMIT` included. Bulk writes run on their own after
/// the rows written before them (a job deletion needs its count of deleted rows).
async fn write_batch(writer: &mut Writer, batch: &Pending) -> Result<i64, DbErr> {
    let now = now_ms();
    let conn = writer.connection().await?;
    let mut script = sql::Script::new(conn.get_database_backend());
    if batch.segments.iter().all(|segment| segment.bulk.is_empty()) {
        for segment in &batch.segments {
            segment.write_rows(&mut script, now);
        }
        script.commit(conn).await?;
        return Ok(0);
    }
    let txn = conn.begin().await?;
    let mut jobs = 0;
    for segment in &batch.segments {
        segment.write_rows(&mut script, now);
        script.run(&txn).await?;
        for bulk in &segment.bulk {
            jobs += sql::bulk(&txn, bulk, now).await?;
        }
    }
    txn.commit().await?;
    Ok(jobs)
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Senders use `do_send`, which bypasses the mailbox capacity. What is in flight
        // is bounded all the same: rows are coalesced per task, job, agent and attempt,
        // so the buffer never holds more rows than there are running tasks, unfinished
        // jobs, agents and open log files; submissions wait for their own commit.
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(CHECKPOINT_EVERY, |act, ctx| act.checkpoint(ctx));
        ctx.run_interval(RETRY_DELAY, |act, ctx| act.probe(ctx));
        info!(next_job_id = self.next_job_id, "store started");
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        if self.pending.rows() > 0 {
            warn!(
                rows = self.pending.rows(),
                "store stopping with uncommitted rows"
            );
        }
        Running::Stop
    }
}

impl Supervised for Store {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("store restarting");
        self.committing = false;
        self.commit_scheduled = false;
    }
}

impl Handler<InsertJob> for Store {
    type Result = ResponseFuture<Result<InsertedJob, ApiError>>;

    fn handle(&mut self, msg: InsertJob, _ctx: &mut Context<Self>) -> Self::Result {
        let job = msg.0;
        let job_id = self.next_job_id;
        let first_task_id = self.next_task_id;
        self.next_job_id += 1;
        self.next_task_id += job.batches.len() as i64;
        let writer = self.writer.clone();
        let health = self.health.clone();
        let changes = self.changes.clone();
        Box::pin(async move {
            let created_at = now_ms();
            let mut writer = writer.lock().await;
            let stored = async {
                let txn = writer.begin().await?;
                sql::insert_job(&txn, job_id, &job, created_at).await?;
                sql::insert_tasks(
                    &txn,
                    job_id,
                    first_task_id,
                    (&job.ranges, job.batch, &job.batches),
                    created_at,
                )
                .await?;
                txn.commit().await
            }
            .await;
            if let Err(e) = stored {
                writer.discard().await;
                drop(writer);
                health.failed("submission", &e, job.batches.len());
                return Err(ApiError::unavailable(format!(
                    "the job was not stored, try again later: the database cannot write ({e})"
                )));
            }
            writer.db.jobs_changed(1);
            drop(writer);
            health.succeeded();
            changes.bump();
            let counts = TaskCounts {
                queued: job.batches.len() as u64,
                ..TaskCounts::default()
            };
            let record = JobRecord {
                id: job_id,
                title: job.title,
                jobtype: job.jobtype,
                jobtype_version: job.jobtype_version,
                params: job.params.into(),
                frames: job.frames,
                batch: job.batch,
                priority: job.priority,
                retries: job.retries,
                timeout_secs: job.timeout_secs,
                settings: job.settings,
                control: Control::Active,
                blocklist: Vec::new(),
                counts,
                created_at,
                finished_at: None,
            };
            Ok(InsertedJob {
                record,
                first_task_id,
                batches: job.batches,
            })
        })
    }
}

impl Handler<CommitBatch> for Store {
    type Result = ();

    fn handle(&mut self, msg: CommitBatch, ctx: &mut Context<Self>) {
        for write in msg.writes {
            self.pending.push(write);
        }
        if let Some(notify) = msg.notify {
            self.pending.notify.push(notify);
        }
        self.schedule_commit(ctx);
    }
}

impl Handler<UpsertAgent> for Store {
    type Result = ();

    fn handle(&mut self, msg: UpsertAgent, ctx: &mut Context<Self>) {
        self.pending.open().agents.insert(msg.0.id, msg.0);
        self.schedule_commit(ctx);
    }
}

impl Handler<UpsertLogIndex> for Store {
    type Result = ();

    fn handle(&mut self, msg: UpsertLogIndex, ctx: &mut Context<Self>) {
        let logs = &mut self.pending.open().logs;
        for row in msg.0 {
            logs.insert((row.task_id, row.attempt), row);
        }
        self.schedule_commit(ctx);
    }
}

impl Handler<StoreStatus> for Store {
    type Result = Option<StoreFailure>;

    fn handle(&mut self, _msg: StoreStatus, _ctx: &mut Context<Self>) -> Self::Result {
        self.health.failure()
    }
}

impl Handler<Flush> for Store {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (sender, receiver) = oneshot::channel();
        self.pending.waiters.push(sender);
        self.schedule_commit(ctx);
        Box::pin(async move {
            receiver
                .await
                .unwrap_or_else(|_| Err(ApiError::unavailable("the store stopped")))
        })
    }
}
