//! Crash safety, second line: process groups of tasks a dead agent left behind.
//!
//! The agent's spawner kills every task's group when the agent dies (`spawner`). What it
//! cannot cover is a spawner killed along with the agent (SIGKILL to both at once), which
//! leaves the tasks' processes without a watcher. Each running task holds a file
//! `<state_dir>/running/<n>.pgid` naming its process group and its attempt, and blanks
//! it when it ends; at startup, before registering, the agent kills every group a
//! previous agent process left recorded, then clears the folder.
//!
//! The files are pooled ([`GroupRecords`]): a task takes a free one, writes its record in
//! place and blanks it at its end, so the pool grows to the most tasks that ran at once.
//! Records are padded with spaces to [`RECORD_BYTES`] and a free file holds only spaces,
//! so a file keeps its size: truncating it freed its page (or block), which the next
//! record allocated again.
//! A file created and removed per task cost an inode allocation per task, and on ext4
//! without a journal an allocation skips every inode freed in the last minute, reading
//! the inode table to tell: at hundreds of short tasks a second, that scan was the
//! costliest step of a task's start.
//!
//! Process ids are reused, so a group id alone could name an innocent group by the time
//! the agent restarts. A group is only killed when the machine has not rebooted since the
//! file was written (boot id) and one of its processes still carries the task's
//! `FURROW_TASK_ID` and `FURROW_ATTEMPT` in its environment.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use furrow_protocol::TaskRef;
use nix::sys::signal::Signal;
use tracing::{info, warn};

use crate::process_group::signal_group;
use crate::state::StateDir;

/// Size of a record file: records are padded to it with spaces, and a free file is that
/// many spaces.
const RECORD_BYTES: usize = 128;

/// `text` padded with spaces to `len` bytes (or as it is when longer).
fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(len.max(text.len()), b' ');
    bytes
}

/// Contents of a `.pgid` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRecord {
    /// The task's process group id.
    pub pgid: u32,
    /// The attempt running in it.
    pub task: TaskRef,
    /// Boot id of the machine when the task started.
    pub boot_id: String,
}

impl GroupRecord {
    /// A record of `task` running in group `pgid` during this boot.
    pub fn new(task: TaskRef, pgid: u32) -> Self {
        Self {
            pgid,
            task,
            boot_id: boot_id().to_string(),
        }
    }

    /// The file's text: one `key=value` per line, readable by an operator.
    pub fn to_text(&self) -> String {
        format!(
            "pgid={}\ntask={}\nattempt={}\nboot={}\n",
            self.pgid, self.task.task_id, self.task.attempt, self.boot_id
        )
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Option<Self> {
        let mut pgid = None;
        let mut task_id = None;
        let mut attempt = None;
        let mut boot = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pgid", v)) => pgid = v.trim().parse().ok(),
                Some(("task", v)) => task_id = v.trim().parse().ok(),
                Some(("attempt", v)) => attempt = v.trim().parse().ok(),
                Some(("boot", v)) => boot = Some(v.trim().to_string()),
                _ => {}
            }
        }
        Some(Self {
            pgid: pgid?,
            task: TaskRef {
                task_id: task_id?,
                attempt: attempt?,
            },
            boot_id: boot?,
        })
    }
}

/// The pool of record files in `<state_dir>/running/`.
#[derive(Debug)]
pub(crate) struct GroupRecords {
    dir: PathBuf,
    /// Empty files, open for writing.
    free: Mutex<Vec<RecordFile>>,
    /// Files made so far (the next one's number).
    made: AtomicU64,
}

#[derive(Debug)]
struct RecordFile {
    path: PathBuf,
    file: File,
    /// The file's size: [`RECORD_BYTES`], or the longest record written, if longer.
    len: usize,
}

impl GroupRecords {
    /// An empty pool of files in `dir` (created as the first tasks run).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            free: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
        }
    }

    /// Records that `task` runs in group `pgid`, in a file held until the returned
    /// record is dropped.
    pub fn write(self: &Arc<Self>, task: TaskRef, pgid: u32) -> io::Result<HeldRecord> {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let record = match free {
            Some(record) => record,
            None => {
                let number = self.made.fetch_add(1, Ordering::Relaxed) + 1;
                let path = self.dir.join(format!("{number}.pgid"));
                let file = fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                RecordFile {
                    path,
                    file,
                    len: RECORD_BYTES,
                }
            }
        };
        let mut held = HeldRecord {
            pool: Arc::clone(self),
            record: Some(record),
        };
        if let Some(record) = &mut held.record {
            let text = padded(&GroupRecord::new(task, pgid).to_text(), record.len);
            record.len = text.len();
            record.file.write_all_at(&text, 0)?;
        }
        Ok(held)
    }
}

/// A running task's record; blanked and handed back to the pool when dropped.
#[derive(Debug)]
pub(crate) struct HeldRecord {
    pool: Arc<GroupRecords>,
    record: Option<RecordFile>,
}

impl Drop for HeldRecord {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        // A record left in a file would have the next agent kill a group that may by then
        // be anyone's (it checks the environment first, but only a stale record is safe).
        match record.file.write_all_at(&padded("", record.len), 0) {
            Ok(()) => self
                .pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record),
            Err(error) => {
                warn!(file = %record.path.display(), %error, "cannot blank a process group file; removing it");
                let _ = fs::remove_file(&record.path);
            }
        }
    }
}

/// The kernel's id of the current boot (empty when unreadable).
fn boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().to_string())
            .unwrap_or_default()
    })
}

/// Live (non-zombie) processes of group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// State and process group from `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether process `pid` was started for `task` (its environment says so).
fn belongs_to(pid: u32, task: TaskRef) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted_task = format!("FURROW_TASK_ID={}", task.task_id);
    let wanted_attempt = format!("FURROW_ATTEMPT={}", task.attempt);
    let mut has_task = false;
    let mut has_attempt = false;
    for var in environ.split(|b| *b == 0) {
        has_task |= var == wanted_task.as_bytes();
        has_attempt |= var == wanted_attempt.as_bytes();
    }
    has_task && has_attempt
}

/// Kills the process groups of tasks a previous agent process left running, and clears
/// the folder. Returns the groups killed.
pub(crate) fn reap_stale_groups(state: &StateDir) -> Vec<GroupRecord> {
    let folder = state.running_dir();
    let Ok(entries) = fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some(record) = reap_one(&path) {
            killed.push(record);
        }
        if let Err(error) = fs::remove_file(&path) {
            warn!(path = %path.display(), %error, "cannot remove stale process group file");
        }
    }
    killed
}

fn reap_one(path: &Path) -> Option<GroupRecord> {
    let text = fs::read_to_string(path).ok()?;
    if text.trim().is_empty() {
        // A pooled file no task holds.
        return None;
    }
    let Some(record) = GroupRecord::parse(&text) else {
        warn!(path = %path.display(), "ignoring unreadable process group file");
        return None;
    };
    if record.boot_id != boot_id() {
        // The machine rebooted: the group died with it, and its id may be anyone's now.
        return None;
    }
    let members = group_members(record.pgid);
    if members.is_empty() {
        return None;
    }
    if !members.iter().any(|pid| belongs_to(*pid, record.task)) {
        warn!(
            pgid = record.pgid,
            task_id = record.task.task_id,
            attempt = record.task.attempt,
            "process group of a stale task now belongs to other processes; leaving it alone"
        );
        return None;
    }
    signal_group(record.pgid, Signal::SIGKILL);
    info!(
        pgid = record.pgid,
        task_id = record.task.task_id,
        attempt = record.task.attempt,
        processes = members.len(),
        "killed processes left running by a previous agent"
    );
    Some(record)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn record_round_trips_through_text() {
        let record = GroupRecord::new(
            TaskRef {
                task_id: 12,
                attempt: 3,
            },
            4242,
        );
        assert_eq!(GroupRecord::parse(&record.to_text()), Some(record));
        assert_eq!(GroupRecord::parse("pgid=1\n"), None);
    }

    #[test]
    fn record_files_are_reused_blanked_and_only_full_ones_are_reaped() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let records = state.group_records();
        let read = || -> Vec<String> {
            let mut texts: Vec<String> = fs::read_dir(state.running_dir())
                .unwrap()
                .map(|e| {
                    let text = fs::read_to_string(e.unwrap().path()).unwrap();
                    assert_eq!(text.len(), RECORD_BYTES, "a file keeps its size");
                    text.trim_end_matches(' ').to_string()
                })
                .collect();
            texts.sort();
            texts
        };
        let task = |task_id| TaskRef {
            task_id,
            attempt: 1,
        };
        let first = records.write(task(1), 4_000_001).unwrap();
        let second = records.write(task(2), 4_000_002).unwrap();
        assert_eq!(
            read(),
            [
                GroupRecord::new(task(1), 4_000_001).to_text(),
                GroupRecord::new(task(2), 4_000_002).to_text()
            ]
        );
        drop(first);
        let third = records.write(task(3), 4_000_003).unwrap();
        assert_eq!(read().len(), 2, "the blanked file is taken again");
        drop(second);
        assert_eq!(
            read(),
            [
                "".to_string(),
                GroupRecord::new(task(3), 4_000_003).to_text()
            ]
        );
        drop(third);
        assert_eq!(read(), ["", ""]);
        // No process has those group ids: nothing to kill; every file goes.
        assert!(reap_stale_groups(&state).is_empty());
        assert!(read().is_empty());
    }

    #[test]
    fn stat_is_parsed_past_odd_command_names() {
        let stat = "123 (a (b) c) S 1 456 456 0 -1 4194560 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 456)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_group_is_found() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        assert!(group_members(pgid).contains(&std::process::id()));
    }

    #[test]
    fn groups_not_carrying_the_task_or_of_another_boot_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        // A process group that is not a task's: no FURROW_TASK_ID in its environment.
        let mut bystander = std::process::Command::new("sleep");
        bystander.arg("1000").process_group(0);
        let mut bystander = bystander.spawn().unwrap();
        let pgid = bystander.id();
        let mut old_boot = GroupRecord::new(
            TaskRef {
                task_id: 1,
                attempt: 1,
            },
            pgid,
        );
        old_boot.boot_id = "another-boot".into();
        fs::write(state.running_dir().join("1-1.pgid"), old_boot.to_text()).unwrap();
        let reused = GroupRecord::new(
            TaskRef {
                task_id: 2,
                attempt: 1,
            },
            pgid,
        );
        fs::write(state.running_dir().join("2-1.pgid"), reused.to_text()).unwrap();
        fs::write(state.running_dir().join("3-1.pgid"), "nonsense").unwrap();

        assert!(reap_stale_groups(&state).is_empty());
        assert_eq!(fs::read_dir(state.running_dir()).unwrap().count(), 0);
        assert_eq!(bystander.try_wait().unwrap(), None, "bystander was killed");
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }
}
