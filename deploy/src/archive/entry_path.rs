//! Entry paths and link targets as stored in an archive, checked before anything is
//! written: only plain relative paths inside the tree pass.

use super::{ArchiveError, Limits};

/// A checked entry path: its normal components, never empty strings, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryPath {
    pub components: Vec<String>,
    /// The path as the archive wrote it, for messages.
    pub shown: String,
}

impl EntryPath {
    /// Whether the path is the tree's root itself (`./` in many tars).
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }
}

/// Checks an entry's path: relative, no `..`, no backslash or NUL, within the length limits.
/// `.` components and repeated or trailing slashes are dropped.
pub(super) fn parse(raw: &[u8], limits: &Limits) -> Result<EntryPath, ArchiveError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let refuse = |reason: &str| ArchiveError::UnsafePath {
        entry: shown.clone(),
        reason: reason.to_string(),
    };
    let text = std::str::from_utf8(raw).map_err(|_| refuse("the path is not valid UTF-8"))?;
    if raw.len() > limits.max_path_bytes {
        return Err(refuse(&format!(
            "the path is longer than {} bytes",
            limits.max_path_bytes
        )));
    }
    if text.starts_with('/') {
        return Err(refuse(
            "absolute paths are not allowed; paths must be relative to the bundle's top level",
        ));
    }
    if text.contains('\\') || text.contains('\0') {
        return Err(refuse(
            "backslashes and NUL characters are not allowed in paths",
        ));
    }
    let mut components = Vec::new();
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(refuse(
                    "'..' is not allowed: it could lead outside the bundle",
                ));
            }
            name if name.len() > limits.max_name_bytes => {
                return Err(refuse(&format!(
                    "a name is longer than {} bytes",
                    limits.max_name_bytes
                )));
            }
            name => components.push(name.to_string()),
        }
    }
    Ok(EntryPath { components, shown })
}

/// Checks a symbolic link's target: relative, and made of leading `..` steps (no more than
/// the link's depth) followed only by names. Such a target cannot leave the tree, even
/// through other links: every step up is through a real directory of the link's own path,
/// and every step down is a name inside the tree (a link there is itself checked the same
/// way). A `..` after a name is refused, because the name could be a link that moves the
/// walk elsewhere before it climbs.
pub(super) fn check_symlink_target(link: &EntryPath, target: &[u8]) -> Result<(), String> {
    let text =
        std::str::from_utf8(target).map_err(|_| "the target is not valid UTF-8".to_string())?;
    if text.is_empty() {
        return Err("the target is empty".into());
    }
    if text.starts_with('/') {
        return Err("absolute link targets are not allowed".into());
    }
    if text.contains('\0') || text.contains('\\') {
        return Err("backslashes and NUL characters are not allowed in link targets".into());
    }
    let link_depth = link.components.len().saturating_sub(1);
    let mut ups = 0usize;
    let mut seen_name = false;
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." if seen_name => {
                return Err("'..' after a name is not allowed in link targets".into());
            }
            ".." => {
                ups += 1;
                if ups > link_depth {
                    return Err("the target leads outside the bundle".into());
                }
            }
            _ => seen_name = true,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> EntryPath {
        parse(text.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn plain_paths_pass_and_are_normalised() {
        assert_eq!(path("./src//app.py").components, ["src", "app.py"]);
        assert!(path("./").is_root());
    }

    #[test]
    fn escaping_or_odd_paths_are_refused() {
        let limits = Limits::default();
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "a\\b",
            &format!("a/{}", "n".repeat(300)),
        ] {
            assert!(parse(bad.as_bytes(), &limits).is_err(), "{bad}");
        }
        let long = "a/".repeat(600);
        assert!(parse(long.as_bytes(), &limits).is_err());
    }

    #[test]
    fn link_targets_stay_inside() {
        let link = path("a/b/link");
        for good in ["c", "../c", "../../c/d", "./c"] {
            assert_eq!(
                check_symlink_target(&link, good.as_bytes()),
                Ok(()),
                "{good}"
            );
        }
        for bad in ["/tmp", "../../../c", "c/../..", "c/../d", ""] {
            assert!(
                check_symlink_target(&link, bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        assert!(check_symlink_target(&path("top"), b"..").is_err());
    }
}
