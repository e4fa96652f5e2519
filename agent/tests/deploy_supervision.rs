//! What happens to a serving app after the deployment: its output reaches the master, a
//! killed instance is restarted and reported, a killed managed web server is restarted
//! and serves the mounts again.

mod support;

use furrow_agent::{Agent, WebServerKind};
use furrow_protocol::apps::{AppLogBatch, AppState};
use furrow_protocol::{AgentMessage, LogStream, MasterMessage};
use support::apps::{agent_config, http_get, python_app, shared_tempdir, web_port};
use support::{MasterConn, TestMaster, wait_for_async};

/// The first log batch of the app with a line containing `needle`, among `seen` or read
/// after.
async fn until_log_line(
    conn: &mut MasterConn,
    seen: Vec<AgentMessage>,
    needle: &str,
) -> AppLogBatch {
    let has = |message: &AgentMessage| {
        matches!(message, AgentMessage::AppLogs(batch)
            if batch.lines.iter().any(|line| line.text.contains(needle)))
    };
    if let Some(AgentMessage::AppLogs(batch)) = seen.into_iter().find(has) {
        return batch;
    }
    loop {
        let message = conn.recv_task_message().await;
        if has(&message)
            && let AgentMessage::AppLogs(batch) = message
        {
            return batch;
        }
    }
}

#[actix_rt::test]
async fn output_crashes_and_a_dead_web_server_are_handled() {
    let master = TestMaster::bind().await;
    let state = shared_tempdir();
    let config = agent_config(&master.addr, state.path(), WebServerKind::Nginx);
    let port = web_port(&config);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let app = python_app("1", "/healthz");
    conn.send(MasterMessage::Deploy(app.deployment(
        "hello",
        1,
        Some("greeting: Watched\n"),
    )))
    .await;
    let (report, seen) = conn
        .until_report_with_others(&[&app], |r| r.state != AppState::Deploying)
        .await;
    assert_eq!(report.state, AppState::Running, "{report:?}");
    let pid = report.instances[0]
        .pid
        .expect("a running instance has a pid");

    // The app's stdout, with its release and instance.
    let batch = until_log_line(&mut conn, seen, "serving Watched").await;
    assert_eq!(
        (
            batch.app.as_str(),
            batch.release,
            batch.process.as_str(),
            batch.instance
        ),
        ("hello", 1, "web", 0)
    );
    assert_eq!(batch.lines[0].stream, LogStream::Stdout);

    // A killed instance is restarted on its port, and the report says so.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let report = conn
        .until_report(&[], |r| {
            r.instances
                .iter()
                .any(|i| i.state == "running" && i.pid != Some(pid))
        })
        .await;
    assert_eq!(report.state, AppState::Running, "{report:?}");
    assert!(
        report.instances[0]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("signal 9"),
        "{report:?}"
    );
    wait_for_async("the restarted instance served", || async {
        http_get(port, "/hello").await == (200, "Watched".to_string())
    })
    .await;

    // The managed nginx dies: the agent starts it again, with the app's mount.
    let pid_file = state.path().join("webserver/run/server.pid");
    let server_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(server_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for_async("nginx restarted and serving the app", || async {
        let restarted = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .is_some_and(|pid| pid != server_pid);
        restarted && http_get(port, "/hello").await == (200, "Watched".to_string())
    })
    .await;
    agent.shutdown().await;
}
