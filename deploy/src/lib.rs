//! Furrow deploy: rolls application bundles out to agents (releases, config specs,
//! health-gated rolling updates, rollback) and mounts them behind nginx.
//!
//! The crate is part of the workspace so that the master and agent can depend on it as
//! the deploy service grows; it has no public items yet.

// Serving and running apps: path-based mounts on nginx, Apache and lighttpd
// (`webserver`), and the supervision of app processes (`supervise`).
pub mod supervise;
pub mod webserver;
