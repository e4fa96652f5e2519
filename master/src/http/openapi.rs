//! The OpenAPI document of the REST API, generated from the handlers' annotations and
//! the records' types, so it cannot drift from the code.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the field when a field was.
    pub error: String,
}

/// Paging of a collection.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its shape is used, by the document.
pub struct PageQuery {
    /// Page size (1 to 10,000).
    limit: Option<u64>,
    /// Items to skip.
    offset: Option<u64>,
}

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Furrow master API",
        version = "1",
        description = "Jobs, tasks, agents, queues, job types, path maps, outputs, users, tokens and deployed apps of a Furrow render farm. Every route needs `Authorization: Bearer <token>` (or the dashboard's session cookie): without valid credentials it answers 401, and 403 when the caller's role may not do it. Errors are {\"error\": \"...\"} with a 4xx status naming the field at fault."
    ),
    paths(
        super::api::submit_job,
        super::api::list_jobs,
        super::api::get_job,
        super::api::edit_job,
        super::api::delete_job,
        super::api::job_action,
        super::api::jobs_action,
        super::api::why,
        super::api::list_tasks,
        super::api::task_action,
        super::api::task_attempts,
        super::api::task_log,
        super::frames::task_at_frame,
        super::frames::frame_log,
        super::follow::follow_log,
        super::api::list_agents,
        super::api::edit_agent,
        super::api::remove_agent,
        super::api::list_queues,
        super::api::create_queue,
        super::api::get_queue,
        super::api::edit_queue,
        super::api::delete_queue,
        super::api::job_outputs,
        super::api::preview,
        super::api::list_jobtypes,
        super::api::add_jobtype,
        super::api::get_jobtype_newest,
        super::api::get_jobtype,
        super::api::list_path_maps,
        super::api::add_path_map,
        super::api::delete_path_map,
        super::api::revoke_agent,
        super::api::who_am_i,
        super::api::list_users,
        super::api::add_user,
        super::api::edit_user,
        super::api::remove_user,
        super::api::list_tokens,
        super::api::create_token,
        super::api::revoke_token,
        super::api::audit,
        super::api::health,
        super::apps::create_app,
        super::apps::list_apps,
        super::apps::get_app,
        super::apps::delete_app,
        super::apps::deploy_app,
        super::apps::get_config,
        super::apps::put_config,
        super::apps::rollback,
        super::apps::app_logs,
        super::apps::put_notifications,
        super::dashboard::events,
        super::api::openapi,
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the API document: {e}\"}}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_schemas() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/v1/jobs/", &["get", "post"][..]),
            ("/api/v1/jobs/{id}", &["get", "patch", "delete"]),
            ("/api/v1/jobs/{id}/actions", &["post"]),
            ("/api/v1/jobs/actions", &["post"]),
            ("/api/v1/jobs/{id}/why", &["get"]),
            ("/api/v1/jobs/{id}/tasks/", &["get"]),
            ("/api/v1/jobs/{id}/tasks/{task_id}/actions", &["post"]),
            ("/api/v1/jobs/{id}/tasks/{task_id}/attempts", &["get"]),
            ("/api/v1/jobs/{id}/tasks/{task_id}/logs", &["get"]),
            ("/api/v1/jobs/{id}/tasks/{task_id}/logs/follow", &["get"]),
            ("/api/v1/jobs/{id}/frames/{frame}", &["get"]),
            ("/api/v1/jobs/{id}/frames/{frame}/logs", &["get"]),
            ("/api/v1/agents/", &["get"]),
            ("/api/v1/agents/{id}", &["patch", "delete"]),
            ("/api/v1/queues/", &["get", "post"]),
            ("/api/v1/queues/{path}", &["get", "patch", "delete"]),
            ("/api/v1/jobs/{id}/outputs", &["get"]),
            ("/api/v1/jobs/{id}/outputs/{frame}/preview", &["get"]),
            ("/api/v1/jobtypes/", &["get", "post"]),
            ("/api/v1/jobtypes/{name}", &["get"]),
            ("/api/v1/jobtypes/{name}/{version}", &["get"]),
            ("/api/v1/pathmaps/", &["get", "post"]),
            ("/api/v1/pathmaps/{id}", &["delete"]),
            ("/api/v1/agents/{id}/revoke", &["post"]),
            ("/api/v1/me", &["get"]),
            ("/api/v1/users/", &["get", "post"]),
            ("/api/v1/users/{name}", &["patch", "delete"]),
            ("/api/v1/tokens/", &["get", "post"]),
            ("/api/v1/tokens/{id}", &["delete"]),
            ("/api/v1/audit/", &["get"]),
            ("/api/v1/health", &["get"]),
            ("/api/v1/events", &["get"]),
            ("/api/v1/openapi.json", &["get"]),
            ("/api/v1/apps/", &["get", "post"]),
            ("/api/v1/apps/{name}", &["get", "delete"]),
            ("/api/v1/apps/{name}/releases/", &["post"]),
            ("/api/v1/apps/{name}/config", &["get", "put"]),
            ("/api/v1/apps/{name}/rollback", &["post"]),
            ("/api/v1/apps/{name}/logs", &["get"]),
            ("/api/v1/apps/{name}/notifications", &["put"]),
        ] {
            for method in methods {
                assert!(
                    paths[path][method].is_object(),
                    "{method} {path} is not documented"
                );
            }
        }
        assert_eq!(paths.len(), 40, "a documented path without a test entry");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "JobSubmission",
            "Requirements",
            "JobView",
            "QueueSpec",
            "WhyView",
            "ErrorBody",
            "JobTypeView",
            "ParamView",
            "OutputView",
            "PathMapSpec",
            "UserView",
            "TokenView",
            "NewToken",
            "AuditView",
        ] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        let submission = &schemas["JobSubmission"]["properties"];
        assert!(submission["depends_on"].is_object());
        assert!(submission["requirements"].is_object());
    }
}
