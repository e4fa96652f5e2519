//! One value against one field: coercion from JSON or text to the field's type, then the
//! field's checks. The same code checks configuration values, spec defaults and bounds.

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::{Field, FieldType};
use crate::units::{format_duration, parse_duration, parse_size};

// Constant patterns, compiled by every test run.
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^@\s]+@[^@\s]+\.[^@\s]+$").expect("email pattern"));
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]+([/?#]\S*)?$").expect("URL pattern")
});
static HOST_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$").expect("host label pattern")
});

/// The value normalised for the field (see [`FieldType`] for each type's stored form), or
/// what is wrong with it.
pub(crate) fn coerce(field: &Field, raw: &Value) -> Result<Value, String> {
    match field.field_type {
        FieldType::Int => {
            let number = as_int(raw)?;
            check_bounds(field, number as f64, &number.to_string())?;
            Ok(Value::from(number))
        }
        FieldType::Port => {
            let number = as_int(raw)?;
            if !(1..=65535).contains(&number) {
                return Err(format!("expected a port between 1 and 65535, got {number}"));
            }
            check_bounds(field, number as f64, &number.to_string())?;
            Ok(Value::from(number))
        }
        FieldType::Float => {
            let number = as_float(raw)?;
            check_bounds(field, number, &number.to_string())?;
            Ok(Value::from(number))
        }
        FieldType::Bool => Ok(Value::Bool(as_bool(raw)?)),
        FieldType::Duration => {
            let seconds = as_duration_seconds(raw)?;
            check_bounds(field, seconds, &format_seconds(seconds))?;
            Ok(seconds_value(seconds))
        }
        FieldType::Size => {
            let bytes = as_size(raw)?;
            check_bounds(field, bytes as f64, &format!("{bytes} bytes"))?;
            Ok(Value::from(bytes))
        }
        FieldType::List => {
            let items = as_list(raw)?;
            check_bounds(field, items.len() as f64, &format!("{} items", items.len()))?;
            if let Some(pattern) = &field.item {
                for item in &items {
                    if !pattern.is_match(item) {
                        return Err(failed_pattern(field, pattern, &format!("item {item:?}")));
                    }
                }
            }
            Ok(Value::from(items))
        }
        _ => {
            let text = as_text(raw)?;
            check_text(field, &text)?;
            Ok(Value::String(text))
        }
    }
}

fn check_text(field: &Field, text: &str) -> Result<(), String> {
    match field.field_type {
        FieldType::String if text.contains(['\n', '\r']) => {
            return Err("must be one line (a text field takes several lines)".into());
        }
        FieldType::Email if !EMAIL.is_match(text) => {
            return Err(format!("expected an e-mail address, got {text:?}"));
        }
        FieldType::Url if !URL.is_match(text) => {
            return Err(format!(
                "expected a URL with a scheme like https://host/path, got {text:?}"
            ));
        }
        FieldType::Host if !is_host(text) => {
            return Err(format!(
                "expected a host name or an IP address, got {text:?}"
            ));
        }
        FieldType::Path if text.is_empty() || text.contains('\0') => {
            return Err("expected a path: not empty, without NUL characters".into());
        }
        FieldType::Choice if !field.choices.iter().any(|choice| choice == text) => {
            return Err(format!(
                "{text:?} is not one of the choices: {}",
                field.choices.join(", ")
            ));
        }
        _ => {}
    }
    let length = text.chars().count() as u64;
    if let Some(min) = field.min_length
        && length < min
    {
        return Err(format!(
            "must be at least {min} characters long, got {length}"
        ));
    }
    if let Some(max) = field.max_length
        && length > max
    {
        return Err(format!(
            "must be at most {max} characters long, got {length}"
        ));
    }
    if let Some(pattern) = &field.regex
        && !pattern.is_match(text)
    {
        let shown = if field.is_secret() {
            "the value".to_string()
        } else {
            format!("{text:?}")
        };
        return Err(failed_pattern(field, pattern, &shown));
    }
    Ok(())
}

fn failed_pattern(field: &Field, pattern: &Regex, what: &str) -> String {
    match &field.message {
        Some(message) => message.clone(),
        None => format!("{what} does not match {}", pattern.as_str()),
    }
}

fn is_host(text: &str) -> bool {
    if text.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| HOST_LABEL.is_match(label))
}

fn check_bounds(field: &Field, value: f64, shown: &str) -> Result<(), String> {
    if let Some(min) = field.min
        && value < min
    {
        return Err(format!(
            "must be at least {}, got {shown}",
            show_bound(field.field_type, min)
        ));
    }
    if let Some(max) = field.max
        && value > max
    {
        return Err(format!(
            "must be at most {}, got {shown}",
            show_bound(field.field_type, max)
        ));
    }
    Ok(())
}

/// A bound as a person would write it for the field's type.
pub(crate) fn show_bound(field_type: FieldType, bound: f64) -> String {
    match field_type {
        FieldType::Duration => format_seconds(bound),
        FieldType::Size => format!("{bound} bytes"),
        FieldType::List => format!("{bound} items"),
        _ => bound.to_string(),
    }
}

fn format_seconds(seconds: f64) -> String {
    format_duration(std::time::Duration::from_secs_f64(seconds.max(0.0)))
}

/// A duration in seconds as stored: an integer when whole, else a float.
fn seconds_value(seconds: f64) -> Value {
    if seconds.fract() == 0.0 && seconds <= u64::MAX as f64 {
        Value::from(seconds as u64)
    } else {
        Value::from(seconds)
    }
}

/// What kind of JSON value this is, for messages.
fn shown(raw: &Value) -> String {
    match raw {
        Value::Null => "nothing".into(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => format!("{text:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

/// A whole number from a JSON integer or from text.
pub(crate) fn as_int(raw: &Value) -> Result<i64, String> {
    let parsed = match raw {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("expected a whole number, got {}", shown(raw)))
}

/// A finite number from JSON or from text.
pub(crate) fn as_float(raw: &Value) -> Result<f64, String> {
    let parsed = match raw {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .filter(|number| number.is_finite())
        .ok_or_else(|| format!("expected a number, got {}", shown(raw)))
}

/// A boolean from JSON or from text (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`).
pub(crate) fn as_bool(raw: &Value) -> Result<bool, String> {
    let parsed = match raw {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| format!("expected true or false, got {}", shown(raw)))
}

/// Text from a string, or a number or boolean written as text (YAML reads `12345` as a
/// number even where a string is meant).
pub(crate) fn as_text(raw: &Value) -> Result<String, String> {
    match raw {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        _ => Err(format!("expected text, got {}", shown(raw))),
    }
}

/// A list of strings from a JSON list, or from text: a JSON list if it starts with `[`,
/// else items separated by commas (surrounding spaces and empty items dropped).
pub(crate) fn as_list(raw: &Value) -> Result<Vec<String>, String> {
    match raw {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                as_text(item)
                    .map_err(|_| format!("expected a list of strings, got an item {}", shown(item)))
            })
            .collect(),
        Value::String(text) if text.trim_start().starts_with('[') => {
            let parsed: Value = serde_json::from_str(text).map_err(|error| {
                format!("a list starting with '[' must be a JSON list of strings: {error}")
            })?;
            if parsed.is_array() {
                as_list(&parsed)
            } else {
                Err("expected a list of strings".into())
            }
        }
        Value::String(text) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()),
        _ => Err(format!("expected a list of strings, got {}", shown(raw))),
    }
}

/// A count (list length or text length) from a non-negative whole number.
pub(crate) fn as_count(raw: &Value) -> Result<u64, String> {
    let number = as_int(raw)?;
    u64::try_from(number).map_err(|_| format!("expected a count of 0 or more, got {number}"))
}

fn as_duration_seconds(raw: &Value) -> Result<f64, String> {
    match raw {
        Value::String(text) => parse_duration(text).map(|duration| duration.as_secs_f64()),
        Value::Number(number) => number
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .ok_or_else(|| {
                format!("expected a duration like 10s or a number of seconds, got {number}")
            }),
        _ => Err(format!(
            "expected a duration like 10s or 5m, got {}",
            shown(raw)
        )),
    }
}

fn as_size(raw: &Value) -> Result<u64, String> {
    match raw {
        Value::String(text) => parse_size(text),
        Value::Number(number) => number.as_u64().ok_or_else(|| {
            format!("expected a size like 512M or a whole number of bytes, got {number}")
        }),
        _ => Err(format!(
            "expected a size like 512M or 2G, got {}",
            shown(raw)
        )),
    }
}

/// A bound (`min`/`max`) in the field type's unit: seconds, bytes, items or the number.
pub(crate) fn as_bound(field_type: FieldType, raw: &Value) -> Result<f64, String> {
    match field_type {
        FieldType::Int | FieldType::Port => as_int(raw).map(|number| number as f64),
        FieldType::Duration => as_duration_seconds(raw),
        FieldType::Size => as_size(raw).map(|bytes| bytes as f64),
        FieldType::List => as_count(raw).map(|count| count as f64),
        _ => as_float(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_names_and_addresses() {
        for good in ["example.com", "localhost", "10.0.0.1", "::1", "a-b.c"] {
            assert!(is_host(good), "{good}");
        }
        for bad in ["", "-a.com", "a..b", "exa mple.com", "a_b.com"] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    #[test]
    fn lists_from_text_json_and_arrays() {
        assert_eq!(
            as_list(&json!("a, b,,c")),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            as_list(&json!("[\"a,b\", \"c\"]")),
            Ok(vec!["a,b".into(), "c".into()])
        );
        assert_eq!(as_list(&json!(["x", 1])), Ok(vec!["x".into(), "1".into()]));
        assert_eq!(as_list(&json!("")), Ok(Vec::<String>::new()));
        assert!(as_list(&json!({"a": 1})).is_err());
    }

    #[test]
    fn scalars_from_text() {
        assert_eq!(as_int(&json!(" 3 ")), Ok(3));
        assert!(as_int(&json!(2.5)).is_err());
        assert_eq!(as_bool(&json!("Yes")), Ok(true));
        assert!(as_bool(&json!("maybe")).unwrap_err().contains("\"maybe\""));
        assert!(as_float(&json!("NaN")).is_err());
    }
}
