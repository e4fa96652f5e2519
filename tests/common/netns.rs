//! A multi-host test bed on one machine: a real master process, and real agent
//! processes each in a network namespace of its own, joined to the master's namespace by
//! a veth pair. A test can cut a host off (its link down), freeze it (SIGSTOP), kill it,
//! restart it, or kill and restart the master.
//!
//! Creating namespaces needs root, as the test command runs. Everything is removed when
//! the bed is dropped.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{furrow_exe, wait_until};

/// A second octet for the bed's addresses (10.N.host.0/24), held through an exclusive
/// lock on a file for as long as the bed lives, so beds running at once never share one.
struct Subnet {
    octet: u8,
    _lock: File,
}

impl Subnet {
    fn take() -> Self {
        for octet in 100..=199u8 {
            let path = std::env::temp_dir().join(format!("furrow-testbed-10.{octet}.lock"));
            let Ok(file) = File::create(&path) else {
                continue;
            };
            // SAFETY: flock on an open file.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Self { octet, _lock: file };
            }
        }
        panic!("no free subnet for a test bed");
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (the multi-host tests need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// One agent host: a namespace, its link, and the agent process in it.
pub struct Host {
    /// The agent's name.
    pub name: String,
    namespace: String,
    /// The master's side of the veth pair.
    link: String,
    /// The master's address as the host sees it.
    master_ip: String,
    state_dir: PathBuf,
    log: PathBuf,
    agent: Option<Child>,
}

/// The master process and its hosts.
pub struct Testbed {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where tasks may write what they did (the same directory on every host).
    pub shared: PathBuf,
    pub hosts: Vec<Host>,
    master: Option<Child>,
    /// The master's agent port and HTTP address, fixed at its first start.
    pub port: u16,
    pub http: String,
    pub token: String,
    http_agent: ureq::Agent,
    subnet: Subnet,
    /// Host 0's state directory is a small tmpfs.
    small_disk: bool,
    /// The master's data directory is a small tmpfs.
    small_master_disk: bool,
}

fn mount_tmpfs(path: &Path, size: &str) {
    std::fs::create_dir_all(path).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .status()
        .expect("run mount");
    assert!(status.success(), "cannot mount a tmpfs (needs root)");
}

impl Testbed {
    /// Starts a master and `hosts` agents (one slot each) in namespaces of their own.
    pub fn start(dir: &Path, hosts: usize) -> Self {
        Self::start_with(dir, hosts, false)
    }

    /// As [`Testbed::start`], with host 0's state directory (its spool) on a 4 MB
    /// tmpfs of its own when `small_disk`.
    pub fn start_with(dir: &Path, hosts: usize, small_disk: bool) -> Self {
        Self::start_full(dir, hosts, small_disk, false)
    }

    /// As [`Testbed::start_with`], and with the master's data directory on a 24 MB
    /// tmpfs of its own when `small_master_disk` (see [`Testbed::resize_master_disk`]).
    pub fn start_full(dir: &Path, hosts: usize, small_disk: bool, small_master_disk: bool) -> Self {
        let subnet = Subnet::take();
        let n = subnet.octet;
        let shared = dir.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let mut bed = Self {
            dir: dir.to_path_buf(),
            data_dir: dir.join("master"),
            shared,
            hosts: Vec::new(),
            master: None,
            port: 0,
            http: String::new(),
            token: String::new(),
            http_agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            subnet,
            small_disk: false,
            small_master_disk: false,
        };
        for i in 0..hosts {
            let host = Host {
                name: format!("host-{i}"),
                namespace: format!("fw{n}n{i}"),
                link: format!("fw{n}h{i}"),
                master_ip: format!("10.{n}.{i}.1"),
                state_dir: dir.join(format!("host-{i}")),
                log: dir.join(format!("host-{i}.log")),
                agent: None,
            };
            let peer = format!("fw{n}p{i}");
            // A namespace left by a crashed run of a bed with this subnet goes first.
            let _ = Command::new("ip")
                .args(["netns", "del", &host.namespace])
                .output();
            ip(&["netns", "add", &host.namespace]);
            ip(&[
                "link", "add", &host.link, "type", "veth", "peer", "name", &peer,
            ]);
            ip(&["link", "set", &peer, "netns", &host.namespace]);
            ip(&[
                "addr",
                "add",
                &format!("{}/24", host.master_ip),
                "dev",
                &host.link,
            ]);
            ip(&["link", "set", &host.link, "up"]);
            let agent_ip = format!("10.{n}.{i}.2/24");
            ip(&[
                "-n",
                &host.namespace,
                "addr",
                "add",
                &agent_ip,
                "dev",
                &peer,
            ]);
            ip(&["-n", &host.namespace, "link", "set", &peer, "up"]);
            ip(&["-n", &host.namespace, "link", "set", "lo", "up"]);
            bed.hosts.push(host);
        }
        if small_master_disk {
            mount_tmpfs(&bed.data_dir, "24m");
            bed.small_master_disk = true;
        }
        if small_disk {
            let state = &bed.hosts[0].state_dir;
            std::fs::create_dir_all(state).unwrap();
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
                .arg(state)
                .status()
                .expect("run mount");
            assert!(status.success(), "cannot mount a tmpfs (needs root)");
            bed.small_disk = true;
        }
        bed.start_master();
        for i in 0..hosts {
            bed.start_agent(i);
        }
        bed.wait_online(hosts);
        bed
    }

    /// Starts the master (again, on the same ports) and waits until it serves.
    pub fn start_master(&mut self) {
        let (listen, http) = if self.port == 0 {
            ("0.0.0.0:0".to_string(), "127.0.0.1:0".to_string())
        } else {
            (format!("0.0.0.0:{}", self.port), self.http.clone())
        };
        let addr_file = self.data_dir.join("master.addr");
        let _ = std::fs::remove_file(&addr_file);
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("master.log"))
            .unwrap();
        let child = Command::new(furrow_exe())
            .arg("master")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &listen, "--http", &http])
            .args(["--heartbeat-interval", "0.5", "--heartbeat-timeout", "3"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the master");
        self.master = Some(child);
        let addrs: Value = wait_until("the master to start", Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&addr_file).ok()?;
            serde_json::from_str(&text).ok()
        });
        let listen = addrs["listen"].as_str().unwrap();
        self.port = listen.rsplit_once(':').unwrap().1.parse().unwrap();
        self.http = addrs["http"].as_str().unwrap().to_string();
        self.token = std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
    }

    /// The master's process id, while it runs.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    /// Kills the master with SIGKILL, as a crash would.
    pub fn kill_master(&mut self) {
        if let Some(mut master) = self.master.take() {
            signal(&master, libc::SIGKILL);
            let _ = master.wait();
        }
    }

    /// Starts host `i`'s agent (again, with the same state).
    pub fn start_agent(&mut self, i: usize) {
        let join = self.data_dir.join("join.token");
        let host = &mut self.hosts[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&host.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &host.namespace])
            .arg(furrow_exe())
            .arg("agent")
            .args(["--master", &format!("{}:{}", host.master_ip, self.port)])
            .args(["--name", &host.name, "--slots", "1"])
            .arg("--state-dir")
            .arg(&host.state_dir)
            .arg("--join-token-file")
            .arg(&join)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start an agent in its namespace");
        host.agent = Some(child);
    }

    /// Gives the master's small disk `size` (a tmpfs size: `256m`).
    pub fn resize_master_disk(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.data_dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs");
    }

    /// Fills what is left of the disk holding `dir`.
    pub fn fill(dir: &Path) {
        use std::io::Write;
        let mut file = File::create(dir.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }

    /// Fills what is left of host 0's small disk.
    pub fn fill_small_disk(&self) {
        use std::io::Write;
        let mut file = File::create(self.hosts[0].state_dir.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }

    /// Kills host `i`'s agent with SIGKILL.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut agent) = self.hosts[i].agent.take() {
            signal(&agent, libc::SIGKILL);
            let _ = agent.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) host `i`'s agent.
    pub fn freeze_agent(&self, i: usize, frozen: bool) {
        if let Some(agent) = &self.hosts[i].agent {
            signal(agent, if frozen { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Cuts host `i` off the network (its link down), or heals it.
    pub fn cut(&self, i: usize, cut: bool) {
        ip(&[
            "link",
            "set",
            &self.hosts[i].link,
            if cut { "down" } else { "up" },
        ]);
    }

    /// Waits until `n` agents are online.
    pub fn wait_online(&self, n: usize) {
        wait_until("the agents online", Duration::from_secs(120), || {
            let (status, page) = self.try_get("/api/v1/agents/")?;
            let online = page["items"]
                .as_array()?
                .iter()
                .filter(|a| a["state"] == "online")
                .count();
            (status == 200 && online >= n).then_some(())
        });
    }

    /// The host (by index) running a task of job `id`, if any.
    pub fn host_running(&self, id: i64) -> Option<usize> {
        let (_, tasks) = self.try_get(&format!("/api/v1/jobs/{id}/tasks/?limit=1000"))?;
        let agent = tasks["items"]
            .as_array()?
            .iter()
            .find(|t| t["state"] == "running")?["agent"]
            .as_str()?
            .to_string();
        let (_, agents) = self.try_get("/api/v1/agents/")?;
        let name = agents["items"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == agent.as_str())?["name"]
            .as_str()?
            .to_string();
        name.strip_prefix("host-")?.parse().ok()
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// GET, or `None` when the master does not answer.
    pub fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        let mut response = self
            .http_agent
            .get(&format!("http://{}{path}", self.http))
            .header("authorization", &self.bearer())
            .call()
            .ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_json::<Value>().ok()?;
        Some((status, body))
    }

    /// POST a JSON body, or `None` when the master does not answer.
    pub fn try_post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let mut response = self
            .http_agent
            .post(&format!("http://{}{path}", self.http))
            .header("authorization", &self.bearer())
            .header("content-type", "application/json")
            .send(body.to_string())
            .ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_json::<Value>().ok()?;
        Some((status, body))
    }

    /// Submits a job of `frames` whose tasks note their start and end in the shared
    /// directory (`TITLE-FRAME`: `start ATTEMPT`, `end ATTEMPT`) around `seconds` of
    /// sleep.
    pub fn submit_noting(&self, title: &str, frames: &str, seconds: f64) -> i64 {
        // The end is noted by a grandchild of the task, which a process-group kill of the
        // task's own process alone would leave running.
        let script = format!(
            "echo start $FURROW_ATTEMPT >> {dir}/{title}-{{frame}}; \
             (sleep {seconds}; echo end $FURROW_ATTEMPT >> {dir}/{title}-{{frame}}) & wait",
            dir = self.shared.display()
        );
        let body = serde_json::json!({
            "title": title,
            "frames": frames,
            "params": {"command": ["sh", "-c", script]},
            "retries": 5,
        });
        let (status, job) = self
            .try_post("/api/v1/jobs/", &body)
            .expect("the master answers");
        assert_eq!(status, 201, "{job}");
        job["id"].as_i64().unwrap()
    }

    /// Waits until job `id` is done and checks every task: done, with exactly one
    /// attempt that counted (the last), and no attempt started after it.
    pub fn assert_done_once(&self, id: i64, deadline: Duration) {
        let job = wait_until("the job to finish", deadline, || {
            let (status, job) = self.try_get(&format!("/api/v1/jobs/{id}"))?;
            let state = job["state"].as_str()?;
            (status == 200 && matches!(state, "done" | "failed" | "cancelled")).then_some(job)
        });
        assert_eq!(job["state"], "done", "{job}\n{}", self.logs());
        let (_, tasks) = self
            .try_get(&format!("/api/v1/jobs/{id}/tasks/?limit=1000"))
            .expect("tasks");
        for task in tasks["items"].as_array().unwrap() {
            assert_eq!(task["state"], "done", "{task}");
            let task_id = task["id"].as_i64().unwrap();
            let (_, attempts) = self
                .try_get(&format!("/api/v1/jobs/{id}/tasks/{task_id}/attempts"))
                .expect("attempts");
            let attempts = attempts.as_array().unwrap();
            let counted: Vec<&Value> = attempts.iter().filter(|a| a["outcome"] == "done").collect();
            assert_eq!(counted.len(), 1, "one attempt counted: {attempts:?}");
            let last = attempts
                .iter()
                .map(|a| a["attempt"].as_u64().unwrap())
                .max()
                .unwrap();
            assert_eq!(
                counted[0]["attempt"].as_u64(),
                Some(last),
                "nothing ran after the attempt that counted: {attempts:?}"
            );
        }
    }

    /// The attempts that noted a start for `title`'s frame `frame`, and those that noted
    /// an end, in order.
    pub fn notes(&self, title: &str, frame: i64) -> Vec<String> {
        std::fs::read_to_string(self.shared.join(format!("{title}-{frame}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The master's and agents' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let mut files = vec![self.dir.join("master.log")];
        files.extend(self.hosts.iter().map(|h| h.log.clone()));
        for file in files {
            let body = std::fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(40).collect();
            text.push_str(&format!("\n--- {} ---\n", file.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            // A frozen agent must thaw to die of SIGKILL's followers cleanly.
            self.freeze_agent(i, false);
            self.kill_agent(i);
        }
        self.kill_master();
        if self.small_master_disk {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.data_dir)
                .status();
        }
        if self.small_disk {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.hosts[0].state_dir)
                .status();
        }
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.namespace])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &host.link])
                .output();
        }
        let _ = self.subnet.octet;
    }
}
