//! The content-addressed bundle cache, `<state>/apps/bundles/<digest>.bundle`, and the
//! piece-by-piece fetch of the bundles it lacks.
//!
//! A missing bundle is asked of the master from the length of its `.part` file (so a
//! fetch cut by a reconnect or an agent restart resumes), one [`BUNDLE_CHUNK`] at a
//! time: each piece is appended, then the next one is asked for. Once the `.part` file
//! has the announced size, its SHA-256 is checked (on a blocking thread) and it is
//! renamed to its final name. One digest is fetched once at a time however many apps
//! wait for it. A wrong size, a wrong hash or an error from the master fails every
//! waiter with that message and removes the `.part` file.
//!
//! This type holds the bookkeeping only; the deployer sends the requests and runs the
//! verification.
//!
//! [`BUNDLE_CHUNK`]: furrow_protocol::apps::BUNDLE_CHUNK

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use furrow_protocol::apps::{BundleChunk, BundleRequest};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Where a waiter learns the bundle's path, or why there is none.
pub(crate) type BundleWaiter = oneshot::Sender<Result<PathBuf, String>>;

/// What [`BundleCache::chunk`] asks the deployer to do next.
#[derive(Debug)]
pub(crate) enum ChunkOutcome {
    /// Ask for the next piece.
    Next(BundleRequest),
    /// Every byte is there: check the hash of `part` and rename it to `path`.
    Verify {
        /// The digest it must have.
        digest: String,
        /// The complete `.part` file.
        part: PathBuf,
        /// The cache file.
        path: PathBuf,
    },
    /// The fetch failed; its waiters were told.
    Failed,
    /// A piece nobody waits for (a late answer); nothing to do.
    Ignored,
}

struct Fetch {
    size: u64,
    offset: u64,
    file: File,
    waiters: Vec<BundleWaiter>,
    /// Every byte arrived; the hash is being checked.
    verifying: bool,
}

/// The cache directory and the fetches under way.
pub(crate) struct BundleCache {
    dir: PathBuf,
    fetches: HashMap<String, Fetch>,
}

impl BundleCache {
    /// The cache in `dir` (created by the caller).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            fetches: HashMap::new(),
        }
    }

    /// The cache file of `digest`.
    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.bundle"))
    }

    fn part(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.part"))
    }

    /// Wants the bundle `digest` of `size` bytes: `waiter` hears of it at once when it is
    /// cached, or once fetched. Returns the request to send when a new fetch starts.
    pub fn want(&mut self, digest: &str, size: u64, waiter: BundleWaiter) -> Option<BundleRequest> {
        if !is_digest(digest) {
            let _ = waiter.send(Err(format!(
                "the bundle digest {digest:?} is not a SHA-256 in lower-case hex"
            )));
            return None;
        }
        let path = self.path(digest);
        if path.is_file() {
            let _ = waiter.send(Ok(path));
            return None;
        }
        if let Some(fetch) = self.fetches.get_mut(digest) {
            fetch.waiters.push(waiter);
            return None;
        }
        let part = self.part(digest);
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .and_then(|file| {
                let mut length = file.metadata()?.len();
                if length > size {
                    file.set_len(0)?;
                    length = 0;
                }
                Ok((file, length))
            });
        let (file, offset) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = waiter.send(Err(format!(
                    "cannot write the bundle to {}: {e}",
                    part.display()
                )));
                return None;
            }
        };
        info!(digest, size, offset, "fetching a bundle from the master");
        self.fetches.insert(
            digest.to_string(),
            Fetch {
                size,
                offset,
                file,
                waiters: vec![waiter],
                verifying: false,
            },
        );
        Some(self.request_at(digest, offset, size))
    }

    fn request_at(&self, digest: &str, offset: u64, size: u64) -> BundleRequest {
        debug!(digest, offset, size, "asking for a bundle piece");
        BundleRequest {
            digest: digest.to_string(),
            offset,
        }
    }

    /// The requests to send again after a reconnect (the earlier ones died with the
    /// connection).
    pub fn resume(&self) -> Vec<BundleRequest> {
        self.fetches
            .iter()
            .filter(|(_, fetch)| !fetch.verifying)
            .map(|(digest, fetch)| self.request_at(digest, fetch.offset, fetch.size))
            .collect()
    }

    /// A piece of a bundle arrived.
    pub fn chunk(&mut self, chunk: BundleChunk) -> ChunkOutcome {
        let Some(fetch) = self.fetches.get_mut(&chunk.digest) else {
            return ChunkOutcome::Ignored;
        };
        if fetch.verifying || chunk.offset != fetch.offset {
            // A duplicate answer (a request sent again after a reconnect crossed the
            // first one): the piece at our offset is on its way too.
            return ChunkOutcome::Ignored;
        }
        if let Some(error) = chunk.error {
            return self.fail(
                &chunk.digest,
                format!("the master cannot send the bundle: {error}"),
            );
        }
        if chunk.total != fetch.size {
            let message = format!(
                "the master's bundle {} has {} bytes, the deployment said {}",
                chunk.digest, chunk.total, fetch.size
            );
            return self.fail(&chunk.digest, message);
        }
        let end = fetch.offset + chunk.data.len() as u64;
        if chunk.data.is_empty() || end > fetch.size {
            let message = format!(
                "the master sent a piece of bundle {} that does not fit: {} bytes at {} of {}",
                chunk.digest,
                chunk.data.len(),
                chunk.offset,
                fetch.size
            );
            return self.fail(&chunk.digest, message);
        }
        // One piece of at most 1 MiB, written on the actor's thread: a page-cache write,
        // not worth a thread hop per piece.
        if let Err(e) = fetch.file.write_all(&chunk.data) {
            let part = self.part(&chunk.digest);
            let message = format!("cannot write the bundle to {}: {e}", part.display());
            return self.fail(&chunk.digest, message);
        }
        fetch.offset = end;
        if end < fetch.size {
            return ChunkOutcome::Next(BundleRequest {
                digest: chunk.digest,
                offset: end,
            });
        }
        fetch.verifying = true;
        ChunkOutcome::Verify {
            part: self.part(&chunk.digest),
            path: self.path(&chunk.digest),
            digest: chunk.digest,
        }
    }

    /// Ends the fetch of `digest` with `outcome`, telling every waiter.
    pub fn finish(&mut self, digest: &str, outcome: Result<PathBuf, String>) {
        let Some(fetch) = self.fetches.remove(digest) else {
            return;
        };
        match &outcome {
            Ok(path) => info!(digest, path = %path.display(), "bundle fetched and verified"),
            Err(error) => {
                warn!(digest, %error, "bundle fetch failed");
                let _ = fs::remove_file(self.part(digest));
            }
        }
        for waiter in fetch.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }

    fn fail(&mut self, digest: &str, message: String) -> ChunkOutcome {
        self.finish(digest, Err(message));
        ChunkOutcome::Failed
    }
}

/// Checks the hash and size of a complete `.part` file and renames it to `path`. Runs on
/// a blocking thread.
pub(crate) fn verify(digest: &str, part: &Path, path: &Path) -> Result<PathBuf, String> {
    let mut file = File::open(part).map_err(|e| format!("cannot read {}: {e}", part.display()))?;
    let actual = furrow_deploy::sha256_hex(&mut file)
        .map_err(|e| format!("cannot read {}: {e}", part.display()))?;
    if actual != digest {
        return Err(format!(
            "the bundle received has SHA-256 {actual}, not {digest}: refused"
        ));
    }
    fs::rename(part, path)
        .map_err(|e| format!("cannot move the bundle to {}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Whether `digest` is a SHA-256 in lower-case hex (it names a file: nothing else may).
fn is_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(digest: &str, offset: u64, total: u64, data: &[u8]) -> BundleChunk {
        BundleChunk {
            digest: digest.into(),
            offset,
            total,
            data: data.to_vec(),
            error: None,
        }
    }

    #[test]
    fn fetches_piece_by_piece_once_per_digest_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = BundleCache::new(dir.path().to_path_buf());
        let data = b"hello bundle";
        let digest = furrow_deploy::sha256_hex(&mut &data[..]).unwrap();
        let (first, mut first_rx) = oneshot::channel();
        let (second, mut second_rx) = oneshot::channel();
        let request = cache.want(&digest, data.len() as u64, first).unwrap();
        assert_eq!(request.offset, 0);
        assert!(
            cache.want(&digest, data.len() as u64, second).is_none(),
            "one fetch per digest"
        );
        let ChunkOutcome::Next(next) = cache.chunk(chunk(&digest, 0, 12, &data[..5])) else {
            panic!()
        };
        assert_eq!(next.offset, 5);
        assert!(matches!(
            cache.chunk(chunk(&digest, 0, 12, &data[..5])),
            ChunkOutcome::Ignored
        ));
        let ChunkOutcome::Verify { part, path, .. } =
            cache.chunk(chunk(&digest, 5, 12, &data[5..]))
        else {
            panic!()
        };
        let verified = verify(&digest, &part, &path);
        cache.finish(&digest, verified);
        assert_eq!(first_rx.try_recv().unwrap().unwrap(), path);
        assert_eq!(second_rx.try_recv().unwrap().unwrap(), path);
        let (third, mut third_rx) = oneshot::channel();
        assert!(cache.want(&digest, 12, third).is_none(), "cached now");
        assert_eq!(third_rx.try_recv().unwrap().unwrap(), path);
    }

    #[test]
    fn a_wrong_hash_or_a_bad_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = BundleCache::new(dir.path().to_path_buf());
        let digest = "a".repeat(64);
        let (waiter, mut rx) = oneshot::channel();
        cache.want(&digest, 3, waiter).unwrap();
        let ChunkOutcome::Verify { part, path, .. } = cache.chunk(chunk(&digest, 0, 3, b"abc"))
        else {
            panic!()
        };
        let verified = verify(&digest, &part, &path);
        cache.finish(&digest, verified);
        let error = rx.try_recv().unwrap().unwrap_err();
        assert!(error.contains("refused"), "{error}");
        assert!(!part.exists() && !path.exists());
        let (waiter, mut rx) = oneshot::channel();
        assert!(cache.want("../etc/passwd", 3, waiter).is_none());
        assert!(
            rx.try_recv()
                .unwrap()
                .unwrap_err()
                .contains("not a SHA-256")
        );
    }
}
