//! REST handlers under `/api/v1`. Each parses its input (naming the offending field in
//! errors) and calls the service layer.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use furrow_protocol::{
    ActionOutcome, AgentView, AttemptView, HealthView, JobTypeView, JobView, OutputView, Page,
    PathMapView, QueueView, TaskView, WhyView,
};
use furrow_protocol::{
    AgentPatch, ApiError, JobActionRequest, JobId, JobPatch, JobSubmission, JobTypeSource,
    JobsActionRequest, PathMapSpec, QueuePatch, QueueSpec, TaskActionRequest, TaskId,
};
use furrow_protocol::{
    AuditView, NewToken, TokenSpec, TokenView, UserPatch, UserSpec, UserView, WhoAmI,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::openapi::{ErrorBody, PageQuery};
use super::{HttpError, method_not_allowed, not_found};
use crate::auth::Caller;
use crate::service::{DEFAULT_LIMIT, DEFAULT_TASK_LIMIT, Service};

/// Query parameters as given.
pub type Query = web::Query<HashMap<String, String>>;

/// Most log text one REST read returns; larger logs are read with `?offset=`.
const REST_LOG_LIMIT: u64 = 16 * 1024 * 1024;

/// The buffer a log download reads the file through.
const LOG_STREAM_BUFFER: usize = 64 * 1024;

/// Registers the API routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(super::apps::routes)
            .service(
                web::resource(["/jobs/", "/jobs"])
                    .route(web::get().to(list_jobs))
                    .route(web::post().to(submit_job))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource(["/jobs/actions", "/jobs/actions/"])
                    .route(web::post().to(jobs_action))
                    .default_service(web::to(|| method_not_allowed("POST"))),
            )
            .service(
                web::resource("/jobs/{id}")
                    .route(web::get().to(get_job))
                    .route(web::patch().to(edit_job))
                    .route(web::delete().to(delete_job))
                    .default_service(web::to(|| method_not_allowed("GET, PATCH, DELETE"))),
            )
            .service(
                web::resource("/jobs/{id}/actions")
                    .route(web::post().to(job_action))
                    .default_service(web::to(|| method_not_allowed("POST"))),
            )
            .service(
                web::resource("/jobs/{id}/why")
                    .route(web::get().to(why))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/jobs/{id}/tasks/{task_id}/attempts")
                    .route(web::get().to(task_attempts))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/jobs/{id}/tasks/{task_id}/actions")
                    .route(web::post().to(task_action))
                    .default_service(web::to(|| method_not_allowed("POST"))),
            )
            .service(
                web::resource(["/jobs/{id}/tasks/", "/jobs/{id}/tasks"])
                    .route(web::get().to(list_tasks))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/jobs/{id}/tasks/{task_id}/logs")
                    .route(web::get().to(task_log))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/jobs/{id}/tasks/{task_id}/logs/follow")
                    .route(web::get().to(super::follow::follow_log))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .configure(super::frames::routes)
            .service(
                web::resource(["/agents/", "/agents"])
                    .route(web::get().to(list_agents))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/agents/{id}")
                    .route(web::patch().to(edit_agent))
                    .route(web::delete().to(remove_agent))
                    .default_service(web::to(|| method_not_allowed("PATCH, DELETE"))),
            )
            .service(
                web::resource(["/queues/", "/queues"])
                    .route(web::get().to(list_queues))
                    .route(web::post().to(create_queue))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/queues/{path:.+}")
                    .route(web::get().to(get_queue))
                    .route(web::patch().to(edit_queue))
                    .route(web::delete().to(delete_queue))
                    .default_service(web::to(|| method_not_allowed("GET, PATCH, DELETE"))),
            )
            .service(
                web::resource("/jobs/{id}/outputs")
                    .route(web::get().to(job_outputs))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/jobs/{id}/outputs/{frame}/preview")
                    .route(web::get().to(preview))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource(["/jobtypes/", "/jobtypes"])
                    .route(web::get().to(list_jobtypes))
                    .route(web::post().to(add_jobtype))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/jobtypes/{name}")
                    .route(web::get().to(get_jobtype_newest))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/jobtypes/{name}/{version}")
                    .route(web::get().to(get_jobtype))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource(["/pathmaps/", "/pathmaps"])
                    .route(web::get().to(list_path_maps))
                    .route(web::post().to(add_path_map))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/pathmaps/{id}")
                    .route(web::delete().to(delete_path_map))
                    .default_service(web::to(|| method_not_allowed("DELETE"))),
            )
            .service(
                web::resource("/agents/{id}/revoke")
                    .route(web::post().to(revoke_agent))
                    .default_service(web::to(|| method_not_allowed("POST"))),
            )
            .service(
                web::resource("/me")
                    .route(web::get().to(who_am_i))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource(["/users/", "/users"])
                    .route(web::get().to(list_users))
                    .route(web::post().to(add_user))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/users/{name}")
                    .route(web::patch().to(edit_user))
                    .route(web::delete().to(remove_user))
                    .default_service(web::to(|| method_not_allowed("PATCH, DELETE"))),
            )
            .service(
                web::resource(["/tokens/", "/tokens"])
                    .route(web::get().to(list_tokens))
                    .route(web::post().to(create_token))
                    .default_service(web::to(|| method_not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/tokens/{id}")
                    .route(web::delete().to(revoke_token))
                    .default_service(web::to(|| method_not_allowed("DELETE"))),
            )
            .service(
                web::resource(["/audit/", "/audit"])
                    .route(web::get().to(audit))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/health")
                    .route(web::get().to(health))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/events")
                    .route(web::get().to(super::dashboard::events))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .service(
                web::resource("/openapi.json")
                    .route(web::get().to(openapi))
                    .default_service(web::to(|| method_not_allowed("GET"))),
            )
            .default_service(web::to(not_found)),
    );
}

pub(super) fn bad(message: String) -> HttpError {
    HttpError(ApiError::bad_request(message))
}

/// Parses a path id, naming it in the error.
pub fn parse_id(name: &str, text: &str) -> Result<i64, HttpError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            bad(format!(
                "{name}: {text:?} is not a valid id (a positive whole number)"
            ))
        })
}

/// Parses an optional numeric query parameter, naming it in the error.
pub fn query_number<T: std::str::FromStr>(
    query: &Query,
    name: &str,
) -> Result<Option<T>, HttpError> {
    match query.get(name) {
        None => Ok(None),
        Some(text) => text.trim().parse::<T>().map(Some).map_err(|_| {
            bad(format!(
                "{name}: {text:?} is not a non-negative whole number"
            ))
        }),
    }
}

/// The job id, task id and `?attempt=` of a task's log endpoints.
pub fn log_target(
    path: web::Path<(String, String)>,
    query: &Query,
) -> Result<(JobId, TaskId, Option<u32>), HttpError> {
    let (job, task) = path.into_inner();
    let job_id = parse_id("job id", &job)?;
    let task_id = parse_id("task id", &task)?;
    let attempt = query_number(query, "attempt")?;
    Ok((job_id, task_id, attempt))
}

fn page(query: &Query, default_limit: u64) -> Result<(u64, u64), HttpError> {
    let limit = query_number(query, "limit")?.unwrap_or(default_limit);
    let offset = query_number(query, "offset")?.unwrap_or(0);
    Ok((limit, offset))
}

/// Decodes a JSON body into `T`, naming the offending field (its path, like
/// `requirements.software`) in every error.
pub fn decode<T: DeserializeOwned>(body: Value) -> Result<T, HttpError> {
    if !body.is_object() {
        return Err(bad("body: must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            // A missing or unknown field: serde names it in backquotes.
            match inner.split('`').nth(1) {
                Some(name) if inner.starts_with("missing field") => bad(format!("{name}: missing")),
                Some(name) if inner.starts_with("unknown field") => {
                    let known = inner.split_once("expected").map_or("", |(_, k)| k);
                    bad(format!("{name}: unknown field (expected{known})"))
                }
                _ => bad(format!("body: {inner}")),
            }
        } else {
            bad(format!("{path}: {inner}"))
        }
    })
}

/// Decodes a submission from JSON, naming the offending field in every error.
pub fn decode_submission(body: Value) -> Result<JobSubmission, HttpError> {
    decode(body)
}

#[utoipa::path(post, path = "/api/v1/jobs/", tag = "jobs",
    request_body = JobSubmission,
    responses((status = 201, description = "The job, stored before this answer", body = JobView),
              (status = 400, description = "A field is wrong; the message names it", body = ErrorBody)))]
async fn submit_job(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let submission = decode_submission(body.into_inner())?;
    let job = service.submit_job(&caller, submission).await?;
    Ok(HttpResponse::Created().json(job))
}

#[utoipa::path(get, path = "/api/v1/jobs/", tag = "jobs", params(PageQuery),
    responses((status = 200, description = "Jobs, newest first", body = Page<JobView>),
              (status = 400, description = "Bad paging", body = ErrorBody)))]
async fn list_jobs(
    service: web::Data<Service>,
    caller: Caller,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let (limit, offset) = page(&query, DEFAULT_LIMIT)?;
    Ok(HttpResponse::Ok().json(service.list_jobs(&caller, limit, offset).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, description = "Unknown job", body = ErrorBody)))]
async fn get_job(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    Ok(HttpResponse::Ok().json(service.get_job(&caller, job_id).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks/", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), PageQuery, super::frames::TaskPageQuery),
    responses((status = 200, description = "The job's tasks in frame order; `total` counts those of the state asked for, or all", body = Page<TaskView>),
              (status = 400, description = "Bad paging, frame or state; the message names the parameter", body = ErrorBody),
              (status = 404, description = "Unknown job", body = ErrorBody)))]
async fn list_tasks(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    let (limit, offset) = page(&query, DEFAULT_TASK_LIMIT)?;
    let task_query = super::frames::task_query(&query, limit, offset)?;
    Ok(HttpResponse::Ok().json(service.browse_tasks(&caller, job_id, task_query).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks/{task_id}/logs", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), ("task_id" = i64, Path, description = "Task id"),
           ("attempt" = Option<u32>, Query, description = "Attempt (default: the current one)"),
           ("offset" = Option<u64>, Query, description = "Byte offset to read from")),
    responses((status = 200, description = "The log as plain text; headers X-Furrow-Attempt, X-Furrow-Next-Offset, X-Furrow-Complete", content_type = "text/plain", body = String),
              (status = 404, description = "Unknown task or attempt", body = ErrorBody)))]
async fn task_log(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let (job_id, task_id, attempt) = log_target(path, &query)?;
    log_download(&service, &caller, job_id, task_id, attempt, &query).await
}

/// A task's log as plain text from `?offset=`, streamed from its file (the answer of
/// both log routes, by task and by frame).
pub async fn log_download(
    service: &Service,
    caller: &Caller,
    job_id: JobId,
    task_id: TaskId,
    attempt: Option<u32>,
    query: &Query,
) -> Result<HttpResponse, HttpError> {
    let offset: u64 = query_number(query, "offset")?.unwrap_or(0);
    let (span, attempt, complete) = service
        .locate_log(caller, job_id, task_id, attempt, offset, REST_LOG_LIMIT)
        .await?;
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Furrow-Attempt", attempt.to_string()))
        .insert_header(("X-Furrow-Next-Offset", span.next_offset().to_string()))
        .insert_header(("X-Furrow-Complete", complete.to_string()));
    if span.len == 0 {
        return Ok(response.body(""));
    }
    // Streamed from the file as the client takes it: a client that reads slowly, or
    // not at all, holds one buffer of the text, not all of it.
    let mut file = tokio::fs::File::open(&span.path)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the task log: {e}")))?;
    tokio::io::AsyncSeekExt::seek(
        &mut file,
        std::io::SeekFrom::Start(span.start + span.offset),
    )
    .await
    .map_err(|e| ApiError::internal(format!("cannot read the task log: {e}")))?;
    let reader = tokio::io::AsyncReadExt::take(file, span.len);
    if span.len <= LOG_STREAM_BUFFER as u64 {
        // A short log goes out in one write with the headers: streamed, its body could
        // follow the headers as a second small segment, which Nagle's algorithm holds
        // until the client's delayed acknowledgement (40 ms).
        let mut text = Vec::with_capacity(span.len as usize);
        let mut reader = reader;
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut text)
            .await
            .map_err(|e| ApiError::internal(format!("cannot read the task log: {e}")))?;
        return Ok(response.body(text));
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, LOG_STREAM_BUFFER);
    Ok(response.no_chunking(span.len).streaming(stream))
}

#[utoipa::path(get, path = "/api/v1/agents/", tag = "agents", params(PageQuery),
    responses((status = 200, description = "Agents, online and offline, by name", body = Page<AgentView>)))]
async fn list_agents(
    service: web::Data<Service>,
    caller: Caller,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let (limit, offset) = page(&query, DEFAULT_LIMIT)?;
    Ok(HttpResponse::Ok().json(service.list_agents(&caller, limit, offset).await?))
}

#[utoipa::path(get, path = "/api/v1/health", tag = "farm", responses(
    (status = 200, description = "`ok`: every part answers and the database writes", body = HealthView),
    (status = 503, description = "`degraded`, with the reasons in `problems`", body = HealthView)))]
async fn health(service: web::Data<Service>, caller: Caller) -> Result<HttpResponse, HttpError> {
    let health = service.health(&caller).await?;
    if health.problems.is_empty() {
        Ok(HttpResponse::Ok().json(health))
    } else {
        Ok(HttpResponse::ServiceUnavailable().json(health))
    }
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/actions", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    request_body = JobActionRequest,
    responses((status = 200, description = "The job once the action is stored", body = JobView),
              (status = 400, description = "Unknown action", body = ErrorBody),
              (status = 404, description = "Unknown job", body = ErrorBody),
              (status = 409, description = "The action makes no sense in the job's state", body = ErrorBody)))]
async fn job_action(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    let request: JobActionRequest = decode(body.into_inner())?;
    let job = service
        .job_action(&caller, job_id, request.action, request.kill)
        .await?;
    Ok(HttpResponse::Ok().json(job))
}

#[utoipa::path(post, path = "/api/v1/jobs/actions", tag = "jobs", request_body = JobsActionRequest,
    responses((status = 200, description = "One outcome per job, in the order asked", body = Vec<ActionOutcome>),
              (status = 400, description = "No ids, too many, or an unknown action", body = ErrorBody)))]
async fn jobs_action(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let request: JobsActionRequest = decode(body.into_inner())?;
    let outcomes = service
        .jobs_action(&caller, request.action, &request.ids, request.kill)
        .await?;
    Ok(HttpResponse::Ok().json(outcomes))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/tasks/{task_id}/actions", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), ("task_id" = i64, Path, description = "Task id")),
    request_body = TaskActionRequest,
    responses((status = 200, body = TaskView), (status = 404, description = "Unknown job or task", body = ErrorBody),
              (status = 409, description = "The task cannot be cancelled in its state", body = ErrorBody)))]
async fn task_action(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let (job, task) = path.into_inner();
    let job_id = parse_id("job id", &job)?;
    let task_id = parse_id("task id", &task)?;
    let request: TaskActionRequest = decode(body.into_inner())?;
    Ok(HttpResponse::Ok().json(
        service
            .task_action(&caller, job_id, task_id, request.action)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks/{task_id}/attempts", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), ("task_id" = i64, Path, description = "Task id")),
    responses((status = 200, description = "Every attempt, oldest first", body = Vec<AttemptView>),
              (status = 404, description = "Unknown job or task", body = ErrorBody)))]
async fn task_attempts(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (job, task) = path.into_inner();
    let job_id = parse_id("job id", &job)?;
    let task_id = parse_id("task id", &task)?;
    Ok(HttpResponse::Ok().json(service.task_attempts(&caller, job_id, task_id).await?))
}

#[utoipa::path(patch, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    request_body = JobPatch,
    responses((status = 200, body = JobView), (status = 400, description = "A field is wrong", body = ErrorBody),
              (status = 404, description = "Unknown job", body = ErrorBody),
              (status = 409, description = "The job is finished, or has started (frames)", body = ErrorBody)))]
async fn edit_job(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    let patch: JobPatch = decode(body.into_inner())?;
    Ok(HttpResponse::Ok().json(service.edit_job(&caller, job_id, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses((status = 204, description = "Deleted with its tasks and logs"), (status = 404, description = "Unknown job", body = ErrorBody)))]
async fn delete_job(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    service.delete_job(&caller, job_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/why", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, description = "Why its waiting tasks wait, with numbers", body = WhyView),
              (status = 404, description = "Unknown job", body = ErrorBody)))]
async fn why(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    Ok(HttpResponse::Ok().json(service.why(&caller, job_id).await?))
}

#[utoipa::path(patch, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id (UUID)")),
    request_body = AgentPatch,
    responses((status = 200, body = AgentView), (status = 400, description = "Bad id or tags", body = ErrorBody),
              (status = 404, description = "Unknown agent", body = ErrorBody)))]
async fn edit_agent(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let agent_id = Uuid::parse_str(path.trim())
        .map_err(|_| bad(format!("agent id: {:?} is not a UUID", path.as_str())))?;
    let patch: AgentPatch = decode(body.into_inner())?;
    Ok(HttpResponse::Ok().json(service.edit_agent(&caller, agent_id, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id (UUID)")),
    responses((status = 204, description = "Forgotten, with its settings"), (status = 404, description = "Unknown agent", body = ErrorBody),
              (status = 409, description = "Connected, or offline but not lost yet", body = ErrorBody)))]
async fn remove_agent(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let agent_id = Uuid::parse_str(path.trim())
        .map_err(|_| bad(format!("agent id: {:?} is not a UUID", path.as_str())))?;
    service.remove_agent(&caller, agent_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/queues/", tag = "queues",
    responses((status = 200, description = "The queue tree, parents first", body = Vec<QueueView>)))]
async fn list_queues(
    service: web::Data<Service>,
    caller: Caller,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.list_queues(&caller).await?))
}

#[utoipa::path(post, path = "/api/v1/queues/", tag = "queues", request_body = QueueSpec,
    responses((status = 201, body = QueueView), (status = 400, description = "Bad name, parent or weight", body = ErrorBody),
              (status = 409, description = "It exists", body = ErrorBody)))]
async fn create_queue(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let spec: QueueSpec = decode(body.into_inner())?;
    Ok(HttpResponse::Created().json(service.create_queue(&caller, spec).await?))
}

#[utoipa::path(get, path = "/api/v1/queues/{path}", tag = "queues", params(("path" = String, Path, description = "Queue path, e.g. studio/lighting")),
    responses((status = 200, body = QueueView), (status = 404, description = "Unknown queue", body = ErrorBody)))]
async fn get_queue(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.get_queue(&caller, &path).await?))
}

#[utoipa::path(patch, path = "/api/v1/queues/{path}", tag = "queues", params(("path" = String, Path, description = "Queue path")),
    request_body = QueuePatch,
    responses((status = 200, body = QueueView), (status = 404, description = "Unknown queue", body = ErrorBody)))]
async fn edit_queue(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let patch: QueuePatch = decode(body.into_inner())?;
    Ok(HttpResponse::Ok().json(service.edit_queue(&caller, &path, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/queues/{path}", tag = "queues", params(("path" = String, Path, description = "Queue path")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown queue", body = ErrorBody),
              (status = 409, description = "The root, or a queue with children or unfinished jobs", body = ErrorBody)))]
async fn delete_queue(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    service.delete_queue(&caller, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs", tag = "outputs", params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, description = "The files the job's tasks produced, in frame order", body = Vec<OutputView>),
              (status = 404, description = "Unknown job", body = ErrorBody)))]
async fn job_outputs(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let job_id = parse_id("job id", &path)?;
    Ok(HttpResponse::Ok().json(service.job_outputs(&caller, job_id).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs/{frame}/preview", tag = "outputs",
    params(("id" = i64, Path, description = "Job id"), ("frame" = i64, Path, description = "Frame number")),
    responses((status = 200, description = "A small JPEG or PNG image of the frame", content_type = "image/jpeg"),
              (status = 404, description = "No preview of that frame", body = ErrorBody)))]
async fn preview(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (job, frame) = path.into_inner();
    let job_id = parse_id("job id", &job)?;
    let frame: i64 = frame
        .parse()
        .map_err(|_| bad(format!("frame: {frame:?} is not a whole number")))?;
    let (mime, data) = service.preview(&caller, job_id, frame).await?;
    Ok(HttpResponse::Ok()
        .content_type(mime)
        // The dashboard names a preview with its time, so a newer one has a new URL.
        .insert_header(("Cache-Control", "private, max-age=3600"))
        .body(data))
}

#[utoipa::path(get, path = "/api/v1/jobtypes/", tag = "jobtypes",
    responses((status = 200, description = "Every version of every job type, by name then version", body = Vec<JobTypeView>)))]
async fn list_jobtypes(service: web::Data<Service>, _caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(service.list_jobtypes())
}

/// The body of `POST /api/v1/jobtypes/`: the TOML file itself (any content type but
/// JSON), or `{"source": "..."}` as JSON.
fn jobtype_source(request: &HttpRequest, body: &[u8]) -> Result<String, HttpError> {
    let json = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("body: not JSON: {e}")))?;
        let source: JobTypeSource = decode(value)?;
        Ok(source.source)
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| bad("body: the definition is not UTF-8 text".into()))
    }
}

#[utoipa::path(post, path = "/api/v1/jobtypes/", tag = "jobtypes",
    request_body(content = JobTypeSource, description = "The TOML definition as the body (text/plain or application/toml), or {\"source\": \"...\"} as JSON"),
    responses((status = 201, description = "A new version was stored", body = JobTypeView),
              (status = 200, description = "This exact version was stored already", body = JobTypeView),
              (status = 400, description = "The file is invalid; the message names the field", body = ErrorBody),
              (status = 409, description = "This version is stored with another text, or the name is a built-in type's", body = ErrorBody)))]
async fn add_jobtype(
    service: web::Data<Service>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, HttpError> {
    let source = jobtype_source(&request, &body)?;
    let (view, created) = service.add_jobtype(&caller, &source).await?;
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

#[utoipa::path(get, path = "/api/v1/jobtypes/{name}", tag = "jobtypes", params(("name" = String, Path, description = "Job type")),
    responses((status = 200, description = "Its newest version", body = JobTypeView), (status = 404, description = "Unknown job type", body = ErrorBody)))]
async fn get_jobtype_newest(
    service: web::Data<Service>,
    _caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.get_jobtype(&path, None)?))
}

#[utoipa::path(get, path = "/api/v1/jobtypes/{name}/{version}", tag = "jobtypes",
    params(("name" = String, Path, description = "Job type"), ("version" = u32, Path, description = "Version")),
    responses((status = 200, body = JobTypeView), (status = 404, description = "Unknown job type or version", body = ErrorBody)))]
async fn get_jobtype(
    service: web::Data<Service>,
    _caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (name, version) = path.into_inner();
    let version: u32 = version
        .parse()
        .map_err(|_| bad(format!("version: {version:?} is not a version number")))?;
    Ok(HttpResponse::Ok().json(service.get_jobtype(&name, Some(version))?))
}

#[utoipa::path(get, path = "/api/v1/pathmaps/", tag = "pathmaps",
    responses((status = 200, description = "Every path map", body = Vec<PathMapView>)))]
async fn list_path_maps(service: web::Data<Service>, _caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(service.list_path_maps())
}

#[utoipa::path(post, path = "/api/v1/pathmaps/", tag = "pathmaps", request_body = PathMapSpec,
    responses((status = 201, body = PathMapView), (status = 400, description = "Fewer than two prefixes, or a malformed one", body = ErrorBody)))]
async fn add_path_map(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let spec: PathMapSpec = decode(body.into_inner())?;
    Ok(HttpResponse::Created().json(service.add_path_map(&caller, spec).await?))
}

#[utoipa::path(delete, path = "/api/v1/pathmaps/{id}", tag = "pathmaps", params(("id" = i64, Path, description = "Path map id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown path map", body = ErrorBody)))]
async fn delete_path_map(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = parse_id("path map id", &path)?;
    service.delete_path_map(&caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "farm", responses((status = 200, description = "This document")))]
async fn openapi() -> HttpResponse {
    HttpResponse::build(StatusCode::OK)
        .content_type("application/json")
        .body(super::openapi::document())
}

fn agent_id_of(path: &str) -> Result<Uuid, HttpError> {
    Uuid::parse_str(path.trim()).map_err(|_| bad(format!("agent id: {path:?} is not a UUID")))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path, description = "Agent id (UUID)")),
    responses((status = 204, description = "Its credential no longer works; it was disconnected"),
              (status = 403, description = "Not an admin", body = ErrorBody),
              (status = 404, description = "The agent has no credential", body = ErrorBody)))]
async fn revoke_agent(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let agent_id = agent_id_of(&path)?;
    service.revoke_agent(&caller, agent_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/me", tag = "access",
    responses((status = 200, description = "The caller's user name and role", body = WhoAmI),
              (status = 401, description = "No valid credentials", body = ErrorBody)))]
async fn who_am_i(service: web::Data<Service>, caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(service.auth().who_am_i(&caller))
}

#[utoipa::path(get, path = "/api/v1/users/", tag = "access",
    responses((status = 200, description = "Every user, by name", body = Vec<UserView>),
              (status = 403, description = "Not an admin", body = ErrorBody)))]
async fn list_users(
    service: web::Data<Service>,
    caller: Caller,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.auth().list_users(&caller)?))
}

#[utoipa::path(post, path = "/api/v1/users/", tag = "access", request_body = UserSpec,
    responses((status = 201, body = UserView), (status = 400, description = "Bad name or password", body = ErrorBody),
              (status = 403, description = "Not an admin", body = ErrorBody), (status = 409, description = "The user exists", body = ErrorBody)))]
async fn add_user(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let spec: UserSpec = decode(body.into_inner())?;
    Ok(HttpResponse::Created().json(service.auth().add_user(&caller, spec).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "access", params(("name" = String, Path, description = "User name")),
    request_body = UserPatch,
    responses((status = 200, body = UserView), (status = 403, description = "Another user's password or any role, without being an admin", body = ErrorBody),
              (status = 404, description = "Unknown user", body = ErrorBody), (status = 409, description = "It would leave no admin", body = ErrorBody)))]
async fn edit_user(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let patch: UserPatch = decode(body.into_inner())?;
    if patch == UserPatch::default() {
        return Err(bad("nothing to change: give role or password".into()));
    }
    Ok(HttpResponse::Ok().json(service.auth().edit_user(&caller, &path, patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "access", params(("name" = String, Path, description = "User name")),
    responses((status = 204, description = "Removed; their tokens are revoked"), (status = 403, description = "Not an admin", body = ErrorBody),
              (status = 404, description = "Unknown user", body = ErrorBody), (status = 409, description = "The last admin", body = ErrorBody)))]
async fn remove_user(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    service.auth().remove_user(&caller, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/tokens/", tag = "access",
    params(("all" = Option<bool>, Query, description = "Every user's tokens, join tokens and agents' credentials (admins)")),
    responses((status = 200, description = "Tokens, oldest first; never their secrets", body = Vec<TokenView>),
              (status = 403, description = "all=true without being an admin", body = ErrorBody)))]
async fn list_tokens(
    service: web::Data<Service>,
    caller: Caller,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let all = match query.get("all").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => return Err(bad(format!("all: {other:?} is not true or false"))),
    };
    Ok(HttpResponse::Ok().json(service.auth().list_tokens(&caller, all)?))
}

#[utoipa::path(post, path = "/api/v1/tokens/", tag = "access", request_body = TokenSpec,
    responses((status = 201, description = "The token: its secret is shown this once", body = NewToken),
              (status = 400, description = "Bad expiry or label", body = ErrorBody),
              (status = 403, description = "A join token or another user's token, without being an admin", body = ErrorBody)))]
async fn create_token(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let spec: TokenSpec = decode(body.into_inner())?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(service.auth().create_token(&caller, spec).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 403, description = "Another user's token, without being an admin", body = ErrorBody),
              (status = 404, description = "Unknown token", body = ErrorBody)))]
async fn revoke_token(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    service.auth().revoke_token(&caller, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/audit/", tag = "access", params(PageQuery),
    responses((status = 200, description = "Every change made through the API: who, what, when and from where; newest first", body = Page<AuditView>),
              (status = 403, description = "Not an admin", body = ErrorBody)))]
async fn audit(
    service: web::Data<Service>,
    caller: Caller,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let (limit, offset) = page(&query, DEFAULT_LIMIT)?;
    Ok(HttpResponse::Ok().json(service.auth().audit(&caller, limit, offset).await?))
}
