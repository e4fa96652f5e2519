//! Frame placeholders in command arguments: `{frame}`, `{start}`, `{end}`, `{step}`.
//!
//! `{name:N}` pads the number with zeros to N digits (`{frame:4}` → `0007`), which render
//! output paths usually need. Anything else in braces is left alone, so shell snippets
//! such as `awk '{print $1}'` or `${HOME}` pass through untouched.

use furrow_protocol::FrameBatch;

/// Widest zero padding honoured; wider requests are left as written.
const MAX_WIDTH: usize = 32;

/// The values a task's placeholders stand for. A batch runs once: `{frame}` is its
/// first frame, `{start}` and `{end}` its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameValues {
    pub frame: i64,
    pub start: i64,
    pub end: i64,
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

impl FrameValues {
    fn lookup(&self, name: &str) -> Option<i64> {
        match name {
            "frame" => Some(self.frame),
            "start" => Some(self.start),
            "end" => Some(self.end),
            "step" => Some(self.step),
            _ => None,
        }
    }

    /// `text` with every known placeholder replaced.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after_open = &rest[open + 1..];
            match after_open
                .find('}')
                .and_then(|close| Some((close, self.render(&after_open[..close])?)))
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

    /// The text of one `{...}` body, or `None` when it is not a placeholder.
    fn render(&self, body: &str) -> Option<String> {
        let (name, width) = match body.split_once(':') {
            Some((name, width))
                if !width.is_empty() && width.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (
                    name,
                    width.parse::<usize>().ok().filter(|w| *w <= MAX_WIDTH)?,
                )
            }
            Some(_) => return None,
            None => (body, 0),
        };
        let value = self.lookup(name)?;
        Some(if value < 0 {
            // Pad the digits, not the sign: -7 at width 3 is -007.
            format!("-{:0width$}", value.unsigned_abs())
        } else {
            format!("{value:0width$}")
        })
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
    fn handles_multibyte_text_around_placeholders() {
        assert_eq!(batch().substitute("é{frame}ü{"), "é10ü{");
    }
}
