//! `furrow bench agents`: one master and many agents. Simulated agents (in this process,
//! speaking the real protocol from the loopback addresses 127.0.0.1-250, heartbeating
//! every two seconds) register with a real master process; the bench then measures the
//! master at idle (its share of a core and its resident memory over a window) and its
//! dispatch rate under load (tasks assigned, run and durably stored per second, with
//! every agent connected), and prints the figures.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use crate::bench_dispatch::{SimFarm, command_job};

/// `furrow bench agents`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    agents: u32,
    /// Slots per agent.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Seconds the idle master is watched.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Tasks run for the dispatch rate.
    #[arg(long, default_value_t = 200_000)]
    tasks: u64,
    /// Database URL (default: SQLite in a temporary data directory).
    #[arg(long)]
    database_url: Option<String>,
    /// Data directory of the master (default: a fresh temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// CPU time a process has used (user and system), from /proc.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf(3) with a valid name has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// Resident memory of a process now, MiB.
fn rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The master's share of one core over `window`.
async fn cpu_share(pid: u32, window: Duration) -> Result<f64> {
    let (Some(before), began) = (cpu_time(pid), Instant::now()) else {
        bail!("cannot read the master's CPU time");
    };
    tokio::time::sleep(window).await;
    let Some(after) = cpu_time(pid) else {
        bail!("cannot read the master's CPU time");
    };
    Ok((after - before).as_secs_f64() / began.elapsed().as_secs_f64() * 100.0)
}

/// Raises this process's open-file limit to its hard limit (the master started from it
/// inherits it): each agent is a socket here and one there.
fn raise_file_limit(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("cannot read the open-file limit");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("cannot raise the open-file limit");
        }
    }
    if limit.rlim_cur < wanted {
        bail!(
            "{wanted} open files are needed, the limit is {} (raise it with ulimit -Hn)",
            limit.rlim_cur
        );
    }
    Ok(())
}

/// Runs the bench.
pub async fn run(args: AgentsArgs) -> Result<()> {
    if args.agents == 0 || args.slots == 0 || args.tasks < 20 || args.idle_secs == 0 {
        bail!("--agents, --slots and --idle-secs must be at least 1, --tasks at least 20");
    }
    raise_file_limit(u64::from(args.agents) + 1_000)?;
    let began = Instant::now();
    let farm = SimFarm::start(
        args.agents,
        args.slots,
        args.data_dir.as_ref(),
        args.database_url.as_ref(),
    )
    .await?;
    let pid = farm.master.pid();
    println!(
        "agents bench: {} simulated agents x {} slots registered in {:.1} s, {} database, {} cpus",
        farm.online,
        args.slots,
        began.elapsed().as_secs_f64(),
        farm.database,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Idle: heartbeats only. A few seconds first, so registration work is over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = cpu_share(pid, Duration::from_secs(args.idle_secs)).await?;
    let idle_rss = rss_mb(pid).unwrap_or(0);
    println!(
        "idle: master cpu {idle:.1}% of a core over {} s, rss {idle_rss} MB (targets: <= 25%, <= 1024 MB)",
        args.idle_secs
    );

    // Load: twenty jobs of trivial tasks, every agent connected.
    let per_job = args.tasks / 20;
    let total = per_job * 20;
    let before = farm.tally.stored.load(Ordering::Relaxed);
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    for j in 0..20u64 {
        farm.client
            .submit_job(command_job(format!("agents-{j}"), format!("1-{per_job}"))?)
            .await?;
    }
    loop {
        let stored = farm.tally.stored.load(Ordering::Relaxed) - before;
        if stored >= total {
            break;
        }
        if let Some(failed) = farm.agents.iter().position(|a| a.is_finished()) {
            bail!("simulated agent {failed} stopped during the run ({stored} of {total} stored)");
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("only {stored} of {total} tasks stored after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let busy = match (cpu_before, cpu_time(pid)) {
        (Some(before), Some(after)) => {
            (after - before).as_secs_f64() / elapsed.as_secs_f64() * 100.0
        }
        _ => 0.0,
    };
    let peak = farm.master.peak_rss_mb().unwrap_or(0);
    println!(
        "dispatch: {:.0} tasks/s with {} agents connected ({total} tasks assigned, run and stored in {:.2} s), master cpu {busy:.0}% of a core, peak rss {peak} MB (target: >= 10000 tasks/s)",
        total as f64 / elapsed.as_secs_f64(),
        farm.online,
        elapsed.as_secs_f64()
    );
    farm.stop().await;
    Ok(())
}
