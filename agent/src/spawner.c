/*
 * furrow-spawner: starts every task of an agent, and kills them all if the agent dies
 * (see spawner.rs).
 *
 *     furrow-spawner AGENT_PID
 *
 * Started once by the agent, its standard input a SOCK_SEQPACKET socket to the agent.
 * Each request on it starts one task; each task's start and end come back as replies:
 *
 *   request: struct request, then the payload: PROGRAM, the working directory (empty:
 *            the spawner's), ARGC arguments and ENVC environment entries, each ending
 *            with a NUL. The message carries the task's stdout and stderr (SCM_RIGHTS)
 *            and, when the payload is too large for one message, a memory file holding
 *            it (PAYLOAD_IN_FILE) as a third descriptor.
 *   replies: struct reply; STARTED once the task's exec succeeded (its pid, which is
 *            also its process group), FAILED with the errno of what failed, EXITED with
 *            the task's wait status once it ended and was reaped. STARTED carries the
 *            time the task's process was created, EXITED the time it was reaped
 *            (CLOCK_REALTIME, nanoseconds): when the task started and ended, whatever
 *            the agent is busy with when it reads them.
 *
 * A task runs in a new process group that it leads, with /dev/null as its standard
 * input, no signal blocked, no descriptor but 0, 1 and 2, and PR_SET_PDEATHSIG=SIGKILL
 * from the spawner. Its program is searched in the task's PATH as execvp does.
 *
 * On x86-64 a task's process shares the spawner's memory until its exec, as
 * posix_spawn's does, on a small stack of its own: nothing of the spawner is copied for
 * it and nothing unmapped at its exec (a fork and the exec after it cost some 40 us more
 * per task). Elsewhere it is forked. Either way the spawner goes on serving while the
 * exec is under way: everything the process reads until then (the request, the pointers
 * to its strings, its stack) is in a slot of its own, freed when a pipe closed on exec
 * tells how the exec went.
 *
 * When the agent dies, however it died (its end of the socket closes, or the spawner's
 * parent changes: the spawner's own PR_SET_PDEATHSIG wakes it, a one-second timeout is
 * the backstop), the spawner kills the process group of every task still running with
 * SIGKILL and exits. Every signal is blocked in the spawner; it learns of children
 * through a signalfd.
 *
 * It runs beside every agent and starts every task, so it is small and starts nothing
 * but tasks: on x86-64 and AArch64 it is built without the C library (whose start-up,
 * CPU feature probing included, costs more than a task start), talking to the kernel
 * directly; elsewhere on the C library's syscall(). It allocates nothing but the memory
 * map of an oversized request.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

/* A task's process shares the spawner's memory until its exec (see create_task); where
 * that is not written (or with -DSHARES_MEMORY=0), it is forked. */
#ifndef SHARES_MEMORY
#if defined(__x86_64__)
#define SHARES_MEMORY 1
#else
#define SHARES_MEMORY 0
#endif
#endif

#if defined(__x86_64__) || defined(__aarch64__)
#define FREESTANDING 1
#else
#define FREESTANDING 0
#include <string.h>
#include <unistd.h>
#endif

/* The signal the spawner gets when the agent (the thread that started it) dies. */
#define AGENT_DEATH_SIGNAL SIGUSR1
/* How long it waits for a request or a signal before it checks the agent anyway. */
#define BACKSTOP_SECONDS 1
/* The socket to the agent. */
#define AGENT 0
/* Tasks running at once, at most. */
#define MAX_CHILDREN 4096
/* Tasks whose exec is under way at once, at most: more wait for the oldest. */
#define MAX_STARTING 16
/* The largest request read from the socket itself (larger ones come in a file). */
#define MAX_MESSAGE 65536
/* Argument and environment pointers held without a memory map. */
#define STATIC_POINTERS 4096

/* Request kinds and flags, and reply kinds: the same numbers as in spawner.rs. */
#define REQUEST_SPAWN 1
#define PAYLOAD_IN_FILE 1
#define REPLY_STARTED 1
#define REPLY_FAILED 2
#define REPLY_EXITED 3

struct request {
    unsigned int kind;
    unsigned int flags;
    unsigned long id;
    unsigned int argc;
    unsigned int envc;
    unsigned int payload;
    unsigned int reserved;
};

struct reply {
    unsigned int kind;
    int value;
    unsigned long id;
    unsigned int pid;
    unsigned int reserved;
    unsigned long long time;
};
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
#define SYS6(n, a, b, c, d, e, f) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

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

/* execve of PATH; a script the kernel cannot run goes to /bin/sh, as execvp does. ARGV has
 * a free slot before its first entry. Returns the errno. */
static int exec_file(const char *path, char **argv, char **envp) {
    long result = SYS(SYS_execve, path, argv, envp, 0);
    if (result != -ENOEXEC) {
        return (int)-result;
    }
    /* sh PATH ARGS...: the arguments shifted into the free slot, with no copy (the task's
     * process has a small stack of its own, and no memory to allocate). */
    char **shell = argv - 1;
    char *first = argv[0];
    shell[0] = (char *)"sh";
    shell[1] = (char *)path;
    SYS(SYS_execve, "/bin/sh", shell, envp, 0);
    shell[1] = first;
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

/* The running tasks: their pids (each its group's) and request ids. */
static struct {
    int pid;
    unsigned long id;
} children[MAX_CHILDREN];
static unsigned int child_count;

/* What a task's process needs between its creation and its exec. */
struct start {
    const char *program;
    const char *cwd;
    char **argv;
    char **envp;
    int out;
    int err;
    int null;
    long spawner;
    /* The write end of the pipe the process writes the errno to when its exec failed. */
    int report;
};

/* A start under way: a task's process created, its exec not yet done. Everything the
 * process reads until its exec is here (the request, the pointers to its strings, its
 * stack), since it may share the spawner's memory, and the spawner goes on with other
 * requests meanwhile. */
struct slot {
    int busy;
    int pid;
    unsigned long id;
    /* The read end of the pipe: closed on exec (nothing read), or the errno. */
    int exec_error;
    unsigned long long forked;
    /* Starts so far when this one began: the oldest start is the smallest. */
    unsigned long long order;
    /* Memory maps to release once the exec is done: an oversized request, its pointers. */
    void *payload_map;
    unsigned long payload_length;
    char **pointers_map;
    unsigned long pointers_length;
    struct start start;
    char *pointers[STATIC_POINTERS];
    unsigned char message[sizeof(struct request) + MAX_MESSAGE];
#if SHARES_MEMORY
    /* The stack of the task's process until its exec: exec_search's path buffer and a few
     * frames. */
    unsigned char stack[32 * 1024] __attribute__((aligned(16)));
#endif
};

static struct slot slots[MAX_STARTING];
static unsigned long long starts;

static void finish_start(struct slot *slot, const siginfo_t *reaped);

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

/* Kills the group of every task still running, and exits. */
static __attribute__((noreturn)) void kill_all(void) {
    for (unsigned int i = 0; i < child_count; i++) {
        SYS(SYS_kill, -children[i].pid, SIGKILL, 0, 0);
    }
    for (unsigned int i = 0; i < MAX_STARTING; i++) {
        if (slots[i].busy) {
            /* Its group may not exist yet. */
            SYS(SYS_kill, -slots[i].pid, SIGKILL, 0, 0);
            SYS(SYS_kill, slots[i].pid, SIGKILL, 0, 0);
        }
    }
    exit_now(0);
}

/* The wall-clock time in nanoseconds since the epoch. */
static unsigned long long now(void) {
    struct timespec time = {0, 0};
    SYS(SYS_clock_gettime, CLOCK_REALTIME, &time, 0, 0);
    return (unsigned long long)time.tv_sec * 1000000000ULL + (unsigned long long)time.tv_nsec;
}

/* Sends a reply; an agent that cannot hear it any more is gone. */
static void send_reply(unsigned int kind, int value, unsigned long id, int pid,
                       unsigned long long time) {
    struct reply reply = {kind, value, id, (unsigned int)pid, 0, time};
    long written;
    do {
        written = SYS(SYS_write, AGENT, &reply, sizeof reply, 0);
    } while (written == -EINTR);
    if (written != (long)sizeof reply) {
        kill_all();
    }
}

/* The wait status of a reaped child. */
static int wait_status(const siginfo_t *info) {
    if (info->si_code == CLD_EXITED) {
        return (info->si_status & 0xff) << 8;
    }
    return (info->si_status & 0x7f) | (info->si_code == CLD_DUMPED ? 0x80 : 0);
}

/* Reaps every ended child and reports the tasks among them. */
static void reap(void) {
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        long waited = sys6(SYS_waitid, P_ALL, 0, (long)&info, WEXITED | WNOHANG, 0, 0);
        if (waited < 0 || info.si_pid == 0) {
            return;
        }
        for (unsigned int i = 0; i < MAX_STARTING; i++) {
            if (slots[i].busy && slots[i].pid == info.si_pid) {
                /* Its exec went one way or the other, and its pipe says which. */
                finish_start(&slots[i], &info);
                break;
            }
        }
        for (unsigned int i = 0; i < child_count; i++) {
            if (children[i].pid == info.si_pid) {
                unsigned long id = children[i].id;
                children[i] = children[--child_count];
                send_reply(REPLY_EXITED, wait_status(&info), id, info.si_pid, now());
                break;
            }
        }
    }
}

/* The next NUL-terminated string of the payload, or NULL past its end. */
static char *next_string(char **at, char *end) {
    char *start = *at;
    for (char *c = start; c < end; c++) {
        if (!*c) {
            *at = c + 1;
            return start;
        }
    }
    return NULL;
}

/* The task's process, from its creation to its exec; it never returns. */
__attribute__((noreturn)) static int task_process(void *argument) {
    struct start *start = argument;
    unsigned long no_signal = 0;
    long step;
    int error;
    if ((step = SYS(SYS_setpgid, 0, 0, 0, 0)) < 0 ||
        (step = SYS(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0)) < 0) {
        error = (int)-step;
    } else if (SYS(SYS_getppid, 0, 0, 0, 0) != start->spawner) {
        error = ESRCH;
    } else if ((step = SYS(SYS_dup3, start->null, 0, 0, 0)) < 0 ||
               (step = SYS(SYS_dup3, start->out, 1, 0, 0)) < 0 ||
               (step = SYS(SYS_dup3, start->err, 2, 0, 0)) < 0 ||
               (*start->cwd && (step = SYS(SYS_chdir, start->cwd, 0, 0, 0)) < 0)) {
        error = (int)-step;
    } else {
        /* A blocked mask survives exec: the task must see its SIGTERM. */
        SYS(SYS_rt_sigprocmask, SIG_SETMASK, &no_signal, NULL, KERNEL_SIGSET_BYTES);
        error = exec_search(start->program, start->argv, start->envp);
    }
    SYS(SYS_write, start->report, &error, sizeof error, 0);
    exit_now(127);
}

#if SHARES_MEMORY
/* clone(FLAGS) with the child on the stack whose top is STACK, running ENTRY(ARGUMENT)
 * and exiting; the parent gets the child's pid, or minus the errno. */
long clone_on(unsigned long flags, void *stack, int (*entry)(void *), void *argument);
__asm__(".text\n"
        "clone_on:\n"
        /* The child's stack: ENTRY and ARGUMENT on it, for the child to pop. */
        "  and $-16, %rsi\n"
        "  sub $16, %rsi\n"
        "  mov %rdx, 0(%rsi)\n"
        "  mov %rcx, 8(%rsi)\n"
        /* clone(flags, stack, parent_tid = 0, child_tid = 0, tls = 0) */
        "  xor %edx, %edx\n"
        "  xor %r10d, %r10d\n"
        "  xor %r8d, %r8d\n"
        "  mov $56, %eax\n"
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jz 1f\n"
        "  ret\n"
        "1:\n"
        "  xor %ebp, %ebp\n"
        "  pop %rax\n"
        "  pop %rdi\n"
        "  call *%rax\n"
        "  mov %eax, %edi\n"
        "  mov $231, %eax\n"
        "  syscall\n"
        "  hlt\n");
#endif

/* Reports how the exec of SLOT went, once its pipe tells: STARTED (and, when the task was
 * reaped already, EXITED with REAPED's status), or FAILED; then frees the slot. */
static void finish_start(struct slot *slot, const siginfo_t *reaped) {
    int error = 0;
    long got;
    do {
        got = SYS(SYS_read, slot->exec_error, &error, sizeof error, 0);
    } while (got == -EINTR);
    SYS(SYS_close, slot->exec_error, 0, 0, 0);
    if (slot->payload_map) {
        SYS(SYS_munmap, slot->payload_map, slot->payload_length, 0, 0);
        slot->payload_map = NULL;
    }
    if (slot->pointers_map) {
        SYS(SYS_munmap, slot->pointers_map, slot->pointers_length, 0, 0);
        slot->pointers_map = NULL;
    }
    slot->busy = 0;
    if (got == (long)sizeof error) {
        /* The task never ran: reap what is left of it. */
        if (!reaped) {
            siginfo_t ignored;
            sys6(SYS_waitid, P_PID, slot->pid, (long)&ignored, WEXITED, 0, 0);
        }
        send_reply(REPLY_FAILED, error ? error : EIO, slot->id, 0, 0);
        return;
    }
    send_reply(REPLY_STARTED, 0, slot->id, slot->pid, slot->forked);
    if (reaped) {
        send_reply(REPLY_EXITED, wait_status(reaped), slot->id, slot->pid, now());
        return;
    }
    children[child_count].pid = slot->pid;
    children[child_count].id = slot->id;
    child_count++;
}

/* A free slot for the next request; when every one is taken, the oldest start is waited
 * for. */
static struct slot *free_slot(void) {
    struct slot *oldest = &slots[0];
    for (unsigned int i = 0; i < MAX_STARTING; i++) {
        if (!slots[i].busy) {
            return &slots[i];
        }
        if (slots[i].order < oldest->order) {
            oldest = &slots[i];
        }
    }
    finish_start(oldest, NULL);
    return oldest;
}

/* Starts the task of the request in SLOT, whose strings are at PAYLOAD: returns 0 once its
 * process is created (its exec under way, the slot busy), or an errno. */
static int start_task(struct slot *slot, const struct request *request, char *payload,
                      int out, int err, int null) {
    char *end = payload + request->payload;
    char *at = payload;
    char *program = next_string(&at, end);
    char *cwd = next_string(&at, end);
    if (!program || !cwd || request->argc == 0) {
        return EINVAL;
    }
    unsigned int starting = 0;
    for (unsigned int i = 0; i < MAX_STARTING; i++) {
        starting += (unsigned int)slots[i].busy;
    }
    if (child_count + starting >= MAX_CHILDREN) {
        return EAGAIN;
    }
    /* A free slot before the arguments (see exec_file), the arguments and the environment,
     * each list ending with NULL. */
    unsigned long count = (unsigned long)request->argc + request->envc + 3;
    char **pointers = slot->pointers;
    slot->pointers_map = NULL;
    if (count > STATIC_POINTERS) {
        slot->pointers_length = count * sizeof(char *);
        long map = SYS6(SYS_mmap, 0, slot->pointers_length, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map < 0) {
            return (int)-map;
        }
        pointers = slot->pointers_map = (char **)map;
    }
    char **argv = pointers + 1;
    char **envp = argv + request->argc + 1;
    int error = 0;
    for (unsigned int i = 0; i < request->argc && !error; i++) {
        if (!(argv[i] = next_string(&at, end))) {
            error = EINVAL;
        }
    }
    argv[request->argc] = NULL;
    for (unsigned int i = 0; i < request->envc && !error; i++) {
        if (!(envp[i] = next_string(&at, end))) {
            error = EINVAL;
        }
    }
    envp[request->envc] = NULL;
    int exec_error[2];
    long piped = error ? 0 : SYS(SYS_pipe2, exec_error, O_CLOEXEC, 0, 0);
    if (!error && piped < 0) {
        error = (int)-piped;
    }
    if (!error) {
        struct start *start = &slot->start;
        start->program = program;
        start->cwd = cwd;
        start->argv = argv;
        start->envp = envp;
        start->out = out;
        start->err = err;
        start->null = null;
        start->spawner = SYS(SYS_getpid, 0, 0, 0, 0);
        start->report = exec_error[1];
        slot->forked = now();
#if SHARES_MEMORY
        long task = clone_on(CLONE_VM | SIGCHLD, slot->stack + sizeof slot->stack,
                             task_process, start);
#else
        long task = SYS(SYS_clone, SIGCHLD, 0, 0, 0);
        if (task == 0) {
            task_process(start);
        }
#endif
        SYS(SYS_close, exec_error[1], 0, 0, 0);
        if (task < 0) {
            error = (int)-task;
            SYS(SYS_close, exec_error[0], 0, 0, 0);
        } else {
            slot->busy = 1;
            slot->pid = (int)task;
            slot->id = request->id;
            slot->exec_error = exec_error[0];
            slot->order = ++starts;
        }
    }
    if (error && slot->pointers_map) {
        SYS(SYS_munmap, slot->pointers_map, slot->pointers_length, 0, 0);
        slot->pointers_map = NULL;
    }
    return error;
}

/* Reads and serves one request; returns 0 once the agent closed its end. */
static int serve(int null) {
    struct slot *slot = free_slot();
    struct iovec vector = {slot->message, sizeof slot->message};
    union {
        struct cmsghdr header;
        unsigned char space[CMSG_SPACE(3 * sizeof(int))];
    } control;
    struct msghdr header;
    memset(&header, 0, sizeof header);
    header.msg_iov = &vector;
    header.msg_iovlen = 1;
    header.msg_control = control.space;
    header.msg_controllen = sizeof control.space;
    long got = SYS(SYS_recvmsg, AGENT, &header, MSG_CMSG_CLOEXEC | MSG_DONTWAIT, 0);
    if (got == -EAGAIN || got == -EINTR) {
        return 1;
    }
    if (got <= 0) {
        return 0;
    }
    int fds[3] = {-1, -1, -1};
    unsigned int fd_count = 0;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&header);
    if (cmsg && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
        fd_count = (unsigned int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        if (fd_count > 3) {
            fd_count = 3;
        }
        memcpy(fds, CMSG_DATA(cmsg), fd_count * sizeof(int));
    }
    struct request request;
    int error = 0;
    if ((unsigned long)got < sizeof request) {
        /* Not a request: nothing to answer to. */
        error = -1;
    } else {
        memcpy(&request, slot->message, sizeof request);
        int in_file = (request.flags & PAYLOAD_IN_FILE) != 0;
        if (request.kind != REQUEST_SPAWN || fd_count != (in_file ? 3u : 2u)) {
            error = EINVAL;
        } else if (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
            error = E2BIG;
        } else if (in_file) {
            long map = request.payload
                           ? SYS6(SYS_mmap, 0, request.payload, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE, fds[2], 0)
                           : -EINVAL;
            if (map < 0) {
                error = (int)-map;
            } else {
                /* Released once the exec is done (finish_start). */
                slot->payload_map = (void *)map;
                slot->payload_length = request.payload;
                error = start_task(slot, &request, (char *)map, fds[0], fds[1], null);
                if (error) {
                    SYS(SYS_munmap, map, request.payload, 0, 0);
                    slot->payload_map = NULL;
                }
            }
        } else if ((unsigned long)got - sizeof request != request.payload) {
            error = EINVAL;
        } else {
            error = start_task(slot, &request, (char *)slot->message + sizeof request, fds[0],
                               fds[1], null);
        }
    }
    for (unsigned int i = 0; i < fd_count; i++) {
        SYS(SYS_close, fds[i], 0, 0, 0);
    }
    if (error > 0) {
        send_reply(REPLY_FAILED, error, request.id, 0, 0);
    }
    return 1;
}

static void run(int argc, char **argv) {
    if (argc < 2) {
        exit_now(125);
    }
    long agent = 0;
    for (const char *digit = argv[1]; *digit >= '0' && *digit <= '9'; digit++) {
        agent = agent * 10 + (*digit - '0');
    }
    unsigned long every_signal = ~0UL;
    /* Nothing may kill the spawner but SIGKILL; the signals it waits for stay pending. */
    SYS(SYS_rt_sigprocmask, SIG_SETMASK, &every_signal, NULL, KERNEL_SIGSET_BYTES);
    /* A task's end must leave a status to collect. */
    default_action(SIGCHLD);
    SYS(SYS_prctl, PR_SET_NAME, "furrow-spawner", 0, 0);
    if (SYS(SYS_prctl, PR_SET_PDEATHSIG, AGENT_DEATH_SIGNAL, 0, 0) < 0) {
        exit_now(126);
    }
    /* The agent may have died before the prctl; then no signal will come. */
    if (SYS(SYS_getppid, 0, 0, 0, 0) != agent) {
        exit_now(126);
    }
    /* Nothing the agent left open reaches the tasks: only the socket and /dev/null on 1
     * and 2 stay, and what the spawner opens is closed on exec. */
    close_fds_from(3);
    unsigned long watched = (1UL << (SIGCHLD - 1)) | (1UL << (AGENT_DEATH_SIGNAL - 1));
    long signals = SYS(SYS_signalfd4, -1, &watched, KERNEL_SIGSET_BYTES, SFD_CLOEXEC | SFD_NONBLOCK);
    long null = SYS(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC, 0);
    if (signals < 0 || null < 0) {
        exit_now(126);
    }
    for (;;) {
        if (SYS(SYS_getppid, 0, 0, 0, 0) != agent) {
            kill_all();
        }
        struct pollfd watch[2 + MAX_STARTING];
        struct slot *watched[MAX_STARTING];
        unsigned int watched_starts = 0;
        watch[0] = (struct pollfd){AGENT, POLLIN, 0};
        watch[1] = (struct pollfd){(int)signals, POLLIN, 0};
        for (unsigned int i = 0; i < MAX_STARTING; i++) {
            if (slots[i].busy) {
                watch[2 + watched_starts] = (struct pollfd){slots[i].exec_error, POLLIN, 0};
                watched[watched_starts++] = &slots[i];
            }
        }
        struct timespec backstop = {BACKSTOP_SECONDS, 0};
        SYS6(SYS_ppoll, watch, 2 + watched_starts, &backstop, 0, 0, 0);
        if (watch[1].revents) {
            unsigned char drained[8 * sizeof(struct signalfd_siginfo)];
            while (SYS(SYS_read, signals, drained, sizeof drained, 0) > 0) {
            }
        }
        /* Starts whose exec is over, oldest first, then the ended tasks. */
        for (unsigned int i = 0; i < watched_starts; i++) {
            if (watch[2 + i].revents && watched[i]->busy) {
                finish_start(watched[i], NULL);
            }
        }
        reap();
        if (watch[0].revents && !serve((int)null)) {
            kill_all();
        }
    }
}

#if FREESTANDING
/* The process's entry: the stack holds argc, argv[], NULL, envp[], NULL. */
__attribute__((used, noreturn)) static void start(long *stack) {
    int argc = (int)stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    (void)envp;
    run(argc, argv);
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
int main(int argc, char **argv) {
    run(argc, argv);
    return 0;
}
#endif
