//! The service layer: every request of the REST API and of the protocol's client API is
//! one of these functions. Neither front end implements a request itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::Addr;
use furrow_protocol::{
    AgentState, AgentView, ApiError, ClientRequest, ClientResponse, CommandParams, FrameSet,
    HealthView, JobId, JobSubmission, JobView, LogChunk, Page, TaskId, TaskRef, TaskView,
    WorkState,
};
use tokio::sync::broadcast;
use tracing::{error, info};

use crate::logs::{LiveChunk, LiveLogs, LogCollector, ReadLog};
use crate::registry::AgentTable;
use crate::scheduler::{AddJob, Scheduler, SchedulerStats};
use crate::store::records::NewJob;
use crate::store::{InsertJob, Store, StoreReader};

/// Default page size of job and agent lists.
pub const DEFAULT_LIMIT: u64 = 100;
/// Default page size of task lists.
pub const DEFAULT_TASK_LIMIT: u64 = 1_000;
/// Largest page size.
pub const MAX_LIMIT: u64 = 10_000;
/// Most tasks one job may have.
pub const MAX_TASKS_PER_JOB: u64 = 1_000_000;
/// Most frames per task.
pub const MAX_BATCH: u32 = 1_000_000;
/// Longest title.
pub const MAX_TITLE_CHARS: usize = 1_000;
/// Most log text returned by one read.
pub const LOG_CHUNK: usize = 1024 * 1024;
/// Job types the master accepts.
pub const JOB_TYPES: &[&str] = &["command"];

/// Handles to everything the requests need. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    reader: StoreReader,
    store: Addr<Store>,
    scheduler: Addr<Scheduler>,
    logs: Addr<LogCollector>,
    live: LiveLogs,
    agents: AgentTable,
    stats: Arc<SchedulerStats>,
}

fn storage_error(e: sea_orm::DbErr) -> ApiError {
    error!(error = %e, "database read failed");
    ApiError::unavailable(format!("the database is unavailable: {e}"))
}

fn mailbox_error(e: actix::MailboxError) -> ApiError {
    ApiError::unavailable(format!("the master is shutting down: {e}"))
}

/// Checks a page request.
pub fn check_page(limit: u64, offset: u64) -> Result<(), ApiError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    if offset > i64::MAX as u64 {
        return Err(ApiError::bad_request("offset: too large"));
    }
    Ok(())
}

/// Validates a submission and expands its frames into tasks. Messages name the field.
pub fn validate(submission: JobSubmission) -> Result<NewJob, ApiError> {
    let title = submission.title.trim().to_string();
    if title.is_empty() {
        return Err(ApiError::bad_request("title: must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::bad_request(format!(
            "title: must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    if !JOB_TYPES.contains(&submission.jobtype.as_str()) {
        return Err(ApiError::bad_request(format!(
            "jobtype: unknown job type {:?} (known: {})",
            submission.jobtype,
            JOB_TYPES.join(", ")
        )));
    }
    // NUL cannot be stored in a PostgreSQL text column, nor passed in an argv.
    if title.contains('\0') {
        return Err(ApiError::bad_request(
            "title: must not contain NUL characters",
        ));
    }
    if submission.params.0.to_string().contains("\\u0000") {
        return Err(ApiError::bad_request(
            "params: must not contain NUL characters",
        ));
    }
    let params = submission.params.0;
    let command_ok = params
        .get("command")
        .and_then(|c| c.as_array())
        .is_some_and(|args| !args.is_empty() && args.iter().all(|a| a.is_string()));
    if !command_ok {
        return Err(ApiError::bad_request(
            "params.command: must be a non-empty list of strings",
        ));
    }
    let command: CommandParams = serde_json::from_value(params.clone())
        .map_err(|e| ApiError::bad_request(format!("params: {e}")))?;
    if command.command[0].trim().is_empty() {
        return Err(ApiError::bad_request(
            "params.command: the program (first element) must not be empty",
        ));
    }
    if submission.batch == 0 {
        return Err(ApiError::bad_request("batch: must be at least 1"));
    }
    // Bounded so that batch × step stays far inside 64 bits for every valid frame range.
    if submission.batch > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "batch: must be at most {MAX_BATCH}"
        )));
    }
    if submission.timeout_secs == Some(0) {
        return Err(ApiError::bad_request("timeout_secs: must be at least 1"));
    }
    let frames: FrameSet = submission
        .frames
        .parse()
        .map_err(|e| ApiError::bad_request(format!("frames: {e}")))?;
    let tasks = frames.task_count(submission.batch);
    if tasks > MAX_TASKS_PER_JOB {
        return Err(ApiError::bad_request(format!(
            "frames: {tasks} tasks exceed the limit of {MAX_TASKS_PER_JOB} per job (raise batch or split the job)"
        )));
    }
    Ok(NewJob {
        title,
        jobtype: submission.jobtype,
        params,
        frames: frames.to_string(),
        batch: submission.batch,
        priority: submission.priority,
        retries: submission.retries,
        timeout_secs: submission.timeout_secs,
        ranges: frames.ranges().to_vec(),
        batches: frames.batches(submission.batch).collect(),
    })
}

impl Service {
    /// A service over the master's actors.
    pub fn new(
        reader: StoreReader,
        store: Addr<Store>,
        scheduler: Addr<Scheduler>,
        logs: Addr<LogCollector>,
        live: LiveLogs,
        agents: AgentTable,
        stats: Arc<SchedulerStats>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                reader,
                store,
                scheduler,
                logs,
                live,
                agents,
                stats,
            }),
        }
    }

    /// Validates and stores a job; answers once it is committed, then schedules it.
    pub async fn submit_job(&self, submission: JobSubmission) -> Result<JobView, ApiError> {
        let job = validate(submission)?;
        let tasks = job.batches.len();
        let inserted = self
            .inner
            .store
            .send(InsertJob(job))
            .await
            .map_err(mailbox_error)??;
        let view = inserted.record.view();
        info!(job_id = view.id, tasks, title = %view.title, "job submitted");
        self.inner.scheduler.do_send(AddJob(inserted));
        Ok(view)
    }

    /// A page of jobs, newest first.
    pub async fn list_jobs(&self, limit: u64, offset: u64) -> Result<Page<JobView>, ApiError> {
        check_page(limit, offset)?;
        let (jobs, total) = self
            .inner
            .reader
            .list_jobs(limit, offset)
            .await
            .map_err(storage_error)?;
        Ok(Page {
            items: jobs.iter().map(|j| j.view()).collect(),
            total,
        })
    }

    /// One job.
    pub async fn get_job(&self, job_id: JobId) -> Result<JobView, ApiError> {
        self.inner
            .reader
            .get_job(job_id)
            .await
            .map_err(storage_error)?
            .map(|j| j.view())
            .ok_or_else(|| ApiError::not_found(format!("job {job_id} not found")))
    }

    /// A page of a job's tasks in frame order.
    pub async fn list_tasks(
        &self,
        job_id: JobId,
        limit: u64,
        offset: u64,
    ) -> Result<Page<TaskView>, ApiError> {
        check_page(limit, offset)?;
        let job = self.get_job(job_id).await?;
        let items = self
            .inner
            .reader
            .list_tasks(job_id, limit, offset)
            .await
            .map_err(storage_error)?;
        Ok(Page {
            items,
            total: job.task_counts.total(),
        })
    }

    /// A page of agents, online and offline, by name.
    pub async fn list_agents(&self, limit: u64, offset: u64) -> Result<Page<AgentView>, ApiError> {
        check_page(limit, offset)?;
        let mut agents: Vec<AgentView> = self
            .inner
            .agents
            .iter()
            .map(|entry| entry.value().view.clone())
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let total = agents.len() as u64;
        let items = agents
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok(Page { items, total })
    }

    /// A task's log from `offset`: of `attempt`, or of the current attempt.
    pub async fn task_log(
        &self,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<LogChunk, ApiError> {
        self.read_log(job_id, task_id, attempt, offset, LOG_CHUNK)
            .await
    }

    /// Like [`Service::task_log`] with a chosen upper bound on the text returned.
    pub async fn read_log(
        &self,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
        offset: u64,
        max_bytes: usize,
    ) -> Result<LogChunk, ApiError> {
        let task = self
            .inner
            .reader
            .get_task(task_id)
            .await
            .map_err(storage_error)?
            .filter(|t| t.job_id == job_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("task {task_id} of job {job_id} not found"))
            })?;
        let current = u32::try_from(task.attempt).unwrap_or(0);
        let attempt = attempt.unwrap_or(current);
        if attempt == 0 || attempt > current {
            return Err(ApiError::not_found(if current == 0 {
                format!("task {task_id} has not run yet")
            } else {
                format!("task {task_id} has no attempt {attempt} (attempts: 1-{current})")
            }));
        }
        let read = self
            .inner
            .logs
            .send(ReadLog {
                job_id,
                task: TaskRef { task_id, attempt },
                offset,
                max_bytes,
            })
            .await
            .map_err(mailbox_error)?
            .map_err(|e| ApiError::internal(format!("cannot read the task log: {e}")))?;
        let running = WorkState::parse(&task.state) == Some(WorkState::Running);
        Ok(LogChunk {
            attempt,
            text: read.text,
            next_offset: read.next_offset,
            complete: attempt < current || !running,
        })
    }

    /// Log text of every attempt as it is written (see [`crate::logs::LiveChunk`]).
    pub fn subscribe_logs(&self) -> broadcast::Receiver<LiveChunk> {
        self.inner.live.subscribe()
    }

    /// Health of the master.
    pub async fn health(&self) -> Result<HealthView, ApiError> {
        let agents_online = self
            .inner
            .agents
            .iter()
            .filter(|entry| entry.value().view.state == AgentState::Online)
            .count() as u64;
        Ok(HealthView {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            database: self.inner.reader.backend_name().into(),
            agents_online,
            tasks_queued: self.inner.stats.queued.load(Ordering::Relaxed),
            tasks_running: self.inner.stats.running.load(Ordering::Relaxed),
        })
    }

    /// Answers a request of the protocol's client API.
    pub async fn handle(&self, request: ClientRequest) -> ClientResponse {
        let result = match request {
            ClientRequest::Health => self.health().await.map(ClientResponse::Health),
            ClientRequest::SubmitJob(job) => self.submit_job(job).await.map(ClientResponse::Job),
            ClientRequest::ListJobs { limit, offset } => self
                .list_jobs(limit, offset)
                .await
                .map(ClientResponse::Jobs),
            ClientRequest::GetJob { job_id } => self.get_job(job_id).await.map(ClientResponse::Job),
            ClientRequest::ListTasks {
                job_id,
                limit,
                offset,
            } => self
                .list_tasks(job_id, limit, offset)
                .await
                .map(ClientResponse::Tasks),
            ClientRequest::ListAgents { limit, offset } => self
                .list_agents(limit, offset)
                .await
                .map(ClientResponse::Agents),
            ClientRequest::TaskLog {
                job_id,
                task_id,
                attempt,
                offset,
            } => self
                .task_log(job_id, task_id, attempt, offset)
                .await
                .map(ClientResponse::Log),
        };
        result.unwrap_or_else(ClientResponse::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_protocol::Json;

    fn submission(params: serde_json::Value, frames: &str) -> JobSubmission {
        JobSubmission {
            title: "t".into(),
            jobtype: "command".into(),
            params: Json(params),
            frames: frames.into(),
            batch: 1,
            priority: 0,
            retries: 0,
            timeout_secs: None,
        }
    }

    fn message(result: Result<NewJob, ApiError>) -> String {
        result.map(|_| ()).unwrap_err().message
    }

    #[test]
    fn validation_names_the_field() {
        let ok = serde_json::json!({"command": ["echo", "{frame}"]});
        assert_eq!(
            validate(submission(ok.clone(), "1-10:2"))
                .unwrap()
                .batches
                .len(),
            5
        );
        assert_eq!(
            message(validate(submission(ok.clone(), "10-1"))),
            "frames: invalid frame range \"10-1\": end frame 1 is before start frame 10"
        );
        assert!(message(validate(submission(ok.clone(), "a-b"))).starts_with("frames: "));
        assert_eq!(
            message(validate(submission(
                serde_json::json!({"command": []}),
                "1"
            ))),
            "params.command: must be a non-empty list of strings"
        );
        assert_eq!(
            message(validate(submission(serde_json::Value::Null, "1"))),
            "params.command: must be a non-empty list of strings"
        );
        assert!(
            message(validate(submission(
                serde_json::json!({"command": ["x"], "bogus": 1}),
                "1"
            )))
            .starts_with("params: unknown field `bogus`")
        );
        let mut s = submission(ok.clone(), "1");
        s.title = "  ".into();
        assert_eq!(message(validate(s)), "title: must not be empty");
        let mut s = submission(ok.clone(), "1");
        s.batch = 0;
        assert_eq!(message(validate(s)), "batch: must be at least 1");
        let mut s = submission(ok.clone(), "1-1000000000000:1000000000000");
        s.batch = u32::MAX;
        assert_eq!(message(validate(s)), "batch: must be at most 1000000");
        let mut s = submission(ok.clone(), "-1000000000000-1000000000000:1000000000000");
        s.batch = MAX_BATCH;
        assert_eq!(validate(s).unwrap().batches.len(), 1);
        let mut s = submission(ok.clone(), "1");
        s.jobtype = "blender".into();
        assert!(message(validate(s)).starts_with("jobtype: "));
        assert!(
            message(validate(submission(ok, "1-1000001"))).starts_with("frames: 1000001 tasks")
        );
    }
}
