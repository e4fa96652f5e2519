//! The resident memory of a task's process group, read from /proc for the memory limit.
//!
//! A task is its whole process group (a renderer's shell wrapper, its workers), so its
//! memory is the sum of the resident set sizes (RSS) of every process in the group. Pages
//! several of them share (libraries, copy-on-write after a fork) count once per process,
//! so the sum can exceed what the group really holds; a limit errs towards killing then,
//! never towards letting a group use more than it says.
//!
//! Cost: the kernel has no list of a group's members, so a sample reads
//! `/proc/<pid>/stat` of every process on the host (one directory listing, then one
//! small read per process into a reused buffer). It runs on tokio's blocking pool, every
//! half second per task with a memory limit.

use std::fs::File;
use std::io::Read;
use std::sync::OnceLock;

/// The summed resident memory of the live processes in group `pgid`, in bytes. Processes
/// that exit during the walk are skipped; an unreadable /proc reads as zero.
pub(crate) fn group_resident_bytes(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut buffer = String::with_capacity(512);
    let mut pages = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        buffer.clear();
        let read = File::open(format!("/proc/{pid}/stat"))
            .and_then(|mut file| file.read_to_string(&mut buffer));
        if read.is_err() {
            continue; // gone since the listing
        }
        if let Some(stat) = parse_stat(&buffer).filter(|stat| stat.pgrp == pgid) {
            pages += stat.rss_pages;
        }
    }
    pages.saturating_mul(page_size())
}

/// The fields of `/proc/<pid>/stat` the memory limit needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Process group id (field 5).
    pgrp: u32,
    /// Resident set size in pages (field 24); zero for a zombie.
    rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name may hold spaces and parentheses, so
/// fields are counted from the last `)`: the state is field 3, the first after it.
fn parse_stat(stat: &str) -> Option<Stat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Fields 3 (state) and 4 (ppid), then the group.
    let pgrp = fields.nth(2)?.parse().ok()?;
    // Fields 6 to 23 lie between the group and the resident set size.
    let rss_pages = fields.nth(18)?.parse().ok()?;
    Some(Stat { pgrp, rss_pages })
}

fn page_size() -> u64 {
    static PAGE_SIZE: OnceLock<u64> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn parses_the_group_and_resident_pages() {
        let stat = "1234 (my (odd) prog) S 1 456 456 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    789 12345678 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                pgrp: 456,
                rss_pages: 2560
            })
        );
        assert_eq!(parse_stat("1 (short) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[tokio::test]
    async fn sums_the_resident_memory_of_a_group() {
        // A task as the agent starts it: a shell leading its group, and its child.
        let mut command = crate::spawner::TaskCommand::new("sh");
        command.args(["-c", "sleep 30 & wait"]);
        let mut spawned = crate::spawner::TaskProcess::spawn(command).await.unwrap();
        let pgid = spawned.process.pid();
        let resident = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .map_or(0, |stat| stat.rss_pages * page_size())
        };
        // The members, and the memory of all of them.
        let task_sum = || -> (usize, u64) {
            let members = crate::orphans::group_members(pgid);
            let bytes = members.iter().map(|pid| resident(*pid)).sum();
            (members.len(), bytes)
        };
        // The shell's size moves while it forks and execs `sleep`: compare once the
        // group holds still (the same members and sizes before and after the sample).
        let deadline = Instant::now() + Duration::from_secs(20);
        let observed = loop {
            let before = task_sum();
            let total = group_resident_bytes(pgid);
            let after = task_sum();
            let settled = before == after && before.0 == 2;
            if (settled && total == before.1) || Instant::now() > deadline {
                break (before, total);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = spawned.process.wait().await;
        let ((members, each), total) = observed;
        assert_eq!(members, 2, "the shell and its sleep");
        assert!(each > 0);
        assert_eq!(
            total, each,
            "the group's memory is the sum of its processes'"
        );
        assert_eq!(group_resident_bytes(u32::MAX), 0, "no such group");
    }
}
