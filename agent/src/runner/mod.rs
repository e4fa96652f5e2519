//! Running one task attempt: its process, its output, its limits and its end.
//!
//! [`run_task`] is plain async code with no actor in sight, so it can be tested with real
//! processes on a bare tokio runtime; the `TaskRunner` actor in [`crate::supervisor`]
//! wraps it. What it guarantees:
//! - the process is started by the agent's spawner, which kills its group if the agent
//!   dies, reaps it and reports how it ended (`spawner`); it leads its own process
//!   group, in a fresh working directory, with stdin from `/dev/null`, the `FURROW_*`
//!   variables and no signal blocked;
//! - it sees only the GPUs assigned to it: `CUDA_VISIBLE_DEVICES` and `FURROW_GPUS` hold
//!   their indices, comma-separated, and are empty when it has none, so a task never
//!   grabs a GPU another task holds. These two and the `FURROW_*` variables are set over
//!   the job type's environment: a job's `env` parameter cannot change them;
//! - stdout and stderr are read line by line and reported in batches, in order per
//!   stream, with the agent's own lines (`starting: ...`, `exited with code N`, errors);
//! - cancel and the limits ([`limits`]: time limit, stall timeout, memory limit) send
//!   SIGTERM to the whole group, then SIGKILL after a grace period (limits timed by
//!   timerfds, the grace by tokio's timer: `time_limit`); a limit ends the attempt with its error and
//!   [`TaskFinished::limit`] naming it; when the task's process exits, whatever it left
//!   in its group is killed;
//! - an attempt the master no longer counts ([`StopReason::Stale`]) gets SIGKILL at once,
//!   grace or no grace: another attempt of its task runs, or is about to, elsewhere or
//!   here; an attempt told to wait for an older one of its task ([`Controls::after`])
//!   starts its process only once that one's run is over;
//! - every path ends in a [`TaskFinished`], never a panic: unknown job types, bad
//!   parameters and programs that cannot start are reported as the task's error; an
//!   attempt stopped because the agent shuts down is given back instead
//!   ([`AttemptEnd::into_message`] turns it into a [`TaskReturned`]).

mod limits;
mod output;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use furrow_protocol::{
    AgentMessage, Assignment, LimitHit, LogStream, TaskFinished, TaskProgress, TaskRef,
    TaskReturned, TaskStarted,
};
use furrow_sysfd::ExitStatus;
use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tracing::{info, warn};

use crate::jobtypes::{JobTypes, TaskFiles};
use crate::orphans::HeldRecord;
use crate::previews;
use crate::process_group::{signal_group, signal_name};
use crate::spawner::{Spawned, TaskCommand, TaskProcess};
use crate::state::StateDir;
use crate::time_limit::Countdown;
use crate::workdir::{self, Disposal};
use furrow_jobtypes::output::Silent;
use furrow_jobtypes::{Event, Exit, OutputParser, TaskPlan};
use limits::Limits;

pub(crate) use output::OutputLimits;
use output::{LineCodec, LogBatcher};

/// How long output is still read after the task's process group is gone. Only a process
/// that left the group (with `setsid`) can hold the pipes open longer.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Where a runner sends its messages (the master link, or a channel in tests).
pub(crate) trait Reporter {
    /// Hands over one message, waiting while the receiver is busy: that wait is the
    /// backpressure that keeps a chatty task from outrunning the link.
    fn report(&self, message: AgentMessage) -> impl Future<Output = ()>;

    /// Hands over one message without waiting: for an attempt's last lines and progress,
    /// which then reach the link together with its result and leave in one write.
    fn hand_over(&self, message: AgentMessage);
}

/// Why a task is being stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The master cancelled it.
    Cancelled,
    /// The agent is shutting down.
    Shutdown,
    /// The master no longer counts the attempt (it acknowledged it while it ran, or
    /// assigned a newer attempt of its task): killed at once, without a grace.
    Stale,
}

/// How many stop requests a run can be sent: one per [`StopReason`], the bound of the
/// channel that carries them.
pub(crate) const STOP_REASONS: usize = 3;

impl StopReason {
    /// The task's error when stopped for this reason.
    pub fn error(self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Shutdown => "cancelled: the agent is shutting down",
            StopReason::Stale => "killed at once: the master no longer counts this attempt",
        }
    }

    /// Whether the group gets SIGKILL at once rather than SIGTERM and a grace.
    fn at_once(self) -> bool {
        self == StopReason::Stale
    }
}

/// What the rest of the agent steers a run with.
pub(crate) struct Controls {
    /// Stop requests, each reason at most once (so at most [`STOP_REASONS`] of them).
    pub stop: mpsc::Receiver<StopReason>,
    /// Set when the attempt waits for a free slot or for an older attempt of the same
    /// task still running here: the process starts only once this resolves (its sender
    /// sends or is dropped), so two attempts of a task never run side by side.
    pub after: Option<oneshot::Receiver<()>>,
    /// Whether it waits for an older attempt of its task, which the log says (a wait for
    /// a slot is routine and says nothing).
    pub after_older: bool,
    /// Told when the task's processes are gone, before the result is put together and
    /// the working directory disposed of: the slot is free from then on.
    pub exited: Option<oneshot::Sender<()>>,
}

/// How an attempt ended, as [`run_task`] returns it.
#[derive(Debug)]
pub(crate) struct AttemptEnd {
    /// Its result.
    pub finished: TaskFinished,
    /// The stop request that ended it, when one did before anything else (a time limit)
    /// interrupted it.
    pub stopped_by: Option<StopReason>,
}

impl AttemptEnd {
    /// Whether the attempt is given back rather than finished: it was stopped because the
    /// agent shuts down, so it has no outcome of its own.
    pub fn given_back(&self) -> bool {
        self.stopped_by == Some(StopReason::Shutdown)
    }

    /// The message that reports the end: a `TaskReturned` for an attempt given back (the
    /// master requeues it without counting a failure), a `TaskFinished` otherwise.
    pub fn into_message(self) -> AgentMessage {
        if self.given_back() {
            AgentMessage::TaskReturned(TaskReturned {
                task: self.finished.task,
                reason: self
                    .finished
                    .error
                    .unwrap_or_else(|| StopReason::Shutdown.error().to_string()),
            })
        } else {
            AgentMessage::TaskFinished(self.finished)
        }
    }
}

/// What every runner shares.
pub(crate) struct RunnerEnv {
    /// Job types to resolve assignments with (the link adds those the master sends).
    pub jobtypes: Arc<JobTypes>,
    /// The state directory.
    pub state: StateDir,
    /// Output line and batch bounds.
    pub output: OutputLimits,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Failed working directories kept.
    pub keep_failed_dirs: usize,
}

/// Runs one attempt to its end and returns its result. Reports `TaskStarted`, logs and
/// progress on the way, but not the end (the caller frees the slot first).
pub(crate) async fn run_task<R: Reporter>(
    env: &RunnerEnv,
    assignment: Assignment,
    reporter: &R,
    controls: Controls,
) -> AttemptEnd {
    let task = assignment.task;
    let Controls {
        mut stop,
        after,
        after_older,
        exited,
    } = controls;
    let mut output = TaskOutput::new(task, env.output, reporter);
    let files = TaskFiles {
        dir: env.state.task_dir(task),
    };
    if let Some(after) = after {
        if after_older {
            output
                .agent_line("waiting for an older attempt of this task to end".into())
                .await;
        }
        if let Some(reason) = wait_before_start(after, &mut stop).await {
            let ending = Ending::stopped_before_start(reason);
            return finish(env, &assignment, &files, ending, &mut output).await;
        }
    }
    let ending = match env.jobtypes.prepare(&assignment, &files) {
        Ok(prepared) => {
            output.parser = prepared.parser;
            for (before, after) in prepared.mapped {
                output
                    .agent_line(format!("path map: {before} -> {after}"))
                    .await;
            }
            execute(env, &assignment, &prepared.plan, &mut output, &mut stop).await
        }
        Err(error) => Ending::without_process(error, false),
    };
    if let Some(exited) = exited {
        let _ = exited.send(());
    }
    finish(env, &assignment, &files, ending, &mut output).await
}

/// Waits until the older attempts of the task are over; returns the stop request that
/// came first instead, if one did.
async fn wait_before_start(
    mut after: oneshot::Receiver<()>,
    stop: &mut mpsc::Receiver<StopReason>,
) -> Option<StopReason> {
    let mut stop_open = true;
    loop {
        tokio::select! {
            // Sent or dropped, either way nothing older runs any more.
            _ = &mut after => return None,
            reason = stop.recv(), if stop_open => match reason {
                Some(reason) => return Some(reason),
                // No stop can come any more: that is not a stop.
                None => stop_open = false,
            },
        }
    }
}

/// How an attempt ended.
struct Ending {
    /// Exit status, when the process ran and was reaped.
    status: Option<ExitStatus>,
    /// When the process was reaped, if it was.
    ended_at: Option<DateTime<Utc>>,
    /// The attempt's error.
    error: Option<String>,
    /// Whether the error is already in the log (errors while running are logged live).
    error_logged: bool,
    /// Stopped by request: its working directory is of no interest.
    stopped: bool,
    /// The stop request that ended it, when it came before any other interruption.
    stopped_by: Option<StopReason>,
    /// The limit that ended it, when one did before any other interruption.
    limit: Option<LimitHit>,
    /// Whether the working directory was created.
    workdir: bool,
}

impl Ending {
    fn without_process(error: String, workdir: bool) -> Self {
        Self {
            status: None,
            ended_at: None,
            error: Some(error),
            error_logged: false,
            stopped: false,
            stopped_by: None,
            limit: None,
            workdir,
        }
    }

    /// Stopped while it waited for an older attempt, before anything started.
    fn stopped_before_start(reason: StopReason) -> Self {
        Self {
            stopped: true,
            stopped_by: Some(reason),
            ..Self::without_process(reason.error().to_string(), false)
        }
    }
}

/// The environment the runner sets for every task, over the job type's: the `FURROW_*`
/// variables, and the GPUs the task may use (`CUDA_VISIBLE_DEVICES`, set even when empty,
/// hides every other GPU from CUDA).
fn runner_env(assignment: &Assignment) -> [(&'static str, String); 9] {
    let frames = assignment.frames;
    let gpus = assignment
        .gpus
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    [
        ("CUDA_VISIBLE_DEVICES", gpus.clone()),
        ("FURROW_GPUS", gpus),
        ("FURROW_TASK_ID", assignment.task.task_id.to_string()),
        ("FURROW_ATTEMPT", assignment.task.attempt.to_string()),
        ("FURROW_JOB_ID", assignment.job_id.to_string()),
        ("FURROW_FRAME", frames.start.to_string()),
        ("FURROW_FRAME_START", frames.start.to_string()),
        ("FURROW_FRAME_END", frames.end.to_string()),
        ("FURROW_FRAME_STEP", frames.step.to_string()),
    ]
}

/// The deployed app a `command` task asks to run in (its `app` parameter).
fn app_of(assignment: &Assignment) -> Option<String> {
    if assignment.jobtype != "command" {
        return None;
    }
    assignment
        .params
        .0
        .get("app")
        .and_then(|app| app.as_str())
        .map(str::to_string)
}

/// The current release directory of `app` on this agent and the environment its
/// processes get, or why the task cannot run in it.
fn app_environment(
    state: &crate::state::StateDir,
    app: &str,
) -> Result<(PathBuf, BTreeMap<String, String>), String> {
    let apps = state.apps_dir();
    let not_here = || format!("app `{app}` is not served by this agent");
    // Looked up, never created: a name that is no app here stays unknown.
    if furrow_deploy::webserver::validate_app_name(app).is_err()
        || !apps.join("homes").join(app).is_dir()
    {
        return Err(not_here());
    }
    let home = furrow_deploy::AppHome::open(&apps.join("homes"), app, &apps.join("shared-deps"))
        .map_err(|e| format!("app `{app}`: {e}"))?;
    let release = home
        .current()
        .map_err(|e| format!("app `{app}`: {e}"))?
        .ok_or_else(not_here)?;
    let dir = home
        .release(release)
        .map_err(|e| format!("app `{app}`: {e}"))?
        .dir;
    let vars = home
        .environment(release, &furrow_deploy::Listen::None)
        .map_err(|e| format!("app `{app}`: {e}"))?;
    Ok((dir, vars))
}

/// Kills the task's group if the run is abandoned midway (the future dropped because the
/// agent is going down), so no process outlives its runner.
/// The group's record (see `orphans`) is kept until the group is dead or waited for.
struct GroupGuard {
    pgid: u32,
    record: Option<HeldRecord>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

async fn execute<R: Reporter>(
    env: &RunnerEnv,
    assignment: &Assignment,
    plan: &TaskPlan,
    output: &mut TaskOutput<'_, R>,
    stop: &mut mpsc::Receiver<StopReason>,
) -> Ending {
    let task = assignment.task;
    // The timers are created before anything starts: a task must not run without the
    // means to enforce its limits.
    let mut limits = match Limits::new(assignment) {
        Ok(limits) => limits,
        Err(e) => {
            return Ending::without_process(format!("cannot create the task's timers: {e}"), false);
        }
    };
    let mut grace = Countdown::new();
    let dir = match workdir::create(&env.state, task).await {
        Ok(dir) => dir,
        Err(e) => {
            let path = env.state.task_dir(task);
            let error = format!(
                "cannot create the working directory {}: {e}",
                path.display()
            );
            return Ending::without_process(error, false);
        }
    };
    let runner_vars = runner_env(assignment);
    // A task of a deployed app runs in its current release, with its environment.
    let (cwd, app_vars) = match app_of(assignment) {
        Some(app) => match app_environment(&env.state, &app) {
            Ok((release_dir, vars)) => (release_dir, vars),
            Err(error) => {
                workdir::dispose(&env.state, task, Disposal::Remove, 0).await;
                return Ending::without_process(error, false);
            }
        },
        None => (dir.clone(), BTreeMap::new()),
    };
    // Its standard input is /dev/null, its output two pipes.
    let mut command = TaskCommand::new(&plan.program);
    command
        .args(&plan.args)
        .current_dir(&cwd)
        .envs(&app_vars)
        .envs(&plan.env)
        .envs(runner_vars.clone());
    output
        .agent_line(format!("starting: {}", plan.display()))
        .await;
    let overridden: Vec<&str> = runner_vars
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| plan.env.contains_key(*name))
        .collect();
    if !overridden.is_empty() {
        output
            .agent_line(format!(
                "ignoring {} from the job's environment: the agent sets them for every task",
                overridden.join(", ")
            ))
            .await;
    }
    let Spawned {
        mut process,
        stdout,
        stderr,
        started_at,
    } = match TaskProcess::spawn(command).await {
        Ok(spawned) => spawned,
        Err(e) => {
            // Nothing ran in it: nothing to keep.
            workdir::dispose(&env.state, task, Disposal::Remove, 0).await;
            return Ending::without_process(format!("cannot start `{}`: {e}", plan.program), false);
        }
    };
    // When the process started, not when the agent or the master hears of it.
    let started_at = DateTime::<Utc>::from(started_at);
    let pgid = process.pid();
    let record = env.state.group_records().write(task, pgid);
    if let Err(e) = &record {
        warn!(task_id = task.task_id, attempt = task.attempt, error = %e, "cannot record task process group");
        output
            .agent_line(format!(
                "warning: cannot record the process group in {}: {e}; its processes survive an agent crash",
                env.state.running_dir().display()
            ))
            .await;
    }
    let mut guard = GroupGuard {
        pgid,
        record: record.ok(),
        armed: true,
    };
    output
        .report(AgentMessage::TaskStarted(TaskStarted {
            task,
            pid: pgid,
            at: started_at,
        }))
        .await;
    info!(
        task_id = task.task_id,
        attempt = task.attempt,
        pid = pgid,
        "task started"
    );

    let stdout = FramedRead::new(stdout, LineCodec::new(env.output.max_line))
        .map(|line| (LogStream::Stdout, line));
    let stderr = FramedRead::new(stderr, LineCodec::new(env.output.max_line))
        .map(|line| (LogStream::Stderr, line));
    let mut lines = futures::stream::select(stdout, stderr);
    let mut lines_open = true;
    limits.start(pgid);
    let mut terminating = false;
    let mut stop_open = true;
    let mut error: Option<String> = None;
    let mut stopped = false;
    let mut stopped_by = None;
    let mut limit = None;

    // One timer for the output batches, moved rather than recreated for every line.
    let mut flush_timer = Box::pin(tokio::time::sleep_until(far_future()));
    let mut flush_timer_at = None;

    let waited = loop {
        let flush_at = output.flush_due();
        if flush_at != flush_timer_at {
            flush_timer_at = flush_at;
            if let Some(at) = flush_at {
                flush_timer.as_mut().reset(at);
            }
        }
        // A stop or limit is logged when it happens and the group gets SIGTERM (SIGKILL
        // for a stale attempt); the loop goes on reading output until the process is
        // reaped.
        let mut interrupt: Option<Interrupt> = None;
        tokio::select! {
            status = process.wait() => break status,
            line = lines.next(), if lines_open => match line {
                Some((stream, Ok(bytes))) => {
                    limits.activity();
                    output.line(stream, &bytes).await;
                }
                Some((stream, Err(e))) => output.agent_line(format!("cannot read {stream:?}: {e}")).await,
                None => lines_open = false,
            },
            () = flush_timer.as_mut(), if flush_at.is_some() => {
                output.flush().await;
            }
            hit = limits.hit() => {
                interrupt = Some(Interrupt {
                    message: hit.message,
                    limit: Some(hit.limit),
                    at_once: false,
                });
            }
            reason = stop.recv(), if stop_open => match reason {
                Some(reason) => {
                    stopped = true;
                    if error.is_none() {
                        stopped_by = Some(reason);
                    }
                    interrupt = Some(Interrupt {
                        message: reason.error().to_string(),
                        limit: None,
                        at_once: reason.at_once(),
                    });
                }
                // A dropped sender means no stop can come any more, not a stop.
                None => stop_open = false,
            },
            () = grace.expired() => {
                output.agent_line(format!(
                    "still running {} s after SIGTERM; sending SIGKILL",
                    env.kill_grace.as_secs_f32()
                )).await;
                signal_group(pgid, Signal::SIGKILL);
            }
        }
        if let Some(Interrupt {
            message,
            limit: hit,
            at_once,
        }) = interrupt
        {
            output.agent_line(message.clone()).await;
            // The first interruption names the attempt's error (and its limit, if it was
            // one); later ones are only logged.
            if error.is_none() {
                error = Some(message);
                limit = hit;
            }
            if at_once {
                // Even during the grace of an earlier SIGTERM: another attempt of the
                // task is about to run, and this one must be gone first.
                terminating = true;
                limits.stop();
                grace.disarm();
                signal_group(pgid, Signal::SIGKILL);
            } else if !terminating {
                terminating = true;
                // The group is on its way out: its limits have done their job, and a
                // group silent while it exits is no stall.
                limits.stop();
                signal_group(pgid, Signal::SIGTERM);
                grace.arm(env.kill_grace);
            }
        }
    };

    // Whatever the task started in its group (background jobs) ends with it.
    signal_group(pgid, Signal::SIGKILL);
    guard.armed = false;
    drop(limits);
    // The grace timer is free now (the process is gone): it times the output drain.
    let mut drain = grace;
    drain.arm(OUTPUT_DRAIN_LIMIT);
    while lines_open {
        tokio::select! {
            line = lines.next() => match line {
                Some((stream, Ok(bytes))) => output.line(stream, &bytes).await,
                Some((stream, Err(e))) => output.agent_line(format!("cannot read {stream:?}: {e}")).await,
                None => lines_open = false,
            },
            () = drain.expired() => {
                output.agent_line(
                    "stopped reading output: a process that left the task's process group holds it open".into(),
                ).await;
                lines_open = false;
            }
        }
    }
    drop(guard.record.take());

    match waited {
        Ok(status) => Ending {
            status: Some(status),
            ended_at: process.ended_at().map(DateTime::<Utc>::from),
            error_logged: error.is_some(),
            error,
            stopped,
            stopped_by,
            limit,
            workdir: true,
        },
        Err(e) => {
            let mut ending =
                Ending::without_process(format!("cannot wait for the task process: {e}"), true);
            ending.stopped = stopped;
            ending.stopped_by = stopped_by;
            ending.limit = limit;
            ending
        }
    }
}

/// Something that ends the attempt early: a stop request or a limit.
struct Interrupt {
    /// The attempt's error, also logged.
    message: String,
    /// The limit passed, if it was one.
    limit: Option<LimitHit>,
    /// SIGKILL at once instead of SIGTERM and a grace.
    at_once: bool,
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(24 * 3600)
}

async fn finish<R: Reporter>(
    env: &RunnerEnv,
    assignment: &Assignment,
    files: &TaskFiles,
    mut ending: Ending,
    output: &mut TaskOutput<'_, R>,
) -> AttemptEnd {
    let task = assignment.task;
    let exit_code = ending.status.and_then(|status| status.code());
    // The job type's verdict: the files the task produced, and an error its output or
    // missing files tell of (which names the failure better than an exit code).
    let mut outputs = Vec::new();
    if ending.status.is_some() {
        let verdict = output.parser.finish(Exit { code: exit_code }, files);
        outputs = verdict.outputs;
        if ending.error.is_none() {
            ending.error = verdict.error;
            ending.error_logged = false;
        }
    }
    if !ending.stopped && !outputs.is_empty() {
        for preview in previews::make(assignment, files, &outputs).await {
            output.report(AgentMessage::Preview(preview)).await;
        }
    }
    if let Some(first) = output.first_warning.take() {
        let count = output.warnings;
        output
            .agent_line(format!(
                "{count} warning{} in the output; the first: {first}",
                if count == 1 { "" } else { "s" }
            ))
            .await;
    }
    let signal = ending.status.and_then(|status| status.signal());
    if let Some(code) = exit_code {
        output.agent_line(format!("exited with code {code}")).await;
    } else if let Some(signal) = signal {
        output
            .agent_line(format!(
                "killed by signal {signal} ({})",
                signal_name(signal)
            ))
            .await;
    }
    if let Some(error) = ending.error.as_ref().filter(|_| !ending.error_logged) {
        output.agent_line(error.clone()).await;
    }
    // Not waited for: the result follows at once, and both go out in one write.
    output.flush_last();
    let finished = TaskFinished {
        task,
        exit_code,
        signal,
        error: ending.error,
        limit: ending.limit,
        // When the process ended; a task that never ran ends now.
        at: ending.ended_at.unwrap_or_else(Utc::now),
        outputs,
    };
    if ending.workdir {
        let disposal = if finished.succeeded() || ending.stopped {
            Disposal::Remove
        } else {
            Disposal::KeepFailed
        };
        workdir::dispose(&env.state, task, disposal, env.keep_failed_dirs).await;
    }
    info!(
        task_id = task.task_id,
        attempt = task.attempt,
        exit_code,
        signal,
        error = finished.error.as_deref(),
        limit = ?finished.limit,
        given_back = ending.stopped_by == Some(StopReason::Shutdown),
        "task finished"
    );
    AttemptEnd {
        finished,
        stopped_by: ending.stopped_by,
    }
}

/// A task's output on its way to the reporter: lines batched, progress parsed.
struct TaskOutput<'r, R> {
    reporter: &'r R,
    task: TaskRef,
    batcher: LogBatcher,
    parser: Box<dyn OutputParser>,
    progress: Option<f32>,
    progress_pending: bool,
    /// Warnings the job type read in the output, and the first of them.
    warnings: usize,
    first_warning: Option<String>,
}

impl<'r, R: Reporter> TaskOutput<'r, R> {
    fn new(task: TaskRef, limits: OutputLimits, reporter: &'r R) -> Self {
        Self {
            reporter,
            task,
            batcher: LogBatcher::new(task, limits),
            parser: Box::new(Silent),
            progress: None,
            progress_pending: false,
            warnings: 0,
            first_warning: None,
        }
    }

    async fn report(&self, message: AgentMessage) {
        self.reporter.report(message).await;
    }

    /// A line of the task's own output.
    async fn line(&mut self, stream: LogStream, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let mut events = Vec::new();
        self.parser.line(stream, &text, &mut events);
        for event in events {
            match event {
                Event::Progress(progress) if progress.is_finite() => {
                    let progress = progress.clamp(0.0, 1.0);
                    if self
                        .progress
                        .is_none_or(|old| (old - progress).abs() >= 0.001)
                    {
                        self.progress = Some(progress);
                        self.progress_pending = true;
                    }
                }
                Event::Warning(text) => {
                    self.warnings += 1;
                    self.first_warning.get_or_insert(text);
                }
                _ => {}
            }
        }
        self.push(stream, text).await;
    }

    /// A line written by the agent about the task.
    async fn agent_line(&mut self, text: String) {
        self.push(LogStream::Agent, text).await;
    }

    async fn push(&mut self, stream: LogStream, text: String) {
        if let Some(batch) = self.batcher.push(stream, text) {
            self.report(AgentMessage::Logs(batch)).await;
            self.send_progress().await;
        }
    }

    /// When pending lines must be sent.
    fn flush_due(&self) -> Option<tokio::time::Instant> {
        self.batcher.due()
    }

    /// Sends pending lines, then pending progress (so progress never runs ahead of the
    /// output that announced it).
    async fn flush(&mut self) {
        if let Some(batch) = self.batcher.take() {
            self.report(AgentMessage::Logs(batch)).await;
        }
        self.send_progress().await;
    }

    /// Hands over pending lines, then pending progress, without waiting (see
    /// [`Reporter::hand_over`]).
    fn flush_last(&mut self) {
        if let Some(batch) = self.batcher.take() {
            self.reporter.hand_over(AgentMessage::Logs(batch));
        }
        if let Some(progress) = self.pending_progress() {
            self.reporter.hand_over(progress);
        }
    }

    async fn send_progress(&mut self) {
        if let Some(progress) = self.pending_progress() {
            self.report(progress).await;
        }
    }

    /// The progress not sent yet, as a message; taking it marks it sent.
    fn pending_progress(&mut self) -> Option<AgentMessage> {
        let progress = self.progress.filter(|_| self.progress_pending)?;
        self.progress_pending = false;
        Some(AgentMessage::TaskProgress(TaskProgress {
            task: self.task,
            progress,
        }))
    }
}
