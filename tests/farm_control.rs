//! Job control on a real farm: pause, resume, cancel, rerun, delete; dependencies per job
//! and per frame; blocklisting; the stall timeout; "why"; everything kept over a master
//! restart.

mod common;

use std::time::Duration;

use common::{Farm, wait_until};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);

fn submit(farm: &Farm, body: Value) -> i64 {
    let (status, job) = farm.post("/api/v1/jobs/", &body);
    assert_eq!(status, 201, "{job}");
    job["id"].as_i64().unwrap()
}

fn action(farm: &Farm, id: i64, body: Value) -> (u16, Value) {
    farm.post(&format!("/api/v1/jobs/{id}/actions"), &body)
}

fn counts(job: &Value, state: &str) -> u64 {
    job["task_counts"][state].as_u64().unwrap_or(0)
}

#[test]
fn pause_resume_cancel_rerun_and_delete() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "2"]);
    let marks = root.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let script = format!(
        "sleep 0.5; touch {}/{{frame}}.$FURROW_ATTEMPT",
        marks.display()
    );
    let id = submit(
        &farm,
        json!({"title": "ctl", "params": {"command": ["sh", "-c", script]}, "frames": "1-8"}),
    );

    // Pause (CLI): running tasks finish, the rest are held back.
    let out = farm.cli(&["pause", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paused = farm.wait_job_until(id, "job paused", LONG, |j| j["state"] == "paused");
    assert!(paused["paused"].as_bool().unwrap());
    let held = counts(&paused, "paused");
    assert!(held >= 6, "{paused}");
    let (_, why) = farm.get(&format!("/api/v1/jobs/{id}/why"));
    assert!(
        why["reasons"][0].as_str().unwrap().starts_with("paused"),
        "{why}"
    );
    let out = farm.cli(&["pause", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already paused"));

    // Resume: everything runs to the end, each frame once.
    let out = farm.cli(&["resume", &id.to_string()]);
    assert!(out.status.success());
    let done = farm.wait_job(id, LONG);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(std::fs::read_dir(&marks).unwrap().count(), 8);

    // An action that makes no sense on a done job is refused with 409.
    let (status, body) = action(&farm, id, json!({"action": "pause"}));
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("is done"));
    let (status, body) = action(&farm, id, json!({"action": "rerun_failed"}));
    assert_eq!(status, 409, "{body}");
    let (status, body) = action(&farm, id, json!({"action": "explode"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("action: "),
        "{body}"
    );

    // Rerun of a finished job runs every frame again with a new attempt.
    let (status, body) = action(&farm, id, json!({"action": "rerun"}));
    assert_eq!(status, 200, "{body}");
    let again = farm.wait_job(id, LONG);
    assert_eq!(again["state"], "done", "{again}");
    for frame in 1..=8 {
        assert!(
            marks.join(format!("{frame}.2")).exists(),
            "frame {frame} ran again"
        );
    }

    // Rerun of one task.
    let task = farm.tasks(id)[2]["id"].as_i64().unwrap();
    let out = farm.cli(&["rerun", &id.to_string(), "--task", &task.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    farm.wait_job(id, LONG);
    assert!(marks.join("3.3").exists());
    assert!(!marks.join("4.3").exists());

    // Cancel kills running tasks; the job ends cancelled long before they would end.
    let slow = submit(
        &farm,
        json!({"title": "slow", "params": {"command": ["sleep", "600"]}, "frames": "1-4"}),
    );
    farm.wait_job_until(slow, "slow job running", LONG, |j| {
        counts(j, "running") == 2
    });
    let out = farm.cli(&["cancel", &slow.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cancelled = farm.wait_job(slow, Duration::from_secs(60));
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(counts(&cancelled, "cancelled"), 4);
    assert_eq!(counts(&cancelled, "failed"), 0);

    // Delete removes the job, its tasks and its logs.
    let logs = farm.data_dir.join("logs").join(id.to_string());
    assert!(logs.exists());
    let out = farm.cli(&["delete", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = farm.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 404);
    wait_until("logs deleted", Duration::from_secs(10), || {
        (!logs.exists()).then_some(())
    });
    let (status, body) = farm.send("DELETE", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn dependencies_per_job_and_per_frame() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "2"]);
    let out_dir = root.path().join("frames");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dir = out_dir.display();
    // The render writes frame files slowly; the comp of frame N needs render frame N.
    let render = submit(
        &farm,
        json!({
            "title": "render",
            "params": {"command": ["sh", "-c", format!("sleep 0.3; touch {dir}/r{{frame}}")]},
            "frames": "1-6",
        }),
    );
    let comp = submit(
        &farm,
        json!({
            "title": "comp",
            "priority": 50,
            "params": {"command": ["sh", "-c", format!("test -f {dir}/r{{frame}} && touch {dir}/c{{frame}}")]},
            "frames": "1-6",
            "depends_on": [render],
            "depends_per_frame": true,
        }),
    );
    // A whole-job dependant waits for everything.
    let movie = submit(
        &farm,
        json!({
            "title": "movie",
            "params": {"command": ["sh", "-c", format!("test $(ls {dir} | grep -c c) -eq 6")]},
            "frames": "1",
            "depends_on": [comp],
        }),
    );
    let (_, why) = farm.get(&format!("/api/v1/jobs/{movie}/why"));
    assert!(
        why["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("waits for job {comp}")),
        "{why}"
    );
    for id in [render, comp, movie] {
        let job = farm.wait_job(id, LONG);
        assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    }
    // Frame 1 of the comp ran before the render had finished all its frames.
    let comp_tasks = farm.tasks(comp);
    let render_tasks = farm.tasks(render);
    let first_comp = comp_tasks[0]["started_at"].as_str().unwrap().to_string();
    let last_render = render_tasks[5]["finished_at"].as_str().unwrap().to_string();
    assert!(
        first_comp < last_render,
        "comp frame 1 at {first_comp}, render end {last_render}"
    );

    // A parent that fails fails its dependants with a reason naming it.
    let broken = submit(
        &farm,
        json!({"title": "broken", "params": {"command": ["false"]}, "frames": "1"}),
    );
    let after = submit(
        &farm,
        json!({"title": "after", "params": {"command": ["true"]}, "frames": "1-2", "depends_on": [broken]}),
    );
    let job = farm.wait_job(after, LONG);
    assert_eq!(job["state"], "failed", "{job}");
    let tasks = farm.tasks(after);
    assert_eq!(
        tasks[0]["last_error"],
        format!("depends on job {broken}, which failed")
    );
}

#[test]
fn a_failing_agent_is_blocklisted_and_a_silent_task_is_stalled() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    // Tasks fail on agent 1 only: its working directories are under agent-1. The others
    // take over a second, so the job's tasks never go to an agent ahead of a free slot
    // (which would let agent 1 run a task assigned before its first failure was known).
    let id = submit(
        &farm,
        json!({
            "title": "picky",
            "params": {"command": ["sh", "-c", "case \"$PWD\" in */agent-1/*) exit 7;; esac; sleep 1.1"]},
            "frames": "1-6",
            "retries": 3,
            "blocklist_after": 1,
        }),
    );
    let job = farm.wait_job(id, LONG);
    assert_eq!(job["state"], "done", "{job}");
    let blocklist = job["blocklist"].as_array().unwrap();
    assert!(blocklist.len() <= 1, "{job}");
    let (_, agents) = farm.get("/api/v1/agents/");
    let agent1 = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().ends_with("-1"))
        .unwrap()["id"]
        .clone();
    if let Some(entry) = blocklist.first() {
        assert_eq!(entry["agent"], agent1);
        assert_eq!(entry["failures"], 1);
    }
    let failures_on_1: usize = farm
        .tasks(id)
        .iter()
        .filter(|t| {
            t["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("code 7"))
        })
        .count();
    assert!(
        failures_on_1 <= 1,
        "agent 1 got no task after its first failure"
    );

    // A task that goes silent is killed by its stall timeout and counts as failed.
    let stalled = submit(
        &farm,
        json!({
            "title": "stall",
            "params": {"command": ["sh", "-c", "echo started; sleep 600"]},
            "frames": "1",
            "stall_timeout_secs": 1,
        }),
    );
    let job = farm.wait_job(stalled, Duration::from_secs(60));
    assert_eq!(job["state"], "failed", "{job}");
    let task = &farm.tasks(stalled)[0];
    assert!(
        task["last_error"].as_str().unwrap().contains("stall"),
        "{task}"
    );
}

#[test]
fn queues_agents_and_paused_jobs_survive_a_master_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    let (status, queue) = farm.post(
        "/api/v1/queues/",
        &json!({"name": "lighting", "weight": 3, "max_agents": 4}),
    );
    assert_eq!(status, 201, "{queue}");
    let (status, body) = farm.post("/api/v1/queues/", &json!({"name": "x", "parent": "nope"}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "parent: no queue /nope");
    let out = farm.cli(&["queue", "add", "lighting/keys", "--weight", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_, agents) = farm.get("/api/v1/agents/");
    let names: Vec<String> = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    let out = farm.cli(&["agent-ctl", "disable", &names[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = farm.cli(&["agent-ctl", "tags", &names[0], "linux,fast"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let paused = submit(
        &farm,
        json!({"title": "held", "queue": "lighting/keys", "params": {"command": ["true"]}, "frames": "1-3"}),
    );
    let (status, _) = action(&farm, paused, json!({"action": "pause"}));
    assert_eq!(status, 200);
    let parent = submit(
        &farm,
        json!({"title": "parent", "params": {"command": ["sleep", "600"]}, "frames": "1"}),
    );
    let child = submit(
        &farm,
        json!({"title": "child", "params": {"command": ["true"]}, "frames": "1-2", "depends_on": [parent]}),
    );
    let impossible = submit(
        &farm,
        json!({"title": "gpu", "params": {"command": ["true"]}, "frames": "1", "requirements": {"gpus": 8}}),
    );

    farm.restart();

    let (_, job) = farm.get(&format!("/api/v1/jobs/{paused}"));
    assert_eq!(job["state"], "paused", "{job}");
    assert_eq!(job["queue"], "/lighting/keys");
    let (_, job) = farm.get(&format!("/api/v1/jobs/{child}"));
    assert_eq!(job["state"], "blocked", "{job}");
    let (_, queues) = farm.get("/api/v1/queues/");
    let paths: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/", "/lighting", "/lighting/keys"]);
    let (_, agents) = farm.get("/api/v1/agents/");
    for agent in agents["items"].as_array().unwrap() {
        if agent["name"] == names[1].as_str() {
            assert_eq!(agent["enabled"], false, "{agent}");
        } else {
            assert_eq!(agent["tags"], json!(["linux", "fast"]), "{agent}");
        }
    }
    let (_, why) = farm.get(&format!("/api/v1/jobs/{impossible}/why"));
    assert_eq!(why["never"], true, "{why}");
    assert!(
        why["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("no agent has 8 GPUs (largest: 0)")),
        "{why}"
    );
    let out = farm.cli(&["job", &impossible.to_string(), "--why"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no agent has 8 GPUs"));

    // The child still runs once its parent is done, the paused job once resumed.
    let (status, _) = action(&farm, parent, json!({"action": "cancel"}));
    assert_eq!(status, 200);
    let job = farm.wait_job(child, LONG);
    assert_eq!(job["state"], "failed", "{job}");
    let (status, _) = action(&farm, paused, json!({"action": "resume"}));
    assert_eq!(status, 200);
    let job = farm.wait_job(paused, LONG);
    assert_eq!(job["state"], "done", "{job}");
}

#[test]
fn edits_while_nothing_ran_and_actions_on_many_jobs() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "2"]);
    // Nothing can run this until its requirements change.
    let id = submit(
        &farm,
        json!({
            "title": "edit me",
            "params": {"command": ["true"]},
            "frames": "1-3",
            "requirements": {"gpus": 8},
        }),
    );
    let (status, job) = farm.send(
        "PATCH",
        &format!("/api/v1/jobs/{id}"),
        Some(&json!({"frames": "1-3,2-5", "priority": 7, "notes": "client notes"})),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["frames"], "1-5");
    assert_eq!(job["priority"], 7);
    assert_eq!(job["notes"], "client notes");
    assert_eq!(farm.tasks(id).len(), 5);
    let out = farm.cli(&["edit", &id.to_string(), "--cpus", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = farm.wait_job(id, LONG);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["requirements"]["cpus"], 1);
    assert_eq!(done["task_counts"]["done"], 5);
    let (status, body) = farm.send(
        "PATCH",
        &format!("/api/v1/jobs/{id}"),
        Some(&json!({"priority": 1})),
    );
    assert_eq!(status, 409, "{body}");

    // One action on many jobs reports each job's outcome.
    let held: Vec<i64> = (0..2)
        .map(|i| {
            submit(
                &farm,
                json!({"title": format!("held {i}"), "params": {"command": ["true"]}, "frames": "1", "requirements": {"gpus": 8}}),
            )
        })
        .collect();
    let (status, outcomes) = farm.post(
        "/api/v1/jobs/actions",
        &json!({"action": "cancel", "ids": [held[0], held[1], 999_999]}),
    );
    assert_eq!(status, 200, "{outcomes}");
    assert_eq!(outcomes[0]["ok"], true);
    assert_eq!(outcomes[1]["ok"], true);
    assert_eq!(outcomes[2]["ok"], false);
    assert_eq!(outcomes[2]["error"], "job 999999 not found");
    for id in held {
        let job = farm.wait_job(id, LONG);
        assert_eq!(job["state"], "cancelled", "{job}");
    }
}

#[test]
fn gpu_tasks_see_only_the_devices_they_were_given() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "1"]);
    // A second agent that offers two GPUs (given on the command line, so no detection).
    let mut gpu_agent = std::process::Command::new(common::furrow_exe())
        .args([
            "agent",
            "--master",
            &farm.listen,
            "--name",
            "gpu-box",
            "--slots",
            "4",
        ])
        .args(["--gpus", "0,1", "--software", "blender 4.2.1"])
        .arg("--join-token-file")
        .arg(farm.data_dir.join("join.token"))
        .arg("--state-dir")
        .arg(root.path().join("gpu-agent"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the gpu agent online", LONG, || {
        let (_, agents) = farm.get("/api/v1/agents/");
        agents["items"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "gpu-box" && a["state"] == "online")
            .cloned()
    });
    let out = root.path().join("gpu");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        "echo \"$CUDA_VISIBLE_DEVICES $FURROW_GPUS\" > {}/{{frame}}; sleep 0.5",
        out.display()
    );
    let id = submit(
        &farm,
        json!({
            "title": "gpu",
            "params": {"command": ["sh", "-c", script]},
            "frames": "1-6",
            "requirements": {"gpus": 1, "software": {"blender": ">=4"}},
        }),
    );
    // Two GPUs: never more than two of these tasks at once, each on its own device.
    let mut most = 0;
    let job = wait_until("the gpu job to finish", LONG, || {
        let (_, job) = farm.get(&format!("/api/v1/jobs/{id}"));
        most = most.max(counts(&job, "running"));
        let (_, agents) = farm.get("/api/v1/agents/");
        let gpu_box = agents["items"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "gpu-box")?
            .clone();
        let free = gpu_box["free"]["gpus"].as_array()?.len();
        assert!(free <= 2);
        (job["state"] == "done").then_some(job)
    });
    assert_eq!(counts(&job, "done"), 6, "{job}");
    assert!(most <= 2, "{most} tasks ran at once on two GPUs");
    for frame in 1..=6 {
        let seen = std::fs::read_to_string(out.join(frame.to_string())).unwrap();
        let seen = seen.trim();
        assert!(seen == "0 0" || seen == "1 1", "frame {frame} saw {seen:?}");
    }
    // Tasks without GPUs see none, so they cannot take a device another task holds.
    let plain = submit(
        &farm,
        json!({
            "title": "plain",
            "params": {"command": ["sh", "-c", format!("echo \"[$CUDA_VISIBLE_DEVICES]\" > {}/plain", out.display())]},
            "frames": "1",
            "requirements": {"software": {"blender": ">=4"}},
        }),
    );
    farm.wait_job(plain, LONG);
    assert_eq!(
        std::fs::read_to_string(out.join("plain")).unwrap().trim(),
        "[]"
    );
    let _ = gpu_agent.kill();
    let _ = gpu_agent.wait();
}

#[test]
fn ctrl_c_on_submit_wait_leaves_the_job_running_and_says_how_to_cancel() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "1"]);
    let child = std::process::Command::new(common::furrow_exe())
        .args([
            "submit", "--title", "waited", "--frames", "1", "--wait", "--", "sleep", "600",
        ])
        .env("FURROW_SERVER", &farm.listen)
        .env("FURROW_TOKEN", &farm.token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_until("the waited job to run", LONG, || {
        let (_, jobs) = farm.get("/api/v1/jobs/");
        let job = jobs["items"]
            .as_array()?
            .iter()
            .find(|j| j["title"] == "waited")?
            .clone();
        (counts(&job, "running") == 1).then(|| job["id"].as_i64().unwrap())
    });
    // SAFETY: kill(2) of a process this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!("job {id} keeps running"))
            && stderr.contains(&format!("furrow cancel {id}")),
        "{stderr}"
    );
    let (_, job) = farm.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(job["state"], "running", "{job}");
}
