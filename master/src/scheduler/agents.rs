//! Agents as the scheduler sees them: what each offers (slots, cpus, memory, GPUs, tags,
//! software), whether it may take work, and what its running tasks reserve. Free capacity
//! is derived from the reservations, never patched; an index of the agents that can take
//! work (online, enabled, a free slot or a free seat ahead of one; most free slots first)
//! makes finding candidates a walk over those agents only.
//!
//! An agent speaking protocol version 7 keeps as many assignments again as it has slots,
//! each waiting for a slot to free (twice as many from version 9): those are its seats
//! *ahead*. Tasks of jobs that
//! pipeline ([`super::state::Job::pipelines`]) take them, so the agent starts its next
//! task the moment one ends instead of after a round trip to the master. A task waiting
//! there reserves what a running one does.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use furrow_protocol::{Capacity, TaskId};
use uuid::Uuid;

use super::policy::requirements::{Needs, Offer};

/// What one running task holds on its agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    /// CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub ram_mb: u64,
    /// GPU indices.
    pub gpus: Vec<u32>,
}

/// One agent.
#[derive(Debug, Default)]
pub struct AgentEntry {
    /// Task slots.
    pub slots: u32,
    /// Assignments it keeps waiting for a slot, beyond its slots.
    pub ahead: u32,
    /// What it offers.
    pub offer: Offer,
    /// Connected and registered.
    pub online: bool,
    /// May get new tasks.
    pub enabled: bool,
    /// Running tasks and what they hold.
    pub tasks: HashMap<TaskId, Reservation>,
    /// Slots the agent said were busy (it refused work for want of one) with attempts the
    /// master no longer counts, such as one taken from it while it was unreachable. Given
    /// back when such an attempt ends there, or when the agent registers again.
    pub held: u32,
    /// Where the agent sits in the index, if it does.
    indexed_free: Option<Room>,
    /// Changes whenever `offer` does, so matches computed against it can be cached.
    pub generation: u64,
}

impl AgentEntry {
    /// Capacity not reserved by running tasks.
    pub fn free(&self) -> Capacity {
        let used_slots = self.used_slots();
        let used_cpus: u32 = self.tasks.values().map(|r| r.cpus).sum();
        let used_ram: u64 = self.tasks.values().map(|r| r.ram_mb).sum();
        let held: BTreeSet<u32> = self
            .tasks
            .values()
            .flat_map(|r| r.gpus.iter().copied())
            .collect();
        Capacity {
            slots: self.slots.saturating_sub(used_slots),
            cpus: self.offer.cpus.saturating_sub(used_cpus),
            ram_mb: self.offer.ram_mb.saturating_sub(used_ram),
            gpus: self
                .offer
                .gpus
                .iter()
                .copied()
                .filter(|g| !held.contains(g))
                .collect(),
        }
    }

    /// Slots taken: by running tasks (and tasks waiting for a slot), and held.
    pub fn used_slots(&self) -> u32 {
        u32::try_from(self.tasks.len())
            .unwrap_or(u32::MAX)
            .saturating_add(self.held)
    }

    /// Whether it may take new work at all.
    pub fn takes_work(&self) -> bool {
        self.online && self.enabled
    }

    /// What a task with `needs` (and `ram_mb` of memory, when it was raised above the
    /// job's after the task ran out) would reserve here now, if it fits in the free
    /// capacity; `ahead`: a seat ahead of a slot will do.
    pub fn reserve(&self, needs: &Needs, ram_mb: u64, ahead: bool) -> Option<Reservation> {
        let ram_mb = ram_mb.max(needs.ram_mb);
        let used_slots = self.used_slots();
        let seats = if ahead {
            self.slots.saturating_add(self.ahead)
        } else {
            self.slots
        };
        if used_slots >= seats {
            return None;
        }
        // Cheap sums first; the GPU list is built only for tasks that take GPUs.
        let (mut cpus, mut ram) = (0u32, 0u64);
        for r in self.tasks.values() {
            cpus = cpus.saturating_add(r.cpus);
            ram = ram.saturating_add(r.ram_mb);
        }
        if needs.cpus > self.offer.cpus.saturating_sub(cpus)
            || ram_mb > self.offer.ram_mb.saturating_sub(ram)
        {
            return None;
        }
        let gpus = if needs.gpus == 0 {
            Vec::new()
        } else {
            let free = self.free().gpus;
            if needs.gpus as usize > free.len() {
                return None;
            }
            free[..needs.gpus as usize].to_vec()
        };
        Some(Reservation {
            cpus: needs.cpus,
            ram_mb,
            gpus,
        })
    }
}

/// What an agent can take: free slots, then free seats ahead of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Room {
    slots: u32,
    ahead: u32,
}

/// Every agent known to the scheduler.
#[derive(Debug, Default)]
pub struct Agents {
    agents: HashMap<Uuid, AgentEntry>,
    /// Source of `AgentEntry::generation`.
    generations: u64,
    free: BTreeSet<(Reverse<Room>, Uuid)>,
}

impl Agents {
    /// The agents that can take work now, most free slots first; with `ahead`, also
    /// those with only seats ahead of a slot free (after the others).
    pub fn with_free_slots(&self, ahead: bool) -> Vec<Uuid> {
        self.free
            .iter()
            .take_while(|(Reverse(room), _)| ahead || room.slots > 0)
            .map(|&(_, agent)| agent)
            .collect()
    }

    /// Whether any agent can take work now.
    pub fn any_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// One agent.
    pub fn get(&self, agent: Uuid) -> Option<&AgentEntry> {
        self.agents.get(&agent)
    }

    /// Every agent.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &AgentEntry)> {
        self.agents.iter()
    }

    /// The tasks `agent` is believed to run.
    pub fn tasks_of(&self, agent: Uuid) -> Vec<TaskId> {
        let mut tasks: Vec<TaskId> = self
            .agents
            .get(&agent)
            .map(|entry| entry.tasks.keys().copied().collect())
            .unwrap_or_default();
        tasks.sort_unstable();
        tasks
    }

    /// The agent is online with these slots (and seats `ahead` of them) and this offer.
    pub fn online(&mut self, agent: Uuid, slots: u32, ahead: u32, offer: Offer, enabled: bool) {
        self.generations += 1;
        let entry = self.agents.entry(agent).or_default();
        entry.generation = self.generations;
        entry.slots = slots;
        entry.ahead = ahead;
        entry.offer = offer;
        entry.online = true;
        // A registration lists what runs there: nothing is held past it.
        entry.held = 0;
        entry.enabled = enabled;
        self.reindex(agent);
    }

    /// Changes whether the agent gets work and, when given, its tags.
    pub fn configure(&mut self, agent: Uuid, enabled: bool, tags: Option<Vec<String>>) {
        self.generations += 1;
        let entry = self.agents.entry(agent).or_default();
        entry.generation = self.generations;
        entry.enabled = enabled;
        if let Some(tags) = tags {
            entry.offer.tags = tags;
        }
        self.reindex(agent);
    }

    /// The agent is offline: it keeps its tasks but gets no new ones.
    pub fn offline(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.online = false;
        }
        self.reindex(agent);
    }

    /// Forgets the agent's tasks and connection (it keeps its settings).
    pub fn lost(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.online = false;
            entry.tasks.clear();
        }
        self.reindex(agent);
    }

    /// `task` runs on `agent` holding `reservation` (an unknown agent is added offline
    /// and enabled, as after a restart).
    pub fn assign(&mut self, agent: Uuid, task: TaskId, reservation: Reservation) {
        self.agents
            .entry(agent)
            .or_insert_with(|| AgentEntry {
                enabled: true,
                ..AgentEntry::default()
            })
            .tasks
            .insert(task, reservation);
        self.reindex(agent);
    }

    /// `task` no longer runs on `agent`.
    pub fn release(&mut self, agent: Uuid, task: TaskId) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.tasks.remove(&task);
        }
        self.reindex(agent);
    }

    /// Forgets the agent altogether.
    pub fn forget(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.remove(&agent)
            && let Some(old) = entry.indexed_free
        {
            self.free.remove(&(Reverse(old), agent));
        }
    }

    /// The agent refused work for want of a slot: hold one of its slots.
    pub fn hold_slot(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.held = (entry.held + 1).min(entry.slots.saturating_add(entry.ahead));
        }
        self.reindex(agent);
    }

    /// An attempt the master no longer counted ended on the agent: give a held slot back.
    /// Answers whether one was held.
    pub fn release_held(&mut self, agent: Uuid) -> bool {
        if let Some(entry) = self.agents.get_mut(&agent)
            && entry.held > 0
        {
            entry.held -= 1;
            self.reindex(agent);
            return true;
        }
        false
    }

    fn reindex(&mut self, agent: Uuid) {
        let Some(entry) = self.agents.get_mut(&agent) else {
            return;
        };
        if let Some(old) = entry.indexed_free.take() {
            self.free.remove(&(Reverse(old), agent));
        }
        let used = entry.used_slots();
        let seats = entry.slots.saturating_add(entry.ahead);
        if entry.takes_work() && seats > used {
            let room = Room {
                slots: entry.slots.saturating_sub(used),
                ahead: seats - used.max(entry.slots),
            };
            entry.indexed_free = Some(room);
            self.free.insert((Reverse(room), agent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation() -> Reservation {
        Reservation::default()
    }

    #[test]
    fn agents_with_free_slots_come_before_those_with_only_seats_ahead() {
        let mut agents = Agents::default();
        let (busy, idle, old) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        agents.online(busy, 2, 2, Offer::default(), true);
        agents.online(idle, 1, 1, Offer::default(), true);
        // An agent speaking an older protocol has no seats ahead.
        agents.online(old, 1, 0, Offer::default(), true);
        agents.assign(busy, 1, reservation());
        agents.assign(busy, 2, reservation());
        agents.assign(old, 3, reservation());
        assert_eq!(agents.with_free_slots(false), [idle]);
        assert_eq!(agents.with_free_slots(true), [idle, busy]);

        // A seat ahead is taken only when asked for, and never past the seats.
        let needs = Needs::default();
        let entry = agents.get(busy).unwrap();
        assert_eq!(entry.reserve(&needs, 0, false), None);
        assert!(entry.reserve(&needs, 0, true).is_some());
        agents.assign(busy, 4, reservation());
        agents.assign(busy, 5, reservation());
        assert_eq!(agents.get(busy).unwrap().reserve(&needs, 0, true), None);
        assert_eq!(agents.with_free_slots(true), [idle]);
        assert_eq!(agents.get(busy).unwrap().free().slots, 0);
    }

    #[test]
    fn a_task_waiting_ahead_reserves_what_a_running_one_does() {
        let mut agents = Agents::default();
        let agent = Uuid::new_v4();
        let offer = Offer {
            ram_mb: 8_192,
            ..Offer::default()
        };
        agents.online(agent, 2, 2, offer, true);
        let needs = Needs {
            ram_mb: 3_000,
            ..Needs::default()
        };
        for task in 1..=2 {
            let held = agents.get(agent).unwrap().reserve(&needs, 0, true).unwrap();
            agents.assign(agent, task, held);
        }
        // Both slots are busy, two seats ahead are free, but the memory is not.
        assert_eq!(agents.get(agent).unwrap().reserve(&needs, 0, true), None);
    }
}
