//! The agent's own signals: SIGTERM and SIGINT stop it, SIGHUP asks for a reload.
//!
//! The one place that knows how signals arrive. Today that is tokio's signal handling; it
//! is meant to become a signalfd from furrow-sysfd, which only changes this file.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A signal the agent acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentSignal {
    /// SIGTERM: stop.
    Terminate,
    /// SIGINT: stop.
    Interrupt,
    /// SIGHUP: reload the configuration.
    Hangup,
}

/// The agent's signal handlers, installed together.
pub(crate) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers. From then on these signals no longer kill the process.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> AgentSignal {
        tokio::select! {
            _ = self.terminate.recv() => AgentSignal::Terminate,
            _ = self.interrupt.recv() => AgentSignal::Interrupt,
            _ = self.hangup.recv() => AgentSignal::Hangup,
        }
    }
}
