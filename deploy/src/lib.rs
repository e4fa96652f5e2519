//! Furrow deploy: everything about an application bundle from the moment it is uploaded
//! until its release serves on an agent — reading and checking the bundle, its manifest
//! and its config spec, extracting it safely, installing, switching, pruning and deleting
//! its releases with their hooks, running and supervising its processes, and mounting it
//! on nginx, Apache or lighttpd.
//!
//! # Tour
//!
//! | module | job | main items |
//! |---|---|---|
//! | `archive` | extract an untrusted `.zip` or `.tar.gz` into a fresh directory within limits, refusing escapes; SHA-256 on the way | [`extract_file`], [`extract_bytes`], [`Limits`], [`ArchiveError`] |
//! | `manifest` | `furrow-app.yaml`: strict parsing with key paths, then every semantic problem at once | [`Manifest`], [`Process`], [`Mount`], [`Hooks`], [`ManifestError`] |
//! | `spec` | config specs (YAML or INI): validation of configurations, secrets, rendering, form description | [`Spec`], [`Config`], [`parse_config_file`], [`SpecDescription`] |
//! | `bundle` | open a bundle: extract to staging, read and check manifest, spec and referenced paths | [`Bundle`], [`BundleError`] |
//! | `release` | an app's home on an agent: releases, the `current` link, shared directories, environment, hooks | [`AppHome`], [`InstalledRelease`], [`ReleaseError`] |
//! | [`supervise`] | run an app's processes: ports or sockets, readiness and health, restarts with backoff, a visible give-up, graceful stops, output lines, namespace isolation | `Supervisor`, `SupervisorHandle`, `ProcessSpec`, `PortPool` |
//! | [`webserver`] | path-based mounts on managed or system web servers: snippets checked by the server's own test, installed atomically, reloaded once and verified | `ManagedServer`, `SystemServer`, `MountHost`, `Mount` |
//! | `units`, `problem`, `ini` | durations and sizes as people write them; findings with their path; a small INI reader | [`parse_duration`], [`parse_size`], [`Problem`] |
//!
//! The file formats, limits, on-disk layout and environment variables are described in the
//! crate's `README.md`; the web-server configurations and supervision in `WEBSERVERS.md`.
//!
//! # From upload to a running release
//!
//! ```no_run
//! use furrow_deploy::{AppHome, Bundle, Listen, KEEP_RELEASES};
//! use serde_json::{Map, Value, json};
//!
//! fn deploy() -> Result<(), Box<dyn std::error::Error>> {
//!     // On the master: check the upload and the configuration the user gave.
//!     let bundle = Bundle::open("hello-1.0.0.zip".as_ref())?;
//!     let mut input = Map::new();
//!     input.insert("workers".into(), json!("3")); // from `--set workers=3`
//!     let config = match bundle.spec() {
//!         Some(spec) => spec.validate(&input).map_err(|problems| format!("{problems:?}"))?,
//!         None => furrow_deploy::Config::empty(),
//!     };
//!     // On the agent, from a blocking thread: install, switch, prune.
//!     let home = AppHome::open("/var/lib/furrow/apps".as_ref(), bundle.name(), "/var/lib/furrow/deps".as_ref())?;
//!     home.install(7, &bundle, &config)?;
//!     home.switch(7)?;
//!     home.prune(KEEP_RELEASES)?;
//!     let env = home.environment(7, &Listen::Port(8001))?;
//!     let command = bundle.manifest().processes["web"].command_for(&Listen::Port(8001));
//!     println!("{command:?} with {} variables", env.len());
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod archive;
mod bundle;
mod ini;
mod manifest;
mod problem;
mod release;
mod spec;
pub mod supervise;
mod units;
pub mod webserver;

pub use archive::{
    ArchiveError, ArchiveFormat, Extracted, Limits, extract_bytes, extract_file, sha256_hex,
};
pub use bundle::{Bundle, BundleError, BundleOptions};
pub use manifest::{
    DEFAULT_HOOK_TIMEOUT, DEFAULT_STOP_GRACE, Dependencies, Health, HookEvent, Hooks, Isolation,
    Listen, ListenKind, MANIFEST_FILE, Manifest, ManifestError, Mount, Process, Recurrent,
    StopSignal,
};
pub use problem::{FieldError, Problem, join_problems};
pub use release::{
    AppHome, DEFAULT_BASE_PATH, InstalledRelease, KEEP_RELEASES, RELEASE_META_DIR, ReleaseError,
};
pub use spec::{
    Config, ConfigFileError, ConfigFormat, Field, FieldDescription, FieldType, INI_CONFIG_SECTION,
    MASK, SPEC_INI_FILE, SPEC_YAML_FILE, Spec, SpecDescription, SpecError, SpecFormat,
    parse_assignments, parse_config_file,
};
pub use units::{format_duration, parse_duration, parse_size};
