//! One app on this agent: a task that brings the app to what the master asked last
//! (a release, or removal), one operation at a time, and reports each step.
//!
//! What is asked is a `watch` value, so a burst of deployments collapses to the newest,
//! and asking the same thing again (the master repeats every deployment after a
//! reconnect) changes nothing. A release that failed is not tried again for the same
//! bundle and configuration until the agent restarts; its failure is reported again.
//!
//! The switch is gated on health: the new release's processes start beside the old
//! ones, and only once every instance is healthy is the new upstream mounted, `current`
//! switched (with the `pre_update`/`post_update` hooks) and the old processes stopped. If
//! a step fails, the new processes are stopped and the old release keeps serving,
//! mounted as before: `Reverted`, or `Failed` when nothing served.

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use furrow_deploy::webserver::Mount;
use furrow_deploy::{AppHome, InstalledRelease, KEEP_RELEASES};
use furrow_protocol::AgentMessage;
use furrow_protocol::apps::{AppDeployment, AppReport, AppState};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::install::{AppsDir, install_release};
use super::isolation::ReleaseIsolation;
use super::processes::{ProcessEnv, RunningRelease, any_change};
use super::webhost::WebHost;
use super::{Deployer, WantBundle};
use crate::link::AppOutbound;

/// How long instance state changes are gathered before one report tells of them.
const COALESCE: Duration = Duration::from_millis(200);

/// What the master asked of an app.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Desired {
    /// Nothing yet: keep what was found at start.
    Nothing,
    /// Serve this release.
    Deploy(AppDeployment),
    /// Remove the app.
    Remove,
    /// The agent stops: stop the processes, keep everything else.
    Shutdown,
}

/// What every app worker shares.
pub(crate) struct WorkerEnv {
    pub apps: AppsDir,
    pub web: Rc<WebHost>,
    pub processes: ProcessEnv,
    pub link: Recipient<AppOutbound>,
    pub deployer: Addr<Deployer>,
}

/// The release that serves.
struct Serving {
    running: RunningRelease,
    mount: Option<Mount>,
}

/// A deployment that failed, not tried again.
struct Failure {
    deployment: AppDeployment,
    state: AppState,
    message: String,
}

/// Why a deployment did not complete.
enum Stop {
    /// Something failed; the message names what.
    Failed(String),
    /// The master asked something else meanwhile.
    Superseded,
}

impl From<String> for Stop {
    fn from(message: String) -> Self {
        Stop::Failed(message)
    }
}

/// The task of one app.
pub(crate) struct AppWorker {
    app: String,
    env: Rc<WorkerEnv>,
    desired: watch::Receiver<Desired>,
    /// The last report, shared with the deployer, which repeats it after a registration.
    last: Rc<std::cell::RefCell<Option<AppReport>>>,
    serving: Option<Serving>,
    watchers: Vec<watch::Receiver<Vec<furrow_deploy::supervise::InstanceStatus>>>,
    target: Option<u32>,
    failure: Option<Failure>,
    /// The desire changed during an operation: act again without waiting.
    superseded: bool,
}

impl AppWorker {
    pub fn new(
        app: String,
        env: Rc<WorkerEnv>,
        desired: watch::Receiver<Desired>,
        last: Rc<std::cell::RefCell<Option<AppReport>>>,
    ) -> Self {
        Self {
            app,
            env,
            desired,
            last,
            serving: None,
            watchers: Vec::new(),
            target: None,
            failure: None,
            superseded: false,
        }
    }

    /// Brings the installed app back up, then follows what the master asks until the
    /// agent stops.
    pub async fn run(mut self) {
        self.restore().await;
        loop {
            let desired = self.desired.borrow_and_update().clone();
            self.superseded = false;
            match desired {
                Desired::Nothing => {}
                Desired::Deploy(deployment) => self.deploy(deployment).await,
                Desired::Remove => self.remove().await,
                Desired::Shutdown => break,
            }
            if !self.superseded && !self.wait_for_desire().await {
                break;
            }
        }
        if let Some(serving) = self.serving.take() {
            serving.running.stop().await;
        }
    }

    /// Waits for the next desire, reporting instance changes meanwhile; false when the
    /// deployer is gone.
    async fn wait_for_desire(&mut self) -> bool {
        loop {
            let desired = &mut self.desired;
            let watchers = &mut self.watchers;
            tokio::select! {
                changed = desired.changed() => return changed.is_ok(),
                () = any_change(watchers) => {
                    tokio::time::sleep(COALESCE).await;
                    self.mark_seen();
                    self.report_instances();
                }
            }
        }
    }

    fn mark_seen(&mut self) {
        for watcher in &mut self.watchers {
            watcher.borrow_and_update();
        }
    }

    fn report_instances(&self) {
        let last = self.last.borrow().clone();
        let Some(last) = last else { return };
        let trouble = self.serving.as_ref().and_then(|s| s.running.trouble());
        self.report(last.state, trouble.or(last.message));
    }

    async fn restore(&mut self) {
        if !self.env.apps.homes().join(&self.app).is_dir() {
            return;
        }
        let apps = self.env.apps.clone();
        let app = self.app.clone();
        let found = blocking(move || {
            let home = apps.home(&app)?;
            let Some(current) = home.current().map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let release = home.release(current).map_err(|e| e.to_string())?;
            Ok(Some((home, release)))
        })
        .await;
        let (home, release) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                warn!(app = %self.app, error = %e, "cannot bring an installed app back up");
                return;
            }
        };
        info!(app = %self.app, release = release.number, "bringing an installed app back up");
        self.target = Some(release.number);
        match self.start_release(&home, &release).await {
            Ok(serving) => {
                self.serve(serving);
                self.report(
                    AppState::Running,
                    Some(format!(
                        "release {} brought back up at agent start",
                        release.number
                    )),
                );
            }
            Err(message) => {
                warn!(app = %self.app, release = release.number, error = %message, "installed app not brought back up");
                self.report(AppState::Failed, Some(message));
            }
        }
    }

    async fn deploy(&mut self, deployment: AppDeployment) {
        let release = deployment.release;
        self.target = Some(release);
        if self.serving_release() == Some(release) {
            self.failure = None;
            self.report(AppState::Running, Some(format!("release {release} serves")));
            return;
        }
        if let Some(failure) = &self.failure
            && failure.deployment == deployment
        {
            self.report(failure.state, Some(failure.message.clone()));
            return;
        }
        info!(app = %self.app, release, reason = %deployment.reason, "deploying a release");
        self.report(
            AppState::Deploying,
            Some(format!(
                "deploying release {release}: {}",
                deployment.reason
            )),
        );
        match self.switch_to(&deployment).await {
            Ok(()) => {
                self.failure = None;
                info!(app = %self.app, release, "release serves");
                self.report(AppState::Running, Some(format!("release {release} serves")));
            }
            Err(Stop::Superseded) => {
                self.superseded = true;
            }
            Err(Stop::Failed(message)) => {
                let state = if self.serving.is_some() {
                    AppState::Reverted
                } else {
                    AppState::Failed
                };
                warn!(app = %self.app, release, ?state, error = %message, "deployment failed");
                self.env.processes.logs.note(
                    &self.app,
                    release,
                    format!("[furrow] release {release} failed: {message}"),
                );
                self.failure = Some(Failure {
                    deployment,
                    state,
                    message: message.clone(),
                });
                self.report(state, Some(message));
            }
        }
    }

    /// Fetches, installs, starts, mounts and switches to the deployment's release.
    async fn switch_to(&mut self, deployment: &AppDeployment) -> Result<(), Stop> {
        let release = deployment.release;
        let apps = self.env.apps.clone();
        let app = self.app.clone();
        let home = blocking(move || apps.home(&app)).await?;
        let bundle = if home.release_dir(release).is_dir() {
            None
        } else {
            Some(self.fetch(deployment).await?)
        };
        let apps = self.env.apps.clone();
        let config = deployment.config.clone();
        let installing = home.clone();
        let installed = blocking(move || match bundle {
            Some(bundle) => {
                install_release(&apps, &installing, release, &bundle, config.as_deref())
            }
            None => installing.release(release).map_err(|e| e.to_string()),
        })
        .await?;
        let serving = self.start_release(&home, &installed).await?;
        let switching = home.clone();
        let old = self.serving_release();
        let switched = blocking(move || {
            switching.switch(release).map_err(|switch_error| {
                // `current` may have moved (a failed post_update): put it back.
                if let Some(old) = old
                    && switching.current().ok().flatten() != Some(old)
                    && let Err(e) = switching.switch(old)
                {
                    warn!(release = old, error = %e, "cannot switch back to the release that served");
                }
                format!("switch: {switch_error}")
            })
        })
        .await;
        if let Err(message) = switched {
            serving.running.stop().await;
            self.remount_old().await;
            return Err(Stop::Failed(message));
        }
        let old = self.serve(serving);
        if let Some(old) = old {
            old.running.stop().await;
        }
        let pruning = home;
        if let Err(e) =
            blocking(move || pruning.prune(KEEP_RELEASES).map_err(|e| e.to_string())).await
        {
            warn!(app = %self.app, error = %e, "cannot prune old releases");
        }
        Ok(())
    }

    /// Starts a release's processes, waits for their health and mounts them. On failure
    /// nothing of it runs and the old mount (if any) is back.
    async fn start_release(
        &mut self,
        home: &AppHome,
        release: &InstalledRelease,
    ) -> Result<Serving, String> {
        let apps = self.env.apps.clone();
        let (preparing_home, preparing) = (home.clone(), release.clone());
        let isolation =
            blocking(move || ReleaseIsolation::prepare(&apps, &preparing_home, &preparing)).await?;
        let running = RunningRelease::start(&self.env.processes, home, release, &isolation)?;
        let mount = running.mount(release);
        let checked = match running
            .wait_healthy(self.env.processes.health_timeout)
            .await
        {
            Ok(()) => mount,
            Err(e) => Err(e),
        };
        let mount = match checked {
            Ok(mount) => mount,
            Err(e) => {
                running.stop().await;
                return Err(e);
            }
        };
        if let Some(mount) = &mount
            && let Err(e) = self.env.web.install(mount).await
        {
            running.stop().await;
            self.remount_old().await;
            return Err(e);
        }
        if mount.is_none() && self.serving.as_ref().is_some_and(|s| s.mount.is_some()) {
            // The new release is not served over HTTP any more.
            self.env.web.remove(&self.app).await?;
        }
        Ok(Serving { running, mount })
    }

    /// Puts the serving release's mount back after a failed change (or removes the
    /// app's mount when nothing serves).
    async fn remount_old(&self) {
        let restored = match self.serving.as_ref().and_then(|s| s.mount.as_ref()) {
            Some(mount) => self.env.web.install(mount).await,
            None => self.env.web.remove(&self.app).await,
        };
        if let Err(e) = restored {
            warn!(app = %self.app, error = %e, "cannot put the previous mount back");
        }
    }

    /// Makes `serving` the release that serves; returns the one before.
    fn serve(&mut self, serving: Serving) -> Option<Serving> {
        self.watchers = serving.running.watchers();
        self.mark_seen();
        self.serving.replace(serving)
    }

    fn serving_release(&self) -> Option<u32> {
        self.serving.as_ref().map(|s| s.running.release)
    }

    /// The bundle's path in the cache, fetched from the master if needed.
    async fn fetch(&mut self, deployment: &AppDeployment) -> Result<std::path::PathBuf, Stop> {
        let (waiter, fetched) = oneshot::channel();
        self.env.deployer.do_send(WantBundle {
            digest: deployment.digest.clone(),
            size: deployment.size,
            waiter,
        });
        tokio::select! {
            result = fetched => match result {
                Ok(Ok(path)) => Ok(path),
                Ok(Err(message)) => Err(Stop::Failed(format!("bundle: {message}"))),
                Err(_) => Err(Stop::Failed("bundle: the agent is stopping".into())),
            },
            _ = self.desired.changed() => Err(Stop::Superseded),
        }
    }

    async fn remove(&mut self) {
        info!(app = %self.app, "removing the app");
        if let Some(serving) = self.serving.take() {
            serving.running.stop().await;
        }
        self.watchers.clear();
        self.failure = None;
        let mut problems = Vec::new();
        if let Err(e) = self.env.web.remove(&self.app).await {
            problems.push(e);
        }
        if self.env.apps.homes().join(&self.app).is_dir() {
            let apps = self.env.apps.clone();
            let app = self.app.clone();
            let removed = blocking(move || {
                apps.home(&app)?
                    .remove()
                    .map_err(|e| format!("remove: {e}"))
            })
            .await;
            if let Err(e) = removed {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            self.report(AppState::Removed, Some("removed from this agent".into()));
            // Nothing left to tell after a registration.
            *self.last.borrow_mut() = None;
        } else {
            self.report(AppState::Failed, Some(problems.join("; ")));
        }
        self.target = None;
    }

    /// Tells the master where the app stands (and keeps it for the next registration).
    fn report(&self, state: AppState, message: Option<String>) {
        let serving = self.serving.as_ref();
        let current = serving.map(|s| s.running.release);
        let report = AppReport {
            app: self.app.clone(),
            target: self.target.or(current).unwrap_or_default(),
            current,
            state,
            message,
            instances: serving.map(|s| s.running.instances()).unwrap_or_default(),
            mount: serving
                .and_then(|s| s.mount.as_ref())
                .map(|mount| self.env.web.url(&mount.path)),
        };
        *self.last.borrow_mut() = Some(report.clone());
        self.env
            .link
            .do_send(AppOutbound(AgentMessage::AppReport(report)));
    }
}

/// Runs file work and hooks on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("the operation failed to complete: {e}")))
}
