//! The master's error type at its public boundary.

use std::path::PathBuf;

use thiserror::Error;

/// Why the master could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum MasterError {
    /// The data directory could not be created or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened, migrated or loaded.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Any other I/O failure of the master process itself.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The actor system stopped before the master was ready.
    #[error("the master stopped unexpectedly: {0}")]
    Stopped(String),
}
