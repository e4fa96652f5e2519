//! A small INI reader for config specs and configuration files: `[section]` headers,
//! `key = value` lines, whole-line comments starting with `#` or `;`. A value that starts
//! with `"` is a JSON string literal, so that any text (newlines, leading spaces) can be
//! written; [`quote_if_needed`] produces that form.

/// One `[section]` (or the keys before the first header, with no name) in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IniSection {
    /// The header's name; `None` for keys before any header.
    pub name: Option<String>,
    /// `key = value` pairs in file order, values unquoted.
    pub entries: Vec<(String, String)>,
}

/// Reads INI text. Errors name the line (1-based) and say what was expected.
pub(crate) fn parse(text: &str) -> Result<Vec<IniSection>, String> {
    let mut sections: Vec<IniSection> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    format!(
                        "line {line_number}: expected a section header like [name], got {line:?}"
                    )
                })?;
            if sections
                .iter()
                .any(|section| section.name.as_deref() == Some(name))
            {
                return Err(format!(
                    "line {line_number}: section [{name}] appears twice"
                ));
            }
            sections.push(IniSection {
                name: Some(name.to_string()),
                entries: Vec::new(),
            });
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line_number}: expected key = value, got {line:?}"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("line {line_number}: the key before '=' is empty"));
        }
        let value = unquote(value.trim())
            .map_err(|message| format!("line {line_number}: {key}: {message}"))?;
        if sections.is_empty() {
            sections.push(IniSection {
                name: None,
                entries: Vec::new(),
            });
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if section.entries.iter().any(|(existing, _)| existing == key) {
            return Err(format!(
                "line {line_number}: {key} is set twice in the same section"
            ));
        }
        section.entries.push((key.to_string(), value));
    }
    Ok(sections)
}

fn unquote(value: &str) -> Result<String, String> {
    if value.starts_with('"') {
        serde_json::from_str::<String>(value).map_err(|error| {
            format!("a value starting with '\"' must be a JSON string literal: {error}")
        })
    } else {
        Ok(value.to_string())
    }
}

/// The value as written in an INI file: as is when it reads back unchanged, else as a JSON
/// string literal (newlines, control characters, surrounding spaces, a leading quote).
pub(crate) fn quote_if_needed(value: &str) -> String {
    let needs_quotes =
        value.starts_with('"') || value.trim() != value || value.chars().any(char::is_control);
    if needs_quotes {
        serde_json::Value::String(value.to_string()).to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_quoted_values() {
        let text = "top = 1\n# comment\n[a]\nx = hello world \n; other\ny = \"two\\nlines\"\n[b]\n";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[0].name, None);
        assert_eq!(
            sections[1].entries,
            vec![
                ("x".into(), "hello world".into()),
                ("y".into(), "two\nlines".into())
            ]
        );
        assert_eq!(sections[2].name.as_deref(), Some("b"));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert!(parse("[a]\njunk\n").unwrap_err().starts_with("line 2:"));
        assert!(parse("[a\n").unwrap_err().starts_with("line 1:"));
        assert!(parse("[a]\n[a]\n").unwrap_err().contains("twice"));
        assert!(parse("[a]\nx=1\nx=2\n").unwrap_err().contains("twice"));
    }

    #[test]
    fn quoting_round_trips() {
        for value in ["plain", " padded ", "a\nb", "\"quoted\"", "", "tab\there"] {
            let line = format!("k = {}", quote_if_needed(value));
            let sections = parse(&line).unwrap();
            assert_eq!(sections[0].entries[0].1, value, "{line}");
        }
    }
}
