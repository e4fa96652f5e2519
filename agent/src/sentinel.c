/*
 * furrow-sentinel: the first process of every task's process group (see sentinel.rs).
 *
 *     furrow-sentinel AGENT_PID PROGRAM [ARGUMENT...]
 *
 * Started by the agent with posix_spawn in a new process group, with the task's
 * environment, working directory and output pipes, and a status pipe as its standard
 * input. It starts PROGRAM (searched in the task's PATH when it has no slash) as the
 * task, writes one int to the status pipe (0 once the task's exec succeeded, else the
 * errno of what failed), closes every descriptor, then waits for the task's end or the
 * agent's death:
 * - the task ended: it ends the same way, with the task's exit code or by the task's
 *   signal (default action restored, no core file);
 * - its parent is no longer AGENT_PID: the agent died, however it died; it kills the
 *   whole group with SIGKILL, itself included.
 *
 * Every signal is blocked in the sentinel (a cancel's SIGTERM to the group is for the
 * task); the task starts with none blocked. Exit codes of its own failures: 125 (usage),
 * 126 (it could not start the task, or not report), 127 (the task's exec failed).
 *
 * It runs at the start of every task, so it is built to start fast: on x86-64 and
 * AArch64 without the C library (whose start-up, CPU feature probing included, cost more
 * than the rest of the sentinel's work), talking to the kernel directly; elsewhere on
 * the C library's syscall(). It allocates nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#if defined(__x86_64__) || defined(__aarch64__)
#define FREESTANDING 1
#else
#define FREESTANDING 0
#include <string.h>
#include <unistd.h>
#endif

/* The signal the sentinel gets when the agent (the thread that started it) dies. */
#define AGENT_DEATH_SIGNAL SIGUSR1
/* How long it waits for a signal before it checks the task and the agent anyway. */
#define BACKSTOP_SECONDS 1
/* The kernel's signal set: 64 bits. */
#define KERNEL_SIGSET_BYTES 8

/* ---- system calls: the result, or minus the errno ---- */

#if defined(__x86_64__)
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}
#elif defined(__aarch64__)
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long result = syscall(n, a, b, c, d, e, f);
    return result < 0 ? -errno : result;
}
#endif

#define SYS(n, a, b, c, d) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

static __attribute__((noreturn)) void exit_now(int code) {
    for (;;) {
        SYS(SYS_exit_group, code, 0, 0, 0);
    }
}

#if FREESTANDING
/* What the compiler may call for struct copies and zeroing. */
void *memset(void *destination, int byte, size_t length) {
    unsigned char *to = destination;
    while (length--) {
        *to++ = (unsigned char)byte;
    }
    return destination;
}

void *memcpy(void *destination, const void *source, size_t length) {
    unsigned char *to = destination;
    const unsigned char *from = source;
    while (length--) {
        *to++ = *from++;
    }
    return destination;
}
#endif

static size_t length_of(const char *text) {
    size_t length = 0;
    while (text[length]) {
        length++;
    }
    return length;
}

static int has_slash(const char *text) {
    for (; *text; text++) {
        if (*text == '/') {
            return 1;
        }
    }
    return 0;
}

/* The value of NAME in ENVP, or NULL. */
static const char *variable(char **envp, const char *name) {
    size_t length = length_of(name);
    for (; *envp; envp++) {
        const char *entry = *envp;
        size_t i = 0;
        while (i < length && entry[i] == name[i]) {
            i++;
        }
        if (i == length && entry[i] == '=') {
            return entry + i + 1;
        }
    }
    return NULL;
}

/* A kernel sigaction: handler, flags, restorer, mask. */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

static void default_action(int signal) {
    struct kernel_sigaction action = {SIG_DFL, 0, NULL, 0};
    SYS(SYS_rt_sigaction, signal, &action, NULL, KERNEL_SIGSET_BYTES);
}

static void kill_group(void) {
    SYS(SYS_kill, 0, SIGKILL, 0, 0);
    exit_now(128 + SIGKILL);
}

/* Ends the sentinel the way the task ended. */
static void relay(const siginfo_t *info) {
    int status = info->si_status;
    if (info->si_code == CLD_EXITED) {
        exit_now(status);
    }
    struct rlimit no_core = {0, 0};
    sys6(SYS_prlimit64, 0, RLIMIT_CORE, (long)&no_core, 0, 0, 0);
    SYS(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0);
    default_action(status);
    unsigned long only = 1UL << (status - 1);
    SYS(SYS_rt_sigprocmask, SIG_UNBLOCK, &only, NULL, KERNEL_SIGSET_BYTES);
    /* Unblocked and sent to itself, the signal is acted on before kill returns. */
    SYS(SYS_kill, SYS(SYS_getpid, 0, 0, 0, 0), status, 0, 0);
    exit_now(128 + status);
}

/* Closes every descriptor from FIRST on. */
static void close_fds_from(unsigned int first) {
#ifdef SYS_close_range
    if (SYS(SYS_close_range, first, ~0u, 0, 0) == 0) {
        return;
    }
#endif
    /* Kernels before 5.9: every number below the limit (bounded). */
    struct rlimit limit = {1024, 1024};
    sys6(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&limit, 0, 0);
    unsigned long highest = limit.rlim_cur < 65536 ? limit.rlim_cur : 65536;
    for (unsigned long fd = first; fd < highest; fd++) {
        SYS(SYS_close, fd, 0, 0, 0);
    }
}

/* Writes the start's outcome to the status pipe (standard input). */
static void report(int error) {
    long written;
    do {
        written = SYS(SYS_write, 0, &error, sizeof error, 0);
    } while (written == -EINTR);
    if (written != (long)sizeof error) {
        exit_now(126);
    }
}

/* execve of PATH; a script the kernel cannot run goes to /bin/sh, as execvp does. Returns
 * the errno. */
static int exec_file(const char *path, char **argv, char **envp) {
    long result = SYS(SYS_execve, path, argv, envp, 0);
    if (result != -ENOEXEC) {
        return (int)-result;
    }
    size_t count = 0;
    while (argv[count]) {
        count++;
    }
    char *shell[count + 2];
    shell[0] = "sh";
    shell[1] = (char *)path;
    for (size_t i = 1; i <= count; i++) {
        shell[i + 1] = argv[i];
    }
    SYS(SYS_execve, "/bin/sh", shell, envp, 0);
    return ENOEXEC;
}

/* Runs FILE as execvp does: as a path when it has a slash, else from each directory of
 * the task's PATH (by default /bin:/usr/bin). Returns the errno when nothing ran. */
static int exec_search(const char *file, char **argv, char **envp) {
    if (!*file) {
        return ENOENT;
    }
    if (has_slash(file)) {
        return exec_file(file, argv, envp);
    }
    const char *path = variable(envp, "PATH");
    if (!path) {
        path = "/bin:/usr/bin";
    }
    size_t file_length = length_of(file);
    char candidate[4096];
    int denied = 0;
    int error = ENOENT;
    for (;;) {
        const char *end = path;
        while (*end && *end != ':') {
            end++;
        }
        size_t directory = (size_t)(end - path);
        if (directory + 1 + file_length + 1 <= sizeof candidate) {
            size_t at = 0;
            if (directory == 0) {
                candidate[at++] = '.';
            }
            for (size_t i = 0; i < directory; i++) {
                candidate[at++] = path[i];
            }
            candidate[at++] = '/';
            for (size_t i = 0; i <= file_length; i++) {
                candidate[at++] = file[i];
            }
            int failed = exec_file(candidate, argv, envp);
            switch (failed) {
            case EACCES:
                denied = 1;
                break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT:
                break;
            default:
                return failed;
            }
        } else {
            error = ENAMETOOLONG;
        }
        if (!*end) {
            break;
        }
        path = end + 1;
    }
    return denied ? EACCES : error;
}

static void run(int argc, char **argv, char **envp) {
    if (argc < 3) {
        exit_now(125);
    }
    long agent = 0;
    for (const char *digit = argv[1]; *digit >= '0' && *digit <= '9'; digit++) {
        agent = agent * 10 + (*digit - '0');
    }
    unsigned long every_signal = ~0UL;
    unsigned long no_signal = 0;
    /* Nothing may kill the sentinel but SIGKILL; the signals it waits for stay pending. */
    SYS(SYS_rt_sigprocmask, SIG_SETMASK, &every_signal, NULL, KERNEL_SIGSET_BYTES);
    /* The task's end must leave a status to collect. */
    default_action(SIGCHLD);
    SYS(SYS_prctl, PR_SET_NAME, "furrow-sentinel", 0, 0);
    long failed = SYS(SYS_prctl, PR_SET_PDEATHSIG, AGENT_DEATH_SIGNAL, 0, 0);
    if (failed < 0) {
        report((int)-failed);
        exit_now(126);
    }
    /* The agent may have died before the prctl; then no signal will come. */
    if (SYS(SYS_getppid, 0, 0, 0, 0) != agent) {
        report(ESRCH);
        exit_now(126);
    }
    long null = SYS(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC, 0);
    int exec_error[2];
    long piped = SYS(SYS_pipe2, exec_error, O_CLOEXEC, 0, 0);
    if (null < 0 || piped < 0) {
        report((int)-(null < 0 ? null : piped));
        exit_now(126);
    }
    long sentinel = SYS(SYS_getpid, 0, 0, 0, 0);
    long task = SYS(SYS_clone, SIGCHLD, 0, 0, 0);
    if (task < 0) {
        report((int)-task);
        exit_now(126);
    }
    if (task == 0) {
        int error;
        long step = SYS(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
        if (step < 0) {
            error = (int)-step;
        } else if (SYS(SYS_getppid, 0, 0, 0, 0) != sentinel) {
            error = ESRCH;
        } else if ((step = SYS(SYS_dup3, null, 0, 0, 0)) < 0) {
            error = (int)-step;
        } else {
            /* A blocked mask survives exec: the task must see its SIGTERM. */
            SYS(SYS_rt_sigprocmask, SIG_SETMASK, &no_signal, NULL, KERNEL_SIGSET_BYTES);
            error = exec_search(argv[2], argv + 2, envp);
        }
        SYS(SYS_write, exec_error[1], &error, sizeof error, 0);
        exit_now(127);
    }
    SYS(SYS_close, exec_error[1], 0, 0, 0);
    int error = 0;
    long got;
    do {
        got = SYS(SYS_read, exec_error[0], &error, sizeof error, 0);
    } while (got == -EINTR);
    if (got == (long)sizeof error) {
        /* The task never ran: nothing to relay but the reason. */
        siginfo_t ignored;
        sys6(SYS_waitid, P_PID, task, (long)&ignored, WEXITED, 0, 0);
        report(error);
        exit_now(127);
    }
    /* Nothing but the status pipe is left once the agent hears of the start. */
    close_fds_from(1);
    report(0);
    SYS(SYS_close, 0, 0, 0, 0);
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        long waited = sys6(SYS_waitid, P_PID, task, (long)&info, WEXITED | WNOHANG, 0, 0);
        if (waited == 0 && info.si_pid == task) {
            relay(&info);
        }
        if (waited == -ECHILD) {
            /* Cannot happen (only the sentinel reaps the task); rather than watch
             * nothing, end the group. */
            kill_group();
        }
        if (SYS(SYS_getppid, 0, 0, 0, 0) != agent) {
            kill_group();
        }
        struct timespec backstop = {BACKSTOP_SECONDS, 0};
        /* Whatever woke it, the loop checks the state again. */
        SYS(SYS_rt_sigtimedwait, &every_signal, &info, &backstop, KERNEL_SIGSET_BYTES);
    }
}

#if FREESTANDING
/* The process's entry: the stack holds argc, argv[], NULL, envp[], NULL. */
__attribute__((used, noreturn)) static void start(long *stack) {
    int argc = (int)stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    run(argc, argv, envp);
    exit_now(0);
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start\n"
        "  hlt\n");
#else
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  and sp, x0, #-16\n"
        "  bl start\n");
#endif
#else
int main(int argc, char **argv, char **envp) {
    run(argc, argv, envp);
    return 0;
}
#endif
