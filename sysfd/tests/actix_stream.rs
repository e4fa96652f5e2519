//! The async sources plug into actix actors through `add_stream`.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::TestResult;
use furrow_sysfd::{AsyncInotify, AsyncTimerFd, EventKind, InotifyEvent, WatchMask};
use tokio::sync::mpsc;

struct Collector {
    stream: Option<AsyncInotify>,
    ticks: Option<AsyncTimerFd>,
    seen: mpsc::UnboundedSender<String>,
}

impl Actor for Collector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(stream) = self.stream.take() {
            ctx.add_stream(stream);
        }
        if let Some(ticks) = self.ticks.take() {
            ctx.add_stream(ticks);
        }
    }
}

impl StreamHandler<furrow_sysfd::Result<InotifyEvent>> for Collector {
    fn handle(&mut self, item: furrow_sysfd::Result<InotifyEvent>, _ctx: &mut Self::Context) {
        let text = match item {
            Ok(event) if event.kind() == EventKind::Create => {
                format!(
                    "create {}",
                    event.name.unwrap_or_default().to_string_lossy()
                )
            }
            Ok(event) => format!("{:?}", event.kind()),
            Err(err) => format!("error {err}"),
        };
        let _ = self.seen.send(text);
    }
}

impl StreamHandler<furrow_sysfd::Result<u64>> for Collector {
    fn handle(&mut self, item: furrow_sysfd::Result<u64>, _ctx: &mut Self::Context) {
        let _ = self.seen.send(format!("tick {}", item.is_ok()));
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

#[actix_rt::test]
async fn actor_consumes_inotify_and_timer_streams() -> TestResult {
    let dir = tempfile::tempdir()?;
    let stream = AsyncInotify::open()?;
    stream.watch(dir.path(), WatchMask::CREATE)?;
    let ticks = AsyncTimerFd::one_shot(Duration::from_millis(1))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _actor = Collector {
        stream: Some(stream),
        ticks: Some(ticks),
        seen: tx,
    }
    .start();
    std::fs::write(dir.path().join("hello"), b"")?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .ok_or("actor stopped")?;
        seen.push(item);
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["create hello".to_string(), "tick true".to_string()]
    );
    Ok(())
}
