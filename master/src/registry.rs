//! The `Registry` actor: the live agent table.
//!
//! The table is a `DashMap` shared with the web handlers, which read it without asking
//! the actor. The actor is its only writer. It knows which session is current for each
//! agent, so a stale connection closing after the agent reconnected changes nothing.
//!
//! Agent lifecycle: a registration makes an agent online; a dropped connection makes it
//! offline (its tasks stay assigned); an offline agent that does not register again
//! within the heartbeat timeout is lost and its tasks are requeued; an online agent
//! silent for the heartbeat timeout is lost too and its session is closed. After a master
//! restart every known agent starts offline, so tasks stored as running wait one timeout
//! for their agent to come back and list them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use dashmap::DashMap;
use furrow_protocol::{
    AgentPatch, AgentState, AgentView, ApiError, Capacity, GpuInfo, Heartbeat, Registered,
    Registration, TaskRef,
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::changes::ChangeFeed;
use crate::scheduler::policy::requirements::{Offer, check_tag};
use crate::scheduler::{
    AgentConfigured, AgentDown, AgentForgotten, AgentLost, AgentUp, Scheduler, ToAgent, Write,
};
use crate::store::records::{AgentRow, AgentSettingsRow, BulkWrite, from_ms};
use crate::store::{CommitBatch, Store, UpsertAgent};

/// Most slots one agent may announce. Its assignments are queued at once in the
/// session's outbox, which must hold them (see `session::writer::OUTBOX_CAPACITY`).
pub const MAX_SLOTS: u32 = 512;

/// How often lost agents are checked for being forgotten.
const FORGET_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One agent as the registry tracks it.
#[derive(Debug, Clone)]
pub struct LiveAgent {
    /// What the API shows (its tags are the ones in effect).
    pub view: AgentView,
    /// The tags the agent announced itself.
    own_tags: Vec<String>,
    session_id: Option<u64>,
    last_heartbeat: Instant,
    offline_since: Option<Instant>,
    lost: bool,
}

impl LiveAgent {
    /// Whether the agent has a connection now.
    pub fn connected(&self) -> bool {
        self.session_id.is_some()
    }
}

/// The shared agent table.
pub type AgentTable = Arc<DashMap<Uuid, LiveAgent>>;

/// Asks a session to close, saying why.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSession {
    /// Why, for the log.
    pub reason: String,
}

/// An agent registers on a session.
#[derive(Message)]
#[rtype(result = "Result<Registered, String>")]
pub struct Register {
    /// What the agent sent.
    pub registration: Registration,
    /// Assignments the agent keeps waiting for a slot, beyond its slots: as many as its
    /// slots when it speaks protocol version 7 or later, none before.
    pub ahead: u32,
    /// The session's id.
    pub session_id: u64,
    /// Where the connection comes from.
    pub peer: std::net::SocketAddr,
    /// Messages for the agent.
    pub link: Recipient<ToAgent>,
    /// Closes the session.
    pub close: Recipient<CloseSession>,
}

/// The connection an agent id is registered on.
struct Connected {
    session_id: u64,
    peer: std::net::SocketAddr,
    close: Recipient<CloseSession>,
}

/// A heartbeat arrived on a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HeartbeatFrom {
    /// The agent.
    pub agent_id: Uuid,
    /// The session.
    pub session_id: u64,
    /// The heartbeat.
    pub heartbeat: Heartbeat,
}

/// A task attempt started (`running`) or ended on an agent, as its session saw it: keeps
/// the agent's list of running tasks current between heartbeats, which replace the list
/// with the agent's own.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TaskOnAgent {
    /// The agent.
    pub agent_id: Uuid,
    /// The session.
    pub session_id: u64,
    /// The attempt.
    pub task: TaskRef,
    /// Whether it started (else it ended).
    pub running: bool,
}

/// A session of a registered agent ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    /// The agent.
    pub agent_id: Uuid,
    /// The session.
    pub session_id: u64,
}

/// Enables or disables an agent, or sets its tags, through the API; answers once stored.
#[derive(Message)]
#[rtype(result = "Result<AgentView, ApiError>")]
pub struct EditAgent {
    /// The agent.
    pub agent_id: Uuid,
    /// The changes.
    pub patch: AgentPatch,
}

/// Forgets a lost agent (its row and settings); answers once stored.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct RemoveAgent {
    /// The agent.
    pub agent_id: Uuid,
}

/// Closes an agent's connection (its credential was revoked).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DisconnectAgent {
    /// The agent.
    pub agent_id: Uuid,
    /// Why, for the log.
    pub reason: String,
}

/// The registry actor.
pub struct Registry {
    table: AgentTable,
    /// Settings made through the API, which outlive restarts of either side.
    settings: HashMap<Uuid, AgentSettingsRow>,
    closers: HashMap<Uuid, Connected>,
    scheduler: Addr<Scheduler>,
    store: Addr<Store>,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    changes: ChangeFeed,
    /// Lost agents unseen for this long are forgotten (see
    /// [`crate::MasterConfig::forget_agents_after`]).
    forget_after: Option<Duration>,
    /// Told which agents serve apps (those that announced a web server) and how their
    /// tags change.
    apps: Option<Addr<crate::apps::Apps>>,
}

fn view_of(row: &AgentRow, settings: Option<&AgentSettingsRow>) -> AgentView {
    let own_tags = serde_json::from_str::<Vec<String>>(&row.tags).unwrap_or_default();
    AgentView {
        id: row.id,
        name: row.name.clone(),
        hostname: row.hostname.clone(),
        os: row.os.clone(),
        cpus: row.cpus,
        ram_mb: row.ram_mb,
        free_ram_mb: 0,
        gpus: serde_json::from_str::<Vec<GpuInfo>>(&row.gpus).unwrap_or_default(),
        tags: settings.and_then(|s| s.tags.clone()).unwrap_or(own_tags),
        software: serde_json::from_str(&row.software).unwrap_or_default(),
        slots: row.slots,
        version: row.version.clone(),
        state: AgentState::Offline,
        enabled: settings.is_none_or(|s| s.enabled),
        free: Capacity::default(),
        load: 0.0,
        running: Vec::new(),
        last_seen: from_ms(row.last_seen),
        webserver: None,
    }
}

fn row_of(view: &AgentView, own_tags: &[String]) -> AgentRow {
    AgentRow {
        id: view.id,
        name: view.name.clone(),
        hostname: view.hostname.clone(),
        os: view.os.clone(),
        cpus: view.cpus,
        ram_mb: view.ram_mb,
        gpus: serde_json::to_string(&view.gpus).unwrap_or_else(|_| "[]".into()),
        tags: serde_json::to_string(own_tags).unwrap_or_else(|_| "[]".into()),
        software: serde_json::to_string(&view.software).unwrap_or_else(|_| "{}".into()),
        slots: view.slots,
        version: view.version.clone(),
        last_seen: view.last_seen.timestamp_millis(),
    }
}

impl Registry {
    /// A registry knowing the agents stored in the database (all offline for now).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        known: &[AgentRow],
        settings: HashMap<Uuid, AgentSettingsRow>,
        table: AgentTable,
        scheduler: Addr<Scheduler>,
        store: Addr<Store>,
        heartbeat_interval: Duration,
        heartbeat_timeout: Duration,
        changes: ChangeFeed,
    ) -> Self {
        let now = Instant::now();
        for row in known {
            table.insert(
                row.id,
                LiveAgent {
                    view: view_of(row, settings.get(&row.id)),
                    own_tags: serde_json::from_str(&row.tags).unwrap_or_default(),
                    session_id: None,
                    last_heartbeat: now,
                    offline_since: Some(now),
                    lost: false,
                },
            );
        }
        Self {
            table,
            settings,
            closers: HashMap::new(),
            scheduler,
            store,
            heartbeat_interval,
            heartbeat_timeout,
            changes,
            forget_after: None,
            apps: None,
        }
    }

    /// Tells `apps` which agents serve apps.
    pub fn with_apps(mut self, apps: Addr<crate::apps::Apps>) -> Self {
        self.apps = Some(apps);
        self
    }

    /// Forgets lost agents unseen for `after` (never with `None`).
    pub fn forget_agents_after(mut self, after: Option<Duration>) -> Self {
        self.forget_after = after;
        self
    }

    /// Forgets the lost agents unseen for longer than `forget_after`, unless the API
    /// gave them settings: they leave the table and the dashboard, and their row the
    /// database; the attempts they ran keep naming them. One that registers again comes
    /// back (its credential still names it).
    fn forget_long_lost(&mut self) {
        let Some(after) = self.forget_after else {
            return;
        };
        let now = Utc::now();
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let forgotten: Vec<Uuid> = self
            .table
            .iter()
            .filter(|entry| {
                let agent = entry.value();
                agent.lost
                    && agent.session_id.is_none()
                    && !self.settings.contains_key(entry.key())
                    && (now - agent.view.last_seen).num_milliseconds() > after_ms
            })
            .map(|entry| *entry.key())
            .collect();
        if forgotten.is_empty() {
            return;
        }
        for agent_id in &forgotten {
            if let Some((_, agent)) = self.table.remove(agent_id) {
                info!(
                    agent = %agent_id,
                    name = ?agent.view.name,
                    last_seen = %agent.view.last_seen,
                    "agent unseen for too long; forgotten (its history stays)"
                );
            }
            self.closers.remove(agent_id);
            self.scheduler.do_send(AgentForgotten {
                agent_id: *agent_id,
            });
        }
        self.store.do_send(CommitBatch {
            writes: forgotten
                .into_iter()
                .map(|id| Write::Bulk(BulkWrite::ForgetAgent(id)))
                .collect(),
            notify: None,
        });
        self.changes.bump();
    }

    fn sweep_every(&self) -> Duration {
        (self.heartbeat_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// Declares lost the agents silent or away for longer than the timeout.
    fn sweep(&mut self) {
        let timeout = self.heartbeat_timeout;
        let mut silent = Vec::new();
        let mut away = Vec::new();
        for entry in self.table.iter() {
            let agent = entry.value();
            if agent.lost {
                continue;
            }
            match agent.offline_since {
                None if agent.last_heartbeat.elapsed() > timeout => silent.push(*entry.key()),
                Some(since) if since.elapsed() > timeout => away.push(*entry.key()),
                _ => {}
            }
        }
        for agent_id in silent {
            warn!(agent = %agent_id, timeout_ms = timeout.as_millis() as u64, "agent silent past the heartbeat timeout; declaring it lost");
            if let Some(Connected { close, .. }) = self.closers.remove(&agent_id) {
                close.do_send(CloseSession {
                    reason: "no heartbeat within the heartbeat timeout".into(),
                });
            }
            self.mark_lost(agent_id);
        }
        for agent_id in away {
            info!(agent = %agent_id, "agent did not come back within the heartbeat timeout; declaring it lost");
            self.mark_lost(agent_id);
        }
    }

    fn mark_lost(&mut self, agent_id: Uuid) {
        if let Some(mut agent) = self.table.get_mut(&agent_id) {
            agent.lost = true;
            agent.session_id = None;
            agent.offline_since.get_or_insert_with(Instant::now);
            agent.view.state = AgentState::Offline;
            agent.view.running.clear();
            self.store
                .do_send(UpsertAgent(row_of(&agent.view, &agent.own_tags)));
        }
        self.scheduler.do_send(AgentLost { agent_id });
        self.changes.bump();
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Its inflow is one heartbeat per agent per interval plus registrations, handled
        // in memory; what can be queued is proportional to the connected agents.
        // One sweep over the table per quarter timeout: its cost is the number of agents,
        // and it is what turns silence into "lost" without a timer per agent.
        ctx.run_interval(self.sweep_every(), |act, _| act.sweep());
        ctx.run_interval(FORGET_SWEEP_EVERY, |act, _| act.forget_long_lost());
    }
}

impl Supervised for Registry {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("registry restarting");
    }
}

impl Handler<Register> for Registry {
    type Result = Result<Registered, String>;

    fn handle(&mut self, msg: Register, _ctx: &mut Context<Self>) -> Self::Result {
        let reg = msg.registration;
        if reg.agent_id.is_nil() {
            return Err("registration: agent_id must not be the nil uuid".into());
        }
        if reg.slots > MAX_SLOTS {
            return Err(format!(
                "registration: slots must be at most {MAX_SLOTS}, got {}",
                reg.slots
            ));
        }
        let agent_id = reg.agent_id;
        // One connection per agent id: a second one is refused while the first is
        // connected, so two processes sharing an id cannot take each other's work (the
        // first's connection ends when its process does, or at the heartbeat timeout).
        if let Some(first) = self.closers.get(&agent_id)
            && first.session_id != msg.session_id
        {
            warn!(agent = %agent_id, peer = %msg.peer, connected = %first.peer, "refused a second connection for a connected agent id");
            return Err(format!(
                "agent id {agent_id} is already connected from {}; each agent needs its own state directory (a copied one repeats the id)",
                first.peer
            ));
        }
        self.closers.insert(
            agent_id,
            Connected {
                session_id: msg.session_id,
                peer: msg.peer,
                close: msg.close,
            },
        );
        let now = Utc::now();
        let settings = self
            .settings
            .get(&agent_id)
            .cloned()
            .unwrap_or(AgentSettingsRow {
                enabled: true,
                tags: None,
            });
        let tags = settings.tags.clone().unwrap_or_else(|| reg.tags.clone());
        let view = AgentView {
            id: agent_id,
            name: if reg.name.is_empty() {
                reg.hostname.clone()
            } else {
                reg.name.clone()
            },
            hostname: reg.hostname.clone(),
            os: reg.os.clone(),
            cpus: reg.cpus,
            ram_mb: reg.ram_mb,
            free_ram_mb: reg.ram_mb,
            gpus: reg.gpus.clone(),
            tags: tags.clone(),
            software: reg.software.clone(),
            slots: reg.slots,
            version: reg.version.clone(),
            state: AgentState::Online,
            enabled: settings.enabled,
            free: Capacity::default(),
            load: 0.0,
            running: reg.running.clone(),
            last_seen: now,
            webserver: None,
        };
        self.store.do_send(UpsertAgent(row_of(&view, &reg.tags)));
        self.table.insert(
            agent_id,
            LiveAgent {
                view,
                own_tags: reg.tags.clone(),
                session_id: Some(msg.session_id),
                last_heartbeat: Instant::now(),
                offline_since: None,
                lost: false,
            },
        );
        info!(agent = %agent_id, name = ?reg.name, slots = reg.slots, running = reg.running.len(), "agent registered");
        let offer = Offer {
            cpus: reg.cpus,
            ram_mb: reg.ram_mb,
            gpus: reg.gpus.iter().map(|g| g.index).collect(),
            tags,
            software: reg.software.clone(),
        };
        self.scheduler.do_send(AgentUp {
            agent_id,
            slots: reg.slots,
            ahead: msg.ahead,
            offer,
            enabled: settings.enabled,
            running: reg.running,
            link: msg.link,
        });
        self.changes.bump();
        Ok(Registered {
            agent_id,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
        })
    }
}

impl Handler<HeartbeatFrom> for Registry {
    type Result = ();

    fn handle(&mut self, msg: HeartbeatFrom, _ctx: &mut Context<Self>) {
        let Some(mut agent) = self.table.get_mut(&msg.agent_id) else {
            return;
        };
        if agent.session_id != Some(msg.session_id) {
            return;
        }
        agent.last_heartbeat = Instant::now();
        agent.view.last_seen = Utc::now();
        agent.view.free_ram_mb = msg.heartbeat.free_ram_mb;
        agent.view.load = if msg.heartbeat.load.is_finite() {
            msg.heartbeat.load
        } else {
            0.0
        };
        agent.view.running = msg.heartbeat.running;
        drop(agent);
        self.changes.bump();
    }
}

/// An agent announced the web server it mounts apps on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebServerFrom {
    /// The agent.
    pub agent_id: Uuid,
    /// Its session.
    pub session_id: u64,
    /// The server.
    pub webserver: furrow_protocol::WebServerView,
    /// The agent's session.
    pub link: Recipient<ToAgent>,
}

impl Handler<WebServerFrom> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WebServerFrom, _ctx: &mut Context<Self>) {
        let Some(mut agent) = self.table.get_mut(&msg.agent_id) else {
            return;
        };
        if agent.session_id != Some(msg.session_id) {
            return;
        }
        agent.view.webserver = Some(msg.webserver.clone());
        let (name, tags) = (agent.view.name.clone(), agent.view.tags.clone());
        drop(agent);
        if let Some(apps) = &self.apps {
            apps.do_send(crate::apps::AgentServes {
                agent_id: msg.agent_id,
                name,
                tags,
                webserver: msg.webserver,
                link: msg.link,
            });
        }
        self.changes.bump();
    }
}

impl Handler<TaskOnAgent> for Registry {
    type Result = ();

    fn handle(&mut self, msg: TaskOnAgent, _ctx: &mut Context<Self>) {
        let Some(mut agent) = self.table.get_mut(&msg.agent_id) else {
            return;
        };
        if agent.session_id != Some(msg.session_id) {
            return;
        }
        // An agent runs at most its slots; a peer claiming more cannot grow the list.
        let bound = (agent.view.slots as usize).max(1);
        let running = &mut agent.view.running;
        if msg.running {
            if running.len() < bound && !running.contains(&msg.task) {
                running.push(msg.task);
            }
        } else {
            running.retain(|task| *task != msg.task);
        }
        drop(agent);
        self.changes.bump();
    }
}

impl Handler<Disconnected> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, _ctx: &mut Context<Self>) {
        if self
            .closers
            .get(&msg.agent_id)
            .is_some_and(|first| first.session_id == msg.session_id)
        {
            self.closers.remove(&msg.agent_id);
        }
        let Some(mut agent) = self.table.get_mut(&msg.agent_id) else {
            return;
        };
        if agent.session_id != Some(msg.session_id) {
            return;
        }
        agent.session_id = None;
        agent.offline_since = Some(Instant::now());
        agent.view.state = AgentState::Offline;
        agent.view.last_seen = Utc::now();
        self.store
            .do_send(UpsertAgent(row_of(&agent.view, &agent.own_tags)));
        drop(agent);
        info!(agent = %msg.agent_id, "agent disconnected");
        self.scheduler.do_send(AgentDown {
            agent_id: msg.agent_id,
        });
        if let Some(apps) = &self.apps {
            apps.do_send(crate::apps::AgentLeft(msg.agent_id));
        }
        self.changes.bump();
    }
}

impl Handler<RemoveAgent> for Registry {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: RemoveAgent, _ctx: &mut Context<Self>) -> Self::Result {
        let agent_id = msg.agent_id;
        let refusal = match self.table.get(&agent_id) {
            None => Some(ApiError::not_found(format!("agent {agent_id} not found"))),
            Some(agent) if agent.session_id.is_some() => Some(ApiError::conflict(format!(
                "agent {agent_id} is connected; stop it first (or disable it)"
            ))),
            Some(agent) if !agent.lost => Some(ApiError::conflict(format!(
                "agent {agent_id} is offline but not lost yet: its tasks are waited for until the heartbeat timeout"
            ))),
            Some(_) => None,
        };
        if let Some(error) = refusal {
            return Box::pin(async move { Err(error) });
        }
        self.table.remove(&agent_id);
        self.settings.remove(&agent_id);
        self.closers.remove(&agent_id);
        self.scheduler.do_send(AgentForgotten { agent_id });
        self.changes.bump();
        info!(agent = %agent_id, "agent removed");
        let (sender, committed) = tokio::sync::oneshot::channel();
        self.store.do_send(CommitBatch {
            writes: vec![Write::Bulk(BulkWrite::DeleteAgent(agent_id))],
            notify: Some(sender.into()),
        });
        Box::pin(async move {
            committed
                .await
                .unwrap_or_else(|_| Err(ApiError::unavailable("the store stopped")))
        })
    }
}

impl Handler<DisconnectAgent> for Registry {
    type Result = ();

    fn handle(&mut self, msg: DisconnectAgent, _ctx: &mut Context<Self>) {
        if let Some(Connected { close, .. }) = self.closers.get(&msg.agent_id) {
            close.do_send(CloseSession { reason: msg.reason });
        }
    }
}

impl Handler<EditAgent> for Registry {
    type Result = ResponseFuture<Result<AgentView, ApiError>>;

    fn handle(&mut self, msg: EditAgent, _ctx: &mut Context<Self>) -> Self::Result {
        let agent_id = msg.agent_id;
        let Some(mut agent) = self.table.get_mut(&agent_id) else {
            return Box::pin(async move {
                Err(ApiError::not_found(format!("agent {agent_id} not found")))
            });
        };
        // The same rules as a job's required tags, so every tag can be asked for.
        let bad_tag = msg
            .patch
            .tags
            .iter()
            .flatten()
            .find_map(|tag| check_tag(tag, "tags").err());
        if let Some(message) = bad_tag {
            return Box::pin(async move { Err(ApiError::bad_request(message)) });
        }
        let settings = self.settings.entry(agent_id).or_insert(AgentSettingsRow {
            enabled: true,
            tags: None,
        });
        if let Some(enabled) = msg.patch.enabled {
            settings.enabled = enabled;
        }
        if let Some(tags) = msg.patch.tags.clone() {
            settings.tags = Some(tags);
        }
        agent.view.enabled = settings.enabled;
        if let Some(tags) = &settings.tags {
            agent.view.tags = tags.clone();
        }
        let view = agent.view.clone();
        drop(agent);
        if let (Some(apps), Some(_)) = (&self.apps, &msg.patch.tags) {
            apps.do_send(crate::apps::AgentTagsChanged {
                agent_id,
                tags: view.tags.clone(),
            });
        }
        info!(agent = %agent_id, enabled = settings.enabled, tags = ?settings.tags, "agent settings changed");
        let (sender, committed) = tokio::sync::oneshot::channel();
        self.store.do_send(CommitBatch {
            writes: vec![Write::Bulk(BulkWrite::AgentSettings {
                id: agent_id,
                enabled: settings.enabled,
                tags: settings.tags.clone(),
            })],
            notify: Some(sender.into()),
        });
        self.scheduler.do_send(AgentConfigured {
            agent_id,
            enabled: settings.enabled,
            tags: msg.patch.tags,
        });
        self.changes.bump();
        Box::pin(async move {
            committed
                .await
                .unwrap_or_else(|_| Err(ApiError::unavailable("the store stopped")))?;
            Ok(view)
        })
    }
}
