//! `furrow up`: a whole farm on this machine. The master and the local agents run as child
//! processes of this one (`furrow master`, `furrow agent`), each restarted with a capped
//! backoff when it dies; Ctrl-C or SIGTERM stops them all.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::UpArgs;

/// First restart delay of a child that died; doubled per quick death up to the cap.
const RESTART_DELAY: Duration = Duration::from_millis(500);
const RESTART_DELAY_CAP: Duration = Duration::from_secs(30);
/// A child that ran this long before dying is restarted at the first delay again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long children get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the master gets to open its database and bind its ports.
const MASTER_START_DEADLINE: Duration = Duration::from_secs(120);

/// One supervised child process.
struct Service {
    name: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// Open file descriptors the process inherits (the master's listening sockets).
    inherit: Vec<i32>,
}

pub fn run(args: UpArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(up(args))
}

/// Resolves port 0 to a concrete free port (for processes that bind it themselves).
pub(crate) fn concrete_addr(addr: &str) -> Result<String> {
    if !addr.ends_with(":0") {
        return Ok(addr.to_string());
    }
    Ok(bind(addr)?.local_addr()?.to_string())
}

/// Environment variables that hand the master the listening sockets `furrow up` bound
/// (their file descriptor numbers).
pub(crate) const LISTEN_FD_ENV: &str = "FURROW_LISTEN_FD";
/// See [`LISTEN_FD_ENV`].
pub(crate) const HTTP_FD_ENV: &str = "FURROW_HTTP_FD";

/// Binds `addr` (port 0 picks a free port). `furrow up` keeps the socket for its whole
/// life and hands it to every master it starts: a restarted master comes back on the
/// address its agents know, no other process can take the port meanwhile, and agents
/// that connect while the master restarts wait in the backlog.
fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn up(args: UpArgs) -> Result<()> {
    if args.agents > 256 {
        bail!("--agents {}: at most 256 local agents", args.agents);
    }
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let data_dir = fs::canonicalize(&args.data_dir)?;
    let run_dir = data_dir.join("run");
    fs::create_dir_all(&run_dir)?;
    let listen_socket = bind(&args.listen)?;
    let http_socket = bind(&args.http)?;
    let listen = listen_socket.local_addr()?.to_string();
    let http = http_socket.local_addr()?.to_string();
    let exe = std::env::current_exe().context("cannot find the furrow executable")?;

    let mut env = vec![
        (
            LISTEN_FD_ENV.to_string(),
            listen_socket.as_raw_fd().to_string(),
        ),
        (HTTP_FD_ENV.to_string(), http_socket.as_raw_fd().to_string()),
    ];
    if let Some(url) = &args.database_url {
        // Passed in the environment rather than argv, so a password stays out of `ps`.
        env.push(("FURROW_DATABASE_URL".to_string(), url.clone()));
    }
    let mut master_args: Vec<OsString> = vec![
        "master".into(),
        "--data-dir".into(),
        data_dir.clone().into(),
        "--listen".into(),
        listen.clone().into(),
        "--http".into(),
        http.clone().into(),
        "--heartbeat-timeout".into(),
        args.heartbeat_timeout.to_string().into(),
        "--forget-agents-after".into(),
        args.forget_agents_after.to_string().into(),
    ];
    for name in &args.http_names {
        master_args.extend(["--http-name".into(), name.into()]);
    }
    if let Some((cert, key)) = args.tls.files() {
        master_args.extend([
            "--tls-cert".into(),
            std::path::absolute(cert)?.into(),
            "--tls-key".into(),
            std::path::absolute(key)?.into(),
        ]);
    }
    let master = Service {
        name: "master".into(),
        args: master_args,
        env,
        log: run_dir.join("master.log"),
        inherit: vec![listen_socket.as_raw_fd(), http_socket.as_raw_fd()],
    };

    // A master already on this data directory keeps it: say so, and touch nothing of its.
    in_use_check(&data_dir)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let addr_file = data_dir.join(furrow_master::ADDR_FILE);
    let _ = fs::remove_file(&addr_file);
    let mut supervisors = vec![tokio::spawn(supervise(
        exe.clone(),
        master,
        stop_rx.clone(),
    ))];
    wait_for_master(&addr_file, &run_dir.join("master.log"), &supervisors[0]).await?;
    // With TLS, the local agents pin the certificate the master serves.
    let fingerprint = fs::read_to_string(data_dir.join(furrow_master::FINGERPRINT_FILE))
        .ok()
        .map(|f| f.trim().to_string());

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let slots = args
        .slots
        .unwrap_or_else(|| (cpus / args.agents.max(1)).max(1));
    let host = hostname();
    let web = local_web_servers(&args)?;
    for i in 1..=args.agents {
        let name = format!("{host}-{i}");
        let mut agent_args: Vec<OsString> = vec![
            "agent".into(),
            "--master".into(),
            listen.clone().into(),
            "--name".into(),
            name.into(),
            "--slots".into(),
            slots.to_string().into(),
            "--state-dir".into(),
            data_dir.join("agents").join(format!("agent-{i}")).into(),
            "--join-token-file".into(),
            data_dir.join(furrow_master::JOIN_TOKEN_FILE).into(),
        ];
        if let Some(dir) = &args.jobtypes_dir {
            let dir = std::path::absolute(dir)?;
            agent_args.extend(["--jobtypes-dir".into(), dir.into()]);
        }
        if let Some(print) = &fingerprint {
            agent_args.extend(["--fingerprint".into(), print.into()]);
        }
        if let Some(web) = &web {
            let (port, ports) = web.of_agent(i);
            agent_args.extend([
                "--webserver".into(),
                web.kind.as_str().into(),
                "--webserver-port".into(),
                port.to_string().into(),
                "--app-ports".into(),
                format!("{}-{}", ports.start(), ports.end()).into(),
            ]);
        }
        let agent = Service {
            name: format!("agent-{i}"),
            args: agent_args,
            env: Vec::new(),
            log: run_dir.join(format!("agent-{i}.log")),
            inherit: Vec::new(),
        };
        supervisors.push(tokio::spawn(supervise(exe.clone(), agent, stop_rx.clone())));
    }

    let scheme = if fingerprint.is_some() {
        "https"
    } else {
        "http"
    };
    let login = login_link(&listen, &data_dir, fingerprint.as_deref()).await;
    println!("furrow is up");
    match login {
        Ok(token) => {
            println!("  dashboard  {scheme}://{http}/login?token={token}  (a one-time login link)")
        }
        Err(e) => {
            println!("  dashboard  {scheme}://{http}/");
            warn!(error = %e, "no login link: log in with a password, or make a link with `furrow token create --login`");
        }
    }
    println!("  master     {listen}  (agents and furrow commands connect here)");
    println!("  agents     {} local, {slots} slot(s) each", args.agents);
    if let Some(web) = &web {
        let addresses: Vec<String> = (1..=args.agents)
            .map(|i| format!("http://127.0.0.1:{}/", web.of_agent(i).0))
            .collect();
        println!("  apps       {} on {}", web.kind, addresses.join(", "));
    }
    println!(
        "  data       {}  (process logs in {})",
        data_dir.display(),
        run_dir.display()
    );
    println!(
        "  token      {}  (furrow commands run here find it; elsewhere set FURROW_TOKEN)",
        data_dir.join(furrow_master::ADMIN_TOKEN_FILE).display()
    );
    println!(
        "  try        furrow submit --title hello --frames 1-10 --wait -- echo frame {{frame}}"
    );
    println!("press Ctrl-C to stop");

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => info!("sigterm: stopping the farm"),
        _ = interrupt.recv() => info!("interrupted: stopping the farm"),
    }
    let _ = stop_tx.send(true);
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
    println!("furrow stopped");
    Ok(())
}

/// The local agents' web servers: agent i listens on `port + i - 1` and gets the i-th
/// slice of the app ports.
struct LocalWebServers {
    kind: furrow_agent::WebServerKind,
    port: u16,
    app_ports: std::ops::RangeInclusive<u16>,
    per_agent: u16,
}

impl LocalWebServers {
    /// The web server port and app ports of agent `i` (from 1).
    fn of_agent(&self, i: u32) -> (u16, std::ops::RangeInclusive<u16>) {
        let index = (i - 1) as u16;
        let first = self.app_ports.start() + index * self.per_agent;
        (self.port + index, first..=first + self.per_agent - 1)
    }
}

fn local_web_servers(args: &UpArgs) -> Result<Option<LocalWebServers>> {
    let (Some(kind), Some(port)) = (args.webserver, args.webserver_port) else {
        return Ok(None);
    };
    let agents = args.agents.max(1);
    if u32::from(port) + agents - 1 > u32::from(u16::MAX) || port == 0 {
        bail!(
            "--webserver-port {port}: {agents} agents need ports {port} to {port}+{}",
            agents - 1
        );
    }
    let span = u32::from(args.app_ports.end() - args.app_ports.start()) + 1;
    let per_agent = span / agents;
    if per_agent == 0 {
        bail!("--app-ports: {span} port(s) cannot be split among {agents} agents");
    }
    let web_ports = u32::from(port)..=u32::from(port) + agents - 1;
    let app_ports = u32::from(*args.app_ports.start())..=u32::from(*args.app_ports.end());
    if web_ports.start() <= app_ports.end() && app_ports.start() <= web_ports.end() {
        bail!("--webserver-port {port}: the agents' web server ports overlap --app-ports");
    }
    Ok(Some(LocalWebServers {
        kind,
        port,
        app_ports: args.app_ports.clone(),
        per_agent: per_agent as u16,
    }))
}

/// A one-time dashboard login link for the admin, made with `<data-dir>/admin.token`.
async fn login_link(listen: &str, data_dir: &Path, fingerprint: Option<&str>) -> Result<String> {
    let path = data_dir.join(furrow_master::ADMIN_TOKEN_FILE);
    let token =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let tls = match fingerprint {
        Some(print) => Some(furrow_protocol::tls::client_config(
            &furrow_protocol::tls::Verify::Fingerprint(print.to_string()),
        )?),
        None => None,
    };
    let options = furrow_protocol::ClientOptions {
        credentials: Some(token.trim().to_string()),
        tls,
        ..furrow_protocol::ClientOptions::default()
    };
    let client = furrow_protocol::Client::connect_with(listen, options).await?;
    let made = client
        .create_token(furrow_protocol::TokenSpec {
            label: "furrow up".into(),
            login: true,
            ..furrow_protocol::TokenSpec::default()
        })
        .await?;
    Ok(made.token)
}

/// Waits until the master has bound its ports (it writes `master.addr` then).
async fn wait_for_master(
    addr_file: &Path,
    log: &Path,
    supervisor: &tokio::task::JoinHandle<()>,
) -> Result<()> {
    let deadline = Instant::now() + MASTER_START_DEADLINE;
    while !addr_file.exists() {
        if Instant::now() > deadline || supervisor.is_finished() {
            let tail = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the master did not start; last lines of {}:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Fails when another master holds the data directory's lock.
fn in_use_check(data_dir: &Path) -> Result<()> {
    let path = data_dir.join(furrow_master::LOCK_FILE);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(file) => file,
        // No lock file: no master has used this directory yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "data directory {} is in use by another master; stop that farm first, or give this one another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Runs a child until told to stop, restarting it with a capped backoff whenever it dies.
async fn supervise(exe: PathBuf, service: Service, mut stop: watch::Receiver<bool>) {
    let mut delay = RESTART_DELAY;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&exe, &service) {
            Ok(child) => child,
            Err(e) => {
                warn!(service = %service.name, error = %e, "cannot start");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                delay = (delay * 2).min(RESTART_DELAY_CAP);
                continue;
            }
        };
        info!(service = %service.name, pid = child.id(), "started");
        tokio::select! {
            status = child.wait() => {
                match status {
                    Ok(s) => warn!(service = %service.name, status = %s, "exited; restarting"),
                    Err(e) => warn!(service = %service.name, error = %e, "lost; restarting"),
                }
            }
            _ = stop.changed() => {
                stop_child(&service.name, &mut child).await;
                return;
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            delay = RESTART_DELAY;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(RESTART_DELAY_CAP);
    }
}

fn spawn(exe: &Path, service: &Service) -> Result<tokio::process::Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&service.log)?;
    let mut command = Command::new(exe);
    command
        .args(&service.args)
        .envs(service.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let inherit = service.inherit.clone();
    // SAFETY: prctl and fcntl are async-signal-safe; the closure touches nothing else
    // (the list of fds was copied before the fork).
    unsafe {
        command.pre_exec(move || {
            // The farm's processes must not outlive `furrow up`, even if it is killed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Sockets are close-on-exec by default: these stay open in the child.
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(command.spawn()?)
}

async fn stop_child(name: &str, child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => info!(service = %name, "stopped"),
        Err(_) => {
            warn!(service = %name, "did not stop in time; killing");
            let _ = child.kill().await;
        }
    }
}
