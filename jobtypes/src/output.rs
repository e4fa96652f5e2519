//! Reading a task's output: progress, produced files, warnings and errors, and the verdict
//! at its end.

use std::collections::BTreeMap;

use furrow_protocol::{LogStream, OutputFile};

/// What one output line told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The task's progress, 0.0 to 1.0.
    Progress(f32),
    /// A file the task wrote, with the frame it belongs to when known.
    Output {
        /// Its path as printed (relative paths are relative to the working directory).
        path: String,
        /// Its frame.
        frame: Option<i64>,
    },
    /// A warning worth a line of its own in the log.
    Warning(String),
    /// An error: the task fails with this text, whatever its exit code.
    Error(String),
}

/// Answers whether a file exists: the agent resolves relative paths against the task's
/// working directory; tests answer from a list.
pub trait FileProbe {
    /// The size of the file at `path`, or `None` when there is no such regular file.
    fn size(&self, path: &str) -> Option<u64>;
}

/// How the task's process ended, as the parser needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code, when it exited (not killed by a signal).
    pub code: Option<i32>,
}

impl Exit {
    /// Whether it exited with code 0.
    pub fn ok(self) -> bool {
        self.code == Some(0)
    }
}

/// The outcome a parser gives at the end of a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Why the task failed, when its output tells (an error line, a missing file); the
    /// runner reports a non-zero exit code on its own when this is `None`.
    pub error: Option<String>,
    /// The files it produced that exist, in the order they were reported.
    pub outputs: Vec<OutputFile>,
}

/// Reads a task's output lines.
pub trait OutputParser: Send {
    /// Looks at one line and pushes what it tells to `events`.
    fn line(&mut self, stream: LogStream, text: &str, events: &mut Vec<Event>);

    /// The verdict once the process has exited.
    fn finish(&mut self, exit: Exit, files: &dyn FileProbe) -> Verdict;
}

/// The parser of job types whose output says nothing: the exit code decides.
pub struct Silent;

impl OutputParser for Silent {
    fn line(&mut self, _stream: LogStream, _text: &str, _events: &mut Vec<Event>) {}

    fn finish(&mut self, _exit: Exit, _files: &dyn FileProbe) -> Verdict {
        Verdict::default()
    }
}

/// Bookkeeping most parsers share: the first error line and the files reported, each
/// once, with its frame.
#[derive(Debug, Default)]
pub struct Collected {
    /// The first error reported.
    pub error: Option<String>,
    /// Files reported: path → frame, in report order.
    outputs: Vec<(String, Option<i64>)>,
    seen: BTreeMap<String, usize>,
}

/// Longest error text kept from a line.
const MAX_ERROR: usize = 2000;

impl Collected {
    /// Notes the events of a line.
    pub fn note(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::Error(text) if self.error.is_none() => {
                    let mut text = text.trim().to_string();
                    if text.len() > MAX_ERROR {
                        let cut = (0..=MAX_ERROR)
                            .rev()
                            .find(|&i| text.is_char_boundary(i))
                            .unwrap_or(0);
                        text.truncate(cut);
                    }
                    self.error = Some(text);
                }
                Event::Output { path, frame } => match self.seen.get(path) {
                    Some(&index) => {
                        if frame.is_some() {
                            self.outputs[index].1 = *frame;
                        }
                    }
                    None => {
                        self.seen.insert(path.clone(), self.outputs.len());
                        self.outputs.push((path.clone(), *frame));
                    }
                },
                _ => {}
            }
        }
    }

    /// The files reported that exist, and the first one reported that does not.
    pub fn existing(&self, files: &dyn FileProbe) -> (Vec<OutputFile>, Option<String>) {
        let mut found = Vec::new();
        let mut missing = None;
        for (path, frame) in &self.outputs {
            match files.size(path) {
                Some(size) => found.push(OutputFile {
                    path: path.clone(),
                    size,
                    frame: *frame,
                }),
                None if missing.is_none() => missing = Some(path.clone()),
                None => {}
            }
        }
        (found, missing)
    }

    /// Whether any file was reported.
    pub fn any_output(&self) -> bool {
        !self.outputs.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A probe answering from a fixed list of files.
    #[derive(Default)]
    pub(crate) struct Files(pub BTreeMap<String, u64>);

    impl Files {
        pub(crate) fn with(paths: &[&str]) -> Self {
            Self(paths.iter().map(|p| (p.to_string(), 100)).collect())
        }
    }

    impl FileProbe for Files {
        fn size(&self, path: &str) -> Option<u64> {
            self.0.get(path).copied()
        }
    }

    /// Feeds lines to a parser and returns every event.
    pub(crate) fn feed(parser: &mut dyn OutputParser, lines: &[&str]) -> Vec<Event> {
        let mut events = Vec::new();
        for line in lines {
            parser.line(LogStream::Stdout, line, &mut events);
        }
        events
    }

    #[test]
    fn collected_keeps_the_first_error_and_each_file_once() {
        let mut c = Collected::default();
        c.note(&[
            Event::Output {
                path: "/a".into(),
                frame: None,
            },
            Event::Error("  first  ".into()),
            Event::Error("second".into()),
            Event::Output {
                path: "/a".into(),
                frame: Some(3),
            },
            Event::Output {
                path: "/b".into(),
                frame: Some(4),
            },
        ]);
        assert_eq!(c.error.as_deref(), Some("first"));
        let (found, missing) = c.existing(&Files::with(&["/a"]));
        assert_eq!(
            found,
            [OutputFile {
                path: "/a".into(),
                size: 100,
                frame: Some(3)
            }]
        );
        assert_eq!(missing.as_deref(), Some("/b"));
    }
}
