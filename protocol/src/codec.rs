//! Length-prefixed frames carrying bincode payloads.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload. The payload is
//! one message encoded with bincode 2 (serde, standard configuration, with a size limit).
//! The maximum frame size is enforced in both directions: a peer announcing a larger frame
//! is refused before its body is read, and this side refuses to produce one.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// Default maximum payload size of one frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Hard ceiling for any configured maximum frame size: 256 MiB.
pub const MAX_FRAME_CEILING: usize = 256 * 1024 * 1024;

/// Size of the length prefix.
const HEADER_LEN: usize = 4;

/// Frames up to this size are received without taking from a [`FrameBudget`]: what
/// they can hold is bounded by the number of connections.
pub const UNBUDGETED_FRAME: usize = 64 * 1024;

/// The bytes a process may hold at once in large frames it is still receiving, shared
/// by the codecs of all its connections. Each connection may hold a frame of up to its
/// maximum while it arrives; without a shared bound, many connections each sending all
/// but the last byte of a large frame would hold that much each. A codec takes a
/// frame's size from the budget when its header arrives and gives it back when the
/// frame is complete (or the codec is dropped); a frame the budget cannot cover is
/// refused, and its connection closed.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl FrameBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            bytes,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.bytes)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

fn config() -> impl bincode::config::Config {
    // The limit bounds what a payload may claim (a length prefix of a vector, say) so a
    // small hostile frame cannot make the decoder reserve gigabytes.
    bincode::config::standard().with_limit::<MAX_FRAME_CEILING>()
}

/// Encodes one message into its payload bytes (without the length prefix).
pub fn encode_payload<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    bincode::serde::encode_to_vec(message, config())
        .map_err(|e| ProtocolError::Encode(e.to_string()))
}

/// Decodes one message from a complete payload; trailing bytes are an error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    let (message, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(ProtocolError::Decode(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(message)
}

/// Encodes one message as a complete frame (length prefix and payload).
pub fn encode_frame<T: Serialize>(message: &T, max_frame: usize) -> Result<Vec<u8>, ProtocolError> {
    let payload = encode_payload(message)?;
    if payload.len() > max_frame {
        return Err(ProtocolError::FrameTooLarge {
            size: payload.len(),
            max: max_frame,
        });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// A `tokio_util` codec that writes `Out` messages and reads `In` messages.
///
/// ```
/// use furrow_protocol::codec::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec: FrameCodec<String, String> = FrameCodec::new(1024);
/// let mut buf = bytes::BytesMut::new();
/// codec.encode("hello".to_string(), &mut buf).unwrap();
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("hello"));
/// ```
#[derive(Debug)]
pub struct FrameCodec<Out, In> {
    max_frame: usize,
    /// The shared budget of large frames being received, if any.
    budget: Option<FrameBudget>,
    /// What this codec holds of it (the frame it is receiving).
    held: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<Out, In> Drop for FrameCodec<Out, In> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<Out, In> FrameCodec<Out, In> {
    /// A codec refusing frames whose payload exceeds `max_frame` bytes (capped at
    /// [`MAX_FRAME_CEILING`]).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.min(MAX_FRAME_CEILING),
            budget: None,
            held: 0,
            _types: PhantomData,
        }
    }

    /// Takes large frames being received from `budget` (see [`FrameBudget`]).
    pub fn with_budget(mut self, budget: FrameBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    fn release(&mut self) {
        if let Some(budget) = &self.budget
            && self.held > 0
        {
            budget.give(self.held);
        }
        self.held = 0;
    }

    /// The maximum payload size this codec accepts and produces.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl<Out, In> Default for FrameCodec<Out, In> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl<Out: Serialize, In> Encoder<Out> for FrameCodec<Out, In> {
    type Error = ProtocolError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let payload = encode_payload(&item)?;
        if payload.len() > self.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                size: payload.len(),
                max: self.max_frame,
            });
        }
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_u32(payload.len() as u32);
        dst.put_slice(&payload);
        Ok(())
    }
}

impl<Out, In: DeserializeOwned> Decoder for FrameCodec<Out, In> {
    type Item = In;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, Self::Error> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let size = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if size > self.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                size,
                max: self.max_frame,
            });
        }
        if src.len() < HEADER_LEN + size {
            if size > UNBUDGETED_FRAME
                && self.held == 0
                && let Some(budget) = &self.budget
            {
                if !budget.take(size) {
                    return Err(ProtocolError::FrameBudget {
                        size,
                        budget: budget.bytes,
                    });
                }
                self.held = size;
            }
            src.reserve(HEADER_LEN + size - src.len());
            return Ok(None);
        }
        self.release();
        src.advance(HEADER_LEN);
        let payload = src.split_to(size);
        decode_payload(&payload).map(Some)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<In>, Self::Error> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            None if buf.is_empty() => Ok(None),
            None => Err(ProtocolError::Decode(format!(
                "connection closed inside a frame ({} bytes pending)",
                buf.len()
            ))),
        }
    }
}
