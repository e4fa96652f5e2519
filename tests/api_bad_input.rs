//! Bad input to the REST API gets a 400 that names the field, and loses nothing.

mod common;

use common::Farm;
use serde_json::{Value, json};

fn job(overrides: Value) -> Value {
    let mut base = json!({
        "title": "t",
        "jobtype": "command",
        "params": {"command": ["sh", "-c", "echo {frame}"]},
        "frames": "1-10",
        "batch": 1,
        "priority": 0
    });
    for (k, v) in overrides.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn bad_submissions_are_refused_with_the_field_named() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);

    // Running for the whole test: the actions below need an unfinished job.
    let (status, accepted) = farm.post(
        "/api/v1/jobs/",
        &job(json!({"title": "good one", "params": {"command": ["sleep", "600"]}})),
    );
    assert_eq!(status, 201, "{accepted}");
    assert_eq!(accepted["jobtype"], "command");
    assert_eq!(
        accepted["task_counts"]["queued"].as_u64().unwrap()
            + accepted["task_counts"]["running"].as_u64().unwrap()
            + accepted["task_counts"]["done"].as_u64().unwrap(),
        10
    );

    let cases: Vec<(String, &str)> = vec![
        ("{\"title\": ".into(), ""),
        ("[1, 2, 3]".into(), ""),
        (job(json!({"colour": "red"})).to_string(), "colour"),
        (
            job(json!({"params": {"command": []}})).to_string(),
            "command",
        ),
        (job(json!({"params": {}})).to_string(), "command"),
        (job(json!({"frames": "10-1"})).to_string(), "frames"),
        (job(json!({"frames": "a-b"})).to_string(), "frames"),
        (job(json!({"frames": "1-1000001"})).to_string(), "frames"),
        (job(json!({"batch": 0})).to_string(), "batch"),
        (job(json!({"title": ""})).to_string(), "title"),
        (job(json!({"title": "a\u{0}b"})).to_string(), "title"),
        (
            job(json!({"params": {"command": ["echo", "a\u{0}b"]}})).to_string(),
            "params",
        ),
        (job(json!({"priority": "high"})).to_string(), "priority"),
        (
            job(json!({"retries": 2147483648u64})).to_string(),
            "retries",
        ),
        (
            job(json!({"timeout_secs": u64::MAX})).to_string(),
            "timeout_secs",
        ),
        (job(json!({"weight": 0})).to_string(), "weight"),
        (job(json!({"queue": "nope"})).to_string(), "queue"),
        (job(json!({"queue": "a b"})).to_string(), "queue"),
        (job(json!({"depends_on": [999]})).to_string(), "depends_on"),
        (job(json!({"depends_on": [-3]})).to_string(), "depends_on"),
        (
            job(json!({"depends_per_frame": true})).to_string(),
            "depends_per_frame",
        ),
        (
            job(json!({"requirements": {"cpus": -1}})).to_string(),
            "requirements.cpus",
        ),
        (
            job(json!({"requirements": {"ram_mb": "lots"}})).to_string(),
            "requirements.ram_mb",
        ),
        (
            job(json!({"requirements": {"software": {"blender": ">=three"}}})).to_string(),
            "requirements.software.blender",
        ),
        (
            job(json!({"requirements": {"tags": ["a", "!a"]}})).to_string(),
            "requirements.tags",
        ),
        (
            job(json!({"requirements": {"colour": 1}})).to_string(),
            "requirements.colour",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = farm.post_raw("/api/v1/jobs/", &body);
        assert_eq!(status, 400, "{body} → {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error text: {answer}"));
        assert!(!error.is_empty());
        assert!(
            error.contains(field),
            "error for {body} must name {field:?}: {error}"
        );
    }

    // Impossible requirements are accepted, and "why" says no agent can run them.
    let (status, gpu) = farm.post(
        "/api/v1/jobs/",
        &job(json!({"title": "gpu", "requirements": {"gpus": 4, "software": {"houdini": ">=20"}}})),
    );
    assert_eq!(status, 201, "{gpu}");
    let (status, why) = farm.get(&format!("/api/v1/jobs/{}/why", gpu["id"]));
    assert_eq!(status, 200);
    assert_eq!(why["never"], true, "{why}");
    // Bad edits, actions and queue requests name what is wrong.
    let id = accepted["id"].as_i64().unwrap();
    for (method, path, body, status, needle) in [
        (
            "PATCH",
            format!("/api/v1/jobs/{id}"),
            json!({"weight": 0}),
            400,
            "weight",
        ),
        (
            "PATCH",
            format!("/api/v1/jobs/{id}"),
            json!({"queue": "ghost"}),
            400,
            "queue",
        ),
        (
            "PATCH",
            format!("/api/v1/jobs/{id}"),
            json!({"colour": 1}),
            400,
            "colour",
        ),
        (
            "PATCH",
            format!("/api/v1/jobs/{id}"),
            json!({}),
            400,
            "nothing to change",
        ),
        (
            "PATCH",
            "/api/v1/jobs/999999".to_string(),
            json!({"priority": 1}),
            404,
            "999999",
        ),
        (
            "POST",
            "/api/v1/jobs/999999/actions".to_string(),
            json!({"action": "pause"}),
            404,
            "999999",
        ),
        (
            "POST",
            format!("/api/v1/jobs/{id}/actions"),
            json!({"action": "resume"}),
            409,
            "not paused",
        ),
        (
            "POST",
            "/api/v1/jobs/actions".to_string(),
            json!({"action": "pause", "ids": []}),
            400,
            "ids",
        ),
        (
            "POST",
            "/api/v1/queues/".to_string(),
            json!({"name": "../x"}),
            400,
            "name",
        ),
        (
            "POST",
            "/api/v1/queues/".to_string(),
            json!({"name": "q", "weight": 0}),
            400,
            "weight",
        ),
        (
            "DELETE",
            "/api/v1/queues/ghost".to_string(),
            json!({}),
            404,
            "ghost",
        ),
        ("DELETE", "/api/v1/queues/".to_string(), json!({}), 405, ""),
        (
            "PATCH",
            "/api/v1/agents/not-a-uuid".to_string(),
            json!({"enabled": false}),
            400,
            "agent id",
        ),
        (
            "PATCH",
            "/api/v1/agents/00000000-0000-4000-8000-000000000000".to_string(),
            json!({"enabled": false}),
            404,
            "not found",
        ),
    ] {
        let (got, answer) = farm.send(method, &path, Some(&body));
        assert_eq!(got, status, "{method} {path} {body} → {answer}");
        if !needle.is_empty() {
            assert!(
                answer["error"].as_str().is_some_and(|e| e.contains(needle)),
                "{method} {path} {body} → {answer} must name {needle:?}"
            );
        }
    }
    // The root queue cannot be deleted; a queue with work neither.
    let (status, body) = farm.post("/api/v1/queues/", &json!({"name": "busy"}));
    assert_eq!(status, 201, "{body}");
    let (status, _) = farm.post(
        "/api/v1/jobs/",
        &job(json!({"title": "queued", "queue": "/busy", "params": {"command": ["sleep", "600"]}})),
    );
    assert_eq!(status, 201);
    let (status, body) = farm.send("DELETE", "/api/v1/queues/busy", None);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unfinished jobs"));

    // A million tasks is the limit, and is accepted.
    let (status, _) = farm.get("/api/v1/jobs/abc");
    assert_eq!(status, 400);
    let (status, answer) = farm.get("/api/v1/jobs/999999");
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = farm.get("/api/v1/jobs/?limit=-1");
    assert_eq!(status, 400, "{answer}");

    // Nothing accepted was lost, and nothing refused was stored.
    let (_, jobs) = farm.get("/api/v1/jobs/");
    assert_eq!(jobs["total"], 3, "{jobs}");
    let titles: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["queued", "gpu", "good one"]);
    let (status, health) = farm.get("/api/v1/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[test]
fn hostile_text_cannot_forge_log_lines_and_the_cli_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let title = "evil\nERROR forged line\r\u{1b}[31mred";
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &json!({"title": title, "frames": "1", "params": {"command": ["true"]}}),
    );
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["title"], title, "the title is kept as given");
    let id = job["id"].as_i64().unwrap();
    farm.wait_job(id, std::time::Duration::from_secs(60));
    let log = std::fs::read(farm.data_dir.join("run/master.log")).unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("job submitted"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no escape code reaches the log file"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a title forged a log line:\n{log}"
    );

    // Output into a pipe closed early (more than a pipe holds) ends the command quietly.
    let (status, big) = farm.post(
        "/api/v1/jobs/",
        &json!({"title": "big", "frames": "1-5000", "params": {"command": ["true"]}}),
    );
    assert_eq!(status, 201, "{big}");
    let listen = farm.listen.clone();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "FURROW_SERVER={listen} FURROW_TOKEN={} {} job {} | head -c 1 > /dev/null",
            farm.token,
            common::furrow_exe(),
            big["id"]
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A method an endpoint does not take: 405, with the ones it does in `Allow`.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .put(&format!("http://{}/api/v1/jobs/", farm.http))
        .header("authorization", &farm.bearer())
        .header("content-type", "application/json")
        .send("{}")
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );

    // The HTTP port given as the protocol's: the error says which port to use.
    let out = farm.cli(&["jobs", "--server", &farm.http]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not speak the furrow protocol") && stderr.contains("TCP port"),
        "{stderr}"
    );
}
