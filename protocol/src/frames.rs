//! Frame specifications: `1-100`, `1-100:5`, `7`, `1-10,20-30:2`, and their batches.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A frame specification that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid frame range {spec:?}: {reason}")]
pub struct FrameSpecError {
    /// The offending part of the specification.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An inclusive range of frames with a step: `start-end:step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRange {
    /// First frame.
    pub start: i64,
    /// Last frame (inclusive; the last frame rendered is the last `start + k*step <= end`).
    pub end: i64,
    /// Distance between frames, at least 1.
    pub step: i64,
}

impl FrameRange {
    /// Number of frames in the range.
    pub fn count(&self) -> u64 {
        ((self.end - self.start) / self.step) as u64 + 1
    }
}

/// A contiguous run of frames given to one task: it runs once with `{start}`, `{end}` and
/// `{step}`; `{frame}` is its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameBatch {
    /// First frame of the batch.
    pub start: i64,
    /// Last frame of the batch (a frame of the sequence, inclusive).
    pub end: i64,
    /// Step between frames.
    pub step: i64,
}

/// A whole frame specification: one or more comma-separated ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSet {
    ranges: Vec<FrameRange>,
}

impl FrameSet {
    /// The ranges in the order given.
    pub fn ranges(&self) -> &[FrameRange] {
        &self.ranges
    }

    /// Total number of frames.
    pub fn frame_count(&self) -> u64 {
        self.ranges.iter().map(FrameRange::count).sum()
    }

    /// Number of tasks the set makes with `batch` frames per task; computed without
    /// enumerating, so a huge range is cheap to refuse.
    pub fn task_count(&self, batch: u32) -> u64 {
        let batch = u64::from(batch.max(1));
        self.ranges.iter().map(|r| r.count().div_ceil(batch)).sum()
    }

    /// The batches of up to `batch` consecutive frames, range by range (a batch never
    /// spans two ranges).
    pub fn batches(&self, batch: u32) -> impl Iterator<Item = FrameBatch> + '_ {
        self.ranges.iter().flat_map(move |range| {
            let count = range.count();
            // A batch never holds more frames than its range, which keeps every product
            // below the range's span (frames and steps are bounded by FRAME_LIMIT).
            let per_batch = u64::from(batch.max(1)).min(count);
            let span = per_batch as i64 * range.step;
            let last_in_range = range.start + (count as i64 - 1) * range.step;
            (0..count.div_ceil(per_batch)).map(move |k| {
                let start = range.start + k as i64 * span;
                let last_in_batch = start + (per_batch as i64 - 1) * range.step;
                FrameBatch {
                    start,
                    end: last_in_batch.min(last_in_range),
                    step: range.step,
                }
            })
        })
    }
}

/// Most frames a set with overlapping ranges of different steps may expand to while it
/// is merged.
const MERGE_EXPAND_LIMIT: u64 = 10_000_000;

impl FrameSet {
    /// The same frames in ascending order with every frame once: ranges are sorted,
    /// overlapping or adjacent ranges of one step merged (`1-10,5-15` is `1-15`), and
    /// ranges of different steps that overlap are expanded and cut into runs again.
    /// Fails only when such an overlap would expand to more than ten million frames.
    pub fn merged(&self) -> Result<FrameSet, FrameSpecError> {
        let mut ranges = self.ranges.clone();
        ranges.sort_by_key(|r| (r.start, r.step, r.end));
        let mut merged: Vec<FrameRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            if let Some(last) = merged.last_mut()
                && last.step == range.step
                && (range.start - last.start) % last.step == 0
                && range.start <= last_frame(last) + last.step
            {
                last.end = last_frame(last).max(last_frame(&range));
                continue;
            }
            merged.push(range);
        }
        for r in &mut merged {
            r.end = last_frame(r);
        }
        let overlapping = merged.windows(2).any(|w| w[1].start <= w[0].end);
        if !overlapping {
            return Ok(FrameSet { ranges: merged });
        }
        let total: u64 = merged.iter().map(FrameRange::count).sum();
        if total > MERGE_EXPAND_LIMIT {
            return Err(FrameSpecError {
                spec: self.to_string(),
                reason: format!(
                    "ranges of different steps overlap over more than {MERGE_EXPAND_LIMIT} frames; split them"
                ),
            });
        }
        let mut frames: Vec<i64> = merged
            .iter()
            .flat_map(|r| (0..r.count() as i64).map(move |k| r.start + k * r.step))
            .collect();
        frames.sort_unstable();
        frames.dedup();
        let mut runs: Vec<FrameRange> = Vec::new();
        let mut i = 0;
        while i < frames.len() {
            let start = frames[i];
            let Some(&next) = frames.get(i + 1) else {
                runs.push(FrameRange {
                    start,
                    end: start,
                    step: 1,
                });
                break;
            };
            let step = next - start;
            let mut j = i + 1;
            while frames.get(j + 1).is_some_and(|&f| f - frames[j] == step) {
                j += 1;
            }
            runs.push(FrameRange {
                start,
                end: frames[j],
                step,
            });
            i = j + 1;
        }
        Ok(FrameSet { ranges: runs })
    }
}

/// The last frame a range renders.
fn last_frame(range: &FrameRange) -> i64 {
    range.start + (range.count() as i64 - 1) * range.step
}

impl fmt::Display for FrameSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start == r.end {
                write!(f, "{}", r.start)?;
            } else {
                write!(f, "{}-{}", r.start, r.end)?;
            }
            if r.step != 1 {
                write!(f, ":{}", r.step)?;
            }
        }
        Ok(())
    }
}

/// Frames are limited to this magnitude so that sums and products never overflow.
const FRAME_LIMIT: i64 = 1_000_000_000_000;

fn parse_frame(text: &str, whole: &str) -> Result<i64, FrameSpecError> {
    let value: i64 = text.trim().parse().map_err(|_| FrameSpecError {
        spec: whole.to_string(),
        reason: format!("{:?} is not a whole number", text.trim()),
    })?;
    if value.abs() > FRAME_LIMIT {
        return Err(FrameSpecError {
            spec: whole.to_string(),
            reason: format!("frame {value} is out of range (limit ±{FRAME_LIMIT})"),
        });
    }
    Ok(value)
}

fn parse_range(part: &str) -> Result<FrameRange, FrameSpecError> {
    let err = |reason: String| FrameSpecError {
        spec: part.to_string(),
        reason,
    };
    let (span, step) = match part.split_once(':') {
        Some((span, step)) => {
            let step: i64 = step
                .trim()
                .parse()
                .map_err(|_| err(format!("step {:?} is not a whole number", step.trim())))?;
            if step < 1 {
                return Err(err(format!("step must be at least 1, got {step}")));
            }
            (span, step)
        }
        None => (part, 1),
    };
    let span = span.trim();
    // The separator is a '-' that is neither the leading sign of the start nor the sign
    // of the end (which follows the separator directly).
    let separator = span
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '-')
        .map(|(i, _)| i);
    let (start, end) = match separator {
        Some(i) => (
            parse_frame(&span[..i], part)?,
            parse_frame(&span[i + 1..], part)?,
        ),
        None => {
            let frame = parse_frame(span, part)?;
            (frame, frame)
        }
    };
    if end < start {
        return Err(err(format!(
            "end frame {end} is before start frame {start}"
        )));
    }
    if step > FRAME_LIMIT {
        return Err(err(format!("step {step} is out of range")));
    }
    Ok(FrameRange { start, end, step })
}

impl FromStr for FrameSet {
    type Err = FrameSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.trim().is_empty() {
            return Err(FrameSpecError {
                spec: spec.to_string(),
                reason: "no frames given (expected e.g. 1-100 or 1-100:5)".into(),
            });
        }
        let ranges = spec
            .split(',')
            .map(parse_range)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_steps_and_lists() {
        let set: FrameSet = "1-100".parse().unwrap();
        assert_eq!(set.frame_count(), 100);
        let set: FrameSet = "1-10:3".parse().unwrap();
        assert_eq!(set.frame_count(), 4); // 1 4 7 10
        let set: FrameSet = "7".parse().unwrap();
        assert_eq!(
            set.ranges(),
            &[FrameRange {
                start: 7,
                end: 7,
                step: 1
            }]
        );
        let set: FrameSet = "-5--1, 3-4".parse().unwrap();
        assert_eq!(
            set.ranges()[0],
            FrameRange {
                start: -5,
                end: -1,
                step: 1
            }
        );
        assert_eq!(set.frame_count(), 7);
        assert_eq!(set.to_string(), "-5--1,3-4");
    }

    #[test]
    fn refuses_bad_specs_with_reasons() {
        for (spec, needle) in [
            ("10-1", "before start"),
            ("a-b", "not a whole number"),
            ("", "no frames"),
            ("1-10:0", "at least 1"),
            ("1-10:x", "step"),
            ("1-", "not a whole number"),
            ("1-99999999999999999", "out of range"),
        ] {
            let err = spec.parse::<FrameSet>().unwrap_err();
            assert!(err.to_string().contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn batches_cover_every_frame_once() {
        let set: FrameSet = "1-10:2,20-22".parse().unwrap();
        let batches: Vec<_> = set.batches(2).collect();
        assert_eq!(
            batches,
            vec![
                FrameBatch {
                    start: 1,
                    end: 3,
                    step: 2
                },
                FrameBatch {
                    start: 5,
                    end: 7,
                    step: 2
                },
                FrameBatch {
                    start: 9,
                    end: 9,
                    step: 2
                },
                FrameBatch {
                    start: 20,
                    end: 21,
                    step: 1
                },
                FrameBatch {
                    start: 22,
                    end: 22,
                    step: 1
                },
            ]
        );
        assert_eq!(set.task_count(2), 5);
        let huge: FrameSet = "1-100000000000".parse().unwrap();
        assert_eq!(huge.task_count(1), 100_000_000_000);
    }

    #[test]
    fn extreme_batches_and_steps_do_not_overflow() {
        let set: FrameSet = "-1000000000000-1000000000000:1000000000000"
            .parse()
            .unwrap();
        assert_eq!(set.frame_count(), 3);
        let batches: Vec<_> = set.batches(u32::MAX).collect();
        assert_eq!(
            batches,
            vec![FrameBatch {
                start: -1_000_000_000_000,
                end: 1_000_000_000_000,
                step: 1_000_000_000_000
            }]
        );
        assert_eq!(set.task_count(u32::MAX), 1);
        let batches: Vec<_> = set.batches(2).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(
            batches[1],
            FrameBatch {
                start: 1_000_000_000_000,
                end: 1_000_000_000_000,
                step: 1_000_000_000_000
            }
        );
    }

    #[test]
    fn overlapping_ranges_merge() {
        let merged = |spec: &str| {
            spec.parse::<FrameSet>()
                .unwrap()
                .merged()
                .unwrap()
                .to_string()
        };
        assert_eq!(merged("1-10,5-15"), "1-15");
        assert_eq!(merged("20-30,1-10"), "1-10,20-30");
        assert_eq!(merged("1-10,11-20"), "1-20");
        assert_eq!(merged("1-9:2,3-15:2"), "1-15:2");
        assert_eq!(merged("1-10:3,1-10:2"), "1-3:2,4-5,7-9:2,10");
        assert_eq!(merged("5,5,5"), "5");
        let huge: FrameSet = "1-100000000:2,2-100000000:3".parse().unwrap();
        assert!(huge.merged().unwrap_err().reason.contains("overlap"));
    }

    proptest::proptest! {
        #[test]
        fn merging_keeps_every_frame_once(
            parts in proptest::collection::vec((-20i64..20, 0i64..20, 1i64..4), 1..5),
        ) {
            let spec = parts
                .iter()
                .map(|(s, l, st)| format!("{s}-{}:{st}", s + l))
                .collect::<Vec<_>>()
                .join(",");
            let set: FrameSet = spec.parse().unwrap();
            let mut expected: Vec<i64> = set
                .ranges()
                .iter()
                .flat_map(|r| (r.start..=r.end).step_by(r.step as usize))
                .collect();
            expected.sort_unstable();
            expected.dedup();
            let merged = set.merged().unwrap();
            let got: Vec<i64> = merged.batches(1).map(|b| b.start).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    proptest::proptest! {
        #[test]
        fn batches_enumerate_exactly_the_frames(
            start in -50i64..50,
            len in 0i64..60,
            step in 1i64..7,
            batch in 1u32..10,
        ) {
            let set: FrameSet = format!("{start}-{}:{step}", start + len).parse().unwrap();
            let expected: Vec<i64> = (start..=start + len).step_by(step as usize).collect();
            let mut got = Vec::new();
            for b in set.batches(batch) {
                proptest::prop_assert!(b.start <= b.end);
                let frames: Vec<i64> = (b.start..=b.end).step_by(b.step as usize).collect();
                proptest::prop_assert!(frames.len() <= batch as usize);
                got.extend(frames);
            }
            proptest::prop_assert_eq!(&got, &expected);
            proptest::prop_assert_eq!(set.task_count(batch), set.batches(batch).count() as u64);
            proptest::prop_assert_eq!(set.frame_count(), expected.len() as u64);
        }
    }
}
