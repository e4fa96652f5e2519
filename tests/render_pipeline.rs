//! A real render pipeline: Blender renders a 12-frame scene on a farm of two agents, ffmpeg
//! turns the frames into a movie once the render is done, and the master serves the
//! frames' outputs and previews. Blender and ffmpeg are Debian's (the test script installs
//! them).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Farm;
use serde_json::Value;

/// Builds a small scene with Blender's own Python: a cube, a sphere, a floor, a sun and a
/// camera keyframed across frames 1-12, rendered by Cycles at 160×90.
fn make_scene(path: &Path) {
    let script = format!(
        r#"
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 4
scene.render.resolution_x = 160
scene.render.resolution_y = 90
scene.frame_start = 1
scene.frame_end = 12
bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
bpy.ops.mesh.primitive_uv_sphere_add(location=(2, 0, 0))
bpy.ops.mesh.primitive_plane_add(size=10, location=(0, 0, -1))
bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
bpy.ops.object.camera_add(location=(0, -8, 2), rotation=(1.35, 0, 0))
camera = bpy.context.object
scene.camera = camera
camera.keyframe_insert(data_path="location", frame=1)
camera.location = (4, -7, 3)
camera.keyframe_insert(data_path="location", frame=12)
bpy.ops.wm.save_as_mainfile(filepath={path:?})
"#,
        path = path.to_str().expect("utf-8 path")
    );
    let out = Command::new("blender")
        .args(["-b", "--factory-startup", "--python-expr", &script])
        .output()
        .expect("run blender (the test script installs it)");
    assert!(
        out.status.success() && path.exists(),
        "blender could not build the scene: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frames in the movie, as ffprobe counts them.
fn movie_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn blender_frames_then_an_ffmpeg_movie_with_outputs_and_previews() {
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("shot.blend");
    make_scene(&scene);
    let renders = tmp.path().join("renders");
    let farm = Farm::up(tmp.path(), 2);

    // Twelve frames in tasks of three, so each task reports progress between frames.
    let output = format!("{}/shot_####", renders.display());
    let render = farm.submit(&[
        "blender",
        scene.to_str().unwrap(),
        "--frames",
        "1-12",
        "--batch",
        "3",
        "--output",
        &output,
        "--samples",
        "4",
        "--engine",
        "CYCLES",
    ]);
    // The movie waits for the render.
    let input = format!("{}/shot_####.png", renders.display());
    let movie = renders.join("shot.mp4");
    let encode = farm.submit(&[
        "ffmpeg",
        "--input",
        &input,
        "--output",
        movie.to_str().unwrap(),
        "--fps",
        "24",
        "--frames",
        "1-12",
        "--after",
        &render.to_string(),
    ]);

    // Progress of the render's tasks, sampled while they run.
    let mut partial = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        for task in farm.tasks(render) {
            let progress = task["progress"].as_f64().unwrap_or(0.0);
            if progress > 0.0 && progress < 1.0 {
                partial.insert((progress * 1000.0) as u64);
            }
        }
        let (_, job) = farm.get(&format!("/api/v1/jobs/{render}"));
        if job["state"] != "queued" && job["state"] != "running" {
            break;
        }
        assert!(
            Instant::now() < end,
            "render not finished: {job}\n{}",
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let job = farm.wait_job(render, Duration::from_secs(60));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    assert_eq!(job["jobtype"], "blender");
    assert_eq!(job["jobtype_version"], 1);
    assert!(
        !partial.is_empty(),
        "no task reported progress between 0 and 1"
    );

    // Twelve distinct frames, each listed with its frame number and size.
    let (status, outputs) = farm.get(&format!("/api/v1/jobs/{render}/outputs"));
    assert_eq!(status, 200, "{outputs}");
    let outputs = outputs.as_array().unwrap();
    let frames: BTreeSet<i64> = outputs
        .iter()
        .map(|o| o["frame"].as_i64().unwrap())
        .collect();
    assert_eq!(frames, (1..=12).collect());
    let paths: BTreeSet<&str> = outputs
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 12);
    for output in outputs {
        let path = Path::new(output["path"].as_str().unwrap());
        assert!(path.starts_with(&renders), "{output}");
        let size = std::fs::metadata(path).unwrap().len();
        assert_eq!(output["size"].as_u64(), Some(size));
        assert!(output["preview"].as_bool().unwrap(), "{output}");
        let png = std::fs::read(path).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
    // A preview of every frame, served by the master.
    for frame in 1..=12 {
        let (status, bytes) = preview(&farm, render, frame);
        assert_eq!(status, 200, "frame {frame}");
        assert_eq!(&bytes[..2], &[0xFF, 0xD8], "frame {frame}: a JPEG");
    }
    let (status, _) = preview(&farm, render, 13);
    assert_eq!(status, 404);

    // The movie: one task over the whole range, 12 frames in it.
    let job = farm.wait_job(encode, Duration::from_secs(120));
    assert_eq!(job["state"], "done", "{job}\n{}", farm.logs());
    let tasks = farm.tasks(encode);
    assert_eq!(tasks.len(), 1);
    assert_eq!(movie_frames(&movie), 12);
    // It started only once the render was done.
    let render_end = farm.get(&format!("/api/v1/jobs/{render}")).1["finished_at"].clone();
    let encode_start = tasks[0]["started_at"].clone();
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{v}: {e}"))
    };
    assert!(
        parse(&encode_start) >= parse(&render_end),
        "{encode_start} < {render_end}"
    );
    let (_, outputs) = farm.get(&format!("/api/v1/jobs/{encode}/outputs"));
    assert_eq!(outputs[0]["path"], movie.to_str().unwrap(), "{outputs}");

    // `furrow outputs` lists the same files.
    let out = farm.cli(&["outputs", &render.to_string()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shot_0007.png") && text.contains("12 file(s)"),
        "{text}"
    );
}

#[test]
fn missing_scenes_and_frames_fail_with_the_tools_own_words() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = Farm::up(tmp.path(), 1);
    // Relative paths on the command line are the submitter's: made absolute.
    let out = farm.cli_in(
        tmp.path(),
        &[
            "submit",
            "blender",
            "no-such-shot.blend",
            "--frames",
            "1",
            "--output",
            "x_####",
            "--retries",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let render: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let (_, job) = farm.get(&format!("/api/v1/jobs/{render}"));
    let dir = std::path::absolute(tmp.path()).unwrap();
    assert_eq!(
        job["params"]["scene"],
        Value::from(dir.join("no-such-shot.blend").to_str().unwrap()),
        "{job}"
    );
    let job = farm.wait_job(render, Duration::from_secs(120));
    assert_eq!(job["state"], "failed", "{job}");
    let task = &farm.tasks(render)[0];
    let error = task["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Cannot read file") && error.contains("no-such-shot.blend"),
        "{task}"
    );
    // Retried exactly as configured: two attempts.
    let (_, attempts) = farm.get(&format!(
        "/api/v1/jobs/{render}/tasks/{}/attempts",
        task["id"]
    ));
    assert_eq!(attempts.as_array().unwrap().len(), 2, "{attempts}");

    // ffmpeg refuses a sequence with holes before it starts.
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for frame in [1, 2, 4] {
        std::fs::write(frames.join(format!("f_{frame:04}.png")), b"x").unwrap();
    }
    let input = format!("{}/f_####.png", frames.display());
    let encode = farm.submit(&[
        "ffmpeg",
        "--input",
        &input,
        "--output",
        tmp.path().join("f.mp4").to_str().unwrap(),
        "--frames",
        "1-5",
    ]);
    let job = farm.wait_job(encode, Duration::from_secs(60));
    assert_eq!(job["state"], "failed");
    let error = farm.tasks(encode)[0]["last_error"].clone();
    assert!(
        error
            .as_str()
            .unwrap_or_default()
            .contains("input frames missing: 3, 5"),
        "{error}"
    );

    // Bad parameters never reach an agent: a 400 naming the parameter.
    let (status, answer) = farm.post(
        "/api/v1/jobs/",
        &serde_json::json!({"title": "t", "jobtype": "blender", "frames": "1",
                            "params": {"scene": "/s.blend", "output": "/r/x", "samples": 0}}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"],
        Value::from("params.samples: it must be at least 1, got 0")
    );
}

fn preview(farm: &Farm, job: i64, frame: i64) -> (u16, Vec<u8>) {
    let url = format!(
        "http://{}/api/v1/jobs/{job}/outputs/{frame}/preview",
        farm.http
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .header("authorization", &farm.bearer())
        .call()
        .expect("GET preview");
    let status = response.status().as_u16();
    let bytes = response.body_mut().read_to_vec().unwrap_or_default();
    (status, bytes)
}
