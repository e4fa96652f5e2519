//! Releases on an agent: install, switch, prune, the environment, and hooks that fail or
//! run past their time limit.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{APP_PY, TarEntry, YAML_SPEC, python_zip, tar_gz};
use furrow_deploy::{AppHome, Bundle, Config, HookEvent, Listen, ReleaseError};
use serde_json::json;

struct Agent {
    _dir: tempfile::TempDir,
    apps: PathBuf,
    shared_deps: PathBuf,
}

fn agent() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps");
    let shared_deps = dir.path().join("shared-deps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::create_dir_all(&shared_deps).unwrap();
    Agent {
        _dir: dir,
        apps,
        shared_deps,
    }
}

impl Agent {
    fn home(&self, app: &str) -> AppHome {
        AppHome::open(&self.apps, app, &self.shared_deps).unwrap()
    }
}

fn python_bundle() -> Bundle {
    Bundle::from_bytes(&python_zip(Some(("config.spec.yaml", YAML_SPEC)))).unwrap()
}

fn config(bundle: &Bundle, values: serde_json::Value) -> Config {
    let serde_json::Value::Object(map) = values else {
        panic!("an object")
    };
    bundle.spec().unwrap().validate(&map).unwrap()
}

/// A bundle named `name` whose hooks are these `sh -c` scripts.
fn hook_bundle(name: &str, hooks: &str) -> Bundle {
    let manifest = format!("name: {name}\nversion: '1'\nwritable: [data]\nhooks:\n{hooks}");
    Bundle::from_bytes(&tar_gz(&[
        TarEntry::File("furrow-app.yaml", manifest.as_bytes(), 0o644),
        TarEntry::File("src/app.py", APP_PY, 0o755),
    ]))
    .unwrap()
}

#[test]
fn install_lays_out_an_immutable_release_with_its_config() {
    let agent = agent();
    let home = agent.home("hello");
    let bundle = python_bundle();
    let release = home
        .install(
            1,
            &bundle,
            &config(&bundle, json!({"secret_key": "k", "workers": 3})),
        )
        .unwrap();
    assert_eq!(release.dir, home.dir().join("releases/1"));
    assert!(release.dir.join("src/app.py").is_file());
    assert!(release.dir.join("deps/helper.py").is_file());
    assert!(
        home.dir().join("shared/sessions").is_dir() && home.dir().join("shared/cache").is_dir()
    );
    assert!(home.dir().join("tmp").is_dir());
    // The config is in the spec's format, complete, and private.
    let text = std::fs::read_to_string(&release.config_file).unwrap();
    assert!(
        text.contains("workers: 3")
            && text.contains("greeting: hello")
            && text.contains("secret_key: k"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&release.config_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o400
    );
    // Nothing is writable by group or others, files by no one; the executable bit stays.
    let app_mode = std::fs::metadata(release.dir.join("src/app.py"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(app_mode, 0o555);
    let dir_mode = std::fs::metadata(release.dir.join("src"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode & 0o022, 0);
    // The post_install hook ran with the release as its working directory.
    assert_eq!(
        std::fs::read_to_string(home.dir().join("logs/post_install.log")).unwrap(),
        "installed\n"
    );
    // Not current until switched.
    assert_eq!(home.current().unwrap(), None);
    let again = home
        .install(1, &bundle, &config(&bundle, json!({})))
        .unwrap_err();
    assert!(matches!(again, ReleaseError::ReleaseExists(1)), "{again}");
}

#[test]
fn the_environment_names_every_app_directory() {
    let agent = agent();
    std::fs::create_dir_all(agent.shared_deps.join("numpy/bin")).unwrap();
    let manifest = "name: envy\nversion: '1'\ndependencies: {shared: [numpy], local: deps}\n";
    let bundle = Bundle::from_bytes(&tar_gz(&[
        TarEntry::File("furrow-app.yaml", manifest.as_bytes(), 0o644),
        TarEntry::Dir("deps/bin/"),
    ]))
    .unwrap();
    let home = agent.home("envy");
    home.install(4, &bundle, &Config::empty()).unwrap();
    let env = home.environment(4, &Listen::Port(8001)).unwrap();
    let release = home.dir().join("releases/4");
    let text = |path: &Path| path.to_str().unwrap().to_string();
    assert_eq!(env["FURROW_APP_NAME"], "envy");
    assert_eq!(env["FURROW_APP_RELEASE"], "4");
    assert_eq!(env["PORT"], "8001");
    assert_eq!(
        env["FURROW_APP_CONFIG_FILE"],
        text(&release.join(".furrow/config.yaml"))
    );
    assert_eq!(env["FURROW_APP_TMP_PATH"], text(&home.dir().join("tmp")));
    assert_eq!(env["FURROW_APP_DATA_DIR"], text(&home.dir().join("shared")));
    assert_eq!(
        env["PYTHONPATH"],
        format!(
            "{}:{}",
            text(&release.join("deps")),
            text(&agent.shared_deps.join("numpy"))
        )
    );
    assert!(env["PATH"].starts_with(&format!(
        "{}:{}:",
        text(&release.join("deps/bin")),
        text(&agent.shared_deps.join("numpy/bin"))
    )));
    let socket = home
        .environment(4, &Listen::Socket("/run/app.sock".into()))
        .unwrap();
    assert_eq!(socket["FURROW_APP_SOCKET"], "/run/app.sock");
    assert!(!socket.contains_key("PORT"));
}

#[test]
fn a_missing_shared_dependency_fails_the_install() {
    let agent = agent();
    let manifest = "name: needy\nversion: '1'\ndependencies: {shared: [pandas]}\n";
    let bundle = Bundle::from_bytes(&tar_gz(&[TarEntry::File(
        "furrow-app.yaml",
        manifest.as_bytes(),
        0o644,
    )]))
    .unwrap();
    let home = agent.home("needy");
    let error = home.install(1, &bundle, &Config::empty()).unwrap_err();
    assert!(
        matches!(error, ReleaseError::MissingSharedDependency { ref name, .. } if name == "pandas"),
        "{error}"
    );
    assert!(error.to_string().contains("pandas"));
    assert!(home.releases().unwrap().is_empty());
}

#[test]
fn a_bundle_for_another_app_or_a_foreign_config_is_refused() {
    let agent = agent();
    let bundle = python_bundle();
    let error = agent
        .home("other")
        .install(1, &bundle, &Config::empty())
        .unwrap_err();
    assert!(matches!(error, ReleaseError::WrongApp { .. }), "{error}");
    let spec_less = hook_bundle("plain", "  post_install: []\n");
    let foreign = config(&bundle, json!({"workers": 2}));
    let error = agent
        .home("plain")
        .install(1, &spec_less, &foreign)
        .unwrap_err();
    assert!(matches!(error, ReleaseError::Config(_)), "{error}");
}

#[test]
fn switching_is_atomic_and_prune_keeps_five_plus_current_and_previous() {
    let agent = agent();
    let home = agent.home("hello");
    let bundle = python_bundle();
    let values = config(&bundle, json!({}));
    for number in 1..=8 {
        home.install(number, &bundle, &values).unwrap();
    }
    home.switch(2).unwrap();
    home.switch(3).unwrap();
    assert_eq!(home.current().unwrap(), Some(3));
    assert_eq!(home.previous().unwrap(), Some(2));
    assert_eq!(
        std::fs::read_link(home.dir().join("current")).unwrap(),
        Path::new("releases/3")
    );
    assert!(home.dir().join("current/src/app.py").is_file());
    let removed = home.prune(furrow_deploy::KEEP_RELEASES).unwrap();
    assert_eq!(removed, [1]);
    assert_eq!(home.releases().unwrap(), [2, 3, 4, 5, 6, 7, 8]);
    home.switch(8).unwrap();
    assert_eq!(home.prune(5).unwrap(), [2]);
    assert_eq!(home.releases().unwrap(), [3, 4, 5, 6, 7, 8]);
    assert_eq!(home.prune(5).unwrap(), Vec::<u32>::new());
    assert!(matches!(
        home.switch(42).unwrap_err(),
        ReleaseError::NoSuchRelease(42)
    ));
    // Leftover temporary links do not exist after switching.
    let leftovers = std::fs::read_dir(home.dir()).unwrap().filter(|entry| {
        entry
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")
    });
    assert_eq!(leftovers.count(), 0);
}

#[test]
fn update_hooks_run_around_the_switch_and_a_failing_pre_update_keeps_the_old_release() {
    let agent = agent();
    let home = agent.home("hooks");
    let ok = hook_bundle(
        "hooks",
        "  pre_update: [[sh, -c, 'echo pre $FURROW_APP_RELEASE >> $FURROW_APP_DATA_DIR/data/trace']]\n  post_update: [[sh, -c, 'echo post $FURROW_APP_RELEASE >> $FURROW_APP_DATA_DIR/data/trace']]\n",
    );
    home.install(1, &ok, &Config::empty()).unwrap();
    home.install(2, &ok, &Config::empty()).unwrap();
    home.switch(1).unwrap();
    home.switch(2).unwrap();
    let trace = std::fs::read_to_string(home.data_dir().join("data/trace")).unwrap();
    assert_eq!(trace, "pre 2\npost 2\n");

    let failing = hook_bundle(
        "hooks",
        "  pre_update: [[sh, -c, 'echo migrating; echo broken >&2; exit 3']]\n",
    );
    home.install(3, &failing, &Config::empty()).unwrap();
    let error = home.switch(3).unwrap_err();
    let ReleaseError::HookFailed {
        ref status,
        ref output,
        ..
    } = error
    else {
        panic!("{error}")
    };
    assert_eq!(status, "exit status 3");
    assert_eq!(output, "migrating\nbroken");
    assert!(
        error.to_string().contains("pre_update hook `sh -c"),
        "{error}"
    );
    assert_eq!(home.current().unwrap(), Some(2));
}

#[test]
fn a_failing_post_install_leaves_no_release() {
    let agent = agent();
    let home = agent.home("broken");
    let bundle = hook_bundle(
        "broken",
        "  post_install: [[sh, -c, 'exit 0'], [sh, -c, 'echo nope; exit 1'], [sh, -c, 'touch never']]\n",
    );
    let error = home.install(1, &bundle, &Config::empty()).unwrap_err();
    assert!(
        matches!(error, ReleaseError::HookFailed { ref output, .. } if output == "nope"),
        "{error}"
    );
    assert!(home.releases().unwrap().is_empty());
    assert!(!home.dir().join("releases/1").exists());
}

/// Processes of a process group that are still alive (zombies do not count: they have
/// ended, and who reaps them depends on the machine's init).
fn live_members(group: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2
            && fields[2] == group.to_string()
            && fields[0] != "Z"
            && fields[0] != "X"
        {
            members.push(pid);
        }
    }
    members
}

#[test]
fn a_hook_past_its_time_limit_is_killed_with_its_whole_process_group() {
    let agent = agent();
    let home = agent.home("slow");
    let bundle = hook_bundle(
        "slow",
        "  timeout: 1s\n  pre_delete: [[sh, -c, 'echo $$ > $FURROW_APP_TMP_PATH/group; echo started; sleep 30 & sleep 30']]\n",
    );
    home.install(1, &bundle, &Config::empty()).unwrap();
    home.switch(1).unwrap();
    let started = Instant::now();
    let error = home.run_hook(1, HookEvent::PreDelete).unwrap_err();
    let elapsed = started.elapsed();
    let ReleaseError::HookTimedOut {
        limit, ref output, ..
    } = error
    else {
        panic!("{error}")
    };
    assert_eq!(limit, Duration::from_secs(1));
    assert_eq!(output, "started");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    let group: i32 = std::fs::read_to_string(home.tmp_dir().join("group"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        live_members(group),
        Vec::<i32>::new(),
        "the hook's process group is gone"
    );
    // A failing pre_delete stops the removal.
    let dir = home.dir().to_path_buf();
    let home_again = agent.home("slow");
    assert!(matches!(
        home_again.remove().unwrap_err(),
        ReleaseError::HookTimedOut { .. }
    ));
    assert!(dir.exists());
}

#[test]
fn remove_runs_pre_delete_then_deletes_everything() {
    let agent = agent();
    let home = agent.home("gone");
    let marker = agent.shared_deps.join("deleted-marker");
    let bundle = hook_bundle(
        "gone",
        &format!(
            "  pre_delete: [[sh, -c, 'echo $FURROW_APP_NAME > {}']]\n",
            marker.display()
        ),
    );
    home.install(1, &bundle, &Config::empty()).unwrap();
    home.switch(1).unwrap();
    let dir = home.dir().to_path_buf();
    home.remove().unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "gone\n");
    assert!(!dir.exists());
}

#[test]
fn app_names_are_checked() {
    let agent = agent();
    let error = AppHome::open(&agent.apps, "../etc", &agent.shared_deps).unwrap_err();
    assert!(matches!(error, ReleaseError::InvalidAppName(_)), "{error}");
}

#[test]
fn a_hook_that_cannot_start_names_its_command() {
    let agent = agent();
    let home = agent.home("nostart");
    let bundle = hook_bundle(
        "nostart",
        "  post_install: [[no-such-program-furrow, --flag]]\n",
    );
    let error = home.install(1, &bundle, &Config::empty()).unwrap_err();
    assert!(matches!(error, ReleaseError::HookSpawn { .. }), "{error}");
    assert!(
        error.to_string().contains("no-such-program-furrow --flag"),
        "{error}"
    );
}
