//! temp
mod archive;
mod ini;
mod manifest;
mod problem;
mod spec;
mod units;
pub use archive::*;
pub use manifest::*;
pub use problem::*;
pub use spec::*;
