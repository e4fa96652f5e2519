//! The master's catalogue of job types and path maps.
//!
//! Built-in types come from [`furrow_jobtypes::builtins`]; declarative ones are stored
//! in the `jobtypes` table, one row per version, and never change once stored: a second
//! upload of a stored version is accepted only with the same text. Jobs name the version
//! they were submitted with, so an agent gets exactly the definition the master checked
//! the job against ([`Catalog::get`] when the session sends it).
//!
//! Path maps live here too: sessions turn them into the rules of each assignment.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use actix::Addr;
use furrow_jobtypes::pathmap::{self, Os};
use furrow_jobtypes::{Definition, declarative};
use furrow_protocol::{ApiError, JobTypeView, PathMapSpec, PathMapView, PathRule, Requirements};
use tracing::{info, warn};

use crate::scheduler::policy::requirements::Needs;
use crate::store::records::BulkWrite;
use crate::store::{Store, commit};

/// Most path maps kept.
const MAX_PATH_MAPS: usize = 1000;
/// Most stored job-type versions.
const MAX_JOBTYPES: usize = 10_000;

#[derive(Default)]
struct Inner {
    types: BTreeMap<String, BTreeMap<u32, Arc<Definition>>>,
    path_maps: Vec<PathMapView>,
}

/// Job types and path maps, shared by the service and the agent sessions.
#[derive(Default)]
pub struct Catalog {
    inner: RwLock<Inner>,
    /// Serialises additions, which check, write and insert.
    adding: tokio::sync::Mutex<()>,
}

/// What an addition did.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    /// A new version was stored.
    Created(JobTypeView),
    /// The same text was already stored under this version.
    Unchanged(JobTypeView),
}

impl Catalog {
    /// The built-in types, the stored ones (a stored file that no longer parses is logged
    /// and left out) and the path maps.
    pub fn new(stored: Vec<(String, u32, String)>, path_maps: Vec<PathMapView>) -> Self {
        let mut inner = Inner {
            path_maps,
            ..Inner::default()
        };
        for def in furrow_jobtypes::builtins() {
            inner
                .types
                .entry(def.name.clone())
                .or_default()
                .insert(def.version, def);
        }
        for (name, version, source) in stored {
            match declarative::parse(&source) {
                Ok(def) if def.name == name && def.version == version => {
                    inner
                        .types
                        .entry(name)
                        .or_default()
                        .insert(version, Arc::new(def));
                }
                Ok(_) => warn!(
                    name,
                    version, "stored job type names another version; skipped"
                ),
                Err(e) => {
                    warn!(name, version, error = %e, "stored job type does not parse; skipped")
                }
            }
        }
        Self {
            inner: RwLock::new(inner),
            adding: tokio::sync::Mutex::new(()),
        }
    }

    /// Only the built-in types.
    pub fn builtin() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// One version of a type.
    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.read().types.get(name)?.get(&version).cloned()
    }

    /// The version a submission asks for, or the newest; the error names the field.
    pub fn resolve(&self, name: &str, version: Option<u32>) -> Result<Arc<Definition>, String> {
        let inner = self.read();
        let Some(versions) = inner.types.get(name) else {
            let known: Vec<&str> = inner.types.keys().map(String::as_str).collect();
            return Err(format!(
                "jobtype: unknown job type {name:?} (known: {})",
                known.join(", ")
            ));
        };
        match version {
            Some(v) => versions.get(&v).cloned().ok_or_else(|| {
                let known: Vec<String> = versions.keys().map(u32::to_string).collect();
                format!(
                    "jobtype_version: job type {name} has no version {v} (stored: {})",
                    known.join(", ")
                )
            }),
            None => versions
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| format!("jobtype: job type {name:?} has no version")),
        }
    }

    /// Every version of every type, by name then version.
    pub fn list(&self) -> Vec<JobTypeView> {
        self.read()
            .types
            .values()
            .flat_map(|versions| versions.values().map(|d| d.view()))
            .collect()
    }

    /// Parses a definition file and stores it as a new version (see the module
    /// documentation). Errors: 400 naming the field, 409 for a different text under a
    /// stored version or a built-in name.
    pub async fn add(&self, store: &Addr<Store>, source: &str) -> Result<Added, ApiError> {
        let def = declarative::parse(source).map_err(|e| ApiError::bad_request(e.0))?;
        if furrow_jobtypes::is_builtin(&def.name) {
            return Err(ApiError::conflict(format!(
                "name: {} is a built-in job type",
                def.name
            )));
        }
        let requirements = Requirements {
            software: def.software.clone(),
            ..Requirements::default()
        };
        // Named as the file names it: `software.blender`, not `requirements.software...`.
        Needs::parse(&requirements).map_err(|e| {
            ApiError::bad_request(e.strip_prefix("requirements.").unwrap_or(&e).to_string())
        })?;
        let _adding = self.adding.lock().await;
        if let Some(stored) = self.get(&def.name, def.version) {
            return if stored.source.as_deref() == Some(source) {
                Ok(Added::Unchanged(stored.view()))
            } else {
                Err(ApiError::conflict(format!(
                    "version: {} version {} is stored with a different definition; give it a new version",
                    def.name, def.version
                )))
            };
        }
        if self.read().types.values().map(BTreeMap::len).sum::<usize>() >= MAX_JOBTYPES {
            return Err(ApiError::conflict(format!(
                "the catalogue holds {MAX_JOBTYPES} job-type versions already"
            )));
        }
        let write = BulkWrite::PutJobType {
            name: def.name.clone(),
            version: def.version,
            source: source.to_string(),
        };
        commit(store, write).await?;
        info!(name = def.name, version = def.version, "job type stored");
        let view = def.view();
        self.write()
            .types
            .entry(def.name.clone())
            .or_default()
            .insert(def.version, Arc::new(def));
        Ok(Added::Created(view))
    }

    /// Every path map.
    pub fn path_maps(&self) -> Vec<PathMapView> {
        self.read().path_maps.clone()
    }

    /// The rules for an agent.
    pub fn rules_for(&self, os: &str, tags: &[String]) -> Vec<PathRule> {
        let inner = self.read();
        if inner.path_maps.is_empty() {
            return Vec::new();
        }
        let Some(os) = Os::of_agent(os) else {
            return Vec::new();
        };
        let maps: Vec<PathMapSpec> = inner.path_maps.iter().map(|m| m.map.clone()).collect();
        pathmap::rules_for(&maps, os, tags)
    }

    /// Checks and stores a path map.
    pub async fn add_path_map(
        &self,
        store: &Addr<Store>,
        spec: PathMapSpec,
    ) -> Result<PathMapView, ApiError> {
        pathmap::check(&spec).map_err(ApiError::bad_request)?;
        let _adding = self.adding.lock().await;
        let id = {
            let inner = self.read();
            if inner.path_maps.len() >= MAX_PATH_MAPS {
                return Err(ApiError::conflict(format!(
                    "there are {MAX_PATH_MAPS} path maps already"
                )));
            }
            inner.path_maps.iter().map(|m| m.id).max().unwrap_or(0) + 1
        };
        let view = PathMapView { id, map: spec };
        commit(store, BulkWrite::PutPathMap(view.clone())).await?;
        self.write().path_maps.push(view.clone());
        Ok(view)
    }

    /// Deletes a path map; `false` when there is none with that id.
    pub async fn delete_path_map(&self, store: &Addr<Store>, id: i64) -> Result<bool, ApiError> {
        let _adding = self.adding.lock().await;
        if !self.read().path_maps.iter().any(|m| m.id == id) {
            return Ok(false);
        }
        commit(store, BulkWrite::DeletePathMap(id)).await?;
        self.write().path_maps.retain(|m| m.id != id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_newest_version_or_the_one_asked_for() {
        let v = |n: u32| {
            (
                "echoer".to_string(),
                n,
                format!("name = \"echoer\"\nversion = {n}\ncommand = [\"echo\", \"{n}\"]"),
            )
        };
        let catalog = Catalog::new(vec![v(1), v(3)], Vec::new());
        assert_eq!(catalog.resolve("echoer", None).unwrap().version, 3);
        assert_eq!(catalog.resolve("echoer", Some(1)).unwrap().version, 1);
        assert_eq!(
            catalog.resolve("echoer", Some(2)).unwrap_err(),
            "jobtype_version: job type echoer has no version 2 (stored: 1, 3)"
        );
        assert!(catalog.resolve("nope", None).unwrap_err().starts_with(
            "jobtype: unknown job type \"nope\" (known: blender, command, echoer, ffmpeg)"
        ));
        assert_eq!(catalog.list().len(), 5);
    }

    #[test]
    fn stored_files_that_no_longer_parse_are_left_out() {
        let catalog = Catalog::new(vec![("bad".into(), 1, "name = ".into())], Vec::new());
        assert!(catalog.resolve("bad", None).is_err());
    }
}
