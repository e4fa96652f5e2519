//! A static-only bundle served by the web server itself, on Apache and on lighttpd.

mod support;

use furrow_agent::{Agent, WebServerKind};
use furrow_protocol::MasterMessage;
use furrow_protocol::apps::AppState;
use support::TestMaster;
use support::apps::{agent_config, http_get, shared_tempdir, static_site, web_port};

async fn serves_a_static_site(kind: WebServerKind) {
    let master = TestMaster::bind().await;
    let state = shared_tempdir();
    let config = agent_config(&master.addr, state.path(), kind);
    let port = web_port(&config);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;

    let site = static_site(&format!("static on {kind}"));
    conn.send(MasterMessage::Deploy(site.deployment("site", 1, None)))
        .await;
    let report = conn
        .until_report(&[&site], |r| r.state != AppState::Deploying)
        .await;
    assert_eq!(
        (report.state, report.current),
        (AppState::Running, Some(1)),
        "{report:?}"
    );
    assert!(report.instances.is_empty(), "{report:?}");
    assert_eq!(
        http_get(port, "/site/index.html").await,
        (200, format!("static on {kind}"))
    );
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_static_site_is_served_by_apache() {
    serves_a_static_site(WebServerKind::Apache).await;
}

#[actix_rt::test]
async fn a_static_site_is_served_by_lighttpd() {
    serves_a_static_site(WebServerKind::Lighttpd).await;
}
