//! Delivering instances' stdout and stderr, line by line, to a [`LogSink`].

use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest line delivered; the rest of a longer line is dropped and the line is marked
/// [`LogLine::truncated`], so one runaway line cannot grow memory without bound.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of output, borrowed: nothing is allocated per line unless it is not UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct LogLine<'a> {
    /// The app.
    pub app: &'a str,
    /// The release.
    pub release: &'a str,
    /// The process name.
    pub process: &'a str,
    /// The instance number.
    pub instance: u32,
    /// The stream.
    pub stream: LogStream,
    /// The line without its line ending (invalid UTF-8 replaced).
    pub text: &'a str,
    /// Whether the line was longer than [`MAX_LINE`] and cut.
    pub truncated: bool,
}

/// Receives output lines. It is called on the runtime for every line, so it must not
/// block: a slow sink slows the reading, and the app then blocks on its full pipe
/// (back-pressure, nothing is dropped). Closures `Fn(&LogLine)` are sinks.
pub trait LogSink: Send + Sync + 'static {
    /// Handles one line.
    fn line(&self, line: &LogLine<'_>);
}

impl<F> LogSink for F
where
    F: Fn(&LogLine<'_>) + Send + Sync + 'static,
{
    fn line(&self, line: &LogLine<'_>) {
        self(line)
    }
}

/// A sink that emits every line as a `tracing` event at info level.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLogSink;

impl LogSink for TracingLogSink {
    fn line(&self, line: &LogLine<'_>) {
        tracing::info!(
            app = line.app,
            release = line.release,
            process = line.process,
            instance = line.instance,
            stream = ?line.stream,
            truncated = line.truncated,
            "{}",
            line.text
        );
    }
}

/// Who the lines belong to.
#[derive(Debug, Clone)]
pub(super) struct LogSource {
    pub app: Arc<str>,
    pub release: Arc<str>,
    pub process: Arc<str>,
    pub instance: u32,
}

/// Reads `reader` to its end, delivering lines to `sink`. One buffer is reused for every
/// line.
pub(super) async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    stream: LogStream,
    source: LogSource,
    sink: Arc<dyn LogSink>,
) {
    let mut reader = BufReader::with_capacity(8 * 1024, reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut truncated = false;
    loop {
        let available = match reader.fill_buf().await {
            Ok([]) => break,
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::debug!(app = %source.app, process = %source.process, instance = source.instance, error = %err, "output pipe read failed");
                break;
            }
        };
        let (chunk, ends_line) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (&available[..at], true),
            None => (available, false),
        };
        let room = MAX_LINE - line.len();
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = chunk.len() + usize::from(ends_line);
        reader.consume(consumed);
        if ends_line {
            deliver(&source, stream, &line, truncated, sink.as_ref());
            line.clear();
            truncated = false;
        }
    }
    if !line.is_empty() {
        deliver(&source, stream, &line, truncated, sink.as_ref());
    }
}

fn deliver(source: &LogSource, stream: LogStream, raw: &[u8], truncated: bool, sink: &dyn LogSink) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = String::from_utf8_lossy(raw);
    sink.line(&LogLine {
        app: &source.app,
        release: &source.release,
        process: &source.process,
        instance: source.instance,
        stream,
        text: &text,
        truncated,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn splits_lines_and_bounds_their_length() {
        let lines: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let collected = Arc::clone(&lines);
        let sink: Arc<dyn LogSink> = Arc::new(move |line: &LogLine<'_>| {
            collected
                .lock()
                .unwrap()
                .push((line.text.to_owned(), line.truncated));
        });
        let long = "x".repeat(MAX_LINE + 100);
        let input = format!("one\r\ntwo\n{long}\nlast");
        let source = LogSource {
            app: "a".into(),
            release: "r".into(),
            process: "p".into(),
            instance: 0,
        };
        pump(input.as_bytes(), LogStream::Stdout, source, sink).await;
        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], ("one".to_owned(), false));
        assert_eq!(lines[1], ("two".to_owned(), false));
        assert_eq!(lines[2].0.len(), MAX_LINE);
        assert!(lines[2].1);
        assert_eq!(lines[3], ("last".to_owned(), false));
        assert_eq!(lines.len(), 4);
    }
}
