//! The database: schema, connection and the `Store` actor, the only writer.
//!
//! - [`migration`]: versioned schema migrations (same on SQLite and PostgreSQL).
//! - [`entities`]: sea-orm entities used for reads.
//! - [`records`]: the rows the other actors hand to the store.
//! - `actor`: the [`Store`] actor: submissions committed before they are acknowledged,
//!   task and job transitions batched into group commits.
//! - `reads` ([`StoreReader`]): queries of the service layer and the startup load of unfinished work.

mod actor;
mod app_reads;
pub mod entities;
mod lock;
pub mod migration;
mod reads;
pub mod records;
mod sql;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;
use tracing::info;

pub use actor::{
    AllocateTaskIds, CommitBatch, Flush, InsertJob, InsertedJob, Notify, Store, StoreFailure,
    StoreStatus, TicketNews, UpsertAgent, UpsertLogIndex,
};
pub use reads::{LoadedState, StoreReader, task_view};

/// An open database with its migrations applied.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    backend: DbBackend,
    /// The URL it was opened with, for the store's own connection.
    url: String,
    /// PostgreSQL: this master's lock on the database, held while any clone lives.
    _lock: Option<std::sync::Arc<lock::MasterLock>>,
    /// The number of jobs, counted when the database is opened and kept by the store
    /// through the commits that add or delete jobs (it is the only writer): every page of
    /// the job list answers with it, and counting 100,000 rows per page took PostgreSQL
    /// 8 ms. Shared by every clone.
    jobs: std::sync::Arc<AtomicI64>,
}

impl Db {
    /// Opens the database named by `url`, or the SQLite file `<data_dir>/furrow.db` when
    /// `url` is `None`, and applies pending migrations.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, DbErr> {
        let url = match url {
            Some(url) if is_postgres(url) || url.starts_with("sqlite:") => url.to_string(),
            Some(other) => {
                return Err(DbErr::Custom(format!(
                    "unsupported database url {other:?}: expected postgres://... or sqlite:..."
                )));
            }
            None => format!("sqlite://{}?mode=rwc", data_dir.join("furrow.db").display()),
        };
        // Taken before anything else, migrations included.
        let lock = match is_postgres(&url) {
            true => Some(std::sync::Arc::new(lock::lock(&url).await?)),
            false => None,
        };
        let conn = Self::connect(&url, if is_postgres(&url) { 8 } else { 4 }).await?;
        let backend = conn.get_database_backend();
        migration::Migrator::up(&conn, None).await?;
        let jobs = count_jobs(&conn).await?;
        info!(backend = backend_name(backend), jobs, "database ready");
        Ok(Self {
            conn,
            backend,
            url,
            _lock: lock,
            jobs: std::sync::Arc::new(AtomicI64::new(jobs)),
        })
    }

    /// The number of jobs stored.
    pub fn job_count(&self) -> u64 {
        u64::try_from(self.jobs.load(Ordering::SeqCst)).unwrap_or(0)
    }

    /// A commit added (or, negative, deleted) `jobs` jobs.
    pub(crate) fn jobs_changed(&self, jobs: i64) {
        if jobs != 0 {
            self.jobs.fetch_add(jobs, Ordering::SeqCst);
        }
    }

    /// A connection of its own for the store, the only writer. It is dropped after a
    /// failed write and opened again for the next: a connection whose `COMMIT` failed
    /// (a full disk, a server that went away) may still hold an open transaction, and
    /// every later transaction on it would nest inside that one instead of committing.
    pub async fn connect_writer(&self) -> Result<DatabaseConnection, DbErr> {
        Self::connect(&self.url, 1).await
    }

    /// The same database through a connection of its own, for a one-off read of a lot of
    /// rows (the startup load). On SQLite its page cache is 2 MiB: a read that passes
    /// once over a million rows gains nothing from caching them, and the pool's 64 MiB
    /// caches, filled by it, stayed resident for the master's life.
    pub async fn alone(&self) -> Result<Self, DbErr> {
        let conn = Self::connect(&self.url, 1).await?;
        if self.backend == DbBackend::Sqlite {
            conn.execute_unprepared("PRAGMA cache_size = -2048").await?;
        }
        Ok(Self {
            conn,
            backend: self.backend,
            url: self.url.clone(),
            _lock: self._lock.clone(),
            jobs: self.jobs.clone(),
        })
    }

    async fn connect(url: &str, pool: u32) -> Result<DatabaseConnection, DbErr> {
        if is_postgres(url) {
            let mut options = ConnectOptions::new(url.to_string());
            options
                .max_connections(pool)
                .min_connections(1)
                .connect_timeout(Duration::from_secs(10))
                .sqlx_logging(false);
            Database::connect(options).await
        } else {
            Self::connect_sqlite(url, pool).await
        }
    }

    async fn connect_sqlite(url: &str, pool: u32) -> Result<DatabaseConnection, DbErr> {
        let mut options = ConnectOptions::new(url.to_string());
        // WAL lets readers (the REST API) proceed while the store commits; it is set on
        // the connect options so every pooled connection has it before first use.
        options
            .max_connections(pool)
            .min_connections(1)
            .sqlx_logging(false)
            // A ping before each use is a round trip to the connection's thread, and a
            // local file has no network to have dropped it.
            .test_before_acquire(false)
            .map_sqlx_sqlite_opts(|opts| {
                // A 64 MiB page cache per connection keeps the hot parts of the task,
                // attempt and index b-trees in memory as history grows (the default is
                // 2 MiB).
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .pragma("cache_size", "-65536")
                    // The store checkpoints the log itself, off the commit path; this is
                    // only the backstop should it fall behind (10,000 pages, 40 MB).
                    .pragma("wal_autocheckpoint", "10000")
                    .busy_timeout(Duration::from_secs(60))
                    .create_if_missing(true)
                    .foreign_keys(false)
            });
        Database::connect(options).await
    }

    /// The connection pool.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Which backend this is.
    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        backend_name(self.backend)
    }

    /// Closes the pool.
    pub async fn close(self) -> Result<(), DbErr> {
        self.conn.close().await
    }
}

async fn count_jobs(conn: &DatabaseConnection) -> Result<i64, DbErr> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    let jobs = entities::job::Entity::find().count(conn).await?;
    Ok(i64::try_from(jobs).unwrap_or(i64::MAX))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Writes one bulk statement and waits until it is durable.
pub async fn commit(
    store: &actix::Addr<Store>,
    write: records::BulkWrite,
) -> Result<(), furrow_protocol::ApiError> {
    commit_all(store, vec![write]).await
}

/// Writes bulk statements in one transaction and waits until they are durable. Callers
/// committing at once share the group commit.
pub async fn commit_all(
    store: &actix::Addr<Store>,
    writes: Vec<records::BulkWrite>,
) -> Result<(), furrow_protocol::ApiError> {
    store.do_send(CommitBatch {
        writes: writes
            .into_iter()
            .map(crate::scheduler::Write::Bulk)
            .collect(),
        notify: None,
    });
    store.send(Flush).await.map_err(|e| {
        furrow_protocol::ApiError::unavailable(format!("the master is shutting down: {e}"))
    })?
}

fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
