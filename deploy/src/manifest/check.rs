//! The meaning of a manifest that parsed: names, placeholders, references between keys,
//! paths that must stay inside the bundle. Every problem is collected, none stops the check.

use std::collections::HashSet;
use std::path::{Component, Path};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use super::{Health, ListenKind, Manifest};
use crate::problem::Problem;

static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern, compiled by every test run.
    Regex::new("^[a-z0-9][a-z0-9_-]{0,62}$").expect("identifier pattern")
});

static SIMPLE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("simple name pattern")
});

static URL_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$").expect("URL path pattern"));

const IDENTIFIER_RULE: &str =
    "must be 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit";

/// Whether `name` may name an app, a process or a recurrent command.
pub(crate) fn is_identifier(name: &str) -> bool {
    IDENTIFIER.is_match(name)
}

/// Every semantic problem of a manifest, in the order of its keys.
pub(super) fn check(manifest: &Manifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !is_identifier(&manifest.name) {
        problems.push(Problem::new(
            "name",
            format!("{:?} {IDENTIFIER_RULE}", manifest.name),
        ));
    }
    if manifest.version.trim().is_empty() {
        problems.push(Problem::new("version", "must not be empty"));
    }
    check_processes(manifest, &mut problems);
    check_mount(manifest, &mut problems);
    check_writable(manifest, &mut problems);
    check_dependencies(manifest, &mut problems);
    check_hooks(manifest, &mut problems);
    check_recurrent(manifest, &mut problems);
    problems
}

fn check_processes(manifest: &Manifest, problems: &mut Vec<Problem>) {
    for (name, process) in &manifest.processes {
        let at = format!("processes.{name}");
        if !is_identifier(name) {
            problems.push(Problem::new(
                &at,
                format!("process name {name:?} {IDENTIFIER_RULE}"),
            ));
        }
        check_command(
            &format!("{at}.command"),
            &process.command,
            Some(process.listen),
            problems,
        );
        if !(1..=64).contains(&process.instances) {
            problems.push(Problem::new(
                format!("{at}.instances"),
                format!("must be between 1 and 64, got {}", process.instances),
            ));
        }
        match &process.health {
            Some(Health::Http(path)) => {
                if !path.starts_with('/') || !URL_PATH.is_match(path) || has_dot_dot(path) {
                    problems.push(Problem::new(
                        format!("{at}.health"),
                        format!(
                            "{path:?} must be an HTTP path starting with / (or a command as a list)"
                        ),
                    ));
                } else if process.listen == ListenKind::None {
                    problems.push(Problem::new(
                        format!("{at}.health"),
                        "an HTTP health check needs listen: port or listen: socket",
                    ));
                }
            }
            Some(Health::Command(command)) => {
                check_command(&format!("{at}.health"), command, None, problems)
            }
            None => {}
        }
    }
}

/// A command is a non-empty list whose program is not empty; `{port}` and `{socket}` are
/// allowed only in a process that listens on that kind of address.
fn check_command(
    at: &str,
    command: &[String],
    listen: Option<ListenKind>,
    problems: &mut Vec<Problem>,
) {
    match command.first() {
        None => problems.push(Problem::new(
            at,
            "must not be empty: give the program and its arguments",
        )),
        Some(program) if program.trim().is_empty() => problems.push(Problem::new(
            at,
            "the program (first element) must not be empty",
        )),
        Some(_) => {}
    }
    let uses = |placeholder: &str| {
        command
            .iter()
            .any(|argument| argument.contains(placeholder))
    };
    if uses("{port}") && listen != Some(ListenKind::Port) {
        problems.push(Problem::new(
            at,
            "{port} is only given to a process with listen: port",
        ));
    }
    if uses("{socket}") && listen != Some(ListenKind::Socket) {
        problems.push(Problem::new(
            at,
            "{socket} is only given to a process with listen: socket",
        ));
    }
}

fn check_mount(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let Some(mount) = &manifest.mount else { return };
    if !mount.path.starts_with('/') || !URL_PATH.is_match(&mount.path) || has_dot_dot(&mount.path) {
        problems.push(Problem::new(
            "mount.path",
            format!(
                "{:?} must be a URL path starting with /, without '..', spaces, '?' or '#'",
                mount.path
            ),
        ));
    }
    match &mount.process {
        Some(process) => match manifest.processes.get(process) {
            None => problems.push(Problem::new(
                "mount.process",
                format!("names no process: {process:?} is not under processes"),
            )),
            Some(found) if found.listen == ListenKind::None => problems.push(Problem::new(
                "mount.process",
                format!("process {process:?} has listen: none; a mounted process must listen on a port or socket"),
            )),
            Some(_) => {}
        },
        None if mount.static_dirs.is_empty() => problems.push(Problem::new(
            "mount",
            "serves nothing: give mount.process, mount.static or both",
        )),
        None => {}
    }
    for (url, dir) in &mount.static_dirs {
        let at = format!("mount.static.{url}");
        if url.is_empty() || !URL_PATH.is_match(url) || has_dot_dot(url) || url.contains("//") {
            problems.push(Problem::new(
                &at,
                format!(
                    "{url:?} must be a URL path (absolute, or relative to mount.path) without '..'"
                ),
            ));
        }
        if let Err(message) = check_bundle_path(dir) {
            problems.push(Problem::new(&at, message));
        }
    }
}

fn check_writable(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (index, name) in manifest.writable.iter().enumerate() {
        let at = format!("writable[{index}]");
        if !SIMPLE_NAME.is_match(name) || name == "." || name == ".." {
            problems.push(Problem::new(
                &at,
                format!("{name:?} must be a simple directory name (letters, digits, '.', '-', '_'; no '/')"),
            ));
        } else if !seen.insert(name) {
            problems.push(Problem::new(&at, format!("{name:?} is listed twice")));
        }
    }
}

fn check_dependencies(manifest: &Manifest, problems: &mut Vec<Problem>) {
    for (index, name) in manifest.dependencies.shared.iter().enumerate() {
        if !SIMPLE_NAME.is_match(name) || name == "." || name == ".." {
            problems.push(Problem::new(
                format!("dependencies.shared[{index}]"),
                format!("{name:?} must be a simple name of a shared dependency directory"),
            ));
        }
    }
    if let Some(local) = &manifest.dependencies.local
        && let Err(message) = check_bundle_path(local)
    {
        problems.push(Problem::new("dependencies.local", message));
    }
}

fn check_hooks(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let hooks = &manifest.hooks;
    for (event, commands) in [
        ("post_install", &hooks.post_install),
        ("pre_update", &hooks.pre_update),
        ("post_update", &hooks.post_update),
        ("pre_delete", &hooks.pre_delete),
    ] {
        for (index, command) in commands.iter().enumerate() {
            check_command(&format!("hooks.{event}[{index}]"), command, None, problems);
        }
    }
    if hooks.timeout.is_zero() {
        problems.push(Problem::new("hooks.timeout", "must be more than zero"));
    }
}

fn check_recurrent(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (index, recurrent) in manifest.recurrent.iter().enumerate() {
        let at = format!("recurrent[{index}]");
        if !is_identifier(&recurrent.name) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!("{:?} {IDENTIFIER_RULE}", recurrent.name),
            ));
        } else if !seen.insert(&recurrent.name) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!("{:?} is used twice", recurrent.name),
            ));
        }
        if recurrent.every < Duration::from_secs(1) {
            problems.push(Problem::new(format!("{at}.every"), "must be at least 1s"));
        }
        check_command(&format!("{at}.command"), &recurrent.command, None, problems);
    }
}

fn has_dot_dot(url: &str) -> bool {
    url.split('/').any(|segment| segment == "..")
}

/// A path inside the bundle: relative, and without `..`; `.` parts are tolerated.
pub(crate) fn check_bundle_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must name a directory in the bundle, got an empty path".into());
    }
    let components = Path::new(path).components();
    for component in components {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{path:?} must be relative to the bundle's top level, not absolute"
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "{path:?} must stay inside the bundle: '..' is not allowed"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_documented_rule() {
        for good in ["hello", "a", "my-app_2", "0day"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "Hello", "-app", "_app", "a b", "a/b", &"a".repeat(64)] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn bundle_paths_stay_inside() {
        assert!(check_bundle_path("static").is_ok());
        assert!(check_bundle_path("./web/static").is_ok());
        assert!(check_bundle_path("/etc").is_err());
        assert!(check_bundle_path("a/../../b").is_err());
        assert!(check_bundle_path("").is_err());
    }
}
