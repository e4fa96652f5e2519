//! Browsing a job's tasks by frame: the task of a frame, and pages that seek by frame or
//! filter by state (see `store::reads::browse` for why each is one index seek).

use furrow_protocol::{ApiError, JobId, Page, TaskQuery, TaskView};

use super::{Service, check_page, storage_error};
use crate::auth::Caller;

impl Service {
    /// The task of a job covering `frame`: `404` naming the job's frames when it has no
    /// such frame.
    pub async fn task_at_frame(
        &self,
        caller: &Caller,
        job_id: JobId,
        frame: i64,
    ) -> Result<TaskView, ApiError> {
        let job = self.get_job(caller, job_id).await?;
        let row = self
            .inner
            .reader
            .task_at_frame(job_id, frame)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "job {job_id} has no frame {frame} (its frames are {})",
                    job.frames
                ))
            })?;
        crate::store::task_view(&row).map_err(storage_error)
    }

    /// A page of a job's tasks in frame order; `total` counts the tasks the filter
    /// matches (all of the job's, or those in the state asked for).
    pub async fn browse_tasks(
        &self,
        caller: &Caller,
        job_id: JobId,
        query: TaskQuery,
    ) -> Result<Page<TaskView>, ApiError> {
        check_page(query.limit, query.offset)?;
        let bounds = [
            ("from_frame", query.from_frame),
            ("after_frame", query.after_frame),
            ("before_frame", query.before_frame),
        ];
        let given: Vec<&str> = bounds
            .iter()
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| *name)
            .collect();
        if given.len() > 1 {
            return Err(ApiError::bad_request(format!(
                "{}: give at most one of from_frame, after_frame and before_frame",
                given.join(", ")
            )));
        }
        let job = self.get_job(caller, job_id).await?;
        let all = job.task_counts.total();
        let items = self
            .inner
            .reader
            .browse_tasks(job_id, &query, all)
            .await
            .map_err(storage_error)?;
        let total = match query.state {
            Some(state) => job.task_counts.get(state),
            None => all,
        };
        Ok(Page { items, total })
    }
}
