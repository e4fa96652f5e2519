//! temp
mod archive;
mod bundle;
mod ini;
mod manifest;
mod problem;
mod release;
mod spec;
mod units;
pub use archive::*;
pub use bundle::*;
pub use manifest::*;
pub use problem::*;
pub use release::*;
pub use spec::*;
