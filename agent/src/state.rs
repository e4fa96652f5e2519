//! The agent's state directory and the agent id kept in it.
//!
//! ```text
//! <state_dir>/lock                                held (flock) while an agent uses the folder
//! <state_dir>/agent-id                            stable agent id (a UUID)
//! <state_dir>/credential                          this agent's credential from the master (0600)
//! <state_dir>/running/<n>.pgid                   process group of a running task (pooled)
//! <state_dir>/tasks/<task>-<attempt>/             working directory of each running task
//! <state_dir>/spare/<n>/                          empty directories for the next tasks
//! <state_dir>/failed/<ms>-<task>-<attempt>/       working directories of recent failures
//! <state_dir>/spool/<seq>-<task>-<attempt>.json   results the master has not acknowledged
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use furrow_protocol::TaskRef;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use uuid::Uuid;

use crate::AgentError;
use crate::orphans::GroupRecords;
use crate::workdir::SpareDirs;

/// Paths inside the state directory, and the pools of files and folders its tasks reuse.
/// Cheap to clone; clones share the pools.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
    records: Arc<GroupRecords>,
    spares: Arc<SpareDirs>,
}

impl StateDir {
    /// Opens (creating as needed) the state directory and its folders.
    pub fn open(root: &Path) -> Result<Self, AgentError> {
        let dir = Self {
            root: root.to_path_buf(),
            records: Arc::new(GroupRecords::new(root.join("running"))),
            spares: Arc::new(SpareDirs::new(root.join("spare"))),
        };
        for folder in [
            dir.root.clone(),
            dir.running_dir(),
            dir.tasks_dir(),
            dir.spare_dir(),
            dir.failed_dir(),
            dir.spool_dir(),
        ] {
            fs::create_dir_all(&folder).map_err(|e| AgentError::state("create", &folder, e))?;
        }
        Ok(dir)
    }

    /// Folder of the deployed apps (see the deploy module).
    pub fn apps_dir(&self) -> PathBuf {
        self.root.join("apps")
    }

    /// Folder of the process-group files of running tasks.
    pub fn running_dir(&self) -> PathBuf {
        self.root.join("running")
    }

    /// Folder of the working directories of running tasks.
    pub fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }

    /// Folder of empty directories kept for the next tasks' working directories.
    pub fn spare_dir(&self) -> PathBuf {
        self.root.join("spare")
    }

    /// The pool of process-group records of running tasks.
    pub fn group_records(&self) -> &Arc<GroupRecords> {
        &self.records
    }

    /// The pool of empty directories for working directories.
    pub fn spare_dirs(&self) -> &SpareDirs {
        &self.spares
    }

    /// Folder of the working directories kept after failures.
    pub fn failed_dir(&self) -> PathBuf {
        self.root.join("failed")
    }

    /// Folder of results the master has not acknowledged.
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// The working directory of an attempt.
    pub fn task_dir(&self, task: TaskRef) -> PathBuf {
        self.tasks_dir()
            .join(format!("{}-{}", task.task_id, task.attempt))
    }

    /// Takes the directory for this process. Two agents sharing one directory would kill
    /// each other's tasks as stale at startup, so the second one is refused. The lock
    /// lasts as long as the returned value (the kernel drops it if the process dies).
    pub fn lock(&self) -> Result<StateLock, AgentError> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| AgentError::state("open", &path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(AgentError::StateInUse(self.root.clone())),
            Err((_, errno)) => Err(AgentError::state("lock", path, errno.into())),
        }
    }

    /// Reads the agent id, creating it on first start.
    pub fn agent_id(&self) -> Result<Uuid, AgentError> {
        let path = self.root.join("agent-id");
        match fs::read_to_string(&path) {
            Ok(text) => Uuid::parse_str(text.trim()).map_err(|e| AgentError::AgentId {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Uuid::new_v4();
                write_atomically(&path, format!("{id}\n").as_bytes())
                    .map_err(|e| AgentError::state("write", &path, e))?;
                Ok(id)
            }
            Err(e) => Err(AgentError::state("read", path, e)),
        }
    }
}

impl StateDir {
    /// The credential the master gave this agent when it joined, if any.
    pub fn credential(&self) -> Option<String> {
        fs::read_to_string(self.root.join("credential"))
            .ok()
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
    }

    /// Keeps the credential the master gave this agent (readable by its user only).
    pub fn save_credential(&self, credential: &str) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join("credential");
        let tmp = self.root.join("credential.tmp");
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{credential}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    }
}

/// Exclusive use of a state directory; released when dropped.
#[derive(Debug)]
pub(crate) struct StateLock {
    _lock: Flock<fs::File>,
}

/// Writes `data` to a temporary file beside `path` and renames it over `path`, so readers
/// never see a half-written file, even when the agent dies mid-write.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        assert_eq!(dir.credential(), None);
        dir.save_credential("fwn_abc").unwrap();
        assert_eq!(dir.credential().as_deref(), Some("fwn_abc"));
        let mode = fs::metadata(tmp.path().join("credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        dir.save_credential("fwn_def").unwrap();
        assert_eq!(dir.credential().as_deref(), Some("fwn_def"));
    }

    #[test]
    fn agent_id_is_created_once_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("state")).unwrap();
        let first = dir.agent_id().unwrap();
        let again = StateDir::open(&tmp.path().join("state")).unwrap();
        assert_eq!(again.agent_id().unwrap(), first);
        let text = fs::read_to_string(tmp.path().join("state/agent-id")).unwrap();
        assert_eq!(text.trim(), first.to_string());
        assert!(tmp.path().join("state/running").is_dir());
    }

    #[test]
    fn one_agent_per_state_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        let held = dir.lock().unwrap();
        let err = dir.lock().unwrap_err().to_string();
        assert!(
            err.contains("another agent is already using") && err.contains("--state-dir DIR"),
            "{err}"
        );
        drop(held);
        assert!(dir.lock().is_ok());
    }

    #[test]
    fn corrupt_agent_id_is_an_error_not_a_new_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("agent-id"), "not a uuid").unwrap();
        let err = dir.agent_id().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
