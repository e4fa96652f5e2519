//! The shared budget of large frames being received.

use bytes::BytesMut;
use furrow_protocol::codec::{FrameBudget, FrameCodec, UNBUDGETED_FRAME};
use furrow_protocol::{ProtocolError, codec::encode_frame};
use tokio_util::codec::Decoder;

/// The first `cut` bytes of a frame carrying `len` bytes of text.
fn partial(len: usize, cut: usize) -> BytesMut {
    let frame = encode_frame(&"x".repeat(len), 1 << 24).unwrap();
    BytesMut::from(&frame[..cut.min(frame.len())])
}

#[test]
fn large_frames_being_received_share_one_budget() {
    let size = UNBUDGETED_FRAME * 2;
    let budget = FrameBudget::new(size * 2 + 100);
    let codec = || FrameCodec::<String, String>::new(1 << 24).with_budget(budget.clone());
    let (mut a, mut b, mut c) = (codec(), codec(), codec());

    // Two large frames arriving fit; a third does not, and says why.
    let mut in_a = partial(size, 1000);
    let mut in_b = partial(size, 1000);
    let mut in_c = partial(size, 1000);
    assert!(a.decode(&mut in_a).unwrap().is_none());
    assert!(b.decode(&mut in_b).unwrap().is_none());
    let used = budget.used();
    assert!(used > size * 2, "{used}");
    match c.decode(&mut in_c) {
        Err(e @ ProtocolError::FrameBudget { .. }) => {
            assert!(e.to_string().contains("try again"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(budget.used(), used, "a refusal takes nothing");

    // A completed frame gives its part back; so does a dropped codec.
    let mut whole = partial(size, usize::MAX);
    assert!(a.decode(&mut whole).unwrap().is_some());
    assert!(budget.used() < used);
    drop(b);
    assert_eq!(budget.used(), 0);
    let mut in_c = partial(size, 1000);
    assert!(c.decode(&mut in_c).unwrap().is_none());

    // Small frames never take from it.
    let mut small_codec = codec();
    let mut small = partial(100, 10);
    let before = budget.used();
    assert!(small_codec.decode(&mut small).unwrap().is_none());
    assert_eq!(budget.used(), before);
}
