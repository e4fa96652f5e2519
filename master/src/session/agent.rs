//! The session of one agent connection.

use std::collections::HashSet;
use std::net::SocketAddr;

use actix::prelude::*;
use furrow_protocol::{AgentMessage, MasterMessage, ProtocolError, TaskRef};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::jobtypes::Added;
use crate::logs::LogSink;
use crate::registry::{
    CloseSession, Disconnected, HeartbeatFrom, Register, Registry, TaskOnAgent, WebServerFrom,
};
use crate::scheduler::{AgentConfigured, FromAgent, Scheduler, TaskEvent, ToAgent, Write};
use crate::service::Service;
use crate::session::in_flight::{Counted, InFlight, MAX_IN_FLIGHT, Ticket};
use crate::store::CommitBatch;
use crate::store::records::PreviewRow;

/// Most attempts an agent may list as running or awaiting acknowledgement: every slot
/// of the largest agent running one attempt with two waiting, and a few unacknowledged
/// results.
const MAX_LISTED: usize = 5 * crate::registry::MAX_SLOTS as usize + 64;
/// Longest name, hostname, tag... kept from an agent, in bytes.
const MAX_NAME: usize = 256;
/// Longest error text of a task result kept, in bytes.
const MAX_ERROR: usize = 4096;
/// Most output files kept from one task result.
const MAX_OUTPUTS: usize = 100_000;
/// Longest output path kept, in bytes.
const MAX_PATH: usize = 4096;
/// Most app instances one report may list.
const MAX_INSTANCES: usize = 1024;
/// Largest preview image accepted, in bytes.
const MAX_PREVIEW: usize = 1024 * 1024;
/// Most job-type files one agent may publish.
const MAX_PUBLISHED: usize = 100;

/// Makes text from an agent fit for the database: no NUL (PostgreSQL text columns refuse
/// it) and at most `max` bytes, cut at a character boundary.
fn clean(text: &mut String, max: usize) {
    if text.contains('\0') {
        *text = text.replace('\0', "");
    }
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
    }
}

/// One connected agent. Created by the listener after the handshake; stops when the
/// connection ends, a frame is bad, or the peer cannot keep up.
pub struct AgentSession {
    id: u64,
    peer: SocketAddr,
    outbox: mpsc::Sender<MasterMessage>,
    /// The id the handshake admitted (its credential is bound to it).
    admitted: Uuid,
    /// The join token it was admitted with, when it has no credential of its own yet.
    joined_with: Option<String>,
    agent_id: Option<Uuid>,
    registry: Addr<Registry>,
    scheduler: Addr<Scheduler>,
    logs: LogSink,
    apps: Addr<crate::apps::Apps>,
    service: Service,
    /// The agent's name, for what it reports of apps.
    name: String,
    /// The agent's operating system and tags, for its path maps.
    os: String,
    tags: Vec<String>,
    /// Declarative job types already sent on this connection.
    sent_types: HashSet<(String, u32)>,
    /// This connection's messages not yet handled by the scheduler, registry and store.
    in_flight: InFlight,
    /// The protocol version agreed with the agent at the handshake.
    version: u16,
}

impl AgentSession {
    /// A session writing through `outbox`.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        admitted: Uuid,
        joined_with: Option<String>,
        outbox: mpsc::Sender<MasterMessage>,
        deps: crate::listener::SessionDeps,
    ) -> Self {
        let crate::listener::SessionDeps {
            registry,
            scheduler,
            logs,
            apps,
            service,
            ..
        } = deps;
        Self {
            id,
            peer,
            admitted,
            joined_with,
            outbox,
            agent_id: None,
            registry,
            scheduler,
            logs,
            apps,
            service,
            name: String::new(),
            os: String::new(),
            tags: Vec::new(),
            sent_types: HashSet::new(),
            in_flight: InFlight::default(),
            version: furrow_protocol::PROTOCOL_VERSION,
        }
    }

    /// This session speaks protocol `version` (agreed at the handshake): the agent gets
    /// only messages that version has.
    pub fn speaking(mut self, version: u16) -> Self {
        self.version = version;
        self
    }

    /// A ticket for one more message to the master's actors; `None` closes the session:
    /// its agent sends faster than the master can work, and it must not bury the master
    /// under a queue (see [`crate::session::in_flight`]).
    fn ticket(&mut self, ctx: &mut Context<Self>) -> Option<Ticket> {
        let ticket = self.in_flight.ticket();
        if ticket.is_none() {
            self.close(
                &format!(
                    "the agent floods the master: {MAX_IN_FLIGHT} of its messages wait to be handled"
                ),
                ctx,
            );
        }
        ticket
    }

    /// Sends an assignment with this agent's path maps, preceded by its job type's
    /// definition when the type is declarative and not yet sent on this connection.
    fn assign(&mut self, mut assignment: furrow_protocol::Assignment, ctx: &mut Context<Self>) {
        let catalog = self.service.catalog().clone();
        assignment.path_maps = catalog.rules_for(&self.os, &self.tags);
        // Secret values travel only here, to the agent that runs the task.
        self.service
            .auth()
            .sealer()
            .reveal_env(&mut assignment.params.0);
        let key = (assignment.jobtype.clone(), assignment.jobtype_version);
        if !furrow_jobtypes::is_builtin(&key.0) && !self.sent_types.contains(&key) {
            if let Some(source) = catalog
                .get(&key.0, key.1)
                .and_then(|def| def.source.clone())
            {
                self.send(
                    MasterMessage::JobType(furrow_protocol::JobTypeDefinition {
                        name: key.0.clone(),
                        version: key.1,
                        source,
                    }),
                    ctx,
                );
            }
            self.sent_types.insert(key);
        }
        self.send(MasterMessage::Assign(assignment), ctx);
    }

    /// Stores a frame's preview image.
    fn preview(&mut self, preview: furrow_protocol::Preview, ctx: &mut Context<Self>) {
        let mime_ok = matches!(preview.mime.as_str(), "image/jpeg" | "image/png");
        if !mime_ok || preview.data.len() > MAX_PREVIEW || preview.data.is_empty() {
            warn!(peer = %self.peer, mime = preview.mime, bytes = preview.data.len(), "preview refused");
            return;
        }
        let Some(ticket) = self.ticket(ctx) else {
            return;
        };
        let batch = CommitBatch {
            writes: vec![Write::Preview(PreviewRow {
                job_id: preview.job_id,
                frame: preview.frame,
                task_id: preview.task.task_id,
                mime: preview.mime,
                width: preview.width,
                height: preview.height,
                data: preview.data,
            })],
            notify: None,
        };
        self.service.store().do_send(Counted(batch, ticket));
    }

    /// Adds the job types an agent loaded from its directory to the catalogue.
    fn publish(&mut self, sources: Vec<String>, ctx: &mut Context<Self>) {
        let catalog = self.service.catalog().clone();
        let store = self.service.store().clone();
        let agent = self.agent_id;
        let work = async move {
            for source in sources.into_iter().take(MAX_PUBLISHED) {
                match catalog.add(&store, &source).await {
                    Ok(Added::Created(view)) => {
                        info!(
                            ?agent,
                            name = view.name,
                            version = view.version,
                            "job type published by agent"
                        );
                    }
                    Ok(Added::Unchanged(_)) => {}
                    Err(e) => {
                        warn!(?agent, error = ?e.message, "job type published by agent refused");
                    }
                }
            }
        };
        ctx.spawn(work.into_actor(self));
    }

    fn send(&mut self, message: MasterMessage, ctx: &mut Context<Self>) {
        match self.outbox.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                warn!(peer = %self.peer, error = "the agent does not read its messages", "closing connection");
                ctx.stop();
            }
            Err(TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    /// Makes the agent's own credential (durable before it is sent) and sends it: the
    /// agent presents it from now on, and revoking it shuts this agent out alone.
    fn give_credential(&mut self, join_id: String, ctx: &mut Context<Self>) {
        let auth = self.service.auth().clone();
        let (agent, peer) = (self.admitted, self.peer);
        let issue = async move {
            let credential = auth.issue_agent_credential(agent, &join_id).await;
            if credential.is_ok() {
                info!(agent = %agent, peer = %peer, join_token = join_id, "agent joined");
                auth.record(
                    &crate::auth::Caller::new(
                        &format!("agent:{agent}"),
                        furrow_protocol::UserRole::Viewer,
                        &peer.ip().to_string(),
                    ),
                    "agent.join",
                    &format!("agent {agent} with join token {join_id}"),
                );
            }
            credential
        };
        ctx.spawn(issue.into_actor(self).map(|result, act, ctx| match result {
            Ok(credential) => act.send(MasterMessage::Credential(credential), ctx),
            Err(e) => act.close(&format!("cannot store its credential: {}", e.message), ctx),
        }));
    }

    fn close(&mut self, reason: &str, ctx: &mut Context<Self>) {
        warn!(peer = %self.peer, error = ?reason, "closing connection");
        ctx.stop();
    }

    fn register(
        &mut self,
        mut registration: furrow_protocol::Registration,
        ctx: &mut Context<Self>,
    ) {
        if registration.agent_id != self.admitted {
            self.close(
                &format!(
                    "registration names agent {}, but this connection was admitted as agent {}",
                    registration.agent_id, self.admitted
                ),
                ctx,
            );
            return;
        }
        if registration.running.len() > MAX_LISTED {
            self.close(
                &format!(
                    "registration lists {} attempts, more than the {MAX_LISTED} any agent can hold",
                    registration.running.len()
                ),
                ctx,
            );
            return;
        }
        for text in [
            &mut registration.name,
            &mut registration.hostname,
            &mut registration.os,
            &mut registration.version,
        ] {
            clean(text, MAX_NAME);
        }
        for tag in &mut registration.tags {
            clean(tag, MAX_NAME);
        }
        self.os = registration.os.clone();
        self.tags = registration.tags.clone();
        self.name = if registration.name.is_empty() {
            registration.hostname.clone()
        } else {
            registration.name.clone()
        };
        for gpu in &mut registration.gpus {
            clean(&mut gpu.name, MAX_NAME);
        }
        let ahead = if self.version >= furrow_protocol::DEEP_PIPELINE_VERSION {
            registration.slots.saturating_mul(2)
        } else if self.version >= furrow_protocol::PIPELINE_VERSION {
            registration.slots
        } else {
            0
        };
        let request = Register {
            registration,
            ahead,
            session_id: self.id,
            peer: self.peer,
            link: ctx.address().recipient(),
            close: ctx.address().recipient(),
        };
        // Waiting here holds back the agent's next frames until the registration is
        // applied, so its heartbeats and results never overtake it.
        ctx.wait(self.registry.send(request).into_actor(self).map(
            |result, act, ctx| match result {
                Ok(Ok(registered)) => {
                    act.agent_id = Some(registered.agent_id);
                    act.send(MasterMessage::Registered(registered), ctx);
                }
                Ok(Err(reason)) => act.close(&reason, ctx),
                Err(e) => act.close(&format!("registry unavailable: {e}"), ctx),
            },
        ));
    }

    /// Tells the registry a task started or ended here, so that listings of the agent's
    /// running tasks do not wait for the next heartbeat.
    fn track(&mut self, task: TaskRef, running: bool, ctx: &mut Context<Self>) {
        if let Some(agent_id) = self.agent_id
            && let Some(ticket) = self.ticket(ctx)
        {
            let message = TaskOnAgent {
                agent_id,
                session_id: self.id,
                task,
                running,
            };
            self.registry.do_send(Counted(message, ticket));
        }
    }

    fn task_event(&mut self, event: TaskEvent, ctx: &mut Context<Self>) {
        match self.agent_id {
            Some(agent_id) => {
                if let Some(ticket) = self.ticket(ctx) {
                    let message = FromAgent { agent_id, event };
                    self.scheduler.do_send(Counted(message, ticket));
                }
            }
            None => self.close("task message before registration", ctx),
        }
    }
}

impl Actor for AgentSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Only the scheduler and registry write to a session, a handful of messages per
        // task; the outbox bound handles a slow peer.
        ctx.set_mailbox_capacity(1_024);
        // A connection that handshakes as an agent but never registers would hold a
        // socket forever; it gets as long as a handshake does.
        ctx.run_later(furrow_protocol::handshake::HANDSHAKE_TIMEOUT, |act, ctx| {
            if act.agent_id.is_none() {
                act.close("no registration within the handshake timeout", ctx);
            }
        });
        debug!(peer = %self.peer, session = self.id, "agent session started");
        if let Some(join_id) = self.joined_with.take() {
            self.give_credential(join_id, ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(agent_id) = self.agent_id {
            self.registry.do_send(Disconnected {
                agent_id,
                session_id: self.id,
            });
        }
        debug!(peer = %self.peer, session = self.id, "agent session ended");
    }
}

impl StreamHandler<Result<AgentMessage, ProtocolError>> for AgentSession {
    fn handle(&mut self, item: Result<AgentMessage, ProtocolError>, ctx: &mut Context<Self>) {
        let message = match item {
            Ok(message) => message,
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "closing connection");
                ctx.stop();
                return;
            }
        };
        match message {
            AgentMessage::Register(registration) => self.register(registration, ctx),
            AgentMessage::Heartbeat(mut heartbeat) => {
                heartbeat.running.truncate(MAX_LISTED);
                match self.agent_id {
                    Some(agent_id) => {
                        if let Some(ticket) = self.ticket(ctx) {
                            let message = HeartbeatFrom {
                                agent_id,
                                session_id: self.id,
                                heartbeat,
                            };
                            self.registry.do_send(Counted(message, ticket));
                        }
                    }
                    None => self.close("heartbeat before registration", ctx),
                }
            }
            AgentMessage::TaskStarted(started) => {
                self.track(started.task, true, ctx);
                self.task_event(TaskEvent::Started(started), ctx)
            }
            AgentMessage::TaskProgress(progress) => {
                self.task_event(TaskEvent::Progress(progress), ctx)
            }
            AgentMessage::TaskFinished(mut finished) => {
                if let Some(error) = &mut finished.error {
                    clean(error, MAX_ERROR);
                }
                finished.outputs.truncate(MAX_OUTPUTS);
                for output in &mut finished.outputs {
                    clean(&mut output.path, MAX_PATH);
                }
                self.track(finished.task, false, ctx);
                self.task_event(TaskEvent::Finished(finished), ctx)
            }
            AgentMessage::TaskReturned(mut returned) => {
                clean(&mut returned.reason, MAX_ERROR);
                self.track(returned.task, false, ctx);
                self.task_event(TaskEvent::Returned(returned), ctx)
            }
            AgentMessage::Preview(preview) => match self.agent_id {
                Some(_) => self.preview(preview, ctx),
                None => self.close("preview before registration", ctx),
            },
            AgentMessage::JobTypes(sources) => match self.agent_id {
                Some(_) => self.publish(sources, ctx),
                None => self.close("job types before registration", ctx),
            },
            AgentMessage::WebServer(mut webserver) => match self.agent_id {
                Some(agent_id) => {
                    clean(&mut webserver.kind, MAX_NAME);
                    clean(&mut webserver.address, MAX_NAME);
                    self.registry.do_send(WebServerFrom {
                        agent_id,
                        session_id: self.id,
                        webserver,
                        link: ctx.address().recipient(),
                    });
                }
                None => self.close("web server before registration", ctx),
            },
            AgentMessage::FetchBundle(mut request) => match self.agent_id {
                Some(agent_id) => {
                    clean(&mut request.digest, MAX_NAME);
                    if let Some(ticket) = self.ticket(ctx) {
                        let message = crate::apps::BundleWanted { agent_id, request };
                        self.apps.do_send(Counted(message, ticket));
                    }
                }
                None => self.close("bundle request before registration", ctx),
            },
            AgentMessage::AppReport(mut report) => match self.agent_id {
                Some(agent_id) => {
                    clean(&mut report.app, MAX_NAME);
                    if let Some(message) = &mut report.message {
                        clean(message, MAX_ERROR);
                    }
                    if let Some(mount) = &mut report.mount {
                        clean(mount, MAX_PATH);
                    }
                    report.instances.truncate(MAX_INSTANCES);
                    for instance in &mut report.instances {
                        clean(&mut instance.process, MAX_NAME);
                        clean(&mut instance.state, MAX_NAME);
                        if let Some(endpoint) = &mut instance.endpoint {
                            clean(endpoint, MAX_PATH);
                        }
                        if let Some(detail) = &mut instance.detail {
                            clean(detail, MAX_ERROR);
                        }
                    }
                    if let Some(ticket) = self.ticket(ctx) {
                        let message = crate::apps::ReportFrom {
                            agent_id,
                            agent_name: self.name.clone(),
                            report,
                        };
                        self.apps.do_send(Counted(message, ticket));
                    }
                }
                None => self.close("app report before registration", ctx),
            },
            AgentMessage::AppLogs(mut batch) => match self.agent_id {
                Some(_) => {
                    clean(&mut batch.app, MAX_NAME);
                    clean(&mut batch.process, MAX_NAME);
                    if let Some(ticket) = self.ticket(ctx) {
                        let message = crate::apps::OutputFrom {
                            agent_name: self.name.clone(),
                            batch,
                        };
                        self.apps.do_send(Counted(message, ticket));
                    }
                }
                None => self.close("app output before registration", ctx),
            },
            AgentMessage::Draining => match self.agent_id {
                // Through the scheduler's mailbox like the task messages that follow, so
                // the attempts it gives back are not handed to it again.
                Some(agent_id) => {
                    info!(agent = %agent_id, "agent draining: it gets no more work");
                    if let Some(ticket) = self.ticket(ctx) {
                        let message = AgentConfigured {
                            agent_id,
                            enabled: false,
                            tags: None,
                        };
                        self.scheduler.do_send(Counted(message, ticket));
                    }
                }
                None => self.close("drain before registration", ctx),
            },
            AgentMessage::Logs(batch) => {
                // A flood of output waits for room in the collector's queue, which
                // stops reading from this socket (TCP backpressure) instead of queueing
                // lines in memory.
                let Some(agent) = self.agent_id else {
                    self.close("logs before registration", ctx);
                    return;
                };
                if let Some(queued) = self.logs.append(agent, batch) {
                    ctx.wait(fut::wrap_future(queued));
                }
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        info!(peer = %self.peer, agent = ?self.agent_id, "agent connection closed");
        ctx.stop();
    }
}

impl Handler<ToAgent> for AgentSession {
    type Result = ();

    fn handle(&mut self, msg: ToAgent, ctx: &mut Context<Self>) {
        match msg.0 {
            MasterMessage::Assign(assignment) => self.assign(assignment, ctx),
            // Version 5 says "stale" in two messages: stop it, and forget it.
            MasterMessage::Stale(task) if self.version < 6 => {
                self.send(MasterMessage::Cancel(task), ctx);
                self.send(MasterMessage::ResultStored(task), ctx);
            }
            // Only agents speaking version 8 announce a web server and get apps.
            MasterMessage::Deploy(_) | MasterMessage::Bundle(_) | MasterMessage::Undeploy(_)
                if self.version < furrow_protocol::DEPLOY_VERSION => {}
            message => self.send(message, ctx),
        }
    }
}

impl Handler<CloseSession> for AgentSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        // The registry already moved on; this session must not report a disconnect.
        self.agent_id = None;
        self.close(&msg.reason, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn clean_drops_nul_and_cuts_at_a_character_boundary() {
        let mut text = "a\0b\0c".to_string();
        clean(&mut text, 100);
        assert_eq!(text, "abc");
        let mut text = "ééé".to_string(); // two bytes per character
        clean(&mut text, 3);
        assert_eq!(text, "é");
        let mut text = "short".to_string();
        clean(&mut text, 5);
        assert_eq!(text, "short");
    }
}
