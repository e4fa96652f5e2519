//! Losing the master and coming back, against a test master.

mod support;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{LogStream, MasterMessage};
use support::{TestMaster, count_files, lines_of, shell_task, wait_for};

#[actix_rt::test]
async fn a_result_finished_while_the_master_was_away_is_delivered_after_reregistration() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let go = scratch.path().join("go");
    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let task = shell_task(
        41,
        &format!(
            "while [ ! -e {} ]; do sleep 0.02; done; echo after",
            go.display()
        ),
    );
    conn.send(MasterMessage::Assign(task.clone())).await;
    conn.until_started(task.task).await;

    drop(conn);
    // The agent noticed: it is connecting again, waiting for the handshake answer.
    let pending = master.accept_tcp().await;
    std::fs::write(&go, "").unwrap();
    let spool = state.path().join("spool");
    wait_for("the result to be kept on disk", || count_files(&spool) == 1).await;

    let mut conn = pending.handshake().await;
    let registration = conn.register(60_000).await;
    assert_eq!(
        registration.running,
        [task.task],
        "a finished, undelivered attempt is listed"
    );
    let (finished, replayed) = conn.until_finished(task.task).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(lines_of(&replayed, task.task, LogStream::Stdout), ["after"]);
    assert_eq!(
        lines_of(&replayed, task.task, LogStream::Agent)
            .last()
            .unwrap(),
        "exited with code 0"
    );
    assert_eq!(count_files(&spool), 1, "delivered, but not yet stored");
    conn.store_result(task.task).await;
    wait_for("the stored result to leave the disk", || {
        count_files(&spool) == 0
    })
    .await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn garbage_from_the_master_drops_the_connection_and_the_agent_comes_back() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let task = shell_task(42, "sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    conn.until_started(task.task).await;
    conn.send_garbage().await;
    conn.closed().await;

    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(
        registration.running,
        [task.task],
        "the running task is re-reported"
    );
    conn.send(MasterMessage::Cancel(task.task)).await;
    let (finished, _) = conn.until_finished(task.task).await;
    assert_eq!(finished.error.as_deref(), Some("cancelled"));
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn results_undelivered_at_shutdown_are_delivered_by_the_next_agent_process() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.slots = Some(2);
    let agent = Agent::start(config.clone()).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let done = shell_task(43, "exit 3");
    let given_back = shell_task(44, "sleep 1000");
    conn.send(MasterMessage::Assign(done.clone())).await;
    conn.send(MasterMessage::Assign(given_back.clone())).await;
    conn.until_started(given_back.task).await;

    // The master goes away for good; one task ends while it is unreachable, then the
    // agent is stopped, giving the other back.
    drop(conn);
    let _unanswered = master.accept_tcp().await;
    wait_for("the result on disk", || {
        count_files(&state.path().join("spool")) == 1
    })
    .await;
    agent.shutdown().await;
    assert_eq!(count_files(&state.path().join("spool")), 1);

    // The result is replayed; the attempt given back is not kept (the master requeues
    // it since it is not listed).
    let again = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(registration.running, [done.task]);
    let (finished, _) = conn.until_finished(done.task).await;
    assert_eq!(finished.exit_code, Some(3));
    assert_eq!(count_files(&state.path().join("spool")), 1);
    conn.store_result(done.task).await;
    wait_for("the stored result to leave the disk", || {
        count_files(&state.path().join("spool")) == 0
    })
    .await;
    again.shutdown().await;
}
