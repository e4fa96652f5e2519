/*
 * furrow-sentinel: the first process of every task's process group (see sentinel.rs).
 *
 *     furrow-sentinel AGENT_PID PROGRAM [ARGUMENT...]
 *
 * Started by the agent with posix_spawn in a new process group, with the task's
 * environment, working directory and output pipes, and a status pipe as its standard
 * input. It starts PROGRAM (searched in the task's PATH) as the task, writes one int to
 * the status pipe (0 once the task's exec succeeded, else the errno of what failed),
 * closes every descriptor, then waits for the task's end or the agent's death:
 * - the task ended: it ends the same way, with _exit of the task's code or by the task's
 *   signal (default action restored, no core file);
 * - its parent is no longer AGENT_PID: the agent died, however it died; it kills the
 *   whole group with SIGKILL, itself included.
 *
 * Every signal is blocked in the sentinel (a cancel's SIGTERM to the group is for the
 * task); the task starts with none blocked. Exit codes of its own failures, before the
 * task runs: 125 (usage), 126 (the status could not be reported).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The signal the sentinel gets when the agent (the thread that started it) dies. */
#define AGENT_DEATH_SIGNAL SIGUSR1
/* How long it waits for a signal before it checks the task and the agent anyway. */
#define BACKSTOP_SECONDS 1

static void kill_group(void) {
    kill(0, SIGKILL);
    _exit(128 + SIGKILL);
}

/* Ends the sentinel the way the task ended. */
static void relay(const siginfo_t *info) {
    int status = info->si_status;
    if (info->si_code == CLD_EXITED) {
        _exit(status);
    }
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigaction(status, &action, NULL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, status);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    /* Unblocked and sent to itself, the signal is acted on before kill returns. */
    kill(getpid(), status);
    _exit(128 + status);
}

/* Closes every descriptor. */
static void close_every_fd(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 0u, ~0u, 0u) == 0) {
        return;
    }
#endif
    /* Older kernels: the open ones, as /proc lists them, until a pass finds none. */
    for (;;) {
        DIR *dir = opendir("/proc/self/fd");
        if (dir == NULL) {
            for (int fd = 0; fd < 1024; fd++) {
                close(fd);
            }
            return;
        }
        int closed = 0;
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            char *end;
            long fd = strtol(entry->d_name, &end, 10);
            if (*end == '\0' && end != entry->d_name && fd != dirfd(dir)) {
                close((int)fd);
                closed = 1;
            }
        }
        closedir(dir);
        if (!closed) {
            return;
        }
    }
}

/* Writes the start's outcome to the status pipe (standard input). */
static void report(int error) {
    ssize_t written;
    do {
        written = write(0, &error, sizeof error);
    } while (written < 0 && errno == EINTR);
    if (written != (ssize_t)sizeof error) {
        _exit(126);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        return 125;
    }
    pid_t agent = (pid_t)strtol(argv[1], NULL, 10);
    sigset_t every_signal, no_signal;
    sigfillset(&every_signal);
    sigemptyset(&no_signal);
    /* Nothing may kill the sentinel but SIGKILL; the signals it waits for stay pending. */
    sigprocmask(SIG_SETMASK, &every_signal, NULL);
    /* The task's end must leave a status to collect. */
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &action, NULL);
    prctl(PR_SET_NAME, "furrow-sentinel", 0, 0, 0);
    if (prctl(PR_SET_PDEATHSIG, AGENT_DEATH_SIGNAL, 0, 0, 0) != 0) {
        report(errno);
        return 126;
    }
    /* The agent may have died before the prctl; then no signal will come. */
    if (getppid() != agent) {
        report(ESRCH);
        return 126;
    }
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int exec_error[2];
    if (null < 0 || pipe2(exec_error, O_CLOEXEC) != 0) {
        report(errno);
        return 126;
    }
    pid_t sentinel = getpid();
    pid_t task = fork();
    if (task < 0) {
        report(errno);
        return 126;
    }
    if (task == 0) {
        int error = 0;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
            error = errno;
        } else if (getppid() != sentinel) {
            error = ESRCH;
        } else if (dup2(null, 0) < 0) {
            error = errno;
        } else {
            /* A blocked mask survives exec: the task must see its SIGTERM. */
            sigprocmask(SIG_SETMASK, &no_signal, NULL);
            execvp(argv[2], argv + 2);
            error = errno;
        }
        ssize_t ignored = write(exec_error[1], &error, sizeof error);
        (void)ignored;
        _exit(127);
    }
    close(exec_error[1]);
    int error = 0;
    ssize_t got;
    do {
        got = read(exec_error[0], &error, sizeof error);
    } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof error) {
        /* The task never ran: nothing to relay but the reason. */
        waitpid(task, NULL, 0);
        report(error);
        return 127;
    }
    report(0);
    close_every_fd();
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        int waited = waitid(P_PID, (id_t)task, &info, WEXITED | WNOHANG);
        if (waited == 0 && info.si_pid == task) {
            relay(&info);
        }
        if (waited < 0 && errno == ECHILD) {
            /* Cannot happen (only the sentinel reaps the task); rather than watch
             * nothing, end the group. */
            kill_group();
        }
        if (getppid() != agent) {
            kill_group();
        }
        struct timespec backstop = {BACKSTOP_SECONDS, 0};
        /* Whatever woke it, the loop checks the state again. */
        sigtimedwait(&every_signal, &info, &backstop);
    }
}
