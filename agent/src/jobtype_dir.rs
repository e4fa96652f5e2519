//! The agent's own job-type directory: every `*.toml` file in it is a declarative job
//! type ([`furrow_jobtypes::declarative`]), watched through an inotify fd (furrow-sysfd).
//!
//! A saved, created, renamed or deleted file reloads the directory about 100 ms later (one
//! reload for an editor's burst of events). Each file loads whole or not at all: a file
//! that does not parse, or repeats a name and version another file has, is reported in
//! the agent's log with the field at fault and left out, and the others stay live. The
//! definitions are then published to the master (`AgentMessage::JobTypes`), which adds the
//! versions it does not have to its catalogue, so jobs can be submitted against them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use furrow_jobtypes::{Definition, declarative};
use furrow_sysfd::{AsyncInotify, EventKind, InotifyEvent, WatchMask};
use tracing::{error, info, warn};

use crate::jobtypes::JobTypes;
use crate::link::{MasterLink, PublishJobTypes};

/// Quiet time after an event before the directory is read again.
const SETTLE: Duration = Duration::from_millis(100);

/// What one read of the directory found.
#[derive(Default)]
pub(crate) struct Loaded {
    /// The definitions that loaded.
    pub defs: Vec<Definition>,
    /// Files refused, with why.
    pub refused: Vec<(PathBuf, String)>,
}

/// Reads every `*.toml` file of `dir`, in name order.
pub(crate) fn load(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
            .collect(),
        Err(e) => {
            loaded
                .refused
                .push((dir.to_path_buf(), format!("cannot read the directory: {e}")));
            return loaded;
        }
    };
    paths.sort();
    let mut seen = HashSet::new();
    for path in paths {
        let text = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    loaded.refused.push((path, "not UTF-8 text".into()));
                    continue;
                }
            },
            Err(e) => {
                loaded.refused.push((path, format!("cannot read: {e}")));
                continue;
            }
        };
        match declarative::parse(&text) {
            Ok(def) if !seen.insert((def.name.clone(), def.version)) => loaded.refused.push((
                path,
                format!(
                    "{} version {} is defined by another file too",
                    def.name, def.version
                ),
            )),
            Ok(def) => loaded.defs.push(def),
            Err(e) => loaded.refused.push((path, e.0)),
        }
    }
    loaded
}

/// Watches the directory and keeps the registry and the master up to date.
pub(crate) struct JobTypeDir {
    dir: PathBuf,
    jobtypes: Arc<JobTypes>,
    link: Addr<MasterLink>,
    pending: Option<SpawnHandle>,
    /// The texts last published.
    published: Vec<String>,
}

impl JobTypeDir {
    /// A watcher of `dir`. The directory is read once when the actor starts.
    pub fn new(dir: PathBuf, jobtypes: Arc<JobTypes>, link: Addr<MasterLink>) -> Self {
        Self {
            dir,
            jobtypes,
            link,
            pending: None,
            published: Vec::new(),
        }
    }

    fn reload(&mut self) {
        let loaded = load(&self.dir);
        for (path, why) in &loaded.refused {
            error!(file = %path.display(), error = %why, "job-type file refused");
        }
        let sources: Vec<String> = loaded
            .defs
            .iter()
            .filter_map(|d| d.source.clone())
            .collect();
        let names: Vec<String> = loaded
            .defs
            .iter()
            .map(|d| format!("{} v{}", d.name, d.version))
            .collect();
        self.jobtypes.set_local(loaded.defs);
        if sources != self.published {
            info!(dir = %self.dir.display(), jobtypes = ?names, refused = loaded.refused.len(), "job types loaded");
            self.published = sources.clone();
            self.link.do_send(PublishJobTypes(sources));
        }
    }
}

impl Actor for JobTypeDir {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        match AsyncInotify::open().and_then(|inotify| {
            inotify.watch(&self.dir, mask)?;
            Ok(inotify)
        }) {
            Ok(inotify) => {
                ctx.add_stream(inotify);
            }
            Err(e) => {
                error!(dir = %self.dir.display(), error = %e, "cannot watch the job-type directory; changes need a restart")
            }
        }
        self.reload();
    }
}

impl StreamHandler<furrow_sysfd::Result<InotifyEvent>> for JobTypeDir {
    fn handle(&mut self, item: furrow_sysfd::Result<InotifyEvent>, ctx: &mut Context<Self>) {
        match item {
            Ok(event) => {
                let relevant = event.kind() == EventKind::Overflow
                    || event.needs_rescan()
                    || event
                        .path()
                        .is_some_and(|p| p.extension().is_some_and(|ext| ext == "toml"))
                    || event.rename().is_some();
                if !relevant {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "job-type directory watch failed");
                return;
            }
        }
        if let Some(handle) = self.pending.take() {
            ctx.cancel_future(handle);
        }
        self.pending = Some(ctx.run_later(SETTLE, |act, _| {
            act.pending = None;
            act.reload();
        }));
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        warn!(dir = %self.dir.display(), "job-type directory watch ended; changes need a restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_files_load_and_broken_or_repeated_ones_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("a.toml", "name = \"a\"\nversion = 1\ncommand = [\"true\"]");
        write(
            "b.toml",
            "name = \"b\"\nversion = 1\ncommand = [\"true\", \"{nope}\"]",
        );
        write("c.toml", "name = \"a\"\nversion = 1\ncommand = [\"false\"]");
        write("notes.txt", "not a definition");
        let loaded = load(dir.path());
        assert_eq!(loaded.defs.len(), 1);
        assert_eq!(loaded.defs[0].name, "a");
        let refused: Vec<String> = loaded
            .refused
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.file_name().unwrap().to_string_lossy()))
            .collect();
        assert_eq!(refused.len(), 2);
        assert!(
            refused[0].starts_with("b.toml: command[1]: unknown placeholder {nope}"),
            "{refused:?}"
        );
        assert!(refused[1].starts_with("c.toml: a version 1 is defined by another file too"));
    }
}
