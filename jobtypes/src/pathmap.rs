//! Path maps: the same storage seen under different prefixes on Linux, Windows and macOS
//! (`/mnt/projects` ↔ `P:\` ↔ `/Volumes/projects`).
//!
//! The master stores the maps; for each assignment it sends the rules that apply to the
//! agent (by its operating system, and by tag when a map names one), and the agent rewrites
//! every string parameter and every argument that starts with a mapped prefix before the
//! command is built. Windows prefixes match case-insensitively with `\` and `/` alike; the
//! rest of a rewritten path takes the separators of the agent's system.

use furrow_protocol::{PathMapSpec, PathRule};
use serde_json::Value;

/// An operating system of path maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
    /// macOS.
    Macos,
}

impl Os {
    /// The system of an agent from the `os` it registered with (`Linux 6.1.0`,
    /// `Darwin 23.1`, `Windows 10`).
    pub fn of_agent(os: &str) -> Option<Os> {
        let first = os.split_whitespace().next()?.to_ascii_lowercase();
        match first.as_str() {
            "linux" => Some(Os::Linux),
            "darwin" | "macos" => Some(Os::Macos),
            "windows" | "windows_nt" => Some(Os::Windows),
            _ => None,
        }
    }

    fn prefix(self, map: &PathMapSpec) -> &str {
        match self {
            Os::Linux => &map.linux,
            Os::Windows => &map.windows,
            Os::Macos => &map.macos,
        }
    }
}

/// Checks a path map: at least two systems given, POSIX prefixes absolute, Windows ones a
/// drive (`P:\`) or a share (`\\server\share`). The message names the field.
pub fn check(map: &PathMapSpec) -> Result<(), String> {
    let given = [&map.linux, &map.windows, &map.macos]
        .iter()
        .filter(|p| !p.is_empty())
        .count();
    if given < 2 {
        return Err(
            "a path map needs the prefix of at least two of linux, windows and macos".into(),
        );
    }
    for (field, prefix) in [("linux", &map.linux), ("macos", &map.macos)] {
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err(format!(
                "{field}: {prefix:?} is not an absolute path (it must start with /)"
            ));
        }
    }
    let w = &map.windows;
    if !w.is_empty() {
        let bytes = w.as_bytes();
        let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
        let share = w.starts_with(r"\\") || w.starts_with("//");
        if !drive && !share {
            return Err(format!(
                r"windows: {w:?} is neither a drive (P:\) nor a share (\\server\share)"
            ));
        }
    }
    for (field, prefix) in [("linux", &map.linux), ("windows", w), ("macos", &map.macos)] {
        if prefix.contains('\0') || prefix.len() > 1024 {
            return Err(format!("{field}: must be at most 1024 bytes, without NUL"));
        }
    }
    if map.tag.len() > 256 {
        return Err("tag: must be at most 256 bytes".into());
    }
    Ok(())
}

/// The rules of `maps` for an agent on `os` with `tags`, longest prefix first.
pub fn rules_for(maps: &[PathMapSpec], os: Os, tags: &[String]) -> Vec<PathRule> {
    let mut rules = Vec::new();
    for map in maps {
        if !map.tag.is_empty() && !tags.contains(&map.tag) {
            continue;
        }
        let to = os.prefix(map);
        if to.is_empty() {
            continue;
        }
        for from_os in [Os::Linux, Os::Windows, Os::Macos] {
            let from = from_os.prefix(map);
            if from_os == os || from.is_empty() || from == to {
                continue;
            }
            rules.push(PathRule {
                from: from.to_string(),
                to: to.to_string(),
                from_windows: from_os == Os::Windows,
                to_windows: os == Os::Windows,
            });
        }
    }
    rules.sort_by(|a, b| {
        b.from
            .len()
            .cmp(&a.from.len())
            .then_with(|| a.from.cmp(&b.from))
    });
    rules
}

fn is_sep(c: char, windows: bool) -> bool {
    c == '/' || (windows && c == '\\')
}

/// `text` rewritten by the first rule whose prefix it starts with, or `None`.
pub fn apply(rules: &[PathRule], text: &str) -> Option<String> {
    for rule in rules {
        let Some(rest) = strip(text, rule) else {
            continue;
        };
        let rest = if rule.to_windows {
            rest.replace('/', "\\")
        } else if rule.from_windows {
            rest.replace('\\', "/")
        } else {
            rest.to_string()
        };
        let sep = if rule.to_windows { '\\' } else { '/' };
        let to = rule.to.trim_end_matches(['/', '\\']);
        let rest = rest.trim_start_matches(['/', '\\']);
        return Some(if rest.is_empty() {
            rule.to.clone()
        } else {
            format!("{to}{sep}{rest}")
        });
    }
    None
}

/// The text after `rule.from` when `text` starts with it at a path boundary.
fn strip<'t>(text: &'t str, rule: &PathRule) -> Option<&'t str> {
    let from = rule.from.trim_end_matches(['/', '\\']);
    if from.is_empty() || text.len() < from.len() || !text.is_char_boundary(from.len()) {
        return None;
    }
    let (head, rest) = text.split_at(from.len());
    let same = if rule.from_windows {
        head.chars()
            .zip(from.chars())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (is_sep(a, true) && is_sep(b, true)))
    } else {
        head == from
    };
    let boundary = rest.is_empty() || rest.starts_with(|c| is_sep(c, rule.from_windows));
    (same && boundary).then_some(rest)
}

/// Rewrites every string in `params` (recursively) and returns what changed, as
/// `(before, after)` pairs.
pub fn apply_params(rules: &[PathRule], params: &mut Value) -> Vec<(String, String)> {
    let mut changed = Vec::new();
    if !rules.is_empty() {
        walk(rules, params, &mut changed);
    }
    changed
}

fn walk(rules: &[PathRule], value: &mut Value, changed: &mut Vec<(String, String)>) {
    match value {
        Value::String(text) => {
            if let Some(mapped) = apply(rules, text) {
                changed.push((std::mem::replace(text, mapped.clone()), mapped));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(rules, v, changed)),
        Value::Object(map) => map.values_mut().for_each(|v| walk(rules, v, changed)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(linux: &str, windows: &str, macos: &str, tag: &str) -> PathMapSpec {
        PathMapSpec {
            linux: linux.into(),
            windows: windows.into(),
            macos: macos.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn windows_paths_map_to_linux_with_forward_slashes() {
        let rules = rules_for(
            &[map("/mnt/projects", r"P:\", "/Volumes/projects", "")],
            Os::Linux,
            &[],
        );
        assert_eq!(
            apply(&rules, r"p:\shots\a.blend").as_deref(),
            Some("/mnt/projects/shots/a.blend")
        );
        assert_eq!(
            apply(&rules, "P:/shots/a.blend").as_deref(),
            Some("/mnt/projects/shots/a.blend")
        );
        assert_eq!(
            apply(&rules, "/Volumes/projects/x").as_deref(),
            Some("/mnt/projects/x")
        );
        assert_eq!(apply(&rules, "/Volumes/projectsX/x"), None);
        assert_eq!(apply(&rules, "/mnt/projects/x"), None);
        assert_eq!(apply(&rules, "Q:/x"), None);
    }

    #[test]
    fn linux_paths_map_to_windows_with_backslashes() {
        let rules = rules_for(
            &[map("/mnt/projects/", r"\\nas\projects", "", "")],
            Os::Windows,
            &[],
        );
        assert_eq!(
            apply(&rules, "/mnt/projects/shots/a.blend").as_deref(),
            Some(r"\\nas\projects\shots\a.blend")
        );
        assert_eq!(
            apply(&rules, "/mnt/projects").as_deref(),
            Some(r"\\nas\projects")
        );
    }

    #[test]
    fn tagged_maps_apply_to_agents_with_the_tag_and_the_longest_prefix_wins() {
        let maps = [
            map("/mnt/a", "A:", "", ""),
            map("/fast/a/cache", r"A:\cache", "", "ssd"),
        ];
        let plain = rules_for(&maps, Os::Linux, &[]);
        assert_eq!(
            apply(&plain, r"A:\cache\x").as_deref(),
            Some("/mnt/a/cache/x")
        );
        let ssd = rules_for(&maps, Os::Linux, &["ssd".into()]);
        assert_eq!(
            apply(&ssd, r"A:\cache\x").as_deref(),
            Some("/fast/a/cache/x")
        );
    }

    #[test]
    fn params_are_rewritten_recursively_and_changes_reported() {
        let rules = rules_for(&[map("/mnt/p", r"P:\", "", "")], Os::Linux, &[]);
        let mut params = json!({"scene": r"P:\a.blend", "n": 3, "list": [r"P:\b", "x"]});
        let changed = apply_params(&rules, &mut params);
        assert_eq!(
            params,
            json!({"scene": "/mnt/p/a.blend", "n": 3, "list": ["/mnt/p/b", "x"]})
        );
        assert_eq!(changed.len(), 2);
    }

    #[test]
    fn checks_name_the_field() {
        assert!(
            check(&map("/a", "", "", ""))
                .unwrap_err()
                .contains("at least two")
        );
        assert!(
            check(&map("a", "P:", "", ""))
                .unwrap_err()
                .starts_with("linux:")
        );
        assert!(
            check(&map("/a", "P", "", ""))
                .unwrap_err()
                .starts_with("windows:")
        );
        assert!(check(&map("/a", r"\\srv\s", "", "")).is_ok());
        assert_eq!(Os::of_agent("Linux 6.1.0"), Some(Os::Linux));
        assert_eq!(Os::of_agent("Darwin 23"), Some(Os::Macos));
    }
}
