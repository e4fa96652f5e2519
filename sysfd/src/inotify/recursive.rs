//! A watcher over a whole directory tree that follows new, renamed and removed directories.

use std::collections::{HashSet, VecDeque};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use super::{EventKind, EventMask, Inotify, InotifyEvent, WatchDescriptor, WatchMask};
use crate::error::{Error, Result};
use crate::source::{AsyncSource, EventSource};

/// Watches a directory and every directory below it.
///
/// When a directory appears (created or moved in), the watcher adds a watch on it and then
/// scans it: entries that were created before the watch existed are reported as synthetic
/// `CREATE` events ([`InotifyEvent::synthetic`]), so no file is missed. An entry created
/// between the watch and the scan may be reported twice (a real and a synthetic event).
/// Directories renamed inside the tree keep their watches with updated paths; directories
/// moved out of the tree lose theirs.
///
/// A directory that cannot be watched (e.g. the watch limit is reached) is reported as an
/// overflow event ([`InotifyEvent::needs_rescan`]) whose `watch_path` names that directory.
/// On a queue overflow the watcher itself re-walks the tree to watch directories it missed;
/// the consumer should rescan its own state.
#[derive(Debug)]
pub struct RecursiveWatcher {
    inotify: Inotify,
    root: PathBuf,
    root_wd: WatchDescriptor,
    user_mask: WatchMask,
    watch_mask: WatchMask,
    renamed: HashSet<WatchDescriptor>,
    cache: VecDeque<InotifyEvent>,
}

/// The events the watcher needs for its own bookkeeping, whatever the caller asked for.
const BOOKKEEPING: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::DELETE_SELF);

impl RecursiveWatcher {
    /// Watches `root` and every directory below it for the events in `mask` (event bits;
    /// option bits are ignored). A missing root → [`Error::NotFound`]; a root that is not a
    /// directory → [`Error::InvalidArgument`]; a mask without event bits →
    /// [`Error::InvalidArgument`].
    pub fn new(root: impl AsRef<Path>, mask: WatchMask) -> Result<Self> {
        let user_mask = mask & WatchMask::ALL_EVENTS;
        if user_mask.is_empty() {
            return Err(Error::invalid("RecursiveWatcher::new (empty mask)"));
        }
        let root = root.as_ref().to_path_buf();
        let watch_mask = user_mask | BOOKKEEPING | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW;
        let mut inotify = Inotify::new()?;
        let root_wd = inotify.watch(&root, watch_mask)?;
        let mut watcher = RecursiveWatcher {
            inotify,
            root,
            root_wd,
            user_mask,
            watch_mask,
            renamed: HashSet::new(),
            cache: VecDeque::new(),
        };
        let root_path = watcher.root.clone();
        let mut scratch = VecDeque::new();
        watcher.add_tree(&root_path, false, true, &mut scratch)?;
        Ok(watcher)
    }

    /// The watched root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories currently watched.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .inotify
            .watches()
            .map(|(_, path)| path.to_path_buf())
            .collect();
        dirs.sort();
        dirs
    }

    /// Watches `dir` and its subdirectories. With `synthesize`, every entry found gets a
    /// synthetic `CREATE` event. Per-directory failures other than "gone" become overflow
    /// events; with `fail_fast` they are returned instead (used at construction).
    fn add_tree(
        &mut self,
        dir: &Path,
        synthesize: bool,
        fail_fast: bool,
        out: &mut VecDeque<InotifyEvent>,
    ) -> Result<()> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(current) = stack.pop() {
            let wd = match self.inotify.watch(&current, self.watch_mask) {
                Ok(wd) => wd,
                // Removed or replaced by a file since we saw it: nothing to watch.
                Err(Error::NotFound { .. }) => continue,
                Err(Error::InvalidArgument { errno, .. }) if errno == libc::ENOTDIR => continue,
                Err(err) if fail_fast => return Err(err),
                Err(_) => {
                    out.push_back(unwatchable(&current));
                    continue;
                }
            };
            let Ok(entries) = std::fs::read_dir(&current) else {
                continue;
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if synthesize && self.user_mask.contains(WatchMask::CREATE) {
                    let mut mask = EventMask::CREATE;
                    if is_dir {
                        mask |= EventMask::ISDIR;
                    }
                    out.push_back(InotifyEvent {
                        wd: Some(wd),
                        mask,
                        cookie: 0,
                        name: Some(entry.file_name()),
                        watch_path: Some(current.clone()),
                        moved_from: None,
                        synthetic: true,
                    });
                }
                if is_dir {
                    stack.push(entry.path());
                }
            }
        }
        Ok(())
    }

    fn wanted(&self, event: &InotifyEvent) -> bool {
        let events = WatchMask::from_bits_retain(event.mask.bits()) & WatchMask::ALL_EVENTS;
        event.needs_rescan() || self.user_mask.intersects(events)
    }

    fn unwatch_subtree(&mut self, top: &Path) {
        let doomed: Vec<WatchDescriptor> = self
            .inotify
            .watches()
            .filter(|(_, path)| path.starts_with(top))
            .map(|(wd, _)| wd)
            .collect();
        for wd in doomed {
            // Already gone is fine: the kernel removed it with its directory.
            let _ = self.inotify.unwatch(wd);
        }
    }

    fn process(&mut self, event: InotifyEvent, out: &mut VecDeque<InotifyEvent>) {
        match event.kind() {
            EventKind::Overflow => {
                out.push_back(event);
                let root = self.root.clone();
                let _ = self.add_tree(&root, false, false, out);
                return;
            }
            EventKind::Ignored => {
                if event.wd == Some(self.root_wd) {
                    out.push_back(event);
                }
                return;
            }
            EventKind::MoveSelf => {
                if let Some(wd) = event.wd
                    && wd != self.root_wd
                    && !self.renamed.remove(&wd)
                    && let Some(path) = event.watch_path.clone()
                {
                    self.unwatch_subtree(&path);
                }
            }
            _ => {}
        }
        let new_dir = event.is_dir()
            && matches!(event.kind(), EventKind::Create | EventKind::MovedTo)
            && !event.synthetic;
        let renamed_within = event.rename().filter(|_| event.is_dir());
        let wanted = self.wanted(&event);
        let path = event.path();
        if wanted {
            out.push_back(event);
        }
        if let Some((from, to)) = renamed_within {
            self.inotify.rename_watched(&from, &to);
            let moved: Vec<WatchDescriptor> = self
                .inotify
                .watches()
                .filter(|(_, p)| *p == to)
                .map(|(wd, _)| wd)
                .collect();
            self.renamed.extend(moved);
        } else if new_dir && let Some(path) = path {
            let _ = self.add_tree(&path, true, false, out);
        }
    }
}

fn unwatchable(dir: &Path) -> InotifyEvent {
    InotifyEvent {
        wd: None,
        mask: EventMask::Q_OVERFLOW | EventMask::ISDIR,
        cookie: 0,
        name: None,
        watch_path: Some(dir.to_path_buf()),
        moved_from: None,
        synthetic: true,
    }
}

impl EventSource for RecursiveWatcher {
    type Event = InotifyEvent;

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.inotify.fd()
    }

    fn fill(&mut self) -> Result<usize> {
        self.inotify.fill()?;
        let raw: Vec<InotifyEvent> = self.inotify.cache().drain(..).collect();
        let mut out = VecDeque::new();
        for event in raw {
            self.process(event, &mut out);
        }
        let count = out.len();
        self.cache.extend(out);
        Ok(count)
    }

    fn cache(&mut self) -> &mut VecDeque<InotifyEvent> {
        &mut self.cache
    }

    fn close(&mut self) {
        self.cache.clear();
        self.renamed.clear();
        self.inotify.close();
    }
}

/// A [`RecursiveWatcher`] as an async queue / `Stream` of [`InotifyEvent`]s.
pub type AsyncRecursiveWatcher = AsyncSource<RecursiveWatcher>;

impl AsyncSource<RecursiveWatcher> {
    /// Watches the tree under `root`; see [`RecursiveWatcher::new`].
    pub fn open(root: impl AsRef<Path>, mask: WatchMask) -> Result<Self> {
        AsyncSource::new(RecursiveWatcher::new(root, mask)?)
    }
}
