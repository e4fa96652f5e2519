//! The sentinel: the first process of every task's process group, which ties the group's
//! life to the agent's.
//!
//! PR_SET_PDEATHSIG reaches one process only: given to the task's own process, it would
//! take `sh` down with a SIGKILLed agent and leave `sleep` and every other child running.
//! So a task starts in two steps, between fork and exec ([`split`], run in `pre_exec`):
//!
//! ```text
//! agent ─ fork ─► sentinel: leads the task's new process group (its pid is the group id,
//!                 the pid the agent reports, records and waits on); never execs
//!                   └─ fork ─► task: PR_SET_PDEATHSIG=SIGKILL from the sentinel, no
//!                              signal blocked; execs the task's program
//! ```
//!
//! The sentinel takes the name `furrow-sentinel` (command and command line), closes every
//! file descriptor (holding the standard library's exec-error channel would make the
//! agent's spawn wait for the end of the task; holding the task's output pipes, the
//! agent's sockets or its state lock would keep them open past their owners), blocks
//! every signal and waits in `sigtimedwait`. On each wake-up it checks:
//! - whether the task exited: it then ends the same way, with `_exit` of the task's code or
//!   by the task's signal (default action restored, core dumps off), so the agent reads
//!   the task's exit status from the sentinel exactly;
//! - whether its parent is still the agent: the agent's death wakes it (its own
//!   PR_SET_PDEATHSIG), and a parent that changed means the agent died however it died,
//!   SIGKILL included; the sentinel then kills the whole group with SIGKILL, itself
//!   included. Checking the parent, rather than trusting the signal, is what tells the
//!   agent's death from anything else: the death of the agent thread that started the
//!   task (the sentinel is handed to another thread of the agent and signalled again
//!   when that one dies), or the agent's own signals to the group (a cancel's SIGTERM),
//!   which reach the sentinel too and are ignored by it.
//!
//! The one-second timeout of the wait is a backstop: the signals make the sentinel act at
//! once, the timeout bounds how long a signal the kernel did not send could go unnoticed.
//!
//! Signals meant for a task go to its group (`kill -TERM -PGID`), as the agent's own do;
//! one sent to the sentinel's pid alone reaches only the sentinel, which ignores it.
//!
//! Processes that leave the group (`setsid`) are out of the sentinel's reach, as they are
//! out of reach of the agent's group signals. It does not hunt for them: as a subreaper
//! it would inherit them only once their parent died, and it could not kill them after
//! the SIGKILL to its own group, which takes the sentinel too.
//!
//! The sentinel is a forked copy of the agent: its resident pages are the agent's, so the
//! task's memory excludes it (see `group_memory`). Everything it runs after the fork is
//! async-signal-safe: system calls through libc, no allocation, no lock.

use std::io;
use std::sync::OnceLock;

/// The signal the sentinel gets when the agent dies. Any blockable signal would do: the
/// sentinel blocks them all and acts on its parent, not on the signal.
const AGENT_DEATH_SIGNAL: libc::c_int = libc::SIGUSR1;

/// How long the sentinel waits for a signal before it checks the task and the agent
/// again anyway.
const BACKSTOP_SECS: libc::time_t = 1;

/// The name the sentinel shows in `ps` and `top` (at most 15 bytes), and its command
/// line: a copy of the agent's would pass it off as the agent to `pgrep -f` and the like.
const NAME: &std::ffi::CStr = c"furrow-sentinel";

/// What the hook needs, prepared before the fork: nothing after it may allocate.
#[derive(Clone, Copy)]
pub(crate) struct Split {
    agent: libc::pid_t,
    /// Where the command line lies in memory (the same in the sentinel, a copy).
    arguments: Option<(usize, usize)>,
    every_signal: libc::sigset_t,
    no_signal: libc::sigset_t,
}

impl Split {
    /// Prepared in the agent, before it spawns the task.
    pub fn new() -> Self {
        // SAFETY: sigfillset and sigemptyset only write the set they are given.
        unsafe {
            let mut every_signal: libc::sigset_t = std::mem::zeroed();
            let mut no_signal: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut every_signal);
            libc::sigemptyset(&mut no_signal);
            Self {
                agent: libc::getpid(),
                arguments: argument_area(),
                every_signal,
                no_signal,
            }
        }
    }
}

/// Splits the agent's freshly forked child into the sentinel and the task (see the module
/// docs). Returns only in the task, which then execs; the sentinel never returns. Errors
/// before the split are the child's (the standard library reports them as the spawn's).
///
/// # Safety
///
/// Only in the child of a fork, before exec: in a `pre_exec` hook of a command that
/// starts a new process group.
pub(crate) unsafe fn split(prepared: &Split) -> io::Result<()> {
    // SAFETY (for the calls below): plain system calls and signal-set operations on local
    // values; nothing allocates or takes a lock.
    unsafe {
        // Nothing may kill the sentinel but SIGKILL, and the signals it waits for stay
        // pending until it takes them. The task unblocks them again below.
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &prepared.every_signal,
            std::ptr::null_mut(),
        ))?;
        // The task's end must leave a status to collect: SIGCHLD not ignored.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        check(libc::sigaction(
            libc::SIGCHLD,
            &default,
            std::ptr::null_mut(),
        ))?;
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            AGENT_DEATH_SIGNAL as libc::c_ulong,
        ))?;
        // The agent may have died before the prctl; then no signal will come.
        if libc::getppid() != prepared.agent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let sentinel = libc::getpid();
        // libc's fork in a process that is single-threaded now: it runs the same fork
        // handlers the standard library's own fork ran in the agent.
        let task = check(libc::fork())?;
        if task == 0 {
            return become_task(prepared, sentinel);
        }
        watch(prepared, task)
    }
}

/// The task's side of the split: dies with the sentinel, unblocks every signal.
unsafe fn become_task(prepared: &Split, sentinel: libc::pid_t) -> io::Result<()> {
    // SAFETY: system calls only.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))?;
        if libc::getppid() != sentinel {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // The agent blocks SIGTERM, SIGINT and SIGHUP to read them from a signalfd, the
        // sentinel blocks everything, and a blocked mask survives exec: without this a
        // task would never see the SIGTERM of a cancel or of an operator.
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &prepared.no_signal,
            std::ptr::null_mut(),
        ))?;
    }
    Ok(())
}

/// The sentinel's life: waits for the task's end or the agent's death.
unsafe fn watch(prepared: &Split, task: libc::pid_t) -> ! {
    // SAFETY: system calls on local values, and writes within the argument area, which
    // `argument_area` checked to be writable memory of the agent, so of its copy.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr());
        if let Some((start, end)) = prepared.arguments {
            // Nothing reads the copy of the agent's arguments in the sentinel.
            let area = start as *mut u8;
            let length = end - start;
            std::ptr::write_bytes(area, 0, length);
            let name = NAME.to_bytes();
            std::ptr::copy_nonoverlapping(name.as_ptr(), area, name.len().min(length - 1));
        }
        close_every_fd();
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let waited = libc::waitid(
                libc::P_PID,
                task as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            );
            if waited == 0 && info.si_pid() == task {
                relay(&info);
            }
            if waited == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                // Cannot happen (only the sentinel reaps the task); rather than watch
                // nothing, end the group.
                kill_group();
            }
            if libc::getppid() != prepared.agent {
                kill_group();
            }
            let backstop = libc::timespec {
                tv_sec: BACKSTOP_SECS,
                tv_nsec: 0,
            };
            // Whatever woke it, the loop checks the state again.
            libc::sigtimedwait(&prepared.every_signal, &mut info, &backstop);
        }
    }
}

/// Where this process's command line lies in memory: fields 48 and 49 of /proc/self/stat,
/// checked to lie in one writable mapping of /proc/self/maps (writing elsewhere would
/// crash the sentinel). `None` when they cannot be read or checked.
fn argument_area() -> Option<(usize, usize)> {
    static AREA: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    *AREA.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The first field after the command name is field 3.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let start: usize = fields.nth(45)?.parse().ok()?;
        let end: usize = fields.next()?.parse().ok()?;
        if start >= end {
            return None;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let writable = maps.lines().any(|line| {
            let mut parts = line.split_whitespace();
            let (Some(range), Some(permissions)) = (parts.next(), parts.next()) else {
                return false;
            };
            let Some((low, high)) = range.split_once('-') else {
                return false;
            };
            let (Ok(low), Ok(high)) = (
                usize::from_str_radix(low, 16),
                usize::from_str_radix(high, 16),
            ) else {
                return false;
            };
            permissions.starts_with("rw") && low <= start && end <= high
        });
        writable.then_some((start, end))
    })
}

/// Ends the sentinel the way the task ended.
unsafe fn relay(info: &libc::siginfo_t) -> ! {
    // SAFETY: system calls only, on local values.
    unsafe {
        let status = info.si_status();
        if info.si_code == libc::CLD_EXITED {
            libc::_exit(status);
        }
        // Killed (CLD_KILLED, CLD_DUMPED): die of the same signal, without a core file
        // of the sentinel (a copy of the agent's memory).
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong);
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(status, &default, std::ptr::null_mut());
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, status);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        // Unblocked and sent to itself, the signal is acted on before kill returns.
        libc::kill(libc::getpid(), status);
        // Only a signal whose default action ends a process can have ended the task.
        libc::_exit(128 + status)
    }
}

/// Kills every process of the group, the sentinel included.
unsafe fn kill_group() -> ! {
    // SAFETY: system calls only.
    unsafe {
        libc::kill(0, libc::SIGKILL);
        libc::_exit(128 + libc::SIGKILL)
    }
}

/// Closes every file descriptor of the sentinel.
unsafe fn close_every_fd() {
    // SAFETY: system calls only; the sentinel uses no descriptor afterwards.
    unsafe {
        // close_range (Linux 5.9) through syscall: the libc wrapper needs glibc 2.34.
        if libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            0,
        ) == 0
        {
            return;
        }
        // Older kernels: the open ones, as /proc lists them; closing every number up to
        // the limit instead could mean a billion system calls where the limit is high.
        if !close_listed_fds() {
            close_fds_below_limit();
        }
    }
}

/// Closes the file descriptors /proc/self/fd lists; false when it cannot be read.
unsafe fn close_listed_fds() -> bool {
    // SAFETY: system calls on a local buffer; records are read within the length
    // getdents64 returned, each no longer than its `d_reclen`.
    unsafe {
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return false;
        }
        let mut buffer = [0u8; 4096];
        // Closing descriptors while the listing is read may hide some of them from it:
        // read it again until a whole pass finds nothing left to close.
        loop {
            let mut closed = false;
            libc::lseek(dir, 0, libc::SEEK_SET);
            loop {
                let length =
                    libc::syscall(libc::SYS_getdents64, dir, buffer.as_mut_ptr(), buffer.len());
                let Ok(length) = usize::try_from(length) else {
                    break; // an error
                };
                if length == 0 {
                    break; // the end of the listing
                }
                let mut offset = 0;
                // struct linux_dirent64: d_ino (8 bytes), d_off (8), d_reclen (2),
                // d_type (1), then the NUL-terminated name.
                while offset + 19 < length {
                    let record = &buffer[offset..length];
                    let record_length = usize::from(u16::from_ne_bytes([record[16], record[17]]));
                    if record_length == 0 {
                        break;
                    }
                    if let Some(fd) = parse_fd(&record[19..record_length.min(record.len())])
                        && fd != dir
                    {
                        libc::close(fd);
                        closed = true;
                    }
                    offset += record_length;
                }
            }
            if !closed {
                break;
            }
        }
        libc::close(dir);
        true
    }
}

/// The descriptor a /proc/self/fd entry names (digits up to the NUL); `None` for `.`
/// and `..`.
fn parse_fd(name: &[u8]) -> Option<libc::c_int> {
    let digits = name.split(|b| *b == 0).next()?;
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0 as libc::c_int, |fd, digit| {
        let value = digit.checked_sub(b'0').filter(|d| *d <= 9)?;
        fd.checked_mul(10)?.checked_add(libc::c_int::from(value))
    })
}

/// Closes every descriptor number below the open-file limit: the last resort, without
/// /proc.
unsafe fn close_fds_below_limit() {
    // SAFETY: system calls only.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        let highest = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(libc::c_int::MAX as libc::rlim_t) as libc::c_int
        } else {
            1024 // the usual default
        };
        for fd in 0..highest {
            libc::close(fd);
        }
    }
}

/// A system call's result, or the error it set.
fn check<T: PartialEq + From<i8>>(result: T) -> io::Result<T> {
    if result == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    use crate::orphans::group_members;
    use crate::process_group::isolate;

    fn spawn(script: &str, dir: &std::path::Path) -> Child {
        let mut command = Command::new("sh");
        command
            .args(["-c", script])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        isolate(&mut command);
        command.spawn().unwrap()
    }

    fn status_of(script: &str) -> std::process::ExitStatus {
        let dir = tempfile::tempdir().unwrap();
        spawn(script, dir.path()).wait().unwrap()
    }

    /// Waits until `condition` holds, failing after a generous deadline.
    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_sentinel_exits_as_the_task_did() {
        assert_eq!(status_of("exit 0").code(), Some(0));
        assert_eq!(status_of("exit 7").code(), Some(7));
        assert_eq!(status_of("exit 255").code(), Some(255));
        assert_eq!(status_of("kill -TERM $$").signal(), Some(libc::SIGTERM));
        assert_eq!(status_of("kill -KILL $$").signal(), Some(libc::SIGKILL));
        // A signal that dumps core: the same signal, and no core dump of the sentinel (a
        // copy of this process), even where core dumps are on. The task itself dumps
        // none (`ulimit -c 0`).
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command
            .args(["-c", "ulimit -c 0; kill -ABRT $$"])
            .current_dir(dir.path())
            .stdin(Stdio::null());
        // SAFETY: setrlimit is async-signal-safe. Runs before the split, so the sentinel
        // starts with core dumps as large as allowed.
        unsafe {
            command.pre_exec(|| {
                let mut limit: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
                Ok(())
            });
        }
        isolate(&mut command);
        let status = command.spawn().unwrap().wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGABRT));
        assert!(!status.core_dumped());
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(files.is_empty(), "{files:?}");
    }

    #[test]
    fn the_fds_proc_lists_are_all_closed() {
        // What kernels without close_range get: in a child, with an extra descriptor open
        // on 42, everything /proc/self/fd lists is closed before exec.
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "for fd in 0 1 2 42; do [ -e /proc/self/fd/$fd ] && exit 1; done; exit 0",
        ]);
        // SAFETY: dup2 and the closing are system calls only.
        unsafe {
            command.pre_exec(|| {
                if libc::dup2(2, 42) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if !super::close_listed_fds() {
                    return Err(std::io::Error::other("/proc/self/fd unreadable"));
                }
                Ok(())
            });
        }
        assert_eq!(command.status().unwrap().code(), Some(0));
    }

    #[test]
    fn fd_names_are_parsed() {
        assert_eq!(super::parse_fd(b"42\0"), Some(42));
        assert_eq!(super::parse_fd(b"0\0\0\0"), Some(0));
        assert_eq!(super::parse_fd(b".\0"), None);
        assert_eq!(super::parse_fd(b"..\0"), None);
        assert_eq!(super::parse_fd(b"\0"), None);
        assert_eq!(super::parse_fd(b"99999999999\0"), None);
    }

    #[test]
    fn a_program_that_cannot_start_is_a_spawn_error() {
        let started = Instant::now();
        let mut command = Command::new("/nonexistent/furrow-nope");
        isolate(&mut command);
        let error = command.spawn().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_sentinel_leads_the_group_under_its_own_name_holds_no_fd_and_ignores_group_signals() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn("exec sleep 1000", dir.path());
        let pgid = child.id();
        wait_for("the task beside the sentinel", || {
            group_members(pgid).len() == 2
        });
        let fds = std::fs::read_dir(format!("/proc/{pgid}/fd"))
            .unwrap()
            .count();
        assert_eq!(fds, 0, "the sentinel keeps no file descriptor open");
        let name = std::fs::read_to_string(format!("/proc/{pgid}/comm")).unwrap();
        assert_eq!(name.trim_end(), "furrow-sentinel");
        let cmdline = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap();
        let arguments: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(arguments, ["furrow-sentinel"], "not a copy of ours");
        // A cancel's SIGTERM to the group ends the task but not the sentinel, which then
        // exits as the task did.
        killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
    }
}
