//! The built-in `ffmpeg` job type.

use std::sync::Arc;

use crate::output::{OutputParser, Silent};
use crate::{BUILTIN_VERSION, Definition, Runner, TaskInput, TaskPlan};

/// The `ffmpeg` type.
pub fn definition() -> Definition {
    Definition::new("ffmpeg", BUILTIN_VERSION, "Encodes an image sequence.", Vec::new(), Arc::new(Ffmpeg))
}

struct Ffmpeg;

impl Runner for Ffmpeg {
    fn plan(&self, _task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        Err("not written yet".into())
    }

    fn parser(&self, _task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        Box::new(Silent)
    }
}
