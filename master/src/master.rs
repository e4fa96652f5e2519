//! Starting and stopping a master: builds the actor system, binds both listeners,
//! announces the bound addresses, and shuts down cleanly.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::prelude::*;
use actix_web::{App, HttpServer};
use dashmap::DashMap;
use furrow_protocol::WorkState;
use tokio::sync::oneshot;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::changes::ChangeFeed;
use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::http;
use crate::jobtypes::Catalog;
use crate::listener::{Listener, SessionDeps};
use crate::logs::{FlushLogs, LogCollector, LogQueue, LogSink, live_logs};
use crate::registry::Registry;
use crate::scheduler::{Restore, Scheduler, SchedulerStats};
use crate::service::{Actors, Service};
use crate::store::records::{AgentRow, LoadedTask, now_ms};
use crate::store::{Db, Flush, Store, StoreReader};

/// Name of the file in the data directory that holds the bound addresses.
pub const ADDR_FILE: &str = "master.addr";

/// Name of the file in the data directory that holds the fingerprint of the certificate
/// the master serves (when it serves TLS).
pub const FINGERPRINT_FILE: &str = "master.fingerprint";

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "master.lock";

/// The addresses a running master is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// Agent and client TCP port.
    pub listen: SocketAddr,
    /// REST API and dashboard.
    pub http: SocketAddr,
}

/// A master running on a background thread (see [`spawn`]).
pub struct MasterHandle {
    addrs: BoundAddrs,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), MasterError>>>,
}

impl MasterHandle {
    /// The bound addresses.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Stops the master as SIGTERM would and waits until it has flushed and exited.
    pub fn shutdown(mut self) -> Result<(), MasterError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), MasterError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| MasterError::Stopped("the master thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for MasterHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            error!(error = %e, "master stopped with an error");
        }
    }
}

/// Runs a master until SIGINT or SIGTERM, then shuts it down cleanly (the store is
/// flushed before this returns).
pub fn run(config: MasterConfig) -> Result<(), MasterError> {
    serve(config, None, shutdown_signal())
}

/// Starts a master on a background thread and returns once it serves both ports.
pub fn spawn(config: MasterConfig) -> Result<MasterHandle, MasterError> {
    let (ready_sender, ready) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("furrow-master".into())
        .spawn(move || {
            serve(config, Some(ready_sender), async move {
                let _ = stopped.await;
            })
        })?;
    match ready.recv() {
        Ok(addrs) => Ok(MasterHandle {
            addrs,
            stop: Some(stop),
            thread: Some(thread),
        }),
        // The thread ended before it was ready: its result says why.
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(MasterError::Stopped(
                "the master exited during startup".into(),
            )),
            Err(_) => Err(MasterError::Stopped("the master thread panicked".into())),
        },
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("received SIGINT; shutting down"),
                _ = terminate.recv() => info!("received SIGTERM; shutting down"),
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the master");
            let _ = tokio::signal::ctrl_c().await;
            info!("received SIGINT; shutting down");
        }
    }
}

fn serve(
    config: MasterConfig,
    ready: Option<std::sync::mpsc::Sender<BoundAddrs>>,
    stop: impl Future<Output = ()>,
) -> Result<(), MasterError> {
    let system = actix::System::new();
    // The log collector does blocking file I/O, so it gets a thread of its own.
    let log_arbiter = system.block_on(async { Arbiter::new() });
    let log_thread = log_arbiter.handle();
    let result = system.block_on(async move {
        let running = boot(&config, &log_thread).await?;
        if let Some(ready) = ready {
            let _ = ready.send(running.addrs);
        }
        stop.await;
        running.shutdown().await;
        Ok(())
    });
    System::current().stop();
    log_arbiter.stop();
    log_arbiter.join().ok();
    result
}

struct Running {
    addrs: BoundAddrs,
    /// Held while the master runs: a second master on the same directory is refused.
    _lock: std::fs::File,
    http: actix_web::dev::ServerHandle,
    store: Addr<Store>,
    logs: Addr<LogCollector>,
}

/// How long a stopping master waits for its last changes to be stored.
const FINAL_FLUSH_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

impl Running {
    /// Stops taking requests, then makes everything durable.
    async fn shutdown(self) {
        info!("master shutting down");
        self.http.stop(true).await;
        if let Err(e) = self.logs.send(FlushLogs).await {
            warn!(error = %e, "log collector unavailable at shutdown");
        }
        // A store that cannot write retries until it can; a shutdown does not wait for
        // that. What it loses was never acknowledged: agents keep their results, and
        // submissions were answered only once stored.
        match tokio::time::timeout(FINAL_FLUSH_WITHIN, self.store.send(Flush)).await {
            Ok(Ok(Ok(()))) => info!("store flushed"),
            Ok(Ok(Err(e))) => error!(error = %e, "final store flush failed"),
            Ok(Err(e)) => error!(error = %e, "store unavailable at shutdown"),
            Err(_) => error!(
                within_s = FINAL_FLUSH_WITHIN.as_secs(),
                "the store could not write its last changes; stopping without them"
            ),
        }
    }
}

/// Agents of the tasks stored as running.
fn running_agents(tasks: &[LoadedTask]) -> HashSet<Uuid> {
    tasks
        .iter()
        .filter(|task| task.state == WorkState::Running)
        .filter_map(|task| task.agent)
        .collect()
}

/// A stand-in for an agent that holds tasks but has no row of its own.
fn placeholder_agent(id: Uuid) -> AgentRow {
    AgentRow {
        id,
        name: id.to_string(),
        hostname: String::new(),
        os: String::new(),
        cpus: 0,
        ram_mb: 0,
        gpus: "[]".into(),
        tags: "[]".into(),
        software: "{}".into(),
        slots: 0,
        version: String::new(),
        last_seen: now_ms(),
    }
}

fn create_dir(path: &Path) -> Result<(), MasterError> {
    std::fs::create_dir_all(path).map_err(|source| MasterError::DataDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Takes `<data_dir>/master.lock`, so two masters never share a database and logs.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, MasterError> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| MasterError::DataDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(MasterError::Config(format!(
            "data directory {} is in use by another master",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(MasterError::DataDir { path, source }),
    }
}

/// Takes over the listening sockets a parent process handed down.
fn take_listeners(
    fds: crate::config::InheritedListeners,
) -> Result<(std::net::TcpListener, std::net::TcpListener), MasterError> {
    let take = |fd: i32, what: &str| -> Result<std::net::TcpListener, MasterError> {
        let bad =
            |reason: String| MasterError::Config(format!("inherited {what} socket {fd}: {reason}"));
        // Only a listening TCP socket is taken: an fd number that names anything else
        // (a file, a pipe, nothing) is refused before it is owned.
        let mut accepting: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt with a correctly sized out-parameter; a bad fd fails.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut accepting as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(bad(std::io::Error::last_os_error().to_string()));
        }
        if accepting == 0 {
            return Err(bad("not a listening socket".into()));
        }
        // SAFETY: the fd is an open listening socket, handed to this process to own.
        let listener =
            unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        listener.local_addr().map_err(|e| bad(e.to_string()))?;
        Ok(listener)
    };
    Ok((take(fds.listen_fd, "agent")?, take(fds.http_fd, "http")?))
}

fn write_addr_file(data_dir: &Path, addrs: BoundAddrs) -> Result<(), MasterError> {
    let text = serde_json::json!({
        "listen": addrs.listen.to_string(),
        "http": addrs.http.to_string(),
    })
    .to_string();
    let tmp = data_dir.join(format!("{ADDR_FILE}.tmp"));
    let map = |source| MasterError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(map)?;
    std::fs::rename(&tmp, data_dir.join(ADDR_FILE)).map_err(map)
}

/// Hands the memory freed after the startup load back to the system. The load's rows
/// and the page cache of its connection were allocated in small pieces by several
/// threads; glibc keeps freed pieces in its arenas, so without this a master restarted
/// with a million queued tasks kept about 50 MB more resident, more or less at random.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's own arenas to the kernel; it
    // may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn boot(config: &MasterConfig, log_thread: &ArbiterHandle) -> Result<Running, MasterError> {
    if config.heartbeat_timeout.is_zero() || config.heartbeat_interval.is_zero() {
        return Err(MasterError::Config(
            "heartbeat_interval and heartbeat_timeout must be positive".into(),
        ));
    }
    let data_dir = config.data_dir.clone();
    create_dir(&data_dir)?;
    create_dir(&data_dir.join("logs"))?;
    let lock = lock_data_dir(&data_dir)?;

    let db = Db::open(config.database_url.as_deref(), &data_dir).await?;
    let reader = StoreReader::new(db.clone());
    // Every unfinished task is read once, through a connection with a small cache,
    // closed afterwards: the pages it read do not stay cached (and resident).
    let loader = db.alone().await?;
    let loaded = StoreReader::new(loader.clone()).load().await?;
    loader.close().await?;
    let catalog = Arc::new(Catalog::new(
        reader.jobtypes().await?,
        reader.path_maps().await?,
    ));
    let changes = ChangeFeed::new();

    let store = {
        let (db, changes) = (db.clone(), changes.clone());
        let (max_job_id, max_task_id) = (loaded.max_job_id, loaded.max_task_id);
        Supervisor::start(move |_| Store::new(db, max_job_id, max_task_id, changes))
    };
    let live = live_logs();
    let log_queue = LogQueue::new();
    let logs = {
        let (data_dir, store, live) = (data_dir.clone(), store.clone(), live.clone());
        let queue = log_queue.clone();
        Supervisor::start_in_arbiter(log_thread, move |_| {
            LogCollector::new(data_dir, store, live, queue)
        })
    };
    let log_sink = LogSink::new(log_queue, logs.clone());
    let holders = running_agents(&loaded.tasks);
    let stats = Arc::new(SchedulerStats::default());
    let scheduler = {
        let (store, logs, stats) = (store.clone(), log_sink.clone(), stats.clone());
        let restore = Restore {
            jobs: loaded.jobs,
            tasks: loaded.tasks,
            ended_parents: loaded.ended_parents,
            queues: loaded.queues,
        };
        Supervisor::start(move |_| Scheduler::new(restore, store, logs, stats))
    };
    release_freed_memory();
    // Every agent that holds a running task must be known to the registry, or nothing
    // would ever declare it lost and its tasks would wait forever.
    let mut known_agents = loaded.agents;
    for agent in holders {
        if !known_agents.iter().any(|row| row.id == agent) {
            known_agents.push(placeholder_agent(agent));
        }
    }
    let apps = {
        let rows = reader.apps().await?;
        let releases = reader.app_releases().await?;
        let next_event = reader.max_app_event_id().await?;
        let actor = crate::apps::Apps::new(
            store.clone(),
            data_dir.clone(),
            rows,
            releases,
            next_event,
            changes.clone(),
        )?;
        Supervisor::start(move |_| actor)
    };
    let agents = Arc::new(DashMap::new());
    let registry = {
        let (agents, scheduler, store, changes) = (
            agents.clone(),
            scheduler.clone(),
            store.clone(),
            changes.clone(),
        );
        let known = known_agents;
        let settings = loaded.agent_settings;
        let (interval, timeout) = (config.heartbeat_interval, config.heartbeat_timeout);
        let forget = config.forget_agents_after;
        let apps = apps.clone();
        Supervisor::start(move |_| {
            Registry::new(
                &known, settings, agents, scheduler, store, interval, timeout, changes,
            )
            .forget_agents_after(forget)
            .with_apps(apps)
        })
    };
    let auth = crate::auth::Auth::load(reader.clone(), store.clone(), &data_dir).await?;
    auth.bootstrap(&data_dir).await?;
    let service = Service::new(
        reader,
        Actors {
            store: store.clone(),
            scheduler: scheduler.clone(),
            logs: logs.clone(),
            registry: registry.clone(),
            apps: apps.clone(),
        },
        live,
        agents,
        stats,
        catalog,
        auth,
        data_dir.clone(),
    );

    {
        let (inbox_dir, inbox_service) = (data_dir.clone(), service.clone());
        Supervisor::start(move |_| crate::apps::inbox::Inbox::new(inbox_dir, inbox_service));
        let (apps, recurrent_service) = (apps.clone(), service.clone());
        Supervisor::start(move |_| crate::apps::recurrent::Recurrent::new(apps, recurrent_service));
    }

    let tls = match &config.tls {
        Some((cert, key)) => {
            let (server, fingerprint) = furrow_protocol::tls::server_config(cert, key)
                .map_err(|e| MasterError::Config(e.to_string()))?;
            info!(
                fingerprint,
                "serving TLS; clients and agents pin it with --fingerprint, or check it with --ca"
            );
            std::fs::write(data_dir.join(FINGERPRINT_FILE), format!("{fingerprint}\n"))?;
            Some(server)
        }
        None => {
            let _ = std::fs::remove_file(data_dir.join(FINGERPRINT_FILE));
            None
        }
    };
    let inherited = config.inherited.map(take_listeners).transpose()?;
    let tcp = match &inherited {
        Some((listen, _)) => listen
            .try_clone()
            .and_then(|listen| {
                listen.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listen)
            })
            .map_err(|source| MasterError::Bind {
                addr: format!("inherited listener {}", config.listen),
                source,
            })?,
        None => tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| MasterError::Bind {
                addr: config.listen.clone(),
                source,
            })?,
    };
    let listen = tcp.local_addr()?;
    let deps = SessionDeps {
        registry,
        scheduler,
        logs: log_sink,
        apps,
        service: service.clone(),
        max_frame: config.max_frame,
        node_id: Uuid::new_v4(),
        clients: Arc::new(tokio::sync::Semaphore::new(crate::listener::MAX_CLIENTS)),
        tls: tls.clone().map(tokio_rustls::TlsAcceptor::from),
        // Always room for two frames of the largest size this master accepts.
        frame_budget: furrow_protocol::FrameBudget::new(
            crate::listener::FRAME_BUDGET.max(2 * config.max_frame),
        ),
    };
    Supervisor::start(move |_| Listener::new(tcp, deps));

    let http_listener = match inherited {
        Some((_, http)) => http,
        None => std::net::TcpListener::bind(&config.http).map_err(|source| MasterError::Bind {
            addr: config.http.clone(),
            source,
        })?,
    };
    let http_addr = http_listener.local_addr()?;
    let feed = http::dashboard::Feed::start(service.clone(), changes);
    let names = http::guard::HostNames(Arc::new(config.http_names.clone()));
    let server = HttpServer::new(move || {
        App::new()
            // The guard runs first (the last `wrap` is the outermost): a cross-site request
            // is refused before any credentials are looked at.
            .wrap(actix_web::middleware::from_fn(http::auth::authenticate))
            .wrap(actix_web::middleware::from_fn(http::guard::guard))
            .app_data(actix_web::web::Data::new(names.clone()))
            .configure(http::configure(service.clone(), feed.clone()))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1);
    let bind_error = |source| MasterError::Bind {
        addr: config.http.clone(),
        source,
    };
    let server = match tls {
        Some(tls) => server
            .listen_rustls_0_23(http_listener, (*tls).clone())
            .map_err(bind_error)?,
        None => server.listen(http_listener).map_err(bind_error)?,
    }
    .run();
    let http = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            error!(error = %e, "http server failed");
        }
    });

    let addrs = BoundAddrs {
        listen,
        http: http_addr,
    };
    write_addr_file(&data_dir, addrs)?;
    if config.tls.is_none() && (!listen.ip().is_loopback() || !http_addr.ip().is_loopback()) {
        warn!(
            listen = %listen,
            http = %http_addr,
            "serving other hosts over plain TCP: tokens, job parameters and logs cross the network unencrypted; keep this network private or put a TLS proxy in front"
        );
    }
    info!(listen = %listen, http = %http_addr, "master ready");
    Ok(Running {
        addrs,
        _lock: lock,
        http,
        store,
        logs,
    })
}
