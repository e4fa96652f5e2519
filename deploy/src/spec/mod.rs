//! Config specs: the one definition of an app's settings (`config.spec.yaml` or
//! `config.spec.ini`) from which validation, defaults, the rendered config file, the masked
//! display of secrets and the dashboard's form description are all derived.
//!
//! - [`Spec::parse`] reads and checks a spec (unknown attributes, `min > max`, a default
//!   that fails its own field, a bad regex are refused, naming the field).
//! - [`Spec::validate`] turns an input map (JSON values from the REST API, or strings from
//!   the command line) into a [`Config`], reporting every problem at once.
//! - [`Spec::render`] writes a [`Config`] as a file in the spec's own format;
//!   [`parse_config_file`] reads a user's file back into an input map.
//! - [`Spec::describe`] lists the fields for a form generator.

mod build;
mod config;
mod describe;
mod file;
mod value;

use indexmap::IndexMap;
use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::problem::{Problem, join_problems};

pub use config::{Config, MASK};
pub use describe::{FieldDescription, SpecDescription};
pub use file::{
    ConfigFileError, ConfigFormat, INI_CONFIG_SECTION, parse_assignments, parse_config_file,
};

/// The file name of a YAML config spec at the top level of a bundle.
pub const SPEC_YAML_FILE: &str = "config.spec.yaml";
/// The file name of an INI config spec at the top level of a bundle.
pub const SPEC_INI_FILE: &str = "config.spec.ini";

/// The format a spec is written in; the app's config file is rendered in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecFormat {
    /// `config.spec.yaml`; the config file is a flat YAML mapping.
    Yaml,
    /// `config.spec.ini`; the config file has one `[config]` section of `key = value`.
    Ini,
}

/// Why a config spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read into a spec's shape (syntax, unknown top-level key).
    #[error("config spec: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Syntax {
        /// Where: a key path for YAML, empty when the reader does not know.
        path: String,
        /// What the reader said.
        message: String,
    },
    /// The spec was read but some fields or sections are wrong; every problem is listed,
    /// each path starting with the field's name (`workers.min`) or `sections.<name>`.
    #[error("config spec: {}", join_problems(.0))]
    Invalid(Vec<Problem>),
}

/// The widget type of a field: how its value is read, checked and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// One line of text.
    String,
    /// Text that may span lines.
    Text,
    /// A whole number (`i64`).
    Int,
    /// A number (`f64`).
    Float,
    /// `true` or `false`.
    Bool,
    /// One of the field's `choices`.
    Choice,
    /// An e-mail address.
    Email,
    /// A URL with a scheme (`https://…`).
    Url,
    /// A host name or an IP address.
    Host,
    /// A TCP/UDP port, 1..=65535.
    Port,
    /// A file system path.
    Path,
    /// A duration (`10s`, `5m`); stored as a number of seconds.
    Duration,
    /// A size (`512M`, `2G`, `10KiB`); stored as a number of bytes.
    Size,
    /// Text that is never shown back: masked in displays.
    Secret,
    /// A list of strings.
    List,
}

impl FieldType {
    pub(crate) const ALL: [(&'static str, FieldType); 15] = [
        ("string", FieldType::String),
        ("text", FieldType::Text),
        ("int", FieldType::Int),
        ("float", FieldType::Float),
        ("bool", FieldType::Bool),
        ("choice", FieldType::Choice),
        ("email", FieldType::Email),
        ("url", FieldType::Url),
        ("host", FieldType::Host),
        ("port", FieldType::Port),
        ("path", FieldType::Path),
        ("duration", FieldType::Duration),
        ("size", FieldType::Size),
        ("secret", FieldType::Secret),
        ("list", FieldType::List),
    ];

    /// The name used in specs (`int`).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("string", |entry| entry.0)
    }

    /// Types whose value is text, checked by `min_length`, `max_length` and `regex`.
    fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::Text
                | FieldType::Email
                | FieldType::Url
                | FieldType::Host
                | FieldType::Path
                | FieldType::Secret
        )
    }

    /// Types bounded by `min` and `max`.
    fn has_bounds(self) -> bool {
        matches!(
            self,
            FieldType::Int
                | FieldType::Float
                | FieldType::Port
                | FieldType::Duration
                | FieldType::Size
                | FieldType::List
        )
    }
}

/// One field of a spec, checked: its attributes are consistent and its default is valid.
#[derive(Debug, Clone)]
pub struct Field {
    pub(crate) name: String,
    pub(crate) field_type: FieldType,
    pub(crate) required: bool,
    /// Already normalised (as [`Spec::validate`] would store it).
    pub(crate) default: Option<Value>,
    pub(crate) label: Option<String>,
    pub(crate) help: Option<String>,
    /// In the type's unit: seconds for durations, bytes for sizes, items for lists.
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) min_length: Option<u64>,
    pub(crate) max_length: Option<u64>,
    pub(crate) regex: Option<Regex>,
    pub(crate) item: Option<Regex>,
    pub(crate) message: Option<String>,
    pub(crate) choices: Vec<String>,
    pub(crate) section: Option<String>,
}

impl Field {
    /// The field's name: its key in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The widget type.
    pub fn field_type(&self) -> FieldType {
        self.field_type
    }

    /// Whether a value must be given (or come from the default).
    pub fn required(&self) -> bool {
        self.required
    }

    /// The normalised default value, if any.
    pub fn default_value(&self) -> Option<&Value> {
        self.default.as_ref()
    }

    /// The section the field is displayed in; `None` is the default section.
    pub fn section(&self) -> Option<&str> {
        self.section.as_deref()
    }

    /// Whether the value is masked in displays.
    pub fn is_secret(&self) -> bool {
        self.field_type == FieldType::Secret
    }
}

/// A checked config spec: fields in the order written, and display sections.
#[derive(Debug, Clone)]
pub struct Spec {
    format: SpecFormat,
    fields: IndexMap<String, Field>,
    /// Section name → field names, in the order written.
    sections: IndexMap<String, Vec<String>>,
}

impl Spec {
    /// Reads and checks a spec written in `format`.
    pub fn parse(text: &str, format: SpecFormat) -> Result<Spec, SpecError> {
        let raw = match format {
            SpecFormat::Yaml => build::read_yaml(text)?,
            SpecFormat::Ini => build::read_ini(text)?,
        };
        let (fields, sections) = build::build(raw).map_err(SpecError::Invalid)?;
        Ok(Spec {
            format,
            fields,
            sections,
        })
    }

    /// A spec with no fields: the spec of an app without configuration.
    pub fn empty() -> Spec {
        Spec {
            format: SpecFormat::Yaml,
            fields: IndexMap::new(),
            sections: IndexMap::new(),
        }
    }

    /// The format the spec was written in.
    pub fn format(&self) -> SpecFormat {
        self.format
    }

    /// The fields in the order written.
    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.values()
    }

    /// One field by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }

    /// Display sections in the order written, each with its field names.
    pub fn sections(&self) -> &IndexMap<String, Vec<String>> {
        &self.sections
    }

    /// Checks an input map against the spec and fills defaults. Every problem is reported,
    /// each naming its field: unknown field, missing required value, wrong type, out of
    /// range, regex failed (with the spec's own message). Strings are coerced to the
    /// field's type (`"3"` for an int, `"true"` for a bool, `"a,b"` for a list), so that
    /// values from a command line (`--set k=v`) or an INI file are accepted. A `null` value
    /// is the same as an absent one.
    pub fn validate(&self, input: &Map<String, Value>) -> Result<Config, Vec<Problem>> {
        let mut problems = Vec::new();
        for name in input.keys() {
            if !self.fields.contains_key(name) {
                problems.push(Problem::new(
                    name,
                    "unknown field: the app's config spec does not define it",
                ));
            }
        }
        let mut values = IndexMap::new();
        for field in self.fields.values() {
            match input.get(&field.name).filter(|value| !value.is_null()) {
                Some(raw) => match value::coerce(field, raw) {
                    Ok(normalised) => {
                        values.insert(field.name.clone(), normalised);
                    }
                    Err(message) => problems.push(Problem::new(&field.name, message)),
                },
                None => match &field.default {
                    Some(default) => {
                        values.insert(field.name.clone(), default.clone());
                    }
                    None if field.required => {
                        problems.push(Problem::new(&field.name, "is required"))
                    }
                    None => {}
                },
            }
        }
        if problems.is_empty() {
            Ok(Config::new(values, self.secret_names()))
        } else {
            Err(problems)
        }
    }

    /// The input with every secret whose value is [`MASK`] replaced by its value in
    /// `previous`: a form that showed the masked configuration and sends it back unchanged
    /// keeps the secrets. A mask for a secret that had no value is left as is (and then
    /// validated as the literal text).
    pub fn merge_with_previous(
        &self,
        input: &Map<String, Value>,
        previous: &Config,
    ) -> Map<String, Value> {
        let mut merged = input.clone();
        for field in self.fields.values().filter(|field| field.is_secret()) {
            let sent_mask = input.get(&field.name).and_then(Value::as_str) == Some(MASK);
            if let (true, Some(kept)) = (sent_mask, previous.get(&field.name)) {
                merged.insert(field.name.clone(), kept.clone());
            }
        }
        merged
    }

    /// [`Spec::merge_with_previous`] then [`Spec::validate`]: the check of an update.
    pub fn validate_update(
        &self,
        input: &Map<String, Value>,
        previous: &Config,
    ) -> Result<Config, Vec<Problem>> {
        self.validate(&self.merge_with_previous(input, previous))
    }

    /// The configuration file as the app reads it, in the spec's format (see the crate's
    /// README for both forms). Secrets are written in full.
    pub fn render(&self, config: &Config) -> String {
        match self.format {
            SpecFormat::Yaml => file::render_yaml(self, config),
            SpecFormat::Ini => file::render_ini(self, config),
        }
    }

    /// A description of every field for a form generator, derived from this spec.
    pub fn describe(&self) -> SpecDescription {
        describe::describe(self)
    }

    fn secret_names(&self) -> Vec<String> {
        self.fields
            .values()
            .filter(|field| field.is_secret())
            .map(|field| field.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
