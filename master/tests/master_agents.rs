//! The master driven by a protocol client and test agents over real TCP.

mod common;

use std::time::Duration;

use common::{DEADLINE, TestAgent, get, get_json, job, start_master, wait_for};
use furrow_protocol::{
    AgentMessage, DEEP_PIPELINE_VERSION, LogBatch, LogLine, LogStream, MasterMessage,
    PIPELINE_VERSION, PROTOCOL_VERSION, TaskProgress, TaskRef, TaskReturned, TaskStarted,
    WorkState, handshake,
};
use uuid::Uuid;

fn job_state(http: &str, job_id: i64) -> String {
    let (status, job) = get_json(http, &format!("/api/v1/jobs/{job_id}"));
    assert_eq!(status, 200);
    job["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_a_job_and_its_logs_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let addrs = master.addrs();
    let (listen, http) = (addrs.listen.to_string(), addrs.http.to_string());

    // The bound addresses are published for tools.
    let published: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("master.addr")).unwrap())
            .unwrap();
    assert_eq!(published["listen"], listen.as_str());
    assert_eq!(published["http"], http.as_str());

    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("render", "1-3")).await.unwrap();
    assert_eq!(submitted.task_counts.queued, 3);
    assert_eq!(submitted.state, WorkState::Queued);

    let agent_id = Uuid::new_v4();
    let mut agent = TestAgent::register(&listen, agent_id, 2, Vec::new()).await;
    let first = agent.assignment().await;
    let second = agent.assignment().await;
    assert_eq!(
        (first.frames.start, second.frames.start),
        (1, 2),
        "frame order"
    );
    assert_eq!((first.task.attempt, second.task.attempt), (1, 1));
    assert_eq!(first.job_id, submitted.id);
    assert_eq!(first.params.0["command"][0], "sh");

    // One slot frees up: exactly one more task comes.
    agent
        .run(first.task, &["hello from frame 1", "second line"])
        .await;
    let third = agent.assignment().await;
    assert_eq!(third.frames.start, 3);

    // A result for an attempt that is not current is ignored.
    agent
        .finish(
            TaskRef {
                task_id: second.task.task_id,
                attempt: 7,
            },
            0,
        )
        .await;
    agent.heartbeat(vec![second.task, third.task]).await;
    let tasks = client.list_tasks(submitted.id, 10, 0).await.unwrap();
    assert_eq!(tasks.total, 3);

    agent.run(second.task, &[]).await;
    agent.run(third.task, &["frame 3"]).await;
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;

    let (status, job) = get_json(&http, &format!("/api/v1/jobs/{}", submitted.id));
    assert_eq!(status, 200);
    assert_eq!(job["task_counts"]["done"], 3);
    assert!(job["finished_at"].is_string());

    let (status, tasks) = get_json(&http, &format!("/api/v1/jobs/{}/tasks/", submitted.id));
    assert_eq!(status, 200);
    assert_eq!(tasks["total"], 3);
    let items = tasks["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .all(|t| t["state"] == "done" && t["attempt"] == 1)
    );
    assert!(items.iter().all(|t| t["agent"] == agent_id.to_string()));
    assert_eq!(
        items
            .iter()
            .map(|t| t["frame"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // Logs, through REST and through the client API.
    let log_path = format!(
        "/api/v1/jobs/{}/tasks/{}/logs",
        submitted.id, first.task.task_id
    );
    let (status, text) = get(&http, &log_path);
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let (stamp, rest) = lines[0].split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamp}"
    );
    assert!(
        stamp.ends_with('Z') && stamp.len() == "2024-01-01T00:00:00.000Z".len(),
        "{stamp}"
    );
    assert_eq!(rest, "stdout hello from frame 1");
    assert!(lines[1].ends_with(" stdout second line"));
    // On disk in the job's log folder: in its pack of short logs, or (had the attempt
    // outlived a flush) in a file of its own.
    let folder = dir.path().join(format!("logs/{}", submitted.id));
    let stored: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(stored.iter().any(|file| file.contains(&text)), "{stored:?}");
    let chunk = client
        .task_log(submitted.id, first.task.task_id, None, 0)
        .await
        .unwrap();
    assert_eq!(chunk.text, text);
    assert!(chunk.complete);
    let tail = client
        .task_log(
            submitted.id,
            first.task.task_id,
            Some(1),
            lines[0].len() as u64 + 1,
        )
        .await
        .unwrap();
    assert_eq!(tail.text, format!("{}\n", lines[1]));

    // No output yet: empty. Unknown attempt or task: 404.
    let (status, text) = get(
        &http,
        &format!(
            "/api/v1/jobs/{}/tasks/{}/logs",
            submitted.id, second.task.task_id
        ),
    );
    assert_eq!((status, text.as_str()), (200, ""));
    let (status, body) = get_json(&http, &format!("{log_path}?attempt=2"));
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("attempt 2"));
    let (status, _) = get_json(
        &http,
        &format!("/api/v1/jobs/{}/tasks/999999/logs", submitted.id),
    );
    assert_eq!(status, 404);

    let (status, agents) = get_json(&http, "/api/v1/agents/");
    assert_eq!(status, 200);
    assert_eq!(agents["total"], 1);
    assert_eq!(agents["items"][0]["state"], "online");
    assert_eq!(agents["items"][0]["id"], agent_id.to_string());
    let health = client.health().await.unwrap();
    assert_eq!(
        (health.agents_online, health.database.as_str()),
        (1, "sqlite")
    );

    drop(agent);
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_gets_its_old_tasks_requeued_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("one", "1")).await.unwrap();

    let agent_id = Uuid::new_v4();
    let mut agent = TestAgent::register(&listen, agent_id, 1, Vec::new()).await;
    let first = agent.assignment().await;
    drop(agent);

    // Same id, empty list: the old attempt is gone; the task comes back as attempt 2
    // long before the (30 s) heartbeat timeout.
    let mut agent = TestAgent::register(&listen, agent_id, 1, Vec::new()).await;
    let again = agent.assignment().await;
    assert_eq!(again.task.task_id, first.task.task_id);
    assert_eq!(again.task.attempt, 2);
    // Word from the old attempt is answered: it is stale (killed at once there).
    agent
        .send(AgentMessage::TaskStarted(TaskStarted {
            task: first.task,
            pid: 1,
            at: chrono::Utc::now(),
        }))
        .await;
    match agent.recv().await {
        Some(MasterMessage::Stale(task)) => assert_eq!(task, first.task),
        other => panic!("expected word that the attempt is stale, got {other:?}"),
    }

    // A reconnect listing the current attempt keeps it, and its replayed result counts.
    drop(agent);
    let mut agent = TestAgent::register(&listen, agent_id, 1, vec![again.task]).await;
    assert!(
        agent.nothing_within(Duration::from_millis(300)).await,
        "no reassignment"
    );
    agent.finish(again.task, 0).await;
    let http = master.addrs().http.to_string();
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agents_lose_their_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(1000);
    let master = start_master(dir.path(), timeout);
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    client.submit_job(job("lost", "1")).await.unwrap();

    // A disconnects and never comes back: after the timeout its task goes to B.
    let mut a = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    let first = a.assignment().await;
    drop(a);
    let mut b = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    let moved = b.assignment_heartbeating().await;
    assert_eq!(moved.task.task_id, first.task.task_id);
    assert_eq!(moved.task.attempt, 2);

    // C stays connected but never heartbeats: it is lost and its connection closed.
    let c_id = Uuid::new_v4();
    let mut c = TestAgent::register(&listen, c_id, 1, Vec::new()).await;
    let start = std::time::Instant::now();
    loop {
        // Whatever the master sends before closing is irrelevant here.
        if c.recv().await.is_none() {
            break;
        }
        assert!(start.elapsed() < DEADLINE);
    }
    let http = master.addrs().http.to_string();
    wait_for("c offline", || {
        let (_, agents) = get_json(&http, "/api/v1/agents/");
        agents["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|a| a["id"] == c_id.to_string() && a["state"] == "offline")
        })
    })
    .await;
    drop(b);
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_tasks_survive_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(2);
    let master = start_master(dir.path(), timeout);
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("restart", "1-2")).await.unwrap();
    let a_id = Uuid::new_v4();
    let b_id = Uuid::new_v4();
    let mut a = TestAgent::register(&listen, a_id, 1, Vec::new()).await;
    let task_a = a.assignment().await.task;
    let mut b = TestAgent::register(&listen, b_id, 1, Vec::new()).await;
    let task_b = b.assignment().await.task;
    drop(client);
    master.shutdown().unwrap();
    drop((a, b));

    // Same data directory: A comes back in time listing its task and keeps it; B does
    // not come back, so its task is requeued after the timeout and lands on A.
    let master = start_master(dir.path(), timeout);
    let listen = master.addrs().listen.to_string();
    let http = master.addrs().http.to_string();
    let mut a = TestAgent::register(&listen, a_id, 2, vec![task_a]).await;
    let moved = a.assignment_heartbeating().await;
    assert_eq!(moved.task.task_id, task_b.task_id);
    assert_eq!(moved.task.attempt, task_b.attempt + 1);
    a.run(task_a, &["after restart"]).await;
    a.run(moved.task, &[]).await;
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;
    let (_, tasks) = get_json(&http, &format!("/api/v1/jobs/{}/tasks/", submitted.id));
    let attempts: Vec<i64> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    master.shutdown().unwrap();
}

/// Reads an HTTP response stream until `needle` appears.
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, needle: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 8192];
    while !seen.contains(needle) {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?} in {seen}"))
            .unwrap();
        assert!(n > 0, "stream ended before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_can_be_followed_live_until_the_attempt_ends() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let (listen, http) = (
        master.addrs().listen.to_string(),
        master.addrs().http.to_string(),
    );
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("follow", "1")).await.unwrap();
    let mut agent = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    let assigned = agent.assignment().await;
    let send_lines = |lines: &[&str]| {
        AgentMessage::Logs(furrow_protocol::LogBatch {
            task: assigned.task,
            lines: lines
                .iter()
                .map(|text| furrow_protocol::LogLine {
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    stream: furrow_protocol::LogStream::Stderr,
                    text: text.to_string(),
                })
                .collect(),
        })
    };
    agent.send(send_lines(&["before following"])).await;
    // An assignment is committed before the agent sees it, so its log is readable now.

    let path = format!(
        "/api/v1/jobs/{}/tasks/{}/logs/follow",
        submitted.id, assigned.task.task_id
    );
    let mut stream = tokio::net::TcpStream::connect(&http).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: {}\r\n\r\n",
                common::bearer(&http)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "stderr before following").await;
    assert!(seen.contains("text/event-stream"), "{seen}");

    agent.send(send_lines(&["live one", "live two"])).await;
    read_until(&mut stream, &mut seen, "stderr live two").await;
    agent.finish(assigned.task, 0).await;
    read_until(&mut stream, &mut seen, "event: end").await;
    assert_eq!(
        seen.matches("stderr live one").count(),
        1,
        "exactly once: {seen}"
    );
    assert_eq!(
        seen.matches("before following").count(),
        1,
        "exactly once: {seen}"
    );

    // Unknown attempts are refused before any stream starts.
    let (status, _) = get_json(&http, &format!("{path}?attempt=9"));
    assert_eq!(status, 404);
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_a_connected_agent_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let http = master.addrs().http.to_string();
    let client = common::client(&listen).await;
    client.submit_job(job("twice", "1")).await.unwrap();
    let agent_id = Uuid::new_v4();
    let mut first = TestAgent::register(&listen, agent_id, 1, Vec::new()).await;
    let assigned = first.assignment().await;
    // A second process with the same id is refused at the handshake, with the reason;
    // the first keeps its connection and its task.
    let mut stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
    let refused = handshake::connect(&mut stream, &common::agent_hello(&listen, agent_id))
        .await
        .expect_err("a second connection is refused");
    assert!(
        refused
            .to_string()
            .contains(&format!("agent id {agent_id} is already connected")),
        "{refused}"
    );
    first.finish(assigned.task, 0).await;
    wait_for("job done", || job_state(&http, 1) == "done").await;
    // Once the first connection is gone, the id may connect again.
    drop(first);
    wait_for("the agent offline", || {
        let (_, agents) = get_json(&http, "/api/v1/agents/");
        agents["items"][0]["state"] == "offline"
    })
    .await;
    let _again = TestAgent::register(&listen, agent_id, 1, Vec::new()).await;
    let (_, agents) = get_json(&http, "/api/v1/agents/");
    assert_eq!(agents["total"], 1);
    assert_eq!(agents["items"][0]["state"], "online");
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_running_tasks_follow_its_task_messages_between_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let addrs = master.addrs();
    let (listen, http) = (addrs.listen.to_string(), addrs.http.to_string());
    let client = common::client(&listen).await;
    client.submit_job(job("busy", "1")).await.unwrap();

    // This agent never heartbeats: only its task messages can change what it runs.
    let agent_id = Uuid::new_v4();
    let mut agent = TestAgent::register(&listen, agent_id, 1, Vec::new()).await;
    let assigned = agent.assignment().await;
    let running = |http: &str| {
        let (_, agents) = get_json(http, "/api/v1/agents/");
        agents["items"][0]["running"].clone()
    };
    agent
        .send(AgentMessage::TaskStarted(TaskStarted {
            task: assigned.task,
            pid: 1,
            at: chrono::Utc::now(),
        }))
        .await;
    let expected = serde_json::json!([{"task_id": assigned.task.task_id, "attempt": 1}]);
    wait_for("the started task listed", || running(&http) == expected).await;
    agent.finish(assigned.task, 0).await;
    wait_for("the finished task unlisted", || {
        running(&http) == serde_json::json!([])
    })
    .await;

    // A peer claiming more tasks than its slots cannot grow the list.
    for task_id in 1000..1010 {
        agent
            .send(AgentMessage::TaskStarted(TaskStarted {
                task: TaskRef {
                    task_id,
                    attempt: 1,
                },
                pid: 1,
                at: chrono::Utc::now(),
            }))
            .await;
    }
    wait_for("one bogus task listed", || {
        running(&http).as_array().is_some_and(|r| r.len() == 1)
    })
    .await;
    assert_eq!(running(&http).as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_task_is_queued_again_without_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    // No retries: one failure would fail the job.
    let submitted = client.submit_job(job("drain", "1")).await.unwrap();

    let agent_id = Uuid::new_v4();
    let mut agent = TestAgent::register(&listen, agent_id, 1, Vec::new()).await;
    let first = agent.assignment().await;
    assert_eq!(first.task.attempt, 1);
    agent
        .send(AgentMessage::TaskStarted(TaskStarted {
            task: first.task,
            pid: 4242,
            at: chrono::Utc::now(),
        }))
        .await;
    // The agent stops: it says so, then gives the attempt back. The task is queued
    // again with no failure counted, and goes to another agent, not to the stopping one.
    agent.send(AgentMessage::Draining).await;
    agent
        .send(AgentMessage::TaskReturned(TaskReturned {
            task: first.task,
            reason: "cancelled: the agent is shutting down".into(),
        }))
        .await;
    let mut other = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    let again = other.assignment().await;
    assert_eq!(again.task.task_id, first.task.task_id);
    assert_eq!(again.task.attempt, 2);
    let job = client.get_job(submitted.id).await.unwrap();
    assert_eq!(job.task_counts.failed, 0, "{job:?}");

    // A late return of the old attempt changes nothing.
    agent
        .send(AgentMessage::TaskReturned(TaskReturned {
            task: first.task,
            reason: "late".into(),
        }))
        .await;
    other.run(again.task, &["rendered"]).await;
    other.result_stored(again.task).await;
    let http = master.addrs().http.to_string();
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;
    let job = client.get_job(submitted.id).await.unwrap();
    assert_eq!(
        (job.task_counts.done, job.task_counts.failed),
        (1, 0),
        "{job:?}"
    );
    let tasks = client.list_tasks(submitted.id, 10, 0).await.unwrap();
    let task = &tasks.items[0];
    assert_eq!(
        (task.state, task.attempt, task.last_error.as_deref()),
        (WorkState::Done, 2, None)
    );
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_report_on_another_agents_task() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let (listen, http) = (
        master.addrs().listen.to_string(),
        master.addrs().http.to_string(),
    );
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("mine", "1")).await.unwrap();
    let mut owner = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    let assigned = owner.assignment().await;
    let line = |text: &str| {
        AgentMessage::Logs(LogBatch {
            task: assigned.task,
            lines: vec![LogLine {
                at_ms: chrono::Utc::now().timestamp_millis(),
                stream: LogStream::Stdout,
                text: text.into(),
            }],
        })
    };
    owner
        .send(AgentMessage::TaskStarted(TaskStarted {
            task: assigned.task,
            pid: 1,
            at: chrono::Utc::now(),
        }))
        .await;
    owner.send(line("the owner's line")).await;
    wait_for("the task running", || {
        job_state(&http, submitted.id) == "running"
    })
    .await;

    // Another registered agent claims it: lines, progress and a result, all refused.
    let mut other = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    other.send(line("an impostor's line")).await;
    other
        .send(AgentMessage::TaskProgress(TaskProgress {
            task: assigned.task,
            progress: 0.9,
        }))
        .await;
    other.finish(assigned.task, 0).await;
    // The scheduler answers every result (a refused one too): once the answer is here,
    // the claim was handled.
    other.result_stored(assigned.task).await;
    let tasks = client.list_tasks(submitted.id, 10, 0).await.unwrap();
    assert_eq!(tasks.items[0].state, WorkState::Running, "{tasks:?}");
    assert_eq!(tasks.items[0].progress, 0.0, "{tasks:?}");
    assert_eq!(job_state(&http, submitted.id), "running");

    owner.finish(assigned.task, 0).await;
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;
    let (status, log) = get(
        &http,
        &format!(
            "/api/v1/jobs/{}/tasks/{}/logs",
            submitted.id, assigned.task.task_id
        ),
    );
    assert_eq!(status, 200);
    assert!(log.contains("the owner's line"), "{log}");
    assert!(!log.contains("impostor"), "{log}");
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_credential_admits_its_own_agent_only() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let id = Uuid::new_v4();
    let agent = TestAgent::register(&listen, id, 1, Vec::new()).await;
    let credential = agent
        .credential
        .clone()
        .expect("a credential after joining");
    assert!(credential.starts_with("fwn_"), "{credential}");
    drop(agent);
    let hello = |agent: Uuid, credentials: &str| {
        let mut hello = furrow_protocol::Hello::new(furrow_protocol::Role::Agent, agent);
        hello.credentials = Some(credentials.to_string());
        hello
    };
    let connect = |hello: furrow_protocol::Hello| {
        let listen = listen.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
            furrow_protocol::handshake::connect(&mut stream, &hello).await
        }
    };
    // Another id presenting it is refused, even with nothing else wrong.
    let other = Uuid::new_v4();
    let refused = connect(hello(other, &credential)).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&format!("belongs to agent {id}, not {other}")),
        "{refused}"
    );
    // Its own id comes back with it alone, no join token needed.
    wait_for("the first connection gone", || {
        let (_, agents) = get_json(&master.addrs().http.to_string(), "/api/v1/agents/");
        agents["items"][0]["state"] == "offline"
    })
    .await;
    connect(hello(id, &credential)).await.expect("admitted");
    // No credentials, or a token of another kind: refused, naming what is needed.
    let refused = connect(furrow_protocol::Hello::new(
        furrow_protocol::Role::Agent,
        Uuid::new_v4(),
    ))
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("farm join token"), "{refused}");
    let admin = common::tokens(&listen).admin;
    let refused = connect(hello(Uuid::new_v4(), &admin)).await.unwrap_err();
    assert!(
        refused.to_string().contains("is not a join token"),
        "{refused}"
    );
    master.shutdown().unwrap();
}

/// A stale report's answer as an agent speaking `version` reads it.
async fn stale_answer(listen: &str, version: u16) -> Vec<MasterMessage> {
    let mut agent =
        TestAgent::register_speaking(listen, Uuid::new_v4(), 1, Vec::new(), version).await;
    let task = TaskRef {
        task_id: 424_242,
        attempt: 1,
    };
    agent
        .send(AgentMessage::TaskProgress(TaskProgress {
            task,
            progress: 0.5,
        }))
        .await;
    let mut answer = vec![agent.recv().await.expect("an answer")];
    if matches!(answer[0], MasterMessage::Cancel(_)) {
        answer.push(agent.recv().await.expect("a second answer"));
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_speaking_older_protocol_versions_work_and_get_only_what_their_version_has() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    let task = TaskRef {
        task_id: 424_242,
        attempt: 1,
    };
    // `Stale` came with version 6: an agent speaking 5 is told the same in the two
    // messages its version has.
    assert_eq!(
        stale_answer(&listen, PROTOCOL_VERSION).await,
        [MasterMessage::Stale(task)]
    );
    assert_eq!(
        stale_answer(&listen, 5).await,
        [
            MasterMessage::Cancel(task),
            MasterMessage::ResultStored(task)
        ]
    );

    // An agent speaking the version before assignments ahead of a slot gets one task per
    // slot, even of a job whose tasks prove short, and runs the job as any other.
    let submitted = client.submit_job(job("older agent", "1-3")).await.unwrap();
    let mut older =
        TestAgent::register_speaking(&listen, Uuid::new_v4(), 1, Vec::new(), PIPELINE_VERSION - 1)
            .await;
    let http = master.addrs().http.to_string();
    for _ in 0..3 {
        let assigned = older.assignment().await;
        // Whatever the master dispatches with a result goes out in the same commit as
        // this assignment: it holds one task at a time.
        let (_, job) = get_json(&http, &format!("/api/v1/jobs/{}", submitted.id));
        assert_eq!(job["task_counts"]["running"], 1, "{job}");
        older.run(assigned.task, &["rendered"]).await;
        older.result_stored(assigned.task).await;
    }
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_tasks_ahead_of_each_busy_slot_once_a_job_s_tasks_prove_short() {
    // Two per slot from version 9 on, one per slot from version 7.
    tasks_ahead_of_busy_slots(PROTOCOL_VERSION, 2).await;
    tasks_ahead_of_busy_slots(DEEP_PIPELINE_VERSION - 1, 1).await;
}

/// An agent of two slots speaking `version` gets `per_slot` tasks waiting behind each
/// busy slot once the job's first task ended quickly, and runs the job to its end.
async fn tasks_ahead_of_busy_slots(version: u16, per_slot: usize) {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("short", "1-10")).await.unwrap();
    let mut agent =
        TestAgent::register_speaking(&listen, Uuid::new_v4(), 2, Vec::new(), version).await;
    // Nothing is known of the tasks yet: one per slot.
    let first = agent.assignment().await;
    let second = agent.assignment().await;
    let http = master.addrs().http.to_string();
    let (_, job) = get_json(&http, &format!("/api/v1/jobs/{}", submitted.id));
    assert_eq!(job["task_counts"]["running"], 2, "{job}");
    // The first ends at once: its slot gets a task, and each slot `per_slot` waiting
    // behind.
    agent.run(first.task, &[]).await;
    let mut ahead = Vec::new();
    for _ in 0..1 + 2 * per_slot {
        ahead.push(agent.assignment().await);
    }
    agent.result_stored(first.task).await;
    let (_, job) = get_json(&http, &format!("/api/v1/jobs/{}", submitted.id));
    assert_eq!(job["task_counts"]["running"], 2 + 2 * per_slot, "{job}");
    // Assigned, none of them reported started (the second's process would run, the
    // others wait for a slot).
    let (_, tasks) = get_json(&http, &format!("/api/v1/jobs/{}/tasks/", submitted.id));
    let unstarted = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running" && t["started_at"].is_null())
        .count();
    assert_eq!(unstarted, 2 + 2 * per_slot, "{tasks}");
    // It runs them all; each result frees one seat for one task.
    let mut outstanding: std::collections::VecDeque<TaskRef> = std::iter::once(second.task)
        .chain(ahead.iter().map(|a| a.task))
        .collect();
    let mut queued = 10 - 1 - outstanding.len();
    let mut done = 1;
    while let Some(task) = outstanding.pop_front() {
        agent.run(task, &[]).await;
        agent.result_stored(task).await;
        done += 1;
        if queued > 0 {
            outstanding.push_back(agent.assignment().await.task);
            queued -= 1;
        }
    }
    assert_eq!(done, 10);
    wait_for("job done", || job_state(&http, submitted.id) == "done").await;
    master.shutdown().unwrap();
}
