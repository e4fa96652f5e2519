//! Tasks addressed by frame: `/api/v1/jobs/{id}/frames/{frame}` and its log, and the
//! frame and state parameters of a job's task pages. A frame is what users name (the CLI,
//! the dashboard); the global task id stays an internal handle.

use actix_web::{HttpResponse, web};
use furrow_protocol::{ApiError, JobId, TaskQuery, TaskView, WorkState};
use utoipa::IntoParams;

use super::api::{Query, log_download, parse_id, query_number};
use super::openapi::ErrorBody;
use super::{HttpError, method_not_allowed};
use crate::auth::Caller;
use crate::service::Service;

/// The frame and state parameters of `GET /api/v1/jobs/{id}/tasks/` (beside `limit` and
/// `offset`). At most one of the frame bounds.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its shape is used, by the document.
pub struct TaskPageQuery {
    /// Start at the task covering this frame (or the first one after it).
    from_frame: Option<i64>,
    /// Start after the task whose first frame is this (the last `frame` of a page: the
    /// next page).
    after_frame: Option<i64>,
    /// End before the task whose first frame is this (the first `frame` of a page: the
    /// previous page, still in frame order).
    before_frame: Option<i64>,
    /// Only tasks in this state: queued, running, done, failed, paused, blocked or
    /// cancelled.
    state: Option<String>,
}

/// Registers the routes by frame (inside the `/api/v1` scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/jobs/{id}/frames/{frame}")
            .route(web::get().to(task_at_frame))
            .default_service(web::to(|| method_not_allowed("GET"))),
    )
    .service(
        web::resource("/jobs/{id}/frames/{frame}/logs")
            .route(web::get().to(frame_log))
            .default_service(web::to(|| method_not_allowed("GET"))),
    );
}

fn bad(message: String) -> HttpError {
    HttpError(ApiError::bad_request(message))
}

/// Parses a frame number, naming `name` in the error.
fn frame_number(name: &str, text: &str) -> Result<i64, HttpError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| bad(format!("{name}: {text:?} is not a frame (a whole number)")))
}

/// The page a task list asks for: `limit`, `offset` and the parameters of
/// [`TaskPageQuery`].
pub fn task_query(query: &Query, limit: u64, offset: u64) -> Result<TaskQuery, HttpError> {
    let frame = |name: &str| {
        query
            .get(name)
            .map(|text| frame_number(name, text))
            .transpose()
    };
    let state = match query.get("state") {
        None => None,
        Some(text) => Some(WorkState::parse(text.trim()).ok_or_else(|| {
            bad(format!(
                "state: {text:?} is not a task state (queued, running, done, failed, paused, blocked, cancelled)"
            ))
        })?),
    };
    Ok(TaskQuery {
        limit,
        offset,
        from_frame: frame("from_frame")?,
        after_frame: frame("after_frame")?,
        before_frame: frame("before_frame")?,
        state,
    })
}

fn frame_target(path: web::Path<(String, String)>) -> Result<(JobId, i64), HttpError> {
    let (job, frame) = path.into_inner();
    Ok((parse_id("job id", &job)?, frame_number("frame", &frame)?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/frames/{frame}", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), ("frame" = i64, Path, description = "A frame of the job")),
    responses((status = 200, description = "The task covering the frame (a batch may cover several)", body = TaskView),
              (status = 400, description = "The frame is not a whole number", body = ErrorBody),
              (status = 404, description = "Unknown job, or a frame the job does not render", body = ErrorBody)))]
async fn task_at_frame(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, HttpError> {
    let (job_id, frame) = frame_target(path)?;
    Ok(HttpResponse::Ok().json(service.task_at_frame(&caller, job_id, frame).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/frames/{frame}/logs", tag = "tasks",
    params(("id" = i64, Path, description = "Job id"), ("frame" = i64, Path, description = "A frame of the job"),
           ("attempt" = Option<u32>, Query, description = "Attempt (default: the current one)"),
           ("offset" = Option<u64>, Query, description = "Byte offset to read from")),
    responses((status = 200, description = "The log of the task covering the frame, as plain text; headers X-Furrow-Attempt, X-Furrow-Next-Offset, X-Furrow-Complete", content_type = "text/plain", body = String),
              (status = 400, description = "The frame or a query parameter is malformed", body = ErrorBody),
              (status = 404, description = "Unknown job, a frame the job does not render, or an attempt that did not run", body = ErrorBody)))]
async fn frame_log(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let (job_id, frame) = frame_target(path)?;
    let attempt = query_number(&query, "attempt")?;
    let task = service.task_at_frame(&caller, job_id, frame).await?;
    log_download(&service, &caller, job_id, task.id, attempt, &query).await
}
