//! Opening a connection to the master: TCP, socket options, handshake, framing.

use std::io;
use std::time::Duration;

use furrow_protocol::handshake::{self, Hello, Role};
use furrow_protocol::tls::Stream;
use furrow_protocol::{AgentMessage, FrameCodec, MasterMessage, ProtocolError};
use nix::sys::socket::{setsockopt, sockopt};
use thiserror::Error;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::debug;
use uuid::Uuid;

/// Messages from the master.
pub(crate) type MasterReader =
    FramedRead<ReadHalf<Stream>, FrameCodec<AgentMessage, MasterMessage>>;
/// Messages to the master.
pub(crate) type MasterWriter =
    FramedWrite<WriteHalf<Stream>, FrameCodec<AgentMessage, MasterMessage>>;

/// An open, handshaken connection.
pub(crate) struct Connection {
    pub reader: MasterReader,
    pub writer: MasterWriter,
    /// The master's handshake.
    pub master: Hello,
}

/// Why a connection attempt failed.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    /// TCP failed.
    #[error("cannot connect to the master at {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// TCP did not complete in time.
    #[error("connecting to the master at {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    /// TLS failed (a certificate that does not verify, or no TLS there).
    #[error("tls with the master at {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
    /// The handshake failed.
    #[error("handshake with the master at {addr} failed: {source}")]
    Handshake { addr: String, source: ProtocolError },
}

impl ConnectError {
    /// Whether the master (or whatever listens there) refused us: a version mismatch, a
    /// rejection, or a peer not speaking the protocol. Retrying soon will not help.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ConnectError::Tls { .. }
                | ConnectError::Handshake {
                    source: ProtocolError::Rejected(_)
                        | ProtocolError::TlsRequired
                        | ProtocolError::VersionMismatch { .. }
                        | ProtocolError::BadMagic
                        | ProtocolError::UnexpectedRole(_),
                    ..
                }
        )
    }
}

/// Connects to `addr`, handshakes as agent `agent_id`, and frames the halves.
pub(crate) async fn open(
    addr: String,
    agent_id: Uuid,
    credentials: Option<String>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    max_frame: usize,
    connect_timeout: Duration,
) -> Result<Connection, ConnectError> {
    let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Connect { addr, source }),
        Err(_) => {
            return Err(ConnectError::Timeout {
                addr,
                after: connect_timeout,
            });
        }
    };
    tune_socket(&tcp);
    let mut stream: Stream = match tls {
        Some(config) => furrow_protocol::tls::connect(tcp, &addr, config)
            .await
            .map_err(|source| ConnectError::Tls {
                addr: addr.clone(),
                source,
            })?,
        None => Box::new(tcp),
    };
    let mut hello = Hello::new(Role::Agent, agent_id);
    hello.credentials = credentials;
    let master = handshake::connect(&mut stream, &hello)
        .await
        .map_err(|source| ConnectError::Handshake {
            addr: addr.clone(),
            source,
        })?;
    let (read, write) = tokio::io::split(stream);
    Ok(Connection {
        reader: FramedRead::new(read, FrameCodec::new(max_frame)),
        writer: FramedWrite::new(write, FrameCodec::new(max_frame)),
        master,
    })
}

/// No Nagle delay (messages are small and latency matters), and TCP keepalive plus a
/// user timeout so a master host that vanished (power loss, cable) is noticed within
/// about half a minute instead of the kernel's default of hours.
fn tune_socket(stream: &TcpStream) {
    let results = [
        stream.set_nodelay(true).map_err(|e| e.to_string()),
        setsockopt(stream, sockopt::KeepAlive, &true).map_err(|e| e.to_string()),
        setsockopt(stream, sockopt::TcpKeepIdle, &10).map_err(|e| e.to_string()),
        setsockopt(stream, sockopt::TcpKeepInterval, &5).map_err(|e| e.to_string()),
        setsockopt(stream, sockopt::TcpKeepCount, &3).map_err(|e| e.to_string()),
        setsockopt(stream, sockopt::TcpUserTimeout, &30_000).map_err(|e| e.to_string()),
    ];
    for error in results.into_iter().filter_map(Result::err) {
        debug!(%error, "cannot set a socket option on the master connection");
    }
}
