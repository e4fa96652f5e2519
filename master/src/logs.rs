//! The `LogCollector` actor: the attempts' log files under `<data_dir>/logs`.
//!
//! Lines are stored one per output line: `<RFC3339 UTC with millis> <stdout|stderr|agent>
//! <text>`. An attempt's text is held in memory until it ends, its text outgrows
//! [`WRITE_BUFFER`], the next flush (every [`FLUSH_EVERY`]) comes, or someone reads it:
//! - an attempt that ends first (a short one) is appended to its job's pack of short
//!   logs, `logs/<job_id>/short.log`: no file is made for it;
//! - any other goes to a file of its own, `logs/<job_id>/<task_id>.<attempt>.log`, written
//!   through a buffer flushed every [`FLUSH_EVERY`], before every read and when it ends.
//!
//! A file per attempt cost an inode per task made (and, when its job was deleted,
//! removed); on ext4 without a journal, making one skips every inode freed in the last
//! minutes, reading the inode table to tell, and at hundreds of short tasks a second that
//! was a quarter of the machine. When an attempt ends, where its text is (file, start,
//! size) goes to the `task_logs` index through the store; reads of attempts that ended
//! long ago find it there ([`LogPlace`]). Lines that come after an attempt ended go to its
//! own file, its text moved there from the pack first.
//!
//! Live followers get each chunk as it is received through a fixed-size broadcast ring;
//! one that falls behind loses chunks, never memory, and re-reads them from the file.
//!
//! The actor runs on its own arbiter (thread) because it does blocking file I/O. The
//! scheduler and the agents' sessions reach it through a [`LogSink`].

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use chrono::{SecondsFormat, TimeZone, Utc};
use furrow_protocol::{JobId, LogBatch, LogLine, LogStream, TaskRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::scheduler::Write as StoreWrite;
use crate::store::records::{BulkWrite, LogIndexRow};
use crate::store::{CommitBatch, Store, UpsertLogIndex};

/// How often buffered lines reach the file at the latest.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Closed attempts remembered so that lines arriving after the result still land.
const RECENTLY_CLOSED: usize = 4_096;

/// Most log files open for writing at once.
pub const MAX_OPEN_FILES: usize = 256;

/// Most jobs' packs of short logs open at once.
const MAX_OPEN_PACKS: usize = 64;

/// Text an attempt holds in memory before it goes to a file of its own; also the buffer
/// of each open file.
const WRITE_BUFFER: usize = 16 * 1024;

/// Path of an attempt's own log file, relative to the data directory.
pub fn log_path(job_id: JobId, task: TaskRef) -> PathBuf {
    PathBuf::from("logs")
        .join(job_id.to_string())
        .join(format!("{}.{}.log", task.task_id, task.attempt))
}

/// Path of a job's pack of short logs, relative to the data directory.
pub fn pack_path(job_id: JobId) -> PathBuf {
    PathBuf::from("logs")
        .join(job_id.to_string())
        .join("short.log")
}

/// Where an attempt's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPlace {
    /// The file, relative to the data directory.
    pub path: PathBuf,
    /// Where the text starts in it.
    pub start: u64,
    /// Its length in a shared file (a pack); `None` in a file of its own, which holds
    /// the text to its end.
    pub len: Option<u64>,
}

impl LogPlace {
    /// The attempt's own file.
    pub fn own(job_id: JobId, task: TaskRef) -> Self {
        Self {
            path: log_path(job_id, task),
            start: 0,
            len: None,
        }
    }

    /// The place an index entry names: `path` from `start`, `size` bytes long (to the
    /// end of the file when it is the attempt's own).
    pub fn indexed(job_id: JobId, task: TaskRef, path: String, start: u64, size: u64) -> Self {
        let path = PathBuf::from(path);
        let len = (path != log_path(job_id, task)).then_some(size);
        Self { path, start, len }
    }

    fn packed(&self) -> bool {
        self.len.is_some()
    }
}

/// Formats one line as it is stored.
pub fn format_line(line: &LogLine) -> String {
    let at = Utc
        .timestamp_millis_opt(line.at_ms)
        .single()
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let stream = match line.stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::Agent => "agent",
    };
    // One stored line per output line, whatever the agent sent.
    let text = line.text.replace(['\n', '\r'], " ");
    format!("{at} {stream} {text}\n")
}

/// Chunks of log text as they are written, for live followers.
pub type LiveLogs = broadcast::Sender<LiveChunk>;

/// Chunks the live channel holds before a slow follower starts losing them.
pub const LIVE_CAPACITY: usize = 1_024;

/// A new live channel.
pub fn live_logs() -> LiveLogs {
    broadcast::channel(LIVE_CAPACITY).0
}

/// Text appended to an attempt's log, or the end of the attempt.
#[derive(Debug, Clone)]
pub struct LiveChunk {
    /// The attempt.
    pub task: TaskRef,
    /// Its job.
    pub job_id: JobId,
    /// Size of the log file after this chunk.
    pub end_offset: u64,
    /// The text, in the stored format.
    pub text: Arc<str>,
    /// The attempt is over; no more text will come.
    pub closed: bool,
}

/// What the scheduler and the agents' sessions tell the collector, through a
/// [`LogSink`].
enum LogEvent {
    /// An attempt may be written to from now on; lines for it from any agent but
    /// `agent` are refused.
    Opened {
        task: TaskRef,
        job_id: JobId,
        agent: Uuid,
        resumed: bool,
    },
    /// An attempt ended: flush, close and index its file.
    Closed { task: TaskRef, job_id: JobId },
    /// Lines from an agent, holding their room in the queue until written.
    Lines {
        agent: Uuid,
        batch: LogBatch,
        _room: OwnedSemaphorePermit,
    },
}

/// Bytes of log text the queue holds before a session sending more waits.
const QUEUE_ROOM: usize = 8 * 1024 * 1024;

/// The events waiting for the collector. See [`LogSink`].
#[derive(Clone)]
pub struct LogQueue {
    events: Arc<Mutex<Vec<LogEvent>>>,
    room: Arc<Semaphore>,
}

impl LogQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            events: Arc::new(Mutex::new(Vec::new())),
            room: Arc::new(Semaphore::new(QUEUE_ROOM)),
        }
    }

    /// Adds `event`; true when the queue was empty, so the collector must be told.
    fn push(&self, event: LogEvent) -> bool {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.push(event);
        events.len() == 1
    }

    fn take(&self) -> Vec<LogEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Default for LogQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// Tells the collector, on its own thread, of attempts opening and closing and of the
/// lines agents send.
///
/// Events go into a shared queue, and the collector gets a message only when the queue
/// was empty: the events of one scheduling pass or of one agent frame wake its thread
/// once, not once each (a wake-up is a system call and a context switch on either
/// side). The collector applies what is queued before anything else it does, so a read
/// sees every line queued before it. Lines take room in the queue, [`QUEUE_ROOM`] bytes
/// in all: an agent flooding output waits for room, which stops its session reading
/// from its socket (TCP backpressure) instead of queueing lines in memory.
#[derive(Clone)]
pub struct LogSink {
    queue: LogQueue,
    collector: Addr<LogCollector>,
}

impl LogSink {
    /// The sink into `collector`, which drains `queue`.
    pub fn new(queue: LogQueue, collector: Addr<LogCollector>) -> Self {
        Self { queue, collector }
    }

    fn push(&self, event: LogEvent) {
        if self.queue.push(event) {
            self.collector.do_send(Drain);
        }
    }

    /// Attempt `task` of job `job_id` runs on `agent`: its lines may come. `resumed`: it
    /// ran before (restored at the master's start, or taken back from an agent that was
    /// lost), and its log may have text already.
    pub fn opened(&self, task: TaskRef, job_id: JobId, agent: Uuid, resumed: bool) {
        self.push(LogEvent::Opened {
            task,
            job_id,
            agent,
            resumed,
        });
    }

    /// Attempt `task` ended: its file is flushed, closed and indexed.
    pub fn closed(&self, task: TaskRef, job_id: JobId) {
        self.push(LogEvent::Closed { task, job_id });
    }

    /// Lines from `agent`: `None` when they are queued at once; otherwise the queue is
    /// full, and the returned future queues them once there is room.
    pub fn append(
        &self,
        agent: Uuid,
        batch: LogBatch,
    ) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        let bytes: usize = batch.lines.iter().map(|line| line.text.len() + 32).sum();
        let permits = u32::try_from(bytes.min(QUEUE_ROOM)).unwrap_or(u32::MAX);
        match self.queue.room.clone().try_acquire_many_owned(permits) {
            Ok(room) => {
                self.push(LogEvent::Lines {
                    agent,
                    batch,
                    _room: room,
                });
                None
            }
            Err(_) => {
                let sink = self.clone();
                Some(Box::pin(async move {
                    // The semaphore is never closed.
                    if let Ok(room) = sink.queue.room.clone().acquire_many_owned(permits).await {
                        sink.push(LogEvent::Lines {
                            agent,
                            batch,
                            _room: room,
                        });
                    }
                }))
            }
        }
    }
}

/// Queued events are waiting.
#[derive(Message)]
#[rtype(result = "()")]
struct Drain;

/// Reads an attempt's log from `offset`, at most `max_bytes` (cut after the last whole
/// line when the limit is hit).
#[derive(Message)]
#[rtype(result = "Result<LogRead, std::io::Error>")]
pub struct ReadLog {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub task: TaskRef,
    /// Byte offset.
    pub offset: u64,
    /// Upper bound of the text returned.
    pub max_bytes: usize,
    /// Where the index says the text is, for an attempt that ended (the collector
    /// remembers only the recent ones).
    pub stored: Option<LogPlace>,
}

/// Finds the part of an attempt's log a download sends, after flushing its buffer: the
/// download then streams it from the file itself, so a client that reads slowly (or
/// never) holds a small buffer, not the whole text.
#[derive(Message)]
#[rtype(result = "Result<LogSpan, std::io::Error>")]
pub struct LocateLog {
    /// The job.
    pub job_id: JobId,
    /// The attempt.
    pub task: TaskRef,
    /// Byte offset.
    pub offset: u64,
    /// Upper bound of the bytes sent.
    pub max_bytes: u64,
    /// Where the index says the text is (see [`ReadLog`]).
    pub stored: Option<LogPlace>,
}

/// A byte range of an attempt's log: whole lines, from `offset` to `offset + len` of the
/// attempt's text, which starts at `start` in `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSpan {
    /// The file (which may not exist yet: then `len` is 0).
    pub path: PathBuf,
    /// Where the attempt's text starts in the file.
    pub start: u64,
    /// Where the range starts in the attempt's text.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

impl LogSpan {
    /// The offset to ask for next.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.len
    }
}

/// The attempt's size in `file`: the place's length, or what the file holds after its
/// start.
fn text_size(file: &File, place: &LogPlace) -> std::io::Result<u64> {
    let after_start = file.metadata()?.len().saturating_sub(place.start);
    Ok(place.len.map_or(after_start, |len| len.min(after_start)))
}

/// The range of the text at `place` (in `data_dir`) a read from `offset` of at most
/// `max_bytes` covers: up to the text's end, or to the last line end within the limit
/// when the text is longer.
fn locate(
    data_dir: &Path,
    place: &LogPlace,
    offset: u64,
    max_bytes: u64,
) -> std::io::Result<LogSpan> {
    let path = data_dir.join(&place.path);
    let span = |offset, len| LogSpan {
        path: path.clone(),
        start: place.start,
        offset,
        len,
    };
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(span(offset, 0)),
        Err(e) => return Err(e),
    };
    let size = text_size(&file, place)?;
    if offset >= size {
        return Ok(span(offset.min(size), 0));
    }
    let end = size.min(offset.saturating_add(max_bytes));
    if end == size {
        return Ok(span(offset, size - offset));
    }
    // Cut after the last line end before `end`, read backwards a block at a time.
    let mut block = vec![0u8; 64 * 1024];
    let mut block_end = end;
    while block_end > offset {
        let block_start = block_end.saturating_sub(block.len() as u64).max(offset);
        let n = (block_end - block_start) as usize;
        file.seek(SeekFrom::Start(place.start + block_start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(span(offset, block_start + i as u64 + 1 - offset));
        }
        block_end = block_start;
    }
    // One line longer than the limit: sent cut at the limit.
    Ok(span(offset, end - offset))
}

/// Text read from a log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRead {
    /// The text.
    pub text: String,
    /// Offset after the text.
    pub next_offset: u64,
}

/// Writes every buffer to its file (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushLogs;

struct OpenAttempt {
    job_id: JobId,
    /// The agent the attempt runs on.
    agent: Uuid,
    /// Text not in any file yet (all of it, until the attempt has a file of its own).
    pending: Vec<u8>,
    /// Whether the attempt's text goes to a file of its own.
    own_file: bool,
    /// That file, while open.
    writer: Option<BufWriter<File>>,
    size: u64,
    /// Value of `LogCollector::ticks` at the last write, to find the idlest file.
    last_write: u64,
}

/// An attempt that ended: who ran it, and where its text is (`None`: it had none).
#[derive(Clone)]
struct ClosedAttempt {
    job_id: JobId,
    agent: Uuid,
    place: Option<LogPlace>,
}

/// A job's pack of short logs, open for appending.
struct Pack {
    writer: BufWriter<File>,
    /// The file's size, buffered bytes included: where the next text starts.
    size: u64,
    last_write: u64,
}

/// The log collector actor. See the module documentation.
pub struct LogCollector {
    data_dir: PathBuf,
    open: HashMap<TaskRef, OpenAttempt>,
    recent: HashMap<TaskRef, ClosedAttempt>,
    recent_order: VecDeque<TaskRef>,
    packs: HashMap<JobId, Pack>,
    store: Addr<Store>,
    live: LiveLogs,
    /// Files of attempts currently open for writing.
    writers: usize,
    /// Counts writes; orders open files by recency.
    ticks: u64,
    /// Failed writes (a full disk): logged at most every [`WRITE_FAILURE_LOG_EVERY`].
    write_failures: WriteFailures,
    /// What the scheduler and the sessions send.
    queue: LogQueue,
    /// Index entries to send to the store, together, at the end of a drain.
    unindexed: Vec<LogIndexRow>,
}

/// While log writes keep failing, how often that is logged again.
const WRITE_FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Failed log writes since the last one logged. A full disk fails every batch of every
/// running attempt; one line per batch would flood the master's own log (often on the
/// same disk).
#[derive(Default)]
struct WriteFailures {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl WriteFailures {
    fn failed(&mut self, task: TaskRef, error: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < WRITE_FAILURE_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        self.last_logged = Some(now);
        let also = std::mem::take(&mut self.unlogged);
        warn!(
            task_id = task.task_id,
            attempt = task.attempt,
            error = %error,
            failed_since_last_report = also,
            "cannot write task log (the lines are lost; the task and the database are not affected)"
        );
    }
}

impl LogCollector {
    /// A collector writing under `<data_dir>/logs`, told of attempts and lines through
    /// `queue` (see [`LogSink`]).
    pub fn new(data_dir: PathBuf, store: Addr<Store>, live: LiveLogs, queue: LogQueue) -> Self {
        Self {
            data_dir,
            open: HashMap::new(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            packs: HashMap::new(),
            store,
            live,
            writers: 0,
            ticks: 0,
            write_failures: WriteFailures::default(),
            queue,
            unindexed: Vec::new(),
        }
    }

    /// Applies every queued event, in order, then sends the index entries of the
    /// attempts that closed to the store in one message.
    fn drain(&mut self) {
        for event in self.queue.take() {
            match event {
                LogEvent::Opened {
                    task,
                    job_id,
                    agent,
                    resumed,
                } => self.open_attempt(task, job_id, agent, resumed),
                LogEvent::Closed { task, job_id } => self.close_attempt(task, job_id),
                LogEvent::Lines { agent, batch, .. } => {
                    if let Err(e) = self.append(agent, &batch) {
                        self.write_failures.failed(batch.task, &e);
                    }
                }
            }
        }
        if !self.unindexed.is_empty() {
            // An index entry never names text still in a buffer: a master that dies would
            // lose it, and the next one append other text where the entry points.
            let mut failed = Vec::new();
            for (job_id, pack) in &mut self.packs {
                if !pack.writer.buffer().is_empty()
                    && let Err(e) = pack.writer.flush()
                {
                    failed.push((*job_id, e));
                }
            }
            self.forget_packs(failed);
            self.store
                .do_send(UpsertLogIndex(std::mem::take(&mut self.unindexed)));
        }
    }

    /// Closes packs whose writes failed (their files are reopened at their real size);
    /// the failures are logged.
    fn forget_packs(&mut self, failed: Vec<(JobId, std::io::Error)>) {
        for (job_id, e) in failed {
            self.packs.remove(&job_id);
            warn!(job_id, error = %e, "cannot write a job's short logs (their lines are lost)");
            // Nothing may point where the text did not arrive, nor where the next text will.
            let pack = pack_path(job_id).to_string_lossy().into_owned();
            self.unindexed
                .retain(|row| !(row.job_id == job_id && row.path == pack));
            for closed in self.recent.values_mut() {
                if closed.job_id == job_id && closed.place.as_ref().is_some_and(LogPlace::packed) {
                    closed.place = None;
                }
            }
        }
    }

    /// Closes the file written to least recently, keeping the number of open files (one
    /// per running attempt otherwise) under [`MAX_OPEN_FILES`]. It is reopened in append
    /// mode when its attempt writes again.
    fn close_idlest(&mut self) {
        let idlest = self
            .open
            .iter()
            .filter(|(_, attempt)| attempt.writer.is_some())
            .min_by_key(|(_, attempt)| attempt.last_write)
            .map(|(task, _)| *task);
        if let Some(task) = idlest
            && let Some(attempt) = self.open.get_mut(&task)
            && let Some(mut writer) = attempt.writer.take()
        {
            if let Err(e) = writer.flush() {
                self.write_failures.failed(task, &e);
            }
            self.writers = self.writers.saturating_sub(1);
        }
    }

    /// The open file of `task`'s own log, opened (or reopened) if need be.
    fn own_writer(&mut self, task: TaskRef) -> std::io::Result<Option<&mut OpenAttempt>> {
        let needs_file = self.open.get(&task).is_some_and(|a| a.writer.is_none());
        if needs_file && self.writers >= MAX_OPEN_FILES {
            self.close_idlest();
        }
        let Some(attempt) = self.open.get_mut(&task) else {
            return Ok(None);
        };
        if attempt.writer.is_none() {
            let (writer, size) = open_file(&self.data_dir.join(log_path(attempt.job_id, task)))?;
            self.writers += 1;
            attempt.writer = Some(writer);
            // A file made by an earlier master process for this attempt is appended to.
            if !attempt.own_file {
                attempt.size += size;
            } else {
                attempt.size = size;
            }
        }
        Ok(Some(attempt))
    }

    /// Moves what `task` holds in memory to a file of its own, from now on its only
    /// place.
    fn spill(&mut self, task: TaskRef) -> std::io::Result<()> {
        let attempt = match self.own_writer(task) {
            Ok(Some(attempt)) => attempt,
            Ok(None) => return Ok(()),
            Err(e) => {
                // No file to hold it (a full disk): the text is lost, as with any write
                // that fails, rather than held in memory without bound.
                if let Some(attempt) = self.open.get_mut(&task) {
                    attempt.pending.clear();
                }
                return Err(e);
            }
        };
        attempt.own_file = true;
        let pending = std::mem::take(&mut attempt.pending);
        match attempt.writer.as_mut() {
            Some(writer) => writer.write_all(&pending),
            None => Ok(()),
        }
    }

    fn append(&mut self, agent: Uuid, batch: &LogBatch) -> std::io::Result<()> {
        let task = batch.task;
        let owner = self
            .open
            .get(&task)
            .map(|a| a.agent)
            .or_else(|| self.recent.get(&task).map(|closed| closed.agent));
        if owner.is_some_and(|owner| owner != agent) {
            warn!(
                %agent,
                task_id = task.task_id,
                attempt = task.attempt,
                "refused log lines for a task assigned to another agent"
            );
            return Ok(());
        }
        let text: String = batch.lines.iter().map(format_line).collect();
        if text.is_empty() {
            return Ok(());
        }
        self.ticks += 1;
        let ticks = self.ticks;
        let len = text.len() as u64;
        let (job_id, end_offset) = if let Some(attempt) = self.open.get(&task) {
            let job_id = attempt.job_id;
            if attempt.own_file {
                let Some(attempt) = self.own_writer(task)? else {
                    return Ok(());
                };
                if let Some(writer) = attempt.writer.as_mut() {
                    writer.write_all(text.as_bytes())?;
                }
                attempt.size += len;
                attempt.last_write = ticks;
                (job_id, attempt.size)
            } else {
                let Some(attempt) = self.open.get_mut(&task) else {
                    return Ok(());
                };
                attempt.pending.extend_from_slice(text.as_bytes());
                attempt.size += len;
                attempt.last_write = ticks;
                if attempt.pending.len() >= WRITE_BUFFER {
                    self.spill(task)?;
                }
                let size = self.open.get(&task).map_or(0, |attempt| attempt.size);
                (job_id, size)
            }
        } else if let Some(closed) = self.recent.get(&task).cloned() {
            // A late line of a closed attempt: appended to its own file, after its text
            // in the pack if it is there.
            let job_id = closed.job_id;
            let mut bytes = match closed.place.as_ref().filter(|place| place.packed()) {
                Some(place) => self.packed_text(job_id, place)?,
                None => Vec::new(),
            };
            bytes.extend_from_slice(text.as_bytes());
            (job_id, self.append_own(job_id, task, &bytes)?)
        } else {
            debug!(
                task_id = task.task_id,
                attempt = task.attempt,
                "dropping lines of an unknown attempt"
            );
            return Ok(());
        };
        self.publish(LiveChunk {
            task,
            job_id,
            end_offset,
            text: Arc::from(text),
            closed: false,
        });
        Ok(())
    }

    /// The text at `place` in `job_id`'s pack, with the pack's buffer written first.
    fn packed_text(&mut self, job_id: JobId, place: &LogPlace) -> std::io::Result<Vec<u8>> {
        if let Some(pack) = self.packs.get_mut(&job_id) {
            pack.writer.flush()?;
        }
        let mut file = File::open(self.data_dir.join(&place.path))?;
        file.seek(SeekFrom::Start(place.start))?;
        let mut text = Vec::new();
        file.take(place.len.unwrap_or(0)).read_to_end(&mut text)?;
        Ok(text)
    }

    /// Appends `text` to the own file of `task`, an attempt not open, which is from now on
    /// its place (indexed, and remembered while it is recent); the file's size.
    fn append_own(&mut self, job_id: JobId, task: TaskRef, text: &[u8]) -> std::io::Result<u64> {
        let (mut writer, size) = open_file(&self.data_dir.join(log_path(job_id, task)))?;
        writer.write_all(text)?;
        writer.flush()?;
        let size = size + text.len() as u64;
        let own = LogPlace::own(job_id, task);
        self.index(task, job_id, &own, size);
        if let Some(closed) = self.recent.get_mut(&task) {
            closed.place = Some(own);
        }
        Ok(size)
    }

    /// Appends a short attempt's whole text to its job's pack; where it starts.
    fn pack(&mut self, job_id: JobId, text: &[u8]) -> std::io::Result<u64> {
        if !self.packs.contains_key(&job_id) {
            if self.packs.len() >= MAX_OPEN_PACKS {
                let idlest = self
                    .packs
                    .iter()
                    .min_by_key(|(_, pack)| pack.last_write)
                    .map(|(job, _)| *job);
                if let Some(mut pack) = idlest.and_then(|job| self.packs.remove(&job)) {
                    pack.writer.flush()?;
                }
            }
            let (writer, size) = open_file(&self.data_dir.join(pack_path(job_id)))?;
            self.packs.insert(
                job_id,
                Pack {
                    writer,
                    size,
                    last_write: 0,
                },
            );
        }
        self.ticks += 1;
        let Some(pack) = self.packs.get_mut(&job_id) else {
            return Err(std::io::Error::other("the pack is not open"));
        };
        let start = pack.size;
        if let Err(e) = pack.writer.write_all(text) {
            // What reached the file is unknown: it is reopened, at its real size, next.
            self.packs.remove(&job_id);
            return Err(e);
        }
        pack.size += text.len() as u64;
        pack.last_write = self.ticks;
        Ok(start)
    }

    /// Hands a chunk to live followers, if there are any. The channel is a fixed ring:
    /// a follower that falls behind loses the oldest chunks and catches up from the file.
    fn publish(&self, chunk: LiveChunk) {
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(chunk);
        }
    }

    fn index(&mut self, task: TaskRef, job_id: JobId, place: &LogPlace, size: u64) {
        self.unindexed.push(LogIndexRow {
            task_id: task.task_id,
            attempt: task.attempt,
            job_id,
            path: place.path.to_string_lossy().into_owned(),
            file_offset: place.start,
            size,
        });
    }

    fn remember_closed(&mut self, task: TaskRef, closed: ClosedAttempt) {
        if self.recent.insert(task, closed).is_none() {
            self.recent_order.push_back(task);
        }
        while self.recent_order.len() > RECENTLY_CLOSED {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Where `task`'s log is, with everything it holds written there, for a read.
    /// `stored` is what the index says, for an attempt that ended.
    fn flushed(
        &mut self,
        job_id: JobId,
        task: TaskRef,
        stored: Option<LogPlace>,
    ) -> std::io::Result<LogPlace> {
        self.drain();
        if let Some(attempt) = self.open.get_mut(&task) {
            if !attempt.pending.is_empty() {
                // Read while it runs: its text goes to a file of its own.
                self.spill(task)?;
            }
            if let Some(writer) = self
                .open
                .get_mut(&task)
                .and_then(|attempt| attempt.writer.as_mut())
            {
                writer.flush()?;
            }
            return Ok(LogPlace::own(job_id, task));
        }
        let place = match self.recent.get(&task) {
            Some(closed) => closed.place.clone(),
            None => stored,
        };
        match place {
            Some(place) if place.packed() => {
                if let Some(pack) = self.packs.get_mut(&job_id) {
                    pack.writer.flush()?;
                }
                Ok(place)
            }
            _ => Ok(LogPlace::own(job_id, task)),
        }
    }

    /// Writes out what every attempt and pack holds: the text of attempts still running
    /// goes to their own files.
    fn flush_all(&mut self) {
        let holding: Vec<TaskRef> = self
            .open
            .iter()
            .filter(|(_, attempt)| !attempt.pending.is_empty())
            .map(|(task, _)| *task)
            .collect();
        for task in holding {
            if let Err(e) = self.spill(task) {
                self.write_failures.failed(task, &e);
            }
        }
        for (task, attempt) in &mut self.open {
            if let Some(writer) = attempt.writer.as_mut()
                && let Err(e) = writer.flush()
            {
                self.write_failures.failed(*task, &e);
            }
        }
        let mut failed = Vec::new();
        for (job_id, pack) in &mut self.packs {
            if let Err(e) = pack.writer.flush() {
                failed.push((*job_id, e));
            }
        }
        self.forget_packs(failed);
    }
}

/// Opens `path` to append to it (its directory made if need be), with its size.
fn open_file(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    // The job's directory is made by its first file: the others open straight away.
    let file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            open()?
        }
        opened => opened?,
    };
    let size = file.metadata()?.len();
    Ok((BufWriter::with_capacity(WRITE_BUFFER, file), size))
}

/// Reads the text at `place` (in `data_dir`) from `offset`; a missing file reads as
/// empty.
fn read_from(
    data_dir: &Path,
    place: &LogPlace,
    offset: u64,
    max_bytes: usize,
) -> std::io::Result<LogRead> {
    let mut file = match File::open(data_dir.join(&place.path)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogRead {
                text: String::new(),
                next_offset: offset,
            });
        }
        Err(e) => return Err(e),
    };
    let len = text_size(&file, place)?;
    if offset >= len {
        return Ok(LogRead {
            text: String::new(),
            next_offset: offset.min(len),
        });
    }
    file.seek(SeekFrom::Start(place.start + offset))?;
    let want = usize::try_from(len - offset)
        .unwrap_or(usize::MAX)
        .min(max_bytes);
    let mut bytes = Vec::with_capacity(want);
    file.take(want as u64).read_to_end(&mut bytes)?;
    let truncated = (offset + bytes.len() as u64) < len;
    if truncated && let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') {
        bytes.truncate(last_newline + 1);
    }
    let next_offset = offset + bytes.len() as u64;
    Ok(LogRead {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        next_offset,
    })
}

impl Actor for LogCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(FLUSH_EVERY, |act, _| act.flush_all());
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.drain();
        self.flush_all();
        Running::Stop
    }
}

impl Supervised for LogCollector {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("log collector restarting");
    }
}

impl LogCollector {
    fn open_attempt(&mut self, task: TaskRef, job_id: JobId, agent: Uuid, resumed: bool) {
        if self.open.contains_key(&task) {
            return;
        }
        // A resumed attempt writes to a file of its own, after what it has: what an
        // earlier process wrote there, or its text in the pack, moved there first.
        let mut size = 0;
        if resumed
            && let Some(place) = self
                .recent
                .get(&task)
                .and_then(|closed| closed.place.clone())
                .filter(LogPlace::packed)
        {
            let moved = self
                .packed_text(job_id, &place)
                .and_then(|text| self.append_own(job_id, task, &text));
            match moved {
                Ok(moved) => size = moved,
                Err(e) => self.write_failures.failed(task, &e),
            }
        }
        self.open.insert(
            task,
            OpenAttempt {
                job_id,
                agent,
                pending: Vec::new(),
                own_file: resumed,
                writer: None,
                size,
                last_write: 0,
            },
        );
    }

    fn close_attempt(&mut self, task: TaskRef, job_id: JobId) {
        let mut end_offset = 0;
        if let Some(mut attempt) = self.open.remove(&task) {
            if attempt.writer.is_some() {
                self.writers = self.writers.saturating_sub(1);
            }
            if let Some(writer) = attempt.writer.as_mut()
                && let Err(e) = writer.flush()
            {
                self.write_failures.failed(task, &e);
            }
            let place = if attempt.own_file {
                // Anything written (even through a file closed since) is indexed.
                Some(LogPlace::own(attempt.job_id, task)).filter(|_| attempt.size > 0)
            } else if attempt.pending.is_empty() {
                None
            } else {
                // A short attempt, whole in memory: into its job's pack.
                match self.pack(attempt.job_id, &attempt.pending) {
                    Ok(start) => Some(LogPlace {
                        path: pack_path(attempt.job_id),
                        start,
                        len: Some(attempt.pending.len() as u64),
                    }),
                    Err(e) => {
                        self.write_failures.failed(task, &e);
                        None
                    }
                }
            };
            if let Some(place) = &place {
                self.index(task, attempt.job_id, place, attempt.size);
            }
            end_offset = attempt.size;
            self.remember_closed(
                task,
                ClosedAttempt {
                    job_id,
                    agent: attempt.agent,
                    place,
                },
            );
        }
        self.publish(LiveChunk {
            task,
            job_id,
            end_offset,
            text: Arc::from(""),
            closed: true,
        });
    }
}

impl Handler<Drain> for LogCollector {
    type Result = ();

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) {
        self.drain();
    }
}

impl Handler<ReadLog> for LogCollector {
    type Result = ResponseFuture<Result<LogRead, std::io::Error>>;

    /// Writes out what the attempt holds, then reads on a blocking thread: a large read
    /// (up to 16 MiB for REST) does not hold up the collector, whose mailbox the agents'
    /// log lines and so their sessions wait on.
    fn handle(&mut self, msg: ReadLog, _ctx: &mut Context<Self>) -> Self::Result {
        let place = match self.flushed(msg.job_id, msg.task, msg.stored) {
            Ok(place) => place,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let data_dir = self.data_dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                read_from(&data_dir, &place, msg.offset, msg.max_bytes)
            })
            .await
            .map_err(std::io::Error::other)?
        })
    }
}

impl Handler<LocateLog> for LogCollector {
    type Result = ResponseFuture<Result<LogSpan, std::io::Error>>;

    fn handle(&mut self, msg: LocateLog, _ctx: &mut Context<Self>) -> Self::Result {
        let place = match self.flushed(msg.job_id, msg.task, msg.stored) {
            Ok(place) => place,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let data_dir = self.data_dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                locate(&data_dir, &place, msg.offset, msg.max_bytes)
            })
            .await
            .map_err(std::io::Error::other)?
        })
    }
}

/// Deletes the logs of a deleted job: its open files are dropped and its directory
/// removed; lines still arriving for its attempts are not written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteJobLogs(pub JobId);

impl Handler<DeleteJobLogs> for LogCollector {
    type Result = ();

    fn handle(&mut self, DeleteJobLogs(job_id): DeleteJobLogs, _ctx: &mut Context<Self>) {
        self.drain();
        let dropped: Vec<TaskRef> = self
            .open
            .iter()
            .filter(|(_, attempt)| attempt.job_id == job_id)
            .map(|(task, _)| *task)
            .collect();
        for task in dropped {
            if let Some(attempt) = self.open.remove(&task)
                && attempt.writer.is_some()
            {
                self.writers = self.writers.saturating_sub(1);
            }
        }
        self.recent.retain(|_, closed| closed.job_id != job_id);
        self.packs.remove(&job_id);
        let dir = self.data_dir.join("logs").join(job_id.to_string());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => info!(job_id, "job logs deleted"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(job_id, error = %e, "cannot delete job logs"),
        }
        // Index entries of attempts closed while the job was being deleted may have
        // reached the store after the deletion; deleting again removes them.
        self.store.do_send(CommitBatch {
            writes: vec![StoreWrite::Bulk(BulkWrite::DeleteJob { job_id })],
            notify: None,
        });
    }
}

impl Handler<FlushLogs> for LogCollector {
    type Result = ();

    fn handle(&mut self, _msg: FlushLogs, _ctx: &mut Context<Self>) {
        self.drain();
        self.flush_all();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_located_span_ends_at_a_line_end_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let own = LogPlace {
            path: "log".into(),
            start: 0,
            len: None,
        };
        assert_eq!(
            super::locate(dir.path(), &own, 5, 10).unwrap().len,
            0,
            "no file yet"
        );
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let whole = super::locate(dir.path(), &own, 0, 1000).unwrap();
        assert_eq!((whole.offset, whole.len, whole.next_offset()), (0, 14, 14));
        // Cut after "two\n", the last line end within 10 bytes.
        let cut = super::locate(dir.path(), &own, 0, 10).unwrap();
        assert_eq!((cut.len, cut.next_offset()), (8, 8));
        let rest = super::locate(dir.path(), &own, cut.next_offset(), 10).unwrap();
        assert_eq!((rest.offset, rest.len), (8, 6));
        assert_eq!(
            super::locate(dir.path(), &own, 14, 10).unwrap().len,
            0,
            "at the end"
        );
        assert_eq!(
            super::locate(dir.path(), &own, 99, 10).unwrap().offset,
            14,
            "past the end"
        );
        // A line longer than the limit is cut at the limit.
        std::fs::write(&path, "a very long line\n").unwrap();
        assert_eq!(super::locate(dir.path(), &own, 0, 5).unwrap().len, 5);
        // The backwards search crosses blocks.
        let long = format!("{}\n{}", "x".repeat(100), "y".repeat(200_000));
        std::fs::write(&path, long).unwrap();
        assert_eq!(
            super::locate(dir.path(), &own, 0, 150_000).unwrap().len,
            101
        );
        // In a pack, the text of one attempt among others.
        std::fs::write(&path, "before\none\ntwo\nafter\n").unwrap();
        let packed = LogPlace {
            path: "log".into(),
            start: 7,
            len: Some(8),
        };
        let span = super::locate(dir.path(), &packed, 0, 1000).unwrap();
        assert_eq!((span.start, span.offset, span.len), (7, 0, 8));
        let cut = super::locate(dir.path(), &packed, 0, 6).unwrap();
        assert_eq!((cut.len, cut.next_offset()), (4, 4));
        assert_eq!(super::locate(dir.path(), &packed, 8, 10).unwrap().len, 0);
    }
    use super::*;

    #[test]
    fn lines_are_formatted_one_per_line() {
        let line = LogLine {
            at_ms: 1_700_000_000_123,
            stream: LogStream::Stderr,
            text: "two\nlines".into(),
        };
        assert_eq!(
            format_line(&line),
            "2023-11-14T22:13:20.123Z stderr two lines\n"
        );
    }

    /// A collector writing under `data_dir`, with a store there, and its sink.
    async fn collector(data_dir: &Path) -> (Addr<LogCollector>, LogSink) {
        let db = crate::store::Db::open(None, data_dir).await.unwrap();
        let store = crate::store::Store::new(db, 0, 0, crate::changes::ChangeFeed::new()).start();
        let queue = LogQueue::new();
        let logs =
            LogCollector::new(data_dir.to_path_buf(), store, live_logs(), queue.clone()).start();
        let sink = LogSink::new(queue, logs.clone());
        (logs, sink)
    }

    #[test]
    fn open_files_stay_bounded_and_evicted_files_reopen_in_append_mode() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let (logs, sink) = collector(&data_dir).await;
            let line = |text: &str| LogLine {
                at_ms: 0,
                stream: LogStream::Stdout,
                text: text.into(),
            };
            let attempts = MAX_OPEN_FILES as i64 + 10;
            for task_id in 1..=attempts {
                let task = TaskRef {
                    task_id,
                    attempt: 1,
                };
                sink.opened(task, 1, Uuid::nil(), false);
                let batch = LogBatch {
                    task,
                    lines: vec![line("first")],
                };
                assert!(
                    sink.append(Uuid::nil(), batch).is_none(),
                    "the queue has room"
                );
            }
            // Each attempt outlives a flush: its text goes to a file of its own, and the
            // first one's file is closed to make room for the last ones.
            logs.send(FlushLogs).await.unwrap();
            assert!(
                data_dir
                    .join(log_path(
                        1,
                        TaskRef {
                            task_id: 1,
                            attempt: 1
                        }
                    ))
                    .exists()
            );
            // It is reopened to append.
            let first = TaskRef {
                task_id: 1,
                attempt: 1,
            };
            let batch = LogBatch {
                task: first,
                lines: vec![line("second")],
            };
            assert!(
                sink.append(Uuid::nil(), batch).is_none(),
                "the queue has room"
            );
            let read = logs
                .send(ReadLog {
                    job_id: 1,
                    task: first,
                    offset: 0,
                    max_bytes: 1024,
                    stored: None,
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(read.text.lines().count(), 2, "{}", read.text);
            assert!(read.text.ends_with(" stdout second\n"));
            let last = TaskRef {
                task_id: attempts,
                attempt: 1,
            };
            let read = logs
                .send(ReadLog {
                    job_id: 1,
                    task: last,
                    offset: 0,
                    max_bytes: 1024,
                    stored: None,
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(read.text, "1970-01-01T00:00:00.000Z stdout first\n");
        });
    }

    #[test]
    fn short_attempts_share_their_jobs_pack_and_are_found_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let db = crate::store::Db::open(None, &data_dir).await.unwrap();
            let reader = crate::store::StoreReader::new(db.clone());
            let store =
                crate::store::Store::new(db, 0, 0, crate::changes::ChangeFeed::new()).start();
            let start = |queue: &LogQueue| {
                LogCollector::new(data_dir.clone(), store.clone(), live_logs(), queue.clone())
                    .start()
            };
            let queue = LogQueue::new();
            let logs = start(&queue);
            let sink = LogSink::new(queue, logs.clone());
            let task = |task_id| TaskRef {
                task_id,
                attempt: 1,
            };
            let lines = |task_id: i64, texts: &[&str]| LogBatch {
                task: task(task_id),
                lines: texts
                    .iter()
                    .map(|text| LogLine {
                        at_ms: 0,
                        stream: LogStream::Stdout,
                        text: format!("{task_id} {text}"),
                    })
                    .collect(),
            };
            for task_id in 1..=3 {
                sink.opened(task(task_id), 7, Uuid::nil(), false);
                assert!(
                    sink.append(Uuid::nil(), lines(task_id, &["a", "b"]))
                        .is_none()
                );
                sink.closed(task(task_id), 7);
            }
            // Attempt 4 ended with nothing to say.
            sink.opened(task(4), 7, Uuid::nil(), false);
            sink.closed(task(4), 7);
            let read = |logs: Addr<LogCollector>, task_id, stored| async move {
                logs.send(ReadLog {
                    job_id: 7,
                    task: task(task_id),
                    offset: 0,
                    max_bytes: 1024,
                    stored,
                })
                .await
                .unwrap()
                .unwrap()
                .text
            };
            let expected = |task_id: i64, texts: &[&str]| -> String {
                lines(task_id, texts)
                    .lines
                    .iter()
                    .map(format_line)
                    .collect()
            };
            assert_eq!(read(logs.clone(), 2, None).await, expected(2, &["a", "b"]));
            // One file for the three, none of their own.
            let job_dir = data_dir.join("logs/7");
            let files: Vec<_> = fs::read_dir(&job_dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(files, ["short.log"]);

            // Their places reach the index.
            store.send(crate::store::Flush).await.unwrap().unwrap();
            let stored = |task_id| {
                let reader = reader.clone();
                async move {
                    reader
                        .get_log_index(task_id, 1)
                        .await
                        .unwrap()
                        .map(|entry| {
                            LogPlace::indexed(
                                7,
                                task(task_id),
                                entry.path,
                                entry.file_offset as u64,
                                entry.size as u64,
                            )
                        })
                }
            };
            let third = stored(3).await.expect("indexed");
            assert_eq!(third.path, pack_path(7));
            assert_eq!(third.len, Some(expected(3, &["a", "b"]).len() as u64));
            assert!(stored(4).await.is_none(), "nothing to index");

            // A collector that never saw them (a restarted master) finds them there.
            let fresh = start(&LogQueue::new());
            for task_id in 1..=3 {
                assert_eq!(
                    read(fresh.clone(), task_id, stored(task_id).await).await,
                    expected(task_id, &["a", "b"])
                );
            }

            // A line after the end moves that attempt's text to a file of its own.
            assert!(sink.append(Uuid::nil(), lines(2, &["late"])).is_none());
            assert_eq!(
                read(logs.clone(), 2, None).await,
                expected(2, &["a", "b", "late"])
            );
            assert!(data_dir.join(log_path(7, task(2))).exists());
            store.send(crate::store::Flush).await.unwrap().unwrap();
            let moved = stored(2).await.unwrap();
            assert_eq!(moved, LogPlace::own(7, task(2)));
            assert_eq!(
                read(fresh.clone(), 2, Some(moved)).await,
                expected(2, &["a", "b", "late"])
            );
            // The others are where they were.
            assert_eq!(
                read(fresh, 3, stored(3).await).await,
                expected(3, &["a", "b"])
            );

            // An attempt that outlives a flush writes to a file of its own.
            sink.opened(task(5), 7, Uuid::nil(), false);
            assert!(sink.append(Uuid::nil(), lines(5, &["long"])).is_none());
            logs.send(FlushLogs).await.unwrap();
            assert!(data_dir.join(log_path(7, task(5))).exists());
            assert!(sink.append(Uuid::nil(), lines(5, &["er"])).is_none());
            sink.closed(task(5), 7);
            assert_eq!(
                read(logs.clone(), 5, None).await,
                expected(5, &["long", "er"])
            );

            // An attempt taken back from an agent that was lost goes on in a file of its
            // own, after the text it had.
            sink.opened(task(6), 7, Uuid::nil(), false);
            assert!(sink.append(Uuid::nil(), lines(6, &["before"])).is_none());
            sink.closed(task(6), 7);
            sink.opened(task(6), 7, Uuid::nil(), true);
            assert!(sink.append(Uuid::nil(), lines(6, &["after"])).is_none());
            sink.closed(task(6), 7);
            assert_eq!(
                read(logs.clone(), 6, None).await,
                expected(6, &["before", "after"])
            );
            store.send(crate::store::Flush).await.unwrap().unwrap();
            assert_eq!(stored(6).await, Some(LogPlace::own(7, task(6))));

            logs.send(DeleteJobLogs(7)).await.unwrap();
            assert!(!job_dir.exists());
        });
    }

    #[test]
    fn a_full_queue_makes_the_sender_wait_until_the_collector_has_written() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        actix::System::new().block_on(async move {
            let (logs, sink) = collector(&data_dir).await;
            let task = TaskRef {
                task_id: 1,
                attempt: 1,
            };
            sink.opened(task, 1, Uuid::nil(), false);
            let half = |text: &str| LogBatch {
                task,
                lines: vec![LogLine {
                    at_ms: 0,
                    stream: LogStream::Stdout,
                    text: text.repeat(QUEUE_ROOM / 2 + 1),
                }],
            };
            assert!(sink.append(Uuid::nil(), half("a")).is_none());
            // The collector has not run yet: the queue holds the first half and more.
            let Some(waiting) = sink.append(Uuid::nil(), half("b")) else {
                panic!("a full queue took more lines");
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
                .await
                .expect("the lines were queued once the collector had written the first");
            let read = logs
                .send(ReadLog {
                    job_id: 1,
                    task,
                    offset: 0,
                    max_bytes: 2 * QUEUE_ROOM,
                    stored: None,
                })
                .await
                .unwrap()
                .unwrap();
            let lines: Vec<&str> = read.text.lines().collect();
            assert_eq!(lines.len(), 2);
            assert!(lines[0].ends_with('a') && lines[1].ends_with('b'));
        });
    }

    #[test]
    fn reads_from_an_offset_and_cuts_at_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let place = |name: &str| LogPlace {
            path: name.into(),
            start: 0,
            len: None,
        };
        let read_from = |place: LogPlace, offset, max| read_from(dir.path(), &place, offset, max);
        let all = read_from(place("a.log"), 0, 1024).unwrap();
        assert_eq!(all.text, "one\ntwo\nthree\n");
        assert_eq!(all.next_offset, 14);
        let part = read_from(place("a.log"), 4, 6).unwrap();
        assert_eq!(part.text, "two\n");
        assert_eq!(part.next_offset, 8);
        let missing = read_from(place("none.log"), 0, 10).unwrap();
        assert_eq!(missing.text, "");
        // A stretch of a pack: its own text only, offsets counted from its start.
        let packed = LogPlace {
            path: "a.log".into(),
            start: 4,
            len: Some(4),
        };
        let two = read_from(packed.clone(), 0, 1024).unwrap();
        assert_eq!((two.text.as_str(), two.next_offset), ("two\n", 4));
        assert_eq!(read_from(packed, 4, 1024).unwrap().text, "");
    }
}
