//! inotify: paths from the wd map, rename pairing, overflow as an explicit event, errors,
//! async stream.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{TestResult, become_nobody, limit_open_files, run_in_child, runtime};
use furrow_sysfd::{
    AsyncInotify, Error, EventFdFlags, EventKind, EventSource, Inotify, InotifyEvent, InotifyFlags,
    WatchDescriptor, WatchMask, eventfd, inotify_add_watch, inotify_init, inotify_read,
    inotify_rm_watch,
};
use futures::StreamExt;

/// Reads events until `count` have arrived or 10 s pass.
fn read_n(inotify: &mut impl EventSource<Event = InotifyEvent>, count: usize) -> Vec<InotifyEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        match inotify.wait(Some(Duration::from_secs(10))) {
            Ok(true) => {}
            _ => break,
        }
        match inotify.read_events() {
            Ok(batch) => events.extend(batch),
            Err(err) if err.is_would_block() => {}
            Err(_) => break,
        }
    }
    events
}

#[test]
fn events_carry_the_watched_path_name_and_dir_flag() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut inotify = Inotify::new()?;
    let wd = inotify.watch(dir.path(), WatchMask::CREATE | WatchMask::DELETE)?;
    assert_eq!(inotify.watch_path(wd), Some(dir.path()));
    std::fs::create_dir(dir.path().join("sub"))?;
    std::fs::write(dir.path().join("file"), b"x")?;
    std::fs::remove_file(dir.path().join("file"))?;
    let events = read_n(&mut inotify, 3);
    let summary: Vec<(EventKind, bool, Option<std::path::PathBuf>)> = events
        .iter()
        .map(|e| (e.kind(), e.is_dir(), e.path()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Create, true, Some(dir.path().join("sub"))),
            (EventKind::Create, false, Some(dir.path().join("file"))),
            (EventKind::Delete, false, Some(dir.path().join("file"))),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.wd == Some(wd) && e.watch_path.as_deref() == Some(dir.path()))
    );
    Ok(())
}

#[test]
fn renames_are_paired_by_cookie() -> TestResult {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir(&a)?;
    std::fs::create_dir(&b)?;
    std::fs::write(a.join("old"), b"x")?;
    std::fs::write(dir.path().join("leaving"), b"x")?;
    let outside = tempfile::tempdir()?;
    let mut inotify = Inotify::new()?;
    inotify.watch(&a, WatchMask::MOVE)?;
    inotify.watch(&b, WatchMask::MOVE)?;
    inotify.watch(dir.path(), WatchMask::MOVE)?;
    std::fs::rename(a.join("old"), b.join("new"))?;
    std::fs::rename(dir.path().join("leaving"), outside.path().join("gone"))?;
    std::fs::write(outside.path().join("arriving"), b"x")?;
    std::fs::rename(outside.path().join("arriving"), a.join("arrived"))?;
    let events = read_n(&mut inotify, 4);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0].kind(), EventKind::MovedFrom);
    assert_eq!(events[1].kind(), EventKind::MovedTo);
    assert_eq!(events[0].cookie, events[1].cookie);
    assert_eq!(events[1].rename(), Some((a.join("old"), b.join("new"))));
    // Moved out of the watched directories: a MOVED_FROM without partner.
    assert_eq!(events[2].kind(), EventKind::MovedFrom);
    assert_eq!(events[2].path(), Some(dir.path().join("leaving")));
    // Moved in from outside: a MOVED_TO without `moved_from`.
    assert_eq!(events[3].kind(), EventKind::MovedTo);
    assert_eq!(events[3].moved_from, None);
    assert_eq!(events[3].path(), Some(a.join("arrived")));
    Ok(())
}

#[test]
fn queue_overflow_is_an_explicit_rescan_event() -> TestResult {
    let dir = tempfile::tempdir()?;
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    std::fs::write(&one, b"x")?;
    std::fs::write(&two, b"x")?;
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")?
        .trim()
        .parse()?;
    let mut inotify = Inotify::new()?;
    inotify.watch(dir.path(), WatchMask::ATTRIB)?;
    // Alternate two files so consecutive events differ and are not merged.
    for i in 0..=limit {
        let target = if i % 2 == 0 { &one } else { &two };
        let mode = if i % 4 < 2 { 0o644 } else { 0o600 };
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
    }
    let mut seen = 0usize;
    let mut overflow = None;
    while overflow.is_none() {
        let batch = match inotify.read_events() {
            Ok(batch) => batch,
            Err(err) if err.is_would_block() => break,
            Err(err) => return Err(err.into()),
        };
        for event in batch {
            if event.needs_rescan() {
                overflow = Some(event);
            } else {
                seen += 1;
            }
        }
    }
    let overflow = overflow.ok_or("no overflow event")?;
    assert_eq!(overflow.kind(), EventKind::Overflow);
    assert_eq!(overflow.wd, None);
    assert_eq!(seen, limit);
    Ok(())
}

#[test]
fn unwatch_delivers_ignored_with_the_path_then_forgets_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut inotify = Inotify::new()?;
    let wd = inotify.watch(dir.path(), WatchMask::CREATE)?;
    assert_eq!(inotify.watches().count(), 1);
    inotify.unwatch(wd)?;
    let events = read_n(&mut inotify, 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind(), EventKind::Ignored);
    assert_eq!(events[0].watch_path.as_deref(), Some(dir.path()));
    assert_eq!(inotify.watch_path(wd), None);
    assert_err!(inotify.unwatch(wd), Error::InvalidArgument { .. });
    Ok(())
}

#[test]
fn errors_of_watch_and_unwatch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("file");
    std::fs::write(&file, b"x")?;
    let mut inotify = Inotify::new()?;
    assert_err!(
        inotify.watch(dir.path(), WatchMask::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        inotify.watch(dir.path(), WatchMask::ONLYDIR),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        inotify.watch(dir.path().join("missing"), WatchMask::CREATE),
        Error::NotFound { .. }
    );
    assert_err!(
        inotify.watch(&file, WatchMask::CREATE | WatchMask::ONLYDIR),
        Error::InvalidArgument {
            errno: libc::ENOTDIR,
            ..
        }
    );
    assert_err!(
        inotify.watch("bad\0path", WatchMask::CREATE),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        inotify.unwatch(WatchDescriptor::from_raw(9999)),
        Error::InvalidArgument { .. }
    );
    // MASK_CREATE on an inode already watched.
    inotify.watch(dir.path(), WatchMask::CREATE)?;
    assert_err!(
        inotify.watch(dir.path(), WatchMask::CREATE | WatchMask::MASK_CREATE),
        Error::Unknown {
            errno: libc::EEXIST,
            ..
        }
    );
    inotify.close();
    assert_err!(
        inotify.watch(dir.path(), WatchMask::CREATE),
        Error::Closed { .. }
    );
    assert_err!(
        inotify.unwatch(WatchDescriptor::from_raw(1)),
        Error::Closed { .. }
    );
    assert_err!(inotify.read_event(), Error::Closed { .. });
    Ok(())
}

#[test]
fn low_level_calls_and_their_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let fd = inotify_init(InotifyFlags::NONBLOCK | InotifyFlags::CLOEXEC)?;
    let wd = inotify_add_watch(&fd, dir.path(), WatchMask::CREATE)?;
    let mut buf = vec![0u8; 4096];
    assert_err!(inotify_read(&fd, &mut buf), Error::WouldBlock { .. });
    std::fs::write(dir.path().join("x"), b"")?;
    // A buffer smaller than one event is refused.
    let mut tiny = [0u8; 8];
    assert_err!(inotify_read(&fd, &mut tiny), Error::InvalidArgument { .. });
    let events = inotify_read(&fd, &mut buf)?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].wd, wd.as_raw());
    assert_eq!(events[0].name.as_deref(), Some(std::ffi::OsStr::new("x")));
    inotify_rm_watch(&fd, wd)?;
    assert_err!(
        inotify_init(InotifyFlags::from_bits_retain(0x1)),
        Error::InvalidArgument { .. }
    );
    // Not an inotify fd.
    let efd = eventfd(0, EventFdFlags::CLOEXEC)?;
    assert_err!(
        inotify_add_watch(efd.as_fd(), dir.path(), WatchMask::CREATE),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        inotify_rm_watch(efd.as_fd(), wd),
        Error::InvalidArgument { .. }
    );
    Ok(())
}

#[test]
fn permission_and_limits() {
    run_in_child(|| {
        let private = tempfile::tempdir()?;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))?;
        let inner = private.path().join("inner");
        std::fs::create_dir(&inner)?;
        become_nobody()?;
        let mut inotify = Inotify::new()?;
        assert_err!(
            inotify.watch(&inner, WatchMask::CREATE),
            Error::PermissionDenied { .. }
        );
        Ok(())
    });
    run_in_child(|| {
        limit_open_files(3)?;
        assert_err!(Inotify::new(), Error::ResourceLimit { .. });
        Ok(())
    });
    run_in_child(|| {
        // Per-user inotify limits of a private user namespace.
        furrow_sysfd::unshare(furrow_sysfd::Namespaces::USER)?;
        std::fs::write("/proc/self/uid_map", "0 0 1")?;
        std::fs::write("/proc/sys/user/max_inotify_watches", "1")?;
        std::fs::write("/proc/sys/user/max_inotify_instances", "1")?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("second"))?;
        let mut inotify = Inotify::new()?;
        inotify.watch(dir.path(), WatchMask::CREATE)?;
        assert_err!(
            inotify.watch(dir.path().join("second"), WatchMask::CREATE),
            Error::ResourceLimit {
                errno: libc::ENOSPC,
                ..
            }
        );
        assert_err!(
            Inotify::new(),
            Error::ResourceLimit {
                errno: libc::EMFILE,
                ..
            }
        );
        Ok(())
    });
}

#[test]
fn async_stream_delivers_events() -> TestResult {
    runtime().block_on(async {
        let dir = tempfile::tempdir()?;
        let mut stream = AsyncInotify::open()?;
        let wd = stream.watch(dir.path(), WatchMask::CLOSE_WRITE)?;
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), b"data")?;
        }
        let mut names = Vec::new();
        while names.len() < 3 {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await?
                .ok_or("stream ended")??;
            assert_eq!(event.kind(), EventKind::CloseWrite);
            names.push(event.name.ok_or("no name")?);
        }
        assert_eq!(names, vec!["a", "b", "c"]);
        stream.unwatch(wd)?;
        let ignored = stream.read_event().await?;
        assert_eq!(ignored.kind(), EventKind::Ignored);
        stream.close();
        assert!(stream.next().await.is_none());
        assert_err!(
            stream.watch(Path::new("/"), WatchMask::CREATE),
            Error::Closed { .. }
        );
        Ok(())
    })
}
