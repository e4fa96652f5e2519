//! Furrow wire protocol.
