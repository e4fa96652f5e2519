//! Assignments, cancels, slots and shutdown, against a test master.

mod support;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{AgentMessage, LogStream, MasterMessage, TaskRef};
use support::{
    MasterConn, TestMaster, group_members, lines_of, shell_task, task_members, wait_for,
};

async fn start(slots: Option<u32>) -> (TestMaster, tempfile::TempDir, Agent, MasterConn) {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.slots = slots;
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    (master, state, agent, conn)
}

#[actix_rt::test]
async fn an_assignment_reports_started_logs_and_finished_in_order() {
    let (_master, _state, agent, mut conn) = start(None).await;
    let task = shell_task(
        11,
        "echo hello; echo oops >&2; echo frame $FURROW_FRAME; exit 2",
    );
    conn.send(MasterMessage::Assign(task.clone())).await;

    let first = conn.recv_task_message().await;
    let AgentMessage::TaskStarted(started) = first else {
        panic!("expected TaskStarted first, got {first:?}");
    };
    assert_eq!(started.task, task.task);
    assert!(started.pid > 1);
    let (finished, messages) = conn.until_finished(task.task).await;
    assert!(
        messages.iter().all(|m| matches!(m, AgentMessage::Logs(_))),
        "only logs between started and finished: {messages:?}"
    );
    assert_eq!(
        lines_of(&messages, task.task, LogStream::Stdout),
        ["hello", "frame 1"]
    );
    assert_eq!(lines_of(&messages, task.task, LogStream::Stderr), ["oops"]);
    let agent_lines = lines_of(&messages, task.task, LogStream::Agent);
    assert!(
        agent_lines[0].starts_with("starting: sh -c "),
        "{agent_lines:?}"
    );
    assert_eq!(agent_lines.last().unwrap(), "exited with code 2");
    assert_eq!(
        (finished.exit_code, finished.signal, finished.error),
        (Some(2), None, None)
    );
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn cancel_kills_the_task_group_and_unknown_cancels_are_ignored() {
    let (_master, _state, agent, mut conn) = start(None).await;
    conn.send(MasterMessage::Cancel(TaskRef {
        task_id: 999,
        attempt: 4,
    }))
    .await;
    let task = shell_task(12, "sleep 1000 & sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = loop {
        match conn.recv_task_message().await {
            AgentMessage::TaskStarted(started) => break started.pid,
            AgentMessage::TaskFinished(finished) => {
                panic!("the unknown cancel produced {finished:?}")
            }
            _ => {}
        }
    };
    wait_for("both sleeps", || task_members(pgid).len() >= 2).await;

    conn.send(MasterMessage::Cancel(task.task)).await;
    let (finished, messages) = conn.until_finished(task.task).await;
    assert_eq!(finished.error.as_deref(), Some("cancelled"));
    assert_eq!(finished.signal, Some(libc::SIGTERM));
    assert!(
        group_members(pgid).is_empty(),
        "left: {:?}",
        group_members(pgid)
    );
    assert!(lines_of(&messages, task.task, LogStream::Agent).contains(&"cancelled".to_string()));
    assert!(
        !messages
            .iter()
            .any(|m| matches!(m, AgentMessage::TaskFinished(_))),
        "{messages:?}"
    );
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn shutdown_gives_running_tasks_back_and_the_next_registration_does_not_list_them() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let config = AgentConfig::new(master.addr.clone(), state.path());
    let agent = Agent::start(config.clone()).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let task = shell_task(31, "sleep 1000 & sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let pgid = conn.until_started(task.task).await;
    wait_for("both sleeps", || task_members(pgid).len() >= 2).await;

    let shutdown = actix_rt::spawn(agent.shutdown());
    // Given back, not finished: the master requeues it without counting a failure. The
    // task's log says why it stopped.
    let (returned, seen) = conn.until_returned(task.task).await;
    assert_eq!(returned.reason, "cancelled: the agent is shutting down");
    assert!(
        lines_of(&seen, task.task, LogStream::Agent)
            .contains(&"cancelled: the agent is shutting down".to_string()),
        "{seen:?}"
    );
    // Nothing waits for an acknowledgement: the agent closes the connection.
    conn.closed().await;
    shutdown.await.unwrap();
    assert!(group_members(pgid).is_empty());
    assert_eq!(support::count_records(&state.path().join("running")), 0);
    assert_eq!(
        support::count_files(&state.path().join("spool")),
        0,
        "a returned attempt is not kept"
    );

    let again = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert!(registration.running.is_empty(), "{registration:?}");
    again.shutdown().await;
}

#[actix_rt::test]
async fn output_streams_while_the_task_runs() {
    let (_master, _state, agent, mut conn) = start(None).await;
    let task = shell_task(41, "echo first; echo second >&2; sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    // The lines arrive although the task never ends on its own (batches are flushed
    // on a timer, not only when full or at the end).
    while stdout.is_empty() || stderr.is_empty() {
        let message = conn.recv_task_message().await;
        assert!(
            !matches!(message, AgentMessage::TaskFinished(_)),
            "{message:?}"
        );
        stdout.extend(lines_of(
            std::slice::from_ref(&message),
            task.task,
            LogStream::Stdout,
        ));
        stderr.extend(lines_of(
            std::slice::from_ref(&message),
            task.task,
            LogStream::Stderr,
        ));
    }
    assert_eq!(
        (stdout, stderr),
        (vec!["first".to_string()], vec!["second".to_string()])
    );
    conn.send(MasterMessage::Cancel(task.task)).await;
    conn.until_finished(task.task).await;
    conn.store_result(task.task).await;
    agent.shutdown().await;
}
