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

use std::io;
use std::path::{Path, PathBuf};

use chrono::Utc;
use furrow_protocol::TaskRef;
use tracing::warn;

use crate::state::StateDir;

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
    let dir = state.task_dir(task);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tokio::fs::create_dir_all(&dir).await?;
    Ok(dir)
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
    if let Err(error) = tokio::fs::remove_dir_all(&dir).await
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

/// Removes working directories left by a previous agent process (at startup).
pub(crate) fn clear_leftovers(state: &StateDir) {
    let Ok(entries) = std::fs::read_dir(state.tasks_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(error) = std::fs::remove_dir_all(&path) {
            warn!(dir = %path.display(), %error, "cannot remove leftover task directory");
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
    async fn create_starts_empty_and_leftovers_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let dir = create(&state, task(9)).await.unwrap();
        tokio::fs::write(dir.join("stale"), "x").await.unwrap();
        let again = create(&state, task(9)).await.unwrap();
        assert_eq!(std::fs::read_dir(&again).unwrap().count(), 0);
        clear_leftovers(&state);
        assert!(!again.exists());
    }
}
