//! A bound on what one agent's connection has queued in the master's actors.
//!
//! An agent's session forwards its heartbeats, task events and previews to the
//! scheduler, the registry and the store without waiting (waiting would let one busy
//! actor hold up every frame of the connection). Each forwarded message carries a
//! ticket of its session's [`InFlight`] count, given back when the message has been
//! handled. A session whose count reaches the limit is flooding the master faster than
//! it can work, and is closed; its agent reconnects, and the master is not buried in a
//! queue it can never drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;

use crate::registry::{HeartbeatFrom, Registry, TaskOnAgent};
use crate::scheduler::{AgentConfigured, FromAgent, Scheduler};
use crate::store::{CommitBatch, Store};

/// Most messages one session may have waiting in the master's actors: every slot of
/// the largest agent with a few events each, and room for heartbeats and previews.
pub const MAX_IN_FLIGHT: usize = 8 * crate::registry::MAX_SLOTS as usize + 1_024;

/// The number of one session's messages not yet handled.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// A ticket for one more message, or `None` when the session is at its limit.
    pub fn ticket(&self) -> Option<Ticket> {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_IN_FLIGHT {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Ticket(self.0.clone()))
    }

    /// Messages not handled yet.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One message's place in its session's count; given back when dropped.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message of an agent's session with its ticket, handled like the message itself.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Counted<M>(pub M, pub Ticket);

macro_rules! handles_counted {
    ($($actor:ty: $($message:ty),*;)*) => {$($(
        impl Handler<Counted<$message>> for $actor {
            type Result = ();

            fn handle(&mut self, Counted(msg, ticket): Counted<$message>, ctx: &mut Self::Context) {
                <Self as Handler<$message>>::handle(self, msg, ctx);
                drop(ticket);
            }
        }
    )*)*};
}

handles_counted! {
    Scheduler: FromAgent, AgentConfigured;
    Registry: HeartbeatFrom, TaskOnAgent;
    Store: CommitBatch;
    crate::apps::Apps: crate::apps::ReportFrom, crate::apps::OutputFrom, crate::apps::BundleWanted;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_count_until_the_limit_and_come_back_when_dropped() {
        let in_flight = InFlight::default();
        let tickets: Vec<Ticket> = (0..MAX_IN_FLIGHT)
            .map(|_| in_flight.ticket().expect("under the limit"))
            .collect();
        assert_eq!(in_flight.count(), MAX_IN_FLIGHT);
        assert!(in_flight.ticket().is_none(), "at the limit");
        assert_eq!(in_flight.count(), MAX_IN_FLIGHT, "a refusal takes nothing");
        drop(tickets);
        assert_eq!(in_flight.count(), 0);
        assert!(in_flight.ticket().is_some());
    }
}
