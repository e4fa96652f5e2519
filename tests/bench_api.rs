//! `furrow bench api` on a small store: it fills the store, restarts the master on it,
//! measures every read, and prints each figure.

mod common;

use std::process::Command;

#[test]
fn bench_api_prints_every_figure_on_a_small_store() {
    let out = Command::new(common::furrow_exe())
        .args([
            "bench",
            "api",
            "--jobs",
            "50",
            "--big-job",
            "2000",
            "--requests",
            "5",
            "--cli-runs",
            "1",
            "--live-secs",
            "1",
        ])
        .env_remove("FURROW_DATABASE_URL")
        .output()
        .expect("furrow bench api runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "api: restart ready in ",
        "api: job list page p50 ",
        "api: one job with its counts p50 ",
        "api: big job tasks, first page p50 ",
        "api: big job tasks, last page (offset) p50 ",
        "api: big job tasks, done p50 ",
        "api: task by frame p50 ",
        "api: log by frame p50 ",
        "cli: furrow job 2 p50 ",
        "dashboard: first load ",
        "dashboard: live updates ",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    // The big job's tasks are queued but for those that ran, and the store holds every job.
    assert!(
        text.contains("api: sqlite database, 50 jobs, big job 2 of 2000 tasks"),
        "{text}"
    );
    let log_line = text
        .lines()
        .find(|l| l.starts_with("api: log by frame"))
        .unwrap();
    assert!(
        !log_line.ends_with("(0 bytes)"),
        "the log read nothing: {log_line}"
    );
}
