//! signalfd and the signal mask. Every test runs in a forked child: signal masks and
//! process-directed signals are process-wide state.

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use common::{limit_open_files, run_in_child, runtime};
use furrow_sysfd::{
    AsyncSignalFd, Error, EventSource, SHUTDOWN_SIGNALS, SigmaskHow, Signal, SignalFd,
    SignalFdFlags, SignalSet, block_signals, blocked_signals, getpid, pthread_sigmask,
    signalfd_create, signalfd_read, signalfd_set_mask, unblock_signals,
};

fn send(signal: Signal) {
    // SAFETY: signalling ourselves; the signal is blocked by the caller.
    unsafe { libc::kill(libc::getpid(), signal as i32) };
}

#[test]
fn block_signals_changes_and_reports_the_mask() {
    run_in_child(|| {
        let before = block_signals(&SHUTDOWN_SIGNALS)?;
        assert!(!before.contains(Signal::SIGTERM));
        let now = blocked_signals()?;
        for signal in SHUTDOWN_SIGNALS {
            assert!(now.contains(signal));
        }
        let previous = unblock_signals(&[Signal::SIGHUP])?;
        assert!(previous.contains(Signal::SIGHUP));
        assert!(!blocked_signals()?.contains(Signal::SIGHUP));
        pthread_sigmask(SigmaskHow::SetMask, Some(&SignalSet::empty()))?;
        assert_eq!(blocked_signals()?, SignalSet::empty());
        Ok(())
    });
}

#[test]
fn only_signals_in_the_mask_are_read() {
    run_in_child(|| {
        block_signals(&[Signal::SIGUSR1, Signal::SIGUSR2])?;
        let mut sfd = SignalFd::new(&[Signal::SIGUSR1])?;
        assert!(sfd.mask().contains(Signal::SIGUSR1));
        assert!(!sfd.mask().contains(Signal::SIGUSR2));
        send(Signal::SIGUSR2);
        send(Signal::SIGUSR1);
        assert!(sfd.wait(Some(Duration::from_secs(10)))?);
        let info = sfd.read_event()?;
        assert_eq!(info.signal(), Some(Signal::SIGUSR1));
        // SIGUSR2 is pending but not in the mask: the fd has nothing more.
        assert_err!(sfd.read_event(), Error::WouldBlock { .. });
        // Widening the mask makes it readable.
        let mut both = sfd.mask();
        both.add(Signal::SIGUSR2);
        sfd.set_mask(&both)?;
        assert_eq!(sfd.read_event()?.signal(), Some(Signal::SIGUSR2));
        Ok(())
    });
}

#[test]
fn siginfo_fields_are_filled() {
    run_in_child(|| {
        block_signals(&[Signal::SIGUSR1])?;
        let mut sfd = SignalFd::new(&[Signal::SIGUSR1])?;
        let value = libc::sigval {
            sival_ptr: 4242 as *mut libc::c_void,
        };
        // SAFETY: queueing a blocked signal to ourselves with a value.
        let ret = unsafe { libc::sigqueue(libc::getpid(), libc::SIGUSR1, value) };
        assert_eq!(ret, 0);
        assert!(sfd.wait(Some(Duration::from_secs(10)))?);
        let info = sfd.read_event()?;
        assert_eq!(info.signo, libc::SIGUSR1);
        assert_eq!(info.code, libc::SI_QUEUE);
        assert_eq!(info.pid, getpid() as u32);
        // SAFETY: plain getter.
        assert_eq!(info.uid, unsafe { libc::getuid() });
        assert_eq!(info.ptr, 4242);
        assert_eq!(info.int, 4242);
        Ok(())
    });
}

#[test]
fn standard_signals_coalesce_realtime_signals_queue() {
    run_in_child(|| {
        let rt = libc::SIGRTMIN() + 1;
        let mut set = SignalSet::from_signals(&[Signal::SIGUSR1]);
        set.add_raw(rt)?;
        pthread_sigmask(SigmaskHow::Block, Some(&set))?;
        let mut sfd = SignalFd::with_set(&set)?;
        send(Signal::SIGUSR1);
        send(Signal::SIGUSR1);
        for _ in 0..3 {
            // SAFETY: a blocked real-time signal to ourselves.
            unsafe { libc::kill(libc::getpid(), rt) };
        }
        assert!(sfd.wait(Some(Duration::from_secs(10)))?);
        let mut events = sfd.read_events()?;
        while let Ok(more) = sfd.read_events() {
            events.extend(more);
        }
        let usr1 = events.iter().filter(|i| i.signo == libc::SIGUSR1).count();
        let realtime = events.iter().filter(|i| i.signo == rt).count();
        assert_eq!((usr1, realtime), (1, 3));
        assert!(
            events
                .iter()
                .filter(|i| i.signo == rt)
                .all(|i| i.signal().is_none())
        );
        Ok(())
    });
}

#[test]
fn errors_of_the_calls() {
    run_in_child(|| {
        // SIGKILL/SIGSTOP can never arrive through an fd.
        assert_err!(
            SignalFd::new(&[Signal::SIGKILL]),
            Error::InvalidArgument { .. }
        );
        assert_err!(
            SignalFd::new(&[Signal::SIGSTOP]),
            Error::InvalidArgument { .. }
        );
        let mut set = SignalSet::empty();
        assert_err!(set.add_raw(0), Error::InvalidArgument { .. });
        assert_err!(
            set.add_raw(libc::SIGRTMAX() + 1),
            Error::InvalidArgument { .. }
        );
        assert!(!set.contains_raw(-1));
        assert_err!(
            signalfd_create(&set, SignalFdFlags::from_bits_retain(0x1)),
            Error::InvalidArgument { .. }
        );
        // Not a signalfd.
        let file = tempfile::tempfile()?;
        assert_err!(
            signalfd_set_mask(&file, &set),
            Error::InvalidArgument { .. }
        );
        assert_err!(signalfd_read(&file), Error::InvalidArgument { .. });
        // Closed.
        let mut sfd = SignalFd::new(&[Signal::SIGUSR1])?;
        sfd.close();
        assert_err!(sfd.read_event(), Error::Closed { .. });
        assert_err!(sfd.set_mask(&set), Error::Closed { .. });
        // Fd limit.
        limit_open_files(3)?;
        assert_err!(
            SignalFd::new(&[Signal::SIGUSR1]),
            Error::ResourceLimit { .. }
        );
        Ok(())
    });
}

#[test]
fn raw_read_on_a_nonblocking_signalfd() {
    run_in_child(|| {
        let set = SignalSet::from_signals(&[Signal::SIGUSR2]);
        pthread_sigmask(SigmaskHow::Block, Some(&set))?;
        let fd = signalfd_create(&set, SignalFdFlags::NONBLOCK | SignalFdFlags::CLOEXEC)?;
        assert_err!(signalfd_read(fd.as_fd()), Error::WouldBlock { .. });
        send(Signal::SIGUSR2);
        let infos = signalfd_read(fd.as_fd())?;
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].signo, libc::SIGUSR2);
        Ok(())
    });
}

#[test]
fn async_stream_of_shutdown_signals() {
    run_in_child(|| {
        // Blocked before the runtime starts its threads, as an agent's main does.
        block_signals(&SHUTDOWN_SIGNALS)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let signals = AsyncSignalFd::for_signals(&SHUTDOWN_SIGNALS)?;
            let waiter = tokio::spawn(async move { signals.read_event().await });
            tokio::task::yield_now().await;
            send(Signal::SIGTERM);
            let info = tokio::time::timeout(Duration::from_secs(10), waiter).await???;
            assert_eq!(info.signal(), Some(Signal::SIGTERM));
            assert_eq!(info.pid, getpid() as u32);
            Ok::<(), Box<dyn std::error::Error>>(())
        })?;
        let _ = runtime();
        Ok(())
    });
}
