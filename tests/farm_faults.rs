//! Faults: an agent killed mid-task, a master restart, garbage on the agent port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Farm, wait_until};

#[test]
fn killing_an_agent_mid_task_still_finishes_the_job() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 2);
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({
            "title": "slow",
            "params": {"command": ["sh", "-c", "sleep 2; echo done {frame}"]},
            "frames": "1-6",
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();

    // Wait until agent 1 is running a task, then kill it without warning.
    let victim = wait_until("agent 1 to run a task", Duration::from_secs(60), || {
        let (_, agents) = farm.get("/api/v1/agents/");
        agents["items"]
            .as_array()?
            .iter()
            .find(|a| {
                let named = a["name"].as_str().is_some_and(|n| n.ends_with("-1"));
                let busy = a["running"].as_array().is_some_and(|r| !r.is_empty());
                named && busy
            })
            .map(|a| a["id"].as_str().unwrap_or_default().to_string())
    });
    farm.signal_agent(1, libc::SIGKILL);

    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    let tasks = farm.tasks(id);
    assert!(tasks.iter().all(|t| t["state"] == "done"));
    assert!(
        tasks.iter().any(|t| t["attempt"].as_u64().unwrap() >= 2),
        "the killed agent's task ran again: {tasks:?} (victim {victim})"
    );
}

#[test]
fn a_stopped_agent_gives_its_tasks_back_without_failing_them() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({
            "title": "drained",
            "params": {"command": ["sh", "-c", "sleep 3; echo done {frame}"]},
            "frames": "1",
            "retries": 0,
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    wait_until("a task to run", Duration::from_secs(60), || {
        let (_, job) = farm.get(&format!("/api/v1/jobs/{id}"));
        (job["task_counts"]["running"].as_u64()? > 0).then_some(())
    });

    // SIGTERM drains the agent running it: the task goes back to the queue and runs on
    // the other agent at once, never again on the one that is stopping.
    let tasks = farm.tasks(id);
    let running = tasks.iter().find(|t| t["state"] == "running").unwrap();
    let drained = running["agent"].as_str().unwrap().to_string();
    farm.signal_agent(farm.agent_number(&drained), libc::SIGTERM);

    let job = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    assert_eq!(job["task_counts"]["failed"], 0);
    let task = farm
        .tasks(id)
        .into_iter()
        .find(|t| t["id"] == running["id"])
        .unwrap();
    let (_, attempts) = farm.get(&format!("/api/v1/jobs/{id}/tasks/{}/attempts", task["id"]));
    let attempts = attempts.as_array().unwrap().clone();
    assert_eq!(
        attempts.len(),
        2,
        "given back once, run once more: {attempts:?}"
    );
    assert_eq!(attempts[0]["agent"], drained.as_str());
    assert_eq!(attempts[0]["outcome"], "requeued");
    assert_ne!(attempts[1]["agent"], drained.as_str(), "{attempts:?}");
    assert_eq!(attempts[1]["outcome"], "done");
}

#[test]
fn a_restarted_master_keeps_finished_jobs() {
    let root = tempfile::tempdir().unwrap();
    let mut farm = Farm::up(root.path(), 1);
    let id = farm.submit(&[
        "--title", "keep me", "--frames", "1-5", "--wait", "--", "echo", "f{frame}",
    ]);
    let before = farm.tasks(id);

    farm.restart();

    let (status, job) = farm.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(job["title"], "keep me");
    assert_eq!(job["state"], "done");
    assert_eq!(job["task_counts"]["done"], 5);
    let after = farm.tasks(id);
    assert_eq!(before, after, "tasks survive the restart unchanged");
    let (_, log) = farm.get_text(&format!("/api/v1/jobs/{id}/tasks/{}/logs", after[2]["id"]));
    assert!(log.contains("f3"), "{log}");

    // The restarted farm still runs new work.
    farm.submit(&[
        "--title", "after", "--frames", "1-3", "--wait", "--", "true",
    ]);
}

#[test]
fn garbage_and_oversized_frames_close_only_that_connection() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);

    let mut garbage = TcpStream::connect(&farm.listen).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: furrow\r\n\r\n")
        .unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = Vec::new();
    // The master closes the connection: read reaches end of stream (or a reset).
    let _ = garbage.read_to_end(&mut buf);

    let mut huge = TcpStream::connect(&farm.listen).unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    huge.write_all(&[0u8; 1024]).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = huge.read_to_end(&mut buf);

    farm.submit(&[
        "--title",
        "still serving",
        "--frames",
        "1-2",
        "--wait",
        "--",
        "true",
    ]);
    let (_, agents) = farm.get("/api/v1/agents/");
    assert_eq!(
        agents["items"][0]["state"], "online",
        "the agent's connection is untouched"
    );
    let master_log = std::fs::read_to_string(farm.data_dir.join("run/master.log")).unwrap();
    assert!(
        master_log.contains("closing connection") || master_log.contains("magic"),
        "{master_log}"
    );
}

#[test]
fn a_second_farm_on_a_data_directory_in_use_says_so_and_touches_nothing() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let addr_file = farm.data_dir.join("master.addr");
    let before = std::fs::read_to_string(&addr_file).unwrap();
    let mut second = std::process::Command::new(common::furrow_exe())
        .arg("up")
        .arg("--data-dir")
        .arg(&farm.data_dir)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until("the second farm to exit", Duration::from_secs(30), || {
        second.try_wait().unwrap()
    });
    assert!(!status.success());
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("is in use by another master") && stderr.contains("--data-dir"),
        "{stderr}"
    );
    // The first farm's files and service are untouched.
    assert_eq!(std::fs::read_to_string(&addr_file).unwrap(), before);
    assert_eq!(farm.get("/api/v1/health").0, 200);
}

#[test]
fn a_flood_of_idle_connections_from_one_host_leaves_room_for_the_others() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    // More idle connections than the master takes in their handshake at once, all from
    // another address (127.0.0.2, on loopback like the rest).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listen: std::net::SocketAddr = farm.listen.parse().unwrap();
    let held: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..600 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(stream) = socket.connect(listen).await {
                held.push(stream);
            }
        }
        held
    });
    assert!(held.len() >= 550, "{} connections", held.len());
    // The CLI (from 127.0.0.1) still gets in, and so does an agent restarted now.
    let out = farm.cli(&["jobs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    farm.submit(&[
        "--title",
        "during the flood",
        "--frames",
        "1",
        "--wait",
        "--",
        "true",
    ]);
    // The refusals are counted in a few lines, not logged one by one.
    let log = std::fs::read_to_string(farm.data_dir.join("run/master.log")).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("closing connections"))
        .count();
    assert!((1..=10).contains(&lines), "{lines} lines:\n{log}");
    assert!(
        log.contains("too many connections from this address"),
        "{log}"
    );
    drop(held);
}

#[test]
fn a_tool_cannot_pin_a_huge_frame_buffer() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&farm.listen).await.unwrap();
        let mut hello =
            furrow_protocol::Hello::new(furrow_protocol::Role::Client, uuid::Uuid::new_v4());
        hello.credentials = Some(farm.token.clone());
        furrow_protocol::handshake::connect(&mut stream, &hello)
            .await
            .unwrap();
        // A frame announced at 16 MiB minus one byte, then silence: the master closes the
        // connection at once instead of buffering it.
        stream
            .write_all(&(16u32 * 1024 * 1024 - 1).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&[0u8; 1024]).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the connection stays open: {read:?}"
        );
    });
    let out = farm.cli(&["jobs"]);
    assert!(out.status.success());
    let log = std::fs::read_to_string(farm.data_dir.join("run/master.log")).unwrap();
    assert!(log.contains("frame"), "{log}");
}

#[test]
fn an_agent_busy_with_a_stale_attempt_is_not_offered_work_in_a_loop() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 2, &["--slots", "1"]);
    // A task that ignores SIGTERM: once taken from its agent, it holds that agent's slot
    // until the kill grace ends.
    let (_, stubborn) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({"title": "stubborn", "frames": "1", "priority": 10,
                            "params": {"command": ["sh", "-c", "trap '' TERM; sleep 60"]}}),
    );
    let stubborn = stubborn["id"].as_i64().unwrap();
    let first = wait_until("the stubborn task running", Duration::from_secs(60), || {
        let task = farm.tasks(stubborn).into_iter().next()?;
        (task["state"] == "running").then(|| task["agent"].as_str().unwrap().to_string())
    });
    let frozen = farm.agent_number(&first);
    // Frozen past the heartbeat timeout: lost, its task runs on the other agent.
    farm.signal_agent(frozen, libc::SIGSTOP);
    wait_until(
        "the task on the other agent",
        Duration::from_secs(60),
        || {
            let task = farm.tasks(stubborn).into_iter().next()?;
            (task["attempt"] == 2 && task["state"] == "running").then_some(())
        },
    );
    let (_, quick) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({"title": "quick", "frames": "1-20",
                            "params": {"command": ["true"]}}),
    );
    let quick = quick["id"].as_i64().unwrap();
    // Resumed, it registers listing the stale attempt, which the master cancels; the
    // process ignores SIGTERM for the kill grace, so the agent refuses work meanwhile.
    farm.signal_agent(frozen, libc::SIGCONT);
    let job = farm.wait_job(quick, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}");
    let mut given_back = 0;
    for task in farm.tasks(quick) {
        let (_, attempts) = farm.get(&format!(
            "/api/v1/jobs/{quick}/tasks/{}/attempts",
            task["id"]
        ));
        given_back += attempts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "requeued")
            .count();
    }
    assert!(given_back <= 3, "{given_back} attempts bounced");
    farm.send("DELETE", &format!("/api/v1/jobs/{stubborn}"), None);
}

/// The master's resident memory, in bytes.
fn master_rss(farm: &Farm) -> u64 {
    let pid = farm.master_pid().expect("the master runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn log_downloads_a_client_never_reads_do_not_pin_the_log_in_memory() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    // A 16 MiB log.
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({
            "title": "loud",
            "frames": "1",
            "params": {"command": ["sh", "-c", "yes 'a line of a long log, over and over' | head -c 16777216"]},
        }),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    assert_eq!(farm.wait_job(id, Duration::from_secs(120))["state"], "done");
    let task = farm.tasks(id)[0]["id"].as_i64().unwrap();
    let before = master_rss(&farm);

    // Thirty downloads of the whole log whose clients never read a byte.
    let request = format!(
        "GET /api/v1/jobs/{id}/tasks/{task}/logs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        farm.http, farm.token
    );
    let stalled: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut stream = TcpStream::connect(&farm.http).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Each response is under way: the master has answered the others since.
    let (status, _) = farm.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200);
    // The agent goes on working meanwhile: its heartbeats and log lines do not wait on
    // the downloads.
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({"title": "meanwhile", "frames": "1-4", "params": {"command": ["echo", "{frame}"]}}),
    );
    assert_eq!(status, 201, "{job}");
    let meanwhile = job["id"].as_i64().unwrap();
    assert_eq!(
        farm.wait_job(meanwhile, Duration::from_secs(60))["state"],
        "done"
    );
    let (_, agents) = farm.get("/api/v1/agents/");
    assert_eq!(agents["items"][0]["state"], "online", "{agents}");
    let during = master_rss(&farm);
    assert!(
        during < before + 64 * 1024 * 1024,
        "thirty stalled downloads of a 16 MiB log grew the master from {} to {} MiB",
        before >> 20,
        during >> 20
    );
    // A client that does read gets the whole log.
    let mut reader = TcpStream::connect(&farm.http).unwrap();
    reader
        .write_all(
            request
                .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut response = Vec::new();
    reader.read_to_end(&mut response).unwrap();
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers")
        + 4;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &response[..body_at]
    );
    // 16 MiB at most, cut after the last whole line, as the next offset says.
    let headers = String::from_utf8_lossy(&response[..body_at]).to_lowercase();
    let next: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-furrow-next-offset: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a next offset");
    let body = &response[body_at..];
    assert_eq!(body.len(), next, "{headers}");
    assert!(body.len() > 16 * 1024 * 1024 - 200, "{}", body.len());
    assert_eq!(body.last(), Some(&b'\n'));
    drop(stalled);
}
