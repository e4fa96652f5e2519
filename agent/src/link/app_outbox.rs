//! The outbox of app messages (web server, bundle requests, app reports, app logs) on
//! their way to the master.
//!
//! Unlike task messages (the `spool`), app messages are written only while the link is
//! registered and never kept for a later connection: after every registration the
//! master sends each app's `Deploy` again and the deployer announces its web server,
//! reports every app and asks again for the bundle pieces it waits for. So while the
//! master is away, reports and bundle requests are dropped, and app log lines are dropped
//! and counted.
//!
//! Bound: at most `budget` bytes of log text wait here (a slow master). Past it, log
//! lines are dropped and counted per instance; the next batch of that instance that gets
//! through starts with a line saying how many were lost. Reports and bundle requests are
//! small and come one per change, so they are always queued while registered.

use std::collections::{BTreeMap, VecDeque};

use chrono::Utc;
use furrow_protocol::apps::AppLogBatch;
use furrow_protocol::{AgentMessage, LogLine, LogStream};
use tracing::warn;

/// Bytes a log line counts for beyond its text.
const LINE_OVERHEAD: usize = 16;

/// Whose lines were dropped: app, release, process, instance.
type InstanceKey = (String, u32, String, u32);

/// App messages waiting for the writer.
pub(crate) struct AppOutbox {
    queue: VecDeque<(AgentMessage, usize)>,
    bytes: usize,
    budget: usize,
    dropped: BTreeMap<InstanceKey, u64>,
}

impl AppOutbox {
    /// An empty outbox holding at most `budget` bytes of log text.
    pub fn new(budget: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            budget,
            dropped: BTreeMap::new(),
        }
    }

    /// Queues `message` when `registered`; otherwise drops it (log lines counted).
    pub fn push(&mut self, message: AgentMessage, registered: bool) {
        let AgentMessage::AppLogs(mut batch) = message else {
            if registered {
                self.queue.push_back((message, 0));
            }
            return;
        };
        let key = (
            batch.app.clone(),
            batch.release,
            batch.process.clone(),
            batch.instance,
        );
        let bytes: usize = batch
            .lines
            .iter()
            .map(|line| line.text.len() + LINE_OVERHEAD)
            .sum();
        if !registered || self.bytes + bytes > self.budget {
            let count = self.dropped.entry(key).or_default();
            if *count == 0 && registered {
                warn!(
                    app = %batch.app,
                    instance = batch.instance,
                    budget = self.budget,
                    "the master reads app logs too slowly; dropping app log lines"
                );
            }
            *count += batch.lines.len() as u64;
            return;
        }
        if let Some(count) = self.dropped.remove(&key) {
            batch.lines.insert(0, drop_note(count));
        }
        self.bytes += bytes;
        self.queue.push_back((AgentMessage::AppLogs(batch), bytes));
    }

    /// Takes up to `max` messages from the front, for one write.
    pub fn take(&mut self, max: usize) -> Vec<AgentMessage> {
        let count = max.min(self.queue.len());
        self.queue
            .drain(..count)
            .map(|(message, bytes)| {
                self.bytes -= bytes;
                message
            })
            .collect()
    }

    /// The connection is gone: drops what waits (log lines counted).
    pub fn clear(&mut self) {
        for (message, _) in std::mem::take(&mut self.queue) {
            if let AgentMessage::AppLogs(batch) = message {
                self.count_dropped(&batch);
            }
        }
        self.bytes = 0;
    }

    fn count_dropped(&mut self, batch: &AppLogBatch) {
        let key = (
            batch.app.clone(),
            batch.release,
            batch.process.clone(),
            batch.instance,
        );
        *self.dropped.entry(key).or_default() += batch.lines.len() as u64;
    }

    /// Number of messages waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

fn drop_note(count: u64) -> LogLine {
    LogLine {
        at_ms: Utc::now().timestamp_millis(),
        stream: LogStream::Agent,
        text: format!("[furrow] {count} line(s) dropped while the master was away or slow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_protocol::apps::{AppReport, AppState};

    fn logs(lines: &[&str]) -> AgentMessage {
        AgentMessage::AppLogs(AppLogBatch {
            app: "hello".into(),
            release: 1,
            process: "web".into(),
            instance: 0,
            lines: lines
                .iter()
                .map(|text| LogLine {
                    at_ms: 0,
                    stream: LogStream::Stdout,
                    text: (*text).into(),
                })
                .collect(),
        })
    }

    fn report() -> AgentMessage {
        AgentMessage::AppReport(AppReport {
            app: "hello".into(),
            target: 1,
            current: None,
            state: AppState::Deploying,
            message: None,
            instances: Vec::new(),
            mount: None,
        })
    }

    #[test]
    fn drops_while_away_and_says_how_many_lines_were_lost() {
        let mut outbox = AppOutbox::new(1024);
        outbox.push(report(), false);
        outbox.push(logs(&["a", "b"]), false);
        assert_eq!(outbox.len(), 0);
        outbox.push(report(), true);
        outbox.push(logs(&["c"]), true);
        let sent = outbox.take(10);
        assert_eq!(sent.len(), 2);
        let AgentMessage::AppLogs(batch) = &sent[1] else {
            panic!("{sent:?}")
        };
        let texts: Vec<&str> = batch.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "[furrow] 2 line(s) dropped while the master was away or slow",
                "c"
            ]
        );
    }

    #[test]
    fn log_text_is_bounded_and_cleared_with_the_connection() {
        let mut outbox = AppOutbox::new(40);
        outbox.push(logs(&["0123456789"]), true);
        outbox.push(logs(&["0123456789"]), true);
        assert_eq!(outbox.len(), 1, "the second batch is past the budget");
        outbox.clear();
        assert_eq!(outbox.len(), 0);
        outbox.push(logs(&["x"]), true);
        let AgentMessage::AppLogs(batch) = &outbox.take(1)[0] else {
            panic!()
        };
        assert!(
            batch.lines[0].text.contains("2 line(s) dropped"),
            "{batch:?}"
        );
    }
}
