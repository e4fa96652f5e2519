//! The `Store` actor: the only writer to the database.
//!
//! Submissions run in their own transaction and are answered only after it commits.
//! Everything else (task transitions, job counts, agents, log index entries, bulk
//! changes) is buffered, coalesced per row (the newest row wins, bulk writes keep their
//! place among the rows) and written in one transaction per group commit. An idle store
//! commits at once; while a commit runs, what arrives waits and goes into the next one
//! together (leader/follower group commit), so batches grow with the load and a quiet
//! farm pays no fixed delay. All writes take one async lock, so SQLite never sees two
//! writers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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

/// Pause before retrying a failed group commit.
const RETRY_DELAY: Duration = Duration::from_millis(500);

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
    Ticket(mpsc::UnboundedSender<u64>, u64),
}

impl Notify {
    fn send(self, result: Result<(), ApiError>) {
        match self {
            Notify::Once(sender) => {
                let _ = sender.send(result);
            }
            // A ticket is only sent once committed; a failed commit is retried, and
            // a store that stops drops the channel, which its reader sees.
            Notify::Ticket(sender, ticket) => {
                if result.is_ok() {
                    let _ = sender.send(ticket);
                }
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

/// Persists a log index entry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertLogIndex(pub LogIndexRow);

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
    write_lock: Arc<Mutex<()>>,
    pending: Pending,
    committing: bool,
    commit_scheduled: bool,
    next_job_id: JobId,
    next_task_id: TaskId,
    changes: ChangeFeed,
    /// A WAL checkpoint is running (SQLite only).
    checkpointing: bool,
}

/// How often SQLite's write-ahead log is folded back into the database file, off the
/// commit path (see [`Store::checkpoint`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

impl Store {
    /// A store writing to `db`, allocating ids above the given maxima.
    pub fn new(db: Db, max_job_id: JobId, max_task_id: TaskId, changes: ChangeFeed) -> Self {
        Self {
            db,
            write_lock: Arc::new(Mutex::new(())),
            pending: Pending::default(),
            committing: false,
            commit_scheduled: false,
            next_job_id: max_job_id + 1,
            next_task_id: max_task_id + 1,
            changes,
            checkpointing: false,
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
            if let Err(e) = result {
                warn!(error = %e, "wal checkpoint failed");
            }
        }));
    }

    /// Starts a group commit now, or leaves it to the one in flight: rows that arrive
    /// while a commit runs wait for it and go together into the next. An idle store
    /// commits at once, so a lone transition never waits for company.
    fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.commit_scheduled || self.pending.is_empty() {
            return;
        }
        self.commit_now(ctx);
    }

    fn commit_now(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        self.committing = true;
        let mut batch = std::mem::take(&mut self.pending);
        let waiters = std::mem::take(&mut batch.waiters);
        let notify = std::mem::take(&mut batch.notify);
        let db = self.db.clone();
        let lock = self.write_lock.clone();
        let work = async move {
            let result = commit(&db, &lock, &batch).await;
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
                    error!(error = %e, rows = batch.rows(), "group commit failed; retrying");
                    let mut batch = batch;
                    batch.notify = notify;
                    batch.waiters = waiters;
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

async fn commit(db: &Db, lock: &Mutex<()>, batch: &Pending) -> Result<usize, DbErr> {
    let rows = batch.rows();
    if rows == 0 {
        return Ok(0);
    }
    let _guard = lock.lock().await;
    let txn = db.conn().begin().await?;
    let now = now_ms();
    for segment in &batch.segments {
        let tasks: Vec<&TaskRow> = segment.tasks.values().collect();
        sql::update_tasks(&txn, &tasks).await?;
        for row in segment.jobs.values() {
            sql::update_job(&txn, row).await?;
        }
        for row in segment.agents.values() {
            sql::upsert_agent(&txn, row).await?;
        }
        for row in segment.logs.values() {
            sql::upsert_log(&txn, row, now).await?;
        }
        sql::upsert_attempts(&txn, &segment.attempts).await?;
        for rows in &segment.outputs {
            sql::upsert_outputs(&txn, rows).await?;
        }
        for row in segment.previews.values() {
            sql::upsert_preview(&txn, row, now).await?;
        }
        for bulk in &segment.bulk {
            sql::bulk(&txn, bulk, now).await?;
        }
    }
    txn.commit().await?;
    Ok(rows)
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
        let db = self.db.clone();
        let lock = self.write_lock.clone();
        let changes = self.changes.clone();
        Box::pin(async move {
            let created_at = now_ms();
            let stored = async {
                let _guard = lock.lock().await;
                let txn = db.conn().begin().await?;
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
                error!(job_id, error = %e, "storing a submission failed");
                return Err(ApiError::unavailable(format!(
                    "the job could not be stored: {e}"
                )));
            }
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
        let key = (msg.0.task_id, msg.0.attempt);
        self.pending.open().logs.insert(key, msg.0);
        self.schedule_commit(ctx);
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
