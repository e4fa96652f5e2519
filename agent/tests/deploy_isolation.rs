//! An app deployed with `isolation: namespace` behind a managed nginx: it answers, over its
//! unix socket and through nginx, what it observes from inside its namespace — its uid,
//! no `/root`, no file of the host outside its release, its writable directory writable
//! (and owned by its per-app uid on the host), its release read-only, its configuration
//! readable.

mod support;

use std::os::unix::fs::MetadataExt;

use furrow_agent::{Agent, WebServerKind};
use furrow_protocol::apps::AppState;
use furrow_protocol::{AgentMessage, MasterMessage};
use serde_json::Value;
use support::TestMaster;
use support::apps::{TestBundle, agent_config, http_get, shared_tempdir, web_port};

/// Serves on `FURROW_APP_SOCKET`; `/boxed` answers the facts as JSON, `/healthz` `ok`.
const PROBE_PY: &str = r#"import http.server, json, os, socketserver
config = {}
with open(os.environ["FURROW_APP_CONFIG_FILE"]) as config_file:
    for line in config_file:
        key, sep, value = line.partition(":")
        if sep:
            config[key.strip()] = value.strip().strip('"')

def attempt(action):
    try:
        action()
        return True
    except OSError:
        return False

def write(path, text, mode="w"):
    with open(path, mode) as out:
        out.write(text)

def facts():
    data = os.path.join(os.environ["FURROW_APP_DATA_DIR"], "data")
    release = os.environ["FURROW_APP_DIR"]
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": os.getcwd(),
        "app_dir": release,
        "greeting": config.get("greeting"),
        "root_exists": os.path.exists("/root"),
        "root_listable": attempt(lambda: os.listdir("/root")),
        "outside_visible": os.path.exists(config.get("outside", "/nonexistent")),
        "data_written": attempt(lambda: write(os.path.join(data, "written.txt"), "from inside\n")),
        "seed_appended": attempt(lambda: write(os.path.join(data, "seed.txt"), "appended\n", "a")),
        "tmp_written": attempt(lambda: write(os.path.join(os.environ["FURROW_APP_TMP_PATH"], "t"), "x")),
        "release_written": attempt(lambda: write(os.path.join(release, "intruder.txt"), "x")),
        "config_written": attempt(lambda: write(os.environ["FURROW_APP_CONFIG_FILE"], "x", "a")),
    }

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/boxed":
            body = json.dumps(facts()).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def address_string(self):
        return "peer"
    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

print("probe serving", flush=True)
Server(os.environ["FURROW_APP_SOCKET"], Handler).serve_forever()
"#;

const MANIFEST: &str = r#"name: boxed
version: "1"
processes:
  web:
    command: ["python3", "probe.py"]
    listen: socket
    health: /healthz
    stop_grace: 2s
mount:
  path: /boxed
  process: web
writable: [data]
hooks:
  post_install: [["sh", "-c", "echo seeded > \"$FURROW_APP_DATA_DIR/data/seed.txt\""]]
isolation: namespace
"#;

const SPEC: &str = "fields:\n  greeting: {type: string, default: hello}\n  outside: {type: string, default: /nonexistent}\n";

#[actix_rt::test]
async fn an_isolated_app_sees_only_its_release_and_writes_only_its_writable_dir() {
    let master = TestMaster::bind().await;
    let state = shared_tempdir();
    // A file of the host outside the release: it must not be visible inside.
    let outside = state.path().join("outside.txt");
    std::fs::write(&outside, "host only").unwrap();
    let config = agent_config(&master.addr, state.path(), WebServerKind::Nginx);
    let port = web_port(&config);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    conn.register(60_000).await;
    loop {
        if let AgentMessage::WebServer(_) = conn.recv_task_message().await {
            break;
        }
    }

    let bundle = TestBundle::tar_gz(&[
        ("furrow-app.yaml", MANIFEST),
        ("config.spec.yaml", SPEC),
        ("probe.py", PROBE_PY),
    ]);
    let app_config = format!("greeting: Boxed hello\noutside: {}\n", outside.display());
    conn.send(MasterMessage::Deploy(bundle.deployment(
        "boxed",
        1,
        Some(&app_config),
    )))
    .await;
    let report = conn
        .until_report(&[&bundle], |r| r.state != AppState::Deploying)
        .await;
    assert_eq!(
        (report.state, report.current),
        (AppState::Running, Some(1)),
        "{report:?}"
    );
    let socket = report.instances[0].endpoint.clone().unwrap_or_default();
    assert!(socket.ends_with("/apps/run/boxed/1/web-0.sock"), "{socket}");

    let (status, body) = http_get(port, "/boxed").await;
    assert_eq!(status, 200, "{body}");
    let facts: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let uid = facts["uid"].as_u64().expect("a numeric uid");
    assert!((200_000..300_000).contains(&uid), "{facts}");
    assert_eq!(facts["gid"].as_u64(), Some(uid), "{facts}");
    assert_eq!(facts["app_dir"], "/app", "{facts}");
    assert_eq!(facts["cwd"], "/app", "{facts}");
    assert_eq!(facts["greeting"], "Boxed hello", "{facts}");
    for (fact, expected) in [
        ("root_exists", false),
        ("root_listable", false),
        ("outside_visible", false),
        ("data_written", true),
        ("seed_appended", true),
        ("tmp_written", true),
        ("release_written", false),
        ("config_written", false),
    ] {
        assert_eq!(facts[fact], expected, "{fact} in {facts}");
    }

    // On the host: the writes landed in the app's shared directory, owned by its uid; the
    // file the post_install hook (run on the host, as the agent) left there was handed
    // over; the release is untouched.
    let home = state.path().join("apps/homes/boxed");
    let written = home.join("shared/data/written.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from inside\n");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!((u64::from(meta.uid()), u64::from(meta.gid())), (uid, uid));
    let seed = home.join("shared/data/seed.txt");
    assert_eq!(
        std::fs::read_to_string(&seed).unwrap(),
        "seeded\nappended\n"
    );
    assert_eq!(u64::from(std::fs::metadata(&seed).unwrap().uid()), uid);
    assert!(!home.join("releases/1/intruder.txt").exists());
    assert!(outside.exists());

    conn.send(MasterMessage::Undeploy("boxed".into())).await;
    let report = conn
        .until_report(&[], |r| r.state == AppState::Removed)
        .await;
    assert_eq!(report.state, AppState::Removed, "{report:?}");
    assert_eq!(http_get(port, "/boxed").await.0, 404);
    agent.shutdown().await;
}
