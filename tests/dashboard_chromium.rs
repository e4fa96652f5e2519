//! The dashboard, rendered by a real headless Chromium, shows the farm's agents and jobs and
//! updates itself live, without a reload.

mod common;

use std::time::Duration;

use common::chromium::Browser;
use common::{Farm, wait_until};

#[test]
fn dashboard_shows_agents_and_jobs_and_updates_live() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 2);
    let first = farm.submit(&[
        "--title",
        "dashboard-job-one",
        "--frames",
        "1-4",
        "--wait",
        "--",
        "true",
    ]);

    let (_, agents) = farm.get("/api/v1/agents/");
    let names: Vec<String> = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2);

    let mut browser = Browser::open(&farm.login_url(), &root.path().join("chromium"));
    let html = wait_until(
        "the dashboard to show agents and the job",
        Duration::from_secs(30),
        || {
            let html = browser.html();
            let complete = html.contains("dashboard-job-one")
                && html.contains(&format!("data-job-id=\"{first}\""))
                && names.iter().all(|n| html.contains(n.as_str()));
            complete.then_some(html)
        },
    );
    assert!(html.contains("id=\"agents\""), "{html}");
    assert!(html.contains("id=\"jobs\""), "{html}");
    // A reload would wipe this marker.
    browser.eval("window.furrowTestMarker = 'still here'");

    // A job submitted now appears on the open page by itself.
    let second = farm.submit(&[
        "--title",
        "dashboard-job-two",
        "--frames",
        "1-2",
        "--wait",
        "--",
        "true",
    ]);
    wait_until(
        "the new job to appear live",
        Duration::from_secs(30),
        || {
            let html = browser.html();
            (html.contains("dashboard-job-two")
                && html.contains(&format!("data-job-id=\"{second}\"")))
            .then_some(())
        },
    );
    assert_eq!(
        browser.eval("window.furrowTestMarker"),
        "still here",
        "the page must not reload"
    );

    // Titles are text, never markup.
    let hostile = "<img src=x onerror=\"window.furrowInjected=1\">";
    let third = farm.submit(&["--title", hostile, "--frames", "1", "--wait", "--", "true"]);
    wait_until(
        "the hostile title to appear as text",
        Duration::from_secs(30),
        || {
            let titles = browser.eval(&format!(
                "document.querySelector('[data-job-id=\"{third}\"]')?.textContent ?? ''"
            ));
            titles
                .as_str()
                .is_some_and(|t| t.contains(hostile))
                .then_some(())
        },
    );
    assert_eq!(browser.eval("typeof window.furrowInjected"), "undefined");
}
