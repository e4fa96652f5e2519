//! Lost agents unseen for `--forget-agents-after` leave the agent list and the dashboard;
//! their history stays, agents given settings through the API stay, and a forgotten
//! agent that comes back is listed again.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{Farm, wait_until};
use serde_json::{Value, json};

/// A `furrow agent` process of the test's own, stopped when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn start(farm: &Farm, root: &Path, name: &str) -> Self {
        let join = farm.data_dir.join("join.token");
        let join = join.to_str().unwrap();
        Self(farm.start_agent(root, name, &["--join-token-file", join]).0)
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agents(farm: &Farm) -> Vec<Value> {
    let (status, page) = farm.get("/api/v1/agents/");
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn find(farm: &Farm, name: &str) -> Option<Value> {
    agents(farm).into_iter().find(|a| a["name"] == name)
}

#[test]
fn lost_agents_are_forgotten_after_a_while_and_their_history_stays() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 0, &["--forget-agents-after", "2"]);
    let mut short = AgentProcess::start(&farm, root.path(), "short-lived");
    let mut kept = AgentProcess::start(&farm, root.path(), "kept");
    let (short_id, kept_id) = wait_until("both agents online", Duration::from_secs(60), || {
        let short = find(&farm, "short-lived").filter(|a| a["state"] == "online")?;
        let kept = find(&farm, "kept").filter(|a| a["state"] == "online")?;
        Some((
            short["id"].as_str()?.to_string(),
            kept["id"].as_str()?.to_string(),
        ))
    });
    // The short-lived agent does some work; the other one gets settings through the API.
    let (status, body) = farm.send(
        "PATCH",
        &format!("/api/v1/agents/{kept_id}"),
        Some(&json!({"enabled": false})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &json!({"title": "history", "frames": "1", "params": {"command": ["true"]}}),
    );
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_i64().unwrap();
    assert_eq!(
        farm.wait_job(job_id, Duration::from_secs(60))["state"],
        "done"
    );

    short.stop();
    kept.stop();
    // Lost after the heartbeat timeout (5 s), forgotten 2 s after it was last seen.
    wait_until(
        "the short-lived agent to be forgotten",
        Duration::from_secs(60),
        || find(&farm, "short-lived").is_none().then_some(()),
    );
    let kept_view = find(&farm, "kept").expect("an agent with settings is kept");
    assert_eq!(kept_view["state"], "offline", "{kept_view}");
    let (_, page) = farm.get("/api/v1/agents/");
    assert_eq!(page["total"], 1, "{page}");
    // Its history stays: the task it ran still names it.
    let tasks = farm.tasks(job_id);
    assert_eq!(tasks[0]["agent"], short_id.as_str(), "{tasks:?}");

    // It comes back with its own credential and is listed again.
    let _again = AgentProcess::start(&farm, root.path(), "short-lived");
    let back = wait_until(
        "the forgotten agent to come back",
        Duration::from_secs(60),
        || find(&farm, "short-lived").filter(|a| a["state"] == "online"),
    );
    assert_eq!(back["id"], short_id.as_str(), "{back}");
}
