//! The job page in a real headless Chromium shows the frames a job produced: the latest
//! ones as thumbnails, and each task's frame on its row.

mod common;

use std::time::Duration;

use common::chromium::Browser;
use common::{Farm, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A job type that paints one 640×360 PNG per frame with ffmpeg.
const SWATCH: &str = r#"
name = "swatch"
version = 1
description = "Paints a frame"
command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x3060c0:s=640x360", "-frames:v", "1", "{dir}/f_{frame:4}.png"]
output_files = "{dir}/f_{frame:4}.png"
require_outputs = true

[software]
ffmpeg = "*"

[parameters.dir]
type = "path"
required = true
"#;

#[test]
fn the_job_page_shows_frame_previews() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let (status, answer) = farm.post_as(
        "/api/v1/jobtypes/",
        "application/json",
        &json!({"source": SWATCH}).to_string(),
    );
    assert_eq!(status, 201, "{answer}");
    let frames = root.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let (status, job) = farm.post(
        "/api/v1/jobs/",
        &json!({"title": "swatches", "jobtype": "swatch", "frames": "1-4",
                "params": {"dir": frames.to_str().unwrap()}}),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let done = farm.wait_job(id, WAIT);
    assert_eq!(done["state"], "done", "{done}\n{}", farm.logs());

    let mut browser = Browser::open(
        &format!("{}#job={id}", farm.login_url()),
        &root.path().join("chromium"),
    );
    // Four thumbnails, decoded by the browser at the preview's size.
    wait_until("four loaded thumbnails", WAIT, || {
        let loaded = browser.eval(
            "[...document.querySelectorAll('#previews img')].filter((i) => i.complete && i.naturalWidth === 320 && i.naturalHeight === 180).map((i) => i.dataset.frame).join(',')",
        );
        (loaded.as_str() == Some("1,2,3,4")).then_some(())
    });
    let captions = browser.eval("document.getElementById('previews').textContent");
    assert_eq!(captions.as_str(), Some("frame 1frame 2frame 3frame 4"));
    // Each task row shows its frame.
    wait_until("a thumbnail on every task row", WAIT, || {
        let rows = browser.eval(
            "[...document.querySelectorAll('tr.task')].map((r) => r.querySelector('td.thumb img')?.alt ?? 'none').join(',')",
        );
        (rows.as_str() == Some("frame 1,frame 2,frame 3,frame 4")).then_some(())
    });
    let kind = browser.eval("document.getElementById('job-info').textContent");
    assert!(
        kind.as_str().unwrap_or_default().contains("swatch v1"),
        "{kind}"
    );
}
