//! REST handlers of deployed apps under `/api/v1/apps`.

use actix_web::{HttpResponse, web};
use furrow_protocol::{AppLogLine, AppNotification, AppReleaseView, AppRollback, AppSpec, AppView};
use serde_json::{Map, Value};

use super::api::{Query, decode};
use super::openapi::ErrorBody;
use super::{HttpError, method_not_allowed};
use crate::auth::Caller;
use crate::service::Service;
use crate::service::apps::MAX_BUNDLE_BYTES;

/// Lines an output search returns unless `limit` says otherwise.
const DEFAULT_LOG_LINES: usize = 1_000;

/// Registers the app routes (inside the `/api/v1` scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/apps/", "/apps"])
            .route(web::get().to(list_apps))
            .route(web::post().to(create_app))
            .default_service(web::to(|| method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource("/apps/{name}")
            .route(web::get().to(get_app))
            .route(web::delete().to(delete_app))
            .default_service(web::to(|| method_not_allowed("GET, DELETE"))),
    )
    .service(
        web::resource(["/apps/{name}/releases/", "/apps/{name}/releases"])
            .app_data(web::PayloadConfig::new(MAX_BUNDLE_BYTES))
            .route(web::post().to(deploy_app))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .service(
        web::resource("/apps/{name}/config")
            .route(web::get().to(get_config))
            .route(web::put().to(put_config))
            .default_service(web::to(|| method_not_allowed("GET, PUT"))),
    )
    .service(
        web::resource("/apps/{name}/rollback")
            .route(web::post().to(rollback))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .service(
        web::resource("/apps/{name}/notifications")
            .route(web::put().to(put_notifications))
            .default_service(web::to(|| method_not_allowed("PUT"))),
    )
    .service(
        web::resource("/apps/{name}/logs")
            .route(web::get().to(app_logs))
            .default_service(web::to(|| method_not_allowed("GET"))),
    );
}

#[utoipa::path(post, path = "/api/v1/apps/", tag = "apps", request_body = AppSpec,
    responses((status = 201, description = "The app, stored before this answer", body = AppView),
              (status = 400, description = "A field is wrong; the message names it", body = ErrorBody),
              (status = 409, description = "An app of that name exists", body = ErrorBody)))]
pub(super) async fn create_app(
    service: web::Data<Service>,
    caller: Caller,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let spec: AppSpec = decode(body.into_inner())?;
    Ok(HttpResponse::Created().json(service.create_app(&caller, spec).await?))
}

#[utoipa::path(get, path = "/api/v1/apps/", tag = "apps",
    responses((status = 200, description = "Every app, by name", body = Vec<AppView>)))]
pub(super) async fn list_apps(
    service: web::Data<Service>,
    caller: Caller,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.list_apps(&caller).await?))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    responses((status = 200, description = "The app: releases, where it runs and how, its history", body = AppView),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn get_app(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.get_app(&caller, &path).await?))
}

#[utoipa::path(delete, path = "/api/v1/apps/{name}", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    responses((status = 204, description = "Deleted; its agents remove it"),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn delete_app(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    service.delete_app(&caller, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/releases/", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The bundle: a .zip or .tar.gz holding furrow-app.yaml"),
    responses((status = 201, description = "The new release, now current", body = AppReleaseView),
              (status = 400, description = "The bundle was refused; the message says why", body = ErrorBody),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn deploy_app(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, HttpError> {
    let release = service
        .deploy_app(&caller, &path, body.to_vec(), "upload")
        .await?;
    Ok(HttpResponse::Created().json(release))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/config", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    responses((status = 200, description = "The current configuration, secrets masked", body = Object),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn get_config(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(service.app_config(&caller, &path).await?))
}

#[utoipa::path(put, path = "/api/v1/apps/{name}/config", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    request_body(content = Object, description = "Field name to value; a secret sent back masked keeps its value"),
    responses((status = 200, description = "The new release carrying the configuration", body = AppReleaseView),
              (status = 400, description = "Every error at once, each naming its field", body = ErrorBody),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn put_config(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let Value::Object(values) = body.into_inner() else {
        return Err(super::api::bad(
            "body: must be a JSON object of field names to values".into(),
        ));
    };
    let values: Map<String, Value> = values;
    Ok(HttpResponse::Ok().json(service.configure_app(&caller, &path, values).await?))
}

#[utoipa::path(post, path = "/api/v1/apps/{name}/rollback", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    request_body = AppRollback,
    responses((status = 200, description = "The release now current", body = Object),
              (status = 404, description = "Unknown app or release", body = ErrorBody),
              (status = 409, description = "Nothing to roll back to", body = ErrorBody)))]
pub(super) async fn rollback(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: Option<web::Json<Value>>,
) -> Result<HttpResponse, HttpError> {
    let to: AppRollback = match body {
        Some(body) => decode(body.into_inner())?,
        None => AppRollback::default(),
    };
    let release = service.rollback_app(&caller, &path, to).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "release": release })))
}

#[utoipa::path(get, path = "/api/v1/apps/{name}/logs", tag = "apps",
    params(("name" = String, Path, description = "App name"),
           ("q" = Option<String>, Query, description = "A regular expression the lines match"),
           ("since" = Option<i64>, Query, description = "Lines read at or after this time, in milliseconds since the epoch"),
           ("limit" = Option<usize>, Query, description = "At most this many lines, the newest (1 to 10,000; 1,000 by default)")),
    responses((status = 200, description = "The matching lines, oldest first", body = Vec<AppLogLine>),
              (status = 400, description = "A bad parameter, named", body = ErrorBody),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn app_logs(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, HttpError> {
    let since = match query.get("since") {
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            super::api::bad(format!(
                "since: must be milliseconds since the epoch, got {text:?}"
            ))
        })?),
        None => None,
    };
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| super::api::bad(format!("limit: must be a number, got {text:?}")))?,
        None => DEFAULT_LOG_LINES,
    };
    let lines = service
        .app_logs(
            &caller,
            &path,
            query.get("q").map(String::as_str),
            since,
            limit,
        )
        .await?;
    Ok(HttpResponse::Ok().json(lines))
}

#[utoipa::path(put, path = "/api/v1/apps/{name}/notifications", tag = "apps",
    params(("name" = String, Path, description = "App name")),
    request_body = Vec<AppNotification>,
    responses((status = 200, description = "The rules now", body = Vec<AppNotification>),
              (status = 400, description = "Every bad rule, named by its index", body = ErrorBody),
              (status = 404, description = "Unknown app", body = ErrorBody)))]
pub(super) async fn put_notifications(
    service: web::Data<Service>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, HttpError> {
    let rules: Vec<AppNotification> =
        serde_path_to_error::deserialize(body.into_inner()).map_err(|e| {
            super::api::bad(format!("body: a list of {{\"pattern\", \"webhook\"}}: {e}"))
        })?;
    Ok(HttpResponse::Ok().json(service.set_app_notifications(&caller, &path, rules).await?))
}
