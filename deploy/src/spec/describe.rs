//! The spec as data for a form generator: every field with its widget, label, help,
//! constraints and section, derived from the same [`Field`]s that validate.

use serde::Serialize;
use serde_json::Value;

use super::{Field, FieldType, MASK, Spec, SpecFormat};

/// A spec described for a dashboard form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecDescription {
    /// The spec's format, which is also the format of the app's config file.
    pub format: SpecFormat,
    /// Named sections in the order written; fields whose `section` is `None` belong to the
    /// default section, shown first.
    pub sections: Vec<String>,
    /// Every field in the order written.
    pub fields: Vec<FieldDescription>,
}

/// One field as a form shows it. Bounds are in the type's stored unit: seconds for
/// durations, bytes for sizes, items for lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDescription {
    /// The configuration key.
    pub name: String,
    /// The widget type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// The label to show; the field's name when the spec gives none.
    pub label: String,
    /// Help text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Whether a value must be given.
    pub required: bool,
    /// The default value, normalised; masked for a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<Value>,
    /// Upper bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Value>,
    /// Minimum length of text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Maximum length of text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// The allowed values of a choice.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The pattern text must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The pattern each list item must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The message shown when a pattern does not match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The section; `None` is the default section.
    pub section: Option<String>,
}

pub(super) fn describe(spec: &Spec) -> SpecDescription {
    SpecDescription {
        format: spec.format(),
        sections: spec.sections().keys().cloned().collect(),
        fields: spec.fields().map(describe_field).collect(),
    }
}

fn describe_field(field: &Field) -> FieldDescription {
    let bound = |bound: Option<f64>| bound.map(|number| bound_value(field.field_type, number));
    let default = match (&field.default, field.is_secret()) {
        (Some(_), true) => Some(Value::String(MASK.into())),
        (default, _) => default.clone(),
    };
    FieldDescription {
        name: field.name.clone(),
        field_type: field.field_type,
        label: field.label.clone().unwrap_or_else(|| field.name.clone()),
        help: field.help.clone(),
        required: field.required,
        default,
        min: bound(field.min),
        max: bound(field.max),
        min_length: field.min_length,
        max_length: field.max_length,
        choices: field.choices.clone(),
        regex: field
            .regex
            .as_ref()
            .map(|pattern| pattern.as_str().to_string()),
        item: field
            .item
            .as_ref()
            .map(|pattern| pattern.as_str().to_string()),
        message: field.message.clone(),
        section: field.section.clone(),
    }
}

/// Whole numbers stay integers in JSON (`8`, not `8.0`).
fn bound_value(field_type: FieldType, number: f64) -> Value {
    if field_type != FieldType::Float && number.fract() == 0.0 && number.abs() < 9.0e15 {
        Value::from(number as i64)
    } else {
        Value::from(number)
    }
}
