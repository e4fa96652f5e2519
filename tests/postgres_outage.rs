//! PostgreSQL going away: the master keeps serving what it can, refuses new jobs (503)
//! and reports `degraded` while the server is down, agents keep their results, and when
//! the server is back the master recovers by itself with nothing lost or run twice.
//!
//! The test runs a PostgreSQL server of its own, which it stops and starts; that needs
//! root, as the test command runs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::postgres::PrivatePostgres;
use common::{Farm, wait_until};
use serde_json::{Value, json};

fn job(title: &str, script: &str, frames: &str) -> Value {
    json!({
        "title": title,
        "params": {"command": ["sh", "-c", script]},
        "frames": frames,
        "retries": 0,
    })
}

fn attempts(farm: &Farm, id: i64) -> Vec<u64> {
    farm.tasks(id)
        .iter()
        .map(|t| t["attempt"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_postgres_outage_refuses_new_work_loses_nothing_and_heals_by_itself() {
    let pg = PrivatePostgres::start();
    let root = tempfile::tempdir().unwrap();
    let url = pg.url();
    let mut farm = Farm::up_in(
        root.path().join("data"),
        1,
        &["--database-url", &url, "--slots", "2"],
    );

    let (status, early) = farm.post("/api/v1/jobs/", &job("early", "echo {frame}", "1-2"));
    assert_eq!(status, 201, "{early}");
    let early = early["id"].as_i64().unwrap();
    assert_eq!(
        farm.wait_job(early, Duration::from_secs(60))["state"],
        "done"
    );

    // Two tasks run while the server goes away; they finish during the outage.
    let (status, during) = farm.post(
        "/api/v1/jobs/",
        &job("during", "sleep 2; echo outage-marker {frame}", "1-2"),
    );
    assert_eq!(status, 201, "{during}");
    let during = during["id"].as_i64().unwrap();
    farm.wait_job_until(during, "both tasks to run", Duration::from_secs(60), |j| {
        j["task_counts"]["running"] == 2
    });
    pg.stop();

    let (status, refused) = farm.post("/api/v1/jobs/", &job("refused", "true", "1"));
    assert_eq!(status, 503, "{refused}");
    let degraded = wait_until(
        "health to report the outage",
        Duration::from_secs(30),
        || {
            let (status, health) = farm.get("/api/v1/health");
            (status == 503).then_some(health)
        },
    );
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert!(
        degraded["problems"][0]
            .as_str()
            .is_some_and(|p| p.starts_with("database: cannot write")),
        "{degraded}"
    );
    wait_until(
        "the tasks to end on the agent",
        Duration::from_secs(60),
        || {
            let out = Command::new("pgrep")
                .args(["-f", "outage-marker"])
                .output()
                .ok()?;
            (!out.status.success()).then_some(())
        },
    );

    // The server comes back: the master heals by itself, and the results the agent kept
    // are stored; the tasks did not run again.
    pg.resume();
    wait_until("health to recover", Duration::from_secs(60), || {
        let (status, health) = farm.get("/api/v1/health");
        (status == 200 && health["status"] == "ok").then_some(())
    });
    let done = farm.wait_job(during, Duration::from_secs(60));
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(attempts(&farm, during), [1, 1], "{:?}", farm.tasks(during));
    let (status, after) = farm.post("/api/v1/jobs/", &job("after", "true", "1"));
    assert_eq!(status, 201, "{after}");
    let after = after["id"].as_i64().unwrap();
    assert_eq!(
        farm.wait_job(after, Duration::from_secs(60))["state"],
        "done"
    );

    // After a restart every acknowledged job is there; the refused one is not.
    farm.restart_with(&["--database-url", &url]);
    let (status, list) = farm.get("/api/v1/jobs/?limit=100");
    assert_eq!(status, 200, "{list}");
    let titles: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["after", "during", "early"], "{list}");
    for id in [early, during, after] {
        assert!(
            attempts(&farm, id).iter().all(|a| *a == 1),
            "job {id} ran again"
        );
    }
    drop(farm);
    drop(pg);
}

#[test]
fn a_second_master_on_the_same_postgres_database_refuses_to_start() {
    let pg = PrivatePostgres::start();
    let root = tempfile::tempdir().unwrap();
    let url = pg.url();
    let farm = Farm::up_in(root.path().join("first"), 0, &["--database-url", &url]);
    let second = Command::new(common::furrow_exe())
        .args(["master", "--database-url", &url])
        .arg("--data-dir")
        .arg(root.path().join("second"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .expect("run a second master");
    assert!(!second.status.success(), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another furrow master is using this database: furrow master on"),
        "{stderr}"
    );
    // The first one is unharmed.
    let (status, health) = farm.get("/api/v1/health");
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    drop(farm);
    drop(pg);
}
