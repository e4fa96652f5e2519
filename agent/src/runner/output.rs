//! Task output: splitting pipe bytes into lines, and lines into batches for the master.

use std::io;
use std::time::Duration;

use chrono::Utc;
use furrow_protocol::{LogBatch, LogLine, LogStream, TaskRef};
use tokio::time::Instant;
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Bounds of output handling, derived from the maximum frame size so that a batch always
/// fits in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputLimits {
    /// Longest line; longer ones are split.
    pub max_line: usize,
    /// Lines per batch.
    pub batch_lines: usize,
    /// Text bytes per batch.
    pub batch_bytes: usize,
    /// Longest time a line waits in a batch.
    pub flush_interval: Duration,
}

impl OutputLimits {
    /// 64 KiB lines, batches of 256 lines or 64 KiB flushed every 100 ms, shrunk to fit
    /// `max_frame` (a batch is at most two maximum lines plus per-line overhead).
    pub fn for_max_frame(max_frame: usize) -> Self {
        const KIB64: usize = 64 * 1024;
        let batch_lines = (max_frame / 64).clamp(16, 256);
        // Per-line encoding overhead: timestamp, stream tag and length prefix.
        let overhead = batch_lines * 16;
        let budget = max_frame.saturating_sub(overhead + 256) / 2;
        let max_line = KIB64.min(budget).max(64);
        Self {
            max_line,
            batch_lines,
            batch_bytes: max_line,
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// Splits a byte stream into lines at `\n`, `\r\n` or a lone `\r` (progress meters
/// redraw with `\r`), and splits lines longer than the limit without cutting a UTF-8
/// character in two. Yields the line bytes without the terminator.
#[derive(Debug)]
pub(crate) struct LineCodec {
    max_line: usize,
    /// Bytes at the front of the buffer already searched for a terminator.
    scanned: usize,
    /// The last line ended with `\r` at the end of the buffer; a `\n` next belongs to it.
    skip_lf: bool,
}

impl LineCodec {
    /// A codec splitting lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line: max_line.max(4),
            scanned: 0,
            skip_lf: false,
        }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if self.skip_lf {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first == b'\n' {
                buf.advance(1);
            }
            self.skip_lf = false;
        }
        let search_end = buf.len().min(self.max_line + 1);
        let found = buf[self.scanned.min(search_end)..search_end]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r');
        if let Some(offset) = found {
            let line = buf.split_to(self.scanned + offset);
            let terminator = buf[0];
            buf.advance(1);
            self.scanned = 0;
            if terminator == b'\r' {
                match buf.first() {
                    Some(b'\n') => buf.advance(1),
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            return Ok(Some(line));
        }
        if buf.len() > self.max_line {
            self.scanned = 0;
            let cut = utf8_cut(&buf[..self.max_line]);
            return Ok(Some(buf.split_to(cut)));
        }
        self.scanned = buf.len();
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.scanned = 0;
        if buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some(buf.split_to(buf.len())))
        }
    }
}

/// Length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence
/// (all of it when no sequence is cut, or when the bytes are not UTF-8 anyway).
fn utf8_cut(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let index = len - back;
        let byte = bytes[index];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: keep looking for the lead byte
        }
        let needed = match byte {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        return if back < needed && index > 0 {
            index
        } else {
            len
        };
    }
    len
}

/// Collects lines into [`LogBatch`]es: a batch is complete when it holds the maximum
/// number of lines or bytes, and due when its first line has waited the flush interval.
pub(crate) struct LogBatcher {
    task: TaskRef,
    limits: OutputLimits,
    lines: Vec<LogLine>,
    bytes: usize,
    due: Option<Instant>,
}

impl LogBatcher {
    /// An empty batcher for `task`.
    pub fn new(task: TaskRef, limits: OutputLimits) -> Self {
        Self {
            task,
            limits,
            lines: Vec::new(),
            bytes: 0,
            due: None,
        }
    }

    /// Adds a line stamped now; returns the batch when this line completed it.
    pub fn push(&mut self, stream: LogStream, text: String) -> Option<LogBatch> {
        if self.lines.is_empty() {
            self.due = Some(Instant::now() + self.limits.flush_interval);
        }
        self.bytes += text.len();
        self.lines.push(LogLine {
            at_ms: Utc::now().timestamp_millis(),
            stream,
            text,
        });
        if self.lines.len() >= self.limits.batch_lines || self.bytes >= self.limits.batch_bytes {
            self.take()
        } else {
            None
        }
    }

    /// When the pending lines must be sent, if there are any.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The pending lines as a batch, if there are any.
    pub fn take(&mut self) -> Option<LogBatch> {
        self.due = None;
        self.bytes = 0;
        if self.lines.is_empty() {
            return None;
        }
        Some(LogBatch {
            task: self.task,
            lines: std::mem::take(&mut self.lines),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[&[u8]], max_line: usize) -> Vec<String> {
        let mut codec = LineCodec::new(max_line);
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }

    #[test]
    fn splits_at_every_kind_of_line_end() {
        assert_eq!(
            split(&[b"a\nb\r\nc\rd\n\ne"], 100),
            ["a", "b", "c", "d", "", "e"]
        );
    }

    #[test]
    fn cr_lf_split_across_reads_is_one_line_end() {
        assert_eq!(split(&[b"a\r", b"\nb\n"], 100), ["a", "b"]);
        assert_eq!(split(&[b"a\r", b"b\n"], 100), ["a", "b"]);
        assert_eq!(split(&[b"par", b"tial", b" line"], 100), ["partial line"]);
    }

    #[test]
    fn long_lines_are_split_on_character_boundaries() {
        assert_eq!(split(&[b"abcdefghij\n"], 4), ["abcd", "efgh", "ij"]);
        // "é" is two bytes; a cut after 5 bytes of "aaaaé" would halve it.
        let text = "aaaaéb\n".as_bytes();
        assert_eq!(split(&[text], 5), ["aaaa", "éb"]);
        // "€" is three bytes.
        assert_eq!(split(&["ab€€\n".as_bytes()], 4), ["ab", "€", "€"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_lost() {
        assert_eq!(
            split(&[b"ok \xff\xfe end\n"], 100),
            ["ok \u{fffd}\u{fffd} end"]
        );
    }

    #[test]
    fn batches_complete_at_line_or_byte_limits() {
        let limits = OutputLimits {
            max_line: 100,
            batch_lines: 3,
            batch_bytes: 10,
            flush_interval: Duration::from_millis(100),
        };
        let task = TaskRef {
            task_id: 1,
            attempt: 1,
        };
        let mut batcher = LogBatcher::new(task, limits);
        assert!(batcher.due().is_none());
        assert!(batcher.push(LogStream::Stdout, "a".into()).is_none());
        assert!(batcher.due().is_some());
        assert!(batcher.push(LogStream::Stderr, "b".into()).is_none());
        let batch = batcher.push(LogStream::Stdout, "c".into()).unwrap();
        assert_eq!(batch.lines.len(), 3);
        assert_eq!(batch.lines[1].stream, LogStream::Stderr);
        assert!(batcher.due().is_none());
        let batch = batcher
            .push(LogStream::Stdout, "0123456789".into())
            .unwrap();
        assert_eq!(batch.lines.len(), 1);
        assert!(batcher.take().is_none());
    }

    #[test]
    fn limits_shrink_to_fit_small_frames() {
        assert_eq!(OutputLimits::for_max_frame(16 << 20).max_line, 64 * 1024);
        for max_frame in [4096, 8192, 100_000] {
            let small = OutputLimits::for_max_frame(max_frame);
            assert!(
                small.max_line * 2 + small.batch_lines * 16 < max_frame,
                "{small:?}"
            );
        }
    }
}
