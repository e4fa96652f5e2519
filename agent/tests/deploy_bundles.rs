//! Bundles that cannot be used: a hash that does not match, a bundle the master lacks.

mod support;

use furrow_agent::{Agent, WebServerKind};
use furrow_protocol::MasterMessage;
use furrow_protocol::apps::AppState;
use support::TestMaster;
use support::apps::{TestBundle, agent_config, http_get, python_app, shared_tempdir, web_port};

#[actix_rt::test]
async fn a_bundle_with_the_wrong_hash_or_none_at_all_fails_the_deployment() {
    let master = TestMaster::bind().await;
    let state = shared_tempdir();
    let config = agent_config(&master.addr, state.path(), WebServerKind::Nginx);
    let port = web_port(&config);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;

    // The master sends other bytes than the digest names.
    let real = python_app("1", "/healthz");
    let forged = TestBundle {
        bytes: python_app("2", "/healthz").bytes,
        digest: real.digest.clone(),
    };
    conn.send(MasterMessage::Deploy(real.deployment("hello", 1, None)))
        .await;
    let report = conn
        .until_report(&[&forged], |r| r.state != AppState::Deploying)
        .await;
    assert_eq!(
        (report.state, report.current),
        (AppState::Failed, None),
        "{report:?}"
    );
    let message = report.message.unwrap_or_default();
    assert!(
        message.contains("SHA-256") && message.contains("refused"),
        "{message}"
    );
    assert_eq!(http_get(port, "/hello").await.0, 404);
    let cached = std::fs::read_dir(state.path().join("apps/bundles"))
        .unwrap()
        .count();
    assert_eq!(cached, 0, "nothing kept of a refused bundle");

    // The master has no such bundle.
    conn.send(MasterMessage::Deploy(real.deployment("hello", 2, None)))
        .await;
    let report = conn
        .until_report(&[], |r| r.target == 2 && r.state != AppState::Deploying)
        .await;
    assert_eq!(report.state, AppState::Failed, "{report:?}");
    let message = report.message.unwrap_or_default();
    assert!(message.contains("no such bundle"), "{message}");
    agent.shutdown().await;
}
