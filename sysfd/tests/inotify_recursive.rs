//! The recursive watcher: new directories are followed without missing files, renamed
//! directories keep reporting under their new path, directories moved out stop reporting.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{TestResult, run_in_child, runtime};
use furrow_sysfd::{
    AsyncRecursiveWatcher, Error, EventKind, EventSource, InotifyEvent, RecursiveWatcher, WatchMask,
};
use futures::StreamExt;

/// Reads until `done` says the events so far are enough, or 10 s pass.
fn read_until(
    watcher: &mut RecursiveWatcher,
    mut done: impl FnMut(&[InotifyEvent]) -> bool,
) -> Vec<InotifyEvent> {
    let mut events = Vec::new();
    while !done(&events) {
        match watcher.wait(Some(Duration::from_secs(10))) {
            Ok(true) => {}
            _ => break,
        }
        match watcher.read_events() {
            Ok(batch) => events.extend(batch),
            Err(err) if err.is_would_block() => {}
            Err(_) => break,
        }
    }
    events
}

fn created(events: &[InotifyEvent]) -> BTreeSet<PathBuf> {
    events
        .iter()
        .filter(|e| e.kind() == EventKind::Create)
        .filter_map(InotifyEvent::path)
        .collect()
}

#[test]
fn files_in_new_directories_are_not_missed() -> TestResult {
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("existing"))?;
    let mut watcher = RecursiveWatcher::new(root.path(), WatchMask::CREATE)?;
    assert_eq!(
        watcher.watched_dirs(),
        vec![root.path().to_path_buf(), root.path().join("existing")]
    );
    // A whole tree appears at once, faster than any watch can be added.
    let deep = root.path().join("a/b/c");
    std::fs::create_dir_all(&deep)?;
    let mut expected = BTreeSet::new();
    expected.insert(root.path().join("a"));
    expected.insert(root.path().join("a/b"));
    expected.insert(deep.clone());
    for i in 0..20 {
        let file = deep.join(format!("f{i}"));
        std::fs::write(&file, b"x")?;
        expected.insert(file);
    }
    std::fs::write(root.path().join("existing/late"), b"x")?;
    expected.insert(root.path().join("existing/late"));
    let events = read_until(&mut watcher, |events| {
        created(events).is_superset(&expected)
    });
    assert!(
        created(&events).is_superset(&expected),
        "missing: {:?}",
        expected.difference(&created(&events))
    );
    assert!(watcher.watched_dirs().contains(&deep));
    // Files created once the watch exists arrive as real events.
    let after = deep.join("after");
    std::fs::write(&after, b"x")?;
    let events = read_until(&mut watcher, |events| created(events).contains(&after));
    let event = events
        .iter()
        .find(|e| e.path().as_ref() == Some(&after))
        .ok_or("no event")?;
    assert!(!event.synthetic);
    Ok(())
}

#[test]
fn renamed_directories_report_under_their_new_path() -> TestResult {
    let root = tempfile::tempdir()?;
    std::fs::create_dir_all(root.path().join("old/inner"))?;
    let mut watcher = RecursiveWatcher::new(root.path(), WatchMask::CREATE | WatchMask::MOVE)?;
    std::fs::rename(root.path().join("old"), root.path().join("new"))?;
    let events = read_until(&mut watcher, |events| {
        events.iter().any(|e| e.rename().is_some())
    });
    let rename = events
        .iter()
        .find_map(InotifyEvent::rename)
        .ok_or("no rename")?;
    assert_eq!(rename, (root.path().join("old"), root.path().join("new")));
    assert!(
        watcher
            .watched_dirs()
            .contains(&root.path().join("new/inner"))
    );
    let file = root.path().join("new/inner/file");
    std::fs::write(&file, b"x")?;
    let events = read_until(&mut watcher, |events| created(events).contains(&file));
    assert!(created(&events).contains(&file));
    Ok(())
}

#[test]
fn directories_moved_out_stop_being_watched() -> TestResult {
    let root = tempfile::tempdir()?;
    let outside = tempfile::tempdir()?;
    std::fs::create_dir_all(root.path().join("leaving/sub"))?;
    let mut watcher = RecursiveWatcher::new(root.path(), WatchMask::CREATE | WatchMask::MOVE)?;
    assert_eq!(watcher.watched_dirs().len(), 3);
    std::fs::rename(root.path().join("leaving"), outside.path().join("left"))?;
    // The watcher drops the watches of the tree that left; only the root stays.
    let gone = common::wait_until(Duration::from_secs(10), || {
        let _ = watcher.wait(Some(Duration::from_millis(10)));
        let _ = watcher.read_events();
        watcher.watched_dirs() == vec![root.path().to_path_buf()]
    });
    assert!(gone, "still watching {:?}", watcher.watched_dirs());
    // Nothing is reported for the moved-away tree.
    std::fs::write(outside.path().join("left/sub/file"), b"x")?;
    let marker = root.path().join("marker");
    std::fs::write(&marker, b"x")?;
    let events = read_until(&mut watcher, |events| created(events).contains(&marker));
    assert_eq!(created(&events), BTreeSet::from([marker]));
    Ok(())
}

#[test]
fn construction_errors() -> TestResult {
    let root = tempfile::tempdir()?;
    let file = root.path().join("file");
    std::fs::write(&file, b"x")?;
    assert_err!(
        RecursiveWatcher::new(root.path().join("missing"), WatchMask::CREATE),
        Error::NotFound { .. }
    );
    assert_err!(
        RecursiveWatcher::new(&file, WatchMask::CREATE),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        RecursiveWatcher::new(root.path(), WatchMask::ONLYDIR),
        Error::InvalidArgument { .. }
    );
    let mut watcher = RecursiveWatcher::new(root.path(), WatchMask::CREATE)?;
    assert_eq!(watcher.root(), root.path());
    watcher.close();
    assert_err!(watcher.read_event(), Error::Closed { .. });
    Ok(())
}

#[test]
fn unwatchable_directory_is_reported_as_a_rescan() {
    run_in_child(|| {
        furrow_sysfd::unshare(furrow_sysfd::Namespaces::USER)?;
        std::fs::write("/proc/self/uid_map", "0 0 1")?;
        let root = tempfile::tempdir()?;
        let mut watcher = RecursiveWatcher::new(root.path(), WatchMask::CREATE)?;
        std::fs::write("/proc/sys/user/max_inotify_watches", "1")?;
        std::fs::create_dir(root.path().join("new"))?;
        let events = read_until(&mut watcher, |events| {
            events.iter().any(|e| e.needs_rescan())
        });
        let rescan = events
            .iter()
            .find(|e| e.needs_rescan())
            .ok_or("no rescan event")?;
        assert_eq!(
            rescan.watch_path.as_deref(),
            Some(root.path().join("new").as_path())
        );
        Ok(())
    });
}

#[test]
fn async_recursive_stream() -> TestResult {
    runtime().block_on(async {
        let root = tempfile::tempdir()?;
        let mut stream = AsyncRecursiveWatcher::open(root.path(), WatchMask::CREATE)?;
        std::fs::create_dir_all(root.path().join("x/y"))?;
        std::fs::write(root.path().join("x/y/z"), b"")?;
        let target = root.path().join("x/y/z");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await?
                .ok_or("stream ended")??;
            if event.path() == Some(target.clone()) {
                break;
            }
        }
        Ok(())
    })
}
