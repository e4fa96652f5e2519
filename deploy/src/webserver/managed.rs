//! A private web server run by Furrow from a state directory, as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use furrow_sysfd::PidFd;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::drain::OldWorkers;
use super::install::{Expect, SitesDir, Verifier, expectation, write_atomic};

use super::layout::{
    Layout, WorkerUser, check_args, default_binary, main_config, prepare_state_dir,
    resolve_worker_user, run_args,
};
use super::mount::validate_app_name;
use super::probe::{self, ProbeTarget};
use super::process::{self, signal_group};
use super::snippet::Snippet;
use super::{MountHost, WebServerError, WebServerKind};

/// Tunables of a [`ManagedServer`].
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    /// The server binary; default: `/usr/sbin/<nginx|apache2|lighttpd>` if present, else
    /// the name on `PATH` (`httpd` for Apache when `apache2` is absent).
    pub binary: Option<PathBuf>,
    /// The workers' user.
    pub worker_user: WorkerUser,
    /// Where Apache's modules are (`LoadModule` lines); default `/usr/lib/apache2/modules`.
    pub apache_modules_dir: PathBuf,
    /// How long the server may take to answer after it is spawned.
    pub start_timeout: Duration,
    /// How long a change may take to be served after a reload.
    pub verify_timeout: Duration,
    /// How long [`ManagedServer::stop`] waits after the graceful signal before killing.
    pub stop_grace: Duration,
}

impl Default for ManagedOptions {
    fn default() -> Self {
        ManagedOptions {
            binary: None,
            worker_user: WorkerUser::Auto,
            apache_modules_dir: PathBuf::from("/usr/lib/apache2/modules"),
            start_timeout: Duration::from_secs(15),
            verify_timeout: Duration::from_secs(15),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// Whether a managed server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServerStatus {
    /// Running with this master pid.
    Running {
        /// The master process (also its process group).
        pid: u32,
    },
    /// It exited without being asked to.
    Exited {
        /// Its exit code, if it exited normally.
        code: Option<i32>,
        /// The signal that ended it, if any.
        signal: Option<i32>,
    },
    /// [`ManagedServer::stop`] ended it.
    Stopped,
}
/// A web server Furrow runs itself: the main configuration, pid file, logs and temp paths
/// live in the state directory, snippets in `<state_dir>/sites/`. The server runs in the
/// foreground as a child in its own process group; dropping the value kills the group.
///
/// Reloads are signals to the master: nginx `SIGHUP` (what `nginx -s reload` sends),
/// Apache `SIGUSR1` (graceful restart), lighttpd `SIGUSR1` (graceful restart, which
/// re-reads the configuration and keeps the listening socket, since 1.4.46).
#[derive(Debug)]
pub struct ManagedServer {
    kind: WebServerKind,
    binary: PathBuf,
    layout: Layout,
    options: ManagedOptions,
    sites: SitesDir,
    pid: u32,
    pidfd: PidFd,
    status: watch::Receiver<ServerStatus>,
    stopping: Arc<AtomicBool>,
    changes: Mutex<()>,
}

impl ManagedServer {
    /// Starts `kind` on `listen` from `state_dir` with default options; see
    /// [`start_with`](Self::start_with).
    pub async fn start(
        kind: WebServerKind,
        state_dir: &Path,
        listen: SocketAddr,
    ) -> Result<Self, WebServerError> {
        Self::start_with(kind, state_dir, listen, ManagedOptions::default()).await
    }

    /// Starts `kind` on `listen` from `state_dir` (created if missing). Snippets already in
    /// `<state_dir>/sites/` (from a previous run) are served again. A server left running
    /// by a previous run on the same state directory (found through its pid file and
    /// command line) is killed first; stale pid files and runtime files are removed.
    /// Returns once the server answers on `listen`.
    pub async fn start_with(
        kind: WebServerKind,
        state_dir: &Path,
        listen: SocketAddr,
        options: ManagedOptions,
    ) -> Result<Self, WebServerError> {
        if listen.port() == 0 {
            return Err(WebServerError::invalid(
                "-",
                "the listen address needs a port (0 would let the server pick one nobody knows)",
            ));
        }
        if !state_dir.is_absolute() {
            return Err(WebServerError::invalid(
                "-",
                format!(
                    "the state directory {} must be absolute",
                    state_dir.display()
                ),
            ));
        }
        let binary = options
            .binary
            .clone()
            .unwrap_or_else(|| default_binary(kind));
        let layout = Layout {
            state_dir: state_dir.to_owned(),
            listen,
            worker_user: resolve_worker_user(&options.worker_user),
            error_log: state_dir.join("error.log"),
            pid_file: state_dir.join("run").join("server.pid"),
            token: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos())
                    .unwrap_or_default()
            ),
        };
        let sites = SitesDir {
            dir: state_dir.join("sites"),
        };
        prepare_state_dir(kind, &layout).await?;
        let config = layout.main_config_path(kind, state_dir);
        write_atomic(&config, &main_config(kind, &layout, &sites.dir, &options))?;
        process::check(kind, &binary, &check_args(kind, &layout, &config)).await?;

        let mut command = tokio::process::Command::new(&binary);
        command.args(run_args(kind, &layout, &config));
        let console = state_dir.join("console.log");
        let console_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .map_err(|err| WebServerError::io("open", &console, err))?;
        let console_err = console_file
            .try_clone()
            .map_err(|err| WebServerError::io("open", &console, err))?;
        command
            .stdin(Stdio::null())
            .stdout(console_file)
            .stderr(console_err)
            .process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
        unsafe {
            command.pre_exec(|| {
                // Best effort against orphans if the agent dies: the master gets SIGKILL
                // (its workers then notice the closed channel and exit).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let command_line = process::display_command(&binary, &run_args(kind, &layout, &config));
        let mut child = command.spawn().map_err(|source| WebServerError::Spawn {
            command: command_line,
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let pidfd = PidFd::open(pid as i32).map_err(|err| {
            WebServerError::io(
                "open a pidfd for",
                format!("/proc/{pid}"),
                std::io::Error::other(err),
            )
        })?;
        let (status_tx, status_rx) = watch::channel(ServerStatus::Running { pid });
        let stopping = Arc::new(AtomicBool::new(false));
        let watcher_stopping = Arc::clone(&stopping);
        tokio::spawn(async move {
            let status = child.wait().await;
            let final_status = if watcher_stopping.load(Ordering::SeqCst) {
                ServerStatus::Stopped
            } else {
                use std::os::unix::process::ExitStatusExt;
                match status {
                    Ok(status) => ServerStatus::Exited {
                        code: status.code(),
                        signal: status.signal(),
                    },
                    Err(_) => ServerStatus::Exited {
                        code: None,
                        signal: None,
                    },
                }
            };
            tracing::info!(pid, status = ?final_status, "managed web server ended");
            // Leftover workers of a master that died would keep the port.
            let _ = signal_group(pid, Signal::SIGKILL);
            let _ = status_tx.send(final_status);
        });
        let server = ManagedServer {
            kind,
            binary,
            sites,
            pid,
            pidfd,
            status: status_rx,
            stopping,
            changes: Mutex::new(()),
            options,
            layout,
        };
        if let Err(reason) = server.wait_answering(server.options.start_timeout).await {
            let log_tail = format!(
                "{}\n{}",
                process::log_tail(&server.layout.error_log, 20),
                process::log_tail(&console, 10)
            );
            return Err(WebServerError::StartFailed {
                kind,
                listen,
                reason,
                log: server.layout.error_log.clone(),
                log_tail: log_tail.trim().to_owned(),
            });
        }
        tracing::info!(server = %kind, %listen, pid, state_dir = %state_dir.display(), "managed web server started");
        Ok(server)
    }

    /// The server kind.
    pub fn kind(&self) -> WebServerKind {
        self.kind
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.layout.listen
    }

    /// The master process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's error log.
    pub fn error_log(&self) -> &Path {
        &self.layout.error_log
    }

    /// The directory holding the snippets.
    pub fn sites_dir(&self) -> &Path {
        &self.sites.dir
    }

    /// Whether it runs, and how it ended if not.
    pub fn status(&self) -> ServerStatus {
        *self.status.borrow()
    }

    /// Waits until the server is no longer running and returns how it ended.
    pub async fn wait_exit(&self) -> ServerStatus {
        let mut status = self.status.clone();
        let ended = status
            .wait_for(|state| !matches!(state, ServerStatus::Running { .. }))
            .await
            .map(|state| *state);
        // The watcher task is gone only with the runtime; then report what we know.
        ended.unwrap_or_else(|_| self.status())
    }

    /// Makes the server re-read its configuration (see the type's docs for the signals),
    /// waits until it answers again and until the previous workers stopped accepting
    /// connections (see the `drain` module: nginx's old workers may otherwise still take
    /// a connection or two with the old configuration).
    pub async fn reload(&self) -> Result<(), WebServerError> {
        self.ensure_running()?;
        let signal = match self.kind {
            WebServerKind::Nginx => Signal::SIGHUP,
            WebServerKind::Apache | WebServerKind::Lighttpd => Signal::SIGUSR1,
        };
        let listen = self.layout.listen;
        let old_workers = tokio::task::spawn_blocking(move || OldWorkers::snapshot(listen))
            .await
            .unwrap_or_default();
        self.pidfd
            .send_signal(signal)
            .map_err(|err| WebServerError::ReloadFailed {
                kind: self.kind,
                command: format!("kill -{signal} {}", self.pid),
                output: err.to_string(),
            })?;
        tracing::info!(server = %self.kind, pid = self.pid, %signal, "managed web server reloading");
        let failed = |reason: String| WebServerError::ReloadFailed {
            kind: self.kind,
            command: format!("kill -{signal} {}", self.pid),
            output: reason,
        };
        self.wait_answering(self.options.verify_timeout)
            .await
            .map_err(failed)?;
        old_workers
            .wait_drained(self.options.verify_timeout)
            .await
            .map_err(failed)
    }

    /// Stops the server: the graceful stop signal (nginx `SIGQUIT`, Apache `SIGWINCH`,
    /// lighttpd `SIGINT`), then `SIGKILL` to the whole group after the grace period.
    pub async fn stop(&self) -> Result<ServerStatus, WebServerError> {
        if !matches!(self.status(), ServerStatus::Running { .. }) {
            return Ok(self.status());
        }
        self.stopping.store(true, Ordering::SeqCst);
        let graceful = match self.kind {
            WebServerKind::Nginx => Signal::SIGQUIT,
            WebServerKind::Apache => Signal::SIGWINCH,
            WebServerKind::Lighttpd => Signal::SIGINT,
        };
        // A process already gone is what we want; other failures are reported after kill.
        let _ = self.pidfd.send_signal(graceful);
        let ended = tokio::time::timeout(self.options.stop_grace, self.wait_exit()).await;
        if ended.is_err() {
            tracing::warn!(server = %self.kind, pid = self.pid, "managed web server ignored the stop signal; killing its group");
            signal_group(self.pid, Signal::SIGKILL).map_err(|err| WebServerError::StopFailed {
                kind: self.kind,
                pid: self.pid,
                reason: err.to_string(),
            })?;
        }
        let status = self.wait_exit().await;
        // Workers may outlive the master by a moment.
        let _ = signal_group(self.pid, Signal::SIGKILL);
        Ok(status)
    }

    fn ensure_running(&self) -> Result<(), WebServerError> {
        match self.status() {
            ServerStatus::Running { .. } => Ok(()),
            other => Err(WebServerError::NotRunning {
                kind: self.kind,
                state: format!("{other:?}"),
            }),
        }
    }

    /// Polls `/.furrow/server` until it carries this start's token.
    async fn wait_answering(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let target = ProbeTarget::Tcp(self.layout.listen);
        loop {
            if let Err(err) = self.ensure_running() {
                return Err(err.to_string());
            }
            let last = match probe::get(
                &target,
                "localhost",
                "/.furrow/server",
                Duration::from_secs(2),
            )
            .await
            {
                Ok(response) if response.header("x-furrow-server") == Some(&self.layout.token) => {
                    return Ok(());
                }
                Ok(response) => {
                    format!(
                        "another server answers on {} (status {})",
                        self.layout.listen, response.status
                    )
                }
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(format!("not answering within {timeout:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Checks the configuration with `snippet` in place of `app`'s current one (or without
    /// it), using a candidate copy of the sites directory.
    async fn check_candidate(
        &self,
        app: &str,
        snippet: Option<&Snippet>,
    ) -> Result<(), WebServerError> {
        let candidate = self.layout.state_dir.join("candidate");
        let candidate_sites = candidate.join("sites");
        self.sites.build_candidate(&candidate_sites, app, snippet)?;
        let config = self.layout.main_config_path(self.kind, &candidate);
        write_atomic(
            &config,
            &main_config(self.kind, &self.layout, &candidate_sites, &self.options),
        )?;
        let result = process::check(
            self.kind,
            &self.binary,
            &check_args(self.kind, &self.layout, &config),
        )
        .await;
        let _ = std::fs::remove_dir_all(&candidate);
        result
    }

    fn verifier(&self) -> Verifier {
        Verifier {
            kind: self.kind,
            address: self.layout.listen,
            host: "localhost".to_owned(),
            timeout: self.options.verify_timeout,
        }
    }
}

impl MountHost for ManagedServer {
    fn kind(&self) -> WebServerKind {
        self.kind
    }

    async fn install_snippet(&self, snippet: &Snippet) -> Result<(), WebServerError> {
        validate_app_name(&snippet.app)?;
        if snippet.kind != self.kind {
            return Err(WebServerError::invalid(
                &snippet.app,
                format!(
                    "the snippet is for {}, the server is {}",
                    snippet.kind, self.kind
                ),
            ));
        }
        let _serial = self.changes.lock().await;
        self.ensure_running()?;
        self.check_candidate(&snippet.app, Some(snippet)).await?;
        self.sites.install(snippet)?;
        self.reload().await?;
        self.verifier()
            .verify(&snippet.app, &expectation(snippet), || {
                self.ensure_running()
            })
            .await?;
        tracing::info!(server = %self.kind, app = %snippet.app, "mount installed");
        Ok(())
    }

    async fn remove_mount(&self, app: &str) -> Result<(), WebServerError> {
        validate_app_name(app)?;
        let _serial = self.changes.lock().await;
        self.ensure_running()?;
        if self.sites.files_of(app)?.is_empty() {
            return Ok(());
        }
        self.check_candidate(app, None).await?;
        self.sites.remove(app)?;
        self.reload().await?;
        self.verifier()
            .verify(app, &Expect::Absent, || self.ensure_running())
            .await?;
        tracing::info!(server = %self.kind, app, "mount removed");
        Ok(())
    }

    fn installed_apps(&self) -> Result<Vec<String>, WebServerError> {
        self.sites.apps()
    }
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        if matches!(self.status(), ServerStatus::Running { .. }) {
            self.stopping.store(true, Ordering::SeqCst);
            let _ = signal_group(self.pid, Signal::SIGKILL);
        }
    }
}
