//! One validation finding with the path of what it is about: the currency of every
//! "report all errors at once" check in this crate (manifest, spec, configuration).

use serde::Serialize;

/// A problem found while validating a document, naming where it is: a key path in a
/// manifest (`processes.web.instances`) or a field name in a configuration (`workers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where the problem is: a dotted key path or a field name.
    pub path: String,
    /// What is wrong and, where it helps, what would be accepted.
    pub message: String,
}

/// A configuration problem: [`Problem::path`] is the field's name.
pub type FieldError = Problem;

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Joins problems into one line (`a: x; b: y`) for messages that must fit on one line.
pub fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The key path and the message of a strict YAML read, for errors that report the path
/// once: the YAML reader already starts its message with a path (of the enclosing map for
/// an unknown key), which is dropped in favour of the exact one.
pub(crate) fn yaml_error_parts(
    error: &serde_path_to_error::Error<serde_yaml_ng::Error>,
) -> (String, String) {
    let full_path = error.path().to_string();
    let path = if full_path == "." {
        String::new()
    } else {
        full_path
    };
    let message = error.inner().to_string();
    let message = match message.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(' ') && path.starts_with(head) => {
            rest.to_string()
        }
        _ => message,
    };
    (path, message)
}
