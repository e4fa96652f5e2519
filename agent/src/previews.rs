//! Preview images of the frames a task produced: a JPEG at most [`WIDTH`] pixels wide,
//! made here and sent to the master, so the dashboard shows frames without a shared
//! filesystem. PNG and JPEG outputs get one; other formats (EXR, movies) do not.

use std::io::Cursor;
use std::path::PathBuf;

use furrow_protocol::{Assignment, OutputFile, Preview};
use image::ImageReader;
use image::codecs::jpeg::JpegEncoder;
use tracing::{debug, warn};

use crate::jobtypes::TaskFiles;

/// Width of a preview, in pixels (smaller images keep their size).
pub(crate) const WIDTH: u32 = 320;
/// Most previews one task sends: its last frames.
const MAX_PER_TASK: usize = 16;
/// Largest image decoded, in pixels per side.
const MAX_SIDE: u32 = 32_768;
/// Most memory one decode may take.
const MAX_ALLOC: u64 = 2 << 30;

/// Whether a file is an image a preview can be made of.
fn is_image(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// Previews of the image outputs that belong to a frame (the last [`MAX_PER_TASK`]).
/// A file that cannot be read or decoded is skipped with a warning: a preview is a
/// convenience, never a reason to fail the task.
pub(crate) async fn make(
    assignment: &Assignment,
    files: &TaskFiles,
    outputs: &[OutputFile],
) -> Vec<Preview> {
    let mut wanted: Vec<(i64, PathBuf)> = outputs
        .iter()
        .filter(|o| is_image(&o.path))
        .filter_map(|o| Some((o.frame?, files.resolve(&o.path))))
        .collect();
    if wanted.len() > MAX_PER_TASK {
        wanted.drain(..wanted.len() - MAX_PER_TASK);
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let (task, job_id) = (assignment.task, assignment.job_id);
    let made = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .filter_map(|(frame, path)| match encode(&path) {
                Ok((width, height, data)) => Some(Preview {
                    task,
                    job_id,
                    frame,
                    mime: "image/jpeg".into(),
                    width,
                    height,
                    data,
                }),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot make a preview");
                    None
                }
            })
            .collect::<Vec<_>>()
    })
    .await;
    match made {
        Ok(previews) => {
            debug!(
                task_id = task.task_id,
                previews = previews.len(),
                "previews made"
            );
            previews
        }
        Err(e) => {
            warn!(error = %e, "preview thread failed");
            Vec::new()
        }
    }
}

/// Decodes an image and encodes its preview: width, height and JPEG bytes.
pub(crate) fn encode(path: &std::path::Path) -> Result<(u32, u32, Vec<u8>), image::ImageError> {
    let mut reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode()?;
    let (w, h) = (image.width().max(1), image.height().max(1));
    let small = if w > WIDTH {
        let height = ((u64::from(h) * u64::from(WIDTH)) / u64::from(w)).max(1) as u32;
        image.thumbnail_exact(WIDTH, height)
    } else {
        image
    };
    let rgb = small.to_rgb8();
    let mut data = Vec::new();
    JpegEncoder::new_with_quality(Cursor::new(&mut data), 80).encode_image(&rgb)?;
    Ok((rgb.width(), rgb.height(), data))
}

#[cfg(test)]
mod tests {
    use image::{Rgba, RgbaImage};

    use super::*;

    #[test]
    fn a_wide_png_becomes_a_320_pixel_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f_0001.png");
        RgbaImage::from_pixel(1280, 720, Rgba([200, 30, 30, 128]))
            .save(&path)
            .unwrap();
        let (w, h, data) = encode(&path).unwrap();
        assert_eq!((w, h), (320, 180));
        assert_eq!(&data[..2], &[0xFF, 0xD8], "a JPEG starts with SOI");
        let back = image::load_from_memory(&data).unwrap();
        assert_eq!((back.width(), back.height()), (320, 180));
    }

    #[test]
    fn small_images_keep_their_size_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.png");
        RgbaImage::from_pixel(64, 48, Rgba([0, 0, 0, 255]))
            .save(&path)
            .unwrap();
        assert_eq!(encode(&path).unwrap().0, 64);
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"not an image").unwrap();
        assert!(encode(&bad).is_err());
        assert!(is_image("/a/B.PNG") && !is_image("/a/b.exr"));
    }
}
