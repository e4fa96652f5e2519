//! `isolation: namespace` on this agent: the app's per-app uid/gid, where its directories
//! appear inside its mount namespace ([`NamespaceLayout`]), its environment as seen from
//! inside ([`environment_inside`]), the ownership it needs on the host, and whether this
//! host can isolate at all.
//!
//! Inside the namespace (built by `furrow_deploy::supervise`):
//!
//! ```text
//! /app                  the release, read-only (FURROW_APP_DIR; the config at /app/.furrow/)
//! /data/<writable>      each `writable` directory, read-write (FURROW_APP_DATA_DIR=/data)
//! /deps/<name>          each `dependencies.shared` set, read-only
//! /tmp                  the instance's own tmpfs (FURROW_APP_TMP_PATH=/tmp)
//! <run>/<app>/<release> the socket directory, at its host path (for `listen: socket`)
//! /usr /bin /lib* /etc… the system, read-only
//! ```
//!
//! The processes run as the app's uid/gid ([`app_ids`]), which no account has: they can
//! read the release (bundle files are world-readable; the config file is given to the
//! app's group) and write only their `writable` directories (made theirs here) and `/tmp`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use furrow_deploy::supervise::{BindMount, Isolation, NamespaceIsolation};
use furrow_deploy::{AppHome, InstalledRelease};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{Gid, Uid, fchown, fchownat};

use super::install::AppsDir;

/// The first uid (and gid) of the per-app range.
pub(crate) const APP_ID_BASE: u32 = 200_000;
/// How many ids the per-app range holds.
pub(crate) const APP_ID_SPAN: u32 = 100_000;

/// Where the release appears inside.
const APP_DIR: &str = "/app";
/// Where the `writable` directories appear inside, each under its name.
const DATA_DIR: &str = "/data";
/// Where the shared dependency sets appear inside, each under its name.
const DEPS_DIR: &str = "/deps";
/// The instance's scratch space inside (a fresh tmpfs per instance).
const TMP_DIR: &str = "/tmp";

/// The uid and gid an isolated app runs as: `200000 + FNV-1a-64(app name) % 100000` for
/// both. Deterministic (the same on every agent and across restarts, so files in the
/// `writable` directories keep their owner) and above the ids distributions hand to
/// accounts; Furrow creates no account for it.
pub(crate) fn app_ids(app: &str) -> (u32, u32) {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = app.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    let offset = u32::try_from(hash % u64::from(APP_ID_SPAN)).unwrap_or_default();
    let id = APP_ID_BASE + offset;
    (id, id)
}

/// How a release's host directories map to paths inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceLayout {
    /// The release directory (`/app`).
    release_dir: PathBuf,
    /// `<home>/shared` (`/data`).
    data_root: PathBuf,
    /// The manifest's `writable` names.
    writable: Vec<String>,
    /// `<home>/tmp`, shown as the instance's own `/tmp` (not bound: scratch space stays
    /// per instance and off the host's disk).
    tmp_dir: PathBuf,
    /// The agent's shared dependencies directory.
    deps_root: PathBuf,
    /// The manifest's `dependencies.shared` names.
    shared_deps: Vec<String>,
}

impl NamespaceLayout {
    /// The layout of `release` of `home`'s app.
    pub fn of(home: &AppHome, release: &InstalledRelease) -> Self {
        NamespaceLayout {
            release_dir: release.dir.clone(),
            data_root: home.data_dir(),
            writable: release.manifest.writable.clone(),
            tmp_dir: home.tmp_dir(),
            deps_root: home.shared_deps().to_path_buf(),
            shared_deps: release.manifest.dependencies.shared.clone(),
        }
    }

    /// Host prefix → inside prefix, for every directory the app sees elsewhere than at
    /// its host path.
    fn views(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut views = vec![
            (self.release_dir.clone(), PathBuf::from(APP_DIR)),
            (self.data_root.clone(), PathBuf::from(DATA_DIR)),
            (self.tmp_dir.clone(), PathBuf::from(TMP_DIR)),
        ];
        views.extend(
            self.shared_deps
                .iter()
                .map(|name| (self.deps_root.join(name), Path::new(DEPS_DIR).join(name))),
        );
        views
    }

    /// Where the host path `host` appears inside, if it is under one of the app's
    /// directories (the deepest one wins).
    pub fn inside(&self, host: &Path) -> Option<PathBuf> {
        self.views()
            .into_iter()
            .filter_map(|(from, to)| {
                let rest = host.strip_prefix(&from).ok()?;
                // `join("")` would add a trailing '/'.
                let inside = if rest.as_os_str().is_empty() {
                    to
                } else {
                    to.join(rest)
                };
                Some((from.components().count(), inside))
            })
            .max_by_key(|(depth, _)| *depth)
            .map(|(_, inside)| inside)
    }

    /// The supervisor's isolation for this layout, run as `ids`.
    pub fn isolation(&self, ids: (u32, u32)) -> Isolation {
        let mut namespace = NamespaceIsolation::new(&self.release_dir);
        namespace.app_dir = PathBuf::from(APP_DIR);
        namespace.ids = Some(ids);
        namespace.read_only = self
            .shared_deps
            .iter()
            .map(|name| BindMount {
                source: self.deps_root.join(name),
                target: Path::new(DEPS_DIR).join(name),
            })
            .collect();
        namespace.writable = self
            .writable
            .iter()
            .map(|name| BindMount {
                source: self.data_root.join(name),
                target: Path::new(DATA_DIR).join(name),
            })
            .collect();
        Isolation::Namespace(namespace)
    }
}

/// The environment `host` (as `AppHome::environment` builds it, with host paths) as the
/// process inside the namespace must see it: every value made of absolute paths (one, or
/// a `:`-separated list such as `PATH` and `PYTHONPATH`) has each path under one of the
/// app's directories replaced by where it appears inside; system paths (the same inside)
/// and other values are kept.
pub(crate) fn environment_inside(
    host: &BTreeMap<String, String>,
    layout: &NamespaceLayout,
) -> BTreeMap<String, String> {
    host.iter()
        .map(|(key, value)| {
            let parts: Vec<&str> = value.split(':').collect();
            let all_paths = !value.is_empty() && parts.iter().all(|part| part.starts_with('/'));
            if !all_paths {
                return (key.clone(), value.clone());
            }
            let mapped: Vec<String> = parts
                .iter()
                .map(|part| match layout.inside(Path::new(part)) {
                    Some(inside) => inside.to_string_lossy().into_owned(),
                    None => (*part).to_owned(),
                })
                .collect();
            (key.clone(), mapped.join(":"))
        })
        .collect()
}

/// How a release's processes are isolated, decided and prepared before they start.
pub(crate) enum ReleaseIsolation {
    /// Plain processes of the agent's user.
    None,
    /// Each instance in its own mount namespace as the app's uid/gid.
    Namespace {
        layout: NamespaceLayout,
        ids: (u32, u32),
    },
}

impl ReleaseIsolation {
    /// What the release's manifest asks for, prepared: for `isolation: namespace`, checks
    /// that this host can isolate and that no other isolated app here has the same ids,
    /// then gives the app its `writable` directories and its configuration file. Blocking
    /// file work: call it from a blocking thread.
    pub fn prepare(
        apps: &AppsDir,
        home: &AppHome,
        release: &InstalledRelease,
    ) -> Result<Self, String> {
        // A static site runs nothing: nothing to isolate, nothing to require of the host.
        if release.manifest.isolation != furrow_deploy::Isolation::Namespace
            || release.manifest.processes.is_empty()
        {
            return Ok(ReleaseIsolation::None);
        }
        check_host()?;
        let ids = app_ids(home.app());
        check_unique_ids(apps, home.app(), ids)?;
        let layout = NamespaceLayout::of(home, release);
        give_writable_dirs(&layout, ids)?;
        give_config_file(&release.config_file, ids.1)?;
        Ok(ReleaseIsolation::Namespace { layout, ids })
    }

    /// The supervisor's isolation.
    pub fn supervised(&self) -> Isolation {
        match self {
            ReleaseIsolation::None => Isolation::None,
            ReleaseIsolation::Namespace { layout, ids } => layout.isolation(*ids),
        }
    }

    /// The processes' environment from the host's one.
    pub fn environment(&self, host: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match self {
            ReleaseIsolation::None => host.clone(),
            ReleaseIsolation::Namespace { layout, .. } => environment_inside(host, layout),
        }
    }

    /// The working directory of the processes: the release, as they see it.
    pub fn working_dir(&self, release: &InstalledRelease) -> PathBuf {
        match self {
            ReleaseIsolation::None => release.dir.clone(),
            ReleaseIsolation::Namespace { .. } => PathBuf::from(APP_DIR),
        }
    }
}

/// Refuses when another installed app whose current release is isolated runs as the
/// same ids (a hash collision): the two could write each other's data.
fn check_unique_ids(apps: &AppsDir, app: &str, ids: (u32, u32)) -> Result<(), String> {
    for (other, current) in apps.installed() {
        let Some(current) = current else { continue };
        if other == app || app_ids(&other) != ids {
            continue;
        }
        let isolated = apps
            .home(&other)
            .and_then(|home| home.release(current).map_err(|e| e.to_string()))
            .is_ok_and(|release| release.manifest.isolation == furrow_deploy::Isolation::Namespace);
        if isolated {
            return Err(format!(
                "isolation: apps {app:?} and {other:?} would both run as uid {}; rename one of them (the per-app uid is derived from the name)",
                ids.0
            ));
        }
    }
    Ok(())
}

/// Makes every `writable` directory (created if missing, mode 0750) and everything in it
/// owned by `ids`, so the app can write there: files a hook or an unisolated release left
/// owned by another user are handed over too. Symbolic links are changed, not followed.
fn give_writable_dirs(layout: &NamespaceLayout, ids: (u32, u32)) -> Result<(), String> {
    for name in &layout.writable {
        let dir = layout.data_root.join(name);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("isolation: cannot create {}: {e}", dir.display()))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| format!("isolation: cannot set the mode of {}: {e}", dir.display()))?;
        give_tree(&dir, ids)?;
    }
    Ok(())
}

/// How deep [`give_tree`] descends (each level holds two descriptors); deeper entries
/// keep their owner.
const MAX_DEPTH: usize = 64;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Hands `dir` and its tree to `ids`. The app's processes of the serving release (the same
/// uid) may be changing the tree meanwhile, so it is walked by descriptors, never by path:
/// each directory is opened relative to its parent with `O_NOFOLLOW`, each entry changed
/// with `fchownat(AT_SYMLINK_NOFOLLOW)`. A directory swapped for a link to, say, `/etc`
/// between the look and the open is then refused by the open, not followed. (`dir`
/// itself sits in `<home>/shared`, which only the agent can change.)
fn give_tree(dir: &Path, ids: (u32, u32)) -> Result<(), String> {
    let fd = open(dir, DIR_FLAGS, Mode::empty())
        .map_err(|e| format!("isolation: cannot open {}: {e}", dir.display()))?;
    let (uid, gid) = (Uid::from_raw(ids.0), Gid::from_raw(ids.1));
    fchown(&fd, Some(uid), Some(gid)).map_err(|e| {
        format!(
            "isolation: cannot give {} to uid {}: {e}",
            dir.display(),
            ids.0
        )
    })?;
    give_entries(&fd, dir, ids, 1)
}

fn give_entries(dir: &OwnedFd, shown: &Path, ids: (u32, u32), depth: usize) -> Result<(), String> {
    // The directory the descriptor holds, whatever its path has become since.
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let entries = std::fs::read_dir(&listing)
        .map_err(|e| format!("isolation: cannot list {}: {e}", shown.display()))?;
    let (uid, gid) = (Uid::from_raw(ids.0), Gid::from_raw(ids.1));
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("isolation: cannot list {}: {e}", shown.display()))?;
        let name = entry.file_name();
        let path = shown.join(&name);
        let stat = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => continue, // removed meanwhile
            Err(e) => return Err(format!("isolation: cannot inspect {}: {e}", path.display())),
        };
        if (stat.st_uid, stat.st_gid) != ids {
            fchownat(
                dir,
                name.as_os_str(),
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                format!(
                    "isolation: cannot give {} to uid {}: {e}",
                    path.display(),
                    ids.0
                )
            })?;
        }
        let is_dir =
            SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        if !is_dir || depth >= MAX_DEPTH {
            continue;
        }
        match openat(dir, name.as_os_str(), DIR_FLAGS, Mode::empty()) {
            Ok(child) => give_entries(&child, &path, ids, depth + 1)?,
            // Replaced or removed meanwhile (by the app, in its own directory).
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {}
            Err(e) => return Err(format!("isolation: cannot open {}: {e}", path.display())),
        }
    }
    Ok(())
}

/// The configuration file (mode 0400, the agent's) becomes readable by the app's group,
/// still written by nobody: mode 0440, group `gid`.
fn give_config_file(config_file: &Path, gid: u32) -> Result<(), String> {
    if !config_file.is_file() {
        return Ok(());
    }
    std::os::unix::fs::chown(config_file, None, Some(gid)).map_err(|e| {
        format!(
            "isolation: cannot give the configuration {} to gid {gid}: {e}",
            config_file.display()
        )
    })?;
    std::fs::set_permissions(config_file, std::fs::Permissions::from_mode(0o440)).map_err(|e| {
        format!(
            "isolation: cannot set the mode of {}: {e}",
            config_file.display()
        )
    })
}

/// Capabilities isolation needs, by bit number in `CapEff`.
const NEEDED_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (21, "CAP_SYS_ADMIN"),
];

/// The needed capabilities missing from the effective set in a `/proc/<pid>/status`
/// text (all of them when the line is absent or unreadable).
fn missing_capabilities(status: &str) -> Vec<&'static str> {
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    NEEDED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Whether this agent can run isolated processes: it needs root's capabilities (mount
/// namespaces are made without a user namespace, and the processes switch to ids no
/// account has), and the host (a container's seccomp or AppArmor profile, say) must let
/// it create a mount namespace and mount in it. The error says which and what to do.
fn check_host() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = missing_capabilities(&status);
    if !missing.is_empty() {
        return Err(format!(
            "isolation: namespace needs the agent to run as root; this agent (uid {}) lacks {}. Run the agent as root or deploy the app with isolation: none",
            nix::unistd::geteuid(),
            missing.join(", ")
        ));
    }
    probe_mount_namespace().map_err(|(step, errno)| {
        format!(
            "isolation: namespace is not possible on this host: {step} failed ({}); a container may forbid it (seccomp, AppArmor). Allow mount namespaces for the agent or deploy the app with isolation: none",
            std::io::Error::from_raw_os_error(errno)
        )
    })
}

/// Forks a child that makes a mount namespace and mounts a tmpfs in it (on `/tmp`, seen
/// by nobody else), then exits. Returns the step that failed and its errno.
fn probe_mount_namespace() -> Result<(), (&'static str, i32)> {
    const STEPS: [&str; 3] = [
        "unshare(CLONE_NEWNS)",
        "making / private in the new namespace",
        "mounting a tmpfs in the new namespace",
    ];
    let prepared = (
        CString::new("/"),
        CString::new("/tmp"),
        CString::new("tmpfs"),
    );
    let (Ok(root), Ok(target), Ok(tmpfs)) = prepared else {
        return Err(("preparing the probe", libc::EINVAL));
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(("creating a pipe", last_errno()));
    }
    let [read_end, write_end] = fds;
    // SAFETY: the child only makes system calls (unshare, mount, write, _exit) with the
    // strings prepared above: async-signal-safe, so fine in a multi-threaded parent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let errno = last_errno();
        // SAFETY: closing our own descriptors.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        return Err(("fork", errno));
    }
    if pid == 0 {
        // SAFETY (the child): system calls only; see above.
        unsafe {
            let null = std::ptr::null();
            let failed = if libc::unshare(libc::CLONE_NEWNS) != 0 {
                Some(0u8)
            } else if libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                Some(1)
            } else if libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            ) != 0
            {
                Some(2)
            } else {
                None
            };
            if let Some(step) = failed {
                let errno = last_errno();
                let mut report = [0u8; 5];
                report[0] = step;
                report[1..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(write_end, report.as_ptr().cast(), report.len());
                libc::_exit(1);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: our own descriptors and child; `report` has room for what is read.
    unsafe {
        libc::close(write_end);
        let mut report = [0u8; 5];
        let read = libc::read(read_end, report.as_mut_ptr().cast(), report.len());
        libc::close(read_end);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && last_errno() == libc::EINTR {}
        if read == 5 {
            let step = STEPS
                .get(usize::from(report[0]))
                .copied()
                .unwrap_or("probe");
            let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
            return Err((step, errno));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(("the probe process", libc::ECHILD));
        }
    }
    Ok(())
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn layout() -> NamespaceLayout {
        NamespaceLayout {
            release_dir: "/state/apps/homes/shop/releases/7".into(),
            data_root: "/state/apps/homes/shop/shared".into(),
            writable: vec!["uploads".into(), "cache".into()],
            tmp_dir: "/state/apps/homes/shop/tmp".into(),
            deps_root: "/state/apps/shared-deps".into(),
            shared_deps: vec!["py312".into()],
        }
    }

    #[test]
    fn app_ids_are_stable_and_in_the_app_range() {
        let (uid, gid) = app_ids("shop");
        assert_eq!(uid, gid);
        assert!((APP_ID_BASE..APP_ID_BASE + APP_ID_SPAN).contains(&uid));
        assert_eq!(app_ids("shop"), (uid, gid), "deterministic");
        // The documented formula, so that a change of it (which would leave every
        // isolated app's files owned by a stranger) fails here.
        assert_eq!(uid, app_ids_reference("shop"));
        assert_ne!(app_ids("shop"), app_ids("shop2"));
    }

    /// The documented formula, written out independently.
    fn app_ids_reference(app: &str) -> u32 {
        let mut hash: u64 = 14_695_981_039_346_656_037;
        for byte in app.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(1_099_511_628_211);
        }
        200_000 + (hash % 100_000) as u32
    }

    #[test]
    fn host_paths_map_to_where_the_app_sees_them() {
        let layout = layout();
        let inside = |path: &str| layout.inside(Path::new(path));
        assert_eq!(
            inside("/state/apps/homes/shop/releases/7/.furrow/config.yaml"),
            Some("/app/.furrow/config.yaml".into())
        );
        assert_eq!(
            inside("/state/apps/homes/shop/releases/7"),
            Some("/app".into())
        );
        assert_eq!(
            inside("/state/apps/homes/shop/shared/uploads"),
            Some("/data/uploads".into())
        );
        assert_eq!(
            inside("/state/apps/shared-deps/py312/bin"),
            Some("/deps/py312/bin".into())
        );
        // Another release, another app's deps, the system: not the app's directories.
        assert_eq!(inside("/state/apps/homes/shop/releases/70"), None);
        assert_eq!(inside("/state/apps/shared-deps/other"), None);
        assert_eq!(inside("/usr/bin"), None);
    }

    #[test]
    fn the_environment_inside_names_no_host_directory_of_the_app() {
        let host: BTreeMap<String, String> = [
            ("FURROW_APP_NAME", "shop"),
            ("FURROW_APP_RELEASE", "7"),
            ("FURROW_APP_DIR", "/state/apps/homes/shop/releases/7"),
            (
                "FURROW_APP_CONFIG_FILE",
                "/state/apps/homes/shop/releases/7/.furrow/config.yaml",
            ),
            ("FURROW_APP_TMP_PATH", "/state/apps/homes/shop/tmp"),
            ("FURROW_APP_DATA_DIR", "/state/apps/homes/shop/shared"),
            ("FURROW_APP_SOCKET", "{socket}"),
            (
                "PYTHONPATH",
                "/state/apps/homes/shop/releases/7/vendor:/state/apps/shared-deps/py312",
            ),
            (
                "PATH",
                "/state/apps/shared-deps/py312/bin:/usr/local/bin:/usr/bin:/bin",
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        let inside = environment_inside(&host, &layout());
        let expected: BTreeMap<String, String> = [
            ("FURROW_APP_NAME", "shop"),
            ("FURROW_APP_RELEASE", "7"),
            ("FURROW_APP_DIR", "/app"),
            ("FURROW_APP_CONFIG_FILE", "/app/.furrow/config.yaml"),
            ("FURROW_APP_TMP_PATH", "/tmp"),
            ("FURROW_APP_DATA_DIR", "/data"),
            ("FURROW_APP_SOCKET", "{socket}"),
            ("PYTHONPATH", "/app/vendor:/deps/py312"),
            ("PATH", "/deps/py312/bin:/usr/local/bin:/usr/bin:/bin"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        assert_eq!(inside, expected);
    }

    #[test]
    fn the_supervised_isolation_binds_what_the_layout_names() {
        let Isolation::Namespace(namespace) = layout().isolation((200_001, 200_001)) else {
            panic!("not a namespace");
        };
        assert_eq!(
            namespace.root,
            Path::new("/state/apps/homes/shop/releases/7")
        );
        assert_eq!(namespace.app_dir, Path::new("/app"));
        assert_eq!(namespace.ids, Some((200_001, 200_001)));
        let binds = |list: &[BindMount]| -> Vec<(String, String)> {
            list.iter()
                .map(|b| {
                    (
                        b.source.display().to_string(),
                        b.target.display().to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(
            binds(&namespace.writable),
            vec![
                (
                    "/state/apps/homes/shop/shared/uploads".to_owned(),
                    "/data/uploads".to_owned()
                ),
                (
                    "/state/apps/homes/shop/shared/cache".to_owned(),
                    "/data/cache".to_owned()
                ),
            ]
        );
        assert_eq!(
            binds(&namespace.read_only),
            vec![(
                "/state/apps/shared-deps/py312".to_owned(),
                "/deps/py312".to_owned()
            )]
        );
    }

    #[test]
    fn writable_dirs_and_what_they_hold_become_the_apps() {
        let dir = tempfile::tempdir().unwrap();
        let mut layout = layout();
        layout.data_root = dir.path().join("shared");
        layout.writable = vec!["uploads".into(), "fresh".into()];
        let uploads = layout.data_root.join("uploads");
        std::fs::create_dir_all(uploads.join("nested")).unwrap();
        std::fs::write(uploads.join("nested/left-by-a-hook.txt"), "x").unwrap();
        // A link out of the directory: changed itself, its target left alone.
        let target = dir.path().join("elsewhere.txt");
        std::fs::write(&target, "host").unwrap();
        std::os::unix::fs::symlink(&target, uploads.join("link")).unwrap();
        // A link to a directory outside: not descended into.
        let outside_dir = dir.path().join("outside");
        std::fs::create_dir(&outside_dir).unwrap();
        std::fs::write(outside_dir.join("host.txt"), "host").unwrap();
        std::os::unix::fs::symlink(&outside_dir, uploads.join("dirlink")).unwrap();
        let ids = (250_001, 250_002);
        let target_owner = std::fs::metadata(&target).unwrap().uid();

        let given = give_writable_dirs(&layout, ids);

        if nix::unistd::geteuid().is_root() {
            given.unwrap();
            for path in [
                uploads.clone(),
                uploads.join("nested"),
                uploads.join("nested/left-by-a-hook.txt"),
                uploads.join("link"),
                layout.data_root.join("fresh"),
            ] {
                let meta = std::fs::symlink_metadata(&path).unwrap();
                assert_eq!((meta.uid(), meta.gid()), ids, "{}", path.display());
            }
            let mode = std::fs::metadata(layout.data_root.join("fresh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o750);
            assert_eq!(std::fs::metadata(&target).unwrap().uid(), target_owner);
            for outside in [outside_dir.clone(), outside_dir.join("host.txt")] {
                let meta = std::fs::metadata(&outside).unwrap();
                assert_eq!(meta.uid(), target_owner, "{}", outside.display());
            }
        } else {
            let message = given.unwrap_err();
            assert!(message.contains("cannot give"), "{message}");
        }
    }

    #[test]
    fn the_config_file_is_given_to_the_apps_group_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "greeting: hi\n").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o400)).unwrap();
        let given = give_config_file(&config, 250_003);
        if nix::unistd::geteuid().is_root() {
            given.unwrap();
            let meta = std::fs::metadata(&config).unwrap();
            assert_eq!(meta.gid(), 250_003);
            assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        } else {
            assert!(given.unwrap_err().contains("gid 250003"));
        }
        // No configuration file (an app without a spec): nothing to give.
        give_config_file(&dir.path().join("absent.yaml"), 250_003).unwrap();
    }

    #[test]
    fn the_host_check_passes_with_the_capabilities_or_names_what_is_missing() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let missing = missing_capabilities(&status);
        match check_host() {
            Ok(()) => assert!(missing.is_empty()),
            Err(message) => {
                assert!(message.starts_with("isolation: namespace"), "{message}");
                assert!(message.contains("isolation: none"), "{message}");
                for capability in missing {
                    assert!(message.contains(capability), "{message}");
                }
            }
        }
    }

    #[test]
    fn missing_capabilities_are_named() {
        let root = "Name:\tagent\nCapEff:\t000001ffffffffff\n";
        assert!(missing_capabilities(root).is_empty());
        let plain = "Name:\tagent\nCapEff:\t0000000000000000\n";
        assert_eq!(
            missing_capabilities(plain),
            vec!["CAP_CHOWN", "CAP_SETGID", "CAP_SETUID", "CAP_SYS_ADMIN"]
        );
        // Everything but CAP_SYS_ADMIN (bit 21).
        let no_admin = format!("CapEff:\t{:016x}\n", 0x1ff_ffff_ffffu64 & !(1 << 21));
        assert_eq!(missing_capabilities(&no_admin), vec!["CAP_SYS_ADMIN"]);
        assert_eq!(missing_capabilities("").len(), NEEDED_CAPABILITIES.len());
    }
}
