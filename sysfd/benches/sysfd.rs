//! Benchmarks of furrow-sysfd.
fn main() {}
