//! fanotify, inside a private mount namespace with its own tmpfs (forked child), so the
//! host's mounts are untouched.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{become_nobody, limit_open_files, open_fd_count, run_in_child, runtime};
use furrow_sysfd::{
    AsyncFanotify, Class, Error, EventFd, EventFdFlags, EventSource, FanInitFlags, FanMarkFlags,
    FanMask, Fanotify, FanotifyConfig, FanotifyEvent, InfoRecord, MarkTarget, MountFlags, Report,
    Response, eventfd, fanotify_init, fanotify_mark, fanotify_read, fanotify_respond, getpid,
    mount, private_mount_namespace,
};
use futures::StreamExt;

/// A private mount namespace with a fresh tmpfs; returns its mount point.
fn private_tmpfs() -> Result<(tempfile::TempDir, PathBuf), Box<dyn std::error::Error>> {
    private_mount_namespace()?;
    let dir = tempfile::tempdir()?;
    mount(
        Some(Path::new("none")),
        dir.path(),
        Some("tmpfs"),
        MountFlags::empty(),
        None,
    )?;
    let root = dir.path().to_path_buf();
    Ok((dir, root))
}

fn read_until(
    group: &mut Fanotify,
    mut done: impl FnMut(&[FanotifyEvent]) -> bool,
) -> Vec<FanotifyEvent> {
    let mut events = Vec::new();
    while !done(&events) {
        match group.wait(Some(Duration::from_secs(10))) {
            Ok(true) => {}
            _ => break,
        }
        match group.read_events() {
            Ok(batch) => events.extend(batch),
            Err(err) if err.is_would_block() => {}
            Err(_) => break,
        }
    }
    events
}

#[test]
fn mount_mark_reports_pid_and_path() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let mut group = Fanotify::new()?;
        group.mark(MarkTarget::Mount, &root, FanMask::CLOSE_WRITE)?;
        let file = root.join("written");
        std::fs::write(&file, b"data")?;
        let events = read_until(&mut group, |e| !e.is_empty());
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert!(event.mask.contains(FanMask::CLOSE_WRITE));
        assert_eq!(event.pid, getpid());
        assert_eq!(event.path.as_deref(), Some(file.as_path()));
        assert!(event.fd().is_some());
        assert!(!event.is_permission());
        assert!(!event.is_overflow());
        Ok(())
    });
}

#[test]
fn event_fds_are_closed_read_or_unread() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let baseline = open_fd_count();
        let mut group = Fanotify::new()?;
        group.mark(MarkTarget::Mount, &root, FanMask::CLOSE_WRITE)?;
        for i in 0..10 {
            std::fs::write(root.join(format!("f{i}")), b"x")?;
        }
        // Read one event; nine stay cached, each holding an fd.
        assert!(group.wait(Some(Duration::from_secs(10)))?);
        let first = group.read_event()?;
        assert!(open_fd_count() >= baseline + 10);
        drop(first);
        // Taking an fd out keeps it beyond the event.
        let mut second = group.read_event()?;
        let kept = second.take_fd().ok_or("no fd")?;
        drop(second);
        drop(kept);
        // Closing drops the unread cached events and their fds.
        group.close();
        assert_eq!(open_fd_count(), baseline);
        assert_err!(group.read_event(), Error::Closed { .. });
        assert_err!(
            group.mark(MarkTarget::Mount, &root, FanMask::OPEN),
            Error::Closed { .. }
        );
        Ok(())
    });
}

#[test]
fn permission_events_allow_deny_and_default_allow() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let file = root.join("guarded");
        std::fs::write(&file, b"secret")?;
        let mut group = Fanotify::with_config(FanotifyConfig {
            class: Class::Content,
            ..FanotifyConfig::default()
        })?;
        group.mark(MarkTarget::Inode, &file, FanMask::OPEN_PERM)?;
        for (answer, expect_ok) in [
            (Some(Response::Deny), false),
            (Some(Response::Allow), true),
            (None, true),
        ] {
            let path = file.clone();
            let opener = std::thread::spawn(move || std::fs::File::open(path).map(|_| ()));
            let events = read_until(&mut group, |e| !e.is_empty());
            let event = events.into_iter().next().ok_or("no permission event")?;
            assert!(event.is_permission());
            assert!(event.mask.contains(FanMask::OPEN_PERM));
            match answer {
                Some(response) => event.respond(response)?,
                None => drop(event),
            }
            let opened = opener.join().map_err(|_| "opener panicked")?;
            assert_eq!(opened.is_ok(), expect_ok, "{answer:?}: {opened:?}");
            if let Err(err) = opened {
                assert_eq!(err.raw_os_error(), Some(libc::EPERM));
            }
        }
        Ok(())
    });
}

#[test]
fn fid_and_dfid_name_records_are_parsed_and_resolved() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let mut group = Fanotify::with_config(FanotifyConfig {
            report: Report::FidAndDirFidName,
            ..FanotifyConfig::default()
        })?;
        group.mark(
            MarkTarget::Filesystem,
            &root,
            FanMask::CREATE | FanMask::MODIFY | FanMask::ONDIR,
        )?;
        let file = root.join("made");
        std::fs::write(&file, b"data")?;
        let events = read_until(&mut group, |e| {
            e.iter().any(|ev| ev.mask.contains(FanMask::MODIFY))
        });
        let create = events
            .iter()
            .find(|e| e.mask.contains(FanMask::CREATE))
            .ok_or("no create event")?;
        assert!(create.fd().is_none());
        // A directory entry event: the directory's handle and the entry name.
        match create.info.as_slice() {
            [InfoRecord::DirFidName(handle, name)] => {
                assert!(!handle.bytes.is_empty());
                assert_eq!(name, "made");
            }
            other => return Err(format!("unexpected records {other:?}").into()),
        }
        assert_eq!(
            create.name().map(|n| n.as_os_str()),
            Some(std::ffi::OsStr::new("made"))
        );
        assert_eq!(create.path.as_deref(), Some(file.as_path()));
        // An event on the file itself: the parent with the name, and the file's own handle.
        let modify = events
            .iter()
            .find(|e| e.mask.contains(FanMask::MODIFY))
            .ok_or("no modify event")?;
        assert!(
            modify
                .info
                .iter()
                .any(|r| matches!(r, InfoRecord::DirFidName(..)))
        );
        assert!(modify.info.iter().any(|r| matches!(r, InfoRecord::Fid(_))));
        assert_eq!(modify.path.as_deref(), Some(file.as_path()));
        Ok(())
    });
}

#[test]
fn fid_only_reports_the_object_handle() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let file = root.join("touched");
        std::fs::write(&file, b"")?;
        let mut group = Fanotify::with_config(FanotifyConfig {
            report: Report::Fid,
            ..FanotifyConfig::default()
        })?;
        group.mark(MarkTarget::Inode, &file, FanMask::MODIFY)?;
        std::fs::write(&file, b"more")?;
        let events = read_until(&mut group, |e| !e.is_empty());
        let event = events.first().ok_or("no event")?;
        match event.info.as_slice() {
            [InfoRecord::Fid(handle)] => assert!(!handle.bytes.is_empty()),
            other => return Err(format!("unexpected records {other:?}").into()),
        }
        assert_eq!(event.path.as_deref(), Some(file.as_path()));
        Ok(())
    });
}

#[test]
fn pidfd_records_are_owned() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let baseline = open_fd_count();
        let mut group = Fanotify::with_config(FanotifyConfig {
            report_pidfd: true,
            ..FanotifyConfig::default()
        })?;
        group.mark(MarkTarget::Mount, &root, FanMask::CLOSE_WRITE)?;
        std::fs::write(root.join("p"), b"")?;
        let events = read_until(&mut group, |e| !e.is_empty());
        let event = events.first().ok_or("no event")?;
        assert!(
            event
                .info
                .iter()
                .any(|r| matches!(r, InfoRecord::Pidfd(Some(_))))
        );
        drop(events);
        drop(group);
        assert_eq!(open_fd_count(), baseline);
        Ok(())
    });
}

#[test]
fn errors_of_the_calls() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        let mut group = Fanotify::new()?;
        assert_err!(
            group.mark(MarkTarget::Inode, root.join("missing"), FanMask::OPEN),
            Error::NotFound { .. }
        );
        // Directory events need a FID reporting mode.
        assert_err!(
            group.mark(MarkTarget::Mount, &root, FanMask::CREATE),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            group.mark(MarkTarget::Inode, &root, FanMask::from_bits_retain(1 << 50)),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            group.unmark(MarkTarget::Inode, &root, FanMask::OPEN),
            Error::NotFound { .. }
        );
        assert_err!(
            group.mark(MarkTarget::Inode, "bad\0", FanMask::OPEN),
            Error::InvalidArgument { .. }
        );
        group.mark(MarkTarget::Inode, &root, FanMask::OPEN)?;
        group.unmark(MarkTarget::Inode, &root, FanMask::OPEN)?;
        group.flush(MarkTarget::Mount)?;
        // Permission events need a content class.
        assert_err!(
            group.mark(MarkTarget::Inode, &root, FanMask::OPEN_PERM),
            Error::InvalidArgument { .. }
        );
        // Permission groups cannot report FIDs.
        assert_err!(
            Fanotify::with_config(FanotifyConfig {
                class: Class::Content,
                report: Report::Fid,
                ..FanotifyConfig::default()
            }),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            fanotify_init(FanInitFlags::from_bits_retain(0x8000_0000), libc::O_RDONLY),
            Error::InvalidArgument { .. }
        );
        // A notification event cannot be answered.
        group.mark(MarkTarget::Mount, &root, FanMask::CLOSE_WRITE)?;
        std::fs::write(root.join("n"), b"")?;
        let event = read_until(&mut group, |e| !e.is_empty())
            .into_iter()
            .next()
            .ok_or("no event")?;
        assert_err!(event.allow(), Error::InvalidArgument { .. });
        // Low level: not a fanotify fd, a bogus response, a tiny buffer.
        let efd = eventfd(0, EventFdFlags::CLOEXEC)?;
        assert_err!(
            fanotify_mark(
                efd.as_fd(),
                FanMarkFlags::ADD,
                FanMask::OPEN,
                None,
                Some(&root)
            ),
            Error::InvalidArgument { .. }
        );
        let raw = fanotify_init(
            FanInitFlags::CLASS_CONTENT | FanInitFlags::NONBLOCK,
            libc::O_RDONLY,
        )?;
        assert_err!(
            fanotify_respond(&raw, 12345, Response::Allow),
            Error::NotFound { .. }
        );
        let mut buf = [0u8; 4096];
        assert_err!(fanotify_read(&raw, &mut buf), Error::WouldBlock { .. });
        fanotify_mark(
            &raw,
            FanMarkFlags::ADD | FanMarkFlags::MOUNT,
            FanMask::CLOSE_WRITE,
            None,
            Some(&root),
        )?;
        std::fs::write(root.join("m"), b"")?;
        let mut tiny = [0u8; 8];
        assert_err!(
            fanotify_read(&raw, &mut tiny),
            Error::InvalidArgument { .. }
        );
        let events = fanotify_read(&raw, &mut buf)?;
        assert_eq!(events.len(), 1);
        // Fd limit.
        drop(events);
        let _keep = EventFd::new(0)?;
        limit_open_files(open_fd_count() as u64 + 2)?;
        let mut held = Vec::new();
        let exhausted = loop {
            match Fanotify::new() {
                Ok(g) => held.push(g),
                Err(err) => break err,
            }
            if held.len() > 10 {
                return Err("fd limit not reached".into());
            }
        };
        assert!(
            matches!(exhausted, Error::ResourceLimit { .. }),
            "{exhausted:?}"
        );
        Ok(())
    });
}

#[test]
fn needs_privilege() {
    run_in_child(|| {
        become_nobody()?;
        assert_err!(Fanotify::new(), Error::PermissionDenied { .. });
        Ok(())
    });
}

#[test]
fn async_stream_of_events() {
    run_in_child(|| {
        let (_dir, root) = private_tmpfs()?;
        runtime().block_on(async {
            let mut stream = AsyncFanotify::new(Fanotify::new()?)?;
            stream.mark(MarkTarget::Mount, &root, FanMask::CLOSE_WRITE)?;
            std::fs::write(root.join("async"), b"")?;
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await?
                .ok_or("stream ended")??;
            assert_eq!(event.path.as_deref(), Some(root.join("async").as_path()));
            stream.unmark(MarkTarget::Mount, &root, FanMask::CLOSE_WRITE)?;
            Ok::<(), Box<dyn std::error::Error>>(())
        })
    });
}
