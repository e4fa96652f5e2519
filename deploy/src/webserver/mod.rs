//! Path-based mounts of apps on nginx, Apache httpd and lighttpd.
//!
//! A [`Mount`] says: requests under `path` go to the app's instances (TCP ports or unix
//! sockets, load balanced), except the static directories, which the web server serves
//! itself. The web server talks straight to the app; Furrow is never in the request path.
//! The prefix is passed through unchanged (the app sees `/hello/x`, not `/x`) with `Host`,
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Prefix` set.
//!
//! Two ways to host mounts, both behind the [`MountHost`] trait:
//!
//! - [`ManagedServer`]: Furrow runs a private web server from a state directory (its own
//!   main config, pid file, logs and temp paths; nothing under `/etc` or `/var/log`) as a
//!   child process, and reloads it with signals.
//! - [`SystemServer`]: the host's own web server includes a directory Furrow writes
//!   snippets into; Furrow checks and reloads it with the server's own commands.
//!
//! Installing a mount renders its snippet ([`render_snippet`]), checks the *whole*
//! resulting configuration with the server's own test (`nginx -t`, `apache2 -t`,
//! `lighttpd -tt`), moves the snippet into place atomically, reloads once and then polls
//! the server until the new snippet answers (see [`MountHost`]). A rejected snippet leaves
//! the previous configuration serving, and the error carries the server's own message.
//!
//! ```no_run
//! # async fn demo() -> Result<(), furrow_deploy::webserver::WebServerError> {
//! use furrow_deploy::webserver::{ManagedServer, Mount, MountHost, Upstream, WebServerKind};
//! let server = ManagedServer::start(
//!     WebServerKind::Nginx,
//!     "/var/lib/furrow/web".as_ref(),
//!     "127.0.0.1:8080".parse().expect("a literal address"),
//! )
//! .await?;
//! server
//!     .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(20000)))
//!     .await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod apache;
mod drain;
mod error;
mod install;
mod kind;
mod layout;
mod lighttpd;
mod managed;
mod mount;
mod nginx;
pub(crate) mod probe;
mod process;
mod snippet;
mod system;

pub use error::WebServerError;
pub use install::MountHost;
pub use kind::{ParseKindError, WebServerKind};
pub use layout::WorkerUser;
pub use managed::{ManagedOptions, ManagedServer, ServerStatus};
pub use mount::{Backend, Mount, StaticDir, Upstream, validate_app_name};
pub use snippet::{MARKER_HEADER, MARKER_PREFIX, Snippet, render_snippet};
pub use system::{SystemOptions, SystemServer};
