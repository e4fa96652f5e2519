//! The built-in `command` job type: runs an argv, or a shell line, per task.
//!
//! Parameters ([`CommandParams`]): `command`, the argv, with the frame placeholders
//! (`{frame}`, `{start}`, `{end}`, `{step}`, `{frame:4}` for zero padding) substituted in
//! every argument; `shell`, to run the substituted arguments joined by spaces through
//! `/bin/sh -c`; `env`, variables added to the agent's environment (the runner's own,
//! `FURROW_*` and `CUDA_VISIBLE_DEVICES`, cannot be changed); `app`, a deployed app whose
//! current release the task runs in (its directory as the working directory, its
//! environment under `env`), which the agent applies and refuses when it does not serve
//! the app (an app's recurrent tasks are such jobs).

use std::sync::Arc;

use furrow_protocol::CommandParams;
use serde_json::{Value, json};

use crate::output::{OutputParser, Silent};
use crate::params::{ParamError, ParamSpec, ParamType};
use crate::placeholders::FrameValues;
use crate::{BUILTIN_VERSION, Definition, Runner, TaskInput, TaskPlan};

/// Shell used when `shell: true`.
const SHELL: &str = "/bin/sh";

/// The `command` type.
pub fn definition() -> Definition {
    Definition::new(
        "command",
        BUILTIN_VERSION,
        "Runs a program (or a shell line) once per task, with frame placeholders substituted.",
        vec![
            ParamSpec::new("command", ParamType::List(Box::new(ParamType::String)), true)
                .range(Some(1.0), None)
                .describe("The argv: program and arguments. {frame}, {start}, {end}, {step} and {frame:4} are substituted."),
            ParamSpec::new("shell", ParamType::Bool, false)
                .default(json!(false))
                .describe("Run the arguments joined by spaces through /bin/sh -c."),
            ParamSpec::new("env", ParamType::Map, false)
                .describe("Variables added to the process environment."),
            ParamSpec::new("app", ParamType::String, false).describe(
                "Run in this deployed app's current release, with its environment (the agent must serve the app).",
            ),
        ],
        Arc::new(Command),
    )
}

struct Command;

fn parse(params: &Value) -> Result<CommandParams, String> {
    serde_json::from_value(params.clone()).map_err(|e| e.to_string())
}

impl Runner for Command {
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        let command = parse(params).map_err(|message| ParamError {
            name: "command".into(),
            message,
        })?;
        if command
            .command
            .first()
            .is_none_or(|program| program.trim().is_empty())
        {
            return Err(ParamError {
                name: "command".into(),
                message: "the program (first element) must not be empty".into(),
            });
        }
        Ok(())
    }

    fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        let params = parse(task.params)?;
        let frames = FrameValues::from(task.frames);
        let argv: Vec<String> = params
            .command
            .iter()
            .map(|arg| frames.substitute(arg))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err("`command` is empty; give the program and its arguments".into());
        };
        if params.shell {
            Ok(TaskPlan {
                program: SHELL.into(),
                args: vec!["-c".into(), argv.join(" ")],
                env: params.env,
            })
        } else if program.is_empty() {
            Err("`command` starts with an empty program name".into())
        } else {
            Ok(TaskPlan {
                program: program.clone(),
                args: args.to_vec(),
                env: params.env,
            })
        }
    }

    fn parser(&self, _task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        Box::new(Silent)
    }
}

#[cfg(test)]
mod tests {
    use furrow_protocol::FrameBatch;
    use serde_json::json;

    use super::*;
    use crate::output::tests::Files;

    fn plan(params: Value) -> Result<TaskPlan, String> {
        let def = definition();
        let params = def.validate(&params).map_err(|e| e.to_string())?;
        let files = Files::default();
        def.plan(&TaskInput {
            params: &params,
            frames: FrameBatch {
                start: 1,
                end: 3,
                step: 1,
            },
            gpus: &[],
            files: &files,
        })
    }

    #[test]
    fn argv_runs_directly_with_placeholders_substituted() {
        let plan = plan(json!({"command": ["render", "-s", "{start}", "-e", "{end}", "f{frame}"]}))
            .unwrap();
        assert_eq!(plan.program, "render");
        assert_eq!(plan.args, ["-s", "1", "-e", "3", "f1"]);
    }

    #[test]
    fn shell_joins_substituted_arguments() {
        let plan = plan(
            json!({"command": ["echo", "{frame}", "&&", "true"], "shell": true,
                              "env": {"A": "1"}}),
        )
        .unwrap();
        assert_eq!(plan.program, "/bin/sh");
        assert_eq!(plan.args, ["-c", "echo 1 && true"]);
        assert_eq!(plan.env.get("A").map(String::as_str), Some("1"));
    }

    #[test]
    fn bad_parameters_are_explained() {
        let cases = [
            (
                json!({"command": []}),
                "params.command: its length must be at least 1, got 0",
            ),
            (
                json!({}),
                "params.command: required (list<string> parameter)",
            ),
            (
                json!({"command": ["x"], "shel": true}),
                "params.shel: unknown parameter (known: command, shell, env, app)",
            ),
            (
                json!({"command": "echo"}),
                "params.command: must be a list of strings, not a string",
            ),
            (
                json!({"command": [" "]}),
                "params.command: the program (first element) must not be empty",
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(plan(params).unwrap_err(), expected);
        }
    }

    #[test]
    fn the_declared_parameters_are_the_protocol_struct() {
        let def = definition();
        let params = def.validate(&json!({"command": ["a"]})).unwrap();
        let typed: CommandParams = serde_json::from_value(params).unwrap();
        assert_eq!(typed.command, ["a"]);
        assert!(!typed.shell);
    }
}
