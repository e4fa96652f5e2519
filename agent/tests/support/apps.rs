//! Helpers of the deploy tests: bundles built in the test, a master side that serves them
//! piece by piece, agents with a managed web server, and plain HTTP requests.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use furrow_agent::{AgentConfig, WebServerConfig, WebServerKind, WebServerMode};
use furrow_protocol::apps::{AppDeployment, AppReport, BUNDLE_CHUNK, BundleChunk};
use furrow_protocol::{AgentMessage, MasterMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::MasterConn;

/// How long a deployment may take (a failing health check waits 30 s before it reverts).
pub const DEPLOY_DEADLINE: Duration = Duration::from_secs(75);

/// A bundle archive and its content address.
#[derive(Clone)]
pub struct TestBundle {
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl TestBundle {
    /// A `.tar.gz` of `files` (path, contents).
    pub fn tar_gz(files: &[(&str, &str)]) -> Self {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for (path, contents) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path, contents.as_bytes())
                .unwrap();
        }
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        let digest = furrow_deploy::sha256_hex(&mut bytes.as_slice()).unwrap();
        Self { bytes, digest }
    }

    /// The deployment of this bundle as `release` of `app` with `config`.
    pub fn deployment(&self, app: &str, release: u32, config: Option<&str>) -> AppDeployment {
        AppDeployment {
            app: app.into(),
            release,
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            config: config.map(str::to_string),
            reason: format!("test deploys release {release}"),
        }
    }
}

/// The Python app of the tests: answers its configured greeting under `/hello` and `ok`
/// at `/healthz`, 404 elsewhere.
pub const APP_PY: &str = r#"import http.server, os
greeting = "?"
with open(os.environ["FURROW_APP_CONFIG_FILE"]) as config:
    for line in config:
        key, sep, value = line.partition(":")
        if sep and key.strip() == "greeting":
            greeting = value.strip().strip('"')
print("serving", greeting, "on", os.environ["PORT"], flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/hello" or self.path.startswith("/hello/"):
            body = greeting.encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// The config spec of the Python app.
pub const SPEC_YAML: &str = "fields:\n  greeting: {type: string, default: hello}\n";

/// The Python app's bundle, with `health` as its health path.
pub fn python_app(version: &str, health: &str) -> TestBundle {
    let manifest = format!(
        "name: hello\nversion: \"{version}\"\nprocesses:\n  web:\n    command: [\"python3\", \"src/app.py\"]\n    listen: port\n    health: {health}\n    stop_grace: 2s\nmount:\n  path: /hello\n  process: web\n"
    );
    TestBundle::tar_gz(&[
        ("furrow-app.yaml", &manifest),
        ("config.spec.yaml", SPEC_YAML),
        ("src/app.py", APP_PY),
    ])
}

/// A static site mounted at `/site`.
pub fn static_site(text: &str) -> TestBundle {
    let manifest =
        "name: site\nversion: \"1\"\nmount:\n  path: /site\n  static: {\"/site\": \"static\"}\n";
    TestBundle::tar_gz(&[("furrow-app.yaml", manifest), ("static/index.html", text)])
}

/// A directory the web servers' workers (`www-data` as root) can read through.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("furrow-agent-apps-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent configuration with a managed `kind` web server on a free port, and app
/// ports chosen by this process's id in 12000..20000 (tests run in parallel processes).
pub fn agent_config(master: &str, state: &Path, kind: WebServerKind) -> AgentConfig {
    let mut config = AgentConfig::new(master, state);
    config.detect_software = false;
    let start = 12_000 + (std::process::id() % 400) as u16 * 20;
    config.webserver = Some(WebServerConfig {
        kind,
        address: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        mode: WebServerMode::Managed,
        app_ports: start..=start + 19,
    });
    config
}

/// The web server port of an agent configuration.
pub fn web_port(config: &AgentConfig) -> u16 {
    config.webserver.as_ref().unwrap().address.port()
}

impl MasterConn {
    /// Reads the agent's messages, answering bundle requests from `bundles`, until an
    /// app report satisfies `wanted`; returns it. Fails after [`DEPLOY_DEADLINE`].
    pub async fn until_report(
        &mut self,
        bundles: &[&TestBundle],
        wanted: impl Fn(&AppReport) -> bool,
    ) -> AppReport {
        self.until_report_with_others(bundles, wanted).await.0
    }

    /// As [`MasterConn::until_report`], with the other messages read meanwhile (bundle
    /// requests and heartbeats left out).
    pub async fn until_report_with_others(
        &mut self,
        bundles: &[&TestBundle],
        wanted: impl Fn(&AppReport) -> bool,
    ) -> (AppReport, Vec<AgentMessage>) {
        let mut others = Vec::new();
        let by_digest: HashMap<&str, &TestBundle> =
            bundles.iter().map(|b| (b.digest.as_str(), *b)).collect();
        let deadline = tokio::time::Instant::now() + DEPLOY_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let message = tokio::time::timeout_at(deadline, self.recv_any())
                .await
                .unwrap_or_else(|_| panic!("no matching app report in time; saw {seen:#?}"));
            match message {
                AgentMessage::FetchBundle(request) => {
                    let chunk = match by_digest.get(request.digest.as_str()) {
                        Some(bundle) => {
                            let start = request.offset as usize;
                            let end = (start + BUNDLE_CHUNK).min(bundle.bytes.len());
                            BundleChunk {
                                digest: request.digest.clone(),
                                offset: request.offset,
                                total: bundle.bytes.len() as u64,
                                data: bundle.bytes[start..end].to_vec(),
                                error: None,
                            }
                        }
                        None => BundleChunk {
                            digest: request.digest.clone(),
                            offset: request.offset,
                            total: 0,
                            data: Vec::new(),
                            error: Some("no such bundle".into()),
                        },
                    };
                    self.send(MasterMessage::Bundle(chunk)).await;
                }
                AgentMessage::AppReport(report) if wanted(&report) => return (report, others),
                AgentMessage::AppReport(report) => seen.push(report),
                AgentMessage::Heartbeat(_) => {}
                other => others.push(other),
            }
        }
    }
}

/// `GET path` on 127.0.0.1:`port`: the status and body; status 0 when nothing listens.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
