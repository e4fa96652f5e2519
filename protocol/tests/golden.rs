//! Golden bytes: these pin the wire encoding. A failing test here means old peers can no
//! longer talk to new ones; change the protocol version instead of the bytes.

use chrono::{TimeZone, Utc};
use furrow_protocol::codec::{encode_frame, encode_payload};
use furrow_protocol::*;
use uuid::Uuid;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn node() -> Uuid {
    Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff)
}

#[test]
fn hello_frame() {
    let hello = Hello {
        magic: *b"FRRW",
        version: 1,
        role: Role::Agent,
        node_id: node(),
        credentials: None,
        software: "0.1.0".into(),
        rejection: None,
    };
    assert_eq!(hex(&encode_frame(&hello, 1024).unwrap()), GOLDEN_HELLO);
}

#[test]
fn agent_messages() {
    let task = TaskRef {
        task_id: 42,
        attempt: 3,
    };
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let cases: Vec<(AgentMessage, &str)> = vec![
        (
            AgentMessage::Register(Registration {
                agent_id: node(),
                name: "a".into(),
                hostname: "h".into(),
                os: "linux".into(),
                cpus: 8,
                ram_mb: 16384,
                gpus: vec![GpuInfo {
                    index: 1,
                    name: "g".into(),
                    memory_mb: 8192,
                }],
                tags: vec!["t".into()],
                software: [("blender".to_string(), "4.2".to_string())].into(),
                slots: 2,
                version: "0.1.0".into(),
                running: vec![task],
            }),
            GOLDEN_REGISTER,
        ),
        (
            AgentMessage::Heartbeat(Heartbeat {
                free_ram_mb: 1000,
                load: 0.5,
                running: vec![],
            }),
            GOLDEN_HEARTBEAT,
        ),
        (
            AgentMessage::TaskStarted(TaskStarted { task, pid: 77, at }),
            GOLDEN_STARTED,
        ),
        (
            AgentMessage::TaskProgress(TaskProgress {
                task,
                progress: 0.25,
            }),
            GOLDEN_PROGRESS,
        ),
        (
            AgentMessage::TaskFinished(TaskFinished {
                task,
                exit_code: Some(1),
                signal: None,
                error: Some("boom".into()),
                limit: Some(LimitHit::Memory { used_mb: 100 }),
                at,
                outputs: vec![OutputFile {
                    path: "/r/f_0001.png".into(),
                    size: 2048,
                    frame: Some(1),
                }],
            }),
            GOLDEN_FINISHED,
        ),
        (
            AgentMessage::Logs(LogBatch {
                task,
                lines: vec![LogLine {
                    at_ms: 1000,
                    stream: LogStream::Stderr,
                    text: "hi".into(),
                }],
            }),
            GOLDEN_LOGS,
        ),
        (
            AgentMessage::TaskReturned(TaskReturned {
                task,
                reason: "bye".into(),
            }),
            GOLDEN_RETURNED,
        ),
    ];
    for (message, golden) in cases {
        assert_eq!(
            hex(&encode_payload(&message).unwrap()),
            golden,
            "{message:?}"
        );
    }
}

#[test]
fn master_and_client_messages() {
    let task = TaskRef {
        task_id: 42,
        attempt: 3,
    };
    let assign = MasterMessage::Assign(Assignment {
        task,
        job_id: 7,
        title: "t".into(),
        jobtype: "command".into(),
        jobtype_version: 1,
        params: Json(serde_json::json!({"command": ["echo", "{frame}"]})),
        path_maps: vec![PathRule {
            from: "P:\\".into(),
            to: "/mnt/p".into(),
            from_windows: true,
            to_windows: false,
        }],
        frames: FrameBatch {
            start: 1,
            end: 2,
            step: 1,
        },
        timeout_secs: Some(3600),
        stall_timeout_secs: Some(60),
        ram_mb: Some(512),
        gpus: vec![0, 2],
    });
    assert_eq!(hex(&encode_payload(&assign).unwrap()), GOLDEN_ASSIGN);
    assert_eq!(
        hex(&encode_payload(&MasterMessage::Cancel(task)).unwrap()),
        GOLDEN_CANCEL
    );
    assert_eq!(
        hex(&encode_payload(&MasterMessage::ResultStored(task)).unwrap()),
        GOLDEN_RESULT_STORED
    );
    let submit = ClientEnvelope {
        id: 9,
        request: ClientRequest::SubmitJob(JobSubmission {
            priority: -1,
            retries: 2,
            ..JobSubmission::new("t", Json(serde_json::json!({"command": ["true"]})), "1-10")
        }),
    };
    assert_eq!(hex(&encode_payload(&submit).unwrap()), GOLDEN_SUBMIT);
    let error = ServerEnvelope {
        id: 9,
        response: ClientResponse::Error(ApiError::bad_request("frames: bad")),
    };
    assert_eq!(hex(&encode_payload(&error).unwrap()), GOLDEN_ERROR);
}

const GOLDEN_HELLO: &str = "0000001f4652525701001000112233445566778899aabbccddeeff0005302e312e3000";
const GOLDEN_REGISTER: &str = "001000112233445566778899aabbccddeeff01610168056c696e757808fb004001010167fb00200101740107626c656e64657203342e320205302e312e30015403";
const GOLDEN_HEARTBEAT: &str = "01fbe8030000003f00";
const GOLDEN_STARTED: &str = "0254034d14323032362d30312d30325430333a30343a30355a";
const GOLDEN_PROGRESS: &str = "0354030000803e";
const GOLDEN_FINISHED: &str = "0454030102000104626f6f6d01026414323032362d30312d30325430333a30343a30355a010d2f722f665f303030312e706e67fb00080102";
const GOLDEN_LOGS: &str = "05540301fbd00701026869";
const GOLDEN_RETURNED: &str = "06540303627965";
const GOLDEN_ASSIGN: &str = "0154030e017407636f6d6d616e64011e7b22636f6d6d616e64223a5b226563686f222c227b6672616d657d225d7d0103503a5c062f6d6e742f70010002040201fb100e013c01fb0002020002";
const GOLDEN_CANCEL: &str = "025403";
const GOLDEN_RESULT_STORED: &str = "035403";
const GOLDEN_SUBMIT: &str = "0901017407636f6d6d616e6400147b22636f6d6d616e64223a5b2274727565225d7d04312d31300101020001000000000000000000000000000300";
const GOLDEN_ERROR: &str = "0906000b6672616d65733a20626164";
