//! eventfd: counter and semaphore modes, errors, and the async queue semantics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestResult, limit_open_files, run_in_child, runtime};
use furrow_sysfd::{
    AsyncEventFd, Error, EventFd, EventFdFlags, EventFdMode, EventSource, eventfd, eventfd_read,
    eventfd_write,
};
use futures::StreamExt;

#[test]
fn counter_mode_returns_and_resets_the_sum() -> TestResult {
    let mut efd = EventFd::new(2)?;
    assert_eq!(efd.mode(), EventFdMode::Counter);
    efd.write(3)?;
    efd.write(5)?;
    assert_eq!(efd.read_event()?, 10);
    assert_err!(efd.read_event(), Error::WouldBlock { .. });
    Ok(())
}

#[test]
fn semaphore_mode_counts_down_by_one() -> TestResult {
    let mut sem = EventFd::semaphore(0)?;
    sem.write(2)?;
    assert_eq!(sem.read_events()?, vec![1]);
    assert_eq!(sem.read_event()?, 1);
    assert_err!(sem.read_event(), Error::WouldBlock { .. });
    Ok(())
}

#[test]
fn wait_sees_a_write_from_another_thread() -> TestResult {
    let mut efd = EventFd::new(0)?;
    assert!(!efd.wait(Some(Duration::ZERO))?);
    let writer = efd.fd()?.try_clone_to_owned()?;
    let thread = std::thread::spawn(move || eventfd_write(&writer, 9));
    assert!(efd.wait(Some(Duration::from_secs(10)))?);
    assert_eq!(efd.read_event()?, 9);
    thread.join().map_err(|_| "writer panicked")??;
    Ok(())
}

#[test]
fn low_level_calls_and_their_errors() -> TestResult {
    let fd = eventfd(1, EventFdFlags::NONBLOCK | EventFdFlags::CLOEXEC)?;
    assert_eq!(eventfd_read(&fd)?, 1);
    assert_err!(eventfd_read(&fd), Error::WouldBlock { .. });
    // u64::MAX is refused by the kernel.
    assert_err!(eventfd_write(&fd, u64::MAX), Error::InvalidArgument { .. });
    // A write that would overflow the counter would block.
    eventfd_write(&fd, u64::MAX - 1)?;
    assert_err!(eventfd_write(&fd, 1), Error::WouldBlock { .. });
    // Unknown flag bits.
    assert_err!(
        eventfd(0, EventFdFlags::from_bits_retain(0x4000_0000)),
        Error::InvalidArgument { .. }
    );
    // Not an eventfd: a read of 8 bytes from a regular file at EOF returns 0 bytes.
    let file = tempfile::tempfile()?;
    assert_err!(eventfd_read(&file), Error::InvalidArgument { .. });
    // A directory cannot be written.
    let dir = std::fs::File::open("/")?;
    assert_err!(eventfd_write(&dir, 1), Error::InvalidArgument { .. });
    Ok(())
}

#[test]
fn closed_object_reports_closed() -> TestResult {
    let mut efd = EventFd::new(1)?;
    efd.close();
    efd.close();
    assert!(efd.is_closed());
    assert_err!(efd.write(1), Error::Closed { .. });
    assert_err!(efd.read_event(), Error::Closed { .. });
    assert_err!(efd.read_events(), Error::Closed { .. });
    assert_err!(efd.wait(None), Error::Closed { .. });
    Ok(())
}

#[test]
fn fd_limit_is_a_resource_limit() {
    run_in_child(|| {
        limit_open_files(3)?;
        assert_err!(EventFd::new(0), Error::ResourceLimit { .. });
        Ok(())
    });
}

#[test]
fn async_waiters_each_get_their_own_value() -> TestResult {
    runtime().block_on(async {
        let efd = Arc::new(AsyncEventFd::new(EventFd::new(0)?)?);
        let mut first = tokio::spawn({
            let efd = Arc::clone(&efd);
            async move { efd.read_event().await }
        });
        let mut second = tokio::spawn({
            let efd = Arc::clone(&efd);
            async move { efd.read_event().await }
        });
        tokio::task::yield_now().await;
        efd.write(5)?;
        // Exactly one waiter gets the 5; the other keeps waiting for the next value.
        let mut got = Vec::new();
        let (done, pending) = tokio::select! {
            value = &mut first => (value, second),
            value = &mut second => (value, first),
        };
        got.push(done??);
        assert!(!pending.is_finished());
        efd.write(7)?;
        got.push(tokio::time::timeout(Duration::from_secs(10), pending).await???);
        got.sort();
        assert_eq!(got, vec![5, 7]);
        Ok(())
    })
}

#[test]
fn async_stream_yields_values_and_ends_when_closed() -> TestResult {
    runtime().block_on(async {
        let mut stream = AsyncEventFd::new(EventFd::semaphore(0)?)?;
        stream.write(3)?;
        let values: Vec<u64> = (&mut stream)
            .take(3)
            .map(|item| item.unwrap_or(0))
            .collect()
            .await;
        assert_eq!(values, vec![1, 1, 1]);
        stream.close();
        assert!(stream.is_closed());
        assert!(stream.next().await.is_none());
        assert_err!(stream.read_event().await, Error::Closed { .. });
        assert_err!(stream.write(1), Error::Closed { .. });
        Ok(())
    })
}

#[test]
fn async_source_needs_a_runtime() -> TestResult {
    assert_err!(
        AsyncEventFd::new(EventFd::new(0)?),
        Error::InvalidArgument { .. }
    );
    let mut closed = EventFd::new(0)?;
    closed.close();
    runtime().block_on(async {
        assert_err!(AsyncEventFd::new(closed), Error::Closed { .. });
    });
    Ok(())
}

#[test]
fn source_closed_through_with_ends_the_stream() -> TestResult {
    runtime().block_on(async {
        let mut stream = AsyncEventFd::new(EventFd::new(0)?)?;
        stream.with(|efd| efd.close());
        assert_err!(stream.read_event().await, Error::Closed { .. });
        assert!(stream.next().await.is_none());
        let inner = stream.into_inner();
        assert!(inner.is_closed());
        Ok(())
    })
}
