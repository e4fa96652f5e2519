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

    let (status, accepted) = farm.post("/api/v1/jobs/", &job(json!({"title": "good one"})));
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

    // A million tasks is the limit, and is accepted.
    let (status, _) = farm.get("/api/v1/jobs/abc");
    assert_eq!(status, 400);
    let (status, answer) = farm.get("/api/v1/jobs/999999");
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = farm.get("/api/v1/jobs/?limit=-1");
    assert_eq!(status, 400, "{answer}");

    // Nothing accepted was lost, and nothing refused was stored.
    let (_, jobs) = farm.get("/api/v1/jobs/");
    assert_eq!(jobs["total"], 1, "{jobs}");
    assert_eq!(jobs["items"][0]["title"], "good one");
    let (status, health) = farm.get("/api/v1/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}
