//! Extraction of untrusted archives: honest bundles come out intact; hostile ones are
//! refused naming the entry, without writing outside the destination.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use common::{TarEntry, tar_gz, zip};
use furrow_deploy::{ArchiveError, ArchiveFormat, Limits, extract_bytes, extract_file, sha256_hex};
use tar::EntryType;

fn extract(
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    Result<furrow_deploy::Extracted, ArchiveError>,
) {
    extract_with(bytes, &Limits::default())
}

fn extract_with(
    bytes: &[u8],
    limits: &Limits,
) -> (
    tempfile::TempDir,
    Result<furrow_deploy::Extracted, ArchiveError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let result = extract_bytes(bytes, &dir.path().join("out"), limits);
    (dir, result)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn an_honest_zip_comes_out_with_modes_normalised_and_its_digest() {
    let bytes = zip(&[
        ("run.sh", b"#!/bin/sh\necho hi\n", 0o4777),
        ("data/file.txt", b"text", 0o666),
        ("empty/", b"", 0o755),
    ]);
    let (dir, result) = extract(&bytes);
    let extracted = result.unwrap();
    let out = dir.path().join("out");
    assert_eq!(extracted.format, ArchiveFormat::Zip);
    assert_eq!(extracted.digest, sha256_hex(&mut &bytes[..]).unwrap());
    assert_eq!(extracted.entries, 3);
    assert_eq!(std::fs::read(out.join("data/file.txt")).unwrap(), b"text");
    // setuid and world-write dropped, the executable bit kept.
    assert_eq!(mode(&out.join("run.sh")), 0o755);
    assert_eq!(mode(&out.join("data/file.txt")), 0o644);
    assert!(out.join("empty").is_dir());
}

#[test]
fn an_honest_tar_gz_from_a_file_keeps_internal_links() {
    let bytes = tar_gz(&[
        TarEntry::Dir("./"),
        TarEntry::File("bin/tool", b"#!/bin/sh\n", 0o6755),
        TarEntry::Symlink("lib/current", "../bin"),
        TarEntry::HardLink("bin/tool2", "bin/tool"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bundle.zip"); // the name lies; the content decides
    std::fs::write(&archive, &bytes).unwrap();
    let out = dir.path().join("out");
    let extracted = extract_file(&archive, &out, &Limits::default()).unwrap();
    assert_eq!(extracted.format, ArchiveFormat::TarGz);
    assert_eq!(extracted.digest, sha256_hex(&mut &bytes[..]).unwrap());
    assert_eq!(mode(&out.join("bin/tool")), 0o755);
    assert_eq!(
        std::fs::read_link(out.join("lib/current")).unwrap(),
        Path::new("../bin")
    );
    assert_eq!(
        std::fs::read(out.join("bin/tool2")).unwrap(),
        b"#!/bin/sh\n"
    );
}

fn assert_refused(result: Result<furrow_deploy::Extracted, ArchiveError>, entry: &str, out: &Path) {
    let error = result.unwrap_err();
    assert!(
        error.to_string().contains(entry),
        "{error} should name {entry}"
    );
    assert!(!out.exists(), "a refused extraction leaves nothing behind");
}

#[test]
fn parent_paths_are_refused_in_both_formats() {
    let (dir, result) = extract(&zip(&[
        ("ok.txt", b"1", 0o644),
        ("../evil.txt", b"x", 0o644),
    ]));
    assert_refused(result, "../evil.txt", &dir.path().join("out"));
    assert!(!dir.path().join("evil.txt").exists());
    let (dir, result) = extract(&tar_gz(&[TarEntry::File("a/../../evil.txt", b"x", 0o644)]));
    assert_refused(result, "a/../../evil.txt", &dir.path().join("out"));
}

#[test]
fn absolute_paths_are_refused() {
    let (dir, result) = extract(&tar_gz(&[TarEntry::File("/tmp/furrow-evil", b"x", 0o644)]));
    assert_refused(result, "/tmp/furrow-evil", &dir.path().join("out"));
    assert!(!Path::new("/tmp/furrow-evil").exists());
}

#[test]
fn absolute_and_escaping_symlinks_are_refused() {
    let (dir, result) = extract(&tar_gz(&[TarEntry::Symlink("link", "/etc")]));
    let error = result.unwrap_err();
    assert!(matches!(error, ArchiveError::UnsafeLink { .. }), "{error}");
    assert!(error.to_string().contains("link"), "{error}");
    assert!(!dir.path().join("out").exists());
    let (_dir, result) = extract(&tar_gz(&[TarEntry::Symlink("a/up", "../../outside")]));
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::UnsafeLink { .. }
    ));
}

#[test]
fn a_file_through_a_symlink_is_refused_even_when_the_link_points_inside() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside
        .path()
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    // `link -> /tmp/...` then `link/evil`: the link itself is refused first.
    let (_dir, result) = extract(&tar_gz(&[
        TarEntry::Symlink("link", &format!("/{target}")),
        TarEntry::File("link/evil", b"x", 0o644),
    ]));
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::UnsafeLink { .. }
    ));
    // `inner -> sub` is allowed, but nothing is ever written through it.
    let (dir, result) = extract(&tar_gz(&[
        TarEntry::Dir("sub/"),
        TarEntry::Symlink("inner", "sub"),
        TarEntry::File("inner/evil", b"x", 0o644),
    ]));
    assert_refused(result, "inner/evil", &dir.path().join("out"));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn any_symlink_in_a_zip_is_refused() {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .add_symlink("link", "target", zip::write::SimpleFileOptions::default())
        .unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    let (_dir, result) = extract(&bytes);
    let error = result.unwrap_err();
    assert!(error.to_string().contains("\"link\""), "{error}");
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    for (kind, name) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let (dir, result) = extract(&tar_gz(&[TarEntry::Device("dev/null", kind)]));
        let error = result.unwrap_err();
        assert!(matches!(error, ArchiveError::SpecialFile { .. }), "{error}");
        assert!(
            error.to_string().contains(name) && error.to_string().contains("dev/null"),
            "{error}"
        );
        assert!(!dir.path().join("out").exists());
    }
}

#[test]
fn hard_links_must_point_to_an_extracted_file() {
    let (_dir, result) = extract(&tar_gz(&[TarEntry::HardLink("passwd", "/etc/passwd")]));
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::UnsafeLink { .. }
    ));
    let (_dir, result) = extract(&tar_gz(&[TarEntry::HardLink("x", "not-yet")]));
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::UnsafeLink { .. }
    ));
}

#[test]
fn a_hundred_thousand_files_are_refused_by_count_before_writing() {
    let names: Vec<String> = (0..100_000).map(|index| format!("f{index}")).collect();
    let files: Vec<(&str, &[u8], u32)> = names
        .iter()
        .map(|name| (name.as_str(), &b""[..], 0o644))
        .collect();
    let bytes = zip(&files);
    let started = Instant::now();
    let (dir, result) = extract(&bytes);
    let error = result.unwrap_err();
    assert!(
        matches!(error, ArchiveError::TooManyEntries { limit: 10_000 }),
        "{error}"
    );
    assert!(!dir.path().join("out").exists());
    assert!(
        started.elapsed().as_secs() < 10,
        "refusing by count took {:?}",
        started.elapsed()
    );
}

#[test]
fn too_many_tar_entries_are_refused_while_streaming() {
    let names: Vec<String> = (0..30).map(|index| format!("f{index}")).collect();
    let entries: Vec<TarEntry> = names
        .iter()
        .map(|name| TarEntry::File(name, b"", 0o644))
        .collect();
    let limits = Limits {
        max_entries: 20,
        ..Limits::default()
    };
    let (_dir, result) = extract_with(&tar_gz(&entries), &limits);
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::TooManyEntries { limit: 20 }
    ));
}

#[test]
fn a_huge_compressible_file_is_refused_by_bytes_written() {
    let zeros = vec![0u8; 8 << 20];
    let limits = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    let zip_bytes = zip(&[("zeros", &zeros, 0o644)]);
    assert!(
        zip_bytes.len() < 100_000,
        "the bomb compresses well: {}",
        zip_bytes.len()
    );
    let (dir, result) = extract_with(&zip_bytes, &limits);
    let error = result.unwrap_err();
    assert!(matches!(error, ArchiveError::TooLarge { .. }), "{error}");
    assert!(error.to_string().contains("zeros"), "{error}");
    assert!(!dir.path().join("out").exists());
    let (_dir, result) = extract_with(&tar_gz(&[TarEntry::File("zeros", &zeros, 0o644)]), &limits);
    assert!(matches!(result.unwrap_err(), ArchiveError::TooLarge { .. }));
}

#[test]
fn overlong_names_and_duplicates_are_refused() {
    let long = "n".repeat(300);
    let (_dir, result) = extract(&zip(&[(long.as_str(), b"x", 0o644)]));
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::UnsafePath { .. }
    ));
    let (_dir, result) = extract(&tar_gz(&[
        TarEntry::File("a", b"1", 0o644),
        TarEntry::File("a", b"2", 0o644),
    ]));
    assert!(matches!(
        result.unwrap_err(),
        ArchiveError::Duplicate { .. }
    ));
}

#[test]
fn extraction_needs_a_fresh_directory_and_a_real_archive() {
    let dir = tempfile::tempdir().unwrap();
    let error =
        extract_bytes(&zip(&[("a", b"1", 0o644)]), dir.path(), &Limits::default()).unwrap_err();
    assert!(
        matches!(error, ArchiveError::DestinationExists(_)),
        "{error}"
    );
    let (_dir, result) = extract(b"\x1f\x8bnot really gzip");
    assert!(matches!(result.unwrap_err(), ArchiveError::Corrupt(_)));
}
