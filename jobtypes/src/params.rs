//! Typed job-type parameters: what a definition declares, and the check of a job's
//! `params` against it at submission.

use std::collections::BTreeMap;
use std::fmt;

use furrow_protocol::ParamView;
use serde_json::{Map, Value};

/// Longest string parameter, in bytes.
const MAX_STRING: usize = 64 * 1024;
/// Most items of a list parameter.
const MAX_ITEMS: usize = 10_000;

/// The type of a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    /// Any text.
    String,
    /// A whole number.
    Int,
    /// A number.
    Float,
    /// `true` or `false`.
    Bool,
    /// An absolute file or directory path, on any system (path maps apply to it).
    Path,
    /// One of the listed words.
    Enum(Vec<String>),
    /// A list of values of one type.
    List(Box<ParamType>),
    /// Names to text values (an environment).
    Map,
}

impl ParamType {
    /// Parses a type name as written in a definition file: `string`, `int`, `float`,
    /// `bool`, `path`, `enum`, `map`, or `list` with its item type given apart.
    pub fn parse(
        name: &str,
        values: Option<Vec<String>>,
        items: Option<&str>,
    ) -> Result<Self, String> {
        let scalar = |name: &str| match name {
            "string" => Ok(ParamType::String),
            "int" => Ok(ParamType::Int),
            "float" => Ok(ParamType::Float),
            "bool" => Ok(ParamType::Bool),
            "path" => Ok(ParamType::Path),
            other => Err(format!(
                "unknown parameter type `{other}` (known: string, int, float, bool, path, enum, list, map)"
            )),
        };
        match name {
            "enum" => match values {
                Some(values) if !values.is_empty() => Ok(ParamType::Enum(values)),
                _ => Err("an `enum` parameter needs `values`, a non-empty list of words".into()),
            },
            "list" => {
                let items =
                    items.ok_or("a `list` parameter needs `items`, the type of its elements")?;
                if items == "list" || items == "map" || items == "enum" {
                    return Err(format!("`items` must be a scalar type, not `{items}`"));
                }
                Ok(ParamType::List(Box::new(scalar(items)?)))
            }
            "map" => Ok(ParamType::Map),
            other => scalar(other),
        }
    }

    /// The type as shown to users: `int`, `list<path>`, `enum`.
    pub fn name(&self) -> String {
        match self {
            ParamType::String => "string".into(),
            ParamType::Int => "int".into(),
            ParamType::Float => "float".into(),
            ParamType::Bool => "bool".into(),
            ParamType::Path => "path".into(),
            ParamType::Enum(_) => "enum".into(),
            ParamType::List(item) => format!("list<{}>", item.name()),
            ParamType::Map => "map".into(),
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Its name in `params`.
    pub name: String,
    /// Its type.
    pub ty: ParamType,
    /// Whether a job must give it (a parameter with a default never must).
    pub required: bool,
    /// The value used when a job gives none.
    pub default: Option<Value>,
    /// Smallest number (or list length, or string length) accepted.
    pub min: Option<f64>,
    /// Largest number (or list length, or string length) accepted.
    pub max: Option<f64>,
    /// What it is for.
    pub description: String,
}

impl ParamSpec {
    /// A parameter with no default, bounds or description.
    pub fn new(name: &str, ty: ParamType, required: bool) -> Self {
        Self {
            name: name.into(),
            ty,
            required,
            default: None,
            min: None,
            max: None,
            description: String::new(),
        }
    }

    /// With a default value.
    pub fn default(mut self, value: Value) -> Self {
        self.default = Some(value);
        self.required = false;
        self
    }

    /// With bounds.
    pub fn range(mut self, min: Option<f64>, max: Option<f64>) -> Self {
        self.min = min;
        self.max = max;
        self
    }

    /// With a description.
    pub fn describe(mut self, text: &str) -> Self {
        self.description = text.into();
        self
    }

    /// The parameter as the API shows it.
    pub fn view(&self) -> ParamView {
        ParamView {
            name: self.name.clone(),
            r#type: self.ty.name(),
            required: self.required,
            default: self.default.clone().map(furrow_protocol::Json),
            min: self.min,
            max: self.max,
            values: match &self.ty {
                ParamType::Enum(values) => values.clone(),
                _ => Vec::new(),
            },
            description: self.description.clone(),
        }
    }

    /// Checks a value of this parameter; the message does not name it (the caller does).
    pub fn check(&self, value: &Value) -> Result<(), String> {
        check_value(&self.ty, value, self.min, self.max)
    }
}

/// A parameter that does not fit its declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParamError {
    /// The parameter (`samples`, or `frames[2]` for a list item).
    pub name: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "params: {}", self.message)
        } else {
            write!(f, "params.{}: {}", self.name, self.message)
        }
    }
}

impl ParamError {
    fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// Checks `params` against `specs` and returns them with every missing default filled in.
/// Unknown parameters are refused, naming the known ones.
pub fn validate(specs: &[ParamSpec], params: &Value) -> Result<Value, ParamError> {
    let empty = Map::new();
    let given = match params {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(ParamError::new(
                "",
                format!("must be an object of parameters, not {}", kind(other)),
            ));
        }
    };
    let mut out = Map::new();
    for (name, value) in given {
        let Some(spec) = specs.iter().find(|spec| &spec.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(ParamError::new(
                name.clone(),
                format!("unknown parameter (known: {})", known.join(", ")),
            ));
        };
        if value.is_null() && !spec.required {
            continue;
        }
        check_value(&spec.ty, value, spec.min, spec.max)
            .map_err(|message| ParamError::new(name.clone(), message))?;
        out.insert(name.clone(), value.clone());
    }
    for spec in specs {
        if out.contains_key(&spec.name) {
            continue;
        }
        if let Some(default) = &spec.default {
            out.insert(spec.name.clone(), default.clone());
        } else if spec.required {
            return Err(ParamError::new(
                spec.name.clone(),
                format!("required ({} parameter)", spec.ty.name()),
            ));
        }
    }
    Ok(Value::Object(out))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

struct Bound(f64);

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn check_bounds(what: &str, n: f64, min: Option<f64>, max: Option<f64>) -> Result<(), String> {
    if let Some(min) = min
        && n < min
    {
        return Err(format!(
            "{what} must be at least {}, got {}",
            Bound(min),
            Bound(n)
        ));
    }
    if let Some(max) = max
        && n > max
    {
        return Err(format!(
            "{what} must be at most {}, got {}",
            Bound(max),
            Bound(n)
        ));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    if text.len() > MAX_STRING {
        return Err(format!("must be at most {MAX_STRING} bytes"));
    }
    Ok(())
}

fn check_value(
    ty: &ParamType,
    value: &Value,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<(), String> {
    let wrong = || format!("must be {}, not {}", expected(ty), kind(value));
    match ty {
        ParamType::String | ParamType::Path => {
            let text = value.as_str().ok_or_else(wrong)?;
            check_text(text)?;
            if *ty == ParamType::Path && text.trim().is_empty() {
                return Err("must not be an empty path".into());
            }
            if *ty == ParamType::Path && !is_absolute(text) {
                return Err(format!(
                    "{text:?} is not an absolute path: tasks run on other hosts, in their own directories"
                ));
            }
            check_bounds("its length", text.chars().count() as f64, min, max)
        }
        ParamType::Int => {
            let n = value.as_i64().ok_or_else(|| match value.as_f64() {
                Some(_) => "must be a whole number".to_string(),
                None => wrong(),
            })?;
            check_bounds("it", n as f64, min, max)
        }
        ParamType::Float => {
            let n = value.as_f64().ok_or_else(wrong)?;
            check_bounds("it", n, min, max)
        }
        ParamType::Bool => value.as_bool().map(|_| ()).ok_or_else(wrong),
        ParamType::Enum(values) => {
            let text = value.as_str().ok_or_else(wrong)?;
            if values.iter().any(|v| v == text) {
                Ok(())
            } else {
                Err(format!(
                    "must be one of {}, got {text:?}",
                    values.join(", ")
                ))
            }
        }
        ParamType::List(item) => {
            let items = value.as_array().ok_or_else(wrong)?;
            if items.len() > MAX_ITEMS {
                return Err(format!("must have at most {MAX_ITEMS} items"));
            }
            check_bounds("its length", items.len() as f64, min, max)?;
            for (i, v) in items.iter().enumerate() {
                check_value(item, v, None, None).map_err(|e| format!("item {i}: {e}"))?;
            }
            Ok(())
        }
        ParamType::Map => {
            let map = value.as_object().ok_or_else(wrong)?;
            for (name, v) in map {
                check_text(name).map_err(|e| format!("key {name:?}: {e}"))?;
                let text = v
                    .as_str()
                    .ok_or_else(|| format!("{name}: must be a string, not {}", kind(v)))?;
                check_text(text).map_err(|e| format!("{name}: {e}"))?;
            }
            Ok(())
        }
    }
}

/// Whether `path` is absolute on some system: `/...`, `C:\...` or `C:/...`, `\\server\...`.
pub fn is_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    path.starts_with('/')
        || path.starts_with("\\\\")
        || (bytes.len() >= 3
            && bytes[0].is_ascii_alphabetic()
            && bytes[1] == b':'
            && (bytes[2] == b'\\' || bytes[2] == b'/'))
}

fn expected(ty: &ParamType) -> String {
    match ty {
        ParamType::String => "a string".into(),
        ParamType::Path => "a path (a string)".into(),
        ParamType::Int => "a whole number".into(),
        ParamType::Float => "a number".into(),
        ParamType::Bool => "true or false".into(),
        ParamType::Enum(values) => format!("one of {}", values.join(", ")),
        ParamType::List(item) => format!(
            "a list of {}",
            match **item {
                ParamType::Int => "whole numbers",
                ParamType::Float => "numbers",
                ParamType::Bool => "booleans",
                ParamType::Path => "paths",
                _ => "strings",
            }
        ),
        ParamType::Map => "an object of strings".into(),
    }
}

/// Typed access to validated parameters (the plan of a job type reads them).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a>(pub &'a Value);

impl<'a> Params<'a> {
    /// A string (or path or enum) parameter.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A whole-number parameter.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }

    /// A number parameter.
    pub fn float(&self, name: &str) -> Option<f64> {
        self.0.get(name).and_then(Value::as_f64)
    }

    /// A boolean parameter.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(Value::as_bool)
    }

    /// A list of strings.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .and_then(Value::as_array)
            .map(|items| items.iter().map(render_scalar).collect())
            .unwrap_or_default()
    }

    /// A map of strings.
    pub fn map(&self, name: &str) -> BTreeMap<String, String> {
        self.0
            .get(name)
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A scalar value as text in a command line (`true`, `16`, `0.5`, the string itself).
pub fn render_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("scene", ParamType::Path, true),
            ParamSpec::new("samples", ParamType::Int, false)
                .default(json!(16))
                .range(Some(1.0), Some(65536.0)),
            ParamSpec::new("scale", ParamType::Float, false).range(Some(0.0), Some(1.0)),
            ParamSpec::new(
                "engine",
                ParamType::Enum(vec!["CYCLES".into(), "BLENDER_EEVEE".into()]),
                false,
            ),
            ParamSpec::new("extra", ParamType::List(Box::new(ParamType::String)), false),
            ParamSpec::new("env", ParamType::Map, false),
            ParamSpec::new("fast", ParamType::Bool, false),
        ]
    }

    fn err(params: Value) -> String {
        validate(&specs(), &params).unwrap_err().to_string()
    }

    #[test]
    fn fills_defaults_and_keeps_given_values() {
        let out = validate(&specs(), &json!({"scene": "/a.blend", "fast": true})).unwrap();
        assert_eq!(
            out,
            json!({"scene": "/a.blend", "samples": 16, "fast": true})
        );
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(err(json!({})), "params.scene: required (path parameter)");
        assert_eq!(
            err(json!({"scene": "/a", "samples": 0})),
            "params.samples: it must be at least 1, got 0"
        );
        assert_eq!(
            err(json!({"scene": "/a", "samples": 1.5})),
            "params.samples: must be a whole number"
        );
        assert_eq!(
            err(json!({"scene": "/a", "samples": "8"})),
            "params.samples: must be a whole number, not a string"
        );
        assert_eq!(
            err(json!({"scene": "/a", "engine": "LUX"})),
            "params.engine: must be one of CYCLES, BLENDER_EEVEE, got \"LUX\""
        );
        assert_eq!(
            err(json!({"scene": "/a", "extra": ["x", 3]})),
            "params.extra: item 1: must be a string, not a number"
        );
        assert_eq!(
            err(json!({"scene": "/a", "env": {"A": 1}})),
            "params.env: A: must be a string, not a number"
        );
        assert!(
            err(json!({"scene": "/a", "sample": 3}))
                .starts_with("params.sample: unknown parameter (known: scene, samples")
        );
        assert_eq!(
            err(json!({"scene": ""})),
            "params.scene: must not be an empty path"
        );
        assert!(
            err(json!({"scene": "shots/a.blend"}))
                .starts_with("params.scene: \"shots/a.blend\" is not an absolute path")
        );
        for ok in ["/a", r"P:\a", "p:/a", r"\\nas\p"] {
            assert!(validate(&specs(), &json!({"scene": ok})).is_ok(), "{ok}");
        }
        assert_eq!(
            err(json!({"scene": "a\u{0}b"})),
            "params.scene: must not contain NUL characters"
        );
        assert_eq!(
            err(json!({"scene": "/a", "scale": 2})),
            "params.scale: it must be at most 1, got 2"
        );
        assert!(
            validate(&specs(), &json!([1]))
                .unwrap_err()
                .to_string()
                .contains("must be an object")
        );
    }

    #[test]
    fn null_clears_an_optional_parameter_to_its_default() {
        let out = validate(&specs(), &json!({"scene": "/a", "samples": null})).unwrap();
        assert_eq!(out["samples"], json!(16));
    }

    #[test]
    fn type_names_parse_and_bad_ones_are_explained() {
        assert_eq!(
            ParamType::parse("list", None, Some("path")).unwrap(),
            ParamType::List(Box::new(ParamType::Path))
        );
        assert!(
            ParamType::parse("colour", None, None)
                .unwrap_err()
                .contains("unknown parameter type `colour`")
        );
        assert!(
            ParamType::parse("enum", None, None)
                .unwrap_err()
                .contains("needs `values`")
        );
        assert!(
            ParamType::parse("list", None, None)
                .unwrap_err()
                .contains("needs `items`")
        );
        assert!(
            ParamType::parse("list", None, Some("list"))
                .unwrap_err()
                .contains("scalar")
        );
    }
}
