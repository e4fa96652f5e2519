//! An assignment's GPUs and limits, seen from a test master: what the task's process sees,
//! and the limit named in the result that crosses the wire.

mod support;

use std::time::Duration;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::{LimitHit, LogStream, MasterMessage};
use support::{MasterConn, TestMaster, lines_of, shell_task};

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

#[actix_rt::test]
async fn a_task_sees_the_gpus_of_its_assignment() {
    let (_master, _state, agent, mut conn) = start().await;
    let mut task = shell_task(51, "echo \"$CUDA_VISIBLE_DEVICES/$FURROW_GPUS\"");
    task.gpus = vec![1, 3];
    conn.send(MasterMessage::Assign(task.clone())).await;
    let (finished, messages) = conn.until_finished(task.task).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.limit, None);
    assert_eq!(
        lines_of(&messages, task.task, LogStream::Stdout),
        ["1,3/1,3"]
    );
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_stalled_task_finishes_with_the_stall_limit() {
    let (_master, _state, agent, mut conn) = start().await;
    let mut task = shell_task(52, "echo working; sleep 30");
    task.stall_timeout_secs = Some(1);
    // A generous time limit that must not be the one to fire.
    task.timeout_secs = Some(60);
    let started = tokio::time::Instant::now();
    conn.send(MasterMessage::Assign(task.clone())).await;
    let (finished, messages) = conn.until_finished(task.task).await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "killed before its sleep ended"
    );
    assert_eq!(finished.limit, Some(LimitHit::Stall));
    assert_eq!(
        finished.error.as_deref(),
        Some("no output or progress for 1 s (stall timeout)")
    );
    assert_eq!(
        lines_of(&messages, task.task, LogStream::Stdout),
        ["working"]
    );
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_task_over_its_memory_limit_finishes_with_the_memory_used() {
    let (_master, _state, agent, mut conn) = start().await;
    let mut task = shell_task(
        53,
        "python3 -c 'import time; b = bytearray(200 * 1024 * 1024); time.sleep(30)'",
    );
    task.ram_mb = Some(50);
    conn.send(MasterMessage::Assign(task.clone())).await;
    let (finished, _) = conn.until_finished(task.task).await;
    let Some(LimitHit::Memory { used_mb }) = finished.limit else {
        panic!("expected the memory limit: {finished:?}");
    };
    assert!(used_mb > 50, "{used_mb}");
    assert_eq!(
        finished.error,
        Some(format!("used {used_mb} MiB, over its limit of 50 MiB"))
    );
    conn.store_result(task.task).await;
    agent.shutdown().await;
}
