//! Opening a bundle: extract it into a private staging directory, read and check the
//! manifest and the config spec, and check that every path the manifest names exists.
//! Whatever is wrong comes out as one [`BundleError`] whose message is one line a user can
//! act on (the master stores it as the reason an upload was rejected).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::archive::{self, ArchiveError, ArchiveFormat, Limits};
use crate::manifest::{MANIFEST_FILE, Manifest, ManifestError};
use crate::spec::{SPEC_INI_FILE, SPEC_YAML_FILE, Spec, SpecError, SpecFormat};

/// Largest manifest or spec file read, so that a hostile bundle cannot make the reader
/// allocate without bound.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

/// Why a bundle was rejected; `Display` is a single line.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The archive could not be extracted safely.
    #[error("bundle archive: {0}")]
    Archive(#[from] ArchiveError),
    /// The staging directory could not be made.
    #[error("cannot create a staging directory under {path}: {source}")]
    Staging {
        /// Where it was to be made.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// There is no manifest at the top level.
    #[error("the bundle has no {MANIFEST_FILE} at its top level{}", hint.as_deref().map(|found| format!(" (found {found}: archive the folder's contents, not the folder)")).unwrap_or_default())]
    NoManifest {
        /// A manifest found one level down, if any.
        hint: Option<String>,
    },
    /// The manifest is malformed or inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The config spec is malformed or inconsistent.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Both spec files are present.
    #[error("the bundle has both {SPEC_YAML_FILE} and {SPEC_INI_FILE}; keep one")]
    TwoSpecs,
    /// A path named by the manifest is not a directory of the bundle.
    #[error("furrow-app.yaml: {key}: {path:?} is not a directory in the bundle")]
    MissingPath {
        /// The manifest key that names it.
        key: String,
        /// The path as written.
        path: String,
    },
    /// A bundle file could not be read.
    #[error("cannot read {file} in the bundle: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// Where and how bundles are opened.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// Extraction limits.
    pub limits: Limits,
    /// The directory under which staging directories are made; the system's temporary
    /// directory when `None`. Put it on the same file system as the releases to install
    /// quickly.
    pub staging_parent: Option<PathBuf>,
}

/// An opened, checked bundle. Its extracted files live in a staging directory that is
/// removed when the `Bundle` is dropped.
#[derive(Debug)]
pub struct Bundle {
    manifest: Manifest,
    spec: Option<Spec>,
    digest: String,
    format: ArchiveFormat,
    root: PathBuf,
    _staging: TempDir,
}

impl Bundle {
    /// Opens the bundle archive at `path` with default options.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        Self::open_with(path, &BundleOptions::default())
    }

    /// Opens the bundle archive at `path`.
    pub fn open_with(path: &Path, options: &BundleOptions) -> Result<Bundle, BundleError> {
        let staging = make_staging(options)?;
        let root = staging.path().join("bundle");
        let extracted = archive::extract_file(path, &root, &options.limits)?;
        Self::check(staging, root, extracted)
    }

    /// Opens a bundle archive held in memory, with default options.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Self::from_bytes_with(bytes, &BundleOptions::default())
    }

    /// Opens a bundle archive held in memory.
    pub fn from_bytes_with(bytes: &[u8], options: &BundleOptions) -> Result<Bundle, BundleError> {
        let staging = make_staging(options)?;
        let root = staging.path().join("bundle");
        let extracted = archive::extract_bytes(bytes, &root, &options.limits)?;
        Self::check(staging, root, extracted)
    }

    fn check(
        staging: TempDir,
        root: PathBuf,
        extracted: archive::Extracted,
    ) -> Result<Bundle, BundleError> {
        let manifest_text =
            read_document(&root, MANIFEST_FILE)?.ok_or_else(|| BundleError::NoManifest {
                hint: find_nested_manifest(&root),
            })?;
        let manifest = Manifest::parse(&manifest_text)?;
        let yaml_spec = read_document(&root, SPEC_YAML_FILE)?;
        let ini_spec = read_document(&root, SPEC_INI_FILE)?;
        let spec = match (yaml_spec, ini_spec) {
            (Some(_), Some(_)) => return Err(BundleError::TwoSpecs),
            (Some(text), None) => Some(Spec::parse(&text, SpecFormat::Yaml)?),
            (None, Some(text)) => Some(Spec::parse(&text, SpecFormat::Ini)?),
            (None, None) => None,
        };
        check_paths(&root, &manifest)?;
        Ok(Bundle {
            manifest,
            spec,
            digest: extracted.digest,
            format: extracted.format,
            root,
            _staging: staging,
        })
    }

    /// The app's name, from the manifest.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The bundle's version, from the manifest.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// The archive's SHA-256, lower-case hex: its content address.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The archive's format.
    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    /// The checked manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The checked config spec; `None` when the app has no configuration.
    pub fn spec(&self) -> Option<&Spec> {
        self.spec.as_ref()
    }

    /// The directory holding the extracted files (the bundle's top level).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn make_staging(options: &BundleOptions) -> Result<TempDir, BundleError> {
    let parent = options
        .staging_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("furrow-bundle-")
        .tempdir_in(&parent)
        .map_err(|source| BundleError::Staging {
            path: parent,
            source,
        })
}

/// A top-level document of the bundle, or `None` when absent. It must be a regular file.
fn read_document(root: &Path, name: &str) -> Result<Option<String>, BundleError> {
    let path = root.join(name);
    let read_error = |reason: String| BundleError::Read {
        file: name.to_string(),
        reason,
    };
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_error(error.to_string())),
    };
    if !meta.file_type().is_file() {
        return Err(read_error("it must be a regular file".into()));
    }
    if meta.len() > MAX_DOCUMENT_BYTES {
        return Err(read_error(format!(
            "it is larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|file| file.take(MAX_DOCUMENT_BYTES).read_to_string(&mut text))
        .map_err(|error| read_error(format!("{error} (it must be UTF-8 text)")))?;
    Ok(Some(text))
}

/// `dir/furrow-app.yaml` when the bundle is one folder holding the manifest: a common
/// mistake worth naming.
fn find_nested_manifest(root: &Path) -> Option<String> {
    let entries = fs::read_dir(root).ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let nested = entry.path().join(MANIFEST_FILE);
        let is_dir = entry.file_type().ok()?.is_dir();
        (is_dir && nested.is_file())
            .then(|| format!("{}/{MANIFEST_FILE}", entry.file_name().to_string_lossy()))
    })
}

/// Every directory the manifest names exists inside the bundle.
fn check_paths(root: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    let mut named: Vec<(String, String)> = Vec::new();
    if let Some(mount) = &manifest.mount {
        for (url, dir) in &mount.static_dirs {
            named.push((format!("mount.static.{url}"), dir.clone()));
        }
    }
    if let Some(local) = &manifest.dependencies.local {
        named.push(("dependencies.local".into(), local.clone()));
    }
    let canonical_root = root.canonicalize().map_err(|error| BundleError::Read {
        file: root.display().to_string(),
        reason: error.to_string(),
    })?;
    for (key, dir) in named {
        let inside = root
            .join(&dir)
            .canonicalize()
            .is_ok_and(|path| path.starts_with(&canonical_root) && path.is_dir());
        if !inside {
            return Err(BundleError::MissingPath { key, path: dir });
        }
    }
    Ok(())
}
