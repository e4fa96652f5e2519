//! Helpers of the deployed-app tests: bundles built in memory, plain HTTP through the
//! agents' web servers, and data directories their workers can read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The test app, Python's standard library only: reads its configuration file (a flat
/// YAML mapping), prints `serving GREETING on PORT` and a line of markup a page must show
/// as text, and answers `ok` at `/healthz`, its `api_key` at `/hello/key`, its
/// `greeting` anywhere else under `/hello`.
pub const APP_PY: &str = r##"import http.server, os
values = {}
with open(os.environ["FURROW_APP_CONFIG_FILE"]) as config:
    for line in config:
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "#")):
            values[key.strip()] = value.strip().strip('"')
greeting = values.get("greeting", "?")
print("serving", greeting, "on", os.environ["PORT"], flush=True)
print('<img src=x onerror="window.furrowInjected=1">', flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        elif self.path == "/hello/key":
            body = values.get("api_key", "?").encode()
        elif self.path == "/hello" or self.path.startswith("/hello/"):
            body = greeting.encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"##;

/// A .zip of these files.
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, data) in files {
        writer
            .start_file(*path, zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// GET `path` on 127.0.0.1:`port`: the status and body, or none when nothing answers.
pub fn web_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A temporary root for a farm's data directory that the web servers' workers
/// (`www-data` when run as root) can read through.
pub fn readable_root(prefix: &str) -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}
