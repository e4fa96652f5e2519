//! The runner with real processes.

use std::sync::Arc;
use std::time::Duration;

use furrow_protocol::{AgentMessage, Assignment, FrameBatch, LimitHit, LogStream, TaskFinished};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::jobtypes::tests::assignment;
use crate::orphans::{GroupRecord, group_members};
use crate::test_util::wait_for;

/// Collects reported messages.
struct Collect(mpsc::UnboundedSender<AgentMessage>);

impl Reporter for Collect {
    async fn report(&self, message: AgentMessage) {
        let _ = self.0.send(message);
    }

    fn hand_over(&self, message: AgentMessage) {
        let _ = self.0.send(message);
    }
}

struct Harness {
    _tmp: tempfile::TempDir,
    env: RunnerEnv,
}

fn harness() -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::open(tmp.path()).unwrap();
    let jobtypes = JobTypes::builtin();
    jobtypes.set_local(
        [PERCENT, WRITER]
            .iter()
            .map(|text| furrow_jobtypes::declarative::parse(text).unwrap())
            .collect(),
    );
    Harness {
        _tmp: tmp,
        env: RunnerEnv {
            jobtypes: Arc::new(jobtypes),
            state,
            output: OutputLimits::for_max_frame(furrow_protocol::DEFAULT_MAX_FRAME),
            kill_grace: Duration::from_millis(300),
            keep_failed_dirs: 4,
        },
    }
}

fn command(params: serde_json::Value) -> Assignment {
    assignment("command", params)
}

fn sh(script: &str) -> Assignment {
    command(json!({"command": ["sh", "-c", script]}))
}

/// Runs `assignment` to its end.
async fn run(h: &Harness, assignment: Assignment) -> (TaskFinished, Vec<AgentMessage>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = mpsc::channel(STOP_REASONS);
    let controls = Controls {
        stop,
        after: None,
        after_older: false,
        exited: None,
    };
    let end = run_task(&h.env, assignment, &Collect(tx), controls).await;
    assert_eq!(end.stopped_by, None);
    let finished = end.finished;
    let mut messages = Vec::new();
    while let Ok(message) = rx.try_recv() {
        messages.push(message);
    }
    (finished, messages)
}

/// All log lines of `messages`, in order.
fn lines(messages: &[AgentMessage]) -> Vec<(LogStream, String)> {
    messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Logs(batch) => {
                Some(batch.lines.iter().map(|l| (l.stream, l.text.clone())))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn stream(messages: &[AgentMessage], wanted: LogStream) -> Vec<String> {
    lines(messages)
        .into_iter()
        .filter(|(s, _)| *s == wanted)
        .map(|(_, text)| text)
        .collect()
}

/// The attempts and process groups recorded in `running` (empty pooled files aside).
fn records(running: &std::path::Path) -> Vec<(TaskRef, u32)> {
    std::fs::read_dir(running)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            let record = GroupRecord::parse(&text).expect("a readable record");
            (record.task, record.pgid)
        })
        .collect()
}

/// Runs `assignment`, waits until its group has `members` processes, stops it.
async fn run_and_stop(
    h: &Harness,
    assignment: Assignment,
    members: usize,
    reason: StopReason,
) -> (TaskFinished, Vec<AgentMessage>, u32) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop) = mpsc::channel(STOP_REASONS);
    let reporter = Collect(tx);
    let running = h.env.state.running_dir();
    let task = assignment.task;
    let control = async {
        let mut seen = Vec::new();
        let pid = loop {
            match rx.recv().await.expect("runner ended before starting") {
                AgentMessage::TaskStarted(started) => break started.pid,
                other => seen.push(other),
            }
        };
        wait_for("the task's processes", || {
            group_members(pid).len() >= members
        })
        .await;
        assert_eq!(
            records(&running),
            [(task, pid)],
            "the process group is recorded while running"
        );
        stop_tx.send(reason).await.unwrap();
        (seen, pid)
    };
    let controls = Controls {
        stop,
        after: None,
        after_older: false,
        exited: None,
    };
    let (end, (mut seen, pid)) =
        tokio::join!(run_task(&h.env, assignment, &reporter, controls), control);
    assert_eq!(end.stopped_by, Some(reason));
    assert_eq!(end.given_back(), reason == StopReason::Shutdown);
    let finished = end.finished;
    while let Ok(message) = rx.try_recv() {
        seen.push(message);
    }
    assert_eq!(records(&running), [], "the record is emptied at the end");
    (finished, seen, pid)
}

#[tokio::test]
async fn placeholders_env_and_working_dir_reach_the_process() {
    let h = harness();
    let mut task = command(json!({
        "command": ["sh", "-c",
            "echo args $0 $1 $2; echo env $FURROW_TASK_ID $FURROW_ATTEMPT $FURROW_JOB_ID \
             $FURROW_FRAME $FURROW_FRAME_START $FURROW_FRAME_END $FURROW_FRAME_STEP $EXTRA; pwd -P; \
             read line || echo stdin-empty",
            "{frame}", "{start}-{end}:{step}", "f{frame:4}"],
        "env": {"EXTRA": "extra value"}
    }));
    task.frames = FrameBatch {
        start: 10,
        end: 14,
        step: 2,
    };
    let (finished, messages) = run(&h, task).await;
    assert!(finished.succeeded(), "{finished:?}");
    let workdir = h.env.state.task_dir(finished.task);
    let physical = std::fs::canonicalize(h.env.state.tasks_dir())
        .unwrap()
        .join("7-1");
    assert_eq!(
        stream(&messages, LogStream::Stdout),
        [
            "args 10 10-14:2 f0010".to_string(),
            "env 7 1 3 10 10 14 2 extra value".to_string(),
            physical.display().to_string(),
            "stdin-empty".to_string(),
        ]
    );
    assert!(
        !workdir.exists(),
        "the working directory of a success is removed"
    );
}

#[tokio::test]
async fn argv_runs_without_a_shell_and_shell_mode_uses_one() {
    let h = harness();
    let (_, direct) = run(
        &h,
        command(json!({"command": ["echo", "a", "|", "tr", "a", "b", "$HOME"]})),
    )
    .await;
    assert_eq!(stream(&direct, LogStream::Stdout), ["a | tr a b $HOME"]);
    let (_, shell) = run(
        &h,
        command(json!({"command": ["echo", "a", "|", "tr", "a", "b"], "shell": true})),
    )
    .await;
    assert_eq!(stream(&shell, LogStream::Stdout), ["b"]);
    assert_eq!(
        stream(&shell, LogStream::Agent)[0],
        "starting: /bin/sh -c 'echo a | tr a b'"
    );
}

#[tokio::test]
async fn both_streams_are_captured_line_by_line_with_tags() {
    let h = harness();
    let (finished, messages) = run(
        &h,
        sh("for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'a\\377b\\n'; printf 'no newline'"),
    )
    .await;
    assert_eq!(finished.exit_code, Some(0));
    assert!(
        matches!(messages[0], AgentMessage::TaskStarted(_)),
        "{:?}",
        messages[0]
    );
    assert_eq!(
        stream(&messages, LogStream::Stdout),
        ["out1", "out2", "out3", "a\u{fffd}b", "no newline"]
    );
    assert_eq!(
        stream(&messages, LogStream::Stderr),
        ["err1", "err2", "err3"]
    );
    let agent = stream(&messages, LogStream::Agent);
    assert!(agent[0].starts_with("starting: sh -c "), "{agent:?}");
    assert_eq!(agent.last().map(String::as_str), Some("exited with code 0"));
    let stamps: Vec<i64> = messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Logs(batch) => Some(batch.lines.iter().map(|l| l.at_ms)),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
}

#[tokio::test]
async fn long_lines_are_split() {
    let h = harness();
    let (_, messages) = run(&h, sh("head -c 200000 /dev/zero | tr '\\0' a; echo")).await;
    let lengths: Vec<usize> = stream(&messages, LogStream::Stdout)
        .iter()
        .map(String::len)
        .collect();
    assert_eq!(lengths, [65536, 65536, 65536, 200000 - 3 * 65536]);
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let h = harness();
    let (failed, messages) = run(&h, sh("echo partial > out.txt; exit 3")).await;
    assert_eq!(
        (failed.exit_code, failed.signal, failed.error.as_deref()),
        (Some(3), None, None)
    );
    assert_eq!(failed.limit, None, "no limit ended it");
    assert_eq!(
        stream(&messages, LogStream::Agent).last().unwrap(),
        "exited with code 3"
    );
    let kept: Vec<_> = std::fs::read_dir(h.env.state.failed_dir())
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 1, "the working directory of a failure is kept");
    let kept = kept[0].as_ref().unwrap().path();
    assert_eq!(
        std::fs::read_to_string(kept.join("out.txt")).unwrap(),
        "partial\n"
    );

    let (killed, messages) = run(&h, sh("kill -KILL $$")).await;
    assert_eq!((killed.exit_code, killed.signal), (None, Some(9)));
    assert!(!killed.succeeded());
    assert_eq!(
        stream(&messages, LogStream::Agent).last().unwrap(),
        "killed by signal 9 (SIGKILL)"
    );
}

#[tokio::test]
async fn a_missing_program_fails_with_its_name() {
    let h = harness();
    let (finished, messages) = run(
        &h,
        command(json!({"command": ["/nonexistent/furrow-nope", "x"]})),
    )
    .await;
    assert_eq!((finished.exit_code, finished.signal), (None, None));
    let error = finished.error.unwrap();
    assert!(
        error.starts_with("cannot start `/nonexistent/furrow-nope`: No such file or directory"),
        "{error}"
    );
    assert!(
        !messages
            .iter()
            .any(|m| matches!(m, AgentMessage::TaskStarted(_)))
    );
    assert_eq!(stream(&messages, LogStream::Agent).last(), Some(&error));
}

#[tokio::test]
async fn unknown_job_types_and_bad_parameters_finish_with_an_error() {
    let h = harness();
    let (finished, messages) = run(&h, assignment("maya", json!({}))).await;
    assert!(
        finished
            .error
            .unwrap()
            .starts_with("unknown job type `maya`")
    );
    assert_eq!(
        lines(&messages).len(),
        1,
        "the error is logged: {messages:?}"
    );
    let (finished, _) = run(&h, command(json!({"command": "echo hi"}))).await;
    let error = finished.error.unwrap();
    assert!(
        error.starts_with("job type `command`: invalid type"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(h.env.state.failed_dir()).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let h = harness();
    let (finished, messages, pgid) =
        run_and_stop(&h, sh("sleep 1000 & sleep 1000"), 2, StopReason::Cancelled).await;
    assert_eq!(finished.error.as_deref(), Some("cancelled"));
    assert_eq!(finished.signal, Some(libc::SIGTERM));
    assert_eq!(finished.limit, None);
    // SIGKILLed before the result: dead as soon as the kernel has run their exits.
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    let agent = stream(&messages, LogStream::Agent);
    assert!(agent.contains(&"cancelled".to_string()), "{agent:?}");
    assert_eq!(
        std::fs::read_dir(h.env.state.failed_dir()).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn a_group_ignoring_sigterm_gets_sigkill_after_the_grace() {
    let h = harness();
    let (finished, messages, pgid) = run_and_stop(
        &h,
        sh("trap '' TERM; sleep 1000 & sleep 1000"),
        3,
        StopReason::Shutdown,
    )
    .await;
    assert_eq!(
        finished.error.as_deref(),
        Some("cancelled: the agent is shutting down")
    );
    assert_eq!(finished.signal, Some(libc::SIGKILL));
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    let agent = stream(&messages, LogStream::Agent);
    assert!(
        agent
            .iter()
            .any(|l| l.starts_with("still running 0.3 s after SIGTERM")),
        "{agent:?}"
    );
}

/// A harness whose grace after SIGTERM is far longer than any test: a task that is
/// killed before it ends was killed without one.
fn harness_with_long_grace() -> Harness {
    let mut h = harness();
    h.env.kill_grace = LONG_GRACE;
    h
}

const LONG_GRACE: Duration = Duration::from_secs(30);

/// A shell that ignores SIGTERM, as do the two sleeps it starts.
const IGNORES_SIGTERM: &str = "trap '' TERM; sleep 1000 & sleep 1000";

#[tokio::test]
async fn a_stale_attempt_is_killed_at_once_without_a_grace() {
    let h = harness_with_long_grace();
    let started = std::time::Instant::now();
    let (finished, messages, pgid) =
        run_and_stop(&h, sh(IGNORES_SIGTERM), 3, StopReason::Stale).await;
    assert!(
        started.elapsed() < LONG_GRACE / 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(finished.signal, Some(libc::SIGKILL));
    assert_eq!(finished.error.as_deref(), Some(StopReason::Stale.error()));
    wait_for("the group's end", || group_members(pgid).is_empty()).await;
    let agent = stream(&messages, LogStream::Agent);
    assert!(
        agent.contains(&StopReason::Stale.error().to_string()),
        "{agent:?}"
    );
    assert!(
        !agent.iter().any(|l| l.starts_with("still running")),
        "{agent:?}"
    );
}

#[tokio::test]
async fn a_stale_notice_during_the_grace_of_a_cancel_kills_at_once() {
    let h = harness_with_long_grace();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop) = mpsc::channel(STOP_REASONS);
    let reporter = Collect(tx);
    let control = async {
        let mut seen = Vec::new();
        let mut pgid = None;
        // Cancelled once its processes run; stale once the cancel is in its log.
        loop {
            let message = rx
                .recv()
                .await
                .expect("runner ended before the stale notice");
            if let AgentMessage::TaskStarted(started) = &message {
                let pid = started.pid;
                pgid = Some(pid);
                wait_for("the task's processes", || group_members(pid).len() >= 3).await;
                stop_tx.send(StopReason::Cancelled).await.unwrap();
            }
            seen.push(message);
            if stream(&seen, LogStream::Agent).contains(&"cancelled".to_string()) {
                stop_tx.send(StopReason::Stale).await.unwrap();
                return (seen, pgid);
            }
        }
    };
    let started = std::time::Instant::now();
    let controls = Controls {
        stop,
        after: None,
        after_older: false,
        exited: None,
    };
    let (end, (mut seen, pgid)) = tokio::join!(
        run_task(&h.env, sh(IGNORES_SIGTERM), &reporter, controls),
        control
    );
    assert!(
        started.elapsed() < LONG_GRACE / 2,
        "{:?}",
        started.elapsed()
    );
    while let Ok(message) = rx.try_recv() {
        seen.push(message);
    }
    // The cancel came first: it names the error; the stale notice only cut the grace.
    assert_eq!(end.stopped_by, Some(StopReason::Cancelled));
    assert_eq!(end.finished.error.as_deref(), Some("cancelled"));
    assert_eq!(end.finished.signal, Some(libc::SIGKILL));
    wait_for("the group's end", || {
        group_members(pgid.unwrap()).is_empty()
    })
    .await;
    let agent = stream(&seen, LogStream::Agent);
    assert!(
        agent.contains(&StopReason::Stale.error().to_string()),
        "{agent:?}"
    );
    assert!(
        !agent.iter().any(|l| l.starts_with("still running")),
        "{agent:?}"
    );
}

#[tokio::test]
async fn an_attempt_told_to_wait_starts_only_once_the_older_one_is_over() {
    let h = harness();
    // Stopped while it waits: it ends without ever starting a process.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop) = mpsc::channel(STOP_REASONS);
    let (_gate, after) = oneshot::channel();
    stop_tx.send(StopReason::Cancelled).await.unwrap();
    let controls = Controls {
        stop,
        after: Some(after),
        after_older: true,
        exited: None,
    };
    let end = run_task(&h.env, sh("echo ran"), &Collect(tx), controls).await;
    let mut messages = Vec::new();
    while let Ok(message) = rx.try_recv() {
        messages.push(message);
    }
    assert_eq!(end.stopped_by, Some(StopReason::Cancelled));
    assert_eq!(
        (end.finished.error.as_deref(), end.finished.exit_code),
        (Some("cancelled"), None)
    );
    assert!(
        !messages
            .iter()
            .any(|m| matches!(m, AgentMessage::TaskStarted(_))),
        "{messages:?}"
    );
    assert_eq!(
        stream(&messages, LogStream::Agent),
        [
            "waiting for an older attempt of this task to end",
            "cancelled"
        ]
    );

    // Once the gate opens, it runs.
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop) = mpsc::channel(STOP_REASONS);
    let (gate, after) = oneshot::channel();
    gate.send(()).unwrap();
    let controls = Controls {
        stop,
        after: Some(after),
        after_older: true,
        exited: None,
    };
    let end = run_task(&h.env, sh("echo ran"), &Collect(tx), controls).await;
    assert!(end.finished.succeeded(), "{:?}", end.finished);
}

#[tokio::test]
async fn the_time_limit_kills_the_task() {
    let h = harness();
    let mut task = sh("sleep 1000");
    task.timeout_secs = Some(1);
    let (finished, messages) = run(&h, task).await;
    assert_eq!(
        finished.error.as_deref(),
        Some("time limit of 1 s exceeded")
    );
    assert_eq!(finished.limit, Some(LimitHit::Timeout));
    assert_eq!(finished.signal, Some(libc::SIGTERM));
    let agent = stream(&messages, LogStream::Agent);
    assert_eq!(
        agent[1..],
        [
            "time limit of 1 s exceeded",
            "killed by signal 15 (SIGTERM)"
        ]
    );
}

/// Prints the task's GPU variables, `unset` for one not set at all.
const PRINT_GPUS: &str = "echo \"cuda=${CUDA_VISIBLE_DEVICES-unset} furrow=${FURROW_GPUS-unset}\"";

#[tokio::test]
async fn the_assigned_gpus_are_the_only_ones_the_task_sees() {
    let h = harness();
    let mut task = command(json!({
        "command": ["sh", "-c", PRINT_GPUS],
        "env": {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "FURROW_GPUS": "3", "OTHER": "kept"}
    }));
    task.gpus = vec![0, 2];
    let (finished, messages) = run(&h, task).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(
        stream(&messages, LogStream::Stdout),
        ["cuda=0,2 furrow=0,2"],
        "the job's env does not override the assigned gpus"
    );
    assert!(
        stream(&messages, LogStream::Agent).contains(
            &"ignoring CUDA_VISIBLE_DEVICES, FURROW_GPUS from the job's environment: the agent \
              sets them for every task"
                .to_string()
        ),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_task_without_gpus_sees_none() {
    let h = harness();
    let task = sh(PRINT_GPUS);
    assert!(task.gpus.is_empty());
    let (finished, messages) = run(&h, task).await;
    assert!(finished.succeeded(), "{finished:?}");
    // Set but empty: CUDA then shows no device at all, rather than every one.
    assert_eq!(stream(&messages, LogStream::Stdout), ["cuda= furrow="]);
}

#[tokio::test]
async fn a_silent_task_is_killed_by_its_stall_timeout() {
    let h = harness();
    let mut task = sh("echo hi; sleep 30");
    task.stall_timeout_secs = Some(1);
    let started = std::time::Instant::now();
    let (finished, messages) = run(&h, task).await;
    let took = started.elapsed();
    assert_eq!(
        finished.error.as_deref(),
        Some("no output or progress for 1 s (stall timeout)")
    );
    assert_eq!(finished.limit, Some(LimitHit::Stall));
    assert_eq!(finished.signal, Some(libc::SIGTERM));
    // Killed a second after its last line, long before its sleep would have ended.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(stream(&messages, LogStream::Stdout), ["hi"]);
    let agent = stream(&messages, LogStream::Agent);
    assert_eq!(
        agent[1..],
        [
            "no output or progress for 1 s (stall timeout)",
            "killed by signal 15 (SIGTERM)"
        ]
    );
}

#[tokio::test]
async fn steady_output_keeps_the_stall_timeout_away() {
    let h = harness();
    // Two seconds of output, a line every 200 ms: never a quiet second.
    let mut task = sh("for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.2; done");
    task.stall_timeout_secs = Some(1);
    let (finished, messages) = run(&h, task).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.limit, None);
    assert_eq!(stream(&messages, LogStream::Stdout).len(), 10);
}

/// Python allocating (and touching) `mib` MiB in a child of the task's shell, so the
/// memory sits in a process other than the task's own; then it sleeps 30 s.
fn allocating_task(mib: u64) -> Assignment {
    sh(&format!(
        "python3 -c 'import time; b = bytearray({mib} * 1024 * 1024); time.sleep(30)' & wait"
    ))
}

#[tokio::test]
async fn a_group_over_its_memory_limit_is_killed() {
    let h = harness();
    let mut task = allocating_task(200);
    task.ram_mb = Some(50);
    let started = std::time::Instant::now();
    let (finished, messages) = run(&h, task).await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "killed before its sleep ended"
    );
    let Some(LimitHit::Memory { used_mb }) = finished.limit else {
        panic!("expected a memory limit hit: {finished:?}");
    };
    assert!(used_mb > 50, "{used_mb}");
    assert_eq!(
        finished.error,
        Some(format!("used {used_mb} MiB, over its limit of 50 MiB"))
    );
    assert_eq!(finished.signal, Some(libc::SIGTERM));
    let agent = stream(&messages, LogStream::Agent);
    assert!(
        agent.contains(finished.error.as_ref().unwrap()),
        "{agent:?}"
    );
}

#[tokio::test]
async fn a_group_under_its_memory_limit_runs_to_its_end() {
    let h = harness();
    // Several samples (every 500 ms) while 20 MiB are held under a 200 MiB limit.
    let mut task = sh(
        "python3 -c 'import time; b = bytearray(20 * 1024 * 1024); time.sleep(1.5)' && echo done",
    );
    task.ram_mb = Some(200);
    let (finished, messages) = run(&h, task).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.limit, None);
    assert_eq!(stream(&messages, LogStream::Stdout), ["done"]);
}

#[tokio::test]
async fn processes_left_in_the_group_die_with_the_task() {
    let h = harness();
    let (finished, messages) = run(&h, sh("sleep 1000 & echo $!")).await;
    assert!(finished.succeeded());
    let pid: i32 = stream(&messages, LogStream::Stdout)[0].parse().unwrap();
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
    };
    wait_for("the background process to die", gone).await;
}

/// A job type whose output says `percent N`.
const PERCENT: &str = r#"
name = "percent"
version = 1
shell = true
command = ["echo percent 50; echo percent 50; echo percent 250"]
progress = '^percent (?P<percent>\d+)'
"#;

/// A job type that runs a shell line, reads `wrote PATH` as an output and `ERROR: TEXT`
/// as an error.
const WRITER: &str = r#"
name = "writer"
version = 1
shell = true
command = ["{script}"]
outputs = '^wrote (?P<path>\S+)'
errors = ['^ERROR: (.*)']
warnings = ['^warning: ']
require_outputs = true

[parameters.script]
type = "string"
required = true
"#;

#[tokio::test]
async fn progress_parsed_from_output_follows_its_lines() {
    let h = harness();
    let (finished, messages) = run(&h, assignment("percent", json!({}))).await;
    assert!(finished.succeeded());
    let progress: Vec<(usize, f32)> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            AgentMessage::TaskProgress(p) => Some((i, p.progress)),
            _ => None,
        })
        .collect();
    let values: Vec<f32> = progress.iter().map(|(_, p)| *p).collect();
    // Repeats are not re-sent, and values are clamped to 1.0.
    assert_eq!(values.last(), Some(&1.0), "{values:?}");
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    for (index, _) in progress {
        assert!(
            matches!(messages[index - 1], AgentMessage::Logs(_)),
            "progress follows its lines"
        );
    }
}

#[tokio::test]
async fn outputs_are_checked_and_reported_with_a_preview_of_images() {
    let h = harness();
    // A real 640x360 PNG, written by the task into its working directory.
    let png = h._tmp.path().join("src.png");
    image::RgbImage::from_pixel(640, 360, image::Rgb([10, 200, 10]))
        .save(&png)
        .unwrap();
    let mut a = assignment(
        "writer",
        json!({"script": format!("cp {} frame_0001.png && echo wrote frame_0001.png", png.display())}),
    );
    a.frames = FrameBatch {
        start: 1,
        end: 1,
        step: 1,
    };
    let (finished, messages) = run(&h, a).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert_eq!(finished.outputs.len(), 1);
    assert!(finished.outputs[0].path.ends_with("frame_0001.png"));
    assert_eq!(finished.outputs[0].frame, Some(1));
    assert!(finished.outputs[0].size > 0);
    let previews: Vec<&furrow_protocol::Preview> = messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Preview(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(previews.len(), 1);
    assert_eq!(
        (previews[0].width, previews[0].height, previews[0].frame),
        (320, 180, 1)
    );
    assert_eq!(previews[0].mime, "image/jpeg");
}

#[tokio::test]
async fn a_missing_output_or_an_error_line_fails_the_task_with_its_text() {
    let h = harness();
    let (finished, _) = run(
        &h,
        assignment("writer", json!({"script": "echo wrote nowhere.png"})),
    )
    .await;
    assert!(!finished.succeeded());
    assert_eq!(finished.exit_code, Some(0));
    assert_eq!(
        finished.error.as_deref(),
        Some("output nowhere.png was reported but does not exist")
    );
    let (finished, messages) = run(
        &h,
        assignment(
            "writer",
            json!({"script": "echo 'ERROR: the scene is empty'; exit 3"}),
        ),
    )
    .await;
    assert_eq!(finished.exit_code, Some(3));
    assert_eq!(finished.error.as_deref(), Some("the scene is empty"));
    assert!(
        stream(&messages, LogStream::Agent)
            .iter()
            .any(|l| l == "the scene is empty")
    );
}

#[tokio::test]
async fn warnings_are_counted_in_the_log() {
    let h = harness();
    let script =
        "echo 'warning: low memory'; echo 'warning: slow disk'; touch f.png; echo wrote f.png";
    let (finished, messages) = run(&h, assignment("writer", json!({"script": script}))).await;
    assert!(finished.succeeded(), "{finished:?}");
    assert!(
        stream(&messages, LogStream::Agent)
            .iter()
            .any(|l| l == "2 warnings in the output; the first: warning: low memory"),
        "{:?}",
        stream(&messages, LogStream::Agent)
    );
}
