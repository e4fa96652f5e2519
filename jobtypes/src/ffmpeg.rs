//! The built-in `ffmpeg` job type: encodes the image sequence of a job's frame range into
//! one movie, as one task (`single_task`).
//!
//! `input` names the frames with a `#` run (`/renders/shot_####.png`, as Blender writes
//! them) or a printf conversion (`shot_%04d.png`, where `%%` is a literal `%`). Before
//! running, the plan checks that every frame of the task exists. The command line is
//! `ffmpeg -hide_banner -nostdin -y -loglevel error -progress pipe:1 -nostats -framerate
//! <fps> -start_number <start> -i <input> [-i <audio>] [-map 0:v:0 -map 1:a:0] -frames:v
//! <count> [-vf scale=<scale>] -c:v <codec> [-crf <crf>] -pix_fmt <pixel_format>
//! [-c:a aac -shortest] [<args>...] <output>`.
//!
//! The parser reads progress from the `frame=N` lines `-progress pipe:1` writes to
//! standard output. Standard error holds only errors (`-loglevel error`): when ffmpeg
//! fails, the first one is the task's error; when it succeeds they stay in the log. A
//! success needs a non-empty output file and, without audio (whose `-shortest` may cut
//! the movie), every frame encoded.

use std::sync::{Arc, LazyLock};

use furrow_protocol::{LogStream, OutputFile};
use regex::Regex;
use serde_json::{Value, json};

use crate::output::{Event, Exit, FileProbe, OutputParser, Verdict};
use crate::params::{ParamError, ParamSpec, ParamType, Params};
use crate::{BUILTIN_VERSION, Definition, Runner, TaskInput, TaskPlan};

/// An `input` without a frame number.
const NO_SLOT: &str = "has no frame number: use a # run (shot_####.png) or %04d";
/// An `input` with several.
const SLOTS: &str = "must have exactly one frame number (one # run or one %d / %0Nd)";
/// A `%` of a printf-style `input` that is no conversion.
const STRAY: &str = "has a stray `%`: write `%%` for a literal percent sign";

/// Most ranges of missing frames an error lists.
const MAX_RANGES: usize = 20;

/// The `ffmpeg` type.
pub fn definition() -> Definition {
    let path = |name: &str, required: bool, text: &str| {
        ParamSpec::new(name, ParamType::Path, required).describe(text)
    };
    let string = |name: &str, default: &str, text: &str| {
        ParamSpec::new(name, ParamType::String, false)
            .default(json!(default))
            .range(Some(1.0), None)
            .describe(text)
    };
    let mut def = Definition::new(
        "ffmpeg",
        BUILTIN_VERSION,
        "Encodes the image sequence of the job's frame range into one movie with ffmpeg.",
        vec![
            path(
                "input",
                true,
                "The frames: a # run (/renders/shot_####.png) or %04d stands for the frame number.",
            ),
            path("output", true, "The movie file."),
            ParamSpec::new("fps", ParamType::Float, false)
                .default(json!(24))
                .range(Some(0.001), Some(1000.0))
                .describe("Frames per second."),
            string("codec", "libx264", "Video codec (ffmpeg's -c:v)."),
            ParamSpec::new("crf", ParamType::Int, false)
                .range(Some(0.0), Some(63.0))
                .describe("Constant rate factor (quality; lower is better)."),
            string(
                "pixel_format",
                "yuv420p",
                "Pixel format (ffmpeg's -pix_fmt).",
            ),
            ParamSpec::new("scale", ParamType::String, false).describe(
                "Output size W:H (ffmpeg's scale filter); -1 or -2 keeps the aspect ratio.",
            ),
            path(
                "audio",
                false,
                "An audio file muxed in (AAC); the movie ends with the shorter stream.",
            ),
            ParamSpec::new("args", ParamType::List(Box::new(ParamType::String)), false)
                .describe("Extra output arguments, before the output file."),
        ],
        Arc::new(Ffmpeg),
    );
    def.software.insert("ffmpeg".into(), "*".into());
    def.single_task = true;
    def
}

/// An image sequence: the text around the frame number, and its zero padding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The text before the frame number.
    prefix: String,
    /// Digits the frame number is padded to with zeros (0 or 1: none).
    width: usize,
    /// The text after it.
    suffix: String,
}

impl Pattern {
    /// Reads a `#` run or a `%d`/`%0Nd` conversion; the message does not name the parameter.
    fn parse(text: &str) -> Result<Self, String> {
        static SLOT: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"#+|%%|%(\d{0,2})d|%").expect("regex"));
        let (mut hashes, mut convs, mut stray) = (Vec::new(), Vec::new(), false);
        for c in SLOT.captures_iter(text) {
            let m = c.get(0).expect("whole match");
            match m.as_str() {
                s if s.starts_with('#') => hashes.push((m.range(), s.len())),
                "%%" => {}
                "%" => stray = true,
                _ => convs.push((m.range(), c[1].parse::<usize>().unwrap_or(0))),
            }
        }
        let unescape = |s: &str| {
            if convs.is_empty() {
                s.into()
            } else {
                s.replace("%%", "%")
            }
        };
        let (range, width) = match (hashes.as_slice(), convs.as_slice()) {
            ([slot], []) => slot.clone(),
            ([], [slot]) if !stray => slot.clone(),
            ([], [_]) => return Err(STRAY.into()),
            ([], []) => return Err(NO_SLOT.into()),
            _ => return Err(SLOTS.into()),
        };
        Ok(Self {
            prefix: unescape(&text[..range.start]),
            width,
            suffix: unescape(&text[range.end..]),
        })
    }

    /// The file of `frame`.
    fn path(&self, frame: i64) -> String {
        format!("{}{frame:0w$}{}", self.prefix, self.suffix, w = self.width)
    }

    /// The sequence as ffmpeg's image2 demuxer reads it (`%` doubled, `%0Nd` for the frame).
    fn printf(&self) -> String {
        let (prefix, suffix) = (
            self.prefix.replace('%', "%%"),
            self.suffix.replace('%', "%%"),
        );
        format!("{prefix}%0{}d{suffix}", self.width.max(1))
    }
}

/// Checks a `scale` value: `W:H`, each a size or -1/-2.
fn check_scale(scale: &str) -> Result<(), String> {
    static SCALE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(-[12]|\d{1,5}):(-[12]|\d{1,5})$").expect("regex"));
    if SCALE.is_match(scale) {
        Ok(())
    } else {
        Err(format!(
            "must be W:H, sizes or -1/-2 (1280:-2), got {scale:?}"
        ))
    }
}

/// A number as ffmpeg reads it: `24`, `23.976`.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// Frames as ranges: `3, 7-9`, at most [`MAX_RANGES`] of them.
fn ranges(frames: &[i64]) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &frame in frames {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == frame => *end = frame,
            _ => runs.push((frame, frame)),
        }
    }
    let show = |&(a, b): &(i64, i64)| {
        if a < b {
            format!("{a}-{b}")
        } else {
            format!("{a}")
        }
    };
    let mut parts: Vec<String> = runs.iter().take(MAX_RANGES).map(show).collect();
    if runs.len() > MAX_RANGES {
        parts.push(format!("and {} more", runs.len() - MAX_RANGES));
    }
    parts.join(", ")
}

/// The runner of the `ffmpeg` type.
struct Ffmpeg;

/// Turns a message into the error of parameter `name`.
fn param_error(name: &str) -> impl Fn(String) -> ParamError + '_ {
    move |message| ParamError {
        name: name.into(),
        message,
    }
}

impl Runner for Ffmpeg {
    fn check(&self, params: &Value) -> Result<(), ParamError> {
        let p = Params(params);
        Pattern::parse(p.str("input").unwrap_or_default()).map_err(param_error("input"))?;
        match p.str("scale") {
            Some(scale) => check_scale(scale).map_err(param_error("scale")),
            None => Ok(()),
        }
    }

    fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        let p = task.params();
        let text = |name: &str| p.str(name).ok_or_else(|| format!("`{name}` is missing"));
        let (input, output) = (text("input")?, text("output")?);
        let pattern = Pattern::parse(input).map_err(|e| format!("input {input}: {e}"))?;
        if task.frames.step > 1 {
            return Err("ffmpeg encodes consecutive frames: frame step must be 1".into());
        }
        let frames = task.frame_list();
        let missing: Vec<i64> = frames
            .iter()
            .copied()
            .filter(|&f| task.files.size(&pattern.path(f)).is_none())
            .collect();
        if !missing.is_empty() {
            let total = frames.len();
            return Err(format!(
                "input frames missing: {} (of {total}) for {input}",
                ranges(&missing)
            ));
        }
        let fps = number(p.float("fps").unwrap_or(24.0));
        let (start, count) = (task.frames.start.to_string(), frames.len().to_string());
        let sequence = pattern.printf();
        let scale = p.str("scale").map(|scale| format!("scale={scale}"));
        let crf = p.int("crf").map(|crf| crf.to_string());
        let audio = p.str("audio");
        let quiet = "-hide_banner -nostdin -y -loglevel error -progress pipe:1 -nostats";
        let mut args: Vec<&str> = quiet.split(' ').collect();
        args.extend(["-framerate", &fps, "-start_number", &start, "-i", &sequence]);
        if let Some(audio) = audio {
            args.extend(["-i", audio, "-map", "0:v:0", "-map", "1:a:0"]);
        }
        args.extend(["-frames:v", &count]);
        if let Some(scale) = &scale {
            args.extend(["-vf", scale]);
        }
        args.extend(["-c:v", p.str("codec").unwrap_or("libx264")]);
        if let Some(crf) = &crf {
            args.extend(["-crf", crf]);
        }
        args.extend(["-pix_fmt", p.str("pixel_format").unwrap_or("yuv420p")]);
        if audio.is_some() {
            args.extend(["-c:a", "aac", "-shortest"]);
        }
        let extra = p.strings("args");
        args.extend(extra.iter().map(String::as_str));
        // Paths are absolute (checked at submission), so the output never reads as an option.
        args.push(output);
        Ok(TaskPlan {
            program: "ffmpeg".into(),
            args: args.into_iter().map(String::from).collect(),
            env: Default::default(),
        })
    }

    fn parser(&self, task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        let p = task.params();
        Box::new(FfmpegParser {
            count: task.frame_list().len() as u64,
            output: p.str("output").unwrap_or_default().into(),
            whole: p.str("audio").is_none(),
            frame: None,
            reported: 0.0,
            error: None,
        })
    }
}

/// Reads ffmpeg's `-progress` lines and its errors.
struct FfmpegParser {
    /// Frames to encode.
    count: u64,
    /// The movie file.
    output: String,
    /// Every frame must be encoded (no audio to cut the movie short).
    whole: bool,
    /// The last `frame=` value.
    frame: Option<u64>,
    /// Progress last reported.
    reported: f32,
    /// The first line on standard error.
    error: Option<String>,
}

impl OutputParser for FfmpegParser {
    fn line(&mut self, stream: LogStream, text: &str, events: &mut Vec<Event>) {
        static CONTEXT: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^\[(\S+) @ 0x[0-9a-f]+\] ").expect("regex"));
        let text = text.trim();
        match stream {
            LogStream::Stdout => {
                let progress = if let Some(frame) = text
                    .strip_prefix("frame=")
                    .and_then(|f| f.trim().parse::<u64>().ok())
                {
                    self.frame = Some(frame);
                    (frame as f32 / self.count.max(1) as f32).min(1.0)
                } else if text == "progress=end" {
                    1.0
                } else {
                    return;
                };
                if progress > self.reported {
                    self.reported = progress;
                    events.push(Event::Progress(progress));
                }
            }
            LogStream::Stderr if self.error.is_none() && !text.is_empty() => {
                self.error = Some(CONTEXT.replace(text, "$1: ").into_owned());
            }
            _ => {}
        }
    }

    fn finish(&mut self, exit: Exit, files: &dyn FileProbe) -> Verdict {
        let size = files.size(&self.output).filter(|&size| size > 0);
        let (error, size) = match (exit.ok(), size, self.frame) {
            (false, _, _) => (self.error.clone(), None),
            (true, None, _) => (
                Some(format!("output {} was not written", self.output)),
                None,
            ),
            (true, size, Some(frame)) if self.whole && frame < self.count => (
                Some(format!("ffmpeg encoded {frame} of {} frames", self.count)),
                size,
            ),
            (true, size, _) => (None, size),
        };
        let path = self.output.clone();
        let outputs = size.map(|size| OutputFile {
            path,
            size,
            frame: None,
        });
        Verdict {
            error,
            outputs: outputs.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use furrow_protocol::FrameBatch;

    use super::*;
    use crate::output::tests::{Files, feed};

    /// A probe holding `frames` of `pattern`.
    fn frames(pattern: &str, frames: impl IntoIterator<Item = i64>) -> Files {
        let pattern = Pattern::parse(pattern).unwrap();
        Files(
            frames
                .into_iter()
                .map(|f| (pattern.path(f), 1000))
                .collect(),
        )
    }

    fn task<'a>(
        params: &'a Value,
        files: &'a Files,
        [start, end, step]: [i64; 3],
    ) -> TaskInput<'a> {
        let frames = FrameBatch { start, end, step };
        TaskInput {
            params,
            frames,
            gpus: &[],
            files,
        }
    }

    /// The command line of a task, or why it cannot run.
    fn plan(params: Value, files: &Files, batch: [i64; 3]) -> Result<String, String> {
        let def = definition();
        let params = def.validate(&params).map_err(|e| e.to_string())?;
        def.plan(&task(&params, files, batch))
            .map(|plan| plan.display())
    }

    /// A parser of frames 1 to `count`, fed `stdout` then `stderr` (one line per line).
    fn parse(
        params: Value,
        count: i64,
        out: &str,
        err: &str,
    ) -> (Box<dyn OutputParser>, Vec<Event>) {
        let mut parser = definition().parser(&task(&params, &Files::default(), [1, count, 1]));
        let mut events = feed(parser.as_mut(), &out.lines().collect::<Vec<_>>());
        for line in err.lines() {
            parser.line(LogStream::Stderr, line, &mut events);
        }
        (parser, events)
    }

    fn verdict(parser: &mut Box<dyn OutputParser>, code: i32, files: &Files) -> Verdict {
        parser.finish(Exit { code: Some(code) }, files)
    }

    #[test]
    fn patterns_read_hash_runs_and_printf_conversions() {
        #[rustfmt::skip]
        let cases = [
            ("/r/shot_####.png", 7, "/r/shot_0007.png", "/r/shot_%04d.png"),
            ("/r/shot_####.png", -3, "/r/shot_-003.png", "/r/shot_%04d.png"),
            ("/r/shot_##.png", 12345, "/r/shot_12345.png", "/r/shot_%02d.png"),
            ("/r/100%/f_#.exr", 9, "/r/100%/f_9.exr", "/r/100%%/f_%01d.exr"),
            ("/r/50%%/f_%03d.png", 5, "/r/50%/f_005.png", "/r/50%%/f_%03d.png"),
            ("f_%d.png", 42, "f_42.png", "f_%01d.png"),
        ];
        for (text, frame, path, printf) in cases {
            let pattern = Pattern::parse(text).unwrap();
            let expected = (path.to_string(), printf.to_string());
            assert_eq!((pattern.path(frame), pattern.printf()), expected, "{text}");
        }
    }

    #[test]
    fn parameters_are_checked() {
        let def = definition();
        let scale = "must be W:H, sizes or -1/-2 (1280:-2), got";
        #[rustfmt::skip]
        let cases = [
            (json!({"input": "/r/f.png"}), format!("params.input: {NO_SLOT}")),
            (json!({"input": "/r/##_##.png"}), format!("params.input: {SLOTS}")),
            (json!({"input": "/r/#_%04d.png"}), format!("params.input: {SLOTS}")),
            (json!({"input": "/r/5%_%04d.png"}), format!("params.input: {STRAY}")),
            (json!({"fps": 0}), "params.fps: it must be at least 0.001, got 0".into()),
            (json!({"crf": 64}), "params.crf: it must be at most 63, got 64".into()),
            (json!({"codec": ""}), "params.codec: its length must be at least 1, got 0".into()),
            (json!({"scale": "1280x720"}), format!("params.scale: {scale} \"1280x720\"")),
            (json!({"scale": "-3:10"}), format!("params.scale: {scale} \"-3:10\"")),
            (json!({"args": "-an"}), "params.args: must be a list of strings, not a string".into()),
        ];
        for (extra, expected) in cases {
            let mut params = json!({"input": "/r/#.png", "output": "/o.mp4"});
            params
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            assert_eq!(def.validate(&params).unwrap_err().to_string(), expected);
        }
        let err = def.validate(&json!({"input": "/r/#.png"})).unwrap_err();
        assert_eq!(err.to_string(), "params.output: required (path parameter)");
        let filled = def
            .validate(&json!({"input": "/r/#.png", "output": "/o.mp4"}))
            .unwrap();
        let defaults = json!({"input": "/r/#.png", "output": "/o.mp4", "fps": 24,
            "codec": "libx264", "pixel_format": "yuv420p"});
        assert_eq!(filled, defaults);
        assert!(def.single_task);
        assert_eq!(def.software.get("ffmpeg").map(String::as_str), Some("*"));
    }

    #[test]
    fn a_task_encodes_its_frame_range() {
        let params = json!({"input": "/r/shot_####.png", "output": "/m/shot.mp4"});
        assert_eq!(
            plan(params, &frames("/r/shot_####.png", 1..=12), [1, 12, 1]).unwrap(),
            "ffmpeg -hide_banner -nostdin -y -loglevel error -progress pipe:1 -nostats \
             -framerate 24 -start_number 1 -i /r/shot_%04d.png -frames:v 12 -c:v libx264 \
             -pix_fmt yuv420p /m/shot.mp4"
        );
        let params = json!({"input": "/r/f_%03d.png", "output": "/m/o.mov", "fps": 23.976,
            "codec": "prores_ks", "crf": 18, "pixel_format": "yuv422p10le", "scale": "1280:-2",
            "audio": "/a/m.wav", "args": ["-movflags", "+faststart"]});
        assert_eq!(
            plan(params, &frames("/r/f_%03d.png", 95..=104), [95, 104, 1]).unwrap(),
            "ffmpeg -hide_banner -nostdin -y -loglevel error -progress pipe:1 -nostats \
             -framerate 23.976 -start_number 95 -i /r/f_%03d.png -i /a/m.wav -map 0:v:0 \
             -map 1:a:0 -frames:v 10 -vf scale=1280:-2 -c:v prores_ks -crf 18 \
             -pix_fmt yuv422p10le -c:a aac -shortest -movflags +faststart /m/o.mov"
        );
    }

    #[test]
    fn missing_frames_and_steps_are_refused() {
        let params = json!({"input": "/r/shot_####.png", "output": "/m.mp4"});
        let some = frames("/r/shot_####.png", [1, 2, 4, 5, 6, 10, 11, 12]);
        let err = plan(params.clone(), &some, [1, 12, 1]).unwrap_err();
        assert_eq!(
            err,
            "input frames missing: 3, 7-9 (of 12) for /r/shot_####.png"
        );
        let even = frames("/r/shot_####.png", (0..100).map(|f| f * 2));
        let err = plan(params.clone(), &even, [0, 99, 1]).unwrap_err();
        let listed: Vec<String> = (0..20).map(|i| (2 * i + 1).to_string()).collect();
        let listed = listed.join(", ");
        let expected =
            format!("input frames missing: {listed}, and 30 more (of 100) for /r/shot_####.png");
        assert_eq!(err, expected);
        let all = frames("/r/shot_####.png", 1..=12);
        let err = plan(params, &all, [1, 11, 2]).unwrap_err();
        assert_eq!(
            err,
            "ffmpeg encodes consecutive frames: frame step must be 1"
        );
    }

    /// ffmpeg 5.1, `-progress pipe:1`, 48 frames (the middle blocks abridged).
    const PROGRESS: &str = "frame=1\nfps=0.00\nstream_0_0_q=0.0\nbitrate=N/A\ntotal_size=48\n\
        out_time_us=0\nout_time_ms=0\nout_time=00:00:00.000000\ndup_frames=0\ndrop_frames=0\n\
        speed=N/A\nprogress=continue\nframe=13\nprogress=continue\nframe=25\nprogress=continue\n\
        frame=37\nprogress=continue\nframe=48\nfps=24.45\nout_time=00:00:01.875081\n\
        speed=0.955x\nprogress=end";

    #[test]
    fn progress_follows_the_frame_count_and_success_needs_the_movie() {
        let params = json!({"input": "/r/#.png", "output": "/m.mp4"});
        let movie = Files::with(&["/m.mp4"]);
        let (mut p, events) = parse(params.clone(), 48, PROGRESS, "");
        let expected = [1.0 / 48.0, 13.0 / 48.0, 25.0 / 48.0, 37.0 / 48.0, 1.0];
        assert_eq!(events, expected.map(Event::Progress));
        let file = OutputFile {
            path: "/m.mp4".into(),
            size: 100,
            frame: None,
        };
        assert_eq!(
            verdict(&mut p, 0, &movie),
            Verdict {
                error: None,
                outputs: vec![file]
            }
        );
        let empty = Files([("/m.mp4".to_string(), 0)].into());
        let error = verdict(&mut p, 0, &empty).error;
        assert_eq!(error.as_deref(), Some("output /m.mp4 was not written"));
        // A short movie fails, unless audio may have cut it (`-shortest`).
        let short = "frame=1\nprogress=continue\nframe=6\nprogress=end";
        let (mut p, _) = parse(params.clone(), 12, short, "");
        let error = verdict(&mut p, 0, &movie).error;
        assert_eq!(error.as_deref(), Some("ffmpeg encoded 6 of 12 frames"));
        let audio = json!({"input": "/r/#.png", "output": "/m.mp4", "audio": "/a.wav"});
        let (mut p, _) = parse(audio, 12, short, "");
        assert_eq!(verdict(&mut p, 0, &movie).error, None);
        // Lines on standard error stay in the log when ffmpeg succeeds.
        let (mut p, _) = parse(params, 1, "frame=1\nprogress=end", "[mp4 @ 0x5] odd");
        assert_eq!(verdict(&mut p, 0, &movie).error, None);
    }

    /// ffmpeg 5.1 failing: a bad size, missing frames, an unknown encoder, a bad output.
    #[rustfmt::skip]
    const FAILURES: [(&str, Option<&str>); 5] = [
        ("[libx264 @ 0x55b659bd8d40] width not divisible by 2 (33x25)
Error initializing output stream 0:0 -- Error while opening encoder for output stream #0:0 - maybe incorrect parameters such as bit_rate, rate, width or height",
         Some("libx264: width not divisible by 2 (33x25)")),
        ("[image2 @ 0x557371046200] Could find no file with path '/tmp/fj/g_%04d.png' and index in the range 5-9
/tmp/fj/g_%04d.png: No such file or directory",
         Some("image2: Could find no file with path '/tmp/fj/g_%04d.png' and index in the range 5-9")),
        ("Unknown encoder 'libnope'", Some("Unknown encoder 'libnope'")),
        ("\n/proc/nope/o5.mp4: No such file or directory", Some("/proc/nope/o5.mp4: No such file or directory")),
        ("", None),
    ];

    #[test]
    fn a_failure_reports_the_first_error_line() {
        for (stderr, expected) in FAILURES {
            let params = json!({"input": "/r/#.png", "output": "/m.mp4"});
            let (mut p, events) = parse(params, 12, "", stderr);
            assert!(events.is_empty());
            let failed = Verdict {
                error: expected.map(String::from),
                outputs: Vec::new(),
            };
            assert_eq!(verdict(&mut p, 1, &Files::with(&["/m.mp4"])), failed);
        }
    }
}
