//! What a broken actor does to the master: a stuck one shows in `/health`; a panicking
//! one ends the process, which `furrow up` restarts from its stored state.
//!
//! The faults come from `FURROW_DEBUG_FAULT`, which debug builds of the master read.

mod common;

use std::time::Duration;

use common::{Farm, wait_until};
use serde_json::json;

#[test]
fn a_stuck_actor_shows_in_health() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_env(
        root.path().join("data"),
        0,
        &[],
        &[("FURROW_DEBUG_FAULT", "stall:Registry")],
    );
    let (status, health) = farm.get("/api/v1/health");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let problems: Vec<&str> = health["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems.contains(&"registry: did not answer within 2 s (stuck or overloaded)"),
        "{health}"
    );
    // Once the stall is over, the master answers again.
    wait_until(
        "the master to answer again",
        Duration::from_secs(30),
        || {
            farm.try_get("/api/v1/jobs/")
                .filter(|(status, _)| *status == 200)
        },
    );
}

#[test]
fn a_panicking_actor_ends_the_master_which_restarts_from_its_stored_state() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_env(
        root.path().join("data"),
        1,
        &[],
        &[("FURROW_DEBUG_FAULT", "panic:Scheduler")],
    );
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &json!({"title": "survives", "frames": "1-3", "params": {"command": ["sh", "-c", "sleep 1; echo {frame}"]}}),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let first = farm.master_pid().expect("the master runs");

    // The scheduler panics while answering the health check: the master aborts rather
    // than run on without it.
    let _ = farm.try_get("/api/v1/health");
    let second = wait_until("a new master process", Duration::from_secs(60), || {
        farm.master_pid().filter(|pid| *pid != first)
    });
    assert_ne!(first, second);
    let log = std::fs::read_to_string(farm.data_dir.join("run/master.log")).unwrap();
    assert!(
        log.contains(
            "a thread panicked; aborting so the process is restarted from its stored state"
        ),
        "{log}"
    );

    // The restarted master has the job from the store and finishes it.
    wait_until("the new master to serve", Duration::from_secs(60), || {
        farm.try_get(&format!("/api/v1/jobs/{id}"))
            .filter(|(status, _)| *status == 200)
    });
    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}");
}
