//! `furrow bench soak`: a farm under fire. A master and N agents run as real processes,
//! each agent in a network namespace of its own behind a veth pair (so it needs root).
//! Jobs are submitted all along while, at random, agents are killed and restarted,
//! frozen and thawed, cut off the network and healed, and the master is killed and
//! restarted. Then the chaos stops, the farm settles, and every acknowledged job is
//! checked:
//!
//! `soak: submitted S, done D, failed F, lost L, duplicated X, max stall T s`
//!
//! - lost: acknowledged jobs the master no longer has, or that never finished;
//! - duplicated: frames with more than one attempt that counted, or run again after the
//!   one that counted;
//! - max stall: the longest time work was waiting and no task finished.
//!
//! It exits with an error when L or X is not 0.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use furrow_protocol::{Client, CommandParams, JobSubmission, Json, WorkState};

/// `furrow bench soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the chaos lasts, in minutes (the farm then settles).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Agents, each in a network namespace of its own.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Seed of the random choices (default: from the clock); the same seed makes the
    /// same choices.
    #[arg(long)]
    seed: Option<u64>,
}

/// Second octet of the soak's addresses: 10.98.<agent>.0/24.
const SUBNET: u8 = 98;

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

struct Host {
    namespace: String,
    link: String,
    master_ip: String,
    state_dir: PathBuf,
    agent: Option<Child>,
    frozen: bool,
    cut: bool,
}

/// The soak's processes and namespaces, removed when dropped.
struct Bed {
    dir: PathBuf,
    exe: PathBuf,
    master: Option<Child>,
    port: u16,
    http: String,
    hosts: Vec<Host>,
}

impl Bed {
    fn start(dir: &Path, agents: usize) -> Result<Self> {
        let mut bed = Self {
            dir: dir.to_path_buf(),
            exe: std::env::current_exe()?,
            master: None,
            port: 0,
            http: String::new(),
            hosts: Vec::new(),
        };
        let tag = std::process::id() % 10_000;
        for i in 0..agents {
            let host = Host {
                namespace: format!("fsoak{tag}n{i}"),
                link: format!("fs{tag}h{i}"),
                master_ip: format!("10.{SUBNET}.{i}.1"),
                state_dir: dir.join(format!("agent-{i}")),
                agent: None,
                frozen: false,
                cut: false,
            };
            let peer = format!("fs{tag}p{i}");
            ip(&["netns", "add", &host.namespace])?;
            bed.hosts.push(host);
            let host = &bed.hosts[i];
            ip(&[
                "link", "add", &host.link, "type", "veth", "peer", "name", &peer,
            ])?;
            ip(&["link", "set", &peer, "netns", &host.namespace])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/24", host.master_ip),
                "dev",
                &host.link,
            ])?;
            ip(&["link", "set", &host.link, "up"])?;
            let agent_ip = format!("10.{SUBNET}.{i}.2/24");
            ip(&[
                "-n",
                &host.namespace,
                "addr",
                "add",
                &agent_ip,
                "dev",
                &peer,
            ])?;
            ip(&["-n", &host.namespace, "link", "set", &peer, "up"])?;
            ip(&["-n", &host.namespace, "link", "set", "lo", "up"])?;
        }
        bed.start_master()?;
        for i in 0..agents {
            bed.start_agent(i)?;
        }
        Ok(bed)
    }

    fn log(&self, name: &str) -> Result<File> {
        Ok(File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(name))?)
    }

    fn start_master(&mut self) -> Result<()> {
        let data = self.dir.join("master");
        let addr_file = data.join(furrow_master::ADDR_FILE);
        let _ = std::fs::remove_file(&addr_file);
        let (listen, http) = if self.port == 0 {
            ("0.0.0.0:0".to_string(), "127.0.0.1:0".to_string())
        } else {
            (format!("0.0.0.0:{}", self.port), self.http.clone())
        };
        let log = self.log("master.log")?;
        let child = Command::new(&self.exe)
            .arg("master")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen, "--http", &http])
            .args(["--heartbeat-interval", "0.5", "--heartbeat-timeout", "3"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start the master")?;
        self.master = Some(child);
        let started = Instant::now();
        let addrs: serde_json::Value = loop {
            if let Some(addrs) = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
            {
                break addrs;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the master did not start; see {}",
                    self.dir.join("master.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let listen = addrs["listen"].as_str().unwrap_or_default();
        self.port = listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .context("master.addr without a port")?;
        self.http = addrs["http"].as_str().unwrap_or_default().to_string();
        Ok(())
    }

    fn kill_master(&mut self) {
        if let Some(mut master) = self.master.take() {
            signal(&master, libc::SIGKILL);
            let _ = master.wait();
        }
    }

    fn start_agent(&mut self, i: usize) -> Result<()> {
        let join = self.dir.join("master").join(furrow_master::JOIN_TOKEN_FILE);
        let log = self.log(&format!("agent-{i}.log"))?;
        let host = &self.hosts[i];
        let child = Command::new("ip")
            .args(["netns", "exec", &host.namespace])
            .arg(&self.exe)
            .arg("agent")
            .args(["--master", &format!("{}:{}", host.master_ip, self.port)])
            .args(["--name", &format!("soak-{i}"), "--slots", "2"])
            .arg("--state-dir")
            .arg(&host.state_dir)
            .arg("--join-token-file")
            .arg(&join)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start an agent in its namespace")?;
        self.hosts[i].agent = Some(child);
        Ok(())
    }

    fn kill_agent(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        if let Some(mut agent) = host.agent.take() {
            signal(&agent, libc::SIGCONT);
            signal(&agent, libc::SIGKILL);
            let _ = agent.wait();
        }
        host.frozen = false;
    }

    fn freeze(&mut self, i: usize, frozen: bool) {
        let host = &mut self.hosts[i];
        if let Some(agent) = &host.agent {
            signal(agent, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
            host.frozen = frozen;
        }
    }

    fn cut(&mut self, i: usize, cut: bool) -> Result<()> {
        let link = self.hosts[i].link.clone();
        ip(&["link", "set", &link, if cut { "down" } else { "up" }])?;
        self.hosts[i].cut = cut;
        Ok(())
    }

    /// Ends every fault: thaws, heals and restarts what needs it.
    fn heal(&mut self) -> Result<()> {
        for i in 0..self.hosts.len() {
            if self.hosts[i].frozen {
                self.freeze(i, false);
            }
            if self.hosts[i].cut {
                self.cut(i, false)?;
            }
            if self.hosts[i].agent.is_none() {
                self.start_agent(i)?;
            }
        }
        if self.master.is_none() {
            self.start_master()?;
        }
        Ok(())
    }

    async fn client(&self) -> Option<Client> {
        crate::bench::connect_local(
            &format!("127.0.0.1:{}", self.port),
            &self.dir.join("master"),
        )
        .await
        .ok()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_agent(i);
        }
        self.kill_master();
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.namespace])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &host.link])
                .output();
        }
    }
}

fn job(n: u64, frames: u32, out: &Path) -> Result<JobSubmission> {
    // Each attempt leaves a file, written by a grandchild of the task at its end.
    let script = format!(
        "(sleep 0.$((RANDOM % 9 + 1)); touch {}/j{n}-f{{frame}}-a$FURROW_ATTEMPT) & wait",
        out.display()
    );
    let params = CommandParams {
        command: vec!["bash".into(), "-c".into(), script],
        shell: false,
        env: Default::default(),
        app: None,
    };
    Ok(JobSubmission {
        retries: 50,
        ..JobSubmission::new(
            format!("soak {n}"),
            Json(serde_json::to_value(params)?),
            format!("1-{frames}"),
        )
    })
}

/// The chaos: one random fault or repair.
fn strike(bed: &mut Bed, rng: &mut fastrand::Rng) -> Result<String> {
    let i = rng.usize(..bed.hosts.len());
    Ok(match rng.u8(..10) {
        0..=2 => {
            if bed.hosts[i].agent.is_some() {
                bed.kill_agent(i);
                format!("killed agent {i}")
            } else {
                bed.start_agent(i)?;
                format!("restarted agent {i}")
            }
        }
        3..=4 => {
            let frozen = !bed.hosts[i].frozen;
            bed.freeze(i, frozen);
            format!("{} agent {i}", if frozen { "froze" } else { "thawed" })
        }
        5..=7 => {
            let cut = !bed.hosts[i].cut;
            bed.cut(i, cut)?;
            format!("{} agent {i}", if cut { "cut off" } else { "healed" })
        }
        _ => {
            bed.kill_master();
            std::thread::sleep(Duration::from_millis(rng.u64(200..2000)));
            bed.start_master()?;
            "restarted the master".to_string()
        }
    })
}

pub async fn run(args: SoakArgs) -> Result<()> {
    if args.agents == 0 || args.agents > 200 {
        bail!("--agents must be between 1 and 200");
    }
    if args.minutes.is_nan() || args.minutes <= 0.0 {
        bail!("--minutes must be positive");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("furrow bench soak makes network namespaces: run it as root");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = std::env::temp_dir().join(format!("furrow-soak-{}", std::process::id()));
    let out = dir.join("out");
    std::fs::create_dir_all(&out)?;
    println!(
        "soak: {} agents for {} min, seed {seed}, in {}",
        args.agents,
        args.minutes,
        dir.display()
    );
    let mut bed = Bed::start(&dir, args.agents)?;

    let chaos_ends = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut client: Option<Client> = None;
    let mut next_strike = Instant::now() + Duration::from_secs(3);
    let mut n = 0u64;
    let mut stall = Stall::default();
    while Instant::now() < chaos_ends {
        if client.is_none() {
            client = bed.client().await;
        }
        if let Some(c) = &client {
            n += 1;
            match c.submit_job(job(n, rng.u32(1..=6), &out)?).await {
                Ok(view) => acknowledged.push(view.id),
                // Not acknowledged: it does not count. A broken connection is opened
                // again.
                Err(furrow_protocol::ClientError::Api(_)) => {}
                Err(_) => client = None,
            }
            if let Some(c) = &client
                && let Ok(health) = c.health().await
            {
                let waiting = health.tasks_queued + health.tasks_running;
                stall.observe(finished_attempts(&out), waiting, &bed);
            }
        }
        if Instant::now() >= next_strike {
            let what = strike(&mut bed, &mut rng)?;
            println!(
                "  {:>6.1} s  {what}",
                args.minutes * 60.0 - (chaos_ends - Instant::now()).as_secs_f64()
            );
            if what == "restarted the master" {
                client = None;
            }
            next_strike = Instant::now() + Duration::from_millis(rng.u64(2000..8000));
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
    }

    // The chaos ends; the farm settles.
    bed.heal()?;
    let settle_deadline = Instant::now() + Duration::from_secs(600);
    let (mut done, mut failed, mut lost, mut duplicated) = (0u64, 0u64, 0u64, 0u64);
    let mut pending: Vec<i64> = acknowledged.clone();
    while !pending.is_empty() && Instant::now() < settle_deadline {
        let Some(c) = bed.client().await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut still = Vec::new();
        for id in pending {
            match c.get_job(id).await {
                Ok(job) if job.state.is_finished() => {
                    if job.state == WorkState::Done {
                        done += 1;
                    } else {
                        failed += 1;
                    }
                    duplicated += duplicates(&c, id).await?;
                }
                Ok(_) => still.push(id),
                Err(furrow_protocol::ClientError::Api(e))
                    if e.kind == furrow_protocol::ErrorKind::NotFound =>
                {
                    lost += 1;
                }
                Err(_) => still.push(id),
            }
        }
        pending = still;
        if let Ok(health) = c.health().await {
            let waiting = health.tasks_queued + health.tasks_running;
            stall.observe(finished_attempts(&out), waiting, &bed);
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    lost += pending.len() as u64;
    println!(
        "soak: submitted {}, done {done}, failed {failed}, lost {lost}, duplicated {duplicated}, max stall {:.1} s",
        acknowledged.len(),
        stall.max.as_secs_f64()
    );
    drop(bed);
    if lost > 0 || duplicated > 0 {
        bail!(
            "the soak lost or duplicated work; its logs are in {}",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Frames of job `id` with more than one attempt that counted, or an attempt after it.
async fn duplicates(client: &Client, id: i64) -> Result<u64> {
    let mut found = 0;
    let tasks = client.list_tasks(id, 1000, 0).await?;
    for task in tasks.items {
        let attempts = client.task_attempts(id, task.id).await?;
        let counted: Vec<u32> = attempts
            .iter()
            .filter(|a| a.outcome == "done")
            .map(|a| a.attempt)
            .collect();
        let last = attempts.iter().map(|a| a.attempt).max().unwrap_or(0);
        if counted.len() > 1 || counted.first().is_some_and(|&a| a != last) {
            found += 1;
        }
    }
    Ok(found)
}

/// The longest time work waited while no task finished, counted only while the farm
/// could work (the master up and some agent able to run tasks).
#[derive(Default)]
struct Stall {
    finished: usize,
    since: Option<Instant>,
    max: Duration,
}

impl Stall {
    /// `finished`: attempts that ended so far; `waiting`: tasks queued or running.
    fn observe(&mut self, finished: usize, waiting: u64, bed: &Bed) {
        let able = bed.master.is_some()
            && bed
                .hosts
                .iter()
                .any(|h| h.agent.is_some() && !h.frozen && !h.cut);
        let now = Instant::now();
        if finished > self.finished || waiting == 0 || !able {
            self.since = (waiting > 0 && able).then_some(now);
        } else {
            let since = *self.since.get_or_insert(now);
            self.max = self.max.max(now - since);
        }
        self.finished = finished;
    }
}

/// Attempts that ended so far: each leaves a file in `out`.
fn finished_attempts(out: &Path) -> usize {
    std::fs::read_dir(out).map(|dir| dir.count()).unwrap_or(0)
}
