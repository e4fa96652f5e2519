//! Deployed apps on this agent: the `Deployer` actor, started by the agent when it has a
//! web server.
//!
//! - `webhost`: the web server (managed and restarted with backoff, or the host's).
//! - `bundles`: the content-addressed bundle cache and the piece-by-piece fetch.
//! - `install`: the apps' directory and installing a release (blocking work).
//! - `isolation`: `isolation: namespace` — the per-app uid/gid, the namespace's layout and
//!   environment, the ownership the app needs, whether the host can isolate.
//! - `processes`: a release's supervised processes, its mount, its instances' view.
//! - `worker`: one task per app, bringing it to what the master asked, one step at a time.
//! - `app_logs`: the apps' output, batched for the master.
//!
//! The `MasterLink` hands the deployer every `Deploy`, `Bundle` and `Undeploy`, and word
//! of each registration ([`DeployerEvent`]); the deployer and the workers send through the
//! link's app outbox (`AppOutbound`), which writes only while registered and keeps
//! nothing for a later connection: after each registration the deployer announces the
//! web server, reports every app again and asks again for the bundle pieces it waits for,
//! and the master sends every deployment again.
//!
//! Layout under the state directory:
//!
//! ```text
//! <state>/webserver/                    the managed web server's state (configs, logs, sites/)
//! <state>/apps/bundles/<digest>.bundle  bundles by SHA-256 (<digest>.part while fetched)
//! <state>/apps/homes/<app>/             each app's releases (furrow_deploy::AppHome)
//! <state>/apps/shared-deps/<name>/      dependency sets apps share
//! <state>/apps/run/                     instances' sockets and pid files
//! <state>/apps/staging/                 bundles being extracted
//! ```

mod app_logs;
mod bundles;
mod install;
mod isolation;
mod processes;
mod webhost;
mod worker;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use furrow_deploy::supervise::PortPool;
use furrow_protocol::AgentMessage;
use furrow_protocol::apps::{AppDeployment, AppReport, BundleChunk};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::AgentError;
use crate::config::{Tuning, WebServerConfig};
use crate::link::{AppOutbound, MasterLink};
use app_logs::{AppLogs, FLUSH_EVERY};
use bundles::{BundleCache, BundleWaiter, ChunkOutcome};
use install::AppsDir;
use processes::ProcessEnv;
use webhost::WebHost;
use worker::{AppWorker, Desired, WorkerEnv};

/// What the link hands the deployer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) enum DeployerEvent {
    /// Serve this release of an app.
    Deploy(AppDeployment),
    /// A piece of a bundle asked for.
    Bundle(BundleChunk),
    /// Remove an app.
    Undeploy(String),
    /// The link registered (again).
    Registered,
}

/// A worker wants a bundle; `waiter` hears where it is once cached.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WantBundle {
    pub digest: String,
    pub size: u64,
    pub waiter: BundleWaiter,
}

/// The agent stops: stop every app's processes, then a managed web server.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShutdownApps;

struct Worker {
    desired: watch::Sender<Desired>,
    last: Rc<RefCell<Option<AppReport>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Everything the deployer needs before it starts.
pub(crate) struct DeployerSetup {
    apps: AppsDir,
    web: Rc<WebHost>,
    ports: Arc<PortPool>,
    tuning: Tuning,
}

impl DeployerSetup {
    /// Prepares the apps' directories and starts (or prepares) the web server. Fails
    /// when the web server cannot start, with the server's own message.
    pub async fn prepare(
        config: &WebServerConfig,
        state_dir: &std::path::Path,
        tuning: Tuning,
    ) -> Result<Self, AgentError> {
        let root = state_dir.join("apps");
        let apps = AppsDir::open(root.clone()).map_err(|e| AgentError::state("create", root, e))?;
        let ports = PortPool::new(config.app_ports.clone())
            .map_err(|e| AgentError::Config(format!("--app-ports: {e}")))?;
        let web_dir = absolute(state_dir.join("webserver"))?;
        let web = WebHost::start(config, web_dir)
            .await
            .map_err(AgentError::WebServer)?;
        Ok(Self {
            apps,
            web,
            ports: Arc::new(ports),
            tuning,
        })
    }
}

/// A managed server wants an absolute state directory.
fn absolute(path: PathBuf) -> Result<PathBuf, AgentError> {
    std::path::absolute(&path).map_err(|e| AgentError::state("resolve", path, e))
}

/// The deployer: owns the web server, the bundle cache and one worker per app.
pub(crate) struct Deployer {
    setup: DeployerSetup,
    link: Addr<MasterLink>,
    logs: Arc<AppLogs>,
    bundles: BundleCache,
    env: Option<Rc<WorkerEnv>>,
    workers: BTreeMap<String, Worker>,
}

impl Deployer {
    /// A deployer sending through `link`.
    pub fn new(setup: DeployerSetup, link: Addr<MasterLink>) -> Self {
        let bundles = BundleCache::new(setup.apps.bundles());
        Self {
            setup,
            link,
            logs: Arc::new(AppLogs::default()),
            bundles,
            env: None,
            workers: BTreeMap::new(),
        }
    }

    fn send(&self, message: AgentMessage) {
        self.link.do_send(AppOutbound(message));
    }

    /// Asks the worker of `app` (started if new) for `desired`.
    fn desire(&mut self, app: &str, desired: Desired) {
        let Some(env) = self.env.clone() else { return };
        let worker = self.workers.entry(app.to_string()).or_insert_with(|| {
            let (sender, receiver) = watch::channel(Desired::Nothing);
            let last = Rc::new(RefCell::new(None));
            let task = actix::spawn(
                AppWorker::new(app.to_string(), env, receiver, Rc::clone(&last)).run(),
            );
            Worker {
                desired: sender,
                last,
                task,
            }
        });
        worker.desired.send_if_modified(|current| {
            if *current == desired {
                false
            } else {
                *current = desired;
                true
            }
        });
    }

    fn flush_logs(&self) {
        for batch in self.logs.take() {
            self.send(AgentMessage::AppLogs(batch));
        }
    }

    fn on_chunk(&mut self, chunk: BundleChunk, ctx: &mut Context<Self>) {
        match self.bundles.chunk(chunk) {
            ChunkOutcome::Next(request) => self.send(AgentMessage::FetchBundle(request)),
            ChunkOutcome::Verify { digest, part, path } => {
                let checking = digest.clone();
                let verify =
                    tokio::task::spawn_blocking(move || bundles::verify(&checking, &part, &path));
                ctx.spawn(verify.into_actor(self).map(move |verified, deployer, _| {
                    let outcome = verified
                        .unwrap_or_else(|e| Err(format!("the check of the bundle failed: {e}")));
                    deployer.bundles.finish(&digest, outcome);
                }));
            }
            ChunkOutcome::Failed | ChunkOutcome::Ignored => {}
        }
    }
}

impl Actor for Deployer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let env = Rc::new(WorkerEnv {
            apps: self.setup.apps.clone(),
            web: Rc::clone(&self.setup.web),
            processes: ProcessEnv {
                ports: Arc::clone(&self.setup.ports),
                run_dir: self.setup.apps.run(),
                logs: Arc::clone(&self.logs),
                health_timeout: self.setup.tuning.app_health_timeout,
            },
            link: self.link.clone().recipient(),
            deployer: ctx.address(),
        });
        self.env = Some(env);
        actix::spawn(Rc::clone(&self.setup.web).keep_running(self.setup.tuning.webserver_restart));
        let installed = self.setup.apps.installed();
        // Mounts of apps that have no home any more (removed while the server was down).
        let stray: Vec<String> = self
            .setup
            .web
            .mounted_apps()
            .into_iter()
            .filter(|app| !installed.iter().any(|(name, _)| name == app))
            .collect();
        let web = Rc::clone(&self.setup.web);
        actix::spawn(async move {
            for app in stray {
                match web.remove(&app).await {
                    Ok(()) => info!(%app, "removed the mount of an app that is not installed"),
                    Err(e) => warn!(%app, error = %e, "cannot remove a stray mount"),
                }
            }
        });
        for (app, current) in installed {
            if current.is_some() {
                self.desire(&app, Desired::Nothing);
            }
        }
        ctx.run_interval(FLUSH_EVERY, |deployer, _| deployer.flush_logs());
        info!(
            server = %self.setup.web.view().kind,
            address = %self.setup.web.view().address,
            apps = self.workers.len(),
            "deployer started"
        );
    }
}

impl Handler<DeployerEvent> for Deployer {
    type Result = ();

    fn handle(&mut self, event: DeployerEvent, ctx: &mut Context<Self>) {
        match event {
            DeployerEvent::Deploy(deployment) => {
                let app = deployment.app.clone();
                self.desire(&app, Desired::Deploy(deployment));
            }
            DeployerEvent::Undeploy(app) => self.desire(&app, Desired::Remove),
            DeployerEvent::Bundle(chunk) => self.on_chunk(chunk, ctx),
            DeployerEvent::Registered => {
                self.send(AgentMessage::WebServer(self.setup.web.view()));
                for worker in self.workers.values() {
                    if let Some(report) = worker.last.borrow().clone() {
                        self.send(AgentMessage::AppReport(report));
                    }
                }
                for request in self.bundles.resume() {
                    self.send(AgentMessage::FetchBundle(request));
                }
            }
        }
    }
}

impl Handler<WantBundle> for Deployer {
    type Result = ();

    fn handle(&mut self, want: WantBundle, _ctx: &mut Context<Self>) {
        if let Some(request) = self.bundles.want(&want.digest, want.size, want.waiter) {
            self.send(AgentMessage::FetchBundle(request));
        }
    }
}

impl Handler<ShutdownApps> for Deployer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: ShutdownApps, _ctx: &mut Context<Self>) -> Self::Result {
        let tasks: Vec<tokio::task::JoinHandle<()>> = std::mem::take(&mut self.workers)
            .into_values()
            .map(|worker| {
                worker.desired.send_replace(Desired::Shutdown);
                worker.task
            })
            .collect();
        info!(apps = tasks.len(), "stopping the apps");
        let web = Rc::clone(&self.setup.web);
        let stop = async move {
            for task in tasks {
                let _ = task.await;
            }
            web.stop().await;
        };
        Box::pin(stop.into_actor(self))
    }
}
