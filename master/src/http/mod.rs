//! The HTTP side: REST API under `/api/v1` and the live dashboard at `/`.
//!
//! - [`api`]: JSON handlers; each one parses its input and calls the service layer.
//! - [`dashboard`]: the embedded page and its server-sent-events feed.
//! - [`live`]: the feed's updates after the first snapshot: only what changed.
//! - [`follow`]: a task's log followed live over server-sent events.
//! - [`frames`]: tasks and their logs addressed by frame; the frame and state
//!   parameters of task pages.
//! - [`guard`]: cross-site safety (Host, Origin, content type) in front of every route.
//! - [`auth`]: every `/api/` request names its caller (bearer token or session cookie);
//!   the dashboard's login and logout.
//!
//! Every error is `{"error": "..."}` with a 4xx/5xx status saying what was wrong,
//! including errors raised by actix's own extractors and unknown routes.

pub mod api;
pub mod apps;
pub mod auth;
pub mod dashboard;
pub mod follow;
pub mod frames;
pub mod guard;
pub mod live;
pub mod openapi;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use furrow_protocol::{ApiError, ErrorKind};

use crate::service::Service;

/// Largest JSON body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// An [`ApiError`] as an HTTP response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

/// The status code of an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error": message}` with `status`.
pub fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        status_of(self.0.kind)
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.status_code(), &self.0.message)
    }
}

/// An actix error whose response is the JSON error body.
fn json_error(status: StatusCode, message: String) -> actix_web::Error {
    actix_web::error::InternalError::from_response(
        message.clone(),
        error_response(status, &message),
    )
    .into()
}

/// Registers the routes, the shared state and the extractor error handlers.
pub fn configure(service: Service, feed: dashboard::Feed) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let json = web::JsonConfig::default()
            .limit(MAX_BODY)
            .content_type_required(false)
            .error_handler(|err, _req| {
                use actix_web::error::JsonPayloadError;
                let status = match &err {
                    JsonPayloadError::Overflow { .. }
                    | JsonPayloadError::OverflowKnownLength { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                let message = match &err {
                    JsonPayloadError::Deserialize(e) => format!("invalid JSON: {e}"),
                    JsonPayloadError::Overflow { limit }
                    | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                        format!("body: larger than the limit of {limit} bytes")
                    }
                    other => format!("body: {other}"),
                };
                json_error(status, message)
            });
        let query = web::QueryConfig::default().error_handler(|err, _req| {
            json_error(StatusCode::BAD_REQUEST, format!("query: {err}"))
        });
        let path = web::PathConfig::default()
            .error_handler(|err, _req| json_error(StatusCode::BAD_REQUEST, format!("path: {err}")));
        cfg.app_data(web::Data::new(service))
            .app_data(web::Data::new(feed))
            .app_data(json)
            .app_data(query)
            .app_data(path)
            .configure(api::routes)
            .configure(dashboard::routes);
    }
}

/// Answers unknown routes.
pub async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Answers known routes with an unsupported method, naming the ones it takes (in the
/// message and in `Allow`).
pub async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed on this endpoint (allowed: {allow})"),
    );
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}
