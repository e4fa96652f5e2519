//! Supervised instances mounted on a managed web server: the endpoints the supervisor
//! hands out are what the mount balances over, and a restarted instance keeps serving
//! through the same mount.

mod webserver_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use furrow_deploy::supervise::{
    HealthCheck, InstanceState, LogLine, LogSink, PortPool, ProcessSpec, Supervisor,
};
use furrow_deploy::webserver::{ManagedServer, Mount, MountHost, Upstream, WebServerKind};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use webserver_support::{free_addr, get_async, shared_tempdir, wait_until_async, write_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_instances_serve_through_nginx() {
    let dir = shared_tempdir();
    let script = write_app(dir.path());
    let ports = Arc::new(PortPool::new(webserver_support::pool_range(20)).unwrap());
    let mut spec = ProcessSpec::new(
        "shop",
        "r1",
        "web",
        vec![
            "python3".into(),
            script.display().to_string(),
            "tcp".into(),
            "{port}".into(),
            "inst-{instance}".into(),
        ],
    );
    spec.instances = 2;
    spec.health = Some(HealthCheck::Http("/health".into()));
    spec.restart.initial_backoff = Duration::from_millis(50);
    let quiet: Arc<dyn LogSink> = Arc::new(|_: &LogLine<'_>| {});
    let handle = Supervisor::start(spec, &ports, &dir.path().join("run"), quiet).unwrap();
    handle.wait_healthy(Duration::from_secs(30)).await.unwrap();

    let server = ManagedServer::start(WebServerKind::Nginx, &dir.path().join("web"), free_addr())
        .await
        .unwrap();
    let backends = handle
        .endpoints()
        .iter()
        .filter_map(|e| e.backend())
        .collect();
    server
        .install_mount(&Mount::proxy("shop", "/shop", Upstream::balanced(backends)))
        .await
        .unwrap();
    let mut names = BTreeSet::new();
    for _ in 0..10 {
        let response = get_async(server.address(), "/shop/cart").await.unwrap();
        assert!(response.body.contains("path=/shop/cart\n"), "{response:?}");
        names.extend(
            response
                .body
                .lines()
                .filter(|l| l.starts_with("name="))
                .map(str::to_owned),
        );
    }
    assert_eq!(names.len(), 2, "both instances answer: {names:?}");

    // An instance dies; the supervisor brings it back on the same port, so the mount
    // needs no change.
    let old = handle.status()[0].state.pid().unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    wait_until_async(Duration::from_secs(30), "instance 0 to run again", || {
        let state = handle.status()[0].state.clone();
        async move { matches!(state, InstanceState::Running { pid, .. } if pid != old) }
    })
    .await;
    let mut after = BTreeSet::new();
    for _ in 0..10 {
        let response = get_async(server.address(), "/shop/after").await.unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        after.extend(
            response
                .body
                .lines()
                .filter(|l| l.starts_with("name="))
                .map(str::to_owned),
        );
    }
    assert_eq!(after, names);
    handle.stop().await;
    server.stop().await.unwrap();
}
