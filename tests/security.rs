//! Access control end to end, with the real binary: every documented route needs
//! credentials, each role may do what it may and no more, agents need the farm's join
//! token, and secret environment values reach the task and nothing else.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Farm, wait_until};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

/// A request with exactly these headers (no token unless given), written by hand so
/// that malformed ones go out as they are.
fn raw(farm: &Farm, method: &str, path: &str, headers: &[(&str, &[u8])]) -> (u16, Value) {
    use std::io::{Read, Write};
    let body = if matches!(method, "GET" | "DELETE") {
        ""
    } else {
        "{}"
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        farm.http,
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body.as_bytes());
    let mut stream = std::net::TcpStream::connect(&farm.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&request).expect("write request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn every_documented_route_needs_credentials_and_bad_ones_are_named() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let (status, doc) = farm.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let mut checked = 0;
    for (template, methods) in paths {
        let path = template
            .replace("{id}", "1")
            .replace("{task_id}", "1")
            .replace("{frame}", "1")
            .replace("{version}", "1")
            .replace("{name}", "admin")
            .replace("{path}", "studio");
        for method in methods.as_object().expect("methods").keys() {
            let method = method.to_uppercase();
            let (status, body) = raw(&farm, &method, &path, &[]);
            assert_eq!(status, 401, "{method} {path} without a token: {body}");
            assert!(
                error_of(&body).starts_with("no credentials"),
                "{method} {path}: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} routes checked");

    // Malformed, huge, binary, unknown tokens: 401 with the reason.
    let huge = format!("Bearer fwa_{}", "a".repeat(10_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"Basic YWRtaW46YWRtaW4=".to_vec(),
            "got the \"Basic\" scheme",
        ),
        (b"Bearer".to_vec(), "without a token"),
        (b"Bearer    ".to_vec(), "without a token"),
        (huge.into_bytes(), "longer than any furrow token"),
        (b"Bearer fwa_\xff\xfe\x80".to_vec(), "not readable text"),
        (b"Bearer not-a-token".to_vec(), "not a furrow token"),
        (
            b"Bearer fwa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
            "unknown to this master",
        ),
    ];
    for (header, reason) in &cases {
        let (status, body) = raw(&farm, "GET", "/api/v1/jobs/", &[("authorization", header)]);
        assert_eq!(status, 401, "{}: {body}", String::from_utf8_lossy(header));
        assert!(error_of(&body).contains(reason), "{reason}: {body}");
    }
    // A join token is not an API token.
    let join = farm.join_token();
    let (status, body) = raw(
        &farm,
        "GET",
        "/api/v1/jobs/",
        &[("authorization", format!("Bearer {join}").as_bytes())],
    );
    assert_eq!(status, 401);
    assert!(
        error_of(&body).contains("join token cannot be used"),
        "{body}"
    );

    // Revoked and expired tokens.
    let (status, made) = farm.post("/api/v1/tokens/", &json!({"label": "short"}));
    assert_eq!(status, 201, "{made}");
    let revoked = made["token"].as_str().unwrap().to_string();
    let (status, _) = farm.send_as(&revoked, "GET", "/api/v1/me", None);
    assert_eq!(status, 200);
    let id = made["view"]["id"].as_str().unwrap();
    let (status, _) = farm.send("DELETE", &format!("/api/v1/tokens/{id}"), None);
    assert_eq!(status, 204);
    let (status, body) = farm.send_as(&revoked, "GET", "/api/v1/me", None);
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("revoked at"), "{body}");
    let (status, made) = farm.post(
        "/api/v1/tokens/",
        &json!({"label": "one second", "expires_in_secs": 1}),
    );
    assert_eq!(status, 201, "{made}");
    let expiring = made["token"].as_str().unwrap().to_string();
    let body = wait_until("the token to expire", Duration::from_secs(10), || {
        let (status, body) = farm.send_as(&expiring, "GET", "/api/v1/me", None);
        (status == 401).then_some(body)
    });
    assert!(error_of(&body).contains("expired at"), "{body}");
    // The CLI says why too, and the master keeps serving.
    let out = farm.cli_as(&revoked, &["jobs"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked at"), "{stderr}");
    let out = farm.cli_as("", &["jobs"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no token"), "{stderr}");
    let (status, _) = farm.get("/api/v1/health");
    assert_eq!(status, 200);
}

/// A job of `token`'s user that runs until it is cancelled.
fn long_job(farm: &Farm, token: &str, title: &str) -> i64 {
    let (status, job) = farm.send_as(
        token,
        "POST",
        "/api/v1/jobs/",
        Some(&json!({
            "title": title,
            "frames": "1",
            "params": {"command": ["sleep", "600"], "env": {"SHOT": "sh010"}}
        })),
    );
    assert_eq!(status, 201, "{job}");
    job["id"].as_i64().unwrap()
}

#[test]
fn each_role_may_do_what_it_may_and_no_more() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let roles = ["viewer", "user", "operator", "admin"];
    let tokens: Vec<String> = roles
        .iter()
        .map(|role| farm.user_token(&format!("{role}-1"), role))
        .collect();
    let admin_job = long_job(&farm, &farm.token, "the admin's");
    let (_, agents) = farm.get("/api/v1/agents/");
    let agent = agents["items"][0]["id"].as_str().unwrap().to_string();
    wait_until("the admin's job to run", LONG, || {
        let (_, job) = farm.get(&format!("/api/v1/jobs/{admin_job}"));
        (job["state"] == "running").then_some(())
    });
    let log = format!("/api/v1/jobs/{admin_job}/tasks/{admin_job}/logs");
    let (_, tasks) = farm.get(&format!("/api/v1/jobs/{admin_job}/tasks/"));
    let task = tasks["items"][0]["id"].as_i64().unwrap();
    let log = log.replace(&format!("tasks/{admin_job}/"), &format!("tasks/{task}/"));

    // (method, path, body, least role). Each case runs as every role, least first.
    let cases: Vec<(&str, String, Option<Value>, usize)> = vec![
        ("GET", "/api/v1/jobs/".into(), None, 0),
        ("GET", format!("/api/v1/jobs/{admin_job}"), None, 0),
        ("GET", "/api/v1/agents/".into(), None, 0),
        ("GET", "/api/v1/queues/".into(), None, 0),
        ("GET", "/api/v1/me".into(), None, 0),
        ("GET", "/api/v1/tokens/".into(), None, 0),
        ("GET", log.clone(), None, 2),
        (
            "GET",
            format!("/api/v1/jobs/{admin_job}/frames/1/logs"),
            None,
            2,
        ),
        ("GET", format!("/api/v1/jobs/{admin_job}/frames/1"), None, 0),
        (
            "POST",
            "/api/v1/jobs/".into(),
            Some(json!({"title": "mine", "frames": "1", "params": {"command": ["true"]}})),
            1,
        ),
        (
            "PATCH",
            format!("/api/v1/jobs/{admin_job}"),
            Some(json!({"notes": "edited"})),
            2,
        ),
        (
            "POST",
            "/api/v1/queues/".into(),
            Some(json!({"name": "q{n}"})),
            2,
        ),
        (
            "PATCH",
            format!("/api/v1/agents/{agent}"),
            Some(json!({"tags": ["t{n}"]})),
            2,
        ),
        (
            "POST",
            "/api/v1/pathmaps/".into(),
            Some(json!({"linux": "/mnt/p{n}", "windows": "P:\\p{n}"})),
            2,
        ),
        ("GET", "/api/v1/users/".into(), None, 3),
        (
            "POST",
            "/api/v1/users/".into(),
            Some(json!({"name": "new{n}", "role": "viewer"})),
            3,
        ),
        (
            "POST",
            "/api/v1/tokens/".into(),
            Some(json!({"agent": true})),
            3,
        ),
        ("GET", "/api/v1/tokens/?all=true".into(), None, 3),
        ("GET", "/api/v1/audit/".into(), None, 3),
    ];
    for (method, path, body, least) in &cases {
        for (n, (role, token)) in roles.iter().zip(&tokens).enumerate() {
            let body = body.as_ref().map(|b| {
                serde_json::from_str(&b.to_string().replace("{n}", &n.to_string())).unwrap()
            });
            let (status, answer) = farm.send_as(token, method, path, body.as_ref());
            if n >= *least {
                assert!(
                    (200..300).contains(&status),
                    "{role} {method} {path}: {status} {answer}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: {answer}");
                let error = error_of(&answer);
                assert!(
                    error.contains(&format!("has the {role} role"))
                        || error.contains("the user role acts on its own jobs only"),
                    "{role} {method} {path}: {answer}"
                );
            }
        }
    }

    // Ownership: a user controls their own job, not another's; the others' environment
    // values are hidden from them, and shown to operators.
    let user = &tokens[1];
    let own = long_job(&farm, user, "the user's");
    let (status, answer) = farm.send_as(
        user,
        "POST",
        &format!("/api/v1/jobs/{admin_job}/actions"),
        Some(&json!({"action": "pause"})),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(
        error_of(&answer).contains(&format!("job {admin_job} belongs to \"admin\"")),
        "{answer}"
    );
    let (status, answer) = farm.send_as(
        user,
        "POST",
        &format!("/api/v1/jobs/{own}/actions"),
        Some(&json!({"action": "cancel"})),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user"], "user-1");
    let (_, seen) = farm.send_as(user, "GET", &format!("/api/v1/jobs/{admin_job}"), None);
    assert_eq!(seen["params"]["env"]["SHOT"], "(hidden)", "{seen}");
    let (_, seen) = farm.send_as(
        &tokens[2],
        "GET",
        &format!("/api/v1/jobs/{admin_job}"),
        None,
    );
    assert_eq!(seen["params"]["env"]["SHOT"], "sh010", "{seen}");
    // Bulk actions report the jobs the caller may not touch, one by one.
    let (status, outcomes) = farm.send_as(
        user,
        "POST",
        "/api/v1/jobs/actions",
        Some(&json!({"action": "pause", "ids": [admin_job, own]})),
    );
    assert_eq!(status, 200, "{outcomes}");
    assert_eq!(outcomes[0]["ok"], false, "{outcomes}");
    // Submitting as someone else is for admins.
    let (status, answer) = farm.send_as(
        user,
        "POST",
        "/api/v1/jobs/",
        Some(
            &json!({"title": "t", "frames": "1", "user": "admin", "params": {"command": ["true"]}}),
        ),
    );
    assert_eq!(status, 403, "{answer}");

    // The CLI: a viewer lists jobs but cannot cancel one.
    let out = farm.cli_as(&tokens[0], &["jobs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("the admin's"));
    let out = farm.cli_as(&tokens[0], &["cancel", &admin_job.to_string()]);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("has the viewer role"), "{text}");
    let out = farm.cli_as(&tokens[0], &["whoami"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "viewer-1 (viewer)"
    );

    // Every change above is in the audit log, with who and from where.
    let (status, audit) = farm.get("/api/v1/audit/?limit=1000");
    assert_eq!(status, 200);
    let entries = audit["items"].as_array().unwrap();
    let has = |user: &str, action: &str| {
        entries
            .iter()
            .any(|e| e["user"] == user && e["action"] == action && e["peer"] == "127.0.0.1")
    };
    assert!(has("admin", "job.submit"), "{audit}");
    assert!(has("user-1", "job.cancel"), "{audit}");
    assert!(has("operator-1", "queue.create"), "{audit}");
    assert!(has("admin", "user.add"), "{audit}");
    let out = farm.cli(&["audit", "--limit", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ACTION"));
}

fn agent_state(farm: &Farm, name: &str) -> Option<String> {
    let (_, agents) = farm.get("/api/v1/agents/");
    agents["items"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["state"].as_str().unwrap_or_default().to_string())
}

#[test]
fn agents_need_the_join_token_then_hold_their_own_credential_until_revoked() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);

    // No join token: refused at the handshake, with the reason on both sides.
    let (mut stranger, log) = farm.start_agent(root.path(), "stranger", &[]);
    let text = wait_until("the refusal in the agent's log", LONG, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("refused").then_some(text)
    });
    assert!(text.contains("farm join token"), "{text}");
    assert_eq!(agent_state(&farm, "stranger"), None);
    let master_log = std::fs::read_to_string(farm.data_dir.join("run/master.log")).unwrap();
    assert!(master_log.contains("farm join token"), "{master_log}");
    stranger.kill().unwrap();
    stranger.wait().unwrap();

    // A join token made with the CLI lets it in; it keeps a credential of its own.
    let out = farm.cli(&["token", "create", "--agent", "--label", "render nodes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(join.starts_with("fwj_"), "{join}");
    let token_file = root.path().join("join-token");
    std::fs::write(&token_file, format!("{join}\n")).unwrap();
    let file_arg = token_file.to_string_lossy().into_owned();
    let (mut joined, _) =
        farm.start_agent(root.path(), "joined", &["--join-token-file", &file_arg]);
    wait_until("the agent online", LONG, || {
        (agent_state(&farm, "joined")? == "online").then_some(())
    });
    let credential = root.path().join("joined/credential");
    wait_until("the credential saved", LONG, || {
        credential.exists().then_some(())
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&credential).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    joined.kill().unwrap();
    joined.wait().unwrap();
    wait_until("the agent offline", LONG, || {
        (agent_state(&farm, "joined")? == "offline").then_some(())
    });
    // Revoking the join token does not shut out agents that joined with it.
    let (_, tokens) = farm.get("/api/v1/tokens/?all=true");
    let join_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "render nodes")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .unwrap();
    let out = farm.cli(&["token", "revoke", &join_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut again, log) = farm.start_agent(root.path(), "joined", &[]);
    wait_until("the agent online with its credential", LONG, || {
        (agent_state(&farm, "joined")? == "online").then_some(())
    });

    // Revoked: disconnected at once, and refused from then on.
    let out = farm.cli(&["agent-ctl", "revoke", "joined"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the agent offline", LONG, || {
        (agent_state(&farm, "joined")? == "offline").then_some(())
    });
    let text = wait_until("the refusal in the agent's log", LONG, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("was revoked").then_some(text)
    });
    assert!(text.contains("furrow agent-ctl remove"), "{text}");
    assert_eq!(agent_state(&farm, "joined").as_deref(), Some("offline"));
    again.kill().unwrap();
    again.wait().unwrap();
    let (_, audit) = farm.get("/api/v1/audit/?limit=100");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"agent.join"), "{actions:?}");
    assert!(actions.contains(&"agent.revoke"), "{actions:?}");
}

/// Whether `needle` occurs in any file under `dir`.
fn found_in(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[test]
fn secret_environment_values_reach_the_task_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let mut farm = Farm::up(root.path(), 1);
    let listed = "listed-7c1d0a93";
    let named = "named-5b2e94f1";
    // The task checks it got both (and prints neither): it fails otherwise.
    let id = farm.submit(&[
        "--title",
        "secrets",
        "--frames",
        "1-2",
        "--secret-env",
        &format!("RENDER_LICENSE={listed}"),
        "--env",
        &format!("DB_PASSWORD={named}"),
        "--env",
        "SHOT=sh010",
        "--shell",
        "--",
        // Compared in two halves, so the command line (which is logged) never holds a
        // whole secret.
        "test \"${RENDER_LICENSE#listed-}\" = 7c1d0a93 && test \"${DB_PASSWORD#named-}\" = 5b2e94f1 && echo shot $SHOT ok",
    ]);
    let job = farm.wait_job(id, LONG);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["params"]["env"]["RENDER_LICENSE"], "(secret)");
    assert_eq!(job["params"]["env"]["DB_PASSWORD"], "(secret)");
    assert_eq!(job["params"]["env"]["SHOT"], "sh010");
    let (_, log) = farm.get_text(&format!(
        "/api/v1/jobs/{id}/tasks/{}/logs",
        farm.tasks(id)[0]["id"]
    ));
    assert!(log.contains("shot sh010 ok"), "{log}");
    // Nothing the API, the CLI or the dashboard's feed answers holds them.
    let out = farm.cli(&["job", &id.to_string(), "--json"]);
    let cli = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(cli.contains("(secret)"), "{cli}");
    let (_, jobs) = farm.get_text("/api/v1/jobs/");
    for text in [&cli, &jobs] {
        assert!(!text.contains(listed) && !text.contains(named), "{text}");
    }
    // A rerun still gets them (they stay sealed in the store).
    let (status, _) = farm.post(
        &format!("/api/v1/jobs/{id}/actions"),
        &json!({"action": "rerun"}),
    );
    assert_eq!(status, 200);
    let job = farm.wait_job_until(id, "the rerun to end", LONG, |j| {
        j["state"] == "done" && j["task_counts"]["done"] == 2
    });
    assert_eq!(job["state"], "done");
    // Not in any file of the data directory: database, logs, agents' state.
    farm.stop();
    for secret in [listed, named] {
        let hits = found_in(&farm.data_dir, secret.as_bytes());
        assert!(hits.is_empty(), "{secret} found in {hits:?}");
    }
    let sealed = found_in(&farm.data_dir, b"furrow-secret:v1:");
    assert!(
        sealed
            .iter()
            .any(|p| p.to_string_lossy().contains("furrow.db")),
        "the sealed values are stored: {sealed:?}"
    );
}
