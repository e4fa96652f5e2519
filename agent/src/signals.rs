//! The agent's own signals: SIGTERM and SIGINT stop it, SIGHUP reloads its configuration.
//!
//! They arrive through a signalfd from furrow-sysfd. A signal reaches a signalfd only while
//! every thread of the process blocks it; otherwise some thread runs its default action
//! and, for all three, the process dies. So [`block`] runs first, in the thread that
//! becomes the agent's actix system, before any other thread exists: threads inherit
//! their creator's mask. Task processes inherit it too, across fork and exec, which is
//! why the spawner gives each task an empty mask before its exec.

use std::fs;

use furrow_sysfd::{AsyncSignalFd, SHUTDOWN_SIGNALS, Signal, block_signals};

/// A signal the agent acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentSignal {
    /// SIGTERM: stop.
    Terminate,
    /// SIGINT: stop.
    Interrupt,
    /// SIGHUP: reload the configuration.
    Hangup,
}

/// A signal as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// What it asks for.
    pub signal: AgentSignal,
    /// The process that sent it (0 for the kernel, e.g. a terminal's SIGINT).
    pub sender_pid: u32,
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, and so in every thread it
/// starts afterwards.
pub(crate) fn block() -> Result<(), furrow_sysfd::Error> {
    block_signals(&SHUTDOWN_SIGNALS).map(drop)
}

/// Threads of this process (by thread id) that do not block all of the agent's signals.
/// Any of them would die of a SIGTERM instead of letting the signalfd have it.
pub(crate) fn threads_not_blocking() -> Vec<u32> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let wanted = SHUTDOWN_SIGNALS
        .iter()
        .fold(0u64, |mask, signal| mask | signal_bit(*signal));
    tasks
        .filter_map(|entry| {
            let tid = entry.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
            // A thread that ended between the listing and the read has no status: skipped.
            let blocked = blocked_mask(&status)?;
            (blocked & wanted != wanted).then_some(tid)
        })
        .collect()
}

/// The bit of `signal` in a /proc mask (bit 0 is signal 1).
fn signal_bit(signal: Signal) -> u64 {
    1 << (signal as u32 - 1)
}

/// The `SigBlk` mask of a /proc status file.
fn blocked_mask(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("SigBlk:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The agent's signalfd.
pub(crate) struct Signals {
    fd: AsyncSignalFd,
}

impl Signals {
    /// Opens the signalfd. The signals must already be blocked (see [`block`]); needs a
    /// tokio runtime with IO enabled.
    pub fn open() -> Result<Self, furrow_sysfd::Error> {
        Ok(Self {
            fd: AsyncSignalFd::for_signals(&SHUTDOWN_SIGNALS)?,
        })
    }

    /// Waits for the next signal. Cancel-safe: a signal is taken only when this returns.
    pub async fn next(&mut self) -> Result<Received, furrow_sysfd::Error> {
        loop {
            let info = self.fd.read_event().await?;
            let signal = match info.signal() {
                Some(Signal::SIGTERM) => AgentSignal::Terminate,
                Some(Signal::SIGINT) => AgentSignal::Interrupt,
                Some(Signal::SIGHUP) => AgentSignal::Hangup,
                // The fd's mask holds only the three above.
                _ => continue,
            };
            return Ok(Received {
                signal,
                sender_pid: info.pid,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_blocked_mask_of_a_status_file() {
        let status = "Name:\tfurrow\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000004003\n";
        let mask = blocked_mask(status).unwrap();
        for signal in SHUTDOWN_SIGNALS {
            assert_ne!(mask & signal_bit(signal), 0, "{signal}");
        }
        assert_eq!(mask & signal_bit(Signal::SIGCHLD), 0);
        assert_eq!(blocked_mask("Name:\tx\n"), None);
    }

    #[test]
    fn finds_the_threads_that_do_not_block_the_signals() {
        let this_thread = nix::unistd::gettid().as_raw() as u32;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        // Blocking is per thread: this one does not touch the test harness's threads.
        let blocking = std::thread::spawn(move || {
            block().unwrap();
            tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            let _ = done_rx.recv();
        });
        let blocking_tid = tid_rx.recv().unwrap();
        let offenders = threads_not_blocking();
        drop(done_tx);
        blocking.join().unwrap();
        assert!(offenders.contains(&this_thread), "{offenders:?}");
        assert!(!offenders.contains(&blocking_tid), "{offenders:?}");
    }
}
