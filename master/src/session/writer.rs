//! The write side of a connection: a task that owns the socket's write half and drains a
//! bounded queue of messages into frames.
//!
//! The bound is the slow-peer policy: a peer that does not read fills its queue, and the
//! session closes the connection instead of buffering without limit.

use furrow_protocol::FrameCodec;
use futures::SinkExt;
use serde::Serialize;
use std::net::SocketAddr;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;
use tracing::{debug, warn};

/// Messages a session may queue for its peer before the peer counts as too slow.
///
/// An agent's outbox must hold what the scheduler sends it at once when a group commit
/// lands: an assignment per free slot and a `ResultStored` per result it reported (one
/// per slot-attempt), and after a registration also a cancel and an acknowledgement per
/// listed attempt that is no longer current. That is about three messages per slot, and
/// an agent has at most `registry::MAX_SLOTS` (512) slots.
pub const OUTBOX_CAPACITY: usize = 2_048;

/// Starts the writer task; returns the queue feeding it. The task ends, closing the write
/// half, when every sender is dropped or a write fails.
pub fn spawn_writer<T, W>(write: W, max_frame: usize, peer: SocketAddr) -> mpsc::Sender<T>
where
    T: Serialize + Send + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let (sender, mut receiver) = mpsc::channel::<T>(OUTBOX_CAPACITY);
    actix_rt::spawn(async move {
        let mut sink = FramedWrite::new(write, FrameCodec::<T, ()>::new(max_frame));
        while let Some(message) = receiver.recv().await {
            // Frames queued meanwhile go out with this one in a single flush.
            let mut result = sink.feed(message).await;
            while result.is_ok() {
                match receiver.try_recv() {
                    Ok(next) => result = sink.feed(next).await,
                    Err(_) => break,
                }
            }
            if result.is_ok() {
                result = sink.flush().await;
            }
            if let Err(e) = result {
                warn!(peer = %peer, error = %e, "closing connection");
                break;
            }
        }
        let mut write = sink.into_inner();
        if let Err(e) = write.shutdown().await {
            debug!(peer = %peer, error = %e, "shutting down the connection failed");
        }
    });
    sender
}
