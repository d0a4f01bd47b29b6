//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol, for the dashboard's page tests: a page is opened, JavaScript
//! is evaluated in it, screenshots are taken, and every script error,
//! `console.error` and failed load the browser reports is collected.
//!
//! The protocol runs over a WebSocket; the few frames it needs (text out,
//! masked; text, continuation, ping and close in) are written here rather
//! than adding a WebSocket crate for one test.
#![allow(dead_code)] // each test module uses its own subset

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A DevTools answer or event larger than this is refused (screenshots are
/// a few hundred KiB of base64).
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser: `$COMMERCE_CHROMIUM`, else `chromium` on the PATH. Its
/// absence fails the test with what to install: CI installs it (`.ci/run`).
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("COMMERCE_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: the dashboard's browser tests need Debian's `chromium` \
             (apt-get install chromium; .ci/run installs it), or COMMERCE_CHROMIUM=/path/to/it"
        )
    })
}

/// Where tests keep what they produce for people to look at.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("test-artifacts dir");
    dir
}

/// A headless Chromium with a fresh profile, in a process group of its
/// own, killed with its children when dropped.
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser and waits for its DevTools endpoint.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("chromium did not start: {e}"));
        // The endpoint is announced on stderr; the rest of stderr is read
        // (and kept for a failure's message) so the pipe never fills.
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel::<Result<u16, String>>();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = devtools_port(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(port));
                    }
                } else if tx.is_some() && seen.len() < 50 {
                    seen.push(line);
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(port)) => port,
            Ok(Err(stderr)) => panic!("chromium exited before its DevTools endpoint:\n{stderr}"),
            Err(_) => panic!("chromium announced no DevTools endpoint within 30 s"),
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// The browser's first tab, connected.
    pub async fn page(&self) -> Page {
        let list: Value = reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port))
            .await
            .expect("DevTools target list")
            .json()
            .await
            .expect("DevTools target list as JSON");
        let ws = list
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page among the DevTools targets: {list}"))
            .to_owned();
        let mut page = Page {
            socket: WebSocket::connect(&ws).await,
            next_id: 0,
            errors: Vec::new(),
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            page.call(domain, json!({})).await;
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group holds the browser and its renderer and GPU processes.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals the process group this test started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/...`
fn devtools_port(line: &str) -> Option<u16> {
    let rest = line.split("DevTools listening on ws://").nth(1)?;
    let authority = rest.split('/').next()?;
    authority.rsplit(':').next()?.parse().ok()
}

/// One tab, over its DevTools WebSocket.
pub struct Page {
    socket: WebSocket,
    next_id: u64,
    /// Script errors, `console.error`s and failed loads reported so far.
    pub errors: Vec<String>,
}

impl Page {
    /// Calls a DevTools method and answers its result; events that arrive
    /// meanwhile are looked at for errors.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params });
        self.socket.send_text(&message.to_string()).await;
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                let text = self.socket.recv_text().await;
                let msg: Value = serde_json::from_str(&text).expect("DevTools message is JSON");
                if msg["id"].as_u64() == Some(id) {
                    return msg;
                }
                self.event(&msg);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("DevTools {method} did not answer within {CALL_TIMEOUT:?}"));
        if let Some(e) = answer.get("error") {
            panic!("DevTools {method} failed: {e}");
        }
        answer["result"].clone()
    }

    fn event(&mut self, msg: &Value) {
        let p = &msg["params"];
        match msg["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let what = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("an exception");
                self.errors.push(format!("exception: {what}"));
            }
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| {
                                v["value"]
                                    .as_str()
                                    .map_or_else(|| v["description"].to_string(), str::to_owned)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                self.errors.push(format!(
                    "log: {} ({})",
                    e["text"].as_str().unwrap_or_default(),
                    e["url"].as_str().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting it if it is a promise)
    /// and answers its value; a script error fails the test.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Navigates and waits for the page's load event.
    pub async fn open(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(e) = r.get("errorText") {
            panic!("navigating to {url}: {e}");
        }
        self.eval(
            "document.readyState === 'complete' ? true : \
             new Promise(r => window.addEventListener('load', () => r(true), { once: true }))",
        )
        .await;
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = r["data"].as_str().expect("screenshot data");
        let png = base64_decode(data);
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        std::fs::write(path, png).expect("screenshot written");
    }
}

/// Standard base64, as DevTools sends binary data.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let take = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

/// The client side of a WebSocket: enough for DevTools.
struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    async fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream = TcpStream::connect(authority)
            .await
            .expect("DevTools socket");
        // No Origin header: DevTools refuses origins it was not told of.
        let handshake = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(handshake.as_bytes())
            .await
            .expect("handshake sent");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.expect("handshake answer");
            head.push(b[0]);
            assert!(head.len() < 8192, "handshake answer too long");
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "DevTools refused the WebSocket: {head}"
        );
        WebSocket { stream }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // Clients mask what they send; any key will do.
        let mask = [0x5a, 0x13, 0xc4, 0x7e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("frame sent");
    }

    async fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes()).await;
    }

    /// The next text message, its fragments joined; pings are answered.
    async fn recv_text(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.expect("frame head");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).await.expect("length");
                    usize::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).await.expect("length");
                    usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX)
                }
                n => usize::from(n),
            };
            assert!(
                message.len() + len <= MESSAGE_BYTES_MAX,
                "DevTools message too large"
            );
            let mut mask = [0u8; 4];
            if masked {
                self.stream.read_exact(&mut mask).await.expect("mask");
            }
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.expect("payload");
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x0 | 0x1 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("DevTools text is UTF-8");
                    }
                }
                0x9 => self.send_frame(0xA, &payload).await,
                0xA => {}
                0x8 => panic!("DevTools closed the WebSocket"),
                other => panic!("unexpected WebSocket opcode {other}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_every_padding() {
        // proves the screenshot decoder on inputs with 0, 1 and 2 padding characters
        assert_eq!(base64_decode("TWFu"), b"Man");
        assert_eq!(base64_decode("TWE="), b"Ma");
        assert_eq!(base64_decode("TQ=="), b"M");
        assert_eq!(base64_decode(""), b"");
    }

    #[test]
    fn the_devtools_port_is_read_from_chromiums_announcement() {
        // proves the line chromium prints on stderr gives the port, and other lines none
        assert_eq!(
            devtools_port("DevTools listening on ws://127.0.0.1:41391/devtools/browser/f1902ad2"),
            Some(41391)
        );
        assert_eq!(
            devtools_port("[ERROR:dbus/bus.cc:405] Failed to connect"),
            None
        );
    }
}
