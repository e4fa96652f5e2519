//! A change counter that wakes dashboards when the farm's state changes.
//!
//! It is a `watch` channel: it holds one value, so a slow or absent subscriber costs no
//! memory and simply sees the newest version when it looks again (the drop policy of the
//! live dashboard feed is "keep only the latest").

use std::sync::Arc;

use tokio::sync::watch;

/// Shared change counter.
#[derive(Clone, Debug)]
pub struct ChangeFeed {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeFeed {
    /// A feed at version 0.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(0);
        Self {
            sender: Arc::new(sender),
        }
    }

    /// Announces a change.
    pub fn bump(&self) {
        self.sender
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// A receiver that sees the next change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}
