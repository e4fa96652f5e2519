//! The job types this agent runs, and how an assignment becomes a prepared process.
//!
//! Definitions come from [`furrow_jobtypes`], the same code the master validated the
//! job's parameters with: the built-in types, the declarative types the master sends on a
//! connection before the first assignment that needs them ([`JobTypes::receive`]), and the
//! ones this agent loads from its own directory ([`crate::jobtype_dir`]). An assignment
//! names the version its job was submitted with and gets exactly that one: one the master
//! sent, else the local file of that name and version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use furrow_jobtypes::{
    Definition, FileProbe, OutputParser, TaskInput, TaskPlan, declarative, pathmap,
};
use furrow_protocol::{Assignment, JobTypeDefinition};

/// Answers file questions for a task: relative paths are relative to its working
/// directory.
pub(crate) struct TaskFiles {
    /// The task's working directory.
    pub dir: PathBuf,
}

impl TaskFiles {
    /// The absolute path of a path a task printed.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }
}

impl FileProbe for TaskFiles {
    fn size(&self, path: &str) -> Option<u64> {
        std::fs::metadata(self.resolve(path))
            .ok()
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len())
    }
}

/// A prepared task: its plan, the parser of its output, and the path rewrites made.
pub(crate) struct Prepared {
    pub plan: TaskPlan,
    pub parser: Box<dyn OutputParser>,
    /// `(before, after)` for every parameter or argument a path map rewrote.
    pub mapped: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    /// Sent by the master: (name, version) → definition.
    received: HashMap<(String, u32), Arc<Definition>>,
    /// Loaded from the agent's directory.
    local: HashMap<(String, u32), Arc<Definition>>,
}

/// The registry of job types this agent can run (shared by the link and the runners).
pub(crate) struct JobTypes {
    builtin: HashMap<String, Arc<Definition>>,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for JobTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.read();
        f.debug_struct("JobTypes")
            .field("received", &inner.received.len())
            .field("local", &inner.local.len())
            .finish_non_exhaustive()
    }
}

impl JobTypes {
    /// The built-in types only.
    pub fn builtin() -> Self {
        Self {
            builtin: furrow_jobtypes::builtins()
                .into_iter()
                .map(|def| (def.name.clone(), def))
                .collect(),
            inner: RwLock::new(Inner::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a definition the master sent. A text that does not parse here (an agent
    /// older than the master) is an error; assignments of it then fail with it.
    pub fn receive(&self, definition: JobTypeDefinition) -> Result<(), String> {
        let def = declarative::parse(&definition.source).map_err(|e| e.0)?;
        if def.name != definition.name || def.version != definition.version {
            return Err(format!(
                "the master sent {} version {} as {} version {}",
                def.name, def.version, definition.name, definition.version
            ));
        }
        self.write()
            .received
            .insert((def.name.clone(), def.version), Arc::new(def));
        Ok(())
    }

    /// Replaces the definitions loaded from the agent's directory.
    pub fn set_local(&self, defs: Vec<Definition>) {
        self.write().local = defs
            .into_iter()
            .map(|def| ((def.name.clone(), def.version), Arc::new(def)))
            .collect();
    }

    /// The definition of `name` at `version`.
    pub fn resolve(&self, name: &str, version: u32) -> Result<Arc<Definition>, String> {
        if let Some(def) = self.builtin.get(name) {
            return Ok(def.clone());
        }
        let inner = self.read();
        let key = (name.to_string(), version);
        if let Some(def) = inner.received.get(&key).or_else(|| inner.local.get(&key)) {
            return Ok(def.clone());
        }
        let mut known: Vec<String> = self.builtin.keys().cloned().collect();
        known.extend(
            inner
                .received
                .keys()
                .chain(inner.local.keys())
                .map(|(n, v)| format!("{n} v{v}")),
        );
        known.sort();
        known.dedup();
        Err(format!(
            "unknown job type `{name}` version {version} (this agent runs: {})",
            known.join(", ")
        ))
    }

    /// Resolves an assignment's job type, applies its path maps and plans its process.
    /// The error is the task's failure.
    pub fn prepare(&self, assignment: &Assignment, files: &TaskFiles) -> Result<Prepared, String> {
        let def = self.resolve(&assignment.jobtype, assignment.jobtype_version)?;
        let mut params = assignment.params.0.clone();
        let mut mapped = pathmap::apply_params(&assignment.path_maps, &mut params);
        let input = TaskInput {
            params: &params,
            frames: assignment.frames,
            gpus: &assignment.gpus,
            files,
        };
        let mut plan = def
            .plan(&input)
            .map_err(|reason| format!("job type `{}`: {reason}", assignment.jobtype))?;
        if !assignment.path_maps.is_empty() {
            for arg in plan
                .args
                .iter_mut()
                .chain(std::iter::once(&mut plan.program))
            {
                if let Some(after) = pathmap::apply(&assignment.path_maps, arg) {
                    mapped.push((std::mem::replace(arg, after.clone()), after));
                }
            }
        }
        Ok(Prepared {
            parser: def.parser(&input),
            plan,
            mapped,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use furrow_protocol::{FrameBatch, Json, PathRule, TaskRef};

    use super::*;

    /// An assignment of `jobtype` with `params` for frames 1-3.
    pub(crate) fn assignment(jobtype: &str, params: serde_json::Value) -> Assignment {
        Assignment {
            task: TaskRef {
                task_id: 7,
                attempt: 1,
            },
            job_id: 3,
            title: "test".into(),
            jobtype: jobtype.into(),
            jobtype_version: 1,
            params: Json(params),
            path_maps: Vec::new(),
            frames: FrameBatch {
                start: 1,
                end: 3,
                step: 1,
            },
            timeout_secs: None,
            stall_timeout_secs: None,
            ram_mb: None,
            gpus: Vec::new(),
        }
    }

    fn files() -> TaskFiles {
        TaskFiles { dir: "/tmp".into() }
    }

    #[test]
    fn unknown_job_types_name_the_known_ones() {
        let err = JobTypes::builtin()
            .prepare(&assignment("maya", serde_json::json!({})), &files())
            .err()
            .unwrap();
        assert_eq!(
            err,
            "unknown job type `maya` version 1 (this agent runs: blender, command, ffmpeg)"
        );
    }

    #[test]
    fn received_definitions_run_at_their_version_and_local_ones_fill_in() {
        let types = JobTypes::builtin();
        let source = |v: u32, word: &str| {
            format!("name = \"say\"\nversion = {v}\ncommand = [\"echo\", \"{word}\"]")
        };
        types
            .receive(JobTypeDefinition {
                name: "say".into(),
                version: 1,
                source: source(1, "one"),
            })
            .unwrap();
        types.set_local(vec![declarative::parse(&source(2, "two")).unwrap()]);
        let mut a = assignment("say", serde_json::json!({}));
        assert_eq!(types.prepare(&a, &files()).ok().unwrap().plan.args, ["one"]);
        a.jobtype_version = 2;
        assert_eq!(types.prepare(&a, &files()).ok().unwrap().plan.args, ["two"]);
        a.jobtype_version = 3;
        assert!(
            types
                .prepare(&a, &files())
                .err()
                .unwrap()
                .contains("say v1, say v2")
        );
        let mislabelled = JobTypeDefinition {
            name: "say".into(),
            version: 9,
            source: source(1, "x"),
        };
        assert!(
            types
                .receive(mislabelled)
                .unwrap_err()
                .contains("as say version 9")
        );
    }

    #[test]
    fn path_maps_rewrite_parameters_and_arguments() {
        let mut a = assignment(
            "command",
            serde_json::json!({"command": ["cat", "P:\\shots\\a.txt", "--out=x"]}),
        );
        a.path_maps = vec![PathRule {
            from: "P:\\".into(),
            to: "/mnt/p".into(),
            from_windows: true,
            to_windows: false,
        }];
        let prepared = JobTypes::builtin().prepare(&a, &files()).ok().unwrap();
        assert_eq!(prepared.plan.args, ["/mnt/p/shots/a.txt", "--out=x"]);
        assert_eq!(
            prepared.mapped,
            [(
                "P:\\shots\\a.txt".to_string(),
                "/mnt/p/shots/a.txt".to_string()
            )]
        );
    }
}
