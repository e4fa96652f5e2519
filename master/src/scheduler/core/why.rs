//! "Why is it waiting": every reason a job's waiting tasks do not run, with numbers.

use std::collections::BTreeMap;

use furrow_protocol::{JobId, WhyView};

use super::Core;
use crate::scheduler::policy::fair_share::Shares;
use crate::scheduler::policy::requirements::Miss;
use crate::scheduler::policy::{self, Skip};
use crate::scheduler::queues;
use crate::scheduler::types::Control;

impl Core {
    /// Why the waiting tasks of an unfinished job wait; `None` when the job is not in
    /// memory (finished or unknown).
    pub fn why(&self, job_id: JobId) -> Option<WhyView> {
        let job = self.jobs.get(&job_id)?;
        let counts = job.counts();
        let waiting = counts.queued + counts.blocked + counts.paused;
        let mut reasons = Vec::new();
        let mut never = false;
        let state = crate::store::records::job_state(counts, job.control);
        if waiting == 0 {
            return Some(WhyView {
                job_id,
                state,
                waiting,
                reasons,
                never,
            });
        }
        match job.control {
            Control::Paused => reasons.push(format!("paused ({} tasks held back)", counts.paused)),
            Control::Cancelled => reasons.push("cancelled".to_string()),
            Control::Active => {}
        }
        for parent in &job.waiting_on {
            match self.jobs.get(parent) {
                Some(p) => {
                    let c = p.counts();
                    let how = if job.spec.settings.depends_per_frame {
                        " frame by frame"
                    } else {
                        ""
                    };
                    reasons.push(format!(
                        "waits for job {parent}{how} ({}/{} done)",
                        c.done,
                        c.total()
                    ));
                }
                None => reasons.push(format!("waits for job {parent}")),
            }
        }
        // Requirements no agent meets are said at once, whatever else holds the job back;
        // why matching agents are not taking its tasks only matters for queued tasks.
        let (agent_reasons, no_agent) = self.agent_reasons(job_id, counts.queued > 0);
        reasons.extend(agent_reasons);
        never = no_agent;
        if reasons.is_empty() {
            reasons.push("about to be dispatched".to_string());
        }
        Some(WhyView {
            job_id,
            state,
            waiting,
            reasons,
            never,
        })
    }

    /// Reasons found by trying the job on every agent, and whether no known agent could
    /// ever run it.
    fn agent_reasons(&self, job_id: JobId, queued: bool) -> (Vec<String>, bool) {
        let mut reasons = Vec::new();
        let Some(job) = self.jobs.get(&job_id) else {
            return (reasons, false);
        };
        let needs = &job.spec.needs;
        let all: Vec<_> = self.agents.iter().collect();
        let total = all.len();
        if total == 0 {
            reasons.push("no agent has registered with the farm".to_string());
            return (reasons, true);
        }
        // Requirements, against every known agent whatever its state.
        let mut miss_counts: BTreeMap<Miss, usize> = BTreeMap::new();
        let mut fitting = 0;
        for (_, agent) in &all {
            let misses = needs.misses(&agent.offer);
            if misses.is_empty() {
                fitting += 1;
            }
            for miss in misses {
                *miss_counts.entry(miss).or_default() += 1;
            }
        }
        for (miss, excluded) in &miss_counts {
            let text = match miss {
                Miss::Cpus if *excluded == total => {
                    let largest = all.iter().map(|(_, a)| a.offer.cpus).max().unwrap_or(0);
                    format!(
                        "no agent has {} (largest: {largest})",
                        plural(needs.cpus, "cpu")
                    )
                }
                Miss::Ram if *excluded == total => {
                    let largest = all.iter().map(|(_, a)| a.offer.ram_mb).max().unwrap_or(0);
                    format!(
                        "no agent has {} MiB of memory (largest: {largest})",
                        needs.ram_mb
                    )
                }
                Miss::Gpus if *excluded == total => {
                    let largest = all
                        .iter()
                        .map(|(_, a)| a.offer.gpus.len())
                        .max()
                        .unwrap_or(0);
                    format!(
                        "no agent has {} (largest: {largest})",
                        plural(needs.gpus, "GPU")
                    )
                }
                Miss::Cpus => format!(
                    "{} exclude {excluded} of {total} agents",
                    plural(needs.cpus, "cpu")
                ),
                Miss::Ram => format!(
                    "{} MiB of memory exclude {excluded} of {total} agents",
                    needs.ram_mb
                ),
                Miss::Gpus => format!(
                    "{} exclude {excluded} of {total} agents",
                    plural(needs.gpus, "GPU")
                ),
                Miss::Tag(tag) => format!("tag {tag} is missing on {excluded} of {total} agents"),
                Miss::NotTag(tag) => format!("tag !{tag} excludes {excluded} of {total} agents"),
                Miss::Software(name) => {
                    let range = needs
                        .software
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_default();
                    format!("software {name} {range} excludes {excluded} of {total} agents")
                }
            };
            reasons.push(text);
        }
        if fitting == 0 {
            reasons.push(format!(
                "no agent of {total} can run its tasks as they stand"
            ));
            return (reasons, true);
        }
        if !queued {
            return (reasons, false);
        }
        // The agents that fit: why none of them takes a task now.
        let shares = Shares::build(self.jobs.values(), &self.queues);
        let mut offline = 0;
        let mut disabled = 0;
        let mut blocklisted = 0;
        let mut busy = 0;
        let mut job_full = 0;
        let mut queue_full: BTreeMap<String, usize> = BTreeMap::new();
        let mut free = 0;
        for (id, agent) in &all {
            if !needs.fits(&agent.offer) {
                continue;
            }
            if !agent.online {
                offline += 1;
                continue;
            }
            if !agent.enabled {
                disabled += 1;
                continue;
            }
            match policy::admit(job, **id, agent, &shares, &self.queues, true) {
                Err(Skip::Blocklisted) => blocklisted += 1,
                Err(Skip::Busy) => busy += 1,
                Err(Skip::JobFull) => job_full += 1,
                Err(Skip::QueueFull(q)) => *queue_full.entry(q).or_default() += 1,
                Err(Skip::Unfit) => {}
                Ok(_) => free += 1,
            }
        }
        if offline > 0 {
            reasons.push(format!(
                "{offline} of {fitting} matching agents are offline"
            ));
        }
        if disabled > 0 {
            reasons.push(format!(
                "{disabled} of {fitting} matching agents are disabled"
            ));
        }
        if blocklisted > 0 {
            reasons.push(format!(
                "{blocklisted} matching agents are blocklisted after {} failures of this job",
                job.spec.settings.blocklist_after
            ));
        }
        if job_full > 0
            && let Some(max) = job.spec.settings.max_agents
        {
            reasons.push(format!("max_agents {max} reached"));
        }
        for queue in queue_full.keys() {
            let max = self
                .queues
                .get(queue)
                .and_then(|q| q.max_agents)
                .unwrap_or(0);
            reasons.push(format!(
                "queue {} is at its max_agents {max}",
                queues::display(queue)
            ));
        }
        if busy > 0 && free == 0 {
            let running_total = shares.running("");
            let queue = &job.spec.settings.queue;
            if !queue.is_empty() && running_total > 0 {
                reasons.push(format!(
                    "queue {} has {} of {running_total} running slots",
                    queues::display(queue),
                    shares.running(queue)
                ));
            }
            reasons.push(format!("all {busy} matching agents are busy"));
        }
        if free > 0 && job.counts().queued > 0 && job.control == Control::Active {
            reasons.push(format!(
                "{free} matching agents have room; it is next in line behind jobs ahead in priority or share"
            ));
        }
        (reasons, false)
    }
}

impl Core {
    /// Every queue with what runs and waits in it and below it.
    pub fn queue_views(&self) -> Vec<furrow_protocol::QueueView> {
        let shares = Shares::build(self.jobs.values(), &self.queues);
        let total = shares.running("");
        let mut waiting: BTreeMap<&str, u64> = BTreeMap::new();
        let mut direct: BTreeMap<&str, u64> = BTreeMap::new();
        for job in self.jobs.values() {
            *direct.entry(job.spec.settings.queue.as_str()).or_default() += 1;
            for path in queues::lineage(&job.spec.settings.queue) {
                *waiting.entry(path).or_default() += job.counts().queued;
            }
        }
        self.queues
            .iter()
            .map(|q| {
                let running = shares.running(&q.path);
                furrow_protocol::QueueView {
                    path: queues::display(&q.path),
                    name: q.path.rsplit('/').next().unwrap_or_default().to_string(),
                    parent: queues::parent(&q.path).map(queues::display),
                    priority: q.priority,
                    weight: q.weight,
                    min_agents: q.min_agents,
                    max_agents: q.max_agents,
                    running,
                    queued: waiting.get(q.path.as_str()).copied().unwrap_or(0),
                    share: if total == 0 {
                        0.0
                    } else {
                        running as f64 / total as f64
                    },
                    jobs: direct.get(q.path.as_str()).copied().unwrap_or(0),
                }
            })
            .collect()
    }
}

/// `1 GPU`, `2 GPUs`.
fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
