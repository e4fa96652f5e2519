//! seccomp: allow- or deny-lists of system calls, compiled to classic BPF here (no C
//! library) and loaded with `seccomp(2)`.
//!
//! The program checks the architecture first (a foreign one kills the process), refuses x32
//! system calls on x86_64 with `ENOSYS`, then compares the system call number against each
//! rule in turn and returns the default action when none matches.
//!
//! ```
//! use furrow_sysfd::{SeccompAction, SeccompFilter};
//! // Deny `mkdir` with EPERM, allow everything else.
//! let filter = SeccompFilter::deny_list(&[libc::SYS_mkdir], SeccompAction::Errno(libc::EPERM))?;
//! let program = filter.compile()?;
//! assert!(program.len() > 4);
//! // filter.load()? would apply it to the calling thread, for good.
//! # Ok::<(), furrow_sysfd::Error>(())
//! ```

use std::collections::BTreeMap;

use crate::error::{Error, Result, cvt, cvt_long};

/// What the kernel does when a rule (or the default) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompAction {
    /// Run the system call.
    Allow,
    /// Fail it with this errno (1..=4095).
    Errno(i32),
    /// Kill the whole process (`SIGSYS`, core dump).
    KillProcess,
    /// Kill the calling thread.
    KillThread,
    /// Send `SIGSYS` to the thread.
    Trap,
    /// Run it and log it.
    Log,
}

impl SeccompAction {
    fn ret(self) -> Result<u32> {
        Ok(match self {
            SeccompAction::Allow => libc::SECCOMP_RET_ALLOW,
            SeccompAction::Errno(errno) => {
                if !(1..=4095).contains(&errno) {
                    return Err(Error::invalid("seccomp (errno out of 1..=4095)"));
                }
                libc::SECCOMP_RET_ERRNO | errno as u32
            }
            SeccompAction::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            SeccompAction::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            SeccompAction::Trap => libc::SECCOMP_RET_TRAP,
            SeccompAction::Log => libc::SECCOMP_RET_LOG,
        })
    }
}

/// Highest system call number a rule may name.
pub const MAX_SYSCALL: i64 = 4095;

/// Most instructions a classic BPF program may have (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// The x32 ABI marks its system call numbers with this bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// A seccomp filter: a default action and per-system-call actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompFilter {
    default: SeccompAction,
    rules: BTreeMap<i64, SeccompAction>,
}

impl SeccompFilter {
    /// A filter applying `default` to every system call without a rule.
    pub fn new(default: SeccompAction) -> Self {
        SeccompFilter {
            default,
            rules: BTreeMap::new(),
        }
    }

    /// Allows exactly `syscalls`; every other call gets `deny`.
    pub fn allow_list(syscalls: &[i64], deny: SeccompAction) -> Result<Self> {
        let mut filter = Self::new(deny);
        for nr in syscalls {
            filter.rule(*nr, SeccompAction::Allow)?;
        }
        Ok(filter)
    }

    /// Applies `deny` to `syscalls` and allows every other call.
    pub fn deny_list(syscalls: &[i64], deny: SeccompAction) -> Result<Self> {
        let mut filter = Self::new(SeccompAction::Allow);
        for nr in syscalls {
            filter.rule(*nr, deny)?;
        }
        Ok(filter)
    }

    /// Sets the action for system call `nr` (e.g. `libc::SYS_mkdir`). A number outside
    /// `0..=MAX_SYSCALL` or an errno outside `1..=4095` → [`Error::InvalidArgument`].
    pub fn rule(&mut self, nr: i64, action: SeccompAction) -> Result<&mut Self> {
        if !(0..=MAX_SYSCALL).contains(&nr) {
            return Err(Error::invalid("seccomp (system call number out of range)"));
        }
        action.ret()?;
        self.rules.insert(nr, action);
        Ok(self)
    }

    /// The action applied to calls without a rule.
    pub fn default_action(&self) -> SeccompAction {
        self.default
    }

    /// Compiles to a classic BPF program. Too many rules for [`MAX_INSTRUCTIONS`], a bad errno,
    /// or an architecture this crate has no audit number for → [`Error::InvalidArgument`].
    pub fn compile(&self) -> Result<Vec<libc::sock_filter>> {
        let arch = AUDIT_ARCH.ok_or(Error::invalid("seccomp (unsupported architecture)"))?;
        let ld_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
        let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
        let mut program = vec![
            stmt(ld_abs, OFFSET_ARCH),
            jump(jeq, arch, 1, 0),
            stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(ld_abs, OFFSET_NR),
        ];
        if cfg!(target_arch = "x86_64") {
            program.push(jump(jge, X32_SYSCALL_BIT, 0, 1));
            program.push(stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
        }
        for (nr, action) in &self.rules {
            // Equal: fall through to the rule's return; else skip it.
            program.push(jump(jeq, *nr as u32, 0, 1));
            program.push(stmt(ret, action.ret()?));
        }
        program.push(stmt(ret, self.default.ret()?));
        if program.len() > MAX_INSTRUCTIONS {
            return Err(Error::invalid("seccomp (program too long)"));
        }
        Ok(program)
    }

    /// Compiles and loads the filter for the calling thread (and the threads and processes
    /// it creates later), after setting `no_new_privs`. Filters cannot be removed.
    pub fn load(&self) -> Result<()> {
        let program = self.compile()?;
        set_no_new_privs()?;
        seccomp_set_mode_filter(&program, 0)
    }

    /// Like [`load`](Self::load), for every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`).
    pub fn load_all_threads(&self) -> Result<()> {
        let program = self.compile()?;
        set_no_new_privs()?;
        seccomp_set_mode_filter(&program, libc::SECCOMP_FILTER_FLAG_TSYNC as u32)
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: needed to load a filter without `CAP_SYS_ADMIN`.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    cvt("prctl(PR_SET_NO_NEW_PRIVS)", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, program)`. An empty or malformed program, or
/// unknown flags → [`Error::InvalidArgument`]; without `no_new_privs` or `CAP_SYS_ADMIN` →
/// [`Error::PermissionDenied`]; a thread that could not be synchronised (TSYNC) →
/// [`Error::Unknown`] with errno 0.
pub fn seccomp_set_mode_filter(program: &[libc::sock_filter], flags: u32) -> Result<()> {
    const OP: &str = "seccomp(SECCOMP_SET_MODE_FILTER)";
    let len = u16::try_from(program.len()).map_err(|_| Error::invalid(OP))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
    // copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if ret > 0 {
        // TSYNC failed in thread `ret`.
        return Err(Error::Unknown { op: OP, errno: 0 });
    }
    cvt_long(OP, ret)?;
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_STRICT)`: from now on only `read`, `write`, `_exit` and
/// `sigreturn` are allowed; any other call kills the thread.
pub fn seccomp_set_mode_strict() -> Result<()> {
    // SAFETY: raw syscall with integer arguments and a null pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_STRICT,
            0u32,
            std::ptr::null::<libc::c_void>(),
        )
    };
    cvt_long("seccomp(SECCOMP_SET_MODE_STRICT)", ret)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_shape() -> Result<()> {
        let filter = SeccompFilter::allow_list(
            &[libc::SYS_read, libc::SYS_write],
            SeccompAction::Errno(libc::EPERM),
        )?;
        let program = filter.compile()?;
        let header = if cfg!(target_arch = "x86_64") { 6 } else { 4 };
        assert_eq!(program.len(), header + 2 * 2 + 1);
        let last = program[program.len() - 1];
        assert_eq!(last.k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        Ok(())
    }

    #[test]
    fn bad_rules_are_invalid() {
        let mut filter = SeccompFilter::new(SeccompAction::Allow);
        assert!(matches!(
            filter.rule(-1, SeccompAction::KillProcess),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            filter.rule(MAX_SYSCALL + 1, SeccompAction::KillProcess),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            filter.rule(1, SeccompAction::Errno(0)),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            filter.rule(1, SeccompAction::Errno(5000)),
            Err(Error::InvalidArgument { .. })
        ));
        let bad_default = SeccompFilter::new(SeccompAction::Errno(-3));
        assert!(matches!(
            bad_default.compile(),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn too_many_rules_are_invalid() -> Result<()> {
        let mut filter = SeccompFilter::new(SeccompAction::Allow);
        for nr in 0..=MAX_SYSCALL {
            filter.rule(nr, SeccompAction::Log)?;
        }
        assert!(matches!(
            filter.compile(),
            Err(Error::InvalidArgument { .. })
        ));
        Ok(())
    }
}
