//! Bundle files, content-addressed: `<data-dir>/apps/bundles/<sha256>.bundle`, written
//! once (to a temporary file, then renamed) and read in pieces for agents.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use furrow_protocol::BUNDLE_CHUNK;

/// Where bundles are kept.
#[derive(Debug, Clone)]
pub struct BundleStore {
    dir: PathBuf,
}

/// Whether `digest` is a SHA-256 in lower-case hex (and so safe in a file name).
pub fn is_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BundleStore {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The file of `digest`.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        is_digest(digest).then(|| self.dir.join(format!("{digest}.bundle")))
    }

    /// Keeps `bytes` under `digest` (nothing to do when it is there already).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self
            .path(digest)
            .ok_or_else(|| std::io::Error::other(format!("not a SHA-256 digest: {digest}")))?;
        if path.exists() {
            return Ok(());
        }
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Up to [`BUNDLE_CHUNK`] bytes of `digest` from `offset`, and its whole size.
    pub fn read(&self, digest: &str, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
        let path = self
            .path(digest)
            .ok_or_else(|| std::io::Error::other(format!("not a SHA-256 digest: {digest}")))?;
        let mut file = std::fs::File::open(path)?;
        let total = file.metadata()?.len();
        let start = offset.min(total);
        file.seek(SeekFrom::Start(start))?;
        let mut data = Vec::with_capacity(BUNDLE_CHUNK.min((total - start) as usize));
        file.take(BUNDLE_CHUNK as u64).read_to_end(&mut data)?;
        Ok((data, total))
    }

    /// Removes the bundles whose digest is not in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(digest) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".bundle"))
            else {
                continue;
            };
            if !keep.contains(digest) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_kept_by_digest_and_read_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::open(dir.path()).unwrap();
        let digest = "a".repeat(64);
        let bytes: Vec<u8> = (0..(BUNDLE_CHUNK + 10)).map(|i| (i % 251) as u8).collect();
        store.put(&digest, &bytes).unwrap();
        let (first, total) = store.read(&digest, 0).unwrap();
        assert_eq!((first.len(), total), (BUNDLE_CHUNK, bytes.len() as u64));
        let (rest, _) = store.read(&digest, BUNDLE_CHUNK as u64).unwrap();
        assert_eq!([first, rest].concat(), bytes);
        assert!(store.path("../etc/passwd").is_none());
        assert!(store.read("nothere", 0).is_err());
        store.retain(&Default::default()).unwrap();
        assert!(store.read(&digest, 0).is_err());
    }
}
