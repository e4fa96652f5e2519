//! An agent restart keeps its apps serving: they come back up before the master answers.

mod support;

use furrow_agent::{Agent, WebServerKind};
use furrow_protocol::MasterMessage;
use furrow_protocol::apps::AppState;
use support::apps::{agent_config, http_get, python_app, shared_tempdir, web_port};
use support::{TestMaster, wait_for_async};

#[actix_rt::test]
async fn an_agent_restart_brings_its_apps_back_at_their_current_release() {
    let master = TestMaster::bind().await;
    let state = shared_tempdir();
    let config = agent_config(&master.addr, state.path(), WebServerKind::Nginx);
    let port = web_port(&config);
    let agent = Agent::start(config.clone()).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let app = python_app("1", "/healthz");
    conn.send(MasterMessage::Deploy(app.deployment(
        "hello",
        1,
        Some("greeting: Still here\n"),
    )))
    .await;
    let report = conn
        .until_report(&[&app], |r| r.state != AppState::Deploying)
        .await;
    assert_eq!(report.state, AppState::Running, "{report:?}");
    agent.shutdown().await;
    drop(conn);
    assert_eq!(
        http_get(port, "/hello").await.0,
        0,
        "the stopped agent's server is gone"
    );

    // Started again: serving before the master even answers the registration.
    let agent = Agent::start(config).await.unwrap();
    let pending = master.accept_tcp().await;
    wait_for_async("the app served again", || async {
        http_get(port, "/hello").await == (200, "Still here".to_string())
    })
    .await;
    let mut conn = pending.handshake().await;
    conn.register(60_000).await;
    let report = conn
        .until_report(&[], |r| r.state == AppState::Running)
        .await;
    assert_eq!((report.current, report.target), (Some(1), 1), "{report:?}");
    // The master's deployment that follows is a no-op: no bundle fetched, still release 1.
    conn.send(MasterMessage::Deploy(app.deployment(
        "hello",
        1,
        Some("greeting: Still here\n"),
    )))
    .await;
    let report = conn
        .until_report(&[], |r| r.message.as_deref() == Some("release 1 serves"))
        .await;
    assert_eq!(report.current, Some(1));
    agent.shutdown().await;
}
