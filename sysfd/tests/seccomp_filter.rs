//! seccomp filters, loaded in forked children (a filter cannot be removed).

mod common;

use std::time::Duration;

use common::{become_nobody, in_child, run_in_child};
use furrow_sysfd::{
    Error, SeccompAction, SeccompFilter, seccomp_set_mode_filter, seccomp_set_mode_strict,
};

#[test]
fn deny_list_fails_the_listed_calls_only() {
    run_in_child(|| {
        let dir = tempfile::tempdir()?;
        let filter = SeccompFilter::deny_list(
            &[libc::SYS_mkdir, libc::SYS_mkdirat],
            SeccompAction::Errno(libc::EPERM),
        )?;
        filter.load()?;
        let err = std::fs::create_dir(dir.path().join("x"))
            .err()
            .ok_or("mkdir allowed")?;
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        std::fs::write(dir.path().join("file"), b"still allowed")?;
        Ok(())
    });
}

#[test]
fn allow_list_denies_everything_else() {
    run_in_child(|| {
        let mut allowed = vec![
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_getpid,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_munmap,
            libc::SYS_mmap,
            libc::SYS_brk,
            libc::SYS_futex,
            libc::SYS_close,
        ];
        allowed.sort();
        SeccompFilter::allow_list(&allowed, SeccompAction::Errno(libc::ENOSYS))?.load()?;
        // SAFETY: plain syscalls.
        let pid = unsafe { libc::getpid() };
        assert!(pid > 0);
        // SAFETY: as above; getppid is not allowed.
        let denied = unsafe { libc::syscall(libc::SYS_getppid) };
        assert_eq!(denied, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS)
        );
        Ok(())
    });
}

#[test]
fn kill_action_ends_the_process() {
    let outcome = in_child(|| {
        SeccompFilter::deny_list(&[libc::SYS_getppid], SeccompAction::KillProcess)?.load()?;
        // SAFETY: the call is filtered; the process dies here.
        unsafe { libc::syscall(libc::SYS_getppid) };
        Ok(())
    });
    let message = outcome.err().unwrap_or_default();
    assert!(message.contains("wait status 0x1f"), "{message}");
}

#[test]
fn strict_mode_allows_only_read_and_write() {
    let outcome = in_child(|| {
        seccomp_set_mode_strict()?;
        // SAFETY: getpid is not among the four allowed calls: SIGKILL.
        unsafe { libc::syscall(libc::SYS_getpid) };
        Ok(())
    });
    let message = outcome.err().unwrap_or_default();
    assert!(message.contains("wait status 0x9"), "{message}");
}

#[test]
fn loading_errors() {
    run_in_child(|| {
        assert_err!(
            seccomp_set_mode_filter(&[], 0),
            Error::InvalidArgument { .. }
        );
        let program = SeccompFilter::new(SeccompAction::Allow).compile()?;
        assert_err!(
            seccomp_set_mode_filter(&program, 0x8000),
            Error::InvalidArgument { .. }
        );
        // A jump out of the program is refused by the kernel's checker.
        let mut broken = program.clone();
        broken[1].jt = 200;
        assert_err!(
            seccomp_set_mode_filter(&broken, 0),
            Error::InvalidArgument { .. }
        );
        become_nobody()?;
        // Without no_new_privs and without CAP_SYS_ADMIN.
        assert_err!(
            seccomp_set_mode_filter(&program, 0),
            Error::PermissionDenied { .. }
        );
        // `load` sets no_new_privs itself.
        SeccompFilter::new(SeccompAction::Allow).load()?;
        Ok(())
    });
}

#[test]
fn all_threads_are_filtered_with_tsync() {
    run_in_child(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let _ = go_rx.recv_timeout(Duration::from_secs(30));
            // SAFETY: plain syscall.
            let ret = unsafe { libc::syscall(libc::SYS_getppid) };
            let _ = tx.send((ret, std::io::Error::last_os_error().raw_os_error()));
        });
        SeccompFilter::deny_list(&[libc::SYS_getppid], SeccompAction::Errno(libc::EACCES))?
            .load_all_threads()?;
        go_tx.send(())?;
        let (ret, errno) = rx.recv_timeout(Duration::from_secs(30))?;
        assert_eq!((ret, errno), (-1, Some(libc::EACCES)));
        worker.join().map_err(|_| "worker panicked")?;
        Ok(())
    });
}
