//! Benchmarks of furrow-sysfd, printing their figures:
//!
//! - pipe → file copy of 1 GiB, `splice` (via [`furrow_sysfd::copy`]) against `read`/`write`
//!   (via [`furrow_sysfd::copy_read_write`], 128 KiB buffer), with a producer thread filling
//!   the pipe with `vmsplice`; also into a preallocated file and into `/dev/null`;
//! - inotify events per second delivered through the async stream without loss;
//! - timerfd wake-up latency (p50, p99) through the async timer and a blocking wait.
//!
//! `cargo bench -p furrow-sysfd` runs the full sizes; run as a test (no `--bench` argument)
//! it does a small smoke run of each measurement.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use furrow_sysfd::{
    AsyncInotify, AsyncTimerFd, Clock, CopyStats, EventSource, SpliceFlags, TimerFd, WatchMask,
    clock_now, copy, copy_read_write, pipe, set_pipe_size, vmsplice,
};
use futures::StreamExt;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const MIB: usize = 1 << 20;

struct Sizes {
    copy_bytes: usize,
    copy_rounds: usize,
    inotify_files: usize,
    timer_samples: usize,
}

fn main() -> BenchResult<()> {
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes = if full {
        Sizes {
            copy_bytes: 1024 * MIB,
            copy_rounds: 3,
            inotify_files: 100_000,
            timer_samples: 2000,
        }
    } else {
        Sizes {
            copy_bytes: 8 * MIB,
            copy_rounds: 1,
            inotify_files: 1000,
            timer_samples: 20,
        }
    };
    let scratch = scratch_dir()?;
    println!(
        "furrow-sysfd benchmarks (scratch dir {})",
        scratch.path().display()
    );
    bench_copy(&sizes, scratch.path())?;
    bench_inotify(&sizes, scratch.path())?;
    bench_timerfd(&sizes)?;
    Ok(())
}

/// A scratch directory, on tmpfs when `/dev/shm` is available.
fn scratch_dir() -> BenchResult<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    Ok(dir)
}

/// Fills a pipe with `total` bytes by `vmsplice` of one 1 MiB buffer, then closes it.
fn producer(write_end: OwnedFd, total: usize) -> std::thread::JoinHandle<furrow_sysfd::Result<()>> {
    std::thread::spawn(move || {
        let buffer: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        let mut left = total;
        while left > 0 {
            let end = left.min(buffer.len());
            let mut chunk = &buffer[..end];
            while !chunk.is_empty() {
                let n = vmsplice(&write_end, &[IoSlice::new(chunk)], SpliceFlags::empty())?;
                chunk = &chunk[n..];
                left -= n;
            }
        }
        Ok(())
    })
}

/// Where the copy goes.
#[derive(Clone, Copy)]
enum Target {
    /// A new file in the scratch directory.
    File,
    /// A file in the scratch directory with its blocks allocated beforehand.
    PreallocatedFile,
    /// `/dev/null`: no page cache, only the cost of moving data out of the pipe.
    DevNull,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::File => "file",
            Target::PreallocatedFile => "file, preallocated",
            Target::DevNull => "/dev/null",
        }
    }
}

fn open_target(target: Target, path: &Path, total: usize) -> BenchResult<std::fs::File> {
    Ok(match target {
        Target::DevNull => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
        Target::File => std::fs::File::create(path)?,
        Target::PreallocatedFile => {
            let file = std::fs::File::create(path)?;
            let len = libc::off_t::try_from(total)?;
            // SAFETY: fallocate on an fd we own.
            let ret = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
            if ret != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            file
        }
    })
}

fn one_copy(
    total: usize,
    dir: &Path,
    target: Target,
    use_splice: bool,
) -> BenchResult<(Duration, CopyStats)> {
    let (read_end, write_end) = pipe()?;
    set_pipe_size(&write_end, MIB)?;
    let path = dir.join("copy-target");
    let file = open_target(target, &path, total)?;
    let start = Instant::now();
    let feeder = producer(write_end, total);
    let stats = if use_splice {
        copy(&read_end, &file, None)?
    } else {
        copy_read_write(&read_end, &file, None)?
    };
    let elapsed = start.elapsed();
    feeder.join().map_err(|_| "producer panicked")??;
    if stats.bytes() != total as u64 {
        return Err(format!("copied {} of {total} bytes", stats.bytes()).into());
    }
    drop(file);
    if !matches!(target, Target::DevNull) {
        std::fs::remove_file(&path)?;
    }
    Ok((elapsed, stats))
}

fn gib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / elapsed.as_secs_f64()
}

fn bench_copy(sizes: &Sizes, dir: &Path) -> BenchResult<()> {
    println!(
        "copy pipe -> target, {} MiB, producer vmsplice into a 1 MiB pipe, best of {}:",
        sizes.copy_bytes / MIB,
        sizes.copy_rounds
    );
    println!(
        "  {:<20} {:>12} {:>12} {:>9}",
        "target", "splice", "read/write", "speed-up"
    );
    for target in [Target::File, Target::PreallocatedFile, Target::DevNull] {
        let mut splice_best = Duration::MAX;
        let mut rw_best = Duration::MAX;
        for _ in 0..sizes.copy_rounds {
            let (spliced, stats) = one_copy(sizes.copy_bytes, dir, target, true)?;
            if stats.read_written != 0 {
                return Err("the splice path fell back to read/write".into());
            }
            splice_best = splice_best.min(spliced);
            let (read_written, _) = one_copy(sizes.copy_bytes, dir, target, false)?;
            rw_best = rw_best.min(read_written);
        }
        let splice_rate = gib_per_s(sizes.copy_bytes, splice_best);
        let rw_rate = gib_per_s(sizes.copy_bytes, rw_best);
        println!(
            "  {:<20} {:>7.2} GiB/s {:>7.2} GiB/s {:>8.2}x",
            target.label(),
            splice_rate,
            rw_rate,
            splice_rate / rw_rate
        );
    }
    Ok(())
}

fn bench_inotify(sizes: &Sizes, dir: &Path) -> BenchResult<()> {
    let watched = dir.join("inotify");
    std::fs::create_dir(&watched)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let files = sizes.inotify_files;
    let expected = files * 2;
    let (received, overflowed, elapsed) = runtime.block_on(async {
        let mut stream = AsyncInotify::open()?;
        stream.watch(&watched, WatchMask::CREATE | WatchMask::DELETE)?;
        let target = watched.clone();
        let start = Instant::now();
        let generator = std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..files {
                let path = target.join(format!("f{i}"));
                std::fs::File::create(&path)?;
                std::fs::remove_file(&path)?;
            }
            Ok(())
        });
        let mut received = 0usize;
        let mut overflowed = false;
        while received < expected && !overflowed {
            let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
            match next {
                Ok(Some(Ok(event))) if event.needs_rescan() => overflowed = true,
                Ok(Some(Ok(_))) => received += 1,
                _ => break,
            }
        }
        let elapsed = start.elapsed();
        generator.join().map_err(|_| "generator panicked")??;
        Ok::<_, Box<dyn std::error::Error>>((received, overflowed, elapsed))
    })?;
    if overflowed || received != expected {
        return Err(format!("inotify lost events: {received} of {expected}").into());
    }
    println!(
        "inotify: {received} events (create + delete of {files} files) delivered without loss"
    );
    println!(
        "  {:.0} events/s through the async stream ({elapsed:?})",
        received as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let index = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn bench_timerfd(sizes: &Sizes) -> BenchResult<()> {
    let delay = Duration::from_millis(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut async_lat = runtime.block_on(async {
        let timer = AsyncTimerFd::new(TimerFd::new()?)?;
        let mut samples = Vec::with_capacity(sizes.timer_samples);
        for _ in 0..sizes.timer_samples {
            let due = clock_now(Clock::Monotonic)? + delay;
            timer.with(|t| t.set_absolute(due, None))?;
            timer.expired().await?;
            samples.push(clock_now(Clock::Monotonic)?.saturating_sub(due));
        }
        Ok::<_, furrow_sysfd::Error>(samples)
    })?;
    let mut timer = TimerFd::new()?;
    let mut blocking_lat = Vec::with_capacity(sizes.timer_samples);
    for _ in 0..sizes.timer_samples {
        let due = clock_now(Clock::Monotonic)? + delay;
        timer.set_absolute(due, None)?;
        timer.wait(None)?;
        timer.read_event()?;
        blocking_lat.push(clock_now(Clock::Monotonic)?.saturating_sub(due));
    }
    async_lat.sort();
    blocking_lat.sort();
    println!(
        "timerfd wake-up latency after a 1 ms absolute timer, {} samples:",
        sizes.timer_samples
    );
    println!(
        "  async (tokio AsyncFd)  p50 {:>9?}  p99 {:>9?}",
        percentile(&async_lat, 50),
        percentile(&async_lat, 99)
    );
    println!(
        "  blocking (poll)        p50 {:>9?}  p99 {:>9?}",
        percentile(&blocking_lat, 50),
        percentile(&blocking_lat, 99)
    );
    Ok(())
}
