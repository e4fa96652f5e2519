//! Agents as the scheduler sees them: slots, running tasks, and an index of the online
//! agents with free slots (most free first), so finding a slot is a lookup, not a scan.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use furrow_protocol::TaskId;
use uuid::Uuid;

#[derive(Debug, Default)]
struct AgentSlots {
    slots: u32,
    online: bool,
    tasks: BTreeSet<TaskId>,
    /// The free-slot count under which the agent sits in `Slots::free`, if it does.
    indexed_free: Option<u32>,
}

/// Every agent known to the scheduler.
#[derive(Debug, Default)]
pub struct Slots {
    agents: HashMap<Uuid, AgentSlots>,
    free: BTreeSet<(Reverse<u32>, Uuid)>,
}

impl Slots {
    /// The online agent with the most free slots.
    pub fn best_free(&self) -> Option<Uuid> {
        self.free.first().map(|&(_, agent)| agent)
    }

    /// The tasks `agent` is believed to run.
    pub fn tasks_of(&self, agent: Uuid) -> Vec<TaskId> {
        self.agents
            .get(&agent)
            .map(|entry| entry.tasks.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The agent is online with `slots` slots.
    pub fn online(&mut self, agent: Uuid, slots: u32) {
        let entry = self.agents.entry(agent).or_default();
        entry.slots = slots;
        entry.online = true;
        self.reindex(agent);
    }

    /// The agent is offline: it keeps its tasks but gets no new ones.
    pub fn offline(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.online = false;
        }
        self.reindex(agent);
    }

    /// Forgets the agent.
    pub fn remove(&mut self, agent: Uuid) {
        if let Some(entry) = self.agents.remove(&agent)
            && let Some(old) = entry.indexed_free
        {
            self.free.remove(&(Reverse(old), agent));
        }
    }

    /// `task` runs on `agent` (an unknown agent is added offline, as after a restart).
    pub fn assign(&mut self, agent: Uuid, task: TaskId) {
        self.agents.entry(agent).or_default().tasks.insert(task);
        self.reindex(agent);
    }

    /// `task` no longer runs on `agent`.
    pub fn release(&mut self, agent: Uuid, task: TaskId) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.tasks.remove(&task);
        }
        self.reindex(agent);
    }

    fn reindex(&mut self, agent: Uuid) {
        let Some(entry) = self.agents.get_mut(&agent) else {
            return;
        };
        if let Some(old) = entry.indexed_free.take() {
            self.free.remove(&(Reverse(old), agent));
        }
        let used = u32::try_from(entry.tasks.len()).unwrap_or(u32::MAX);
        if entry.online && entry.slots > used {
            let free = entry.slots - used;
            entry.indexed_free = Some(free);
            self.free.insert((Reverse(free), agent));
        }
    }
}
