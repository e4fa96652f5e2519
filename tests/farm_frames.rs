//! A 50-frame job on a two-agent farm runs every frame exactly once, and each frame's log
//! holds its output.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Farm;
use serde_json::json;

#[test]
fn every_frame_runs_exactly_once_and_logs_its_output() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 2);
    let record = root.path().join("frames.txt");
    let script = format!(
        "echo {{frame}} >> {} && echo rendered frame {{frame}}",
        record.display()
    );

    let id = farm.submit(&[
        "--title", "fifty", "--frames", "1-50", "--", "sh", "-c", &script,
    ]);

    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        job["task_counts"],
        json!({"queued": 0, "running": 0, "done": 50, "failed": 0, "paused": 0, "blocked": 0, "cancelled": 0})
    );

    let recorded = std::fs::read_to_string(&record).unwrap();
    let mut runs: BTreeMap<i64, u32> = BTreeMap::new();
    for line in recorded.lines() {
        *runs
            .entry(line.trim().parse().expect("a frame number"))
            .or_default() += 1;
    }
    let expected: BTreeMap<i64, u32> = (1..=50).map(|f| (f, 1)).collect();
    assert_eq!(runs, expected, "each frame must run exactly once");

    let tasks = farm.tasks(id);
    assert_eq!(tasks.len(), 50);
    let agents: std::collections::BTreeSet<String> = tasks
        .iter()
        .map(|t| t["agent"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(agents.len(), 2, "both agents take work: {agents:?}");
    for t in &tasks {
        assert_eq!(t["state"], "done");
        assert_eq!(t["exit_code"], 0);
        assert_eq!(t["attempt"], 1);
    }

    let task17 = tasks.iter().find(|t| t["frame"] == 17).expect("frame 17");
    let (status, log) = farm.get_text(&format!("/api/v1/jobs/{id}/tasks/{}/logs", task17["id"]));
    assert_eq!(status, 200);
    assert!(log.contains("rendered frame 17"), "log of frame 17:\n{log}");
    assert!(
        !log.contains("rendered frame 18"),
        "log of frame 17 holds another frame:\n{log}"
    );

    let out = farm.cli(&["logs", &id.to_string(), "17"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rendered frame 17"));

    // The same task and log addressed by frame.
    let (status, task) = farm.get(&format!("/api/v1/jobs/{id}/frames/17"));
    assert_eq!(status, 200, "{task}");
    assert_eq!(
        (task["frame"].as_i64(), &task["id"]),
        (Some(17), &task17["id"])
    );
    let (status, log) = farm.get_text(&format!("/api/v1/jobs/{id}/frames/17/logs?attempt=1"));
    assert_eq!(status, 200);
    assert!(
        log.contains("rendered frame 17") && !log.contains("frame 18"),
        "{log}"
    );
    let (status, body) = farm.get(&format!("/api/v1/jobs/{id}/frames/51"));
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("has no frame 51 (its frames are 1-50)"),
        "{body}"
    );
    let (status, body) = farm.get(&format!("/api/v1/jobs/{id}/frames/1x/logs"));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().starts_with("frame: \"1x\""),
        "{body}"
    );
    let (status, body) = farm.get(&format!("/api/v1/jobs/{id}/frames/17/logs?attempt=2"));
    assert_eq!(status, 404, "{body}");

    // Pages that seek by frame, and their bad input.
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks/?after_frame=45&limit=3"));
    let frames: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["frame"].as_i64().unwrap())
        .collect();
    assert_eq!(
        (frames, page["total"].as_u64()),
        (vec![46, 47, 48], Some(50))
    );
    let (_, page) = farm.get(&format!(
        "/api/v1/jobs/{id}/tasks/?before_frame=3&state=done"
    ));
    let frames: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["frame"].as_i64().unwrap())
        .collect();
    assert_eq!((frames, page["total"].as_u64()), (vec![1, 2], Some(50)));
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks/?offset=48"));
    assert_eq!(page["items"][0]["frame"], 49);
    for (query, named) in [
        ("state=sleeping", "state: \"sleeping\" is not a task state"),
        ("from_frame=x", "from_frame: \"x\""),
        (
            "from_frame=1&after_frame=2",
            "from_frame, after_frame: give at most one",
        ),
    ] {
        let (status, body) = farm.get(&format!("/api/v1/jobs/{id}/tasks/?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(named),
            "{query}: {body}"
        );
    }

    // `furrow job` lists one page, from a frame, and says how to get the next.
    let out = farm.cli(&["job", &id.to_string(), "--limit", "5", "--from-frame", "20"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("5 tasks from frame 20 to 24 of 50 (from frame 20)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("more: furrow job {id} --from-frame 25")),
        "{text}"
    );
    let rows: Vec<i64> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let frame = words.next()?.parse().ok()?;
            (words.next() == Some("done")).then_some(frame)
        })
        .collect();
    assert_eq!(rows, vec![20, 21, 22, 23, 24], "{text}");
    let out = farm.cli(&["logs", &id.to_string(), "51"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no frame 51"));
}

#[test]
fn batches_run_once_with_their_start_and_end_and_wait_reports_failure() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);

    let id = farm.submit(&[
        "--title", "batched", "--frames", "1-10:2", "--batch", "2", "--wait", "--", "echo",
        "batch", "{start}", "{end}", "{step}",
    ]);
    let tasks = farm.tasks(id);
    let frames: Vec<(i64, i64)> = tasks
        .iter()
        .map(|t| {
            (
                t["frame"].as_i64().unwrap(),
                t["frame_end"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(frames, vec![(1, 3), (5, 7), (9, 9)]);
    let (_, log) = farm.get_text(&format!("/api/v1/jobs/{id}/tasks/{}/logs", tasks[1]["id"]));
    assert!(log.contains("batch 5 7 2"), "{log}");
    // Any frame of a batch finds it; a frame between the steps is not the job's.
    let (_, by_frame) = farm.get_text(&format!("/api/v1/jobs/{id}/frames/7/logs"));
    assert_eq!(by_frame, log);
    let (status, _) = farm.get(&format!("/api/v1/jobs/{id}/frames/6"));
    assert_eq!(status, 404);
    // From a frame: the first task with a frame at or after it.
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks/?from_frame=8"));
    assert_eq!(page["items"][0]["frame"], 9);
    let (_, page) = farm.get(&format!("/api/v1/jobs/{id}/tasks/?from_frame=6"));
    assert_eq!(page["items"][0]["frame"], 5);

    let out = farm.cli(&[
        "submit", "--title", "fails", "--frames", "1-2", "--wait", "--", "false",
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed job exits non-zero");
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let (_, job) = farm.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(job["state"], "failed");
    assert_eq!(job["task_counts"]["failed"], 2);

    let out = farm.cli(&["submit", "--title", "bad", "--frames", "10-1", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("frames") && err.contains("before start"),
        "{err}"
    );
}
