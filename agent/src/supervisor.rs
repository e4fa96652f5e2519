//! The `TaskSupervisor` actor and its `TaskRunner`s.
//!
//! The supervisor owns the slots: it starts one `TaskRunner` per accepted assignment,
//! keeps up to twice as many assignments waiting for a slot (a master speaking protocol
//! version 7 sends a slot's next task before the current one ends, so the slot never
//! waits for a round trip; from version 9, two per slot), refuses assignments beyond
//! that, routes cancels, and at
//! shutdown stops every runner (each gives its attempt back to the master) and answers
//! once all of them have reported.
//!
//! Waiting assignments start in the order they arrived, each as soon as a slot is free.
//! A waiting runner holds no process: a cancel or a stale notice ends it without one,
//! and a shutdown gives it back.
//!
//! Two attempts of one task never run side by side: an attempt the master no longer
//! counts ([`StaleTask`]) is killed at once, and so is an older attempt of a task when a
//! newer one is assigned here; the newer one takes the older one's slot and starts its
//! process only once the older one's run is over. An assignment older than an attempt
//! running here is refused.
//!
//! A runner wraps
//! [`run_task`] and, when it returns, first frees its slot and
//! then reports the result. That order matters: the master assigns new work as soon as it
//! reads the result, and the freed slot must already be visible when that assignment
//! arrives (both messages travel through FIFO mailboxes, so it is).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use furrow_protocol::{AgentMessage, Assignment, TaskFinished, TaskRef};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::link::TaskReport;
use crate::runner::{Controls, Reporter, RunnerEnv, STOP_REASONS, StopReason, run_task};

impl Reporter for Recipient<TaskReport> {
    async fn report(&self, message: AgentMessage) {
        // Only fails when the link is gone, that is when the agent is stopping.
        let _ = self.send(TaskReport(message)).await;
    }

    fn hand_over(&self, message: AgentMessage) {
        self.do_send(TaskReport(message));
    }
}

/// Run an assignment.
#[derive(Message)]
#[rtype(result = "AssignOutcome")]
pub(crate) struct AssignTask(pub Assignment);

/// What became of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub(crate) enum AssignOutcome {
    /// A runner started.
    Started,
    /// The attempt is already running here; nothing was done.
    Duplicate,
    /// Not run; the attempt is given back to the master with this reason.
    Refused(String),
}

/// Cancel an attempt (ignored when unknown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CancelTask(pub TaskRef);

/// The master no longer counts this attempt: kill it at once (ignored when unknown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StaleTask(pub TaskRef);

/// Stop accepting work, stop every runner, answer when all have reported.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShutdownTasks;

/// A runner's process is gone: its slot is free.
#[derive(Message)]
#[rtype(result = "()")]
struct RunnerExited(TaskRef);

/// A runner has handed its result to the link.
#[derive(Message)]
#[rtype(result = "()")]
struct RunnerGone(TaskRef);

/// Owns the task slots and the runners.
pub(crate) struct TaskSupervisor {
    slots: u32,
    env: Arc<RunnerEnv>,
    reporter: Recipient<TaskReport>,
    /// Runners whose process may still be alive or has yet to start: those without a
    /// gate hold a slot.
    runners: HashMap<TaskRef, Addr<TaskRunner>>,
    /// Runners whose process is gone but whose result is not yet with the link.
    reporting: HashSet<TaskRef>,
    /// Attempts whose runner waits for a free slot, or for the older attempts of its task
    /// to end here; the sender opens the gate.
    gates: HashMap<TaskRef, oneshot::Sender<()>>,
    /// The gated attempts in the order they were assigned: the order they start in.
    waiting: VecDeque<TaskRef>,
    accepting: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl TaskSupervisor {
    /// A supervisor running up to `slots` tasks, reporting to `reporter`.
    pub fn new(slots: u32, env: Arc<RunnerEnv>, reporter: Recipient<TaskReport>) -> Self {
        Self {
            slots,
            env,
            reporter,
            runners: HashMap::new(),
            reporting: HashSet::new(),
            gates: HashMap::new(),
            waiting: VecDeque::new(),
            accepting: true,
            idle_waiters: Vec::new(),
        }
    }

    /// Sends a stop request to the runner of `task`; false when it has none.
    fn stop(&self, task: TaskRef, reason: StopReason) -> bool {
        let Some(runner) = self.runners.get(&task) else {
            return false;
        };
        // A runner's mailbox only ever holds stop requests: one per message of the master
        // about its attempt, and the shutdown's; a handful at most.
        runner.do_send(StopTask(reason));
        true
    }

    /// Attempts of the same task as `task` whose runner may still have a process here.
    fn running_attempts_of(&self, task: TaskRef) -> impl Iterator<Item = TaskRef> + '_ {
        self.runners
            .keys()
            .copied()
            .filter(move |other| other.task_id == task.task_id && *other != task)
    }

    /// Runners holding a slot: started, or free to start.
    fn busy_slots(&self) -> usize {
        self.runners.len() - self.gates.len()
    }

    /// Assignments this agent keeps at most: one per slot running, two per slot waiting.
    fn capacity(&self) -> usize {
        self.slots as usize * 3
    }

    /// Whether `task` must wait before it starts: for a slot, or for an older attempt of
    /// its task still running here.
    fn must_wait(&self, task: TaskRef) -> bool {
        self.busy_slots() >= self.slots as usize
            || self
                .running_attempts_of(task)
                .any(|other| other.attempt < task.attempt)
    }

    /// Forgets the gate of `ended`, whose runner is gone, and starts what may start.
    fn open_gates(&mut self, ended: TaskRef) {
        if self.gates.remove(&ended).is_some() {
            self.waiting.retain(|waiting| *waiting != ended);
        }
        self.start_waiting();
    }

    /// Starts waiting attempts in the order they came while slots are free, skipping
    /// those whose older attempts still run.
    fn start_waiting(&mut self) {
        let mut index = 0;
        while index < self.waiting.len() && self.busy_slots() < self.slots as usize {
            let waiting = self.waiting[index];
            if self
                .running_attempts_of(waiting)
                .any(|other| other.attempt < waiting.attempt)
            {
                index += 1;
                continue;
            }
            self.waiting.remove(index);
            if let Some(gate) = self.gates.remove(&waiting) {
                let _ = gate.send(());
            }
        }
    }

    fn wake_if_idle(&mut self) {
        if self.runners.is_empty() && self.reporting.is_empty() {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Mailbox of the supervisor. Its senders are the link (one request per assign, cancel or
/// acknowledgement of a running attempt read from the master) and the runners (two notes each over their lifetime); a roomy
/// mailbox keeps an assign and a cancel that follows it in order even in bursts.
const SUPERVISOR_MAILBOX: usize = 256;

impl Actor for TaskSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(SUPERVISOR_MAILBOX);
    }
}

impl Handler<AssignTask> for TaskSupervisor {
    type Result = AssignOutcome;

    fn handle(
        &mut self,
        AssignTask(assignment): AssignTask,
        ctx: &mut Context<Self>,
    ) -> AssignOutcome {
        let task = assignment.task;
        if !self.accepting {
            return AssignOutcome::Refused("refused: the agent is shutting down".into());
        }
        if self.runners.contains_key(&task) || self.reporting.contains(&task) {
            warn!(
                task_id = task.task_id,
                attempt = task.attempt,
                "ignoring a second assignment of a running attempt"
            );
            return AssignOutcome::Duplicate;
        }
        if let Some(newer) = self
            .running_attempts_of(task)
            .find(|other| other.attempt > task.attempt)
        {
            warn!(
                task_id = task.task_id,
                attempt = task.attempt,
                running = newer.attempt,
                "refusing an assignment older than the attempt running here"
            );
            return AssignOutcome::Refused(format!(
                "refused: attempt {} of this task runs on this agent",
                newer.attempt
            ));
        }
        let older: Vec<TaskRef> = self.running_attempts_of(task).collect();
        // An attempt that replaces an older one takes its place.
        if older.is_empty() && self.runners.len() >= self.capacity() {
            warn!(
                task_id = task.task_id,
                attempt = task.attempt,
                slots = self.slots,
                "refusing assignment beyond free slots"
            );
            return AssignOutcome::Refused(format!(
                "refused: no free slot on this agent (all {} slots busy, twice as many tasks waiting)",
                self.slots
            ));
        }
        debug!(task_id = task.task_id, attempt = task.attempt, job_id = assignment.job_id, jobtype = %assignment.jobtype, "task assigned");
        for old in &older {
            info!(
                task_id = task.task_id,
                attempt = old.attempt,
                newer = task.attempt,
                "a newer attempt of the task was assigned; killing this one at once"
            );
            self.stop(*old, StopReason::Stale);
        }
        // Behind the attempts already waiting too, so they start in the order they came.
        let after = if self.must_wait(task) || !self.waiting.is_empty() {
            let (gate, after) = oneshot::channel();
            self.gates.insert(task, gate);
            self.waiting.push_back(task);
            Some(after)
        } else {
            None
        };
        let runner = TaskRunner {
            task,
            assignment: Some(assignment),
            after,
            after_older: !older.is_empty(),
            env: self.env.clone(),
            reporter: self.reporter.clone(),
            supervisor: ctx.address(),
            stop: None,
            asked: Vec::new(),
            reported: false,
        }
        .start();
        self.runners.insert(task, runner);
        // It may start at once (say, its older attempt is over already).
        self.start_waiting();
        AssignOutcome::Started
    }
}

impl Handler<CancelTask> for TaskSupervisor {
    type Result = ();

    fn handle(&mut self, CancelTask(task): CancelTask, _ctx: &mut Context<Self>) {
        if self.stop(task, StopReason::Cancelled) {
            info!(
                task_id = task.task_id,
                attempt = task.attempt,
                "cancelling task"
            );
        } else {
            debug!(
                task_id = task.task_id,
                attempt = task.attempt,
                "ignoring cancel of an attempt not running here"
            );
        }
    }
}

impl Handler<StaleTask> for TaskSupervisor {
    type Result = ();

    fn handle(&mut self, StaleTask(task): StaleTask, _ctx: &mut Context<Self>) {
        if self.stop(task, StopReason::Stale) {
            info!(
                task_id = task.task_id,
                attempt = task.attempt,
                "the master no longer counts this attempt; killing it at once"
            );
        } else {
            debug!(
                task_id = task.task_id,
                attempt = task.attempt,
                "ignoring a stale attempt not running here"
            );
        }
    }
}

impl Handler<ShutdownTasks> for TaskSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: ShutdownTasks, _ctx: &mut Context<Self>) -> Self::Result {
        self.accepting = false;
        for runner in self.runners.values() {
            runner.do_send(StopTask(StopReason::Shutdown));
        }
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.wake_if_idle();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<RunnerExited> for TaskSupervisor {
    type Result = ();

    fn handle(&mut self, RunnerExited(task): RunnerExited, _ctx: &mut Context<Self>) {
        // Sent when the processes are gone and again when the run is over: the first frees
        // the slot, the second changes nothing.
        if self.runners.remove(&task).is_some() {
            self.reporting.insert(task);
        }
        self.open_gates(task);
    }
}

impl Handler<RunnerGone> for TaskSupervisor {
    type Result = ();

    fn handle(&mut self, RunnerGone(task): RunnerGone, _ctx: &mut Context<Self>) {
        self.runners.remove(&task);
        self.reporting.remove(&task);
        self.open_gates(task);
        self.wake_if_idle();
    }
}

/// Stop a runner's task.
#[derive(Message)]
#[rtype(result = "()")]
struct StopTask(StopReason);

/// Runs one attempt: wraps [`run_task`], frees the slot, reports the result.
pub(crate) struct TaskRunner {
    task: TaskRef,
    assignment: Option<Assignment>,
    /// Resolves once a slot is free and the older attempts of the task have ended here,
    /// when the attempt had to wait.
    after: Option<oneshot::Receiver<()>>,
    /// Whether it waits for an older attempt of its task (which its log says).
    after_older: bool,
    env: Arc<RunnerEnv>,
    reporter: Recipient<TaskReport>,
    supervisor: Addr<TaskSupervisor>,
    stop: Option<mpsc::Sender<StopReason>>,
    /// The stop reasons sent already: each goes once, so the channel never fills.
    asked: Vec<StopReason>,
    reported: bool,
}

impl Actor for TaskRunner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(assignment) = self.assignment.take() else {
            ctx.stop();
            return;
        };
        let (stop_tx, stop_rx) = mpsc::channel(STOP_REASONS);
        self.stop = Some(stop_tx);
        // The slot is free once the processes are gone, while the result is still being
        // put together: a task waiting for the slot starts meanwhile.
        let (exited_tx, exited_rx) = oneshot::channel();
        let supervisor = self.supervisor.clone();
        let task = self.task;
        ctx.spawn(
            async move {
                if exited_rx.await.is_ok() {
                    supervisor.do_send(RunnerExited(task));
                }
            }
            .into_actor(self),
        );
        let controls = Controls {
            stop: stop_rx,
            after: self.after.take(),
            after_older: self.after_older,
            exited: Some(exited_tx),
        };
        let env = self.env.clone();
        let reporter = self.reporter.clone();
        let run = async move { run_task(&env, assignment, &reporter, controls).await };
        ctx.spawn(
            run.into_actor(self)
                .then(|end, runner, _ctx| {
                    // `do_send` skips the mailbox bound, but each runner sends each of
                    // its notes once (`RunnerExited` at most twice: when the processes
                    // are gone and here): at most three per runner are ever queued.
                    runner.supervisor.do_send(RunnerExited(runner.task));
                    runner.reported = true;
                    // A task stopped for the shutdown is given back (`TaskReturned`), so
                    // the master requeues it without counting a failure; a cancel or a
                    // time limit ends it with its `TaskFinished`.
                    let report = runner.reporter.send(TaskReport(end.into_message()));
                    async move {
                        let _ = report.await;
                    }
                    .into_actor(runner)
                })
                .map(|(), runner, ctx| {
                    runner.supervisor.do_send(RunnerGone(runner.task));
                    ctx.stop();
                }),
        );
    }
}

impl Handler<StopTask> for TaskRunner {
    type Result = ();

    fn handle(&mut self, StopTask(reason): StopTask, _ctx: &mut Context<Self>) {
        if let Some(stop) = &self.stop
            && !self.asked.contains(&reason)
        {
            self.asked.push(reason);
            // Never full: one message per reason, and room for every reason.
            let _ = stop.try_send(reason);
        }
    }
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        // The run was abandoned (a panic, or the system going down). Its process group
        // died with the run; make sure the slot and the master hear of it.
        let finished = TaskFinished {
            task: self.task,
            exit_code: None,
            signal: None,
            error: Some("the agent's task runner stopped unexpectedly".into()),
            limit: None,
            at: Utc::now(),
            outputs: Vec::new(),
        };
        self.reporter
            .do_send(TaskReport(AgentMessage::TaskFinished(finished)));
        self.supervisor.do_send(RunnerGone(self.task));
    }
}
