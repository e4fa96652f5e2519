//! Installing a release from a cached bundle and the master's rendered configuration, and
//! finding the apps installed here. All of it is synchronous file work and hooks: callers
//! run it on a blocking thread, one operation per app at a time.
//!
//! The master sends the configuration rendered in the bundle spec's format; it is read
//! back (`parse_config_file`) and checked against the spec (`Spec::validate`), which
//! yields the same configuration (rendering and reading back round-trip), and
//! `AppHome::install` writes it into the release.

use std::path::{Path, PathBuf};

use furrow_deploy::{
    AppHome, Bundle, BundleOptions, Config, ConfigFormat, InstalledRelease, SpecFormat,
    join_problems, parse_config_file,
};
use serde_json::Map;

/// Where apps live on this agent (`<state>/apps`).
#[derive(Debug, Clone)]
pub(crate) struct AppsDir {
    root: PathBuf,
}

impl AppsDir {
    /// The layout under `root`, created if missing.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let dir = Self { root };
        for folder in [
            dir.homes(),
            dir.shared_deps(),
            dir.bundles(),
            dir.run(),
            dir.staging(),
        ] {
            std::fs::create_dir_all(&folder)?;
        }
        Ok(dir)
    }

    /// `homes/<app>/`: each app's releases (see `furrow_deploy::AppHome`).
    pub fn homes(&self) -> PathBuf {
        self.root.join("homes")
    }

    /// `shared-deps/<name>/`: dependency sets apps name in `dependencies.shared`.
    pub fn shared_deps(&self) -> PathBuf {
        self.root.join("shared-deps")
    }

    /// `bundles/<digest>.bundle`: the bundle cache.
    pub fn bundles(&self) -> PathBuf {
        self.root.join("bundles")
    }

    /// `run/`: instances' sockets and pid files.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `staging/`: bundles being extracted (on the same file system as the homes).
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// The home of `app`, created if missing.
    pub fn home(&self, app: &str) -> Result<AppHome, String> {
        AppHome::open(&self.homes(), app, &self.shared_deps()).map_err(|e| e.to_string())
    }

    /// The apps that have a home here, with their current release if any.
    pub fn installed(&self) -> Vec<(String, Option<u32>)> {
        let Ok(entries) = std::fs::read_dir(self.homes()) else {
            return Vec::new();
        };
        let mut apps: Vec<(String, Option<u32>)> = entries
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter_map(|app| {
                let home = self.home(&app).ok()?;
                Some((app, home.current().ok().flatten()))
            })
            .collect();
        apps.sort();
        apps
    }
}

/// Installs release `release` of `home`'s app from the bundle at `bundle` with the
/// master's rendered `config`, unless that release is installed already (an agent
/// restart, a rollback to a kept release): then it is only read.
pub(crate) fn install_release(
    apps: &AppsDir,
    home: &AppHome,
    release: u32,
    bundle: &Path,
    config: Option<&str>,
) -> Result<InstalledRelease, String> {
    if home.release_dir(release).is_dir() {
        return home.release(release).map_err(|e| e.to_string());
    }
    let options = BundleOptions {
        staging_parent: Some(apps.staging()),
        ..BundleOptions::default()
    };
    let bundle = Bundle::open_with(bundle, &options).map_err(|e| format!("bundle: {e}"))?;
    let config = config_of(&bundle, config)?;
    home.install(release, &bundle, &config)
        .map_err(|e| format!("install: {e}"))
}

/// The configuration the master rendered, read back and checked against the spec.
fn config_of(bundle: &Bundle, text: Option<&str>) -> Result<Config, String> {
    let Some(spec) = bundle.spec() else {
        let given = match text {
            Some(text) if !text.trim().is_empty() => parse_config_file(text, ConfigFormat::Yaml)
                .map_err(|e| format!("configuration: {e}"))?,
            _ => Map::new(),
        };
        return if given.is_empty() {
            Ok(Config::empty())
        } else {
            Err(
                "configuration: the bundle has no config spec, yet a configuration was given"
                    .into(),
            )
        };
    };
    let format = match spec.format() {
        SpecFormat::Yaml => ConfigFormat::Yaml,
        SpecFormat::Ini => ConfigFormat::Ini,
    };
    let input = match text {
        Some(text) => parse_config_file(text, format).map_err(|e| format!("configuration: {e}"))?,
        None => Map::new(),
    };
    spec.validate(&input)
        .map_err(|problems| format!("configuration: {}", join_problems(&problems)))
}
