//! Linux fd event sources for Furrow agents.

mod error;
mod eventfd;
mod fd;
mod pidfd;
mod signalfd;
mod source;
mod timerfd;

pub use error::{Error, Result};
pub use eventfd::*;
pub use pidfd::*;
pub use signalfd::*;
pub use source::{AsyncSource, EventSource};
pub use timerfd::*;
