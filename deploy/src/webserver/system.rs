//! The host's own web server: Furrow writes snippets into a directory the server's
//! configuration includes, and checks and reloads with the server's own commands.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::Mutex;

use super::drain::OldWorkers;
use super::install::{Expect, SitesDir, Verifier, create_dir, expectation, write_atomic};
use super::mount::validate_app_name;
use super::process;
use super::snippet::Snippet;
use super::{MountHost, WebServerError, WebServerKind};

/// How Furrow reaches the host's web server.
///
/// The server's configuration must include the directory:
///
/// - nginx: `include <dir>/*.upstream;` in `http {}` and `include <dir>/*.conf;` inside the
///   `server {}` that should carry the mounts;
/// - Apache: `IncludeOptional <dir>/*.conf` in the server config or a `<VirtualHost>`;
/// - lighttpd: `include "<dir>/*.conf"` (globally; `mod_alias`, `mod_proxy` and
///   `mod_setenv` loaded).
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// The server kind.
    pub kind: WebServerKind,
    /// The directory of snippets (created if missing).
    pub include_dir: PathBuf,
    /// The configuration test; default `nginx -t`, `apachectl -t`,
    /// `lighttpd -tt -f /etc/lighttpd/lighttpd.conf`.
    pub check_command: Vec<String>,
    /// The reload command; default `nginx -s reload`, `apachectl graceful`,
    /// `systemctl reload lighttpd` (Debian's unit sends `SIGUSR1`, a graceful restart).
    pub reload_command: Vec<String>,
    /// An address the mounts are served on, for verification.
    pub probe_address: SocketAddr,
    /// The `Host` header of verification requests (the right virtual host).
    pub probe_host: String,
    /// How long a change may take to be served after the reload.
    pub verify_timeout: Duration,
}

impl SystemOptions {
    /// The defaults for `kind`, with snippets in `include_dir` and mounts served on
    /// `probe_address`.
    pub fn new(
        kind: WebServerKind,
        include_dir: impl Into<PathBuf>,
        probe_address: SocketAddr,
    ) -> Self {
        let words = |list: &[&str]| list.iter().map(|word| (*word).to_owned()).collect();
        let (check_command, reload_command) = match kind {
            WebServerKind::Nginx => (words(&["nginx", "-t"]), words(&["nginx", "-s", "reload"])),
            WebServerKind::Apache => (
                words(&["apachectl", "-t"]),
                words(&["apachectl", "graceful"]),
            ),
            WebServerKind::Lighttpd => (
                words(&["lighttpd", "-tt", "-f", "/etc/lighttpd/lighttpd.conf"]),
                words(&["systemctl", "reload", "lighttpd"]),
            ),
        };
        SystemOptions {
            kind,
            include_dir: include_dir.into(),
            check_command,
            reload_command,
            probe_address,
            probe_host: "localhost".to_owned(),
            verify_timeout: Duration::from_secs(15),
        }
    }
}

/// Mounts on the host's web server.
///
/// The system's main configuration is not Furrow's to copy, so the check runs on the real
/// tree: under an exclusive lock on `<include_dir>/.furrow.lock`, the app's new files
/// replace the old ones (each by an atomic rename), the check command runs, and on failure
/// the old files are put back before the error is returned. A reload by someone else
/// during those milliseconds could load the unchecked snippet; Furrow's own changes never
/// interleave.
#[derive(Debug)]
pub struct SystemServer {
    options: SystemOptions,
    sites: SitesDir,
    changes: Mutex<()>,
}

impl SystemServer {
    /// Prepares the include directory. Nothing is checked or reloaded until a change.
    pub fn new(options: SystemOptions) -> Result<Self, WebServerError> {
        if options.check_command.is_empty() || options.reload_command.is_empty() {
            return Err(WebServerError::invalid(
                "-",
                "the check and reload commands must not be empty",
            ));
        }
        create_dir(&options.include_dir)?;
        let sites = SitesDir {
            dir: options.include_dir.clone(),
        };
        Ok(SystemServer {
            options,
            sites,
            changes: Mutex::new(()),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &SystemOptions {
        &self.options
    }

    /// Runs the reload command, then waits until the workers that held the listening
    /// socket on the probe address before the reload have let go of it (when `/proc`
    /// shows them; see [`ManagedServer::reload`](super::ManagedServer::reload)).
    pub async fn reload(&self) -> Result<(), WebServerError> {
        let address = self.options.probe_address;
        let old_workers = tokio::task::spawn_blocking(move || OldWorkers::snapshot(address))
            .await
            .unwrap_or_default();
        let (program, args) = split(&self.options.reload_command);
        let output = process::run(std::path::Path::new(program), args).await?;
        let failed = |output: String| WebServerError::ReloadFailed {
            kind: self.options.kind,
            command: self.options.reload_command.join(" "),
            output,
        };
        if !output.success {
            return Err(failed(output.text));
        }
        old_workers
            .wait_drained(self.options.verify_timeout)
            .await
            .map_err(failed)?;
        tracing::info!(server = %self.options.kind, "system web server reloaded");
        Ok(())
    }

    async fn check(&self) -> Result<(), WebServerError> {
        let (program, args) = split(&self.options.check_command);
        process::check(self.options.kind, std::path::Path::new(program), args).await
    }

    /// Takes the include directory's lock (blocking, so on a blocking thread).
    async fn lock_dir(&self) -> Result<Flock<File>, WebServerError> {
        let path = self.options.include_dir.join(".furrow.lock");
        tokio::task::spawn_blocking(move || {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|err| WebServerError::io("open the lock file", &path, err))?;
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
                WebServerError::io("lock", &path, std::io::Error::from(errno))
            })
        })
        .await
        .map_err(|err| {
            WebServerError::io(
                "lock",
                &self.options.include_dir,
                std::io::Error::other(err),
            )
        })?
    }

    /// The app's current files and contents, to restore after a rejected check.
    fn snapshot(&self, app: &str) -> Result<Vec<(String, String)>, WebServerError> {
        self.sites
            .files_of(app)?
            .into_iter()
            .map(|name| {
                let path = self.sites.dir.join(&name);
                std::fs::read_to_string(&path)
                    .map(|contents| (name, contents))
                    .map_err(|err| WebServerError::io("read", path, err))
            })
            .collect()
    }

    fn restore(&self, app: &str, old: &[(String, String)]) -> Result<(), WebServerError> {
        self.sites.remove(app)?;
        for (name, contents) in old {
            write_atomic(&self.sites.dir.join(name), contents)?;
        }
        Ok(())
    }

    fn verifier(&self) -> Verifier {
        Verifier {
            kind: self.options.kind,
            address: self.options.probe_address,
            host: self.options.probe_host.clone(),
            timeout: self.options.verify_timeout,
        }
    }

    /// Applies a change under the lock: `change` edits the directory, the check runs, and a
    /// rejection restores the app's previous files.
    async fn checked_change(
        &self,
        app: &str,
        change: impl FnOnce(&SitesDir) -> Result<(), WebServerError>,
    ) -> Result<(), WebServerError> {
        let old = self.snapshot(app)?;
        change(&self.sites)?;
        if let Err(rejected) = self.check().await {
            self.restore(app, &old)?;
            return Err(rejected);
        }
        Ok(())
    }
}

impl MountHost for SystemServer {
    fn kind(&self) -> WebServerKind {
        self.options.kind
    }

    async fn install_snippet(&self, snippet: &Snippet) -> Result<(), WebServerError> {
        validate_app_name(&snippet.app)?;
        if snippet.kind != self.options.kind {
            return Err(WebServerError::invalid(
                &snippet.app,
                format!(
                    "the snippet is for {}, the server is {}",
                    snippet.kind, self.options.kind
                ),
            ));
        }
        let _serial = self.changes.lock().await;
        let _lock = self.lock_dir().await?;
        self.checked_change(&snippet.app, |sites| sites.install(snippet))
            .await?;
        self.reload().await?;
        self.verifier()
            .verify(&snippet.app, &expectation(snippet), || Ok(()))
            .await?;
        tracing::info!(server = %self.options.kind, app = %snippet.app, "mount installed");
        Ok(())
    }

    async fn remove_mount(&self, app: &str) -> Result<(), WebServerError> {
        validate_app_name(app)?;
        let _serial = self.changes.lock().await;
        let _lock = self.lock_dir().await?;
        if self.sites.files_of(app)?.is_empty() {
            return Ok(());
        }
        self.checked_change(app, |sites| sites.remove(app).map(|_| ()))
            .await?;
        self.reload().await?;
        self.verifier()
            .verify(app, &Expect::Absent, || Ok(()))
            .await?;
        tracing::info!(server = %self.options.kind, app, "mount removed");
        Ok(())
    }

    fn installed_apps(&self) -> Result<Vec<String>, WebServerError> {
        self.sites.apps()
    }
}

fn split(command: &[String]) -> (&str, &[String]) {
    match command.split_first() {
        Some((program, args)) => (program.as_str(), args),
        None => ("true", &[]),
    }
}
