//! The `Store` actor: the only writer to the database.
//!
//! Submissions run in their own transaction and are answered only after it commits.
//! Everything else (task transitions, job counts, agents, log index entries) is buffered,
//! coalesced per row (the newest row wins) and written in one transaction per group
//! commit: at most [`COMMIT_DELAY`] after the first buffered item, or at once when
//! [`COMMIT_ITEMS`] rows wait. One group commit runs at a time; rows arriving meanwhile
//! go into the next one. All writes take one async lock, so SQLite never sees two writers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use furrow_protocol::{ApiError, FrameBatch, JobId, TaskCounts, TaskId};
use sea_orm::{DbErr, TransactionTrait};
use tokio::sync::{Mutex, oneshot};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::Db;
use super::records::{AgentRow, JobRecord, JobRow, LogIndexRow, NewJob, TaskRow, now_ms};
use super::sql;
use crate::changes::ChangeFeed;

/// Longest time a transition waits for its group commit.
pub const COMMIT_DELAY: Duration = Duration::from_millis(5);

/// Buffered rows that trigger a group commit at once.
pub const COMMIT_ITEMS: usize = 2_000;

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

/// Task transitions and the job counts they produce, committed atomically together.
/// With `durable`, the answer comes once they are committed (in the next group commit,
/// which is not hastened); without, at once.
#[derive(Message, Default)]
#[rtype(result = "Result<(), ApiError>")]
pub struct CommitBatch {
    /// Task rows.
    pub tasks: Vec<TaskRow>,
    /// Job count snapshots.
    pub jobs: Vec<JobRow>,
    /// Answer only after the rows are committed.
    pub durable: bool,
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

#[derive(Default)]
struct Pending {
    tasks: HashMap<TaskId, TaskRow>,
    jobs: HashMap<JobId, JobRow>,
    agents: HashMap<Uuid, AgentRow>,
    logs: HashMap<(TaskId, u32), LogIndexRow>,
    /// Callers of `Flush`: they want a commit now.
    waiters: Vec<oneshot::Sender<Result<(), ApiError>>>,
    /// Callers of a durable `CommitBatch`: answered by the next commit, whenever it runs.
    notify: Vec<oneshot::Sender<Result<(), ApiError>>>,
}

impl Pending {
    fn rows(&self) -> usize {
        self.tasks.len() + self.jobs.len() + self.agents.len() + self.logs.len()
    }

    fn is_empty(&self) -> bool {
        self.rows() == 0 && self.waiters.is_empty() && self.notify.is_empty()
    }

    /// Puts back the rows of a failed commit under the newer ones buffered since.
    fn merge_older(&mut self, older: Pending) {
        for (id, row) in older.tasks {
            self.tasks.entry(id).or_insert(row);
        }
        for (id, row) in older.jobs {
            self.jobs.entry(id).or_insert(row);
        }
        for (id, row) in older.agents {
            self.agents.entry(id).or_insert(row);
        }
        for (key, row) in older.logs {
            self.logs.entry(key).or_insert(row);
        }
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
}

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
        }
    }

    /// Starts a group commit now, or soon, or leaves it to the one in flight.
    fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        let urgent = self.pending.rows() >= COMMIT_ITEMS || !self.pending.waiters.is_empty();
        if urgent {
            self.commit_now(ctx);
        } else if !self.commit_scheduled {
            self.commit_scheduled = true;
            ctx.run_later(COMMIT_DELAY, |act, ctx| {
                act.commit_scheduled = false;
                if !act.committing {
                    act.commit_now(ctx);
                }
            });
        }
    }

    fn commit_now(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        self.committing = true;
        let mut batch = std::mem::take(&mut self.pending);
        let mut waiters = std::mem::take(&mut batch.waiters);
        let notify_count = batch.notify.len();
        waiters.append(&mut batch.notify);
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
                    if rows > 0 {
                        act.changes.bump();
                    }
                    act.schedule_commit(ctx);
                }
                Err(e) => {
                    error!(error = %e, rows = batch.rows(), "group commit failed; retrying");
                    let mut batch = batch;
                    let flushers = waiters.len() - notify_count;
                    batch.notify = waiters.split_off(flushers);
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
    let tasks: Vec<&TaskRow> = batch.tasks.values().collect();
    sql::update_tasks(&txn, &tasks).await?;
    for row in batch.jobs.values() {
        sql::update_job(&txn, row).await?;
    }
    for row in batch.agents.values() {
        sql::upsert_agent(&txn, row).await?;
    }
    let now = now_ms();
    for row in batch.logs.values() {
        sql::upsert_log(&txn, row, now).await?;
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
                params: job.params.into(),
                frames: job.frames,
                batch: job.batch,
                priority: job.priority,
                retries: job.retries,
                timeout_secs: job.timeout_secs,
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
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: CommitBatch, ctx: &mut Context<Self>) -> Self::Result {
        for row in msg.tasks {
            self.pending.tasks.insert(row.id, row);
        }
        for row in msg.jobs {
            self.pending.jobs.insert(row.id, row);
        }
        let receiver = msg.durable.then(|| {
            let (sender, receiver) = oneshot::channel();
            self.pending.notify.push(sender);
            receiver
        });
        self.schedule_commit(ctx);
        Box::pin(async move {
            match receiver {
                Some(receiver) => receiver
                    .await
                    .unwrap_or_else(|_| Err(ApiError::unavailable("the store stopped"))),
                None => Ok(()),
            }
        })
    }
}

impl Handler<UpsertAgent> for Store {
    type Result = ();

    fn handle(&mut self, msg: UpsertAgent, ctx: &mut Context<Self>) {
        self.pending.agents.insert(msg.0.id, msg.0);
        self.schedule_commit(ctx);
    }
}

impl Handler<UpsertLogIndex> for Store {
    type Result = ();

    fn handle(&mut self, msg: UpsertLogIndex, ctx: &mut Context<Self>) {
        let key = (msg.0.task_id, msg.0.attempt);
        self.pending.logs.insert(key, msg.0);
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
