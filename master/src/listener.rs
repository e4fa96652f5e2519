//! The `Listener` actor: accepts TCP connections, runs the handshake, and starts one
//! session per connection.
//!
//! The handshake runs in its own task per connection (bounded by the protocol's handshake
//! timeout), so a peer that connects and says nothing delays no one else. A failed
//! handshake (garbage, wrong version, wrong role) closes that connection with a logged
//! reason; a version mismatch is also told to the peer by `handshake::accept`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use actix::prelude::*;
use furrow_protocol::{
    AgentMessage, ClientEnvelope, FrameCodec, Hello, MasterMessage, Role, ServerEnvelope, handshake,
};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::auth::Admission;
use crate::logs::LogSink;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::service::Service;
use crate::session::writer::spawn_writer;
use crate::session::{AgentSession, ClientSession};

/// Pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What sessions need.
#[derive(Clone)]
pub struct SessionDeps {
    /// Agent registry.
    pub registry: Addr<Registry>,
    /// Scheduler.
    pub scheduler: Addr<Scheduler>,
    /// Log collector.
    pub logs: LogSink,
    /// Deployed apps.
    pub apps: Addr<crate::apps::Apps>,
    /// Service layer for client requests.
    pub service: Service,
    /// Maximum frame size.
    pub max_frame: usize,
    /// This master's node id, sent in the handshake.
    pub node_id: Uuid,
    /// Tool connections left ([`MAX_CLIENTS`] in all).
    pub clients: Arc<Semaphore>,
    /// TLS, when the master serves it: every connection starts with its handshake.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// What all connections together may hold of large frames they are still receiving.
    pub frame_budget: furrow_protocol::FrameBudget,
}

/// The bytes all connections together may hold in large frames still arriving
/// ([`furrow_protocol::FrameBudget`]): sixteen frames of the default maximum size.
pub const FRAME_BUDGET: usize = 16 * furrow_protocol::DEFAULT_MAX_FRAME;

/// Connections allowed to be in their handshake at once. A peer that connects and says
/// nothing holds a slot for up to the handshake timeout; past this many, new connections
/// are closed at once, so such peers cannot exhaust the master's file descriptors.
pub const MAX_HANDSHAKES: usize = 512;

/// Connections one address may have in their handshake at once: a flood from one host
/// fills this, not the whole [`MAX_HANDSHAKES`], so other hosts' agents and tools still
/// get in.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 32;

/// Largest frame a tool may send: requests are small (a REST body is at most 1 MiB), and a
/// tool holding a frame half sent pins its buffer until it finishes or goes.
pub const MAX_CLIENT_FRAME: usize = 2 * 1024 * 1024;

/// Tool connections at once; more are refused at the handshake.
pub const MAX_CLIENTS: usize = 1024;

/// Connections in their handshake, per peer address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A handshake slot of one address, given back when dropped.
struct AddressSlot {
    counts: PerAddress,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Refused connections are logged at most once a second, with a count: a flood must not
/// fill the disk with one line per connection.
#[derive(Default)]
struct Refusals {
    since: Option<std::time::Instant>,
    count: u64,
    last_peer: String,
    last_reason: String,
}

impl Refusals {
    fn note(&mut self, peer: String, reason: String) {
        self.count += 1;
        self.last_peer = peer;
        self.last_reason = reason;
        let now = std::time::Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= std::time::Duration::from_secs(1))
        {
            warn!(
                refused = self.count,
                last_peer = %self.last_peer,
                error = ?self.last_reason,
                "closing connections"
            );
            self.since = Some(now);
            self.count = 0;
        }
    }
}

/// The listener actor.
pub struct Listener {
    listener: Option<TcpListener>,
    deps: SessionDeps,
    next_session: u64,
    handshakes: Arc<Semaphore>,
    per_address: PerAddress,
    refusals: Arc<Mutex<Refusals>>,
}

impl Listener {
    /// A listener accepting on `listener`.
    pub fn new(listener: TcpListener, deps: SessionDeps) -> Self {
        Self {
            listener: Some(listener),
            deps,
            next_session: 0,
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            per_address: PerAddress::default(),
            refusals: Arc::default(),
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(listener) = self.listener.take() {
            let accepted = futures::stream::unfold(listener, |listener| async move {
                let next = listener.accept().await.map(|(stream, _)| stream);
                if next.is_err() {
                    // Out of file descriptors fails every accept until some close: pause
                    // instead of spinning.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Some((next, listener))
            });
            ctx.add_stream(accepted);
        }
    }
}

impl Supervised for Listener {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("listener restarting");
    }
}

impl StreamHandler<std::io::Result<TcpStream>> for Listener {
    fn handle(&mut self, item: std::io::Result<TcpStream>, _ctx: &mut Context<Self>) {
        let stream = match item {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors and the like: this connection is lost, the
                // listener keeps going.
                warn!(error = %e, "accepting a connection failed");
                return;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            debug!("connection gone before the handshake");
            return;
        };
        let slot = {
            let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(peer.ip()).or_default();
            if *count >= MAX_HANDSHAKES_PER_ADDRESS {
                None
            } else {
                *count += 1;
                Some(AddressSlot {
                    counts: self.per_address.clone(),
                    ip: peer.ip(),
                })
            }
        };
        let refuse = move |refusals: &Mutex<Refusals>, reason: String| {
            refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .note(peer.to_string(), reason);
        };
        let Some(slot) = slot else {
            refuse(
                &self.refusals,
                "too many connections from this address in their handshake".into(),
            );
            return;
        };
        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
            refuse(
                &self.refusals,
                "too many connections in their handshake".into(),
            );
            return;
        };
        let refusals = self.refusals.clone();
        self.next_session += 1;
        let session_id = self.next_session;
        let deps = self.deps.clone();
        actix_rt::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            if let Err(e) = start_session(stream, peer, session_id, deps).await {
                refuse(&refusals, e.to_string());
            }
        });
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        warn!("the listening socket closed");
    }
}

async fn start_session(
    tcp: TcpStream,
    peer: SocketAddr,
    session_id: u64,
    deps: SessionDeps,
) -> Result<(), furrow_protocol::ProtocolError> {
    tcp.set_nodelay(true).ok();
    let mut stream: furrow_protocol::tls::Stream = match &deps.tls {
        Some(acceptor) => {
            let accepted = tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                .await
                .map_err(|_| furrow_protocol::ProtocolError::Timeout(handshake::HANDSHAKE_TIMEOUT))?
                .map_err(|e| {
                    furrow_protocol::ProtocolError::Rejected(format!("tls handshake failed: {e}"))
                })?;
            Box::new(accepted)
        }
        None => Box::new(tcp),
    };
    let ours = Hello::new(Role::Master, deps.node_id);
    let auth = deps.service.auth().clone();
    let mut admitted = None;
    let theirs = handshake::accept(&mut stream, &ours, |hello| match hello.role {
        Role::Agent => {
            // Told at the handshake, so the agent logs why; the registry checks again.
            if deps.service.agent_connected(hello.node_id) {
                return Err(format!(
                    "agent id {} is already connected; each agent needs its own state directory (a copied one repeats the id)",
                    hello.node_id
                ));
            }
            let admission = auth.admit_agent(hello.credentials.as_deref(), hello.node_id)?;
            admitted = Some(Admitted::Agent(admission));
            Ok(())
        }
        Role::Client => {
            if deps.clients.available_permits() == 0 {
                return Err(format!(
                    "the master has {MAX_CLIENTS} tool connections already; try again later"
                ));
            }
            let token = hello.credentials.as_deref().unwrap_or("");
            if token.is_empty() {
                return Err(
                    "no token: this master needs one; pass --token, set FURROW_TOKEN, or write it to ~/.config/furrow/token (a local farm's admin token is <data-dir>/admin.token)"
                        .into(),
                );
            }
            let caller = auth
                .authenticate(token, &peer.ip().to_string())
                .map_err(|e| format!("authentication failed: {e}"))?;
            debug!(peer = %peer, user = ?caller.user, "tool authenticated");
            admitted = Some(Admitted::Client(crate::auth::tokens::hash(token)));
            Ok(())
        }
        Role::Master => Err("this is a master; masters do not connect to each other".into()),
    })
    .await?;
    let (read, write) = tokio::io::split(stream);
    match admitted {
        Some(Admitted::Agent(admission)) => {
            debug!(peer = %peer, node = %theirs.node_id, "agent connected");
            let outbox = spawn_writer::<MasterMessage, _>(write, deps.max_frame, peer);
            let joined_with = match admission {
                Admission::Joined(join_id) => Some(join_id),
                Admission::Known => None,
            };
            let frames = FramedRead::new(
                read,
                FrameCodec::<MasterMessage, AgentMessage>::new(deps.max_frame)
                    .with_budget(deps.frame_budget.clone()),
            );
            AgentSession::create(move |ctx| {
                ctx.add_stream(frames);
                AgentSession::new(session_id, peer, theirs.node_id, joined_with, outbox, deps)
                    .speaking(furrow_protocol::agreed_version(&theirs))
            });
        }
        Some(Admitted::Client(token_hash)) => {
            debug!(peer = %peer, "client connected");
            let Ok(permit) = deps.clients.clone().try_acquire_owned() else {
                // The last permits went between the handshake's check and here.
                return Err(furrow_protocol::ProtocolError::Rejected(
                    "too many tool connections".into(),
                ));
            };
            let outbox = spawn_writer::<ServerEnvelope, _>(write, deps.max_frame, peer);
            let frames = FramedRead::new(
                read,
                FrameCodec::<ServerEnvelope, ClientEnvelope>::new(
                    deps.max_frame.min(MAX_CLIENT_FRAME),
                )
                .with_budget(deps.frame_budget.clone()),
            );
            ClientSession::create(move |ctx| {
                ctx.add_stream(frames);
                ClientSession::new(peer, outbox, deps.service, token_hash, permit)
            });
        }
        None => {
            return Err(furrow_protocol::ProtocolError::Rejected(
                "no role admitted".into(),
            ));
        }
    }
    Ok(())
}

/// Who a handshake let in.
enum Admitted {
    /// An agent, and how.
    Agent(Admission),
    /// A tool, with the hash of its token.
    Client(String),
}
