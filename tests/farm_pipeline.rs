//! Assignments ahead of a free slot, end to end: once a job's tasks prove short, each
//! agent holds a waiting task besides the running one. A cancel, a drained or lost agent
//! and a master restart with such assignments in flight lose nothing and run nothing
//! twice.

mod common;

use std::time::Duration;

use common::{Farm, wait_until};
use serde_json::{Value, json};

/// A job of `frames` short tasks (each sleeps `secs`); returns its id.
fn submit(farm: &Farm, frames: &str, secs: f32) -> i64 {
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &json!({
            "title": "short",
            "params": {"command": ["sh", "-c", format!("sleep {secs}")]},
            "frames": frames,
            "retries": 0,
        }),
    );
    assert_eq!(status, 201, "{job}");
    job["id"].as_i64().unwrap()
}

/// Waits until the farm's agents (one slot each) hold `held` attempts of job `id`, some
/// of them waiting for a slot; returns the tasks that wait (assigned, not started).
fn until_held(farm: &Farm, id: i64, held: u64) -> Vec<Value> {
    wait_until(
        "tasks waiting on the agents for a slot",
        Duration::from_secs(60),
        || {
            let (_, job) = farm.get(&format!("/api/v1/jobs/{id}"));
            if job["task_counts"]["running"].as_u64()? < held {
                return None;
            }
            let waiting: Vec<Value> = farm
                .tasks(id)
                .into_iter()
                .filter(|t| t["state"] == "running" && t["started_at"].is_null())
                .collect();
            (!waiting.is_empty()).then_some(waiting)
        },
    )
}

/// The attempts of task `task_id` of job `id`.
fn attempts(farm: &Farm, id: i64, task_id: &Value) -> Vec<Value> {
    let (status, attempts) = farm.get(&format!("/api/v1/jobs/{id}/tasks/{task_id}/attempts"));
    assert_eq!(status, 200, "{attempts}");
    attempts.as_array().unwrap().clone()
}

/// Every task of job `id` is done, each by exactly one attempt that ran (so none ran
/// twice); attempts given back before they started are allowed.
fn assert_each_done_once(farm: &Farm, id: i64) {
    for task in farm.tasks(id) {
        assert_eq!(task["state"], "done", "{task}");
        let attempts = attempts(farm, id, &task["id"]);
        let done: Vec<&Value> = attempts.iter().filter(|a| a["outcome"] == "done").collect();
        assert_eq!(done.len(), 1, "task {}: {attempts:?}", task["id"]);
        assert!(
            attempts
                .iter()
                .all(|a| a["outcome"] == "done" || a["outcome"] == "requeued"),
            "task {}: {attempts:?}",
            task["id"]
        );
    }
}

#[test]
fn cancelling_a_job_ends_its_waiting_assignments_before_they_start() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "1"]);
    let id = submit(&farm, "1-200", 0.3);
    let waiting = until_held(&farm, id, 2);

    let (status, body) = farm.post(
        &format!("/api/v1/jobs/{id}/actions"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(status, 200, "{body}");
    let job = farm.wait_job(id, Duration::from_secs(60));
    assert_eq!(job["state"], "cancelled", "{job}");
    // The waiting attempt ended cancelled, and its process never started.
    for task in &waiting {
        let attempts = attempts(&farm, id, &task["id"]);
        let last = attempts.last().unwrap();
        assert_eq!(last["outcome"], "cancelled", "{attempts:?}");
        assert!(last["started_at"].is_null(), "{attempts:?}");
    }
    // The agent is free for new work.
    let next = submit(&farm, "1-3", 0.0);
    assert_eq!(
        farm.wait_job(next, Duration::from_secs(60))["state"],
        "done"
    );
}

#[test]
fn a_drained_agent_gives_its_waiting_assignments_back_to_run_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    let id = submit(&farm, "1-30", 0.3);
    let waiting = until_held(&farm, id, 4);
    let drained = waiting[0]["agent"].as_str().unwrap().to_string();
    farm.signal_agent(farm.agent_number(&drained), libc::SIGTERM);

    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    assert_eq!(job["task_counts"]["failed"], 0);
    assert_each_done_once(&farm, id);
    // The waiting one was given back unstarted and done by the other agent.
    let attempts = attempts(&farm, id, &waiting[0]["id"]);
    assert_eq!(attempts[0]["agent"], drained.as_str(), "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "requeued", "{attempts:?}");
    assert!(attempts[0]["started_at"].is_null(), "{attempts:?}");
    assert_ne!(attempts[1]["agent"], drained.as_str(), "{attempts:?}");
}

#[test]
fn a_lost_agent_s_waiting_assignments_run_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    let id = submit(&farm, "1-30", 0.3);
    let waiting = until_held(&farm, id, 4);
    let victim = waiting[0]["agent"].as_str().unwrap().to_string();
    farm.signal_agent(farm.agent_number(&victim), libc::SIGKILL);

    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    assert_eq!(job["task_counts"]["failed"], 0);
    let attempts = attempts(&farm, id, &waiting[0]["id"]);
    let last = attempts.last().unwrap();
    assert_eq!(last["outcome"], "done", "{attempts:?}");
    assert!(attempts.len() >= 2, "it ran again: {attempts:?}");
    assert_eq!(attempts[0]["agent"], victim.as_str(), "{attempts:?}");
    assert!(attempts[0]["started_at"].is_null(), "{attempts:?}");
}

#[test]
fn a_master_restart_with_assignments_in_flight_loses_none_and_runs_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    let id = submit(&farm, "1-40", 0.3);
    let waiting = until_held(&farm, id, 4);
    let before = farm.master_pid().expect("the master runs");
    // SAFETY: kill(2) of the master this test's farm started; `furrow up` restarts it.
    unsafe {
        libc::kill(before, libc::SIGKILL);
    }
    wait_until("a new master", Duration::from_secs(60), || {
        farm.master_pid().filter(|pid| *pid != before)
    });

    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    assert_eq!(job["task_counts"]["done"], 40);
    assert_each_done_once(&farm, id);
    // The agents kept what waited there: it ran as the attempt it was assigned as.
    for task in &waiting {
        let attempts = attempts(&farm, id, &task["id"]);
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0]["attempt"], task["attempt"], "{attempts:?}");
    }
}
