//! The dashboard: one embedded HTML page (no build step) kept live by server-sent events.
//!
//! A single feed task turns the farm's change counter into snapshots (agents, recent
//! jobs, health), at most one per [`DEBOUNCE`], and publishes the newest one on a `watch`
//! channel. Each `/api/v1/events` stream sends the newest snapshot when it changes: a
//! slow browser skips intermediate snapshots instead of queueing them (bounded memory),
//! and no snapshot is built while nobody watches. After its first snapshot a stream
//! sends only what changed (`delta` events, see [`super::live`]), unless it skipped
//! updates, when it sends the whole snapshot again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use tokio::sync::watch;
use tracing::debug;

use super::live::{Differ, Update};
use super::{method_not_allowed, not_found};
use crate::auth::Caller;
use crate::changes::ChangeFeed;
use crate::service::Service;

/// Shortest time between two snapshots.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// A comment line is sent this often on an idle stream, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Agents in a snapshot.
const SNAPSHOT_AGENTS: u64 = 1_000;

/// Jobs in a snapshot (the newest).
const SNAPSHOT_JOBS: u64 = 100;

/// The page.
const INDEX_HTML: &str = include_str!("dashboard.html");

/// The newest dashboard snapshot, shared by every event stream.
#[derive(Clone)]
pub struct Feed {
    sender: Arc<watch::Sender<Arc<Update>>>,
}

impl Feed {
    /// Starts the feed task on the current arbiter.
    pub fn start(service: Service, changes: ChangeFeed) -> Self {
        let (sender, _) = watch::channel(Arc::new(Update {
            seq: 0,
            full: Arc::from("{}"),
            delta: None,
        }));
        let sender = Arc::new(sender);
        let feed = Self {
            sender: sender.clone(),
        };
        let mut change = changes.subscribe();
        actix_rt::spawn(async move {
            let mut differ = Differ::new();
            while change.changed().await.is_ok() {
                tokio::time::sleep(DEBOUNCE).await;
                change.borrow_and_update();
                if sender.receiver_count() == 0 {
                    differ.forget();
                    continue;
                }
                let update = differ.update(snapshot_value(&service).await);
                sender.send_replace(Arc::new(update));
            }
            debug!("dashboard feed ended");
        });
        feed
    }

    fn subscribe(&self) -> watch::Receiver<Arc<Update>> {
        self.sender.subscribe()
    }
}

/// Builds a snapshot: `{"agents": Page, "jobs": Page, "health": HealthView, "queues":
/// [QueueView]}`.
pub async fn snapshot(service: &Service) -> String {
    snapshot_value(service).await.to_string()
}

async fn snapshot_value(service: &Service) -> serde_json::Value {
    // One snapshot for every watcher: it shows what any viewer may see.
    let caller = Caller::feed();
    let agents = service.list_agents(&caller, SNAPSHOT_AGENTS, 0).await;
    let jobs = service.list_jobs(&caller, SNAPSHOT_JOBS, 0).await;
    let health = service.health(&caller).await;
    let queues = service.list_queues(&caller).await;
    // The apps in brief: enough for the page to know when to read an app again.
    let apps = service.list_apps(&caller).await.map(|apps| {
        apps.iter()
            .map(|app| {
                let placements: Vec<serde_json::Value> = app
                    .placements
                    .iter()
                    .map(|p| serde_json::json!([p.agent, p.online, p.state, p.current]))
                    .collect();
                serde_json::json!({
                    "name": app.name,
                    "current": app.current,
                    "releases": app.releases.len(),
                    "placements": placements,
                })
            })
            .collect::<Vec<_>>()
    });
    match (agents, jobs, health, queues, apps) {
        (Ok(agents), Ok(jobs), Ok(health), Ok(queues), Ok(apps)) => {
            serde_json::json!({ "agents": agents, "jobs": jobs, "health": health, "queues": queues, "apps": apps })
        }
        (agents, jobs, health, queues, apps) => {
            let error = [
                agents.err(),
                jobs.err(),
                health.err(),
                queues.err(),
                apps.err(),
            ]
            .into_iter()
            .flatten()
            .map(|e| e.message)
            .next()
            .unwrap_or_default();
            serde_json::json!({ "error": error })
        }
    }
}

fn event(data: &str) -> Bytes {
    Bytes::from(format!("event: snapshot\ndata: {data}\n\n"))
}

fn delta_event(data: &str) -> Bytes {
    Bytes::from(format!("event: delta\ndata: {data}\n\n"))
}

/// What a stream that last sent update `sent` sends for `update`: the delta when it
/// follows on, nothing when the delta is empty, else the whole snapshot.
fn next_event(sent: Option<u64>, update: &Update) -> Option<Bytes> {
    match &update.delta {
        Some(delta) if sent.is_some_and(|seq| seq + 1 == update.seq) => {
            (delta.as_ref() != "{}").then(|| delta_event(delta))
        }
        _ => Some(event(&update.full)),
    }
}

/// Registers `/` (the events stream lives in the API scope, see [`events`]).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .default_service(web::to(|| method_not_allowed("GET"))),
    )
    .service(
        web::resource("/login")
            .route(web::get().to(super::auth::login_link))
            .route(web::post().to(super::auth::login))
            .default_service(web::to(|| method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource("/logout")
            .route(web::post().to(super::auth::logout))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .default_service(web::to(not_found));
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML)
}

/// `GET /api/v1/events`: server-sent `snapshot` events, the first one at once, then
/// `delta` events with what changed.
#[utoipa::path(get, path = "/api/v1/events", tag = "farm",
    responses((status = 200, description = "Server-sent events: `snapshot` {agents, jobs, health, queues, apps}, one at once, then `delta` with the parts that changed ({agents?, health?, queues?, apps?, jobs?: {ids?, total?, changed?}}: `ids` the newest jobs in order when it changed, `changed` the jobs whose view changed); a `snapshot` again after updates the stream skipped", content_type = "text/event-stream", body = String)))]
pub async fn events(service: web::Data<Service>, feed: web::Data<Feed>) -> HttpResponse {
    let mut receiver = feed.subscribe();
    receiver.borrow_and_update();
    let first = snapshot(&service).await;
    // The first snapshot is newer than the feed's last update: the next update goes
    // whole (`sent` is none), the ones after it as deltas.
    let stream = futures::stream::unfold(
        (Some(first), receiver, None::<u64>),
        |(first, mut receiver, mut sent)| async move {
            if let Some(data) = first {
                return Some((Ok::<_, Infallible>(event(&data)), (None, receiver, sent)));
            }
            loop {
                match tokio::time::timeout(KEEPALIVE, receiver.changed()).await {
                    Ok(Ok(())) => {
                        let update = receiver.borrow_and_update().clone();
                        let next = next_event(sent, &update);
                        sent = Some(update.seq);
                        if let Some(bytes) = next {
                            return Some((Ok(bytes), (None, receiver, sent)));
                        }
                    }
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        let keepalive = Bytes::from_static(b": keepalive\n\n");
                        return Some((Ok(keepalive), (None, receiver, sent)));
                    }
                }
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}
