//! Deployed apps on the master: created, deployed from an upload or the inbox, told to
//! the agents that serve them (bundles fetched by digest), configured (every error at
//! once, secrets sealed and masked), rolled back, their output searched, deleted, and all
//! of it kept across a restart. The agent here is the protocol test agent; the real
//! agent with a real web server is tested end to end in the workspace's tests.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{TestAgent, bearer, get_json, http, start_master, wait_for};
use furrow_protocol::{
    AgentMessage, AppDeployment, AppInstanceView, AppLogBatch, AppReport, AppState, BundleRequest,
    LogLine, LogStream, MasterMessage, WebServerView,
};
use serde_json::{Value, json};
use uuid::Uuid;

const MANIFEST: &str = r#"
name: hello
version: VERSION
processes:
  web:
    command: ["python3", "src/app.py", "--port", "{port}"]
    listen: port
    health: /healthz
mount:
  path: /hello
  process: web
"#;

const SPEC: &str = r#"
fields:
  greeting: {type: string, required: true, default: hello, regex: "^[A-Za-z ]+$", message: letters and spaces only}
  workers: {type: int, min: 1, max: 8, default: 2}
  api_key: {type: secret}
"#;

/// A bundle of app `name` at `version`, as a .zip; extra entries appended as given.
fn bundle(name: &str, version: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let manifest = MANIFEST
        .replace("VERSION", version)
        .replace("name: hello", &format!("name: {name}"));
    let mut files: Vec<(&str, &[u8])> = vec![
        ("furrow-app.yaml", manifest.as_bytes()),
        ("config.spec.yaml", SPEC.as_bytes()),
        ("src/app.py", b"print('hello')\n"),
    ];
    files.extend_from_slice(extra);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, data) in files {
        writer
            .start_file(path, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn send(base: &str, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let url = format!("http://{base}{path}");
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(&url)
        .header("authorization", bearer(base))
        .header("content-type", content_type)
        .body(body)
        .unwrap();
    let mut response = http().run(request).expect("http request");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn json_request(base: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    send(
        base,
        method,
        path,
        "application/json",
        body.to_string().into_bytes(),
    )
}

fn upload(base: &str, app: &str, bundle: Vec<u8>) -> (u16, Value) {
    send(
        base,
        "POST",
        &format!("/api/v1/apps/{app}/releases/"),
        "application/octet-stream",
        bundle,
    )
}

/// The next `Deploy`, skipping other messages.
async fn next_deploy(agent: &mut TestAgent) -> AppDeployment {
    loop {
        match agent.recv().await {
            Some(MasterMessage::Deploy(deployment)) => return deployment,
            Some(_) => continue,
            None => panic!("the master closed the connection"),
        }
    }
}

/// Fetches a whole bundle the way an agent does.
async fn fetch(agent: &mut TestAgent, digest: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        agent
            .send(AgentMessage::FetchBundle(BundleRequest {
                digest: digest.to_string(),
                offset: bytes.len() as u64,
            }))
            .await;
        let chunk = loop {
            match agent.recv().await {
                Some(MasterMessage::Bundle(chunk)) => break chunk,
                Some(_) => continue,
                None => panic!("the master closed the connection"),
            }
        };
        assert_eq!(chunk.error, None);
        bytes.extend_from_slice(&chunk.data);
        if bytes.len() as u64 >= chunk.total {
            return bytes;
        }
    }
}

async fn serving_agent(listen: &str) -> TestAgent {
    let mut agent = TestAgent::register(listen, Uuid::new_v4(), 1, Vec::new()).await;
    agent
        .send(AgentMessage::WebServer(WebServerView {
            kind: "nginx".into(),
            address: "127.0.0.1:8080".into(),
        }))
        .await;
    agent
}

fn report(release: u32, state: AppState) -> AgentMessage {
    AgentMessage::AppReport(AppReport {
        app: "hello".into(),
        target: release,
        current: Some(release),
        state,
        message: None,
        instances: vec![AppInstanceView {
            process: "web".into(),
            instance: 0,
            state: "running".into(),
            pid: Some(4242),
            endpoint: Some("127.0.0.1:20001".into()),
            crashes: 0,
            detail: None,
        }],
        mount: Some("http://127.0.0.1:8080/hello".into()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_deployed_configured_rolled_back_searched_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let http_addr = master.addrs().http.to_string();
    let base = http_addr.as_str();

    // Created, with bad input refused and named.
    let (status, app) = json_request(
        base,
        "POST",
        "/api/v1/apps/",
        json!({"name": "hello", "webserver": "nginx"}),
    );
    assert_eq!(status, 201, "{app}");
    let (status, again) = json_request(
        base,
        "POST",
        "/api/v1/apps/",
        json!({"name": "hello", "webserver": "nginx"}),
    );
    assert_eq!(status, 409, "{again}");
    let (status, bad) = json_request(
        base,
        "POST",
        "/api/v1/apps/",
        json!({"name": "Bad Name", "webserver": "iis"}),
    );
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("name"), "{bad}");
    let (status, bad) = json_request(
        base,
        "POST",
        "/api/v1/apps/",
        json!({"name": "other", "webserver": "iis"}),
    );
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("webserver"),
        "{bad}"
    );
    // An app for agents tagged `gpu` goes to none here.
    let (status, _) = json_request(
        base,
        "POST",
        "/api/v1/apps/",
        json!({"name": "elsewhere", "webserver": "nginx", "agents": {"tags": ["gpu"]}}),
    );
    assert_eq!(status, 201);

    let mut agent = serving_agent(&listen).await;

    // An upload becomes release 1; the agent is told, fetches the bundle and reports.
    let first = bundle("hello", "1.0.0", &[]);
    let (status, release) = upload(base, "hello", first.clone());
    assert_eq!(status, 201, "{release}");
    assert_eq!(release["release"], 1);
    let deployment = next_deploy(&mut agent).await;
    assert_eq!((deployment.app.as_str(), deployment.release), ("hello", 1));
    assert_eq!(deployment.size, first.len() as u64);
    let config = deployment.config.clone().unwrap();
    assert!(config.contains("greeting: hello"), "{config}");
    assert_eq!(fetch(&mut agent, &deployment.digest).await, first);
    agent.send(report(1, AppState::Running)).await;
    wait_for("the agent's report", || {
        let (_, app) = get_json(base, "/api/v1/apps/hello");
        app["placements"][0]["state"] == "running"
    })
    .await;
    let (_, app) = get_json(base, "/api/v1/apps/hello");
    assert_eq!(app["placements"].as_array().unwrap().len(), 1, "{app}");
    assert_eq!(app["placements"][0]["mount"], "http://127.0.0.1:8080/hello");
    assert_eq!(
        app["spec"]["fields"].as_array().map(Vec::len),
        Some(3),
        "{app}"
    );
    let (_, elsewhere) = get_json(base, "/api/v1/apps/elsewhere");
    assert!(
        elsewhere["placements"].as_array().unwrap().is_empty(),
        "{elsewhere}"
    );
    // Another agent cannot fetch it: it serves no app.
    let mut outsider = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    outsider
        .send(AgentMessage::FetchBundle(BundleRequest {
            digest: deployment.digest.clone(),
            offset: 0,
        }))
        .await;
    assert!(outsider.nothing_within(Duration::from_millis(300)).await);

    // A configuration with three errors gets all three and changes nothing.
    let (status, refused) = json_request(
        base,
        "PUT",
        "/api/v1/apps/hello/config",
        json!({"greeting": "hi 123", "workers": 99, "colour": "red"}),
    );
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"].as_str().unwrap();
    for field in ["greeting", "letters and spaces only", "workers", "colour"] {
        assert!(message.contains(field), "{field} missing from: {message}");
    }
    // A good one is release 2, with the secret sealed in the database and masked here.
    let (status, release) = json_request(
        base,
        "PUT",
        "/api/v1/apps/hello/config",
        json!({"greeting": "bonjour", "api_key": "sesame-open-4711"}),
    );
    assert_eq!(status, 200, "{release}");
    assert_eq!(release["release"], 2);
    assert_eq!(release["config"]["api_key"], "********");
    let deployment = next_deploy(&mut agent).await;
    assert_eq!(deployment.release, 2);
    let config = deployment.config.unwrap();
    assert!(
        config.contains("bonjour") && config.contains("sesame-open-4711"),
        "{config}"
    );
    let (_, shown) = get_json(base, "/api/v1/apps/hello/config");
    assert_eq!(shown["greeting"], "bonjour");
    assert_eq!(shown["api_key"], "********");
    // The mask sent back keeps the secret.
    let (status, _) = json_request(
        base,
        "PUT",
        "/api/v1/apps/hello/config",
        json!({"greeting": "salut", "api_key": "********"}),
    );
    assert_eq!(status, 200);
    let config = next_deploy(&mut agent).await.config.unwrap();
    assert!(
        config.contains("salut") && config.contains("sesame-open-4711"),
        "{config}"
    );

    // A rollback serves release 2 again at once.
    let (status, rolled) = json_request(base, "POST", "/api/v1/apps/hello/rollback", json!({}));
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["release"], 2);
    assert_eq!(next_deploy(&mut agent).await.release, 2);
    let (status, missing) = json_request(
        base,
        "POST",
        "/api/v1/apps/hello/rollback",
        json!({"release": 42}),
    );
    assert_eq!(status, 404, "{missing}");

    // Bundles for another app, and hostile ones, are refused saying why.
    let (status, wrong) = upload(base, "hello", bundle("other", "1.0.0", &[]));
    assert_eq!(status, 400, "{wrong}");
    assert!(
        wrong["error"].as_str().unwrap().contains("`other`"),
        "{wrong}"
    );
    let (status, hostile) = upload(
        base,
        "hello",
        bundle("hello", "6.6.6", &[("../evil.py", b"x")]),
    );
    assert_eq!(status, 400, "{hostile}");
    assert!(
        hostile["error"].as_str().unwrap().contains("evil"),
        "{hostile}"
    );

    // The inbox: a good bundle becomes release 4, a broken one goes to rejected/.
    let inbox = dir.path().join("apps").join("inbox");
    std::fs::write(inbox.join("hello-2.zip"), bundle("hello", "2.0.0", &[])).unwrap();
    std::fs::write(inbox.join("broken.zip"), b"not a bundle").unwrap();
    let deployment = next_deploy(&mut agent).await;
    assert_eq!(deployment.release, 4);
    let (_, app) = get_json(base, "/api/v1/apps/hello");
    assert_eq!(app["releases"][0]["source"], "inbox");
    assert_eq!(app["releases"][0]["version"], "2.0.0");
    // The configuration of the current release (2, after the rollback) carried over.
    assert!(deployment.config.unwrap().contains("bonjour"));
    let rejected = dir.path().join("apps").join("rejected");
    wait_for("the broken bundle to be rejected", || {
        rejected.join("broken.zip.why").exists() && !inbox.join("broken.zip").exists()
    })
    .await;
    let why = std::fs::read_to_string(rejected.join("broken.zip.why")).unwrap();
    assert!(why.contains("refused"), "{why}");
    wait_for("the deployed bundle to leave the inbox", || {
        !inbox.join("hello-2.zip").exists()
    })
    .await;

    // A notification rule posts matching lines to its webhook; bad rules are named.
    let (status, bad) = json_request(
        base,
        "PUT",
        "/api/v1/apps/hello/notifications",
        json!([{"pattern": "(", "webhook": "ftp://x"}]),
    );
    assert_eq!(status, 400, "{bad}");
    let message = bad["error"].as_str().unwrap();
    assert!(
        message.contains("[0].pattern") && message.contains("[0].webhook"),
        "{message}"
    );
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let (status, rules) = json_request(
        base,
        "PUT",
        "/api/v1/apps/hello/notifications",
        json!([{"pattern": "^error", "webhook": hook_url}]),
    );
    assert_eq!(status, 200, "{rules}");
    let received = std::thread::spawn(move || {
        let (mut stream, _) = hook.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then the body its Content-Length announces.
        loop {
            let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    std::io::Write::write_all(
                        &mut stream,
                        b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
                    )
                    .unwrap();
                    return body.to_string();
                }
            }
            assert!(n > 0, "the webhook connection closed early");
        }
    });

    // Output is searchable by pattern.
    agent
        .send(AgentMessage::AppLogs(AppLogBatch {
            app: "hello".into(),
            release: 4,
            process: "web".into(),
            instance: 0,
            lines: ["GET /hello 200", "error: database down", "GET /hello/x 404"]
                .iter()
                .enumerate()
                .map(|(i, text)| LogLine {
                    at_ms: 1_000 + i as i64,
                    stream: LogStream::Stderr,
                    text: text.to_string(),
                })
                .collect(),
        }))
        .await;
    wait_for("the app's output", || {
        let (_, lines) = get_json(base, "/api/v1/apps/hello/logs?q=%5EGET");
        lines.as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    let (_, lines) = get_json(base, "/api/v1/apps/hello/logs?q=database");
    assert_eq!(lines[0]["text"], "error: database down");
    assert_eq!(lines[0]["instance"], "web.0");
    assert_eq!(lines[0]["release"], 4);
    let (status, bad) = get_json(base, "/api/v1/apps/hello/logs?q=%28");
    assert_eq!(status, 400, "{bad}");
    let posted: Value = serde_json::from_str(&received.join().unwrap()).unwrap();
    assert_eq!(posted["text"], "error: database down");
    assert_eq!(posted["app"], "hello");
    assert_eq!(posted["instance"], "web.0");
    assert_eq!(posted["pattern"], "^error");

    // The history names what happened, newest first.
    let (_, app) = get_json(base, "/api/v1/apps/hello");
    let actions: Vec<&str> = app["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "created",
        "deployed",
        "running",
        "configured",
        "rolled back",
    ] {
        assert!(actions.contains(&action), "{action} missing: {actions:?}");
    }

    // The secret never reached the database in the clear.
    master.shutdown().unwrap();
    drop(agent);
    for name in ["furrow.db", "furrow.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("sesame-open-4711"),
                "{name} holds the secret"
            );
        }
    }

    // After a restart the app and its releases are there, and an agent that comes is
    // told the current release.
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let http_addr = master.addrs().http.to_string();
    let base = http_addr.as_str();
    let (_, app) = get_json(base, "/api/v1/apps/hello");
    assert_eq!(app["current"], 4);
    assert_eq!(app["releases"].as_array().unwrap().len(), 4);
    let mut agent = serving_agent(&listen).await;
    let deployment = next_deploy(&mut agent).await;
    assert_eq!(deployment.release, 4);
    assert!(deployment.config.unwrap().contains("sesame-open-4711"));

    // Deleted: the agent is told to remove it.
    let (status, _) = send(
        base,
        "DELETE",
        "/api/v1/apps/hello",
        "application/json",
        Vec::new(),
    );
    assert_eq!(status, 204);
    loop {
        match agent.recv().await {
            Some(MasterMessage::Undeploy(app)) => {
                assert_eq!(app, "hello");
                break;
            }
            Some(_) => continue,
            None => panic!("the master closed the connection"),
        }
    }
    let (status, _) = get_json(base, "/api/v1/apps/hello");
    assert_eq!(status, 404);
    master.shutdown().unwrap();
}
