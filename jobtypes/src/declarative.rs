//! Declarative job types: a TOML file defines a job type without code.
//!
//! ```toml
//! name = "resize"                 # lower-case letters, digits, - and _
//! version = 2                     # a job keeps the version it was submitted with
//! description = "Resizes frames with ImageMagick"
//! command = ["convert", "{input}", "-resize", "{percent}%", ["-quality", "{quality}"], "{output}"]
//! shell = false                   # true: the arguments joined by spaces run through /bin/sh -c
//! progress = 'frame (?P<frame>\d+)'   # captures: frame, sample (+ samples), percent
//! errors = ['^convert: (.*)']     # a matching line fails the task (first capture or the line)
//! warnings = ['^warning: ']
//! success = ['^done$']            # when given, one must match for the task to succeed
//! outputs = '^wrote (?P<path>\S+)'    # files the task produced (optional `frame` capture)
//! output_files = "{output}"       # or: the file each frame must produce (a template)
//! require_outputs = true          # a reported or templated file that is missing fails the task
//!
//! [env]
//! MAGICK_THREAD_LIMIT = "1"
//!
//! [software]
//! imagemagick = ">=6"             # what an agent must offer
//!
//! [parameters.input]
//! type = "path"                   # string, int, float, bool, path, enum, list, map
//! required = true
//! [parameters.percent]
//! type = "int"
//! default = 50
//! min = 1
//! max = 400
//! [parameters.quality]
//! type = "int"                    # optional, no default: its group is left out when absent
//! [parameters.output]
//! type = "path"
//! required = true
//! ```
//!
//! Placeholders in `command`, `env` and `output_files`: every parameter by name, and the
//! frame placeholders (`{frame}`, `{start}`, `{end}`, `{step}`, `{frame:4}` for zero
//! padding). An argument that is exactly a list parameter (`"{files}"`) becomes one argument
//! per item. A nested list in `command` is a group: it is left out, whole, when one of its
//! placeholders is an optional parameter the job did not give. Every placeholder must name
//! a parameter or a frame value: a typo is an error when the file is loaded, not a task
//! that fails later.

use std::collections::BTreeMap;
use std::sync::Arc;

use furrow_protocol::LogStream;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::output::{Collected, Event, Exit, FileProbe, OutputParser, Verdict};
use crate::params::{ParamSpec, ParamType, render_scalar};
use crate::placeholders::{
    FRAME_NAMES, FrameValues, Var, is_identifier, placeholder_names, substitute,
};
use crate::{Definition, Runner, TaskInput, TaskPlan, check_name, frame_list};

/// Longest definition file, in bytes.
pub const MAX_SOURCE: usize = 256 * 1024;
/// Largest compiled regex, in bytes (a pathological pattern is refused, not run).
const REGEX_SIZE: usize = 1 << 20;

/// A definition file that cannot be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DefinitionError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    version: u32,
    #[serde(default)]
    description: String,
    command: Vec<Arg>,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    parameters: BTreeMap<String, ParamFile>,
    #[serde(default)]
    software: BTreeMap<String, String>,
    #[serde(default)]
    progress: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    success: Vec<String>,
    #[serde(default)]
    outputs: Option<String>,
    #[serde(default)]
    output_files: Option<String>,
    #[serde(default)]
    require_outputs: bool,
    #[serde(default)]
    single_task: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Arg {
    One(String),
    Group(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamFile {
    r#type: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<toml::Value>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    values: Option<Vec<String>>,
    #[serde(default)]
    items: Option<String>,
    #[serde(default)]
    description: String,
}

fn err(field: &str, message: impl std::fmt::Display) -> DefinitionError {
    DefinitionError(format!("{field}: {message}"))
}

/// Parses and checks a definition file.
pub fn parse(text: &str) -> Result<Definition, DefinitionError> {
    if text.len() > MAX_SOURCE {
        return Err(DefinitionError(format!(
            "the definition is {} bytes, more than the {MAX_SOURCE} allowed",
            text.len()
        )));
    }
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim().to_string();
        DefinitionError(match line {
            Some(line) => format!("{message} (line {line})"),
            None => message,
        })
    })?;
    check_name(&file.name).map_err(|e| err("name", e))?;
    if file.version == 0 {
        return Err(err("version", "must be at least 1"));
    }
    if file.description.len() > 4096 {
        return Err(err("description", "must be at most 4096 bytes"));
    }

    let mut params = Vec::new();
    for (name, p) in file.parameters {
        let field = format!("parameters.{name}");
        if !is_identifier(&name) || FRAME_NAMES.contains(&name.as_str()) {
            return Err(err(
                &field,
                format!(
                    "{name:?} cannot be a parameter name: use lower-case letters, digits and _, and none of {}",
                    FRAME_NAMES.join(", ")
                ),
            ));
        }
        let ty = ParamType::parse(&p.r#type, p.values.clone(), p.items.as_deref())
            .map_err(|e| err(&format!("{field}.type"), e))?;
        if p.values.is_some() && !matches!(ty, ParamType::Enum(_)) {
            return Err(err(
                &format!("{field}.values"),
                "only an `enum` parameter has values",
            ));
        }
        if p.items.is_some() && !matches!(ty, ParamType::List(_)) {
            return Err(err(
                &format!("{field}.items"),
                "only a `list` parameter has items",
            ));
        }
        if let (Some(min), Some(max)) = (p.min, p.max)
            && min > max
        {
            return Err(err(
                &format!("{field}.min"),
                format!("{min} is more than max {max}"),
            ));
        }
        let mut spec = ParamSpec::new(&name, ty, p.required)
            .range(p.min, p.max)
            .describe(&p.description);
        if let Some(default) = p.default {
            let value =
                serde_json::to_value(default).map_err(|e| err(&format!("{field}.default"), e))?;
            spec.check(&value)
                .map_err(|e| err(&format!("{field}.default"), e))?;
            if p.required {
                return Err(err(
                    &format!("{field}.default"),
                    "a required parameter has no default",
                ));
            }
            spec = spec.default(value);
        }
        params.push(spec);
    }

    let known = |name: &str| FRAME_NAMES.contains(&name) || params.iter().any(|p| p.name == name);
    let check_template = |field: &str, text: &str| -> Result<(), DefinitionError> {
        for name in placeholder_names(text) {
            if !known(&name) {
                let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                return Err(err(
                    field,
                    format!(
                        "unknown placeholder {{{name}}} (parameters: {}; frames: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        },
                        FRAME_NAMES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    };
    if file.command.is_empty() {
        return Err(err("command", "must hold the program and its arguments"));
    }
    let mut command = Vec::new();
    for (i, arg) in file.command.into_iter().enumerate() {
        let group = match arg {
            Arg::One(text) => vec![text],
            Arg::Group(texts) if !texts.is_empty() => texts,
            Arg::Group(_) => return Err(err(&format!("command[{i}]"), "an empty group")),
        };
        for text in &group {
            check_template(&format!("command[{i}]"), text)?;
        }
        command.push(group);
    }
    if command[0].len() != 1 || command[0][0].trim().is_empty() {
        return Err(err(
            "command[0]",
            "must be the program, one non-empty string",
        ));
    }
    for (name, value) in &file.env {
        check_template(&format!("env.{name}"), value)?;
    }
    if let Some(template) = &file.output_files {
        check_template("output_files", template)?;
    }
    for (name, range) in &file.software {
        if name.trim().is_empty() || range.trim().is_empty() {
            return Err(err(
                &format!("software.{name}"),
                "needs a name and a version range (`*` for any)",
            ));
        }
    }

    let progress = file
        .progress
        .as_deref()
        .map(|pattern| {
            let regex = compile("progress", pattern)?;
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            if !["frame", "sample", "percent"]
                .iter()
                .any(|n| names.contains(n))
            {
                return Err(err(
                    "progress",
                    "needs a named capture: (?P<frame>...), (?P<sample>...) or (?P<percent>...)",
                ));
            }
            Ok(regex)
        })
        .transpose()?;
    let patterns = |field: &str, list: &[String]| -> Result<Vec<Regex>, DefinitionError> {
        list.iter()
            .enumerate()
            .map(|(i, p)| compile(&format!("{field}[{i}]"), p))
            .collect()
    };
    let outputs = file
        .outputs
        .as_deref()
        .map(|pattern| {
            let regex = compile("outputs", pattern)?;
            if !regex.capture_names().flatten().any(|n| n == "path") {
                return Err(err(
                    "outputs",
                    "needs a named capture (?P<path>...) for the file's path",
                ));
            }
            Ok(regex)
        })
        .transpose()?;
    if file.require_outputs && outputs.is_none() && file.output_files.is_none() {
        return Err(err("require_outputs", "needs `outputs` or `output_files`"));
    }

    let runner = Declarative {
        command,
        shell: file.shell,
        env: file.env,
        progress,
        errors: patterns("errors", &file.errors)?,
        warnings: patterns("warnings", &file.warnings)?,
        success: patterns("success", &file.success)?,
        outputs,
        output_files: file.output_files,
        require_outputs: file.require_outputs,
    };
    let mut definition = Definition::new(
        &file.name,
        file.version,
        &file.description,
        params,
        Arc::new(runner),
    );
    definition.software = file.software;
    definition.single_task = file.single_task;
    definition.source = Some(text.to_string());
    Ok(definition)
}

fn compile(field: &str, pattern: &str) -> Result<Regex, DefinitionError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE)
        .build()
        .map_err(|e| {
            err(
                field,
                format!("invalid regex: {}", one_line(&e.to_string())),
            )
        })
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

struct Declarative {
    command: Vec<Vec<String>>,
    shell: bool,
    env: BTreeMap<String, String>,
    progress: Option<Regex>,
    errors: Vec<Regex>,
    warnings: Vec<Regex>,
    success: Vec<Regex>,
    outputs: Option<Regex>,
    output_files: Option<String>,
    require_outputs: bool,
}

/// The value of a placeholder for a task, `None` for an optional parameter not given.
/// Frame placeholders in parameter values are substituted too (`/r/shot_{frame:4}.png`).
fn lookup(params: &Value, frames: FrameValues, name: &str) -> Option<Var> {
    if let Some(var) = frames.lookup(name) {
        return Some(var);
    }
    let text = match params.get(name)? {
        Value::Null => return None,
        Value::Number(n) if n.is_i64() => return n.as_i64().map(Var::Int),
        Value::Array(items) => items
            .iter()
            .map(render_scalar)
            .collect::<Vec<_>>()
            .join(" "),
        other => render_scalar(other),
    };
    Some(Var::Text(frames.substitute(&text)))
}

impl Declarative {
    fn render(&self, task: &TaskInput<'_>, frames: FrameValues, text: &str) -> String {
        substitute(text, |name| lookup(task.params, frames, name))
    }
}

impl Runner for Declarative {
    fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        let frames = FrameValues::from(task.frames);
        let mut argv = Vec::new();
        for group in &self.command {
            let missing = group.iter().any(|text| {
                placeholder_names(text)
                    .iter()
                    .any(|name| lookup(task.params, frames, name).is_none())
            });
            if missing {
                continue;
            }
            for text in group {
                let whole_list = text
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .and_then(|name| task.params.get(name))
                    .and_then(Value::as_array);
                match whole_list {
                    Some(items) => argv.extend(
                        items
                            .iter()
                            .map(|item| frames.substitute(&render_scalar(item))),
                    ),
                    None => argv.push(self.render(task, frames, text)),
                }
            }
        }
        let env = self
            .env
            .iter()
            .map(|(name, value)| (name.clone(), self.render(task, frames, value)))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err("the command is empty".into());
        };
        if program.trim().is_empty() {
            return Err("the program (command[0]) is empty for this job's parameters".into());
        }
        Ok(if self.shell {
            TaskPlan {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), argv.join(" ")],
                env,
            }
        } else {
            TaskPlan {
                program: program.clone(),
                args: args.to_vec(),
                env,
            }
        })
    }

    fn parser(&self, task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        let frame_list = frame_list(task.frames);
        let expected = match &self.output_files {
            Some(template) => frame_list
                .iter()
                .map(|&frame| {
                    let values = FrameValues {
                        frame,
                        ..FrameValues::from(task.frames)
                    };
                    (frame, self.render(task, values, template))
                })
                .collect(),
            None => Vec::new(),
        };
        Box::new(PatternParser {
            progress: self.progress.clone(),
            errors: self.errors.clone(),
            warnings: self.warnings.clone(),
            success: self.success.clone(),
            outputs: self.outputs.clone(),
            require_outputs: self.require_outputs,
            frames: frame_list,
            expected,
            current: None,
            succeeded: false,
            last: None,
            collected: Collected::default(),
        })
    }
}

/// Reads output with a definition's patterns.
struct PatternParser {
    progress: Option<Regex>,
    errors: Vec<Regex>,
    warnings: Vec<Regex>,
    success: Vec<Regex>,
    outputs: Option<Regex>,
    require_outputs: bool,
    /// The task's frames, in order.
    frames: Vec<i64>,
    /// The file each frame must produce (`output_files`).
    expected: Vec<(i64, String)>,
    /// The frame the output last named.
    current: Option<i64>,
    succeeded: bool,
    last: Option<f32>,
    collected: Collected,
}

impl PatternParser {
    fn frame_index(&self, frame: i64) -> Option<usize> {
        self.frames.iter().position(|&f| f == frame)
    }

    fn progress_of(&mut self, caps: &regex::Captures<'_>) -> Option<f32> {
        let number = |name: &str| {
            caps.name(name)
                .and_then(|m| m.as_str().trim().parse::<f64>().ok())
        };
        if let Some(frame) = caps
            .name("frame")
            .and_then(|m| m.as_str().trim().parse::<i64>().ok())
        {
            self.current = Some(frame);
        }
        let within = match (number("sample"), number("samples"), number("percent")) {
            (Some(sample), Some(total), _) if total > 0.0 => Some(sample / total),
            (_, _, Some(percent)) => Some(percent / 100.0),
            _ => None,
        };
        let count = self.frames.len().max(1) as f64;
        let value = match (self.current.and_then(|f| self.frame_index(f)), within) {
            (Some(index), Some(within)) => (index as f64 + within.clamp(0.0, 1.0)) / count,
            (Some(index), None) => index as f64 / count,
            // A percentage of the whole task when no frame is known.
            (None, Some(within)) if caps.name("frame").is_none() => within,
            _ => return None,
        };
        Some(value.clamp(0.0, 1.0) as f32)
    }
}

impl OutputParser for PatternParser {
    fn line(&mut self, _stream: LogStream, text: &str, events: &mut Vec<Event>) {
        let start = events.len();
        if let Some(regex) = self.progress.take() {
            if let Some(caps) = regex.captures(text)
                && let Some(value) = self.progress_of(&caps)
                && self.last.is_none_or(|last| (last - value).abs() >= 0.001)
            {
                self.last = Some(value);
                events.push(Event::Progress(value));
            }
            self.progress = Some(regex);
        }
        if let Some(regex) = &self.outputs
            && let Some(caps) = regex.captures(text)
            && let Some(path) = caps.name("path")
        {
            let frame = caps
                .name("frame")
                .and_then(|m| m.as_str().trim().parse().ok())
                .or(self.current)
                .or_else(|| (self.frames.len() == 1).then(|| self.frames[0]));
            events.push(Event::Output {
                path: path.as_str().trim().to_string(),
                frame,
            });
        }
        for regex in &self.errors {
            if let Some(caps) = regex.captures(text) {
                let message = caps.get(1).map_or(text, |m| m.as_str());
                events.push(Event::Error(message.trim().to_string()));
                break;
            }
        }
        if self.warnings.iter().any(|regex| regex.is_match(text)) {
            events.push(Event::Warning(text.trim().to_string()));
        }
        if self.success.iter().any(|regex| regex.is_match(text)) {
            self.succeeded = true;
        }
        self.collected.note(&events[start..]);
    }

    fn finish(&mut self, exit: Exit, files: &dyn FileProbe) -> Verdict {
        for (frame, path) in &self.expected {
            if files.size(path).is_some() {
                self.collected.note(&[Event::Output {
                    path: path.clone(),
                    frame: Some(*frame),
                }]);
            }
        }
        let (outputs, missing) = self.collected.existing(files);
        let mut error = self.collected.error.clone();
        if error.is_none() && exit.ok() {
            if !self.success.is_empty() && !self.succeeded {
                error = Some("no output line matched the job type's success patterns".into());
            } else if self.require_outputs {
                if let Some(path) = missing {
                    error = Some(format!("output {path} was reported but does not exist"));
                } else if let Some((frame, path)) = self
                    .expected
                    .iter()
                    .find(|(_, path)| files.size(path).is_none())
                {
                    error = Some(format!("frame {frame}: output {path} was not written"));
                } else if outputs.is_empty() {
                    error = Some("the task reported no output file".into());
                }
            }
        }
        Verdict { error, outputs }
    }
}

#[cfg(test)]
mod tests {
    use furrow_protocol::FrameBatch;
    use serde_json::json;

    use super::*;
    use crate::output::tests::{Files, feed};

    const RESIZE: &str = r#"
name = "resize"
version = 2
description = "Resizes frames"
command = ["convert", "{input}", "-resize", "{percent}%", ["-quality", "{quality}"], "{extra}", "{output}"]
progress = 'frame (?P<frame>\d+) (?P<percent>\d+)%'
errors = ['^convert: (.*)']
warnings = ['^warning: ']
outputs = '^wrote (?P<path>\S+)'
output_files = "{output}"
require_outputs = true

[env]
SIZE = "{percent}-{frame:3}"

[software]
imagemagick = ">=6"

[parameters.input]
type = "path"
required = true
[parameters.percent]
type = "int"
default = 50
min = 1
max = 400
[parameters.quality]
type = "int"
[parameters.extra]
type = "list"
items = "string"
default = []
[parameters.output]
type = "path"
required = true
"#;

    fn task(
        def: &Definition,
        params: Value,
        frames: FrameBatch,
        files: &Files,
    ) -> Result<TaskPlan, String> {
        let params = def.validate(&params).map_err(|e| e.to_string())?;
        def.plan(&TaskInput {
            params: &params,
            frames,
            gpus: &[],
            files,
        })
    }

    fn one(frame: i64) -> FrameBatch {
        FrameBatch {
            start: frame,
            end: frame,
            step: 1,
        }
    }

    #[test]
    fn a_definition_builds_commands_with_groups_lists_and_defaults() {
        let def = parse(RESIZE).unwrap();
        assert_eq!((def.name.as_str(), def.version), ("resize", 2));
        assert_eq!(
            def.software.get("imagemagick").map(String::as_str),
            Some(">=6")
        );
        let files = Files::default();
        let plan = task(
            &def,
            json!({"input": "/a_{frame:4}.png", "output": "/o.png"}),
            one(7),
            &files,
        )
        .unwrap();
        assert_eq!(plan.program, "convert");
        assert_eq!(plan.args, ["/a_0007.png", "-resize", "50%", "/o.png"]);
        assert_eq!(plan.env.get("SIZE").map(String::as_str), Some("50-007"));
        let plan = task(
            &def,
            json!({"input": "/a", "output": "/o", "quality": 90, "extra": ["-strip", "-flip"]}),
            one(1),
            &files,
        )
        .unwrap();
        assert_eq!(
            plan.args,
            [
                "/a", "-resize", "50%", "-quality", "90", "-strip", "-flip", "/o"
            ]
        );
        assert_eq!(
            task(
                &def,
                json!({"input": "/a", "output": "/o", "percent": 0}),
                one(1),
                &files
            )
            .unwrap_err(),
            "params.percent: it must be at least 1, got 0"
        );
    }

    #[test]
    fn the_parser_reads_progress_outputs_errors_and_checks_files() {
        let def = parse(RESIZE).unwrap();
        let params = def
            .validate(&json!({"input": "/a", "output": "/out_{frame}.png"}))
            .unwrap();
        let batch = FrameBatch {
            start: 1,
            end: 2,
            step: 1,
        };
        let files = Files::with(&["/out_1.png", "/out_2.png", "/x.png"]);
        let input = TaskInput {
            params: &params,
            frames: batch,
            gpus: &[],
            files: &files,
        };
        let mut parser = def.parser(&input);
        let events = feed(
            &mut *parser,
            &["frame 1 50%", "frame 2 0%", "wrote /x.png", "warning: slow"],
        );
        assert_eq!(
            events,
            [
                Event::Progress(0.25),
                Event::Progress(0.5),
                Event::Output {
                    path: "/x.png".into(),
                    frame: Some(2)
                },
                Event::Warning("warning: slow".into()),
            ]
        );
        let verdict = parser.finish(Exit { code: Some(0) }, &files);
        assert_eq!(verdict.error, None);
        let paths: Vec<&str> = verdict.outputs.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, ["/x.png", "/out_1.png", "/out_2.png"]);

        let mut parser = def.parser(&input);
        feed(&mut *parser, &["convert: unable to open image"]);
        let verdict = parser.finish(Exit { code: Some(0) }, &files);
        assert_eq!(verdict.error.as_deref(), Some("unable to open image"));

        let mut parser = def.parser(&input);
        let verdict = parser.finish(Exit { code: Some(0) }, &Files::with(&["/out_1.png"]));
        assert_eq!(
            verdict.error.as_deref(),
            Some("frame 2: output /out_2.png was not written")
        );
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().0
    }

    #[test]
    fn broken_files_are_refused_naming_the_field() {
        let base = "name = \"t\"\nversion = 1\ncommand = [\"x\"]\n";
        assert!(error("version = 1\ncommand = [\"x\"]").contains("missing field `name`"));
        assert!(error("name = \"t\"\ncommand = [\"x\"]").contains("missing field `version`"));
        assert!(error("name = \"t\"\nversion = 1").contains("missing field `command`"));
        assert!(error(&format!("{base}comand = 1")).contains("unknown field `comand`"));
        assert!(
            error(&format!("{base}progress = '(?P<frame>\\d+'"))
                .starts_with("progress: invalid regex")
        );
        assert!(
            error(&format!("{base}progress = '\\d+'"))
                .starts_with("progress: needs a named capture")
        );
        assert!(
            error(&format!("{base}errors = ['ok', '(']")).starts_with("errors[1]: invalid regex")
        );
        assert!(
            error(&format!("{base}outputs = 'x'"))
                .starts_with("outputs: needs a named capture (?P<path>")
        );
        assert!(
            error(&format!("{base}[parameters.a]\ntype = \"colour\""))
                .starts_with("parameters.a.type: unknown parameter type `colour`")
        );
        assert!(
            error(&format!("{base}[parameters.a]\ntype = \"enum\""))
                .starts_with("parameters.a.type: an `enum` parameter needs `values`")
        );
        assert!(
            error(&format!(
                "{base}[parameters.a]\ntype = \"int\"\ndefault = \"x\""
            ))
            .starts_with("parameters.a.default: must be a whole number")
        );
        assert!(
            error(&format!(
                "{base}[parameters.a]\ntype = \"int\"\nmin = 5\nmax = 1"
            ))
            .starts_with("parameters.a.min:")
        );
        assert!(
            error(&format!("{base}[parameters.a]\ntyp = \"int\"")).contains("unknown field `typ`")
        );
        assert!(
            error(&format!("{base}[parameters.frame]\ntype = \"int\""))
                .starts_with("parameters.frame: ")
        );
        assert!(
            error("name = \"t\"\nversion = 1\ncommand = [\"x\", \"{nope}\"]")
                .starts_with("command[1]: unknown placeholder {nope}")
        );
        assert!(error("name = \"t\"\nversion = 1\ncommand = []").starts_with("command: "));
        assert!(error("name = \"T\"\nversion = 1\ncommand = [\"x\"]").starts_with("name: "));
        assert!(error("name = \"t\"\nversion = 0\ncommand = [\"x\"]").starts_with("version: "));
        assert!(error(&format!("{base}require_outputs = true")).starts_with("require_outputs: "));
        assert!(
            error("name = \"t\"\nversion = 1\ncommand = [\"x\"]\n[env]\nA = \"{b}\"")
                .starts_with("env.A: unknown placeholder")
        );
        assert!(error("name = \"t\"\nversion = -1\ncommand = [\"x\"]").contains("line 2"));
    }

    #[test]
    fn shell_braces_and_escaped_placeholders_are_left_alone() {
        let def = parse("name = \"t\"\nversion = 1\nshell = true\ncommand = [\"awk\", \"'{print $1}'\", \"${HOME}\", \"{frame}\"]").unwrap();
        let files = Files::default();
        let plan = task(&def, json!({}), one(4), &files).unwrap();
        assert_eq!(plan.args, ["-c", "awk '{print $1}' ${HOME} 4"]);
    }

    #[test]
    fn success_patterns_must_match() {
        let def =
            parse("name = \"t\"\nversion = 1\ncommand = [\"x\"]\nsuccess = ['^done$']").unwrap();
        let params = json!({});
        let files = Files::default();
        let input = TaskInput {
            params: &params,
            frames: one(1),
            gpus: &[],
            files: &files,
        };
        let mut parser = def.parser(&input);
        feed(&mut *parser, &["working"]);
        assert!(
            parser
                .finish(Exit { code: Some(0) }, &files)
                .error
                .unwrap()
                .contains("success patterns")
        );
        let mut parser = def.parser(&input);
        feed(&mut *parser, &["done"]);
        assert_eq!(parser.finish(Exit { code: Some(0) }, &files).error, None);
    }

    /// The TOML blocks of a Markdown text or of this module's documentation.
    fn toml_blocks(text: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line
                .strip_prefix("//! ")
                .or_else(|| line.strip_prefix("//!"))
                .unwrap_or(line);
            match (&mut current, line.trim()) {
                (None, "```toml") => current = Some(String::new()),
                (Some(block), "```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), _) => {
                    block.push_str(line);
                    block.push('\n');
                }
                _ => {}
            }
        }
        blocks
    }

    #[test]
    fn the_documented_examples_load() {
        for (source, text) in [
            ("README.md", include_str!("../../README.md")),
            ("declarative.rs", include_str!("declarative.rs")),
        ] {
            let blocks = toml_blocks(text);
            assert!(!blocks.is_empty(), "{source} has no TOML example");
            for block in blocks {
                let def = parse(&block).unwrap_or_else(|e| panic!("{source}: {e}\n{block}"));
                assert_eq!(def.name, "resize");
            }
        }
    }
}
