//! The `Apps` actor: the apps and their releases, where they are placed, and what the
//! agents report of them.
//!
//! Requests change the in-memory state first (so two of them never pick the same release
//! number), hand their rows to the store, and are answered once the rows are durable.
//! Agents speaking protocol 8 that announce a web server are placement candidates: an app
//! goes to every such agent whose tags include the app's and whose web server is of the
//! app's kind. Each of them is told the app's current release after it announces itself
//! and after every change; it fetches the bundle by digest if it lacks it, and reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use actix::prelude::*;
use furrow_deploy::{Config, Manifest, Spec, SpecFormat};
use furrow_protocol::{
    ApiError, AppAgentView, AppDeployment, AppEventView, AppLogBatch, AppReleaseView, AppReport,
    AppRollback, AppSelector, AppSpec, AppState, AppView, BundleChunk, BundleRequest,
    MasterMessage, WebServerView,
};
use serde_json::{Map, Value};
use tracing::{info, warn};
use uuid::Uuid;

use super::bundles::BundleStore;
use super::notify::{Notifier, Rule, compile};
use super::output::AppOutput;
use crate::auth::secrets::Sealer;
use crate::changes::ChangeFeed;
use crate::scheduler::{ToAgent, Write};
use crate::store::records::{AppEventRow, AppReleaseRow, AppRow, BulkWrite, from_ms, now_ms};
use crate::store::{CommitBatch, Flush, Store};

/// Web server kinds an app may name.
pub const WEBSERVER_KINDS: &[&str] = &["nginx", "apache", "lighttpd"];

/// Most tags an app's selector holds.
const MAX_TAGS: usize = 32;

/// An agent that may serve apps.
#[derive(Debug, Clone)]
struct ServingAgent {
    name: String,
    tags: Vec<String>,
    webserver: WebServerView,
    link: Recipient<ToAgent>,
}

/// One release as the actor keeps it.
#[derive(Debug)]
struct Release {
    row: AppReleaseRow,
    spec: Option<Spec>,
}

/// One app.
#[derive(Debug)]
struct App {
    row: AppRow,
    releases: BTreeMap<u32, Release>,
    /// Its notification rules, compiled.
    rules: Vec<Rule>,
}

impl App {
    fn places_on(&self, agent: &ServingAgent) -> bool {
        agent.webserver.kind == self.row.webserver
            && self.row.tags.iter().all(|tag| agent.tags.contains(tag))
    }

    fn current(&self) -> Option<&Release> {
        self.releases.get(&self.row.current_release?)
    }

    fn next_number(&self) -> u32 {
        self.releases.keys().next_back().map_or(1, |n| n + 1)
    }
}

/// What a checked bundle brings to a new release (made by the service, which opens the
/// bundle on a blocking thread and keeps its file).
#[derive(Debug, Clone)]
pub struct PreparedRelease {
    /// The app its manifest names.
    pub app: String,
    /// Its version.
    pub version: String,
    /// Its SHA-256.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The manifest's text.
    pub manifest: String,
    /// The spec's text and format, if it has one.
    pub spec: Option<(String, SpecFormat)>,
}

/// The `Apps` actor. See the module documentation.
pub struct Apps {
    store: Addr<Store>,
    bundles: BundleStore,
    output: AppOutput,
    sealer: Sealer,
    apps: BTreeMap<String, App>,
    agents: HashMap<Uuid, ServingAgent>,
    reports: HashMap<(String, Uuid), (String, AppReport)>,
    next_event: i64,
    changes: ChangeFeed,
    notifier: Notifier,
}

fn spec_format_name(format: SpecFormat) -> &'static str {
    match format {
        SpecFormat::Yaml => "yaml",
        SpecFormat::Ini => "ini",
    }
}

fn parse_spec(row: &AppReleaseRow) -> Option<Spec> {
    let text = row.spec.as_deref()?;
    let format = match row.spec_format.as_deref() {
        Some("ini") => SpecFormat::Ini,
        _ => SpecFormat::Yaml,
    };
    match Spec::parse(text, format) {
        Ok(spec) => Some(spec),
        Err(e) => {
            warn!(app = %row.app, release = row.number, error = %e, "stored config spec no longer parses");
            None
        }
    }
}

fn not_found(app: &str) -> ApiError {
    ApiError::not_found(format!("no app named `{app}`"))
}

/// Checks an app name as bundles' manifests spell it.
pub fn check_app_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "name: `{name}` is not an app name (1 to 63 lower-case letters, digits, `-` and `_`, starting with a letter or digit)"
        )))
    }
}

impl Apps {
    /// The actor over the stored apps and releases; bundles and output under `data_dir`.
    pub fn new(
        store: Addr<Store>,
        data_dir: PathBuf,
        apps: Vec<AppRow>,
        releases: Vec<AppReleaseRow>,
        next_event: i64,
        changes: ChangeFeed,
    ) -> std::io::Result<Self> {
        let bundles = BundleStore::open(&data_dir.join("apps").join("bundles"))?;
        // Uploads in pieces do not outlive the master: their clients start again.
        match std::fs::remove_dir_all(data_dir.join("apps").join("uploads")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let sealer = Sealer::load_or_create(&data_dir).map_err(std::io::Error::other)?;
        let mut table: BTreeMap<String, App> = apps
            .into_iter()
            .map(|row| {
                // Rules were checked when they were set.
                let rules = compile(&row.notifications).unwrap_or_default();
                (
                    row.name.clone(),
                    App {
                        row,
                        releases: BTreeMap::new(),
                        rules,
                    },
                )
            })
            .collect();
        for row in releases {
            if let Some(app) = table.get_mut(&row.app) {
                let spec = parse_spec(&row);
                app.releases.insert(row.number, Release { row, spec });
            }
        }
        Ok(Self {
            store,
            bundles,
            output: AppOutput::new(data_dir.join("logs").join("apps")),
            sealer,
            apps: table,
            agents: HashMap::new(),
            reports: HashMap::new(),
            next_event,
            changes,
            notifier: Notifier::start()?,
        })
    }

    /// Hands rows to the store, for its next group commit.
    fn send_rows(&self, writes: Vec<BulkWrite>) {
        self.store.do_send(CommitBatch {
            writes: writes.into_iter().map(Write::Bulk).collect(),
            notify: None,
        });
    }

    /// Hands rows to the store; the answer waits for them to be durable.
    fn write(
        &self,
        writes: Vec<BulkWrite>,
    ) -> impl Future<Output = Result<(), ApiError>> + 'static {
        self.send_rows(writes);
        let store = self.store.clone();
        async move {
            store
                .send(Flush)
                .await
                .map_err(|e| ApiError::unavailable(format!("the master is shutting down: {e}")))?
        }
    }

    fn event(
        &mut self,
        app: &str,
        by: &str,
        action: &str,
        release: Option<u32>,
        detail: String,
    ) -> BulkWrite {
        self.next_event += 1;
        BulkWrite::AppEvent(AppEventRow {
            id: self.next_event,
            app: app.to_string(),
            at: now_ms(),
            by: by.to_string(),
            action: action.to_string(),
            release,
            detail,
        })
    }

    /// The configuration of a release with its secrets opened.
    fn open_config(&self, release: &Release) -> Map<String, Value> {
        let mut map: Map<String, Value> =
            serde_json::from_str(&release.row.config).unwrap_or_default();
        if let Some(spec) = &release.spec {
            for field in spec.fields().filter(|f| f.is_secret()) {
                if let Some(Value::String(sealed)) = map.get(field.name()) {
                    let opened = self.sealer.open(sealed).unwrap_or_default();
                    map.insert(field.name().to_string(), Value::String(opened));
                }
            }
        }
        map
    }

    /// A checked configuration as stored: JSON with its secrets sealed.
    fn seal_config(&self, spec: Option<&Spec>, config: &Config) -> String {
        let mut map = config.to_input();
        if let Some(spec) = spec {
            for field in spec.fields().filter(|f| f.is_secret()) {
                if let Some(Value::String(plain)) = map.get(field.name()) {
                    let sealed = self.sealer.seal(plain);
                    map.insert(field.name().to_string(), Value::String(sealed));
                }
            }
        }
        Value::Object(map).to_string()
    }

    /// A release's configuration checked against its spec.
    fn config_of(&self, release: &Release) -> Result<Config, String> {
        match &release.spec {
            Some(spec) => spec
                .validate(&self.open_config(release))
                .map_err(|problems| furrow_deploy::join_problems(&problems)),
            None => Ok(Config::empty()),
        }
    }

    /// What agents are told of `app`'s current release.
    fn deployment(&self, app: &App, reason: &str) -> Option<AppDeployment> {
        let release = app.current()?;
        let config = match (&release.spec, self.config_of(release)) {
            (Some(spec), Ok(config)) => Some(spec.render(&config)),
            (None, _) => None,
            (Some(_), Err(e)) => {
                warn!(app = %app.row.name, release = release.row.number, error = %e, "stored configuration no longer checks");
                return None;
            }
        };
        Some(AppDeployment {
            app: app.row.name.clone(),
            release: release.row.number,
            digest: release.row.digest.clone(),
            size: release.row.size,
            config,
            reason: reason.to_string(),
        })
    }

    /// Tells every agent `app` is placed on to serve its current release.
    fn push(&self, name: &str, reason: &str) {
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let Some(deployment) = self.deployment(app, reason) else {
            return;
        };
        for (id, agent) in &self.agents {
            if app.places_on(agent) {
                info!(app = %name, release = deployment.release, agent = %id, "asking an agent to serve a release");
                agent
                    .link
                    .do_send(ToAgent(MasterMessage::Deploy(deployment.clone())));
            }
        }
    }

    fn placements(&self, app: &App) -> Vec<AppAgentView> {
        let mut views: BTreeMap<Uuid, AppAgentView> = BTreeMap::new();
        for (id, agent) in &self.agents {
            if app.places_on(agent) {
                views.insert(
                    *id,
                    AppAgentView {
                        agent: *id,
                        name: agent.name.clone(),
                        online: true,
                        target: app.row.current_release,
                        current: None,
                        state: None,
                        message: None,
                        instances: Vec::new(),
                        mount: None,
                    },
                );
            }
        }
        for ((name, id), (agent_name, report)) in &self.reports {
            if name != &app.row.name || report.state == AppState::Removed {
                continue;
            }
            let view = views.entry(*id).or_insert_with(|| AppAgentView {
                agent: *id,
                name: agent_name.clone(),
                online: false,
                target: Some(report.target),
                current: None,
                state: None,
                message: None,
                instances: Vec::new(),
                mount: None,
            });
            view.target = Some(report.target);
            view.current = report.current;
            view.state = Some(report.state);
            view.message = report.message.clone();
            view.instances = report.instances.clone();
            view.mount = report.mount.clone();
        }
        views.into_values().collect()
    }

    fn release_view(&self, release: &Release) -> AppReleaseView {
        let mut config: Map<String, Value> =
            serde_json::from_str(&release.row.config).unwrap_or_default();
        if let Some(spec) = &release.spec {
            for field in spec.fields().filter(|f| f.is_secret()) {
                if config.contains_key(field.name()) {
                    config.insert(
                        field.name().to_string(),
                        Value::String(furrow_deploy::MASK.into()),
                    );
                }
            }
        }
        AppReleaseView {
            release: release.row.number,
            version: release.row.version.clone(),
            digest: release.row.digest.clone(),
            size: release.row.size,
            source: release.row.source.clone(),
            created_by: release.row.created_by.clone(),
            created_at: from_ms(release.row.created_at),
            config: Value::Object(config).into(),
        }
    }

    fn view(&self, app: &App) -> AppView {
        AppView {
            name: app.row.name.clone(),
            agents: AppSelector {
                tags: app.row.tags.clone(),
            },
            webserver: app.row.webserver.clone(),
            current: app.row.current_release,
            releases: app
                .releases
                .values()
                .rev()
                .map(|release| self.release_view(release))
                .collect(),
            placements: self.placements(app),
            history: Vec::new(),
            notifications: app.row.notifications.clone(),
            spec: app
                .current()
                .and_then(|r| r.spec.as_ref())
                .map(|spec| serde_json::to_value(spec.describe()).unwrap_or(Value::Null))
                .unwrap_or(Value::Null)
                .into(),
        }
    }

    /// Makes `number` the current release of `name`: stored, then pushed.
    fn switch(
        &mut self,
        name: &str,
        number: u32,
        mut writes: Vec<BulkWrite>,
    ) -> impl Future<Output = Result<(), ApiError>> + 'static {
        if let Some(app) = self.apps.get_mut(name) {
            app.row.current_release = Some(number);
            writes.push(BulkWrite::PutApp(app.row.clone()));
        }
        let stored = self.write(writes);
        // Once its history row is durable too, so a page that reads the app on the
        // change sees the whole of it.
        let changes = self.changes.clone();
        async move {
            stored.await?;
            changes.bump();
            Ok(())
        }
    }
}

impl Actor for Apps {
    type Context = Context<Self>;
}

impl actix::Supervised for Apps {}

/// An agent announced a web server (protocol 8): it may serve apps.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentServes {
    /// The agent.
    pub agent_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its tags in effect.
    pub tags: Vec<String>,
    /// Its web server.
    pub webserver: WebServerView,
    /// Its session.
    pub link: Recipient<ToAgent>,
}

impl Handler<AgentServes> for Apps {
    type Result = ();

    fn handle(&mut self, msg: AgentServes, _ctx: &mut Context<Self>) {
        let agent = ServingAgent {
            name: msg.name,
            tags: msg.tags,
            webserver: msg.webserver,
            link: msg.link,
        };
        for app in self.apps.values() {
            if app.places_on(&agent)
                && let Some(deployment) = self.deployment(app, "the agent connected")
            {
                agent
                    .link
                    .do_send(ToAgent(MasterMessage::Deploy(deployment)));
            }
        }
        self.agents.insert(msg.agent_id, agent);
        self.changes.bump();
    }
}

/// An agent's tags changed through the API.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentTagsChanged {
    /// The agent.
    pub agent_id: Uuid,
    /// Its tags now.
    pub tags: Vec<String>,
}

impl Handler<AgentTagsChanged> for Apps {
    type Result = ();

    fn handle(&mut self, msg: AgentTagsChanged, _ctx: &mut Context<Self>) {
        let Some(before) = self.agents.get(&msg.agent_id).cloned() else {
            return;
        };
        let after = ServingAgent {
            tags: msg.tags,
            ..before.clone()
        };
        for app in self.apps.values() {
            match (app.places_on(&before), app.places_on(&after)) {
                (false, true) => {
                    if let Some(deployment) = self.deployment(app, "the agent's tags changed") {
                        after
                            .link
                            .do_send(ToAgent(MasterMessage::Deploy(deployment)));
                    }
                }
                (true, false) => after
                    .link
                    .do_send(ToAgent(MasterMessage::Undeploy(app.row.name.clone()))),
                _ => {}
            }
        }
        self.agents.insert(msg.agent_id, after);
        self.changes.bump();
    }
}

/// An agent's connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentLeft(pub Uuid);

impl Handler<AgentLeft> for Apps {
    type Result = ();

    fn handle(&mut self, AgentLeft(agent_id): AgentLeft, _ctx: &mut Context<Self>) {
        if self.agents.remove(&agent_id).is_some() {
            self.changes.bump();
        }
    }
}

/// An agent reported how an app stands there.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportFrom {
    /// The agent.
    pub agent_id: Uuid,
    /// Its name.
    pub agent_name: String,
    /// The report.
    pub report: AppReport,
}

impl Handler<ReportFrom> for Apps {
    type Result = ();

    fn handle(&mut self, msg: ReportFrom, _ctx: &mut Context<Self>) {
        let report = msg.report;
        let Some(app) = self.apps.get(&report.app) else {
            return;
        };
        let name = app.row.name.clone();
        let key = (name.clone(), msg.agent_id);
        let before = self.reports.get(&key).map(|(_, r)| (r.state, r.target));
        let now = (report.state, report.target);
        if before != Some(now) && report.state != AppState::Deploying {
            let action = match report.state {
                AppState::Running => "running",
                AppState::Reverted => "reverted",
                AppState::Failed => "failed",
                AppState::Removed => "removed",
                AppState::Deploying => "deploying",
            };
            let detail = match &report.message {
                Some(message) => format!("on {}: {message}", msg.agent_name),
                None => format!("on {}", msg.agent_name),
            };
            let by = format!("agent {}", msg.agent_name);
            let event = self.event(&name, &by, action, Some(report.target), detail);
            self.send_rows(vec![event]);
        }
        if report.state == AppState::Removed {
            self.reports.remove(&key);
        } else {
            self.reports.insert(key, (msg.agent_name, report));
        }
        self.changes.bump();
    }
}

/// An agent asked for a piece of a bundle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BundleWanted {
    /// The agent.
    pub agent_id: Uuid,
    /// What it asked for.
    pub request: BundleRequest,
}

impl Handler<BundleWanted> for Apps {
    type Result = ();

    fn handle(&mut self, msg: BundleWanted, ctx: &mut Context<Self>) {
        let Some(agent) = self.agents.get(&msg.agent_id) else {
            return;
        };
        let digest = msg.request.digest.clone();
        // An agent gets only the bundles of apps placed on it.
        let allowed = self.apps.values().any(|app| {
            app.places_on(agent) && app.releases.values().any(|r| r.row.digest == digest)
        });
        let link = agent.link.clone();
        if !allowed {
            link.do_send(ToAgent(MasterMessage::Bundle(BundleChunk {
                digest,
                offset: msg.request.offset,
                total: 0,
                data: Vec::new(),
                error: Some("no bundle with that digest for this agent".into()),
            })));
            return;
        }
        let bundles = self.bundles.clone();
        let offset = msg.request.offset;
        let read =
            tokio::task::spawn_blocking(move || bundles.read(&digest, offset).map(|r| (digest, r)));
        ctx.spawn(
            async move {
                let chunk = match read.await {
                    Ok(Ok((digest, (data, total)))) => BundleChunk {
                        digest,
                        offset,
                        total,
                        data,
                        error: None,
                    },
                    Ok(Err(e)) => BundleChunk {
                        digest: msg.request.digest,
                        offset,
                        total: 0,
                        data: Vec::new(),
                        error: Some(format!("cannot read the bundle: {e}")),
                    },
                    Err(e) => BundleChunk {
                        digest: msg.request.digest,
                        offset,
                        total: 0,
                        data: Vec::new(),
                        error: Some(format!("cannot read the bundle: {e}")),
                    },
                };
                link.do_send(ToAgent(MasterMessage::Bundle(chunk)));
            }
            .into_actor(self),
        );
    }
}

/// Output lines of an app from an agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OutputFrom {
    /// The agent's name.
    pub agent_name: String,
    /// The lines.
    pub batch: AppLogBatch,
}

impl Handler<OutputFrom> for Apps {
    type Result = ();

    fn handle(&mut self, msg: OutputFrom, _ctx: &mut Context<Self>) {
        let Some(app) = self.apps.get_mut(&msg.batch.app) else {
            return;
        };
        let now = std::time::Instant::now();
        let batch = &msg.batch;
        for rule in &mut app.rules {
            for line in &batch.lines {
                if let Some(suppressed) = rule.matches(&line.text, now) {
                    let body = serde_json::json!({
                        "app": batch.app,
                        "release": batch.release,
                        "agent": msg.agent_name,
                        "instance": format!("{}.{}", batch.process, batch.instance),
                        "stream": format!("{:?}", line.stream).to_lowercase(),
                        "text": line.text,
                        "at_ms": line.at_ms,
                        "pattern": rule.spec.pattern,
                        "suppressed": suppressed,
                    });
                    self.notifier.post(&rule.spec.webhook, body);
                }
            }
        }
        if let Err(e) = self.output.append(&msg.agent_name, &msg.batch) {
            warn!(app = %msg.batch.app, error = %e, "cannot keep an app's output");
        }
    }
}

/// Create an app.
#[derive(Message)]
#[rtype(result = "Result<AppView, ApiError>")]
pub struct CreateApp {
    /// What.
    pub spec: AppSpec,
    /// Who.
    pub by: String,
}

impl Handler<CreateApp> for Apps {
    type Result = ResponseFuture<Result<AppView, ApiError>>;

    fn handle(&mut self, msg: CreateApp, _ctx: &mut Context<Self>) -> Self::Result {
        let spec = msg.spec;
        let checked = (|| {
            check_app_name(&spec.name)?;
            if !WEBSERVER_KINDS.contains(&spec.webserver.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "webserver: must be one of {}, got `{}`",
                    WEBSERVER_KINDS.join(", "),
                    spec.webserver
                )));
            }
            if spec.agents.tags.len() > MAX_TAGS {
                return Err(ApiError::bad_request(format!(
                    "agents.tags: at most {MAX_TAGS} tags"
                )));
            }
            for tag in &spec.agents.tags {
                crate::scheduler::policy::requirements::check_tag(tag, "agents.tags")
                    .map_err(ApiError::bad_request)?;
            }
            if self.apps.contains_key(&spec.name) {
                return Err(ApiError::conflict(format!(
                    "an app named `{}` exists already",
                    spec.name
                )));
            }
            Ok(())
        })();
        if let Err(e) = checked {
            return Box::pin(async move { Err(e) });
        }
        let row = AppRow {
            name: spec.name.clone(),
            tags: spec.agents.tags.clone(),
            webserver: spec.webserver.clone(),
            current_release: None,
            notifications: Vec::new(),
            created_by: msg.by.clone(),
            created_at: now_ms(),
        };
        let event = self.event(
            &spec.name,
            &msg.by,
            "created",
            None,
            format!(
                "on agents tagged [{}], mounted on {}",
                spec.agents.tags.join(", "),
                spec.webserver
            ),
        );
        let app = App {
            row: row.clone(),
            releases: BTreeMap::new(),
            rules: Vec::new(),
        };
        let view = self.view(&app);
        self.apps.insert(spec.name.clone(), app);
        self.changes.bump();
        let stored = self.write(vec![BulkWrite::PutApp(row), event]);
        Box::pin(async move {
            stored.await?;
            Ok(view)
        })
    }
}

/// Add a release from a checked bundle (its file already kept), with the configuration
/// of the release before it checked against the new spec.
#[derive(Message)]
#[rtype(result = "Result<AppReleaseView, ApiError>")]
pub struct AddRelease {
    /// The bundle.
    pub prepared: PreparedRelease,
    /// `upload` or `inbox`.
    pub source: String,
    /// Who.
    pub by: String,
}

impl Handler<AddRelease> for Apps {
    type Result = ResponseFuture<Result<AppReleaseView, ApiError>>;

    fn handle(&mut self, msg: AddRelease, _ctx: &mut Context<Self>) -> Self::Result {
        let prepared = msg.prepared;
        let result = (|| {
            let app = self.apps.get(&prepared.app).ok_or_else(|| {
                ApiError::not_found(format!(
                    "the bundle is for app `{}`, which does not exist; create it first",
                    prepared.app
                ))
            })?;
            let spec = match &prepared.spec {
                Some((text, format)) => Some(
                    Spec::parse(text, *format)
                        .map_err(|e| ApiError::bad_request(format!("config spec: {e}")))?,
                ),
                None => None,
            };
            // The configuration carries over: the previous release's values, checked
            // against the new spec (its defaults fill new fields).
            let previous = app
                .current()
                .map(|release| self.open_config(release))
                .unwrap_or_default();
            let config = match &spec {
                Some(spec) => {
                    let kept: Map<String, Value> = previous
                        .into_iter()
                        .filter(|(name, _)| spec.field(name).is_some())
                        .collect();
                    spec.validate(&kept).map_err(|problems| {
                        ApiError::bad_request(format!(
                            "the configuration does not fit the new release's spec; set it with the release: {}",
                            furrow_deploy::join_problems(&problems)
                        ))
                    })?
                }
                None => Config::empty(),
            };
            Ok((app.next_number(), spec, config))
        })();
        let (number, spec, config) = match result {
            Ok(ok) => ok,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let row = AppReleaseRow {
            app: prepared.app.clone(),
            number,
            version: prepared.version.clone(),
            digest: prepared.digest.clone(),
            size: prepared.size,
            source: msg.source.clone(),
            manifest: prepared.manifest.clone(),
            spec: prepared.spec.as_ref().map(|(text, _)| text.clone()),
            spec_format: prepared
                .spec
                .as_ref()
                .map(|(_, f)| spec_format_name(*f).to_string()),
            config: self.seal_config(spec.as_ref(), &config),
            created_by: msg.by.clone(),
            created_at: now_ms(),
        };
        let event = self.event(
            &prepared.app,
            &msg.by,
            "deployed",
            Some(number),
            format!(
                "version {} from {} ({})",
                prepared.version,
                msg.source,
                &prepared.digest[..12.min(prepared.digest.len())]
            ),
        );
        let release = Release {
            row: row.clone(),
            spec,
        };
        let view = self.release_view(&release);
        if let Some(app) = self.apps.get_mut(&prepared.app) {
            app.releases.insert(number, release);
        }
        let stored = self.switch(
            &prepared.app,
            number,
            vec![BulkWrite::PutAppRelease(row), event],
        );
        self.push(
            &prepared.app,
            &format!("release {number} deployed by {}", msg.by),
        );
        Box::pin(async move {
            stored.await?;
            Ok(view)
        })
    }
}

/// Set an app's configuration: a new release of the current bundle.
#[derive(Message)]
#[rtype(result = "Result<AppReleaseView, ApiError>")]
pub struct Configure {
    /// The app.
    pub app: String,
    /// The values (a mask for a secret keeps its value).
    pub values: Map<String, Value>,
    /// Who.
    pub by: String,
}

impl Handler<Configure> for Apps {
    type Result = ResponseFuture<Result<AppReleaseView, ApiError>>;

    fn handle(&mut self, msg: Configure, _ctx: &mut Context<Self>) -> Self::Result {
        let result = (|| {
            let app = self.apps.get(&msg.app).ok_or_else(|| not_found(&msg.app))?;
            let current = app.current().ok_or_else(|| {
                ApiError::conflict(format!(
                    "app `{}` has no release yet: deploy a bundle first",
                    msg.app
                ))
            })?;
            let spec = current.spec.as_ref().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "app `{}` has no config spec: it takes no configuration",
                    msg.app
                ))
            })?;
            let previous = self.config_of(current).unwrap_or_else(|_| Config::empty());
            let config = spec
                .validate_update(&msg.values, &previous)
                .map_err(|problems| {
                    ApiError::bad_request(furrow_deploy::join_problems(&problems))
                })?;
            let mut row = current.row.clone();
            row.number = app.next_number();
            row.source = "config".into();
            row.config = self.seal_config(Some(spec), &config);
            row.created_by = msg.by.clone();
            row.created_at = now_ms();
            Ok((row, current.spec.clone()))
        })();
        let (row, spec) = match result {
            Ok(ok) => ok,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let number = row.number;
        let event = self.event(
            &msg.app,
            &msg.by,
            "configured",
            Some(number),
            "a new configuration".into(),
        );
        let release = Release {
            row: row.clone(),
            spec,
        };
        let view = self.release_view(&release);
        if let Some(app) = self.apps.get_mut(&msg.app) {
            app.releases.insert(number, release);
        }
        let stored = self.switch(&msg.app, number, vec![BulkWrite::PutAppRelease(row), event]);
        self.push(
            &msg.app,
            &format!("release {number}: configuration changed by {}", msg.by),
        );
        Box::pin(async move {
            stored.await?;
            Ok(view)
        })
    }
}

/// Serve an earlier release again.
#[derive(Message)]
#[rtype(result = "Result<u32, ApiError>")]
pub struct Rollback {
    /// The app.
    pub app: String,
    /// Which release.
    pub to: AppRollback,
    /// Who.
    pub by: String,
}

impl Handler<Rollback> for Apps {
    type Result = ResponseFuture<Result<u32, ApiError>>;

    fn handle(&mut self, msg: Rollback, _ctx: &mut Context<Self>) -> Self::Result {
        let result = (|| {
            let app = self.apps.get(&msg.app).ok_or_else(|| not_found(&msg.app))?;
            let current = app.row.current_release.ok_or_else(|| {
                ApiError::conflict(format!("app `{}` has no release yet", msg.app))
            })?;
            let target = match msg.to.release {
                Some(n) if app.releases.contains_key(&n) => n,
                Some(n) => {
                    return Err(ApiError::not_found(format!(
                        "release: app `{}` has no release {n} (it has {})",
                        msg.app,
                        app.releases
                            .keys()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                None => *app
                    .releases
                    .range(..current)
                    .next_back()
                    .map(|(n, _)| n)
                    .ok_or_else(|| {
                        ApiError::conflict(format!(
                            "app `{}` has no release before {current}",
                            msg.app
                        ))
                    })?,
            };
            if target == current {
                return Err(ApiError::conflict(format!(
                    "release {target} is already current"
                )));
            }
            Ok((current, target))
        })();
        let (current, target) = match result {
            Ok(ok) => ok,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let event = self.event(
            &msg.app,
            &msg.by,
            "rolled back",
            Some(target),
            format!("from release {current}"),
        );
        let stored = self.switch(&msg.app, target, vec![event]);
        self.push(
            &msg.app,
            &format!("rolled back to release {target} by {}", msg.by),
        );
        Box::pin(async move {
            stored.await?;
            Ok(target)
        })
    }
}

/// Delete an app: its agents remove it; its releases, history and output go.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct DeleteApp {
    /// The app.
    pub app: String,
}

impl Handler<DeleteApp> for Apps {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: DeleteApp, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(app) = self.apps.remove(&msg.app) else {
            let e = not_found(&msg.app);
            return Box::pin(async move { Err(e) });
        };
        for agent in self.agents.values() {
            if app.places_on(agent) {
                agent
                    .link
                    .do_send(ToAgent(MasterMessage::Undeploy(msg.app.clone())));
            }
        }
        self.reports.retain(|(name, _), _| name != &msg.app);
        if let Err(e) = self.output.remove(&msg.app) {
            warn!(app = %msg.app, error = %e, "cannot remove an app's output");
        }
        let keep: HashSet<String> = self
            .apps
            .values()
            .flat_map(|a| a.releases.values().map(|r| r.row.digest.clone()))
            .collect();
        if let Err(e) = self.bundles.retain(&keep) {
            warn!(error = %e, "cannot remove unused bundles");
        }
        self.changes.bump();
        let stored = self.write(vec![BulkWrite::DeleteApp(msg.app)]);
        Box::pin(stored)
    }
}

/// Replace an app's notification rules.
#[derive(Message)]
#[rtype(result = "Result<Vec<furrow_protocol::AppNotification>, ApiError>")]
pub struct SetNotifications {
    /// The app.
    pub app: String,
    /// Its rules, all of them.
    pub rules: Vec<furrow_protocol::AppNotification>,
    /// Who.
    pub by: String,
}

impl Handler<SetNotifications> for Apps {
    type Result = ResponseFuture<Result<Vec<furrow_protocol::AppNotification>, ApiError>>;

    fn handle(&mut self, msg: SetNotifications, _ctx: &mut Context<Self>) -> Self::Result {
        let rules = match compile(&msg.rules) {
            Ok(rules) => rules,
            Err(e) => return Box::pin(async move { Err(ApiError::bad_request(e)) }),
        };
        let Some(app) = self.apps.get_mut(&msg.app) else {
            let e = not_found(&msg.app);
            return Box::pin(async move { Err(e) });
        };
        app.rules = rules;
        app.row.notifications = msg.rules.clone();
        let row = app.row.clone();
        let event = self.event(
            &msg.app,
            &msg.by,
            "notifications",
            None,
            format!("{} rule(s)", msg.rules.len()),
        );
        self.changes.bump();
        let stored = self.write(vec![BulkWrite::PutApp(row), event]);
        let rules = msg.rules;
        Box::pin(async move {
            stored.await?;
            Ok(rules)
        })
    }
}

/// One app as it stands (its history is read from the store by the caller).
#[derive(Message)]
#[rtype(result = "Result<AppView, ApiError>")]
pub struct GetApp(pub String);

impl Handler<GetApp> for Apps {
    type Result = Result<AppView, ApiError>;

    fn handle(&mut self, GetApp(name): GetApp, _ctx: &mut Context<Self>) -> Self::Result {
        let app = self.apps.get(&name).ok_or_else(|| not_found(&name))?;
        Ok(self.view(app))
    }
}

/// Every app as it stands (without history).
#[derive(Message)]
#[rtype(result = "Vec<AppView>")]
pub struct ListApps;

impl Handler<ListApps> for Apps {
    type Result = Vec<AppView>;

    fn handle(&mut self, _msg: ListApps, _ctx: &mut Context<Self>) -> Self::Result {
        self.apps.values().map(|app| self.view(app)).collect()
    }
}

/// The current configuration of an app, secrets masked.
#[derive(Message)]
#[rtype(result = "Result<Map<String, Value>, ApiError>")]
pub struct GetConfig(pub String);

impl Handler<GetConfig> for Apps {
    type Result = Result<Map<String, Value>, ApiError>;

    fn handle(&mut self, GetConfig(name): GetConfig, _ctx: &mut Context<Self>) -> Self::Result {
        let app = self.apps.get(&name).ok_or_else(|| not_found(&name))?;
        Ok(app
            .current()
            .and_then(|release| match self.release_view(release).config.0 {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default())
    }
}

/// One recurrent task of an app's current release.
#[derive(Debug, Clone)]
pub struct RecurrentEntry {
    /// The app.
    pub app: String,
    /// Its current release.
    pub release: u32,
    /// The entry's name.
    pub name: String,
    /// Its period.
    pub every: std::time::Duration,
    /// What it runs.
    pub command: Vec<String>,
    /// The app's tags.
    pub tags: Vec<String>,
    /// The app's web server kind.
    pub webserver: String,
}

/// The recurrent tasks of every app's current release.
#[derive(Message)]
#[rtype(result = "Vec<RecurrentEntry>")]
pub struct RecurrentPlan;

impl Handler<RecurrentPlan> for Apps {
    type Result = Vec<RecurrentEntry>;

    fn handle(&mut self, _msg: RecurrentPlan, _ctx: &mut Context<Self>) -> Self::Result {
        let mut plan = Vec::new();
        for app in self.apps.values() {
            let Some(release) = app.current() else {
                continue;
            };
            let Ok(manifest) = Manifest::parse(&release.row.manifest) else {
                continue;
            };
            for entry in manifest.recurrent {
                plan.push(RecurrentEntry {
                    app: app.row.name.clone(),
                    release: release.row.number,
                    name: entry.name,
                    every: entry.every,
                    command: entry.command,
                    tags: app.row.tags.clone(),
                    webserver: app.row.webserver.clone(),
                });
            }
        }
        plan
    }
}

/// An app's history from the store, as the API shows it.
pub fn event_views(rows: Vec<AppEventRow>) -> Vec<AppEventView> {
    rows.into_iter()
        .map(|row| AppEventView {
            at: from_ms(row.at),
            by: row.by,
            action: row.action,
            release: row.release,
            detail: row.detail,
        })
        .collect()
}
