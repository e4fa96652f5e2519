//! A pool of TCP ports for app instances.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Mutex;

use super::SuperviseError;

/// Ports from a configured range, handed out to instances. A port is skipped while
/// another process has it bound on 127.0.0.1 (checked by binding it), so apps outside
/// Furrow's control do not collide with ours.
#[derive(Debug)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    allocated: BTreeSet<u16>,
    /// Where the next search starts: round robin, so a freed port is not reused at once
    /// (a restarted app's old connections may still linger on it).
    next: u16,
}

impl PortPool {
    /// A pool over `range` (e.g. `20000..=20999`).
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, SuperviseError> {
        if range.is_empty() || *range.start() == 0 {
            return Err(SuperviseError::InvalidPortRange {
                start: *range.start(),
                end: *range.end(),
            });
        }
        Ok(PortPool {
            state: Mutex::new(PoolState {
                allocated: BTreeSet::new(),
                next: *range.start(),
            }),
            range,
        })
    }

    /// Takes a port that is neither allocated nor bound by anyone.
    pub fn allocate(&self) -> Result<u16, SuperviseError> {
        let mut state = self.lock();
        let (start, end) = (*self.range.start(), *self.range.end());
        let size = u32::from(end - start) + 1;
        for offset in 0..size {
            let candidate = start + ((u32::from(state.next - start) + offset) % size) as u16;
            if state.allocated.contains(&candidate) || !bindable(candidate) {
                continue;
            }
            state.allocated.insert(candidate);
            state.next = if candidate == end {
                start
            } else {
                candidate + 1
            };
            tracing::debug!(port = candidate, "port allocated");
            return Ok(candidate);
        }
        Err(SuperviseError::PortsExhausted { start, end })
    }

    /// Returns a port to the pool (a port it did not hand out is ignored).
    pub fn release(&self, port: u16) {
        self.lock().allocated.remove(&port);
    }

    /// The ports handed out, sorted.
    pub fn allocated(&self) -> Vec<u16> {
        self.lock().allocated.iter().copied().collect()
    }

    /// The configured range.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state stays consistent even if a holder panicked (single inserts/removes).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ranges() {
        assert!(PortPool::new(0..=10).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=9;
        assert!(PortPool::new(empty).is_err());
    }
}
