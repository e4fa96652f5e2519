//! From a spec's text (YAML or INI) to checked [`Field`]s: both formats are first read into
//! the same raw form (field → attribute → value), then one builder interprets and checks
//! every attribute, so the two formats cannot drift apart.

use std::sync::LazyLock;

use indexmap::IndexMap;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;

use super::{Field, FieldType, SpecError, value};
use crate::ini;
use crate::problem::{Problem, yaml_error_parts};

/// The section of an INI spec that lists display sections instead of defining a field.
const INI_SECTIONS: &str = "sections";

/// Compiled regexes are bounded so that a hostile spec cannot exhaust the agent's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const ATTRIBUTES: [&str; 14] = [
    "type",
    "required",
    "default",
    "label",
    "help",
    "min",
    "max",
    "min_length",
    "max_length",
    "regex",
    "message",
    "choices",
    "item",
    "section",
];

// A constant pattern, compiled by every test run.
static FIELD_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[A-Za-z_][A-Za-z0-9_-]{0,63}$").expect("field name pattern"));

/// A spec before interpretation: field → attribute → value, in the order written.
pub(super) struct RawSpec {
    fields: IndexMap<String, IndexMap<String, Value>>,
    sections: IndexMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlSpec {
    #[serde(default)]
    fields: IndexMap<String, IndexMap<String, Value>>,
    #[serde(default)]
    sections: IndexMap<String, Vec<String>>,
}

pub(super) fn read_yaml(text: &str) -> Result<RawSpec, SpecError> {
    if text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
    {
        return Ok(RawSpec {
            fields: IndexMap::new(),
            sections: IndexMap::new(),
        });
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    let spec: YamlSpec = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let (path, message) = yaml_error_parts(&error);
        SpecError::Syntax { path, message }
    })?;
    Ok(RawSpec {
        fields: spec.fields,
        sections: spec.sections,
    })
}

pub(super) fn read_ini(text: &str) -> Result<RawSpec, SpecError> {
    let syntax = |message: String| SpecError::Syntax {
        path: String::new(),
        message,
    };
    let mut raw = RawSpec {
        fields: IndexMap::new(),
        sections: IndexMap::new(),
    };
    for section in ini::parse(text).map_err(syntax)? {
        let Some(name) = section.name else {
            return Err(syntax(
                "keys before the first [field] header belong to no field".into(),
            ));
        };
        if name == INI_SECTIONS {
            for (section_name, members) in section.entries {
                let fields = value::as_list(&Value::String(members)).map_err(syntax)?;
                raw.sections.insert(section_name, fields);
            }
        } else {
            let attributes = section
                .entries
                .into_iter()
                .map(|(key, text)| (key, Value::String(text)))
                .collect();
            raw.fields.insert(name, attributes);
        }
    }
    Ok(raw)
}

type Built = (IndexMap<String, Field>, IndexMap<String, Vec<String>>);

/// Interprets and checks every field and section; all problems are reported together.
pub(super) fn build(raw: RawSpec) -> Result<Built, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut fields = IndexMap::new();
    for (name, attributes) in raw.fields {
        if !FIELD_NAME.is_match(&name) {
            problems.push(Problem::new(
                &name,
                "a field name must be 1 to 64 letters, digits, '_' or '-', not starting with a digit or '-'",
            ));
            continue;
        }
        if let Some(field) = build_field(&name, &attributes, &mut problems) {
            fields.insert(name, field);
        }
    }
    let sections = assign_sections(raw.sections, &mut fields, &mut problems);
    if problems.is_empty() {
        Ok((fields, sections))
    } else {
        Err(problems)
    }
}

fn build_field(
    name: &str,
    attributes: &IndexMap<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<Field> {
    let known_types = || {
        FieldType::ALL
            .iter()
            .map(|entry| entry.0)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let field_type = match attributes.get("type").map(value::as_text) {
        None => {
            problems.push(Problem::new(
                format!("{name}.type"),
                format!("is missing; one of {}", known_types()),
            ));
            return None;
        }
        Some(Err(message)) => {
            problems.push(Problem::new(format!("{name}.type"), message));
            return None;
        }
        Some(Ok(text)) => match FieldType::ALL.iter().find(|entry| entry.0 == text) {
            Some(entry) => entry.1,
            None => {
                problems.push(Problem::new(
                    format!("{name}.type"),
                    format!("unknown type {text:?}; one of {}", known_types()),
                ));
                return None;
            }
        },
    };
    let mut field = Field {
        name: name.to_string(),
        field_type,
        required: false,
        default: None,
        label: None,
        help: None,
        min: None,
        max: None,
        min_length: None,
        max_length: None,
        regex: None,
        item: None,
        message: None,
        choices: Vec::new(),
        section: None,
    };
    let problems_before = problems.len();
    for (attribute, raw) in attributes {
        let at = format!("{name}.{attribute}");
        if let Err(message) = apply_attribute(&mut field, attribute, raw) {
            problems.push(Problem::new(at, message));
        }
    }
    check_field(&field, problems);
    // The default is checked last, against the field as the spec defines it, and only when
    // the rest of the field is sound (else its message would be noise).
    if let Some(raw_default) = attributes.get("default")
        && problems.len() == problems_before
    {
        match value::coerce(&field, raw_default) {
            Ok(default) => field.default = Some(default),
            Err(message) => problems.push(Problem::new(format!("{name}.default"), message)),
        }
    }
    Some(field)
}

fn apply_attribute(field: &mut Field, attribute: &str, raw: &Value) -> Result<(), String> {
    let field_type = field.field_type;
    let applies = match attribute {
        "type" | "default" | "required" | "label" | "help" => true,
        "min" | "max" => field_type.has_bounds(),
        "min_length" | "max_length" | "regex" => field_type.is_text(),
        "message" => field_type.is_text() || field_type == FieldType::List,
        "choices" => field_type == FieldType::Choice,
        "item" => field_type == FieldType::List,
        "section" => return Err("put the field under `sections` instead".into()),
        _ => {
            return Err(format!(
                "unknown attribute; known attributes: {}",
                ATTRIBUTES.join(", ")
            ));
        }
    };
    if !applies {
        return Err(format!(
            "does not apply to a field of type {}",
            field_type.as_str()
        ));
    }
    match attribute {
        "required" => field.required = value::as_bool(raw)?,
        "label" => field.label = Some(value::as_text(raw)?),
        "help" => field.help = Some(value::as_text(raw)?),
        "message" => field.message = Some(value::as_text(raw)?),
        "min" => field.min = Some(value::as_bound(field_type, raw)?),
        "max" => field.max = Some(value::as_bound(field_type, raw)?),
        "min_length" => field.min_length = Some(value::as_count(raw)?),
        "max_length" => field.max_length = Some(value::as_count(raw)?),
        "regex" => field.regex = Some(compile(&value::as_text(raw)?)?),
        "item" => field.item = Some(compile(&value::as_text(raw)?)?),
        "choices" => field.choices = value::as_list(raw)?,
        _ => {}
    }
    Ok(())
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| {
            format!(
                "not a valid regular expression: {}",
                error.to_string().replace('\n', " ")
            )
        })
}

fn check_field(field: &Field, problems: &mut Vec<Problem>) {
    let name = &field.name;
    if let (Some(min), Some(max)) = (field.min, field.max)
        && min > max
    {
        problems.push(Problem::new(
            format!("{name}.min"),
            format!(
                "min ({}) is greater than max ({})",
                value::show_bound(field.field_type, min),
                value::show_bound(field.field_type, max)
            ),
        ));
    }
    if let (Some(min), Some(max)) = (field.min_length, field.max_length)
        && min > max
    {
        problems.push(Problem::new(
            format!("{name}.min_length"),
            format!("min_length ({min}) is greater than max_length ({max})"),
        ));
    }
    if field.field_type == FieldType::Choice {
        if field.choices.is_empty() {
            problems.push(Problem::new(
                format!("{name}.choices"),
                "a choice field needs a non-empty list of choices",
            ));
        }
        for (index, choice) in field.choices.iter().enumerate() {
            if field.choices[..index].contains(choice) {
                problems.push(Problem::new(
                    format!("{name}.choices"),
                    format!("{choice:?} is listed twice"),
                ));
            }
        }
    }
    if field.message.is_some() && field.regex.is_none() && field.item.is_none() {
        problems.push(Problem::new(
            format!("{name}.message"),
            "is the message of a failed regex (or item); give one",
        ));
    }
}

fn assign_sections(
    sections: IndexMap<String, Vec<String>>,
    fields: &mut IndexMap<String, Field>,
    problems: &mut Vec<Problem>,
) -> IndexMap<String, Vec<String>> {
    for (section, members) in &sections {
        let at = format!("sections.{section}");
        if section.trim().is_empty() {
            problems.push(Problem::new(&at, "a section needs a name"));
        }
        for member in members {
            match fields.get_mut(member) {
                None => problems.push(Problem::new(&at, format!("unknown field {member:?}"))),
                Some(field) => match &field.section {
                    Some(other) => problems.push(Problem::new(
                        &at,
                        format!("field {member:?} is already in section {other:?}; a field is in one section"),
                    )),
                    None => field.section = Some(section.clone()),
                },
            }
        }
    }
    sections
}
