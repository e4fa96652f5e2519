//! Weighted fair share down the queue tree, PyFarm's rule at every level: among siblings
//! with work, the one with the smallest `(running_i / running_all) / (weight_i /
//! weight_sum)` goes first, so each sibling's share of running slots tracks its weight and
//! a sibling with nothing running always comes first. Jobs directly in a queue are
//! siblings of its child queues, with their own weights.
//!
//! [`Shares`] is built from the unfinished jobs at the start of a dispatch round and
//! updated as the round assigns, so a round costs the number of jobs times the depth of
//! the tree, not a query.

use std::cmp::{Ordering, Reverse};
use std::collections::{HashMap, HashSet};

use furrow_protocol::JobId;
use uuid::Uuid;

use crate::scheduler::queues::{self, Queues};
use crate::scheduler::state::Job;

/// A ratio compared with `total_cmp` (never NaN: the divisions guard their zeros).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio(f64);

impl Eq for Ratio {}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Where a job stands in the dispatch order; smaller goes first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    /// 0 when the job or one of its queues is below its minimum of agents.
    urgency: u8,
    /// Higher job priority first.
    priority: Reverse<i32>,
    /// Per level of the tree: the queue's priority among its siblings, then its ratio;
    /// last the job's own among the jobs and queues of its queue.
    levels: Vec<(Reverse<i32>, Ratio)>,
    /// Older first.
    job_id: JobId,
}

/// Running counts and weights of one dispatch round.
#[derive(Debug, Default)]
pub struct Shares {
    /// Running tasks in each queue's subtree.
    running: HashMap<String, u64>,
    /// Per parent queue: the weights of its children with work (queues and jobs).
    weight_sum: HashMap<String, f64>,
    /// Distinct agents running each queue's subtree.
    agents: HashMap<String, HashSet<Uuid>>,
}

fn ratio(running: u64, parent_running: u64, weight: f64, weight_sum: f64) -> Ratio {
    if parent_running == 0 || weight <= 0.0 || weight_sum <= 0.0 {
        return Ratio(running as f64);
    }
    Ratio((running as f64 / parent_running as f64) / (weight / weight_sum))
}

impl Shares {
    /// The shares of `jobs` (those with work count) in `tree`.
    pub fn build<'a>(jobs: impl Iterator<Item = &'a Job>, tree: &Queues) -> Self {
        let mut shares = Shares::default();
        let mut active: HashSet<String> = HashSet::new();
        for job in jobs {
            let counts = job.counts();
            if counts.queued == 0 && counts.running == 0 {
                continue;
            }
            *shares.weight_sum.entry(job.spec.queue.clone()).or_default() +=
                f64::from(job.spec.weight.max(1));
            for path in queues::lineage(&job.spec.queue) {
                *shares.running.entry(path.to_string()).or_default() += counts.running;
                active.insert(path.to_string());
                let agents = shares.agents.entry(path.to_string()).or_default();
                agents.extend(job.agents.keys().copied());
            }
        }
        for path in &active {
            if let Some(parent) = queues::parent(path) {
                let weight = tree.get(path).map_or(1, |q| q.weight.max(1));
                *shares.weight_sum.entry(parent.to_string()).or_default() += f64::from(weight);
            }
        }
        shares
    }

    /// Running tasks in a queue's subtree.
    pub fn running(&self, path: &str) -> u64 {
        self.running.get(path).copied().unwrap_or(0)
    }

    /// Distinct agents running a queue's subtree.
    pub fn agents(&self, path: &str) -> usize {
        self.agents.get(path).map_or(0, HashSet::len)
    }

    /// Whether `agent` already runs something of the queue's subtree.
    pub fn runs_on(&self, path: &str, agent: Uuid) -> bool {
        self.agents.get(path).is_some_and(|a| a.contains(&agent))
    }

    /// The queue on `job`'s path whose `max_agents` keeps it off `agent`, if one does.
    pub fn queue_full<'t>(&self, job: &Job, agent: Uuid, tree: &'t Queues) -> Option<&'t str> {
        queues::lineage(&job.spec.queue)
            .into_iter()
            .find_map(|path| {
                let queue = tree.get(path)?;
                let max = queue.max_agents?;
                let full = self.agents(path) >= max as usize && !self.runs_on(path, agent);
                full.then_some(queue.path.as_str())
            })
    }

    /// Where `job` stands now.
    pub fn key(&self, job: &Job, tree: &Queues) -> OrderKey {
        let lineage = queues::lineage(&job.spec.queue);
        let mut urgent = (job.agents.len() as u64) < u64::from(job.spec.min_agents);
        let mut levels = Vec::with_capacity(lineage.len());
        for pair in lineage.windows(2) {
            let (parent, path) = (pair[0], pair[1]);
            let queue = tree.get(path);
            let weight = f64::from(queue.map_or(1, |q| q.weight.max(1)));
            let priority = queue.map_or(0, |q| q.priority);
            if queue.is_some_and(|q| (self.agents(path) as u64) < u64::from(q.min_agents)) {
                urgent = true;
            }
            levels.push((
                Reverse(priority),
                ratio(
                    self.running(path),
                    self.running(parent),
                    weight,
                    self.weight_sum.get(parent).copied().unwrap_or(weight),
                ),
            ));
        }
        if tree
            .get("")
            .is_some_and(|root| (self.agents("") as u64) < u64::from(root.min_agents))
        {
            urgent = true;
        }
        let weight = f64::from(job.spec.weight.max(1));
        levels.push((
            Reverse(0),
            ratio(
                job.counts().running,
                self.running(&job.spec.queue),
                weight,
                self.weight_sum
                    .get(&job.spec.queue)
                    .copied()
                    .unwrap_or(weight),
            ),
        ));
        OrderKey {
            urgency: u8::from(!urgent),
            priority: Reverse(job.spec.priority),
            levels,
            job_id: job.spec.id,
        }
    }

    /// Records that `job` got a task on `agent` (its counts already include it).
    pub fn assigned(&mut self, queue: &str, agent: Uuid) {
        for path in queues::lineage(queue) {
            *self.running.entry(path.to_string()).or_default() += 1;
            self.agents
                .entry(path.to_string())
                .or_default()
                .insert(agent);
        }
    }
}
