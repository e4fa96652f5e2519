//! A typed async client for tools: the CLI and scripts talk to the master through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::codec::Framed;
use uuid::Uuid;

use crate::ProtocolError;
use crate::access::{
    AuditView, NewToken, TokenSpec, TokenView, UserPatch, UserSpec, UserView, WhoAmI,
};
use crate::codec::{DEFAULT_MAX_FRAME, FrameCodec};
use crate::handshake::{self, Hello, Role};
use crate::messages::{ApiError, ClientEnvelope, ClientRequest, ClientResponse, ServerEnvelope};
use crate::model::{
    ActionOutcome, AgentPatch, AgentView, AttemptView, HealthView, JobAction, JobId, JobPatch,
    JobSubmission, JobTypeSource, JobTypeView, JobView, LogChunk, OutputView, Page, PathMapSpec,
    PathMapView, QueuePatch, QueueSpec, QueueView, TaskAction, TaskId, TaskView, WhyView,
};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the master.
    #[error("cannot connect to the master at {addr}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (a certificate that does not verify, or no TLS there).
    #[error("tls with the master at {addr} failed: {source}")]
    Tls {
        /// The address tried.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection or the protocol failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The master refused the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The master answered with a reply of the wrong kind.
    #[error("unexpected reply from the master to {0}")]
    UnexpectedReply(&'static str),
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Maximum frame size in both directions.
    pub max_frame: usize,
    /// How long to wait for each reply.
    pub request_timeout: Duration,
    /// Credentials presented in the handshake.
    pub credentials: Option<String>,
    /// TLS, for a master that serves it ([`crate::tls::client_config`]).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            request_timeout: Duration::from_secs(60),
            credentials: None,
            tls: None,
        }
    }
}

type ClientFramed = Framed<crate::tls::Stream, FrameCodec<ClientEnvelope, ServerEnvelope>>;

/// A connection to the master. Requests are sent one at a time; the client can be shared
/// between tasks (`&self` methods).
///
/// ```no_run
/// # async fn run() -> Result<(), furrow_protocol::ClientError> {
/// let client = furrow_protocol::Client::connect("127.0.0.1:7420").await?;
/// let jobs = client.list_jobs(50, 0).await?;
/// println!("{} jobs", jobs.total);
/// # Ok(()) }
/// ```
pub struct Client {
    framed: Mutex<ClientFramed>,
    next_id: AtomicU64,
    master: Hello,
    options: ClientOptions,
}

impl Client {
    /// Connects with default options.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects and handshakes.
    pub async fn connect_with(addr: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        tcp.set_nodelay(true).ok();
        let mut stream: crate::tls::Stream = match &options.tls {
            Some(config) => crate::tls::connect(tcp, addr, config.clone())
                .await
                .map_err(|source| ClientError::Tls {
                    addr: addr.to_string(),
                    source,
                })?,
            None => Box::new(tcp),
        };
        let mut hello = Hello::new(Role::Client, Uuid::new_v4());
        hello.credentials = options.credentials.clone();
        let master = handshake::connect(&mut stream, &hello).await?;
        let framed = Framed::new(stream, FrameCodec::new(options.max_frame));
        Ok(Self {
            framed: Mutex::new(framed),
            next_id: AtomicU64::new(1),
            master,
            options,
        })
    }

    /// The master's handshake (its version and node id).
    pub fn master(&self) -> &Hello {
        &self.master
    }

    /// Sends one request and waits for its reply.
    pub async fn request(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut framed = self.framed.lock().await;
        framed.send(ClientEnvelope { id, request }).await?;
        let timeout = self.options.request_timeout;
        loop {
            let next = tokio::time::timeout(timeout, framed.next())
                .await
                .map_err(|_| ProtocolError::Timeout(timeout))?;
            match next {
                None => return Err(ProtocolError::Closed.into()),
                Some(Err(e)) => return Err(e.into()),
                // Replies to requests abandoned by a timed-out caller are skipped.
                Some(Ok(envelope)) if envelope.id != id => continue,
                Some(Ok(envelope)) => {
                    return match envelope.response {
                        ClientResponse::Error(e) => Err(e.into()),
                        other => Ok(other),
                    };
                }
            }
        }
    }

    /// Master health.
    pub async fn health(&self) -> Result<HealthView, ClientError> {
        match self.request(ClientRequest::Health).await? {
            ClientResponse::Health(h) => Ok(h),
            _ => Err(ClientError::UnexpectedReply("health")),
        }
    }

    /// Submits a job; it is stored before this returns.
    pub async fn submit_job(&self, job: JobSubmission) -> Result<JobView, ClientError> {
        match self.request(ClientRequest::SubmitJob(job)).await? {
            ClientResponse::Job(j) => Ok(j),
            _ => Err(ClientError::UnexpectedReply("submit job")),
        }
    }

    /// A page of jobs, newest first.
    pub async fn list_jobs(&self, limit: u64, offset: u64) -> Result<Page<JobView>, ClientError> {
        match self
            .request(ClientRequest::ListJobs { limit, offset })
            .await?
        {
            ClientResponse::Jobs(p) => Ok(p),
            _ => Err(ClientError::UnexpectedReply("list jobs")),
        }
    }

    /// One job.
    pub async fn get_job(&self, job_id: JobId) -> Result<JobView, ClientError> {
        match self.request(ClientRequest::GetJob { job_id }).await? {
            ClientResponse::Job(j) => Ok(j),
            _ => Err(ClientError::UnexpectedReply("get job")),
        }
    }

    /// A page of a job's tasks, in frame order.
    pub async fn list_tasks(
        &self,
        job_id: JobId,
        limit: u64,
        offset: u64,
    ) -> Result<Page<TaskView>, ClientError> {
        match self
            .request(ClientRequest::ListTasks {
                job_id,
                limit,
                offset,
            })
            .await?
        {
            ClientResponse::Tasks(p) => Ok(p),
            _ => Err(ClientError::UnexpectedReply("list tasks")),
        }
    }

    /// A page of a job's tasks that seeks by frame (fast at any depth), optionally of
    /// one state.
    pub async fn browse_tasks(
        &self,
        job_id: JobId,
        query: crate::browse::TaskQuery,
    ) -> Result<Page<TaskView>, ClientError> {
        match self
            .request(ClientRequest::BrowseTasks { job_id, query })
            .await?
        {
            ClientResponse::Tasks(p) => Ok(p),
            _ => Err(ClientError::UnexpectedReply("browse tasks")),
        }
    }

    /// The task covering `frame`.
    pub async fn task_at_frame(&self, job_id: JobId, frame: i64) -> Result<TaskView, ClientError> {
        match self
            .request(ClientRequest::TaskAtFrame { job_id, frame })
            .await?
        {
            ClientResponse::Task(t) => Ok(t),
            _ => Err(ClientError::UnexpectedReply("task at frame")),
        }
    }

    /// A page of agents.
    pub async fn list_agents(
        &self,
        limit: u64,
        offset: u64,
    ) -> Result<Page<AgentView>, ClientError> {
        match self
            .request(ClientRequest::ListAgents { limit, offset })
            .await?
        {
            ClientResponse::Agents(p) => Ok(p),
            _ => Err(ClientError::UnexpectedReply("list agents")),
        }
    }

    /// A task's log from `offset` (of `attempt`, or the current attempt).
    pub async fn task_log(
        &self,
        job_id: JobId,
        task_id: TaskId,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<LogChunk, ClientError> {
        match self
            .request(ClientRequest::TaskLog {
                job_id,
                task_id,
                attempt,
                offset,
            })
            .await?
        {
            ClientResponse::Log(l) => Ok(l),
            _ => Err(ClientError::UnexpectedReply("task log")),
        }
    }

    /// Applies `action` to each of `ids`; one outcome per job.
    pub async fn jobs_action(
        &self,
        action: JobAction,
        ids: Vec<JobId>,
        kill: bool,
    ) -> Result<Vec<ActionOutcome>, ClientError> {
        match self
            .request(ClientRequest::JobsAction { action, ids, kill })
            .await?
        {
            ClientResponse::Actions(outcomes) => Ok(outcomes),
            _ => Err(ClientError::UnexpectedReply("jobs action")),
        }
    }

    /// Reruns or cancels one task.
    pub async fn task_action(
        &self,
        job_id: JobId,
        task_id: TaskId,
        action: TaskAction,
    ) -> Result<TaskView, ClientError> {
        match self
            .request(ClientRequest::TaskAction {
                job_id,
                task_id,
                action,
            })
            .await?
        {
            ClientResponse::Task(t) => Ok(t),
            _ => Err(ClientError::UnexpectedReply("task action")),
        }
    }

    /// Changes a job's settings.
    pub async fn edit_job(&self, job_id: JobId, patch: JobPatch) -> Result<JobView, ClientError> {
        match self
            .request(ClientRequest::EditJob { job_id, patch })
            .await?
        {
            ClientResponse::Job(j) => Ok(j),
            _ => Err(ClientError::UnexpectedReply("edit job")),
        }
    }

    /// Deletes a job with its logs.
    pub async fn delete_job(&self, job_id: JobId) -> Result<(), ClientError> {
        match self.request(ClientRequest::DeleteJob { job_id }).await? {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("delete job")),
        }
    }

    /// Why a job's tasks wait.
    pub async fn why(&self, job_id: JobId) -> Result<WhyView, ClientError> {
        match self.request(ClientRequest::Why { job_id }).await? {
            ClientResponse::Why(w) => Ok(w),
            _ => Err(ClientError::UnexpectedReply("why")),
        }
    }

    /// The queue tree.
    pub async fn list_queues(&self) -> Result<Vec<QueueView>, ClientError> {
        match self.request(ClientRequest::ListQueues).await? {
            ClientResponse::Queues(q) => Ok(q),
            _ => Err(ClientError::UnexpectedReply("list queues")),
        }
    }

    /// Creates a queue.
    pub async fn create_queue(&self, spec: QueueSpec) -> Result<QueueView, ClientError> {
        match self.request(ClientRequest::CreateQueue(spec)).await? {
            ClientResponse::Queue(q) => Ok(q),
            _ => Err(ClientError::UnexpectedReply("create queue")),
        }
    }

    /// Changes a queue.
    pub async fn edit_queue(
        &self,
        path: String,
        patch: QueuePatch,
    ) -> Result<QueueView, ClientError> {
        match self
            .request(ClientRequest::EditQueue { path, patch })
            .await?
        {
            ClientResponse::Queue(q) => Ok(q),
            _ => Err(ClientError::UnexpectedReply("edit queue")),
        }
    }

    /// Deletes an empty queue.
    pub async fn delete_queue(&self, path: String) -> Result<(), ClientError> {
        match self.request(ClientRequest::DeleteQueue { path }).await? {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("delete queue")),
        }
    }

    /// Enables or disables an agent, or sets its tags.
    pub async fn edit_agent(
        &self,
        agent_id: Uuid,
        patch: AgentPatch,
    ) -> Result<AgentView, ClientError> {
        match self
            .request(ClientRequest::EditAgent { agent_id, patch })
            .await?
        {
            ClientResponse::Agent(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply("edit agent")),
        }
    }

    /// Every attempt of a task, oldest first.
    pub async fn task_attempts(
        &self,
        job_id: JobId,
        task_id: TaskId,
    ) -> Result<Vec<AttemptView>, ClientError> {
        match self
            .request(ClientRequest::TaskAttempts { job_id, task_id })
            .await?
        {
            ClientResponse::Attempts(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply("task attempts")),
        }
    }

    /// Every version of every job type.
    pub async fn jobtypes(&self) -> Result<Vec<JobTypeView>, ClientError> {
        match self.request(ClientRequest::ListJobTypes).await? {
            ClientResponse::JobTypes(t) => Ok(t),
            _ => Err(ClientError::UnexpectedReply("job types")),
        }
    }

    /// One version of a job type (the newest when `version` is `None`).
    pub async fn jobtype(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<JobTypeView, ClientError> {
        let request = ClientRequest::GetJobType {
            name: name.to_string(),
            version,
        };
        match self.request(request).await? {
            ClientResponse::JobType { view, .. } => Ok(view),
            _ => Err(ClientError::UnexpectedReply("job type")),
        }
    }

    /// Stores a job-type definition file; answers the type and whether it was new.
    pub async fn add_jobtype(&self, source: String) -> Result<(JobTypeView, bool), ClientError> {
        match self
            .request(ClientRequest::AddJobType(JobTypeSource { source }))
            .await?
        {
            ClientResponse::JobType { view, created } => Ok((view, created)),
            _ => Err(ClientError::UnexpectedReply("add job type")),
        }
    }

    /// Every path map.
    pub async fn path_maps(&self) -> Result<Vec<PathMapView>, ClientError> {
        match self.request(ClientRequest::ListPathMaps).await? {
            ClientResponse::PathMaps(m) => Ok(m),
            _ => Err(ClientError::UnexpectedReply("path maps")),
        }
    }

    /// Adds a path map.
    pub async fn add_path_map(&self, map: PathMapSpec) -> Result<PathMapView, ClientError> {
        match self.request(ClientRequest::AddPathMap(map)).await? {
            ClientResponse::PathMap(m) => Ok(m),
            _ => Err(ClientError::UnexpectedReply("add path map")),
        }
    }

    /// Deletes a path map.
    pub async fn delete_path_map(&self, id: i64) -> Result<(), ClientError> {
        match self.request(ClientRequest::DeletePathMap { id }).await? {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("delete path map")),
        }
    }

    /// Forgets a lost agent, with its settings.
    pub async fn remove_agent(&self, agent_id: Uuid) -> Result<(), ClientError> {
        match self
            .request(ClientRequest::RemoveAgent { agent_id })
            .await?
        {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("remove agent")),
        }
    }

    /// The files a job produced.
    pub async fn job_outputs(&self, job_id: JobId) -> Result<Vec<OutputView>, ClientError> {
        match self.request(ClientRequest::JobOutputs { job_id }).await? {
            ClientResponse::Outputs(o) => Ok(o),
            _ => Err(ClientError::UnexpectedReply("job outputs")),
        }
    }
    /// Who the master takes this client for.
    pub async fn who_am_i(&self) -> Result<WhoAmI, ClientError> {
        match self.request(ClientRequest::WhoAmI).await? {
            ClientResponse::Me(me) => Ok(me),
            _ => Err(ClientError::UnexpectedReply("who am i")),
        }
    }

    /// Every user (admins).
    pub async fn users(&self) -> Result<Vec<UserView>, ClientError> {
        match self.request(ClientRequest::ListUsers).await? {
            ClientResponse::Users(u) => Ok(u),
            _ => Err(ClientError::UnexpectedReply("users")),
        }
    }

    /// Adds a user (admins).
    pub async fn add_user(&self, spec: UserSpec) -> Result<UserView, ClientError> {
        match self.request(ClientRequest::AddUser(spec)).await? {
            ClientResponse::User(u) => Ok(u),
            _ => Err(ClientError::UnexpectedReply("add user")),
        }
    }

    /// Changes a user's role or password.
    pub async fn edit_user(&self, name: String, patch: UserPatch) -> Result<UserView, ClientError> {
        match self
            .request(ClientRequest::EditUser { name, patch })
            .await?
        {
            ClientResponse::User(u) => Ok(u),
            _ => Err(ClientError::UnexpectedReply("edit user")),
        }
    }

    /// Removes a user and revokes their tokens (admins).
    pub async fn remove_user(&self, name: String) -> Result<(), ClientError> {
        match self.request(ClientRequest::RemoveUser { name }).await? {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("remove user")),
        }
    }

    /// The caller's tokens, or everyone's (`all`, admins).
    pub async fn tokens(&self, all: bool) -> Result<Vec<TokenView>, ClientError> {
        match self.request(ClientRequest::ListTokens { all }).await? {
            ClientResponse::Tokens(t) => Ok(t),
            _ => Err(ClientError::UnexpectedReply("tokens")),
        }
    }

    /// Makes a token; its secret is in the answer and nowhere else.
    pub async fn create_token(&self, spec: TokenSpec) -> Result<NewToken, ClientError> {
        match self.request(ClientRequest::CreateToken(spec)).await? {
            ClientResponse::Token(t) => Ok(t),
            _ => Err(ClientError::UnexpectedReply("create token")),
        }
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, id: String) -> Result<(), ClientError> {
        match self.request(ClientRequest::RevokeToken { id }).await? {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("revoke token")),
        }
    }

    /// Revokes an agent's credential and disconnects it (admins).
    pub async fn revoke_agent(&self, agent_id: Uuid) -> Result<(), ClientError> {
        match self
            .request(ClientRequest::RevokeAgent { agent_id })
            .await?
        {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("revoke agent")),
        }
    }

    /// A page of the audit log, newest first (admins).
    pub async fn audit(&self, limit: u64, offset: u64) -> Result<Page<AuditView>, ClientError> {
        match self.request(ClientRequest::Audit { limit, offset }).await? {
            ClientResponse::Audit(a) => Ok(a),
            _ => Err(ClientError::UnexpectedReply("audit")),
        }
    }

    /// Creates an app (operators).
    pub async fn create_app(
        &self,
        spec: crate::apps::AppSpec,
    ) -> Result<crate::apps::AppView, ClientError> {
        match self.request(ClientRequest::CreateApp(spec)).await? {
            ClientResponse::App(app) => Ok(app),
            _ => Err(ClientError::UnexpectedReply("create app")),
        }
    }

    /// Every app.
    pub async fn list_apps(&self) -> Result<Vec<crate::apps::AppView>, ClientError> {
        match self.request(ClientRequest::ListApps).await? {
            ClientResponse::Apps(apps) => Ok(apps),
            _ => Err(ClientError::UnexpectedReply("list apps")),
        }
    }

    /// One app with its history.
    pub async fn get_app(&self, name: String) -> Result<crate::apps::AppView, ClientError> {
        match self.request(ClientRequest::GetApp { name }).await? {
            ClientResponse::App(app) => Ok(app),
            _ => Err(ClientError::UnexpectedReply("get app")),
        }
    }

    /// Makes a new release of an app from a bundle (operators). The bundle travels in
    /// pieces, then the release is made from them.
    pub async fn deploy_app(
        &self,
        name: String,
        bundle: &[u8],
    ) -> Result<crate::apps::AppReleaseView, ClientError> {
        let upload = uuid::Uuid::new_v4().simple().to_string();
        let mut offset = 0;
        for piece in bundle.chunks(crate::BUNDLE_CHUNK) {
            match self
                .request(ClientRequest::UploadPart {
                    upload: upload.clone(),
                    offset,
                    data: piece.to_vec(),
                })
                .await?
            {
                ClientResponse::Uploaded(received) => offset = received,
                _ => return Err(ClientError::UnexpectedReply("upload part")),
            }
        }
        match self
            .request(ClientRequest::DeployApp { name, upload })
            .await?
        {
            ClientResponse::AppRelease(release) => Ok(release),
            _ => Err(ClientError::UnexpectedReply("deploy app")),
        }
    }

    /// An app's configuration, secrets masked.
    pub async fn app_config(&self, name: String) -> Result<serde_json::Value, ClientError> {
        match self.request(ClientRequest::AppConfig { name }).await? {
            ClientResponse::AppConfig(config) => Ok(config.0),
            _ => Err(ClientError::UnexpectedReply("app config")),
        }
    }

    /// Sets an app's configuration: a new release (operators).
    pub async fn configure_app(
        &self,
        name: String,
        values: serde_json::Value,
    ) -> Result<crate::apps::AppReleaseView, ClientError> {
        match self
            .request(ClientRequest::ConfigureApp {
                name,
                values: values.into(),
            })
            .await?
        {
            ClientResponse::AppRelease(release) => Ok(release),
            _ => Err(ClientError::UnexpectedReply("configure app")),
        }
    }

    /// Serves an earlier release again (operators); answers its number.
    pub async fn rollback_app(
        &self,
        name: String,
        to: crate::apps::AppRollback,
    ) -> Result<u32, ClientError> {
        match self
            .request(ClientRequest::RollbackApp { name, to })
            .await?
        {
            ClientResponse::AppRolledBack(release) => Ok(release),
            _ => Err(ClientError::UnexpectedReply("roll back app")),
        }
    }

    /// The newest lines of an app's output matching `pattern`, at or after `since_ms`.
    pub async fn app_logs(
        &self,
        name: String,
        pattern: Option<String>,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::apps::AppLogLine>, ClientError> {
        match self
            .request(ClientRequest::AppLogs {
                name,
                pattern,
                since_ms,
                limit,
            })
            .await?
        {
            ClientResponse::AppLogs(lines) => Ok(lines),
            _ => Err(ClientError::UnexpectedReply("app logs")),
        }
    }

    /// Replaces an app's notification rules (operators).
    pub async fn set_app_notifications(
        &self,
        name: String,
        rules: Vec<crate::apps::AppNotification>,
    ) -> Result<Vec<crate::apps::AppNotification>, ClientError> {
        match self
            .request(ClientRequest::SetAppNotifications { name, rules })
            .await?
        {
            ClientResponse::AppNotifications(rules) => Ok(rules),
            _ => Err(ClientError::UnexpectedReply("app notifications")),
        }
    }

    /// Deletes an app (operators).
    pub async fn delete_app(&self, name: String) -> Result<(), ClientError> {
        match self.request(ClientRequest::DeleteApp { name }).await? {
            ClientResponse::Deleted => Ok(()),
            _ => Err(ClientError::UnexpectedReply("delete app")),
        }
    }
}
