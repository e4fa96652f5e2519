//! An isolated instance: its own mount namespace with the release at `/app`, a fresh
//! `/tmp`, a read-only dependency directory, a writable shared directory, and a per-app
//! uid/gid.

mod webserver_support;

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use furrow_deploy::supervise::{
    BindMount, HealthCheck, Isolation, Listen, LogLine, LogSink, NamespaceIsolation, PortPool,
    ProcessSpec, Supervisor,
};
use webserver_support::{shared_tempdir, wait_until_async, write_app};

const APP_UID: u32 = 42_424;
const APP_GID: u32 = 42_425;

const PROBE_PY: &str = r#"
import os, sys
secret = sys.argv[1]
print("root_visible=%s" % os.path.exists("/root"), flush=True)
print("secret_visible=%s" % os.path.exists(secret), flush=True)
print("ids=%d:%d" % (os.getuid(), os.getgid()), flush=True)
print("cwd=%s" % os.getcwd(), flush=True)
print("tmp=%s" % sorted(os.listdir("/tmp")), flush=True)
try:
    open("/app/intruder", "w")
    print("release_writable=True", flush=True)
except OSError:
    print("release_writable=False", flush=True)
print("deps_read=%s" % open("/deps/lib/mod.txt").read().strip(), flush=True)
try:
    open("/deps/lib/intruder", "w")
    print("deps_writable=True", flush=True)
except OSError:
    print("deps_writable=False", flush=True)
with open("/data/out.txt", "w") as out:
    out.write("written inside\n")
print("done", flush=True)
os.execvp("sleep", ["sleep", "1000"])
"#;

fn collecting_sink() -> (Arc<Mutex<Vec<String>>>, Arc<dyn LogSink>) {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let collected = Arc::clone(&lines);
    let sink: Arc<dyn LogSink> = Arc::new(move |line: &LogLine<'_>| {
        collected.lock().unwrap().push(line.text.to_owned());
    });
    (lines, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_process_sees_only_its_release_and_writable_dirs() {
    let dir = shared_tempdir();
    let release = dir.path().join("release");
    std::fs::create_dir(&release).unwrap();
    std::fs::write(release.join("probe.py"), PROBE_PY).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    nix::unistd::chown(&data, Some(APP_UID.into()), Some(APP_GID.into())).unwrap();
    // A file of the test's outside the release: invisible inside (fresh /tmp).
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "secret").unwrap();

    let deps = dir.path().join("deps");
    std::fs::create_dir(&deps).unwrap();
    std::fs::write(deps.join("mod.txt"), "shared module\n").unwrap();

    let mut isolation = NamespaceIsolation::new(&release);
    isolation.ids = Some((APP_UID, APP_GID));
    isolation.read_only.push(BindMount {
        source: deps.clone(),
        target: "/deps/lib".into(),
    });
    isolation.writable.push(BindMount {
        source: data.clone(),
        target: "/data".into(),
    });
    let mut spec = ProcessSpec::new(
        "boxed",
        "r1",
        "worker",
        vec![
            "python3".into(),
            "probe.py".into(),
            secret.display().to_string(),
        ],
    );
    spec.listen = Listen::None;
    // Passes only inside the namespace, as the app's uid, with the app's environment.
    spec.health = Some(HealthCheck::Command(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "test ! -e /root && test -w /data && test \"$(id -u)\" = {APP_UID} && test \"$FURROW_APP\" = boxed && test -z \"$CARGO_MANIFEST_DIR\""
        ),
    ]));
    spec.isolation = Isolation::Namespace(isolation);
    let (lines, sink) = collecting_sink();
    let ports = Arc::new(PortPool::new(40000..=40010).unwrap());
    let handle = Supervisor::start(spec, &ports, &dir.path().join("run"), sink).unwrap();
    wait_until_async(Duration::from_secs(20), "the probe to finish", || {
        let done = lines.lock().unwrap().iter().any(|line| line == "done");
        async move { done }
    })
    .await;
    let output = lines.lock().unwrap().clone();
    for expected in [
        "root_visible=False",
        "secret_visible=False",
        &format!("ids={APP_UID}:{APP_GID}"),
        "cwd=/app",
        "tmp=[]",
        "release_writable=False",
        "deps_read=shared module",
        "deps_writable=False",
    ] {
        assert!(
            output.iter().any(|line| line == expected),
            "missing {expected:?} in {output:?}"
        );
    }
    if let Err(err) = handle.wait_healthy(Duration::from_secs(20)).await {
        panic!("the health command failed: {err}; output: {output:?}");
    }
    let written = data.join("out.txt");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "written inside\n"
    );
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), APP_UID);
    assert!(!release.join("intruder").exists());
    assert!(!deps.join("intruder").exists());
    assert!(
        handle.status()[0].state.is_running(),
        "{:?}",
        handle.status()
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_web_app_serves_on_its_socket() {
    let dir = shared_tempdir();
    let release = dir.path().join("release");
    std::fs::create_dir(&release).unwrap();
    std::fs::copy(write_app(dir.path()), release.join("app.py")).unwrap();
    let mut isolation = NamespaceIsolation::new(&release);
    isolation.ids = Some((APP_UID, APP_GID));
    let mut spec = ProcessSpec::new(
        "boxedweb",
        "r1",
        "web",
        vec![
            "python3".into(),
            "app.py".into(),
            "unix".into(),
            "{socket}".into(),
            "boxed".into(),
        ],
    );
    spec.listen = Listen::Socket;
    spec.health = Some(HealthCheck::Http("/health".into()));
    spec.isolation = Isolation::Namespace(isolation);
    let (lines, sink) = collecting_sink();
    let ports = Arc::new(PortPool::new(40020..=40030).unwrap());
    let handle = Supervisor::start(spec, &ports, &dir.path().join("run"), sink).unwrap();
    if let Err(err) = handle.wait_healthy(Duration::from_secs(30)).await {
        panic!("{err}; output: {:?}", lines.lock().unwrap());
    }
    let socket = dir.path().join("run/boxedweb/r1/web-0.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), APP_UID);
    handle.stop().await;
}
