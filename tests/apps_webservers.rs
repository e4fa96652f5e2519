//! Deployed apps end to end: real master and agents (`furrow up`), each agent running
//! its own web server. A Python app is reached through nginx at its mount path on two
//! agents, showing a value from its configuration; a configuration change is a new
//! release and the page changes; a bad configuration gets all its errors and changes
//! nothing; a release whose health check fails is reverted while the old one serves; a
//! rollback switches back; a bundle dropped in the inbox deploys; hostile bundles are
//! refused; static sites are served by Apache and by lighttpd alone.

mod common;

use std::io::Write;
use std::time::Duration;

use common::apps::{APP_PY, readable_root, web_get, zip};
use common::{Farm, wait_until};
use serde_json::{Value, json};

const SPEC: &str = r#"fields:
  greeting: {type: string, default: hello, regex: "^[A-Za-z ]+$", message: letters and spaces only}
  workers: {type: int, min: 1, max: 8, default: 2}
"#;

/// The Python app at `version`, with `health` as its health path.
fn python_app(version: &str, health: &str) -> Vec<u8> {
    let manifest = format!(
        "name: hello\nversion: \"{version}\"\nprocesses:\n  web:\n    command: [\"python3\", \"src/app.py\"]\n    listen: port\n    health: {health}\n    stop_grace: 2s\nmount:\n  path: /hello\n  process: web\nrecurrent: [{{name: tick, every: 2s, command: [\"sh\", \"-c\", \"echo tick $FURROW_APP_NAME; pwd\"]}}]\n"
    );
    zip(&[
        ("furrow-app.yaml", manifest.as_bytes()),
        ("config.spec.yaml", SPEC.as_bytes()),
        ("src/app.py", APP_PY.as_bytes()),
    ])
}

/// A static site mounted at `/site`.
fn static_site(text: &str) -> Vec<u8> {
    let manifest =
        "name: site\nversion: \"1\"\nmount:\n  path: /site\n  static: {\"/site\": \"static\"}\n";
    zip(&[
        ("furrow-app.yaml", manifest.as_bytes()),
        ("static/index.html", text.as_bytes()),
    ])
}

/// Two free consecutive ports on 127.0.0.1 (the local agents' web servers).
fn two_free_ports() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Waits until `path` on every port answers 200 with `body`.
fn until_served(ports: &[u16], path: &str, body: &str) {
    for port in ports {
        wait_until(
            &format!("{path} on port {port} to say {body:?}"),
            Duration::from_secs(90),
            || {
                let got = web_get(*port, path)?;
                (got == (200, body.to_string())).then_some(())
            },
        );
    }
}

fn upload(farm: &Farm, app: &str, bundle: &[u8]) -> (u16, Value) {
    // The body is bytes; a String of them through `post_as` would mangle them.
    let file = farm.data_dir.join(format!("upload-{app}.zip"));
    std::fs::write(&file, bundle).unwrap();
    let out = farm.cli(&["app", "deploy", app, file.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        if out.status.success() { 201 } else { 400 },
        Value::String(text),
    )
}

fn app(farm: &Farm, name: &str) -> Value {
    let (status, app) = farm.get(&format!("/api/v1/apps/{name}"));
    assert_eq!(status, 200, "{app}");
    app
}

/// Waits until every placement of `name` reports `state` at release `current`.
fn until_placements(farm: &Farm, name: &str, count: usize, state: &str, current: u64) -> Value {
    wait_until(
        &format!("{name} {state} at release {current} on {count} agents"),
        Duration::from_secs(90),
        || {
            let app = app(farm, name);
            let placements = app["placements"].as_array()?;
            (placements.len() == count
                && placements
                    .iter()
                    .all(|p| p["state"] == state && p["current"] == current))
            .then_some(app)
        },
    )
}

#[test]
fn a_python_app_behind_nginx_on_two_agents_is_configured_reverted_rolled_back_and_dropped_in() {
    let root = readable_root("furrow-apps-");
    let port = two_free_ports();
    let farm = Farm::up_in(
        root.path().join("data"),
        2,
        &[
            "--webserver",
            "nginx",
            "--webserver-port",
            &port.to_string(),
        ],
    );
    let ports = [port, port + 1];
    // The agents show their web servers.
    wait_until("both agents' web servers", Duration::from_secs(60), || {
        let (_, agents) = farm.get("/api/v1/agents/");
        let items = agents["items"].as_array()?;
        (items.len() == 2 && items.iter().all(|a| a["webserver"]["kind"] == "nginx")).then_some(())
    });

    let out = farm.cli(&["app", "create", "hello", "--webserver", "nginx"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, said) = upload(&farm, "hello", &python_app("1.0", "/healthz"));
    assert_eq!(status, 201, "{said}");
    until_placements(&farm, "hello", 2, "running", 1);
    until_served(&ports, "/hello", "hello");

    // Its recurrent task runs as an ordinary job, in the app's release and environment.
    let tick = wait_until("a recurrent job done", Duration::from_secs(60), || {
        let (_, jobs) = farm.get("/api/v1/jobs/?limit=100");
        jobs["items"]
            .as_array()?
            .iter()
            .find(|j| j["title"] == "app hello: tick" && j["state"] == "done")
            .and_then(|j| j["id"].as_i64())
    });
    let out = farm.cli(&["logs", &tick.to_string(), "1"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("tick hello"), "{log}");
    assert!(log.contains("/apps/homes/hello/releases/1"), "{log}");

    // A configuration change is release 2, and the page changes on both agents.
    let out = farm.cli(&["app", "config", "hello", "--set", "greeting=Bonjour"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_placements(&farm, "hello", 2, "running", 2);
    until_served(&ports, "/hello", "Bonjour");

    // A bad one gets all its errors and changes nothing.
    let (status, refused) = farm.send(
        "PUT",
        "/api/v1/apps/hello/config",
        Some(&json!({"greeting": "x1", "workers": 0, "colour": "red"})),
    );
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"].as_str().unwrap();
    for field in ["greeting", "letters and spaces only", "workers", "colour"] {
        assert!(message.contains(field), "{field} missing from {message}");
    }
    assert_eq!(app(&farm, "hello")["current"], 2);

    // A release whose health check fails is reverted; release 2 keeps serving.
    let (status, said) = upload(&farm, "hello", &python_app("2.0", "/not-there"));
    assert_eq!(status, 201, "{said}");
    let reverted = until_placements(&farm, "hello", 2, "reverted", 2);
    let message = reverted["placements"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("health"), "{reverted}");
    for port in ports {
        assert_eq!(web_get(port, "/hello"), Some((200, "Bonjour".into())));
    }

    // A rollback to release 1 switches back at once.
    let out = farm.cli(&["app", "rollback", "hello", "--to", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_placements(&farm, "hello", 2, "running", 1);
    until_served(&ports, "/hello", "hello");

    // A bundle dropped in the inbox is release 4.
    let inbox = farm.data_dir.join("apps").join("inbox");
    std::fs::write(
        inbox.join(".hello-3.zip.part"),
        python_app("3.0", "/healthz"),
    )
    .unwrap();
    std::fs::rename(inbox.join(".hello-3.zip.part"), inbox.join("hello-3.zip")).unwrap();
    let app_now = until_placements(&farm, "hello", 2, "running", 4);
    assert_eq!(app_now["releases"][0]["source"], "inbox");
    assert_eq!(app_now["releases"][0]["version"], "3.0");

    // Its output is searchable, through the CLI too.
    let out = farm.cli(&["app", "logs", "hello", "--grep", "^serving"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("serving hello on"), "{printed}");

    // Hostile bundles are refused, each saying why, and nothing changes.
    let traversal = zip(&[
        ("furrow-app.yaml", b"name: hello\nversion: \"6\"\n"),
        ("../evil.py", b"x"),
    ]);
    let mut many = Vec::new();
    let names: Vec<String> = (0..100_000).map(|i| format!("f/{i}")).collect();
    for name in &names {
        many.push((name.as_str(), &b""[..]));
    }
    many.push(("furrow-app.yaml", b"name: hello\nversion: \"7\"\n"));
    let crowded = zip(&many);
    let symlink = {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        writer.start_file("furrow-app.yaml", options).unwrap();
        writer.write_all(b"name: hello\nversion: \"8\"\n").unwrap();
        writer.add_symlink("src", "/etc", options).unwrap();
        writer.finish().unwrap().into_inner()
    };
    for (bundle, says) in [(traversal, "evil"), (crowded, "entries"), (symlink, "src")] {
        let (status, said) = upload(&farm, "hello", &bundle);
        assert_eq!(status, 400, "{said}");
        assert!(said.to_string().contains(says), "{says}: {said}");
    }
    assert_eq!(app(&farm, "hello")["current"], 4);
    for port in ports {
        assert_eq!(web_get(port, "/hello"), Some((200, "hello".into())));
    }

    // Deleted: the mount goes.
    let out = farm.cli(&["app", "delete", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for port in ports {
        wait_until("the mount to go", Duration::from_secs(60), || {
            (web_get(port, "/hello")?.0 == 404).then_some(())
        });
    }
}

fn static_site_served_by(kind: &str) {
    let root = readable_root("furrow-apps-");
    let port = two_free_ports();
    let farm = Farm::up_in(
        root.path().join("data"),
        1,
        &["--webserver", kind, "--webserver-port", &port.to_string()],
    );
    let (status, created) = farm.post("/api/v1/apps/", &json!({"name": "site", "webserver": kind}));
    assert_eq!(status, 201, "{created}");
    let text = format!("<h1>served by {kind}</h1>");
    let (status, said) = upload(&farm, "site", &static_site(&text));
    assert_eq!(status, 201, "{said}");
    until_placements(&farm, "site", 1, "running", 1);
    until_served(&[port], "/site/index.html", &text);
    // No process of the app serves it: the placement lists none.
    assert!(
        app(&farm, "site")["placements"][0]["instances"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_static_site_is_served_by_apache_alone() {
    static_site_served_by("apache");
}

#[test]
fn a_static_site_is_served_by_lighttpd_alone() {
    static_site_served_by("lighttpd");
}
