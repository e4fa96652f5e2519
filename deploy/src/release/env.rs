//! The environment an app's processes and hooks get: exactly these variables, nothing
//! inherited from the agent (whose environment may hold its own credentials).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest::{Listen, Manifest};

/// The `PATH` tail when the agent gives none: the usual system directories.
pub const DEFAULT_BASE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Everything needed to build one release's environment.
pub(super) struct EnvInputs<'a> {
    pub app: &'a str,
    pub release: u32,
    pub release_dir: &'a Path,
    pub config_file: &'a Path,
    pub tmp_dir: &'a Path,
    pub data_dir: &'a Path,
    pub shared_deps: &'a Path,
    pub base_path: &'a str,
    pub manifest: &'a Manifest,
}

pub(super) fn build(inputs: &EnvInputs<'_>, listen: &Listen) -> BTreeMap<String, String> {
    let text = |path: &Path| path.to_string_lossy().into_owned();
    let mut env = BTreeMap::new();
    env.insert("FURROW_APP_NAME".into(), inputs.app.to_string());
    env.insert("FURROW_APP_RELEASE".into(), inputs.release.to_string());
    env.insert("FURROW_APP_DIR".into(), text(inputs.release_dir));
    env.insert("FURROW_APP_CONFIG_FILE".into(), text(inputs.config_file));
    env.insert("FURROW_APP_TMP_PATH".into(), text(inputs.tmp_dir));
    env.insert("FURROW_APP_DATA_DIR".into(), text(inputs.data_dir));
    match listen {
        Listen::Port(port) => {
            env.insert("PORT".into(), port.to_string());
        }
        Listen::Socket(path) => {
            env.insert("FURROW_APP_SOCKET".into(), text(path));
        }
        Listen::None => {}
    }
    // Dependency directories: the bundle's own first, then the agent's shared sets in the
    // manifest's order, so that an app can override a shared package with its own.
    let mut dependency_dirs: Vec<PathBuf> = Vec::new();
    if let Some(local) = &inputs.manifest.dependencies.local {
        dependency_dirs.push(inputs.release_dir.join(local));
    }
    for name in &inputs.manifest.dependencies.shared {
        dependency_dirs.push(inputs.shared_deps.join(name));
    }
    let python_path: Vec<String> = dependency_dirs.iter().map(|dir| text(dir)).collect();
    if !python_path.is_empty() {
        env.insert("PYTHONPATH".into(), python_path.join(":"));
    }
    let mut path: Vec<String> = dependency_dirs
        .iter()
        .map(|dir| dir.join("bin"))
        .filter(|bin| bin.is_dir())
        .map(|bin| text(&bin))
        .collect();
    path.push(inputs.base_path.to_string());
    env.insert("PATH".into(), path.join(":"));
    env
}
