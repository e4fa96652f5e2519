//! The built-in `blender` job type.

use std::sync::Arc;

use crate::output::{OutputParser, Silent};
use crate::{BUILTIN_VERSION, Definition, Runner, TaskInput, TaskPlan};

/// The `blender` type.
pub fn definition() -> Definition {
    Definition::new("blender", BUILTIN_VERSION, "Renders frames of a .blend scene.", Vec::new(), Arc::new(Blender))
}

struct Blender;

impl Runner for Blender {
    fn plan(&self, _task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        Err("not written yet".into())
    }

    fn parser(&self, _task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        Box::new(Silent)
    }
}
