//! Zip archives: every symbolic link is refused (a bundle has no need for them, and zip
//! tools disagree on how they are marked); files and directories go through the [`Tree`].

use std::io::{Read, Seek};

use super::tree::Tree;
use super::{ArchiveError, entry_path};

const FILE_TYPE_MASK: u32 = 0o170_000;
const REGULAR: u32 = 0o100_000;
const DIRECTORY: u32 = 0o040_000;

pub(super) fn extract<R: Read + Seek>(reader: R, tree: &mut Tree) -> Result<(), ArchiveError> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|error| ArchiveError::Corrupt(error.to_string()))?;
    // The central directory says how many entries there are: refuse before writing any.
    for _ in 0..archive.len() {
        tree.count()?;
    }
    for index in 0..archive.len() {
        let mut file = archive
            .by_index(index)
            .map_err(|error| ArchiveError::Corrupt(error.to_string()))?;
        let name = file
            .name()
            .map_err(|error| ArchiveError::Corrupt(error.to_string()))?
            .into_owned();
        let entry = entry_path::parse(name.as_bytes(), tree.limits())?;
        if file.is_symlink() {
            return Err(ArchiveError::UnsafeLink {
                entry: name,
                target: String::new(),
                reason: "symbolic links are not allowed in zip bundles".into(),
            });
        }
        let mode = file.unix_mode();
        let file_type = mode.map(|mode| mode & FILE_TYPE_MASK).unwrap_or(0);
        if file.is_dir() {
            tree.dir(&entry)?;
        } else if file_type == 0 || file_type == REGULAR {
            let executable = mode.is_some_and(|mode| mode & 0o111 != 0);
            tree.file(&entry, &mut file, executable)?;
        } else if file_type == DIRECTORY {
            tree.dir(&entry)?;
        } else {
            return Err(ArchiveError::SpecialFile {
                entry: name,
                kind: kind_name(file_type).into(),
            });
        }
    }
    Ok(())
}

/// The name of a Unix file type, for messages.
pub(super) fn kind_name(file_type: u32) -> &'static str {
    match file_type {
        0o020_000 => "character device",
        0o060_000 => "block device",
        0o010_000 => "fifo",
        0o140_000 => "socket",
        _ => "special file",
    }
}
