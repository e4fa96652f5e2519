//! Results are acknowledged with `ResultStored` once they are durable, and replays of
//! results the master already has change nothing.

mod common;

use std::time::Duration;

use common::{TestAgent, get_json, job, start_master, wait_for};
use furrow_protocol::{MasterMessage, TaskRef};
use serde_json::Value;
use uuid::Uuid;

/// The job and its tasks, as the REST API shows them (read from the database).
fn snapshot(http: &str, job_id: i64) -> (Value, Value) {
    let (status, job) = get_json(http, &format!("/api/v1/jobs/{job_id}"));
    assert_eq!(status, 200);
    let (status, tasks) = get_json(http, &format!("/api/v1/jobs/{job_id}/tasks/"));
    assert_eq!(status, 200);
    (job, tasks)
}

/// The REST view of one task.
fn task_view(tasks: &Value, task_id: i64) -> &Value {
    tasks["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["id"] == task_id))
        .unwrap_or_else(|| panic!("task {task_id} not in {tasks}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_acknowledged_once_stored_and_replays_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let (listen, http) = (
        master.addrs().listen.to_string(),
        master.addrs().http.to_string(),
    );
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("acks", "1-2")).await.unwrap();
    let mut agent = TestAgent::register(&listen, Uuid::new_v4(), 2, Vec::new()).await;
    let first = agent.assignment().await.task;
    let second = agent.assignment().await.task;

    // Acknowledged only once stored: the database shows the task done at once.
    agent.run(first, &["frame 1"]).await;
    agent.result_stored(first).await;
    let (job, tasks) = snapshot(&http, submitted.id);
    assert_eq!(task_view(&tasks, first.task_id)["state"], "done", "{tasks}");
    assert_eq!(job["task_counts"]["done"], 1, "{job}");
    assert_eq!(job["task_counts"]["running"], 1, "{job}");
    assert_eq!(
        client.get_job(submitted.id).await.unwrap().task_counts.done,
        1
    );

    // The acknowledgement was lost: the agent replays the result, even with another
    // outcome. It is acknowledged again and changes nothing.
    agent.finish(first, 0).await;
    agent.result_stored(first).await;
    agent.finish(first, 3).await;
    agent.result_stored(first).await;
    assert_eq!(snapshot(&http, submitted.id), (job.clone(), tasks.clone()));

    // A result of an attempt that is not current is acknowledged and ignored.
    let stale = TaskRef {
        task_id: second.task_id,
        attempt: second.attempt + 6,
    };
    agent.finish(stale, 1).await;
    agent.result_stored(stale).await;
    assert_eq!(snapshot(&http, submitted.id), (job, tasks));

    agent.run(second, &[]).await;
    agent.result_stored(second).await;
    let (job, tasks) = snapshot(&http, submitted.id);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["task_counts"]["done"], 2, "{job}");

    // A replay after the job is over, when the scheduler no longer holds it.
    agent.finish(first, 0).await;
    agent.result_stored(first).await;
    assert_eq!(snapshot(&http, submitted.id), (job, tasks));
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_attempt_listed_at_registration_is_acknowledged_not_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let (listen, http) = (
        master.addrs().listen.to_string(),
        master.addrs().http.to_string(),
    );
    let client = common::client(&listen).await;
    let submitted = client.submit_job(job("listed", "1-2")).await.unwrap();
    let agent_id = Uuid::new_v4();
    let mut agent = TestAgent::register(&listen, agent_id, 2, Vec::new()).await;
    let settled = agent.assignment().await.task;
    let running = agent.assignment().await.task;
    agent.run(settled, &[]).await;
    wait_for("the first task stored as done", || {
        snapshot(&http, submitted.id).0["task_counts"]["done"] == 1
    })
    .await;

    // The connection drops before the agent reads the acknowledgement: it comes back
    // listing the settled attempt next to the running one.
    drop(agent);
    let mut agent = TestAgent::register(&listen, agent_id, 2, vec![settled, running]).await;
    agent.result_stored(settled).await;
    // The master cannot tell a finished attempt from one still running; the cancel is a
    // no-op for a finished one.
    match agent.recv().await {
        Some(MasterMessage::Cancel(task)) => assert_eq!(task, settled),
        other => panic!("expected the cancel of the settled attempt, got {other:?}"),
    }
    let (job, _) = snapshot(&http, submitted.id);
    assert_eq!(
        (
            job["task_counts"]["done"].clone(),
            job["task_counts"]["running"].clone()
        ),
        (1.into(), 1.into()),
        "{job}"
    );

    // Its replay is acknowledged too; the running attempt was kept and finishes the job.
    agent.finish(settled, 0).await;
    agent.result_stored(settled).await;
    agent.run(running, &[]).await;
    agent.result_stored(running).await;
    let (job, tasks) = snapshot(&http, submitted.id);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["task_counts"]["done"], 2, "{job}");
    let attempts: Vec<&Value> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["attempt"])
        .collect();
    assert_eq!(attempts, [1, 1], "nothing ran twice: {tasks}");
    master.shutdown().unwrap();
}
