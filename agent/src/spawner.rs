//! The spawner: one small process per agent that starts every task and ties the tasks'
//! lives to the agent's.
//!
//! PR_SET_PDEATHSIG reaches one process only: given to the task's own process, it would
//! take `sh` down with a SIGKILLed agent and leave `sleep` and every other child running.
//! So the agent does not start tasks itself:
//!
//! ```text
//! agent ─ posix_spawn, once ─► spawner (src/spawner.c): a socket to the agent on its
//!   │                          stdin; watches the agent, starts tasks, reaps them
//!   │  request: program, arguments, environment, working directory, stdout and stderr
//!   │  replies: started (pid, fork time) or failed (errno); later exited (wait
//!   │           status, reap time)
//!   ▼                            └─ fork ─► task: leads a new process group,
//!  the task's output pipes                  PR_SET_PDEATHSIG=SIGKILL from the spawner,
//!                                           no signal blocked, stdin /dev/null; execs
//!                                           the task's program
//! ```
//!
//! When the agent dies, however it died, the spawner kills the process group of every
//! task still running and exits: its end of the socket closes, or its parent changes
//! (its own PR_SET_PDEATHSIG wakes it; a one-second timeout is the backstop). Checking
//! the parent, rather than trusting the signal, tells the agent's death from the death of
//! the agent thread that started the spawner (it is then handed to another thread of the
//! agent, and signalled again when that one dies).
//!
//! Why one process, started once, rather than a small process per task leading each
//! group: that costs, per task, a `posix_spawn` from the agent, an exec, a fork and an
//! exit more, and a thread of the agent blocked until both execs are done. The spawner
//! creates each task's process sharing its memory until the exec (on x86-64; elsewhere it
//! forks it from its few pages), so a task costs a process and its own exec, and the
//! agent only writes a message. It is a small C program (`src/spawner.c`,
//! compiled by `build.rs` and embedded in the agent), run from an in-memory file.
//!
//! The times in the replies are the spawner's: a task starts when its process is
//! created and ends when it is reaped, not when the agent, busy with other tasks, gets
//! to read the reply.
//!
//! If the spawner itself dies (killed by hand, or by the kernel's OOM killer), its tasks'
//! leaders die with it (their PR_SET_PDEATHSIG), the agent learns it from the closed
//! socket, the runs waiting for those tasks end with an error and the runner kills what
//! is left of each group; the next task starts a new spawner.
//!
//! Signals meant for a task go to its group (`kill -TERM -PGID`), as the agent's own do.
//! Processes that leave the group (`setsid`) are out of the spawner's reach, as they are
//! out of reach of the agent's group signals.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use furrow_sysfd::ExitStatus;
use nix::sys::signal::Signal;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::process_group::signal_group;

/// The compiled spawner (see `build.rs`).
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/furrow-spawner"));

/// The spawner's name, in `ps` and `top`.
const NAME: &str = "furrow-spawner";

/// `MFD_EXEC` (Linux 6.3): asks for an executable memory file where the kernel's
/// `vm.memfd_noexec` setting would otherwise make it not executable.
const MFD_EXEC: libc::c_uint = 0x10;

// The protocol, as in spawner.c.
const REQUEST_SPAWN: u32 = 1;
const PAYLOAD_IN_FILE: u32 = 1;
const REPLY_STARTED: u32 = 1;
const REPLY_FAILED: u32 = 2;
const REPLY_EXITED: u32 = 3;
/// `struct request`: kind, flags, id, argc, envc, payload bytes, reserved.
const REQUEST_BYTES: usize = 32;
/// `struct reply`: kind, value, id, pid, reserved, time.
const REPLY_BYTES: usize = 32;
/// The largest payload sent in the message itself (`MAX_MESSAGE` in spawner.c); larger
/// ones go in a memory file.
const MAX_INLINE_PAYLOAD: usize = 65_536;

/// The path the spawner is started from: an in-memory file holding it, made once.
fn program_path() -> io::Result<&'static PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| install().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot prepare the task spawner: {e}")))
}

fn install() -> io::Result<PathBuf> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
    let fd = unsafe {
        let fd = libc::memfd_create(c"furrow-spawner".as_ptr(), libc::MFD_CLOEXEC | MFD_EXEC);
        if fd >= 0 {
            fd
        } else {
            // Kernels before 6.3 refuse the flag; their memory files are executable.
            libc::memfd_create(c"furrow-spawner".as_ptr(), libc::MFD_CLOEXEC)
        }
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(PROGRAM)?;
    let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    // Kept open for the agent's life: a new spawner may be needed at any time.
    std::mem::forget(file);
    Ok(path)
}

/// What a request waits for: its start, then its end.
struct Waiters {
    started: Option<oneshot::Sender<io::Result<(u32, SystemTime)>>>,
    exited: Option<oneshot::Sender<(ExitStatus, SystemTime)>>,
}

/// A running spawner and the agent's end of its socket.
struct Connection {
    socket: OwnedFd,
    pending: Mutex<HashMap<u64, Waiters>>,
    alive: AtomicBool,
    next_id: AtomicU64,
}

impl Connection {
    /// Starts a spawner and the thread that reads its replies.
    fn start() -> io::Result<Arc<Self>> {
        let program = program_path()?;
        let mut fds = [0 as RawFd; 2];
        // SAFETY: socketpair fills the two descriptors, owned right below.
        let made = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if made != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made and are owned by nothing else.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut child = Command::new(program)
            .arg0(NAME)
            .arg(std::process::id().to_string())
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start the task spawner: {e}")))?;
        let connection = Arc::new(Self {
            socket: ours,
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
        });
        let reader = Arc::clone(&connection);
        let pid = child.id();
        let started = std::thread::Builder::new()
            .name("furrow-spawner".into())
            .spawn(move || {
                reader.read_replies();
                let status = child.wait();
                warn!(pid, status = ?status, "the task spawner ended");
            });
        if let Err(e) = started {
            connection.alive.store(false, Ordering::SeqCst);
            return Err(e);
        }
        info!(pid, "task spawner started");
        Ok(connection)
    }

    /// Reads replies until the spawner ends, handing each to whoever waits for it.
    fn read_replies(&self) {
        let mut reply = [0u8; REPLY_BYTES];
        loop {
            // SAFETY: recv into a buffer of the given length.
            let got = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if got != REPLY_BYTES as isize {
                break;
            }
            let word = |at: usize| {
                u32::from_ne_bytes([reply[at], reply[at + 1], reply[at + 2], reply[at + 3]])
            };
            let kind = word(0);
            let value = word(4) as i32;
            let id = u64::from_ne_bytes(reply[8..16].try_into().unwrap_or_default());
            let pid = word(16);
            let nanos = u64::from_ne_bytes(reply[24..32].try_into().unwrap_or_default());
            let at = UNIX_EPOCH + Duration::from_nanos(nanos);
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match kind {
                REPLY_STARTED => {
                    let started = pending.get_mut(&id).and_then(|w| w.started.take());
                    if started.is_none_or(|started| started.send(Ok((pid, at))).is_err()) {
                        // Nobody waits for this task any more (its start was dropped
                        // midway): it must not run unwatched.
                        pending.remove(&id);
                        signal_group(pid, Signal::SIGKILL);
                    }
                }
                REPLY_FAILED => {
                    if let Some(started) = pending.remove(&id).and_then(|w| w.started) {
                        let _ = started.send(Err(io::Error::from_raw_os_error(value)));
                    }
                }
                REPLY_EXITED => {
                    if let Some(exited) = pending.remove(&id).and_then(|w| w.exited) {
                        let _ = exited.send((exit_status(value), at));
                    }
                }
                _ => {}
            }
        }
        self.alive.store(false, Ordering::SeqCst);
        // Every start and wait still pending fails: their senders are dropped.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Sends one request; `Ok(false)` when the spawner is gone.
    async fn send(&self, header: &[u8], payload: &[u8], fds: &[RawFd]) -> io::Result<bool> {
        let mut vectors = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        let fd_bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE computes a size.
        let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut waited = Duration::from_micros(100);
        loop {
            // SAFETY: a zeroed msghdr filled with pointers to live buffers; the control
            // buffer has room for one SCM_RIGHTS message of `fds`.
            let sent = unsafe {
                let mut message: libc::msghdr = std::mem::zeroed();
                message.msg_iov = vectors.as_mut_ptr();
                message.msg_iovlen = vectors.len();
                message.msg_control = control.as_mut_ptr().cast();
                message.msg_controllen = space;
                let cmsg = libc::CMSG_FIRSTHDR(&message);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(cmsg),
                    fd_bytes,
                );
                libc::sendmsg(
                    self.socket.as_raw_fd(),
                    &message,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if sent >= 0 {
                return Ok(true);
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => {}
                // The spawner is busy starting others: its queue is full for a moment.
                Some(libc::EAGAIN) => {
                    tokio::time::sleep(waited).await;
                    waited = (waited * 2).min(Duration::from_millis(10));
                }
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => {
                    self.alive.store(false, Ordering::SeqCst);
                    return Ok(false);
                }
                _ => return Err(error),
            }
        }
    }
}

/// The spawner of this agent process: the running one, or a new one if it ended.
fn connection() -> io::Result<Arc<Connection>> {
    static CURRENT: Mutex<Option<Arc<Connection>>> = Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(connection) = current.as_ref().filter(|c| c.alive.load(Ordering::SeqCst)) {
        return Ok(Arc::clone(connection));
    }
    let connection = Connection::start()?;
    *current = Some(Arc::clone(&connection));
    Ok(connection)
}

/// A wait status (as `waitpid` gives it) as an [`ExitStatus`].
fn exit_status(status: i32) -> ExitStatus {
    if status & 0x7f == 0 {
        ExitStatus::Exited((status >> 8) & 0xff)
    } else {
        ExitStatus::Signaled {
            signal: status & 0x7f,
            core_dumped: status & 0x80 != 0,
        }
    }
}

/// The agent's environment, which every task starts from: each variable's name and its
/// `NAME=VALUE` entry with its NUL, ready for a request's payload. Entries that could not
/// be passed on (a NUL inside) are left out, as the standard library's `Command` does.
fn agent_environment() -> &'static [(OsString, Vec<u8>)] {
    static ENVIRONMENT: OnceLock<Vec<(OsString, Vec<u8>)>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        std::env::vars_os()
            .filter(|(name, value)| !name.as_bytes().contains(&0) && !value.as_bytes().contains(&0))
            .map(|(name, value)| {
                let mut entry = Vec::with_capacity(name.len() + value.len() + 2);
                entry.extend_from_slice(name.as_bytes());
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                entry.push(0);
                (name, entry)
            })
            .collect()
    })
}

/// A task's command: its program (searched in the task's `PATH` when it has no slash),
/// arguments, environment (the agent's, with changes) and working directory. Its standard
/// input is /dev/null; its output goes to two pipes.
pub(crate) struct TaskCommand {
    program: OsString,
    args: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    cwd: Option<PathBuf>,
}

impl TaskCommand {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(name.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (name, value) in vars {
            self.env(name, value);
        }
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// The request's payload: program, working directory, arguments (the program's name
    /// first, as `argv[0]`), environment; each ends with a NUL. Refuses a NUL inside any.
    fn payload(&self) -> io::Result<(Vec<u8>, u32, u32)> {
        let mut payload = Vec::with_capacity(4096);
        let mut push = |text: &[u8], what: &str| -> io::Result<()> {
            if text.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the task's {what} holds a NUL byte"),
                ));
            }
            payload.extend_from_slice(text);
            payload.push(0);
            Ok(())
        };
        push(self.program.as_bytes(), "program")?;
        let cwd = self.cwd.as_deref().map(|d| d.as_os_str().as_bytes());
        push(cwd.unwrap_or_default(), "working directory")?;
        push(self.program.as_bytes(), "program")?;
        for arg in &self.args {
            push(arg.as_bytes(), "arguments")?;
        }
        let mut envc = 0u32;
        for (name, entry) in agent_environment() {
            if !self.env.contains_key(name) {
                payload.extend_from_slice(entry);
                envc += 1;
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.as_bytes().contains(&b'=') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the environment variable name {name:?} is empty or holds `=`"),
                ));
            }
            if name.as_bytes().contains(&0) || value.as_bytes().contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the environment variable {name:?} holds a NUL byte"),
                ));
            }
            payload.extend_from_slice(name.as_bytes());
            payload.push(b'=');
            payload.extend_from_slice(value.as_bytes());
            payload.push(0);
            envc += 1;
        }
        let argc = u32::try_from(self.args.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many arguments"))?;
        Ok((payload, argc, envc))
    }
}

/// A started task and the read ends of its output pipes.
pub(crate) struct Spawned {
    pub process: TaskProcess,
    /// When the spawner created the task's process.
    pub started_at: SystemTime,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// A running task: the leader of its process group, started and reaped by the spawner.
pub(crate) struct TaskProcess {
    pid: u32,
    exited: Option<oneshot::Receiver<(ExitStatus, SystemTime)>>,
    status: Option<ExitStatus>,
    ended_at: Option<SystemTime>,
}

impl TaskProcess {
    /// Starts `command` through the spawner; returns once the task's program runs, or why
    /// it could not start (as the standard library's `spawn` would: a program not found
    /// is `NotFound`). Needs a tokio runtime with IO and time enabled.
    pub async fn spawn(command: TaskCommand) -> io::Result<Spawned> {
        let (payload, argc, envc) = command.payload()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        let in_file = payload.len() > MAX_INLINE_PAYLOAD;
        let file = if in_file {
            Some(payload_file(&payload)?)
        } else {
            None
        };
        let inline: &[u8] = if in_file { &[] } else { &payload };
        let mut fds = vec![stdout_write.as_raw_fd(), stderr_write.as_raw_fd()];
        fds.extend(file.as_ref().map(|f| f.as_raw_fd()));
        let payload_bytes = u32::try_from(payload.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the task's command is too large",
            )
        })?;
        // A spawner that died since the last task is replaced, once.
        for attempt in 0..2 {
            let connection = connection()?;
            let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
            let mut header = Vec::with_capacity(REQUEST_BYTES);
            header.extend(REQUEST_SPAWN.to_ne_bytes());
            header.extend(if in_file { PAYLOAD_IN_FILE } else { 0 }.to_ne_bytes());
            header.extend(id.to_ne_bytes());
            header.extend(argc.to_ne_bytes());
            header.extend(envc.to_ne_bytes());
            header.extend(payload_bytes.to_ne_bytes());
            header.extend(0u32.to_ne_bytes());
            let (started_tx, started_rx) = oneshot::channel();
            let (exited_tx, exited_rx) = oneshot::channel();
            connection
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id,
                    Waiters {
                        started: Some(started_tx),
                        exited: Some(exited_tx),
                    },
                );
            let forget = || {
                connection
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            };
            match connection.send(&header, inline, &fds).await {
                Ok(true) => {}
                Ok(false) if attempt == 0 => {
                    forget();
                    continue;
                }
                Ok(false) => {
                    forget();
                    return Err(io::Error::other("the task spawner ended"));
                }
                Err(e) => {
                    forget();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot send the task to the spawner: {e}"),
                    ));
                }
            }
            // The task holds the write ends now; the agent's copies would keep the pipes
            // open past the task.
            drop((stdout_write, stderr_write, file));
            let mut started = StartGuard(started_rx);
            let (pid, started_at) = match (&mut started.0).await {
                Ok(Ok(started)) => started,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other(
                        "the task spawner ended before starting the task",
                    ));
                }
            };
            let stdout = pipe::Receiver::from_owned_fd_unchecked(stdout_read)?;
            let stderr = pipe::Receiver::from_owned_fd_unchecked(stderr_read)?;
            return Ok(Spawned {
                process: TaskProcess {
                    pid,
                    exited: Some(exited_rx),
                    status: None,
                    ended_at: None,
                },
                started_at,
                stdout,
                stderr,
            });
        }
        Err(io::Error::other("the task spawner ended"))
    }

    /// Process id (and process group id) of the task.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When the spawner reaped the task, once [`TaskProcess::wait`] returned its status.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.ended_at
    }

    /// Waits for the task to exit and returns how it ended (the spawner reaps it).
    /// Cancel-safe: dropping the future and calling again resumes the wait; once it
    /// ended, every call returns the same status.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let Some(exited) = self.exited.as_mut() else {
            return Err(io::Error::other(
                "the task spawner ended; the task's end is unknown",
            ));
        };
        match exited.await {
            Ok((status, at)) => {
                self.status = Some(status);
                self.ended_at = Some(at);
                self.exited = None;
                Ok(status)
            }
            Err(_) => {
                self.exited = None;
                Err(io::Error::other(
                    "the task spawner ended; the task's end is unknown",
                ))
            }
        }
    }
}

/// The wait for a task's start. Dropped before the start is known (the run abandoned
/// midway), it makes sure the task does not run unwatched: a start reported already is
/// killed here, one reported later by the thread that reads the spawner's replies.
struct StartGuard(oneshot::Receiver<io::Result<(u32, SystemTime)>>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        // Closed first, so that no start can arrive between the look and the drop.
        self.0.close();
        if let Ok(Ok((pid, _))) = self.0.try_recv() {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

/// A pipe for a task's output: the read end (close-on-exec, non-blocking, for the
/// agent's reactor) and the write end (blocking, as a program expects its output).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // A new pipe's end has no other status flag to keep: one call, where the reactor's
    // own conversion reads the flags first.
    nix::fcntl::fcntl(
        &read,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok((read, write))
}

/// A memory file holding a payload too large for one message.
fn payload_file(payload: &[u8]) -> io::Result<File> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"furrow-task".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(payload)?;
    Ok(file)
}

/// The standard output and exit status of `command`, run to its end.
#[cfg(test)]
pub(crate) async fn output_of(command: TaskCommand) -> (String, ExitStatus) {
    use tokio::io::AsyncReadExt;
    let Spawned {
        mut process,
        mut stdout,
        ..
    } = TaskProcess::spawn(command).await.unwrap();
    let mut text = String::new();
    stdout.read_to_string(&mut text).await.unwrap();
    (text, process.wait().await.unwrap())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;

    use super::*;
    use crate::orphans::group_members;
    use crate::test_util::wait_for;

    fn sh(script: &str) -> TaskCommand {
        let mut command = TaskCommand::new("sh");
        command.args(["-c", script]);
        command
    }

    async fn status_of(script: &str) -> ExitStatus {
        let Spawned { mut process, .. } = TaskProcess::spawn(sh(script)).await.unwrap();
        process.wait().await.unwrap()
    }

    /// The pids of this process's children named `furrow-spawner`.
    fn spawners() -> Vec<u32> {
        let me = std::process::id();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let parent = stat
                    .rfind(')')
                    .and_then(|end| stat[end + 1..].split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok());
                stat.contains("(furrow-spawner)") && parent == Some(me)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_task_starts_when_its_process_is_created_and_ends_when_it_is_reaped() {
        let before = SystemTime::now();
        let Spawned {
            mut process,
            started_at,
            ..
        } = TaskProcess::spawn(sh("sleep 0.3")).await.unwrap();
        assert_eq!(process.ended_at(), None, "not ended yet");
        assert!(started_at >= before, "{started_at:?} is before the request");
        // The end is known once the wait returns, and stays the same.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(process.wait().await.unwrap(), ExitStatus::Exited(0));
        let waited = SystemTime::now();
        let ended_at = process.ended_at().expect("reaped");
        let ran = ended_at.duration_since(started_at).unwrap();
        assert!(ran >= Duration::from_millis(300), "ran {ran:?}");
        // Reaped when it ended, not when the wait was called 600 ms after the start.
        assert!(ran < Duration::from_millis(550), "ran {ran:?}");
        assert!(ended_at <= waited);
        assert_eq!(process.wait().await.unwrap(), ExitStatus::Exited(0));
        assert_eq!(process.ended_at(), Some(ended_at));
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_the_tasks() {
        assert_eq!(status_of("exit 0").await, ExitStatus::Exited(0));
        assert_eq!(status_of("exit 7").await, ExitStatus::Exited(7));
        assert_eq!(status_of("exit 255").await, ExitStatus::Exited(255));
        let signaled = |signal| ExitStatus::Signaled {
            signal,
            core_dumped: false,
        };
        assert_eq!(status_of("kill -TERM $$").await, signaled(libc::SIGTERM));
        assert_eq!(status_of("kill -KILL $$").await, signaled(libc::SIGKILL));
        assert_eq!(
            status_of("ulimit -c 0; kill -ABRT $$").await,
            signaled(libc::SIGABRT)
        );
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_a_spawn_error() {
        let error = |command| async move {
            match TaskProcess::spawn(command).await {
                Ok(_) => panic!("started"),
                Err(e) => e,
            }
        };
        let missing = error(TaskCommand::new("/nonexistent/furrow-nope")).await;
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
        let unknown = error(TaskCommand::new("furrow-no-such-program-on-the-path")).await;
        assert_eq!(unknown.kind(), io::ErrorKind::NotFound, "{unknown}");
        let dir = tempfile::tempdir().unwrap();
        let denied = error(TaskCommand::new(dir.path())).await;
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied, "{denied}");
        let mut elsewhere = TaskCommand::new("true");
        elsewhere.current_dir(dir.path().join("missing"));
        let elsewhere = error(elsewhere).await;
        assert_eq!(elsewhere.kind(), io::ErrorKind::NotFound, "{elsewhere}");
        let mut nul = TaskCommand::new("echo");
        nul.args(["a\0b"]);
        let nul = error(nul).await;
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput, "{nul}");
        // The spawner still serves.
        assert_eq!(status_of("exit 3").await, ExitStatus::Exited(3));
    }

    #[tokio::test]
    async fn the_task_finds_its_program_in_its_own_path_and_reads_an_empty_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("furrow-spawner-test-tool");
        std::fs::write(
            &script,
            "#!/bin/sh\nread line || echo \"stdin empty in $PWD\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut command = TaskCommand::new("furrow-spawner-test-tool");
        command
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .current_dir(dir.path());
        let (text, status) = output_of(command).await;
        assert!(status.success(), "{status:?}");
        assert_eq!(
            text.trim_end(),
            format!("stdin empty in {}", dir.path().display())
        );
        // A script without `#!` runs with /bin/sh, as execvp runs it.
        let bare = dir.path().join("bare-script");
        std::fs::write(&bare, "echo ran by sh with $1\n").unwrap();
        std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut command = TaskCommand::new(&bare);
        command.args(["an-argument"]);
        assert_eq!(output_of(command).await.0, "ran by sh with an-argument\n");
    }

    #[tokio::test]
    async fn the_environment_is_the_agents_with_the_tasks_changes() {
        let mut command = sh("echo \"$FURROW_SPAWNER_TEST|$HOME\"");
        command.env("FURROW_SPAWNER_TEST", "set for the task");
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(
            output_of(command).await.0,
            format!("set for the task|{home}\n")
        );
        let mut command = sh("echo \"$HOME\"");
        command.env("HOME", "/elsewhere");
        assert_eq!(output_of(command).await.0, "/elsewhere\n");
    }

    #[tokio::test]
    async fn a_command_too_large_for_one_message_still_starts() {
        // 200,000 bytes of arguments: more than one message holds.
        let words: Vec<String> = (0..20_000).map(|i| format!("word{i:05}")).collect();
        let mut command = sh("echo $# \"$1\" \"${20000}\"");
        command.args(["sh"]).args(&words);
        assert_eq!(output_of(command).await.0, "20000 word00000 word19999\n");
    }

    #[tokio::test]
    async fn the_task_leads_its_group_with_only_its_standard_descriptors() {
        let Spawned { mut process, .. } = TaskProcess::spawn(sh("exec sleep 1000")).await.unwrap();
        let pid = process.pid();
        wait_for("the task's exec", || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim_end() == "sleep")
        })
        .await;
        assert_eq!(group_members(pid), [pid]);
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(fds.len(), 3, "{fds:?}");
        let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
        assert_eq!(stdin, Path::new("/dev/null"));
        // The spawner: this process's child, under its own name, from an in-memory file.
        let spawner = spawners();
        assert_eq!(spawner.len(), 1, "{spawner:?}");
        let exe = std::fs::read_link(format!("/proc/{}/exe", spawner[0])).unwrap();
        assert!(
            exe.to_string_lossy().starts_with("/memfd:furrow-spawner"),
            "{exe:?}"
        );
        // A cancel's SIGTERM to the group ends the task.
        killpg(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        let signaled = ExitStatus::Signaled {
            signal: libc::SIGTERM,
            core_dumped: false,
        };
        assert_eq!(process.wait().await.unwrap(), signaled);
        // Cancel-safe and repeatable.
        assert_eq!(process.wait().await.unwrap(), signaled);
        // Reaped: no zombie is left under the pid.
        wait_for("the task to be reaped", || {
            std::fs::metadata(format!("/proc/{pid}")).is_err()
        })
        .await;
    }

    #[tokio::test]
    async fn a_cancelled_wait_resumes() {
        let Spawned { mut process, .. } = TaskProcess::spawn(sh("exec sleep 1000")).await.unwrap();
        let raced = tokio::select! {
            status = process.wait() => Some(status),
            () = std::future::ready(()) => None,
        };
        assert!(raced.is_none(), "the process cannot have exited yet");
        kill(Pid::from_raw(process.pid() as i32), Signal::SIGKILL).unwrap();
        assert_eq!(process.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    }

    /// The processes whose command line holds `marker`.
    fn processes_with(marker: &str) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| String::from_utf8_lossy(&line).contains(marker))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_start_dropped_midway_leaves_no_process() {
        let marker = format!("furrow-abandoned-start-{}", std::process::id());
        // The shell stays, its command line naming the marker.
        let command = sh(&format!("sleep 1000; : {marker}"));
        let mut start = Box::pin(TaskProcess::spawn(command));
        // Polled once (its request is sent), then dropped before the task is known.
        assert!(futures::poll!(&mut start).is_pending());
        drop(start);
        // The spawner serves requests in order: once a later task has started, the
        // abandoned one has started too, and was killed when its start came back.
        assert_eq!(status_of("exit 0").await, ExitStatus::Exited(0));
        wait_for("the abandoned task to be killed", || {
            processes_with(&marker).is_empty()
        })
        .await;
    }

    #[tokio::test]
    async fn a_spawner_that_dies_is_replaced_and_its_tasks_are_ended() {
        let Spawned { mut process, .. } =
            TaskProcess::spawn(sh("sleep 1000 & wait")).await.unwrap();
        let pgid = process.pid();
        wait_for("the task's sleep", || group_members(pgid).len() == 2).await;
        let old = spawners();
        assert_eq!(old.len(), 1, "{old:?}");
        kill(Pid::from_raw(old[0] as i32), Signal::SIGKILL).unwrap();
        let error = process.wait().await.unwrap_err();
        assert!(error.to_string().contains("spawner ended"), "{error}");
        // The task's leader died with the spawner; the runner kills the rest.
        assert!(crate::process_group::signal_group(pgid, Signal::SIGKILL));
        wait_for("the group to end", || group_members(pgid).is_empty()).await;
        // The next task starts under a new spawner.
        assert_eq!(status_of("exit 5").await, ExitStatus::Exited(5));
        let new = spawners();
        assert_eq!(new.len(), 1, "{new:?}");
        assert_ne!(new, old);
    }
}
