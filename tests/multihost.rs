//! Faults on a multi-host test bed: a master and three agents, each agent in a network
//! namespace of its own (see `common::netns`). Every scenario ends with the state of
//! every task checked: done, with exactly one attempt that counted, and nothing run after
//! it.

mod common;

use std::time::Duration;

use common::netns::Testbed;
use common::wait_until;

const LONG: Duration = Duration::from_secs(180);

fn agent_state(bed: &Testbed, host: usize) -> Option<String> {
    let (_, agents) = bed.try_get("/api/v1/agents/")?;
    agents["items"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == format!("host-{host}"))?["state"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_host_cut_off_mid_task_then_healed() {
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::start(root.path(), 3);
    let id = bed.submit_noting("cut", "1-6", 3.0);
    let host = wait_until("a task to run", LONG, || bed.host_running(id));

    bed.cut(host, true);
    // The master gives up on it after the heartbeat timeout; its task runs elsewhere.
    wait_until("the cut host to be lost", LONG, || {
        (agent_state(&bed, host)? == "offline").then_some(())
    });
    bed.cut(host, false);
    wait_until("the healed host back online", LONG, || {
        (agent_state(&bed, host)? == "online").then_some(())
    });
    bed.assert_done_once(id, LONG);
}

#[test]
fn a_host_frozen_past_the_timeout_then_thawed() {
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::start(root.path(), 3);
    let id = bed.submit_noting("frozen", "1-6", 3.0);
    let host = wait_until("a task to run", LONG, || bed.host_running(id));

    bed.freeze_agent(host, true);
    wait_until("the frozen host to be lost", LONG, || {
        (agent_state(&bed, host)? == "offline").then_some(())
    });
    bed.freeze_agent(host, false);
    wait_until("the thawed host back online", LONG, || {
        (agent_state(&bed, host)? == "online").then_some(())
    });
    bed.assert_done_once(id, LONG);
}

#[test]
fn a_host_whose_agent_is_killed_then_restarted() {
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::start(root.path(), 3);
    let id = bed.submit_noting("killed", "1-6", 3.0);
    let host = wait_until("a task to run", LONG, || bed.host_running(id));
    let (_, tasks) = bed
        .try_get(&format!("/api/v1/jobs/{id}/tasks/?limit=100"))
        .unwrap();
    let victim = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "running")
        .map(|t| (t["frame"].as_i64().unwrap(), t["attempt"].as_u64().unwrap()))
        .unwrap();

    bed.kill_agent(host);
    bed.start_agent(host);
    bed.assert_done_once(id, LONG);
    // The killed attempt's processes died with its agent: it never got to its end, and
    // the frame's note shows it started again after.
    let notes = bed.notes("killed", victim.0);
    let (started, ended) = (format!("start {}", victim.1), format!("end {}", victim.1));
    if notes.contains(&started) {
        assert!(
            !notes.contains(&ended),
            "the killed attempt ran on: {notes:?}"
        );
    }
}

#[test]
fn the_master_killed_and_restarted_while_tasks_run() {
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::start(root.path(), 3);
    let id = bed.submit_noting("restart", "1-6", 2.0);
    wait_until("tasks to run", LONG, || bed.host_running(id));

    bed.kill_master();
    bed.start_master();
    bed.wait_online(3);
    bed.assert_done_once(id, LONG);
}

#[test]
fn the_master_killed_during_a_submission_burst() {
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::start(root.path(), 3);
    let mut acknowledged = Vec::new();
    let body = serde_json::json!({
        "title": "burst",
        "frames": "1-2",
        "params": {"command": ["true"]},
    });
    std::thread::scope(|scope| {
        let bed_ref = &bed;
        let submitter = scope.spawn(move || {
            let mut acked = Vec::new();
            // Until the master stops answering: each 201 is an acknowledged job.
            for _ in 0..2000 {
                match bed_ref.try_post("/api/v1/jobs/", &body) {
                    Some((201, job)) => acked.push(job["id"].as_i64().unwrap()),
                    Some((status, job)) => panic!("{status}: {job}"),
                    None => break,
                }
            }
            acked
        });
        // Let the burst get going, then kill the master under it.
        wait_until("some submissions", LONG, || {
            let (_, jobs) = bed_ref.try_get("/api/v1/jobs/?limit=1")?;
            (jobs["total"].as_u64()? >= 20).then_some(())
        });
        let pid = bed_ref.master_pid().expect("the master runs");
        // SAFETY: kill(2) on a child of this process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        acknowledged = submitter.join().unwrap();
    });
    bed.kill_master();
    bed.start_master();
    bed.wait_online(3);
    // At least twenty jobs were committed before the kill; the answer of the last one
    // or two may have been lost with the master (so they were not acknowledged).
    assert!(acknowledged.len() >= 15, "{}", acknowledged.len());
    for id in acknowledged {
        bed.assert_done_once(id, LONG);
    }
}

#[test]
fn a_host_whose_spool_disk_is_full_keeps_its_results_while_the_master_is_away() {
    let root = tempfile::tempdir().unwrap();
    let mut bed = Testbed::start_with(root.path(), 1, true);
    bed.fill_small_disk();
    let id = bed.submit_noting("spool", "1-3", 2.0);
    wait_until("a task to run", LONG, || bed.host_running(id));

    // The master goes away while the task runs: its result has nowhere to go, and the
    // spool's disk is full, so the agent keeps it in memory until the master is back.
    bed.kill_master();
    wait_until("the running task to end", LONG, || {
        let notes = bed.notes("spool", 1);
        notes.iter().any(|n| n.starts_with("end")).then_some(())
    });
    bed.start_master();
    bed.wait_online(1);
    bed.assert_done_once(id, LONG);
    let log = std::fs::read_to_string(root.path().join("host-0.log")).unwrap();
    assert!(
        log.contains("cannot write result to disk; it is kept in memory only"),
        "{log}"
    );
}

#[test]
fn the_masters_data_disk_fills_up_and_space_comes_back() {
    let root = tempfile::tempdir().unwrap();
    let bed = Testbed::start_full(root.path(), 3, false, true);
    let early = bed.submit_noting("early", "1-3", 0.5);
    bed.assert_done_once(early, LONG);

    // A task's log fills the master's disk; what is left is filled too.
    let body = serde_json::json!({
        "title": "loud",
        "frames": "1",
        "params": {"command": ["sh", "-c", "yes 'a line that fills the disk of the master' | head -c 40000000"]},
    });
    let (status, loud) = bed.try_post("/api/v1/jobs/", &body).unwrap();
    assert_eq!(status, 201, "{loud}");
    let loud = loud["id"].as_i64().unwrap();
    // Its result may wait for the disk; its processes end all the same.
    wait_until("the loud task's processes to end", LONG, || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "fills the disk of the master"])
            .output()
            .ok()?;
        (!out.status.success()).then_some(())
    });
    Testbed::fill(&bed.data_dir);

    // New work is refused until the database can write; the master says why.
    let mut acknowledged = Vec::new();
    wait_until("a submission to be refused", LONG, || {
        match bed.try_post(
            "/api/v1/jobs/",
            &serde_json::json!({
                "title": "more", "frames": "1", "params": {"command": ["true"]},
            }),
        ) {
            Some((201, job)) => {
                acknowledged.push(job["id"].as_i64().unwrap());
                None
            }
            Some((503, _)) => Some(()),
            other => panic!("{other:?}"),
        }
    });
    let (status, health) = bed.try_get("/api/v1/health").unwrap();
    assert_eq!(status, 503, "{health}");

    // Space comes back: everything acknowledged finishes, once.
    bed.resize_master_disk("256m");
    wait_until("health to recover", LONG, || {
        let (status, _) = bed.try_get("/api/v1/health")?;
        (status == 200).then_some(())
    });
    bed.assert_done_once(loud, LONG);
    for id in acknowledged {
        bed.assert_done_once(id, LONG);
    }
}
