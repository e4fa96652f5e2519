//! Storage faults: the data directory on a small tmpfs that a task's log fills up.
//!
//! While the database cannot write, new jobs get 503 and are not acknowledged, changes
//! answer 503 (made, not stored yet), `/health` says `degraded` with the reason, and
//! agents keep their results. When space returns the master recovers by itself, and
//! after a restart every acknowledged job and result is there and nothing ran twice.
//!
//! Mounting needs root, as the test command runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Farm, wait_until};
use serde_json::{Value, json};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("create mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the storage tests need root): {status}",
            path.display()
        );
        Self(path.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs: {status}");
    }

    /// Bytes still free.
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.0.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: statvfs with a NUL-terminated path and a zeroed out-structure.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut stat), 0, "statvfs");
            stat.f_bavail * stat.f_frsize
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn job(title: &str, script: &str, frames: &str) -> Value {
    json!({
        "title": title,
        "params": {"command": ["sh", "-c", script]},
        "frames": frames,
        "retries": 0,
    })
}

fn submit(farm: &Farm, body: &Value) -> i64 {
    let (status, job) = farm.post("/api/v1/jobs/", body);
    assert_eq!(status, 201, "{job}\n{}", farm.logs());
    job["id"].as_i64().unwrap()
}

fn attempts(farm: &Farm, id: i64) -> Vec<u64> {
    farm.tasks(id)
        .iter()
        .map(|t| t["attempt"].as_u64().unwrap())
        .collect()
}

/// Fills what is left of the disk with a file of zeros.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create filler");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_data_disk_refuses_new_work_loses_nothing_and_recovers_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let disk = Tmpfs::mount(&data, "24m");
    // The processes' own logs and the agent's state live on disks of their own: only
    // the master's database and task logs share the small one.
    let _run = Tmpfs::mount(&data.join("run"), "64m");
    let _agents = Tmpfs::mount(&data.join("agents"), "64m");
    let mut farm = Farm::up_in(data.clone(), 1, &["--slots", "2"]);

    // Acknowledged before the disk fills: a finished job, and a paused one.
    let early = submit(&farm, &job("early", "echo early {frame}", "1-2"));
    assert_eq!(
        farm.wait_job(early, Duration::from_secs(60))["state"],
        "done"
    );
    let paused = submit(&farm, &job("paused", "sleep 600", "1-2000"));
    let (status, body) = farm.post(
        &format!("/api/v1/jobs/{paused}/actions"),
        &json!({"action": "pause", "kill": true}),
    );
    assert_eq!(status, 200, "{body}");

    // A task whose output (40 MB) is more than the disk holds: its log fills the disk,
    // and what it cannot write is lost without harm to anything else.
    let loud = submit(
        &farm,
        &job(
            "loud",
            "yes 'a line of output that fills the disk of the master' | head -c 40000000; echo finished",
            "1",
        ),
    );
    wait_until("the disk to fill", Duration::from_secs(120), || {
        (disk.free() < 256 * 1024).then_some(())
    });
    wait_until("the loud task to end", Duration::from_secs(120), || {
        let out = Command::new("pgrep")
            .args(["-f", "fills the disk of the master"])
            .output()
            .ok()?;
        (!out.status.success()).then_some(())
    });
    fill(&data.join("filler"));

    // Submissions go on until the database runs out of room; then they are refused
    // (503), not acknowledged. One refusal is not the end: while the write-ahead log
    // holds only pages the database file already has, a checkpoint empties it and the
    // next commit reuses its room. Once it holds a page the full disk cannot take,
    // nothing more commits: refusals then last.
    let mut acknowledged = Vec::new();
    let mut refused_since: Option<Instant> = None;
    let refused = wait_until(
        "submissions to stay refused for a second",
        Duration::from_secs(120),
        || {
            let (status, body) = farm.post("/api/v1/jobs/", &job("flood", "true", "1"));
            match status {
                201 => {
                    acknowledged.push(body["id"].as_i64().unwrap());
                    refused_since = None;
                    None
                }
                503 => {
                    let since = *refused_since.get_or_insert_with(Instant::now);
                    (since.elapsed() >= Duration::from_secs(1)).then_some((status, body))
                }
                _ => Some((status, body)),
            }
        },
    );
    assert_eq!(refused.0, 503, "{}", refused.1);
    let error = refused.1["error"].as_str().unwrap_or_default();
    assert!(error.contains("not stored"), "{}", refused.1);

    // Health says why, and keeps saying it while the disk stays full.
    let degraded = wait_until(
        "health to report the full disk",
        Duration::from_secs(30),
        || {
            let (status, health) = farm.get("/api/v1/health");
            (status == 503).then_some(health)
        },
    );
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    let problem = degraded["problems"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        problem.starts_with("database: cannot write") && problem.contains("full"),
        "{degraded}"
    );
    // A change is made but cannot be stored: the caller hears so at once.
    let (status, body) = farm.post(
        &format!("/api/v1/jobs/{paused}/actions"),
        &json!({"action": "resume"}),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not stored yet")),
        "{body}"
    );
    let out = farm.cli(&["health"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("degraded") && text.contains("database: cannot write"),
        "{text}"
    );
    // Several write probes later (one each 500 ms), the disk is still full and health
    // still says so.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, still) = farm.get("/api/v1/health");
    assert_eq!(status, 503, "the disk is still full: {still}");
    // Reads go on working, and nothing of the resumed job ran: its assignments wait
    // for their commit.
    let (status, list) = farm.get("/api/v1/jobs/?limit=1");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 3 + acknowledged.len(), "{list}");
    let (_, paused_job) = farm.get(&format!("/api/v1/jobs/{paused}"));
    assert_eq!(paused_job["task_counts"]["running"], 0, "{paused_job}");

    // Space comes back: the master recovers by itself.
    disk.resize("256m");
    let health = wait_until("health to recover", Duration::from_secs(30), || {
        let (status, health) = farm.get("/api/v1/health");
        (status == 200).then_some(health)
    });
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["problems"], json!([]), "{health}");
    let (status, body) = farm.post(
        &format!("/api/v1/jobs/{paused}/actions"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(status, 200, "{body}");
    let after = submit(&farm, &job("after", "echo after {frame}", "1-3"));
    for _ in 0..20 {
        let (status, body) = farm.get(&format!("/api/v1/jobs/{after}"));
        assert_eq!(status, 200, "a committed job is always found: {body}");
    }
    let mut finished = vec![early, loud, after];
    finished.extend(&acknowledged);
    for &id in &finished {
        let job = farm.wait_job(id, Duration::from_secs(120));
        assert_eq!(job["state"], "done", "{job}");
    }

    // After a restart every acknowledged job is there, as it was; nothing ran again.
    farm.restart();
    let (status, list) = farm.get("/api/v1/jobs/?limit=1000");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 4 + acknowledged.len(), "{list}");
    for &id in &finished {
        let (_, job) = farm.get(&format!("/api/v1/jobs/{id}"));
        assert_eq!(job["state"], "done", "{job}");
        assert!(
            attempts(&farm, id).iter().all(|a| *a == 1),
            "job {id} ran again: {:?}",
            farm.tasks(id)
        );
    }
    let (_, paused_job) = farm.get(&format!("/api/v1/jobs/{paused}"));
    assert_eq!(paused_job["state"], "cancelled", "{paused_job}");
    drop(farm);
    drop(disk);
}
