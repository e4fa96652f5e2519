//! Errors of the wire layer.

use thiserror::Error;

/// Everything that can go wrong while framing, encoding, decoding or handshaking.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// A frame announced (on read) or produced (on write) more bytes than allowed.
    #[error("frame of {size} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// Size of the offending frame's payload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A large frame arrived while the frames being received on all connections already
    /// hold the process's budget (see [`crate::codec::FrameBudget`]).
    #[error(
        "a frame of {size} bytes is refused: frames being received already hold the {budget} bytes this process allows; try again"
    )]
    FrameBudget {
        /// Size of the refused frame's payload.
        size: usize,
        /// The budget.
        budget: usize,
    },
    /// The payload of a frame is not a valid message.
    #[error("malformed frame: {0}")]
    Decode(String),
    /// A message could not be encoded (should not happen for well-formed values).
    #[error("could not encode message: {0}")]
    Encode(String),
    /// The first frame was not a Furrow handshake.
    #[error("peer is not speaking the furrow protocol (bad handshake magic)")]
    BadMagic,
    /// The peer answered with TLS: it is a master that serves TLS.
    #[error(
        "the peer speaks TLS: connect with --ca FILE (its CA) or --fingerprint HEX (its certificate's, which the master logs at start)"
    )]
    TlsRequired,
    /// The two sides speak different protocol versions.
    #[error(
        "protocol version mismatch: peer speaks version {peer}, this side speaks versions {min} to {ours}; upgrade the older side",
        min = crate::handshake::MIN_PROTOCOL_VERSION
    )]
    VersionMismatch {
        /// Version announced by the peer.
        peer: u16,
        /// Version of this build.
        ours: u16,
    },
    /// The peer refused the handshake and said why.
    #[error("handshake rejected by peer: {0}")]
    Rejected(String),
    /// The peer announced a role this side does not accept.
    #[error("unexpected peer role {0:?}")]
    UnexpectedRole(crate::handshake::Role),
    /// The connection ended before a complete frame or reply arrived.
    #[error("connection closed by peer")]
    Closed,
    /// The peer did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// An I/O error on the underlying stream.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
