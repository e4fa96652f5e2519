//! The agent as a process: SIGTERM, SIGKILL, and the cleanup of task processes a dead
//! agent left behind.
//!
//! Agent processes are this test binary re-executed with only `agent_process` selected
//! and the agent's configuration in the environment.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::MasterMessage;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{DEADLINE, TestMaster, count_files, group_members, shell_task, wait_for};

const CHILD_MASTER: &str = "FURROW_TEST_AGENT_MASTER";
const CHILD_STATE: &str = "FURROW_TEST_AGENT_STATE";

/// Not a test of its own: the body of the agent processes started below. Run normally
/// (without the variables) it returns at once.
#[test]
fn agent_process() {
    let (Ok(master), Ok(state)) = (std::env::var(CHILD_MASTER), std::env::var(CHILD_STATE)) else {
        return;
    };
    let code = match furrow_agent::run(AgentConfig::new(master, state)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("agent failed: {error}");
            2
        }
    };
    std::process::exit(code);
}

/// An agent process, killed when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn spawn(master: &str, state: &Path) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "agent_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MASTER, master)
            .env(CHILD_STATE, state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
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
async fn sigterm_cancels_tasks_delivers_their_results_and_exits_zero() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let task = shell_task(51, "sleep 1000 & sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("both sleeps", || group_members(pgid).len() >= 2).await;

    agent.signal(Signal::SIGTERM);
    let (finished, _) = conn.until_finished(task.task).await;
    assert_eq!(
        finished.error.as_deref(),
        Some("cancelled: the agent is shutting down")
    );
    conn.closed().await;
    assert_eq!(agent.exited().await.code(), Some(0));
    assert!(group_members(pgid).is_empty());
    assert_eq!(count_files(&state.path().join("running")), 0);
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

#[actix_rt::test]
async fn after_sigkill_the_restarted_agent_kills_the_orphaned_task_processes() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut first = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    let task = shell_task(61, "sleep 1000 & sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("both sleeps", || group_members(pgid).len() >= 2).await;

    first.signal(Signal::SIGKILL);
    assert_eq!(first.exited().await.signal(), Some(libc::SIGKILL));
    conn.closed().await;
    // PR_SET_PDEATHSIG took the task's own process; the background sleep it started
    // lives on, orphaned, in the task's process group.
    wait_for("the task's own process to die with the agent", || {
        !group_members(pgid).contains(&pgid)
    })
    .await;
    assert!(
        !group_members(pgid).is_empty(),
        "the orphan should still be running"
    );
    assert_eq!(count_files(&state.path().join("running")), 1);

    let _second = AgentProcess::spawn(&master.addr, state.path());
    let mut conn = master.accept().await;
    let again = conn.register(60_000).await;
    assert_eq!(again.agent_id, registration.agent_id);
    assert!(again.running.is_empty(), "{:?}", again.running);
    wait_for("the orphans to be killed", || {
        group_members(pgid).is_empty()
    })
    .await;
    assert_eq!(count_files(&state.path().join("running")), 0);
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
