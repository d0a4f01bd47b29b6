//! The real binary: `serve` seeds a new data dir with the demo catalogue,
//! prints a generated admin token once and keeps it in the data dir, exits 0
//! within 10 seconds of SIGTERM even with clients holding keep-alive
//! connections, refuses a data dir in use and bad flags before writing
//! anything.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Server {
    child: Child,
    base: String,
}

fn spawn(data_dir: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(data_dir.with_extension("log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
        .args(["serve", "--addr", &addr, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env_remove("COMMERCE_ADMIN_TOKEN")
        .env_remove("COMMERCE_ADDR")
        .env_remove("COMMERCE_DATA_DIR")
        .env_remove("COMMERCE_EMPTY")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("binary starts");
    let server = Server {
        child,
        base: format!("http://{addr}"),
    };
    wait_ready(&addr);
    server
}

/// Waits until `/ready` answers 200 on `addr` (a new data dir is seeded by then).
pub fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut tcp) = std::net::TcpStream::connect(addr) {
            let _ = tcp.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server on {addr} did not become ready");
}

fn sigterm(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to our own child process by its id.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM)");
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let resp = client.get(url).send().await.expect("sent");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_keep_alive_clients_exits_zero_within_ten_seconds() {
    // proves graceful shutdown: idle keep-alive connections do not hold the exit, code 0, data kept
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut s = spawn(&data, &["--empty", "--admin-token", "t0ken"]);
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/api/v1/users", s.base))
        .body(json!({"name": "남을 사용자"}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The client's pooled connection stays open (keep-alive); one more
    // connection has sent a full request and waits idle.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut idle = std::net::TcpStream::connect(&addr).expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let _silent = std::net::TcpStream::connect(&addr).expect("connect");

    let started = Instant::now();
    sigterm(&s.child);
    let status = wait_exit(&mut s.child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    // Well under the 5 s grace period: idle connections are closed at once, not waited out.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    drop(client);

    let s = spawn(&data, &["--empty", "--admin-token", "t0ken"]);
    let (st, user) = get(
        &reqwest::Client::new(),
        format!("{}/api/v1/users/1", s.base),
    )
    .await;
    assert_eq!(
        (st, user["name"].clone()),
        (StatusCode::OK, json!("남을 사용자"))
    );
    let mut child = s.child;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_dir_without_empty_gets_the_demo_catalogue_once() {
    // proves the embedded demo seed (products, coupon, user) and the printed admin token
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut s = spawn(&data, &[]);
    let mut line = String::new();
    BufReader::new(s.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a first line");
    let token = line
        .trim()
        .strip_prefix("admin token: ")
        .expect("the generated token is printed")
        .to_owned();
    assert_eq!(token.len(), 32, "{token}");

    let catalogue: Value =
        serde_json::from_str(commerce_engine::http::demo::CATALOGUE_JSON).expect("catalogue");
    let client = reqwest::Client::new();
    let (st, page) = get(&client, format!("{}/api/v1/products?limit=100", s.base)).await;
    assert_eq!(st, StatusCode::OK);
    let items = page["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        catalogue["products"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(items[0]["name"], catalogue["products"][0]["name"]);
    assert_eq!(items[0]["price"], catalogue["products"][0]["price"]);
    let (st, coupon) = get(&client, format!("{}/api/v1/coupons/1", s.base)).await;
    assert_eq!(
        (st, coupon["name"].clone()),
        (StatusCode::OK, catalogue["coupons"][0]["name"].clone())
    );
    let (_, user) = get(&client, format!("{}/api/v1/users/1", s.base)).await;
    assert_eq!(user["balance"], catalogue["users"][0]["balance"]);

    let made = client
        .post(format!("{}/api/v1/products", s.base))
        .header("authorization", format!("Bearer {token}"))
        .body(json!({"name": "추가 상품", "price": 1000, "stock": 1}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(
        made.status(),
        StatusCode::CREATED,
        "the printed token is the admin token"
    );
    paid_order_reaches_the_data_platform_file(&client, &s.base, &data).await;
    sigterm(&s.child);
    assert!(wait_exit(&mut s.child, Duration::from_secs(10)).success());

    let mut again = spawn(&data, &["--admin-token", "x"]);
    let (_, page) = get(&client, format!("{}/api/v1/products?limit=100", again.base)).await;
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(items.len() + 1),
        "a data dir that holds data is not seeded again"
    );
    sigterm(&again.child);
    assert!(wait_exit(&mut again.child, Duration::from_secs(10)).success());
}

/// The demo user buys the first demo product; without --data-platform-url
/// the paid order is appended to <data-dir>/data-platform.jsonl.
async fn paid_order_reaches_the_data_platform_file(
    client: &reqwest::Client,
    base: &str,
    data: &Path,
) {
    let order = json!({"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]});
    let placed = client
        .post(format!("{base}/api/v1/orders"))
        .body(order.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(placed.status(), StatusCode::CREATED);
    let id = placed.json::<Value>().await.expect("order")["id"].clone();
    let paid = client
        .post(format!("{base}/api/v1/orders/{id}/payment"))
        .send()
        .await
        .expect("sent");
    assert_eq!(paid.status(), StatusCode::OK);
    let sink = data.join("data-platform.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = std::fs::read_to_string(&sink).unwrap_or_default();
        let event = format!(r#""event_id":"order-paid-{id}""#);
        if lines.lines().any(|l| l.contains(&event)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no paid order in {}: {lines}",
            sink.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `serve` expecting it to fail at once; answers its exit status and stderr.
fn fails_at_once(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
        .arg("serve")
        .args(args)
        .env_remove("COMMERCE_ADMIN_TOKEN")
        .env_remove("COMMERCE_ADDR")
        .env_remove("COMMERCE_DATA_DIR")
        .env_remove("COMMERCE_CORS_ORIGIN")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr text");
    (status, err)
}

/// One line saying what is wrong, with no Debug dump or backtrace.
#[track_caller]
fn is_one_sentence(err: &str, names: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(names), "{err}");
    assert!(
        !err.contains("Stack backtrace") && !err.contains("Os {"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_fail_before_the_data_dir_is_created() {
    // proves flags are validated first: a bad --addr or --cors-origin exits 1 with one sentence and writes nothing
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    for (flags, names) in [
        (vec!["--addr", "notanaddr"], "--addr"),
        (
            vec!["--addr", "127.0.0.1:0", "--cors-origin", "shop.example/x"],
            "--cors-origin",
        ),
        (
            vec!["--addr", "127.0.0.1:0", "--admin-token", " "],
            "--admin-token",
        ),
    ] {
        let mut args = flags.clone();
        args.extend(["--data-dir", data_arg]);
        let (status, err) = fails_at_once(&args);
        assert_eq!(status.code(), Some(1), "{flags:?}: {err}");
        is_one_sentence(&err, names);
        assert!(!data.exists(), "{flags:?} created the data dir");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_in_use_fails_at_once_with_one_sentence() {
    // proves the data dir's lock: a second serve on it exits 1 within 5 s saying the dir is in use, the first keeps serving
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut first = spawn(&data, &["--empty", "--admin-token", "t"]);
    let started = Instant::now();
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let (status, err) = fails_at_once(&[
        "--addr",
        &addr,
        "--empty",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    is_one_sentence(&err, "in use by another process");
    let (st, _) = get(&reqwest::Client::new(), format!("{}/ready", first.base)).await;
    assert_eq!(st, StatusCode::OK, "the first server is untouched");
    sigterm(&first.child);
    assert!(wait_exit(&mut first.child, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_admin_token_is_kept_owner_only_and_reused_silently() {
    // proves <data-dir>/admin-token: made 0600 and printed at the first start, the same token used and nothing printed at the next
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut s = spawn(&data, &["--empty"]);
    let mut first = String::new();
    BufReader::new(s.child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first line");
    let token = first
        .trim()
        .strip_prefix("admin token: ")
        .expect("the new token is printed")
        .to_owned();
    let file = data.join("admin-token");
    let kept = std::fs::read_to_string(&file).expect("token file");
    assert_eq!(kept.trim(), token);
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    sigterm(&s.child);
    assert!(wait_exit(&mut s.child, Duration::from_secs(10)).success());

    let mut again = spawn(&data, &["--empty"]);
    let client = reqwest::Client::new();
    let made = client
        .post(format!("{}/api/v1/products", again.base))
        .header("authorization", format!("Bearer {token}"))
        .body(json!({"name": "p", "price": 1000, "stock": 1}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(
        made.status(),
        StatusCode::CREATED,
        "the kept token still works"
    );
    sigterm(&again.child);
    assert!(wait_exit(&mut again.child, Duration::from_secs(10)).success());
    let mut printed = String::new();
    again
        .child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut printed)
        .expect("stdout text");
    assert!(!printed.contains(&token), "printed again: {printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_colour_codes_into_a_file_and_json_logs_hold_fields() {
    // proves the logs: no ANSI codes when stderr is a file, one access line per request with its id, --log-json with numbers as JSON fields
    let dir = tempfile::tempdir().expect("tempdir");
    for json_logs in [false, true] {
        let data = dir.path().join(if json_logs { "json" } else { "text" });
        let mut flags = vec!["--empty", "--admin-token", "t"];
        if json_logs {
            flags.push("--log-json");
        }
        let mut s = spawn(&data, &flags);
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/users/1", s.base))
            .header("x-request-id", "log-me-7")
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        sigterm(&s.child);
        assert!(wait_exit(&mut s.child, Duration::from_secs(10)).success());
        let log = std::fs::read_to_string(data.with_extension("log")).expect("log");
        assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
        let access: Vec<&str> = log.lines().filter(|l| l.contains("log-me-7")).collect();
        assert_eq!(access.len(), 1, "one line for the request: {log}");
        if !json_logs {
            for part in [
                "request{id=log-me-7}",
                "route=\"/api/v1/users/{user_id}\"",
                "status=404",
                "latency_ms=",
            ] {
                assert!(access[0].contains(part), "{part} in {}", access[0]);
            }
            assert!(log.contains("bytes_on_disk="), "{log}");
            continue;
        }
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let line = |message: &str| {
            lines
                .iter()
                .find(|l| l["fields"]["message"] == message)
                .unwrap_or_else(|| panic!("no {message:?} line in {log}"))
        };
        let request = lines
            .iter()
            .find(|l| l["span"]["id"] == "log-me-7")
            .expect("the request's line");
        assert_eq!(request["fields"]["message"], "request");
        assert_eq!(request["fields"]["status"], 404);
        assert!(request["fields"]["latency_ms"].is_number(), "{request}");
        let recovered = line("recovered");
        assert!(
            recovered["fields"]["records_replayed"].is_u64(),
            "{recovered}"
        );
        assert!(
            line("data dir opened")["fields"]["bytes_on_disk"].is_u64(),
            "{log}"
        );
    }
}
