//! Versioned schema migrations, identical for SQLite and PostgreSQL.
//!
//! Timestamps are stored as milliseconds since the Unix epoch (`BIGINT`) and JSON as text,
//! so every column has the same type and meaning on both backends. Ids are allocated by
//! the store (the only writer), which lets a submission insert its tasks in large chunks
//! without asking the database for generated keys.

use sea_orm_migration::prelude::*;

mod browse;

/// All migrations, oldest first. Append new ones; never edit an applied one.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002Scheduling),
            Box::new(M0003JobTypes),
            Box::new(M0004Access),
            Box::new(M0005MasterState),
            Box::new(browse::M0006Browse),
            Box::new(M0007Apps),
            Box::new(M0008LogPacks),
        ]
    }
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Title,
    Jobtype,
    Params,
    Frames,
    Batch,
    Priority,
    Retries,
    TimeoutSecs,
    State,
    Queued,
    Running,
    Done,
    Failed,
    Paused,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    JobId,
    Frame,
    FrameEnd,
    Step,
    State,
    Agent,
    Attempt,
    Failures,
    ExitCode,
    Progress,
    LastError,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    Name,
    Hostname,
    Os,
    Cpus,
    RamMb,
    Gpus,
    Tags,
    Slots,
    Version,
    CreatedAt,
    LastSeen,
}

#[derive(DeriveIden)]
enum Queues {
    Table,
    Path,
    Priority,
    Weight,
    MinAgents,
    MaxAgents,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TaskLogs {
    Table,
    TaskId,
    Attempt,
    JobId,
    Path,
    Size,
    UpdatedAt,
}

/// Jobs, tasks, agents and the index of task log files.
struct M0001Initial;

// Named explicitly: the derived name is the module's, which every migration in this file
// would share, and an applied migration is recognised by its name forever.
impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sqlite = manager.get_database_backend() == sea_orm::DbBackend::Sqlite;
        // On SQLite only a column declared exactly INTEGER PRIMARY KEY is the rowid; any
        // other type adds a second index that every insert must maintain. SQLite integers
        // are 64-bit whatever the declaration; PostgreSQL needs BIGINT for that.
        let id_column = |name: DynIden| {
            let mut column = ColumnDef::new(name);
            if sqlite {
                column.integer();
            } else {
                column.big_integer();
            }
            column.not_null().primary_key();
            column
        };
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(id_column(Jobs::Id.into_iden()))
                    .col(ColumnDef::new(Jobs::Title).text().not_null())
                    .col(ColumnDef::new(Jobs::Jobtype).text().not_null())
                    .col(ColumnDef::new(Jobs::Params).text().not_null())
                    .col(ColumnDef::new(Jobs::Frames).text().not_null())
                    .col(ColumnDef::new(Jobs::Batch).integer().not_null())
                    .col(ColumnDef::new(Jobs::Priority).integer().not_null())
                    .col(ColumnDef::new(Jobs::Retries).integer().not_null())
                    .col(ColumnDef::new(Jobs::TimeoutSecs).big_integer().null())
                    .col(ColumnDef::new(Jobs::State).text().not_null())
                    .col(ColumnDef::new(Jobs::Queued).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::Running).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::Done).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::Failed).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::Paused).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Jobs::FinishedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("jobs_state")
                    .table(Jobs::Table)
                    .col(Jobs::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .col(id_column(Tasks::Id.into_iden()))
                    .col(ColumnDef::new(Tasks::JobId).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::Frame).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::FrameEnd).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::Step).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::State).text().not_null())
                    .col(ColumnDef::new(Tasks::Agent).text().null())
                    .col(ColumnDef::new(Tasks::Attempt).integer().not_null())
                    .col(ColumnDef::new(Tasks::Failures).integer().not_null())
                    .col(ColumnDef::new(Tasks::ExitCode).integer().null())
                    .col(ColumnDef::new(Tasks::Progress).double().not_null())
                    .col(ColumnDef::new(Tasks::LastError).text().null())
                    .col(ColumnDef::new(Tasks::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Tasks::FinishedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        // Listing a job's tasks in frame order walks this index, and so does the startup
        // load, which reads only the tasks of unfinished jobs (so it does not grow with
        // history). (m0006, in `migration/browse.rs`, adds the frame and state indexes
        // that browsing a million-task job needs.)
        manager
            .create_index(
                Index::create()
                    .name("tasks_job")
                    .table(Tasks::Table)
                    .col(Tasks::JobId)
                    .col(Tasks::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(ColumnDef::new(Agents::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Agents::Name).text().not_null())
                    .col(ColumnDef::new(Agents::Hostname).text().not_null())
                    .col(ColumnDef::new(Agents::Os).text().not_null())
                    .col(ColumnDef::new(Agents::Cpus).integer().not_null())
                    .col(ColumnDef::new(Agents::RamMb).big_integer().not_null())
                    .col(ColumnDef::new(Agents::Gpus).text().not_null())
                    .col(ColumnDef::new(Agents::Tags).text().not_null())
                    .col(ColumnDef::new(Agents::Slots).integer().not_null())
                    .col(ColumnDef::new(Agents::Version).text().not_null())
                    .col(ColumnDef::new(Agents::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Agents::LastSeen).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskLogs::Table)
                    .col(ColumnDef::new(TaskLogs::TaskId).big_integer().not_null())
                    .col(ColumnDef::new(TaskLogs::Attempt).integer().not_null())
                    .col(ColumnDef::new(TaskLogs::JobId).big_integer().not_null())
                    .col(ColumnDef::new(TaskLogs::Path).text().not_null())
                    .col(ColumnDef::new(TaskLogs::Size).big_integer().not_null())
                    .col(ColumnDef::new(TaskLogs::UpdatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(TaskLogs::TaskId).col(TaskLogs::Attempt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            TaskLogs::Table.into_iden(),
            Agents::Table.into_iden(),
            Tasks::Table.into_iden(),
            Jobs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Job scheduling fields (queues, weights, requirements, dependencies, control,
/// blocklists), GPU indices of running tasks, agent settings made through the API, and
/// the queue tree.
struct M0002Scheduling;

impl MigrationName for M0002Scheduling {
    fn name(&self) -> &str {
        "m0002_scheduling"
    }
}

/// Adds one column (SQLite takes one per `ALTER TABLE`).
async fn add_column(
    manager: &SchemaManager<'_>,
    table: DynIden,
    column: &mut ColumnDef,
) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(table)
                .add_column(column.to_owned())
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Scheduling {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let jobs = || Jobs::Table.into_iden();
        let text = |name: &str, default: &str| {
            ColumnDef::new(Alias::new(name))
                .text()
                .not_null()
                .default(default)
                .to_owned()
        };
        let int = |name: &str, default: i64| {
            ColumnDef::new(Alias::new(name))
                .big_integer()
                .not_null()
                .default(default)
                .to_owned()
        };
        let nullable = |name: &str| {
            ColumnDef::new(Alias::new(name))
                .big_integer()
                .null()
                .to_owned()
        };
        for mut column in [
            int("weight", 1),
            text("queue", ""),
            int("min_agents", 0),
            nullable("max_agents"),
            text("requirements", "{}"),
            nullable("stall_timeout_secs"),
            text("depends_on", "[]"),
            int("depends_per_frame", 0),
            text("notes", ""),
            text("user_name", ""),
            int("blocklist_after", 3),
            text("control", "active"),
            int("blocked", 0),
            int("cancelled", 0),
            text("blocklist", "[]"),
        ] {
            add_column(manager, jobs(), &mut column).await?;
        }
        add_column(
            manager,
            Tasks::Table.into_iden(),
            &mut ColumnDef::new(Alias::new("gpus")).text().null().to_owned(),
        )
        .await?;
        add_column(manager, Tasks::Table.into_iden(), &mut int("ram_mb", 0)).await?;
        for mut column in [
            int("enabled", 1),
            ColumnDef::new(Alias::new("tags_override"))
                .text()
                .null()
                .to_owned(),
            text("software", "{}"),
        ] {
            add_column(manager, Agents::Table.into_iden(), &mut column).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("attempts"))
                    .col(
                        ColumnDef::new(Alias::new("task_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("attempt")).integer().not_null())
                    .col(
                        ColumnDef::new(Alias::new("job_id"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("agent")).text().null())
                    .col(
                        ColumnDef::new(Alias::new("started_at"))
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("finished_at"))
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Alias::new("exit_code")).integer().null())
                    .col(ColumnDef::new(Alias::new("outcome")).text().not_null())
                    .col(ColumnDef::new(Alias::new("error")).text().null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("task_id"))
                            .col(Alias::new("attempt")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("attempts_job")
                    .table(Alias::new("attempts"))
                    .col(Alias::new("job_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Queues::Table)
                    .col(ColumnDef::new(Queues::Path).text().not_null().primary_key())
                    .col(ColumnDef::new(Queues::Priority).integer().not_null())
                    .col(ColumnDef::new(Queues::Weight).big_integer().not_null())
                    .col(ColumnDef::new(Queues::MinAgents).big_integer().not_null())
                    .col(ColumnDef::new(Queues::MaxAgents).big_integer().null())
                    .col(ColumnDef::new(Queues::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("attempts")).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Queues::Table).to_owned())
            .await
    }
}

/// Job types defined by files (versioned), the version each job was submitted with, path
/// maps, the files tasks produced and the preview images of frames.
struct M0003JobTypes;

impl MigrationName for M0003JobTypes {
    fn name(&self) -> &str {
        "m0003_jobtypes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003JobTypes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let col = |name: &str| ColumnDef::new(Alias::new(name));
        add_column(
            manager,
            Jobs::Table.into_iden(),
            col("jobtype_version").big_integer().not_null().default(1),
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("jobtypes"))
                    .col(col("name").text().not_null())
                    .col(col("version").big_integer().not_null())
                    .col(col("source").text().not_null())
                    .col(col("created_at").big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("name"))
                            .col(Alias::new("version")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("path_maps"))
                    .col(col("id").big_integer().not_null().primary_key())
                    .col(col("linux").text().not_null())
                    .col(col("windows").text().not_null())
                    .col(col("macos").text().not_null())
                    .col(col("tag").text().not_null())
                    .col(col("created_at").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("outputs"))
                    .col(col("job_id").big_integer().not_null())
                    .col(col("path").text().not_null())
                    .col(col("task_id").big_integer().not_null())
                    .col(col("frame").big_integer().null())
                    .col(col("size").big_integer().not_null())
                    .col(col("created_at").big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("job_id"))
                            .col(Alias::new("path")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("previews"))
                    .col(col("job_id").big_integer().not_null())
                    .col(col("frame").big_integer().not_null())
                    .col(col("task_id").big_integer().not_null())
                    .col(col("mime").text().not_null())
                    .col(col("width").big_integer().not_null())
                    .col(col("height").big_integer().not_null())
                    .col(col("data").binary().not_null())
                    .col(col("created_at").big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("job_id"))
                            .col(Alias::new("frame")),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["previews", "outputs", "path_maps", "jobtypes"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Users, tokens (stored as hashes) and the audit log.
struct M0004Access;

impl MigrationName for M0004Access {
    fn name(&self) -> &str {
        "m0004_access"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Access {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let col = |name: &str| ColumnDef::new(Alias::new(name));
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("users"))
                    .col(col("name").text().not_null().primary_key())
                    .col(col("role").text().not_null())
                    .col(col("password_hash").text().null())
                    .col(col("created_at").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("tokens"))
                    .col(col("id").text().not_null().primary_key())
                    .col(col("hash").text().not_null().unique_key())
                    .col(col("kind").text().not_null())
                    .col(col("user_name").text().not_null())
                    .col(col("label").text().not_null())
                    .col(col("agent_id").text().null())
                    .col(col("created_at").big_integer().not_null())
                    .col(col("expires_at").big_integer().null())
                    .col(col("revoked_at").big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("audit"))
                    .col(col("id").big_integer().not_null().primary_key())
                    .col(col("at").big_integer().not_null())
                    .col(col("user_name").text().not_null())
                    .col(col("action").text().not_null())
                    .col(col("target").text().not_null())
                    .col(col("peer").text().not_null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["audit", "tokens", "users"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Small facts of the master itself (`key` → `value`): the store's write probe.
struct M0005MasterState;

impl MigrationName for M0005MasterState {
    fn name(&self) -> &str {
        "m0005_master_state"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005MasterState {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let col = |name: &str| ColumnDef::new(Alias::new(name));
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("master_state"))
                    .col(col("key").text().not_null().primary_key())
                    .col(col("value").text().not_null())
                    .col(col("updated_at").big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("master_state")).to_owned())
            .await
    }
}

/// Deployed applications: the apps, their releases (a bundle, by digest, with a
/// configuration) and their history.
struct M0007Apps;

impl MigrationName for M0007Apps {
    fn name(&self) -> &str {
        "m0007_apps"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0007Apps {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let col = |name: &str| ColumnDef::new(Alias::new(name));
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("apps"))
                    .col(col("name").text().not_null().primary_key())
                    .col(col("tags").text().not_null())
                    .col(col("webserver").text().not_null())
                    .col(col("current_release").big_integer().null())
                    .col(col("notifications").text().not_null())
                    .col(col("created_by").text().not_null())
                    .col(col("created_at").big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("app_releases"))
                    .col(col("app").text().not_null())
                    .col(col("number").big_integer().not_null())
                    .col(col("version").text().not_null())
                    .col(col("digest").text().not_null())
                    .col(col("size").big_integer().not_null())
                    .col(col("source").text().not_null())
                    .col(col("manifest").text().not_null())
                    .col(col("spec").text().null())
                    .col(col("spec_format").text().null())
                    .col(col("config").text().not_null())
                    .col(col("created_by").text().not_null())
                    .col(col("created_at").big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(Alias::new("app"))
                            .col(Alias::new("number")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("app_events"))
                    .col(col("id").big_integer().not_null().primary_key())
                    .col(col("app").text().not_null())
                    .col(col("at").big_integer().not_null())
                    .col(col("by_name").text().not_null())
                    .col(col("action").text().not_null())
                    .col(col("release").big_integer().null())
                    .col(col("detail").text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("app_events_by_app")
                    .table(Alias::new("app_events"))
                    .col(Alias::new("app"))
                    .col(Alias::new("id"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["app_events", "app_releases", "apps"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The logs of short attempts share a file per job (see `logs`): an index entry names
/// where in its file an attempt's text starts.
struct M0008LogPacks;

impl MigrationName for M0008LogPacks {
    fn name(&self) -> &str {
        "m0008_log_packs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0008LogPacks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskLogs::Table)
                    .add_column(
                        ColumnDef::new(Alias::new("file_offset"))
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskLogs::Table)
                    .drop_column(Alias::new("file_offset"))
                    .to_owned(),
            )
            .await
    }
}
