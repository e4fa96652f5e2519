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

use super::install::{Expect, SitesDir, Verifier, create_dir, expectation, write_atomic};
use super::mount::validate_app_name;
use super::probe::{self, ProbeTarget};
use super::process::{self, group_alive, signal_group};
use super::snippet::Snippet;
use super::{MountHost, WebServerError, WebServerKind, apache, lighttpd, nginx};

/// File extensions and MIME types the managed servers know (they read no system MIME table).
pub(super) const MIME_TYPES: &[(&str, &str)] = &[
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("json", "application/json"),
    ("txt", "text/plain"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("ico", "image/x-icon"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
];

/// Which user the server's worker processes run as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WorkerUser {
    /// As root: `www-data:www-data` if that user exists, else `nobody:nogroup` (Apache
    /// refuses to serve as root, and workers should not run as root anyway); not root: no
    /// directive, the workers run as the caller.
    #[default]
    Auto,
    /// No user directive: the server's built-in default.
    Inherit,
    /// This user and group (names).
    Named {
        /// The user name.
        user: String,
        /// The group name.
        group: String,
    },
}

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

/// Paths and settings the main configurations are rendered from.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub worker_user: Option<(String, String)>,
    pub error_log: PathBuf,
    pub pid_file: PathBuf,
    /// Answered at `/.furrow/server` in `X-Furrow-Server`: proves that *this* start of the
    /// server owns the port.
    pub token: String,
}

impl Layout {
    fn main_config_path(&self, kind: WebServerKind, dir: &Path) -> PathBuf {
        dir.join(match kind {
            WebServerKind::Nginx => "nginx.conf",
            WebServerKind::Apache => "httpd.conf",
            WebServerKind::Lighttpd => "lighttpd.conf",
        })
    }
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
        prepare_state_dir(&layout).await?;
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

    /// Makes the server re-read its configuration (see the type's docs for the signals)
    /// and waits until it answers again.
    pub async fn reload(&self) -> Result<(), WebServerError> {
        self.ensure_running()?;
        let signal = match self.kind {
            WebServerKind::Nginx => Signal::SIGHUP,
            WebServerKind::Apache | WebServerKind::Lighttpd => Signal::SIGUSR1,
        };
        self.pidfd
            .send_signal(signal)
            .map_err(|err| WebServerError::ReloadFailed {
                kind: self.kind,
                command: format!("kill -{signal} {}", self.pid),
                output: err.to_string(),
            })?;
        tracing::info!(server = %self.kind, pid = self.pid, %signal, "managed web server reloading");
        self.wait_answering(self.options.verify_timeout)
            .await
            .map_err(|reason| WebServerError::ReloadFailed {
                kind: self.kind,
                command: format!("kill -{signal} {}", self.pid),
                output: reason,
            })
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

fn default_binary(kind: WebServerKind) -> PathBuf {
    let candidates: &[&str] = match kind {
        WebServerKind::Nginx => &["/usr/sbin/nginx", "nginx"],
        WebServerKind::Apache => &["/usr/sbin/apache2", "/usr/sbin/httpd", "apache2"],
        WebServerKind::Lighttpd => &["/usr/sbin/lighttpd", "lighttpd"],
    };
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_absolute() && path.exists())
        .unwrap_or_else(|| PathBuf::from(candidates[candidates.len() - 1]))
}

fn resolve_worker_user(choice: &WorkerUser) -> Option<(String, String)> {
    match choice {
        WorkerUser::Inherit => None,
        WorkerUser::Named { user, group } => Some((user.clone(), group.clone())),
        WorkerUser::Auto if !nix::unistd::geteuid().is_root() => None,
        WorkerUser::Auto => {
            let www_data = nix::unistd::User::from_name("www-data")
                .ok()
                .flatten()
                .is_some()
                && nix::unistd::Group::from_name("www-data")
                    .ok()
                    .flatten()
                    .is_some();
            Some(if www_data {
                ("www-data".to_owned(), "www-data".to_owned())
            } else {
                ("nobody".to_owned(), "nogroup".to_owned())
            })
        }
    }
}

fn main_config(
    kind: WebServerKind,
    layout: &Layout,
    sites: &Path,
    options: &ManagedOptions,
) -> String {
    match kind {
        WebServerKind::Nginx => nginx::main_config(layout, sites),
        WebServerKind::Apache => apache::main_config(layout, sites, &options.apache_modules_dir),
        WebServerKind::Lighttpd => lighttpd::main_config(layout, sites),
    }
}

fn check_args(kind: WebServerKind, layout: &Layout, config: &Path) -> Vec<String> {
    let mut args = match kind {
        WebServerKind::Nginx => nginx::managed_args(layout, config),
        WebServerKind::Apache => apache::managed_args(layout, config),
        WebServerKind::Lighttpd => lighttpd::managed_args(config),
    };
    args.insert(
        0,
        if kind == WebServerKind::Lighttpd {
            "-tt"
        } else {
            "-t"
        }
        .to_owned(),
    );
    args
}

fn run_args(kind: WebServerKind, layout: &Layout, config: &Path) -> Vec<String> {
    match kind {
        WebServerKind::Nginx => {
            let mut args = nginx::managed_args(layout, config);
            args.extend(["-g".to_owned(), "daemon off;".to_owned()]);
            args
        }
        WebServerKind::Apache => {
            let mut args = apache::managed_args(layout, config);
            args.push("-DFOREGROUND".to_owned());
            args
        }
        WebServerKind::Lighttpd => {
            let mut args = vec!["-D".to_owned()];
            args.extend(lighttpd::managed_args(config));
            args
        }
    }
}

/// Creates the state directory's layout and clears what a previous run left behind.
async fn prepare_state_dir(layout: &Layout) -> Result<(), WebServerError> {
    let state = &layout.state_dir;
    create_dir(state)?;
    for sub in ["sites", "run", "tmp", "empty"] {
        create_dir(&state.join(sub))?;
    }
    kill_leftover(layout).await;
    for stale in [state.join("candidate"), state.join("run")] {
        if stale.exists() {
            std::fs::remove_dir_all(&stale)
                .map_err(|err| WebServerError::io("clear stale state", &stale, err))?;
        }
    }
    create_dir(&state.join("run"))?;
    // lighttpd opens its error log after dropping privileges.
    let error_log = &layout.error_log;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(error_log)
        .map_err(|err| WebServerError::io("create", error_log, err))?;
    if let Some((user, group)) = &layout.worker_user {
        let uid = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid);
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid);
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(error_log, uid, gid).map_err(|err| {
                WebServerError::io("give the worker user", error_log, std::io::Error::from(err))
            })?;
        }
    }
    Ok(())
}

/// Kills a server a previous run left on this state directory: its pid file names a live
/// process whose command line mentions the state directory.
async fn kill_leftover(layout: &Layout) {
    let Ok(text) = std::fs::read_to_string(&layout.pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let state = layout.state_dir.display().to_string();
    if !process::process_alive(pid) || !process::cmdline(pid).contains(&state) {
        return;
    }
    tracing::warn!(pid, state_dir = %state, "killing a web server left running by a previous run");
    let pgid = pid as u32;
    let _ = signal_group(pgid, Signal::SIGKILL);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while (group_alive(pgid) || process::process_alive(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
