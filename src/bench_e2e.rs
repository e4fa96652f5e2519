//! `furrow bench e2e`: how close a local farm comes to the machine's own rate of starting
//! processes. In one run it measures
//! - the raw rate: `true` spawned and waited for from N threads, nothing else; half the
//!   tasks before the farm runs and half after, so that a machine whose speed drifts
//!   during the run (a shared virtual machine's does) weighs on both rates alike;
//! - Furrow's rate: the same number of `true` tasks as one job on a local farm with one
//!   agent of N slots (real master and agent processes, output captured, results durably
//!   stored), from the submission until the job is done;
//! - the turnaround: on each slot, the gap between a task's end and the next task's start,
//!   from the times the agent reported: when the task's process was created and when it
//!   was reaped.
//!
//! It prints `e2e: furrow R1 tasks/s, raw spawn R2 tasks/s, ratio P%`, the turnaround's
//! median and 99th percentile, and the machine's busy CPU time per task in each phase
//! (every process's, from `/proc/stat`): what a task costs in all, which the rates alone
//! hide when the machine is not saturated or its speed varies between runs.

use std::collections::VecDeque;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use furrow_protocol::WorkState;

use crate::bench::{LocalFarm, job};

/// `furrow bench e2e`.
#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Tasks (each runs `true`).
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// Slots of the one agent, and threads of the raw spawn.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Database URL (default: SQLite in the temporary data directory).
    #[arg(long)]
    database_url: Option<String>,
}

/// The machine's busy CPU time so far (all CPUs, every state but idle and I/O wait), from
/// the first line of `/proc/stat`.
fn busy_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if fields.len() < 5 {
        bail!("cannot read the CPU times in /proc/stat");
    }
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = fields.iter().take(8).sum::<u64>() - fields[3] - fields[4];
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(busy * 1_000_000 / ticks))
}

/// Busy CPU milliseconds per task between two readings of [`busy_cpu`].
fn per_task_ms(before: Duration, after: Duration, tasks: u64) -> f64 {
    after.saturating_sub(before).as_secs_f64() * 1000.0 / tasks.max(1) as f64
}

/// A raw spawn's figures: tasks spawned, wall time, busy CPU time of the machine.
#[derive(Debug, Clone, Copy, Default)]
struct RawSpawn {
    tasks: u64,
    took: Duration,
    cpu: Duration,
}

impl RawSpawn {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.took.as_secs_f64().max(f64::EPSILON)
    }

    fn and(self, other: RawSpawn) -> RawSpawn {
        RawSpawn {
            tasks: self.tasks + other.tasks,
            took: self.took + other.took,
            cpu: self.cpu + other.cpu,
        }
    }
}

/// Spawns `true` about `tasks` times from `threads` threads.
fn raw_spawn(tasks: u64, threads: u32) -> Result<RawSpawn> {
    let cpu = busy_cpu()?;
    let started = Instant::now();
    let tasks = spawn_true(tasks, threads)?;
    Ok(RawSpawn {
        tasks,
        took: started.elapsed(),
        cpu: busy_cpu()?.saturating_sub(cpu),
    })
}

/// Spawns `true` about `tasks` times from `threads` threads; the number spawned.
fn spawn_true(tasks: u64, threads: u32) -> Result<u64> {
    let per_thread = tasks.div_ceil(u64::from(threads));
    let outcomes: Vec<std::io::Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> std::io::Result<()> {
                    for _ in 0..per_thread {
                        Command::new("true")
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panicked")))
            })
            .collect()
    });
    for outcome in outcomes {
        outcome?;
    }
    Ok(per_thread * u64::from(threads))
}

/// The gaps between a slot's task ending and its next task starting, in milliseconds:
/// starts and ends in time order, each start taking the slot freed longest ago.
fn turnaround_ms(mut spans: Vec<(i64, i64)>) -> Vec<i64> {
    spans.sort_unstable();
    let mut events: Vec<(i64, bool)> = Vec::with_capacity(spans.len() * 2);
    for (start, end) in &spans {
        events.push((*start, true));
        events.push((*end, false));
    }
    // Ends before starts at the same millisecond: a slot is freed, then taken.
    events.sort_unstable_by_key(|&(at, is_start)| (at, is_start));
    let mut free: VecDeque<i64> = VecDeque::new();
    let mut gaps = Vec::new();
    for (at, is_start) in events {
        if is_start {
            // The first start on each slot has no gap before it.
            if let Some(freed) = free.pop_front() {
                gaps.push(at - freed);
            }
        } else {
            free.push_back(at);
        }
    }
    gaps
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: E2eArgs) -> Result<()> {
    if args.tasks == 0 || args.slots == 0 {
        bail!("--tasks and --slots must be at least 1");
    }
    let raw_before = raw_spawn(args.tasks / 2, args.slots)?;

    let (farm, client) = LocalFarm::start(1, args.slots, args.database_url.as_deref()).await?;
    let health = client.health().await?;
    let furrow_cpu = busy_cpu()?;
    let submitted = Instant::now();
    let view = client
        .submit_job(job("bench e2e", format!("1-{}", args.tasks), 10)?)
        .await?;
    let took = loop {
        let current = client.get_job(view.id).await?;
        if current.state.is_finished() {
            if current.state != WorkState::Done {
                bail!("the job ended {}", current.state.as_str());
            }
            break (submitted.elapsed(), busy_cpu()?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (took, furrow_cpu_after) = took;
    let furrow = args.tasks as f64 / took.as_secs_f64();
    let furrow_cpu = per_task_ms(furrow_cpu, furrow_cpu_after, args.tasks);

    // The agent's times of each task's process: created, and reaped.
    let mut spans = Vec::with_capacity(args.tasks as usize);
    let mut offset = 0;
    loop {
        let page = client.list_tasks(view.id, 10_000, offset).await?;
        for task in &page.items {
            if let (Some(start), Some(end)) = (task.started_at, task.finished_at) {
                spans.push((start.timestamp_millis(), end.timestamp_millis()));
            }
        }
        offset += page.items.len() as u64;
        if page.items.is_empty() || offset >= page.total {
            break;
        }
    }
    drop(farm);
    let raw_after = raw_spawn(args.tasks - args.tasks / 2, args.slots)?;
    let raw_both = raw_before.and(raw_after);
    let raw = raw_both.rate();
    let raw_cpu = per_task_ms(Duration::ZERO, raw_both.cpu, raw_both.tasks);
    let mut gaps = turnaround_ms(spans);
    gaps.sort_unstable();

    println!(
        "e2e: {} tasks of `true`, {} slots, {} database, {} cpus",
        args.tasks,
        args.slots,
        health.database,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "e2e: furrow {furrow:.0} tasks/s, raw spawn {raw:.0} tasks/s, ratio {:.0}%",
        100.0 * furrow / raw
    );
    println!(
        "raw: {:.0} tasks/s before the farm ran, {:.0} tasks/s after",
        raw_before.rate(),
        raw_after.rate()
    );
    println!(
        "turnaround: a slot's next task starts {} ms (median), {} ms (p99) after its last ended ({} gaps)",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.len()
    );
    println!(
        "cpu: a task costs {furrow_cpu:.2} ms of busy CPU on the farm, {raw_cpu:.2} ms spawned raw (all processes)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::turnaround_ms;

    #[test]
    fn each_start_takes_the_slot_freed_longest_ago() {
        // Two slots: tasks [0,10] and [0,12]; the third starts at 11 (1 ms after the
        // first slot freed), the fourth at 15 (3 ms after the second).
        let gaps = turnaround_ms(vec![(0, 10), (0, 12), (11, 20), (15, 30)]);
        assert_eq!(gaps, vec![1, 3]);
        // A slot freed and taken in the same millisecond: a gap of 0.
        assert_eq!(turnaround_ms(vec![(0, 5), (5, 9)]), vec![0]);
    }
}
