//! The agent as a process: its signals (SIGTERM and SIGINT through the signalfd, SIGHUP
//! reloading the configuration file), SIGKILL (its tasks' processes die with it), and the
//! cleanup of task processes a dead agent left behind.
//!
//! Agent processes run the `furrow-test-agent` binary of this package, which starts an
//! agent from `main` as the `furrow` binary does.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{LimitHit, MasterMessage, Registration};
use furrow_sysfd::SHUTDOWN_SIGNALS;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{
    DEADLINE, MasterConn, TestMaster, count_files, count_records, group_members, processes_of,
    shell_task, task_members, wait_for,
};

/// An agent process, killed when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn spawn(master: &str, state: &Path) -> Self {
        Self::spawn_with(master, state, None)
    }

    fn spawn_with(master: &str, state: &Path, config_file: Option<&Path>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_furrow-test-agent"));
        command
            .arg(master)
            .arg(state)
            .args(config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Self(command.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).unwrap();
    }

    async fn exited(&mut self) -> ExitStatus {
        let mut status = None;
        wait_for("the agent process to exit", || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        })
        .await;
        status.unwrap()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_rt::test]
async fn sigterm_gives_running_tasks_back_and_exits_zero() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let task = shell_task(51, "sleep 1000 & sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("both sleeps", || task_members(pgid).len() >= 2).await;

    agent.signal(Signal::SIGTERM);
    // Given back to the master (not finished): it is requeued without a failure.
    let (returned, _) = conn.until_returned(task.task).await;
    assert_eq!(returned.reason, "cancelled: the agent is shutting down");
    conn.closed().await;
    assert_eq!(agent.exited().await.code(), Some(0));
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    assert_eq!(count_records(&state.path().join("running")), 0);
    assert_eq!(
        count_files(&state.path().join("spool")),
        0,
        "a returned attempt is not kept"
    );

    // The next agent process does not list it.
    let _again = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert!(registration.running.is_empty(), "{registration:?}");
}

/// The bit of `signal` in a /proc signal mask.
fn bit(signal: Signal) -> u64 {
    1 << (signal as u32 - 1)
}

/// The bits of SIGTERM, SIGINT and SIGHUP.
fn agent_signals() -> u64 {
    SHUTDOWN_SIGNALS.iter().fold(0, |mask, s| mask | bit(*s))
}

/// A hexadecimal mask line (`SigBlk:`, `sigmask:`...) of a /proc file.
fn proc_mask(path: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let hex = text
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {path}: {text}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The signal masks of the signalfds process `pid` has open.
fn signalfd_masks(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            (target == Path::new("anon_inode:[signalfd]")).then(|| {
                let fd = entry.file_name().into_string().unwrap();
                proc_mask(&format!("/proc/{pid}/fdinfo/{fd}"), "sigmask:")
            })
        })
        .collect()
}

/// Waits until the agent has read every pending signal from its signalfd.
async fn signals_taken(agent: &AgentProcess) {
    let status = format!("/proc/{}/status", agent.pid());
    wait_for("the agent to read its signals", || {
        proc_mask(&status, "ShdPnd:") & agent_signals() == 0
    })
    .await;
}

#[actix_rt::test]
async fn signals_reach_the_agent_through_its_signalfd_and_tasks_start_unblocked() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    conn.register(60_000).await;

    // Blocked in every thread and caught by no handler: the signalfd is their only way in.
    let pid = agent.pid();
    for tid in threads(pid) {
        let status = format!("/proc/{pid}/task/{tid}/status");
        assert_eq!(
            proc_mask(&status, "SigBlk:") & agent_signals(),
            agent_signals()
        );
        assert_eq!(proc_mask(&status, "SigCgt:") & agent_signals(), 0);
    }
    // (The async wrapper holds a duplicate of the fd: one signalfd, two descriptors.)
    let masks = signalfd_masks(pid);
    assert!(!masks.is_empty(), "no signalfd open");
    assert!(
        masks.iter().all(|mask| *mask == agent_signals()),
        "{masks:x?}"
    );

    // A task gets an empty mask back, so it can be terminated like any process.
    let task = shell_task(53, "exec sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    // The task's own process leads its group, alone in it.
    let pgid = conn.until_started(task.task).await;
    let mut members = Vec::new();
    wait_for("the task's process", || {
        members = task_members(pgid);
        !members.is_empty()
    })
    .await;
    let [task_pid] = members[..] else {
        panic!("one process expected in the task's group: {members:?}");
    };
    assert_eq!(proc_mask(&format!("/proc/{task_pid}/status"), "SigBlk:"), 0);
    kill(Pid::from_raw(task_pid as i32), Signal::SIGTERM).unwrap();
    let (finished, _) = conn.until_finished(task.task).await;
    assert_eq!(
        (finished.exit_code, finished.signal, finished.error),
        (None, Some(libc::SIGTERM), None)
    );
    conn.store_result(task.task).await;

    // The time limit and exit codes, in the agent process as it runs for real.
    let mut limited = shell_task(54, "exec sleep 1000");
    limited.timeout_secs = Some(1);
    conn.send(MasterMessage::Assign(limited.clone())).await;
    let (finished, _) = conn.until_finished(limited.task).await;
    assert_eq!(
        (finished.signal, finished.error.as_deref()),
        (Some(libc::SIGTERM), Some("time limit of 1 s exceeded"))
    );
    assert_eq!(finished.limit, Some(LimitHit::Timeout));
    conn.store_result(limited.task).await;
    let exits = shell_task(55, "exit 7");
    conn.send(MasterMessage::Assign(exits.clone())).await;
    let (finished, _) = conn.until_finished(exits.task).await;
    assert_eq!((finished.exit_code, finished.signal), (Some(7), None));
    conn.store_result(exits.task).await;

    agent.signal(Signal::SIGINT);
    conn.closed().await;
    assert_eq!(agent.exited().await.code(), Some(0));
}

/// Accepts the agent's next connection and its registration.
async fn reregistration(master: &TestMaster) -> (MasterConn, Registration) {
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    (conn, registration)
}

#[actix_rt::test]
async fn sighup_registers_again_with_the_name_tags_software_and_gpus_of_the_configuration_file() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("agent.conf");
    std::fs::write(
        &config,
        "tags = before
",
    )
    .unwrap();
    let mut agent = AgentProcess::spawn_with(&master.addr, state.path(), Some(&config));
    let mut conn = master.accept().await;
    let first = conn.register(60_000).await;
    assert_eq!(first.tags, ["before"], "the file is read at start");
    let task = shell_task(56, "sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;

    std::fs::write(
        &config,
        "# reloaded
name = renamed
tags = blender, gpu
software = blender 4.2.1
gpus = 92
",
    )
    .unwrap();
    agent.signal(Signal::SIGHUP);
    conn.closed().await;
    let (mut conn, again) = reregistration(&master).await;
    assert_eq!(again.agent_id, first.agent_id);
    assert_eq!(again.name, "renamed");
    assert_eq!(again.tags, ["blender", "gpu"]);
    assert_eq!(
        again.software.get("blender").map(String::as_str),
        Some("4.2.1")
    );
    let gpus: Vec<u32> = again.gpus.iter().map(|gpu| gpu.index).collect();
    assert_eq!(gpus, [92]);
    assert_eq!(again.running, [task.task], "the running task is kept");
    assert!(group_members(pgid).contains(&pgid));

    agent.signal(Signal::SIGTERM);
    // Given back to the master (not finished): it is requeued without a failure.
    let (returned, _) = conn.until_returned(task.task).await;
    assert_eq!(returned.reason, "cancelled: the agent is shutting down");
    conn.closed().await;
    assert_eq!(agent.exited().await.code(), Some(0));
}

#[actix_rt::test]
async fn an_invalid_configuration_file_on_sighup_keeps_the_old_tags() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("agent.conf");
    std::fs::write(
        &config,
        "tags = before
",
    )
    .unwrap();
    let mut agent = AgentProcess::spawn_with(&master.addr, state.path(), Some(&config));
    let mut conn = master.accept().await;
    assert_eq!(conn.register(100).await.tags, ["before"]);

    std::fs::write(
        &config,
        "tags = [\"gpu\"]
",
    )
    .unwrap();
    agent.signal(Signal::SIGHUP);
    signals_taken(&agent).await;
    // Still connected and heartbeating after the failed reload.
    for _ in 0..3 {
        conn.recv().await;
    }
    assert!(agent.0.try_wait().unwrap().is_none());
    // The next registration still carries the old tags.
    drop(conn);
    let (mut conn, again) = reregistration(&master).await;
    assert_eq!(again.tags, ["before"]);

    // Fixed, the file is taken at the next SIGHUP.
    std::fs::write(
        &config,
        "tags = after
",
    )
    .unwrap();
    agent.signal(Signal::SIGHUP);
    conn.closed().await;
    let (mut conn, fixed) = reregistration(&master).await;
    assert_eq!(fixed.tags, ["after"]);

    agent.signal(Signal::SIGTERM);
    conn.closed().await;
    assert_eq!(agent.exited().await.code(), Some(0));
}

#[actix_rt::test]
async fn sighup_is_not_fatal() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    conn.register(100).await;
    agent.signal(Signal::SIGHUP);
    // Still alive and heartbeating well after the signal.
    for _ in 0..5 {
        conn.recv().await;
    }
    assert!(agent.0.try_wait().unwrap().is_none());
    agent.signal(Signal::SIGINT);
    conn.closed().await;
    assert_eq!(agent.exited().await.code(), Some(0));
}

/// How long the processes of a task may outlive their agent.
const OUTLIVE_LIMIT: Duration = Duration::from_secs(5);

#[actix_rt::test]
async fn every_process_of_a_task_dies_within_seconds_of_a_sigkilled_agent() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut first = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    // The shell is the task's own process; its children, and the subshell's, are not.
    let mut task = shell_task(
        117,
        "sleep 117 & sleep 118 & (sleep 119; echo never) & wait",
    );
    // An attempt number no other test process uses: the task's processes are found by
    // their environment.
    task.task.attempt = std::process::id();
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for(
        "the shell, the subshell and the three sleeps, in the group",
        || {
            let started = processes_of(task.task);
            let members = group_members(pgid);
            started.len() == 5
                && started.contains(&pgid)
                && started.iter().all(|pid| members.contains(pid))
        },
    )
    .await;

    first.signal(Signal::SIGKILL);
    assert_eq!(first.exited().await.signal(), Some(libc::SIGKILL));
    let died = tokio::time::Instant::now();
    while !(processes_of(task.task).is_empty() && group_members(pgid).is_empty()) {
        assert!(
            died.elapsed() < OUTLIVE_LIMIT,
            "still running {OUTLIVE_LIMIT:?} after the agent died: {:?} of the task, {:?} in its group",
            processes_of(task.task),
            group_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conn.closed().await;

    // The next agent process finds the record of the group the dead one left, has nothing
    // to kill, and does not list the attempt.
    assert_eq!(count_records(&state.path().join("running")), 1);
    let _second = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    let again = conn.register(60_000).await;
    assert_eq!(again.agent_id, registration.agent_id);
    assert!(again.running.is_empty(), "{:?}", again.running);
    assert_eq!(count_records(&state.path().join("running")), 0);
}

#[actix_rt::test]
async fn stale_process_groups_are_killed_at_startup_in_process() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let running = state.path().join("running");
    std::fs::create_dir_all(&running).unwrap();
    let mut orphan = Command::new("sh")
        .args(["-c", "sleep 1000 & sleep 1000"])
        .env("FURROW_TASK_ID", "77")
        .env("FURROW_ATTEMPT", "2")
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = orphan.id();
    wait_for("the orphan's processes", || group_members(pgid).len() >= 2).await;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    std::fs::write(
        running.join("77-2.pgid"),
        format!("pgid={pgid}\ntask=77\nattempt=2\nboot={}\n", boot.trim()),
    )
    .unwrap();

    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    // start() returns after the cleanup, before any registration.
    assert_eq!(count_files(&running), 0);
    wait_for("the stale group to die", || group_members(pgid).is_empty()).await;
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(status) = orphan.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let mut conn = master.accept().await;
    assert!(conn.register(60_000).await.running.is_empty());
    agent.shutdown().await;
}
