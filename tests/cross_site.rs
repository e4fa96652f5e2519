//! A web page on another origin, loaded in a real headless Chromium, tries to submit a
//! job through the browser (the classic cross-site request: `text/plain` and form-encoded
//! bodies need no CORS preflight). The master refuses every attempt and nothing is
//! created; a request naming a foreign host (DNS rebinding) is refused too.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::chromium::Browser;
use common::{Farm, wait_until};

/// Serves `page` to every request on a port of its own, from a thread.
fn serve(page: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn another_origin_cannot_submit_through_the_browser() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let target = format!("http://{}/api/v1/jobs/", farm.http);
    let job = r#"{"title": "cross-site", "frames": "1", "params": {"command": ["id"]}}"#;
    let page = format!(
        r#"<!doctype html><title>loading</title><script>
const target = {target:?};
const body = {job:?};
const attempts = [
  fetch(target, {{ method: "POST", mode: "no-cors", headers: {{ "content-type": "text/plain" }}, body }}),
  fetch(target, {{ method: "POST", mode: "no-cors", body: new URLSearchParams({{ job: body }}) }}),
  fetch(target, {{ method: "POST", headers: {{ "content-type": "application/json" }}, body }}),
];
Promise.allSettled(attempts).then((r) => {{ document.title = "sent:" + r.map((x) => x.status).join(","); }});
</script>"#
    );
    let site = serve(page);
    let mut browser = Browser::open(&format!("http://{site}/"), &root.path().join("chromium"));
    let title = wait_until(
        "the page's requests to end",
        Duration::from_secs(30),
        || {
            let title = browser.eval("document.title");
            title
                .as_str()
                .filter(|t| t.starts_with("sent:"))
                .map(str::to_string)
        },
    );
    // The JSON fetch needs a preflight, which the master never grants: it fails in the
    // browser; the two simple requests are sent, and refused by the master.
    assert_eq!(title, "sent:fulfilled,fulfilled,rejected");
    let (status, jobs) = farm.get("/api/v1/jobs/");
    assert_eq!(status, 200);
    assert_eq!(jobs["total"], 0, "{jobs}");
    let log = std::fs::read_to_string(farm.data_dir.join("run/master.log")).unwrap();
    let refused = log
        .lines()
        .filter(|l| l.contains("request refused") && l.contains("/api/v1/jobs/"))
        .count();
    assert!(refused >= 2, "{log}");

    // The same request from this master's own origin is accepted.
    let (status, own) = farm.post_as(
        "/api/v1/jobs/",
        "application/json",
        r#"{"title": "own", "frames": "1", "params": {"command": ["true"]}}"#,
    );
    assert_eq!(status, 201, "{own}");
    // A text/plain body is refused with the header named, even without an Origin.
    let (status, answer) = farm.post_as("/api/v1/jobs/", "text/plain", job);
    assert_eq!(status, 415);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Content-Type: must be application/json"),
        "{answer}"
    );
}

#[test]
fn a_foreign_host_name_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--http-name", "farm.test"]);
    // What a rebinding attack sends: this master's address, a foreign name in Host.
    let port = farm.http.rsplit_once(':').unwrap().1;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{}/api/v1/jobs/", farm.http))
        .header("host", &format!("attacker.example:{port}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let text = response.body_mut().read_to_string().unwrap();
    assert!(text.contains("attacker.example"), "{text}");
    // A name given with --http-name is served.
    let mut response = agent
        .get(&format!("http://{}/api/v1/health", farm.http))
        .header("host", &format!("farm.test:{port}"))
        .header("authorization", &farm.bearer())
        .call()
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.body_mut().read_to_string()
    );
    // The dashboard by its IP address and by localhost still works.
    let mut response = agent
        .get(&format!("http://localhost:{port}/api/v1/health"))
        .header("authorization", &farm.bearer())
        .call()
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.body_mut().read_to_string()
    );
}
