//! The directory being filled from an archive: every write goes through here, so the
//! limits and the never-through-a-link rule are kept in one place.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::entry_path::{EntryPath, check_symlink_target};
use super::{ArchiveError, Limits, io_error};

const FILE_MODE: u32 = 0o644;
const EXECUTABLE_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;

/// A fresh directory being filled, with the counts the limits apply to.
pub(super) struct Tree {
    root: PathBuf,
    limits: Limits,
    entries: u64,
    bytes: u64,
}

impl Tree {
    /// Creates `dest`, which must not exist.
    pub fn create(dest: &Path, limits: &Limits) -> Result<Tree, ArchiveError> {
        if fs::symlink_metadata(dest).is_ok() {
            return Err(ArchiveError::DestinationExists(dest.to_path_buf()));
        }
        DirBuilder::new()
            .mode(DIR_MODE)
            .create(dest)
            .map_err(io_error(format!("cannot create {}", dest.display())))?;
        Ok(Tree {
            root: dest.to_path_buf(),
            limits: *limits,
            entries: 0,
            bytes: 0,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Removes what was written (after a refusal).
    pub fn discard(self) {
        if let Err(error) = fs::remove_dir_all(&self.root) {
            tracing::warn!(path = %self.root.display(), %error, "cannot remove a refused extraction");
        }
    }

    /// Counts one more entry against the limit.
    pub fn count(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    pub fn dir(&mut self, entry: &EntryPath) -> Result<(), ArchiveError> {
        self.ensure_dirs(entry, entry.components.len())?;
        Ok(())
    }

    /// Writes a regular file, counting its bytes as they are written.
    pub fn file(
        &mut self,
        entry: &EntryPath,
        contents: &mut dyn Read,
        executable: bool,
    ) -> Result<(), ArchiveError> {
        if entry.is_root() {
            return Err(unsafe_path(
                entry,
                "a file cannot be the bundle's top level",
            ));
        }
        let parent = self.ensure_dirs(entry, entry.components.len() - 1)?;
        let path = parent.join(&entry.components[entry.components.len() - 1]);
        let mode = if executable {
            EXECUTABLE_MODE
        } else {
            FILE_MODE
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|error| self.create_error(entry, &path, error))?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = contents.read(&mut buffer).map_err(|error| {
                ArchiveError::Corrupt(format!("entry {:?}: {error}", entry.shown))
            })?;
            if read == 0 {
                break;
            }
            self.bytes += read as u64;
            if self.bytes > self.limits.max_total_bytes {
                return Err(ArchiveError::TooLarge {
                    entry: entry.shown.clone(),
                    limit: self.limits.max_total_bytes,
                });
            }
            file.write_all(&buffer[..read])
                .map_err(io_error(format!("cannot write {}", path.display())))?;
        }
        // The umask may have narrowed the mode; the bundle's modes are fixed, not inherited.
        set_mode(&file, mode, &path)
    }

    /// Creates a symbolic link after checking that its target stays inside the tree.
    pub fn symlink(&mut self, entry: &EntryPath, target: &[u8]) -> Result<(), ArchiveError> {
        let target_text = String::from_utf8_lossy(target).into_owned();
        check_symlink_target(entry, target).map_err(|reason| ArchiveError::UnsafeLink {
            entry: entry.shown.clone(),
            target: target_text.clone(),
            reason,
        })?;
        if entry.is_root() {
            return Err(unsafe_path(
                entry,
                "a link cannot be the bundle's top level",
            ));
        }
        let parent = self.ensure_dirs(entry, entry.components.len() - 1)?;
        let path = parent.join(&entry.components[entry.components.len() - 1]);
        std::os::unix::fs::symlink(&target_text, &path)
            .map_err(|error| self.create_error(entry, &path, error))
    }

    /// Creates a hard link to a regular file already extracted.
    pub fn hard_link(&mut self, entry: &EntryPath, target: &EntryPath) -> Result<(), ArchiveError> {
        let refuse = |reason: &str| ArchiveError::UnsafeLink {
            entry: entry.shown.clone(),
            target: target.shown.clone(),
            reason: reason.to_string(),
        };
        if entry.is_root() || target.is_root() {
            return Err(refuse("a hard link must name a file"));
        }
        let target_path = self
            .existing_path(target)
            .ok_or_else(|| refuse("the target is not a file extracted before it"))?;
        let is_regular = fs::symlink_metadata(&target_path)
            .map(|meta| meta.file_type().is_file())
            .unwrap_or(false);
        if !is_regular {
            return Err(refuse(
                "a hard link may only point to a regular file extracted before it",
            ));
        }
        let parent = self.ensure_dirs(entry, entry.components.len() - 1)?;
        let path = parent.join(&entry.components[entry.components.len() - 1]);
        fs::hard_link(&target_path, &path).map_err(|error| self.create_error(entry, &path, error))
    }

    /// The path of an existing entry reached through real directories only.
    fn existing_path(&self, entry: &EntryPath) -> Option<PathBuf> {
        let mut path = self.root.clone();
        for (index, component) in entry.components.iter().enumerate() {
            path.push(component);
            let meta = fs::symlink_metadata(&path).ok()?;
            let last = index + 1 == entry.components.len();
            if !last && !meta.file_type().is_dir() {
                return None;
            }
        }
        Some(path)
    }

    /// Makes sure the first `depth` components of `entry` are real directories, creating
    /// them one at a time; a symbolic link or a file on the way is refused.
    fn ensure_dirs(&mut self, entry: &EntryPath, depth: usize) -> Result<PathBuf, ArchiveError> {
        let mut path = self.root.clone();
        for component in &entry.components[..depth] {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(unsafe_path(
                        entry,
                        &format!("it goes through the symbolic link {component:?}"),
                    ));
                }
                Ok(_) => {
                    return Err(unsafe_path(
                        entry,
                        &format!("{component:?} is a file, not a directory"),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    DirBuilder::new()
                        .mode(DIR_MODE)
                        .create(&path)
                        .map_err(io_error(format!("cannot create {}", path.display())))?;
                    fs::set_permissions(&path, Permissions::from_mode(DIR_MODE)).map_err(
                        io_error(format!("cannot set the mode of {}", path.display())),
                    )?;
                }
                Err(error) => {
                    return Err(io_error(format!("cannot inspect {}", path.display()))(
                        error,
                    ));
                }
            }
        }
        Ok(path)
    }

    fn create_error(&self, entry: &EntryPath, path: &Path, error: io::Error) -> ArchiveError {
        if error.kind() == io::ErrorKind::AlreadyExists {
            ArchiveError::Duplicate {
                entry: entry.shown.clone(),
            }
        } else {
            io_error(format!("cannot create {}", path.display()))(error)
        }
    }
}

fn set_mode(file: &File, mode: u32, path: &Path) -> Result<(), ArchiveError> {
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_error(format!(
            "cannot set the mode of {}",
            path.display()
        )))
}

fn unsafe_path(entry: &EntryPath, reason: &str) -> ArchiveError {
    ArchiveError::UnsafePath {
        entry: entry.shown.clone(),
        reason: reason.to_string(),
    }
}
