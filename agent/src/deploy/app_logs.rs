//! App instances' output lines, gathered into `AppLogs` batches.
//!
//! The supervisors call the sink from their reading tasks for every line; the sink only
//! appends to a buffer under a mutex (it must not block: a slow sink stalls the app on its
//! pipe). The deployer takes the batches every [`FLUSH_EVERY`], at most [`BATCH_LINES`]
//! lines each, and hands them to the link.
//!
//! Bound: [`BUFFER_BYTES`] of text wait at most. Past it, lines are dropped and counted per
//! instance, and the next batch of that instance starts with a line saying how many.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use furrow_deploy::supervise::{self, LogSink};
use furrow_protocol::apps::AppLogBatch;
use furrow_protocol::{LogLine, LogStream};

/// How often the batches go to the link.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most lines in one batch.
pub(crate) const BATCH_LINES: usize = 256;
/// Most bytes of text waiting for the next flush.
const BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Bytes a line counts for beyond its text.
const LINE_OVERHEAD: usize = 16;

/// app, release, process, instance.
type Key = (String, u32, String, u32);

#[derive(Default)]
struct Buffers {
    lines: BTreeMap<Key, Vec<LogLine>>,
    bytes: usize,
    dropped: BTreeMap<Key, u64>,
}

/// The output of every app instance of this agent, waiting for the next flush.
#[derive(Default)]
pub(crate) struct AppLogs {
    buffers: Mutex<Buffers>,
}

impl AppLogs {
    /// A sink for the instances of `release` (the supervisor names releases as text).
    pub fn sink(self: &Arc<Self>, release: u32) -> Arc<dyn LogSink> {
        let logs = Arc::clone(self);
        Arc::new(move |line: &supervise::LogLine<'_>| logs.push(release, line))
    }

    /// Adds a line the agent itself says about an app (a failed deploy's reason).
    pub fn note(&self, app: &str, release: u32, text: String) {
        let key = (app.to_string(), release, "agent".to_string(), 0);
        self.append(key, LogStream::Agent, text);
    }

    fn push(&self, release: u32, line: &supervise::LogLine<'_>) {
        let key = (
            line.app.to_string(),
            release,
            line.process.to_string(),
            line.instance,
        );
        let stream = match line.stream {
            supervise::LogStream::Stdout => LogStream::Stdout,
            supervise::LogStream::Stderr => LogStream::Stderr,
        };
        let mut text = line.text.to_string();
        if line.truncated {
            text.push_str(" [line cut]");
        }
        self.append(key, stream, text);
    }

    fn append(&self, key: Key, stream: LogStream, text: String) {
        let mut buffers = self.lock();
        let bytes = text.len() + LINE_OVERHEAD;
        if buffers.bytes + bytes > BUFFER_BYTES {
            *buffers.dropped.entry(key).or_default() += 1;
            return;
        }
        buffers.bytes += bytes;
        buffers.lines.entry(key).or_default().push(LogLine {
            at_ms: Utc::now().timestamp_millis(),
            stream,
            text,
        });
    }

    /// Takes everything waiting, as batches of at most [`BATCH_LINES`] lines; a count of
    /// dropped lines goes first in its instance's batch.
    pub fn take(&self) -> Vec<AppLogBatch> {
        let (lines, dropped) = {
            let mut buffers = self.lock();
            buffers.bytes = 0;
            (
                std::mem::take(&mut buffers.lines),
                std::mem::take(&mut buffers.dropped),
            )
        };
        let mut batches = Vec::new();
        let mut keys: Vec<&Key> = lines.keys().chain(dropped.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let mut all = Vec::new();
            if let Some(count) = dropped.get(key) {
                all.push(LogLine {
                    at_ms: Utc::now().timestamp_millis(),
                    stream: LogStream::Agent,
                    text: format!("[furrow] {count} line(s) dropped: the app wrote faster than they could be sent"),
                });
            }
            all.extend(lines.get(key).into_iter().flatten().cloned());
            for part in all.chunks(BATCH_LINES) {
                batches.push(AppLogBatch {
                    app: key.0.clone(),
                    release: key.1,
                    process: key.2.clone(),
                    instance: key.3,
                    lines: part.to_vec(),
                });
            }
        }
        batches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_batched_per_instance_and_bounded() {
        let logs = Arc::new(AppLogs::default());
        let sink = logs.sink(3);
        for (instance, text) in [(0, "a"), (1, "b"), (0, "c")] {
            sink.line(&supervise::LogLine {
                app: "hello",
                release: "3",
                process: "web",
                instance,
                stream: supervise::LogStream::Stdout,
                text,
                truncated: false,
            });
        }
        let batches = logs.take();
        assert_eq!(batches.len(), 2);
        assert_eq!((batches[0].instance, batches[0].lines.len()), (0, 2));
        assert_eq!(batches[0].release, 3);
        assert!(logs.take().is_empty());

        let long = "x".repeat(1024 * 1024);
        for _ in 0..5 {
            logs.note("hello", 3, long.clone());
        }
        let batches = logs.take();
        assert_eq!(batches.len(), 1);
        assert!(batches[0].lines[0].text.contains("2 line(s) dropped"));
        assert_eq!(batches[0].lines.len(), 4);
    }
}
