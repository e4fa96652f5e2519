//! Starting the instances of a process and the handle that controls them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::health::Probe;
use super::instance::{Control, Instance};
use super::isolation::{Isolation, Plan};
use super::logs::{LogSink, LogSource};
use super::spec::Placeholders;
use super::{
    Endpoint, HealthCheck, HealthError, InstanceState, InstanceStatus, Listen, PortPool,
    ProcessSpec, SuperviseError,
};

/// Starts supervised processes.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor;

/// Controls the instances of one process. Dropping it kills every instance's process
/// group (`SIGKILL`) and releases their ports; call [`stop`](Self::stop) for a graceful
/// stop.
#[derive(Debug)]
pub struct SupervisorHandle {
    spec: Arc<ProcessSpec>,
    status: watch::Receiver<Vec<InstanceStatus>>,
    controls: Vec<mpsc::UnboundedSender<Control>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pgids: Vec<Arc<AtomicU32>>,
    ports: Arc<PortPool>,
    /// What this handle holds until released: taken (emptied) by the first release, so a
    /// later drop cannot free a port or remove a file that by then belongs to someone else.
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    ports: Vec<u16>,
    files: Vec<PathBuf>,
}

impl Supervisor {
    /// Validates `spec`, allocates a port per instance from `ports` (for
    /// [`Listen::Port`]), prepares `<run_dir>/<app>/<release>/` (sockets) and
    /// `<run_dir>/pids/` (`<app>.<release>.<name>-<i>.pid`), and starts every instance on
    /// the current tokio runtime.
    /// Returns at once; see [`SupervisorHandle::wait_healthy`].
    ///
    /// Instances get a clean environment: `PATH` (ours, or the standard one when
    /// isolated), `LANG=C.UTF-8`, `HOME` (the working directory or `/tmp`), `PORT` or
    /// `SOCKET`, `FURROW_APP`, `FURROW_RELEASE`, `FURROW_PROCESS`, `FURROW_INSTANCE`, then
    /// the spec's `env`.
    pub fn start(
        spec: ProcessSpec,
        ports: &Arc<PortPool>,
        run_dir: &Path,
        logs: Arc<dyn LogSink>,
    ) -> Result<SupervisorHandle, SuperviseError> {
        spec.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SuperviseError::NoRuntime);
        }
        let spec = Arc::new(spec);
        // Sockets of one release together, so that the next release's instances (started
        // before this one stops) never touch them.
        let app_dir = run_dir.join(&spec.app).join(&spec.release);
        let pid_dir = run_dir.join("pids");
        for dir in [run_dir, &app_dir, &pid_dir] {
            create_dir(dir, 0o755)?;
        }
        if let (Isolation::Namespace(ns), Listen::Socket) = (&spec.isolation, spec.listen)
            && let Some((uid, gid)) = ns.ids
        {
            // The app creates its sockets here under its own uid.
            nix::unistd::chown(&app_dir, Some(uid.into()), Some(gid.into())).map_err(|err| {
                SuperviseError::io("give the app its socket directory", &app_dir, err.into())
            })?;
        }
        let mut handle = SupervisorHandle {
            spec: Arc::clone(&spec),
            status: watch::channel(Vec::new()).1,
            controls: Vec::new(),
            tasks: Mutex::new(Vec::new()),
            pgids: Vec::new(),
            ports: Arc::clone(ports),
            held: Mutex::new(Held::default()),
        };
        // Endpoints first, so a port shortage fails before anything runs (the handle's
        // drop releases what was taken).
        let mut endpoints = Vec::new();
        for index in 0..spec.instances {
            let endpoint = match spec.listen {
                Listen::Port => {
                    let port = ports.allocate()?;
                    handle.lock_held().ports.push(port);
                    Endpoint::Port(port)
                }
                Listen::Socket => {
                    let socket = app_dir.join(format!("{}-{index}.sock", spec.name));
                    // sun_path holds 108 bytes including the NUL.
                    if socket.as_os_str().len() > 107 {
                        return Err(SuperviseError::InvalidSpec {
                            app: spec.app.clone(),
                            process: spec.name.clone(),
                            reason: format!(
                                "the socket path {} is longer than 107 bytes; use a shorter run directory",
                                socket.display()
                            ),
                        });
                    }
                    handle.lock_held().files.push(socket.clone());
                    Endpoint::Socket(socket)
                }
                Listen::None => Endpoint::None,
            };
            endpoints.push(endpoint);
        }
        let initial: Vec<InstanceStatus> = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| InstanceStatus {
                instance: index as u32,
                endpoint: endpoint.clone(),
                state: InstanceState::Starting { pid: None },
                restarts: 0,
                last_exit: None,
            })
            .collect();
        let (status_tx, status_rx) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        handle.status = status_rx;
        let source_names = (
            Arc::<str>::from(spec.app.as_str()),
            Arc::<str>::from(spec.release.as_str()),
            Arc::<str>::from(spec.name.as_str()),
        );
        for (index, endpoint) in endpoints.into_iter().enumerate() {
            let index = index as u32;
            let pid_file = pid_dir.join(format!(
                "{}.{}.{}-{index}.pid",
                spec.app, spec.release, spec.name
            ));
            kill_stale(&pid_file, &instance_key(&spec, index));
            handle.lock_held().files.push(pid_file.clone());
            let instance = prepare(
                &spec,
                index,
                endpoint,
                pid_file,
                run_dir,
                &app_dir,
                LogSource {
                    app: Arc::clone(&source_names.0),
                    release: Arc::clone(&source_names.1),
                    process: Arc::clone(&source_names.2),
                    instance: index,
                },
                Arc::clone(&logs),
                Arc::clone(&status_tx),
            )?;
            handle.pgids.push(Arc::clone(&instance.pgid));
            let (control_tx, control_rx) = mpsc::unbounded_channel();
            handle.controls.push(control_tx);
            let task = tokio::spawn(instance.run(control_rx));
            handle.lock_tasks().push(task);
        }
        tracing::info!(app = %spec.app, release = %spec.release, process = %spec.name, instances = spec.instances, "process supervision started");
        Ok(handle)
    }
}

/// Identifies an instance in its environment (`FURROW_INSTANCE_KEY`), so a stale pid file
/// is only acted on when the process really is that instance.
fn instance_key(spec: &ProcessSpec, index: u32) -> String {
    format!("{}/{}/{}/{index}", spec.app, spec.release, spec.name)
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    spec: &Arc<ProcessSpec>,
    index: u32,
    endpoint: Endpoint,
    pid_file: PathBuf,
    run_dir: &Path,
    app_dir: &Path,
    source: LogSource,
    sink: Arc<dyn LogSink>,
    status: Arc<watch::Sender<Vec<InstanceStatus>>>,
) -> Result<Instance, SuperviseError> {
    let (port, socket) = match &endpoint {
        Endpoint::Port(port) => (Some(*port), None),
        Endpoint::Socket(path) => (None, path.to_str()),
        Endpoint::None => (None, None),
    };
    let values = Placeholders {
        app: &spec.app,
        release: &spec.release,
        instance: index,
        port,
        socket,
    };
    let isolated = matches!(spec.isolation, Isolation::Namespace(_));
    let path = if isolated {
        "/usr/local/bin:/usr/bin:/bin".to_owned()
    } else {
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned())
    };
    let home = match (&spec.cwd, &spec.isolation) {
        (Some(cwd), _) => cwd.display().to_string(),
        (None, Isolation::Namespace(ns)) => ns.app_dir.display().to_string(),
        (None, Isolation::None) => "/tmp".to_owned(),
    };
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("HOME".to_owned(), home),
        ("FURROW_APP".to_owned(), spec.app.clone()),
        ("FURROW_RELEASE".to_owned(), spec.release.clone()),
        ("FURROW_PROCESS".to_owned(), spec.name.clone()),
        ("FURROW_INSTANCE".to_owned(), index.to_string()),
        ("FURROW_INSTANCE_KEY".to_owned(), instance_key(spec, index)),
    ];
    if let Some(port) = port {
        env.push(("PORT".to_owned(), port.to_string()));
    }
    if let Some(socket) = socket {
        env.push(("SOCKET".to_owned(), socket.to_owned()));
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), values.apply(v))));
    let argv: Vec<String> = spec.command.iter().map(|arg| values.apply(arg)).collect();
    let plan = match &spec.isolation {
        Isolation::None => None,
        Isolation::Namespace(ns) => {
            let staging = run_dir.join("roots").join(format!(
                "{}.{}.{}-{index}",
                spec.app, spec.release, spec.name
            ));
            create_dir(&staging, 0o700)?;
            let extra: Vec<PathBuf> = match spec.listen {
                Listen::Socket => vec![app_dir.to_owned()],
                _ => Vec::new(),
            };
            let plan = Plan::new(ns, &staging, spec.cwd.as_deref(), &extra)
                .map_err(|err| SuperviseError::io("prepare the namespace of", &staging, err))?;
            Some(Arc::new(plan))
        }
    };
    let probe = match &spec.health {
        None => Probe::Connect,
        Some(HealthCheck::Http(path)) => Probe::Http(values.apply(path)),
        Some(HealthCheck::Command(command)) => Probe::Command {
            argv: command.iter().map(|arg| values.apply(arg)).collect(),
            env: env.clone(),
            plan: plan.clone(),
        },
    };
    Ok(Instance {
        spec: Arc::clone(spec),
        index,
        endpoint,
        argv,
        env,
        cwd: spec.cwd.clone(),
        probe,
        pid_file,
        plan,
        source,
        sink,
        status,
        pgid: Arc::new(AtomicU32::new(0)),
    })
}

impl SupervisorHandle {
    /// The spec the instances run.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Every instance's status.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.status.borrow().clone()
    }

    /// Where the instances listen, in instance order (for the web-server mount).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.status
            .borrow()
            .iter()
            .map(|s| s.endpoint.clone())
            .collect()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<Vec<InstanceStatus>> {
        self.status.clone()
    }

    /// Waits until every instance is `Running`. Fails at once when an instance gave up or
    /// was stopped, and at `timeout` otherwise; the error lists every instance's state.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), HealthError> {
        let mut status = self.status.clone();
        let hopeless = |all: &[InstanceStatus]| {
            all.iter()
                .find(|s| {
                    matches!(
                        s.state,
                        InstanceState::GaveUp { .. } | InstanceState::Stopped
                    )
                })
                .map(|s| s.instance)
        };
        let outcome = tokio::time::timeout(
            timeout,
            status.wait_for(|all| {
                all.iter().all(|s| s.state.is_running()) || hopeless(all).is_some()
            }),
        )
        .await;
        let statuses = self.status();
        match outcome {
            Ok(Ok(_)) if statuses.iter().all(|s| s.state.is_running()) => Ok(()),
            Ok(_) => Err(HealthError::Hopeless {
                app: self.spec.app.clone(),
                process: self.spec.name.clone(),
                instance: hopeless(&statuses).unwrap_or_default(),
                statuses,
            }),
            Err(_) => Err(HealthError::Timeout {
                app: self.spec.app.clone(),
                process: self.spec.name.clone(),
                timeout,
                statuses,
            }),
        }
    }

    /// Restarts instance `index` (all with `None`) now: a given-up instance gets a fresh
    /// crash count, one in backoff skips the wait, a live one is stopped gracefully first.
    pub fn restart(&self, index: Option<u32>) {
        for (at, control) in self.controls.iter().enumerate() {
            if index.is_none_or(|wanted| wanted as usize == at) {
                let _ = control.send(Control::Restart);
            }
        }
    }

    /// Stops every instance (the stop signal to its group, `SIGKILL` after the grace
    /// period), waits for them, releases ports and removes sockets and pid files.
    pub async fn stop(&self) -> Vec<InstanceStatus> {
        for control in &self.controls {
            let _ = control.send(Control::Stop);
        }
        let tasks: Vec<JoinHandle<()>> = self.lock_tasks().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        self.release();
        tracing::info!(app = %self.spec.app, process = %self.spec.name, "process supervision stopped");
        self.status()
    }

    fn release(&self) {
        let held = std::mem::take(&mut *self.lock_held());
        for port in held.ports {
            self.ports.release(port);
        }
        for file in held.files {
            let _ = std::fs::remove_file(file);
        }
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for SupervisorHandle {
    fn drop(&mut self) {
        for task in self.lock_tasks().drain(..) {
            task.abort();
        }
        for pgid in &self.pgids {
            let pgid = pgid.swap(0, Ordering::SeqCst);
            if let Ok(raw) = i32::try_from(pgid)
                && raw > 0
            {
                let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
        self.release();
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), SuperviseError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|err| SuperviseError::io("create directory", path, err))
}

/// Kills the process group of a previous run's instance whose pid file was left behind,
/// if the process is still that instance (its environment carries the instance key).
fn kill_stale(pid_file: &Path, key: &str) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    else {
        return;
    };
    let marker = format!("FURROW_INSTANCE_KEY={key}");
    let is_ours = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|environ| {
            environ
                .split(|b| *b == 0)
                .any(|entry| entry == marker.as_bytes())
        })
        .unwrap_or(false);
    if is_ours {
        tracing::warn!(
            pid,
            instance = key,
            "killing an instance left running by a previous run"
        );
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pid_file);
}
