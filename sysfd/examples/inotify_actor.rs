//! An actix actor that watches a directory tree and logs every change.
//!
//! ```text
//! cargo run -p furrow-sysfd --example inotify_actor -- /some/dir
//! ```
//!
//! The actor opens an [`AsyncRecursiveWatcher`] when it starts and hands it to actix with
//! `ctx.add_stream`; each event then arrives in [`StreamHandler::handle`]. An overflow event
//! means events were lost: a real consumer would rescan the directory.

use std::path::PathBuf;

use actix::prelude::*;
use furrow_sysfd::{AsyncRecursiveWatcher, EventKind, InotifyEvent, WatchMask};

struct DirLogger {
    root: PathBuf,
}

impl Actor for DirLogger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVE
            | WatchMask::CLOSE_WRITE
            | WatchMask::DELETE_SELF;
        match AsyncRecursiveWatcher::open(&self.root, mask) {
            Ok(watcher) => {
                println!("watching {}", self.root.display());
                ctx.add_stream(watcher);
            }
            Err(err) => {
                eprintln!("cannot watch {}: {err}", self.root.display());
                System::current().stop_with_code(1);
            }
        }
    }
}

impl StreamHandler<furrow_sysfd::Result<InotifyEvent>> for DirLogger {
    fn handle(&mut self, item: furrow_sysfd::Result<InotifyEvent>, _ctx: &mut Self::Context) {
        match item {
            Ok(event) if event.kind() == EventKind::Overflow => {
                println!("overflow: events were lost, rescan {}", self.root.display());
            }
            Ok(event) => {
                let path = event.path().unwrap_or_default();
                let what = if event.is_dir() { "dir" } else { "file" };
                match event.rename() {
                    Some((from, to)) => {
                        println!("renamed {what} {} -> {}", from.display(), to.display())
                    }
                    None => println!("{:?} {what} {}", event.kind(), path.display()),
                }
            }
            Err(err) => eprintln!("inotify error: {err}"),
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        println!("watcher closed");
        System::current().stop();
    }
}

fn main() {
    let Some(root) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: inotify_actor DIR");
        std::process::exit(2);
    };
    let system = System::new();
    system.block_on(async move {
        DirLogger { root }.start();
    });
    if let Err(err) = system.run() {
        eprintln!("actix system failed: {err}");
        std::process::exit(1);
    }
}
