//! Assignments ahead of a free slot (protocol version 7; two per slot from version 9): an
//! agent keeps twice as many assignments as it has slots waiting, starts them in the
//! order they came as slots free,
//! ends a waiting one without a process when it is cancelled or stale, gives the waiting
//! ones back at shutdown, and refuses anything beyond.

mod support;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{AgentMessage, LogStream, MasterMessage};
use support::{MasterConn, TestMaster, lines_of, shell_task};

async fn start(slots: u32) -> (TestMaster, tempfile::TempDir, Agent, MasterConn) {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.slots = Some(slots);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    (master, state, agent, conn)
}

fn started(messages: &[AgentMessage]) -> Vec<i64> {
    messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::TaskStarted(started) => Some(started.task.task_id),
            _ => None,
        })
        .collect()
}

#[actix_rt::test]
async fn assignments_wait_for_a_slot_in_the_order_they_came_and_beyond_that_are_refused() {
    let (_master, _state, agent, mut conn) = start(2).await;
    let first = shell_task(21, "sleep 1000");
    let second = shell_task(22, "sleep 1000");
    let third = shell_task(23, "echo third");
    let fourth = shell_task(24, "echo fourth");
    let fifth = shell_task(25, "echo fifth");
    let sixth = shell_task(26, "echo sixth");
    let seventh = shell_task(27, "echo never");
    for task in [&first, &second, &third, &fourth, &fifth, &sixth, &seventh] {
        conn.send(MasterMessage::Assign(task.clone())).await;
    }
    // Two run, four wait, the seventh is given back at once, saying why; its log says so.
    let (refused, seen) = conn.until_returned(seventh.task).await;
    assert!(
        refused.reason.contains("no free slot") && refused.reason.contains("2 slots busy"),
        "{}",
        refused.reason
    );
    assert_eq!(
        lines_of(&seen, seventh.task, LogStream::Agent),
        std::slice::from_ref(&refused.reason)
    );

    // A slot frees: the first waiting assignment starts in it, not the second.
    conn.send(MasterMessage::Cancel(first.task)).await;
    let (cancelled, seen_before) = conn.until_finished(first.task).await;
    assert_eq!(cancelled.error.as_deref(), Some("cancelled"));
    let (done, seen_third) = conn.until_finished(third.task).await;
    assert!(done.succeeded(), "{done:?}");
    let seen: Vec<AgentMessage> = seen_before.into_iter().chain(seen_third).collect();
    assert!(
        !started(&seen).contains(&fourth.task.task_id) || {
            let order = started(&seen);
            let third_at = order.iter().position(|&t| t == third.task.task_id);
            let fourth_at = order.iter().position(|&t| t == fourth.task.task_id);
            third_at < fourth_at
        },
        "{seen:?}"
    );
    // A wait for a slot is routine: the log says nothing of it.
    assert_eq!(
        lines_of(&seen, third.task, LogStream::Stdout),
        ["third".to_string()]
    );
    assert!(
        !lines_of(&seen, third.task, LogStream::Agent)
            .iter()
            .any(|line| line.contains("waiting")),
        "{seen:?}"
    );
    // Then the fourth runs in the slot the third left, and the others after it.
    let mut running = vec![fourth.task, fifth.task, sixth.task];
    while !running.is_empty() {
        if let AgentMessage::TaskFinished(done) = conn.recv_task_message().await {
            assert!(done.succeeded(), "{done:?}");
            running.retain(|task| *task != done.task);
        }
    }
    for task in [first.task, third.task, fourth.task, fifth.task, sixth.task] {
        conn.store_result(task).await;
    }
    conn.send(MasterMessage::Cancel(second.task)).await;
    let (cancelled, _) = conn.until_finished(second.task).await;
    assert_eq!(cancelled.error.as_deref(), Some("cancelled"));
    conn.store_result(second.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_waiting_assignment_cancelled_or_stale_ends_without_a_process() {
    let (_master, _state, agent, mut conn) = start(1).await;
    let running = shell_task(31, "sleep 1000");
    let cancelled = shell_task(32, "echo never");
    conn.send(MasterMessage::Assign(running.clone())).await;
    conn.send(MasterMessage::Assign(cancelled.clone())).await;
    conn.until_started(running.task).await;
    conn.send(MasterMessage::Cancel(cancelled.task)).await;
    let (finished, seen) = conn.until_finished(cancelled.task).await;
    assert_eq!(finished.error.as_deref(), Some("cancelled"), "{finished:?}");
    assert_eq!(finished.exit_code, None);
    assert!(
        !started(&seen).contains(&cancelled.task.task_id),
        "{seen:?}"
    );
    conn.store_result(cancelled.task).await;

    // Its seat is free again: another waits, and the master disowns it.
    let stale = shell_task(33, "echo never");
    conn.send(MasterMessage::Assign(stale.clone())).await;
    conn.send(MasterMessage::Stale(stale.task)).await;
    let (finished, seen) = conn.until_finished(stale.task).await;
    assert!(!finished.succeeded(), "{finished:?}");
    assert!(!started(&seen).contains(&stale.task.task_id), "{seen:?}");
    assert!(
        !lines_of(&seen, stale.task, LogStream::Stdout).contains(&"never".to_string()),
        "{seen:?}"
    );
    conn.store_result(stale.task).await;

    // The running one never noticed.
    let waiting = shell_task(34, "echo after");
    conn.send(MasterMessage::Assign(waiting.clone())).await;
    conn.send(MasterMessage::Cancel(running.task)).await;
    let (finished, _) = conn.until_finished(running.task).await;
    assert_eq!(finished.error.as_deref(), Some("cancelled"));
    let (finished, seen) = conn.until_finished(waiting.task).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(lines_of(&seen, waiting.task, LogStream::Stdout), ["after"]);
    conn.store_result(running.task).await;
    conn.store_result(waiting.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn shutdown_gives_waiting_assignments_back_and_a_reconnect_lists_them() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.slots = Some(1);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let running = shell_task(41, "sleep 1000");
    let waiting = shell_task(42, "echo never");
    conn.send(MasterMessage::Assign(running.clone())).await;
    conn.send(MasterMessage::Assign(waiting.clone())).await;
    conn.until_started(running.task).await;

    // The connection drops: the agent lists both attempts it holds when it registers
    // again, the waiting one too, so a master that restarted meanwhile keeps both.
    drop(conn);
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    let mut listed = registration.running.clone();
    listed.sort_by_key(|t| t.task_id);
    assert_eq!(listed, [running.task, waiting.task]);

    let shutdown = actix_rt::spawn(agent.shutdown());
    let mut returned = Vec::new();
    while returned.len() < 2 {
        match conn.recv_task_message().await {
            AgentMessage::TaskReturned(given_back) => returned.push(given_back.task),
            AgentMessage::TaskStarted(started) => {
                assert_ne!(started.task, waiting.task, "a waiting attempt started");
            }
            AgentMessage::TaskFinished(finished) => panic!("{finished:?}"),
            _ => {}
        }
    }
    returned.sort_by_key(|t| t.task_id);
    assert_eq!(returned, [running.task, waiting.task]);
    conn.closed().await;
    shutdown.await.unwrap();
}
