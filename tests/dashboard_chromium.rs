//! The dashboard, rendered by a real headless Chromium, shows the farm's agents and jobs and
//! updates itself live.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Farm, wait_until};

/// Renders `url` in headless Chromium, letting its scripts run, and returns the DOM.
fn render(url: &str, profile: &std::path::Path) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed: run ./scripts/test, which installs it");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dashboard_shows_agents_and_jobs() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 2);
    let out = farm.cli(&["submit", "--title", "dashboard-job-ok", "--frames", "1-4", "--wait", "--", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let (_, agents) = farm.get("/api/v1/agents/");
    let names: Vec<String> = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2);

    let url = format!("http://{}/", farm.http);
    let dom = wait_until("the dashboard to render agents and jobs", Duration::from_secs(60), || {
        let dom = render(&url, &root.path().join("chromium"));
        let complete = dom.contains("dashboard-job-ok")
            && names.iter().all(|n| dom.contains(n.as_str()))
            && dom.contains(&format!("data-job-id=\"{id}\""));
        complete.then_some(dom)
    });
    assert!(dom.contains("id=\"agents\""), "{dom}");
    assert!(dom.contains("id=\"jobs\""), "{dom}");
}
