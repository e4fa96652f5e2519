//! fd 0 is an ordinary fd: objects that get it work, and only `close` makes them closed.

mod common;

use std::time::Duration;

use common::{run_in_child, runtime};
use furrow_sysfd::{
    AsyncEventFd, Error, EventFd, EventSource, Inotify, SignalFd, TimerFd, WatchMask,
};
use std::os::fd::AsRawFd;

#[test]
fn objects_on_fd_zero_work() {
    run_in_child(|| {
        // SAFETY: the child owns its fd table; stdin is not needed.
        unsafe { libc::close(0) };
        let mut efd = EventFd::new(0)?;
        assert_eq!(efd.fd()?.as_raw_fd(), 0);
        assert!(!efd.is_closed());
        efd.write(4)?;
        assert_eq!(efd.read_event()?, 4);
        drop(efd);

        let mut timer = TimerFd::new()?;
        assert_eq!(timer.fd()?.as_raw_fd(), 0);
        timer.set_one_shot(Duration::from_millis(1))?;
        assert!(timer.wait(Some(Duration::from_secs(10)))?);
        assert_eq!(timer.read_event()?, 1);
        drop(timer);

        let dir = tempfile::tempdir()?;
        let mut inotify = Inotify::new()?;
        assert_eq!(inotify.fd()?.as_raw_fd(), 0);
        inotify.watch(dir.path(), WatchMask::CREATE)?;
        std::fs::write(dir.path().join("f"), b"x")?;
        assert!(inotify.wait(Some(Duration::from_secs(10)))?);
        assert_eq!(inotify.read_event()?.name, Some("f".into()));
        drop(inotify);

        let signals = SignalFd::new(&[furrow_sysfd::Signal::SIGUSR1])?;
        assert_eq!(signals.fd()?.as_raw_fd(), 0);
        drop(signals);

        runtime().block_on(async {
            let efd = AsyncEventFd::new(EventFd::new(0)?)?;
            efd.write(2)?;
            assert_eq!(efd.read_event().await?, 2);
            Ok::<(), Error>(())
        })?;
        Ok(())
    });
}
