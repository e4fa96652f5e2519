//! Gzip-compressed tar archives, read as a stream: the digest is computed from the same
//! bytes that are unpacked. Relative symbolic links that stay inside the tree are allowed
//! (some dependency trees need them); hard links must point to a file already extracted.

use std::io::Read;

use flate2::read::GzDecoder;
use tar::EntryType;

use super::tree::Tree;
use super::{ArchiveError, HashingReader, entry_path};

/// Extracts every entry and returns the archive's SHA-256.
pub(super) fn extract<R: Read>(reader: R, tree: &mut Tree) -> Result<String, ArchiveError> {
    let corrupt = |error: std::io::Error| ArchiveError::Corrupt(error.to_string());
    let mut archive = tar::Archive::new(GzDecoder::new(HashingReader::new(reader)));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry_path::parse(&entry.path_bytes(), tree.limits())?;
        let entry_type = entry.header().entry_type();
        if matches!(
            entry_type,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            // Metadata for the next entry; the tar reader has applied it already.
            continue;
        }
        tree.count()?;
        match entry_type {
            EntryType::Regular | EntryType::Continuous => {
                let executable = entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0);
                tree.file(&path, &mut entry, executable)?;
            }
            EntryType::Directory => tree.dir(&path)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|target| target.into_owned())
                    .unwrap_or_default();
                tree.symlink(&path, &target)?;
            }
            EntryType::Link => {
                let target_bytes = entry
                    .link_name_bytes()
                    .map(|target| target.into_owned())
                    .unwrap_or_default();
                let target = entry_path::parse(&target_bytes, tree.limits()).map_err(|_| {
                    ArchiveError::UnsafeLink {
                        entry: path.shown.clone(),
                        target: String::from_utf8_lossy(&target_bytes).into_owned(),
                        reason: "the target must be a relative path inside the bundle".into(),
                    }
                })?;
                tree.hard_link(&path, &target)?;
            }
            EntryType::Char => return Err(special(&path, "character device")),
            EntryType::Block => return Err(special(&path, "block device")),
            EntryType::Fifo => return Err(special(&path, "fifo")),
            EntryType::GNUSparse => return Err(special(&path, "sparse file")),
            _ => return Err(special(&path, "unknown tar")),
        }
    }
    let decoder = archive.into_inner();
    decoder.into_inner().finish_reading().map_err(corrupt)
}

fn special(path: &entry_path::EntryPath, kind: &str) -> ArchiveError {
    ArchiveError::SpecialFile {
        entry: path.shown.clone(),
        kind: kind.into(),
    }
}
