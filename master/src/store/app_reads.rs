//! Reads of deployed apps: their rows, releases and history.

use sea_orm::{ConnectionTrait, DbErr, QueryResult};

use super::reads::StoreReader;
use super::records::{AppEventRow, AppReleaseRow, AppRow};
use super::sql::statement;

fn number(row: &QueryResult, index: usize) -> Result<u32, DbErr> {
    let value: i64 = row.try_get_by_index(index)?;
    u32::try_from(value).map_err(|_| DbErr::Custom(format!("release number out of range: {value}")))
}

fn opt_number(row: &QueryResult, index: usize) -> Result<Option<u32>, DbErr> {
    let value: Option<i64> = row.try_get_by_index(index)?;
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| DbErr::Custom(format!("release number out of range: {v}")))
        })
        .transpose()
}

impl StoreReader {
    /// Every app, by name.
    pub async fn apps(&self) -> Result<Vec<AppRow>, DbErr> {
        let rows = self
            .db()
            .conn()
            .query_all_raw(statement(
                self.db().backend(),
                "SELECT name, tags, webserver, current_release, notifications, created_by, \
                 created_at FROM apps ORDER BY name",
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let tags: String = row.try_get_by_index(1)?;
                let notifications: String = row.try_get_by_index(4)?;
                Ok(AppRow {
                    name: row.try_get_by_index(0)?,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    webserver: row.try_get_by_index(2)?,
                    current_release: opt_number(row, 3)?,
                    notifications: serde_json::from_str(&notifications).unwrap_or_default(),
                    created_by: row.try_get_by_index(5)?,
                    created_at: row.try_get_by_index(6)?,
                })
            })
            .collect()
    }

    /// Every release of every app, by app and number.
    pub async fn app_releases(&self) -> Result<Vec<AppReleaseRow>, DbErr> {
        let rows = self
            .db()
            .conn()
            .query_all_raw(statement(
                self.db().backend(),
                "SELECT app, number, version, digest, size, source, manifest, spec, spec_format, \
                 config, created_by, created_at FROM app_releases ORDER BY app, number",
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let size: i64 = row.try_get_by_index(4)?;
                Ok(AppReleaseRow {
                    app: row.try_get_by_index(0)?,
                    number: number(row, 1)?,
                    version: row.try_get_by_index(2)?,
                    digest: row.try_get_by_index(3)?,
                    size: u64::try_from(size).unwrap_or(0),
                    source: row.try_get_by_index(5)?,
                    manifest: row.try_get_by_index(6)?,
                    spec: row.try_get_by_index(7)?,
                    spec_format: row.try_get_by_index(8)?,
                    config: row.try_get_by_index(9)?,
                    created_by: row.try_get_by_index(10)?,
                    created_at: row.try_get_by_index(11)?,
                })
            })
            .collect()
    }

    /// The newest `limit` events of an app, newest first.
    pub async fn app_events(&self, app: &str, limit: u64) -> Result<Vec<AppEventRow>, DbErr> {
        let rows = self
            .db()
            .conn()
            .query_all_raw(statement(
                self.db().backend(),
                "SELECT id, app, at, by_name, action, release, detail FROM app_events \
                 WHERE app = ? ORDER BY id DESC LIMIT ?",
                vec![
                    app.to_string().into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AppEventRow {
                    id: row.try_get_by_index(0)?,
                    app: row.try_get_by_index(1)?,
                    at: row.try_get_by_index(2)?,
                    by: row.try_get_by_index(3)?,
                    action: row.try_get_by_index(4)?,
                    release: opt_number(row, 5)?,
                    detail: row.try_get_by_index(6)?,
                })
            })
            .collect()
    }

    /// The largest app event id stored.
    pub async fn max_app_event_id(&self) -> Result<i64, DbErr> {
        let row = self
            .db()
            .conn()
            .query_one_raw(statement(
                self.db().backend(),
                "SELECT MAX(id) FROM app_events",
                Vec::new(),
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get_by_index::<Option<i64>>(0)?.unwrap_or(0),
            None => 0,
        })
    }
}
