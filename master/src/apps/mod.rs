//! Deployed applications, the master's side.
//!
//! An app is a name, the agents it is placed on (a tag selector), the web server kind it
//! is mounted on, and its releases: each a bundle (content-addressed, kept once in
//! `<data-dir>/apps/bundles/`) with a configuration checked against the bundle's spec.
//! One release is current; every agent the app is placed on is asked to serve it.
//!
//! - [`actor`]: the `Apps` actor: the apps and releases (loaded at start, written through
//!   the store), which agents serve which app, the agents' reports, bundle pieces for
//!   agents that ask, and the apps' output.
//! - [`bundles`]: the bundle files, by digest.
//! - [`output`]: the apps' output files per app and release, and their search.
//! - [`notify`]: notification rules: matching output lines posted to webhooks.
//! - [`inbox`]: the drop folder `<data-dir>/apps/inbox/`, watched with inotify.
//! - [`recurrent`]: the apps' recurrent tasks, submitted as ordinary jobs when due.
//!
//! Nothing here runs an app: the agents do (`furrow-agent`'s deploy module), with the
//! `furrow-deploy` crate.

pub mod actor;
pub mod bundles;
pub mod inbox;
pub mod notify;
pub mod output;
pub mod recurrent;

pub use actor::*;
