//! The dashboard's controls, clicked in a real headless Chromium: pause and resume a job,
//! change its priority, read why it waits, disable an agent and see the queues' shares.

mod common;

use std::time::Duration;

use common::chromium::Browser;
use common::{Farm, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn jobs_agents_and_queues_are_controlled_from_the_page() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "1"]);
    let (status, _) = farm.post("/api/v1/queues/", &json!({"name": "lighting", "weight": 3}));
    assert_eq!(status, 201);
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &json!({
            "title": "clicked-job",
            "queue": "lighting",
            "params": {"command": ["sleep", "600"]},
            "frames": "1-4",
            "requirements": {"tags": ["!laptop"]},
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    farm.wait_job_until(id, "a task running", WAIT, |j| {
        j["task_counts"]["running"] == 1
    });

    let mut browser = Browser::open(
        &format!("{}#job={id}", farm.login_url()),
        &root.path().join("chromium"),
    );
    wait_until("the job page with its details", WAIT, || {
        let html = browser.html();
        (html.contains("clicked-job") && html.contains("tag !laptop")).then_some(())
    });
    // The queue tree shows the lighting queue running the one task: all of the share.
    wait_until("the queue's share", WAIT, || {
        let share = browser.eval(
            "document.querySelector('tr.queue[data-path=\"/lighting\"] .share-cell')?.textContent ?? ''",
        );
        (share.as_str() == Some(" 100%")).then_some(())
    });
    // Why: the one matching agent is busy.
    wait_until("why the job waits", WAIT, || {
        let why = browser.eval("document.getElementById('why').textContent");
        why.as_str()
            .is_some_and(|w| w.contains("all 1 matching agents are busy"))
            .then_some(())
    });

    // Pause from the job's buttons.
    browser.eval("document.querySelector('#job-actions button[data-act=\"pause\"]').click()");
    farm.wait_job_until(id, "paused through the page", WAIT, |j| j["paused"] == true);
    wait_until("the page to say paused", WAIT, || {
        let why = browser.eval("document.getElementById('why').textContent");
        why.as_str()
            .is_some_and(|w| w.contains("paused"))
            .then_some(())
    });
    // A second pause is refused and the page shows the reason.
    browser.eval("document.querySelector('#job-actions button[data-act=\"pause\"]').click()");
    wait_until("the refusal on the page", WAIT, || {
        let error = browser.eval("document.getElementById('action-error').textContent");
        error
            .as_str()
            .is_some_and(|e| e.contains("already paused"))
            .then_some(())
    });
    // Resume from the job list's quick button.
    wait_until("the resume button", WAIT, || {
        let clicked = browser.eval(&format!(
            "(() => {{ const b = document.querySelector('tr.job[data-job-id=\"{id}\"] button[data-job-action=\"resume\"]'); if (b) b.click(); return !!b; }})()"
        ));
        (clicked == json!(true)).then_some(())
    });
    farm.wait_job_until(id, "resumed through the page", WAIT, |j| {
        j["paused"] == false
    });

    // Priority.
    browser.eval(
        "document.getElementById('edit-priority').value = '42'; \
         document.querySelector('#job-actions button[data-act=\"priority\"]').click()",
    );
    farm.wait_job_until(id, "priority set through the page", WAIT, |j| {
        j["priority"] == 42
    });

    // Disable the agent: sticky, shown on the page.
    let (_, agents) = farm.get("/api/v1/agents/");
    let agent = agents["items"][0]["id"].as_str().unwrap().to_string();
    browser.eval(&format!(
        "document.querySelector('tr.agent[data-agent-id=\"{agent}\"] button').click()"
    ));
    wait_until("the agent disabled", WAIT, || {
        let (_, agents) = farm.get("/api/v1/agents/");
        (agents["items"][0]["enabled"] == false).then_some(())
    });
    wait_until("the page to show it disabled", WAIT, || {
        let row = browser.eval(&format!(
            "document.querySelector('tr.agent[data-agent-id=\"{agent}\"]')?.dataset.enabled ?? ''"
        ));
        (row.as_str() == Some("false")).then_some(())
    });

    // Cancel: the job ends cancelled.
    browser.eval("document.querySelector('#job-actions button[data-act=\"cancel\"]').click()");
    let job = farm.wait_job(id, WAIT);
    assert_eq!(job["state"], "cancelled", "{job}");
}

/// Registers an agent `name` with the farm over the protocol, then goes away for good.
fn ghost_agent(farm: &Farm, name: &str) -> uuid::Uuid {
    use furrow_protocol::{
        AgentMessage, FrameCodec, Hello, MasterMessage, Registration, Role, handshake,
    };
    use futures::{SinkExt, StreamExt};
    let id = uuid::Uuid::new_v4();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(&farm.listen).await.unwrap();
        let mut hello = Hello::new(Role::Agent, id);
        hello.credentials = Some(farm.join_token());
        handshake::connect(&mut stream, &hello).await.unwrap();
        let mut framed = tokio_util::codec::Framed::new(
            stream,
            FrameCodec::<AgentMessage, MasterMessage>::new(1 << 20),
        );
        framed
            .send(AgentMessage::Register(Registration {
                agent_id: id,
                name: name.into(),
                hostname: name.into(),
                os: "Linux 6.1".into(),
                cpus: 1,
                ram_mb: 512,
                gpus: Vec::new(),
                tags: Vec::new(),
                software: Default::default(),
                slots: 1,
                version: "test".into(),
                running: Vec::new(),
            }))
            .await
            .unwrap();
        loop {
            match framed.next().await {
                Some(Ok(MasterMessage::Registered(_))) => break,
                // The credential an agent gets when it joins.
                Some(Ok(MasterMessage::Credential(_))) => {}
                other => panic!("expected Registered, got {other:?}"),
            }
        }
    });
    id
}

#[test]
fn a_lost_agent_is_removed_from_the_page_and_a_connected_one_is_not() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let ghost = ghost_agent(&farm, "gone-for-good");
    // The master notices the closed connection on its own time.
    wait_until("the ghost offline", Duration::from_secs(30), || {
        let (_, agents) = farm.get("/api/v1/agents/");
        agents["items"]
            .as_array()?
            .iter()
            .any(|a| a["id"] == ghost.to_string().as_str() && a["state"] == "offline")
            .then_some(())
    });
    // Gone, but not lost yet (its tasks would be waited for): removal is refused.
    let (status, answer) = farm.send("DELETE", &format!("/api/v1/agents/{ghost}"), None);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("not lost yet"),
        "{answer}"
    );
    // A connected agent cannot be removed either, from the CLI.
    let (_, agents) = farm.get("/api/v1/agents/");
    let local = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] != ghost.to_string().as_str())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = farm.cli(&["agent-ctl", "remove", &local]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is connected"));

    // The page's Remove button forgets it once it is lost (the heartbeat timeout).
    let mut browser = Browser::open(&farm.login_url(), &root.path().join("chromium"));
    let row = format!("tr.agent[data-agent-id=\"{ghost}\"]");
    wait_until(
        "the ghost's row with its Remove button",
        Duration::from_secs(30),
        || {
            let shown = browser.eval(&format!(
                "!!document.querySelector('{row} button[data-agent-action=\"remove\"]')"
            ));
            (shown.as_bool() == Some(true)).then_some(())
        },
    );
    wait_until(
        "the ghost removed through the page",
        Duration::from_secs(60),
        || {
            let gone = browser.eval(&format!(
            "(() => {{ const row = document.querySelector('{row}'); if (!row) return true; row.querySelector('button[data-agent-action=\"remove\"]')?.click(); return false; }})()"
        ));
            if gone.as_bool() == Some(true) {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(400));
            None
        },
    );
    let (_, agents) = farm.get("/api/v1/agents/");
    assert_eq!(agents["total"], 1, "{agents}");
    assert!(
        agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != ghost.to_string().as_str())
    );
    // Gone for good: it stays gone after a restart of the farm.
    let mut farm = farm;
    farm.restart();
    let (_, agents) = farm.get("/api/v1/agents/");
    assert!(
        agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["id"] != ghost.to_string().as_str()),
        "{agents}"
    );
}
