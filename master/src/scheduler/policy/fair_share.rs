//! Weighted fair share down the queue tree. Among siblings with work (child queues, and
//! the jobs directly in their parent queue), the one furthest behind its weight goes
//! first: every assignment advances the virtual clock of the job and of each queue on its
//! path by `1 / weight` (stride scheduling), and the sibling with the smallest clock is
//! next. Over any run of assignments each sibling's part thus tracks `weight_i /
//! weight_sum` (PyFarm's `(assigned_i/total)/(weight_i/sum)` held at 1), whatever the
//! number of slots: with one slot and weights 3:1, three of every four assignments go to
//! the heavier queue. A sibling that gets work after being idle starts at the clock of
//! its busiest sibling, so idleness is not saved up and a queue with work never starves
//! because another has more jobs.
//!
//! [`Shares`] (running tasks and agents per queue, for minimums, maximums and "why") is
//! built from the unfinished jobs at the start of a dispatch round and updated as the
//! round assigns, so a round costs the number of jobs times the depth of the tree, not a
//! query. [`FairClock`] lives across rounds.

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

/// Running counts of one dispatch round.
#[derive(Debug, Default)]
pub struct Shares {
    /// Running tasks in each queue's subtree.
    running: HashMap<String, u64>,
    /// Distinct agents running each queue's subtree.
    agents: HashMap<String, HashSet<Uuid>>,
}

/// The virtual clocks of the fair-share tree. See the module documentation.
#[derive(Debug, Default)]
pub struct FairClock {
    queues: HashMap<String, f64>,
    jobs: HashMap<JobId, f64>,
    /// Queues and jobs with work at the last refresh.
    active_queues: HashSet<String>,
    active_jobs: HashSet<JobId>,
}

impl FairClock {
    /// Brings the clocks up to date with which queues and jobs have work: a queue or job
    /// that just got work starts at the largest clock among its busy siblings; jobs
    /// without work are forgotten.
    pub fn refresh<'a>(&mut self, jobs: impl Iterator<Item = &'a Job>) {
        let mut active_queues: HashSet<String> = HashSet::new();
        let mut active_jobs: HashMap<JobId, &str> = HashMap::new();
        for job in jobs {
            let counts = job.counts();
            if counts.queued == 0 && counts.running == 0 {
                continue;
            }
            active_jobs.insert(job.spec.id, job.spec.settings.queue.as_str());
            for path in queues::lineage(&job.spec.settings.queue)
                .into_iter()
                .skip(1)
            {
                if !active_queues.contains(path) {
                    active_queues.insert(path.to_string());
                }
            }
        }
        // The busiest clock among the siblings under each parent that had work before.
        let mut busiest: HashMap<&str, f64> = HashMap::new();
        for path in self
            .active_queues
            .iter()
            .filter(|p| active_queues.contains(*p))
        {
            if let (Some(parent), Some(clock)) = (queues::parent(path), self.queues.get(path)) {
                let entry = busiest.entry(parent).or_insert(f64::NEG_INFINITY);
                *entry = entry.max(*clock);
            }
        }
        for (id, queue) in &active_jobs {
            if self.active_jobs.contains(id)
                && let Some(clock) = self.jobs.get(id)
            {
                let entry = busiest.entry(queue).or_insert(f64::NEG_INFINITY);
                *entry = entry.max(*clock);
            }
        }
        for path in active_queues
            .iter()
            .filter(|p| !self.active_queues.contains(*p))
        {
            let floor = queues::parent(path)
                .and_then(|parent| busiest.get(parent))
                .copied()
                .unwrap_or(f64::NEG_INFINITY);
            let clock = self.queues.entry(path.clone()).or_insert(0.0);
            if floor.is_finite() && *clock < floor {
                *clock = floor;
            }
        }
        for (id, queue) in &active_jobs {
            if self.active_jobs.contains(id) {
                continue;
            }
            let floor = busiest.get(queue).copied().unwrap_or(f64::NEG_INFINITY);
            let clock = self.jobs.entry(*id).or_insert(0.0);
            if floor.is_finite() && *clock < floor {
                *clock = floor;
            }
        }
        self.jobs.retain(|id, _| active_jobs.contains_key(id));
        self.active_jobs = active_jobs.into_keys().collect();
        self.active_queues = active_queues;
    }

    fn queue(&self, path: &str) -> Ratio {
        Ratio(self.queues.get(path).copied().unwrap_or(0.0))
    }

    fn job(&self, id: JobId) -> Ratio {
        Ratio(self.jobs.get(&id).copied().unwrap_or(0.0))
    }

    /// Advances the clocks of `job` and of every queue on its path.
    pub fn charge(&mut self, job: &Job, tree: &Queues) {
        let weight = f64::from(job.spec.settings.weight.max(1));
        *self.jobs.entry(job.spec.id).or_default() += 1.0 / weight;
        for path in queues::lineage(&job.spec.settings.queue)
            .into_iter()
            .skip(1)
        {
            let weight = f64::from(tree.get(path).map_or(1, |q| q.weight.max(1)));
            match self.queues.get_mut(path) {
                Some(clock) => *clock += 1.0 / weight,
                None => {
                    self.queues.insert(path.to_string(), 1.0 / weight);
                }
            }
        }
    }
}

impl Shares {
    /// The running counts of `jobs` (those with work count). Distinct agents are
    /// gathered only for the queues whose minimum or maximum of agents needs them, so a
    /// round does not walk every agent of every job.
    pub fn build<'a>(jobs: impl Iterator<Item = &'a Job>, tree: &Queues) -> Self {
        let limited: HashSet<&str> = tree
            .iter()
            .filter(|q| q.min_agents > 0 || q.max_agents.is_some())
            .map(|q| q.path.as_str())
            .collect();
        let mut shares = Shares::default();
        for path in &limited {
            shares.agents.insert(path.to_string(), HashSet::new());
        }
        for job in jobs {
            let counts = job.counts();
            if counts.queued == 0 && counts.running == 0 {
                continue;
            }
            for path in queues::lineage(&job.spec.settings.queue) {
                *shares.running.entry(path.to_string()).or_default() += counts.running;
                if limited.contains(path) {
                    let agents = shares.agents.entry(path.to_string()).or_default();
                    agents.extend(job.agents.keys().copied());
                }
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
        if self.agents.is_empty() {
            // No queue has a minimum or maximum of agents.
            return None;
        }
        queues::lineage(&job.spec.settings.queue)
            .into_iter()
            .find_map(|path| {
                let queue = tree.get(path)?;
                let max = queue.max_agents?;
                let full = self.agents(path) >= max as usize && !self.runs_on(path, agent);
                full.then_some(queue.path.as_str())
            })
    }

    /// Where `job` stands now.
    pub fn key(&self, job: &Job, tree: &Queues, clock: &FairClock) -> OrderKey {
        let lineage = queues::lineage(&job.spec.settings.queue);
        let mut urgent = (job.agents.len() as u64) < u64::from(job.spec.settings.min_agents);
        let mut levels = Vec::with_capacity(lineage.len());
        for path in lineage.iter().skip(1) {
            let queue = tree.get(path);
            let priority = queue.map_or(0, |q| q.priority);
            if queue.is_some_and(|q| (self.agents(path) as u64) < u64::from(q.min_agents)) {
                urgent = true;
            }
            levels.push((Reverse(priority), clock.queue(path)));
        }
        if tree
            .get("")
            .is_some_and(|root| (self.agents("") as u64) < u64::from(root.min_agents))
        {
            urgent = true;
        }
        levels.push((Reverse(0), clock.job(job.spec.id)));
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
            if let Some(agents) = self.agents.get_mut(path) {
                agents.insert(agent);
            }
        }
    }
}
