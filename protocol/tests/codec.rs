//! Frame limits, malformed input and round trips.

use bytes::BytesMut;
use furrow_protocol::codec::FrameCodec;
use furrow_protocol::*;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

type AgentSide = FrameCodec<AgentMessage, MasterMessage>;
type MasterSide = FrameCodec<MasterMessage, AgentMessage>;

fn logs(text_len: usize) -> AgentMessage {
    AgentMessage::Logs(LogBatch {
        task: TaskRef {
            task_id: 1,
            attempt: 1,
        },
        lines: vec![LogLine {
            at_ms: 0,
            stream: LogStream::Stdout,
            text: "x".repeat(text_len),
        }],
    })
}

#[test]
fn oversized_frame_is_refused_on_write() {
    let mut codec = AgentSide::new(1024);
    let mut buf = BytesMut::new();
    let err = codec.encode(logs(2000), &mut buf).unwrap_err();
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { max: 1024, .. }),
        "{err}"
    );
    assert!(buf.is_empty(), "nothing may be written for a refused frame");
}

#[test]
fn oversized_frame_is_refused_on_read_before_its_body_arrives() {
    let mut codec = MasterSide::new(1024);
    let mut buf = BytesMut::from(&(5000u32).to_be_bytes()[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame of 5000 bytes exceeds the maximum frame size of 1024 bytes"
    );
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut writer = AgentSide::new(1 << 20);
    let mut reader = MasterSide::new(1 << 20);
    let mut full = BytesMut::new();
    writer.encode(logs(100), &mut full).unwrap();
    let mut buf = BytesMut::new();
    for (i, byte) in full.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let decoded = reader.decode(&mut buf).unwrap();
        if i + 1 < full.len() {
            assert!(decoded.is_none());
        } else {
            assert_eq!(decoded, Some(logs(100)));
        }
    }
}

#[test]
fn garbage_payload_is_a_decode_error() {
    let mut reader = MasterSide::new(1024);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&3u32.to_be_bytes());
    buf.extend_from_slice(&[0xff, 0xff, 0xff]);
    let err = reader.decode(&mut buf).unwrap_err();
    assert!(matches!(err, ProtocolError::Decode(_)), "{err}");
}

#[test]
fn trailing_bytes_inside_a_frame_are_refused() {
    let mut payload = furrow_protocol::codec::encode_payload(&MasterMessage::Cancel(TaskRef {
        task_id: 1,
        attempt: 1,
    }))
    .unwrap();
    payload.push(0);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&payload);
    let err = FrameCodec::<AgentMessage, MasterMessage>::new(1024)
        .decode(&mut buf)
        .unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[test]
fn eof_inside_a_frame_is_an_error() {
    let mut reader = MasterSide::new(1024);
    let mut buf = BytesMut::from(&[0u8, 0, 0, 10, 1, 2][..]);
    assert!(reader.decode_eof(&mut buf).is_err());
}

#[test]
fn json_params_survive_bincode() {
    let job = JobSubmission {
        title: "t".into(),
        jobtype: "command".into(),
        params: Json(
            serde_json::json!({"command": ["a", "{frame}"], "nested": {"x": [1, 2.5, null]}}),
        ),
        frames: "1-3".into(),
        batch: 2,
        priority: 5,
        retries: 1,
        timeout_secs: Some(60),
        queue: "studio/lighting".into(),
        requirements: furrow_protocol::Requirements {
            cpus: 2,
            gpus: 1,
            tags: vec!["linux".into(), "!laptop".into()],
            software: [("blender".to_string(), ">=3.0, <5".to_string())].into(),
            ..Default::default()
        },
        depends_on: vec![1, 2],
        ..JobSubmission::new("", Json(serde_json::Value::Null), "")
    };
    let bytes = furrow_protocol::codec::encode_payload(&job).unwrap();
    let back: JobSubmission = furrow_protocol::codec::decode_payload(&bytes).unwrap();
    assert_eq!(back, job);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for max in [16usize, 1024, DEFAULT_MAX_FRAME] {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut master = MasterSide::new(max);
            while let Ok(Some(_)) = master.decode(&mut buf) {}
            let mut buf = BytesMut::from(&bytes[..]);
            let mut agent = AgentSide::new(max);
            while let Ok(Some(_)) = agent.decode(&mut buf) {}
            let mut buf = BytesMut::from(&bytes[..]);
            let mut client = FrameCodec::<ServerEnvelope, ClientEnvelope>::new(max);
            while let Ok(Some(_)) = client.decode(&mut buf) {}
        }
    }

    #[test]
    fn framed_payloads_with_garbage_bodies_are_errors_or_messages(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        let _ = MasterSide::new(1024).decode(&mut buf);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        let _ = FrameCodec::<ServerEnvelope, ClientEnvelope>::new(1024).decode(&mut buf);
    }

    #[test]
    fn log_batches_round_trip(task_id in any::<i64>(), attempt in any::<u32>(), lines in proptest::collection::vec(".{0,40}", 0..20)) {
        let message = AgentMessage::Logs(LogBatch {
            task: TaskRef { task_id, attempt },
            lines: lines.into_iter().enumerate().map(|(i, text)| LogLine { at_ms: i as i64, stream: LogStream::Stdout, text }).collect(),
        });
        let mut buf = BytesMut::new();
        AgentSide::new(1 << 20).encode(message.clone(), &mut buf).unwrap();
        prop_assert_eq!(MasterSide::new(1 << 20).decode(&mut buf).unwrap(), Some(message));
        prop_assert!(buf.is_empty());
    }
}
