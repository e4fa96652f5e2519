//! The service layer: every request of the REST API and of the protocol's client API is
//! one of these functions. Neither front end implements a request itself.

mod browse;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::Addr;
use furrow_protocol::{
    ActionOutcome, AgentPatch, AgentState, AgentView, ApiError, AttemptView, ClientRequest,
    ClientResponse, FrameSet, HealthView, JobAction, JobId, JobPatch, JobSubmission, JobTypeView,
    JobView, LogChunk, OutputView, Page, PathMapSpec, PathMapView, QueuePatch, QueueSpec,
    QueueView, Requirements, TaskAction, TaskId, TaskQuery, TaskRef, TaskView, UserRole, WhyView,
    WorkState,
};
use tokio::sync::broadcast;
use tracing::{error, info};
use uuid::Uuid;

use crate::auth::{Auth, Caller, secrets};
use crate::jobtypes::{Added, Catalog};
use crate::logs::{
    DeleteJobLogs, LiveChunk, LiveLogs, LocateLog, LogCollector, LogPlace, LogSpan, ReadLog,
};
use crate::registry::{AgentTable, DisconnectAgent, EditAgent, Registry, RemoveAgent};
use crate::scheduler::policy::requirements::Needs;
use crate::scheduler::queues;
use crate::scheduler::{
    AddJob, Change, ControlOutcome, ControlRequest, ListQueues, ParentState, Revived, Scheduler,
    SchedulerStats, Why, job_spec,
};
use crate::store::records::{JobRecord, JobSettings, NewFrames, NewJob};
use crate::store::{AllocateTaskIds, InsertJob, Store, StoreReader};
use furrow_jobtypes::Definition;

pub mod apps;

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
/// Most retries per task.
pub const MAX_RETRIES: u32 = 1_000;
/// Longest time limit or stall timeout, in seconds (ten years).
pub const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 24 * 3600;
/// Largest weight.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Most jobs one job may depend on.
pub const MAX_DEPENDENCIES: usize = 100;
/// Longest notes.
pub const MAX_NOTES_CHARS: usize = 10_000;
/// Longest user name.
pub const MAX_USER_CHARS: usize = 200;
/// Most jobs in one bulk action.
pub const MAX_BULK: usize = 1_000;

/// The actors a service sends its requests to.
pub struct Actors {
    /// The only writer to the database.
    pub store: Addr<Store>,
    /// Scheduling and job control.
    pub scheduler: Addr<Scheduler>,
    /// Task logs.
    pub logs: Addr<LogCollector>,
    /// Agents and their settings.
    pub registry: Addr<Registry>,
    /// Deployed apps.
    pub apps: Addr<crate::apps::Apps>,
}

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
    registry: Addr<Registry>,
    apps: Addr<crate::apps::Apps>,
    data_dir: std::path::PathBuf,
    live: LiveLogs,
    agents: AgentTable,
    stats: Arc<SchedulerStats>,
    catalog: Arc<Catalog>,
    auth: Arc<Auth>,
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

fn check_timeout(field: &str, value: Option<u64>) -> Result<(), ApiError> {
    match value {
        Some(0) => Err(ApiError::bad_request(format!(
            "{field}: must be at least 1"
        ))),
        Some(secs) if secs > MAX_TIMEOUT_SECS => Err(ApiError::bad_request(format!(
            "{field}: must be at most {MAX_TIMEOUT_SECS} (ten years), got {secs}"
        ))),
        _ => Ok(()),
    }
}

fn check_weight(weight: u32) -> Result<(), ApiError> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(ApiError::bad_request(format!(
            "weight: must be between 1 and {MAX_WEIGHT}, got {weight}"
        )));
    }
    Ok(())
}

fn check_agents(field: &str, value: Option<u32>) -> Result<(), ApiError> {
    match value {
        Some(n) if n > 1_000_000 => Err(ApiError::bad_request(format!(
            "{field}: must be at most 1000000, got {n}"
        ))),
        _ => Ok(()),
    }
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field}: must be at most {max} characters"
        )));
    }
    if text.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field}: must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Parses a frame specification and merges overlapping ranges.
fn parse_frames(spec: &str) -> Result<FrameSet, ApiError> {
    spec.parse::<FrameSet>()
        .and_then(|set| set.merged())
        .map_err(|e| ApiError::bad_request(format!("frames: {e}")))
}

/// `requirements` with the software the job type needs added (the job's own ranges win).
fn with_jobtype_software(jobtype: &Definition, mut requirements: Requirements) -> Requirements {
    for (name, range) in &jobtype.software {
        requirements
            .software
            .entry(name.clone())
            .or_insert_with(|| range.clone());
    }
    requirements
}

/// The batch of a job of `jobtype` over `frames`: `batch`, or every frame at once for a
/// type that runs its job as one task (which then takes one range).
fn batch_for(jobtype: &Definition, frames: &FrameSet, batch: u32) -> Result<u32, ApiError> {
    if !jobtype.single_task {
        return Ok(batch);
    }
    if frames.ranges().len() != 1 {
        return Err(ApiError::bad_request(format!(
            "frames: job type {} runs its frames as one task: give one range, not {}",
            jobtype.name,
            frames.ranges().len()
        )));
    }
    u32::try_from(frames.frame_count())
        .ok()
        .filter(|&n| n <= MAX_BATCH)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "frames: job type {} runs its frames as one task, at most {MAX_BATCH} frames",
                jobtype.name
            ))
        })
}

/// Validates a submission against its job type and expands its frames into tasks.
/// Messages name the field.
pub fn validate(submission: JobSubmission, catalog: &Catalog) -> Result<NewJob, ApiError> {
    let title = submission.title.trim().to_string();
    if title.is_empty() {
        return Err(ApiError::bad_request("title: must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::bad_request(format!(
            "title: must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    let jobtype = catalog
        .resolve(&submission.jobtype, submission.jobtype_version)
        .map_err(ApiError::bad_request)?;
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
    let params = jobtype
        .validate(&submission.params.0)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if submission.batch == 0 {
        return Err(ApiError::bad_request("batch: must be at least 1"));
    }
    // Bounded so that batch × step stays far inside 64 bits for every valid frame range.
    if submission.batch > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "batch: must be at most {MAX_BATCH}"
        )));
    }
    check_timeout("timeout_secs", submission.timeout_secs)?;
    check_timeout("stall_timeout_secs", submission.stall_timeout_secs)?;
    if submission.retries > MAX_RETRIES {
        return Err(ApiError::bad_request(format!(
            "retries: must be at most {MAX_RETRIES}, got {}",
            submission.retries
        )));
    }
    if submission.blocklist_after > MAX_RETRIES {
        return Err(ApiError::bad_request(format!(
            "blocklist_after: must be at most {MAX_RETRIES} (0 never blocklists), got {}",
            submission.blocklist_after
        )));
    }
    check_weight(submission.weight)?;
    check_agents("min_agents", Some(submission.min_agents))?;
    check_agents("max_agents", submission.max_agents)?;
    let queue = queues::normalize(&submission.queue)
        .map_err(|e| ApiError::bad_request(format!("queue: {e}")))?;
    let requirements = with_jobtype_software(&jobtype, submission.requirements.clone());
    Needs::parse(&requirements).map_err(ApiError::bad_request)?;
    check_text("notes", &submission.notes, MAX_NOTES_CHARS)?;
    check_text("user", &submission.user, MAX_USER_CHARS)?;
    if submission.depends_on.len() > MAX_DEPENDENCIES {
        return Err(ApiError::bad_request(format!(
            "depends_on: at most {MAX_DEPENDENCIES} jobs"
        )));
    }
    let mut depends_on = submission.depends_on.clone();
    depends_on.sort_unstable();
    depends_on.dedup();
    if let Some(bad) = depends_on.iter().find(|id| **id <= 0) {
        return Err(ApiError::bad_request(format!(
            "depends_on: {bad} is not a job id"
        )));
    }
    if submission.depends_per_frame && depends_on.is_empty() {
        return Err(ApiError::bad_request(
            "depends_per_frame: needs at least one job in depends_on",
        ));
    }
    let frames = parse_frames(&submission.frames)?;
    let batch = batch_for(&jobtype, &frames, submission.batch)?;
    let tasks = frames.task_count(batch);
    if tasks > MAX_TASKS_PER_JOB {
        return Err(ApiError::bad_request(format!(
            "frames: {tasks} tasks exceed the limit of {MAX_TASKS_PER_JOB} per job (raise batch or split the job)"
        )));
    }
    let mut settings = JobSettings::of(&submission);
    settings.requirements = requirements;
    settings.queue = queue;
    settings.depends_on = depends_on;
    settings.notes = settings.notes.trim().to_string();
    settings.user = settings.user.trim().to_string();
    Ok(NewJob {
        title,
        jobtype: submission.jobtype,
        jobtype_version: jobtype.version,
        params,
        frames: frames.to_string(),
        batch,
        priority: submission.priority,
        retries: submission.retries,
        timeout_secs: submission.timeout_secs,
        settings,
        ranges: frames.ranges().to_vec(),
        batches: frames.batches(batch).collect(),
    })
}

impl Service {
    /// A service over the master's actors.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: StoreReader,
        actors: Actors,
        live: LiveLogs,
        agents: AgentTable,
        stats: Arc<SchedulerStats>,
        catalog: Arc<Catalog>,
        auth: Arc<Auth>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                auth,
                reader,
                store: actors.store,
                scheduler: actors.scheduler,
                logs: actors.logs,
                registry: actors.registry,
                apps: actors.apps,
                data_dir,
                live,
                agents,
                stats,
            }),
        }
    }

    /// Forgets a lost agent: its row, the settings made through the API, and its
    /// credentials (so it may join again).
    pub async fn remove_agent(&self, caller: &Caller, agent_id: Uuid) -> Result<(), ApiError> {
        caller.require(UserRole::Operator, "removing agents")?;
        self.inner
            .registry
            .send(RemoveAgent { agent_id })
            .await
            .map_err(mailbox_error)??;
        self.inner.auth.forget_agent(agent_id).await;
        self.audit(caller, "agent.remove", format!("agent {agent_id}"));
        Ok(())
    }

    /// Revokes an agent's credential and disconnects it.
    pub async fn revoke_agent(&self, caller: &Caller, agent_id: Uuid) -> Result<(), ApiError> {
        if !self.inner.auth.revoke_agent(caller, agent_id).await? {
            return Err(ApiError::not_found(format!(
                "agent {agent_id} has no credential to revoke"
            )));
        }
        self.inner.registry.do_send(DisconnectAgent {
            agent_id,
            reason: "the agent's credential was revoked".into(),
        });
        info!(agent = %agent_id, by = caller.user, "agent revoked");
        Ok(())
    }

    /// Users, tokens and the audit log.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.inner.auth
    }

    fn audit(&self, caller: &Caller, action: &str, target: String) {
        self.inner.auth.record(caller, action, &target);
    }

    /// A job view as `caller` may see it: secret environment values never, the rest of
    /// the environment only for its owner, operators and admins.
    fn shown(caller: &Caller, mut view: JobView) -> JobView {
        let hide_all = !caller.owns_or_operates(&view.user);
        secrets::mask_env(&mut view.params.0, hide_all);
        view
    }

    /// `Ok` when `caller` may act on job `job_id` (or read its logs); the job must exist.
    async fn check_job(
        &self,
        caller: &Caller,
        job_id: JobId,
        action: &str,
    ) -> Result<(), ApiError> {
        if caller.role >= UserRole::Operator {
            return Ok(());
        }
        let record = self.job_record(job_id).await?;
        caller.check_job(job_id, &record.settings.user, action)
    }

    /// Whether an agent with this id is connected now.
    pub fn agent_connected(&self, agent_id: Uuid) -> bool {
        self.inner
            .agents
            .get(&agent_id)
            .is_some_and(|agent| agent.connected())
    }

    /// The catalogue of job types and path maps.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.catalog
    }

    /// The store.
    pub fn store(&self) -> &Addr<Store> {
        &self.inner.store
    }

    /// Validates and stores a job; answers once it is committed, then schedules it.
    pub async fn submit_job(
        &self,
        caller: &Caller,
        mut submission: JobSubmission,
    ) -> Result<JobView, ApiError> {
        caller.require(UserRole::User, "submitting jobs")?;
        if submission.user.is_empty() {
            submission.user = caller.user.clone();
        } else if submission.user != caller.user {
            caller.require(UserRole::Admin, "submitting as another user")?;
        }
        let secret_env = std::mem::take(&mut submission.secret_env);
        let mut job = validate(submission, &self.inner.catalog)?;
        self.inner
            .auth
            .sealer()
            .seal_env(&mut job.params, &secret_env)?;
        let queue = job.settings.queue.clone();
        let known = self.list_queues(caller).await?;
        if !known.iter().any(|q| q.path == queues::display(&queue)) {
            return Err(ApiError::bad_request(format!(
                "queue: no queue {} (create it first: POST /api/v1/queues/)",
                queues::display(&queue)
            )));
        }
        let mut parents = Vec::with_capacity(job.settings.depends_on.len());
        for &parent in &job.settings.depends_on {
            let record = self
                .inner
                .reader
                .get_job(parent)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| {
                    ApiError::bad_request(format!("depends_on: job {parent} not found"))
                })?;
            let state = record.counts.job_state();
            let stood = if record.finished_at.is_some() && state.is_finished() {
                ParentState::Ended(state)
            } else {
                ParentState::Unfinished
            };
            parents.push((parent, stood));
        }
        let tasks = job.batches.len();
        let inserted = self
            .inner
            .store
            .send(InsertJob(job))
            .await
            .map_err(mailbox_error)??;
        let view = inserted.record.view();
        info!(job_id = view.id, tasks, title = ?view.title, user = ?view.user, "job submitted");
        self.audit(caller, "job.submit", format!("job {}", view.id));
        self.inner.scheduler.do_send(AddJob { inserted, parents });
        Ok(Self::shown(caller, view))
    }

    /// A job that must exist.
    async fn job_record(&self, job_id: JobId) -> Result<JobRecord, ApiError> {
        self.inner
            .reader
            .get_job(job_id)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::not_found(format!("job {job_id} not found")))
    }

    /// A finished job, loaded to run again.
    async fn revived(&self, record: &JobRecord) -> Result<Revived, ApiError> {
        let tasks = self
            .inner
            .reader
            .job_tasks(record)
            .await
            .map_err(storage_error)?;
        let first_task_id = tasks.first().map(|t| t.id).ok_or_else(|| {
            ApiError::internal(format!("job {} has no tasks in the store", record.id))
        })?;
        Ok(Revived {
            spec: job_spec(record),
            first_task_id,
            tasks: tasks
                .iter()
                .map(|t| (t.frames, t.state, t.attempt))
                .collect(),
        })
    }

    async fn change(&self, request: ControlRequest) -> Result<ControlOutcome, ApiError> {
        self.inner
            .scheduler
            .send(Change(request))
            .await
            .map_err(mailbox_error)?
    }

    /// Applies an action to a job; answers once its changes are stored.
    pub async fn job_action(
        &self,
        caller: &Caller,
        job_id: JobId,
        action: JobAction,
        kill: bool,
    ) -> Result<JobView, ApiError> {
        self.check_job(caller, job_id, &format!("{} a job", action.as_str()))
            .await?;
        let first = self
            .change(ControlRequest::JobAction {
                job_id,
                action,
                kill,
                revive: None,
            })
            .await;
        match first? {
            ControlOutcome::NotLoaded => {
                // Not in the scheduler: unknown, or finished.
                let record = self.job_record(job_id).await?;
                let state = record.view().state;
                if !matches!(action, JobAction::Rerun | JobAction::RerunFailed) {
                    return Err(ApiError::conflict(format!(
                        "job {job_id} is {}; it cannot be {}",
                        state.as_str(),
                        match action {
                            JobAction::Pause => "paused",
                            JobAction::Resume => "resumed",
                            JobAction::Cancel => "cancelled",
                            _ => "changed that way",
                        }
                    )));
                }
                let revive = Some(self.revived(&record).await?);
                self.change(ControlRequest::JobAction {
                    job_id,
                    action,
                    kill,
                    revive,
                })
                .await?;
            }
            ControlOutcome::Done | ControlOutcome::Queue(_) => {}
        }
        info!(
            job_id,
            action = action.as_str(),
            kill,
            by = caller.user,
            "job action"
        );
        self.audit(
            caller,
            &format!("job.{}", action.as_str()),
            format!("job {job_id}"),
        );
        self.get_job(caller, job_id).await
    }

    /// Applies one action to many jobs; each job's outcome is reported.
    pub async fn jobs_action(
        &self,
        caller: &Caller,
        action: JobAction,
        ids: &[JobId],
        kill: bool,
    ) -> Result<Vec<ActionOutcome>, ApiError> {
        if ids.is_empty() || ids.len() > MAX_BULK {
            return Err(ApiError::bad_request(format!(
                "ids: between 1 and {MAX_BULK} job ids, got {}",
                ids.len()
            )));
        }
        let mut outcomes = Vec::with_capacity(ids.len());
        for &id in ids {
            let result = self.job_action(caller, id, action, kill).await;
            outcomes.push(ActionOutcome {
                id,
                ok: result.is_ok(),
                error: result.err().map(|e| e.message),
            });
        }
        Ok(outcomes)
    }

    /// Reruns or cancels one task; answers with the task once stored.
    pub async fn task_action(
        &self,
        caller: &Caller,
        job_id: JobId,
        task_id: TaskId,
        action: TaskAction,
    ) -> Result<TaskView, ApiError> {
        self.check_job(caller, job_id, "changing a task").await?;
        let first = self
            .change(ControlRequest::TaskAction {
                job_id,
                task_id,
                action,
                revive: None,
            })
            .await;
        match first? {
            ControlOutcome::NotLoaded => {
                let record = self.job_record(job_id).await?;
                self.task_of(job_id, task_id).await?;
                if action == TaskAction::Cancel {
                    return Err(ApiError::conflict(format!(
                        "job {job_id} is {}; its tasks cannot be cancelled",
                        record.view().state.as_str()
                    )));
                }
                let revive = Some(self.revived(&record).await?);
                self.change(ControlRequest::TaskAction {
                    job_id,
                    task_id,
                    action,
                    revive,
                })
                .await?;
            }
            ControlOutcome::Done | ControlOutcome::Queue(_) => {}
        }
        self.audit(
            caller,
            &format!("task.{action:?}").to_lowercase(),
            format!("job {job_id} task {task_id}"),
        );
        self.task_of(job_id, task_id).await
    }

    async fn task_of(&self, job_id: JobId, task_id: TaskId) -> Result<TaskView, ApiError> {
        let row = self
            .inner
            .reader
            .get_task(task_id)
            .await
            .map_err(storage_error)?
            .filter(|t| t.job_id == job_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("task {task_id} of job {job_id} not found"))
            })?;
        crate::store::task_view(&row).map_err(storage_error)
    }

    /// Changes a job's settings (or its frames, while nothing ran).
    pub async fn edit_job(
        &self,
        caller: &Caller,
        job_id: JobId,
        mut patch: JobPatch,
    ) -> Result<JobView, ApiError> {
        if patch == JobPatch::default() {
            return Err(ApiError::bad_request(
                "nothing to change: give at least one field",
            ));
        }
        let record = self.job_record(job_id).await?;
        caller.check_job(job_id, &record.settings.user, "editing a job")?;
        if record.finished_at.is_some() {
            return Err(ApiError::conflict(format!(
                "job {job_id} is {}; only queued or running jobs can be changed",
                record.view().state.as_str()
            )));
        }
        if let Some(weight) = patch.weight {
            check_weight(weight)?;
        }
        check_agents("min_agents", patch.min_agents)?;
        check_agents("max_agents", patch.max_agents)?;
        if let Some(notes) = &patch.notes {
            check_text("notes", notes, MAX_NOTES_CHARS)?;
        }
        let jobtype = self
            .inner
            .catalog
            .get(&record.jobtype, record.jobtype_version)
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "job {job_id}'s type {} version {} is no longer known to this master",
                    record.jobtype, record.jobtype_version
                ))
            })?;
        // Edited requirements keep what the job type needs.
        if let Some(requirements) = patch.requirements.take() {
            patch.requirements = Some(with_jobtype_software(&jobtype, requirements));
        }
        let needs = patch
            .requirements
            .as_ref()
            .map(Needs::parse)
            .transpose()
            .map_err(ApiError::bad_request)?;
        let frames = patch.frames.as_deref().map(parse_frames).transpose()?;
        let finished = || {
            ApiError::conflict(format!(
                "job {job_id} is finished; only queued or running jobs can be changed"
            ))
        };
        // The frames first: a job that has started refuses them, and then nothing changes.
        if let Some(frames) = frames {
            let batch = batch_for(&jobtype, &frames, record.batch)?;
            let count = frames.task_count(batch);
            if count > MAX_TASKS_PER_JOB {
                return Err(ApiError::bad_request(format!(
                    "frames: {count} tasks exceed the limit of {MAX_TASKS_PER_JOB} per job"
                )));
            }
            let first_task_id = self
                .inner
                .store
                .send(AllocateTaskIds(count))
                .await
                .map_err(mailbox_error)?;
            let frames = NewFrames {
                frames: frames.to_string(),
                batch,
                first_task_id,
                ranges: frames.ranges().to_vec(),
                batches: frames.batches(batch).collect(),
            };
            let outcome = self
                .change(ControlRequest::ReplaceFrames { job_id, frames })
                .await?;
            if matches!(outcome, ControlOutcome::NotLoaded) {
                return Err(finished());
            }
        }
        let mut settings = patch.clone();
        settings.frames = None;
        if settings != JobPatch::default() {
            let outcome = self
                .change(ControlRequest::EditJob {
                    job_id,
                    patch: settings,
                    needs,
                })
                .await?;
            if matches!(outcome, ControlOutcome::NotLoaded) {
                return Err(finished());
            }
        }
        info!(job_id, by = caller.user, "job changed");
        self.audit(caller, "job.edit", format!("job {job_id}"));
        self.get_job(caller, job_id).await
    }

    /// Deletes a job with its tasks and logs (running tasks are killed).
    pub async fn delete_job(&self, caller: &Caller, job_id: JobId) -> Result<(), ApiError> {
        let record = self.job_record(job_id).await?;
        caller.check_job(job_id, &record.settings.user, "deleting a job")?;
        self.change(ControlRequest::DeleteJob { job_id }).await?;
        self.inner.logs.do_send(DeleteJobLogs(job_id));
        info!(job_id, by = caller.user, "job deleted");
        self.audit(caller, "job.delete", format!("job {job_id}"));
        Ok(())
    }

    /// Why a job's tasks wait.
    pub async fn why(&self, _caller: &Caller, job_id: JobId) -> Result<WhyView, ApiError> {
        let live = self
            .inner
            .scheduler
            .send(Why(job_id))
            .await
            .map_err(mailbox_error)?;
        if let Some(view) = live {
            return Ok(view);
        }
        let record = self.job_record(job_id).await?;
        let state = record.view().state;
        Ok(WhyView {
            job_id,
            state,
            waiting: 0,
            reasons: vec![format!("nothing waits: the job is {}", state.as_str())],
            never: false,
        })
    }

    /// The queue tree.
    pub async fn list_queues(&self, _caller: &Caller) -> Result<Vec<QueueView>, ApiError> {
        self.inner
            .scheduler
            .send(ListQueues)
            .await
            .map_err(mailbox_error)
    }

    /// One queue.
    pub async fn get_queue(&self, caller: &Caller, path: &str) -> Result<QueueView, ApiError> {
        let path = queues::normalize(path).map_err(ApiError::bad_request)?;
        let shown = queues::display(&path);
        self.list_queues(caller)
            .await?
            .into_iter()
            .find(|q| q.path == shown)
            .ok_or_else(|| ApiError::not_found(format!("no queue {shown}")))
    }

    /// Creates a queue.
    pub async fn create_queue(
        &self,
        caller: &Caller,
        spec: QueueSpec,
    ) -> Result<QueueView, ApiError> {
        caller.require(UserRole::Operator, "creating queues")?;
        let outcome = self.change(ControlRequest::CreateQueue(spec)).await?;
        let ControlOutcome::Queue(queue) = outcome else {
            return Err(ApiError::internal("the scheduler did not return the queue"));
        };
        info!(queue = %queues::display(&queue.path), "queue created");
        self.audit(
            caller,
            "queue.create",
            format!("queue {}", queues::display(&queue.path)),
        );
        self.get_queue(caller, &queue.path).await
    }

    /// Changes a queue.
    pub async fn edit_queue(
        &self,
        caller: &Caller,
        path: &str,
        patch: QueuePatch,
    ) -> Result<QueueView, ApiError> {
        caller.require(UserRole::Operator, "changing queues")?;
        if patch == QueuePatch::default() {
            return Err(ApiError::bad_request(
                "nothing to change: give at least one field",
            ));
        }
        let outcome = self
            .change(ControlRequest::EditQueue {
                path: path.to_string(),
                patch,
            })
            .await?;
        let ControlOutcome::Queue(queue) = outcome else {
            return Err(ApiError::internal("the scheduler did not return the queue"));
        };
        self.audit(
            caller,
            "queue.edit",
            format!("queue {}", queues::display(&queue.path)),
        );
        self.get_queue(caller, &queue.path).await
    }

    /// Deletes an empty queue.
    pub async fn delete_queue(&self, caller: &Caller, path: &str) -> Result<(), ApiError> {
        caller.require(UserRole::Operator, "deleting queues")?;
        self.change(ControlRequest::DeleteQueue {
            path: path.to_string(),
        })
        .await?;
        info!(queue = path, "queue deleted");
        self.audit(caller, "queue.delete", format!("queue {path}"));
        Ok(())
    }

    /// Enables or disables an agent, or sets its tags.
    pub async fn edit_agent(
        &self,
        caller: &Caller,
        agent_id: Uuid,
        patch: AgentPatch,
    ) -> Result<AgentView, ApiError> {
        caller.require(UserRole::Operator, "changing agents")?;
        if patch == AgentPatch::default() {
            return Err(ApiError::bad_request(
                "nothing to change: give enabled or tags",
            ));
        }
        let mut view = self
            .inner
            .registry
            .send(EditAgent { agent_id, patch })
            .await
            .map_err(mailbox_error)??;
        if let Some(free) = self.inner.stats.free.get(&agent_id) {
            view.free = free.clone();
        }
        self.audit(caller, "agent.edit", format!("agent {agent_id}"));
        Ok(view)
    }

    /// A page of jobs, newest first.
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        limit: u64,
        offset: u64,
    ) -> Result<Page<JobView>, ApiError> {
        check_page(limit, offset)?;
        let (jobs, total) = self
            .inner
            .reader
            .list_jobs(limit, offset)
            .await
            .map_err(storage_error)?;
        Ok(Page {
            items: jobs.iter().map(|j| Self::shown(caller, j.view())).collect(),
            total,
        })
    }

    /// One job.
    pub async fn get_job(&self, caller: &Caller, job_id: JobId) -> Result<JobView, ApiError> {
        self.inner
            .reader
            .get_job(job_id)
            .await
            .map_err(storage_error)?
            .map(|j| Self::shown(caller, j.view()))
            .ok_or_else(|| ApiError::not_found(format!("job {job_id} not found")))
    }

    /// A page of a job's tasks in frame order.
    pub async fn list_tasks(
        &self,
        caller: &Caller,
        job_id: JobId,
        limit: u64,
        offset: u64,
    ) -> Result<Page<TaskView>, ApiError> {
        let query = TaskQuery {
            offset,
            ..TaskQuery::first(limit)
        };
        self.browse_tasks(caller, job_id, query).await
    }

    /// A page of agents, online and offline, by name.
    pub async fn list_agents(
        &self,
        _caller: &Caller,
        limit: u64,
        offset: u64,
    ) -> Result<Page<AgentView>, ApiError> {
        check_page(limit, offset)?;
        let mut agents: Vec<AgentView> = self
            .inner
            .agents
            .iter()
            .map(|entry| {
                let mut view = entry.value().view.clone();
                if let Some(free) = self.inner.stats.free.get(&view.id) {
                    view.free = free.clone();
                }
                view
            })
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
        caller: &Caller,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<LogChunk, ApiError> {
        self.read_log(caller, job_id, task_id, attempt, offset, LOG_CHUNK)
            .await
    }

    /// Like [`Service::task_log`] with a chosen upper bound on the text returned.
    pub async fn read_log(
        &self,
        caller: &Caller,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
        offset: u64,
        max_bytes: usize,
    ) -> Result<LogChunk, ApiError> {
        let (attempt, complete) = self.log_attempt(caller, job_id, task_id, attempt).await?;
        let task = TaskRef { task_id, attempt };
        let stored = self.stored_log(job_id, task, complete).await?;
        let read = self
            .inner
            .logs
            .send(ReadLog {
                job_id,
                task,
                offset,
                max_bytes,
                stored,
            })
            .await
            .map_err(mailbox_error)?
            .map_err(|e| ApiError::internal(format!("cannot read the task log: {e}")))?;
        Ok(LogChunk {
            attempt,
            text: read.text,
            next_offset: read.next_offset,
            complete,
        })
    }

    /// The part of a task's log from `offset` (at most `max_bytes`, whole lines) as a
    /// range of its file, for a download that streams it; with the attempt and whether
    /// it has ended.
    pub async fn locate_log(
        &self,
        caller: &Caller,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
        offset: u64,
        max_bytes: u64,
    ) -> Result<(LogSpan, u32, bool), ApiError> {
        let (attempt, complete) = self.log_attempt(caller, job_id, task_id, attempt).await?;
        let task = TaskRef { task_id, attempt };
        let stored = self.stored_log(job_id, task, complete).await?;
        let span = self
            .inner
            .logs
            .send(LocateLog {
                job_id,
                task,
                offset,
                max_bytes,
                stored,
            })
            .await
            .map_err(mailbox_error)?
            .map_err(|e| ApiError::internal(format!("cannot read the task log: {e}")))?;
        Ok((span, attempt, complete))
    }

    /// Where the index says an attempt's log is, once the attempt has ended (the log
    /// collector knows where the text of running and recently ended ones is).
    async fn stored_log(
        &self,
        job_id: JobId,
        task: TaskRef,
        ended: bool,
    ) -> Result<Option<LogPlace>, ApiError> {
        if !ended {
            return Ok(None);
        }
        let entry = self
            .inner
            .reader
            .get_log_index(task.task_id, task.attempt)
            .await
            .map_err(storage_error)?;
        Ok(entry.map(|entry| {
            LogPlace::indexed(
                job_id,
                task,
                entry.path,
                u64::try_from(entry.file_offset).unwrap_or(0),
                u64::try_from(entry.size).unwrap_or(0),
            )
        }))
    }

    /// Which attempt of a task a log read is about (the current one by default), and
    /// whether it has ended; checks the caller may read the job's logs.
    async fn log_attempt(
        &self,
        caller: &Caller,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
    ) -> Result<(u32, bool), ApiError> {
        self.check_job(caller, job_id, "reading a job's logs")
            .await?;
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
        let running = WorkState::parse(&task.state) == Some(WorkState::Running);
        Ok((attempt, attempt < current || !running))
    }

    /// Every attempt of a task, oldest first; the running one last, without an end.
    pub async fn task_attempts(
        &self,
        _caller: &Caller,
        job_id: JobId,
        task_id: TaskId,
    ) -> Result<Vec<AttemptView>, ApiError> {
        let task = self.task_of(job_id, task_id).await?;
        let mut attempts = self
            .inner
            .reader
            .attempts(task_id)
            .await
            .map_err(storage_error)?;
        if task.state == WorkState::Running && attempts.iter().all(|a| a.attempt != task.attempt) {
            attempts.push(AttemptView {
                attempt: task.attempt,
                agent: task.agent,
                started_at: task.started_at,
                finished_at: None,
                exit_code: None,
                outcome: "running".into(),
                error: None,
            });
        }
        Ok(attempts)
    }

    /// Every version of every job type.
    pub fn list_jobtypes(&self) -> Vec<JobTypeView> {
        self.inner.catalog.list()
    }

    /// One version of a job type, the newest when `version` is `None`.
    pub fn get_jobtype(&self, name: &str, version: Option<u32>) -> Result<JobTypeView, ApiError> {
        self.inner
            .catalog
            .resolve(name, version)
            .map(|def| def.view())
            .map_err(ApiError::not_found)
    }

    /// Stores a job-type definition file: the type, and whether this version is new.
    pub async fn add_jobtype(
        &self,
        caller: &Caller,
        source: &str,
    ) -> Result<(JobTypeView, bool), ApiError> {
        caller.require(UserRole::Operator, "adding job types")?;
        match self.inner.catalog.add(&self.inner.store, source).await? {
            Added::Created(view) => {
                self.audit(
                    caller,
                    "jobtype.add",
                    format!("job type {} version {}", view.name, view.version),
                );
                Ok((view, true))
            }
            Added::Unchanged(view) => Ok((view, false)),
        }
    }

    /// Every path map.
    pub fn list_path_maps(&self) -> Vec<PathMapView> {
        self.inner.catalog.path_maps()
    }

    /// Adds a path map.
    pub async fn add_path_map(
        &self,
        caller: &Caller,
        spec: PathMapSpec,
    ) -> Result<PathMapView, ApiError> {
        caller.require(UserRole::Operator, "adding path maps")?;
        let view = self
            .inner
            .catalog
            .add_path_map(&self.inner.store, spec)
            .await?;
        self.audit(caller, "pathmap.add", format!("path map {}", view.id));
        Ok(view)
    }

    /// Deletes a path map.
    pub async fn delete_path_map(&self, caller: &Caller, id: i64) -> Result<(), ApiError> {
        caller.require(UserRole::Operator, "deleting path maps")?;
        if self
            .inner
            .catalog
            .delete_path_map(&self.inner.store, id)
            .await?
        {
            self.audit(caller, "pathmap.delete", format!("path map {id}"));
            Ok(())
        } else {
            Err(ApiError::not_found(format!("path map {id} not found")))
        }
    }

    /// The files a job produced, in frame order.
    pub async fn job_outputs(
        &self,
        _caller: &Caller,
        job_id: JobId,
    ) -> Result<Vec<OutputView>, ApiError> {
        self.job_record(job_id).await?;
        self.inner
            .reader
            .outputs(job_id)
            .await
            .map_err(storage_error)
    }

    /// The preview image of a frame: its MIME type and bytes.
    pub async fn preview(
        &self,
        _caller: &Caller,
        job_id: JobId,
        frame: i64,
    ) -> Result<(String, Vec<u8>), ApiError> {
        self.inner
            .reader
            .preview(job_id, frame)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| {
                ApiError::not_found(format!("job {job_id} has no preview of frame {frame}"))
            })
    }

    /// Log text of every attempt as it is written (see [`crate::logs::LiveChunk`]).
    pub fn subscribe_logs(&self) -> broadcast::Receiver<LiveChunk> {
        self.inner.live.subscribe()
    }

    /// Health of the master.
    pub async fn health(&self, _caller: &Caller) -> Result<HealthView, ApiError> {
        let agents_online = self
            .inner
            .agents
            .iter()
            .filter(|entry| entry.value().view.state == AgentState::Online)
            .count() as u64;
        let inner = &self.inner;
        let (store, scheduler, registry, logs, apps) = tokio::join!(
            crate::health::store(&inner.store),
            crate::health::ping("scheduler", &inner.scheduler),
            crate::health::ping("registry", &inner.registry),
            crate::health::ping("log collector", &inner.logs),
            crate::health::ping("apps", &inner.apps),
        );
        let problems: Vec<String> = [store, scheduler, registry, logs, apps]
            .into_iter()
            .flatten()
            .collect();
        Ok(HealthView {
            status: if problems.is_empty() {
                "ok"
            } else {
                "degraded"
            }
            .into(),
            problems,
            version: env!("CARGO_PKG_VERSION").into(),
            database: self.inner.reader.backend_name().into(),
            agents_online,
            tasks_queued: self.inner.stats.queued.load(Ordering::Relaxed),
            tasks_running: self.inner.stats.running.load(Ordering::Relaxed),
        })
    }

    /// Answers a request of the protocol's client API from `caller`.
    pub async fn handle(&self, caller: &Caller, request: ClientRequest) -> ClientResponse {
        let c = caller;
        let auth = &self.inner.auth;
        let result = match request {
            ClientRequest::Health => self.health(c).await.map(ClientResponse::Health),
            ClientRequest::SubmitJob(job) => self.submit_job(c, job).await.map(ClientResponse::Job),
            ClientRequest::ListJobs { limit, offset } => self
                .list_jobs(c, limit, offset)
                .await
                .map(ClientResponse::Jobs),
            ClientRequest::GetJob { job_id } => {
                self.get_job(c, job_id).await.map(ClientResponse::Job)
            }
            ClientRequest::ListTasks {
                job_id,
                limit,
                offset,
            } => self
                .list_tasks(c, job_id, limit, offset)
                .await
                .map(ClientResponse::Tasks),
            ClientRequest::TaskAtFrame { job_id, frame } => self
                .task_at_frame(c, job_id, frame)
                .await
                .map(ClientResponse::Task),
            ClientRequest::BrowseTasks { job_id, query } => self
                .browse_tasks(c, job_id, query)
                .await
                .map(ClientResponse::Tasks),
            ClientRequest::ListAgents { limit, offset } => self
                .list_agents(c, limit, offset)
                .await
                .map(ClientResponse::Agents),
            ClientRequest::TaskLog {
                job_id,
                task_id,
                attempt,
                offset,
            } => self
                .task_log(c, job_id, task_id, attempt, offset)
                .await
                .map(ClientResponse::Log),
            ClientRequest::JobsAction { action, ids, kill } => self
                .jobs_action(c, action, &ids, kill)
                .await
                .map(ClientResponse::Actions),
            ClientRequest::TaskAction {
                job_id,
                task_id,
                action,
            } => self
                .task_action(c, job_id, task_id, action)
                .await
                .map(ClientResponse::Task),
            ClientRequest::EditJob { job_id, patch } => self
                .edit_job(c, job_id, patch)
                .await
                .map(ClientResponse::Job),
            ClientRequest::DeleteJob { job_id } => self
                .delete_job(c, job_id)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::Why { job_id } => self.why(c, job_id).await.map(ClientResponse::Why),
            ClientRequest::ListQueues => self.list_queues(c).await.map(ClientResponse::Queues),
            ClientRequest::CreateQueue(spec) => {
                self.create_queue(c, spec).await.map(ClientResponse::Queue)
            }
            ClientRequest::EditQueue { path, patch } => self
                .edit_queue(c, &path, patch)
                .await
                .map(ClientResponse::Queue),
            ClientRequest::DeleteQueue { path } => self
                .delete_queue(c, &path)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::TaskAttempts { job_id, task_id } => self
                .task_attempts(c, job_id, task_id)
                .await
                .map(ClientResponse::Attempts),
            ClientRequest::EditAgent { agent_id, patch } => self
                .edit_agent(c, agent_id, patch)
                .await
                .map(ClientResponse::Agent),
            ClientRequest::ListJobTypes => Ok(ClientResponse::JobTypes(self.list_jobtypes())),
            ClientRequest::GetJobType { name, version } => {
                self.get_jobtype(&name, version)
                    .map(|view| ClientResponse::JobType {
                        view,
                        created: false,
                    })
            }
            ClientRequest::AddJobType(source) => self
                .add_jobtype(c, &source.source)
                .await
                .map(|(view, created)| ClientResponse::JobType { view, created }),
            ClientRequest::ListPathMaps => Ok(ClientResponse::PathMaps(self.list_path_maps())),
            ClientRequest::AddPathMap(spec) => self
                .add_path_map(c, spec)
                .await
                .map(ClientResponse::PathMap),
            ClientRequest::DeletePathMap { id } => self
                .delete_path_map(c, id)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::JobOutputs { job_id } => self
                .job_outputs(c, job_id)
                .await
                .map(ClientResponse::Outputs),
            ClientRequest::RemoveAgent { agent_id } => self
                .remove_agent(c, agent_id)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::WhoAmI => Ok(ClientResponse::Me(auth.who_am_i(c))),
            ClientRequest::ListUsers => auth.list_users(c).map(ClientResponse::Users),
            ClientRequest::AddUser(spec) => auth.add_user(c, spec).await.map(ClientResponse::User),
            ClientRequest::EditUser { name, patch } => auth
                .edit_user(c, &name, patch)
                .await
                .map(ClientResponse::User),
            ClientRequest::RemoveUser { name } => auth
                .remove_user(c, &name)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::ListTokens { all } => {
                auth.list_tokens(c, all).map(ClientResponse::Tokens)
            }
            ClientRequest::CreateToken(spec) => {
                auth.create_token(c, spec).await.map(ClientResponse::Token)
            }
            ClientRequest::RevokeToken { id } => auth
                .revoke_token(c, &id)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::RevokeAgent { agent_id } => self
                .revoke_agent(c, agent_id)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::Audit { limit, offset } => auth
                .audit(c, limit, offset)
                .await
                .map(ClientResponse::Audit),
            ClientRequest::CreateApp(spec) => {
                self.create_app(c, spec).await.map(ClientResponse::App)
            }
            ClientRequest::ListApps => self.list_apps(c).await.map(ClientResponse::Apps),
            ClientRequest::GetApp { name } => self.get_app(c, &name).await.map(ClientResponse::App),
            ClientRequest::UploadPart {
                upload,
                offset,
                data,
            } => self
                .upload_part(c, &upload, offset, &data)
                .await
                .map(ClientResponse::Uploaded),
            ClientRequest::DeployApp { name, upload } => self
                .deploy_upload(c, &name, &upload)
                .await
                .map(ClientResponse::AppRelease),
            ClientRequest::AppConfig { name } => self
                .app_config(c, &name)
                .await
                .map(|map| ClientResponse::AppConfig(serde_json::Value::Object(map).into())),
            ClientRequest::ConfigureApp { name, values } => match values.0 {
                serde_json::Value::Object(values) => self
                    .configure_app(c, &name, values)
                    .await
                    .map(ClientResponse::AppRelease),
                _ => Err(ApiError::bad_request(
                    "values: must be an object of field names to values",
                )),
            },
            ClientRequest::RollbackApp { name, to } => self
                .rollback_app(c, &name, to)
                .await
                .map(ClientResponse::AppRolledBack),
            ClientRequest::AppLogs {
                name,
                pattern,
                since_ms,
                limit,
            } => self
                .app_logs(c, &name, pattern.as_deref(), since_ms, limit as usize)
                .await
                .map(ClientResponse::AppLogs),
            ClientRequest::DeleteApp { name } => self
                .delete_app(c, &name)
                .await
                .map(|()| ClientResponse::Deleted),
            ClientRequest::SetAppNotifications { name, rules } => self
                .set_app_notifications(c, &name, rules)
                .await
                .map(ClientResponse::AppNotifications),
        };
        result.unwrap_or_else(ClientResponse::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_protocol::Json;

    fn submission(params: serde_json::Value, frames: &str) -> JobSubmission {
        JobSubmission::new("t", Json(params), frames)
    }

    fn message(result: Result<NewJob, ApiError>) -> String {
        result.map(|_| ()).unwrap_err().message
    }

    #[test]
    fn validation_names_the_field() {
        let ok = serde_json::json!({"command": ["echo", "{frame}"]});
        assert_eq!(
            validate(submission(ok.clone(), "1-10:2"), &Catalog::builtin())
                .unwrap()
                .batches
                .len(),
            5
        );
        assert_eq!(
            message(validate(
                submission(ok.clone(), "10-1"),
                &Catalog::builtin()
            )),
            "frames: invalid frame range \"10-1\": end frame 1 is before start frame 10"
        );
        assert!(
            message(validate(submission(ok.clone(), "a-b"), &Catalog::builtin()))
                .starts_with("frames: ")
        );
        assert_eq!(
            message(validate(
                submission(serde_json::json!({"command": []}), "1"),
                &Catalog::builtin()
            )),
            "params.command: its length must be at least 1, got 0"
        );
        assert_eq!(
            message(validate(
                submission(serde_json::Value::Null, "1"),
                &Catalog::builtin()
            )),
            "params.command: required (list<string> parameter)"
        );
        assert!(
            message(validate(
                submission(serde_json::json!({"command": ["x"], "bogus": 1}), "1"),
                &Catalog::builtin()
            ))
            .starts_with("params.bogus: unknown parameter (known: command, shell, env, app)")
        );
        let mut s = submission(ok.clone(), "1");
        s.title = "  ".into();
        assert_eq!(
            message(validate(s, &Catalog::builtin())),
            "title: must not be empty"
        );
        let mut s = submission(ok.clone(), "1");
        s.batch = 0;
        assert_eq!(
            message(validate(s, &Catalog::builtin())),
            "batch: must be at least 1"
        );
        let mut s = submission(ok.clone(), "1-1000000000000:1000000000000");
        s.batch = u32::MAX;
        assert_eq!(
            message(validate(s, &Catalog::builtin())),
            "batch: must be at most 1000000"
        );
        let mut s = submission(ok.clone(), "-1000000000000-1000000000000:1000000000000");
        s.batch = MAX_BATCH;
        assert_eq!(validate(s, &Catalog::builtin()).unwrap().batches.len(), 1);
        let mut s = submission(ok.clone(), "1");
        s.jobtype = "maya".into();
        assert!(message(validate(s, &Catalog::builtin())).starts_with("jobtype: unknown job type"));
        let mut s = submission(ok.clone(), "1");
        s.jobtype_version = Some(2);
        assert!(message(validate(s, &Catalog::builtin())).starts_with("jobtype_version: "));
        let mut s = submission(serde_json::json!({"scene": "/s.blend"}), "1");
        s.jobtype = "blender".into();
        assert_eq!(
            message(validate(s, &Catalog::builtin())),
            "params.output: required (path parameter)"
        );
        assert!(
            message(validate(submission(ok, "1-1000001"), &Catalog::builtin()))
                .starts_with("frames: 1000001 tasks")
        );
    }
}
