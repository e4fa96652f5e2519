//! A result is kept until the master answers `ResultStored`: listed, replayed after a
//! reconnect, kept on disk while the master is away; forgotten once stored.

mod support;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{AgentMessage, MasterMessage};
use support::{TestMaster, count_files, shell_task, wait_for};

#[actix_rt::test]
async fn a_result_is_replayed_until_the_master_stored_it_and_then_forgotten() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let spool = state.path().join("spool");
    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    let mut conn = master.accept().await;
    conn.register(100).await;
    let task = shell_task(71, "echo done");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let (finished, _) = conn.until_finished(task.task).await;
    assert!(finished.succeeded(), "{finished:?}");

    // Delivered but not acknowledged: still listed, and not sent again on this
    // connection (only heartbeats follow).
    for _ in 0..3 {
        assert_eq!(conn.heartbeat().await.running, [task.task]);
    }

    // The connection drops before any acknowledgement.
    drop(conn);
    let mut conn = master.accept().await;
    assert_eq!(
        count_files(&spool),
        1,
        "kept on disk while the master was away"
    );
    let registration = conn.register(100).await;
    assert_eq!(registration.running, [task.task], "listed until stored");
    let (replayed, _) = conn.until_finished(task.task).await;
    assert_eq!(replayed, finished, "the same result, replayed");

    conn.store_result(task.task).await;
    wait_for("the stored result to leave the disk", || {
        count_files(&spool) == 0
    })
    .await;
    loop {
        let heartbeat = conn.heartbeat().await;
        if heartbeat.running.is_empty() {
            break;
        }
        assert_eq!(heartbeat.running, [task.task]);
    }

    // A later reconnect neither lists nor replays it. A replay would come before anything
    // the next task sends.
    drop(conn);
    let mut conn = master.accept().await;
    let registration = conn.register(100).await;
    assert!(
        registration.running.is_empty(),
        "{:?}",
        registration.running
    );
    let next = shell_task(72, "echo next");
    conn.send(MasterMessage::Assign(next.clone())).await;
    let (_, before) = conn.until_finished(next.task).await;
    assert!(
        !before
            .iter()
            .any(|m| matches!(m, AgentMessage::TaskFinished(f) if f.task == task.task)),
        "{before:?}"
    );
    // Acknowledgements of attempts the agent does not hold are ignored; the one of the
    // next task lets the agent stop without keeping its result.
    conn.store_result(task.task).await;
    conn.store_result(next.task).await;
    conn.store_result(next.task).await;
    agent.shutdown().await;
    assert_eq!(count_files(&spool), 0);
}

#[actix_rt::test]
async fn a_result_unacknowledged_at_shutdown_is_replayed_by_the_next_agent_process() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let spool = state.path().join("spool");
    let config = AgentConfig::new(master.addr.clone(), state.path());
    let agent = Agent::start(config.clone()).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    let task = shell_task(73, "exit 4");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let (finished, _) = conn.until_finished(task.task).await;

    // The master stays connected but never answers: the agent stops after its drain time
    // and keeps the result.
    agent.shutdown().await;
    conn.closed().await;
    assert_eq!(count_files(&spool), 1);

    let again = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(registration.running, [task.task]);
    let (replayed, _) = conn.until_finished(task.task).await;
    assert_eq!(replayed, finished);
    conn.store_result(task.task).await;
    wait_for("the stored result to leave the disk", || {
        count_files(&spool) == 0
    })
    .await;
    again.shutdown().await;
}
