//! Opening bundles: real example bundles come out checked; broken ones are rejected with
//! one line that names what to fix.

mod common;

use common::{
    INI_SPEC, PYTHON_MANIFEST, TarEntry, YAML_SPEC, python_zip, static_site_tar_gz, tar_gz, zip,
};
use furrow_deploy::{
    ArchiveFormat, Bundle, BundleError, Listen, ListenKind, Manifest, ManifestError, SpecFormat,
    sha256_hex,
};

#[test]
fn a_python_app_with_a_yaml_spec_opens() {
    let bytes = python_zip(Some(("config.spec.yaml", YAML_SPEC)));
    let bundle = Bundle::from_bytes(&bytes).unwrap();
    assert_eq!((bundle.name(), bundle.version()), ("hello", "1.0.0"));
    assert_eq!(bundle.digest(), sha256_hex(&mut &bytes[..]).unwrap());
    assert_eq!(bundle.format(), ArchiveFormat::Zip);
    assert!(bundle.root().join("src/app.py").is_file());
    let web = &bundle.manifest().processes["web"];
    assert_eq!(web.listen, ListenKind::Port);
    assert_eq!(web.instances, 2);
    assert_eq!(web.stop_grace, std::time::Duration::from_secs(5));
    assert_eq!(
        web.command_for(&Listen::Port(8123)),
        ["python3", "src/app.py", "--port", "8123"]
    );
    let mount = bundle.manifest().mount.as_ref().unwrap();
    assert_eq!(
        mount.static_routes(),
        [("/hello/static".to_string(), "static".to_string())]
    );
    let spec = bundle.spec().unwrap();
    assert_eq!(spec.format(), SpecFormat::Yaml);
    assert_eq!(spec.fields().count(), 3);
}

#[test]
fn a_python_app_with_an_ini_spec_opens() {
    let bundle = Bundle::from_bytes(&python_zip(Some(("config.spec.ini", INI_SPEC)))).unwrap();
    let spec = bundle.spec().unwrap();
    assert_eq!(spec.format(), SpecFormat::Ini);
    assert_eq!(spec.field("workers").unwrap().section(), Some("advanced"));
}

#[test]
fn a_static_site_without_processes_or_spec_opens_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.bundle");
    std::fs::write(&path, static_site_tar_gz()).unwrap();
    let bundle = Bundle::open(&path).unwrap();
    assert_eq!(bundle.format(), ArchiveFormat::TarGz);
    assert!(bundle.manifest().processes.is_empty());
    assert!(bundle.spec().is_none());
    let mount = bundle.manifest().mount.as_ref().unwrap();
    assert_eq!(
        mount.static_routes(),
        [("/site/public".to_string(), "public".to_string())]
    );
    let root = bundle.root().to_path_buf();
    drop(bundle);
    assert!(!root.exists(), "the staging directory goes with the bundle");
}

fn rejected(bytes: &[u8]) -> String {
    let error = Bundle::from_bytes(bytes).unwrap_err();
    let line = error.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[test]
fn a_manifest_inside_a_folder_is_named_in_the_rejection() {
    let line = rejected(&zip(&[(
        "hello/furrow-app.yaml",
        PYTHON_MANIFEST.as_bytes(),
        0o644,
    )]));
    assert!(line.contains("hello/furrow-app.yaml"), "{line}");
}

#[test]
fn a_missing_static_directory_is_named() {
    let manifest = "name: site\nversion: '1'\nmount: {path: /s, static: {assets: public}}\n";
    let line = rejected(&tar_gz(&[TarEntry::File(
        "furrow-app.yaml",
        manifest.as_bytes(),
        0o644,
    )]));
    assert_eq!(
        line,
        "furrow-app.yaml: mount.static.assets: \"public\" is not a directory in the bundle"
    );
}

#[test]
fn two_specs_or_a_bad_spec_are_rejected() {
    let manifest = b"name: a\nversion: '1'\n";
    let both = zip(&[
        ("furrow-app.yaml", manifest, 0o644),
        ("config.spec.yaml", b"fields: {}\n", 0o644),
        ("config.spec.ini", b"", 0o644),
    ]);
    assert!(matches!(
        Bundle::from_bytes(&both).unwrap_err(),
        BundleError::TwoSpecs
    ));
    let bad = zip(&[
        ("furrow-app.yaml", manifest, 0o644),
        (
            "config.spec.yaml",
            b"fields: {n: {type: int, min: 3, max: 1}}\n",
            0o644,
        ),
    ]);
    let line = rejected(&bad);
    assert!(line.contains("n.min"), "{line}");
}

#[test]
fn hostile_archives_are_rejected_as_bundles_too() {
    let line = rejected(&tar_gz(&[TarEntry::File(
        "../furrow-app.yaml",
        b"x",
        0o644,
    )]));
    assert!(line.starts_with("bundle archive: "), "{line}");
}

fn manifest_error(text: &str) -> String {
    Manifest::parse(text).unwrap_err().to_string()
}

#[test]
fn manifest_syntax_errors_name_the_key_path() {
    let wrong_type = "name: a\nversion: '1'\nprocesses:\n  web:\n    command: [x]\n    listen: port\n    instances: two\n";
    let message = manifest_error(wrong_type);
    assert!(
        message.starts_with(
            "furrow-app.yaml: processes.web.instances: invalid type: string \"two\", expected u32"
        ),
        "{message}"
    );
    let unknown = manifest_error(
        "name: a\nversion: '1'\nprocesses:\n  web: {command: [x], listen: port, colour: red}\n",
    );
    assert!(
        message_has(
            &unknown,
            &["processes.web.colour", "unknown field `colour`"]
        ),
        "{unknown}"
    );
    let missing = manifest_error("version: '1'\n");
    assert!(
        message_has(&missing, &["missing field `name`"]),
        "{missing}"
    );
    let duration = manifest_error("name: a\nversion: '1'\nhooks: {timeout: soon}\n");
    assert!(
        message_has(&duration, &["hooks.timeout", "expected a duration"]),
        "{duration}"
    );
}

fn message_has(message: &str, parts: &[&str]) -> bool {
    parts.iter().all(|part| message.contains(part))
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"
name: Bad Name
version: ""
processes:
  web:
    command: ["serve", "{socket}"]
    listen: port
    instances: 0
    health: healthz
  worker:
    command: []
    listen: none
mount:
  path: hello/../x
  process: worker
  static: {"/s": "/etc"}
writable: [ok, "a/b", ok]
dependencies: {local: ../deps}
recurrent: [{name: tick, every: 0s, command: [x, "{port}"]}]
"#;
    let Err(ManifestError::Invalid(problems)) = Manifest::parse(text) else {
        panic!("expected Invalid")
    };
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "name",
            "version",
            "processes.web.command",
            "processes.web.instances",
            "processes.web.health",
            "processes.worker.command",
            "mount.path",
            "mount.process",
            "mount.static./s",
            "writable[1]",
            "writable[2]",
            "dependencies.local",
            "recurrent[0].every",
            "recurrent[0].command",
        ]
    );
    assert!(problems[2].message.contains("{socket}"), "{}", problems[2]);
    assert!(
        problems[7].message.contains("listen: none"),
        "{}",
        problems[7]
    );
}

#[test]
fn a_process_may_listen_without_a_placeholder_and_take_port_from_the_environment() {
    let text = "name: a\nversion: '1'\nprocesses:\n  web: {command: [serve], listen: port}\nmount: {path: /, process: web}\n";
    let manifest = Manifest::parse(text).unwrap();
    assert_eq!(manifest.processes["web"].instances, 1);
    assert_eq!(manifest.hooks.timeout, furrow_deploy::DEFAULT_HOOK_TIMEOUT);
}

#[test]
fn stop_signals_by_name_with_or_without_sig() {
    let text = "name: a\nversion: '1'\nprocesses:\n  web: {command: [serve], listen: none, stop_signal: SIGQUIT}\n";
    let manifest = Manifest::parse(text).unwrap();
    assert_eq!(
        manifest.processes["web"].stop_signal,
        furrow_deploy::StopSignal::Quit
    );
    assert_eq!(
        manifest.processes["web"].stop_signal.as_raw(),
        libc::SIGQUIT
    );
    let message = manifest_error(&text.replace("SIGQUIT", "STOP"));
    assert!(
        message_has(
            &message,
            &["processes.web.stop_signal", "unknown signal \"STOP\""]
        ),
        "{message}"
    );
}
