//! Helpers shared by the web-server and supervision tests: free ports, a Python HTTP app,
//! a blocking HTTP client, polling with a deadline.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Python stdlib HTTP app: answers every GET with the path, some request headers and
/// its name; listens on a TCP port (`tcp <port> <name>`) or a unix socket
/// (`unix <path> <name>`, mode 0666 so that web-server workers can connect).
pub const APP_PY: &str = r#"
import http.server, os, socketserver, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("path=%s\nname=%s\nhost=%s\nxff=%s\nproto=%s\nprefix=%s\n" % (
            self.path, sys.argv[3], self.headers.get("Host"),
            self.headers.get("X-Forwarded-For"), self.headers.get("X-Forwarded-Proto"),
            self.headers.get("X-Forwarded-Prefix"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        sys.stderr.write("request %s\n" % (args[1] if len(args) > 1 else ""))
        sys.stderr.flush()
    def address_string(self):
        return "peer"
class Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
class Tcp(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
print("starting", sys.argv[3], flush=True)
if sys.argv[1] == "tcp":
    Tcp(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
else:
    try:
        os.unlink(sys.argv[2])
    except FileNotFoundError:
        pass
    os.umask(0)
    Unix(sys.argv[2], Handler).serve_forever()
"#;

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A range of `size` ports for a port pool, chosen by this process's id in 20000..32000
/// (below the usual ephemeral range 32768..60999): tests run in parallel processes, and
/// their pools should not hand out the same port at the same moment.
pub fn pool_range(size: u16) -> std::ops::RangeInclusive<u16> {
    let slots = 12_000 / u32::from(size);
    let start = 20_000 + (std::process::id() % slots) as u16 * size;
    start..=start + size - 1
}

/// A free address on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A temporary directory readable by the web servers' workers (`www-data` as root).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("furrow-web-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Writes the app script into `dir` and returns its path.
pub fn write_app(dir: &Path) -> PathBuf {
    let path = dir.join("app.py");
    std::fs::write(&path, APP_PY).expect("write app.py");
    path
}

/// A running Python app, killed (its whole group) on drop.
pub struct PyApp {
    pub child: Child,
}

impl PyApp {
    /// Starts the app on a TCP port and waits until it accepts connections.
    pub fn tcp(dir: &Path, port: u16, name: &str) -> PyApp {
        let app = Self::spawn(dir, &["tcp", &port.to_string(), name]);
        wait_until(Duration::from_secs(10), "the app to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        app
    }

    /// Starts the app on a unix socket and waits until it accepts connections.
    pub fn unix(dir: &Path, socket: &Path, name: &str) -> PyApp {
        let app = Self::spawn(dir, &["unix", socket.to_str().expect("utf-8"), name]);
        wait_until(Duration::from_secs(10), "the app to listen", || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        });
        app
    }

    fn spawn(dir: &Path, args: &[&str]) -> PyApp {
        let script = write_app(dir);
        let child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn python3");
        PyApp { child }
    }

    /// Kills the app and waits for it.
    pub fn kill(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

impl Drop for PyApp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A response read by [`get`].
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    /// The value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// A blocking GET with `Connection: close`; `Err` for connection errors.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|err| format!("connect {addr}: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("write: {err}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|err| format!("read: {err}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async form of [`wait_until`].
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a blocking GET on a blocking thread (tests are async).
pub async fn get_async(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || get(addr, &path))
        .await
        .expect("join")
}
