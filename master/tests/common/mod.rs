//! Shared harness of the master's integration tests: an in-process master on port 0, a
//! test agent speaking the real protocol over TCP, and small HTTP helpers.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use furrow_master::{MasterConfig, MasterHandle};
use furrow_protocol::{
    AgentMessage, Assignment, FrameCodec, Heartbeat, Hello, LogBatch, LogLine, LogStream,
    MasterMessage, Registered, Registration, Role, TaskFinished, TaskRef, TaskStarted, handshake,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use uuid::Uuid;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The admin and join tokens of the masters started by this test, by address (both the
/// TCP and the HTTP one).
static TOKENS: std::sync::Mutex<Vec<(String, Tokens)>> = std::sync::Mutex::new(Vec::new());

/// A master's first tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// `admin.token`.
    pub admin: String,
    /// `join.token`.
    pub join: String,
}

/// The tokens of the master at `addr` (its TCP or HTTP address).
pub fn tokens(addr: &str) -> Tokens {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(a, _)| a == addr)
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("no master of this test at {addr}"))
}

/// Remembers the tokens of the master in `dir`, serving `handle`.
pub fn remember_tokens(dir: &Path, handle: &MasterHandle) {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .trim()
            .to_string()
    };
    let tokens = Tokens {
        admin: read(furrow_master::ADMIN_TOKEN_FILE),
        join: read(furrow_master::JOIN_TOKEN_FILE),
    };
    let addrs = handle.addrs();
    let mut all = TOKENS.lock().unwrap();
    all.push((addrs.listen.to_string(), tokens.clone()));
    all.push((addrs.http.to_string(), tokens));
}

/// A protocol client of the master at `listen`, as its admin.
pub async fn client(listen: &str) -> furrow_protocol::Client {
    let options = furrow_protocol::ClientOptions {
        credentials: Some(tokens(listen).admin),
        ..furrow_protocol::ClientOptions::default()
    };
    furrow_protocol::Client::connect_with(listen, options)
        .await
        .expect("client connects")
}

/// An agent's hello to the master at `listen`, with the farm's join token.
pub fn agent_hello(listen: &str, id: Uuid) -> Hello {
    let mut hello = Hello::new(Role::Agent, id);
    hello.credentials = Some(tokens(listen).join);
    hello
}

/// A tool's hello to the master at `listen`, with its admin token.
pub fn client_hello(listen: &str) -> Hello {
    let mut hello = Hello::new(Role::Client, Uuid::new_v4());
    hello.credentials = Some(tokens(listen).admin);
    hello
}

/// Starts a master on port 0 in `dir`.
pub fn start_master(dir: &Path, heartbeat_timeout: Duration) -> MasterHandle {
    let config = MasterConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        database_url: None,
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout,
        forget_agents_after: None,
        max_frame: 64 * 1024,
        http_names: Vec::new(),
        tls: None,
        inherited: None,
    };
    let handle = furrow_master::spawn(config).expect("master starts");
    remember_tokens(dir, &handle);
    handle
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
pub async fn wait_for<F: FnMut() -> bool>(what: &str, mut condition: F) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake agent speaking the real wire protocol.
pub struct TestAgent {
    pub id: Uuid,
    framed: Framed<TcpStream, FrameCodec<AgentMessage, MasterMessage>>,
    /// Messages read while waiting for an acknowledgement; [`TestAgent::recv`] hands them
    /// out first.
    held: VecDeque<MasterMessage>,
    /// `ResultStored` acknowledgements read while waiting for an assignment or another
    /// acknowledgement.
    acks: Vec<TaskRef>,
    /// The credential the master gave this agent when it joined.
    pub credential: Option<String>,
}

impl TestAgent {
    /// Connects and handshakes as an agent (no registration yet).
    pub async fn connect(addr: &str, id: Uuid) -> Self {
        Self::connect_speaking(addr, id, furrow_protocol::PROTOCOL_VERSION).await
    }

    /// Connects and handshakes as an agent speaking protocol `version` at most.
    pub async fn connect_speaking(addr: &str, id: Uuid, version: u16) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut hello = agent_hello(addr, id);
        hello.version = version;
        handshake::connect(&mut stream, &hello)
            .await
            .expect("handshake");
        Self {
            id,
            framed: Framed::new(stream, FrameCodec::new(64 * 1024)),
            held: VecDeque::new(),
            acks: Vec::new(),
            credential: None,
        }
    }

    /// Connects and registers with `slots` slots, listing `running`.
    pub async fn register(addr: &str, id: Uuid, slots: u32, running: Vec<TaskRef>) -> Self {
        Self::register_speaking(addr, id, slots, running, furrow_protocol::PROTOCOL_VERSION).await
    }

    /// Connects speaking protocol `version` at most, and registers.
    pub async fn register_speaking(
        addr: &str,
        id: Uuid,
        slots: u32,
        running: Vec<TaskRef>,
        version: u16,
    ) -> Self {
        let mut agent = Self::connect_speaking(addr, id, version).await;
        agent
            .send(AgentMessage::Register(Registration {
                agent_id: id,
                name: format!("agent-{}", &id.to_string()[..8]),
                hostname: "localhost".into(),
                os: "linux".into(),
                cpus: 2,
                ram_mb: 1024,
                gpus: Vec::new(),
                tags: Vec::new(),
                software: Default::default(),
                slots,
                version: "test".into(),
                running,
            }))
            .await;
        match agent.recv().await {
            Some(MasterMessage::Registered(Registered { agent_id, .. })) => {
                assert_eq!(agent_id, id)
            }
            other => panic!("expected Registered, got {other:?}"),
        }
        // An agent that joined with the join token gets its credential from its session
        // at about the same time: wait for it, so no test meets it later.
        while agent.credential.is_none() {
            match tokio::time::timeout(DEADLINE, agent.framed.next()).await {
                Ok(Some(Ok(MasterMessage::Credential(credential)))) => {
                    agent.credential = Some(credential)
                }
                Ok(Some(Ok(MasterMessage::ResultStored(task)))) => agent.acks.push(task),
                Ok(Some(Ok(message))) => agent.held.push_back(message),
                _ => panic!("no credential from the master"),
            }
        }
        agent
    }

    pub async fn send(&mut self, message: AgentMessage) {
        self.framed.send(message).await.expect("send to master");
    }

    /// The next message (held ones first), or `None` when the master closed the
    /// connection.
    pub async fn recv(&mut self) -> Option<MasterMessage> {
        match self.held.pop_front() {
            Some(message) => Some(message),
            None => self.read().await,
        }
    }

    /// The next message from the socket, or `None` when the master closed the connection.
    async fn read(&mut self) -> Option<MasterMessage> {
        loop {
            match tokio::time::timeout(DEADLINE, self.framed.next()).await {
                // The credential given to an agent that joined: kept, not handed out.
                Ok(Some(Ok(MasterMessage::Credential(credential)))) => {
                    self.credential = Some(credential)
                }
                Ok(Some(Ok(message))) => return Some(message),
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("timed out waiting for a message from the master"),
            }
        }
    }

    /// The next message that is not an acknowledgement, which must be an assignment.
    pub async fn assignment(&mut self) -> Assignment {
        loop {
            match self.recv().await {
                Some(MasterMessage::Assign(assignment)) => return assignment,
                Some(MasterMessage::ResultStored(task)) => self.acks.push(task),
                other => panic!("expected an assignment, got {other:?}"),
            }
        }
    }

    /// The next assignment, heartbeating every 100 ms while waiting for it.
    pub async fn assignment_heartbeating(&mut self) -> Assignment {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for an assignment"
            );
            let next = match self.held.pop_front() {
                Some(message) => Some(message),
                None => {
                    match tokio::time::timeout(Duration::from_millis(100), self.framed.next()).await
                    {
                        Ok(Some(Ok(message))) => Some(message),
                        Ok(other) => panic!("expected an assignment, got {other:?}"),
                        Err(_) => None,
                    }
                }
            };
            match next {
                Some(MasterMessage::Assign(assignment)) => return assignment,
                Some(MasterMessage::ResultStored(task)) => self.acks.push(task),
                Some(other) => panic!("expected an assignment, got {other:?}"),
                None => self.heartbeat(Vec::new()).await,
            }
        }
    }

    /// Waits for the master's `ResultStored` for `task`. Other messages read meanwhile
    /// are held for [`TestAgent::recv`].
    pub async fn result_stored(&mut self, task: TaskRef) {
        if let Some(index) = self.acks.iter().position(|t| *t == task) {
            self.acks.remove(index);
            return;
        }
        loop {
            match self.read().await {
                Some(MasterMessage::ResultStored(stored)) if stored == task => return,
                Some(MasterMessage::ResultStored(other)) => self.acks.push(other),
                Some(other) => self.held.push_back(other),
                None => panic!("the master closed the connection before storing {task:?}"),
            }
        }
    }

    /// Whether a message arrives within `wait` (used to show that nothing was sent).
    pub async fn nothing_within(&mut self, wait: Duration) -> bool {
        self.held.is_empty()
            && tokio::time::timeout(wait, self.framed.next())
                .await
                .is_err()
    }

    pub async fn heartbeat(&mut self, running: Vec<TaskRef>) {
        self.send(AgentMessage::Heartbeat(Heartbeat {
            free_ram_mb: 512,
            load: 0.5,
            running,
        }))
        .await;
    }

    /// Reports start, output lines and success of an attempt.
    pub async fn run(&mut self, task: TaskRef, lines: &[&str]) {
        self.send(AgentMessage::TaskStarted(TaskStarted {
            task,
            pid: 4242,
            at: chrono::Utc::now(),
        }))
        .await;
        if !lines.is_empty() {
            self.send(AgentMessage::Logs(LogBatch {
                task,
                lines: lines
                    .iter()
                    .map(|text| LogLine {
                        at_ms: chrono::Utc::now().timestamp_millis(),
                        stream: LogStream::Stdout,
                        text: text.to_string(),
                    })
                    .collect(),
            }))
            .await;
        }
        self.finish(task, 0).await;
    }

    pub async fn finish(&mut self, task: TaskRef, exit_code: i32) {
        self.send(AgentMessage::TaskFinished(TaskFinished {
            task,
            exit_code: Some(exit_code),
            signal: None,
            error: None,
            limit: None,
            at: chrono::Utc::now(),
            outputs: Vec::new(),
        }))
        .await;
    }
}

/// A blocking HTTP client that returns error statuses instead of failing.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `Bearer <admin token>` of the master at `base`.
pub fn bearer(base: &str) -> String {
    format!("Bearer {}", tokens(base).admin)
}

/// GET `path`: status and body.
pub fn get(base: &str, path: &str) -> (u16, String) {
    let mut response = http()
        .get(&format!("http://{base}{path}"))
        .header("authorization", &bearer(base))
        .call()
        .expect("http get");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("http body");
    (status, body)
}

/// GET `path` as JSON.
pub fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(base, path);
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, value)
}

/// POST a raw body to `path`: status and JSON answer.
pub fn post(base: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut response = http()
        .post(&format!("http://{base}{path}"))
        .header("authorization", &bearer(base))
        .header("content-type", "application/json")
        .send(body)
        .expect("http post");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("http body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, value)
}

/// A command job over `frames`.
pub fn job(title: &str, frames: &str) -> furrow_protocol::JobSubmission {
    furrow_protocol::JobSubmission::new(
        title,
        serde_json::json!({"command": ["sh", "-c", "echo {frame}"]}).into(),
        frames,
    )
}
