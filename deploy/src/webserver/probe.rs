//! A minimal async HTTP/1.1 GET over TCP or a unix socket, for verifying mounts and for
//! health checks. It reads one response with `Connection: close`, bounded in size and time;
//! it is not a general client (no TLS, no chunked decoding of the body, no redirects).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Largest response head read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Where to send a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeTarget {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix stream socket.
    Unix(PathBuf),
}

/// A parsed response.
#[derive(Debug, Clone)]
pub(crate) struct ProbeResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order (the body is not kept).
    pub headers: Vec<(String, String)>,
}

impl ProbeResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `GET path` with `Host: host` and reads the response, all within `timeout`.
/// Errors are strings: a probe's failure is reported, not handled by kind.
pub(crate) async fn get(
    target: &ProbeTarget,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<ProbeResponse, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: furrow-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let exchange = async {
        match target {
            ProbeTarget::Tcp(addr) => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|err| format!("connect to {addr}: {err}"))?;
                exchange(stream, &request).await
            }
            ProbeTarget::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|err| format!("connect to {}: {err}", path.display()))?;
                exchange(stream, &request).await
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no response within {timeout:?}")),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<ProbeResponse, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("send request: {err}"))?;
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|err| format!("read response: {err}"))?;
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
        // The head is all a probe needs; do not wait for the body or the close.
        if raw.len() >= MAX_RESPONSE || raw.windows(4).any(|window| window == b"\r\n\r\n") {
            break;
        }
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<ProbeResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("incomplete response ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(ProbeResponse { status, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_headers() {
        let response =
            parse(b"HTTP/1.1 204 No Content\r\nX-Furrow-Mount: a 1\r\n\r\nbody").unwrap();
        assert_eq!(response.status, 204);
        assert_eq!(response.header("x-furrow-mount"), Some("a 1"));
        assert!(parse(b"garbage\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
