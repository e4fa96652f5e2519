//! `furrow bench api`: how fast the master answers the reads people browse with, on a
//! store the size of a busy farm's.
//!
//! 1. **Fill.** A real master and agent run one small job (its tasks done, with logs and
//!    attempts) and take the submission of the big job (its tasks committed before the
//!    reply); the agent runs the big job's first tasks, then drains, giving back what
//!    it ran, so the rest stays queued. The small job's rows are then copied, ids
//!    shifted, into `--jobs` finished jobs straight in the database: rows the master
//!    wrote, without a hundred thousand submissions.
//! 2. **Restart.** A master starts on that store: the time until its API answers, and
//!    its resident memory holding the big job's queued tasks.
//! 3. **Reads.** Each read the dashboard and tools make, over HTTP, many times: p50 and
//!    p99. The CLI's `furrow job` and `furrow logs` on the big job, as processes.
//! 4. **Dashboard.** Its first load (the page and the calls it makes at once: bytes and
//!    time), and its live updates (the event stream and its polling) while an agent
//!    runs a small job, in bytes per minute.

mod fill;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use furrow_protocol::{Client, JobSubmission};

use fill::{Site, echo_job, fill, wait_until};

/// `furrow bench api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Jobs in the store (all finished but the big one).
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Tasks of the big job (queued, but for the first few).
    #[arg(long, default_value_t = 1_000_000)]
    big_job: u64,
    /// Tasks of each small job.
    #[arg(long, default_value_t = 10)]
    small_tasks: u64,
    /// Requests per measured read.
    #[arg(long, default_value_t = 200)]
    requests: u32,
    /// Runs per measured CLI command.
    #[arg(long, default_value_t = 10)]
    cli_runs: u32,
    /// Seconds the live updates are counted for.
    #[arg(long, default_value_t = 20)]
    live_secs: u64,
    /// A PostgreSQL server (`postgres://user:pass@host/db`): the bench makes a database
    /// of its own there and drops it at the end (default: SQLite in the data directory).
    #[arg(long)]
    database_url: Option<String>,
}

/// A child process of the bench, stopped (SIGTERM, then waited for) when dropped.
struct Process {
    child: Child,
}

impl Process {
    fn spawn(mut command: Command, what: &str) -> Result<Self> {
        Ok(Self {
            child: command
                .spawn()
                .with_context(|| format!("cannot start {what}"))?,
        })
    }

    /// Resident memory now and at its peak, MiB.
    fn rss_mb(&self) -> Option<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Stops it and waits until it is gone.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// A master on the site's store, with its addresses and an admin client.
struct Master {
    process: Process,
    listen: String,
    http: String,
    token: String,
    client: Client,
    http_agent: ureq::Agent,
}

impl Master {
    /// Starts `furrow master` and waits until its API answers; with the time that took.
    async fn start(site: &Site) -> Result<(Self, Duration)> {
        let addr_file = site.data_dir.join(furrow_master::ADDR_FILE);
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(site.data_dir.join("master.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["master", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&site.data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        match &site.database_url {
            Some(url) => command.env("FURROW_DATABASE_URL", url),
            None => command.env_remove("FURROW_DATABASE_URL"),
        };
        let started = Instant::now();
        let process = Process::spawn(command, "furrow master")?;
        let http_agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        loop {
            let addrs = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            if let Some(addrs) = addrs
                && let (Some(listen), Some(http)) =
                    (addrs["listen"].as_str(), addrs["http"].as_str())
                && let Ok(token) =
                    crate::bench::read_token(&site.data_dir, furrow_master::ADMIN_TOKEN_FILE)
            {
                let health = http_agent
                    .get(format!("http://{http}/api/v1/health"))
                    .header("authorization", format!("Bearer {token}"))
                    .call();
                if health.is_ok_and(|r| r.status() == 200) {
                    let ready = started.elapsed();
                    let client = crate::bench::connect_local(listen, &site.data_dir).await?;
                    let master = Self {
                        process,
                        listen: listen.to_string(),
                        http: http.to_string(),
                        token,
                        client,
                        http_agent,
                    };
                    return Ok((master, ready));
                }
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!(
                    "the master did not answer; see {}",
                    site.data_dir.join("master.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An agent of `slots` slots, joined with the farm's join token.
    fn agent(&self, site: &Site, slots: u32) -> Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(site.data_dir.join("agent.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args([
                "agent",
                "--master",
                &self.listen,
                "--slots",
                &slots.to_string(),
            ])
            .arg("--state-dir")
            .arg(site.data_dir.join("agent"))
            .arg("--join-token-file")
            .arg(site.data_dir.join(furrow_master::JOIN_TOKEN_FILE))
            .args(["--name", "bench", "--no-detect-software"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Process::spawn(command, "furrow agent")
    }

    /// GET `path`: status and body.
    fn get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let mut response = self
            .http_agent
            .get(format!("http://{}{path}", self.http))
            .header("authorization", format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()?;
        Ok((status, body))
    }

    /// GET `path` `n` times (a closure picks each path): p50 and p99 in ms, and the
    /// bytes of the last answer. Any answer but 200 fails the bench.
    fn measure(&self, n: u32, path: impl Fn(u32) -> String) -> Result<(f64, f64, usize)> {
        let mut times = Vec::with_capacity(n as usize);
        let mut bytes = 0;
        for i in 0..n {
            let path = path(i);
            let started = Instant::now();
            let (status, body) = self.get(&path)?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
            }
            bytes = body.len();
        }
        times.sort_by(f64::total_cmp);
        Ok((percentile(&times, 0.5), percentile(&times, 0.99), bytes))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The path of the i-th request of a measured read.
type PathOf<'a> = Box<dyn Fn(u32) -> String + 'a>;

/// Times `furrow ARGS...` against the master, `runs` times: p50 and p99 in ms, and the
/// bytes it printed the last time.
fn time_cli(master: &Master, cli_args: &[String], runs: u32) -> Result<(f64, f64, usize)> {
    let mut times = Vec::with_capacity(runs as usize);
    let mut printed = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let out = Command::new(std::env::current_exe()?)
            .args(cli_args)
            .env("FURROW_SERVER", &master.listen)
            .env("FURROW_TOKEN", &master.token)
            .stdin(Stdio::null())
            .output()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!(
                "furrow {}: {}",
                cli_args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        printed = out.stdout.len();
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), printed))
}

/// The bytes of the first event of `/api/v1/events` (a snapshot), and the time to it.
fn first_event(master: &Master) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(&master.http)?;
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        master.http, master.token
    );
    std::io::Write::write_all(&mut stream, request.as_bytes())?;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("the event stream closed before its first event");
        }
        seen.extend_from_slice(&buffer[..n]);
        if let Some(at) = find(&seen, b"\r\n\r\n")
            && find(&seen[at..], b"\n\n").is_some_and(|end| end > 4)
        {
            return Ok((seen.len() - at - 4, started.elapsed()));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes that arrive on `/api/v1/events` within `window` after its first event (the
/// snapshot at connection, counted in the first load).
fn stream_bytes(master: &Master, window: Duration) -> Result<usize> {
    let mut stream = std::net::TcpStream::connect(&master.http)?;
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        master.http, master.token
    );
    std::io::Write::write_all(&mut stream, request.as_bytes())?;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    // The headers and the first event.
    let mut total = loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("the event stream closed before its first event");
        }
        seen.extend_from_slice(&buffer[..n]);
        if let Some(at) = find(&seen, b"\r\n\r\n")
            && let Some(end) = find(&seen[at + 4..], b"\n\n")
        {
            break seen.len() - (at + 4 + end + 2);
        }
    };
    let end = Instant::now() + window;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(total);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(total);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the dashboard fetches when it opens (logged in as an admin): the page, who is
/// logged in, the farm (agents, jobs, health, queues) and the access lists.
const FIRST_LOAD: [&str; 9] = [
    "/",
    "/api/v1/me",
    "/api/v1/agents/?limit=1000",
    "/api/v1/jobs/?limit=100",
    "/api/v1/health",
    "/api/v1/queues/",
    "/api/v1/users/",
    "/api/v1/tokens/?all=true",
    "/api/v1/audit/?limit=100",
];

/// What the dashboard polls every 5 s besides its event stream (an admin's).
const POLLED: [&str; 4] = [
    "/api/v1/me",
    "/api/v1/users/",
    "/api/v1/tokens/?all=true",
    "/api/v1/audit/?limit=100",
];

pub async fn run(args: ApiArgs) -> Result<()> {
    if args.jobs < 2 || args.big_job == 0 || args.small_tasks == 0 || args.requests == 0 {
        bail!("--jobs must be at least 2, --big-job, --small-tasks and --requests at least 1");
    }
    let site = Site::new(args.database_url.as_deref()).await?;
    let outcome = measure(&site, &args).await;
    site.remove().await;
    outcome
}

async fn measure(site: &Site, args: &ApiArgs) -> Result<()> {
    let filled = fill(site, args).await?;
    let big = filled.big;

    // 2. Restart on the filled store.
    let (master, ready) = Master::start(site).await?;
    let health = master.client.health().await?;
    let (rss_ready, _) = master.process.rss_mb().context("no /proc status")?;
    println!(
        "api: {} database, {} jobs, big job {big} of {} tasks, {} cpus",
        health.database,
        args.jobs,
        args.big_job,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "api: restart ready in {:.2} s (the API answers), master RSS {rss_ready:.0} MB with {} tasks queued",
        ready.as_secs_f64(),
        health.tasks_queued
    );

    // 3. Reads over HTTP.
    let n = args.requests;
    let last = args.big_job;
    let spread = |i: u32| 1 + (u64::from(i) * 7_919 * 104_729) % last;
    let reads: Vec<(&str, PathOf<'_>)> = vec![
        (
            "job list page",
            Box::new(|_| "/api/v1/jobs/?limit=100".into()),
        ),
        (
            "one job with its counts",
            Box::new(move |_| format!("/api/v1/jobs/{big}")),
        ),
        (
            "big job tasks, first page",
            Box::new(move |_| format!("/api/v1/jobs/{big}/tasks/?limit=100")),
        ),
        (
            "big job tasks, middle page (offset)",
            Box::new(move |_| format!("/api/v1/jobs/{big}/tasks/?limit=100&offset={}", last / 2)),
        ),
        (
            "big job tasks, last page (offset)",
            Box::new(move |_| {
                format!(
                    "/api/v1/jobs/{big}/tasks/?limit=100&offset={}",
                    last.saturating_sub(100)
                )
            }),
        ),
        (
            "big job tasks, page from a frame",
            Box::new(move |i| {
                format!(
                    "/api/v1/jobs/{big}/tasks/?limit=100&from_frame={}",
                    spread(i)
                )
            }),
        ),
        (
            "big job tasks, done",
            Box::new(move |_| format!("/api/v1/jobs/{big}/tasks/?limit=100&state=done")),
        ),
        (
            "big job tasks, queued from the middle",
            Box::new(move |_| {
                format!(
                    "/api/v1/jobs/{big}/tasks/?limit=100&state=queued&from_frame={}",
                    last / 2
                )
            }),
        ),
        (
            "task by frame",
            Box::new(move |i| format!("/api/v1/jobs/{big}/frames/{}", spread(i))),
        ),
        (
            "log by frame",
            Box::new(move |_| format!("/api/v1/jobs/{big}/frames/{}/logs", filled.ran_frame)),
        ),
    ];
    for (name, path) in &reads {
        let (p50, p99, bytes) = master.measure(n, path)?;
        println!("api: {name} p50 {p50:.2} ms p99 {p99:.2} ms ({bytes} bytes)");
    }

    // The CLI on the big job, as processes.
    for cli in [
        vec!["job".to_string(), big.to_string()],
        vec![
            "logs".to_string(),
            big.to_string(),
            filled.ran_frame.to_string(),
        ],
        vec!["logs".to_string(), big.to_string(), last.to_string()],
    ] {
        let (p50, p99, printed) = time_cli(&master, &cli, args.cli_runs)?;
        println!(
            "cli: furrow {} p50 {p50:.1} ms p99 {p99:.1} ms ({printed} bytes printed)",
            cli.join(" ")
        );
    }

    let (rss, peak) = master.process.rss_mb().context("no /proc status")?;
    println!("api: master RSS {rss:.0} MB after the reads, peak {peak:.0} MB");

    // 4. The dashboard's first load: the page and its calls, one after another.
    let started = Instant::now();
    let mut bytes = 0;
    for path in FIRST_LOAD {
        let (status, body) = master.get(path)?;
        if status != 200 {
            bail!("GET {path}: {status}");
        }
        bytes += body.len();
    }
    let (event_bytes, _) = first_event(&master)?;
    let took = started.elapsed();
    bytes += event_bytes;
    println!(
        "dashboard: first load {:.0} ms, {:.0} KB ({} requests and the first event, one after another)",
        took.as_secs_f64() * 1000.0,
        bytes as f64 / 1024.0,
        FIRST_LOAD.len()
    );

    // Live updates while an agent runs a small job.
    let agent = master.agent(site, 2)?;
    let live = master
        .client
        .submit_job(JobSubmission {
            priority: 10,
            ..echo_job("live", "1-100000".into())?
        })
        .await?;
    wait_until("the live job starts", Duration::from_secs(60), || async {
        Ok(master.client.get_job(live.id).await?.task_counts.done > 0)
    })
    .await?;
    let window = Duration::from_secs(args.live_secs);
    let events = stream_bytes(&master, window)?;
    let done = master.client.get_job(live.id).await?.task_counts.done;
    let mut polled = 0;
    for path in POLLED {
        polled += master.get(path)?.1.len();
    }
    let per_minute = 60.0 / window.as_secs_f64();
    let stream_mb = events as f64 * per_minute / 1e6;
    let poll_mb = polled as f64 * 12.0 / 1e6;
    println!(
        "dashboard: live updates {:.2} MB/min: event stream {stream_mb:.2} MB/min, polling {poll_mb:.2} MB/min ({done} tasks done meanwhile)",
        stream_mb + poll_mb
    );
    agent.stop();
    let (rss, peak) = master.process.rss_mb().context("no /proc status")?;
    println!("api: master RSS {rss:.0} MB at the end (with the live job), peak {peak:.0} MB");
    master.process.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let times: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&times, 0.5), 51.0);
        assert_eq!(percentile(&times, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
