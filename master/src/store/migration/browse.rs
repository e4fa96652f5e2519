//! Indexes for browsing a job's tasks by frame and by state.

use sea_orm_migration::prelude::*;

/// `tasks (job_id, frame)`: the task covering a frame, and pages that seek by frame.
/// `tasks (job_id, state, frame)`: pages of one state (the running frames of a
/// million-task job) without reading the others.
pub struct M0006Browse;

impl MigrationName for M0006Browse {
    fn name(&self) -> &str {
        "m0006_browse"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006Browse {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let tasks = Alias::new("tasks");
        manager
            .create_index(
                Index::create()
                    .name("tasks_job_frame")
                    .table(tasks.clone())
                    .col(Alias::new("job_id"))
                    .col(Alias::new("frame"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_job_state")
                    .table(tasks)
                    .col(Alias::new("job_id"))
                    .col(Alias::new("state"))
                    .col(Alias::new("frame"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["tasks_job_state", "tasks_job_frame"] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Alias::new("tasks"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
