//! Frame placeholders in command arguments: `{frame}`, `{start}`, `{end}`, `{step}`.
//!
//! `{name:N}` pads the number with zeros to N digits (`{frame:4}` → `0007`), which render
//! output paths usually need. Anything else in braces is left alone, so shell snippets
//! such as `awk '{print $1}'` or `${HOME}` pass through untouched.

use furrow_protocol::FrameBatch;

/// Widest zero padding honoured; wider requests are left as written.
const MAX_WIDTH: usize = 32;

/// The value of a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A number: `{name:N}` pads it with zeros.
    Int(i64),
    /// Text, inserted as it is (a width is not honoured: the placeholder is left alone).
    Text(String),
}

/// The values a task's frame placeholders stand for. A batch runs once: `{frame}` is its
/// first frame, `{start}` and `{end}` its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameValues {
    /// First frame of the batch.
    pub frame: i64,
    /// First frame of the batch.
    pub start: i64,
    /// Last frame of the batch.
    pub end: i64,
    /// Step between frames.
    pub step: i64,
}

impl From<FrameBatch> for FrameValues {
    fn from(batch: FrameBatch) -> Self {
        Self {
            frame: batch.start,
            start: batch.start,
            end: batch.end,
            step: batch.step,
        }
    }
}

/// The names frame placeholders use.
pub const FRAME_NAMES: [&str; 4] = ["frame", "start", "end", "step"];

impl FrameValues {
    /// The value of a frame placeholder.
    pub fn lookup(&self, name: &str) -> Option<Var> {
        match name {
            "frame" => Some(Var::Int(self.frame)),
            "start" => Some(Var::Int(self.start)),
            "end" => Some(Var::Int(self.end)),
            "step" => Some(Var::Int(self.step)),
            _ => None,
        }
    }

    /// `text` with every frame placeholder replaced.
    pub fn substitute(&self, text: &str) -> String {
        substitute(text, |name| self.lookup(name))
    }
}

/// `text` with every `{name}` or `{name:N}` that `lookup` knows replaced; anything else in
/// braces is left alone.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<Var>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after_open = &rest[open + 1..];
        match after_open
            .find('}')
            .and_then(|close| Some((close, render(&after_open[..close], &lookup)?)))
        {
            Some((close, rendered)) => {
                out.push_str(&rendered);
                rest = &after_open[close + 1..];
            }
            None => {
                out.push('{');
                rest = after_open;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `name` can be a placeholder's (and so a parameter's) name: lower-case letters,
/// digits and `_`, not starting with a digit.
pub fn is_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The names of the placeholders in `text` that look like identifiers (`{name}` or
/// `{name:N}`), known or not: a definition checks its templates with it.
pub fn placeholder_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let escaped = open > 0 && rest.as_bytes()[open - 1] == b'$';
        let after_open = &rest[open + 1..];
        if let Some(close) = after_open.find('}') {
            let body = &after_open[..close];
            let name = body.split_once(':').map_or(body, |(name, _)| name);
            if is_identifier(name) && !escaped {
                names.push(name.to_string());
            }
        }
        rest = after_open;
    }
    names
}

/// The text of one `{...}` body, or `None` when it is not a placeholder.
fn render(body: &str, lookup: &impl Fn(&str) -> Option<Var>) -> Option<String> {
    let (name, width) = match body.split_once(':') {
        Some((name, width)) if !width.is_empty() && width.bytes().all(|b| b.is_ascii_digit()) => (
            name,
            Some(width.parse::<usize>().ok().filter(|w| *w <= MAX_WIDTH)?),
        ),
        Some(_) => return None,
        None => (body, None),
    };
    match lookup(name)? {
        Var::Text(text) if width.is_none() => Some(text),
        Var::Text(_) => None,
        Var::Int(value) => {
            let width = width.unwrap_or(0);
            Some(if value < 0 {
                // Pad the digits, not the sign: -7 at width 3 is -007.
                format!("-{:0width$}", value.unsigned_abs())
            } else {
                format!("{value:0width$}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> FrameValues {
        FrameValues::from(FrameBatch {
            start: 10,
            end: 19,
            step: 3,
        })
    }

    #[test]
    fn replaces_all_four_names_in_one_argument() {
        assert_eq!(
            batch().substitute("-f {frame} -s {start} -e {end} -j {step}"),
            "-f 10 -s 10 -e 19 -j 3"
        );
        assert_eq!(batch().substitute("{start}{end}"), "1019");
    }

    #[test]
    fn pads_with_zeros_when_asked() {
        assert_eq!(batch().substitute("out_{frame:4}.png"), "out_0010.png");
        let negative = FrameValues {
            frame: -7,
            start: -7,
            end: -7,
            step: 1,
        };
        assert_eq!(negative.substitute("{frame:3}"), "-007");
    }

    #[test]
    fn leaves_other_braces_alone() {
        for text in [
            "awk '{print $1}'",
            "${HOME}/x",
            "{frame",
            "}{",
            "{frame:}",
            "{frame:x}",
            "{frame:999}",
            "{}",
            "{{frame}",
        ] {
            let expected = text.replace("{frame}", "10");
            assert_eq!(batch().substitute(text), expected, "{text}");
        }
    }

    #[test]
    fn names_identifier_placeholders_only() {
        assert_eq!(
            placeholder_names("a {scene} {frame:4} ${HOME} {print $1} {} {Cap} {x_1}"),
            ["scene", "frame", "x_1"]
        );
    }

    #[test]
    fn text_values_are_inserted_and_never_padded() {
        let lookup = |name: &str| (name == "out").then(|| Var::Text("/r/x".into()));
        assert_eq!(substitute("{out}_{out:4}", lookup), "/r/x_{out:4}");
    }

    #[test]
    fn handles_multibyte_text_around_placeholders() {
        assert_eq!(batch().substitute("é{frame}ü{"), "é10ü{");
    }
}
