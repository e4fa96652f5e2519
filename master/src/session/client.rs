//! The session of one tool connection (the CLI, scripts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use furrow_protocol::{ApiError, ClientEnvelope, ClientResponse, ProtocolError, ServerEnvelope};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::{debug, warn};

use crate::service::Service;

/// A tool connection with no request for this long is closed.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One connected tool. Requests are answered one at a time, in order: the next frame is
/// read only after the previous reply is queued, so a tool cannot pile up work.
pub struct ClientSession {
    peer: SocketAddr,
    outbox: mpsc::Sender<ServerEnvelope>,
    service: Service,
    /// The hash of the token the tool presented, checked again before each request.
    token_hash: String,
    last_request: Instant,
    /// One of the master's tool connections, given back when the session ends.
    _permit: OwnedSemaphorePermit,
}

impl ClientSession {
    /// A session answering through `outbox`, holding one of the tool connection permits.
    pub fn new(
        peer: SocketAddr,
        outbox: mpsc::Sender<ServerEnvelope>,
        service: Service,
        token_hash: String,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            peer,
            outbox,
            service,
            token_hash,
            last_request: Instant::now(),
            _permit: permit,
        }
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(peer = %self.peer, "client session started");
        ctx.run_interval(Duration::from_secs(30), |act, ctx| {
            if act.last_request.elapsed() > CLIENT_IDLE_TIMEOUT {
                debug!(peer = %act.peer, "closing an idle tool connection");
                ctx.stop();
            }
        });
    }
}

impl StreamHandler<Result<ClientEnvelope, ProtocolError>> for ClientSession {
    fn handle(&mut self, item: Result<ClientEnvelope, ProtocolError>, ctx: &mut Context<Self>) {
        let envelope = match item {
            Ok(envelope) => envelope,
            // A TLS peer that goes without a close_notify has just gone away.
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                debug!(peer = %self.peer, "tool connection ended");
                ctx.stop();
                return;
            }
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "closing connection");
                ctx.stop();
                return;
            }
        };
        self.last_request = Instant::now();
        let service = self.service.clone();
        let id = envelope.id;
        let caller = service
            .auth()
            .authenticate_hash(&self.token_hash, &self.peer.ip().to_string());
        ctx.wait(
            async move {
                match caller {
                    Ok(caller) => service.handle(&caller, envelope.request).await,
                    Err(reason) => ClientResponse::Error(ApiError::unauthorized(reason)),
                }
            }
                .into_actor(self)
                .map(move |response, act, ctx| {
                    match act.outbox.try_send(ServerEnvelope { id, response }) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            warn!(peer = %act.peer, error = "the client does not read its replies", "closing connection");
                            ctx.stop();
                        }
                        Err(TrySendError::Closed(_)) => ctx.stop(),
                    }
                }),
        );
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        debug!(peer = %self.peer, "client connection closed");
        ctx.stop();
    }
}
