//! The limits of one attempt: its time limit, its stall timeout and its memory limit.
//!
//! [`Limits::hit`] reports the first limit the attempt passes; the runner then kills the
//! group (SIGTERM, SIGKILL after the grace) and finishes with the hit's message as the
//! error and its [`LimitHit`]. A limit that is unset, or zero, does not apply.
//!
//! - Time limit (`timeout_secs`): a deadline from the start of the process.
//! - Stall timeout (`stall_timeout_secs`): the attempt printed no output line (stdout or
//!   stderr) for that long. Progress is read from output lines, so a progress change
//!   always comes with a line. Output that never ends a line (no `\n` or `\r`) counts once
//!   the line completes or reaches the maximum line length.
//! - Memory limit (`ram_mb`): the group's summed resident memory
//!   ([`crate::group_memory`]), sampled every [`MEMORY_SAMPLE_PERIOD`]. It is a sampled
//!   limit, not a hard cap: a task can pass it for up to one period before it is stopped.

use std::time::{Duration, Instant};

use furrow_protocol::{Assignment, LimitHit};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::group_memory::group_resident_bytes;
use crate::time_limit::{Deadline, Ticker};

/// Time between two samples of a task's memory.
pub(crate) const MEMORY_SAMPLE_PERIOD: Duration = Duration::from_millis(500);

const MIB: u64 = 1024 * 1024;

/// A limit the attempt passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The task's error, also written to its log.
    pub message: String,
    /// Which limit.
    pub limit: LimitHit,
}

/// The watches of one attempt's limits.
pub(crate) struct Limits {
    timeout: Option<TimeLimit>,
    stall: Option<Stall>,
    memory: Option<MemoryLimit>,
}

struct TimeLimit {
    deadline: Deadline,
    secs: u64,
}

struct Stall {
    deadline: Deadline,
    secs: u64,
    /// When the task last printed a line. Noting it is a clock read per line; the timer
    /// is only re-armed when it fires early (see [`Limits::hit`]), which saves a system
    /// call per line of a chatty task.
    last_activity: Instant,
}

struct MemoryLimit {
    ticker: Ticker,
    limit_mb: u64,
    pgid: u32,
    /// The sample under way on the blocking pool; kept here so that a sample outlives a
    /// `hit` future dropped by a `select!` (output lines win that race often).
    sample: Option<JoinHandle<u64>>,
}

impl Limits {
    /// The timers of the limits `assignment` sets, created before the task starts: a task
    /// must not run without the means to enforce its limits. Needs a tokio runtime with
    /// IO enabled.
    pub fn new(assignment: &Assignment) -> Result<Self, furrow_sysfd::Error> {
        let set = |value: Option<u64>| value.filter(|v| *v > 0);
        let timeout = match set(assignment.timeout_secs) {
            Some(secs) => Some(TimeLimit {
                deadline: Deadline::new()?,
                secs,
            }),
            None => None,
        };
        let stall = match set(assignment.stall_timeout_secs) {
            Some(secs) => Some(Stall {
                deadline: Deadline::new()?,
                secs,
                last_activity: Instant::now(),
            }),
            None => None,
        };
        let memory = match set(assignment.ram_mb) {
            Some(limit_mb) => Some(MemoryLimit {
                ticker: Ticker::new(MEMORY_SAMPLE_PERIOD)?,
                limit_mb,
                pgid: 0,
                sample: None,
            }),
            None => None,
        };
        Ok(Self {
            timeout,
            stall,
            memory,
        })
    }

    /// Starts watching the process group `pgid`, whose process has just started.
    pub fn start(&mut self, pgid: u32) {
        if let Some(timeout) = &mut self.timeout {
            timeout.deadline.arm(Duration::from_secs(timeout.secs));
        }
        if let Some(stall) = &mut self.stall {
            stall.last_activity = Instant::now();
            stall.deadline.arm(Duration::from_secs(stall.secs));
        }
        if let Some(memory) = &mut self.memory {
            memory.pgid = pgid;
            memory.ticker.start();
        }
    }

    /// The task printed a line: its stall timeout starts over.
    pub fn activity(&mut self) {
        if let Some(stall) = &mut self.stall {
            stall.last_activity = Instant::now();
        }
    }

    /// Stops watching (the group is being killed already): no limit hits any more.
    pub fn stop(&mut self) {
        self.timeout = None;
        self.stall = None;
        self.memory = None;
    }

    /// Waits until the attempt passes one of its limits; never finishes when none is set.
    /// Cancel-safe.
    pub async fn hit(&mut self) -> Hit {
        let Self {
            timeout,
            stall,
            memory,
        } = self;
        tokio::select! {
            hit = time_limit_hit(timeout) => hit,
            hit = stall_hit(stall) => hit,
            hit = memory_hit(memory) => hit,
        }
    }
}

async fn time_limit_hit(timeout: &mut Option<TimeLimit>) -> Hit {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    timeout.deadline.expired().await;
    Hit {
        message: format!("time limit of {} s exceeded", timeout.secs),
        limit: LimitHit::Timeout,
    }
}

async fn stall_hit(stall: &mut Option<Stall>) -> Hit {
    let Some(stall) = stall else {
        return std::future::pending().await;
    };
    let quiet_limit = Duration::from_secs(stall.secs);
    loop {
        stall.deadline.expired().await;
        let quiet = stall.last_activity.elapsed();
        // Output came since the timer was armed: wait for the rest of the timeout from
        // the last line. A timer that cannot be armed counts as passed, as deadlines do.
        if quiet >= quiet_limit || !stall.deadline.arm(quiet_limit - quiet) {
            return Hit {
                message: format!("no output or progress for {} s (stall timeout)", stall.secs),
                limit: LimitHit::Stall,
            };
        }
    }
}

async fn memory_hit(memory: &mut Option<MemoryLimit>) -> Hit {
    let Some(memory) = memory else {
        return std::future::pending().await;
    };
    loop {
        if let Some(sample) = &mut memory.sample {
            let result = sample.await;
            memory.sample = None;
            match result {
                Ok(bytes) if bytes > memory.limit_mb.saturating_mul(MIB) => {
                    let used_mb = bytes.div_ceil(MIB);
                    return Hit {
                        message: format!(
                            "used {used_mb} MiB, over its limit of {} MiB",
                            memory.limit_mb
                        ),
                        limit: LimitHit::Memory { used_mb },
                    };
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "a memory sample of a task failed"),
            }
        }
        memory.ticker.tick().await;
        let pgid = memory.pgid;
        memory.sample = Some(tokio::task::spawn_blocking(move || {
            group_resident_bytes(pgid)
        }));
    }
}
