//! The outbox of task messages on their way to the master.
//!
//! Every task message (started, progress, logs, finished, returned) goes through the spool
//! in the order it was produced. Started, progress and log messages leave it once they were
//! written to the master's connection and flushed. A finished result stays longer: once
//! written, it waits here until the master answers `ResultStored` for its attempt, which
//! the master sends only after it durably stored the result (or found it no longer needs
//! it). Only then is the result forgotten, and its file removed. When the connection
//! drops before that, the written results go back to the front of the queue and are
//! replayed after the next registration; while the connection lives they are not sent
//! again, since the master will answer them. While the master is away, messages wait here
//! and are replayed in order after the next registration.
//!
//! Bounds: log lines and progress are limited to a byte budget; past it they are dropped,
//! counted per task, and a note saying how many were lost is put in the task's log.
//! Started and finished messages are never dropped. Their number is bounded by the
//! attempts assigned here, one result per slot-attempt, each a few hundred bytes: with a
//! master present, it acknowledges every result it reads within one group commit and sends
//! the next assignment of a slot after the acknowledgement of the result that freed it, so
//! about one result per slot waits; while it is away no new attempt arrives, so what waits
//! is bounded by the attempts it assigned before (the slots).
//!
//! Finished results additionally go to disk (`<state_dir>/spool/`) whenever the link is
//! down, and at shutdown when still unacknowledged, and are loaded again at startup, so a
//! result survives an agent restart. They are stored as JSON, so a file written before a
//! field was added (`limit`, for one) still loads with that field empty. A file that does
//! not decode (cut short, or from an agent whose result format differs) is logged and
//! removed, never a reason to stop: its attempt is then not listed in the registration,
//! and the master queues the task again.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::{fs, io};

use chrono::Utc;
use furrow_protocol::{AgentMessage, LogBatch, LogLine, LogStream, TaskFinished, TaskRef};
use tracing::{debug, warn};

/// Bytes a log line or progress message counts for beyond its text.
const ENTRY_OVERHEAD: usize = 16;

struct Entry {
    message: AgentMessage,
    /// Bytes counted against the log budget (zero for messages never dropped).
    budget_bytes: usize,
    /// The file holding this result on disk, for finished results written there.
    file: Option<PathBuf>,
}

impl Entry {
    /// The attempt, when this is a finished result.
    fn result_of(&self) -> Option<TaskRef> {
        match &self.message {
            AgentMessage::TaskFinished(finished) => Some(finished.task),
            _ => None,
        }
    }
}

/// Task messages not yet written, in order, and results written but not yet stored by the
/// master.
pub(crate) struct Spool {
    entries: VecDeque<Entry>,
    /// Entries at the front currently being written.
    in_flight: usize,
    /// Results of the flight under way that the master already stored: they are forgotten
    /// once the flight ends, whichever way.
    stored_in_flight: Vec<TaskRef>,
    /// Results written to the master and not yet acknowledged, in the order written.
    unacked: VecDeque<Entry>,
    budget_used: usize,
    budget: usize,
    /// Results in `entries`.
    results: usize,
    dropped: BTreeMap<TaskRef, u64>,
    dir: PathBuf,
    next_seq: u64,
}

impl Spool {
    /// A spool with `budget` bytes for logs, persisting results in `dir`, loaded with the
    /// results a previous agent process left there.
    pub fn open(dir: &Path, budget: usize) -> Self {
        let mut spool = Self {
            entries: VecDeque::new(),
            in_flight: 0,
            stored_in_flight: Vec::new(),
            unacked: VecDeque::new(),
            budget_used: 0,
            budget,
            results: 0,
            dropped: BTreeMap::new(),
            dir: dir.to_path_buf(),
            next_seq: 0,
        };
        spool.load();
        spool
    }

    fn load(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        for path in files {
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<TaskFinished>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(finished) => {
                    self.next_seq = self.next_seq.max(sequence_of(&path).map_or(0, |s| s + 1));
                    self.results += 1;
                    self.entries.push_back(Entry {
                        message: AgentMessage::TaskFinished(finished),
                        budget_bytes: 0,
                        file: Some(path),
                    });
                }
                Err(error) => {
                    warn!(file = %path.display(), %error, "discarding unreadable spooled result");
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// Attempts whose results are kept here (written or not), in replay order.
    pub fn pending_results(&self) -> Vec<TaskRef> {
        self.unacked
            .iter()
            .chain(&self.entries)
            .filter_map(Entry::result_of)
            .collect()
    }

    /// Whether any result is kept here, written or not.
    pub fn has_results(&self) -> bool {
        self.results > 0 || !self.unacked.is_empty()
    }

    /// Number of messages waiting to be written.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of results written and waiting for the master's acknowledgement.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Queues a task message; a result is also written to disk when `persist` is set.
    pub fn push(&mut self, message: AgentMessage, persist: bool) {
        match message {
            AgentMessage::Logs(batch) => self.push_logs(batch),
            AgentMessage::TaskProgress(ref progress) => {
                if self.budget_used + ENTRY_OVERHEAD > self.budget {
                    // Progress is superseded by the next report; losing one is harmless.
                    debug!(
                        task_id = progress.task.task_id,
                        "dropping progress: spool full"
                    );
                    return;
                }
                self.budget_used += ENTRY_OVERHEAD;
                self.entries.push_back(Entry {
                    message,
                    budget_bytes: ENTRY_OVERHEAD,
                    file: None,
                });
            }
            AgentMessage::TaskFinished(ref finished) => {
                let task = finished.task;
                self.push_drop_note(task);
                self.dropped.remove(&task);
                self.results += 1;
                self.entries.push_back(Entry {
                    message,
                    budget_bytes: 0,
                    file: None,
                });
                if persist {
                    self.persist_results();
                }
            }
            AgentMessage::Preview(ref preview) => {
                // A convenience: dropped rather than kept past the spool's budget.
                let bytes = ENTRY_OVERHEAD + preview.data.len();
                if self.budget_used + bytes > self.budget {
                    debug!(
                        task_id = preview.task.task_id,
                        "dropping a preview: spool full"
                    );
                    return;
                }
                self.budget_used += bytes;
                self.entries.push_back(Entry {
                    message,
                    budget_bytes: bytes,
                    file: None,
                });
            }
            AgentMessage::TaskReturned(ref returned) => {
                // The attempt's last message: its count of dropped lines goes before it.
                // It is not a result: it leaves with the flight that writes it and is
                // never put on disk.
                let task = returned.task;
                self.push_drop_note(task);
                self.dropped.remove(&task);
                self.entries.push_back(Entry {
                    message,
                    budget_bytes: 0,
                    file: None,
                });
            }
            other => self.entries.push_back(Entry {
                message: other,
                budget_bytes: 0,
                file: None,
            }),
        }
    }

    fn push_logs(&mut self, mut batch: LogBatch) {
        let bytes: usize = batch
            .lines
            .iter()
            .map(|l| l.text.len() + ENTRY_OVERHEAD)
            .sum();
        if self.budget_used + bytes > self.budget {
            let count = self.dropped.entry(batch.task).or_default();
            if *count == 0 {
                warn!(
                    task_id = batch.task.task_id,
                    attempt = batch.task.attempt,
                    budget = self.budget,
                    "log spool full while the master is unreachable; dropping log lines"
                );
            }
            *count += batch.lines.len() as u64;
            return;
        }
        if let Some(note) = self.dropped.remove(&batch.task).map(drop_note) {
            batch.lines.insert(0, note);
        }
        self.budget_used += bytes;
        self.entries.push_back(Entry {
            message: AgentMessage::Logs(batch),
            budget_bytes: bytes,
            file: None,
        });
    }

    /// Puts the count of `task`'s dropped lines in its log, past the budget: it is one
    /// line, and the reader of the log needs to know.
    fn push_drop_note(&mut self, task: TaskRef) {
        if let Some(&count) = self.dropped.get(&task) {
            warn!(
                task_id = task.task_id,
                attempt = task.attempt,
                dropped = count,
                "log lines were dropped"
            );
            self.entries.push_back(Entry {
                message: AgentMessage::Logs(LogBatch {
                    task,
                    lines: vec![drop_note(count)],
                }),
                budget_bytes: 0,
                file: None,
            });
        }
    }

    /// Writes every result not yet on disk to disk, in replay order.
    pub fn persist_results(&mut self) {
        for entry in self.unacked.iter_mut().chain(&mut self.entries) {
            let AgentMessage::TaskFinished(finished) = &entry.message else {
                continue;
            };
            if entry.file.is_some() {
                continue;
            }
            let path = self.dir.join(format!(
                "{:020}-{}-{}.json",
                self.next_seq, finished.task.task_id, finished.task.attempt
            ));
            self.next_seq += 1;
            match serde_json::to_vec(finished)
                .map_err(io::Error::other)
                .and_then(|bytes| replace_file(&path, &bytes))
            {
                Ok(()) => entry.file = Some(path),
                Err(error) => {
                    warn!(file = %path.display(), %error, "cannot write result to disk; it is kept in memory only")
                }
            }
        }
    }

    /// Clones of up to `max_messages` messages (or about `max_bytes`) from the front, now
    /// in flight. Nothing new is handed out until the flight is confirmed or aborted.
    pub fn take_flight(&mut self, max_messages: usize, max_bytes: usize) -> Vec<AgentMessage> {
        debug_assert_eq!(self.in_flight, 0, "one flight at a time");
        let mut bytes = 0;
        let mut flight = Vec::new();
        for entry in self.entries.iter().take(max_messages) {
            if !flight.is_empty() && bytes + entry.budget_bytes > max_bytes {
                break;
            }
            bytes += entry.budget_bytes;
            flight.push(entry.message.clone());
        }
        self.in_flight = flight.len();
        flight
    }

    /// The flight was written and flushed: drops its messages, keeps its results until
    /// the master acknowledges them, and returns the attempts whose results it carried.
    pub fn confirm_flight(&mut self) -> Vec<TaskRef> {
        let stored = std::mem::take(&mut self.stored_in_flight);
        let mut written = Vec::new();
        for entry in self.entries.drain(..self.in_flight) {
            self.budget_used -= entry.budget_bytes;
            let Some(task) = entry.result_of() else {
                continue;
            };
            self.results -= 1;
            written.push(task);
            if stored.contains(&task) {
                remove_result_file(entry.file.as_deref());
            } else {
                self.unacked.push_back(entry);
            }
        }
        self.in_flight = 0;
        written
    }

    /// The flight failed: its messages stay at the front, to be sent again (but for
    /// results the master stored meanwhile).
    pub fn abort_flight(&mut self) {
        self.in_flight = 0;
        for task in std::mem::take(&mut self.stored_in_flight) {
            self.forget_unsent(task);
        }
    }

    /// The connection is gone: results written on it and not acknowledged go back to the
    /// front of the queue, in the order they were written, to be replayed on the next
    /// one. Call between flights.
    pub fn resend_unacked(&mut self) {
        debug_assert_eq!(self.in_flight, 0, "not during a flight");
        while let Some(entry) = self.unacked.pop_back() {
            self.results += 1;
            self.entries.push_front(entry);
        }
    }

    /// The master stored the result of `task` (or no longer needs it): forgets it,
    /// wherever it is. Returns whether it was here.
    pub fn result_stored(&mut self, task: TaskRef) -> bool {
        if let Some(index) = self
            .unacked
            .iter()
            .position(|e| e.result_of() == Some(task))
        {
            let entry = self.unacked.remove(index);
            remove_result_file(entry.and_then(|e| e.file).as_deref());
            return true;
        }
        // Not written on this connection yet: a replay waiting, or being written, after a
        // reconnect, acknowledged through the earlier connection.
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.result_of() == Some(task))
        else {
            return false;
        };
        if index < self.in_flight {
            if !self.stored_in_flight.contains(&task) {
                self.stored_in_flight.push(task);
            }
        } else {
            self.forget_unsent(task);
        }
        true
    }

    /// Removes the unsent result of `task` from the queue (not from a flight).
    fn forget_unsent(&mut self, task: TaskRef) {
        let found = self
            .entries
            .iter()
            .skip(self.in_flight)
            .position(|e| e.result_of() == Some(task));
        if let Some(entry) = found.and_then(|offset| self.entries.remove(self.in_flight + offset)) {
            self.results -= 1;
            remove_result_file(entry.file.as_deref());
        }
    }
}

/// Removes the file of a result the master stored, if it has one.
fn remove_result_file(file: Option<&Path>) {
    let Some(file) = file else {
        return;
    };
    // A rare path (results only go to disk while the master is away); one unlink does not
    // stall the actor noticeably.
    if let Err(error) = fs::remove_file(file) {
        warn!(file = %file.display(), %error, "cannot remove the file of a stored result");
    }
}

fn drop_note(count: u64) -> LogLine {
    LogLine {
        at_ms: Utc::now().timestamp_millis(),
        stream: LogStream::Agent,
        text: format!(
            "{count} log lines were dropped: the master was unreachable and the agent's log buffer was full"
        ),
    }
}

/// The sequence number at the start of a spool file name.
fn sequence_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

/// Writes through a temporary file and a rename, so a crash never leaves half a result.
/// No fsync: this guards against the agent dying, not the machine (after a power loss
/// the tasks are gone anyway and the master runs them again).
fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use furrow_protocol::{LimitHit, TaskProgress, TaskStarted};

    use super::*;

    fn task(task_id: i64) -> TaskRef {
        TaskRef {
            task_id,
            attempt: 1,
        }
    }

    fn logs(task_id: i64, lines: usize, width: usize) -> AgentMessage {
        AgentMessage::Logs(LogBatch {
            task: task(task_id),
            lines: (0..lines)
                .map(|_| LogLine {
                    at_ms: 0,
                    stream: LogStream::Stdout,
                    text: "x".repeat(width),
                })
                .collect(),
        })
    }

    fn finished(task_id: i64) -> AgentMessage {
        AgentMessage::TaskFinished(TaskFinished {
            task: task(task_id),
            exit_code: Some(0),
            signal: None,
            error: None,
            limit: None,
            at: Utc::now(),
            outputs: Vec::new(),
        })
    }

    fn drain(spool: &mut Spool) -> Vec<AgentMessage> {
        let flight = spool.take_flight(usize::MAX, usize::MAX);
        spool.confirm_flight();
        flight
    }

    #[test]
    fn messages_leave_in_order_and_only_when_confirmed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 1 << 20);
        spool.push(
            AgentMessage::TaskStarted(TaskStarted {
                task: task(1),
                pid: 5,
                at: Utc::now(),
            }),
            false,
        );
        spool.push(logs(1, 2, 3), false);
        spool.push(
            AgentMessage::TaskProgress(TaskProgress {
                task: task(1),
                progress: 0.5,
            }),
            false,
        );
        spool.push(finished(1), false);
        let flight = spool.take_flight(2, usize::MAX);
        assert_eq!(flight.len(), 2);
        spool.abort_flight();
        assert_eq!(spool.len(), 4, "an aborted flight stays");
        let again = spool.take_flight(10, usize::MAX);
        assert_eq!(again[..2], flight[..]);
        assert!(matches!(again[3], AgentMessage::TaskFinished(_)));
        assert_eq!(spool.confirm_flight(), [task(1)]);
        assert_eq!(spool.len(), 0);
        assert_eq!(spool.budget_used, 0);
        // The written result is kept until the master stored it.
        assert!(spool.has_results());
        assert_eq!(spool.pending_results(), [task(1)]);
        assert!(
            spool.take_flight(10, usize::MAX).is_empty(),
            "not sent twice"
        );
        spool.confirm_flight();
        assert!(spool.result_stored(task(1)));
        assert!(!spool.has_results());
        assert!(!spool.result_stored(task(1)), "forgotten");
    }

    #[test]
    fn logs_past_the_budget_are_dropped_counted_and_noted() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 1000);
        spool.push(logs(1, 10, 50), false); // 660 bytes: fits
        spool.push(logs(1, 10, 50), false); // would pass 1000: dropped
        spool.push(logs(2, 1, 10), false); // fits
        spool.push(finished(1), false);
        let out = drain(&mut spool);
        assert_eq!(out.len(), 4);
        let AgentMessage::Logs(note) = &out[2] else {
            panic!("{:?}", out[2])
        };
        assert_eq!(note.task, task(1));
        assert_eq!(note.lines[0].stream, LogStream::Agent);
        assert!(
            note.lines[0].text.starts_with("10 log lines were dropped"),
            "{:?}",
            note.lines[0]
        );
        assert!(matches!(out[3], AgentMessage::TaskFinished(_)));
        // With room again, a task's next batch carries the note of its dropped lines.
        spool.push(logs(3, 20, 50), false);
        spool.push(logs(3, 1, 1), false);
        spool.push(logs(3, 1, 1), false);
        let out = drain(&mut spool);
        assert_eq!(out.len(), 2);
        let AgentMessage::Logs(first) = &out[0] else {
            panic!()
        };
        assert!(
            first.lines[0].text.starts_with("20 log lines were dropped"),
            "{first:?}"
        );
        assert_eq!(first.lines.len(), 2);
    }

    #[test]
    fn results_are_never_dropped_and_survive_a_restart_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 0);
        spool.push(finished(1), false);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        spool.push(finished(2), true);
        assert_eq!(spool.pending_results(), [task(1), task(2)]);
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            2,
            "all results go to disk"
        );

        let mut reloaded = Spool::open(tmp.path(), 0);
        assert_eq!(reloaded.pending_results(), [task(1), task(2)]);
        reloaded.push(finished(3), true);
        let out = drain(&mut reloaded);
        assert_eq!(out.len(), 3);
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            3,
            "written results stay on disk until stored"
        );
        for id in 1..=3 {
            assert!(reloaded.result_stored(task(id)));
        }
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "stored results leave the disk"
        );
    }

    #[test]
    fn unacknowledged_results_are_replayed_first_after_a_reconnect() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 1 << 20);
        spool.push(logs(1, 1, 3), false);
        spool.push(finished(1), false);
        spool.push(finished(2), false);
        assert_eq!(drain(&mut spool).len(), 3);
        assert_eq!(spool.unacked_len(), 2);
        spool.push(logs(3, 1, 3), false);

        // The connection drops: the written results go out again, before what was
        // queued after them; the logs written before are not replayed.
        spool.resend_unacked();
        let replay = spool.take_flight(10, usize::MAX);
        let kinds: Vec<Option<TaskRef>> = replay
            .iter()
            .map(|m| match m {
                AgentMessage::TaskFinished(f) => Some(f.task),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, [Some(task(1)), Some(task(2)), None]);
        spool.confirm_flight();
        assert!(spool.result_stored(task(1)));

        // Stopped while one is unacknowledged: it goes to disk, and comes back.
        spool.persist_results();
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        let reloaded = Spool::open(tmp.path(), 1 << 20);
        assert_eq!(reloaded.pending_results(), [task(2)]);
        assert!(spool.result_stored(task(2)));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_acknowledgement_ahead_of_the_replay_forgets_the_result() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 1 << 20);
        for id in 1..=3 {
            spool.push(finished(id), true);
        }
        assert_eq!(spool.take_flight(2, usize::MAX).len(), 2);
        // Acknowledged through an earlier connection: one result being written, one
        // still queued.
        assert!(spool.result_stored(task(1)));
        assert!(spool.result_stored(task(3)));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
        assert_eq!(spool.confirm_flight(), [task(1), task(2)]);
        assert_eq!(spool.pending_results(), [task(2)]);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

        // The same while the write fails.
        spool.push(finished(4), false);
        assert_eq!(spool.take_flight(10, usize::MAX).len(), 1);
        assert!(spool.result_stored(task(4)));
        spool.abort_flight();
        assert_eq!(spool.len(), 0);
        assert_eq!(spool.pending_results(), [task(2)]);
        assert!(!spool.result_stored(task(9)), "unknown");
    }

    #[test]
    fn a_limit_survives_the_disk_and_older_results_without_one_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 1 << 20);
        let limited = TaskFinished {
            task: task(1),
            exit_code: None,
            signal: Some(15),
            error: Some("used 80 MiB, over its limit of 50 MiB".into()),
            limit: Some(LimitHit::Memory { used_mb: 80 }),
            at: Utc::now(),
            outputs: vec![furrow_protocol::OutputFile {
                path: "/r/f_0001.png".into(),
                size: 10,
                frame: Some(1),
            }],
        };
        spool.push(AgentMessage::TaskFinished(limited.clone()), true);
        // Written by an agent from before `limit` existed.
        fs::write(
            tmp.path().join("00000000000000000007-2-1.json"),
            r#"{"task":{"task_id":2,"attempt":1},"exit_code":0,"signal":null,"error":null,"at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let mut reloaded = Spool::open(tmp.path(), 1 << 20);
        assert_eq!(reloaded.pending_results(), [task(1), task(2)]);
        let out = drain(&mut reloaded);
        assert_eq!(out[0], AgentMessage::TaskFinished(limited));
        let AgentMessage::TaskFinished(old) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert!(
            old.succeeded() && old.limit.is_none() && old.outputs.is_empty(),
            "{old:?}"
        );
        // New results are numbered after the loaded ones.
        assert_eq!(reloaded.next_seq, 8);
    }

    #[test]
    fn results_that_no_longer_decode_are_skipped_and_the_rest_load() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(tmp.path(), 1 << 20);
        spool.push(finished(1), true);
        // Valid JSON, but not a result this agent understands (a limit it does not know,
        // a field of another type).
        let bad = [
            (
                "00000000000000000005-2-1.json",
                r#"{"task":{"task_id":2,"attempt":1},"exit_code":null,"signal":9,"error":"x","limit":"Meltdown","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                "00000000000000000006-3-1.json",
                r#"{"task":{"task_id":3,"attempt":1},"exit_code":"zero","at":"2026-01-01T00:00:00Z"}"#,
            ),
        ];
        for (name, text) in bad {
            fs::write(tmp.path().join(name), text).unwrap();
        }
        let reloaded = Spool::open(tmp.path(), 1 << 20);
        assert_eq!(reloaded.pending_results(), [task(1)]);
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "the undecodable files are removed"
        );
    }

    #[test]
    fn corrupt_spool_files_are_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("00000000000000000001-1-1.json"), "{oops").unwrap();
        let spool = Spool::open(tmp.path(), 10);
        assert_eq!(spool.len(), 0);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
