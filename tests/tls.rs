//! TLS end to end: a farm serving a certificate from a test CA (made here), reached by the
//! CLI and agents that check it against the CA or pin its fingerprint, and over HTTPS; a
//! wrong CA or fingerprint is refused with the reason.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{furrow_exe, wait_until};

const LONG: Duration = Duration::from_secs(120);

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn make_certs(dir: &Path, name: &str) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test ca"));
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let path = |file: &str| dir.join(format!("{name}-{file}"));
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    let s = |file: &str| path(file).to_string_lossy().into_owned();
    (s("ca.pem"), s("cert.pem"), s("key.pem"))
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn cli(listen: &str, token: &str, args: &[&str]) -> Output {
    Command::new(furrow_exe())
        .args(args)
        .env("FURROW_SERVER", listen)
        .env("FURROW_TOKEN", token)
        .env_remove("FURROW_CA")
        .env_remove("FURROW_FINGERPRINT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_farm_serves_tls_that_clients_check_against_the_ca_or_a_pinned_fingerprint() {
    let root = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(root.path(), "farm");
    let (other_ca, _, _) = make_certs(root.path(), "other");
    let data = root.path().join("data");
    let log = std::fs::File::create(root.path().join("up.log")).unwrap();
    let _up = Up(Command::new(furrow_exe())
        .arg("up")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--agents",
            "1",
        ])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    // `furrow up` binds free ports itself; the master names them in `master.addr`.
    let (listen, http) = wait_until("the master's addresses", LONG, || {
        let text = std::fs::read_to_string(data.join("master.addr")).ok()?;
        let addrs: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((
            addrs["listen"].as_str()?.to_string(),
            addrs["http"].as_str()?.to_string(),
        ))
    });
    let token = wait_until("the admin token", LONG, || {
        std::fs::read_to_string(data.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string())
    });
    // The local agent pinned the fingerprint the master wrote, and is online.
    wait_until("the local agent online over TLS", LONG, || {
        let out = cli(&listen, &token, &["agents", "--ca", &ca]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("online"))
            .then_some(())
    });
    // The CLI through the CA: a job runs.
    let out = cli(
        &listen,
        &token,
        &[
            "submit",
            "--ca",
            &ca,
            "--frames",
            "1-3",
            "--wait",
            "--",
            "echo",
            "tls {frame}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Pinning the fingerprint works as well.
    let fingerprint = std::fs::read_to_string(data.join("master.fingerprint"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    let out = cli(&listen, &token, &["jobs", "--fingerprint", &fingerprint]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));

    // A CA that did not sign it, a wrong pin, or no TLS at all: refused, saying why.
    let out = cli(&listen, &token, &["jobs", "--ca", &other_ca]);
    assert!(!out.status.success());
    assert!(text(&out).contains("tls with the master"), "{}", text(&out));
    let out = cli(
        &listen,
        &token,
        &["jobs", "--fingerprint", &"ab".repeat(32)],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("not the pinned"), "{}", text(&out));
    let out = Command::new(furrow_exe())
        .args(["jobs"])
        .current_dir(root.path())
        .env("FURROW_SERVER", &listen)
        .env("FURROW_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain TCP to a TLS master works?");
    assert!(text(&out).contains("the peer speaks TLS"), "{}", text(&out));

    // The REST API over HTTPS, checked against the CA; plain HTTP gets no answer.
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-s", "--max-time", "20"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = curl(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("https://{http}/api/v1/health"),
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let out = curl(&[
        "--cacert",
        &other_ca,
        &format!("https://{http}/api/v1/health"),
    ]);
    assert!(!out.status.success(), "a wrong CA must fail curl's check");
    let out = curl(&[&format!("http://{http}/api/v1/health")]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("\"status\""),
        "plain HTTP answered"
    );

    // An agent on another host's terms: the CA, the join token, and it joins.
    let agent_log = root.path().join("agent.log");
    let file = std::fs::File::create(&agent_log).unwrap();
    let mut agent = Command::new(furrow_exe())
        .args([
            "agent", "--master", &listen, "--name", "remote", "--slots", "1",
        ])
        .args(["--ca", &ca, "--no-detect-software"])
        .arg("--join-token-file")
        .arg(data.join("join.token"))
        .arg("--state-dir")
        .arg(root.path().join("remote"))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    wait_until("the remote agent online", LONG, || {
        let out = cli(&listen, &token, &["agents", "--ca", &ca]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("remote") && l.contains("online"))
            .then_some(())
    });
    agent.kill().unwrap();
    agent.wait().unwrap();
}
