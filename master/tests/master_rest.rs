//! The REST API and the dashboard over real HTTP.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{get, get_json, post, start_master};

const GOOD: &str = r#"{"title": "t", "params": {"command": ["sh", "-c", "echo {frame}"]}, "frames": "1-100", "batch": 1, "priority": 0}"#;

fn error_of(value: &serde_json::Value) -> String {
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {value}"))
        .to_string()
}

#[test]
fn rest_api_accepts_jobs_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let http = master.addrs().http.to_string();

    let (status, job) = post(&http, "/api/v1/jobs/", GOOD);
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["jobtype"], "command");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["task_counts"]["queued"], 100);
    let id = job["id"].as_i64().unwrap();
    let (_, second) = post(&http, "/api/v1/jobs/", &GOOD.replace("1-100", "1-10:2"));
    assert_eq!(
        second["frames"], "1-9:2",
        "normalised to the frames rendered"
    );

    let (status, page) = get_json(&http, "/api/v1/jobs/");
    assert_eq!(status, 200);
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][0]["id"], second["id"], "newest first");
    let (_, page) = get_json(&http, "/api/v1/jobs/?limit=1&offset=1");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], id);

    let (status, one) = get_json(&http, &format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(one["task_counts"]["queued"], 100);
    for key in ["queued", "running", "done", "failed", "paused"] {
        assert!(one["task_counts"][key].is_u64(), "{key}");
    }
    let (status, tasks) = get_json(
        &http,
        &format!("/api/v1/jobs/{id}/tasks/?limit=5&offset=10"),
    );
    assert_eq!(status, 200);
    assert_eq!(tasks["total"], 100);
    let frames: Vec<i64> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["frame"].as_i64().unwrap())
        .collect();
    assert_eq!(frames, vec![11, 12, 13, 14, 15]);
    let (status, agents) = get_json(&http, "/api/v1/agents/");
    assert_eq!((status, agents["total"].as_u64()), (200, Some(0)));
    let (status, health) = get_json(&http, "/api/v1/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    wait_queued(&http, 105);

    let cases: &[(&str, &str)] = &[
        ("{not json", "invalid JSON"),
        (r#"[1, 2]"#, "body: must be a JSON object"),
        (
            &GOOD.replace(r#""priority": 0"#, r#""priority": 0, "colour": "red""#),
            "colour: unknown field",
        ),
        (r#"{"frames": "1"}"#, "title: missing"),
        (
            &GOOD.replace(r#""title": "t""#, r#""title": " ""#),
            "title: must not be empty",
        ),
        (
            &GOOD.replace(r#"["sh", "-c", "echo {frame}"]"#, "[]"),
            "params.command: its length must be at least 1, got 0",
        ),
        (
            &GOOD.replace(
                r#""params": {"command": ["sh", "-c", "echo {frame}"]}, "#,
                "",
            ),
            "params.command: required (list<string> parameter)",
        ),
        (
            &GOOD.replace(
                r#""command": ["sh", "-c", "echo {frame}"]"#,
                r#""command": ["sh"], "extra": true"#,
            ),
            "params.extra: unknown parameter (known: command, shell, env, app)",
        ),
        (
            &GOOD.replace("1-100", "10-1"),
            "frames: invalid frame range \"10-1\": end frame 1 is before start frame 10",
        ),
        (
            &GOOD.replace("1-100", "a-b"),
            "frames: invalid frame range \"a-b\"",
        ),
        (
            &GOOD.replace(r#""batch": 1"#, r#""batch": 0"#),
            "batch: must be at least 1",
        ),
        (
            &GOOD.replace(r#""batch": 1"#, r#""batch": "x""#),
            "batch: invalid type",
        ),
        (
            &GOOD.replace("1-100", "1-1000001"),
            "frames: 1000001 tasks exceed the limit",
        ),
        (
            &GOOD.replace(r#""title": "t""#, r#""title": "t", "jobtype": "maya""#),
            "jobtype: unknown job type \"maya\"",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(&http, "/api/v1/jobs/", body);
        assert_eq!(status, 400, "{body} -> {answer}");
        let message = error_of(&answer);
        assert!(
            message.starts_with(expected),
            "{body}: {message:?} should start with {expected:?}"
        );
    }
    // A body over the limit is refused before it is parsed.
    let huge = format!(
        r#"{{"title": "{}", "frames": "1"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, answer) = post(&http, "/api/v1/jobs/", &huge);
    assert_eq!(status, 413);
    assert!(error_of(&answer).starts_with("body: larger than the limit"));

    // Nothing invalid was stored.
    let (_, page) = get_json(&http, "/api/v1/jobs/");
    assert_eq!(page["total"], 2);

    let bad_gets: &[(&str, u16, &str)] = &[
        ("/api/v1/jobs/abc", 400, "job id"),
        ("/api/v1/jobs/999", 404, "job 999 not found"),
        ("/api/v1/jobs/?limit=abc", 400, "limit"),
        ("/api/v1/jobs/?limit=0", 400, "limit"),
        ("/api/v1/jobs/?limit=10001", 400, "limit"),
        ("/api/v1/agents/?offset=-1", 400, "offset"),
        ("/api/v1/jobs/999/tasks/", 404, "job 999 not found"),
        ("/api/v1/jobs/x/tasks/", 400, "job id"),
        ("/api/v1/jobs/1/tasks/zz/logs", 400, "task id"),
        ("/api/v1/jobs/1/tasks/1/logs", 404, "task 1 has not run yet"),
        ("/api/v1/jobs/1/tasks/1/logs?attempt=x", 400, "attempt"),
        ("/api/v1/nope", 404, "no such endpoint"),
    ];
    for (path, expected_status, expected) in bad_gets {
        let (status, answer) = get_json(&http, path);
        assert_eq!(status, *expected_status, "{path} -> {answer}");
        let message = error_of(&answer);
        assert!(
            message.contains(expected),
            "{path}: {message:?} should name {expected:?}"
        );
    }
    let (status, answer) = post(&http, "/api/v1/health", "{}");
    assert_eq!(status, 405);
    error_of(&answer);
    master.shutdown().unwrap();
}

/// Waits until the scheduler reports `n` queued tasks.
fn wait_queued(http: &str, n: u64) {
    let start = std::time::Instant::now();
    loop {
        let (_, health) = get_json(http, "/api/v1/health");
        if health["tasks_queued"].as_u64() == Some(n) {
            return;
        }
        assert!(
            start.elapsed() < common::DEADLINE,
            "queued never reached {n}: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dashboard_is_served_and_streams_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let http = master.addrs().http.to_string();
    let (status, page) = get(&http, "/");
    assert_eq!(status, 200);
    for needle in [
        r#"id="agents""#,
        r#"id="jobs""#,
        "/api/v1/events",
        "EventSource",
    ] {
        assert!(page.contains(needle), "dashboard lacks {needle}");
    }

    let mut stream = std::net::TcpStream::connect(&http).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\nAuthorization: {}\r\n\r\n",
        common::bearer(&http)
    )
    .unwrap();
    let first = read_until_event(&mut stream, "\"jobs\"");
    assert!(first.contains("text/event-stream"), "{first}");
    assert!(first.contains("event: snapshot"), "{first}");
    // A change is pushed without asking.
    let (status, _) = post(
        &http,
        "/api/v1/jobs/",
        &GOOD.replace(r#""title": "t""#, r#""title": "pushed-job""#),
    );
    assert_eq!(status, 201);
    read_until_event(&mut stream, "pushed-job");
    drop(stream);

    let (status, spec) = get_json(&http, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(spec["paths"]["/api/v1/jobs/"].is_object());
    master.shutdown().unwrap();
}

/// Reads the event stream until `needle` appears (or the read times out).
fn read_until_event(stream: &mut std::net::TcpStream, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    while !seen.contains(needle) {
        let n = stream.read(&mut buf).expect("event stream read");
        assert!(n > 0, "event stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[test]
fn password_guessing_is_slowed_down_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let http = master.addrs().http.to_string();
    let (status, user) = post(
        &http,
        "/api/v1/users/",
        r#"{"name": "gale", "role": "viewer", "password": "right-password"}"#,
    );
    assert_eq!(status, 201, "{user}");
    let login = |password: &str| {
        post(
            &http,
            "/login",
            &format!(r#"{{"user": "gale", "password": "{password}"}}"#),
        )
    };
    for _ in 0..furrow_master::auth::LOGIN_FAILURES {
        let (status, answer) = login("guess");
        assert_eq!(status, 401);
        assert_eq!(error_of(&answer), "login: wrong user name or password");
    }
    // Past the limit even the right password waits, and the answer says how long.
    let (status, answer) = login("right-password");
    assert_eq!(status, 401);
    assert!(error_of(&answer).contains("try again in"), "{answer}");
    // The API itself is not slowed down for token holders.
    let (status, _) = get(&http, "/api/v1/health");
    assert_eq!(status, 200);
    master.shutdown().unwrap();
}
