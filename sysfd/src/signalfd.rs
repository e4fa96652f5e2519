//! signalfd and the signal mask: receive signals as events instead of handlers.
//!
//! A signal is delivered through a signalfd only while it is blocked in **every** thread;
//! otherwise some thread runs its default action (for `SIGTERM`: the process dies). Threads
//! inherit the mask of the thread that creates them, so block the signals first thing in
//! `main`, before a tokio or actix runtime starts its threads:
//!
//! ```no_run
//! use furrow_sysfd::{AsyncSignalFd, SHUTDOWN_SIGNALS, block_signals};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     block_signals(&SHUTDOWN_SIGNALS)?; // before any thread exists
//!     let rt = tokio::runtime::Runtime::new()?;
//!     rt.block_on(async {
//!         let signals = AsyncSignalFd::for_signals(&SHUTDOWN_SIGNALS)?;
//!         let info = signals.read_event().await?;
//!         println!("stopping on {:?} from pid {}", info.signal(), info.pid);
//!         Ok::<(), furrow_sysfd::Error>(())
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! Standard signals coalesce: two `SIGTERM`s sent before a read give one event. Real-time
//! signals (`SIGRTMIN..=SIGRTMAX`, added with [`SignalSet::add_raw`]) queue, one event each.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result, cvt};
use crate::fd::{live_fd, owned_fd, read_retry};
use crate::source::{AsyncSource, EventSource};

pub use nix::sys::signal::Signal;

/// The signals an agent stops on: `SIGTERM`, `SIGINT`, `SIGHUP`.
pub const SHUTDOWN_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// A set of signals (`sigset_t`), including real-time signals.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.raw_members()).finish()
    }
}

impl PartialEq for SignalSet {
    fn eq(&self, other: &Self) -> bool {
        self.raw_members().eq(other.raw_members())
    }
}

impl Eq for SignalSet {}

fn max_signal() -> i32 {
    libc::SIGRTMAX()
}

impl SignalSet {
    /// The empty set.
    pub fn empty() -> Self {
        // SAFETY: sigemptyset initialises the whole set.
        let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
        // SAFETY: `set` is a valid sigset_t; sigemptyset cannot fail on a valid pointer.
        unsafe { libc::sigemptyset(&mut set) };
        SignalSet(set)
    }

    /// The set of `signals`.
    pub fn from_signals(signals: &[Signal]) -> Self {
        let mut set = Self::empty();
        for signal in signals {
            set.add(*signal);
        }
        set
    }

    /// Adds `signal`.
    pub fn add(&mut self, signal: Signal) {
        // SAFETY: valid set and a valid signal number from the enum.
        unsafe { libc::sigaddset(&mut self.0, signal as libc::c_int) };
    }

    /// Adds a signal by number, e.g. `libc::SIGRTMIN() + 1`. Numbers outside
    /// `1..=SIGRTMAX` → [`Error::InvalidArgument`].
    pub fn add_raw(&mut self, signo: i32) -> Result<()> {
        if !(1..=max_signal()).contains(&signo) {
            return Err(Error::invalid("sigaddset"));
        }
        // SAFETY: valid set; the number was range-checked.
        cvt("sigaddset", unsafe { libc::sigaddset(&mut self.0, signo) })?;
        Ok(())
    }

    /// Removes `signal`.
    pub fn remove(&mut self, signal: Signal) {
        // SAFETY: valid set and signal.
        unsafe { libc::sigdelset(&mut self.0, signal as libc::c_int) };
    }

    /// Whether `signal` is in the set.
    pub fn contains(&self, signal: Signal) -> bool {
        self.contains_raw(signal as i32)
    }

    /// Whether signal number `signo` is in the set.
    pub fn contains_raw(&self, signo: i32) -> bool {
        if !(1..=max_signal()).contains(&signo) {
            return false;
        }
        // SAFETY: valid set; the number was range-checked.
        unsafe { libc::sigismember(&self.0, signo) == 1 }
    }

    /// The signal numbers in the set, ascending.
    pub fn raw_members(&self) -> impl Iterator<Item = i32> + '_ {
        (1..=max_signal()).filter(|signo| self.contains_raw(*signo))
    }

    /// The raw `sigset_t`.
    pub fn as_raw(&self) -> &libc::sigset_t {
        &self.0
    }
}

/// What [`pthread_sigmask`] does with the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaskHow {
    /// `SIG_BLOCK`: add the set to the mask.
    Block,
    /// `SIG_UNBLOCK`: remove the set from the mask.
    Unblock,
    /// `SIG_SETMASK`: replace the mask with the set.
    SetMask,
}

/// `pthread_sigmask(3)`: changes the calling thread's signal mask (with `set`) and returns the
/// previous mask; with `None` only reads the mask. Attempts to block `SIGKILL`/`SIGSTOP` are
/// silently ignored by the kernel.
pub fn pthread_sigmask(how: SigmaskHow, set: Option<&SignalSet>) -> Result<SignalSet> {
    let how = match how {
        SigmaskHow::Block => libc::SIG_BLOCK,
        SigmaskHow::Unblock => libc::SIG_UNBLOCK,
        SigmaskHow::SetMask => libc::SIG_SETMASK,
    };
    let mut old = SignalSet::empty();
    let new_ptr = set.map_or(std::ptr::null(), |s| &s.0 as *const libc::sigset_t);
    // SAFETY: `new_ptr` is null or a valid set; `old` is a valid set.
    let ret = unsafe { libc::pthread_sigmask(how, new_ptr, &mut old.0) };
    if ret != 0 {
        return Err(Error::from_errno("pthread_sigmask", ret));
    }
    Ok(old)
}

/// Blocks `signals` in the calling thread and returns the previous mask.
///
/// Call it first thing in `main`, before any thread (and so before a tokio or actix runtime)
/// starts: threads inherit the mask, and a signal must be blocked in every thread to reach a
/// signalfd instead of killing the process.
pub fn block_signals(signals: &[Signal]) -> Result<SignalSet> {
    pthread_sigmask(SigmaskHow::Block, Some(&SignalSet::from_signals(signals)))
}

/// Unblocks `signals` in the calling thread and returns the previous mask.
pub fn unblock_signals(signals: &[Signal]) -> Result<SignalSet> {
    pthread_sigmask(SigmaskHow::Unblock, Some(&SignalSet::from_signals(signals)))
}

/// The calling thread's current signal mask.
pub fn blocked_signals() -> Result<SignalSet> {
    pthread_sigmask(SigmaskHow::Block, None)
}

bitflags::bitflags! {
    /// Flags of [`signalfd_create`] (`SFD_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SignalFdFlags: i32 {
        /// `SFD_CLOEXEC`.
        const CLOEXEC = libc::SFD_CLOEXEC;
        /// `SFD_NONBLOCK`.
        const NONBLOCK = libc::SFD_NONBLOCK;
    }
}

fn check_catchable(op: &'static str, mask: &SignalSet) -> Result<()> {
    // The kernel silently drops these from the mask: they can never arrive through an fd.
    if mask.contains_raw(libc::SIGKILL) || mask.contains_raw(libc::SIGSTOP) {
        return Err(Error::invalid(op));
    }
    Ok(())
}

/// `signalfd(-1, mask, flags)`: a new signalfd receiving the signals in `mask`.
/// `SIGKILL`/`SIGSTOP` in the mask or unknown flags → [`Error::InvalidArgument`].
pub fn signalfd_create(mask: &SignalSet, flags: SignalFdFlags) -> Result<OwnedFd> {
    check_catchable("signalfd", mask)?;
    // SAFETY: valid set pointer and integer flags.
    owned_fd("signalfd", unsafe {
        libc::signalfd(-1, &mask.0, flags.bits())
    })
}

/// `signalfd(fd, mask, 0)`: replaces the mask of an existing signalfd. An fd that is not a
/// signalfd → [`Error::InvalidArgument`].
pub fn signalfd_set_mask(fd: impl AsFd, mask: &SignalSet) -> Result<()> {
    check_catchable("signalfd", mask)?;
    // SAFETY: valid fd and set pointer.
    cvt("signalfd", unsafe {
        libc::signalfd(fd.as_fd().as_raw_fd(), &mask.0, 0)
    })?;
    Ok(())
}

/// One received signal with every field of `struct signalfd_siginfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalInfo {
    /// Signal number.
    pub signo: i32,
    /// Error number (unused by most signals).
    pub errno: i32,
    /// Signal code (`SI_USER`, `SI_QUEUE`, `CLD_EXITED`...).
    pub code: i32,
    /// Sending process id.
    pub pid: u32,
    /// Real user id of the sender.
    pub uid: u32,
    /// File descriptor (`SIGIO`).
    pub fd: i32,
    /// Kernel timer id (POSIX timers).
    pub tid: u32,
    /// Band event (`SIGIO`).
    pub band: u32,
    /// Timer overrun count (POSIX timers).
    pub overrun: u32,
    /// Trap number that caused a hardware signal.
    pub trapno: u32,
    /// Exit status or signal (`SIGCHLD`).
    pub status: i32,
    /// Integer sent by `sigqueue(3)`.
    pub int: i32,
    /// Pointer value sent by `sigqueue(3)`.
    pub ptr: u64,
    /// User CPU time consumed (`SIGCHLD`).
    pub utime: u64,
    /// System CPU time consumed (`SIGCHLD`).
    pub stime: u64,
    /// Address that generated a hardware signal.
    pub addr: u64,
    /// Least significant bit of the address (`SIGBUS`).
    pub addr_lsb: u16,
    /// System call number (`SIGSYS` from seccomp).
    pub syscall: i32,
    /// Address of the system call instruction (`SIGSYS`).
    pub call_addr: u64,
    /// Architecture of the attempted system call (`SIGSYS`).
    pub arch: u32,
}

impl SignalInfo {
    /// The signal as the typed enum; `None` for real-time signals.
    pub fn signal(&self) -> Option<Signal> {
        Signal::try_from(self.signo).ok()
    }

    fn from_raw(raw: &libc::signalfd_siginfo) -> Self {
        SignalInfo {
            signo: i32::try_from(raw.ssi_signo).unwrap_or(0),
            errno: raw.ssi_errno,
            code: raw.ssi_code,
            pid: raw.ssi_pid,
            uid: raw.ssi_uid,
            fd: raw.ssi_fd,
            tid: raw.ssi_tid,
            band: raw.ssi_band,
            overrun: raw.ssi_overrun,
            trapno: raw.ssi_trapno,
            status: raw.ssi_status,
            int: raw.ssi_int,
            ptr: raw.ssi_ptr,
            utime: raw.ssi_utime,
            stime: raw.ssi_stime,
            addr: raw.ssi_addr,
            addr_lsb: raw.ssi_addr_lsb,
            syscall: raw.ssi_syscall,
            call_addr: raw.ssi_call_addr,
            arch: raw.ssi_arch,
        }
    }
}

const SIGINFO_SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
const SIGINFO_BATCH: usize = 16;

/// Reads up to 16 pending signals from a signalfd. [`Error::WouldBlock`] when none is
/// pending on a non-blocking fd; an fd that is not a signalfd → [`Error::InvalidArgument`].
pub fn signalfd_read(fd: impl AsFd) -> Result<Vec<SignalInfo>> {
    let mut buf = [0u8; SIGINFO_SIZE * SIGINFO_BATCH];
    let n = read_retry("signalfd_read", fd.as_fd(), &mut buf)?;
    // A signalfd read blocks or fails rather than returning nothing or a partial record.
    if n == 0 || n % SIGINFO_SIZE != 0 {
        return Err(Error::invalid("signalfd_read (not a signalfd)"));
    }
    let infos = buf[..n]
        .chunks_exact(SIGINFO_SIZE)
        .map(|chunk| {
            // SAFETY: the chunk holds exactly one signalfd_siginfo written by the kernel; the
            // struct is plain data and read unaligned.
            let raw = unsafe {
                std::ptr::read_unaligned(chunk.as_ptr().cast::<libc::signalfd_siginfo>())
            };
            SignalInfo::from_raw(&raw)
        })
        .collect();
    Ok(infos)
}

/// A signalfd event object; each event is one [`SignalInfo`].
#[derive(Debug)]
pub struct SignalFd {
    fd: Option<OwnedFd>,
    mask: SignalSet,
    cache: VecDeque<SignalInfo>,
}

impl SignalFd {
    /// A signalfd for exactly `signals` (non-blocking, close-on-exec). Block them first with
    /// [`block_signals`]. `SIGKILL`/`SIGSTOP` → [`Error::InvalidArgument`].
    pub fn new(signals: &[Signal]) -> Result<Self> {
        Self::with_set(&SignalSet::from_signals(signals))
    }

    /// A signalfd for the signals in `mask`, which may include real-time signals.
    pub fn with_set(mask: &SignalSet) -> Result<Self> {
        let fd = signalfd_create(mask, SignalFdFlags::CLOEXEC | SignalFdFlags::NONBLOCK)?;
        Ok(SignalFd {
            fd: Some(fd),
            mask: *mask,
            cache: VecDeque::new(),
        })
    }

    /// The signals this fd receives.
    pub fn mask(&self) -> SignalSet {
        self.mask
    }

    /// Replaces the set of signals received.
    pub fn set_mask(&mut self, mask: &SignalSet) -> Result<()> {
        signalfd_set_mask(live_fd(&self.fd, "signalfd")?, mask)?;
        self.mask = *mask;
        Ok(())
    }
}

impl EventSource for SignalFd {
    type Event = SignalInfo;

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        live_fd(&self.fd, "signalfd")
    }

    fn fill(&mut self) -> Result<usize> {
        let infos = signalfd_read(live_fd(&self.fd, "signalfd_read")?)?;
        let count = infos.len();
        self.cache.extend(infos);
        Ok(count)
    }

    fn cache(&mut self) -> &mut VecDeque<SignalInfo> {
        &mut self.cache
    }

    fn close(&mut self) {
        self.cache.clear();
        self.fd = None;
    }
}

/// A [`SignalFd`] as an async queue / `Stream` of [`SignalInfo`].
pub type AsyncSignalFd = AsyncSource<SignalFd>;

impl AsyncSource<SignalFd> {
    /// An async signalfd for `signals`, e.g. [`SHUTDOWN_SIGNALS`]. The signals must already be
    /// blocked in every thread (see [`block_signals`]).
    pub fn for_signals(signals: &[Signal]) -> Result<Self> {
        AsyncSource::new(SignalFd::new(signals)?)
    }
}
