//! The built-in `blender` job type: renders a task's frames of a .blend scene with
//! Blender in background mode.
//!
//! The command line is `blender -b <scene> [-S <scene_name>] --python-exit-code 1
//! --python-expr <setup> [-E <engine>] [<args>...] -o <output> -F <format> -x 1
//! [-t <threads>] -s <start> -e <end> -j <step> -a`. Blender acts on its arguments in
//! order: the scene is loaded first, the setup script then adjusts it, and `-a` renders.
//! The setup script is a constant; the values it applies (resolution, samples, camera,
//! denoising, device) reach it as JSON in [`CONFIG_VAR`], never spliced into code; the
//! script itself is in [`SETUP_VAR`] (the command line runs it from there). It
//! also forces `use_overwrite` on and placeholders off, so a retried task re-renders
//! every frame. `output` may hold a `#` run for the frame number (`/renders/shot_####`);
//! without one Blender appends four digits. Blender adds the extension (`-x 1`).
//!
//! The parser reads progress from `Sample a/b` (Cycles, tiles included) and
//! `Rendering a / b samples` (EEVEE), files from `Saved: '...'`, errors from `Error: `
//! lines and Python tracebacks (the exception line), warnings from `Warning: ` lines.
//! A frame ends at its ` Time: ... (Saving: ...)` line. Blender 3.4 exits 0 after some
//! failures (an unknown `-S` scene is one: the setup script catches that), so the verdict
//! also requires a saved file for every frame of the batch.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use furrow_protocol::LogStream;
use regex::Regex;
use serde_json::json;

use crate::output::{Collected, Event, Exit, FileProbe, OutputParser, Verdict};
use crate::params::{ParamSpec, ParamType};
use crate::{BUILTIN_VERSION, Definition, Runner, TaskInput, TaskPlan};

/// Environment variable carrying the setup script's settings, as JSON.
pub const CONFIG_VAR: &str = "FURROW_BLENDER_CFG";

/// Environment variable carrying the setup script itself, so the command line (and the
/// task log's `starting:` line) stays short.
pub const SETUP_VAR: &str = "FURROW_BLENDER_SETUP";

/// The `--python-expr` that runs [`SETUP_VAR`].
const RUN_SETUP: &str =
    "import os; exec(compile(os.environ['FURROW_BLENDER_SETUP'], 'furrow-setup', 'exec'))";

/// The error of a traceback cut off before its exception line.
const UNFINISHED_TRACEBACK: &str =
    "python error: a traceback without its exception line (see the log)";

/// Highest frame Blender renders (its `MAXFRAME`).
const MAX_FRAME: i64 = 1_048_574;

/// Python run once the scene is loaded: applies the settings of [`CONFIG_VAR`]. A failure
/// prints `Error: ...` and exits 1; an exception exits 1 through `--python-exit-code`.
const SETUP: &str = r#"import bpy, json, os, sys
def fail(message):
    print("Error: " + message, flush=True)
    sys.exit(1)
def names(items):
    return ", ".join(sorted(i.name for i in items)) or "none"
cfg = json.loads(os.environ["FURROW_BLENDER_CFG"])
scene = bpy.context.scene
quote = lambda text: json.dumps(text, ensure_ascii=False)
if cfg["scene"] is not None and scene.name != cfg["scene"]:
    fail("scene %s not found in %s (scenes: %s)" % (quote(cfg["scene"]), bpy.data.filepath, names(bpy.data.scenes)))
scene.render.use_overwrite = True
scene.render.use_placeholder = False
if cfg["resolution_percent"] is not None:
    scene.render.resolution_percentage = cfg["resolution_percent"]
if cfg["samples"] is not None:
    scene.eevee.taa_render_samples = cfg["samples"]
if cfg["camera"] is not None:
    camera = scene.objects.get(cfg["camera"])
    if camera is None or camera.type != "CAMERA":
        cameras = [o for o in scene.objects if o.type == "CAMERA"]
        fail("camera %s not found in scene %s (cameras: %s)" % (quote(cfg["camera"]), quote(scene.name), names(cameras)))
    scene.camera = camera
cycles = getattr(scene, "cycles", None)
if cycles is not None:
    if cfg["samples"] is not None:
        cycles.samples = cfg["samples"]
    cycles.use_denoising = cfg["denoise"]
    for layer in scene.view_layers:
        if hasattr(layer, "cycles"):
            layer.cycles.use_denoising = cfg["denoise"]
    if cfg["device"] == "CPU":
        cycles.device = "CPU"
    else:
        prefs = bpy.context.preferences.addons["cycles"].preferences
        prefs.compute_device_type = cfg["device"]
        (prefs.refresh_devices if hasattr(prefs, "refresh_devices") else prefs.get_devices)()
        if not any(d.type == cfg["device"] for d in prefs.devices):
            fail("no %s device found (devices: %s)" % (cfg["device"], names(prefs.devices)))
        for device in prefs.devices:
            device.use = device.type == cfg["device"]
        cycles.device = "GPU"
"#;

/// An enum parameter type of `words`.
fn words(words: &[&str]) -> ParamType {
    ParamType::Enum(words.iter().map(|w| w.to_string()).collect())
}

/// The `blender` type.
pub fn definition() -> Definition {
    let mut def = Definition::new(
        "blender",
        BUILTIN_VERSION,
        "Renders frames of a .blend scene with Blender in background mode.",
        vec![
            ParamSpec::new("scene", ParamType::Path, true).describe("The .blend file."),
            ParamSpec::new("output", ParamType::Path, true).describe(
                "Output path; a run of # is the zero-padded frame number (/renders/shot_####), \
                 without one Blender appends 4 digits. Blender adds the extension.",
            ),
            ParamSpec::new(
                "engine",
                words(&["CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"]),
                false,
            )
            .describe("Render engine; the scene's when absent."),
            ParamSpec::new("samples", ParamType::Int, false)
                .range(Some(1.0), Some(1_000_000.0))
                .describe("Samples per pixel (Cycles and EEVEE); the scene's when absent."),
            ParamSpec::new("resolution_percent", ParamType::Int, false)
                .range(Some(1.0), Some(1000.0))
                .describe("Resolution scale in percent; the scene's when absent."),
            ParamSpec::new("camera", ParamType::String, false)
                .range(Some(1.0), None)
                .describe("Name of the camera object to render through; the scene's when absent."),
            ParamSpec::new("scene_name", ParamType::String, false)
                .range(Some(1.0), None)
                .describe(
                    "Which scene of the file to render (Blender's -S); the active one when absent.",
                ),
            ParamSpec::new(
                "format",
                words(&["PNG", "OPEN_EXR", "OPEN_EXR_MULTILAYER", "JPEG", "TIFF"]),
                false,
            )
            .default(json!("PNG"))
            .describe("Image format of the frames."),
            ParamSpec::new("device", words(&["CPU", "CUDA", "OPTIX", "HIP"]), false)
                .default(json!("CPU"))
                .describe("Cycles device; a GPU kind needs GPUs in the job's requirements."),
            ParamSpec::new("denoise", ParamType::Bool, false)
                .default(json!(false))
                .describe(
                    "Cycles denoising (off unless asked; fails where Blender lacks a denoiser).",
                ),
            ParamSpec::new("threads", ParamType::Int, false)
                .range(Some(0.0), Some(1024.0))
                .describe("Render threads (Blender's -t); 0 for one per processor."),
            ParamSpec::new("args", ParamType::List(Box::new(ParamType::String)), false).describe(
                "Extra Blender arguments, after the scene is loaded and before the render flags.",
            ),
        ],
        Arc::new(Blender),
    );
    def.software.insert("blender".into(), "*".into());
    def
}

/// The runner of the `blender` type.
struct Blender;

impl Runner for Blender {
    fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        let p = task.params();
        let text = |name: &str| p.str(name).ok_or_else(|| format!("`{name}` is missing"));
        let (scene, output) = (text("scene")?, text("output")?);
        let (format, device) = (
            p.str("format").unwrap_or("PNG"),
            p.str("device").unwrap_or("CPU"),
        );
        if device != "CPU" && task.gpus.is_empty() {
            return Err(format!(
                "device {device} needs GPUs: submit with requirements.gpus >= 1"
            ));
        }
        let batch = task.frames;
        if batch.start < 0 || batch.end > MAX_FRAME {
            return Err(format!(
                "blender renders frames 0 to {MAX_FRAME}: frames {} to {} are out of range",
                batch.start, batch.end
            ));
        }
        let config = json!({
            "scene": p.str("scene_name"),
            "camera": p.str("camera"),
            "resolution_percent": p.int("resolution_percent"),
            "samples": p.int("samples"),
            "denoise": p.bool("denoise").unwrap_or(false),
            "device": device,
        });
        // Paths are absolute (checked at submission), so none reads as an option.
        let mut args: Vec<String> = vec!["-b".into(), scene.into()];
        if let Some(name) = p.str("scene_name") {
            args.extend(["-S".into(), name.into()]);
        }
        args.extend(["--python-exit-code", "1", "--python-expr", RUN_SETUP].map(String::from));
        if let Some(engine) = p.str("engine") {
            args.extend(["-E".into(), engine.into()]);
        }
        args.extend(p.strings("args"));
        args.extend(["-o", output, "-F", format, "-x", "1"].map(String::from));
        if let Some(threads) = p.int("threads") {
            args.extend(["-t".into(), threads.to_string()]);
        }
        let (start, end, step) = (
            batch.start.to_string(),
            batch.end.to_string(),
            batch.step.max(1),
        );
        args.extend(["-s", &start, "-e", &end, "-j", &step.to_string(), "-a"].map(String::from));
        Ok(TaskPlan {
            program: "blender".into(),
            args,
            env: BTreeMap::from([
                (CONFIG_VAR.to_string(), config.to_string()),
                (SETUP_VAR.to_string(), SETUP.to_string()),
            ]),
        })
    }

    fn parser(&self, task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        Box::new(BlenderParser {
            frames: task.frame_list(),
            ..BlenderParser::default()
        })
    }
}

/// A regex of this file (the patterns are constants).
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid pattern")
}

/// A status line: `Fra:12 Mem:... | ... | <status>`.
static FRA: LazyLock<Regex> = LazyLock::new(|| re(r"^Fra:(-?\d+) "));
/// Cycles rendering in tiles.
static TILES: LazyLock<Regex> =
    LazyLock::new(|| re(r"^Rendered (\d+)/(\d+) Tiles, Sample (\d+)/(\d+)"));
/// Cycles.
static SAMPLE: LazyLock<Regex> = LazyLock::new(|| re(r"^Sample (\d+)/(\d+)"));
/// EEVEE.
static EEVEE: LazyLock<Regex> = LazyLock::new(|| re(r"^Rendering (\d+) / (\d+) samples"));
/// A file written.
static SAVED: LazyLock<Regex> = LazyLock::new(|| re(r"^Saved: '(.*)'$"));
/// The end of a frame: ` Time: 00:00.14 (Saving: 00:00.08)`.
static FRAME_TIME: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*Time: \S+ \(Saving: "));

/// `a / b` clamped to 0..=1, from two captured numbers.
fn ratio(a: &str, b: &str) -> Option<f32> {
    let (a, b) = (a.parse::<f32>().ok()?, b.parse::<f32>().ok()?);
    (b > 0.0).then(|| (a / b).clamp(0.0, 1.0))
}

/// How far the current frame is, from the status (last `|` field) of a `Fra:` line.
fn frame_fraction(status: &str) -> Option<f32> {
    if let Some(c) = TILES.captures(status) {
        let tiles: f32 = c[2].parse().ok()?;
        return Some((ratio(&c[1], &c[2])? + ratio(&c[3], &c[4])? / tiles.max(1.0)).min(1.0));
    }
    let c = SAMPLE.captures(status).or_else(|| EEVEE.captures(status))?;
    ratio(&c[1], &c[2])
}

/// Reads Blender's output for a batch of frames.
#[derive(Default)]
struct BlenderParser {
    /// The frames of the batch.
    frames: Vec<i64>,
    /// Frames finished (an index into `frames`).
    done: usize,
    /// The frame of the last `Fra:` line, until the frame ends.
    current: Option<i64>,
    /// Progress last reported.
    reported: f32,
    /// Inside a Python traceback, waiting for its exception line.
    traceback: bool,
    /// Files saved per frame.
    saved: BTreeMap<i64, Vec<String>>,
    /// The first error and the files reported.
    collected: Collected,
}

impl BlenderParser {
    /// Reports progress with the current frame `frame_fraction` done, when it moved on.
    fn progress(&mut self, frame_fraction: f32, events: &mut Vec<Event>) {
        let total = self.frames.len().max(1) as f32;
        let progress = ((self.done as f32 + frame_fraction) / total).min(1.0);
        if progress - self.reported >= 0.001 || (progress >= 1.0 && self.reported < 1.0) {
            self.reported = progress;
            events.push(Event::Progress(progress));
        }
    }

    /// Reads one line (trailing blanks removed).
    fn read(&mut self, line: &str, events: &mut Vec<Event>) {
        if self.traceback {
            // Frames (`  File ...`) are indented; the exception line is not.
            if !line.trim().is_empty() && !line.starts_with(char::is_whitespace) {
                self.traceback = false;
                events.push(Event::Error(line.trim().to_string()));
            }
        } else if line.contains("Traceback (most recent call last):") {
            self.traceback = true;
        } else if let Some(text) = line.strip_prefix("Error: ") {
            events.push(Event::Error(text.to_string()));
        } else if let Some(text) = line.strip_prefix("Warning: ") {
            events.push(Event::Warning(text.to_string()));
        } else if let Some(c) = FRA.captures(line) {
            let frame = c[1].parse::<i64>().ok();
            if let Some(index) = frame.and_then(|f| self.frames.iter().position(|&x| x == f)) {
                self.done = self.done.max(index);
            }
            self.current = frame;
            let status = line.rsplit(" | ").next().unwrap_or_default();
            if let Some(fraction) = frame_fraction(status) {
                self.progress(fraction, events);
            }
        } else if let Some(c) = SAVED.captures(line) {
            let frame = self.current.or_else(|| self.frames.get(self.done).copied());
            let path = c[1].to_string();
            if let Some(frame) = frame {
                self.saved.entry(frame).or_default().push(path.clone());
            }
            events.push(Event::Output { path, frame });
            self.progress(1.0, events);
        } else if FRAME_TIME.is_match(line) {
            self.done = (self.done + 1).min(self.frames.len());
            self.current = None;
        }
    }

    /// The first frame of the batch without a saved file that exists.
    fn unsaved(&self, files: &dyn FileProbe) -> Option<String> {
        for frame in &self.frames {
            let Some(paths) = self.saved.get(frame) else {
                return Some(format!("frame {frame}: no output saved"));
            };
            if let Some(path) = paths.iter().find(|path| files.size(path).is_none()) {
                return Some(format!(
                    "frame {frame}: output {path} was reported saved but does not exist"
                ));
            }
        }
        None
    }
}

impl OutputParser for BlenderParser {
    fn line(&mut self, stream: LogStream, text: &str, events: &mut Vec<Event>) {
        if stream == LogStream::Agent {
            return;
        }
        let start = events.len();
        self.read(text.trim_end(), events);
        self.collected.note(&events[start..]);
    }

    fn finish(&mut self, exit: Exit, files: &dyn FileProbe) -> Verdict {
        let (outputs, _) = self.collected.existing(files);
        let error = match &self.collected.error {
            Some(error) => Some(error.clone()),
            None if self.traceback => Some(UNFINISHED_TRACEBACK.into()),
            None if exit.ok() => self.unsaved(files),
            None => None,
        };
        Verdict { error, outputs }
    }
}

#[cfg(test)]
mod tests {
    use furrow_protocol::{FrameBatch, OutputFile};
    use serde_json::{Value, json};

    use super::*;
    use crate::output::tests::{Files, feed};

    fn task<'a>(
        params: &'a Value,
        gpus: &'a [u32],
        files: &'a Files,
        frames: [i64; 3],
    ) -> TaskInput<'a> {
        let [start, end, step] = frames;
        let frames = FrameBatch { start, end, step };
        TaskInput {
            params,
            frames,
            gpus,
            files,
        }
    }

    fn plan(params: Value, gpus: &[u32], frames: [i64; 3]) -> Result<TaskPlan, String> {
        let def = definition();
        let params = def.validate(&params).map_err(|e| e.to_string())?;
        def.plan(&task(&params, gpus, &Files::default(), frames))
    }

    /// The arguments as one line, the setup script shown as `<setup>`.
    fn argv(plan: &TaskPlan) -> String {
        assert_eq!(plan.env.get(SETUP_VAR).map(String::as_str), Some(SETUP));
        plan.args.join(" ").replace(RUN_SETUP, "<setup>")
    }

    /// A parser fed `output` (real lines, one per line); its events.
    fn parse(frames: [i64; 3], output: &str) -> (Box<dyn OutputParser>, Vec<Event>) {
        let (params, files) = (
            json!({"scene": "/s.blend", "output": "/r/x_####"}),
            Files::default(),
        );
        let mut parser = definition().parser(&task(&params, &[], &files, frames));
        let events = feed(parser.as_mut(), &output.lines().collect::<Vec<_>>());
        (parser, events)
    }

    fn progress(events: &[Event]) -> Vec<f32> {
        let round = |p: f32| (p * 1000.0).round() / 1000.0;
        events
            .iter()
            .filter_map(|e| {
                if let Event::Progress(p) = e {
                    Some(round(*p))
                } else {
                    None
                }
            })
            .collect()
    }

    fn error(parser: &mut Box<dyn OutputParser>, code: i32, files: &[&str]) -> Option<String> {
        parser
            .finish(Exit { code: Some(code) }, &Files::with(files))
            .error
    }

    #[test]
    fn a_typical_task_runs_the_setup_after_loading_and_renders_last() {
        let params = json!({"scene": "/p/shot.blend", "output": "/r/shot_####", "engine": "CYCLES",
            "samples": 16, "resolution_percent": 50, "camera": "Cam \"B\"", "scene_name": "Main",
            "device": "CUDA", "threads": 4, "args": ["--verbose", "1"]});
        let typical = plan(params, &[0], [10, 18, 2]).unwrap();
        assert_eq!(typical.program, "blender");
        assert_eq!(
            argv(&typical),
            "-b /p/shot.blend -S Main --python-exit-code 1 --python-expr <setup> -E CYCLES --verbose 1 \
             -o /r/shot_#### -F PNG -x 1 -t 4 -s 10 -e 18 -j 2 -a"
        );
        let config: Value = serde_json::from_str(&typical.env[CONFIG_VAR]).unwrap();
        let expected = json!({"scene": "Main", "camera": "Cam \"B\"", "resolution_percent": 50,
            "samples": 16, "denoise": false, "device": "CUDA"});
        assert_eq!(config, expected);
        assert!(
            !SETUP.contains("Cam"),
            "values reach the script through the environment only"
        );
        // Unset, the scene's own settings stay.
        let bare = plan(
            json!({"scene": "/odd.blend", "output": "/r/f"}),
            &[],
            [1, 1, 1],
        )
        .unwrap();
        assert_eq!(
            argv(&bare),
            "-b /odd.blend --python-exit-code 1 --python-expr <setup> -o /r/f -F PNG -x 1 -s 1 -e 1 -j 1 -a"
        );
        let config: Value = serde_json::from_str(&bare.env[CONFIG_VAR]).unwrap();
        assert_eq!(
            (&config["samples"], &config["device"]),
            (&Value::Null, &json!("CPU"))
        );
    }

    #[test]
    fn tasks_that_cannot_run_are_refused() {
        let gpu = json!({"scene": "/s.blend", "output": "/r/x", "device": "OPTIX"});
        let refusal = "device OPTIX needs GPUs: submit with requirements.gpus >= 1";
        assert_eq!(plan(gpu, &[], [1, 2, 1]).unwrap_err(), refusal);
        let params = json!({"scene": "/s.blend", "output": "/r/x"});
        let err = plan(params.clone(), &[], [-2, 3, 1]).unwrap_err();
        assert_eq!(
            err,
            "blender renders frames 0 to 1048574: frames -2 to 3 are out of range"
        );
        assert!(plan(params, &[], [1, MAX_FRAME + 1, 1]).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let def = definition();
        let one_of = "must be one of";
        #[rustfmt::skip]
        let cases = [
            (json!({"engine": "LUX"}), format!("engine: {one_of} CYCLES, BLENDER_EEVEE, BLENDER_WORKBENCH, got \"LUX\"")),
            (json!({"samples": 0}), "samples: it must be at least 1, got 0".into()),
            (json!({"resolution_percent": 1001}), "resolution_percent: it must be at most 1000, got 1001".into()),
            (json!({"threads": -1}), "threads: it must be at least 0, got -1".into()),
            (json!({"camera": ""}), "camera: its length must be at least 1, got 0".into()),
            (json!({"device": "METAL"}), format!("device: {one_of} CPU, CUDA, OPTIX, HIP, got \"METAL\"")),
            (json!({"format": "BMP"}), format!("format: {one_of} PNG, OPEN_EXR, OPEN_EXR_MULTILAYER, JPEG, TIFF, got \"BMP\"")),
            (json!({"denoise": "yes"}), "denoise: must be true or false, not a string".into()),
            (json!({"args": "-y"}), "args: must be a list of strings, not a string".into()),
        ];
        for (extra, expected) in cases {
            let mut params = json!({"scene": "/s.blend", "output": "/r/x"});
            params
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let err = def.validate(&params).unwrap_err().to_string();
            assert_eq!(err, format!("params.{expected}"));
        }
        let err = def
            .validate(&json!({"output": "/r/x"}))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "params.scene: required (path parameter)");
        let filled = def
            .validate(&json!({"scene": "/s.blend", "output": "/r/x"}))
            .unwrap();
        let defaults = json!({"scene": "/s.blend", "output": "/r/x", "format": "PNG", "device": "CPU", "denoise": false});
        assert_eq!(filled, defaults);
        assert_eq!(def.software.get("blender").map(String::as_str), Some("*"));
        assert!(!def.single_task);
    }

    /// Blender 3.4.1, Cycles, 8 samples, frames 1-2 (abridged).
    const CYCLES: &str = r"Blender 3.4.1
Read blend: /tmp/fj/t.blend
Fra:1 Mem:9.04M (Peak 10.83M) | Time:00:00.00 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Synchronizing object | Cube
Fra:1 Mem:9.90M (Peak 10.83M) | Time:00:00.03 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Sample 0/8
Fra:1 Mem:10.62M (Peak 10.83M) | Time:00:00.03 | Remaining:00:00.04 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Sample 1/8
Fra:1 Mem:10.94M (Peak 11.57M) | Time:00:00.05 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Sample 8/8
Fra:1 Mem:10.94M (Peak 11.57M) | Time:00:00.05 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Finished
Saved: '/tmp/fj/r/shot_0001.png'
 Time: 00:00.14 (Saving: 00:00.08)

Fra:2 Mem:10.62M (Peak 11.57M) | Time:00:00.00 | Remaining:00:00.03 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Sample 1/8
Saved: '/tmp/fj/r/shot_0002.png'
 Time: 00:00.03 (Saving: 00:00.00)

Blender quit";

    /// Blender 3.4.1: EEVEE renders frame 1, Cycles with tiles frame 2.
    const EEVEE_AND_TILES: &str = r"Fra:1 Mem:11.06M (Peak 12.17M) | Time:00:01.54 | Rendering 1 / 4 samples
Fra:1 Mem:11.06M (Peak 12.17M) | Time:00:03.22 | Rendering 4 / 4 samples
Saved: '/tmp/fj/r/BLENDER_EEVEE-01.jpg'
 Time: 00:03.31 (Saving: 00:00.08)
Fra:2 Mem:10.51M (Peak 10.83M) | Time:00:00.03 | Remaining:00:00.02 | Mem:1.36M, Peak:1.36M | Scene, ViewLayer | Rendered 0/12 Tiles, Sample 1/2
Fra:2 Mem:10.53M (Peak 11.09M) | Time:00:00.05 | Remaining:00:00.04 | Mem:1.37M, Peak:1.37M | Scene, ViewLayer | Rendered 2/12 Tiles, Sample 1/2
Fra:2 Mem:10.53M (Peak 11.09M) | Time:00:00.04 | Remaining:00:00.05 | Mem:1.37M, Peak:1.37M | Scene, ViewLayer | Rendered 1/12 Tiles, Sample 1/2";

    /// Blender 3.4.1, Workbench: no `Fra:` lines at all.
    const WORKBENCH: &str = r"Saved: '/tmp/fj/r/BLENDER_WORKBENCH-07.jpg'
 Time: 00:00.78 (Saving: 00:00.08)
Saved: '/tmp/fj/r/BLENDER_WORKBENCH-09.jpg'
 Time: 00:00.01 (Saving: 00:00.00)";

    #[test]
    fn samples_give_progress_and_saved_lines_give_outputs() {
        let (mut p, events) = parse([1, 2, 1], CYCLES);
        assert_eq!(progress(&events), [0.063, 0.5, 0.563, 1.0]);
        let output = |path: &str, frame| Event::Output {
            path: path.into(),
            frame: Some(frame),
        };
        let outputs: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::Output { .. }))
            .cloned()
            .collect();
        assert_eq!(
            outputs,
            [
                output("/tmp/fj/r/shot_0001.png", 1),
                output("/tmp/fj/r/shot_0002.png", 2)
            ]
        );
        let files = Files::with(&["/tmp/fj/r/shot_0001.png", "/tmp/fj/r/shot_0002.png"]);
        let verdict = p.finish(Exit { code: Some(0) }, &files);
        assert_eq!(verdict.error, None);
        let second = OutputFile {
            path: "/tmp/fj/r/shot_0002.png".into(),
            size: 100,
            frame: Some(2),
        };
        assert_eq!(verdict.outputs[1], second);
        // EEVEE samples, and tiles (which count back a little: progress never goes back).
        assert_eq!(
            progress(&parse([1, 2, 1], EEVEE_AND_TILES).1),
            [0.125, 0.5, 0.521, 0.604]
        );
        // Without `Fra:` lines the frames come from the batch, in order.
        let (_, events) = parse([7, 9, 2], WORKBENCH);
        let frames: Vec<_> = events
            .iter()
            .filter_map(|e| {
                if let Event::Output { frame, .. } = e {
                    *frame
                } else {
                    None
                }
            })
            .collect();
        assert_eq!((frames, progress(&events)), (vec![7, 9], vec![0.5, 1.0]));
    }

    #[test]
    fn frames_without_a_file_fail_a_clean_exit() {
        let (mut p, _) = parse([1, 3, 1], CYCLES);
        let both = ["/tmp/fj/r/shot_0001.png", "/tmp/fj/r/shot_0002.png"];
        assert_eq!(
            error(&mut p, 0, &both).as_deref(),
            Some("frame 3: no output saved")
        );
        let (mut p, _) = parse([1, 2, 1], CYCLES);
        let gone = "frame 1: output /tmp/fj/r/shot_0001.png was reported saved but does not exist";
        assert_eq!(error(&mut p, 0, &both[1..]).as_deref(), Some(gone));
        // A failed exit without an error line is left to the runner.
        assert_eq!(error(&mut p, 1, &both[1..]), None);
    }

    #[test]
    fn error_lines_and_tracebacks_fail_the_task() {
        #[rustfmt::skip]
        let cases = [
            // A missing scene (Blender 3.4 exits 1; older ones go on with the default scene).
            ("Blender 3.4.1\nError: Cannot read file '/tmp/fj/missing.blend': No such file or directory\nBlender quit",
             "Cannot read file '/tmp/fj/missing.blend': No such file or directory"),
            // The setup script's refusals.
            ("Read blend: /tmp/fj/t.blend\nError: camera \"Cam2\" not found in scene \"Scene\" (cameras: Camera)",
             "camera \"Cam2\" not found in scene \"Scene\" (cameras: Camera)"),
            ("Can't find scene: 'Nope' in file: '/tmp/fj/t.blend'\nError: scene \"Nope\" not found in /tmp/fj/t.blend (scenes: Scene)",
             "scene \"Nope\" not found in /tmp/fj/t.blend (scenes: Scene)"),
            ("Read blend: /tmp/fj/t.blend\nError: no CUDA device found (devices: AMD EPYC)", "no CUDA device found (devices: AMD EPYC)"),
            // Denoising asked of a Blender without OpenImageDenoise.
            ("Fra:1 Mem:9.90M (Peak 10.83M) | Time:00:00.02 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Build without OpenImageDenoiser\nError: Build without OpenImageDenoiser\nBlender quit",
             "Build without OpenImageDenoiser"),
            ("imb_savepng: Cannot open file for writing: '/proc/nope/x_1.png'\nError: Render error (No such file or directory) cannot save: '/proc/nope/x_1.png'\n Time: 00:02.48 (Saving: 00:00.08)",
             "Render error (No such file or directory) cannot save: '/proc/nope/x_1.png'"),
            // A Python exception: its last line, not Blender's summary after it.
            ("Error: Python: Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nRuntimeError: camera \"X\" not found\n\nError: script failed, expr: 'raise RuntimeError('camera \"X\" not found')', exiting.",
             "RuntimeError: camera \"X\" not found"),
            ("Traceback (most recent call last):\n  File \"x.py\", line 3", UNFINISHED_TRACEBACK),
        ];
        for (output, expected) in cases {
            let (mut p, _) = parse([1, 1, 1], output);
            assert_eq!(error(&mut p, 0, &[]).as_deref(), Some(expected), "{output}");
        }
        let noise = "EGL Error (0x3001): EGL_NOT_INITIALIZED: EGL is not initialized";
        let (_, events) = parse([1, 1, 1], &format!("{noise}\nWarning: 1 x Image not found"));
        assert_eq!(events, [Event::Warning("1 x Image not found".into())]);
    }
}
