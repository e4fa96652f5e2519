//! Configuration files: the file Furrow writes for the app (in the spec's format) and the
//! files users supply (`furrow app config NAME --file F`), read back into an input map.

use std::path::Path;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Config, Field, Spec};
use crate::ini;

/// The section holding the values in an INI configuration file.
pub const INI_CONFIG_SECTION: &str = "config";

const HEADER: &str =
    "Written by Furrow from the app's config spec; changes here are replaced on the next install.";

/// The format of a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    /// A flat YAML mapping `field: value`.
    Yaml,
    /// `key = value` lines under `[config]` (or before any section header).
    Ini,
    /// A JSON object.
    Json,
}

impl ConfigFormat {
    /// The format by file extension: `.yaml`/`.yml`, `.ini`/`.conf`/`.cfg`, `.json`.
    pub fn from_path(path: &Path) -> Option<ConfigFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(ConfigFormat::Yaml),
            "ini" | "conf" | "cfg" => Some(ConfigFormat::Ini),
            "json" => Some(ConfigFormat::Json),
            _ => None,
        }
    }
}

/// Why a user's configuration file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration file ({format:?}): {message}")]
pub struct ConfigFileError {
    /// The format it was read as.
    pub format: ConfigFormat,
    /// What is wrong, with a line number when known.
    pub message: String,
}

/// Reads a configuration file into an input map for [`Spec::validate`]. The file's values
/// are not checked here (INI values are all text, coerced by the spec's types then).
pub fn parse_config_file(
    text: &str,
    format: ConfigFormat,
) -> Result<Map<String, Value>, ConfigFileError> {
    let error = |message: String| ConfigFileError { format, message };
    match format {
        ConfigFormat::Yaml => {
            let parsed: Option<IndexMap<String, Value>> = serde_yaml_ng::from_str(text)
                .map_err(|reason| error(format!("expected a mapping of field: value; {reason}")))?;
            Ok(parsed.unwrap_or_default().into_iter().collect())
        }
        ConfigFormat::Json => serde_json::from_str(text)
            .map_err(|reason| error(format!("expected a JSON object; {reason}"))),
        ConfigFormat::Ini => {
            let mut values = Map::new();
            for section in ini::parse(text).map_err(error)? {
                match section.name.as_deref() {
                    None | Some(INI_CONFIG_SECTION) => {
                        for (key, text) in section.entries {
                            if values.insert(key.clone(), Value::String(text)).is_some() {
                                return Err(error(format!("{key} is set twice")));
                            }
                        }
                    }
                    Some(other) => {
                        return Err(error(format!(
                            "unknown section [{other}]; put the values under [{INI_CONFIG_SECTION}]"
                        )));
                    }
                }
            }
            Ok(values)
        }
    }
}

/// Reads command-line assignments (`--set key=value`, each given as `key=value`) into an
/// input map of text values, which [`Spec::validate`] coerces to the fields' types.
/// An argument without `=` or with an empty key, or a key given twice, is refused.
pub fn parse_assignments<S: AsRef<str>>(arguments: &[S]) -> Result<Map<String, Value>, String> {
    let mut values = Map::new();
    for argument in arguments {
        let argument = argument.as_ref();
        let (key, value) = argument
            .split_once('=')
            .filter(|(key, _)| !key.trim().is_empty())
            .ok_or_else(|| format!("expected key=value, got {argument:?}"))?;
        if values
            .insert(key.trim().to_string(), Value::String(value.to_string()))
            .is_some()
        {
            return Err(format!("{} is set twice", key.trim()));
        }
    }
    Ok(values)
}

/// A YAML comment with the field's label and help, when it has any.
fn comment(field: &Field) -> String {
    let text = match (&field.label, &field.help) {
        (Some(label), Some(help)) => format!("{label}: {help}"),
        (Some(text), None) | (None, Some(text)) => text.clone(),
        (None, None) => return String::new(),
    };
    text.lines().map(|line| format!("# {line}\n")).collect()
}

pub(super) fn render_yaml(spec: &Spec, config: &Config) -> String {
    let mut out = format!("# {HEADER}\n");
    if config.is_empty() {
        out.push_str("{}\n");
        return out;
    }
    for field in spec.fields() {
        let Some(value) = config.get(&field.name) else {
            continue;
        };
        out.push_str(&comment(field));
        let entry: IndexMap<&str, &Value> = IndexMap::from([(field.name.as_str(), value)]);
        // JSON is valid YAML, so a value the YAML writer refuses still reads back the same.
        let line = serde_yaml_ng::to_string(&entry)
            .unwrap_or_else(|_| format!("{}: {value}\n", field.name));
        out.push_str(&line);
    }
    out
}

pub(super) fn render_ini(spec: &Spec, config: &Config) -> String {
    let mut out = format!("# {HEADER}\n[{INI_CONFIG_SECTION}]\n");
    for field in spec.fields() {
        let Some(value) = config.get(&field.name) else {
            continue;
        };
        out.push_str(&comment(field));
        out.push_str(&format!("{} = {}\n", field.name, ini_value(value)));
    }
    out
}

/// A value as an INI line reads it back: text quoted only when needed; a list comma-separated
/// unless an item would not survive that, then as a JSON list.
fn ini_value(value: &Value) -> String {
    match value {
        Value::String(text) => ini::quote_if_needed(text),
        Value::Array(items) => {
            let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            let plain = texts.iter().all(|item| {
                !item.is_empty()
                    && !item.contains(',')
                    && item.trim() == *item
                    && !item.starts_with(['[', '"'])
                    && !item.chars().any(char::is_control)
            });
            if plain {
                texts.join(", ")
            } else {
                value.to_string()
            }
        }
        other => other.to_string(),
    }
}
