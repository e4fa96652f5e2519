//! Job types: how an assignment becomes a process, and how its output is read.
//!
//! A [`JobType`] turns an assignment's parameters into a [`TaskPlan`] (program, arguments,
//! extra environment) and may supply an [`OutputParser`] that reads progress from the
//! output lines. The runner owns everything else (process group, working directory,
//! `FURROW_*` variables, the task's GPUs, capture, limits), so a job type is small: the
//! built-in `command` type is one file, and Blender, ffmpeg or declarative job types slot
//! in beside it by registering in [`JobTypes::builtin`] (or, later, from definition
//! files).

mod command;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use furrow_protocol::{Assignment, LogStream};

use crate::placeholders::FrameValues;

pub(crate) use command::CommandJobType;

/// What a job type gets to see of an assignment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskContext<'a> {
    /// The assignment.
    pub assignment: &'a Assignment,
    /// The values of the frame placeholders.
    pub frames: FrameValues,
}

/// The process a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskPlan {
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

/// Reads progress from output lines.
pub(crate) trait OutputParser {
    /// Looks at one line; returns the task's progress (0.0 to 1.0) when the line tells it.
    fn parse(&mut self, stream: LogStream, text: &str) -> Option<f32>;
}

/// The parser of job types whose output says nothing about progress.
pub(crate) struct NoProgress;

impl OutputParser for NoProgress {
    fn parse(&mut self, _stream: LogStream, _text: &str) -> Option<f32> {
        None
    }
}

/// A kind of work the agent can run.
pub(crate) trait JobType: Send + Sync {
    /// The name jobs refer to it by.
    fn name(&self) -> &str;

    /// The process to run for a task, or why the parameters are unusable (the message
    /// names the offending field).
    fn plan(&self, task: TaskContext<'_>) -> Result<TaskPlan, String>;

    /// A parser for the task's output.
    fn output_parser(&self, _task: TaskContext<'_>) -> Box<dyn OutputParser> {
        Box::new(NoProgress)
    }
}

/// A prepared task: its plan and the parser of its output.
pub(crate) struct Prepared {
    pub plan: TaskPlan,
    pub parser: Box<dyn OutputParser>,
}

/// The registry of job types this agent can run.
#[derive(Clone)]
pub(crate) struct JobTypes {
    types: HashMap<String, Arc<dyn JobType>>,
}

impl JobTypes {
    /// An empty registry.
    pub fn empty() -> Self {
        Self {
            types: HashMap::new(),
        }
    }

    /// The job types built into the agent.
    pub fn builtin() -> Self {
        let mut types = Self::empty();
        types.register(Arc::new(CommandJobType));
        types
    }

    /// Adds (or replaces) a job type.
    pub fn register(&mut self, jobtype: Arc<dyn JobType>) {
        self.types.insert(jobtype.name().to_string(), jobtype);
    }

    /// Names of the registered job types, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.types.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Resolves an assignment's job type and plans its process. The error is the text
    /// reported as the task's failure.
    pub fn prepare(&self, assignment: &Assignment) -> Result<Prepared, String> {
        let jobtype = self.types.get(&assignment.jobtype).ok_or_else(|| {
            format!(
                "unknown job type `{}` (this agent runs: {})",
                assignment.jobtype,
                self.names().join(", ")
            )
        })?;
        let task = TaskContext {
            assignment,
            frames: FrameValues::from(assignment.frames),
        };
        let plan = jobtype.plan(task).map_err(|reason| {
            format!(
                "invalid parameters for job type `{}`: {reason}",
                assignment.jobtype
            )
        })?;
        Ok(Prepared {
            plan,
            parser: jobtype.output_parser(task),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use furrow_protocol::{FrameBatch, Json, TaskRef};

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
            params: Json(params),
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

    #[test]
    fn unknown_job_type_names_the_known_ones() {
        let err = JobTypes::builtin()
            .prepare(&assignment("blender", serde_json::json!({})))
            .err()
            .unwrap();
        assert_eq!(err, "unknown job type `blender` (this agent runs: command)");
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let plan = TaskPlan {
            program: "echo".into(),
            args: vec!["a b".into(), "it's".into(), "-x=1".into(), String::new()],
            env: BTreeMap::new(),
        };
        assert_eq!(plan.display(), r"echo 'a b' 'it'\''s' -x=1 ''");
    }
}
