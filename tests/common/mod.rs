//! The farm harness for end-to-end tests: starts the real `furrow` binary (`furrow up`) on
//! free ports in a temporary data directory and talks to it over REST and the CLI.
#![allow(dead_code)]

pub mod apps;
pub mod chromium;
pub mod netns;
pub mod postgres;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test.
pub fn furrow_exe() -> &'static str {
    env!("CARGO_BIN_EXE_furrow")
}

/// A free TCP port on loopback.
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").to_string()
}

/// Processes whose command line (its arguments) `matches`, found through /proc.
pub fn pids_where(matches: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if matches(&args) {
            pids.push(pid);
        }
    }
    pids
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A farm started with `furrow up`.
pub struct Farm {
    pub data_dir: PathBuf,
    pub listen: String,
    pub http: String,
    pub agents: u32,
    /// The admin's API token (`<data-dir>/admin.token`), sent with every request.
    pub token: String,
    /// Environment variables for `furrow up` and so its master and agents.
    pub env: Vec<(String, String)>,
    up: Option<Child>,
    http_agent: ureq::Agent,
}

impl Farm {
    /// Starts a farm with `agents` local agents in a fresh data directory under `root`.
    pub fn up(root: &Path, agents: u32) -> Farm {
        Self::up_in(root.join("data"), agents, &[])
    }

    /// Starts a farm on `data_dir` (which may hold an earlier farm's state).
    pub fn up_in(data_dir: PathBuf, agents: u32, extra: &[&str]) -> Farm {
        Self::up_env(data_dir, agents, extra, &[])
    }

    /// Starts a farm on `data_dir` with environment variables for its processes.
    pub fn up_env(data_dir: PathBuf, agents: u32, extra: &[&str], env: &[(&str, &str)]) -> Farm {
        // `furrow up` binds free ports itself and keeps them (the master writes them to
        // `master.addr`): picking a port here and releasing it would race with other
        // tests doing the same.
        let listen = "127.0.0.1:0".to_string();
        let http = "127.0.0.1:0".to_string();
        let mut farm = Farm {
            data_dir,
            listen,
            http,
            agents,
            token: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            up: None,
            http_agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
        };
        farm.start(extra);
        farm
    }

    fn start(&mut self, extra: &[&str]) {
        std::fs::create_dir_all(&self.data_dir).expect("create data dir");
        let addr_file = self.data_dir.join("master.addr");
        let fresh_ports = self.listen.ends_with(":0");
        if fresh_ports {
            let _ = std::fs::remove_file(&addr_file);
        }
        let log = std::fs::File::create(self.data_dir.join("up.log")).expect("up log");
        let child = Command::new(furrow_exe())
            .arg("up")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.listen, "--http", &self.http])
            .args(["--agents", &self.agents.to_string()])
            .args(["--heartbeat-timeout", "5"])
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn furrow up");
        self.up = Some(child);
        if fresh_ports {
            let (listen, http) =
                wait_until("the master's addresses", Duration::from_secs(120), || {
                    self.assert_up_running();
                    let text = std::fs::read_to_string(&addr_file).ok()?;
                    let addrs: Value = serde_json::from_str(&text).ok()?;
                    Some((
                        addrs["listen"].as_str()?.to_string(),
                        addrs["http"].as_str()?.to_string(),
                    ))
                });
            self.listen = listen;
            self.http = http;
        }
        let agents = self.agents as usize;
        wait_until("all agents online", Duration::from_secs(120), || {
            self.assert_up_running();
            if self.token.is_empty() {
                let path = self.data_dir.join("admin.token");
                self.token = std::fs::read_to_string(path).ok()?.trim().to_string();
            }
            let (status, body) = self.try_get("/api/v1/agents/")?;
            let online = body["items"]
                .as_array()?
                .iter()
                .filter(|a| a["state"] == "online")
                .count();
            (status == 200 && online >= agents).then_some(())
        });
    }

    fn assert_up_running(&mut self) {
        if let Some(child) = self.up.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("furrow up exited with {status}; its log:\n{}", self.logs());
        }
    }

    /// The logs of `furrow up`, the master and the agents, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = std::fs::read_to_string(self.data_dir.join("up.log")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.data_dir.join("run")) {
            for entry in entries.flatten() {
                let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = body.lines().rev().take(60).collect();
                text.push_str(&format!("\n--- {} ---\n", entry.path().display()));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// Stops the farm with SIGTERM (as Ctrl-C would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.up.take() {
            assert!(
                terminate(&mut child, Duration::from_secs(30)),
                "furrow up did not stop within 30 s of SIGTERM"
            );
        }
    }

    /// Stops and starts the farm again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Stops and starts the farm again, with `extra` arguments for `furrow up`.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.token.clear();
        self.start(extra);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The farm's first join token (`<data-dir>/join.token`).
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("join.token"))
            .expect("join.token")
            .trim()
            .to_string()
    }

    /// `Bearer <admin token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A one-time dashboard login link for the admin (or for the user of `token`).
    pub fn login_url_for(&self, token: &str) -> String {
        let mut response = self
            .http_agent
            .post(&self.url("/api/v1/tokens/"))
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(r#"{"login": true, "label": "test"}"#)
            .expect("POST /api/v1/tokens/");
        assert_eq!(response.status().as_u16(), 201, "login link");
        let made: Value = response.body_mut().read_json().expect("JSON");
        format!(
            "http://{}/login?token={}",
            self.http,
            made["token"].as_str().expect("token")
        )
    }

    /// A one-time dashboard login link for the admin.
    pub fn login_url(&self) -> String {
        self.login_url_for(&self.token)
    }

    /// Adds a user with `role` and returns an API token of theirs.
    pub fn user_token(&self, name: &str, role: &str) -> String {
        let (status, body) = self.post(
            "/api/v1/users/",
            &serde_json::json!({"name": name, "role": role, "password": format!("{name}-password")}),
        );
        assert_eq!(status, 201, "add user {name}: {body}");
        let (status, body) = self.send_as(
            &self.token,
            "POST",
            "/api/v1/tokens/",
            Some(&serde_json::json!({"user": name, "label": "test"})),
        );
        assert_eq!(status, 201, "token of {name}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    pub fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        let mut response = self
            .http_agent
            .get(&self.url(path))
            .header("authorization", &self.bearer())
            .call()
            .ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_json::<Value>().ok()?;
        Some((status, body))
    }

    /// GET a JSON document; returns the status and body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} failed; logs:\n{}", self.logs()))
    }

    /// GET a text document; returns the status and body.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let mut response = self
            .http_agent
            .get(&self.url(path))
            .header("authorization", &self.bearer())
            .call()
            .expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().expect("text body"),
        )
    }

    /// POST a raw body with a JSON content type; returns the status and the JSON answer.
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let mut response = self
            .http_agent
            .post(&self.url(path))
            .header("authorization", &self.bearer())
            .header("content-type", "application/json")
            .send(body)
            .expect("POST");
        let status = response.status().as_u16();
        (
            status,
            response
                .body_mut()
                .read_json::<Value>()
                .expect("JSON answer"),
        )
    }

    /// POST `body` with `content_type`; returns the status and the JSON answer.
    pub fn post_as(&self, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let mut response = self
            .http_agent
            .post(&self.url(path))
            .header("authorization", &self.bearer())
            .header("content-type", content_type)
            .send(body)
            .expect("POST");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POST a JSON document.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string())
    }

    /// Runs the `furrow` CLI against this farm, in `dir`.
    pub fn cli_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(furrow_exe())
            .args(args)
            .current_dir(dir)
            .env("FURROW_SERVER", &self.listen)
            .env("FURROW_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("run furrow")
    }

    /// Runs the `furrow` CLI against this farm.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.token, args)
    }

    /// Runs the `furrow` CLI with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(furrow_exe())
            .args(args)
            .env("FURROW_SERVER", &self.listen)
            .env("FURROW_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run furrow")
    }

    /// `furrow submit ARGS`, which must succeed; returns the job id it printed.
    pub fn submit(&self, args: &[&str]) -> i64 {
        let out = self.cli(&[&["submit"], args].concat());
        assert!(
            out.status.success(),
            "furrow submit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a job id on stdout")
    }

    /// Waits until the job's state is final and returns the job.
    pub fn wait_job(&self, id: i64, deadline: Duration) -> Value {
        let path = format!("/api/v1/jobs/{id}");
        let end = Instant::now() + deadline;
        loop {
            let (status, job) = self.get(&path);
            assert_eq!(status, 200, "{job}");
            if job["state"] == "done" || job["state"] == "failed" || job["state"] == "cancelled" {
                return job;
            }
            assert!(
                Instant::now() < end,
                "job {id} not finished after {deadline:?}: {job}\nlogs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `check` holds for the job and returns it.
    pub fn wait_job_until(
        &self,
        id: i64,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/v1/jobs/{id}");
        wait_until(what, deadline, || {
            let (status, job) = self.get(&path);
            (status == 200 && check(&job)).then_some(job)
        })
    }

    /// Sends a JSON body with `method` (PATCH, DELETE...); returns the status and body
    /// (`null` when empty).
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.send_as(&self.token, method, path, body)
    }

    /// Like [`Farm::send`], with `token` (empty: no `Authorization` header).
    pub fn send_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = self.url(path);
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut response = self
            .http_agent
            .run(request.body(text).expect("request"))
            .expect("http request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    }

    /// All tasks of a job.
    pub fn tasks(&self, id: i64) -> Vec<Value> {
        let (status, page) = self.get(&format!("/api/v1/jobs/{id}/tasks/?limit=10000"));
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().expect("items").clone()
    }

    /// Starts `furrow agent` named `name` for this farm (its state in `root/<name>`, no
    /// join token unless `extra` gives one); returns the child and its log path.
    pub fn start_agent(&self, root: &Path, name: &str, extra: &[&str]) -> (Child, PathBuf) {
        let log = root.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(furrow_exe())
            .args([
                "agent",
                "--master",
                &self.listen,
                "--name",
                name,
                "--slots",
                "1",
            ])
            .arg("--state-dir")
            .arg(root.join(name))
            .arg("--no-detect-software")
            .args(extra)
            .env_remove("FURROW_JOIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        (child, log)
    }

    /// Process id of the farm's master, found through /proc.
    pub fn master_pid(&self) -> Option<i32> {
        let needle = self.data_dir.to_string_lossy().into_owned();
        pids_where(|args| args.get(1).is_some_and(|a| a == "master") && args.contains(&needle))
            .first()
            .copied()
    }

    /// The name's agent number (`host-2` → 2) of the agent with `id`.
    pub fn agent_number(&self, id: &str) -> u32 {
        let (_, agents) = self.get("/api/v1/agents/");
        let agent = agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()
            .clone();
        agent["name"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Sends `signal` to the processes of local agent `number`.
    pub fn signal_agent(&self, number: u32, signal: i32) {
        let pids = self.agent_pids(number);
        assert!(!pids.is_empty(), "agent {number} process not found");
        for pid in pids {
            // SAFETY: kill(2) of a process this test's farm started.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Process ids of the local agent number `n` (1-based), found through /proc.
    pub fn agent_pids(&self, n: u32) -> Vec<i32> {
        let state_dir = self.data_dir.join("agents").join(format!("agent-{n}"));
        let needle = state_dir.to_string_lossy().into_owned();
        pids_where(|args| args.iter().any(|a| a == "agent") && args.contains(&needle))
    }
}

/// Sends SIGTERM and waits up to `grace` for the process to exit; kills it past that.
/// Returns whether it exited by itself.
fn terminate(child: &mut Child, grace: Duration) -> bool {
    // SAFETY: kill(2) on our own child; its children follow through PDEATHSIG.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

impl Drop for Farm {
    fn drop(&mut self) {
        if let Some(mut child) = self.up.take() {
            terminate(&mut child, Duration::from_secs(15));
        }
    }
}
