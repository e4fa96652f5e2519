//! Spec-like tests of the dispatch policy and job control, on the core alone.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use furrow_protocol::{
    FrameSet, JobAction, MasterMessage, QueueSpec, Requirements, TaskAction, TaskFinished, TaskRef,
    WorkState,
};
use proptest::prelude::*;
use uuid::Uuid;

use super::core::{Core, Effect, ParentState, Refusal};
use super::core_tests_support::{cancels, commit, finished, register, spec};
use super::policy::requirements::{Needs, Offer};

fn add_job(core: &mut Core, spec: super::JobSpec, frames: &str, first: i64) {
    let set: FrameSet = frames.parse().unwrap();
    let batches: Vec<_> = set.batches(1).collect();
    core.add_job(spec, first, &batches, &[]);
}

fn assigned(effects: &[Effect]) -> Vec<(Uuid, TaskRef, i64, Vec<u32>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                agent,
                message: MasterMessage::Assign(a),
            } => Some((*agent, a.task, a.job_id, a.gpus.clone())),
            _ => None,
        })
        .collect()
}

fn queue(core: &mut Core, name: &str, weight: u32) {
    core.create_queue(&QueueSpec {
        name: name.into(),
        parent: None,
        priority: 0,
        weight,
        min_agents: 0,
        max_agents: None,
    })
    .unwrap();
}

fn in_queue(id: i64, queue: &str) -> super::JobSpec {
    let mut s = spec(id, 0, 0);
    s.settings.queue = queue.into();
    s
}

fn needing(id: i64, requirements: Requirements) -> super::JobSpec {
    let mut s = spec(id, 0, 0);
    s.needs = Needs::parse(&requirements).unwrap();
    s.settings.requirements = requirements;
    s
}

/// Runs `rounds` completions, each finishing a random running task; returns the
/// assignments per job.
fn churn(core: &mut Core, rounds: usize, seed: u64) -> HashMap<i64, usize> {
    let mut rng = fastrand_like(seed);
    let mut running: Vec<(Uuid, TaskRef, i64)> = Vec::new();
    let mut per_job: HashMap<i64, usize> = HashMap::new();
    for round in 0..rounds {
        for (agent, task, job, _) in assigned(&core.take_effects()) {
            if round > 0 {
                *per_job.entry(job).or_default() += 1;
            }
            running.push((agent, task, job));
        }
        if running.is_empty() {
            break;
        }
        let pick = (rng() % running.len() as u64) as usize;
        let (agent, task, _) = running.swap_remove(pick);
        core.task_finished(agent, &finished(task, 0));
    }
    per_job
}

/// A small deterministic generator (xorshift), so property tests need no extra crate.
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[test]
fn two_queues_weighted_three_to_one_get_three_quarters_and_one_quarter() {
    let mut core = Core::new();
    queue(&mut core, "lighting", 3);
    queue(&mut core, "fx", 1);
    // The fx queue has many more jobs; it must not get more than its share for that.
    add_job(&mut core, in_queue(1, "lighting"), "1-20000", 1);
    for j in 0..5 {
        add_job(
            &mut core,
            in_queue(10 + j, "fx"),
            "1-20000",
            100_000 + j * 20_000,
        );
    }
    for _ in 0..4 {
        register(&mut core, Uuid::new_v4(), 4, &[]);
    }
    let per_job = churn(&mut core, 10_000, 7);
    let lighting = per_job.get(&1).copied().unwrap_or(0) as f64;
    let total: f64 = per_job.values().sum::<usize>() as f64;
    let share = lighting / total;
    assert!(
        (0.70..=0.80).contains(&share),
        "lighting got {share:.3} of {total} assignments"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Jobs arriving and leaving: while both queues have work, the split of assignments
    /// stays within ±5% of 75/25.
    #[test]
    fn fair_share_holds_while_jobs_come_and_go(seed in 1u64..u64::MAX, agents in 1usize..6, slots in 1u32..5) {
        let mut core = Core::new();
        queue(&mut core, "a", 3);
        queue(&mut core, "b", 1);
        let mut next_id = 1i64;
        let mut next_task = 1i64;
        let mut add = |core: &mut Core, q: &str, tasks: i64| {
            add_job(core, in_queue(next_id, q), &format!("1-{tasks}"), next_task);
            next_id += 1;
            next_task += tasks;
        };
        // Many small jobs arrive in both queues over time (b gets more of them).
        for _ in 0..3 {
            add(&mut core, "a", 4000);
            add(&mut core, "b", 1500);
            add(&mut core, "b", 1500);
        }
        for _ in 0..agents {
            register(&mut core, Uuid::new_v4(), slots, &[]);
        }
        let per_job = churn(&mut core, 10_000, seed);
        let a: usize = per_job.iter().filter(|(j, _)| (*j - 1) % 3 == 0).map(|(_, n)| n).sum();
        let total: usize = per_job.values().sum();
        let share = a as f64 / total as f64;
        prop_assert!((0.70..=0.80).contains(&share), "a got {share:.3} of {total}");
    }

    /// Whatever runs, no agent has more cpus, memory or GPUs reserved than it has, and
    /// no GPU index is given to two running tasks of one agent.
    #[test]
    fn requirements_never_overcommit_and_gpus_are_never_shared(
        seed in 1u64..u64::MAX,
        jobs in proptest::collection::vec((0u32..4, 0u64..3000, 0u32..3), 1..6),
    ) {
        let mut core = Core::new();
        let mut first = 1i64;
        for (i, (cpus, ram_mb, gpus)) in jobs.iter().enumerate() {
            let requirements = Requirements { cpus: *cpus, ram_mb: *ram_mb, gpus: *gpus, ..Requirements::default() };
            add_job(&mut core, needing(i as i64 + 1, requirements), "1-200", first);
            first += 200;
        }
        let mut agents = Vec::new();
        for i in 0..3u32 {
            let id = Uuid::new_v4();
            let offer = Offer { cpus: 4 + i, ram_mb: 4096, gpus: (0..i + 1).collect(), ..Offer::default() };
            core.agent_registered(id, 6, 0, offer.clone(), true, &[]);
            agents.push((id, offer));
        }
        let mut rng = fastrand_like(seed);
        let mut running: Vec<(Uuid, TaskRef, i64, Vec<u32>)> = Vec::new();
        for _ in 0..400 {
            running.extend(assigned(&core.take_effects()));
            for (id, offer) in &agents {
                let mine: Vec<_> = running.iter().filter(|r| r.0 == *id).collect();
                let mut held = HashSet::new();
                let (mut cpus, mut ram) = (0u32, 0u64);
                for (_, _, job, gpus) in &mine {
                    let (c, r, _) = jobs[(*job - 1) as usize];
                    cpus += c;
                    ram += r;
                    for g in gpus {
                        prop_assert!(held.insert(*g), "gpu {g} given twice on one agent");
                        prop_assert!(offer.gpus.contains(g));
                    }
                }
                prop_assert!(cpus <= offer.cpus && ram <= offer.ram_mb);
                prop_assert!(mine.len() <= 6);
            }
            if running.is_empty() {
                break;
            }
            let pick = (rng() % running.len() as u64) as usize;
            let (agent, task, _, _) = running.swap_remove(pick);
            core.task_finished(agent, &finished(task, 0));
        }
    }
}

#[test]
fn tags_and_software_choose_the_agents() {
    let mut core = Core::new();
    let requirements = Requirements {
        tags: vec!["linux".into(), "!laptop".into()],
        software: [("blender".to_string(), ">=3.0, <5".to_string())].into(),
        ..Requirements::default()
    };
    add_job(&mut core, needing(1, requirements), "1-10", 1);
    let laptop = Uuid::new_v4();
    let old = Uuid::new_v4();
    let good = Uuid::new_v4();
    let offer = |tags: &[&str], blender: &str| Offer {
        cpus: 8,
        ram_mb: 8192,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        software: [("blender".to_string(), blender.to_string())].into(),
        ..Offer::default()
    };
    core.agent_registered(laptop, 4, 0, offer(&["linux", "laptop"], "4.2"), true, &[]);
    core.agent_registered(old, 4, 0, offer(&["linux"], "2.93"), true, &[]);
    assert!(assigned(&core.take_effects()).is_empty());
    let why = core.why(1).unwrap();
    assert!(why.never, "{:?}", why.reasons);
    assert!(
        why.reasons
            .contains(&"tag !laptop excludes 1 of 2 agents".to_string()),
        "{:?}",
        why.reasons
    );
    core.agent_registered(good, 4, 0, offer(&["linux"], "4.2.1"), true, &[]);
    let got = assigned(&core.take_effects());
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(a, ..)| *a == good));
}

#[test]
fn gpu_tasks_get_distinct_devices_and_why_names_the_largest() {
    let mut core = Core::new();
    add_job(
        &mut core,
        needing(
            1,
            Requirements {
                gpus: 2,
                ..Requirements::default()
            },
        ),
        "1-3",
        1,
    );
    let small = Uuid::new_v4();
    core.agent_registered(
        small,
        4,
        0,
        Offer {
            cpus: 8,
            ram_mb: 1024,
            gpus: vec![0],
            ..Offer::default()
        },
        true,
        &[],
    );
    let why = core.why(1).unwrap();
    assert!(why.never);
    assert!(
        why.reasons
            .contains(&"no agent has 2 GPUs (largest: 1)".to_string())
    );
    let big = Uuid::new_v4();
    core.agent_registered(
        big,
        4,
        0,
        Offer {
            cpus: 8,
            ram_mb: 1024,
            gpus: vec![0, 1, 2, 3, 4],
            ..Offer::default()
        },
        true,
        &[],
    );
    let got = assigned(&core.take_effects());
    assert_eq!(got.len(), 2, "five GPUs hold two tasks of two");
    assert_eq!(got[0].3, vec![0, 1]);
    assert_eq!(got[1].3, vec![2, 3]);
    let why = core.why(1).unwrap();
    assert!(!why.never);
    assert!(
        why.reasons
            .contains(&"all 1 matching agents are busy".to_string()),
        "{:?}",
        why.reasons
    );
    core.task_finished(big, &finished(got[0].1, 0));
    let next = assigned(&core.take_effects());
    assert_eq!(next[0].3, vec![0, 1], "the freed devices are given again");
}

#[test]
fn a_job_waits_for_its_parent_and_fails_with_it() {
    let mut core = Core::new();
    add_job(&mut core, spec(1, 0, 0), "1-2", 1);
    let mut child = spec(2, 10, 0);
    child.settings.depends_on = vec![1];
    add_job(&mut core, child, "1-2", 10);
    assert_eq!(core.job_counts(2).unwrap().blocked, 2);
    let a = Uuid::new_v4();
    register(&mut core, a, 4, &[]);
    let first = assigned(&core.take_effects());
    assert!(
        first.iter().all(|(_, _, job, _)| *job == 1),
        "the child waits despite its priority"
    );
    let why = core.why(2).unwrap();
    assert_eq!(why.reasons, vec!["waits for job 1 (0/2 done)".to_string()]);
    for (agent, task, ..) in &first {
        core.task_finished(*agent, &finished(*task, 0));
    }
    let second = assigned(&core.take_effects());
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|(_, _, job, _)| *job == 2));

    // A parent that fails fails the jobs waiting for it, with a reason.
    add_job(&mut core, spec(3, 0, 0), "1", 20);
    let mut orphan = spec(4, 0, 0);
    orphan.settings.depends_on = vec![3];
    add_job(&mut core, orphan, "1-3", 30);
    let (_, task, ..) = assigned(&core.take_effects())
        .into_iter()
        .find(|(_, _, job, _)| *job == 3)
        .unwrap();
    core.task_finished(a, &finished(task, 1));
    assert_eq!(core.job_counts(4), None, "the dependent job ended");
    let (tasks, jobs) = commit(&mut core);
    let last: HashMap<i64, &crate::store::records::TaskRow> = tasks
        .iter()
        .filter(|t| t.id >= 30)
        .map(|t| (t.id, t))
        .collect();
    let failed: Vec<_> = last.values().collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|t| t.state == WorkState::Failed
        && t.last_error.as_deref() == Some("depends on job 3, which failed")));
    assert!(jobs.iter().any(|j| j.id == 4 && j.finished_at.is_some()));
}

#[test]
fn a_parent_that_ended_before_the_submission_counts_as_it_ended() {
    let mut core = Core::new();
    let mut child = spec(5, 0, 0);
    child.settings.depends_on = vec![1, 2];
    let set: FrameSet = "1".parse().unwrap();
    let batches: Vec<_> = set.batches(1).collect();
    core.add_job(
        child,
        1,
        &batches,
        &[
            (1, ParentState::Ended(WorkState::Done)),
            (2, ParentState::Ended(WorkState::Cancelled)),
        ],
    );
    assert_eq!(core.job_counts(5), None);
    let (tasks, _) = commit(&mut core);
    assert_eq!(
        tasks[0].last_error.as_deref(),
        Some("depends on job 2, which was cancelled")
    );
}

#[test]
fn frame_n_waits_only_for_frame_n_of_its_parent() {
    let mut core = Core::new();
    add_job(&mut core, spec(1, 0, 0), "1-3", 1);
    let mut comp = spec(2, 100, 0);
    comp.settings.depends_on = vec![1];
    comp.settings.depends_per_frame = true;
    add_job(&mut core, comp, "1-3", 10);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let render1 = assigned(&core.take_effects())[0].1;
    assert_eq!(render1.task_id, 1);
    core.task_finished(a, &finished(render1, 0));
    // Frame 1 of the comp is released at once and outranks the render by priority.
    let next = assigned(&core.take_effects());
    assert_eq!((next[0].1.task_id, next[0].2), (10, 2));
    assert_eq!(core.job_counts(2).unwrap().blocked, 2);
}

#[test]
fn pause_resume_cancel_and_rerun() {
    let mut core = Core::new();
    add_job(&mut core, spec(1, 0, 0), "1-6", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 2, &[]);
    let running = assigned(&core.take_effects());
    assert_eq!(running.len(), 2);

    core.job_action(1, JobAction::Pause, false).unwrap();
    assert_eq!(core.job_counts(1).unwrap().paused, 4);
    assert!(matches!(
        core.job_action(1, JobAction::Pause, false),
        Err(Refusal::Conflict(_))
    ));
    // Running tasks finish; nothing new starts while paused.
    core.task_finished(a, &finished(running[0].1, 0));
    assert!(assigned(&core.take_effects()).is_empty());
    assert!(core.why(1).unwrap().reasons[0].starts_with("paused"));

    core.job_action(1, JobAction::Resume, false).unwrap();
    let resumed = assigned(&core.take_effects());
    assert_eq!(resumed.len(), 1, "one slot was free");

    // Pause with kill: running tasks stop and wait again without a failure.
    core.job_action(1, JobAction::Pause, true).unwrap();
    let stopped = cancels(&core.take_effects());
    assert_eq!(stopped.len(), 2);
    for task in &stopped {
        let mut ended = finished(*task, -1);
        ended.exit_code = None;
        ended.error = Some("cancelled".into());
        core.task_finished(a, &ended);
    }
    let c = core.job_counts(1).unwrap();
    assert_eq!((c.paused, c.running, c.done, c.failed), (5, 0, 1, 0));

    // Cancel ends the job cancelled.
    core.job_action(1, JobAction::Cancel, false).unwrap();
    assert_eq!(core.job_counts(1), None);
    assert_eq!(
        core.job_action(1, JobAction::Cancel, false),
        Err(Refusal::NotLoaded),
        "a finished job is no longer the scheduler's"
    );
}

#[test]
fn rerun_failed_and_one_task() {
    let mut core = Core::new();
    add_job(&mut core, spec(1, 0, 0), "1-3", 1);
    let a = Uuid::new_v4();
    register(&mut core, a, 1, &[]);
    let t1 = assigned(&core.take_effects())[0].1;
    core.task_finished(a, &finished(t1, 3));
    let t2 = assigned(&core.take_effects())[0].1;
    core.task_finished(a, &finished(t2, 0));
    let t3 = assigned(&core.take_effects())[0].1;
    assert_eq!((t1.task_id, t2.task_id, t3.task_id), (1, 2, 3));
    assert!(
        matches!(
            core.task_action(1, 2, TaskAction::Cancel),
            Err(Refusal::Conflict(_))
        ),
        "a done task cannot be cancelled"
    );
    // Cancelling a running task stops it; it ends cancelled whatever it reports.
    core.task_action(1, 3, TaskAction::Cancel).unwrap();
    assert_eq!(cancels(&core.take_effects()), vec![t3]);
    core.task_finished(a, &finished(t3, 0));
    let c = core.job_counts(1);
    assert_eq!(c, None, "every task has ended: the job is over");

    // A finished job comes back to rerun its failed and cancelled tasks.
    core.revive(super::Revived {
        spec: spec(1, 0, 0),
        first_task_id: 1,
        tasks: vec![
            (t1_frames(1), WorkState::Failed, 1),
            (t1_frames(2), WorkState::Done, 1),
            (t1_frames(3), WorkState::Cancelled, 1),
        ],
    });
    core.job_action(1, JobAction::RerunFailed, false).unwrap();
    let again = assigned(&core.take_effects());
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].1,
        TaskRef {
            task_id: 1,
            attempt: 2
        },
        "a new attempt"
    );
    let c = core.job_counts(1).unwrap();
    assert_eq!(
        (c.failed, c.cancelled, c.done, c.queued, c.running),
        (0, 0, 1, 1, 1)
    );
    assert!(matches!(
        core.job_action(1, JobAction::RerunFailed, false),
        Err(Refusal::Conflict(_))
    ));
    assert!(matches!(
        core.task_action(1, 99, TaskAction::Rerun),
        Err(Refusal::NotFound(_))
    ));
}

fn t1_frames(frame: i64) -> furrow_protocol::FrameBatch {
    furrow_protocol::FrameBatch {
        start: frame,
        end: frame,
        step: 1,
    }
}

#[test]
fn an_agent_that_fails_a_job_too_often_gets_no_more_of_it() {
    let mut core = Core::new();
    let mut flaky = spec(1, 0, 10);
    flaky.settings.blocklist_after = 2;
    add_job(&mut core, flaky, "1-5", 1);
    let bad = Uuid::new_v4();
    register(&mut core, bad, 1, &[]);
    for _ in 0..2 {
        let task = assigned(&core.take_effects())[0].1;
        core.task_finished(bad, &finished(task, 1));
    }
    assert!(assigned(&core.take_effects()).is_empty(), "blocklisted");
    assert_eq!(core.job(1).unwrap().blocklist()[0].failures, 2);
    let why = core.why(1).unwrap();
    assert!(
        why.reasons.contains(
            &"1 matching agents are blocklisted after 2 failures of this job".to_string()
        ),
        "{:?}",
        why.reasons
    );
    let good = Uuid::new_v4();
    register(&mut core, good, 1, &[]);
    assert_eq!(assigned(&core.take_effects())[0].0, good);
    core.job_action(1, JobAction::ClearBlocklist, false)
        .unwrap();
    assert!(core.job(1).unwrap().blocklist().is_empty());
}

#[test]
fn max_agents_and_disabled_agents_hold_work_back() {
    let mut core = Core::new();
    let mut limited = spec(1, 0, 0);
    limited.settings.max_agents = Some(1);
    add_job(&mut core, limited, "1-10", 1);
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    register(&mut core, a, 2, &[]);
    register(&mut core, b, 2, &[]);
    let got = assigned(&core.take_effects());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(agent, ..)| *agent == got[0].0));
    assert!(
        core.why(1)
            .unwrap()
            .reasons
            .contains(&"max_agents 1 reached".to_string())
    );
    let busy = got[0].0;
    core.agent_configured(busy, false, None);
    core.task_finished(busy, &finished(got[0].1, 0));
    let moved = assigned(&core.take_effects());
    assert!(
        moved.iter().all(|(agent, ..)| *agent != busy),
        "a disabled agent gets nothing"
    );
}

#[test]
fn a_task_killed_for_memory_runs_again_with_more_up_to_the_largest_agent() {
    let mut core = Core::new();
    add_job(
        &mut core,
        needing(
            1,
            Requirements {
                ram_mb: 512,
                ..Requirements::default()
            },
        ),
        "1",
        1,
    );
    let small = Uuid::new_v4();
    let offer = |ram_mb| Offer {
        cpus: 8,
        ram_mb,
        ..Offer::default()
    };
    let big = Uuid::new_v4();
    core.agent_registered(small, 1, 0, offer(1024), true, &[]);
    core.agent_registered(big, 1, 0, offer(8192), false, &[]);
    let killed = |task: TaskRef, used_mb| TaskFinished {
        task,
        exit_code: None,
        signal: Some(9),
        error: Some(format!("used {used_mb} MiB, over its limit")),
        limit: Some(furrow_protocol::LimitHit::Memory { used_mb }),
        at: Utc::now(),
        outputs: Vec::new(),
    };
    let limit_of = |effects: &[Effect]| {
        effects.iter().find_map(|e| match e {
            Effect::Send {
                message: MasterMessage::Assign(a),
                ..
            } => Some((a.task, a.ram_mb)),
            _ => None,
        })
    };
    let (first, limit) = limit_of(&core.take_effects()).unwrap();
    assert_eq!(limit, Some(512));
    // The small agent cannot hold what the task needs next; a larger one takes it.
    core.task_finished(small, &killed(first, 900));
    assert!(
        limit_of(&core.take_effects()).is_none(),
        "1350 MiB do not fit in 1024"
    );
    assert_eq!(
        core.job_counts(1).unwrap().failed,
        0,
        "not counted as a failure"
    );
    core.agent_configured(big, true, None);
    let (second, limit) = limit_of(&core.take_effects()).unwrap();
    assert_eq!(limit, Some(1350));
    core.task_finished(big, &killed(second, 9000));
    let (third, limit) = limit_of(&core.take_effects()).unwrap();
    assert_eq!(limit, Some(8192), "at most the largest agent");
    // At the largest agent's memory the limit cannot grow: an ordinary failure.
    core.task_finished(big, &killed(third, 9000));
    assert_eq!(core.job_counts(1), None);
    let (tasks, _) = commit(&mut core);
    let last = tasks.iter().rev().find(|t| t.id == 1).unwrap();
    assert_eq!(last.state, WorkState::Failed);
    assert_eq!(last.ram_mb, 8192);
}

#[test]
fn a_waiting_job_no_agent_can_run_says_so_at_once() {
    let mut core = Core::new();
    add_job(&mut core, spec(1, 0, 0), "1", 1);
    let mut child = needing(
        2,
        Requirements {
            gpus: 1,
            ..Requirements::default()
        },
    );
    child.settings.depends_on = vec![1];
    add_job(&mut core, child, "1-2", 10);
    register(&mut core, Uuid::new_v4(), 1, &[]);
    let why = core.why(2).unwrap();
    assert!(why.never, "{:?}", why.reasons);
    assert_eq!(
        why.reasons,
        vec![
            "waits for job 1 (0/1 done)".to_string(),
            "no agent has 1 GPU (largest: 0)".to_string(),
            "no agent of 1 can run its tasks as they stand".to_string(),
        ]
    );
}

#[test]
fn minimums_come_first_then_priorities_then_queue_priority() {
    let mut core = Core::new();
    // A low-priority job with a minimum of two agents gets them before a high-priority one.
    let mut needy = spec(1, -10, 0);
    needy.settings.min_agents = 2;
    add_job(&mut core, needy, "1-10", 1);
    add_job(&mut core, spec(2, 10, 0), "1-10", 100);
    let agents: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for agent in &agents {
        register(&mut core, *agent, 1, &[]);
    }
    let got = assigned(&core.take_effects());
    let needy_agents: HashSet<Uuid> = got
        .iter()
        .filter(|(_, _, job, _)| *job == 1)
        .map(|(a, ..)| *a)
        .collect();
    assert_eq!(needy_agents.len(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|(_, _, job, _)| *job == 2).count(), 1);

    // Between sibling queues of equal job priority, the queue's priority decides.
    let mut core = Core::new();
    for (name, priority) in [("low", 0), ("high", 5)] {
        core.create_queue(&QueueSpec {
            name: name.into(),
            parent: None,
            priority,
            weight: 1,
            min_agents: 0,
            max_agents: None,
        })
        .unwrap();
    }
    add_job(&mut core, in_queue(1, "low"), "1-5", 1);
    add_job(&mut core, in_queue(2, "high"), "1-5", 100);
    register(&mut core, Uuid::new_v4(), 5, &[]);
    let got = assigned(&core.take_effects());
    assert!(got.iter().all(|(_, _, job, _)| *job == 2), "{got:?}");
}

#[test]
fn a_restart_restores_pause_blocklist_and_dependencies() {
    use super::core::restore::LoadedJob;
    use crate::store::records::LoadedTask;
    let task = |id: i64, job_id: i64, state: WorkState| LoadedTask {
        id,
        job_id,
        frames: furrow_protocol::FrameBatch {
            start: id,
            end: id,
            step: 1,
        },
        state,
        agent: None,
        attempt: 0,
        failures: 0,
        exit_code: None,
        last_error: None,
        started_at: None,
        gpus: Vec::new(),
        ram_mb: 0,
    };
    let bad = Uuid::new_v4();
    let mut blocking = spec(1, 0, 5);
    blocking.settings.blocklist_after = 2;
    let mut child = spec(2, 0, 0);
    child.settings.depends_on = vec![1];
    let mut paused = spec(3, 0, 0);
    paused.settings.queue = "lighting".into();
    let jobs = vec![
        LoadedJob {
            spec: blocking,
            control: super::Control::Active,
            failures_on: vec![(bad, 2)],
        },
        LoadedJob {
            spec: child,
            control: super::Control::Active,
            failures_on: Vec::new(),
        },
        LoadedJob {
            spec: paused,
            control: super::Control::Paused,
            failures_on: Vec::new(),
        },
    ];
    let tasks = vec![
        task(1, 1, WorkState::Queued),
        task(2, 1, WorkState::Done),
        task(10, 2, WorkState::Blocked),
        task(20, 3, WorkState::Paused),
    ];
    let lighting = super::queues::Queue {
        path: "lighting".into(),
        priority: 0,
        weight: 3,
        min_agents: 0,
        max_agents: None,
    };
    let mut core = Core::new();
    core.load(vec![lighting], jobs, tasks, &Default::default());
    assert!(core.job(1).unwrap().blocklisted(bad));
    assert_eq!(core.job_counts(1).unwrap().done, 1);
    assert_eq!(core.job_counts(2).unwrap().blocked, 1);
    assert_eq!(core.job_counts(3).unwrap().paused, 1);
    assert!(core.queues().get("lighting").is_some());
    // The blocklisted agent gets nothing; another takes the parent, then the child.
    register(&mut core, bad, 2, &[]);
    assert!(assigned(&core.take_effects()).is_empty());
    let good = Uuid::new_v4();
    register(&mut core, good, 2, &[]);
    let got = assigned(&core.take_effects());
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].2), (good, 1));
    core.task_finished(good, &finished(got[0].1, 0));
    let next = assigned(&core.take_effects());
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].2, 2, "the child runs once its parent is done");
}
