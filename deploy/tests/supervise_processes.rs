//! Supervised Python apps and shell processes: readiness, restarts, giving up, stopping,
//! sockets, logs and ports.

mod webserver_support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use furrow_deploy::supervise::{
    Endpoint, ExitReason, HealthCheck, HealthError, InstanceState, Listen, LogLine, LogSink,
    LogStream, PortPool, ProcessSpec, RestartPolicy, Supervisor, SupervisorHandle,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use webserver_support::{get, shared_tempdir, wait_until_async, write_app};

/// A pool of 20 ports of this test process's own (nextest runs each test in its own
/// process), below the kernel's ephemeral range so outgoing connections do not take them.
fn pool() -> Arc<PortPool> {
    Arc::new(PortPool::new(webserver_support::pool_range(20)).unwrap())
}

fn quiet() -> Arc<dyn LogSink> {
    Arc::new(|_: &LogLine<'_>| {})
}

fn python_spec(dir: &Path, instances: u32) -> ProcessSpec {
    let script = write_app(dir);
    let mut spec = ProcessSpec::new(
        "shop",
        "r1",
        "web",
        vec![
            "python3".into(),
            script.display().to_string(),
            "tcp".into(),
            "{port}".into(),
            "inst-{instance}".into(),
        ],
    );
    spec.instances = instances;
    spec.health = Some(HealthCheck::Http("/health".into()));
    spec.health_policy.interval = Duration::from_millis(200);
    spec.health_policy.ready_timeout = Duration::from_secs(20);
    spec.stop_grace = Duration::from_secs(5);
    spec
}

fn group_alive(pgid: u32) -> bool {
    killpg(Pid::from_raw(pgid as i32), None).is_ok()
}

fn pid_of(handle: &SupervisorHandle, instance: usize) -> u32 {
    handle.status()[instance].state.pid().expect("a live pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_become_healthy_and_answer() {
    let dir = shared_tempdir();
    let ports = pool();
    let handle = Supervisor::start(
        python_spec(dir.path(), 2),
        &ports,
        &dir.path().join("run"),
        quiet(),
    )
    .unwrap();
    handle.wait_healthy(Duration::from_secs(30)).await.unwrap();
    let endpoints = handle.endpoints();
    assert_eq!(endpoints.len(), 2);
    for (index, endpoint) in endpoints.iter().enumerate() {
        let Endpoint::Port(port) = endpoint else {
            panic!("expected a port, got {endpoint:?}")
        };
        assert!(ports.range().contains(port));
        let response = get(([127, 0, 0, 1], *port).into(), "/shop/x").unwrap();
        assert!(
            response.body.contains(&format!("name=inst-{index}\n")),
            "{response:?}"
        );
    }
    assert_eq!(ports.allocated().len(), 2);
    let pid_files = std::fs::read_dir(dir.path().join("run/pids"))
        .unwrap()
        .count();
    assert_eq!(pid_files, 2);
    let json = serde_json::to_value(handle.status()).unwrap();
    assert_eq!(json[0]["state"]["state"], "running", "{json}");
    assert_eq!(json[1]["endpoint"]["kind"], "port", "{json}");

    let stopped = handle.stop().await;
    assert!(
        stopped.iter().all(|s| s.state == InstanceState::Stopped),
        "{stopped:?}"
    );
    assert!(ports.allocated().is_empty(), "ports released");
    let pid_files = std::fs::read_dir(dir.path().join("run/pids"))
        .unwrap()
        .count();
    assert_eq!(pid_files, 0, "pid files removed");
    // Ports freed by the stop and taken by someone else (here: every port of the pool)
    // stay theirs when the handle drops.
    let mut taken = Vec::new();
    while let Ok(port) = ports.allocate() {
        taken.push(port);
    }
    assert!(taken.len() >= 2);
    drop(handle);
    taken.sort();
    assert_eq!(ports.allocated(), taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_restarted() {
    let dir = shared_tempdir();
    let mut spec = python_spec(dir.path(), 2);
    spec.restart.initial_backoff = Duration::from_millis(50);
    let handle = Supervisor::start(spec, &pool(), &dir.path().join("run"), quiet()).unwrap();
    handle.wait_healthy(Duration::from_secs(30)).await.unwrap();
    let old_pid = pid_of(&handle, 0);
    let other_pid = pid_of(&handle, 1);
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
    wait_until_async(Duration::from_secs(30), "instance 0 to run again", || {
        let status = handle.status();
        async move {
            matches!(status[0].state, InstanceState::Running { pid, .. } if pid != old_pid)
        }
    })
    .await;
    let status = handle.status();
    assert_eq!(status[0].restarts, 1);
    assert_eq!(
        status[0].last_exit,
        Some(ExitReason::Signaled { signal: 9 })
    );
    assert_eq!(
        pid_of(&handle, 1),
        other_pid,
        "the other instance was left alone"
    );
    let Endpoint::Port(port) = status[0].endpoint else {
        panic!("port")
    };
    let response = get(([127, 0, 0, 1], port).into(), "/again").unwrap();
    assert!(
        response.body.contains("name=inst-0\n"),
        "the restart kept its port: {response:?}"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_process_gives_up_after_backoff() {
    let dir = shared_tempdir();
    let mut spec = ProcessSpec::new(
        "crashy",
        "r1",
        "worker",
        vec!["sh".into(), "-c".into(), "exit 3".into()],
    );
    spec.listen = Listen::None;
    spec.restart = RestartPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(150),
        give_up_after: 4,
        window: Duration::from_secs(60),
    };
    let started = Instant::now();
    let handle = Supervisor::start(spec, &pool(), &dir.path().join("run"), quiet()).unwrap();
    let mut changes = handle.subscribe();
    let mut backoffs = Vec::new();
    let final_state = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let state = changes.borrow_and_update()[0].state.clone();
            if let InstanceState::Backoff { crashes, .. } = state
                && backoffs.last() != Some(&crashes)
            {
                backoffs.push(crashes);
            }
            if matches!(state, InstanceState::GaveUp { .. }) {
                return state;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("gave up in time");
    // Waits of 100, 150 (capped), 150 ms between the four runs.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backoffs, vec![1, 2, 3]);
    assert_eq!(
        final_state,
        InstanceState::GaveUp {
            crashes: 4,
            last_exit: ExitReason::Exited { code: 3 }
        }
    );
    let err = handle
        .wait_healthy(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HealthError::Hopeless { instance: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("gave up after 4 crashes"), "{err}");
    // It stays given up: no restart happens by itself.
    let restarts = handle.status()[0].restarts;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handle.status()[0].restarts, restarts);
    // Until asked.
    handle.restart(Some(0));
    wait_until_async(
        Duration::from_secs(10),
        "a restart after the give-up",
        || {
            let restarts_now = handle.status()[0].restarts;
            async move { restarts_now > restarts }
        },
    )
    .await;
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_process_ignoring_sigterm_after_the_grace_period() {
    let dir = shared_tempdir();
    let mut spec = ProcessSpec::new(
        "stubborn",
        "r1",
        "worker",
        // The shell and its child both ignore SIGTERM (an ignored signal stays ignored
        // across exec).
        vec![
            "sh".into(),
            "-c".into(),
            "trap '' TERM; sleep 1000 & wait; wait".into(),
        ],
    );
    spec.listen = Listen::None;
    spec.stop_grace = Duration::from_millis(500);
    let handle = Supervisor::start(spec, &pool(), &dir.path().join("run"), quiet()).unwrap();
    handle.wait_healthy(Duration::from_secs(10)).await.unwrap();
    let pgid = pid_of(&handle, 0);
    wait_until_async(Duration::from_secs(10), "the sleep child", || async move {
        count_group(pgid) >= 2
    })
    .await;
    let started = Instant::now();
    let status = handle.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status[0].state, InstanceState::Stopped);
    wait_until_async(
        Duration::from_secs(5),
        "the group to be gone",
        || async move { !group_alive(pgid) },
    )
    .await;
}

/// Processes in group `pgid`, from /proc.
fn count_group(pgid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the command (in parentheses): state ppid pgrp ...
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
                == Some(pgid)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_the_groups() {
    let dir = shared_tempdir();
    let mut spec = ProcessSpec::new(
        "dropped",
        "r1",
        "worker",
        vec!["sleep".into(), "1000".into()],
    );
    spec.listen = Listen::None;
    let handle = Supervisor::start(spec, &pool(), &dir.path().join("run"), quiet()).unwrap();
    handle.wait_healthy(Duration::from_secs(10)).await.unwrap();
    let pgid = pid_of(&handle, 0);
    drop(handle);
    wait_until_async(
        Duration::from_secs(5),
        "the group to be gone",
        || async move { !group_alive(pgid) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_can_listen_on_a_unix_socket() {
    let dir = shared_tempdir();
    let script = write_app(dir.path());
    let mut spec = ProcessSpec::new(
        "sockets",
        "r1",
        "web",
        vec![
            "python3".into(),
            script.display().to_string(),
            "unix".into(),
            "{socket}".into(),
            "sock-{instance}".into(),
        ],
    );
    spec.listen = Listen::Socket;
    spec.health = Some(HealthCheck::Http("/health".into()));
    let run = dir.path().join("run");
    let handle = Supervisor::start(spec, &pool(), &run, quiet()).unwrap();
    handle.wait_healthy(Duration::from_secs(30)).await.unwrap();
    let socket = run.join("sockets").join("r1").join("web-0.sock");
    assert_eq!(handle.endpoints(), vec![Endpoint::Socket(socket.clone())]);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /via/socket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("path=/via/socket\n") && body.contains("name=sock-0\n"),
        "{body}"
    );
    handle.stop().await;
    assert!(!socket.exists(), "the socket is removed after the stop");
}

/// A delivered line: app, process, instance, stream, text.
type Collected = (String, String, u32, LogStream, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lines_arrive_with_their_instance() {
    let dir = shared_tempdir();
    let lines: Arc<Mutex<Vec<Collected>>> = Arc::default();
    let collected = Arc::clone(&lines);
    let sink: Arc<dyn LogSink> = Arc::new(move |line: &LogLine<'_>| {
        collected.lock().unwrap().push((
            line.app.to_owned(),
            line.process.to_owned(),
            line.instance,
            line.stream,
            line.text.to_owned(),
        ));
    });
    let handle = Supervisor::start(
        python_spec(dir.path(), 2),
        &pool(),
        &dir.path().join("run"),
        sink,
    )
    .unwrap();
    handle.wait_healthy(Duration::from_secs(30)).await.unwrap();
    let has = |instance: u32, stream: LogStream, text: &str| {
        lines.lock().unwrap().iter().any(|l| {
            l.0 == "shop" && l.1 == "web" && l.2 == instance && l.3 == stream && l.4.contains(text)
        })
    };
    wait_until_async(Duration::from_secs(10), "both start lines", || {
        let both = has(0, LogStream::Stdout, "starting inst-0")
            && has(1, LogStream::Stdout, "starting inst-1");
        async move { both }
    })
    .await;
    // The health checks' requests are logged by the app on stderr.
    wait_until_async(Duration::from_secs(10), "a stderr line", || {
        let seen = has(1, LogStream::Stderr, "request");
        async move { seen }
    })
    .await;
    assert!(
        !has(0, LogStream::Stdout, "starting inst-1"),
        "no line is attributed to the wrong instance"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_command_marks_the_instance_unhealthy_until_it_passes() {
    let dir = shared_tempdir();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let mut spec = ProcessSpec::new(
        "checked",
        "r1",
        "worker",
        vec!["sleep".into(), "1000".into()],
    );
    spec.listen = Listen::None;
    spec.health = Some(HealthCheck::Command(vec![
        "test".into(),
        "-e".into(),
        flag.display().to_string(),
    ]));
    spec.health_policy.interval = Duration::from_millis(50);
    spec.health_policy.failures_before_unhealthy = 2;
    let handle = Supervisor::start(spec, &pool(), &dir.path().join("run"), quiet()).unwrap();
    handle.wait_healthy(Duration::from_secs(10)).await.unwrap();
    let pid = pid_of(&handle, 0);
    std::fs::remove_file(&flag).unwrap();
    wait_until_async(
        Duration::from_secs(10),
        "the instance to be unhealthy",
        || {
            let state = handle.status()[0].state.clone();
            async move { matches!(state, InstanceState::Unhealthy { .. }) }
        },
    )
    .await;
    let err = handle
        .wait_healthy(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, HealthError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("unhealthy"), "{err}");
    std::fs::write(&flag, "").unwrap();
    handle.wait_healthy(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        pid_of(&handle, 0),
        pid,
        "an unhealthy instance is not restarted"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_releases_of_an_app_run_side_by_side() {
    let dir = shared_tempdir();
    let script = write_app(dir.path());
    let run = dir.path().join("run");
    let spec_for = |release: &str| {
        let mut spec = ProcessSpec::new(
            "shop",
            release,
            "web",
            vec![
                "python3".into(),
                script.display().to_string(),
                "unix".into(),
                "{socket}".into(),
                "{release}".into(),
            ],
        );
        spec.listen = Listen::Socket;
        spec
    };
    let ports = pool();
    let old = Supervisor::start(spec_for("r1"), &ports, &run, quiet()).unwrap();
    old.wait_healthy(Duration::from_secs(30)).await.unwrap();
    let old_pid = pid_of(&old, 0);
    // The next release starts while the old one serves (a release switch).
    let new = Supervisor::start(spec_for("r2"), &ports, &run, quiet()).unwrap();
    new.wait_healthy(Duration::from_secs(30)).await.unwrap();
    assert_ne!(old.endpoints(), new.endpoints());
    assert_eq!(pid_of(&old, 0), old_pid, "starting r2 left r1 alone");
    new.stop().await;
    let Endpoint::Socket(socket) = &old.endpoints()[0] else {
        panic!("socket")
    };
    assert!(socket.exists(), "stopping r2 left r1's socket");
    assert!(old.status()[0].state.is_running());
    old.stop().await;
}

#[test]
fn the_port_pool_skips_ports_bound_by_others() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let start = taken.local_addr().unwrap().port().min(u16::MAX - 10);
    let pool = PortPool::new(start..=start + 10).unwrap();
    let mut handed = Vec::new();
    while let Ok(port) = pool.allocate() {
        handed.push(port);
    }
    assert!(
        !handed.contains(&start),
        "the bound port {start} was handed out: {handed:?}"
    );
    assert!(!handed.is_empty());
    let mut unique = handed.clone();
    unique.dedup();
    assert_eq!(unique.len(), handed.len());
    let err = pool.allocate().unwrap_err();
    assert!(err.to_string().contains("no free port"), "{err}");
    pool.release(handed[0]);
    assert_eq!(pool.allocate().unwrap(), handed[0]);
}
