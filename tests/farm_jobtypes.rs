//! Declarative job types end to end: added on the master, used, changed under a new
//! version (a job keeps its version), refused when broken, hot-reloaded from an agent's
//! watched directory; and path maps applied to a task's parameters.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Farm, wait_until};
use serde_json::{Value, json};

/// A job type that says its version and a word, and reports a percentage.
fn greeter(version: u32, greeting: &str) -> String {
    format!(
        r#"
name = "greet"
version = {version}
description = "Says hello"
shell = true
command = ["echo percent 50 && echo '{greeting} {{word}} {{frame:3}}'"]
progress = '^percent (?P<percent>\d+)'
errors = ['^FATAL: (.*)']

[parameters.word]
type = "string"
required = true
"#
    )
}

/// The stdout of the first task of a job.
fn stdout_of(farm: &Farm, job: i64) -> String {
    let task = &farm.tasks(job)[0];
    let (status, text) = farm.get_text(&format!("/api/v1/jobs/{job}/tasks/{}/logs", task["id"]));
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| line.contains(" stdout "))
        .map(|line| {
            line.split_once(" stdout ")
                .map_or("", |(_, t)| t)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write(dir: &Path, name: &str, text: &str) {
    // Written next to the directory and renamed in, as editors save.
    let tmp = dir.parent().unwrap().join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn declarative_types_are_versioned_validated_and_hot_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("jobtypes");
    std::fs::create_dir_all(&watched).unwrap();
    let farm = Farm::up_in(
        tmp.path().join("data"),
        1,
        &["--jobtypes-dir", watched.to_str().unwrap()],
    );

    // Added on the master with the CLI, then used.
    let v1 = tmp.path().join("greet-v1.toml");
    std::fs::write(&v1, greeter(1, "hello")).unwrap();
    let out = farm.cli(&["jobtype", "add", v1.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "job type greet version 1: stored"
    );
    let first = farm.submit(&["greet", "world", "--frames", "7"]);
    let job = farm.wait_job(first, Duration::from_secs(60));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["jobtype_version"], 1);
    assert_eq!(stdout_of(&farm, first), "percent 50\nhello world 007");
    assert_eq!(farm.tasks(first)[0]["progress"], 1.0);

    // A new version: new jobs get it, a job may still ask for the old one.
    let v2 = tmp.path().join("greet-v2.toml");
    std::fs::write(&v2, greeter(2, "bonjour")).unwrap();
    assert!(
        farm.cli(&["jobtype", "add", v2.to_str().unwrap()])
            .status
            .success()
    );
    let second = farm.submit(&["greet", "--param", "word=monde", "--frames", "1"]);
    let old = farm.submit(&["greet", "world", "--jobtype-version", "1", "--frames", "2"]);
    for job in [second, old] {
        assert_eq!(farm.wait_job(job, Duration::from_secs(60))["state"], "done");
    }
    assert_eq!(stdout_of(&farm, second), "percent 50\nbonjour monde 001");
    assert_eq!(stdout_of(&farm, old), "percent 50\nhello world 002");
    let (_, first_job) = farm.get(&format!("/api/v1/jobs/{first}"));
    assert_eq!(first_job["jobtype_version"], 1, "a job keeps its version");
    let (status, listed) = farm.get("/api/v1/jobtypes/greet/1");
    assert_eq!(status, 200);
    assert_eq!(listed["source"], Value::from(greeter(1, "hello")));
    let (_, newest) = farm.get("/api/v1/jobtypes/greet");
    assert_eq!(newest["version"], 2);

    // A stored version cannot change, a built-in name cannot be taken, and a broken file
    // is refused with the field at fault.
    std::fs::write(&v1, greeter(1, "changed")).unwrap();
    let out = farm.cli(&["jobtype", "add", v1.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("version: greet version 1 is stored with a different definition"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (body, status, message) in [
        (
            "name = \"greet\"\nversion = 3\ncommand = [\"echo\", \"{wrd}\"]\n[parameters.word]\ntype = \"string\"",
            400,
            "command[1]: unknown placeholder {wrd}",
        ),
        (
            "name = \"x\"\nversion = 1\ncommand = [\"x\"]\nprogress = '(?P<frame>'",
            400,
            "progress: invalid regex",
        ),
        (
            "name = \"x\"\nversion = 1\ncommand = [\"x\"]\n[parameters.a]\ntype = \"colour\"",
            400,
            "parameters.a.type: unknown parameter type `colour`",
        ),
        (
            "name = \"x\"\ncommand = [\"x\"]",
            400,
            "missing field `version`",
        ),
        (
            "name = \"x\"\nversion = 1\ncommand = [\"x\"]\n[software]\nblender = \"latest\"",
            400,
            "software.blender: ",
        ),
        (
            "name = \"command\"\nversion = 9\ncommand = [\"x\"]",
            409,
            "name: command is a built-in job type",
        ),
    ] {
        let (got, answer) = farm.post_as("/api/v1/jobtypes/", "application/toml", body);
        assert_eq!(got, status, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(message) || error.contains(message),
            "{body}: {error}"
        );
    }
    // Parameters are checked at submission against the job's version.
    let (status, answer) = farm.post(
        "/api/v1/jobs/",
        &json!({"title": "t", "jobtype": "greet", "frames": "1", "params": {"wrd": "x"}}),
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("params.wrd: unknown parameter"),
        "{answer}"
    );

    // The agent's watched directory: a saved file is published and runs.
    write(
        &watched,
        "local.toml",
        "name = \"local\"\nversion = 1\ncommand = [\"echo\", \"local one\"]\n",
    );
    wait_until(
        "the local type on the master",
        Duration::from_secs(10),
        || (farm.get("/api/v1/jobtypes/local").0 == 200).then_some(()),
    );
    let local = farm.submit(&["local", "--frames", "1"]);
    assert_eq!(
        farm.wait_job(local, Duration::from_secs(60))["state"],
        "done"
    );
    assert_eq!(stdout_of(&farm, local), "local one");
    // Changed under a new version: live without a restart.
    write(
        &watched,
        "local.toml",
        "name = \"local\"\nversion = 2\ncommand = [\"echo\", \"local two\"]\n",
    );
    wait_until("version 2 on the master", Duration::from_secs(10), || {
        (farm.get("/api/v1/jobtypes/local/2").0 == 200).then_some(())
    });
    let local = farm.submit(&["local", "--frames", "1"]);
    assert_eq!(
        farm.wait_job(local, Duration::from_secs(60))["state"],
        "done"
    );
    assert_eq!(stdout_of(&farm, local), "local two");
    // A broken file is reported and never half-loaded: the others stay live.
    write(
        &watched,
        "broken.toml",
        "name = \"broken\"\nversion = 1\ncommand = [\"x\", \"{nope}\"]\n",
    );
    let agent_log = farm.data_dir.join("run/agent-1.log");
    wait_until("the broken file reported", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
        log.lines()
            .any(|l| {
                l.contains("job-type file refused")
                    && l.contains("broken.toml")
                    && l.contains("unknown placeholder {nope}")
            })
            .then_some(())
    });
    assert_eq!(farm.get("/api/v1/jobtypes/broken").0, 404);
    let local = farm.submit(&["local", "--frames", "2"]);
    assert_eq!(
        farm.wait_job(local, Duration::from_secs(60))["state"],
        "done"
    );
}

#[test]
fn path_maps_rewrite_parameters_for_the_agents_system() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = Farm::up(tmp.path(), 1);
    let linux = tmp.path().join("projects");
    std::fs::create_dir_all(linux.join("shots")).unwrap();
    std::fs::write(linux.join("shots").join("notes.txt"), "from the share\n").unwrap();

    let out = farm.cli(&[
        "pathmap",
        "add",
        "--linux",
        linux.to_str().unwrap(),
        "--windows",
        r"P:\",
        "--macos",
        "/Volumes/projects",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, maps) = farm.get("/api/v1/pathmaps/");
    assert_eq!(maps.as_array().unwrap().len(), 1, "{maps}");

    // A job submitted from a Windows workstation reads the file on the Linux agent.
    let job = farm.submit(&["--frames", "1", "--", "cat", r"P:\shots\notes.txt"]);
    assert_eq!(farm.wait_job(job, Duration::from_secs(60))["state"], "done");
    let task = &farm.tasks(job)[0];
    let (_, log) = farm.get_text(&format!("/api/v1/jobs/{job}/tasks/{}/logs", task["id"]));
    let mapped = format!(
        r"path map: P:\shots\notes.txt -> {}/shots/notes.txt",
        linux.display()
    );
    assert!(log.contains(&mapped), "{log}");
    assert!(log.contains("stdout from the share"), "{log}");

    // Bad maps are refused naming the field; removal works once.
    let (status, answer) = farm.post(
        "/api/v1/pathmaps/",
        &json!({"linux": "relative", "windows": "P:"}),
    );
    assert_eq!(
        (
            status,
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("linux:")
        ),
        (400, true),
        "{answer}"
    );
    let id = maps[0]["id"].as_i64().unwrap();
    assert_eq!(
        farm.send("DELETE", &format!("/api/v1/pathmaps/{id}"), None)
            .0,
        204
    );
    assert_eq!(
        farm.send("DELETE", &format!("/api/v1/pathmaps/{id}"), None)
            .0,
        404
    );
}
