//! The service's requests about deployed apps: create, deploy a bundle, configure, roll
//! back, delete, and read their state, history and output.

use std::path::Path;

use furrow_deploy::{Bundle, SPEC_INI_FILE, SPEC_YAML_FILE, SpecFormat};
use furrow_protocol::{
    ApiError, AppLogLine, AppNotification, AppReleaseView, AppRollback, AppSpec, AppView, UserRole,
};
use serde_json::{Map, Value};

use super::{Service, mailbox_error, storage_error};
use crate::apps::bundles::BundleStore;
use crate::apps::output::{MAX_SEARCH_LINES, Search, search};
use crate::apps::{
    AddRelease, Configure, CreateApp, DeleteApp, GetApp, GetConfig, ListApps, PreparedRelease,
    Rollback, SetNotifications, event_views,
};
use crate::auth::Caller;

/// Largest bundle accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// How many events an app's view shows.
const HISTORY: u64 = 100;

/// Opens and checks a bundle (on a blocking thread), keeps its file under `data_dir`, and
/// returns what a release needs from it.
pub async fn prepare_bundle(data_dir: &Path, bytes: Vec<u8>) -> Result<PreparedRelease, ApiError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(ApiError::bad_request(format!(
            "the bundle is {} bytes, more than the {MAX_BUNDLE_BYTES} accepted",
            bytes.len()
        )));
    }
    let store = BundleStore::open(&data_dir.join("apps").join("bundles"))
        .map_err(|e| ApiError::unavailable(format!("cannot keep bundles: {e}")))?;
    let prepared = tokio::task::spawn_blocking(move || -> Result<PreparedRelease, ApiError> {
        let bundle = Bundle::from_bytes(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the bundle was refused: {e}")))?;
        let read = |name: &str| std::fs::read_to_string(bundle.root().join(name));
        let manifest = read(furrow_deploy::MANIFEST_FILE).map_err(|e| {
            ApiError::bad_request(format!("cannot read {}: {e}", furrow_deploy::MANIFEST_FILE))
        })?;
        let spec = match bundle.spec().map(|spec| spec.format()) {
            Some(SpecFormat::Yaml) => Some((read(SPEC_YAML_FILE), SpecFormat::Yaml)),
            Some(SpecFormat::Ini) => Some((read(SPEC_INI_FILE), SpecFormat::Ini)),
            None => None,
        };
        let spec = match spec {
            Some((Ok(text), format)) => Some((text, format)),
            Some((Err(e), _)) => {
                return Err(ApiError::bad_request(format!(
                    "cannot read the config spec: {e}"
                )));
            }
            None => None,
        };
        store
            .put(bundle.digest(), &bytes)
            .map_err(|e| ApiError::unavailable(format!("cannot keep the bundle: {e}")))?;
        Ok(PreparedRelease {
            app: bundle.name().to_string(),
            version: bundle.version().to_string(),
            digest: bundle.digest().to_string(),
            size: bytes.len() as u64,
            manifest,
            spec,
        })
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the bundle check stopped: {e}")))??;
    Ok(prepared)
}

impl Service {
    /// Creates an app (operators).
    pub async fn create_app(&self, caller: &Caller, spec: AppSpec) -> Result<AppView, ApiError> {
        caller.require(UserRole::Operator, "creating apps")?;
        let name = spec.name.clone();
        let view = self
            .inner
            .apps
            .send(CreateApp {
                spec,
                by: caller.user.clone(),
            })
            .await
            .map_err(mailbox_error)??;
        self.audit(caller, "app.create", format!("app {name}"));
        Ok(view)
    }

    /// Every app.
    pub async fn list_apps(&self, _caller: &Caller) -> Result<Vec<AppView>, ApiError> {
        self.inner.apps.send(ListApps).await.map_err(mailbox_error)
    }

    /// One app with its history.
    pub async fn get_app(&self, _caller: &Caller, name: &str) -> Result<AppView, ApiError> {
        let mut view = self
            .inner
            .apps
            .send(GetApp(name.to_string()))
            .await
            .map_err(mailbox_error)??;
        let events = self
            .inner
            .reader
            .app_events(name, HISTORY)
            .await
            .map_err(storage_error)?;
        view.history = event_views(events);
        Ok(view)
    }

    /// Makes a new release of app `name` from a bundle (operators). `source` says where
    /// it came from (`upload`, `inbox`).
    pub async fn deploy_app(
        &self,
        caller: &Caller,
        name: &str,
        bundle: Vec<u8>,
        source: &str,
    ) -> Result<AppReleaseView, ApiError> {
        caller.require(UserRole::Operator, "deploying apps")?;
        let prepared = prepare_bundle(&self.inner.data_dir, bundle).await?;
        if prepared.app != name {
            return Err(ApiError::bad_request(format!(
                "the bundle is for app `{}` (its furrow-app.yaml says so), not `{name}`",
                prepared.app
            )));
        }
        self.add_release(caller, prepared, source).await
    }

    /// Appends a piece to upload `upload` of the caller (operators); answers the bytes
    /// received so far. A piece must start where the upload ends.
    pub async fn upload_part(
        &self,
        caller: &Caller,
        upload: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, ApiError> {
        caller.require(UserRole::Operator, "deploying apps")?;
        let path = self.upload_path(caller, upload)?;
        let size = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(ApiError::unavailable(format!(
                    "cannot keep the upload: {e}"
                )));
            }
        };
        if offset != size {
            return Err(ApiError::conflict(format!(
                "offset: the upload holds {size} bytes, the piece starts at {offset}"
            )));
        }
        let total = size + data.len() as u64;
        if total > MAX_BUNDLE_BYTES as u64 {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::bad_request(format!(
                "the bundle is larger than the {MAX_BUNDLE_BYTES} bytes accepted"
            )));
        }
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot keep the upload: {e}")))?;
        file.write_all(data)
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot keep the upload: {e}")))?;
        Ok(total)
    }

    /// Makes a new release of app `name` from upload `upload` (operators); the upload
    /// goes either way.
    pub async fn deploy_upload(
        &self,
        caller: &Caller,
        name: &str,
        upload: &str,
    ) -> Result<AppReleaseView, ApiError> {
        caller.require(UserRole::Operator, "deploying apps")?;
        let path = self.upload_path(caller, upload)?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            ApiError::not_found(format!("upload: no upload `{upload}` of yours ({e})"))
        })?;
        let _ = tokio::fs::remove_file(&path).await;
        self.deploy_app(caller, name, bytes, "upload").await
    }

    /// The file of upload `upload` of `caller`, in `<data-dir>/apps/uploads/`.
    fn upload_path(&self, caller: &Caller, upload: &str) -> Result<std::path::PathBuf, ApiError> {
        if upload.is_empty()
            || upload.len() > 64
            || !upload.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ApiError::bad_request(
                "upload: must be 1 to 64 letters and digits",
            ));
        }
        let dir = self.inner.data_dir.join("apps").join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::unavailable(format!("cannot keep uploads: {e}")))?;
        let user: String = caller
            .user
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    b as char
                } else {
                    '_'
                }
            })
            .collect();
        Ok(dir.join(format!("{user}-{upload}.part")))
    }

    /// Makes a new release from a checked bundle.
    pub async fn add_release(
        &self,
        caller: &Caller,
        prepared: PreparedRelease,
        source: &str,
    ) -> Result<AppReleaseView, ApiError> {
        caller.require(UserRole::Operator, "deploying apps")?;
        let name = prepared.app.clone();
        let view = self
            .inner
            .apps
            .send(AddRelease {
                prepared,
                source: source.to_string(),
                by: caller.user.clone(),
            })
            .await
            .map_err(mailbox_error)??;
        self.audit(
            caller,
            "app.deploy",
            format!("app {name} release {}", view.release),
        );
        Ok(view)
    }

    /// The current configuration of an app, secrets masked.
    pub async fn app_config(
        &self,
        _caller: &Caller,
        name: &str,
    ) -> Result<Map<String, Value>, ApiError> {
        self.inner
            .apps
            .send(GetConfig(name.to_string()))
            .await
            .map_err(mailbox_error)?
    }

    /// Sets an app's configuration: a new release (operators). Every error is reported.
    pub async fn configure_app(
        &self,
        caller: &Caller,
        name: &str,
        values: Map<String, Value>,
    ) -> Result<AppReleaseView, ApiError> {
        caller.require(UserRole::Operator, "configuring apps")?;
        let view = self
            .inner
            .apps
            .send(Configure {
                app: name.to_string(),
                values,
                by: caller.user.clone(),
            })
            .await
            .map_err(mailbox_error)??;
        self.audit(
            caller,
            "app.configure",
            format!("app {name} release {}", view.release),
        );
        Ok(view)
    }

    /// Serves an earlier release again (operators); answers its number.
    pub async fn rollback_app(
        &self,
        caller: &Caller,
        name: &str,
        to: AppRollback,
    ) -> Result<u32, ApiError> {
        caller.require(UserRole::Operator, "rolling apps back")?;
        let release = self
            .inner
            .apps
            .send(Rollback {
                app: name.to_string(),
                to,
                by: caller.user.clone(),
            })
            .await
            .map_err(mailbox_error)??;
        self.audit(
            caller,
            "app.rollback",
            format!("app {name} release {release}"),
        );
        Ok(release)
    }

    /// Replaces an app's notification rules (operators); every problem is named.
    pub async fn set_app_notifications(
        &self,
        caller: &Caller,
        name: &str,
        rules: Vec<AppNotification>,
    ) -> Result<Vec<AppNotification>, ApiError> {
        caller.require(UserRole::Operator, "setting app notifications")?;
        let rules = self
            .inner
            .apps
            .send(SetNotifications {
                app: name.to_string(),
                rules,
                by: caller.user.clone(),
            })
            .await
            .map_err(mailbox_error)??;
        self.audit(caller, "app.notifications", format!("app {name}"));
        Ok(rules)
    }

    /// Deletes an app (operators): its agents remove it.
    pub async fn delete_app(&self, caller: &Caller, name: &str) -> Result<(), ApiError> {
        caller.require(UserRole::Operator, "deleting apps")?;
        self.inner
            .apps
            .send(DeleteApp {
                app: name.to_string(),
            })
            .await
            .map_err(mailbox_error)??;
        self.audit(caller, "app.delete", format!("app {name}"));
        Ok(())
    }

    /// The newest lines of an app's output matching `pattern` (a regular expression)
    /// read at or after `since_ms`.
    pub async fn app_logs(
        &self,
        caller: &Caller,
        name: &str,
        pattern: Option<&str>,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AppLogLine>, ApiError> {
        // The app must exist (and the caller may see it).
        self.inner
            .apps
            .send(GetApp(name.to_string()))
            .await
            .map_err(mailbox_error)??;
        let _ = caller;
        if limit == 0 || limit > MAX_SEARCH_LINES {
            return Err(ApiError::bad_request(format!(
                "limit: must be between 1 and {MAX_SEARCH_LINES}, got {limit}"
            )));
        }
        let pattern = pattern
            .filter(|p| !p.is_empty())
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ApiError::bad_request(format!("q: not a regular expression: {e}")))
            })
            .transpose()?;
        let dir = self.inner.data_dir.join("logs").join("apps");
        let name = name.to_string();
        let query = Search {
            pattern,
            since_ms,
            release: None,
            limit,
        };
        tokio::task::spawn_blocking(move || search(&dir, &name, &query))
            .await
            .map_err(|e| ApiError::unavailable(format!("the search stopped: {e}")))?
            .map_err(|e| ApiError::unavailable(format!("cannot read the app's output: {e}")))
    }
}
