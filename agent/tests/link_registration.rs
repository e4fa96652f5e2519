//! Registration, heartbeats and the agent's identity, against a test master.

mod support;

use std::time::Duration;

use std::collections::BTreeMap;

use furrow_agent::{Agent, AgentConfig};
use furrow_protocol::handshake::Role;
use furrow_protocol::{AgentMessage, GpuInfo, MasterMessage, TaskRef};
use support::{TestMaster, shell_task};

#[actix_rt::test]
async fn registration_describes_the_host_and_keeps_the_id_across_restarts() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.tags = vec!["linux".into(), "gpu-free".into()];
    config.slots = Some(3);
    config.detect_software = false;
    let agent = Agent::start(config.clone()).await.unwrap();

    let mut conn = master.accept().await;
    assert_eq!(conn.hello.role, Role::Agent);
    assert_eq!(conn.hello.node_id, agent.agent_id());
    let registration = conn.register(60_000).await;
    assert_eq!(registration.agent_id, agent.agent_id());
    let id_file = std::fs::read_to_string(state.path().join("agent-id")).unwrap();
    assert_eq!(id_file.trim(), agent.agent_id().to_string());

    let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(registration.hostname, hostname);
    assert_eq!(
        registration.name, hostname,
        "the name defaults to the hostname"
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(registration.os, format!("Linux {}", release.trim()));
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(registration.cpus, cpus);
    assert!(registration.ram_mb > 0);
    assert_eq!(registration.tags, ["linux", "gpu-free"]);
    assert!(registration.software.is_empty(), "{registration:?}");
    assert_eq!(registration.slots, 3);
    assert_eq!(registration.version, env!("CARGO_PKG_VERSION"));
    assert!(registration.running.is_empty());
    let first_id = agent.agent_id();
    agent.shutdown().await;
    conn.closed().await;

    config.name = Some("render-07".into());
    config.slots = None;
    let again = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(
        registration.agent_id, first_id,
        "a restarted agent keeps its id"
    );
    assert_eq!(registration.name, "render-07");
    assert_eq!(registration.slots, cpus, "slots default to the cpu count");
    again.shutdown().await;
}

#[actix_rt::test]
async fn heartbeats_follow_the_masters_interval_and_list_running_tasks() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    let mut conn = master.accept().await;
    conn.register(100).await;

    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        let AgentMessage::Heartbeat(heartbeat) = conn.recv().await else {
            panic!("expected only heartbeats while idle");
        };
        assert!(heartbeat.free_ram_mb > 0);
        assert!(heartbeat.load >= 0.0);
        assert!(heartbeat.running.is_empty());
    }
    // Three heartbeats at 100 ms cannot arrive in much less than 300 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    let task = shell_task(5, "sleep 1000");
    conn.send(MasterMessage::Assign(task.clone())).await;
    let running = loop {
        if let AgentMessage::Heartbeat(heartbeat) = conn.recv().await
            && !heartbeat.running.is_empty()
        {
            break heartbeat.running;
        }
    };
    assert_eq!(
        running,
        [TaskRef {
            task_id: 5,
            attempt: 1
        }]
    );
    conn.send(MasterMessage::Cancel(task.task)).await;
    conn.until_finished(task.task).await;
    conn.store_result(task.task).await;
    agent.shutdown().await;
}

#[actix_rt::test]
async fn a_refused_handshake_is_retried() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let agent = Agent::start(AgentConfig::new(master.addr.clone(), state.path()))
        .await
        .unwrap();
    let refused = master.accept_and_reject("not today").await;
    assert_eq!(refused.node_id, agent.agent_id());
    // The agent comes back after its backoff and registers once accepted.
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(registration.agent_id, agent.agent_id());
    agent.shutdown().await;
}

#[actix_rt::test]
async fn an_unusable_configuration_is_refused_at_start() {
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new("127.0.0.1:1", state.path());
    config.slots = Some(0);
    let error = Agent::start(config).await.err().unwrap();
    assert!(
        error.to_string().contains("slots must be at least 1"),
        "{error}"
    );

    let first = Agent::start(AgentConfig::new("127.0.0.1:1", state.path()))
        .await
        .unwrap();
    let error = Agent::start(AgentConfig::new("127.0.0.1:1", state.path()))
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("another agent is already using"),
        "{error}"
    );
    first.shutdown().await;

    let mut config = AgentConfig::new("127.0.0.1:1", state.path());
    config.config_file = Some(state.path().join("missing.conf"));
    let error = Agent::start(config.clone()).await.err().unwrap();
    assert!(
        error
            .to_string()
            .contains("cannot read the configuration file"),
        "{error}"
    );
    std::fs::write(state.path().join("missing.conf"), "tags = a b\n").unwrap();
    let error = Agent::start(config).await.err().unwrap();
    assert!(
        error
            .to_string()
            .contains("missing.conf: line 1: tag `a b` contains a space"),
        "{error}"
    );

    std::fs::write(state.path().join("agent-id"), "garbage").unwrap();
    let error = Agent::start(AgentConfig::new("127.0.0.1:1", state.path()))
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("is corrupt"), "{error}");
}

#[actix_rt::test]
async fn reload_registers_again_only_for_a_valid_changed_file() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("agent.conf");
    std::fs::write(&file, "name = first\n").unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.name = Some("from-the-command-line".into());
    config.tags = vec!["cli".into()];
    config.config_file = Some(file.clone());
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let first = conn.register(100).await;
    assert_eq!(first.name, "first", "the file overrides the name");
    assert_eq!(first.tags, ["cli"], "tags the file leaves out are kept");

    std::fs::write(&file, "name = first\ntags = a, b\n").unwrap();
    agent.reload().await.unwrap();
    // The link reconnects to register again.
    conn.closed().await;
    let mut conn = master.accept().await;
    let second = conn.register(100).await;
    assert_eq!(second.agent_id, first.agent_id);
    assert_eq!(
        (second.name.as_str(), second.tags.as_slice()),
        ("first", &["a".to_string(), "b".to_string()][..])
    );

    std::fs::write(&file, "tags = a\nslots = 9\n").unwrap();
    let error = agent.reload().await.unwrap_err().to_string();
    assert!(
        error.contains("agent.conf: line 2: unknown key `slots`"),
        "{error}"
    );
    // Nothing changed: the same connection keeps heartbeating.
    for _ in 0..3 {
        assert!(matches!(conn.recv().await, AgentMessage::Heartbeat(_)));
    }
    agent.shutdown().await;
}

fn software(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, version)| (name.to_string(), version.to_string()))
        .collect()
}

/// A GPU no host detects (no machine has 90 of them), as the agent reports it.
fn undetected_gpu(index: u32) -> GpuInfo {
    GpuInfo {
        index,
        name: format!("gpu {index}"),
        memory_mb: 0,
    }
}

#[actix_rt::test]
async fn configured_gpus_and_software_are_registered() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    // What the command line's `--gpus 91,90` and `--software` would set.
    config.gpus = Some(vec![91, 90]);
    config.software = software(&[("blender", "3.4.1"), ("ffmpeg", "5.1")]);
    let agent = Agent::start(config.clone()).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(
        registration.gpus,
        [undetected_gpu(91), undetected_gpu(90)],
        "exactly the configured indices, in their order"
    );
    assert_eq!(registration.software, config.software);
    agent.shutdown().await;
    conn.closed().await;

    config.gpus = Some(Vec::new());
    let again = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert!(
        registration.gpus.is_empty(),
        "an empty list reports no GPU: {:?}",
        registration.gpus
    );
    again.shutdown().await;
}

#[actix_rt::test]
async fn reload_applies_the_files_software_and_gpus() {
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("agent.conf");
    std::fs::write(&file, "software = blender 4.2.1, ffmpeg 5.1\ngpus = 90\n").unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.software = software(&[("blender", "3.0")]);
    config.gpus = Some(vec![91]);
    config.config_file = Some(file.clone());
    config.detect_software = false;
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let first = conn.register(100).await;
    assert_eq!(
        first.software,
        software(&[("blender", "4.2.1"), ("ffmpeg", "5.1")]),
        "the file overrides the software"
    );
    assert_eq!(first.gpus, [undetected_gpu(90)], "and the gpus");

    std::fs::write(&file, "software = blender 4.2.1\ngpus =\n").unwrap();
    agent.reload().await.unwrap();
    conn.closed().await;
    let mut conn = master.accept().await;
    let second = conn.register(100).await;
    assert_eq!(second.software, software(&[("blender", "4.2.1")]));
    assert!(second.gpus.is_empty(), "{:?}", second.gpus);

    std::fs::write(&file, "software = blender\n").unwrap();
    let error = agent.reload().await.unwrap_err().to_string();
    assert!(
        error.contains("agent.conf: line 1: software `blender` has no version"),
        "{error}"
    );
    // Nothing changed: the same connection keeps heartbeating.
    for _ in 0..3 {
        assert!(matches!(conn.recv().await, AgentMessage::Heartbeat(_)));
    }
    agent.shutdown().await;
}

#[actix_rt::test]
async fn blender_and_ffmpeg_on_the_path_are_offered_and_configured_versions_win() {
    // The test script installs Debian's blender and ffmpeg.
    let master = TestMaster::bind().await;
    let state = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(master.addr.clone(), state.path());
    config.software = software(&[("blender", "9.9")]);
    let agent = Agent::start(config).await.unwrap();
    let mut conn = master.accept().await;
    let registration = conn.register(60_000).await;
    assert_eq!(
        registration.software.get("blender").map(String::as_str),
        Some("9.9")
    );
    let ffmpeg = registration
        .software
        .get("ffmpeg")
        .expect("ffmpeg detected");
    assert!(
        ffmpeg.split('.').all(|part| part.parse::<u32>().is_ok()),
        "{ffmpeg}"
    );
    agent.shutdown().await;
}
