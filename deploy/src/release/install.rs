//! Installing a bundle as release N: copy its files under a temporary name, add the
//! configuration, check shared dependencies, rename into place, run `post_install`, then
//! seal the release against writes. A failure at any step leaves no release N behind.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{
    AppHome, InstalledRelease, RELEASE_META_DIR, ReleaseError, config_file_name, io_error,
};
use crate::bundle::Bundle;
use crate::manifest::HookEvent;
use crate::problem::Problem;
use crate::spec::Config;

const DATA_DIR_MODE: u32 = 0o750;

impl AppHome {
    /// Installs `bundle` as release `number` with `config` (checked again against the
    /// bundle's spec), and runs its `post_install` hooks. The release does not become
    /// current: see [`AppHome::switch`].
    pub fn install(
        &self,
        number: u32,
        bundle: &Bundle,
        config: &Config,
    ) -> Result<InstalledRelease, ReleaseError> {
        if bundle.name() != self.app {
            return Err(ReleaseError::WrongApp {
                app: self.app.clone(),
                bundle: bundle.name().to_string(),
            });
        }
        let final_dir = self.release_dir(number);
        if fs::symlink_metadata(&final_dir).is_ok() {
            return Err(ReleaseError::ReleaseExists(number));
        }
        if fs::symlink_metadata(bundle.root().join(RELEASE_META_DIR)).is_ok() {
            return Err(ReleaseError::ReservedName);
        }
        let rendered = render_config(bundle, config)?;
        for name in &bundle.manifest().dependencies.shared {
            let path = self.shared_deps.join(name);
            if !path.is_dir() {
                return Err(ReleaseError::MissingSharedDependency {
                    name: name.clone(),
                    path,
                });
            }
        }

        let staging = self.releases_dir().join(format!(".installing-{number}"));
        if fs::symlink_metadata(&staging).is_ok() {
            // A crash left it; nothing refers to a release that never got its number.
            remove_tree(&staging)?;
        }
        let prepared = copy_tree(bundle.root(), &staging).and_then(|()| {
            let meta = staging.join(RELEASE_META_DIR);
            make_dir(&meta, 0o755)?;
            write_private(
                &meta.join(config_file_name(rendered.0)),
                rendered.1.as_bytes(),
            )?;
            let about = serde_json::json!({
                "number": number,
                "name": bundle.name(),
                "version": bundle.version(),
                "digest": bundle.digest(),
            });
            write_private(&meta.join("release.json"), about.to_string().as_bytes())
        });
        if let Err(error) = prepared {
            let _ = remove_tree(&staging); // the copy's error is the one worth reporting
            return Err(error);
        }
        for name in &bundle.manifest().writable {
            let dir = self.data_dir().join(name);
            if !dir.is_dir() {
                make_dir(&dir, DATA_DIR_MODE)?;
            }
        }
        fs::rename(&staging, &final_dir).map_err(io_error(format!(
            "cannot move the release to {}",
            final_dir.display()
        )))?;

        let installed = self.release(number);
        let hooked = installed.and_then(|release| {
            self.run_hook_of(&release, HookEvent::PostInstall)?;
            seal(&release.dir)?;
            Ok(release)
        });
        match hooked {
            Ok(release) => {
                tracing::info!(app = %self.app, release = number, version = bundle.version(), digest = bundle.digest(), "release installed");
                Ok(release)
            }
            Err(error) => {
                if let Err(cleanup) = remove_tree(&final_dir) {
                    tracing::warn!(app = %self.app, release = number, error = %cleanup, "cannot remove a failed release");
                }
                Err(error)
            }
        }
    }
}

/// The configuration file's format and text; the configuration must fit the bundle's spec
/// (an app without a spec takes an empty configuration).
fn render_config(
    bundle: &Bundle,
    config: &Config,
) -> Result<(crate::spec::SpecFormat, String), ReleaseError> {
    match bundle.spec() {
        Some(spec) => {
            let checked = spec
                .validate(&config.to_input())
                .map_err(ReleaseError::Config)?;
            Ok((spec.format(), spec.render(&checked)))
        }
        None if config.is_empty() => {
            let empty = crate::spec::Spec::empty();
            Ok((empty.format(), empty.render(config)))
        }
        None => Err(ReleaseError::Config(
            config
                .values()
                .keys()
                .map(|name| Problem::new(name, "unknown field: the bundle has no config spec"))
                .collect(),
        )),
    }
}

/// Copies a tree: directories, files with their modes, and symbolic links as links (the
/// bundle's links were checked to stay inside it at extraction).
fn copy_tree(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    make_dir(to, 0o755)?;
    let entries =
        fs::read_dir(from).map_err(io_error(format!("cannot list {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("cannot list {}", from.display())))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(io_error(format!("cannot inspect {}", source.display())))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source)
                .map_err(io_error(format!("cannot read {}", source.display())))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(io_error(format!("cannot create {}", target.display())))?;
        } else if kind.is_file() {
            fs::copy(&source, &target)
                .map_err(io_error(format!("cannot copy to {}", target.display())))?;
        }
    }
    Ok(())
}

fn make_dir(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_error(format!("cannot create {}", path.display())))?;
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_error(format!(
        "cannot set the mode of {}",
        path.display()
    )))
}

/// Writes a file only its owner can read: the configuration holds secrets.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), ReleaseError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(format!("cannot create {}", path.display())))?;
    file.write_all(contents)
        .map_err(io_error(format!("cannot write {}", path.display())))
}

/// Makes an installed release read-only: no write bit on files, no group or other write
/// bit on directories (the owner keeps write on directories so that pruning can delete).
fn seal(dir: &Path) -> Result<(), ReleaseError> {
    let entries = fs::read_dir(dir).map_err(io_error(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("cannot list {}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(io_error(format!("cannot inspect {}", path.display())))?;
        if kind.is_dir() {
            seal(&path)?;
        } else if kind.is_file() {
            strip_mode(&path, 0o7222)?;
        }
    }
    strip_mode(dir, 0o7022)
}

fn strip_mode(path: &Path, bits: u32) -> Result<(), ReleaseError> {
    let mode = fs::symlink_metadata(path)
        .map_err(io_error(format!("cannot inspect {}", path.display())))?
        .permissions()
        .mode();
    fs::set_permissions(path, Permissions::from_mode(mode & 0o7777 & !bits)).map_err(io_error(
        format!("cannot set the mode of {}", path.display()),
    ))
}

/// Removes a tree (sealing keeps the owner's write bit on directories, so this works on
/// sealed releases too).
fn remove_tree(path: &Path) -> Result<(), ReleaseError> {
    fs::remove_dir_all(path).map_err(io_error(format!("cannot remove {}", path.display())))
}
