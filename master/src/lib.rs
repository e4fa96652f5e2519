//! Furrow master.
