//! What the dashboard's event stream sends after its first snapshot: only what changed.
//!
//! Each update of the feed carries the whole snapshot and, when the feed built the one
//! before it too, a delta against that one. A stream that sent the previous update sends
//! the delta; a stream that missed updates (a slow browser, which skips to the newest)
//! or just connected sends the whole snapshot. While a farm runs, most of a snapshot
//! (a hundred jobs, the agents) stays the same, so a delta is a few hundred bytes where
//! the snapshot is tens of kilobytes.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// One update of the dashboard feed.
#[derive(Debug)]
pub struct Update {
    /// Its number; consecutive updates differ by one.
    pub seq: u64,
    /// The whole snapshot, as JSON.
    pub full: Arc<str>,
    /// What changed since update `seq - 1`, as JSON, when that one was built.
    pub delta: Option<Arc<str>>,
}

/// The parts of a snapshot compared whole (they change together).
const PARTS: [&str; 4] = ["agents", "health", "queues", "apps"];

/// A snapshot as the next one is compared with it.
#[derive(Debug)]
struct Last {
    /// The parts compared whole, as JSON text.
    parts: HashMap<&'static str, String>,
    /// Each job's view as JSON text, by id.
    jobs: HashMap<i64, String>,
    /// The jobs' ids in order.
    ids: Vec<i64>,
    /// The number of jobs.
    total: Value,
}

/// Builds updates from successive snapshots, remembering the last one.
#[derive(Debug, Default)]
pub struct Differ {
    seq: u64,
    /// The last snapshot, as compared.
    last: Option<Last>,
}

impl Differ {
    /// A differ with no snapshot yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the last snapshot: the next update has no delta (the feed skipped
    /// changes while nobody watched).
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// The update for `snapshot` (`{agents, jobs, health, queues}` or `{error}`).
    pub fn update(&mut self, snapshot: Value) -> Update {
        self.seq += 1;
        let full: Arc<str> = Arc::from(snapshot.to_string());
        let previous = self.last.take();
        let Some(object) = snapshot.as_object().filter(|o| !o.contains_key("error")) else {
            return Update {
                seq: self.seq,
                full,
                delta: None,
            };
        };
        let parts: HashMap<&'static str, String> = PARTS
            .iter()
            .map(|&name| {
                (
                    name,
                    object.get(name).map(Value::to_string).unwrap_or_default(),
                )
            })
            .collect();
        let jobs = object.get("jobs").cloned().unwrap_or(Value::Null);
        let items = jobs["items"].as_array().cloned().unwrap_or_default();
        let ids: Vec<i64> = items.iter().filter_map(|j| j["id"].as_i64()).collect();
        let by_id: HashMap<i64, String> = items
            .iter()
            .filter_map(|j| Some((j["id"].as_i64()?, j.to_string())))
            .collect();
        let delta = previous.map(|old| {
            let mut delta = Map::new();
            for name in PARTS {
                if old.parts.get(name) != parts.get(name)
                    && let Some(value) = object.get(name)
                {
                    delta.insert(name.into(), value.clone());
                }
            }
            let changed: Vec<Value> = items
                .iter()
                .filter(|j| {
                    j["id"]
                        .as_i64()
                        .is_none_or(|id| old.jobs.get(&id) != by_id.get(&id))
                })
                .cloned()
                .collect();
            let mut jobs_delta = Map::new();
            if ids != old.ids {
                jobs_delta.insert("ids".into(), Value::from(ids.clone()));
            }
            if jobs["total"] != old.total {
                jobs_delta.insert("total".into(), jobs["total"].clone());
            }
            if !changed.is_empty() {
                jobs_delta.insert("changed".into(), Value::Array(changed));
            }
            if !jobs_delta.is_empty() {
                delta.insert("jobs".into(), Value::Object(jobs_delta));
            }
            Arc::from(Value::Object(delta).to_string())
        });
        self.last = Some(Last {
            parts,
            jobs: by_id,
            ids,
            total: jobs["total"].clone(),
        });
        Update {
            seq: self.seq,
            full,
            delta,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn snapshot(jobs: &[(i64, &str)], running: u64) -> Value {
        json!({
            "agents": {"items": [{"name": "a"}], "total": 1},
            "jobs": {"items": jobs.iter().map(|(id, state)| json!({"id": id, "state": state})).collect::<Vec<_>>(), "total": jobs.len()},
            "health": {"tasks_running": running},
            "queues": [],
        })
    }

    #[test]
    fn a_delta_holds_only_what_changed() {
        let mut differ = Differ::new();
        let first = differ.update(snapshot(&[(2, "queued"), (1, "done")], 0));
        assert!(first.delta.is_none());
        assert_eq!(first.seq, 1);
        let second = differ.update(snapshot(&[(2, "running"), (1, "done")], 1));
        let delta: Value = serde_json::from_str(second.delta.as_deref().unwrap()).unwrap();
        assert_eq!(
            delta,
            json!({"health": {"tasks_running": 1}, "jobs": {"changed": [{"id": 2, "state": "running"}]}})
        );
        // A new job: the order and the total change, and the new job is sent.
        let third = differ.update(snapshot(&[(3, "queued"), (2, "running"), (1, "done")], 1));
        let delta: Value = serde_json::from_str(third.delta.as_deref().unwrap()).unwrap();
        assert_eq!(
            delta,
            json!({"jobs": {"ids": [3, 2, 1], "total": 3, "changed": [{"id": 3, "state": "queued"}]}})
        );
        // Nothing changed: an empty delta.
        let fourth = differ.update(snapshot(&[(3, "queued"), (2, "running"), (1, "done")], 1));
        assert_eq!(fourth.delta.as_deref(), Some("{}"));
        // After an error or a skip, the next update is whole only.
        let error = differ.update(json!({"error": "down"}));
        assert!(error.delta.is_none());
        let after = differ.update(snapshot(&[(1, "done")], 0));
        assert!(after.delta.is_none());
        differ.forget();
        assert!(differ.update(snapshot(&[(1, "done")], 0)).delta.is_none());
        assert_eq!(differ.seq, 7);
    }
}
