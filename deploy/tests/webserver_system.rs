//! System mode: snippets written into an include directory of a server Furrow does not
//! run, checked and reloaded through that server's own commands.
//!
//! The "system" server is a private one the test starts (a managed server, whose
//! `sites/` directory serves as the include directory); the check and reload commands are
//! the server's own command lines pointed at its configuration, as an operator would
//! configure them for `/etc`.

mod webserver_support;

use std::path::Path;

use furrow_deploy::webserver::{
    ManagedServer, Mount, MountHost, Snippet, SystemOptions, SystemServer, Upstream,
    WebServerError, WebServerKind,
};
use webserver_support::{PyApp, free_addr, free_port, get_async, shared_tempdir};

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|word| (*word).to_owned()).collect()
}

fn system_options(kind: WebServerKind, server: &ManagedServer, state: &Path) -> SystemOptions {
    let state_text = state.display().to_string();
    let mut options = SystemOptions::new(kind, server.sites_dir(), server.address());
    match kind {
        WebServerKind::Nginx => {
            let prefix = format!("{state_text}/");
            let log = format!("{state_text}/error.log");
            let config = format!("{state_text}/nginx.conf");
            let select = ["-p", &prefix, "-e", &log, "-c", &config];
            options.check_command = words(&[&["/usr/sbin/nginx", "-t"][..], &select].concat());
            options.reload_command =
                words(&[&["/usr/sbin/nginx", "-s", "reload"][..], &select].concat());
        }
        WebServerKind::Apache => {
            let config = format!("{state_text}/httpd.conf");
            let select = ["-f", config.as_str(), "-d", state_text.as_str()];
            options.check_command = words(&[&["/usr/sbin/apache2", "-t"][..], &select].concat());
            options.reload_command =
                words(&[&["/usr/sbin/apache2", "-k", "graceful"][..], &select].concat());
        }
        WebServerKind::Lighttpd => {
            let config = format!("{state_text}/lighttpd.conf");
            options.check_command = words(&["/usr/sbin/lighttpd", "-tt", "-f", &config]);
            let kill = format!("kill -USR1 $(cat {state_text}/run/server.pid)");
            options.reload_command = words(&["sh", "-c", &kill]);
        }
    }
    options
}

async fn mounts_through_the_servers_own_commands(kind: WebServerKind) {
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    let port = free_port();
    let _app = PyApp::tcp(dir.path(), port, "one");
    let server = ManagedServer::start(kind, &state, free_addr())
        .await
        .unwrap();
    let system = SystemServer::new(system_options(kind, &server, &state)).unwrap();

    system
        .install_mount(&Mount::proxy("hello", "/hello", Upstream::port(port)))
        .await
        .unwrap();
    let response = get_async(server.address(), "/hello/sys").await.unwrap();
    assert!(response.body.contains("path=/hello/sys\n"), "{response:?}");
    assert_eq!(system.installed_apps().unwrap(), vec!["hello".to_owned()]);

    // A snippet the server rejects is rolled back; the old one keeps serving.
    let broken = match kind {
        WebServerKind::Nginx => "location /hello/ { no_such_directive on; }\n",
        WebServerKind::Apache => "NoSuchDirective on\n",
        WebServerKind::Lighttpd => "this is = not ( lighttpd\n",
    };
    let err = system
        .install_snippet(&Snippet::raw(kind, "hello", broken, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WebServerError::ConfigRejected { .. }),
        "{err}"
    );
    let files: Vec<String> = std::fs::read_dir(server.sites_dir())
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        !files.concat().contains(broken.trim()),
        "rolled back: {files:?}"
    );
    assert!(
        files.concat().contains("/hello"),
        "old snippet restored: {files:?}"
    );
    // Prove the restored file is what a reload loads.
    system.reload().await.unwrap();
    let still = get_async(server.address(), "/hello/still").await.unwrap();
    assert!(still.body.contains("path=/hello/still\n"), "{still:?}");

    system.remove_mount("hello").await.unwrap();
    let gone = get_async(server.address(), "/hello/x").await.unwrap();
    assert_eq!(gone.status, 404, "{gone:?}");
    server.stop().await.unwrap();
}

async fn a_failing_reload_command_is_reported(kind: WebServerKind) {
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    let server = ManagedServer::start(kind, &state, free_addr())
        .await
        .unwrap();
    let mut options = system_options(kind, &server, &state);
    options.reload_command = words(&["sh", "-c", "echo reload refused >&2; exit 3"]);
    let system = SystemServer::new(options).unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let err = system
        .install_mount(&Mount::static_site("docs", "/docs", &site))
        .await
        .unwrap_err();
    let WebServerError::ReloadFailed { output, .. } = &err else {
        panic!("expected a reload failure, got {err}");
    };
    assert!(output.contains("reload refused"), "{output}");
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
    mounts_through_the_servers_own_commands,
    a_failing_reload_command_is_reported,
);
