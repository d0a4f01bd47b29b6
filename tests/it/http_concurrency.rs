//! Races over HTTP with many client connections: exact counts whatever the
//! interleaving; and admission control answering 503 `OVERLOADED`.

use crate::common_http;

use commerce_engine::engine::SystemClock;
use commerce_engine::http::HttpSettings;
use commerce_engine::store::memory::MemoryStore;
use common_http::{assert_error, TestServer, TOKEN};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` users, created concurrently.
async fn users(s: &TestServer, n: usize) -> Vec<u64> {
    let made =
        join_all((0..n).map(|i| s.post("/api/v1/users", json!({"name": format!("u{i}")})))).await;
    made.into_iter()
        .map(|(st, u)| {
            assert_eq!(st, StatusCode::CREATED, "{u}");
            u["id"].as_u64().expect("id")
        })
        .collect()
}

fn tally(answers: &[(StatusCode, serde_json::Value)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (st, body) in answers {
        let key = format!("{} {}", st.as_u16(), body["code"].as_str().unwrap_or(""));
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// A server over a fresh in-memory engine, on a tokio runtime of its own
/// (`serve_api`) or on the engine's threads (what `serve` runs).
async fn server(on_engine_threads: bool, settings: HttpSettings) -> TestServer {
    let engine = common_http::start_engine(Box::new(MemoryStore::new()), Arc::new(SystemClock));
    if on_engine_threads {
        TestServer::start_on_engine_threads(engine, settings).await
    } else {
        TestServer::start_with(engine, settings).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_racing_for_fifty_coupons_get_exactly_fifty() {
    // proves 50 × 201 and 150 × 409 COUPON_SOLD_OUT when 200 clients issue at once, served either way
    for on_engine_threads in [false, true] {
        coupon_race(server(on_engine_threads, HttpSettings::new(TOKEN)).await).await;
    }
}

async fn coupon_race(s: TestServer) {
    let ids = users(&s, 200).await;
    let coupon = s.coupon(json!({"kind": "fixed", "amount": 1000}), 50).await;
    let path = format!("/api/v1/coupons/{coupon}/issue");
    let answers = join_all(ids.iter().map(|u| s.post(&path, json!({"user_id": u})))).await;
    let counts = tally(&answers);
    assert_eq!(counts.get("201 ").copied(), Some(50), "{counts:?}");
    assert_eq!(
        counts.get("409 COUPON_SOLD_OUT").copied(),
        Some(150),
        "{counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");

    let (_, c) = s.get(&format!("/api/v1/coupons/{coupon}")).await;
    assert_eq!(c["remaining"], 0);
    let paths: Vec<String> = ids
        .iter()
        .map(|u| format!("/api/v1/users/{u}/coupons"))
        .collect();
    let held = join_all(paths.iter().map(|p| s.get(p))).await;
    let holders = held
        .iter()
        .filter(|(_, page)| page["items"].as_array().is_some_and(|i| i.len() == 1))
        .count();
    assert_eq!(holders, 50);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_orders_on_a_stock_of_one_hundred_place_exactly_one_hundred() {
    // proves 100 × 201 and 200 × 409 OUT_OF_STOCK for 300 one-unit orders at once; stock ends at 0; served either way
    for on_engine_threads in [false, true] {
        order_race(server(on_engine_threads, HttpSettings::new(TOKEN)).await).await;
    }
}

async fn order_race(s: TestServer) {
    let ids = users(&s, 300).await;
    let p = s.product("한정판 운동화", 129_000, 100).await;
    let answers = join_all(ids.iter().map(|u| {
        s.post(
            "/api/v1/orders",
            json!({"user_id": u, "items": [{"product_id": p, "quantity": 1}]}),
        )
    }))
    .await;
    let counts = tally(&answers);
    assert_eq!(counts.get("201 ").copied(), Some(100), "{counts:?}");
    assert_eq!(
        counts.get("409 OUT_OF_STOCK").copied(),
        Some(200),
        "{counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(s.get(&format!("/api/v1/products/{p}")).await.1["stock"], 0);
    s.stop().await;
}

/// Opens a connection and sends a request whose body never completes, and
/// returns once its handler holds an admission slot: the request asks for
/// `100 Continue`, which the server sends only when the handler, admitted,
/// starts to read the body. The handler then waits for the rest of the
/// body, holding its slot until the connection closes.
async fn stuck_request(base: &str) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100\r\nexpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let interim = tokio::time::timeout(Duration::from_secs(30), response_head(&mut tcp))
        .await
        .expect("the server answers the request's head");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "the stuck request is admitted and its body asked for; the server answered {interim:?}"
    );
    tcp.write_all(b"{\"name\"").await.expect("write");
    tcp
}

/// Reads one response head (up to its blank line; at most 4 KiB) from `tcp`.
async fn response_head(tcp: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "a response head of at most 4 KiB");
        let mut byte = [0u8; 1];
        let n = tcp.read(&mut byte).await.expect("read");
        assert_eq!(n, 1, "the connection closed after {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_are_shed_with_503_overloaded() {
    // proves admission control: a full server answers 503 OVERLOADED + Retry-After at once, then recovers;
    // on the engine's threads the limit is one for all of them
    for on_engine_threads in [false, true] {
        let settings = HttpSettings {
            requests_in_flight_max: 2,
            ..HttpSettings::new(TOKEN)
        };
        shed_past_the_limit(server(on_engine_threads, settings).await).await;
    }
}

async fn shed_past_the_limit(s: TestServer) {
    // Both slots are held before anything else is sent: a request sent
    // while the stuck ones were still on their way could take a slot at the
    // moment one of them arrived, and have it shed instead.
    let held = vec![stuck_request(&s.base).await, stuck_request(&s.base).await];

    let resp = s.client.get(s.url("/health")).send().await.expect("sent");
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a request is shed while two are in flight"
    );
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_error(&common_http::read(resp).await, 503, "OVERLOADED");

    // A stuck request's connection is closed by the server once its handler
    // has answered, which is after its slot was given back.
    for mut tcp in held {
        let _ = tcp.shutdown().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the server ends a request whose body was cut short"
        );
    }
    assert_eq!(
        s.get("/health").await.0,
        StatusCode::OK,
        "slots come back when the stuck requests end"
    );
    assert_eq!(
        s.engine.metrics().users,
        0,
        "the stuck requests created nothing"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_past_its_time_is_closed_by_the_server() {
    // proves idle connections (silent or keep-alive) cannot hold a connection slot forever, served either way
    for on_engine_threads in [false, true] {
        let settings = HttpSettings {
            connection_idle_ms: 300,
            ..HttpSettings::new(TOKEN)
        };
        idle_connections_close(server(on_engine_threads, settings).await).await;
    }
}

async fn idle_connections_close(s: TestServer) {
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut kept = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    for tcp in [&mut silent, &mut kept] {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen)).await;
        assert!(read.is_ok(), "the server closes the idle connection");
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(s.get("/health").await.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_waits_until_one_closes() {
    // proves connections_max: a third connection is not served while two are open, and is once one closes; served either way
    for on_engine_threads in [false, true] {
        let settings = HttpSettings {
            connections_max: 2,
            ..HttpSettings::new(TOKEN)
        };
        let s = server(on_engine_threads, settings).await;
        let addr = s.base.trim_start_matches("http://").to_owned();
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            assert!(health(&mut tcp, Duration::from_secs(5)).await, "served");
            open.push(tcp);
        }
        // The kernel completes the handshake; the server does not take it.
        let mut third = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        assert!(
            !health(&mut third, Duration::from_millis(300)).await,
            "no answer while two connections are open"
        );
        drop(open.pop());
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("answered once a connection closed")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        drop((open, third));
        s.stop().await;
    }
}

/// Asks `/health` on a keep-alive connection; true if answered 200 within `wait`.
async fn health(tcp: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

#[tokio::test]
async fn serving_on_engine_threads_without_their_io_driver_is_refused() {
    // embedded default: the actor threads run no I/O driver, so sockets
    // cannot be served on them; serving says so instead of panicking there
    let engine = crate::engine_support::start(
        commerce_engine::engine::EngineConfig {
            arbiter_count: 2,
            ..commerce_engine::engine::EngineConfig::default()
        },
        Box::new(MemoryStore::new()),
        Arc::new(SystemClock),
    );
    assert!(!engine.engine_threads_have_io());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let served = commerce_engine::http::server::serve_on_engine_threads(
        engine.clone(),
        listener,
        HttpSettings::new(TOKEN),
        std::future::pending(),
    )
    .await;
    let e = served.expect_err("refused");
    assert!(e.to_string().contains("actor_threads_io"), "{e}");
    // the engine itself works on them
    let made = engine.create_user("u", None).await.expect("user");
    assert_eq!(made.name, "u");
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .expect("shutdown");
}
