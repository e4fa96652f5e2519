//! Furrow agent.
