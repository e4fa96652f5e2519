//! The built-in `command` job type: runs an argv, or a shell line, per task.

use furrow_protocol::CommandParams;

use super::{JobType, TaskContext, TaskPlan};

/// Shell used when `shell: true`.
const SHELL: &str = "/bin/sh";

/// Runs [`CommandParams::command`] with the frame placeholders substituted in every
/// argument: directly (no shell, so no quoting surprises), or through `/bin/sh -c` with
/// the substituted arguments joined by spaces when `shell` is set.
///
/// [`CommandParams::env`] adds variables to the agent's environment, but cannot change the
/// ones the runner sets for every task (`FURROW_*`, `CUDA_VISIBLE_DEVICES`): a task must
/// not reach for a GPU it was not given. Such entries are ignored, with a line in the
/// task's log saying so.
pub(crate) struct CommandJobType;

impl JobType for CommandJobType {
    fn name(&self) -> &str {
        "command"
    }

    fn plan(&self, task: TaskContext<'_>) -> Result<TaskPlan, String> {
        let params: CommandParams =
            serde_json::from_value(task.assignment.params.0.clone()).map_err(|e| e.to_string())?;
        let argv: Vec<String> = params
            .command
            .iter()
            .map(|arg| task.frames.substitute(arg))
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
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::jobtypes::JobTypes;
    use crate::jobtypes::tests::assignment;

    fn plan(params: serde_json::Value) -> Result<super::TaskPlan, String> {
        JobTypes::builtin()
            .prepare(&assignment("command", params))
            .map(|prepared| prepared.plan)
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
            (json!({"command": []}), "`command` is empty"),
            (json!({}), "missing field `command`"),
            (
                json!({"command": ["x"], "shel": true}),
                "unknown field `shel`",
            ),
            (json!({"command": "echo"}), "invalid type"),
            (json!({"command": [""]}), "empty program name"),
        ];
        for (params, needle) in cases {
            let err = plan(params).unwrap_err();
            assert!(
                err.starts_with("invalid parameters for job type `command`: ")
                    && err.contains(needle),
                "{err}"
            );
        }
    }
}
