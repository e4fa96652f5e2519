use chrono::Utc;
use furrow_protocol::{FrameSet, MasterMessage, TaskFinished, TaskRef, TaskReturned, WorkState};
use uuid::Uuid;

use super::restore::LoadedJob;
use super::{Control, Core, Effect, JobSpec, Verdict, Write};
use crate::scheduler::policy::requirements::Offer;
use crate::store::records::{JobRow, JobSettings, LoadedTask, TaskRow};

pub(crate) fn spec(id: i64, priority: i32, retries: u32) -> JobSpec {
    JobSpec {
        id,
        title: format!("job {id}"),
        jobtype: "command".into(),
        jobtype_version: 1,
        params: serde_json::json!({"command": ["true"]}).into(),
        timeout_secs: None,
        priority,
        retries,
        settings: JobSettings {
            blocklist_after: 0,
            ..JobSettings::of(&furrow_protocol::JobSubmission::new(
                "",
                serde_json::Value::Null.into(),
                "",
            ))
        },
        needs: Default::default(),
    }
}

/// Adds job `id` with `frames` (one frame per task), task ids starting at `first`.
fn add(core: &mut Core, id: i64, priority: i32, retries: u32, frames: &str, first: i64) {
    let set: FrameSet = frames.parse().unwrap();
    let batches: Vec<_> = set.batches(1).collect();
    core.add_job(spec(id, priority, retries), first, &batches, &[]);
}

/// A plain agent with `slots` slots and plenty of everything else registers.
pub(crate) fn register(core: &mut Core, agent: Uuid, slots: u32, running: &[TaskRef]) {
    let offer = Offer {
        cpus: 64,
        ram_mb: 1 << 20,
        ..Offer::default()
    };
    core.agent_registered(agent, slots, 0, offer, true, running);
}

/// An agent with `slots` slots that keeps as many assignments again waiting for a slot
/// (protocol version 7) registers.
fn register_ahead(core: &mut Core, agent: Uuid, slots: u32) {
    let offer = Offer {
        cpus: 64,
        ram_mb: 1 << 20,
        ..Offer::default()
    };
    core.agent_registered(agent, slots, slots, offer, true, &[]);
}

/// `task` started on `agent` and ended well `ran_ms` later.
fn run_for(core: &mut Core, agent: Uuid, task: TaskRef, ran_ms: i64) -> Verdict {
    let end = finished(task, 0);
    core.task_started(agent, task, end.at.timestamp_millis() - ran_ms);
    core.task_finished(agent, &end)
}

/// The task rows and job rows written since the last call.
pub(crate) fn commit(core: &mut Core) -> (Vec<TaskRow>, Vec<JobRow>) {
    let mut tasks = Vec::new();
    let mut jobs = Vec::new();
    for write in core.take_writes() {
        match write {
            Write::Task(row) => tasks.push(row),
            Write::Job(row) => jobs.push(row),
            Write::Bulk(_) | Write::Attempt(_) | Write::Outputs(_) | Write::Preview(_) => {}
        }
    }
    (tasks, jobs)
}

fn assignments(effects: &[Effect]) -> Vec<(Uuid, TaskRef, i64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                agent,
                message: MasterMessage::Assign(a),
            } => Some((*agent, a.task, a.job_id)),
            _ => None,
        })
        .collect()
}

pub(crate) fn cancels(effects: &[Effect]) -> Vec<TaskRef> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                message: MasterMessage::Cancel(t),
                ..
            } => Some(*t),
            _ => None,
        })
        .collect()
}

/// The `ResultStored` acknowledgements in `effects`, with their agents.
fn acks(effects: &[Effect]) -> Vec<(Uuid, TaskRef)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                agent,
                message: MasterMessage::ResultStored(t),
            } => Some((*agent, *t)),
            _ => None,
        })
        .collect()
}

pub(crate) fn finished(task: TaskRef, exit_code: i32) -> TaskFinished {
    TaskFinished {
        task,
        exit_code: Some(exit_code),
        signal: None,
        error: None,
        limit: None,
        at: Utc::now(),
        outputs: Vec::new(),
    }
}

#[test]
fn dispatches_by_priority_then_fair_share_then_age_then_frame() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-2", 100);
    add(&mut core, 2, 5, 0, "10-11", 200);
    add(&mut core, 3, 5, 0, "20", 300);
    assert!(core.take_effects().is_empty(), "no agent, no assignment");
    let agent = Uuid::new_v4();
    register(&mut core, agent, 5, &[]);
    let order: Vec<i64> = assignments(&core.take_effects())
        .iter()
        .map(|(_, t, _)| t.task_id)
        .collect();
    // Priority 5 first, shared between jobs 2 and 3 (the older first while they run
    // equally many), then priority 0 in frame order.
    assert_eq!(order, vec![200, 300, 201, 100, 101]);
}

#[test]
fn one_task_per_free_slot() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-10", 1);
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    register(&mut core, a, 2, &[]);
    register(&mut core, b, 1, &[]);
    let assigned = assignments(&core.take_effects());
    assert_eq!(assigned.iter().filter(|(ag, _, _)| *ag == a).count(), 2);
    assert_eq!(assigned.iter().filter(|(ag, _, _)| *ag == b).count(), 1);
    assert_eq!(core.running_count(), 3);
    assert_eq!(core.queued_count(), 7);
    // A finished task frees exactly one slot, which gets exactly one new task.
    let (agent, task, _) = assigned[0];
    assert_eq!(
        core.task_finished(agent, &finished(task, 0)),
        Verdict::Applied
    );
    let next = assignments(&core.take_effects());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, agent);
    assert_eq!(next[0].1.attempt, 1);
    let counts = core.job_counts(1).unwrap();
    assert_eq!((counts.done, counts.running, counts.queued), (1, 3, 6));
}

#[test]
fn only_the_assigned_agent_reports_on_an_attempt() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-2", 1);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    register(&mut core, a, 1, &[]);
    register(&mut core, b, 1, &[]);
    let sent = assignments(&core.take_effects());
    let (_, on_a, _) = *sent.iter().find(|(agent, _, _)| *agent == a).unwrap();
    // Another agent's reports on it change nothing.
    assert_eq!(core.task_started(b, on_a, 0), Verdict::Stale);
    assert_eq!(core.task_progress(b, on_a, 0.5), Verdict::Stale);
    assert_eq!(core.task_finished(b, &finished(on_a, 0)), Verdict::Stale);
    core.take_effects();
    assert_eq!(core.running_on(on_a.task_id), Some((a, on_a.attempt)));
    // Taken from its lost agent, its late result counts only from that agent.
    core.agent_lost(a);
    core.take_effects();
    assert_eq!(core.task_finished(b, &finished(on_a, 0)), Verdict::Stale);
    assert_eq!(core.task_finished(a, &finished(on_a, 0)), Verdict::Applied);
}

#[test]
fn stale_attempts_are_fenced() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let (_, task, _) = assignments(&core.take_effects())[0];
    assert_eq!(task.attempt, 1);
    core.agent_lost(a);
    let b = Uuid::new_v4();
    register(&mut core, b, 1, &[]);
    let (agent, second, _) = assignments(&core.take_effects())[0];
    assert_eq!(agent, b);
    assert_eq!(second.attempt, 2);
    // The first attempt's messages are ignored now.
    assert_eq!(core.task_started(a, task, 0), Verdict::Stale);
    assert_eq!(core.task_progress(a, task, 0.5), Verdict::Stale);
    core.take_effects();
    assert_eq!(core.task_finished(a, &finished(task, 0)), Verdict::Stale);
    assert_eq!(
        acks(&core.take_effects()),
        [(a, task)],
        "a stale result is acknowledged, so its agent stops replaying it"
    );
    assert_eq!(core.running_on(1), Some((b, 2)));
    assert_eq!(
        core.task_finished(b, &finished(second, 0)),
        Verdict::Applied
    );
    assert_eq!(core.job_counts(1), None, "a finished job leaves memory");
    let (_, jobs) = commit(&mut core);
    let row = jobs.iter().find(|r| r.id == 1).unwrap();
    assert_eq!(row.counts.done, 1);
    assert!(row.finished_at.is_some());
}

#[test]
fn lost_agent_tasks_are_requeued_with_a_new_attempt() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-3", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 3, &[]);
    assert_eq!(assignments(&core.take_effects()).len(), 3);
    core.agent_offline(a);
    assert_eq!(core.running_count(), 3, "offline keeps tasks until lost");
    core.agent_lost(a);
    assert_eq!(core.running_count(), 0);
    assert_eq!(core.queued_count(), 3);
    let (tasks, _) = commit(&mut core);
    assert!(
        tasks
            .iter()
            .filter(|r| r.state == WorkState::Queued)
            .count()
            >= 3
    );
    let b = Uuid::new_v4();
    register(&mut core, b, 3, &[]);
    let again = assignments(&core.take_effects());
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|(ag, t, _)| *ag == b && t.attempt == 2));
}

#[test]
fn reregistration_requeues_unlisted_tasks_and_cancels_stale_ones() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-2", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 2, &[]);
    let assigned = assignments(&core.take_effects());
    let (_, kept, _) = assigned[0];
    let (_, dropped, _) = assigned[1];
    core.agent_offline(a);
    // The agent comes back listing one task and a stale attempt of nothing current.
    let bogus = TaskRef {
        task_id: 999,
        attempt: 4,
    };
    register(&mut core, a, 1, &[kept, bogus]);
    let effects = core.take_effects();
    assert_eq!(cancels(&effects), vec![bogus]);
    assert_eq!(core.running_on(kept.task_id), Some((a, 1)));
    // The unlisted task was requeued; with one slot (taken by `kept`) nothing dispatches.
    assert_eq!(core.running_on(dropped.task_id), None);
    assert_eq!(core.queued_count(), 1);
    assert!(assignments(&effects).is_empty());
}

#[test]
fn restarted_agent_with_empty_list_gets_tasks_requeued_at_once() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let (_, first, _) = assignments(&core.take_effects())[0];
    register(&mut core, a, 1, &[]);
    let again = assignments(&core.take_effects());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.task_id, first.task_id);
    assert_eq!(again[0].1.attempt, 2);
}

#[test]
fn failures_are_retried_then_fail_the_task() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 2, "1", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    for attempt in 1..=3 {
        let assigned = assignments(&core.take_effects());
        assert_eq!(assigned.len(), 1, "attempt {attempt}");
        assert_eq!(assigned[0].1.attempt, attempt);
        assert_eq!(
            core.task_finished(a, &finished(assigned[0].1, 1)),
            Verdict::Applied
        );
    }
    assert!(assignments(&core.take_effects()).is_empty());
    let (tasks, jobs) = commit(&mut core);
    let last = tasks.iter().rfind(|r| r.id == 1).unwrap();
    assert_eq!(last.state, WorkState::Failed);
    assert_eq!(last.failures, 3);
    assert_eq!(last.last_error.as_deref(), Some("exited with code 1"));
    let job = jobs.iter().find(|r| r.id == 1).unwrap();
    assert_eq!(job.counts.failed, 1);
    assert_eq!(job.counts.job_state(), WorkState::Failed);
}

fn returned(task: TaskRef) -> TaskReturned {
    TaskReturned {
        task,
        reason: "the agent is shutting down".into(),
    }
}

#[test]
fn an_agent_that_refuses_work_for_want_of_a_slot_is_not_offered_it_again_at_once() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let (_, first, _) = assignments(&core.take_effects())[0];
    // A stale attempt still fills its only slot: it gives the task back.
    assert_eq!(core.task_returned(a, &returned(first)), Verdict::Applied);
    assert!(
        assignments(&core.take_effects()).is_empty(),
        "no bounce back to the agent that just refused"
    );
    assert_eq!(core.free_capacity(a).unwrap().slots, 0);
    // The old attempt ends there: the slot is free and the task goes to it.
    let stale = TaskRef {
        task_id: 999,
        attempt: 1,
    };
    assert_eq!(core.task_finished(a, &finished(stale, 0)), Verdict::Stale);
    let again = assignments(&core.take_effects());
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].0, again[0].1.attempt), (a, 2));
    // Registering again lists what runs there: nothing stays held.
    assert_eq!(
        core.task_returned(a, &returned(again[0].1)),
        Verdict::Applied
    );
    core.take_effects();
    register(&mut core, a, 1, &[]);
    assert_eq!(assignments(&core.take_effects()).len(), 1);
}

#[test]
fn a_returned_attempt_is_requeued_without_a_failure() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let (_, first, _) = assignments(&core.take_effects())[0];
    assert_eq!(first.attempt, 1);
    // The agent is going away: it takes no new work, then gives its attempt back.
    core.agent_offline(a);
    let b = Uuid::new_v4();
    register(&mut core, b, 1, &[]);
    assert!(assignments(&core.take_effects()).is_empty());
    commit(&mut core);

    // Only the agent running the current attempt can give it back.
    assert_eq!(core.task_returned(b, &returned(first)), Verdict::Stale);
    assert_eq!(core.running_on(first.task_id), Some((a, 1)));
    assert!(core.take_effects().is_empty());

    assert_eq!(core.task_returned(a, &returned(first)), Verdict::Applied);
    let effects = core.take_effects();
    assert!(
        acks(&effects).is_empty(),
        "a returned attempt needs no acknowledgement"
    );
    let again = assignments(&effects);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, b);
    assert_eq!(again[0].1.task_id, first.task_id);
    assert_eq!(again[0].1.attempt, 2);
    let (tasks, jobs) = commit(&mut core);
    assert!(tasks.iter().any(|r| r.state == WorkState::Queued));
    assert!(
        tasks
            .iter()
            .all(|r| r.failures == 0 && r.last_error.is_none())
    );
    assert!(tasks.iter().all(|r| r.state != WorkState::Failed));
    assert!(jobs.iter().all(|j| j.counts.failed == 0));
    let counts = core.job_counts(1).unwrap();
    assert_eq!((counts.running, counts.queued, counts.failed), (1, 0, 0));

    // The old attempt given back again, or reported by its agent, changes nothing.
    assert_eq!(core.task_returned(a, &returned(first)), Verdict::Stale);
    assert_eq!(core.running_on(first.task_id), Some((b, 2)));
    assert!(assignments(&core.take_effects()).is_empty());

    assert_eq!(
        core.task_finished(b, &finished(again[0].1, 0)),
        Verdict::Applied
    );
    let (tasks, jobs) = commit(&mut core);
    let last = tasks.iter().rfind(|r| r.id == first.task_id).unwrap();
    assert_eq!(
        (last.state, last.attempt, last.failures),
        (WorkState::Done, 2, 0)
    );
    let job = jobs.iter().find(|r| r.id == 1).unwrap();
    assert_eq!((job.counts.done, job.counts.failed), (1, 0));
    assert_eq!(job.counts.job_state(), WorkState::Done);
}

#[test]
fn late_result_of_a_requeued_attempt_is_accepted() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-2", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let (_, task, _) = assignments(&core.take_effects())[0];
    core.agent_lost(a);
    assert_eq!(core.task_finished(a, &finished(task, 0)), Verdict::Applied);
    assert_eq!(core.queued_count(), 1);
    assert_eq!(core.job_counts(1).unwrap().done, 1);
}

#[test]
fn restart_keeps_running_tasks_until_their_agent_is_lost() {
    let mut core = Core::new();
    let a = Uuid::new_v4();
    let mut s = spec(7, 0, 0);
    s.id = 7;
    let tasks = vec![
        LoadedTask {
            id: 70,
            job_id: 7,
            frames: furrow_protocol::FrameBatch {
                start: 1,
                end: 1,
                step: 1,
            },
            state: WorkState::Running,
            agent: Some(a),
            attempt: 3,
            failures: 0,
            exit_code: None,
            last_error: None,
            started_at: None,
            gpus: Vec::new(),
            ram_mb: 0,
        },
        LoadedTask {
            id: 71,
            job_id: 7,
            frames: furrow_protocol::FrameBatch {
                start: 2,
                end: 2,
                step: 1,
            },
            state: WorkState::Queued,
            agent: None,
            attempt: 0,
            failures: 0,
            exit_code: None,
            last_error: None,
            started_at: None,
            gpus: Vec::new(),
            ram_mb: 0,
        },
    ];
    let job = LoadedJob {
        spec: s,
        control: Control::Active,
        failures_on: Vec::new(),
    };
    core.load(Vec::new(), vec![job], tasks, &Default::default());
    assert_eq!(core.running_on(70), Some((a, 3)));
    assert_eq!(core.queued_count(), 1);
    core.agent_lost(a);
    assert_eq!(core.running_on(70), None);
    assert_eq!(core.queued_count(), 2);
    let b = Uuid::new_v4();
    register(&mut core, b, 2, &[]);
    let assigned = assignments(&core.take_effects());
    let attempt_of_70 = assigned.iter().find(|(_, t, _)| t.task_id == 70).unwrap().1;
    assert_eq!(attempt_of_70.attempt, 4);
}

#[test]
fn a_result_is_acknowledged_before_the_freed_slot_is_reassigned() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-2", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let (_, first, _) = assignments(&core.take_effects())[0];
    assert_eq!(core.task_finished(a, &finished(first, 0)), Verdict::Applied);
    let effects = core.take_effects();
    let sends: Vec<&MasterMessage> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        matches!(sends[..], [MasterMessage::ResultStored(t), MasterMessage::Assign(_)] if *t == first),
        "{sends:?}"
    );
    let (tasks, _) = commit(&mut core);
    assert!(
        tasks
            .iter()
            .any(|r| r.id == first.task_id && r.state == WorkState::Done),
        "the acknowledged result is in the same commit: {tasks:?}"
    );
}

#[test]
fn a_replayed_result_changes_nothing_and_is_acknowledged_again() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 1, "1-3", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 2, &[]);
    let assigned = assignments(&core.take_effects());
    let (done, failed) = (assigned[0].1, assigned[1].1);
    assert_eq!(core.task_finished(a, &finished(done, 0)), Verdict::Applied);
    // A failure with a retry left: the task waits in the queue under the same attempt.
    assert_eq!(
        core.task_finished(a, &finished(failed, 1)),
        Verdict::Applied
    );
    core.take_effects();
    commit(&mut core);
    let counts = core.job_counts(1).unwrap();
    let running = core.running_count();
    let queued = core.queued_count();

    // The acknowledgements were lost: the agent replays both results.
    for (task, exit_code) in [(done, 0), (failed, 1), (done, 0)] {
        assert_eq!(
            core.task_finished(a, &finished(task, exit_code)),
            Verdict::Stale
        );
        assert_eq!(acks(&core.take_effects()), [(a, task)]);
        let (tasks, jobs) = commit(&mut core);
        assert!(tasks.is_empty() && jobs.is_empty(), "{tasks:?} {jobs:?}");
        assert_eq!(core.job_counts(1), Some(counts));
        assert_eq!(
            (core.running_count(), core.queued_count()),
            (running, queued)
        );
    }

    // Once the job is over and has left memory, a replay still only gets its answer.
    for task_id in 1..=3 {
        if let Some((_, attempt)) = core.running_on(task_id) {
            let task = TaskRef { task_id, attempt };
            assert_eq!(core.task_finished(a, &finished(task, 0)), Verdict::Applied);
        }
    }
    assert_eq!(core.job_counts(1), None, "the job is over");
    core.take_effects();
    commit(&mut core);
    assert_eq!(core.task_finished(a, &finished(done, 0)), Verdict::Stale);
    assert_eq!(acks(&core.take_effects()), [(a, done)]);
    let (tasks, jobs) = commit(&mut core);
    assert!(tasks.is_empty() && jobs.is_empty(), "{tasks:?} {jobs:?}");
}

#[test]
fn registration_acknowledges_listed_attempts_already_settled() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-2", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 2, &[]);
    let assigned = assignments(&core.take_effects());
    let (settled, running) = (assigned[0].1, assigned[1].1);
    assert_eq!(
        core.task_finished(a, &finished(settled, 0)),
        Verdict::Applied
    );
    core.agent_offline(a);
    core.take_effects();
    commit(&mut core);
    let counts = core.job_counts(1).unwrap();

    // The acknowledgement was lost with the connection: the agent lists the attempt.
    register(&mut core, a, 2, &[settled, running]);
    let effects = core.take_effects();
    assert_eq!(acks(&effects), [(a, settled)]);
    // Whether the attempt still runs there cannot be told apart from this; a cancel of a
    // finished attempt is a no-op on the agent.
    assert_eq!(cancels(&effects), [settled]);
    assert!(assignments(&effects).is_empty(), "nothing is requeued");
    assert_eq!(core.running_on(running.task_id), Some((a, 1)));
    assert_eq!(core.running_on(settled.task_id), None);
    assert_eq!(core.job_counts(1), Some(counts));
    let (tasks, _) = commit(&mut core);
    assert!(
        tasks.iter().all(|r| r.id != settled.task_id),
        "the settled task is not touched: {tasks:?}"
    );
}

#[test]
fn a_job_of_short_tasks_fills_the_seats_ahead_of_busy_slots_and_a_long_one_does_not() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-20", 1);
    let agent = Uuid::new_v4();
    register_ahead(&mut core, agent, 2);
    // Nothing is known of the job's tasks yet: one per slot.
    let first = assignments(&core.take_effects());
    assert_eq!(first.len(), 2);
    assert_eq!(core.running_count(), 2);

    // Its first task took 20 ms: the freed slot gets one, and both seats ahead one each.
    assert_eq!(run_for(&mut core, agent, first[0].1, 20), Verdict::Applied);
    let next = assignments(&core.take_effects());
    assert_eq!(next.len(), 3, "{next:?}");
    assert_eq!(core.running_count(), 4);
    assert_eq!(core.free_capacity(agent).unwrap().slots, 0);
    // Then each result frees exactly one seat, which gets exactly one task.
    assert_eq!(run_for(&mut core, agent, first[1].1, 20), Verdict::Applied);
    assert_eq!(assignments(&core.take_effects()).len(), 1);
    assert_eq!(core.running_count(), 4);

    // A job whose tasks take minutes waits for free slots.
    let mut core = Core::new();
    add(&mut core, 2, 0, 0, "1-20", 100);
    register_ahead(&mut core, agent, 2);
    let first = assignments(&core.take_effects());
    assert_eq!(
        run_for(&mut core, agent, first[0].1, 120_000),
        Verdict::Applied
    );
    assert_eq!(assignments(&core.take_effects()).len(), 1);
    assert_eq!(core.running_count(), 2);
}

#[test]
fn an_agent_without_seats_ahead_gets_one_task_per_free_slot_even_for_short_tasks() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-20", 1);
    let agent = Uuid::new_v4();
    register(&mut core, agent, 2, &[]);
    let first = assignments(&core.take_effects());
    assert_eq!(run_for(&mut core, agent, first[0].1, 5), Verdict::Applied);
    assert_eq!(assignments(&core.take_effects()).len(), 1);
    assert_eq!(core.running_count(), 2);
}

#[test]
fn tasks_waiting_ahead_go_back_to_the_queue_with_their_lost_agent() {
    let mut core = Core::new();
    add(&mut core, 1, 0, 0, "1-6", 1);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    register_ahead(&mut core, a, 1);
    let first = assignments(&core.take_effects());
    assert_eq!(run_for(&mut core, a, first[0].1, 10), Verdict::Applied);
    let on_a = assignments(&core.take_effects());
    assert_eq!(on_a.len(), 2, "one in the slot, one waiting: {on_a:?}");
    // The agent is lost: both go back, and the next agent takes them with new attempts.
    core.agent_lost(a);
    register_ahead(&mut core, b, 1);
    let on_b = assignments(&core.take_effects());
    assert_eq!(on_b.len(), 2, "{on_b:?}");
    assert!(on_b.iter().all(|(agent, _, _)| *agent == b), "{on_b:?}");
    let requeued: Vec<i64> = on_a.iter().map(|(_, t, _)| t.task_id).collect();
    assert!(
        on_b.iter()
            .any(|(_, t, _)| requeued.contains(&t.task_id) && t.attempt == 2),
        "{on_a:?} then {on_b:?}"
    );
    assert_eq!(core.job_counts(1).unwrap().running, 2);
}

#[test]
fn a_task_waiting_ahead_on_an_agent_that_gets_blocklisted_is_taken_back() {
    let mut core = Core::new();
    let mut picky = spec(1, 0, 3);
    picky.settings.blocklist_after = 1;
    let set: FrameSet = "1-10".parse().unwrap();
    let batches: Vec<_> = set.batches(1).collect();
    core.add_job(picky, 1, &batches, &[]);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    register_ahead(&mut core, a, 1);
    register_ahead(&mut core, b, 1);
    let first = assignments(&core.take_effects());
    let on_a = first.iter().find(|(agent, _, _)| *agent == a).unwrap().1;
    let on_b = first.iter().find(|(agent, _, _)| *agent == b).unwrap().1;
    // B's task proves short: each agent gets a task ahead of its busy slot.
    assert_eq!(run_for(&mut core, b, on_b, 10), Verdict::Applied);
    let ahead = assignments(&core.take_effects());
    let waiting_on_a = ahead.iter().find(|(agent, _, _)| *agent == a).unwrap().1;
    // A fails its task and is blocklisted: the task waiting there goes back to the queue
    // and A is told to drop it.
    assert_eq!(core.task_finished(a, &finished(on_a, 7)), Verdict::Applied);
    let effects = core.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Send { agent, message: MasterMessage::Stale(t) } if *agent == a && *t == waiting_on_a)),
        "{effects:?}"
    );
    assert_ne!(
        core.running_on(waiting_on_a.task_id)
            .map(|(agent, _)| agent),
        Some(a)
    );
    assert!(
        assignments(&effects)
            .iter()
            .all(|(agent, _, _)| *agent != a)
    );
    // What A then says of it changes nothing.
    assert_eq!(
        core.task_finished(a, &finished(waiting_on_a, 137)),
        Verdict::Stale
    );
    assert_eq!(core.job_counts(1).unwrap().failed, 0);
}
