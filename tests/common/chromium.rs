//! A headless Chromium driven over the DevTools protocol through `--remote-debugging-pipe`
//! (JSON messages separated by NUL bytes on fds 3 and 4), so tests can load a page, let its
//! scripts run, and read the live DOM.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running headless Chromium with one page.
pub struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two fds it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts Chromium and opens `url` in a new page.
    pub fn open(url: &str, profile: &std::path::Path) -> Browser {
        let exe = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium is not installed: run ./scripts/test, which installs it");
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let (child_in, child_out) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        let mut command = Command::new(exe);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only dup2 and fcntl, which are async-signal-safe, run in the child.
        unsafe {
            command.pre_exec(move || {
                // Chromium reads commands from fd 3 and writes answers to fd 4; dup2
                // clears close-on-exec on the new descriptors.
                if libc::dup2(child_in, 3) < 0 || libc::dup2(child_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop(browser_reads);
        drop(browser_writes);

        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(we_read));
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(value) = serde_json::from_slice::<Value>(&message)
                            && tx.send(value).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            to_browser: std::fs::File::from(we_write),
            from_browser: rx,
            next_id: 0,
            session: String::new(),
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": url }));
        let target_id = target["targetId"].as_str().expect("target id").to_string();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        browser
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Sends one command and waits for its answer: its result, or the error Chromium
    /// gave.
    fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    return match answer.get("error") {
                        Some(_) => Err(answer),
                        None => Ok(answer["result"].clone()),
                    };
                }
                Ok(_event) => continue,
                Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "chromium exited while answering {method}: {:?}",
                        self.child.try_wait()
                    )
                }
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value. An
    /// evaluation that meets a navigation (a reload the page started) runs again in the
    /// page that replaced it.
    pub fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_call(
                Some(&session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            ) {
                Ok(result) => return result["result"]["value"].clone(),
                Err(error) if navigated(&error) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("Runtime.evaluate failed: {error}"),
            }
        }
    }

    /// The page's current DOM as HTML.
    pub fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Whether Chromium refused a command because the page navigated while it ran.
fn navigated(error: &Value) -> bool {
    let message = error["error"]["message"].as_str().unwrap_or_default();
    [
        "Inspected target navigated or closed",
        "Execution context was destroyed",
        "Cannot find context with specified id",
    ]
    .iter()
    .any(|m| message.contains(m))
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
