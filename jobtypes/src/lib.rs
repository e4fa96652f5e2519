//! Furrow job types: one definition of each job type for the master and the agent.
//!
//! A [`Definition`] declares a job type's typed parameters (the master checks a job's
//! `params` against them at submission and fills in defaults), the software an agent must
//! offer to run it, and how a task becomes a process ([`Definition::plan`]) and how its
//! output is read ([`Definition::parser`]: progress, produced files, warnings, errors, and
//! the verdict at the end). The agent runs exactly what the master validated.
//!
//! Built-in types are code: `command` ([`command`]), `blender` ([`blender`]) and `ffmpeg`
//! ([`ffmpeg`]). Declarative types are TOML files ([`declarative`]), stored and versioned
//! on the master and loaded by agents from a watched directory. [`pathmap`] rewrites path
//! prefixes between operating systems before a command is built.

pub mod blender;
pub mod command;
pub mod declarative;
pub mod ffmpeg;
pub mod output;
pub mod params;
pub mod pathmap;
pub mod placeholders;

use std::collections::BTreeMap;
use std::sync::Arc;

use furrow_protocol::{FrameBatch, JobTypeView};
use serde_json::Value;

pub use output::{Event, Exit, FileProbe, OutputParser, Verdict};
pub use params::{ParamError, ParamSpec, ParamType, Params};
pub use placeholders::FrameValues;

/// What a job type gets to see of a task.
#[derive(Clone, Copy)]
pub struct TaskInput<'a> {
    /// The job's parameters, as validated at submission (defaults filled in) and with the
    /// agent's path maps applied.
    pub params: &'a Value,
    /// The frames of the task.
    pub frames: FrameBatch,
    /// The GPUs given to the task (indices on its agent).
    pub gpus: &'a [u32],
    /// Answers which files exist (checks such as "are the input frames there").
    pub files: &'a dyn FileProbe,
}

impl TaskInput<'_> {
    /// Typed access to the parameters.
    pub fn params(&self) -> Params<'_> {
        Params(self.params)
    }

    /// The frames of the task, in order.
    pub fn frame_list(&self) -> Vec<i64> {
        frame_list(self.frames)
    }
}

/// The frames of a batch, in order.
pub fn frame_list(batch: FrameBatch) -> Vec<i64> {
    let step = batch.step.max(1);
    let mut frames = Vec::new();
    let mut frame = batch.start;
    while frame <= batch.end {
        frames.push(frame);
        match frame.checked_add(step) {
            Some(next) => frame = next,
            None => break,
        }
    }
    frames
}

/// The process a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    /// Program to execute (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments, without the program.
    pub args: Vec<String>,
    /// Variables added to the agent's environment. The runner's own (`FURROW_*`,
    /// `CUDA_VISIBLE_DEVICES`) are set over these and cannot be changed here.
    pub env: BTreeMap<String, String>,
}

impl TaskPlan {
    /// The command line for humans, quoting arguments a shell would split.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|arg| quote(arg))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,+@%{}".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// How a job type runs its tasks: the part of a definition that is code (built-ins) or
/// compiled from a file (declarative types).
pub trait Runner: Send + Sync {
    /// Checks validated parameters further than their types can (the message names the
    /// parameter). Called at submission, with the job's frame ranges.
    fn check(&self, _params: &Value) -> Result<(), ParamError> {
        Ok(())
    }

    /// The process to run for a task, or why it cannot run (the message is the task's
    /// error).
    fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String>;

    /// A parser for the task's output.
    fn parser(&self, task: &TaskInput<'_>) -> Box<dyn OutputParser>;
}

/// A job type: its parameters, requirements and runner.
#[derive(Clone)]
pub struct Definition {
    /// The name jobs refer to it by.
    pub name: String,
    /// Its version: a job keeps the version it was submitted with.
    pub version: u32,
    /// What it does.
    pub description: String,
    /// Its parameters.
    pub params: Vec<ParamSpec>,
    /// Software an agent must offer: name → version range (`>=3.6`, `*`).
    pub software: BTreeMap<String, String>,
    /// Every task of a job runs its whole frame range at once (one task per job).
    pub single_task: bool,
    /// The definition file, for declarative types.
    pub source: Option<String>,
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definition")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Definition {
    /// A definition run by `runner`.
    pub fn new(
        name: &str,
        version: u32,
        description: &str,
        params: Vec<ParamSpec>,
        runner: Arc<dyn Runner>,
    ) -> Self {
        Self {
            name: name.into(),
            version,
            description: description.into(),
            params,
            software: BTreeMap::new(),
            single_task: false,
            source: None,
            runner,
        }
    }

    /// Whether the type is built into Furrow (rather than defined by a file).
    pub fn builtin(&self) -> bool {
        self.source.is_none()
    }

    /// Checks a job's parameters and returns them with defaults filled in. The error names
    /// the parameter.
    pub fn validate(&self, params: &Value) -> Result<Value, ParamError> {
        let params = params::validate(&self.params, params)?;
        self.runner.check(&params)?;
        Ok(params)
    }

    /// The process to run for a task.
    pub fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        self.runner.plan(task)
    }

    /// A parser for a task's output.
    pub fn parser(&self, task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        self.runner.parser(task)
    }

    /// The definition as the API shows it.
    pub fn view(&self) -> JobTypeView {
        JobTypeView {
            name: self.name.clone(),
            version: self.version,
            description: self.description.clone(),
            builtin: self.builtin(),
            single_task: self.single_task,
            parameters: self.params.iter().map(ParamSpec::view).collect(),
            software: self.software.clone(),
            source: self.source.clone(),
        }
    }
}

/// Version of every built-in type.
pub const BUILTIN_VERSION: u32 = 1;

/// The job types built into Furrow: `command`, `blender`, `ffmpeg`.
pub fn builtins() -> Vec<Arc<Definition>> {
    vec![
        Arc::new(command::definition()),
        Arc::new(blender::definition()),
        Arc::new(ffmpeg::definition()),
    ]
}

/// Whether `name` is a built-in type's.
pub fn is_builtin(name: &str) -> bool {
    matches!(name, "command" | "blender" | "ffmpeg")
}

/// Checks a job-type name: a lower-case word of letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a job-type name: use 1 to 64 lower-case letters, digits, `-` or `_`, starting with a letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let plan = TaskPlan {
            program: "echo".into(),
            args: vec!["a b".into(), "it's".into(), "-x=1".into(), String::new()],
            env: BTreeMap::new(),
        };
        assert_eq!(plan.display(), r"echo 'a b' 'it'\''s' -x=1 ''");
    }

    #[test]
    fn frame_lists_follow_the_step() {
        let batch = |start, end, step| FrameBatch { start, end, step };
        assert_eq!(frame_list(batch(1, 7, 3)), [1, 4, 7]);
        assert_eq!(frame_list(batch(5, 5, 1)), [5]);
        assert_eq!(frame_list(batch(i64::MAX - 1, i64::MAX, 1)).len(), 2);
    }

    #[test]
    fn builtins_have_distinct_names_and_check_names() {
        let names: Vec<String> = builtins().iter().map(|d| d.name.clone()).collect();
        assert_eq!(names, ["command", "blender", "ffmpeg"]);
        assert!(names.iter().all(|n| is_builtin(n) && check_name(n).is_ok()));
        assert!(check_name("Bad").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
    }
}
