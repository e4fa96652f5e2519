//! Running and supervising app processes.
