//! Managed nginx, Apache and lighttpd servers with real apps mounted on them.
//!
//! Every test starts its own server on its own port from its own state directory, and its
//! own Python apps; the same scenarios run for each server kind.

mod webserver_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use furrow_deploy::webserver::{
    Backend, ManagedServer, Mount, MountHost, ServerStatus, Snippet, Upstream, WebServerError,
    WebServerKind,
};
use webserver_support::{PyApp, free_addr, free_port, get, get_async, shared_tempdir, wait_until};

async fn start(kind: WebServerKind, state: &std::path::Path) -> ManagedServer {
    ManagedServer::start(kind, state, free_addr())
        .await
        .unwrap_or_else(|err| panic!("{kind} did not start: {err}"))
}

async fn proxies_a_tcp_app_with_its_prefix(kind: WebServerKind) {
    let dir = shared_tempdir();
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "one");
    let server = start(kind, &dir.path().join("state")).await;
    server
        .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(port)))
        .await
        .unwrap();
    // Once installed, every new connection sees the mount (no old worker answers).
    for _ in 0..20 {
        let response = get_async(server.address(), "/hello/now").await.unwrap();
        assert_eq!(response.status, 200, "{response:?}");
    }
    let response = get_async(server.address(), "/hello/x?q=1").await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.body.contains("path=/hello/x?q=1\n"),
        "{}",
        response.body
    );
    assert!(
        response.body.contains("prefix=/hello\n"),
        "{}",
        response.body
    );
    assert!(response.body.contains("xff=127.0.0.1"), "{}", response.body);
    assert!(response.body.contains("proto=http\n"), "{}", response.body);
    let host = format!("host=localhost:{}\n", server.address().port());
    assert!(response.body.contains(&host), "{}", response.body);
    // The bare prefix belongs to the app too; a longer name does not.
    let bare = get_async(server.address(), "/hello").await.unwrap();
    assert!(bare.body.contains("path=/hello\n"), "{bare:?}");
    let other = get_async(server.address(), "/helloworld").await.unwrap();
    assert_eq!(other.status, 404, "{other:?}");
    assert_eq!(server.installed_apps().unwrap(), vec!["hello".to_owned()]);
    assert_eq!(server.stop().await.unwrap(), ServerStatus::Stopped);
}

async fn proxies_unix_sockets_and_balances(kind: WebServerKind) {
    let dir = shared_tempdir();
    let socket = dir.path().join("one.sock");
    let port = free_port();
    let _one = PyApp::unix(dir.path(), &socket, "one");
    let _two = PyApp::tcp(dir.path(), port, "two");
    let server = start(kind, &dir.path().join("state")).await;
    let upstream = Upstream::balanced(vec![Backend::Unix(socket.clone()), Backend::port(port)]);
    server
        .install_mount(&Mount::proxy("pair", "/pair", upstream))
        .await
        .unwrap();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let response = get_async(server.address(), "/pair/y").await.unwrap();
        assert!(response.body.contains("path=/pair/y\n"), "{response:?}");
        let name = response
            .body
            .lines()
            .find(|line| line.starts_with("name="))
            .map(str::to_owned);
        names.extend(name);
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["name=one".to_owned(), "name=two".to_owned()],
        "both the unix-socket and the TCP instance answer"
    );
}

async fn serves_a_static_site(kind: WebServerKind) {
    let dir = shared_tempdir();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>docs</h1>\n").unwrap();
    std::fs::write(site.join("page.txt"), "static page\n").unwrap();
    let server = start(kind, &dir.path().join("state")).await;
    server
        .install_mount(&Mount::static_site("docs", "/docs", &site))
        .await
        .unwrap();
    let page = get_async(server.address(), "/docs/page.txt").await.unwrap();
    assert_eq!(
        (page.status, page.body.as_str()),
        (200, "static page\n"),
        "{page:?}"
    );
    let index = get_async(server.address(), "/docs/").await.unwrap();
    assert_eq!(
        (index.status, index.body.as_str()),
        (200, "<h1>docs</h1>\n"),
        "{index:?}"
    );
    let missing = get_async(server.address(), "/docs/nope.txt").await.unwrap();
    assert_eq!(missing.status, 404);
    // A site whose directory does not exist is refused before any change.
    let err = server
        .install_mount(&Mount::static_site(
            "ghost",
            "/ghost",
            dir.path().join("nope"),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    assert_eq!(server.installed_apps().unwrap(), vec!["docs".to_owned()]);
}

async fn serves_statics_under_an_app_without_the_app(kind: WebServerKind) {
    let dir = shared_tempdir();
    let assets = dir.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    std::fs::write(assets.join("app.css"), "body{}\n").unwrap();
    let port = free_port();
    let mut app = PyApp::tcp(dir.path(), port, "one");
    let server = start(kind, &dir.path().join("state")).await;
    let mount =
        Mount::proxy("shop", "/shop", Upstream::port(port)).with_static("/shop/static", &assets);
    server.install_mount(&mount).await.unwrap();
    let through_app = get_async(server.address(), "/shop/cart").await.unwrap();
    assert!(
        through_app.body.contains("path=/shop/cart\n"),
        "{through_app:?}"
    );
    app.kill();
    let css = get_async(server.address(), "/shop/static/app.css")
        .await
        .unwrap();
    assert_eq!(
        (css.status, css.body.as_str()),
        (200, "body{}\n"),
        "{css:?}"
    );
    let down = get_async(server.address(), "/shop/cart").await.unwrap();
    assert!(down.status >= 500, "the app is down: {down:?}");
}

async fn a_rejected_snippet_leaves_the_old_config_serving(kind: WebServerKind) {
    let dir = shared_tempdir();
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "one");
    let server = start(kind, &dir.path().join("state")).await;
    server
        .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(port)))
        .await
        .unwrap();
    let broken = match kind {
        WebServerKind::Nginx => "location /hello/ { no_such_directive on; }\n",
        WebServerKind::Apache => "NoSuchDirective on\n",
        WebServerKind::Lighttpd => "this is = not ( lighttpd\n",
    };
    let err = server
        .install_snippet(&Snippet::raw(kind, "hello", broken, None))
        .await
        .unwrap_err();
    let WebServerError::ConfigRejected { output, .. } = &err else {
        panic!("expected a rejection, got {err}");
    };
    let server_words = match kind {
        WebServerKind::Nginx => "unknown directive \"no_such_directive\"",
        WebServerKind::Apache => "NoSuchDirective",
        WebServerKind::Lighttpd => "configfile",
    };
    assert!(output.contains(server_words), "{kind} said: {output}");
    let response = get_async(server.address(), "/hello/still").await.unwrap();
    assert!(
        response.body.contains("path=/hello/still\n"),
        "{response:?}"
    );
    // The rejected text never reached the live directory.
    let live: String = std::fs::read_dir(server.sites_dir())
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(!live.contains(broken.trim()), "{live}");
    // Invalid input never becomes configuration.
    let injected = Mount::proxy("evil", "/x; } server { listen 81", Upstream::port(port));
    let err = server.install_mount(&injected).await.unwrap_err();
    assert!(matches!(err, WebServerError::InvalidMount { .. }), "{err}");
}

async fn removing_a_mount_makes_its_path_404(kind: WebServerKind) {
    let dir = shared_tempdir();
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "one");
    let server = start(kind, &dir.path().join("state")).await;
    server
        .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(port)))
        .await
        .unwrap();
    assert_eq!(
        get_async(server.address(), "/hello/x")
            .await
            .unwrap()
            .status,
        200
    );
    server.remove_mount("hello").await.unwrap();
    for _ in 0..20 {
        let gone = get_async(server.address(), "/hello/x").await.unwrap();
        assert_eq!(gone.status, 404, "{gone:?}");
    }
    assert!(server.installed_apps().unwrap().is_empty());
    // Removing again is a no-op.
    server.remove_mount("hello").await.unwrap();
}

async fn reloads_without_failing_a_request(kind: WebServerKind) {
    let dir = shared_tempdir();
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "one");
    let server = start(kind, &dir.path().join("state")).await;
    server
        .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(port)))
        .await
        .unwrap();
    let address = server.address();
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let client = {
        let done = Arc::clone(&done);
        let served = Arc::clone(&served);
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !done.load(Ordering::SeqCst) {
                match get(address, "/hello/during") {
                    Ok(response) if response.status == 200 => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(response) => failures.push(format!("status {}", response.status)),
                    Err(err) => failures.push(err),
                }
            }
            failures
        })
    };
    for round in 0..5 {
        // Alternate between two snippets so every reload loads a real change.
        let mut mount = Mount::proxy("hello", "/hello", Upstream::port(port));
        if round % 2 == 0 {
            mount = mount.with_static("/hello/static", dir.path());
        }
        server.install_mount(&mount).await.unwrap();
        server.reload().await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let failures = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{kind}: failed requests during reloads: {failures:?}"
    );
    assert!(served.load(Ordering::SeqCst) > 5);
}

async fn restarts_cleanly_over_a_stale_state_dir(kind: WebServerKind) {
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "one");
    let first = start(kind, &state).await;
    first
        .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(port)))
        .await
        .unwrap();
    let old_pid = first.pid();
    // A previous agent died without stopping its server: the process and its pid file stay.
    std::mem::forget(first);
    let second = start(kind, &state).await;
    assert_ne!(second.pid(), old_pid);
    wait_until(Duration::from_secs(10), "the old server to be gone", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid as i32), None).is_err()
    });
    // The mount installed by the previous run is served again.
    let response = get_async(second.address(), "/hello/again").await.unwrap();
    assert!(
        response.body.contains("path=/hello/again\n"),
        "{response:?}"
    );
    second.stop().await.unwrap();
}

async fn a_site_at_the_root_and_an_app_below_it_coexist(kind: WebServerKind) {
    let dir = shared_tempdir();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "home\n").unwrap();
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "api");
    let server = start(kind, &dir.path().join("state")).await;
    // Installed in both orders across the kinds' file ordering: the root first, then a
    // deeper mount, which must still win for its own paths.
    server
        .install_mount(&Mount::static_site("home", "/", &site))
        .await
        .unwrap();
    server
        .install_mount(&Mount::proxy("api", "/api/v1", Upstream::port(port)))
        .await
        .unwrap();
    let home = get_async(server.address(), "/").await.unwrap();
    assert_eq!(
        (home.status, home.body.as_str()),
        (200, "home\n"),
        "{home:?}"
    );
    let api = get_async(server.address(), "/api/v1/items").await.unwrap();
    assert!(api.body.contains("path=/api/v1/items\n"), "{api:?}");
    let mut apps = server.installed_apps().unwrap();
    apps.sort();
    assert_eq!(apps, vec!["api".to_owned(), "home".to_owned()]);
    // Removing the root site leaves the app.
    server.remove_mount("home").await.unwrap();
    let api = get_async(server.address(), "/api/v1/again").await.unwrap();
    assert!(api.body.contains("path=/api/v1/again\n"), "{api:?}");
    // The empty document root: 404, or 403 where the server refuses to list a directory.
    let root = get_async(server.address(), "/").await.unwrap();
    assert!(matches!(root.status, 403 | 404), "{root:?}");
}

async fn mounts_nest_under_an_app_at_the_root(kind: WebServerKind) {
    let dir = shared_tempdir();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("page.txt"), "docs page\n").unwrap();
    let root_port = free_port();
    let api_port = free_port();
    let _root = PyApp::tcp(dir.path(), root_port, "root");
    let _api = PyApp::tcp(dir.path(), api_port, "api");
    let server = start(kind, &dir.path().join("state")).await;
    server
        .install_mount(&Mount::proxy("main", "/", Upstream::port(root_port)))
        .await
        .unwrap();
    server
        .install_mount(&Mount::static_site("docs", "/docs", &site))
        .await
        .unwrap();
    server
        .install_mount(&Mount::proxy("api", "/api", Upstream::port(api_port)))
        .await
        .unwrap();
    let home = get_async(server.address(), "/anything").await.unwrap();
    assert!(
        home.body.contains("name=root\n") && home.body.contains("path=/anything\n"),
        "{home:?}"
    );
    let docs = get_async(server.address(), "/docs/page.txt").await.unwrap();
    assert_eq!(
        (docs.status, docs.body.as_str()),
        (200, "docs page\n"),
        "{docs:?}"
    );
    let api = get_async(server.address(), "/api/items").await.unwrap();
    assert!(
        api.body.contains("name=api\n") && api.body.contains("path=/api/items\n"),
        "{api:?}"
    );
    assert!(
        api.body.contains("prefix=/api\n"),
        "the deeper mount's prefix: {api:?}"
    );
    // Removing a nested mount hands its paths back to the app at the root.
    server.remove_mount("api").await.unwrap();
    let api = get_async(server.address(), "/api/items").await.unwrap();
    assert!(api.body.contains("name=root\n"), "{api:?}");
}

async fn reports_a_server_that_died(kind: WebServerKind) {
    let dir = shared_tempdir();
    let server = start(kind, &dir.path().join("state")).await;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait_exit())
        .await
        .unwrap();
    assert_eq!(
        status,
        ServerStatus::Exited {
            code: None,
            signal: Some(9)
        }
    );
    let err = server.reload().await.unwrap_err();
    assert!(matches!(err, WebServerError::NotRunning { .. }), "{err}");
}

macro_rules! for_each_server {
    ($($name:ident),* $(,)?) => {
        mod nginx {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::WebServerKind::Nginx).await })*
        }
        mod apache {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::WebServerKind::Apache).await })*
        }
        mod lighttpd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::WebServerKind::Lighttpd).await })*
        }
    };
}

for_each_server!(
    proxies_a_tcp_app_with_its_prefix,
    proxies_unix_sockets_and_balances,
    serves_a_static_site,
    serves_statics_under_an_app_without_the_app,
    a_rejected_snippet_leaves_the_old_config_serving,
    removing_a_mount_makes_its_path_404,
    reloads_without_failing_a_request,
    restarts_cleanly_over_a_stale_state_dir,
    reports_a_server_that_died,
    a_site_at_the_root_and_an_app_below_it_coexist,
    mounts_nest_under_an_app_at_the_root,
);
