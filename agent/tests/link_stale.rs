//! Attempts the master no longer counts: killed at once (SIGKILL, no grace a task
//! ignoring SIGTERM could use), and never running beside a newer attempt of their task.

mod support;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{AgentMessage, LogStream, MasterMessage, TaskFinished};
use support::{
    MasterConn, TestMaster, group_members, lines_of, shell_task, task_members, wait_for,
};

/// A shell that ignores SIGTERM, as do the two sleeps it starts.
const IGNORES_SIGTERM: &str = "trap '' TERM; sleep 1000 & sleep 1000";

/// The error, and log line, of an attempt killed for being stale.
const STALE: &str = "killed at once: the master no longer counts this attempt";

async fn start() -> (TestMaster, tempfile::TempDir, Agent, MasterConn) {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    (master, state, agent, conn)
}

/// Checks that `finished` was killed at once, without the grace of a SIGTERM.
fn assert_killed_at_once(finished: &TaskFinished, seen: &[AgentMessage]) {
    assert_eq!(finished.signal, Some(libc::SIGKILL), "{finished:?}");
    let agent_lines = lines_of(seen, finished.task, LogStream::Agent);
    assert!(agent_lines.contains(&STALE.to_string()), "{agent_lines:?}");
    assert!(
        !agent_lines.iter().any(|l| l.starts_with("still running")),
        "{agent_lines:?}"
    );
}

#[actix_rt::test]
async fn an_acknowledgement_of_a_running_attempt_kills_it_at_once() {
    let (_master, _state, agent, mut conn) = start().await;
    let task = shell_task(81, IGNORES_SIGTERM);
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("the shell and its sleeps", || task_members(pgid).len() >= 3).await;

    // The master no longer needs the attempt.
    conn.store_result(task.task).await;
    let (finished, seen) = conn.until_finished(task.task).await;
    assert_killed_at_once(&finished, &seen);
    assert_eq!(finished.error.as_deref(), Some(STALE));
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    // Its result is acknowledged like any other.
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn an_attempt_a_registration_answer_disowns_is_killed_at_once() {
    let (master, _state, agent, mut conn) = start().await;
    let task = shell_task(82, IGNORES_SIGTERM);
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("the shell and its sleeps", || task_members(pgid).len() >= 3).await;

    // The connection drops; meanwhile the master gave the task to another attempt.
    drop(conn);
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(registration.running, [task.task]);
    // What the master answers for a listed attempt that is no longer current.
    conn.send(MasterMessage::Cancel(task.task)).await;
    conn.store_result(task.task).await;
    let (finished, seen) = conn.until_finished(task.task).await;
    assert_killed_at_once(&finished, &seen);
    // The cancel came first and names the error; the acknowledgement cut its grace.
    assert_eq!(finished.error.as_deref(), Some("cancelled"));
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_newer_attempt_starts_once_the_running_one_is_killed() {
    let (_master, _state, agent, mut conn) = start().await;
    let mut first = shell_task(83, IGNORES_SIGTERM);
    first.task.attempt = 2;
    conn.send(MasterMessage::Assign(first.clone())).await;
    let first_pgid = conn.until_started(first.task).await;
    wait_for("the shell and its sleeps", || {
        task_members(first_pgid).len() >= 3
    })
    .await;

    let mut second = shell_task(83, "exec sleep 1000");
    second.task.attempt = 3;
    conn.send(MasterMessage::Assign(second.clone())).await;
    let mut seen = Vec::new();
    let mut first_finished = None;
    let mut second_started = false;
    while first_finished.is_none() || !second_started {
        let message = conn.recv_task_message().await;
        match &message {
            AgentMessage::TaskStarted(started) if started.task == second.task => {
                assert!(
                    group_members(first_pgid).is_empty(),
                    "the newer attempt started beside the older one's {:?}",
                    group_members(first_pgid)
                );
                second_started = true;
            }
            AgentMessage::TaskFinished(finished) if finished.task == first.task => {
                first_finished = Some(finished.clone());
            }
            _ => {}
        }
        seen.push(message);
    }
    let first_finished = first_finished.unwrap();
    assert_killed_at_once(&first_finished, &seen);
    assert_eq!(first_finished.error.as_deref(), Some(STALE));

    // An attempt older than the one running here is refused.
    let mut oldest = shell_task(83, "echo never");
    oldest.task.attempt = 1;
    conn.send(MasterMessage::Assign(oldest.clone())).await;
    let (refused, more) = conn.until_returned(oldest.task).await;
    seen.extend(more);
    assert_eq!(
        refused.reason,
        "refused: attempt 3 of this task runs on this agent"
    );

    conn.send(MasterMessage::Cancel(second.task)).await;
    let (finished, more) = conn.until_finished(second.task).await;
    assert_eq!(finished.signal, Some(libc::SIGTERM));
    seen.extend(more);
    assert_eq!(
        lines_of(&seen, second.task, LogStream::Agent).first(),
        Some(&"waiting for an older attempt of this task to end".to_string())
    );
    conn.store_result(first.task).await;
    conn.store_result(second.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_stale_attempt_is_killed_at_once_and_its_result_forgotten() {
    let (master, _state, agent, mut conn) = start().await;
    let task = shell_task(82, IGNORES_SIGTERM);
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("the shell and its sleeps", || task_members(pgid).len() >= 3).await;

    // Protocol version 6 says it in one message.
    conn.send(MasterMessage::Stale(task.task)).await;
    let (finished, seen) = conn.until_finished(task.task).await;
    assert_killed_at_once(&finished, &seen);
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    // Its result is forgotten by the same word: the next registration does not list it.
    conn.send(MasterMessage::Stale(task.task)).await;
    drop(conn);
    let mut again = master.accept().await;
    let registration = again.register(60_000).await;
    assert!(
        registration.running.is_empty(),
        "{:?}",
        registration.running
    );
    agent.shutdown().await;
}
