//! Running and supervising app processes.
//!
//! A [`ProcessSpec`] describes one process of a release (`web`, `worker`) and how many
//! instances of it run. [`Supervisor::start`] gives every instance its port (from a
//! [`PortPool`]) or unix socket, starts it in its own process group, captures its output
//! line by line into a [`LogSink`], waits for it to be ready, checks its health, restarts
//! it with capped exponential backoff when it exits, and gives up after too many crashes
//! in a window. The [`SupervisorHandle`] shows every instance's [`InstanceState`]
//! (serialisable for the REST view), waits for all to be healthy (the deploy flow gates a
//! release switch on it), restarts and stops them. Optionally an instance runs in its own
//! mount namespace under a per-app uid ([`Isolation`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use furrow_deploy::supervise::{HealthCheck, PortPool, ProcessSpec, Supervisor, TracingLogSink};
//!
//! let ports = Arc::new(PortPool::new(20000..=20999)?);
//! let mut spec = ProcessSpec::new(
//!     "shop",
//!     "r42",
//!     "web",
//!     vec!["python3".into(), "-m".into(), "http.server".into(), "{port}".into()],
//! );
//! spec.instances = 2;
//! spec.health = Some(HealthCheck::Http("/".into()));
//! let handle = Supervisor::start(spec, &ports, "/run/furrow/apps".as_ref(), Arc::new(TracingLogSink))?;
//! handle.wait_healthy(Duration::from_secs(30)).await?;
//! let endpoints = handle.endpoints(); // mount these on the web server
//! # drop(endpoints);
//! handle.stop().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod health;
mod instance;
mod isolation;
mod logs;
mod ports;
mod spec;
mod state;
mod supervisor;

pub use error::{HealthError, SuperviseError};
pub use isolation::{BindMount, Isolation, NamespaceIsolation};
pub use logs::{LogLine, LogSink, LogStream, MAX_LINE, TracingLogSink};
pub use nix::sys::signal::Signal;
pub use ports::PortPool;
pub use spec::{HealthCheck, HealthPolicy, Listen, ProcessSpec, RestartPolicy};
pub use state::{Endpoint, ExitReason, InstanceState, InstanceStatus};
pub use supervisor::{Supervisor, SupervisorHandle};

impl Endpoint {
    /// The web-server backend for this endpoint (`None` for a process that does not
    /// listen).
    pub fn backend(&self) -> Option<crate::webserver::Backend> {
        match self {
            Endpoint::Port(port) => Some(crate::webserver::Backend::port(*port)),
            Endpoint::Socket(path) => Some(crate::webserver::Backend::Unix(path.clone())),
            Endpoint::None => None,
        }
    }
}
