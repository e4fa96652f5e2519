//! Cross-site safety, in front of every route.
//!
//! - **Host**: a request must name this master in its `Host` header: an IP address, or
//!   `localhost`, or a name given with `--http-name`. A page on `evil.example` whose name
//!   an attacker points at 127.0.0.1 (DNS rebinding) sends `Host: evil.example` and is
//!   refused, so it can read nothing.
//! - **Origin**: a request that changes something (`POST`, `PUT`, `PATCH`, `DELETE`)
//!   and carries an `Origin` (browsers always send one with such requests) must come from
//!   this master's own origin; `Sec-Fetch-Site: cross-site` is refused too.
//! - **Content type**: a request with a body must say `application/json` (or
//!   `application/toml` for job-type files). A browser sends those cross-site only after
//!   a CORS preflight, which this master never answers, so a form or a `text/plain` fetch
//!   from another site cannot submit anything.
//!
//! Refusals are `403` (host, origin) and `415` (content type), with the usual
//! `{"error": "..."}` naming the header at fault.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;

use super::error_response;

/// The host names this master answers to, besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct HostNames(pub Arc<Vec<String>>);

/// The host part of a `Host` header or of an origin's authority: `[::1]:80` → `::1`.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Why a request is refused, if it is.
pub fn check(
    names: &HostNames,
    method: &Method,
    headers: &header::HeaderMap,
    path: &str,
) -> Result<(), (StatusCode, String)> {
    let text = |name: header::HeaderName| -> Result<Option<&str>, (StatusCode, String)> {
        match headers.get(&name) {
            None => Ok(None),
            Some(value) => value.to_str().map(Some).map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("{name}: not readable text"),
                )
            }),
        }
    };
    let host = text(header::HOST)?;
    if let Some(host) = host {
        let name = host_part(host.trim()).to_ascii_lowercase();
        let known = name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || names.0.iter().any(|n| n.eq_ignore_ascii_case(&name));
        if !known {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "Host: {host:?} is not a name of this master (start it with --http-name {name} to serve that name)"
                ),
            ));
        }
    }
    let mutating = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !mutating {
        return Ok(());
    }
    if text(header::HeaderName::from_static("sec-fetch-site"))? == Some("cross-site") {
        return Err((
            StatusCode::FORBIDDEN,
            "Sec-Fetch-Site: cross-site requests may not change anything".into(),
        ));
    }
    if let Some(origin) = text(header::ORIGIN)? {
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        let same = match (authority, host) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host.trim()),
            _ => false,
        };
        if !same {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "Origin: {origin:?} is not this master's own origin: cross-site requests may not change anything"
                ),
            ));
        }
    }
    if *method != Method::DELETE {
        let content_type = text(header::CONTENT_TYPE)?.unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let route = path.trim_end_matches('/');
        let toml_ok = route == "/api/v1/jobtypes";
        // A bundle upload: none of these types is one a cross-site form may send.
        let bundle_ok = route.starts_with("/api/v1/apps/") && route.ends_with("/releases");
        let ok = essence == "application/json"
            || (toml_ok && essence == "application/toml")
            || (bundle_ok && BUNDLE_TYPES.contains(&essence.as_str()));
        if !ok {
            let allowed = if toml_ok {
                "application/json or application/toml".to_string()
            } else if bundle_ok {
                BUNDLE_TYPES.join(", ")
            } else {
                "application/json".to_string()
            };
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type: must be {allowed}, got {:?}",
                    if content_type.is_empty() {
                        "nothing"
                    } else {
                        content_type
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Content types a bundle upload may have.
const BUNDLE_TYPES: &[&str] = &[
    "application/octet-stream",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
];

/// The middleware: refuses what [`check`] refuses, before any handler runs.
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let names = request
        .app_data::<actix_web::web::Data<HostNames>>()
        .map(|data| data.get_ref().clone())
        .unwrap_or_default();
    match check(&names, request.method(), request.headers(), request.path()) {
        Ok(()) => Ok(next.call(request).await?.map_into_boxed_body()),
        Err((status, message)) => {
            tracing::warn!(
                method = %request.method(),
                path = request.path(),
                peer = ?request.peer_addr(),
                error = %message,
                "request refused"
            );
            Ok(request.into_response(error_response(status, &message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn status(method: Method, pairs: &[(&str, &str)], path: &str) -> Option<u16> {
        let names = HostNames(Arc::new(vec!["farm.studio.lan".into()]));
        check(&names, &method, &headers(pairs), path)
            .err()
            .map(|(status, _)| status.as_u16())
    }

    #[test]
    fn hosts_must_name_this_master() {
        for host in [
            "127.0.0.1:7421",
            "localhost:7421",
            "[::1]:7421",
            "10.0.0.5",
            "FARM.studio.lan:80",
        ] {
            assert_eq!(status(Method::GET, &[("host", host)], "/"), None, "{host}");
        }
        assert_eq!(
            status(Method::GET, &[("host", "evil.example:7421")], "/"),
            Some(403)
        );
        assert_eq!(status(Method::GET, &[], "/"), None, "HTTP/1.0 without Host");
    }

    #[test]
    fn changes_need_the_same_origin_and_json() {
        let json = ("content-type", "application/json; charset=utf-8");
        let host = ("host", "127.0.0.1:7421");
        let post = |extra: &[(&str, &str)]| {
            let mut pairs = vec![host];
            pairs.extend_from_slice(extra);
            status(Method::POST, &pairs, "/api/v1/jobs/")
        };
        assert_eq!(post(&[json]), None);
        assert_eq!(post(&[json, ("origin", "http://127.0.0.1:7421")]), None);
        assert_eq!(
            post(&[json, ("origin", "http://127.0.0.1:8000")]),
            Some(403)
        );
        assert_eq!(post(&[json, ("origin", "null")]), Some(403));
        assert_eq!(post(&[json, ("sec-fetch-site", "cross-site")]), Some(403));
        assert_eq!(post(&[("content-type", "text/plain")]), Some(415));
        assert_eq!(post(&[]), Some(415));
        assert_eq!(
            post(&[("content-type", "application/x-www-form-urlencoded")]),
            Some(415)
        );
        assert_eq!(
            status(
                Method::POST,
                &[host, ("content-type", "application/toml")],
                "/api/v1/jobtypes/"
            ),
            None
        );
        assert_eq!(
            status(
                Method::POST,
                &[host, ("content-type", "application/toml")],
                "/api/v1/jobs/"
            ),
            Some(415)
        );
        // A DELETE has no body, but a foreign origin still may not send it.
        assert_eq!(status(Method::DELETE, &[host], "/api/v1/jobs/1"), None);
        assert_eq!(
            status(
                Method::DELETE,
                &[host, ("origin", "http://evil.example")],
                "/api/v1/jobs/1"
            ),
            Some(403)
        );
        // Reads need no content type, and a foreign origin may not read through a
        // browser anyway (no CORS headers are ever sent).
        assert_eq!(
            status(
                Method::GET,
                &[host, ("origin", "http://evil.example")],
                "/api/v1/jobs/"
            ),
            None
        );
    }
}
