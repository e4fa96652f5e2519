//! Per-task working directories.
//!
//! Each attempt runs in a fresh `<state_dir>/tasks/<task>-<attempt>/`. Policy when it
//! ends:
//! - succeeded or cancelled: removed (nothing to inspect; outputs belong on shared storage);
//! - failed: moved to `<state_dir>/failed/<unix_ms>-<task>-<attempt>/` for post-mortems,
//!   and only the newest few failures are kept, so a job failing in a loop cannot fill
//!   the disk.
//!
//! Directories left in `tasks/` by an agent process that died are removed at startup:
//! their tasks are dead and the master runs them again.
//!
//! A directory that ends empty (most do: a task's outputs belong on shared storage) is
//! not removed but moved to `<state_dir>/spare/`, and the next task's directory is a
//! spare renamed, checked to be empty. Making and removing a directory per task cost an
//! inode allocation per task, and on ext4 without a journal an allocation skips every
//! inode freed in the last minute, reading the inode table to tell: at hundreds of short
//! tasks a second that scan dominated a task's start (see `orphans` for the same with
//! the process-group files). A rename allocates nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use furrow_protocol::TaskRef;
use tracing::warn;

use crate::state::StateDir;

/// Most spare directories kept: more than the tasks that end at once on any agent.
const MAX_SPARES: usize = 256;

/// Empty directories in `<state_dir>/spare/`, for the next tasks.
#[derive(Debug)]
pub(crate) struct SpareDirs {
    dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    /// Spares made so far (the next one's number).
    made: AtomicU64,
}

impl SpareDirs {
    /// An empty pool in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            free: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
        }
    }

    fn take(&self) -> Option<PathBuf> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns a spare `take` gave out, unused.
    fn put_back(&self, spare: PathBuf) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(spare);
    }

    /// Moves the empty directory `dir` into the pool; false when the pool is full or the
    /// move failed (the directory stays where it was).
    fn keep(&self, dir: &Path) -> bool {
        if self.free.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_SPARES {
            return false;
        }
        let number = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        let spare = self.dir.join(number.to_string());
        if std::fs::rename(dir, &spare).is_err() {
            return false;
        }
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(spare);
        true
    }
}

/// Whether `dir` holds nothing.
fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

/// What happens to a working directory when its task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposal {
    /// Delete it.
    Remove,
    /// Keep it among the recent failures.
    KeepFailed,
}

/// Creates a fresh, empty working directory for `task`.
pub(crate) async fn create(state: &StateDir, task: TaskRef) -> io::Result<PathBuf> {
    // The usual case, a spare renamed into place, is two system calls on the state
    // directory: made here rather than through the blocking pool, whose round trip sat
    // between one task's end and the next one's start.
    if let Some(dir) = reuse_spare(state, task) {
        return Ok(dir);
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || create_now(&state, task))
        .await
        .map_err(io::Error::other)?
}

/// `task`'s directory made of a spare, when there is one and it is empty.
fn reuse_spare(state: &StateDir, task: TaskRef) -> Option<PathBuf> {
    let spare = state.spare_dirs().take()?;
    let dir = state.task_dir(task);
    // Replaces an empty directory of the same name; fails on one holding anything.
    match std::fs::rename(&spare, &dir) {
        Ok(()) if is_empty(&dir).unwrap_or(false) => Some(dir),
        // Something wrote into it since it became a spare (a process of an earlier task
        // that left its group, say): `create_now` removes it.
        Ok(()) => None,
        Err(error) if matches!(error.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
            // A leftover of the same name is in the way: `create_now` removes it.
            state.spare_dirs().put_back(spare);
            None
        }
        Err(error) => {
            warn!(dir = %spare.display(), %error, "cannot reuse a spare directory");
            let _ = std::fs::remove_dir_all(&spare);
            None
        }
    }
}

fn create_now(state: &StateDir, task: TaskRef) -> io::Result<PathBuf> {
    let dir = state.task_dir(task);
    remove_if_present(&dir)?;
    if let Some(dir) = reuse_spare(state, task) {
        return Ok(dir);
    }
    // A spare that something wrote into may be in its place now.
    remove_if_present(&dir)?;
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn remove_if_present(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes or keeps `task`'s working directory; problems are logged, not returned, since
/// the task's outcome does not depend on them.
pub(crate) async fn dispose(state: &StateDir, task: TaskRef, disposal: Disposal, keep: usize) {
    let dir = state.task_dir(task);
    if disposal == Disposal::KeepFailed && keep > 0 {
        let name = format!(
            "{:013}-{}-{}",
            Utc::now().timestamp_millis(),
            task.task_id,
            task.attempt
        );
        match tokio::fs::rename(&dir, state.failed_dir().join(name)).await {
            Ok(()) => {
                prune(&state.failed_dir(), keep).await;
                return;
            }
            Err(error) => {
                warn!(dir = %dir.display(), %error, "cannot keep failed task directory; removing it");
            }
        }
    }
    // An empty directory becomes a spare here (two system calls, as in `create`).
    if is_empty(&dir).unwrap_or(false) && state.spare_dirs().keep(&dir) {
        return;
    }
    let removed =
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir).map_err(|e| (dir, e)))
            .await;
    if let Ok(Err((dir, error))) = removed
        && error.kind() != io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), %error, "cannot remove task directory");
    }
}

/// Removes all but the `keep` newest entries of `folder` (names sort by age).
async fn prune(folder: &Path, keep: usize) {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(folder).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            names.push(entry.file_name());
        }
    }
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in names.into_iter().take(excess) {
        let path = folder.join(name);
        if let Err(error) = tokio::fs::remove_dir_all(&path).await {
            warn!(dir = %path.display(), %error, "cannot prune failed task directory");
        }
    }
}

/// Removes working directories and spares left by a previous agent process (at startup).
pub(crate) fn clear_leftovers(state: &StateDir) {
    for folder in [state.tasks_dir(), state.spare_dir()] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(error) = std::fs::remove_dir_all(&path) {
                warn!(dir = %path.display(), %error, "cannot remove leftover task directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(task_id: i64) -> TaskRef {
        TaskRef {
            task_id,
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn success_removes_failure_keeps_the_newest_few() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let dir = create(&state, task(1)).await.unwrap();
        tokio::fs::write(dir.join("out.txt"), "x").await.unwrap();
        dispose(&state, task(1), Disposal::Remove, 2).await;
        assert!(!dir.exists());

        for id in 2..=5 {
            create(&state, task(id)).await.unwrap();
            dispose(&state, task(id), Disposal::KeepFailed, 2).await;
        }
        let mut kept: Vec<String> = std::fs::read_dir(state.failed_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(
            kept[0].ends_with("-4-1") && kept[1].ends_with("-5-1"),
            "{kept:?}"
        );
        assert_eq!(std::fs::read_dir(state.tasks_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn an_empty_directory_is_kept_and_becomes_the_next_tasks_empty() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let first = create(&state, task(1)).await.unwrap();
        let inode = std::fs::metadata(&first).unwrap().ino();
        dispose(&state, task(1), Disposal::Remove, 2).await;
        assert!(!first.exists());
        assert_eq!(std::fs::read_dir(state.spare_dir()).unwrap().count(), 1);

        let second = create(&state, task(2)).await.unwrap();
        assert_eq!(second, state.task_dir(task(2)));
        assert_eq!(
            std::fs::metadata(&second).unwrap().ino(),
            inode,
            "renamed, not made"
        );
        assert_eq!(std::fs::read_dir(state.spare_dir()).unwrap().count(), 0);

        // A spare something wrote into meanwhile is not handed out with its contents.
        dispose(&state, task(2), Disposal::Remove, 2).await;
        let spare = std::fs::read_dir(state.spare_dir())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(spare.join("late"), "x").unwrap();
        let third = create(&state, task(3)).await.unwrap();
        assert_eq!(std::fs::read_dir(&third).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(state.spare_dir()).unwrap().count(), 0);

        dispose(&state, task(3), Disposal::Remove, 2).await;
        clear_leftovers(&state);
        assert_eq!(std::fs::read_dir(state.spare_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn create_starts_empty_and_leftovers_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let dir = create(&state, task(9)).await.unwrap();
        tokio::fs::write(dir.join("stale"), "x").await.unwrap();
        let again = create(&state, task(9)).await.unwrap();
        assert_eq!(std::fs::read_dir(&again).unwrap().count(), 0);
        // The same with a spare at hand, which cannot replace the full directory.
        create(&state, task(10)).await.unwrap();
        dispose(&state, task(10), Disposal::Remove, 2).await;
        tokio::fs::write(again.join("stale"), "x").await.unwrap();
        let third = create(&state, task(9)).await.unwrap();
        assert_eq!(std::fs::read_dir(&third).unwrap().count(), 0);
        clear_leftovers(&state);
        assert!(!again.exists());
    }
}
