//! The built-in `blender` job type: renders a task's frames of a .blend scene with
//! Blender in background mode.
//!
//! The command line is `blender -b <scene> [-S <scene_name>] --python-exit-code 1
//! --python-expr <setup> [-E <engine>] [<args>...] -o <output> -F <format> -x 1
//! [-t <threads>] -s <start> -e <end> -j <step> -a`. Blender acts on its arguments in
//! order: the scene is loaded first, the setup script then adjusts it, and `-a` renders.
//! The setup script is a constant; the values it applies (resolution, samples, camera,
//! denoising, device) reach it as JSON in [`CONFIG_VAR`], never spliced into code. It
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
            ParamSpec::new("engine", words(&["CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"]), false)
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
                .describe("Which scene of the file to render (Blender's -S); the active one when absent."),
            ParamSpec::new("format", words(&["PNG", "OPEN_EXR", "OPEN_EXR_MULTILAYER", "JPEG", "TIFF"]), false)
                .default(json!("PNG"))
                .describe("Image format of the frames."),
            ParamSpec::new("device", words(&["CPU", "CUDA", "OPTIX", "HIP"]), false)
                .default(json!("CPU"))
                .describe("Cycles device; a GPU kind needs GPUs in the job's requirements."),
            ParamSpec::new("denoise", ParamType::Bool, false)
                .default(json!(false))
                .describe("Cycles denoising (off unless asked; fails where Blender lacks a denoiser)."),
            ParamSpec::new("threads", ParamType::Int, false)
                .range(Some(0.0), Some(1024.0))
                .describe("Render threads (Blender's -t); 0 for one per processor."),
            ParamSpec::new("args", ParamType::List(Box::new(ParamType::String)), false)
                .describe("Extra Blender arguments, after the scene is loaded and before the render flags."),
        ],
        Arc::new(Blender),
    );
    def.software.insert("blender".into(), "*".into());
    def
}

struct Blender;

impl Runner for Blender {
    fn plan(&self, task: &TaskInput<'_>) -> Result<TaskPlan, String> {
        let p = task.params();
        let text = |name: &str| p.str(name).ok_or_else(|| format!("`{name}` is missing"));
        let (scene, output) = (text("scene")?, text("output")?);
        let (format, device) = (p.str("format").unwrap_or("PNG"), p.str("device").unwrap_or("CPU"));
        if device != "CPU" && task.gpus.is_empty() {
            return Err(format!("device {device} needs GPUs: submit with requirements.gpus >= 1"));
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
        // A relative scene path starting with `-` would read as an option.
        let scene = if scene.starts_with('-') { format!("./{scene}") } else { scene.to_string() };
        let mut args: Vec<String> = vec!["-b".into(), scene];
        if let Some(name) = p.str("scene_name") {
            args.extend(["-S".into(), name.into()]);
        }
        args.extend(["--python-exit-code", "1", "--python-expr", SETUP].map(String::from));
        if let Some(engine) = p.str("engine") {
            args.extend(["-E".into(), engine.into()]);
        }
        args.extend(p.strings("args"));
        args.extend(["-o", output, "-F", format, "-x", "1"].map(String::from));
        if let Some(threads) = p.int("threads") {
            args.extend(["-t".into(), threads.to_string()]);
        }
        for (flag, value) in [("-s", batch.start), ("-e", batch.end), ("-j", batch.step.max(1))] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        args.push("-a".into());
        Ok(TaskPlan {
            program: "blender".into(),
            args,
            env: BTreeMap::from([(CONFIG_VAR.to_string(), config.to_string())]),
        })
    }

    fn parser(&self, task: &TaskInput<'_>) -> Box<dyn OutputParser> {
        Box::new(BlenderParser {
            frames: task.frame_list(),
            ..BlenderParser::default()
        })
    }
}

static FRA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Fra:(-?\d+) ").expect("regex"));
static TILES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Rendered (\d+)/(\d+) Tiles, Sample (\d+)/(\d+)").expect("regex"));
static SAMPLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Sample (\d+)/(\d+)").expect("regex"));
static EEVEE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Rendering (\d+) / (\d+) samples").expect("regex"));
static SAVED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Saved: '(.*)'$").expect("regex"));
static FRAME_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*Time: \S+ \(Saving: ").expect("regex"));

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
    collected: Collected,
}

impl BlenderParser {
    fn progress(&mut self, frame_fraction: f32, events: &mut Vec<Event>) {
        let total = self.frames.len().max(1) as f32;
        let progress = ((self.done as f32 + frame_fraction) / total).min(1.0);
        if progress - self.reported >= 0.001 || (progress >= 1.0 && self.reported < 1.0) {
            self.reported = progress;
            events.push(Event::Progress(progress));
        }
    }

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
        let mut error = self.collected.error.clone();
        if error.is_none() && self.traceback {
            error = Some("python error: a traceback without its exception line (see the log)".into());
        }
        if error.is_none() && exit.ok() {
            error = self.frames.iter().find_map(|frame| match self.saved.get(frame) {
                None => Some(format!("frame {frame}: no output saved")),
                Some(paths) => paths
                    .iter()
                    .find(|path| files.size(path).is_none())
                    .map(|path| format!("frame {frame}: output {path} was reported saved but does not exist")),
            });
        }
        Verdict { error, outputs }
    }
}

#[cfg(test)]
mod tests {
    use furrow_protocol::{FrameBatch, OutputFile};
    use serde_json::{Value, json};

    use super::*;
    use crate::output::tests::{Files, feed};

    fn task<'a>(params: &'a Value, gpus: &'a [u32], files: &'a Files, (start, end, step): (i64, i64, i64)) -> TaskInput<'a> {
        TaskInput {
            params,
            frames: FrameBatch { start, end, step },
            gpus,
            files,
        }
    }

    fn plan(params: Value, gpus: &[u32], frames: (i64, i64, i64)) -> Result<TaskPlan, String> {
        let def = definition();
        let params = def.validate(&params).map_err(|e| e.to_string())?;
        def.plan(&task(&params, gpus, &Files::default(), frames))
    }

    fn parser(frames: (i64, i64, i64)) -> Box<dyn OutputParser> {
        let (params, files) = (json!({"scene": "/s.blend", "output": "/r/x_####"}), Files::default());
        definition().parser(&task(&params, &[], &files, frames))
    }

    fn progress(events: &[Event]) -> Vec<f32> {
        let round = |p: &f32| (p * 1000.0).round() / 1000.0;
        events.iter().filter_map(|e| if let Event::Progress(p) = e { Some(round(p)) } else { None }).collect()
    }

    #[test]
    fn a_typical_task_runs_the_setup_after_loading_and_renders_last() {
        let params = json!({"scene": "/p/shot.blend", "output": "/r/shot_####", "engine": "CYCLES",
            "samples": 16, "resolution_percent": 50, "camera": "Cam \"B\"", "scene_name": "Main",
            "device": "CUDA", "threads": 4, "args": ["--verbose", "1"]});
        let plan = plan(params, &[0], (10, 18, 2)).unwrap();
        assert_eq!(plan.program, "blender");
        let expected = [
            "-b", "/p/shot.blend", "-S", "Main", "--python-exit-code", "1", "--python-expr", SETUP, "-E", "CYCLES",
            "--verbose", "1", "-o", "/r/shot_####", "-F", "PNG", "-x", "1", "-t", "4", "-s", "10", "-e", "18",
            "-j", "2", "-a",
        ];
        assert_eq!(plan.args, expected);
        let config: Value = serde_json::from_str(&plan.env[CONFIG_VAR]).unwrap();
        assert_eq!(
            config,
            json!({"scene": "Main", "camera": "Cam \"B\"", "resolution_percent": 50, "samples": 16,
                   "denoise": false, "device": "CUDA"})
        );
        assert!(!SETUP.contains("Cam"), "values reach the script through the environment only");
    }

    #[test]
    fn the_scene_settings_stay_unless_given() {
        let plan = plan(json!({"scene": "-odd.blend", "output": "/r/f"}), &[], (1, 1, 1)).unwrap();
        let args: Vec<&str> = plan.args.iter().map(String::as_str).filter(|a| *a != SETUP).collect();
        assert_eq!(
            args,
            ["-b", "./-odd.blend", "--python-exit-code", "1", "--python-expr", "-o", "/r/f", "-F", "PNG", "-x", "1",
             "-s", "1", "-e", "1", "-j", "1", "-a"]
        );
        let config: Value = serde_json::from_str(&plan.env[CONFIG_VAR]).unwrap();
        assert_eq!(config["samples"], Value::Null);
        assert_eq!(config["device"], "CPU");
    }

    #[test]
    fn tasks_that_cannot_run_are_refused() {
        let gpu = json!({"scene": "/s.blend", "output": "/r/x", "device": "OPTIX"});
        assert_eq!(plan(gpu, &[], (1, 2, 1)).unwrap_err(), "device OPTIX needs GPUs: submit with requirements.gpus >= 1");
        let params = json!({"scene": "/s.blend", "output": "/r/x"});
        assert!(plan(params.clone(), &[], (-2, 3, 1)).unwrap_err().contains("frames -2 to 3 are out of range"));
        assert!(plan(params, &[], (1, MAX_FRAME + 1, 1)).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let def = definition();
        let err = |extra: Value| {
            let mut params = json!({"scene": "/s.blend", "output": "/r/x"});
            params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            def.validate(&params).unwrap_err().to_string()
        };
        assert_eq!(def.validate(&json!({"output": "/r/x"})).unwrap_err().to_string(), "params.scene: required (path parameter)");
        assert!(err(json!({"engine": "LUXCORE"})).starts_with("params.engine: must be one of CYCLES,"));
        assert_eq!(err(json!({"samples": 0})), "params.samples: it must be at least 1, got 0");
        assert_eq!(err(json!({"resolution_percent": 1001})), "params.resolution_percent: it must be at most 1000, got 1001");
        assert_eq!(err(json!({"threads": -1})), "params.threads: it must be at least 0, got -1");
        assert_eq!(err(json!({"camera": ""})), "params.camera: its length must be at least 1, got 0");
        assert!(err(json!({"device": "METAL"})).starts_with("params.device: must be one of CPU, CUDA, OPTIX, HIP"));
        assert_eq!(err(json!({"denoise": "yes"})), "params.denoise: must be true or false, not a string");
        assert!(err(json!({"frames": "1-3"})).starts_with("params.frames: unknown parameter"));
        let filled = def.validate(&json!({"scene": "/s.blend", "output": "/r/x"})).unwrap();
        assert_eq!(filled, json!({"scene": "/s.blend", "output": "/r/x", "format": "PNG", "device": "CPU", "denoise": false}));
        assert_eq!(def.software.get("blender").map(String::as_str), Some("*"));
        assert!(!def.single_task);
    }

    /// Blender 3.4.1, Cycles, 8 samples, frames 1-2 (the lines of frame 1, abridged).
    const CYCLES: [&str; 14] = [
        "Blender 3.4.1",
        "Read blend: /tmp/fj/t.blend",
        "Fra:1 Mem:9.04M (Peak 10.83M) | Time:00:00.00 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer | Synchronizing object | Cube",
        "Fra:1 Mem:9.90M (Peak 10.83M) | Time:00:00.03 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Sample 0/8",
        "Fra:1 Mem:10.62M (Peak 10.83M) | Time:00:00.03 | Remaining:00:00.04 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Sample 1/8",
        "Fra:1 Mem:10.94M (Peak 11.57M) | Time:00:00.05 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Sample 8/8",
        "Fra:1 Mem:10.94M (Peak 11.57M) | Time:00:00.05 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Finished",
        "Saved: '/tmp/fj/r/shot_0001.png'",
        " Time: 00:00.14 (Saving: 00:00.08)",
        "",
        "Fra:2 Mem:10.62M (Peak 11.57M) | Time:00:00.00 | Remaining:00:00.03 | Mem:1.47M, Peak:1.47M | Scene, ViewLayer | Sample 1/8",
        "Saved: '/tmp/fj/r/shot_0002.png'",
        " Time: 00:00.03 (Saving: 00:00.00)",
        "Blender quit",
    ];

    #[test]
    fn cycles_samples_give_progress_and_saved_lines_give_outputs() {
        let mut p = parser((1, 2, 1));
        let events = feed(p.as_mut(), &CYCLES);
        assert_eq!(progress(&events), [0.063, 0.5, 0.563, 1.0]);
        let outputs: Vec<_> = events.iter().filter(|e| matches!(e, Event::Output { .. })).collect();
        assert_eq!(
            outputs,
            [
                &Event::Output { path: "/tmp/fj/r/shot_0001.png".into(), frame: Some(1) },
                &Event::Output { path: "/tmp/fj/r/shot_0002.png".into(), frame: Some(2) },
            ]
        );
        let files = Files::with(&["/tmp/fj/r/shot_0001.png", "/tmp/fj/r/shot_0002.png"]);
        let verdict = p.finish(Exit { code: Some(0) }, &files);
        assert_eq!(verdict.error, None);
        assert_eq!(verdict.outputs[1], OutputFile { path: "/tmp/fj/r/shot_0002.png".into(), size: 100, frame: Some(2) });
    }

    #[test]
    fn eevee_tiles_and_workbench_are_followed() {
        let mut p = parser((1, 2, 1));
        let events = feed(p.as_mut(), &[
            "Fra:1 Mem:11.06M (Peak 12.17M) | Time:00:01.54 | Rendering 1 / 4 samples",
            "Fra:1 Mem:11.06M (Peak 12.17M) | Time:00:03.22 | Rendering 4 / 4 samples",
            "Saved: '/tmp/fj/r/BLENDER_EEVEE-01.jpg'",
            " Time: 00:03.31 (Saving: 00:00.08)",
            "Fra:2 Mem:10.51M (Peak 10.83M) | Time:00:00.03 | Remaining:00:00.02 | Mem:1.36M, Peak:1.36M | Scene, ViewLayer | Rendered 0/12 Tiles, Sample 1/2",
            "Fra:2 Mem:10.53M (Peak 11.09M) | Time:00:00.05 | Remaining:00:00.04 | Mem:1.37M, Peak:1.37M | Scene, ViewLayer | Rendered 2/12 Tiles, Sample 1/2",
            "Fra:2 Mem:10.53M (Peak 11.09M) | Time:00:00.04 | Remaining:00:00.05 | Mem:1.37M, Peak:1.37M | Scene, ViewLayer | Rendered 1/12 Tiles, Sample 1/2",
        ]);
        assert_eq!(progress(&events), [0.125, 0.5, 0.521, 0.604]);
        // Workbench prints no `Fra:` lines: the frames come from the batch, in order.
        let mut p = parser((7, 9, 2));
        let events = feed(p.as_mut(), &[
            "Saved: '/tmp/fj/r/BLENDER_WORKBENCH-07.jpg'",
            " Time: 00:00.78 (Saving: 00:00.08)",
            "Saved: '/tmp/fj/r/BLENDER_WORKBENCH-09.jpg'",
            " Time: 00:00.01 (Saving: 00:00.00)",
        ]);
        let frames: Vec<_> = events.iter().filter_map(|e| if let Event::Output { frame, .. } = e { *frame } else { None }).collect();
        assert_eq!(frames, [7, 9]);
        assert_eq!(progress(&events), [0.5, 1.0]);
    }

    #[test]
    fn frames_without_a_file_fail_a_clean_exit() {
        let mut p = parser((1, 3, 1));
        feed(p.as_mut(), &CYCLES);
        let files = Files::with(&["/tmp/fj/r/shot_0001.png", "/tmp/fj/r/shot_0002.png"]);
        assert_eq!(p.finish(Exit { code: Some(0) }, &files).error.as_deref(), Some("frame 3: no output saved"));
        let verdict = p.finish(Exit { code: Some(0) }, &Files::with(&["/tmp/fj/r/shot_0002.png"]));
        assert_eq!(
            verdict.error.as_deref(),
            Some("frame 1: output /tmp/fj/r/shot_0001.png was reported saved but does not exist")
        );
        assert_eq!(verdict.outputs.len(), 1);
        // A failed exit without an error line is left to the runner.
        assert_eq!(p.finish(Exit { code: Some(1) }, &files).error, None);
    }

    #[test]
    fn error_lines_fail_the_task() {
        let cases: [(&[&str], &str); 4] = [
            (&["Blender 3.4.1", "Error: Cannot read file '/tmp/fj/missing.blend': No such file or directory", "Blender quit"],
             "Cannot read file '/tmp/fj/missing.blend': No such file or directory"),
            (&["Read blend: /tmp/fj/t.blend", "Error: camera \"Cam2\" not found in scene \"Scene\" (cameras: Camera)"],
             "camera \"Cam2\" not found in scene \"Scene\" (cameras: Camera)"),
            (&["Fra:1 Mem:9.90M (Peak 10.83M) | Time:00:00.02 | Mem:0.76M, Peak:0.76M | Scene, ViewLayer | Build without OpenImageDenoiser",
               "Error: Build without OpenImageDenoiser", "Blender quit"],
             "Build without OpenImageDenoiser"),
            (&["imb_savepng: Cannot open file for writing: '/proc/nope/x_1.png'",
               "Error: Render error (No such file or directory) cannot save: '/proc/nope/x_1.png'",
               " Time: 00:02.48 (Saving: 00:00.08)"],
             "Render error (No such file or directory) cannot save: '/proc/nope/x_1.png'"),
        ];
        for (lines, expected) in cases {
            let mut p = parser((1, 1, 1));
            let events = feed(p.as_mut(), lines);
            assert!(events.contains(&Event::Error(expected.into())), "{lines:?}");
            assert_eq!(p.finish(Exit { code: Some(0) }, &Files::default()).error.as_deref(), Some(expected));
        }
        let mut p = parser((1, 1, 1));
        let mut events = Vec::new();
        p.line(LogStream::Stderr, "EGL Error (0x3001): EGL_NOT_INITIALIZED: EGL is not initialized", &mut events);
        p.line(LogStream::Stdout, "Warning: 1 x Image not found", &mut events);
        assert_eq!(events, [Event::Warning("1 x Image not found".into())]);
    }

    #[test]
    fn a_traceback_fails_with_its_exception_line() {
        let mut p = parser((1, 1, 1));
        let events = feed(p.as_mut(), &[
            "Error: Python: Traceback (most recent call last):",
            "  File \"<string>\", line 1, in <module>",
            "RuntimeError: camera \"X\" not found",
            "",
            "Error: script failed, expr: 'raise RuntimeError('camera \"X\" not found')', exiting.",
        ]);
        assert_eq!(events[0], Event::Error("RuntimeError: camera \"X\" not found".into()));
        let verdict = p.finish(Exit { code: Some(1) }, &Files::default());
        assert_eq!(verdict.error.as_deref(), Some("RuntimeError: camera \"X\" not found"));
        let mut p = parser((1, 1, 1));
        feed(p.as_mut(), &["Traceback (most recent call last):", "  File \"x.py\", line 3"]);
        assert!(p.finish(Exit { code: Some(1) }, &Files::default()).error.unwrap().starts_with("python error"));
    }
}
