//! Furrow's wire protocol between the master, its agents and tools.
//!
//! - [`codec`]: length-prefixed frames (4-byte big-endian length) whose payload is one
//!   message in bincode 2 (serde, standard configuration); the maximum frame size is
//!   enforced on read and on write.
//! - [`handshake`]: the first frame each way ([`Hello`]: magic, protocol version, role,
//!   node id, credentials); a version mismatch is reported at both ends.
//! - [`messages`]: agent ↔ master messages ([`AgentMessage`], [`MasterMessage`]) and the
//!   client requests mirroring the REST API ([`ClientRequest`], [`ClientResponse`]).
//! - [`model`]: the records clients see (jobs, tasks, agents), shared with the REST API.
//! - [`access`]: users, roles, tokens and the audit log.
//! - [`apps`]: deployed applications: releases sent to agents, bundles fetched by
//!   digest, the agents' reports and the apps' output.
//! - [`frames`]: frame specifications (`1-100:5`) and their batches.
//! - [`browse`]: pages of a job's tasks that seek by frame ([`TaskQuery`]).
//! - [`Client`]: a typed async client for tools.
//!
//! The crate has no actix dependency: it is plain tokio, usable from any tool.

pub mod access;
pub mod apps;
pub mod browse;
pub mod client;
pub mod codec;
mod error;
pub mod frames;
pub mod handshake;
mod json;
pub mod messages;
pub mod model;
pub mod tls;

pub use access::*;
pub use apps::*;
pub use browse::TaskQuery;
pub use client::{Client, ClientError, ClientOptions};
pub use codec::{DEFAULT_MAX_FRAME, FrameBudget, FrameCodec};
pub use error::ProtocolError;
pub use frames::{FrameBatch, FrameRange, FrameSet, FrameSpecError};
pub use handshake::{
    DEEP_PIPELINE_VERSION, Hello, MIN_PROTOCOL_VERSION, PIPELINE_VERSION, PROTOCOL_VERSION, Role,
    agreed_version,
};
pub use json::Json;
pub use messages::*;
pub use model::*;

/// Default TCP address the master listens on for agents and tools.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// Default HTTP address of the master's REST API and dashboard.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7421";
