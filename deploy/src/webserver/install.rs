//! What installing a mount means for both modes: the [`MountHost`] trait, the directory of
//! snippet files, and the verification after a reload.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::probe::{self, ProbeTarget};
use super::snippet::{MARKER_HEADER, MARKER_PREFIX, Snippet, parse_file_name};
use super::{Mount, WebServerError, WebServerKind, render_snippet};

/// A web server that apps can be mounted on: a [`ManagedServer`](super::ManagedServer) or
/// a [`SystemServer`](super::SystemServer).
///
/// Every change is all-or-nothing: the snippet is checked with the server's own
/// configuration test *together with all other installed snippets* before it is moved into
/// place (atomic rename), then the server is reloaded once and polled until it serves the
/// change: a rendered snippet answers at `/.furrow/mount/<app>` with its marker header
/// (see [`Snippet::marker`]); after a removal that header is gone. Changes on one host are
/// serialised.
pub trait MountHost: Send + Sync {
    /// The server kind.
    fn kind(&self) -> WebServerKind;

    /// Checks, installs (or replaces) and reloads `snippet`, then verifies it is served.
    /// On [`WebServerError::ConfigRejected`] the previous configuration is untouched.
    fn install_snippet(
        &self,
        snippet: &Snippet,
    ) -> impl Future<Output = Result<(), WebServerError>> + Send;

    /// Removes the app's snippet (if any), reloads and verifies the mount is gone.
    /// Removing an app that is not mounted does nothing.
    fn remove_mount(&self, app: &str) -> impl Future<Output = Result<(), WebServerError>> + Send;

    /// The apps that have a snippet installed, sorted.
    fn installed_apps(&self) -> Result<Vec<String>, WebServerError>;

    /// Renders `mount` for this server ([`render_snippet`]), checks that its static
    /// directories exist (a server would only answer 404 for a missing one), and installs
    /// it.
    fn install_mount(
        &self,
        mount: &Mount,
    ) -> impl Future<Output = Result<(), WebServerError>> + Send {
        let rendered = render_snippet(self.kind(), mount).and_then(|snippet| {
            match mount.statics.iter().find(|dir| !dir.dir.is_dir()) {
                Some(missing) => Err(WebServerError::invalid(
                    &mount.app,
                    format!(
                        "static dir {} for {} is not a directory (missing or unreadable)",
                        missing.dir.display(),
                        missing.url_path
                    ),
                )),
                None => Ok(snippet),
            }
        });
        async move { self.install_snippet(&rendered?).await }
    }
}

/// The directory of snippet files, `<order>-<app>.conf` and `<order>-<app>.upstream`.
#[derive(Debug, Clone)]
pub(super) struct SitesDir {
    pub dir: PathBuf,
}

impl SitesDir {
    /// The snippet file names in the directory, with the app each belongs to.
    pub fn entries(&self) -> Result<Vec<(String, String)>, WebServerError> {
        let read = std::fs::read_dir(&self.dir)
            .map_err(|err| WebServerError::io("list the snippet directory", &self.dir, err))?;
        let mut entries = Vec::new();
        for entry in read {
            let entry = entry
                .map_err(|err| WebServerError::io("list the snippet directory", &self.dir, err))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((_, app, _)) = parse_file_name(&name) {
                let app = app.to_owned();
                entries.push((name, app));
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// The apps with a snippet, sorted and unique.
    pub fn apps(&self) -> Result<Vec<String>, WebServerError> {
        let mut apps: Vec<String> = self.entries()?.into_iter().map(|(_, app)| app).collect();
        apps.sort();
        apps.dedup();
        Ok(apps)
    }

    /// The file names of `app`'s snippet.
    pub fn files_of(&self, app: &str) -> Result<Vec<String>, WebServerError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(_, owner)| owner == app)
            .map(|(name, _)| name)
            .collect())
    }

    /// Copies every snippet file except `app`'s into `target`, then writes `snippet` there
    /// (if any): the candidate tree that the configuration test reads.
    pub fn build_candidate(
        &self,
        target: &Path,
        app: &str,
        snippet: Option<&Snippet>,
    ) -> Result<(), WebServerError> {
        if target.exists() {
            std::fs::remove_dir_all(target)
                .map_err(|err| WebServerError::io("clear the candidate directory", target, err))?;
        }
        create_dir(target)?;
        for (name, owner) in self.entries()? {
            if owner != app {
                let from = self.dir.join(&name);
                std::fs::copy(&from, target.join(&name))
                    .map_err(|err| WebServerError::io("copy a snippet", &from, err))?;
            }
        }
        if let Some(snippet) = snippet {
            for (name, contents) in snippet.files() {
                write_file(&target.join(name), contents)?;
            }
        }
        Ok(())
    }

    /// Writes `snippet`'s files (each atomically) and removes the app's other files (a
    /// mount whose path changed has another order prefix).
    pub fn install(&self, snippet: &Snippet) -> Result<(), WebServerError> {
        let old = self.files_of(&snippet.app)?;
        let files = snippet.files();
        for (name, contents) in &files {
            write_atomic(&self.dir.join(name), contents)?;
        }
        for name in old {
            if !files.iter().any(|(new, _)| *new == name) {
                remove_file(&self.dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Removes `app`'s files; returns whether there were any.
    pub fn remove(&self, app: &str) -> Result<bool, WebServerError> {
        let files = self.files_of(app)?;
        for name in &files {
            remove_file(&self.dir.join(name))?;
        }
        Ok(!files.is_empty())
    }
}

/// Creates a directory (and parents) readable by the server's workers.
pub(super) fn create_dir(path: &Path) -> Result<(), WebServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|err| WebServerError::io("create directory", path, err))?;
    // The umask may have narrowed the mode; workers running as another user need to read.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|err| WebServerError::io("set permissions of", path, err))
}

/// Writes a file (mode 0644, readable by the server's workers).
pub(super) fn write_file(path: &Path, contents: &str) -> Result<(), WebServerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).map_err(|err| WebServerError::io("write", path, err))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|err| WebServerError::io("set permissions of", path, err))
}

/// Writes `path` through a hidden temporary file in the same directory and a rename, so
/// the server never reads a half-written file. The temporary name (`.<name>.new`) matches
/// no include pattern.
pub(super) fn write_atomic(path: &Path, contents: &str) -> Result<(), WebServerError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.new"));
    write_file(&temp, contents)?;
    std::fs::rename(&temp, path).map_err(|err| WebServerError::io("move into place", path, err))
}

fn remove_file(path: &Path) -> Result<(), WebServerError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(WebServerError::io("remove", path, err))
        }
        _ => Ok(()),
    }
}

/// What verification waits for.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// The app's marker header with this value.
    Marker(String),
    /// No marker header for the app.
    Absent,
    /// Any HTTP response (raw snippets carry no marker).
    Answers,
}

/// Where and how to verify.
pub(super) struct Verifier {
    pub kind: WebServerKind,
    pub address: SocketAddr,
    pub host: String,
    pub timeout: Duration,
}

impl Verifier {
    /// Polls `/.furrow/mount/<app>` until `expect` holds or the timeout passes. `alive` is
    /// checked on every round so that a server that died fails fast.
    pub async fn verify(
        &self,
        app: &str,
        expect: &Expect,
        alive: impl Fn() -> Result<(), WebServerError>,
    ) -> Result<(), WebServerError> {
        let deadline = Instant::now() + self.timeout;
        let target = ProbeTarget::Tcp(self.address);
        let path = format!("{MARKER_PREFIX}{app}");
        loop {
            alive()?;
            let last = match probe::get(&target, &self.host, &path, Duration::from_secs(2)).await {
                Ok(response) => {
                    let marker = response.header(MARKER_HEADER);
                    let done = match expect {
                        Expect::Marker(wanted) => marker == Some(wanted.as_str()),
                        Expect::Absent => marker.is_none(),
                        Expect::Answers => true,
                    };
                    if done {
                        tracing::debug!(server = %self.kind, app, "change verified");
                        return Ok(());
                    }
                    format!("status {}, marker {:?}", response.status, marker)
                }
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(WebServerError::NotVerified {
                    kind: self.kind,
                    app: app.to_owned(),
                    address: self.address,
                    expected: match expect {
                        Expect::Marker(_) => "new snippet",
                        Expect::Absent => "removal",
                        Expect::Answers => "response",
                    },
                    timeout: self.timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What to expect after installing `snippet`.
pub(super) fn expectation(snippet: &Snippet) -> Expect {
    match &snippet.marker {
        Some(marker) => Expect::Marker(marker.clone()),
        None => Expect::Answers,
    }
}
