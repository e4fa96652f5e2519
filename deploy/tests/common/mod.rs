//! Archives built in memory for the tests: honest bundles and hostile ones.

#![allow(dead_code)] // each test file uses part of the helpers

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};
use zip::write::SimpleFileOptions;

/// One entry of a tar built by [`tar_gz`], written raw so that hostile names survive.
pub enum TarEntry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Device(&'a str, EntryType),
}

fn raw_header(path: &str, entry_type: EntryType, size: u64, mode: u32, link: &str) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    let old = header.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    header
}

/// A .tar.gz with exactly these entries, names and link targets unchecked.
pub fn tar_gz(entries: &[TarEntry]) -> Vec<u8> {
    let encoder = GzEncoder::new(Vec::new(), Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        let (header, data): (Header, &[u8]) = match entry {
            TarEntry::File(path, data, mode) => (
                raw_header(path, EntryType::Regular, data.len() as u64, *mode, ""),
                data,
            ),
            TarEntry::Dir(path) => (raw_header(path, EntryType::Directory, 0, 0o755, ""), &[]),
            TarEntry::Symlink(path, target) => {
                (raw_header(path, EntryType::Symlink, 0, 0o777, target), &[])
            }
            TarEntry::HardLink(path, target) => {
                (raw_header(path, EntryType::Link, 0, 0o644, target), &[])
            }
            TarEntry::Device(path, kind) => (raw_header(path, *kind, 0, 0o644, ""), &[]),
        };
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A .zip with these files (path, contents, unix mode); a path ending in `/` is a directory.
pub fn zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, data, mode) in files {
        let options = SimpleFileOptions::default().unix_permissions(*mode);
        if path.ends_with('/') {
            writer.add_directory(*path, options).unwrap();
        } else {
            writer.start_file(*path, options).unwrap();
            writer.write_all(data).unwrap();
        }
    }
    writer.finish().unwrap().into_inner()
}

/// The manifest, spec and sources of a small Python web app.
pub const PYTHON_MANIFEST: &str = r#"
name: hello
version: 1.0.0
processes:
  web:
    command: ["python3", "src/app.py", "--port", "{port}"]
    listen: port
    instances: 2
    health: /healthz
    stop_grace: 5s
mount:
  path: /hello
  process: web
  static: {"/hello/static": "static"}
writable: [sessions, cache]
dependencies: {local: deps}
hooks:
  post_install: [["sh", "-c", "echo installed"]]
recurrent: [{name: cleanup, every: 1h, command: ["python3", "src/cleanup.py"]}]
"#;

pub const YAML_SPEC: &str = r#"
fields:
  greeting: {type: string, required: true, default: hello, regex: "^[A-Za-z ]+$", message: letters and spaces only, help: What the app says}
  workers: {type: int, min: 1, max: 8, default: 2}
  secret_key: {type: secret}
sections: {advanced: [workers]}
"#;

pub const INI_SPEC: &str = "[greeting]\ntype = string\ndefault = hello\n\n[workers]\ntype = int\nmin = 1\nmax = 8\ndefault = 2\n\n[secret_key]\ntype = secret\n\n[sections]\nadvanced = workers\n";

pub const APP_PY: &[u8] = b"import sys\nprint('hello from', sys.argv)\n";

/// The Python app as a .zip, with the given spec file (name and text), if any.
pub fn python_zip(spec: Option<(&str, &str)>) -> Vec<u8> {
    let mut files: Vec<(&str, &[u8], u32)> = vec![
        ("furrow-app.yaml", PYTHON_MANIFEST.as_bytes(), 0o644),
        ("src/app.py", APP_PY, 0o755),
        ("src/cleanup.py", b"print('clean')\n", 0o644),
        ("static/", b"", 0o755),
        ("static/style.css", b"body {}\n", 0o644),
        ("deps/", b"", 0o755),
        ("deps/helper.py", b"X = 1\n", 0o644),
    ];
    if let Some((name, text)) = spec {
        files.push((name, text.as_bytes(), 0o644));
    }
    zip(&files)
}

/// A static site: files and a mount, no processes.
pub fn static_site_tar_gz() -> Vec<u8> {
    let manifest =
        b"name: site\nversion: '2'\nmount:\n  path: /site\n  static: {\"public\": \"public\"}\n";
    tar_gz(&[
        TarEntry::File("furrow-app.yaml", manifest, 0o644),
        TarEntry::Dir("public/"),
        TarEntry::File("public/index.html", b"<h1>hi</h1>", 0o644),
        TarEntry::Symlink("public/home.html", "index.html"),
    ])
}
