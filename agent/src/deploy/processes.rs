//! The processes of one release: a supervisor per manifest process (with its instances),
//! started from the manifest, their health, their mount, their view, their stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use furrow_deploy::supervise::{
    Endpoint, HealthCheck, HealthPolicy, InstanceState, InstanceStatus, Listen, PortPool,
    ProcessSpec, Signal, Supervisor, SupervisorHandle,
};
use furrow_deploy::webserver::{Backend, Mount, StaticDir, Upstream};
use furrow_deploy::{AppHome, Health, InstalledRelease, ListenKind};
use furrow_protocol::apps::AppInstanceView;
use futures::future::select_all;
use tokio::sync::watch;

use super::app_logs::AppLogs;
use super::isolation::ReleaseIsolation;

/// What every release's processes share on this agent.
pub(crate) struct ProcessEnv {
    /// Ports for instances listening on one.
    pub ports: Arc<PortPool>,
    /// Sockets and pid files (`<state>/apps/run`).
    pub run_dir: PathBuf,
    /// Where output lines go.
    pub logs: Arc<AppLogs>,
    /// How long instances may take to become ready.
    pub health_timeout: Duration,
}

/// The running processes of one release.
pub(crate) struct RunningRelease {
    /// The release number.
    pub release: u32,
    app: String,
    handles: Vec<(String, SupervisorHandle)>,
}

impl RunningRelease {
    /// Starts every process of `release` (none for a static site) with `isolation` (see
    /// [`ReleaseIsolation::prepare`]). Returns at once; see [`RunningRelease::wait_healthy`].
    pub fn start(
        env: &ProcessEnv,
        home: &AppHome,
        release: &InstalledRelease,
        isolation: &ReleaseIsolation,
    ) -> Result<Self, String> {
        // Never run unisolated what asks for isolation.
        debug_assert!(
            matches!(isolation, ReleaseIsolation::Namespace { .. })
                || release.manifest.isolation != furrow_deploy::Isolation::Namespace
                || release.manifest.processes.is_empty()
        );
        let mut running = Self {
            release: release.number,
            app: home.app().to_string(),
            handles: Vec::new(),
        };
        // Without PORT: the supervisor sets it per instance. Paths as the processes see
        // them (inside their namespace when isolated).
        let host_env = home
            .environment(release.number, &furrow_deploy::Listen::None)
            .map_err(|e| {
                format!(
                    "cannot build the environment of release {}: {e}",
                    release.number
                )
            })?;
        let base_env = isolation.environment(&host_env);
        for (name, process) in &release.manifest.processes {
            let mut spec = ProcessSpec::new(
                home.app(),
                &release.number.to_string(),
                name,
                process.command.clone(),
            );
            spec.cwd = Some(isolation.working_dir(release));
            spec.isolation = isolation.supervised();
            spec.env = base_env
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            spec.listen = match process.listen {
                ListenKind::Port => Listen::Port,
                ListenKind::Socket => {
                    spec.env
                        .push(("FURROW_APP_SOCKET".into(), "{socket}".into()));
                    Listen::Socket
                }
                ListenKind::None => Listen::None,
            };
            spec.instances = process.instances;
            spec.health = process.health.as_ref().map(|health| match health {
                Health::Http(path) => HealthCheck::Http(path.clone()),
                Health::Command(command) => HealthCheck::Command(command.clone()),
            });
            spec.health_policy = HealthPolicy {
                ready_timeout: env.health_timeout,
                ..HealthPolicy::default()
            };
            spec.stop_signal =
                Signal::try_from(process.stop_signal.as_raw()).unwrap_or(Signal::SIGTERM);
            spec.stop_grace = process.stop_grace;
            let handle = Supervisor::start(
                spec,
                &env.ports,
                &env.run_dir,
                env.logs.sink(release.number),
            )
            .map_err(|e| format!("cannot start process {name}: {e}"))?;
            running.handles.push((name.clone(), handle));
        }
        Ok(running)
    }

    /// Waits until every instance is healthy, up to `timeout`; the error names the
    /// instances that are not and why.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        for (_, handle) in &self.handles {
            handle
                .wait_healthy(timeout)
                .await
                .map_err(|e| format!("health check: {e}"))?;
        }
        Ok(())
    }

    /// The mount of this release for the manifest's `mount` (none when it has none).
    pub fn mount(&self, release: &InstalledRelease) -> Result<Option<Mount>, String> {
        let Some(wanted) = &release.manifest.mount else {
            return Ok(None);
        };
        let statics: Vec<StaticDir> = wanted
            .static_routes()
            .into_iter()
            .map(|(url_path, dir)| StaticDir {
                url_path,
                dir: release.dir.join(dir),
            })
            .collect();
        let upstream = match &wanted.process {
            Some(process) => {
                let backends = self.backends_of(process);
                if backends.is_empty() {
                    return Err(format!(
                        "the mount's process {process} has no instance listening"
                    ));
                }
                Some(Upstream::balanced(backends))
            }
            None => None,
        };
        Ok(Some(Mount {
            app: self.app.clone(),
            path: wanted.path.clone(),
            upstream,
            statics,
        }))
    }

    fn backends_of(&self, process: &str) -> Vec<Backend> {
        self.handles
            .iter()
            .filter(|(name, _)| name == process)
            .flat_map(|(_, handle)| handle.endpoints())
            .filter_map(|endpoint| endpoint.backend())
            .collect()
    }

    /// Every instance, for the report.
    pub fn instances(&self) -> Vec<AppInstanceView> {
        self.handles
            .iter()
            .flat_map(|(name, handle)| {
                handle
                    .status()
                    .into_iter()
                    .map(move |status| instance_view(name, &status))
            })
            .collect()
    }

    /// A summary of instances that are not running, if any (`web.0 gave up ...`).
    pub fn trouble(&self) -> Option<String> {
        let troubled: Vec<String> = self
            .handles
            .iter()
            .flat_map(|(name, handle)| {
                handle
                    .status()
                    .into_iter()
                    .filter(|status| !status.state.is_running())
                    .map(move |status| format!("{name}.{} {}", status.instance, status.state))
            })
            .collect();
        (!troubled.is_empty()).then(|| troubled.join("; "))
    }

    /// Receivers that see every instance state change.
    pub fn watchers(&self) -> Vec<watch::Receiver<Vec<InstanceStatus>>> {
        self.handles
            .iter()
            .map(|(_, handle)| handle.subscribe())
            .collect()
    }

    /// Stops every instance gracefully (stop signal, then `SIGKILL` after the grace).
    pub async fn stop(self) {
        for (_, handle) in &self.handles {
            handle.stop().await;
        }
    }
}

/// Waits until any of `watchers` sees a change; never returns for none (or once all are
/// closed).
pub(crate) async fn any_change(watchers: &mut [watch::Receiver<Vec<InstanceStatus>>]) {
    if watchers.is_empty() {
        return std::future::pending().await;
    }
    let changes = watchers
        .iter_mut()
        .map(|watcher| Box::pin(watcher.changed()));
    let (changed, _, _) = select_all(changes).await;
    if changed.is_err() {
        std::future::pending::<()>().await;
    }
}

fn instance_view(process: &str, status: &InstanceStatus) -> AppInstanceView {
    let (state, detail, crashes) = match &status.state {
        InstanceState::Starting { .. } => ("starting", None, 0),
        InstanceState::Running { .. } => ("running", None, 0),
        InstanceState::Unhealthy { reason, .. } => ("unhealthy", Some(reason.clone()), 0),
        InstanceState::Backoff { crashes, .. } => ("backoff", None, *crashes),
        InstanceState::GaveUp { crashes, last_exit } => {
            ("gave_up", Some(last_exit.to_string()), *crashes)
        }
        InstanceState::Stopped => ("stopped", None, 0),
    };
    let detail = detail.or_else(|| status.last_exit.as_ref().map(ToString::to_string));
    AppInstanceView {
        process: process.to_string(),
        instance: status.instance,
        state: state.to_string(),
        pid: status.state.pid(),
        endpoint: match &status.endpoint {
            Endpoint::Port(port) => Some(format!("127.0.0.1:{port}")),
            Endpoint::Socket(path) => Some(display(path)),
            Endpoint::None => None,
        },
        crashes,
        detail,
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
