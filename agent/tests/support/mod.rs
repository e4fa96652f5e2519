//! A test master speaking the real protocol, and helpers to wait on conditions.

#![allow(dead_code)] // each test file uses its own part of the helpers

pub mod apps;

use std::path::Path;
use std::time::Duration;

use furrow_protocol::handshake::{self, Hello, Role};
use furrow_protocol::{
    AgentMessage, Assignment, FrameBatch, FrameCodec, Heartbeat, Json, LogStream, MasterMessage,
    Registered, Registration, TaskFinished, TaskRef, TaskReturned,
};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use uuid::Uuid;

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A listener playing the master.
pub struct TestMaster {
    listener: TcpListener,
    /// `host:port` for the agent's configuration.
    pub addr: String,
}

impl TestMaster {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Self { listener, addr }
    }

    async fn accept_stream(&self) -> TcpStream {
        let (stream, _) = tokio::time::timeout(DEADLINE, self.listener.accept())
            .await
            .expect("the agent did not connect in time")
            .unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Accepts the next agent connection and completes the handshake.
    pub async fn accept(&self) -> MasterConn {
        self.accept_tcp().await.handshake().await
    }

    /// Accepts the next TCP connection without answering the handshake yet: proof that
    /// the agent is (re)connecting, while it waits for the master's answer.
    pub async fn accept_tcp(&self) -> PendingConn {
        PendingConn(self.accept_stream().await)
    }

    /// Accepts the next agent connection and refuses it in the handshake.
    pub async fn accept_and_reject(&self, reason: &str) -> Hello {
        let mut stream = self.accept_stream().await;
        let mut seen = None;
        let result = handshake::accept(
            &mut stream,
            &Hello::new(Role::Master, Uuid::new_v4()),
            |hello| {
                seen = Some(hello.clone());
                Err(reason.to_string())
            },
        )
        .await;
        assert!(result.is_err());
        seen.unwrap()
    }
}

/// A TCP connection whose handshake is not answered yet.
pub struct PendingConn(TcpStream);

impl PendingConn {
    /// Completes the handshake, accepting the agent.
    pub async fn handshake(mut self) -> MasterConn {
        let hello = handshake::accept(
            &mut self.0,
            &Hello::new(Role::Master, Uuid::new_v4()),
            |_| Ok(()),
        )
        .await
        .unwrap();
        MasterConn {
            framed: Framed::new(self.0, FrameCodec::default()),
            hello,
        }
    }
}

/// One agent connection, seen from the master.
pub struct MasterConn {
    framed: Framed<TcpStream, FrameCodec<MasterMessage, AgentMessage>>,
    /// The agent's handshake.
    pub hello: Hello,
}

impl MasterConn {
    /// The next message, heartbeats included.
    pub async fn recv(&mut self) -> AgentMessage {
        tokio::time::timeout(DEADLINE, self.framed.next())
            .await
            .expect("no message from the agent in time")
            .expect("the agent closed the connection")
            .unwrap()
    }

    /// The next message, waiting as long as it takes (callers set their own deadline).
    pub async fn recv_any(&mut self) -> AgentMessage {
        self.framed
            .next()
            .await
            .expect("the agent closed the connection")
            .unwrap()
    }

    /// The next message that is not a heartbeat.
    pub async fn recv_task_message(&mut self) -> AgentMessage {
        loop {
            match self.recv().await {
                AgentMessage::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn send(&mut self, message: MasterMessage) {
        self.framed.send(message).await.unwrap();
    }

    /// Tells the agent its result for `task` is stored, as the master does once the
    /// result is committed.
    pub async fn store_result(&mut self, task: TaskRef) {
        self.send(MasterMessage::ResultStored(task)).await;
    }

    /// The next heartbeat; fails on any other message.
    pub async fn heartbeat(&mut self) -> Heartbeat {
        match self.recv().await {
            AgentMessage::Heartbeat(heartbeat) => heartbeat,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    /// Writes a frame that is not a valid message.
    pub async fn send_garbage(&mut self) {
        use tokio::io::AsyncWriteExt;
        let stream = self.framed.get_mut();
        stream
            .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        stream.flush().await.unwrap();
    }

    /// Expects a registration and accepts it.
    pub async fn register(&mut self, heartbeat_interval_ms: u64) -> Registration {
        let AgentMessage::Register(registration) = self.recv().await else {
            panic!("the first message was not a registration");
        };
        self.send(MasterMessage::Registered(Registered {
            agent_id: registration.agent_id,
            heartbeat_interval_ms,
        }))
        .await;
        registration
    }

    /// Task messages up to and including the result of `task`.
    pub async fn until_finished(&mut self, task: TaskRef) -> (TaskFinished, Vec<AgentMessage>) {
        let mut seen = Vec::new();
        loop {
            let message = self.recv_task_message().await;
            if let AgentMessage::TaskFinished(finished) = &message
                && finished.task == task
            {
                return (finished.clone(), seen);
            }
            seen.push(message);
        }
    }

    /// Task messages up to the `TaskReturned` of `task`, which must not finish instead.
    pub async fn until_returned(&mut self, task: TaskRef) -> (TaskReturned, Vec<AgentMessage>) {
        let mut seen = Vec::new();
        loop {
            let message = self.recv_task_message().await;
            match &message {
                AgentMessage::TaskReturned(returned) if returned.task == task => {
                    return (returned.clone(), seen);
                }
                AgentMessage::TaskFinished(finished) if finished.task == task => {
                    panic!("expected the attempt to be given back, got {finished:?}");
                }
                _ => seen.push(message),
            }
        }
    }

    /// Task messages up to the `TaskStarted` of `task`; returns its pid.
    pub async fn until_started(&mut self, task: TaskRef) -> u32 {
        loop {
            if let AgentMessage::TaskStarted(started) = self.recv_task_message().await
                && started.task == task
            {
                return started.pid;
            }
        }
    }

    /// Waits until the agent closes the connection, ignoring what it sends meanwhile.
    pub async fn closed(&mut self) {
        let closing = async {
            while let Some(item) = self.framed.next().await {
                if item.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(DEADLINE, closing)
            .await
            .expect("the agent did not close the connection");
    }
}

/// A `command` assignment running `script` through `sh -c`.
pub fn shell_task(task_id: i64, script: &str) -> Assignment {
    Assignment {
        task: TaskRef {
            task_id,
            attempt: 1,
        },
        job_id: 1,
        title: "test".into(),
        jobtype: "command".into(),
        jobtype_version: 1,
        params: Json(serde_json::json!({"command": ["sh", "-c", script]})),
        path_maps: Vec::new(),
        frames: FrameBatch {
            start: 1,
            end: 1,
            step: 1,
        },
        timeout_secs: None,
        stall_timeout_secs: None,
        ram_mb: None,
        gpus: Vec::new(),
    }
}

/// Lines of `stream` in `messages`, in order.
pub fn lines_of(messages: &[AgentMessage], task: TaskRef, stream: LogStream) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Logs(batch) if batch.task == task => Some(batch.lines.iter()),
            _ => None,
        })
        .flatten()
        .filter(|line| line.stream == stream)
        .map(|line| line.text.clone())
        .collect()
}

/// Waits until `condition` holds, failing after [`DEADLINE`].
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the async `condition` holds, failing after [`DEADLINE`].
pub async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Live (non-zombie) processes of process group `pgid`, from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            fields.len() > 2
                && fields[0] != "Z"
                && fields[0] != "X"
                && fields[2] == pgid.to_string()
        })
        .collect()
}

/// The task's processes in its process group: every live member (the task's own
/// process leads the group).
pub fn task_members(pgid: u32) -> Vec<u32> {
    group_members(pgid)
}

/// Live processes started for `task`, wherever they are: those whose environment carries
/// its `FURROW_TASK_ID` and `FURROW_ATTEMPT` (a zombie's environment reads empty).
pub fn processes_of(task: TaskRef) -> Vec<u32> {
    let wanted_task = format!("FURROW_TASK_ID={}", task.task_id);
    let wanted_attempt = format!("FURROW_ATTEMPT={}", task.attempt);
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                return false;
            };
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            vars.contains(&wanted_task.as_bytes()) && vars.contains(&wanted_attempt.as_bytes())
        })
        .collect()
}

/// Process-group records in `dir` (the agent's `running/`): its files that are not
/// blank (blanked files wait there for the next tasks).
pub fn count_records(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| {
                    std::fs::read_to_string(entry.path()).is_ok_and(|text| !text.trim().is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Files in `dir`.
pub fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.count())
        .unwrap_or(0)
}
