//! The master's health: every long-lived actor is asked to answer, and the store says
//! whether the database writes. `GET /api/v1/health` and the dashboard show the result.

use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::apps::Apps;
use crate::logs::LogCollector;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreFailure, StoreStatus};

/// How long an actor may take to answer before it is reported as stuck.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Answered by an actor as soon as it handles it: it shows the actor is alive and
/// not stuck behind a long-running handler or a flooded mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

macro_rules! answers_ping {
    ($($actor:ty),*) => {$(
        impl Handler<Ping> for $actor {
            type Result = ();

            fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {
                debug_fault(stringify!($actor));
            }
        }
    )*};
}

answers_ping!(Scheduler, Registry, LogCollector, Apps);

/// Debug builds only, for the tests of what a broken actor does to the master:
/// `FURROW_DEBUG_FAULT=panic:Scheduler` makes that actor panic when asked for its
/// health, `stall:Registry` makes it block its thread for 5 s.
#[cfg(debug_assertions)]
fn debug_fault(actor: &str) {
    let Ok(fault) = std::env::var("FURROW_DEBUG_FAULT") else {
        return;
    };
    match fault.split_once(':') {
        Some(("panic", name)) if name == actor => panic!("debug fault: {actor} panics"),
        Some(("stall", name)) if name == actor => std::thread::sleep(Duration::from_secs(5)),
        _ => {}
    }
}

#[cfg(not(debug_assertions))]
fn debug_fault(_actor: &str) {}

/// The problem with actor `name`, if it does not answer a [`Ping`] in time.
pub async fn ping<A>(name: &str, addr: &Addr<A>) -> Option<String>
where
    A: Actor + Handler<Ping>,
    A::Context: ToEnvelope<A, Ping>,
{
    match tokio::time::timeout(ANSWER_WITHIN, addr.send(Ping)).await {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(format!("{name}: stopped")),
        Err(_) => Some(format!(
            "{name}: did not answer within {} s (stuck or overloaded)",
            ANSWER_WITHIN.as_secs()
        )),
    }
}

/// The store's problem, if it does not answer or cannot write.
pub async fn store(addr: &Addr<Store>) -> Option<String> {
    match tokio::time::timeout(ANSWER_WITHIN, addr.send(StoreStatus)).await {
        Ok(Ok(None)) => None,
        Ok(Ok(Some(failure))) => Some(describe(&failure)),
        Ok(Err(_)) => Some("store: stopped".into()),
        Err(_) => Some(format!(
            "store: did not answer within {} s (stuck or overloaded)",
            ANSWER_WITHIN.as_secs()
        )),
    }
}

fn describe(failure: &StoreFailure) -> String {
    let secs = crate::store::records::now_ms().saturating_sub(failure.since_ms) / 1000;
    format!(
        "database: cannot write for {secs} s ({} failed attempts): {}; new jobs are refused, \
         results wait with their agents, and every change is retried until it is stored",
        failure.failures, failure.error
    )
}
