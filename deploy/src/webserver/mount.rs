//! What to mount: an app's URL path, its instances and its static directories; and the
//! validation that keeps every field from breaking or injecting configuration.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::WebServerError;

/// One instance of an app, as the web server reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A TCP address (usually `127.0.0.1:<port>`).
    Tcp(SocketAddr),
    /// A unix stream socket. The web server's workers must be allowed to connect to it.
    Unix(PathBuf),
}

impl Backend {
    /// A port on `127.0.0.1`.
    pub fn port(port: u16) -> Self {
        Backend::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }
}

/// Where a mount's requests go: one or several instances, balanced by the web server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upstream {
    /// The instances; at least one.
    pub backends: Vec<Backend>,
}

impl Upstream {
    /// One instance on a port of `127.0.0.1`.
    pub fn port(port: u16) -> Self {
        Upstream {
            backends: vec![Backend::port(port)],
        }
    }

    /// One instance on a unix socket.
    pub fn socket(path: impl Into<PathBuf>) -> Self {
        Upstream {
            backends: vec![Backend::Unix(path.into())],
        }
    }

    /// Several instances, balanced by the web server.
    pub fn balanced(backends: Vec<Backend>) -> Self {
        Upstream { backends }
    }
}

/// A directory the web server serves itself under a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StaticDir {
    /// The absolute URL path, equal to the mount's path or under it (`/hello/static`).
    pub url_path: String,
    /// The absolute directory; the web server's workers must be able to read it.
    pub dir: PathBuf,
}

/// An app mounted at a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mount {
    /// The app's name: letters, digits, `-` and `_` (it names the snippet file).
    pub app: String,
    /// The URL path (`/hello`, or `/` for the whole site); requests for it and under it
    /// belong to the app.
    pub path: String,
    /// The app's instances; `None` for a static site.
    pub upstream: Option<Upstream>,
    /// Paths the web server serves from disk; they take precedence over the upstream.
    pub statics: Vec<StaticDir>,
}

impl Mount {
    /// An app behind a reverse proxy, without static directories.
    pub fn proxy(app: &str, path: &str, upstream: Upstream) -> Self {
        Mount {
            app: app.to_owned(),
            path: path.to_owned(),
            upstream: Some(upstream),
            statics: Vec::new(),
        }
    }

    /// A static site: `dir` served at `path`, no upstream.
    pub fn static_site(app: &str, path: &str, dir: impl Into<PathBuf>) -> Self {
        Mount {
            app: app.to_owned(),
            path: path.to_owned(),
            upstream: None,
            statics: vec![StaticDir {
                url_path: path.to_owned(),
                dir: dir.into(),
            }],
        }
    }

    /// Adds a static directory (builder style).
    pub fn with_static(mut self, url_path: &str, dir: impl Into<PathBuf>) -> Self {
        self.statics.push(StaticDir {
            url_path: url_path.to_owned(),
            dir: dir.into(),
        });
        self
    }

    /// Checks every field; see [`validate_app_name`] for the app name. Paths: ASCII
    /// letters, digits and `-._~/` only, starting with `/`, no empty, `.` or `..`
    /// segment, no trailing `/` (except `/` itself). Directories and sockets: absolute,
    /// from the same safe set plus `+@=,:`. Anything else could change the meaning of
    /// the generated configuration, so it is refused rather than escaped.
    pub fn validate(&self) -> Result<(), WebServerError> {
        validate_app_name(&self.app)?;
        let app = self.app.as_str();
        validate_url_path(app, "path", &self.path)?;
        if self.upstream.is_none() && !self.statics.iter().any(|s| s.url_path == self.path) {
            return Err(WebServerError::invalid(
                app,
                format!(
                    "a mount without upstream is a static site and needs a static dir at its own path {:?}",
                    self.path
                ),
            ));
        }
        if let Some(upstream) = &self.upstream {
            if upstream.backends.is_empty() {
                return Err(WebServerError::invalid(
                    app,
                    "the upstream has no backend; give at least one port or socket, or no upstream for a static site",
                ));
            }
            for backend in &upstream.backends {
                match backend {
                    Backend::Tcp(addr) if addr.port() == 0 => {
                        return Err(WebServerError::invalid(app, "backend port 0 is not a port"));
                    }
                    Backend::Tcp(_) => {}
                    Backend::Unix(path) => {
                        validate_fs_path(app, "backend socket", path)?;
                        // sun_path holds 108 bytes including the NUL.
                        if path.as_os_str().len() > 107 {
                            return Err(WebServerError::invalid(
                                app,
                                format!(
                                    "backend socket {} is longer than 107 bytes",
                                    path.display()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for (index, dir) in self.statics.iter().enumerate() {
            validate_url_path(app, "static url_path", &dir.url_path)?;
            if !is_under(&dir.url_path, &self.path) {
                return Err(WebServerError::invalid(
                    app,
                    format!(
                        "static url_path {:?} is not under the mount path {:?}",
                        dir.url_path, self.path
                    ),
                ));
            }
            validate_fs_path(app, "static dir", &dir.dir)?;
            if self.statics[..index]
                .iter()
                .any(|s| s.url_path == dir.url_path)
            {
                return Err(WebServerError::invalid(
                    app,
                    format!("static url_path {:?} is given twice", dir.url_path),
                ));
            }
        }
        Ok(())
    }

    /// The static dirs, most specific URL path first (the order every server needs so
    /// that `/a/b` wins over `/a`).
    pub(crate) fn statics_most_specific_first(&self) -> Vec<&StaticDir> {
        let mut statics: Vec<&StaticDir> = self.statics.iter().collect();
        statics.sort_by_key(|dir| std::cmp::Reverse(dir.url_path.len()));
        statics
    }
}

/// An app name: 1 to 64 ASCII letters, digits, `-` or `_`, starting with a letter or
/// digit. It names files (`<app>.conf`) and upstream blocks, so nothing else is allowed.
pub fn validate_app_name(app: &str) -> Result<(), WebServerError> {
    let valid = !app.is_empty()
        && app.len() <= 64
        && app.as_bytes()[0].is_ascii_alphanumeric()
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(WebServerError::invalid(
            app,
            "the app name must be 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit",
        ))
    }
}

fn validate_url_path(app: &str, field: &str, path: &str) -> Result<(), WebServerError> {
    let fail = |why: &str| {
        Err(WebServerError::invalid(
            app,
            format!("{field} {path:?} {why}"),
        ))
    };
    if !path.starts_with('/') {
        return fail("must start with '/'");
    }
    if path.len() > 1024 {
        return fail("is longer than 1024 bytes");
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/')))
    {
        return fail(&format!(
            "contains {bad:?}; only ASCII letters, digits and -._~/ are allowed"
        ));
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return fail("must not end with '/'");
    }
    if path[1..]
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return fail("must not contain empty, '.' or '..' segments");
    }
    Ok(())
}

fn validate_fs_path(app: &str, field: &str, path: &Path) -> Result<(), WebServerError> {
    let text = path.to_str().ok_or_else(|| {
        WebServerError::invalid(app, format!("{field} {} is not UTF-8", path.display()))
    })?;
    if !path.is_absolute() {
        return Err(WebServerError::invalid(
            app,
            format!("{field} {text:?} must be an absolute path"),
        ));
    }
    if let Some(bad) = text.chars().find(|c| {
        !(c.is_ascii_alphanumeric()
            || matches!(c, '-' | '.' | '_' | '~' | '/' | '+' | '@' | '=' | ',' | ':'))
    }) {
        return Err(WebServerError::invalid(
            app,
            format!(
                "{field} {text:?} contains {bad:?}; only ASCII letters, digits and -._~/+@=,: are allowed"
            ),
        ));
    }
    if text.split('/').any(|segment| segment == "..") {
        return Err(WebServerError::invalid(
            app,
            format!("{field} {text:?} must not contain '..'"),
        ));
    }
    Ok(())
}

/// Whether URL path `inner` is `outer` or below it (`/a/b` is under `/a`, `/ab` is not).
pub(crate) fn is_under(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// A regular expression matching `path` and everything below it, for servers that match
/// paths by regex (`^/hello(/|$)`); the path alphabet has no regex metacharacters but `.`,
/// which is escaped.
pub(crate) fn path_regex(path: &str) -> String {
    if path == "/" {
        return "^/".to_owned();
    }
    format!("^{}(/|$)", path.replace('.', "\\."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(mount: &Mount) -> String {
        mount.validate().unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_normal_mount() {
        let mount = Mount::proxy("hello", "/hello", Upstream::port(8000))
            .with_static("/hello/static", "/srv/hello/static");
        mount.validate().unwrap();
        Mount::static_site("site", "/", "/srv/site")
            .validate()
            .unwrap();
    }

    #[test]
    fn refuses_anything_that_could_inject_configuration() {
        for path in [
            "hello", "/hello;", "/he llo", "/a\"b", "/a\nb", "/a/", "/a//b", "/a/../b", "/a{b}",
            "/a$b", "/a'b", "/a#b",
        ] {
            let mount = Mount::proxy("hello", path, Upstream::port(8000));
            assert!(reason(&mount).contains("path"), "{path:?} accepted");
        }
        let bad_dir = Mount::static_site("site", "/s", "/srv/a b; }");
        assert!(reason(&bad_dir).contains("static dir"));
        let relative = Mount::static_site("site", "/s", "srv/site");
        assert!(reason(&relative).contains("absolute"));
        let bad_socket = Mount::proxy("a", "/a", Upstream::socket("/run/a|http://x"));
        assert!(reason(&bad_socket).contains("socket"));
        assert!(reason(&Mount::proxy("a b", "/a", Upstream::port(1))).contains("app name"));
        assert!(reason(&Mount::proxy("../x", "/a", Upstream::port(1))).contains("app name"));
    }

    #[test]
    fn refuses_inconsistent_mounts() {
        let outside = Mount::proxy("a", "/a", Upstream::port(1)).with_static("/b", "/srv");
        assert!(reason(&outside).contains("not under"));
        let prefix_only = Mount::proxy("a", "/a", Upstream::port(1)).with_static("/ab", "/srv");
        assert!(reason(&prefix_only).contains("not under"));
        let no_root = Mount {
            app: "a".into(),
            path: "/a".into(),
            upstream: None,
            statics: Vec::new(),
        };
        assert!(reason(&no_root).contains("static site"));
        let empty = Mount::proxy("a", "/a", Upstream::balanced(Vec::new()));
        assert!(reason(&empty).contains("no backend"));
    }

    #[test]
    fn regex_and_containment() {
        assert_eq!(path_regex("/v1.2/x"), "^/v1\\.2/x(/|$)");
        assert_eq!(path_regex("/"), "^/");
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }
}
