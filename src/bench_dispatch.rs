//! `furrow bench dispatch`: the scheduler and store under load. A real master (its own
//! process, its real store) serves simulated agents that live in this process and speak
//! the real protocol: they register with tags, software and resources, heartbeat every
//! two seconds, and finish each task the moment it arrives. Jobs are spread over ten
//! weighted queues with requirements, so fair share and matching are on the measured
//! path. It prints tasks assigned, started, finished and durably stored per second, the
//! submit-to-assign latency on an idle farm, and the master's peak memory.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use furrow_protocol::handshake::{self, Hello, Role};
use furrow_protocol::{
    AgentMessage, CommandParams, FrameCodec, GpuInfo, Heartbeat, JobId, JobSubmission, Json,
    MasterMessage, QueueSpec, Registration, Requirements, TaskFinished, TaskStarted,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;
use uuid::Uuid;

use crate::up::concrete_addr;

/// `furrow bench dispatch`.
#[derive(Debug, Args)]
pub struct DispatchArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1_000)]
    agents: u32,
    /// Slots per agent.
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Tasks, spread over twenty jobs in ten queues.
    #[arg(long, default_value_t = 200_000)]
    tasks: u64,
    /// Single-task jobs submitted one at a time on the idle farm for the latency figures.
    #[arg(long, default_value_t = 200)]
    probes: u32,
    /// Data directory of the master; reuse one to measure a store that holds history
    /// (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long)]
    database_url: Option<String>,
}

/// The master process, stopped when dropped.
pub(crate) struct MasterProcess {
    child: Child,
    data_dir: PathBuf,
    temporary: bool,
}

impl MasterProcess {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the master, MiB.
    pub fn peak_rss_mb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024)
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// What the simulated agents report to the benchmark.
pub(crate) struct Tally {
    /// Results the master acknowledged as durably stored.
    pub stored: AtomicU64,
    /// Assignments as they arrive: job and when.
    assigned: mpsc::UnboundedSender<(JobId, Instant)>,
}

/// One simulated agent: registers, heartbeats, finishes each task at once.
async fn agent(
    addr: String,
    index: u32,
    slots: u32,
    join_token: String,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // Stable ids, as real agents keep theirs in their state directory: a second run on
    // the same data directory meets the same agents again, not a thousand new ones.
    let id = Uuid::from_u64_pair(0x6675_7272_6f77_0000, u64::from(index) + 1);
    let mut hello = Hello::new(Role::Agent, id);
    hello.credentials = Some(join_token);
    // A thousand agents starting at once overflow the handshakes the master takes from
    // one address; like real agents, they try again shortly.
    let mut tries = 0;
    // Spread over the loopback addresses 127.0.0.1-250, as agents of many hosts would be:
    // the master takes only so many handshakes at once from one address.
    let target: std::net::SocketAddr = addr.parse().context("the master's address")?;
    let source = std::net::SocketAddr::from(([127, 0, 0, (index % 250 + 1) as u8], 0));
    let stream = loop {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(source)?;
        let mut stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        match handshake::connect(&mut stream, &hello).await {
            Ok(_) => break stream,
            Err(e) if tries < 50 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "simulated agent retries its handshake");
                tokio::time::sleep(Duration::from_millis(20 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut framed: Framed<TcpStream, FrameCodec<AgentMessage, MasterMessage>> =
        Framed::new(stream, FrameCodec::new(furrow_protocol::DEFAULT_MAX_FRAME));
    // One agent in ten is a laptop; every one has blender and a GPU.
    let mut tags = vec!["linux".to_string()];
    if index.is_multiple_of(10) {
        tags.push("laptop".into());
    }
    framed
        .send(AgentMessage::Register(Registration {
            agent_id: id,
            name: format!("sim-{index:05}"),
            hostname: format!("sim-{index:05}"),
            os: "linux".into(),
            cpus: 16,
            ram_mb: 65_536,
            gpus: vec![GpuInfo {
                index: 0,
                name: "sim".into(),
                memory_mb: 8_192,
            }],
            tags,
            software: BTreeMap::from([("blender".to_string(), "4.2.1".to_string())]),
            slots,
            version: env!("CARGO_PKG_VERSION").into(),
            running: Vec::new(),
        }))
        .await?;
    // Real agents start at different times, so their heartbeats are spread over the
    // interval; agents started in one loop would all beat in the same millisecond.
    let period = Duration::from_secs(2);
    let phase = period.mul_f64(f64::from(index % 1000) / 1000.0);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    loop {
        tokio::select! {
            frame = framed.next() => {
                let Some(frame) = frame else { return Ok(()) };
                match frame? {
                    MasterMessage::Assign(assign) => {
                        let now = chrono::Utc::now();
                        let _ = tally.assigned.send((assign.job_id, Instant::now()));
                        framed
                            .feed(AgentMessage::TaskStarted(TaskStarted { task: assign.task, pid: 1, at: now }))
                            .await?;
                        framed
                            .send(AgentMessage::TaskFinished(TaskFinished {
                                task: assign.task,
                                exit_code: Some(0),
                                signal: None,
                                error: None,
                                limit: None,
                                at: now,
                                outputs: Vec::new(),
                            }))
                            .await?;
                    }
                    MasterMessage::ResultStored(_) => {
                        tally.stored.fetch_add(1, Ordering::Relaxed);
                    }
                    MasterMessage::Registered(_)
                    | MasterMessage::Cancel(_)
                    | MasterMessage::JobType(_)
                    | MasterMessage::Credential(_)
                    | MasterMessage::Stale(_)
                    | MasterMessage::Deploy(_)
                    | MasterMessage::Bundle(_)
                    | MasterMessage::Undeploy(_) => {}
                }
            }
            _ = heartbeat.tick() => {
                framed
                    .send(AgentMessage::Heartbeat(Heartbeat { free_ram_mb: 60_000, load: 0.0, running: Vec::new() }))
                    .await?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

pub(crate) fn command_job(title: String, frames: String) -> Result<JobSubmission> {
    let params = CommandParams {
        command: vec!["true".into()],
        shell: false,
        env: Default::default(),
        app: None,
    };
    Ok(JobSubmission::new(
        title,
        Json(serde_json::to_value(params)?),
        frames,
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the benchmark.
/// A master process with simulated agents registered to it.
pub(crate) struct SimFarm {
    /// The master.
    pub master: MasterProcess,
    /// A tool connection to it.
    pub client: furrow_protocol::Client,
    /// What the agents count.
    pub tally: Arc<Tally>,
    /// Assignments as they arrive: job and when.
    pub assigned: mpsc::UnboundedReceiver<(JobId, Instant)>,
    /// Stops the agents.
    pub stop: watch::Sender<bool>,
    /// The agents' tasks.
    pub agents: Vec<tokio::task::JoinHandle<Result<()>>>,
    /// Agents online.
    pub online: u64,
    /// The database's kind.
    pub database: String,
}

impl SimFarm {
    /// Starts a master on `data_dir` (a fresh temporary one when none) and `count`
    /// simulated agents of `slots` slots, and waits until all of them are online.
    pub async fn start(
        count: u32,
        slots: u32,
        data_dir: Option<&PathBuf>,
        database_url: Option<&String>,
    ) -> Result<Self> {
        let (data_dir, temporary) = match data_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!("furrow-bench-sim-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&data_dir)?;
        let listen = concrete_addr("127.0.0.1:0")?;
        let http = concrete_addr("127.0.0.1:0")?;
        let log = std::fs::File::create(data_dir.join("master.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["master", "--listen", &listen, "--http", &http])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--heartbeat-timeout", "60"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = database_url {
            command.env("FURROW_DATABASE_URL", url);
        }
        let master = MasterProcess {
            child: command.spawn().context("cannot start furrow master")?,
            data_dir: data_dir.clone(),
            temporary,
        };
        let start = Instant::now();
        let client = loop {
            if let Ok(client) = crate::bench::connect_local(&listen, &data_dir).await {
                break client;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the master did not start; see {}",
                    data_dir.join("master.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let health = client.health().await?;
        let (assigned_tx, assigned) = mpsc::unbounded_channel();
        let tally = Arc::new(Tally {
            stored: AtomicU64::new(0),
            assigned: assigned_tx,
        });
        let (stop, stopped) = watch::channel(false);
        let join_token = crate::bench::read_token(&data_dir, furrow_master::JOIN_TOKEN_FILE)?;
        let mut agents = Vec::with_capacity(count as usize);
        for index in 0..count {
            agents.push(tokio::spawn(agent(
                listen.clone(),
                index,
                slots,
                join_token.clone(),
                tally.clone(),
                stopped.clone(),
            )));
        }
        let online = loop {
            let health = client.health().await?;
            if health.agents_online >= u64::from(count) {
                break health.agents_online;
            }
            if let Some(failed) = agents.iter().position(|a| a.is_finished()) {
                let why = match agents.swap_remove(failed).await {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "the master closed its connection".into(),
                    Err(e) => e.to_string(),
                };
                bail!("simulated agent {failed} stopped before registering: {why}");
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("only {} of {count} agents registered", health.agents_online);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            master,
            client,
            tally,
            assigned,
            stop,
            agents,
            online,
            database: health.database,
        })
    }

    /// Stops the agents, then the master.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.agents {
            let _ = handle.await;
        }
        drop(self.client);
        drop(self.master);
    }
}

pub async fn run(args: DispatchArgs) -> Result<()> {
    if args.agents == 0 || args.slots == 0 || args.tasks < 20 {
        bail!("--agents and --slots must be at least 1, --tasks at least 20");
    }
    let mut farm = SimFarm::start(
        args.agents,
        args.slots,
        args.data_dir.as_ref(),
        args.database_url.as_ref(),
    )
    .await?;
    let (online, client, tally) = (farm.online, &farm.client, farm.tally.clone());
    let health_database = farm.database.clone();
    println!(
        "dispatch bench: {online} simulated agents x {} slots, {} database, {} cpus",
        args.slots,
        health_database,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Ten queues weighted 1..10 (kept when the data directory is reused).
    let existing: Vec<String> = client
        .list_queues()
        .await?
        .into_iter()
        .map(|q| q.path)
        .collect();
    for q in 0..10u32 {
        if !existing.contains(&format!("/bench-{q}")) {
            client
                .create_queue(QueueSpec {
                    name: format!("bench-{q}"),
                    parent: None,
                    priority: 0,
                    weight: q + 1,
                    min_agents: 0,
                    max_agents: None,
                })
                .await?;
        }
    }
    // Twenty jobs, two per queue, half matched by tags and cpus, half by software.
    let per_job = args.tasks / 20;
    let total = per_job * 20;
    let before = tally.stored.load(Ordering::Relaxed);
    let began = Instant::now();
    for j in 0..20u64 {
        let mut job = command_job(format!("bench-{j}"), format!("1-{per_job}"))?;
        job.queue = format!("bench-{}", j % 10);
        job.requirements = if j.is_multiple_of(2) {
            Requirements {
                cpus: 1,
                tags: vec!["linux".into(), "!laptop".into()],
                ..Requirements::default()
            }
        } else {
            Requirements {
                ram_mb: 512,
                software: BTreeMap::from([("blender".to_string(), ">=3.0, <5".to_string())]),
                ..Requirements::default()
            }
        };
        client.submit_job(job).await?;
    }
    loop {
        let stored = tally.stored.load(Ordering::Relaxed) - before;
        if stored >= total {
            break;
        }
        if let Some(failed) = farm.agents.iter().position(|a| a.is_finished()) {
            bail!("simulated agent {failed} stopped during the run ({stored} of {total} stored)");
        }
        if began.elapsed() > Duration::from_secs(1800) {
            bail!("only {stored} of {total} tasks stored after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = began.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "throughput: {total} tasks assigned, started, finished and stored in {:.2} s",
        elapsed.as_secs_f64()
    );

    // Latency on the idle farm: one single-task job at a time.
    while farm.assigned.try_recv().is_ok() {}
    let mut latencies = Vec::with_capacity(args.probes as usize);
    let mut pending: HashMap<JobId, Instant> = HashMap::new();
    for p in 0..args.probes {
        let sent = Instant::now();
        let view = client
            .submit_job(command_job(format!("probe-{p}"), "1".into())?)
            .await?;
        pending.insert(view.id, sent);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pending.contains_key(&view.id) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((job, at))) = tokio::time::timeout(left, farm.assigned.recv()).await else {
                bail!("probe job {} was not assigned within 10 s", view.id);
            };
            if let Some(sent) = pending.remove(&job) {
                latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let rss = farm.master.peak_rss_mb().unwrap_or(0);
    farm.stop().await;
    println!(
        "dispatch: {rate:.0} tasks/s, p50 {:.2} ms, p99 {:.2} ms, rss {rss} MB",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    Ok(())
}
