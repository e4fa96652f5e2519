//! The dashboard, rendered by a real headless Chromium, shows the farm's agents and jobs and
//! updates itself live, without a reload; a job's task list pages through any number of
//! tasks and opens a running job at its running frames.

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
    // Its state follows it (the stream sends what changed after its first snapshot).
    wait_until("the new job shown done", Duration::from_secs(30), || {
        let state = browser.eval(&format!(
            "document.querySelector('tr.job[data-job-id=\"{second}\"]')?.dataset.state ?? ''"
        ));
        (state == "done").then_some(())
    });
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

/// The first frame of each task row on the page.
fn shown_frames(browser: &mut Browser) -> Vec<i64> {
    let frames = browser.eval(
        "[...document.querySelectorAll('#tasks-body tr.task')].map((r) => r.dataset.frame).join(',')",
    );
    frames
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter_map(|f| f.parse().ok())
        .collect()
}

fn click(browser: &mut Browser, selector: &str) {
    browser.eval(&format!("document.querySelector('{selector}').click()"));
}

/// Waits until the task list starts at `first` with `count` rows.
fn wait_for_page(browser: &mut Browser, what: &str, first: i64, count: usize) {
    wait_until(what, Duration::from_secs(30), || {
        let frames = shown_frames(browser);
        (frames.first() == Some(&first) && frames.len() == count).then_some(())
    });
}

#[test]
fn task_list_pages_past_500_and_opens_at_the_running_frames() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up_in(root.path().join("data"), 1, &["--slots", "2"]);
    // Frames 1-699 end at once; 700 and 701 keep running (and the next two, short tasks
    // lately, wait on the agent for a slot: running too, not started).
    let id = farm.submit(&[
        "--title",
        "long-job",
        "--frames",
        "1-1200",
        "--",
        "sh",
        "-c",
        "test {frame} -lt 700 || exec sleep 600",
    ]);
    farm.wait_job_until(
        id,
        "frames 700 and 701 running",
        Duration::from_secs(120),
        |j| j["task_counts"]["done"] == 699 && j["task_counts"]["running"].as_u64() >= Some(2),
    );

    let mut browser = Browser::open(
        &format!("{}#job={id}", farm.login_url()),
        &root.path().join("chromium"),
    );
    // Opened at the running frames, not at frame 1.
    wait_for_page(&mut browser, "the page at the running frames", 700, 100);
    let range = browser.eval("document.getElementById('tasks-range').textContent");
    assert_eq!(range, "frames 700–799 · 1200 tasks");
    let states = browser.eval(
        "[...document.querySelectorAll('#tasks-body tr.task')].slice(0, 2).map((r) => r.dataset.state).join(',')",
    );
    assert_eq!(states, "running,running");

    // Next and previous pages, past frame 500 both ways.
    click(&mut browser, "#tasks-next");
    wait_for_page(&mut browser, "the next page", 800, 100);
    click(&mut browser, "#tasks-prev");
    wait_for_page(&mut browser, "back to the running frames", 700, 100);
    click(&mut browser, "#tasks-prev");
    wait_for_page(&mut browser, "the page before", 600, 100);
    assert_eq!(shown_frames(&mut browser), (600..700).collect::<Vec<i64>>());

    // Jump to a frame: the last page, with no next one.
    browser.eval("document.getElementById('tasks-frame').value = '1150'");
    click(&mut browser, "#tasks-go");
    wait_for_page(&mut browser, "the last page", 1150, 51);
    assert_eq!(
        browser.eval("document.getElementById('tasks-next').disabled"),
        true
    );

    // Tasks are named by frame: the log pane and the address.
    browser.eval("document.getElementById('tasks-frame').value = '701'");
    click(&mut browser, "#tasks-go");
    wait_for_page(&mut browser, "the page at frame 701", 701, 100);
    click(&mut browser, "#tasks-body tr.task");
    wait_until(
        "the log pane names the frame",
        Duration::from_secs(30),
        || {
            let title = browser.eval("document.getElementById('log-title').textContent");
            title
                .as_str()
                .is_some_and(|t| t.starts_with("frame 701"))
                .then_some(())
        },
    );
    let hash = browser.eval("location.hash");
    assert_eq!(hash, format!("#job={id}&frame=701"));
}
