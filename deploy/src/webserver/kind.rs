//! Which web server: nginx, Apache httpd or lighttpd.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A web server Furrow can mount apps on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebServerKind {
    /// nginx (1.19.5 or newer: the managed mode passes `-e` for the error log).
    Nginx,
    /// Apache httpd 2.4 with `mod_proxy`, `mod_proxy_http`, `mod_proxy_balancer`,
    /// `mod_headers` and `mod_alias`.
    Apache,
    /// lighttpd 1.4.46 or newer (graceful restart on `SIGUSR1`, unix socket backends).
    Lighttpd,
}

impl WebServerKind {
    /// Every kind, for iteration in tests and documentation.
    pub const ALL: [WebServerKind; 3] = [
        WebServerKind::Nginx,
        WebServerKind::Apache,
        WebServerKind::Lighttpd,
    ];

    /// The lower-case name, as in configuration files and the REST view.
    pub fn as_str(self) -> &'static str {
        match self {
            WebServerKind::Nginx => "nginx",
            WebServerKind::Apache => "apache",
            WebServerKind::Lighttpd => "lighttpd",
        }
    }
}

impl fmt::Display for WebServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A web server name that is not `nginx`, `apache` or `lighttpd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown web server {given:?}: expected one of nginx, apache, lighttpd")]
pub struct ParseKindError {
    /// The name that was given.
    pub given: String,
}

impl FromStr for WebServerKind {
    type Err = ParseKindError;

    /// Parses `nginx`, `apache` (or `apache2`, `httpd`) and `lighttpd`, ignoring case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "nginx" => Ok(WebServerKind::Nginx),
            "apache" | "apache2" | "httpd" => Ok(WebServerKind::Apache),
            "lighttpd" => Ok(WebServerKind::Lighttpd),
            _ => Err(ParseKindError {
                given: text.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        assert_eq!("nginx".parse(), Ok(WebServerKind::Nginx));
        assert_eq!("Apache2".parse(), Ok(WebServerKind::Apache));
        assert_eq!(" lighttpd ".parse(), Ok(WebServerKind::Lighttpd));
        let err = "caddy".parse::<WebServerKind>().unwrap_err();
        assert!(err.to_string().contains("expected one of nginx"), "{err}");
    }

    #[test]
    fn serde_is_lower_case() {
        assert_eq!(
            serde_json::to_string(&WebServerKind::Lighttpd).unwrap(),
            "\"lighttpd\""
        );
        let kind: WebServerKind = serde_json::from_str("\"apache\"").unwrap();
        assert_eq!(kind, WebServerKind::Apache);
    }
}
