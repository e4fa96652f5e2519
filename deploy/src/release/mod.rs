//! An app's home on an agent: its releases, which one is current, the directories that
//! outlive releases, and the hooks run at install, update and delete.
//!
//! ```text
//! <apps root>/<app>/
//!   releases/<N>/          one installed bundle, immutable once installed
//!     .furrow/config.yaml  (or config.ini) the configuration of this release, mode 0400
//!     .furrow/release.json number, version and digest of the bundle
//!   current -> releases/<N>    switched atomically (a new link renamed over the old)
//!   previous -> releases/<M>   the release `current` was switched from
//!   shared/<writable>/     the manifest's `writable` directories, kept across releases
//!   tmp/                   scratch space (FURROW_APP_TMP_PATH)
//!   logs/<event>.log       output of the last run of each hook event
//! ```
//!
//! The code is synchronous (hooks block until they end or time out): the agent calls it
//! from a blocking thread. Operations on one app must not run concurrently; the agent
//! serialises them per app.

mod env;
mod hooks;
mod install;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{HookEvent, Listen, MANIFEST_FILE, Manifest, ManifestError};
use crate::problem::{Problem, join_problems};
use crate::spec::SpecFormat;

pub use env::DEFAULT_BASE_PATH;

/// How many releases [`AppHome::prune`] keeps by default.
pub const KEEP_RELEASES: usize = 5;

/// The directory inside a release that holds what Furrow adds to the bundle.
pub const RELEASE_META_DIR: &str = ".furrow";

/// Why an operation on an app's home failed. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The system's error.
        source: io::Error,
    },
    /// The app name is not a valid identifier.
    #[error("{0:?} is not a valid app name: 1 to 63 characters of a-z, 0-9, '-' and '_'")]
    InvalidAppName(String),
    /// The bundle is for another app.
    #[error("the bundle is for app {bundle:?}, not {app:?}")]
    WrongApp {
        /// This home's app.
        app: String,
        /// The bundle's manifest name.
        bundle: String,
    },
    /// The release number is taken.
    #[error("release {0} is installed already; releases are immutable, install a new number")]
    ReleaseExists(u32),
    /// No such release is installed.
    #[error("release {0} is not installed")]
    NoSuchRelease(u32),
    /// The bundle uses a name Furrow keeps for itself.
    #[error(
        "the bundle has a top-level {RELEASE_META_DIR:?}, a name Furrow keeps for itself; rename it"
    )]
    ReservedName,
    /// The configuration does not fit the bundle's spec.
    #[error("the configuration does not fit the bundle's config spec: {}", join_problems(.0))]
    Config(Vec<Problem>),
    /// A shared dependency the manifest lists is not installed on this agent.
    #[error("shared dependency {name:?} is not installed on this agent (looked for the directory {})", path.display())]
    MissingSharedDependency {
        /// The name in `dependencies.shared`.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An installed release's manifest no longer parses.
    #[error("release {release}: {source}")]
    BadRelease {
        /// The release.
        release: u32,
        /// What is wrong with its manifest.
        source: ManifestError,
    },
    /// A hook could not be started.
    #[error("{event} hook `{command}` could not start: {source}")]
    HookSpawn {
        /// The event.
        event: HookEvent,
        /// The command.
        command: String,
        /// The system's error.
        source: io::Error,
    },
    /// A hook exited unsuccessfully.
    #[error(
        "{event} hook `{command}` failed with {status}; its output ended with: {}",
        one_line(output)
    )]
    HookFailed {
        /// The event.
        event: HookEvent,
        /// The command.
        command: String,
        /// How it ended (`exit status 3`, `killed by signal 9`).
        status: String,
        /// The end of its output (stdout and stderr together).
        output: String,
    },
    /// A hook ran past its time limit; its whole process group was killed.
    #[error(
        "{event} hook `{command}` ran longer than {limit:?} and was killed; its output ended with: {}",
        one_line(output)
    )]
    HookTimedOut {
        /// The event.
        event: HookEvent,
        /// The command.
        command: String,
        /// The limit.
        limit: Duration,
        /// The end of its output.
        output: String,
    },
}

fn one_line(output: &str) -> String {
    if output.is_empty() {
        "(nothing)".into()
    } else {
        output.lines().collect::<Vec<_>>().join(" / ")
    }
}

pub(crate) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ReleaseError {
    let context = context.into();
    move |source| ReleaseError::Io { context, source }
}

/// An installed release, as found on disk.
#[derive(Debug, Clone)]
pub struct InstalledRelease {
    /// The release number.
    pub number: u32,
    /// Its directory, `releases/<N>`.
    pub dir: PathBuf,
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// The configuration file written for it.
    pub config_file: PathBuf,
}

/// One app's home directory on an agent.
#[derive(Debug, Clone)]
pub struct AppHome {
    app: String,
    dir: PathBuf,
    shared_deps: PathBuf,
    base_path: String,
}

impl AppHome {
    /// The home of `app` under `apps_root`, created if missing. `shared_deps` is the
    /// agent-wide directory where `dependencies.shared` names are looked up.
    pub fn open(apps_root: &Path, app: &str, shared_deps: &Path) -> Result<AppHome, ReleaseError> {
        if !crate::manifest::is_identifier(app) {
            return Err(ReleaseError::InvalidAppName(app.to_string()));
        }
        let home = AppHome {
            app: app.to_string(),
            dir: apps_root.join(app),
            shared_deps: shared_deps.to_path_buf(),
            base_path: DEFAULT_BASE_PATH.to_string(),
        };
        for dir in [
            home.releases_dir(),
            home.dir.join("shared"),
            home.dir.join("tmp"),
            home.dir.join("logs"),
        ] {
            fs::create_dir_all(&dir)
                .map_err(io_error(format!("cannot create {}", dir.display())))?;
        }
        Ok(home)
    }

    /// Sets the `PATH` tail given to the app after its dependency directories.
    pub fn with_base_path(mut self, base_path: impl Into<String>) -> Self {
        self.base_path = base_path.into();
        self
    }

    /// The app's name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The home directory, `<apps root>/<app>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of release `number` (whether or not it is installed).
    pub fn release_dir(&self, number: u32) -> PathBuf {
        self.releases_dir().join(number.to_string())
    }

    /// The root of the app's `writable` directories (FURROW_APP_DATA_DIR).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// The agent-wide directory where `dependencies.shared` names are looked up.
    pub fn shared_deps(&self) -> &Path {
        &self.shared_deps
    }

    /// The app's scratch directory (FURROW_APP_TMP_PATH).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn releases_dir(&self) -> PathBuf {
        self.dir.join("releases")
    }

    /// Installed release numbers, ascending.
    pub fn releases(&self) -> Result<Vec<u32>, ReleaseError> {
        let dir = self.releases_dir();
        let entries =
            fs::read_dir(&dir).map_err(io_error(format!("cannot list {}", dir.display())))?;
        let mut numbers: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// The release `current` points to.
    pub fn current(&self) -> Result<Option<u32>, ReleaseError> {
        self.read_link("current")
    }

    /// The release `current` was last switched from.
    pub fn previous(&self) -> Result<Option<u32>, ReleaseError> {
        self.read_link("previous")
    }

    fn read_link(&self, name: &str) -> Result<Option<u32>, ReleaseError> {
        let link = self.dir.join(name);
        match fs::read_link(&link) {
            Ok(target) => Ok(target
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse().ok())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(format!("cannot read {}", link.display()))(error)),
        }
    }

    /// An installed release with its manifest, read from disk.
    pub fn release(&self, number: u32) -> Result<InstalledRelease, ReleaseError> {
        let dir = self.release_dir(number);
        if !dir.is_dir() {
            return Err(ReleaseError::NoSuchRelease(number));
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&manifest_path)
            .map_err(io_error(format!("cannot read {}", manifest_path.display())))?;
        let manifest = Manifest::parse(&text).map_err(|source| ReleaseError::BadRelease {
            release: number,
            source,
        })?;
        let meta = dir.join(RELEASE_META_DIR);
        let config_file = [SpecFormat::Ini, SpecFormat::Yaml]
            .into_iter()
            .map(|format| meta.join(config_file_name(format)))
            .find(|path| path.is_file())
            .unwrap_or_else(|| meta.join(config_file_name(SpecFormat::Yaml)));
        Ok(InstalledRelease {
            number,
            dir,
            manifest,
            config_file,
        })
    }

    /// The environment of a process of release `number` (see the crate's README for each
    /// variable); `listen` is where this instance listens.
    pub fn environment(
        &self,
        number: u32,
        listen: &Listen,
    ) -> Result<BTreeMap<String, String>, ReleaseError> {
        let release = self.release(number)?;
        Ok(self.environment_of(&release, listen))
    }

    fn environment_of(
        &self,
        release: &InstalledRelease,
        listen: &Listen,
    ) -> BTreeMap<String, String> {
        env::build(
            &env::EnvInputs {
                app: &self.app,
                release: release.number,
                release_dir: &release.dir,
                config_file: &release.config_file,
                tmp_dir: &self.tmp_dir(),
                data_dir: &self.data_dir(),
                shared_deps: &self.shared_deps,
                base_path: &self.base_path,
                manifest: &release.manifest,
            },
            listen,
        )
    }

    /// Runs the release's commands for `event` in order, in its directory, with its
    /// environment; the first failure stops the run and is returned.
    pub fn run_hook(&self, number: u32, event: HookEvent) -> Result<(), ReleaseError> {
        let release = self.release(number)?;
        self.run_hook_of(&release, event)
    }

    fn run_hook_of(
        &self,
        release: &InstalledRelease,
        event: HookEvent,
    ) -> Result<(), ReleaseError> {
        let commands = release.manifest.hooks.commands(event);
        if commands.is_empty() {
            return Ok(());
        }
        let env = self.environment_of(release, &Listen::None);
        let log = self.dir.join("logs").join(format!("{event}.log"));
        // Each run of an event starts a fresh log; its commands append to it.
        fs::write(&log, b"").map_err(io_error(format!("cannot write {}", log.display())))?;
        for command in commands {
            hooks::run(&hooks::HookRun {
                event,
                command,
                dir: &release.dir,
                env: &env,
                timeout: release.manifest.hooks.timeout,
                log: &log,
            })?;
        }
        Ok(())
    }

    /// Makes release `number` current. When another release was current, the new one's
    /// `pre_update` hooks run first (a failure leaves `current` as it was), then `current`
    /// is switched atomically, `previous` records the old release, and the new one's
    /// `post_update` hooks run (a failure is returned; `current` stays switched, and the
    /// caller may switch back to [`AppHome::previous`]). The first switch runs no hooks.
    pub fn switch(&self, number: u32) -> Result<(), ReleaseError> {
        let release = self.release(number)?;
        let old = self.current()?;
        if old == Some(number) {
            return Ok(());
        }
        if old.is_some() {
            self.run_hook_of(&release, HookEvent::PreUpdate)?;
        }
        self.replace_link("current", number)?;
        if let Some(old_number) = old {
            self.replace_link("previous", old_number)?;
        }
        tracing::info!(app = %self.app, release = number, previous = ?old, "release switched");
        if old.is_some() {
            self.run_hook_of(&release, HookEvent::PostUpdate)?;
        }
        Ok(())
    }

    /// Points the link `name` at `releases/<number>` atomically: a new link is made beside
    /// it, then renamed over it, so readers see the old target or the new, never none.
    fn replace_link(&self, name: &str, number: u32) -> Result<(), ReleaseError> {
        let link = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let target = Path::new("releases").join(number.to_string());
        let _ = fs::remove_file(&temporary); // a leftover of a crash, if any
        std::os::unix::fs::symlink(&target, &temporary)
            .map_err(io_error(format!("cannot create {}", temporary.display())))?;
        fs::rename(&temporary, &link)
            .map_err(io_error(format!("cannot replace {}", link.display())))
    }

    /// Deletes all but the newest `keep` releases, never the current one nor the previous
    /// one. Returns the numbers deleted.
    pub fn prune(&self, keep: usize) -> Result<Vec<u32>, ReleaseError> {
        let protected = [self.current()?, self.previous()?];
        let mut releases = self.releases()?;
        releases.reverse();
        let mut removed = Vec::new();
        for number in releases.into_iter().skip(keep) {
            if protected.contains(&Some(number)) {
                continue;
            }
            let dir = self.release_dir(number);
            fs::remove_dir_all(&dir)
                .map_err(io_error(format!("cannot remove {}", dir.display())))?;
            removed.push(number);
        }
        if !removed.is_empty() {
            tracing::info!(app = %self.app, removed = ?removed, "releases pruned");
        }
        Ok(removed)
    }

    /// Deletes the app: runs the current release's `pre_delete` hooks, then removes the
    /// whole home, shared data included. A failing hook stops the removal (see
    /// [`AppHome::remove_without_hooks`]).
    pub fn remove(self) -> Result<(), ReleaseError> {
        if let Some(current) = self.current()? {
            self.run_hook(current, HookEvent::PreDelete)?;
        }
        self.remove_without_hooks()
    }

    /// Deletes the app's home without running any hook: for when `pre_delete` cannot
    /// succeed and the operator insists.
    pub fn remove_without_hooks(self) -> Result<(), ReleaseError> {
        fs::remove_dir_all(&self.dir)
            .map_err(io_error(format!("cannot remove {}", self.dir.display())))?;
        tracing::info!(app = %self.app, "app removed");
        Ok(())
    }
}

/// The name of the configuration file in a release's `.furrow/` for a spec format.
pub(crate) fn config_file_name(format: SpecFormat) -> &'static str {
    match format {
        SpecFormat::Yaml => "config.yaml",
        SpecFormat::Ini => "config.ini",
    }
}
