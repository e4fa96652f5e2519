//! One master per PostgreSQL database.
//!
//! Two masters on one database would both hand out ids and schedule the same tasks. A
//! master on PostgreSQL therefore holds a session-level advisory lock on a connection of
//! its own for as long as it runs; a second master finds it taken and refuses to start,
//! naming the holder. SQLite needs none of this: its file lives in the data directory,
//! which the master locks already.
//!
//! The lock goes with its connection, so when the server restarts the holder connects
//! again and takes the lock again; should another master have taken it meanwhile, this
//! one stops.

use std::str::FromStr;
use std::time::Duration;

use sea_orm::DbErr;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use tracing::{error, info, warn};

/// The advisory lock's key: "FURW". PostgreSQL lists it in `pg_locks` with `classid` 0
/// and this `objid`.
const LOCK_KEY: i64 = 0x4655_5257;

/// How often the lock's connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The held lock; released when dropped (its task ends and its connection closes).
#[derive(Debug)]
pub struct MasterLock {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MasterLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options(url: &str) -> Result<PgConnectOptions, DbErr> {
    let name = format!(
        "furrow master on {} (pid {})",
        hostname(),
        std::process::id()
    );
    Ok(PgConnectOptions::from_str(url)
        .map_err(|e| DbErr::Custom(format!("bad database url: {e}")))?
        .application_name(&name)
        .disable_statement_logging())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "an unknown host".into())
}

fn db_err(e: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("cannot lock the database: {e}"))
}

/// Connects and tries the lock: `Ok(None)` when another session holds it, with a
/// description of that session.
async fn try_lock(url: &str) -> Result<Result<PgConnection, String>, DbErr> {
    let mut conn = options(url)?.connect().await.map_err(db_err)?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await
        .map_err(db_err)?;
    if taken {
        return Ok(Ok(conn));
    }
    let holder: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT a.application_name, a.client_addr::text, a.backend_start::text \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(LOCK_KEY)
    .fetch_optional(&mut conn)
    .await
    .map_err(db_err)?;
    let _ = conn.close().await;
    let who = match holder {
        Some((name, addr, since)) => format!(
            "{} from {} since {}",
            name.filter(|n| !n.is_empty())
                .unwrap_or_else(|| "a session".into()),
            addr.unwrap_or_else(|| "a local socket".into()),
            since.unwrap_or_else(|| "an unknown time".into())
        ),
        None => "another session".into(),
    };
    Ok(Err(who))
}

/// Takes the lock for this master, or says who holds it.
pub async fn lock(url: &str) -> Result<MasterLock, DbErr> {
    let conn = try_lock(url).await?.map_err(|who| {
        DbErr::Custom(format!(
            "another furrow master is using this database: {who} holds its lock. Two \
             masters on one database would schedule the same tasks twice; stop that \
             one first, or give this master a database of its own"
        ))
    })?;
    info!("took the database's master lock");
    let url = url.to_string();
    let system = actix::System::try_current();
    let task = tokio::spawn(keep(url, conn, system));
    Ok(MasterLock { task })
}

/// Keeps the lock: checks its connection, and after the server went away connects again
/// and takes the lock again. When another master took it meanwhile, stops this one.
async fn keep(url: String, mut conn: PgConnection, system: Option<actix::System>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if conn.ping().await.is_ok() {
            continue;
        }
        warn!("lost the connection holding the database's master lock; taking it again");
        loop {
            match try_lock(&url).await {
                Ok(Ok(new)) => {
                    info!("took the database's master lock again");
                    conn = new;
                    break;
                }
                Ok(Err(who)) => {
                    error!(holder = %who, "another master took this database while it was away; stopping");
                    match &system {
                        Some(system) => system.stop_with_code(3),
                        None => std::process::exit(3),
                    }
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "the database is unreachable; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
