//! The drop folder `<data-dir>/apps/inbox/`: a bundle whose write completed there (closed
//! after writing, or renamed into it) becomes a release of the app its manifest names,
//! deployed as by an upload from the user `inbox`. The file then goes; a bundle that is
//! refused moves to `<data-dir>/apps/rejected/` beside a `<file>.why` saying why. Files
//! whose names start with `.` or end in `.part` or `.tmp` are still being written and are
//! left alone. Bundles already there when the master starts are taken then.

use std::path::{Path, PathBuf};

use actix::prelude::*;
use furrow_protocol::UserRole;
use furrow_sysfd::inotify::{AsyncInotify, EventKind, InotifyEvent, WatchMask};
use tracing::{error, info, warn};

use crate::auth::Caller;
use crate::service::Service;
use crate::service::apps::prepare_bundle;

/// The user the inbox deploys as.
pub const INBOX_USER: &str = "inbox";

/// Watches the inbox.
pub struct Inbox {
    data_dir: PathBuf,
    service: Service,
}

/// Whether a file in the inbox is one to take.
fn wanted(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && !name.ends_with(".part") && !name.ends_with(".tmp")
}

impl Inbox {
    /// The inbox of `data_dir`, deploying through `service`.
    pub fn new(data_dir: PathBuf, service: Service) -> Self {
        Self { data_dir, service }
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.join("apps").join("inbox")
    }

    /// Deploys the bundle at `path`, or moves it to `rejected/` with the reason.
    fn take(&self, path: PathBuf, ctx: &mut Context<Self>) {
        if !wanted(&path) || !path.is_file() {
            return;
        }
        let service = self.service.clone();
        let data_dir = self.data_dir.clone();
        let rejected = self.data_dir.join("apps").join("rejected");
        ctx.spawn(
            async move {
                let file = path.clone();
                let outcome = match tokio::fs::read(&file).await {
                    Ok(bytes) => match prepare_bundle(&data_dir, bytes).await {
                        Ok(prepared) => {
                            let caller = Caller::new(INBOX_USER, UserRole::Admin, "inbox");
                            service
                                .add_release(&caller, prepared, "inbox")
                                .await
                                .map(|release| release.release)
                        }
                        Err(e) => Err(e),
                    },
                    // Taken by an earlier event already.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                    Err(e) => Err(furrow_protocol::ApiError::bad_request(format!(
                        "cannot read it: {e}"
                    ))),
                };
                match outcome {
                    Ok(release) => {
                        info!(file = %file.display(), release, "bundle from the inbox deployed");
                        if let Err(e) = tokio::fs::remove_file(&file).await {
                            warn!(file = %file.display(), error = %e, "cannot remove a deployed bundle from the inbox");
                        }
                    }
                    Err(e) => {
                        warn!(file = %file.display(), error = %e.message, "bundle from the inbox refused");
                        reject(&file, &rejected, &e.message).await;
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// Moves `file` into `rejected` with a `.why` file beside it.
async fn reject(file: &Path, rejected: &Path, why: &str) {
    let Some(name) = file.file_name() else {
        return;
    };
    if let Err(e) = tokio::fs::create_dir_all(rejected).await {
        error!(dir = %rejected.display(), error = %e, "cannot make the rejected folder");
        return;
    }
    let target = rejected.join(name);
    let mut why_name = name.to_os_string();
    why_name.push(".why");
    if let Err(e) = tokio::fs::write(rejected.join(why_name), format!("{why}\n")).await {
        error!(file = %file.display(), error = %e, "cannot write why a bundle was refused");
    }
    if let Err(e) = tokio::fs::rename(file, &target).await {
        error!(file = %file.display(), error = %e, "cannot move a refused bundle out of the inbox");
    }
}

impl Actor for Inbox {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let dir = self.dir();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            error!(dir = %dir.display(), error = %e, "cannot make the app inbox");
            return;
        }
        let mask = WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO;
        match AsyncInotify::open().and_then(|inotify| {
            inotify.watch(&dir, mask)?;
            Ok(inotify)
        }) {
            Ok(inotify) => {
                ctx.add_stream(inotify);
            }
            Err(e) => {
                error!(dir = %dir.display(), error = %e, "cannot watch the app inbox");
            }
        }
        self.rescan(ctx);
    }
}

impl actix::Supervised for Inbox {}

impl Inbox {
    fn rescan(&self, ctx: &mut Context<Self>) {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            self.take(file, ctx);
        }
    }
}

impl StreamHandler<furrow_sysfd::Result<InotifyEvent>> for Inbox {
    fn handle(&mut self, item: furrow_sysfd::Result<InotifyEvent>, ctx: &mut Context<Self>) {
        match item {
            Ok(event) if event.needs_rescan() => self.rescan(ctx),
            Ok(event) if matches!(event.kind(), EventKind::CloseWrite | EventKind::MovedTo) => {
                if let Some(path) = event.path() {
                    self.take(path, ctx);
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "app inbox watch failed"),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        warn!("app inbox watch ended; bundles dropped there need a restart");
    }
}
