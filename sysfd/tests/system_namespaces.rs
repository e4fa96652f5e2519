//! Host name, raw pids, unshare, mount, umount and pivot_root. Anything that changes
//! namespaces or mounts runs in a forked child inside private namespaces.

mod common;

use std::path::Path;

use common::{TestResult, become_nobody, run_in_child};
use furrow_sysfd::{
    Error, HOST_NAME_MAX, MountFlags, Namespaces, UmountFlags, gethostname, getpid, getppid,
    gettid, mount, pivot_root, private_mount_namespace, sethostname, umount, unshare,
};

#[test]
fn raw_pids_match_the_process() {
    assert_eq!(getpid(), std::process::id() as i32);
    // SAFETY: plain getters.
    assert_eq!(getppid(), unsafe { libc::getppid() });
    assert!(gettid() > 0);
    let parent = getpid();
    run_in_child(move || {
        // A forked child sees its own pid and its parent, not cached values.
        assert_ne!(getpid(), parent);
        assert_eq!(getppid(), parent);
        Ok(())
    });
}

#[test]
fn hostname_in_a_private_uts_namespace() {
    let host_name = gethostname().unwrap_or_default();
    run_in_child(|| {
        unshare(Namespaces::UTS)?;
        sethostname("furrow-test-node")?;
        assert_eq!(gethostname()?, "furrow-test-node");
        let longest = "n".repeat(HOST_NAME_MAX);
        sethostname(&longest)?;
        assert_eq!(gethostname()?, longest);
        assert_err!(
            sethostname(&"n".repeat(HOST_NAME_MAX + 1)),
            Error::InvalidArgument { .. }
        );
        assert_err!(sethostname(""), Error::InvalidArgument { .. });
        assert_err!(sethostname("bad\0name"), Error::InvalidArgument { .. });
        Ok(())
    });
    assert_eq!(gethostname().unwrap_or_default(), host_name);
}

#[test]
fn unprivileged_calls_are_denied() {
    run_in_child(|| {
        become_nobody()?;
        assert_err!(sethostname("nope"), Error::PermissionDenied { .. });
        assert_err!(unshare(Namespaces::UTS), Error::PermissionDenied { .. });
        assert_err!(
            mount(
                Some(Path::new("none")),
                Path::new("/tmp"),
                Some("tmpfs"),
                MountFlags::empty(),
                None
            ),
            Error::PermissionDenied { .. }
        );
        assert_err!(
            umount(Path::new("/proc"), UmountFlags::empty()),
            Error::PermissionDenied { .. }
        );
        assert_err!(
            pivot_root(Path::new("/tmp"), Path::new("/tmp")),
            Error::PermissionDenied { .. }
        );
        Ok(())
    });
}

#[test]
fn unshare_rejects_bad_flags() {
    assert_err!(
        unshare(Namespaces::from_bits_retain(0x1)),
        Error::InvalidArgument { .. }
    );
    // A user namespace needs a single-threaded process; the test harness has threads.
    std::thread::scope(|scope| {
        scope.spawn(|| std::thread::park_timeout(std::time::Duration::from_millis(100)));
        assert_err!(unshare(Namespaces::USER), Error::InvalidArgument { .. });
    });
}

#[test]
fn namespace_count_limit_is_a_resource_limit() {
    run_in_child(|| {
        // Limits of a private user namespace, so the host's stay untouched.
        unshare(Namespaces::USER)?;
        std::fs::write("/proc/self/uid_map", "0 0 1")?;
        std::fs::write("/proc/sys/user/max_uts_namespaces", "0")?;
        assert_err!(
            unshare(Namespaces::UTS),
            Error::ResourceLimit {
                errno: libc::ENOSPC,
                ..
            }
        );
        Ok(())
    });
}

#[test]
fn mount_and_umount_in_a_private_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().to_path_buf();
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    run_in_child(move || {
        private_mount_namespace()?;
        mount(
            Some(Path::new("none")),
            &target,
            Some("tmpfs"),
            MountFlags::NOSUID,
            Some("size=1m"),
        )?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        assert!(mounts.contains(target.to_str().ok_or("path")?));
        std::fs::write(target.join("inside"), b"x")?;
        // Busy while a file is open; a lazy unmount detaches it anyway.
        let open = std::fs::File::open(target.join("inside"))?;
        assert_err!(
            umount(&target, UmountFlags::empty()),
            Error::Unknown {
                errno: libc::EBUSY,
                ..
            }
        );
        umount(&target, UmountFlags::DETACH)?;
        drop(open);
        assert!(!target.join("inside").exists());
        // Not a mount point any more.
        assert_err!(
            umount(&target, UmountFlags::empty()),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            umount(&target.join("missing"), UmountFlags::empty()),
            Error::NotFound { .. }
        );
        assert_err!(
            umount(&target, UmountFlags::from_bits_retain(0x100)),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            mount(
                Some(Path::new("none")),
                &target.join("missing"),
                Some("tmpfs"),
                MountFlags::empty(),
                None
            ),
            Error::NotFound { .. }
        );
        assert_err!(
            mount(
                Some(Path::new("none")),
                &target,
                Some("no-such-fs"),
                MountFlags::empty(),
                None
            ),
            Error::NotFound {
                errno: libc::ENODEV,
                ..
            }
        );
        assert_err!(
            mount(
                Some(Path::new("none")),
                &target,
                Some("tmpfs"),
                MountFlags::empty(),
                Some("size=bogus")
            ),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            mount(
                None,
                &target,
                None,
                MountFlags::from_bits_retain(0x8000_0000_0000),
                None
            ),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            mount(
                Some(Path::new("a\0b")),
                &target,
                None,
                MountFlags::BIND,
                None
            ),
            Error::InvalidArgument { .. }
        );
        Ok(())
    });
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert_eq!(after.lines().count(), host_mounts.lines().count());
}

#[test]
fn pivot_root_into_a_tmpfs() {
    run_in_child(|| {
        private_mount_namespace()?;
        let new_root = tempfile::tempdir()?;
        let root = new_root.path().to_path_buf();
        // Errors first: not a mount point, put_old outside the new root, missing paths.
        assert_err!(pivot_root(&root, &root), Error::InvalidArgument { .. });
        assert_err!(
            pivot_root(&root.join("missing"), &root),
            Error::NotFound { .. }
        );
        mount(
            Some(Path::new("none")),
            &root,
            Some("tmpfs"),
            MountFlags::empty(),
            None,
        )?;
        std::fs::create_dir(root.join("old"))?;
        std::fs::write(root.join("marker"), b"new root")?;
        assert_err!(
            pivot_root(&root, Path::new("/tmp")),
            Error::InvalidArgument { .. }
        );
        pivot_root(&root, &root.join("old"))?;
        std::env::set_current_dir("/")?;
        assert_eq!(std::fs::read("/marker")?, b"new root");
        assert!(Path::new("/old/proc").exists());
        umount(Path::new("/old"), UmountFlags::DETACH)?;
        assert!(!Path::new("/old/proc").exists());
        Ok(())
    });
}

#[test]
fn gethostname_returns_the_kernel_name() -> TestResult {
    let expected = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    assert_eq!(gethostname()?, expected.trim());
    Ok(())
}
