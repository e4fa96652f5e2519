//! Deploying releases of a Python app on a managed nginx: the switch on health, a new
//! configuration, a release that fails its health check, and removal.

mod support;

use furrow_agent::{Agent, WebServerKind};
use furrow_protocol::apps::AppState;
use furrow_protocol::{AgentMessage, MasterMessage};
use support::TestMaster;
use support::apps::{agent_config, http_get, python_app, shared_tempdir, web_port};

#[actix_rt::test]
async fn releases_switch_on_health_revert_on_failure_and_removal_cleans_up() {
    let master = TestMaster::bind().await;
    let state = shared_tempdir();
    let config = agent_config(&master.addr, state.path(), WebServerKind::Nginx);
    let port = web_port(&config);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let view = loop {
        if let AgentMessage::WebServer(view) = conn.recv_task_message().await {
            break view;
        }
    };
    assert_eq!(
        (view.kind.as_str(), view.address),
        ("nginx", format!("127.0.0.1:{port}"))
    );

    // Release 1: fetched piece by piece, installed, healthy, mounted.
    let app = python_app("1", "/healthz");
    conn.send(MasterMessage::Deploy(app.deployment(
        "hello",
        1,
        Some("greeting: Hello one\n"),
    )))
    .await;
    let report = conn
        .until_report(&[&app], |r| r.state != AppState::Deploying)
        .await;
    assert_eq!(
        (report.state, report.current),
        (AppState::Running, Some(1)),
        "{report:?}"
    );
    assert_eq!(
        report.mount.as_deref(),
        Some(format!("http://127.0.0.1:{port}/hello").as_str())
    );
    assert_eq!(report.instances.len(), 1, "{report:?}");
    assert_eq!(report.instances[0].state, "running");
    assert_eq!(
        http_get(port, "/hello").await,
        (200, "Hello one".to_string())
    );

    // Release 2: the same bundle (cached) with another configuration.
    conn.send(MasterMessage::Deploy(app.deployment(
        "hello",
        2,
        Some("greeting: Hello two\n"),
    )))
    .await;
    let report = conn
        .until_report(&[], |r| r.target == 2 && r.state != AppState::Deploying)
        .await;
    assert_eq!(
        (report.state, report.current),
        (AppState::Running, Some(2)),
        "{report:?}"
    );
    assert_eq!(
        http_get(port, "/hello").await,
        (200, "Hello two".to_string())
    );

    // Release 3 never passes its health check: release 2 keeps serving.
    let broken = python_app("3", "/missing");
    conn.send(MasterMessage::Deploy(broken.deployment(
        "hello",
        3,
        Some("greeting: Broken\n"),
    )))
    .await;
    let report = conn
        .until_report(&[&broken], |r| {
            r.target == 3 && r.state != AppState::Deploying
        })
        .await;
    assert_eq!(
        (report.state, report.current),
        (AppState::Reverted, Some(2)),
        "{report:?}"
    );
    let message = report.message.unwrap_or_default();
    assert!(message.contains("health"), "{message}");
    assert_eq!(
        http_get(port, "/hello").await,
        (200, "Hello two".to_string())
    );

    // Removal: the path is gone and so is the app's home.
    conn.send(MasterMessage::Undeploy("hello".into())).await;
    let report = conn
        .until_report(&[], |r| {
            r.state != AppState::Deploying && r.state != AppState::Reverted
        })
        .await;
    assert_eq!(report.state, AppState::Removed, "{report:?}");
    assert_eq!(http_get(port, "/hello").await.0, 404);
    assert!(!state.path().join("apps/homes/hello").exists());
    agent.shutdown().await;
}
