//! Sessions: one actor per accepted connection, never restarted (a dead connection is a
//! dead session).
//!
//! - [`agent`]: [`AgentSession`], for worker agents.
//! - [`client`]: [`ClientSession`], for tools using the client API.
//! - [`writer`]: the bounded outbox both use to write frames.

pub mod agent;
pub mod client;
pub mod in_flight;
pub mod writer;

pub use agent::AgentSession;
pub use client::ClientSession;
