//! Reads that browse a job's tasks by frame: every one is a seek in an index
//! (`tasks_job_frame`, `tasks_job_state`, `tasks_job`), never a scan of the job's tasks,
//! so a page deep in a million-task job costs what its first page costs.

use furrow_protocol::{JobId, TaskQuery, TaskView, WorkState};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use super::StoreReader;
use super::task_view;
use crate::store::entities::task;
use crate::store::sql::statement;

/// Whether a task row covers `frame`.
fn covers(row: &task::Model, frame: i64) -> bool {
    row.frame <= frame && frame <= row.frame_end && (frame - row.frame) % row.step.max(1) == 0
}

impl StoreReader {
    /// The task of `job_id` covering `frame`, if the job renders that frame.
    ///
    /// Tasks of a job do not overlap and are in frame order, so the only candidate is
    /// the last task starting at or before the frame (one seek in `tasks_job_frame`).
    pub async fn task_at_frame(
        &self,
        job_id: JobId,
        frame: i64,
    ) -> Result<Option<task::Model>, DbErr> {
        let row = task::Entity::find()
            .filter(task::Column::JobId.eq(job_id))
            .filter(task::Column::Frame.lte(frame))
            .order_by_desc(task::Column::Frame)
            .limit(1)
            .one(self.db.conn())
            .await?;
        Ok(row.filter(|row| covers(row, frame)))
    }

    /// A page of a job's tasks in frame order, as `query` says; `total` is the number
    /// of the job's tasks (all of them: ids are consecutive within a job when the rows
    /// number exactly that many, which turns a plain `offset` into a seek by id).
    pub async fn browse_tasks(
        &self,
        job_id: JobId,
        query: &TaskQuery,
        total: u64,
    ) -> Result<Vec<TaskView>, DbErr> {
        if query.is_plain() {
            if let Some(first) = self.first_id_if_contiguous(job_id, total).await? {
                let start = first.saturating_add(i64::try_from(query.offset).unwrap_or(i64::MAX));
                let rows = task::Entity::find()
                    .filter(task::Column::JobId.eq(job_id))
                    .filter(task::Column::Id.gte(start))
                    .order_by_asc(task::Column::Id)
                    .limit(query.limit)
                    .all(self.db.conn())
                    .await?;
                return rows.iter().map(task_view).collect();
            }
            return self.list_tasks(job_id, query.limit, query.offset).await;
        }
        let mut select = Self::of_job(job_id, query.state);
        if let Some(before) = query.before_frame {
            let mut rows = select
                .filter(task::Column::Frame.lt(before))
                .order_by_desc(task::Column::Frame)
                .limit(query.limit)
                .offset(query.offset)
                .all(self.db.conn())
                .await?;
            rows.reverse();
            return rows.iter().map(task_view).collect();
        }
        if let Some(after) = query.after_frame {
            select = select.filter(task::Column::Frame.gt(after));
        }
        if let Some(from) = query.from_frame {
            // The task covering `from` starts before it; any later one starts after it.
            let start = match self
                .task_starting_at_or_before(job_id, query.state, from)
                .await?
            {
                Some(row) if row.frame_end >= from => row.frame,
                _ => from.saturating_add(1),
            };
            select = select.filter(task::Column::Frame.gte(start));
        }
        let rows = select
            .order_by_asc(task::Column::Frame)
            .limit(query.limit)
            .offset(query.offset)
            .all(self.db.conn())
            .await?;
        rows.iter().map(task_view).collect()
    }

    /// The frame of the first task of `job_id` in `state` (of its first task when
    /// `None`).
    pub async fn first_frame_in(
        &self,
        job_id: JobId,
        state: Option<WorkState>,
    ) -> Result<Option<i64>, DbErr> {
        let row = Self::of_job(job_id, state)
            .order_by_asc(task::Column::Frame)
            .limit(1)
            .one(self.db.conn())
            .await?;
        Ok(row.map(|row| row.frame))
    }

    fn of_job(job_id: JobId, state: Option<WorkState>) -> Select<task::Entity> {
        let select = task::Entity::find().filter(task::Column::JobId.eq(job_id));
        match state {
            Some(state) => select.filter(task::Column::State.eq(state.as_str())),
            None => select,
        }
    }

    async fn task_starting_at_or_before(
        &self,
        job_id: JobId,
        state: Option<WorkState>,
        frame: i64,
    ) -> Result<Option<task::Model>, DbErr> {
        Self::of_job(job_id, state)
            .filter(task::Column::Frame.lte(frame))
            .order_by_desc(task::Column::Frame)
            .limit(1)
            .one(self.db.conn())
            .await
    }

    /// The first task id of a job when its ids run without a gap over `total` tasks.
    async fn first_id_if_contiguous(
        &self,
        job_id: JobId,
        total: u64,
    ) -> Result<Option<i64>, DbErr> {
        // Two sub-selects: each is one seek at an end of `tasks_job`, where a single
        // `SELECT MIN(id), MAX(id)` would read every entry of the job.
        let row = self
            .db
            .conn()
            .query_one_raw(statement(
                self.db.backend(),
                "SELECT (SELECT MIN(id) FROM tasks WHERE job_id = ?), \
                 (SELECT MAX(id) FROM tasks WHERE job_id = ?)",
                vec![job_id.into(), job_id.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let first: Option<i64> = row.try_get_by_index(0)?;
        let last: Option<i64> = row.try_get_by_index(1)?;
        Ok(match (first, last) {
            (Some(first), Some(last)) if u64::try_from(last - first + 1).ok() == Some(total) => {
                Some(first)
            }
            _ => None,
        })
    }
}
