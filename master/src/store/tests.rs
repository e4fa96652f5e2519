//! Store tests, run with the same body against SQLite and PostgreSQL.
//!
//! PostgreSQL comes from `FURROW_TEST_POSTGRES_URL` (default
//! `postgres://furrow:furrow@127.0.0.1:5432/postgres`); each test creates a fresh
//! database and drops it afterwards. An unreachable server fails the test.

use actix::prelude::*;
use furrow_protocol::{FrameBatch, FrameSet, TaskCounts, WorkState};
use sea_orm::{ConnectionTrait, Database, DbBackend};
use uuid::Uuid;

use super::records::{
    AgentRow, AgentSettingsRow, AppEventRow, AppReleaseRow, AppRow, AttemptRow, AuditRow,
    BulkWrite, JobRow, JobSettings, LogIndexRow, NewFrames, NewJob, OutputRows, PreviewRow,
    TaskRow, TokenRow, UserRow,
};
use super::{CommitBatch, Db, Flush, InsertJob, Store, StoreReader, UpsertAgent, UpsertLogIndex};
use crate::changes::ChangeFeed;
use crate::scheduler::queues::Queue;
use crate::scheduler::{Control, Write};

mod browse;

const DEFAULT_POSTGRES: &str = "postgres://furrow:furrow@127.0.0.1:5432/postgres";

/// A fresh PostgreSQL database, dropped by [`TempPostgres::drop_db`].
struct TempPostgres {
    admin_url: String,
    name: String,
    url: String,
}

impl TempPostgres {
    async fn create() -> Self {
        let admin_url =
            std::env::var("FURROW_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        let admin = Database::connect(admin_url.as_str())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is unreachable at {admin_url}: {e}. \
                 Run the tests through ./scripts/test, which starts it, \
                 or set FURROW_TEST_POSTGRES_URL."
                )
            });
        let name = format!("furrow_test_{}", Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        admin.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_string())
            .unwrap_or(admin_url.clone());
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }

    async fn drop_db(self) {
        if let Ok(admin) = Database::connect(self.admin_url.as_str()).await {
            let _ = admin
                .execute_unprepared(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
            admin.close().await.ok();
        }
    }
}

fn new_job(title: &str, frames: &str, priority: i32) -> NewJob {
    let set: FrameSet = frames.parse().unwrap();
    NewJob {
        title: title.into(),
        jobtype: "command".into(),
        jobtype_version: 1,
        params: serde_json::json!({"command": ["echo", "{frame}"]}),
        frames: set.to_string(),
        batch: 1,
        priority,
        retries: 1,
        timeout_secs: Some(60),
        settings: JobSettings::of(&furrow_protocol::JobSubmission::new(
            title,
            furrow_protocol::Json(serde_json::Value::Null),
            frames,
        )),
        ranges: set.ranges().to_vec(),
        batches: set.batches(1).collect(),
    }
}

fn running_row(id: i64, agent: Uuid) -> TaskRow {
    TaskRow {
        id,
        state: WorkState::Running,
        agent: Some(agent),
        attempt: 1,
        failures: 0,
        exit_code: None,
        progress: 0.25,
        last_error: None,
        started_at: Some(1_000),
        finished_at: None,
        gpus: vec![0],
        ram_mb: 0,
    }
}

fn writes(tasks: Vec<TaskRow>, jobs: Vec<JobRow>) -> Vec<Write> {
    tasks
        .into_iter()
        .map(Write::Task)
        .chain(jobs.into_iter().map(Write::Job))
        .collect()
}

async fn commit_durable(store: &actix::Addr<Store>, writes: Vec<Write>) {
    let (sender, committed) = tokio::sync::oneshot::channel();
    store.do_send(CommitBatch {
        writes,
        notify: Some(sender.into()),
    });
    committed.await.unwrap().unwrap();
}

fn job_row(id: i64, counts: TaskCounts, finished_at: Option<i64>) -> JobRow {
    JobRow {
        id,
        counts,
        finished_at,
        control: Control::Active,
        priority: 0,
        settings: JobSettings::of(&furrow_protocol::JobSubmission::new(
            "",
            furrow_protocol::Json(serde_json::Value::Null),
            "",
        )),
        blocklist: Vec::new(),
    }
}

/// The shared test body.
async fn exercise(db: Db, url: Option<String>, data_dir: &std::path::Path) {
    let applied: Vec<String> = db
        .conn()
        .query_all_raw(sea_orm::Statement::from_string(
            db.backend(),
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect();
    assert_eq!(
        applied,
        vec![
            "m0001_initial",
            "m0002_scheduling",
            "m0003_jobtypes",
            "m0004_access",
            "m0005_master_state",
            "m0006_browse",
            "m0007_apps",
            "m0008_log_packs",
        ]
    );
    let reader = StoreReader::new(db.clone());
    let empty = reader.load().await.unwrap();
    assert!(empty.jobs.is_empty() && empty.tasks.is_empty());
    assert_eq!((empty.max_job_id, empty.max_task_id), (0, 0));

    let store = Store::new(db.clone(), 0, 0, ChangeFeed::new()).start();
    let first = store
        .send(InsertJob(new_job("first", "1-10", 0)))
        .await
        .unwrap()
        .unwrap();
    let second = store
        .send(InsertJob(new_job("second", "1-3", 5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.record.id, 1);
    assert_eq!(first.first_task_id, 1);
    assert_eq!(second.first_task_id, 11);
    assert_eq!(
        second.batches[2],
        FrameBatch {
            start: 3,
            end: 3,
            step: 1
        }
    );

    // Committed before acknowledged: visible to a reader at once.
    let job = reader.get_job(1).await.unwrap().unwrap();
    assert_eq!(job.counts.queued, 10);
    assert_eq!(job.view().state, WorkState::Queued);
    assert_eq!(job.timeout_secs, Some(60));
    let tasks = reader.list_tasks(1, 100, 0).await.unwrap();
    assert_eq!(tasks.len(), 10);
    assert_eq!(
        tasks.iter().map(|t| t.frame).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let (jobs, total) = reader.list_jobs(10, 0).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(jobs[0].title, "second", "newest first");

    // Transitions go through group commits; a durable batch is answered once committed.
    let agent = Uuid::new_v4();
    commit_durable(
        &store,
        writes(
            vec![running_row(1, agent), running_row(2, agent)],
            vec![job_row(
                1,
                TaskCounts {
                    queued: 8,
                    running: 2,
                    ..TaskCounts::default()
                },
                None,
            )],
        ),
    )
    .await;
    let running = reader.get_task(2).await.unwrap().unwrap();
    assert_eq!((running.state.as_str(), running.attempt), ("running", 1));
    assert_eq!(reader.get_job(1).await.unwrap().unwrap().counts.running, 2);
    // The newest row of a task wins.
    let mut done = running_row(1, agent);
    done.state = WorkState::Done;
    done.agent = None;
    done.exit_code = Some(0);
    done.progress = 1.0;
    done.finished_at = Some(2_000);
    store.do_send(CommitBatch {
        writes: writes(
            vec![done],
            vec![job_row(
                1,
                TaskCounts {
                    queued: 8,
                    running: 1,
                    done: 1,
                    ..TaskCounts::default()
                },
                None,
            )],
        ),
        notify: None,
    });
    store.do_send(UpsertAgent(AgentRow {
        id: agent,
        name: "node-1".into(),
        hostname: "node-1".into(),
        os: "linux".into(),
        cpus: 8,
        ram_mb: 16_000,
        gpus: "[]".into(),
        tags: "[\"gpu\"]".into(),
        software: "{\"blender\":\"4.2\"}".into(),
        slots: 4,
        version: "0.1.0".into(),
        last_seen: 5_000,
    }));
    store.do_send(UpsertLogIndex(vec![
        LogIndexRow {
            task_id: 1,
            attempt: 1,
            job_id: 1,
            path: "logs/1/1.1.log".into(),
            file_offset: 0,
            size: 42,
        },
        LogIndexRow {
            task_id: 2,
            attempt: 1,
            job_id: 1,
            path: "logs/1/short.log".into(),
            file_offset: 120,
            size: 30,
        },
    ]));
    store.send(Flush).await.unwrap().unwrap();

    let job = reader.get_job(1).await.unwrap().unwrap();
    assert_eq!(
        (job.counts.done, job.counts.running, job.counts.queued),
        (1, 1, 8)
    );
    assert_eq!(job.view().state, WorkState::Running);
    let task1 = reader.get_task(1).await.unwrap().unwrap();
    assert_eq!(task1.state, "done");
    assert_eq!(task1.exit_code, Some(0));
    assert_eq!(task1.finished_at, Some(2_000));
    let task2 = reader.get_task(2).await.unwrap().unwrap();
    assert_eq!(task2.agent, Some(agent.to_string()));
    assert!((task2.progress - 0.25).abs() < 1e-6);
    let index = reader.get_log_index(1, 1).await.unwrap().unwrap();
    assert_eq!(
        (index.path.as_str(), index.file_offset, index.size),
        ("logs/1/1.1.log", 0, 42)
    );
    let packed = reader.get_log_index(2, 1).await.unwrap().unwrap();
    assert_eq!(
        (packed.path.as_str(), packed.file_offset, packed.size),
        ("logs/1/short.log", 120, 30)
    );
    // Lines after the result moved that attempt's text to a file of its own.
    store.do_send(UpsertLogIndex(vec![LogIndexRow {
        task_id: 2,
        attempt: 1,
        job_id: 1,
        path: "logs/1/2.1.log".into(),
        file_offset: 0,
        size: 45,
    }]));
    store.send(Flush).await.unwrap().unwrap();
    let moved = reader.get_log_index(2, 1).await.unwrap().unwrap();
    assert_eq!(
        (moved.path.as_str(), moved.file_offset, moved.size),
        ("logs/1/2.1.log", 0, 45)
    );

    // Task 5 failed once and waits for its second attempt.
    let mut requeued = running_row(5, agent);
    requeued.state = WorkState::Queued;
    requeued.agent = None;
    requeued.failures = 1;
    store.do_send(CommitBatch {
        writes: writes(vec![requeued], Vec::new()),
        notify: None,
    });
    store.send(Flush).await.unwrap().unwrap();

    // Reload: every task of the unfinished jobs, the done one too, the running one with
    // its agent and GPUs, the requeued one with its attempt, the untouched ones rebuilt
    // with their frames.
    let loaded = reader.load().await.unwrap();
    let ids: Vec<i64> = loaded.tasks.iter().map(|t| t.id).collect();
    assert_eq!(ids, (1..=13).collect::<Vec<_>>());
    assert_eq!(loaded.tasks[0].state, WorkState::Done);
    let fifth = &loaded.tasks[4];
    assert_eq!(
        (fifth.state, fifth.attempt, fifth.failures),
        (WorkState::Queued, 1, 1)
    );
    for task in &loaded.tasks {
        let (job, first_frame) = if task.id <= 10 { (1, 1) } else { (2, 11) };
        assert_eq!(task.job_id, job);
        let frame = task.id - first_frame + 1;
        assert_eq!(
            task.frames,
            FrameBatch {
                start: frame,
                end: frame,
                step: 1
            }
        );
    }
    assert_eq!(loaded.jobs.len(), 2);
    assert_eq!(loaded.tasks.len(), 13);
    let running = loaded.tasks.iter().find(|t| t.id == 2).unwrap();
    assert_eq!(
        (
            running.state,
            running.agent,
            running.attempt,
            running.gpus.clone()
        ),
        (WorkState::Running, Some(agent), 1, vec![0])
    );
    assert_eq!((loaded.max_job_id, loaded.max_task_id), (2, 13));
    assert_eq!(loaded.agents.len(), 1);
    assert_eq!(loaded.agents[0].slots, 4);

    // A job's control, settings and blocklist survive a reload.
    let mut paused = job_row(
        1,
        TaskCounts {
            queued: 7,
            running: 1,
            done: 1,
            paused: 1,
            ..TaskCounts::default()
        },
        None,
    );
    paused.control = Control::Paused;
    paused.priority = 42;
    paused.settings.queue = "studio".into();
    paused.settings.weight = 5;
    paused.settings.max_agents = Some(3);
    paused.settings.requirements.gpus = 2;
    paused.settings.requirements.tags = vec!["!laptop".into()];
    paused.blocklist = vec![furrow_protocol::BlockedAgent { agent, failures: 3 }];
    commit_durable(&store, writes(Vec::new(), vec![paused])).await;
    let record = reader.get_job(1).await.unwrap().unwrap();
    assert_eq!(record.control, Control::Paused);
    assert_eq!(record.priority, 42);
    assert_eq!(
        (
            record.settings.queue.as_str(),
            record.settings.weight,
            record.settings.max_agents
        ),
        ("studio", 5, Some(3))
    );
    assert_eq!(record.settings.requirements.gpus, 2);
    assert_eq!(record.settings.requirements.tags, vec!["!laptop"]);
    assert_eq!(record.blocklist.len(), 1);
    assert_eq!(record.blocklist[0].agent, agent);
    assert_eq!(record.view().state, WorkState::Running);

    // A finished job is no longer loaded.
    store.do_send(CommitBatch {
        writes: writes(
            Vec::new(),
            vec![job_row(
                2,
                TaskCounts {
                    done: 3,
                    ..TaskCounts::default()
                },
                Some(9_000),
            )],
        ),
        notify: None,
    });
    store.send(Flush).await.unwrap().unwrap();
    let job = reader.get_job(2).await.unwrap().unwrap();
    assert_eq!(job.view().state, WorkState::Done);
    assert_eq!(job.finished_at, Some(9_000));
    let loaded = reader.load().await.unwrap();
    assert_eq!(
        loaded.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![1]
    );

    // Long ranges are generated by the database, short ones listed: both must match the
    // batches the scheduler gets, task by task.
    let mut mixed = new_job("mixed", "1-1000:3,5000-5002,7,-20--1", 0);
    let set: FrameSet = mixed.frames.parse().unwrap();
    mixed.batch = 4;
    mixed.batches = set.batches(4).collect();
    let inserted = store.send(InsertJob(mixed)).await.unwrap().unwrap();
    let stored = reader
        .list_tasks(inserted.record.id, 10_000, 0)
        .await
        .unwrap();
    assert_eq!(stored.len(), inserted.batches.len());
    assert_eq!(stored.len(), 84 + 1 + 1 + 5);
    for (i, (task, batch)) in stored.iter().zip(&inserted.batches).enumerate() {
        assert_eq!(task.id, inserted.first_task_id + i as i64);
        assert_eq!(
            (task.frame, task.frame_end, task.step),
            (batch.start, batch.end, batch.step)
        );
        assert_eq!(task.state, WorkState::Queued);
    }
    assert_eq!(
        stored[83].frame_end, 1000,
        "the last batch of a range ends on its last frame"
    );

    // A group commit larger than one UPDATE statement.
    let chunked = store
        .send(InsertJob(new_job("chunked", "1-1200", 0)))
        .await
        .unwrap()
        .unwrap();
    let rows: Vec<TaskRow> = (0..1200)
        .map(|i| {
            let mut row = running_row(chunked.first_task_id + i, agent);
            row.attempt = 2;
            row.last_error = (i % 2 == 0).then(|| format!("it's error {i}"));
            row
        })
        .collect();
    commit_durable(&store, writes(rows, Vec::new())).await;
    let stored = reader
        .list_tasks(chunked.record.id, 10_000, 0)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1200);
    assert!(
        stored
            .iter()
            .all(|t| t.state == WorkState::Running && t.attempt == 2)
    );
    assert_eq!(stored[10].last_error.as_deref(), Some("it's error 10"));
    assert_eq!(stored[11].last_error, None);

    // Bulk writes keep their place among the rows: a row made after a bulk write lands
    // after it, one made before lands before it.
    let bulk_job = store
        .send(InsertJob(new_job("bulk", "1-6", 0)))
        .await
        .unwrap()
        .unwrap();
    let (job_id, first) = (bulk_job.record.id, bulk_job.first_task_id);
    let mut early = running_row(first, agent);
    early.state = WorkState::Queued;
    early.agent = None;
    early.last_error = Some("before the pause".into());
    let mut late = running_row(first + 1, agent);
    late.state = WorkState::Queued;
    late.agent = None;
    commit_durable(
        &store,
        vec![
            Write::Task(early),
            Write::Bulk(BulkWrite::TaskStates {
                job_id,
                from: vec![WorkState::Queued],
                to: WorkState::Paused,
                reset: false,
            }),
            Write::Task(late),
            Write::Attempt(AttemptRow {
                task_id: first + 2,
                attempt: 1,
                job_id,
                agent: Some(agent),
                started_at: Some(1_000),
                finished_at: 2_000,
                exit_code: Some(3),
                outcome: "failed",
                error: Some("exited with code 3".into()),
            }),
            Write::Bulk(BulkWrite::PutQueue(Queue {
                path: "studio".into(),
                priority: 2,
                weight: 3,
                min_agents: 1,
                max_agents: Some(4),
            })),
            Write::Bulk(BulkWrite::PutQueue(Queue {
                path: "studio/lighting".into(),
                priority: 0,
                weight: 1,
                min_agents: 0,
                max_agents: None,
            })),
            Write::Bulk(BulkWrite::DeleteQueue("studio/lighting".into())),
            Write::Bulk(BulkWrite::AgentSettings {
                id: agent,
                enabled: false,
                tags: Some(vec!["fast".into()]),
            }),
        ],
    )
    .await;
    let tasks = reader.list_tasks(job_id, 10, 0).await.unwrap();
    let states: Vec<WorkState> = tasks.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            WorkState::Paused,
            WorkState::Queued,
            WorkState::Paused,
            WorkState::Paused,
            WorkState::Paused,
            WorkState::Paused
        ]
    );
    assert_eq!(tasks[0].last_error.as_deref(), Some("before the pause"));
    let attempts = reader.attempts(first + 2).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].exit_code,
            attempts[0].outcome.as_str(),
            attempts[0].agent
        ),
        (Some(3), "failed", Some(agent))
    );
    let loaded = reader.load().await.unwrap();
    assert_eq!(
        loaded.queues,
        vec![Queue {
            path: "studio".into(),
            priority: 2,
            weight: 3,
            min_agents: 1,
            max_agents: Some(4),
        }]
    );
    assert_eq!(
        loaded.agent_settings.get(&agent),
        Some(&AgentSettingsRow {
            enabled: false,
            tags: Some(vec!["fast".into()]),
        })
    );
    // A rerun resets the outcome; a new frame range replaces the tasks; a deletion
    // removes the job with its tasks and attempts.
    commit_durable(
        &store,
        vec![Write::Bulk(BulkWrite::TaskStates {
            job_id,
            from: vec![WorkState::Paused, WorkState::Queued],
            to: WorkState::Queued,
            reset: true,
        })],
    )
    .await;
    let tasks = reader.list_tasks(job_id, 10, 0).await.unwrap();
    assert!(
        tasks
            .iter()
            .all(|t| t.state == WorkState::Queued && t.last_error.is_none())
    );
    let set: FrameSet = "10-12".parse().unwrap();
    commit_durable(
        &store,
        vec![Write::Bulk(BulkWrite::ReplaceTasks {
            job_id,
            frames: NewFrames {
                frames: set.to_string(),
                batch: 1,
                first_task_id: 90_000,
                ranges: set.ranges().to_vec(),
                batches: set.batches(1).collect(),
            },
        })],
    )
    .await;
    let tasks = reader.list_tasks(job_id, 10, 0).await.unwrap();
    assert_eq!(
        tasks.iter().map(|t| (t.id, t.frame)).collect::<Vec<_>>(),
        [(90_000, 10), (90_001, 11), (90_002, 12)]
    );
    assert_eq!(
        reader.get_job(job_id).await.unwrap().unwrap().frames,
        "10-12"
    );
    // Outputs and previews: a file produced again replaces its row, the newest preview of
    // a frame wins, and both go with their job.
    let file = |path: &str, size: u64, frame: i64| furrow_protocol::OutputFile {
        path: path.into(),
        size,
        frame: Some(frame),
    };
    let preview = |frame: i64, byte: u8| PreviewRow {
        job_id,
        frame,
        task_id: 90_000,
        mime: "image/jpeg".into(),
        width: 320,
        height: 180,
        data: vec![0xFF, 0xD8, byte],
    };
    commit_durable(
        &store,
        vec![
            Write::Outputs(OutputRows {
                job_id,
                task_id: 90_000,
                at: 7_000,
                files: vec![file("/r/a_0010.png", 5, 10), file("/r/a_0011.png", 6, 11)],
            }),
            Write::Outputs(OutputRows {
                job_id,
                task_id: 90_001,
                at: 8_000,
                files: vec![file("/r/a_0010.png", 9, 10)],
            }),
            Write::Preview(preview(10, 1)),
            Write::Preview(preview(10, 2)),
        ],
    )
    .await;
    let outputs = reader.outputs(job_id).await.unwrap();
    assert_eq!(
        outputs
            .iter()
            .map(|o| (o.path.as_str(), o.size, o.task_id, o.preview))
            .collect::<Vec<_>>(),
        [
            ("/r/a_0010.png", 9, 90_001, true),
            ("/r/a_0011.png", 6, 90_000, false)
        ]
    );
    assert_eq!(
        reader.preview(job_id, 10).await.unwrap(),
        Some(("image/jpeg".to_string(), vec![0xFF, 0xD8, 2]))
    );
    assert_eq!(reader.preview(job_id, 11).await.unwrap(), None);

    // Job types keep the first text of a version; path maps come and go.
    let put = |version: u32, source: &str| {
        Write::Bulk(BulkWrite::PutJobType {
            name: "say".into(),
            version,
            source: source.into(),
        })
    };
    commit_durable(
        &store,
        vec![put(1, "one"), put(2, "two"), put(1, "changed")],
    )
    .await;
    assert_eq!(
        reader.jobtypes().await.unwrap(),
        [
            ("say".to_string(), 1, "one".to_string()),
            ("say".to_string(), 2, "two".to_string())
        ]
    );
    let map = |id: i64, tag: &str| furrow_protocol::PathMapView {
        id,
        map: furrow_protocol::PathMapSpec {
            linux: "/mnt/p".into(),
            windows: "P:\\".into(),
            macos: String::new(),
            tag: tag.into(),
        },
    };
    commit_durable(
        &store,
        vec![
            Write::Bulk(BulkWrite::PutPathMap(map(1, ""))),
            Write::Bulk(BulkWrite::PutPathMap(map(2, "ssd"))),
            Write::Bulk(BulkWrite::DeletePathMap(1)),
        ],
    )
    .await;
    assert_eq!(reader.path_maps().await.unwrap(), [map(2, "ssd")]);

    // Users, tokens (hashes only) and the audit log.
    let user = |name: &str, role: &str, hash: Option<&str>| UserRow {
        name: name.into(),
        role: role.into(),
        password_hash: hash.map(str::to_string),
        created_at: 1_000,
    };
    let token = |id: &str, user: &str, agent: Option<Uuid>| TokenRow {
        id: id.into(),
        hash: format!("hash-{id}"),
        kind: if agent.is_some() { "agent" } else { "api" }.into(),
        user: user.into(),
        label: "label".into(),
        agent_id: agent,
        created_at: 2_000,
        expires_at: Some(9_000),
        revoked_at: None,
    };
    let agent = Uuid::new_v4();
    commit_durable(
        &store,
        vec![
            Write::Bulk(BulkWrite::PutUser(user(
                "alice",
                "user",
                Some("$argon2id$x"),
            ))),
            Write::Bulk(BulkWrite::PutUser(user("bob", "viewer", None))),
            Write::Bulk(BulkWrite::PutUser(user("alice", "operator", None))),
            Write::Bulk(BulkWrite::PutToken(token("t1", "alice", None))),
            Write::Bulk(BulkWrite::PutToken(token("t2", "bob", None))),
            Write::Bulk(BulkWrite::PutToken(token("t3", "alice", Some(agent)))),
            Write::Bulk(BulkWrite::RevokeTokens {
                ids: vec!["t1".into()],
                at: 3_000,
            }),
            Write::Bulk(BulkWrite::DeleteUser {
                name: "bob".into(),
                at: 4_000,
            }),
            Write::Bulk(BulkWrite::Audit(AuditRow {
                id: 1,
                at: 5_000,
                user: "alice".into(),
                action: "job.submit".into(),
                target: "job 1".into(),
                peer: "127.0.0.1".into(),
            })),
            Write::Bulk(BulkWrite::Audit(AuditRow {
                id: 2,
                at: 6_000,
                user: "alice".into(),
                action: "job.cancel".into(),
                target: "job 1".into(),
                peer: "::1".into(),
            })),
        ],
    )
    .await;
    assert_eq!(
        reader.users().await.unwrap(),
        [user("alice", "operator", None)]
    );
    let tokens = reader.tokens().await.unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[0].revoked_at, Some(3_000));
    assert_eq!(
        tokens[1].revoked_at,
        Some(4_000),
        "bob's token went with bob"
    );
    assert_eq!(tokens[2], token("t3", "alice", Some(agent)));
    // A removed agent's credentials no longer name it, so it may join again after a restart.
    commit_durable(&store, vec![Write::Bulk(BulkWrite::DeleteAgent(agent))]).await;
    assert_eq!(reader.tokens().await.unwrap()[2].agent_id, None);
    let (audit, total) = reader.audit(1, 0).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(audit[0].action, "job.cancel");
    assert_eq!(reader.max_audit_id().await.unwrap(), 2);

    // Apps: rows, releases and history round-trip; a delete takes them all.
    let app = AppRow {
        name: "hello".into(),
        tags: vec!["web".into()],
        webserver: "nginx".into(),
        current_release: None,
        notifications: vec![furrow_protocol::AppNotification {
            pattern: "^error".into(),
            webhook: "http://127.0.0.1:9/hook".into(),
        }],
        created_by: "alice".into(),
        created_at: 7_000,
    };
    let release = |number: u32| AppReleaseRow {
        app: "hello".into(),
        number,
        version: format!("1.0.{number}"),
        digest: "ab".repeat(32),
        size: 5_000_000_000,
        source: "upload".into(),
        manifest: "name: hello".into(),
        spec: (number == 2).then(|| "fields: {}".to_string()),
        spec_format: (number == 2).then(|| "yaml".to_string()),
        config: "{\"greeting\":\"hi\"}".into(),
        created_by: "alice".into(),
        created_at: 8_000 + i64::from(number),
    };
    let event = |id: i64, release: Option<u32>| AppEventRow {
        id,
        app: "hello".into(),
        at: 9_000 + id,
        by: "alice".into(),
        action: "deployed".into(),
        release,
        detail: "version 1.0".into(),
    };
    let current = AppRow {
        current_release: Some(2),
        ..app.clone()
    };
    commit_durable(
        &store,
        vec![
            Write::Bulk(BulkWrite::PutApp(app.clone())),
            Write::Bulk(BulkWrite::PutAppRelease(release(1))),
            Write::Bulk(BulkWrite::PutAppRelease(release(2))),
            Write::Bulk(BulkWrite::PutApp(current.clone())),
            Write::Bulk(BulkWrite::AppEvent(event(1, None))),
            Write::Bulk(BulkWrite::AppEvent(event(2, Some(2)))),
        ],
    )
    .await;
    assert_eq!(reader.apps().await.unwrap(), [current]);
    assert_eq!(
        reader.app_releases().await.unwrap(),
        [release(1), release(2)]
    );
    assert_eq!(
        reader.app_events("hello", 1).await.unwrap(),
        [event(2, Some(2))]
    );
    assert_eq!(reader.max_app_event_id().await.unwrap(), 2);
    commit_durable(
        &store,
        vec![Write::Bulk(BulkWrite::DeleteApp("hello".into()))],
    )
    .await;
    assert!(reader.apps().await.unwrap().is_empty());
    assert!(reader.app_releases().await.unwrap().is_empty());
    assert!(reader.app_events("hello", 10).await.unwrap().is_empty());

    let (_, before) = reader.list_jobs(1, 0).await.unwrap();
    commit_durable(&store, vec![Write::Bulk(BulkWrite::DeleteJob { job_id })]).await;
    // The number of jobs is kept through the commits, not counted per page: one fewer,
    // and a job deleted twice is counted once.
    assert_eq!(reader.list_jobs(1, 0).await.unwrap().1, before - 1);
    commit_durable(&store, vec![Write::Bulk(BulkWrite::DeleteJob { job_id })]).await;
    let (_, after) = reader.list_jobs(1, 0).await.unwrap();
    assert_eq!(after, before - 1);
    assert_eq!(after, 4, "as many as a master opening the database counts");
    assert!(reader.outputs(job_id).await.unwrap().is_empty());
    assert_eq!(reader.preview(job_id, 10).await.unwrap(), None);
    assert!(reader.get_job(job_id).await.unwrap().is_none());
    assert!(reader.list_tasks(job_id, 10, 0).await.unwrap().is_empty());
    assert!(reader.attempts(first + 2).await.unwrap().is_empty());

    // On PostgreSQL a second master is refused while the first holds the database,
    // naming it. (Its lock goes with the first master: see `postgres_store`.)
    if url.is_some() {
        let refused = Db::open(url.as_deref(), data_dir).await.unwrap_err();
        let refused = refused.to_string();
        assert!(
            refused.contains("another furrow master is using this database: furrow master on"),
            "{refused}"
        );
        return;
    }
    reopen(url, data_dir).await;
}

/// Opening again applies no migration twice and sees the same data.
async fn reopen(url: Option<String>, data_dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let again = loop {
        match Db::open(url.as_deref(), data_dir).await {
            Ok(db) => break db,
            // The server notices the first master's connection closed shortly.
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("another furrow master"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the lock was not released: {e}"),
        }
    };
    let (_, total) = StoreReader::new(again.clone())
        .list_jobs(1, 0)
        .await
        .unwrap();
    assert_eq!(total, 4);
    again.close().await.ok();
}

#[test]
fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    System::new().block_on(async {
        let db = Db::open(None, dir.path()).await.unwrap();
        assert_eq!(db.backend(), DbBackend::Sqlite);
        let mode = db
            .conn()
            .query_one_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA journal_mode",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mode.try_get_by_index::<String>(0).unwrap(), "wal");
        exercise(db, None, dir.path()).await;
    });
    assert!(dir.path().join("furrow.db").exists());
}

#[test]
fn postgres_store() {
    let dir = tempfile::tempdir().unwrap();
    let pg = System::new().block_on(async {
        let pg = TempPostgres::create().await;
        let db = Db::open(Some(&pg.url), dir.path()).await.unwrap();
        assert_eq!(db.backend(), DbBackend::Postgres);
        exercise(db, Some(pg.url.clone()), dir.path()).await;
        pg
    });
    // The first master (this system, with its store) is gone, and its lock with it.
    System::new().block_on(async {
        reopen(Some(pg.url.clone()), dir.path()).await;
        pg.drop_db().await;
    });
}

#[test]
fn large_submission_is_inserted_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    System::new().block_on(async {
        let db = Db::open(None, dir.path()).await.unwrap();
        let store = Store::new(db.clone(), 0, 0, ChangeFeed::new()).start();
        let inserted = store
            .send(InsertJob(new_job("big", "1-20000", 0)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inserted.batches.len(), 20_000);
        let reader = StoreReader::new(db);
        let last = reader.get_task(20_000).await.unwrap().unwrap();
        assert_eq!((last.job_id, last.frame), (1, 20_000));
        assert_eq!(
            reader.get_job(1).await.unwrap().unwrap().counts.queued,
            20_000
        );
    });
}

/// A script commits as one transaction: when a statement fails, nothing of the ones
/// before it is kept and the connection writes again afterwards. Text read from the JSON
/// rows arrives as written.
async fn scripts(db: Db) {
    use super::sql::{self, Script};
    let conn = db.connect_writer().await.unwrap();
    let backend = db.backend();
    let row = |path: &str, size: u64| LogIndexRow {
        task_id: 7,
        attempt: 1,
        job_id: 3,
        path: path.into(),
        file_offset: 0,
        size,
    };
    let count = || async {
        conn.query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM task_logs",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
    };

    let mut failing = Script::new(backend);
    sql::upsert_logs(&mut failing, [row("logs/a", 1)].iter(), 5);
    failing.push("INSERT INTO no_such_table (x) VALUES (1)", Vec::new());
    let error = failing.commit(&conn).await.unwrap_err();
    assert!(error.to_string().contains("no_such_table"), "{error}");
    assert_eq!(
        count().await,
        0,
        "the statement before the failure was kept"
    );

    let text = "l'og \"quoted\" \\ back, line\nbreak, ünïcødé ✓";
    let mut script = Script::new(backend);
    sql::upsert_logs(&mut script, [row(text, 2)].iter(), 5);
    script.commit(&conn).await.unwrap();
    let stored = conn
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT path, size, updated_at FROM task_logs",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.try_get_by_index::<String>(0).unwrap(), text);
    assert_eq!(stored.try_get_by_index::<i64>(1).unwrap(), 2);
    assert_eq!(stored.try_get_by_index::<i64>(2).unwrap(), 5);
    conn.close().await.ok();
}

#[test]
fn sqlite_scripts() {
    let dir = tempfile::tempdir().unwrap();
    System::new().block_on(async {
        scripts(Db::open(None, dir.path()).await.unwrap()).await;
    });
}

#[test]
fn postgres_scripts() {
    let dir = tempfile::tempdir().unwrap();
    System::new().block_on(async {
        let pg = TempPostgres::create().await;
        let db = Db::open(Some(&pg.url), dir.path()).await.unwrap();
        scripts(db.clone()).await;
        db.close().await.ok();
        pg.drop_db().await;
    });
}
