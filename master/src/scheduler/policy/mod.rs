//! The dispatch policy: given an agent's free capacity, which job's task goes there next.
//!
//! - [`requirements`]: what a task needs and whether an agent offers it.
//! - [`fair_share`]: the order of jobs (minimums, priority tiers, weighted fair share down
//!   the queue tree, age).
//!
//! The core asks [`pick`] once per free slot; it walks the jobs with queued tasks and keeps
//! the first in order among those the agent can take.

pub mod fair_share;
pub mod requirements;

use std::collections::{BTreeSet, HashMap};

use furrow_protocol::JobId;
use uuid::Uuid;

use self::fair_share::{FairClock, OrderKey, Shares};
use super::agents::{AgentEntry, Reservation};
use super::queues::Queues;
use super::state::Job;

/// Why a job cannot go to an agent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Blocklisted after failures.
    Blocklisted,
    /// The agent lacks something the job requires, even idle.
    Unfit,
    /// Not enough free capacity now.
    Busy,
    /// The job runs on its `max_agents` already.
    JobFull,
    /// A queue on its path runs on its `max_agents` already.
    QueueFull(String),
}

/// Whether `job` may run a task on `agent` now, and what the task would reserve; with
/// `ahead`, a seat ahead of a slot will do for a job that pipelines.
pub fn admit(
    job: &Job,
    agent_id: Uuid,
    agent: &AgentEntry,
    shares: &Shares,
    tree: &Queues,
    ahead: bool,
) -> Result<Reservation, Skip> {
    if job.blocklisted(agent_id) {
        return Err(Skip::Blocklisted);
    }
    if !job.fits(agent_id, agent) {
        return Err(Skip::Unfit);
    }
    // A task whose memory was raised after it ran out needs an agent that large.
    let ram_mb = job.next_ram_mb();
    if ram_mb > agent.offer.ram_mb {
        return Err(Skip::Unfit);
    }
    if let Some(max) = job.spec.settings.max_agents
        && job.agents.len() >= max as usize
        && !job.agents.contains_key(&agent_id)
    {
        return Err(Skip::JobFull);
    }
    if let Some(queue) = shares.queue_full(job, agent_id, tree) {
        return Err(Skip::QueueFull(queue.to_string()));
    }
    agent
        .reserve(&job.spec.needs, ram_mb, ahead && job.pipelines())
        .ok_or(Skip::Busy)
}

/// The job whose next task should go to `agent`, with what it would reserve; with
/// `ahead`, into a seat ahead of a slot (see [`admit`]).
#[allow(clippy::too_many_arguments)]
pub fn pick(
    ready: &BTreeSet<JobId>,
    jobs: &HashMap<JobId, Job>,
    agent_id: Uuid,
    agent: &AgentEntry,
    shares: &Shares,
    tree: &Queues,
    clock: &FairClock,
    ahead: bool,
) -> Option<(JobId, Reservation)> {
    if !agent.takes_work() {
        return None;
    }
    let mut best: Option<(OrderKey, JobId, Reservation)> = None;
    for job_id in ready {
        let Some(job) = jobs.get(job_id) else {
            continue;
        };
        let Ok(reservation) = admit(job, agent_id, agent, shares, tree, ahead) else {
            continue;
        };
        let key = shares.key(job, tree, clock);
        if best.as_ref().is_none_or(|(best_key, _, _)| key < *best_key) {
            best = Some((key, *job_id, reservation));
        }
    }
    best.map(|(_, job_id, reservation)| (job_id, reservation))
}
