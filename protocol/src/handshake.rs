//! The first frame each way: who is talking, in which protocol version.
//!
//! The connecting side sends its [`Hello`]; the accepting side checks it and answers with
//! its own, carrying a rejection reason when it refuses. Both sides check the other's
//! magic and version, so a mismatch is reported clearly at both ends. The `Hello` layout
//! is frozen: it must stay decodable by every version.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::ProtocolError;
use crate::codec::{decode_payload, encode_frame};

/// First bytes of every handshake payload.
pub const MAGIC: [u8; 4] = *b"FRRW";

/// The newest version of the message protocol this build speaks.
///
/// - 5: the oldest still spoken.
/// - 6: [`crate::MasterMessage::Stale`].
/// - 7: an agent keeps as many assignments again as it has slots, each waiting for a
///   slot (see [`PIPELINE_VERSION`]).
/// - 8: deployed applications (see [`crate::apps`]).
/// - 9: an agent keeps twice as many assignments as it has slots waiting for a slot
///   (see [`DEEP_PIPELINE_VERSION`]).
///
/// Two peers speak the older of their newest versions (see [`agreed_version`]), so a
/// farm is upgraded one node at a time: a side speaking a newer version sends an older
/// peer only what that peer's version has. A message added later is appended to its
/// enum, which leaves the encoding of the others unchanged.
pub const PROTOCOL_VERSION: u16 = 9;

/// From this version on an agent accepts up to twice its slots in assignments: those
/// beyond its busy slots wait there, in the order they came, and each starts the moment
/// a slot frees, so a slot does not wait for a round trip to the master between tasks.
/// An older agent refuses an assignment beyond its slots.
pub const PIPELINE_VERSION: u16 = 7;

/// From this version on an agent accepts up to three times its slots in assignments:
/// twice its slots wait there. On a farm of very short tasks, the round trip that
/// refills a slot's waiting tasks (results, a group commit, the next assignments) can
/// take as long as several tasks run; one task waiting per slot left slots idle.
pub const DEEP_PIPELINE_VERSION: u16 = 9;

/// The oldest version of the message protocol this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 5;

/// The version spoken with a peer that announced `peer`: the older of the two sides'
/// newest. Each side refuses a peer when this is older than its own
/// [`MIN_PROTOCOL_VERSION`].
pub fn agreed_version(peer: &Hello) -> u16 {
    peer.version.min(PROTOCOL_VERSION)
}

/// Largest handshake frame accepted.
const MAX_HELLO: usize = 64 * 1024;

/// Time allowed for a handshake to complete.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is at an end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A worker agent.
    Agent,
    /// A tool using the client API (the CLI, scripts).
    Client,
    /// The master.
    Master,
}

/// The handshake frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Protocol version of the sender.
    pub version: u16,
    /// Role of the sender.
    pub role: Role,
    /// Stable id of the sending node.
    pub node_id: Uuid,
    /// Credentials (a token), for masters that require them.
    pub credentials: Option<String>,
    /// Software version of the sender, for diagnostics.
    pub software: String,
    /// Set by the accepting side when it refuses the connection, saying why.
    pub rejection: Option<String>,
}

impl Hello {
    /// A hello of this build for `role`.
    pub fn new(role: Role, node_id: Uuid) -> Self {
        Self {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            role,
            node_id,
            credentials: None,
            software: env!("CARGO_PKG_VERSION").to_string(),
            rejection: None,
        }
    }
}

async fn write_hello<S: AsyncWrite + Unpin>(
    stream: &mut S,
    hello: &Hello,
) -> Result<(), ProtocolError> {
    let frame = encode_frame(hello, MAX_HELLO)?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Hello, ProtocolError> {
    let mut header = [0u8; 4];
    read_exact(stream, &mut header).await?;
    // A TLS record (an alert or a handshake, version 3.x) where a hello should be: the
    // peer expects TLS.
    if matches!(header, [0x15 | 0x16, 0x03, _, _]) {
        return Err(ProtocolError::TlsRequired);
    }
    let size = u32::from_be_bytes(header) as usize;
    if size > MAX_HELLO {
        // A peer that is not speaking our protocol usually shows up here first.
        return Err(ProtocolError::BadMagic);
    }
    let mut payload = vec![0u8; size];
    read_exact(stream, &mut payload).await?;
    if !payload.starts_with(&MAGIC) {
        return Err(ProtocolError::BadMagic);
    }
    decode_payload(&payload)
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), ProtocolError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtocolError::Closed),
        Err(e) => Err(e.into()),
    }
}

fn check_peer(peer: &Hello) -> Result<(), ProtocolError> {
    if peer.magic != MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    if agreed_version(peer) < MIN_PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            peer: peer.version,
            ours: PROTOCOL_VERSION,
        });
    }
    Ok(())
}

async fn with_timeout<T>(
    fut: impl Future<Output = Result<T, ProtocolError>>,
) -> Result<T, ProtocolError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| ProtocolError::Timeout(HANDSHAKE_TIMEOUT))?
}

/// The reason sent to a peer whose hello failed [`check_peer`], worded from its side.
fn refusal_reason(error: &ProtocolError, ours: &Hello) -> String {
    match error {
        ProtocolError::VersionMismatch { peer, .. } => format!(
            "protocol version mismatch: the {} speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}, you speak version {peer}; upgrade the older side",
            format!("{:?}", ours.role).to_lowercase()
        ),
        other => other.to_string(),
    }
}

/// Runs the connecting side of the handshake and returns the master's hello.
pub async fn connect<S>(stream: &mut S, ours: &Hello) -> Result<Hello, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    with_timeout(async {
        write_hello(stream, ours).await?;
        let theirs = read_hello(stream).await?;
        check_peer(&theirs)?;
        if let Some(reason) = theirs.rejection {
            return Err(ProtocolError::Rejected(reason));
        }
        if theirs.role != Role::Master {
            return Err(ProtocolError::UnexpectedRole(theirs.role));
        }
        Ok(theirs)
    })
    .await
}

/// Runs the accepting side: reads the peer's hello, lets `admit` refuse it (returning the
/// reason), and answers with `ours` (plus the rejection, if any). Returns the peer's
/// hello when the connection is accepted.
pub async fn accept<S>(
    stream: &mut S,
    ours: &Hello,
    admit: impl FnOnce(&Hello) -> Result<(), String>,
) -> Result<Hello, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    with_timeout(async {
        let theirs = read_hello(stream).await?;
        let verdict = check_peer(&theirs)
            .map_err(|e| (refusal_reason(&e, ours), e))
            .and_then(|()| {
                admit(&theirs).map_err(|reason| (reason.clone(), ProtocolError::Rejected(reason)))
            });
        match verdict {
            Ok(()) => {
                write_hello(stream, ours).await?;
                Ok(theirs)
            }
            Err((reason, error)) => {
                let refusal = Hello {
                    rejection: Some(reason),
                    ..ours.clone()
                };
                // The peer may already be gone; the refusal is best effort.
                let _ = write_hello(stream, &refusal).await;
                Err(error)
            }
        }
    })
    .await
}
