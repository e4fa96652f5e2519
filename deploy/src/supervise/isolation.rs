//! Running an instance in its own mount namespace, with the release as `/app`, read-only
//! system directories, a fresh `/tmp` and `/dev`, and a per-app uid/gid.
//!
//! Everything is decided in the parent: the list of operations ([`Plan`]) holds every
//! path as a `CString` before the fork, so the child (between `fork` and `exec`, where
//! only async-signal-safe calls are allowed) only makes system calls: no allocation, no
//! lock. That is also why the child calls `mount`/`pivot_root` through `libc` with the
//! prepared strings instead of the `furrow_sysfd` wrappers, which convert paths (and so
//! allocate) on every call; `furrow_sysfd::unshare` is a bare system call and is used.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use furrow_sysfd::{Namespaces, unshare};

/// How an instance is isolated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Isolation {
    /// It runs as the supervisor's user, in its file system.
    #[default]
    None,
    /// Its own mount namespace and ids; see [`NamespaceIsolation`].
    Namespace(NamespaceIsolation),
}

/// A directory bind-mounted into the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindMount {
    /// On the host.
    pub source: PathBuf,
    /// Inside the namespace (absolute).
    pub target: PathBuf,
}

/// A mount namespace whose root is a fresh tmpfs holding:
///
/// - the release directory `root`, read-only, at `app_dir` (default `/app`);
/// - read-only binds of `/usr`, `/bin`, `/sbin`, `/lib*` (symbolic links kept as links)
///   and of a minimal `/etc` (`passwd`, `group`, `hosts`, `resolv.conf`, `nsswitch.conf`,
///   `localtime`, `ld.so.cache`, `ssl`, `ca-certificates`, `mime.types`);
/// - `/dev` with `null`, `zero`, `full`, `random`, `urandom` only; a fresh `/tmp`;
/// - the `read_only` directories (shared dependencies, say), read-only;
/// - the `writable` directories, read-write (`nosuid`, `nodev`);
/// - for [`Listen::Socket`](super::Listen::Socket), the app's socket directory at its
///   host path, so `{socket}` means the same inside and out.
///
/// There is no `/proc` (a new one would list the host's processes without a pid
/// namespace). The root is read-only once built. Then the process drops to `ids` (numeric
/// uid and gid, supplementary groups cleared) if given; Furrow creates no users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceIsolation {
    /// The release directory.
    pub root: PathBuf,
    /// Where the release appears inside.
    pub app_dir: PathBuf,
    /// The uid and gid to run as.
    pub ids: Option<(u32, u32)>,
    /// Directories mounted read-only (besides the release and the system's).
    pub read_only: Vec<BindMount>,
    /// Directories mounted read-write.
    pub writable: Vec<BindMount>,
}

impl NamespaceIsolation {
    /// The release at `/app`, as the caller's user, nothing writable but `/tmp`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NamespaceIsolation {
            root: root.into(),
            app_dir: PathBuf::from("/app"),
            ids: None,
            read_only: Vec::new(),
            writable: Vec::new(),
        }
    }
}

impl Isolation {
    pub(super) fn validate(&self) -> Result<(), String> {
        let Isolation::Namespace(ns) = self else {
            return Ok(());
        };
        let binds = || ns.read_only.iter().chain(&ns.writable);
        let inside = [ns.app_dir.as_path()]
            .into_iter()
            .chain(binds().map(|bind| bind.target.as_path()));
        for path in inside {
            if !path.is_absolute()
                || path.components().any(|c| c == Component::ParentDir)
                || path == Path::new("/")
            {
                return Err(format!(
                    "isolation path {} must be absolute, not '/', without '..'",
                    path.display()
                ));
            }
        }
        for source in [ns.root.as_path()]
            .into_iter()
            .chain(binds().map(|bind| bind.source.as_path()))
        {
            if !source.is_dir() {
                return Err(format!(
                    "isolation source {} is not a directory",
                    source.display()
                ));
            }
        }
        Ok(())
    }
}

/// System directories exposed read-only.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];
/// `/etc` entries exposed read-only (when they exist on the host).
const ETC_ENTRIES: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "localtime",
    "ld.so.cache",
    "ssl",
    "ca-certificates",
    "mime.types",
];
/// Devices exposed.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One step in the child.
#[derive(Debug)]
enum Op {
    Mkdir(CString),
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Tmpfs {
        at: CString,
        options: CString,
    },
    Bind {
        source: CString,
        target: CString,
        read_only: bool,
    },
}

/// Everything the child does, prepared in the parent.
#[derive(Debug)]
pub(super) struct Plan {
    new_root: CString,
    ops: Vec<Op>,
    old_root_inside: CString,
    old_root: CString,
    root: CString,
    cwd: CString,
    ids: Option<(u32, u32)>,
    fs_type_tmpfs: CString,
}

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// `inside` (absolute) as a path under `new_root`.
fn under(new_root: &Path, inside: &Path) -> PathBuf {
    new_root.join(inside.strip_prefix("/").unwrap_or(inside))
}

impl Plan {
    /// Prepares the plan. `staging` is an empty directory on the host that the child
    /// mounts its tmpfs root on (mounts in the child's namespace never reach the host);
    /// `extra_writable` are host paths mounted at the same path (the socket directory).
    pub fn new(
        spec: &NamespaceIsolation,
        staging: &Path,
        cwd: Option<&Path>,
        extra_writable: &[PathBuf],
    ) -> std::io::Result<Plan> {
        let mut ops = Vec::new();
        let mut made: Vec<PathBuf> = Vec::new();
        let mut mkdirs = |ops: &mut Vec<Op>, inside: &Path| -> std::io::Result<()> {
            let mut current = PathBuf::from("/");
            for component in inside.components().skip(1) {
                current.push(component);
                if !made.contains(&current) {
                    made.push(current.clone());
                    ops.push(Op::Mkdir(cstring(&under(staging, &current))?));
                }
            }
            Ok(())
        };
        let bind = |ops: &mut Vec<Op>,
                    source: &Path,
                    inside: &Path,
                    read_only: bool|
         -> std::io::Result<()> {
            ops.push(Op::Bind {
                source: cstring(source)?,
                target: cstring(&under(staging, inside))?,
                read_only,
            });
            Ok(())
        };
        for dir in SYSTEM_DIRS.iter().map(Path::new) {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => ops.push(Op::Symlink {
                    target: cstring(&std::fs::read_link(dir)?)?,
                    link: cstring(&under(staging, dir))?,
                }),
                Ok(meta) if meta.is_dir() => {
                    mkdirs(&mut ops, dir)?;
                    bind(&mut ops, dir, dir, true)?;
                }
                _ => {}
            }
        }
        mkdirs(&mut ops, Path::new("/etc"))?;
        for entry in ETC_ENTRIES {
            let host = Path::new("/etc").join(entry);
            match std::fs::metadata(&host) {
                Ok(meta) if meta.is_dir() => {
                    mkdirs(&mut ops, &host)?;
                    bind(&mut ops, &host, &host, true)?;
                }
                Ok(_) => {
                    ops.push(Op::Touch(cstring(&under(staging, &host))?));
                    bind(&mut ops, &host, &host, true)?;
                }
                Err(_) => {}
            }
        }
        mkdirs(&mut ops, Path::new("/dev"))?;
        ops.push(Op::Tmpfs {
            at: cstring(&under(staging, Path::new("/dev")))?,
            options: CString::new("mode=0755,size=64k").map_err(std::io::Error::other)?,
        });
        for device in DEVICES {
            let host = Path::new("/dev").join(device);
            if host.exists() {
                ops.push(Op::Touch(cstring(&under(staging, &host))?));
                bind(&mut ops, &host, &host, false)?;
            }
        }
        mkdirs(&mut ops, Path::new("/tmp"))?;
        ops.push(Op::Tmpfs {
            at: cstring(&under(staging, Path::new("/tmp")))?,
            options: CString::new("mode=1777,size=256m").map_err(std::io::Error::other)?,
        });
        mkdirs(&mut ops, &spec.app_dir)?;
        bind(&mut ops, &spec.root, &spec.app_dir, true)?;
        for read_only in &spec.read_only {
            mkdirs(&mut ops, &read_only.target)?;
            bind(&mut ops, &read_only.source, &read_only.target, true)?;
        }
        for writable in &spec.writable {
            mkdirs(&mut ops, &writable.target)?;
            bind(&mut ops, &writable.source, &writable.target, false)?;
        }
        for host in extra_writable {
            mkdirs(&mut ops, host)?;
            bind(&mut ops, host, host, false)?;
        }
        let old_root_name = Path::new("/.old-root");
        ops.push(Op::Mkdir(cstring(&under(staging, old_root_name))?));
        Ok(Plan {
            new_root: cstring(staging)?,
            ops,
            old_root_inside: cstring(&under(staging, old_root_name))?,
            old_root: cstring(old_root_name)?,
            root: CString::new("/").map_err(std::io::Error::other)?,
            cwd: cstring(cwd.unwrap_or(&spec.app_dir))?,
            ids: spec.ids,
            fs_type_tmpfs: CString::new("tmpfs").map_err(std::io::Error::other)?,
        })
    }

    /// Runs in the child between `fork` and `exec`: system calls only.
    pub fn enter(&self) -> std::io::Result<()> {
        unshare(Namespaces::MOUNT).map_err(|_| fail(b"unshare(CLONE_NEWNS)"))?;
        let none = std::ptr::null();
        // SAFETY (all blocks below): every pointer is a NUL-terminated string owned by
        // `self`, which outlives the calls, or null where the call allows it.
        check(
            unsafe {
                libc::mount(
                    none,
                    self.root.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            },
            b"make / private",
        )?;
        let root_options = c"mode=0755,size=1m";
        check(
            unsafe {
                libc::mount(
                    self.fs_type_tmpfs.as_ptr(),
                    self.new_root.as_ptr(),
                    self.fs_type_tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    root_options.as_ptr().cast(),
                )
            },
            b"mount the root tmpfs",
        )?;
        for op in &self.ops {
            match op {
                Op::Mkdir(path) => {
                    let ret = unsafe { libc::mkdir(path.as_ptr(), 0o755) };
                    if ret != 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                    {
                        return Err(fail(b"mkdir"));
                    }
                }
                Op::Touch(path) => {
                    let fd = unsafe {
                        libc::open(
                            path.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o644,
                        )
                    };
                    if fd < 0 {
                        return Err(fail(b"create a mount point file"));
                    }
                    unsafe { libc::close(fd) };
                }
                Op::Symlink { target, link } => {
                    check(
                        unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) },
                        b"symlink",
                    )?;
                }
                Op::Tmpfs { at, options } => {
                    check(
                        unsafe {
                            libc::mount(
                                self.fs_type_tmpfs.as_ptr(),
                                at.as_ptr(),
                                self.fs_type_tmpfs.as_ptr(),
                                libc::MS_NOSUID | libc::MS_NODEV,
                                options.as_ptr().cast(),
                            )
                        },
                        b"mount a tmpfs",
                    )?;
                }
                Op::Bind {
                    source,
                    target,
                    read_only,
                } => {
                    check(
                        unsafe {
                            libc::mount(
                                source.as_ptr(),
                                target.as_ptr(),
                                none,
                                libc::MS_BIND | libc::MS_REC,
                                std::ptr::null(),
                            )
                        },
                        b"bind mount",
                    )?;
                    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
                    if *read_only {
                        flags |= libc::MS_RDONLY;
                    }
                    check(
                        unsafe {
                            libc::mount(none, target.as_ptr(), none, flags, std::ptr::null())
                        },
                        b"remount a bind mount",
                    )?;
                }
            }
        }
        check(
            unsafe {
                libc::syscall(
                    libc::SYS_pivot_root,
                    self.new_root.as_ptr(),
                    self.old_root_inside.as_ptr(),
                ) as libc::c_int
            },
            b"pivot_root",
        )?;
        check(unsafe { libc::chdir(self.root.as_ptr()) }, b"chdir /")?;
        check(
            unsafe { libc::umount2(self.old_root.as_ptr(), libc::MNT_DETACH) },
            b"detach the old root",
        )?;
        check(
            unsafe { libc::rmdir(self.old_root.as_ptr()) },
            b"remove the old root mount point",
        )?;
        check(
            unsafe {
                libc::mount(
                    none,
                    self.root.as_ptr(),
                    none,
                    libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                    std::ptr::null(),
                )
            },
            b"make the root read-only",
        )?;
        check(
            unsafe { libc::chdir(self.cwd.as_ptr()) },
            b"chdir to the working directory",
        )?;
        if let Some((uid, gid)) = self.ids {
            check(
                unsafe { libc::setgroups(0, std::ptr::null()) },
                b"setgroups",
            )?;
            check(unsafe { libc::setgid(gid) }, b"setgid")?;
            check(unsafe { libc::setuid(uid) }, b"setuid")?;
        }
        Ok(())
    }
}

fn check(ret: libc::c_int, step: &[u8]) -> std::io::Result<()> {
    if ret == 0 { Ok(()) } else { Err(fail(step)) }
}

/// Writes which step failed to the child's stderr (captured as a log line) and returns
/// the errno as the spawn error. `write` is async-signal-safe; the error is not allocated.
fn fail(step: &[u8]) -> std::io::Error {
    let error = std::io::Error::last_os_error();
    let prefix = b"furrow isolation: failed to ";
    // SAFETY: writing byte slices that live across the calls to fd 2.
    unsafe {
        libc::write(2, prefix.as_ptr().cast(), prefix.len());
        libc::write(2, step.as_ptr().cast(), step.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
    }
    error
}
