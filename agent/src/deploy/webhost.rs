//! The web server this agent mounts apps on: a managed server it runs (and restarts with
//! backoff when it dies) or the host's own server, behind one small interface.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use furrow_deploy::webserver::{
    ManagedOptions, ManagedServer, Mount, MountHost, ServerStatus, SystemOptions, SystemServer,
    WebServerKind,
};
use furrow_protocol::apps::WebServerView;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{WebServerConfig, WebServerMode};

/// The longest wait between two restarts of a managed server.
const MAX_RESTART_WAIT: Duration = Duration::from_secs(60);
/// A managed server that ran this long is healthy again: the next death waits the
/// shortest time.
const STABLE_AFTER: Duration = Duration::from_secs(60);

enum Server {
    /// The current managed server; replaced when it is restarted.
    Managed(RefCell<Rc<ManagedServer>>),
    System(SystemServer),
}

/// The agent's web server.
pub(crate) struct WebHost {
    kind: WebServerKind,
    address: SocketAddr,
    server: Server,
    /// Where a managed server keeps its state.
    state_dir: PathBuf,
    /// Set when the agent stops, so a managed server's exit is not answered with a restart.
    stopping: watch::Sender<bool>,
}

impl WebHost {
    /// Starts the managed server (answering on its address) or prepares the host's.
    pub async fn start(config: &WebServerConfig, state_dir: PathBuf) -> Result<Rc<Self>, String> {
        let server = match &config.mode {
            WebServerMode::Managed => {
                let server = start_managed(config.kind, &state_dir, config.address).await?;
                Server::Managed(RefCell::new(Rc::new(server)))
            }
            WebServerMode::System {
                include_dir,
                reload_command,
                check_command,
            } => {
                let mut options = SystemOptions::new(config.kind, include_dir, config.address);
                if let Some(command) = reload_command {
                    options.reload_command = command.clone();
                }
                if let Some(command) = check_command {
                    options.check_command = command.clone();
                }
                let server = SystemServer::new(options)
                    .map_err(|e| format!("{} in system mode: {e}", config.kind))?;
                info!(server = %config.kind, include_dir = %include_dir.display(), address = %config.address, "mounting apps on the host's web server");
                Server::System(server)
            }
        };
        Ok(Rc::new(Self {
            kind: config.kind,
            address: config.address,
            server,
            state_dir,
            stopping: watch::channel(false).0,
        }))
    }

    /// What the agent announces to the master.
    pub fn view(&self) -> WebServerView {
        WebServerView {
            kind: self.kind.as_str().to_string(),
            address: self.address.to_string(),
        }
    }

    /// The URL of a mount path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Installs (or replaces) a mount; the error is the server's own message.
    pub async fn install(&self, mount: &Mount) -> Result<(), String> {
        let result = match &self.server {
            Server::Managed(current) => {
                let server = Rc::clone(&current.borrow());
                server.install_mount(mount).await
            }
            Server::System(server) => server.install_mount(mount).await,
        };
        result.map_err(|e| format!("mounting on {}: {e}", self.kind))
    }

    /// Removes an app's mount (nothing if it has none).
    pub async fn remove(&self, app: &str) -> Result<(), String> {
        let result = match &self.server {
            Server::Managed(current) => {
                let server = Rc::clone(&current.borrow());
                server.remove_mount(app).await
            }
            Server::System(server) => server.remove_mount(app).await,
        };
        result.map_err(|e| format!("unmounting from {}: {e}", self.kind))
    }

    /// The apps with a mount installed.
    pub fn mounted_apps(&self) -> Vec<String> {
        let apps = match &self.server {
            Server::Managed(current) => current.borrow().installed_apps(),
            Server::System(server) => server.installed_apps(),
        };
        apps.unwrap_or_else(|e| {
            warn!(error = %e, "cannot list the web server's mounts");
            Vec::new()
        })
    }

    /// Watches a managed server and starts it again when it dies, waiting longer after
    /// each death in a row (from `first_wait`, doubling, at most a minute). Returns when
    /// the agent stops; does nothing for the host's server.
    pub async fn keep_running(self: Rc<Self>, first_wait: Duration) {
        let Server::Managed(current) = &self.server else {
            return;
        };
        let mut stopping = self.stopping.subscribe();
        let mut wait = first_wait;
        loop {
            let server = Rc::clone(&current.borrow());
            let started = tokio::time::Instant::now();
            let status = tokio::select! {
                status = server.wait_exit() => status,
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            if *stopping.borrow() || status == ServerStatus::Stopped {
                return;
            }
            if started.elapsed() >= STABLE_AFTER {
                wait = first_wait;
            }
            loop {
                error!(server = %self.kind, ?status, restart_in_ms = wait.as_millis() as u64, error_log = %server.error_log().display(), "managed web server died; restarting it");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
                wait = (wait * 2).min(MAX_RESTART_WAIT);
                match start_managed(self.kind, &self.state_dir, self.address).await {
                    Ok(restarted) => {
                        info!(server = %self.kind, pid = restarted.pid(), "managed web server restarted; serving its mounts again");
                        *current.borrow_mut() = Rc::new(restarted);
                        break;
                    }
                    Err(e) => {
                        error!(server = %self.kind, error = %e, "cannot restart the managed web server")
                    }
                }
            }
        }
    }

    /// Stops a managed server gracefully (the host's server is left alone).
    pub async fn stop(&self) {
        self.stopping.send_replace(true);
        if let Server::Managed(current) = &self.server {
            let server = Rc::clone(&current.borrow());
            match server.stop().await {
                Ok(_) => info!(server = %self.kind, "managed web server stopped"),
                Err(e) => {
                    warn!(server = %self.kind, error = %e, "cannot stop the managed web server")
                }
            }
        }
    }
}

async fn start_managed(
    kind: WebServerKind,
    state_dir: &std::path::Path,
    address: SocketAddr,
) -> Result<ManagedServer, String> {
    ManagedServer::start_with(kind, state_dir, address, ManagedOptions::default())
        .await
        .map_err(|e| format!("cannot start the managed {kind} on {address}: {e}"))
}
