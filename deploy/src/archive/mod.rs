//! Safe extraction of untrusted bundles (`.zip` or `.tar.gz`, told apart by their first
//! bytes) into a fresh directory, with the archive's SHA-256 computed on the way.
//!
//! What is refused, naming the entry: absolute paths and `..`; any symbolic link in a zip;
//! in a tar, absolute symbolic links and relative ones that could lead outside the tree;
//! hard links to anything but a regular file already extracted; device files, fifos and
//! sockets; writing through any symbolic link (parents are created one component at a time
//! and files are opened with `O_NOFOLLOW`, never over an existing name); more entries than
//! [`Limits::max_entries`]; more bytes written than [`Limits::max_total_bytes`] (counted
//! as written, headers are not trusted); paths or names longer than the limits. Files are
//! written 0644, or 0755 when the archive marks them executable: no setuid, setgid, sticky
//! or group/other write bits, and no ownership change.

mod entry_path;
mod tar_gz;
mod tree;
mod zip_file;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

/// Limits on what an archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (files, directories, links) an archive may hold.
    pub max_entries: u64,
    /// Most bytes the files may hold together, counted as they are written.
    pub max_total_bytes: u64,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
    /// Longest single name in a path, in bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_total_bytes: 1 << 30,
            max_path_bytes: 1024,
            max_name_bytes: 255,
        }
    }
}

/// The two archive formats a bundle may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveFormat {
    /// A zip file (`PK\x03\x04`, or `PK\x05\x06` when empty).
    Zip,
    /// A gzip-compressed tar file (`\x1f\x8b`).
    TarGz,
}

impl ArchiveFormat {
    /// The format from the first bytes of the archive, whatever its name.
    pub fn detect(first_bytes: &[u8]) -> Option<ArchiveFormat> {
        if first_bytes.starts_with(b"PK\x03\x04") || first_bytes.starts_with(b"PK\x05\x06") {
            Some(ArchiveFormat::Zip)
        } else if first_bytes.starts_with(&[0x1f, 0x8b]) {
            Some(ArchiveFormat::TarGz)
        } else {
            None
        }
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The archive's format.
    pub format: ArchiveFormat,
    /// The SHA-256 of the archive's bytes, lower-case hex: its content address.
    pub digest: String,
    /// Entries extracted (files, directories, links).
    pub entries: u64,
    /// Bytes written to files.
    pub bytes: u64,
}

/// Why an archive was not extracted. Each message names the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the archive or writing the tree failed at the system level.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The system's error.
        source: io::Error,
    },
    /// The first bytes are neither zip nor gzip.
    #[error(
        "not a bundle archive: expected a .zip or a .tar.gz file (checked by content, not name)"
    )]
    UnknownFormat,
    /// The archive's structure is damaged or uses an unsupported feature.
    #[error("damaged or unsupported archive: {0}")]
    Corrupt(String),
    /// An entry's path is not a plain relative path inside the tree.
    #[error("entry {entry:?} refused: {reason}")]
    UnsafePath {
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why, e.g. "'..' leads outside the bundle".
        reason: String,
    },
    /// A symbolic or hard link could lead outside the tree or is not allowed.
    #[error("link {entry:?} -> {target:?} refused: {reason}")]
    UnsafeLink {
        /// The link's path.
        entry: String,
        /// Where it points.
        target: String,
        /// Why it is refused.
        reason: String,
    },
    /// A device file, fifo, socket or other entry that is not a file, directory or link.
    #[error("entry {entry:?} refused: {kind} entries are not allowed in a bundle")]
    SpecialFile {
        /// The entry's path.
        entry: String,
        /// What it is ("character device", "fifo", ...).
        kind: String,
    },
    /// The archive holds more entries than allowed.
    #[error("the archive holds more than {limit} entries; a bundle may hold at most {limit}")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The files would take more bytes than allowed.
    #[error(
        "the archive unpacks to more than {limit} bytes (stopped at entry {entry:?}); a bundle may unpack to at most {limit} bytes"
    )]
    TooLarge {
        /// The entry being written when the limit was reached.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// The same path appears twice (other than a directory).
    #[error("entry {entry:?} appears twice in the archive")]
    Duplicate {
        /// The entry's path.
        entry: String,
    },
    /// The destination exists already.
    #[error("cannot extract into {0}: it exists already; extraction needs a fresh directory")]
    DestinationExists(PathBuf),
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

/// Extracts the archive at `archive` into `dest`, which must not exist yet (its parent
/// must). On failure `dest` is removed again.
pub fn extract_file(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let file =
        File::open(archive).map_err(io_error(format!("cannot open {}", archive.display())))?;
    extract_reader(file, dest, limits)
}

/// Extracts an archive held in memory into `dest`, as [`extract_file`].
pub fn extract_bytes(
    bytes: &[u8],
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    extract_reader(io::Cursor::new(bytes), dest, limits)
}

fn extract_reader<R: Read + Seek>(
    mut reader: R,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let mut magic = [0u8; 4];
    let magic_len =
        read_up_to(&mut reader, &mut magic).map_err(io_error("cannot read the archive"))?;
    let format = ArchiveFormat::detect(&magic[..magic_len]).ok_or(ArchiveError::UnknownFormat)?;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(io_error("cannot read the archive"))?;
    let mut tree = tree::Tree::create(dest, limits)?;
    let outcome = match format {
        // A zip is read by random access, so its digest is a separate sequential pass.
        ArchiveFormat::Zip => sha256_hex(&mut reader)
            .map_err(io_error("cannot read the archive"))
            .and_then(|digest| {
                reader
                    .seek(SeekFrom::Start(0))
                    .map_err(io_error("cannot read the archive"))?;
                zip_file::extract(reader, &mut tree)?;
                Ok(digest)
            }),
        ArchiveFormat::TarGz => tar_gz::extract(reader, &mut tree),
    };
    match outcome {
        Ok(digest) => Ok(Extracted {
            format,
            digest,
            entries: tree.entries(),
            bytes: tree.bytes(),
        }),
        Err(error) => {
            tree.discard();
            Err(error)
        }
    }
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// The SHA-256 of everything `reader` yields, lower-case hex.
pub fn sha256_hex(reader: &mut impl Read) -> io::Result<String> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    context: Context,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            context: Context::new(&SHA256),
        }
    }

    /// Reads what is left, then returns the hex digest of everything.
    pub(crate) fn finish_reading(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.finish())
    }

    fn finish(self) -> String {
        self.context
            .finish()
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.context.update(&buffer[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(
            ArchiveFormat::detect(b"PK\x03\x04rest"),
            Some(ArchiveFormat::Zip)
        );
        assert_eq!(
            ArchiveFormat::detect(&[0x1f, 0x8b, 8, 0]),
            Some(ArchiveFormat::TarGz)
        );
        assert_eq!(ArchiveFormat::detect(b"name: x"), None);
    }

    #[test]
    fn sha256_of_known_input() {
        let digest = sha256_hex(&mut &b"abc"[..]).unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn unknown_content_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let error = extract_bytes(b"just text", &dest, &Limits::default()).unwrap_err();
        assert!(matches!(error, ArchiveError::UnknownFormat), "{error}");
        assert!(!dest.exists());
    }
}
