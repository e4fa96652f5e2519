//! Tasks by frame and pages that seek by frame or filter by state, on both backends.

use actix::prelude::*;
use furrow_protocol::{TaskCounts, TaskQuery, WorkState};
use sea_orm::{ConnectionTrait, DbBackend};
use uuid::Uuid;

use super::{TempPostgres, commit_durable, job_row, new_job, running_row, writes};
use crate::changes::ChangeFeed;
use crate::store::{Db, InsertJob, Store, StoreReader};

fn frames_of(page: &[furrow_protocol::TaskView]) -> Vec<(i64, i64)> {
    page.iter().map(|t| (t.frame, t.frame_end)).collect()
}

async fn browse(db: Db) {
    let store = Store::new(db.clone(), 0, 0, ChangeFeed::new()).start();
    // A job before, so the browsed job's ids do not start at 1.
    store
        .send(InsertJob(new_job("before", "1-7", 0)))
        .await
        .unwrap()
        .unwrap();
    let mut batched = new_job("batched", "1-20", 0);
    let set: furrow_protocol::FrameSet = "1-20".parse().unwrap();
    batched.batch = 2;
    batched.batches = set.batches(2).collect();
    let job = store.send(InsertJob(batched)).await.unwrap().unwrap();
    let stepped = store
        .send(InsertJob(new_job("stepped", "10-30:5", 0)))
        .await
        .unwrap()
        .unwrap();
    let reader = StoreReader::new(db.clone());
    let id = job.record.id;

    // The task covering a frame, in the middle or at the end of a batch.
    let task = reader.task_at_frame(id, 4).await.unwrap().unwrap();
    assert_eq!(
        (task.frame, task.frame_end, task.id),
        (3, 4, job.first_task_id + 1)
    );
    let last = reader.task_at_frame(id, 20).await.unwrap().unwrap();
    assert_eq!(last.frame, 19);
    assert!(reader.task_at_frame(id, 21).await.unwrap().is_none());
    assert!(reader.task_at_frame(id, 0).await.unwrap().is_none());
    // A frame between the steps of a job is not one of its frames.
    let sid = stepped.record.id;
    assert_eq!(
        reader.task_at_frame(sid, 15).await.unwrap().unwrap().frame,
        15
    );
    assert!(reader.task_at_frame(sid, 12).await.unwrap().is_none());
    assert!(reader.task_at_frame(sid, 35).await.unwrap().is_none());

    // A plain page by position (a seek by id: the job's ids are consecutive).
    let plain = TaskQuery {
        offset: 3,
        ..TaskQuery::first(2)
    };
    let page = reader.browse_tasks(id, &plain, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(7, 8), (9, 10)]);
    // The same through OFFSET when the count does not match the ids.
    let page = reader.browse_tasks(id, &plain, 11).await.unwrap();
    assert_eq!(frames_of(&page), vec![(7, 8), (9, 10)]);
    let past = TaskQuery {
        offset: 10,
        ..TaskQuery::first(5)
    };
    assert!(reader.browse_tasks(id, &past, 10).await.unwrap().is_empty());

    // From a frame inside a batch: that batch first.
    let from = TaskQuery {
        from_frame: Some(6),
        ..TaskQuery::first(2)
    };
    let page = reader.browse_tasks(id, &from, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(5, 6), (7, 8)]);
    // Next and previous pages from a page's ends.
    let next = TaskQuery {
        after_frame: Some(7),
        ..TaskQuery::first(2)
    };
    let page = reader.browse_tasks(id, &next, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(9, 10), (11, 12)]);
    let previous = TaskQuery {
        before_frame: Some(5),
        ..TaskQuery::first(3)
    };
    let page = reader.browse_tasks(id, &previous, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(1, 2), (3, 4)]);
    // A frame of another job's step: the first task after it.
    let from_gap = TaskQuery {
        from_frame: Some(12),
        ..TaskQuery::first(1)
    };
    let page = reader.browse_tasks(sid, &from_gap, 5).await.unwrap();
    assert_eq!(frames_of(&page), vec![(15, 15)]);

    // By state: only the running ones, in frame order, from any frame.
    let agent = Uuid::new_v4();
    let counts = TaskCounts {
        queued: 8,
        running: 2,
        ..TaskCounts::default()
    };
    commit_durable(
        &store,
        writes(
            vec![
                running_row(job.first_task_id + 2, agent),
                running_row(job.first_task_id + 7, agent),
            ],
            vec![job_row(id, counts, None)],
        ),
    )
    .await;
    let running = TaskQuery {
        state: Some(WorkState::Running),
        ..TaskQuery::first(10)
    };
    let page = reader.browse_tasks(id, &running, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(5, 6), (15, 16)]);
    let running_after = TaskQuery {
        after_frame: Some(5),
        ..running.clone()
    };
    let page = reader.browse_tasks(id, &running_after, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(15, 16)]);
    assert_eq!(
        reader
            .first_frame_in(id, Some(WorkState::Running))
            .await
            .unwrap(),
        Some(5)
    );
    assert_eq!(
        reader
            .first_frame_in(id, Some(WorkState::Failed))
            .await
            .unwrap(),
        None
    );
    let queued_from = TaskQuery {
        from_frame: Some(5),
        state: Some(WorkState::Queued),
        ..TaskQuery::first(2)
    };
    let page = reader.browse_tasks(id, &queued_from, 10).await.unwrap();
    assert_eq!(frames_of(&page), vec![(7, 8), (9, 10)]);
}

/// The query plans name the indexes: no lookup by frame or page by state scans a job.
async fn plans_use_indexes(db: &Db) {
    for (sql, index) in [
        (
            "SELECT * FROM tasks WHERE job_id = 2 AND frame <= 5 ORDER BY frame DESC LIMIT 1",
            "tasks_job_frame",
        ),
        (
            "SELECT * FROM tasks WHERE job_id = 2 AND state = 'running' AND frame > 5 \
             ORDER BY frame LIMIT 50",
            "tasks_job_state",
        ),
    ] {
        let plan: Vec<String> = db
            .conn()
            .query_all_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {sql}"),
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get_by_index::<String>(3).unwrap())
            .collect();
        let plan = plan.join(" / ");
        assert!(plan.contains(index), "{sql}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
    }
}

#[test]
fn sqlite_browse() {
    let dir = tempfile::tempdir().unwrap();
    System::new().block_on(async {
        let db = Db::open(None, dir.path()).await.unwrap();
        browse(db.clone()).await;
        plans_use_indexes(&db).await;
    });
}

#[test]
fn postgres_browse() {
    let dir = tempfile::tempdir().unwrap();
    System::new().block_on(async {
        let pg = TempPostgres::create().await;
        let db = Db::open(Some(&pg.url), dir.path()).await.unwrap();
        browse(db.clone()).await;
        db.close().await.ok();
        pg.drop_db().await;
    });
}
