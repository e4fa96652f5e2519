//! Bad input on the TCP port closes only the offending connection.

mod common;

use std::time::Duration;

use common::{DEADLINE, TestAgent, job, start_master};
use furrow_protocol::{ClientError, Hello, ProtocolError, Role, handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Reads until the master closes the connection; fails the test if it does not.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the master did not close the connection"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let listen = master.addrs().listen.to_string();
    let client = common::client(&listen).await;
    client.submit_job(job("survivor", "1-2")).await.unwrap();

    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(&listen).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe\x00\x01garbage")
        .await
        .unwrap();
    expect_closed(&mut garbage).await;

    // A valid handshake, then a frame announcing more than the maximum frame size.
    let mut oversized = TcpStream::connect(&listen).await.unwrap();
    handshake::connect(
        &mut oversized,
        &common::agent_hello(&listen, Uuid::new_v4()),
    )
    .await
    .unwrap();
    oversized
        .write_all(&(10u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    oversized.write_all(&[0u8; 512]).await.unwrap();
    expect_closed(&mut oversized).await;

    // A well-sized frame that is not a message.
    let mut malformed = TcpStream::connect(&listen).await.unwrap();
    handshake::connect(&mut malformed, &common::client_hello(&listen))
        .await
        .unwrap();
    malformed.write_all(&8u32.to_be_bytes()).await.unwrap();
    malformed.write_all(&[0xff; 8]).await.unwrap();
    expect_closed(&mut malformed).await;

    // A truncated frame followed by a hang-up.
    let mut truncated = TcpStream::connect(&listen).await.unwrap();
    handshake::connect(
        &mut truncated,
        &common::agent_hello(&listen, Uuid::new_v4()),
    )
    .await
    .unwrap();
    truncated.write_all(&100u32.to_be_bytes()).await.unwrap();
    truncated.write_all(&[1, 2, 3]).await.unwrap();
    drop(truncated);

    // A message before registration.
    let mut early = TestAgent::connect(&listen, Uuid::new_v4()).await;
    early.heartbeat(Vec::new()).await;
    assert!(early.recv().await.is_none(), "closed before registration");

    // Everyone else is still served: the old client, a new client, a new agent.
    let health = client.health().await.unwrap();
    assert_eq!(health.status, "ok");
    let other = common::client(&listen).await;
    assert_eq!(other.list_jobs(10, 0).await.unwrap().total, 1);
    let mut agent = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    assert_eq!(agent.assignment().await.frames.start, 1);
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let listen = master.addrs().listen.to_string();
    let mut stream = TcpStream::connect(&listen).await.unwrap();
    let mut hello = Hello::new(Role::Agent, Uuid::new_v4());
    hello.version = furrow_protocol::MIN_PROTOCOL_VERSION - 1;
    let err = handshake::connect(&mut stream, &hello).await.unwrap_err();
    match err {
        ProtocolError::Rejected(reason) => {
            assert!(reason.contains("version mismatch"), "{reason}");
            assert!(
                reason.contains(&format!(
                    "you speak version {}",
                    furrow_protocol::MIN_PROTOCOL_VERSION - 1
                )),
                "{reason}"
            );
        }
        other => panic!("expected a rejection, got {other}"),
    }
    // A master role is refused too.
    let mut stream = TcpStream::connect(&listen).await.unwrap();
    let err = handshake::connect(&mut stream, &Hello::new(Role::Master, Uuid::new_v4()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Rejected(_)), "{err}");
    // And the master still answers.
    let client = common::client(&listen).await;
    assert!(client.health().await.is_ok());
    // Invalid requests come back as API errors, not closed connections.
    let mut bad = job("bad", "10-1");
    bad.batch = 1;
    match client.submit_job(bad).await {
        Err(ClientError::Api(e)) => assert!(e.message.starts_with("frames: "), "{}", e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(matches!(
        client.get_job(12345).await,
        Err(ClientError::Api(_))
    ));
    assert!(client.health().await.is_ok());
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_slot_counts_are_refused_and_busy_resources_fail_startup() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(10));
    let listen = master.addrs().listen.to_string();
    let mut agent = TestAgent::connect(&listen, Uuid::new_v4()).await;
    agent
        .send(furrow_protocol::AgentMessage::Register(
            furrow_protocol::Registration {
                agent_id: agent.id,
                name: "greedy".into(),
                hostname: "greedy".into(),
                os: "linux".into(),
                cpus: 1,
                ram_mb: 1,
                gpus: Vec::new(),
                tags: Vec::new(),
                software: Default::default(),
                slots: u32::MAX,
                version: "test".into(),
                running: Vec::new(),
            },
        ))
        .await;
    assert!(
        agent.recv().await.is_none(),
        "refused registration closes the session"
    );

    // A second master cannot use the same data directory.
    let config = furrow_master::MasterConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        ..Default::default()
    };
    match furrow_master::spawn(config) {
        Err(furrow_master::MasterError::Config(message)) => {
            assert!(message.contains("in use by another master"), "{message}")
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("two masters shared a data directory"),
    }

    // A second master cannot take the same HTTP port: startup fails with a bind error.
    let other = tempfile::tempdir().unwrap();
    let config = furrow_master::MasterConfig {
        data_dir: other.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http: master.addrs().http.to_string(),
        ..Default::default()
    };
    match furrow_master::spawn(config) {
        Err(furrow_master::MasterError::Bind { addr, .. }) => {
            assert_eq!(addr, master.addrs().http.to_string())
        }
        Err(other) => panic!("expected a bind error, got {other}"),
        Ok(_) => panic!("a second master bound the same port"),
    }
    master.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_registers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path(), Duration::from_secs(30));
    let listen = master.addrs().listen.to_string();
    let mut silent = TcpStream::connect(&listen).await.unwrap();
    handshake::connect(&mut silent, &common::agent_hello(&listen, Uuid::new_v4()))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    expect_closed(&mut silent).await;
    assert!(
        started.elapsed() >= handshake::HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "closed for not registering, not for something else"
    );
    // Agents that do register are unaffected.
    let client = common::client(&listen).await;
    client.submit_job(job("after", "1")).await.unwrap();
    let mut agent = TestAgent::register(&listen, Uuid::new_v4(), 1, Vec::new()).await;
    agent.assignment().await;
}

/// This process's resident memory (the master runs in it), in bytes.
fn own_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_left_unfinished_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let config = furrow_master::MasterConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        max_frame: 16 * 1024 * 1024,
        ..Default::default()
    };
    let master = furrow_master::spawn(config).expect("master starts");
    common::remember_tokens(dir.path(), &master);
    let listen = master.addrs().listen.to_string();
    let before = own_rss();

    // Forty agents each send all but the last megabyte of a 16 MiB frame, then wait.
    let size: u32 = 16 * 1024 * 1024 - 1;
    let body = vec![7u8; 15 * 1024 * 1024];
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&listen).await.unwrap();
        handshake::connect(&mut stream, &common::agent_hello(&listen, Uuid::new_v4()))
            .await
            .unwrap();
        stream.write_all(&size.to_be_bytes()).await.unwrap();
        // A refused frame closes its connection before its body is taken.
        match tokio::time::timeout(Duration::from_secs(10), stream.write_all(&body)).await {
            Ok(Ok(())) => held.push(stream),
            _ => refused += 1,
        }
    }
    let grown = own_rss().saturating_sub(before);
    assert!(
        grown < 400 * 1024 * 1024,
        "forty unfinished 16 MiB frames grew the master by {} MiB",
        grown >> 20
    );
    assert!(refused > 0 || held.len() < 40, "no frame was refused");
    // Everyone else is served as before.
    let client = common::client(&listen).await;
    assert!(client.health().await.is_ok());
    drop(held);
    master.shutdown().unwrap();
}
