//! The state directory of a managed server and its command lines: paths, the main
//! configuration for each kind, the worker user, and cleaning up after a previous run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::install::create_dir;
use super::managed::ManagedOptions;
use super::process::{self, group_alive, signal_group};
use super::{WebServerError, WebServerKind, apache, lighttpd, nginx};

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
    /// The main configuration file of `kind` in `dir`.
    pub(super) fn main_config_path(&self, kind: WebServerKind, dir: &Path) -> PathBuf {
        dir.join(match kind {
            WebServerKind::Nginx => "nginx.conf",
            WebServerKind::Apache => "httpd.conf",
            WebServerKind::Lighttpd => "lighttpd.conf",
        })
    }
}

pub(super) fn default_binary(kind: WebServerKind) -> PathBuf {
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

pub(super) fn resolve_worker_user(choice: &WorkerUser) -> Option<(String, String)> {
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

pub(super) fn main_config(
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

pub(super) fn check_args(kind: WebServerKind, layout: &Layout, config: &Path) -> Vec<String> {
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

pub(super) fn run_args(kind: WebServerKind, layout: &Layout, config: &Path) -> Vec<String> {
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
pub(super) async fn prepare_state_dir(
    kind: WebServerKind,
    layout: &Layout,
) -> Result<(), WebServerError> {
    let state = &layout.state_dir;
    create_dir(state)?;
    for sub in ["sites", "run", "tmp", "empty"] {
        create_dir(&state.join(sub))?;
    }
    kill_leftover(kind, layout).await;
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
/// process whose command line names this state directory's main configuration (or the
/// directory itself, as nginx's prefix or Apache's server root).
async fn kill_leftover(kind: WebServerKind, layout: &Layout) {
    let Ok(text) = std::fs::read_to_string(&layout.pid_file) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    // The main configuration's full path, not just the state directory: `/x/state` is a
    // prefix of `/x/state2`, whose server is not ours.
    let config = layout
        .main_config_path(kind, &layout.state_dir)
        .display()
        .to_string();
    let state = layout.state_dir.display().to_string();
    let command_line = process::cmdline(pid);
    let ours = command_line
        .split(' ')
        .any(|arg| arg == config || arg.trim_end_matches('/') == state);
    if !process::process_alive(pid) || !ours {
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
