//! Table-driven bad input over HTTP: malformed JSON, wrong types, missing
//! fields, every limit of API.md just outside (refused, nothing changed)
//! and just inside (accepted), non-numeric ids, oversized bodies, missing
//! or wrong admin tokens.

use crate::common_http;

use common_http::{TestServer, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUTH: &str = "Bearer test-admin-token";

/// One bad request and what it must get.
struct Case {
    method: Method,
    path: &'static str,
    admin: bool,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    status: u16,
    code: &'static str,
    /// A word the message must contain (the field's name), if any.
    names: Option<&'static str>,
}

fn case(
    method: Method,
    path: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
    names: Option<&'static str>,
) -> Case {
    Case {
        method,
        path,
        admin: false,
        headers: Vec::new(),
        body: Some(body.to_owned()),
        status,
        code,
        names,
    }
}

fn post(path: &'static str, body: &str, names: &'static str) -> Case {
    case(
        Method::POST,
        path,
        body,
        400,
        "INVALID_REQUEST",
        Some(names),
    )
}

fn admin(mut c: Case) -> Case {
    c.admin = true;
    c
}

fn get(path: &'static str, names: &'static str) -> Case {
    Case {
        method: Method::GET,
        path,
        admin: false,
        headers: Vec::new(),
        body: None,
        status: 400,
        code: "INVALID_REQUEST",
        names: Some(names),
    }
}

fn malformed_and_missing() -> Vec<Case> {
    let users = "/api/v1/users";
    vec![
        post(users, r#"{"name":"#, "JSON"),
        post(users, "not json", "JSON"),
        post(users, "", "JSON"),
        post(users, "[]", "JSON"),
        post(users, r#"{"name":"a"} trailing"#, "JSON"),
        post(users, r#"{"name":5}"#, "name"),
        post(users, r#"{"name":null}"#, "name"),
        post(users, "{}", "name"),
        post(
            "/api/v1/users/1/balance/charge",
            r#"{"amount":"100"}"#,
            "amount",
        ),
        post(
            "/api/v1/users/1/balance/charge",
            r#"{"amount":null}"#,
            "amount",
        ),
        post("/api/v1/users/1/balance/charge", "{}", "amount"),
        admin(post(
            "/api/v1/products",
            r#"{"name":"x","price":"1000","stock":1}"#,
            "price",
        )),
        admin(post(
            "/api/v1/products",
            r#"{"name":"x","price":1000,"stock":-1}"#,
            "stock",
        )),
        admin(post(
            "/api/v1/products",
            r#"{"name":"x","price":1000}"#,
            "stock",
        )),
        admin(post("/api/v1/products/1/restock", "{}", "quantity")),
        admin(post(
            "/api/v1/products/1/restock",
            r#"{"quantity":true}"#,
            "quantity",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","quantity":1}"#,
            "discount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"half"},"quantity":1}"#,
            "discount.kind",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"percent","percent":300},"quantity":1}"#,
            "discount.percent",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"fixed","amount":"100"},"quantity":1}"#,
            "discount.amount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"amount":-5,"kind":"fixed"},"quantity":1}"#,
            "discount.amount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"percent","percent":"5"},"quantity":1}"#,
            "discount.percent",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"fixed"},"quantity":1}"#,
            "amount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":"fixed","quantity":1}"#,
            "discount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"fixed","amount":1},"quantity":1,"expires_at":"tomorrow"}"#,
            "expires_at",
        )),
        post("/api/v1/coupons/1/issue", "{}", "user_id"),
        post("/api/v1/coupons/1/issue", r#"{"user_id":"1"}"#, "user_id"),
        post("/api/v1/coupons/1/issue", r#"{"user_id":0}"#, "user_id"),
        post(
            "/api/v1/users/1/cart/items",
            r#"{"product_id":1}"#,
            "quantity",
        ),
        post(
            "/api/v1/users/1/cart/items",
            r#"{"product_id":1,"quantity":1.5}"#,
            "quantity",
        ),
        post(
            "/api/v1/users/1/cart/items",
            r#"{"product_id":0,"quantity":1}"#,
            "product_id",
        ),
        post(
            "/api/v1/orders",
            r#"{"items":[{"product_id":1,"quantity":1}]}"#,
            "user_id",
        ),
        post("/api/v1/orders", r#"{"user_id":1,"items":"x"}"#, "items"),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":"2"}]}"#,
            "items[0].quantity",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":1},{"product_id":2,"quantity":1},{"product_id":3,"quantity":-2}]}"#,
            "items[2].quantity",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":1},{"product_id":"two","quantity":1}]}"#,
            "items[1].product_id",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"from_cart":"yes"}"#,
            "from_cart",
        ),
        post("/api/v1/orders", r#"{"user_id":1}"#, "items"),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"from_cart":true,"items":[{"product_id":1,"quantity":1}]}"#,
            "from_cart",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":0,"items":[{"product_id":1,"quantity":1}]}"#,
            "user_id",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":1}],"user_coupon_id":0}"#,
            "user_coupon_id",
        ),
    ]
}

fn limits_just_outside() -> Vec<Case> {
    let charge = "/api/v1/users/1/balance/charge";
    let amount = |body: &str| {
        case(
            Method::POST,
            charge,
            body,
            400,
            "INVALID_AMOUNT",
            Some("amount"),
        )
    };
    vec![
        amount(r#"{"amount":0}"#),
        amount(r#"{"amount":10000001}"#),
        amount(r#"{"amount":-1}"#),
        post("/api/v1/users", r#"{"name":""}"#, "name"),
        post("/api/v1/users", r#"{"name":"   "}"#, "name"),
        post(
            "/api/v1/users",
            &format!(r#"{{"name":"{}"}}"#, "가".repeat(201)),
            "name",
        ),
        admin(post(
            "/api/v1/products",
            r#"{"name":"x","price":0,"stock":1}"#,
            "price",
        )),
        admin(post(
            "/api/v1/products",
            r#"{"name":"x","price":100000001,"stock":1}"#,
            "price",
        )),
        admin(post(
            "/api/v1/products",
            r#"{"name":"x","price":1,"stock":1000000001}"#,
            "stock",
        )),
        admin(post(
            "/api/v1/products/1/restock",
            r#"{"quantity":0}"#,
            "quantity",
        )),
        post(
            "/api/v1/users/1/cart/items",
            r#"{"product_id":1,"quantity":0}"#,
            "quantity",
        ),
        post(
            "/api/v1/users/1/cart/items",
            r#"{"product_id":1,"quantity":1001}"#,
            "quantity",
        ),
        post("/api/v1/orders", r#"{"user_id":1,"items":[]}"#, "items"),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":1001}]}"#,
            "quantity",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":0}]}"#,
            "quantity",
        ),
        post(
            "/api/v1/orders",
            r#"{"user_id":1,"items":[{"product_id":1,"quantity":1},{"product_id":1,"quantity":1}]}"#,
            "product_id",
        ),
        post("/api/v1/orders", &fifty_one_lines(), "items"),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"fixed","amount":0},"quantity":1}"#,
            "discount.amount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"fixed","amount":100000001},"quantity":1}"#,
            "discount.amount",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"percent","percent":0},"quantity":1}"#,
            "discount.percent",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"percent","percent":101},"quantity":1}"#,
            "discount.percent",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"percent","percent":5},"quantity":0}"#,
            "quantity",
        )),
        admin(post(
            "/api/v1/coupons",
            r#"{"name":"c","discount":{"kind":"percent","percent":5},"quantity":10000001}"#,
            "quantity",
        )),
        get("/api/v1/products?limit=0", "limit"),
        get("/api/v1/products?limit=101", "limit"),
        get("/api/v1/products?limit=ten", "limit"),
        get("/api/v1/users/1/orders?after=x", "after"),
        get("/api/v1/users/1/balance/history?limit=-1", "limit"),
    ]
}

fn fifty_one_lines() -> String {
    let lines: Vec<Value> = (1..=51)
        .map(|i| json!({"product_id": i, "quantity": 1}))
        .collect();
    json!({"user_id": 1, "items": lines}).to_string()
}

fn ids_headers_and_tokens() -> Vec<Case> {
    let mut cases = vec![
        get("/api/v1/users/abc", "user_id"),
        get("/api/v1/users/0", "user_id"),
        get("/api/v1/users/-1", "user_id"),
        get("/api/v1/users/1.0/balance", "user_id"),
        get("/api/v1/products/1.5", "product_id"),
        get("/api/v1/coupons/x", "coupon_id"),
        get("/api/v1/orders/99999999999999999999", "order_id"),
        get("/api/v1/users/%20/cart", "user_id"),
        post("/api/v1/orders/abc/payment", "", "order_id"),
        post("/api/v1/orders/0/cancel", "", "order_id"),
        post("/api/v1/coupons/one/issue", r#"{"user_id":1}"#, "coupon_id"),
        Case {
            method: Method::DELETE,
            ..get("/api/v1/users/1/cart/items/abc", "product_id")
        },
    ];
    let long_key = "k".repeat(129);
    for key in [long_key, String::new()] {
        let mut c = post("/api/v1/users", r#"{"name":"keyed"}"#, "Idempotency-Key");
        c.headers.push(("idempotency-key", key));
        cases.push(c);
    }
    let product = r#"{"name":"x","price":1,"stock":1}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVzdA=="),
        Some("Bearer"),
    ] {
        for (path, body) in [
            ("/api/v1/products", product),
            ("/api/v1/products/1/restock", r#"{"quantity":1}"#),
            (
                "/api/v1/coupons",
                r#"{"name":"c","discount":{"kind":"percent","percent":5},"quantity":1}"#,
            ),
            ("/api/v1/admin/stats/refresh", ""),
            ("/api/v1/products", "not even json"),
        ] {
            let mut c = case(Method::POST, path, body, 401, "UNAUTHORIZED", None);
            if let Some(a) = auth {
                c.headers.push(("authorization", a.to_owned()));
            }
            cases.push(c);
        }
    }
    let oversized = format!(r#"{{"name":"{}"}}"#, "x".repeat(64 * 1024));
    cases.push(case(
        Method::POST,
        "/api/v1/users",
        &oversized,
        413,
        "PAYLOAD_TOO_LARGE",
        None,
    ));
    cases.push(admin(case(
        Method::POST,
        "/api/v1/products",
        &oversized,
        413,
        "PAYLOAD_TOO_LARGE",
        None,
    )));
    cases
}

/// What a client can see of the state, plus the journal's record count.
async fn state(s: &TestServer) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/api/v1/users/1",
        "/api/v1/users/1/balance/history",
        "/api/v1/users/1/coupons",
        "/api/v1/users/1/cart",
        "/api/v1/users/1/orders",
        "/api/v1/users/2",
        "/api/v1/products?limit=100",
        "/api/v1/coupons/1",
        "/api/v1/coupons/2",
    ] {
        seen.push(s.get(path).await.1);
    }
    let m = s.engine.metrics();
    seen.push(json!([
        m.journal_records,
        m.idempotency_keys,
        m.users,
        m.products
    ]));
    seen
}

async fn send(s: &TestServer, c: &Case) -> (StatusCode, Value, Option<String>) {
    let mut req = s.client.request(c.method.clone(), s.url(c.path));
    if c.admin {
        req = req.header("authorization", AUTH);
    }
    for (k, v) in &c.headers {
        req = req.header(*k, v.as_str());
    }
    if let Some(b) = &c.body {
        req = req
            .header("content-type", "application/json")
            .body(b.clone());
    }
    let resp = req.send().await.expect("sent");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = common_http::read(resp).await;
    (status, body, content_type)
}

async fn setup() -> TestServer {
    let s = TestServer::start().await;
    s.user("고객", 1_000).await;
    s.product("상품", 1_000, 10).await;
    s.coupon(json!({"kind":"percent","percent":10}), 10).await;
    let (st, _) = s
        .post("/api/v1/coupons/1/issue", json!({"user_id": 1}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_their_code_and_change_nothing() {
    // proves each bad input gets its status, code, a JSON body naming the field, and no state change
    let s = setup().await;
    let before = state(&s).await;
    let cases: Vec<Case> = malformed_and_missing()
        .into_iter()
        .chain(limits_just_outside())
        .chain(ids_headers_and_tokens())
        .collect();
    assert!(cases.len() >= 90, "{} cases", cases.len());
    for c in &cases {
        let (status, body, content_type) = send(&s, c).await;
        let what = format!(
            "{} {} {:?} -> {status} {body}",
            c.method,
            c.path,
            c.body
                .as_deref()
                .map(|b| b.chars().take(60).collect::<String>())
        );
        assert_eq!(status.as_u16(), c.status, "{what}");
        assert_eq!(body["code"], c.code, "{what}");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}");
        if let Some(field) = c.names {
            assert!(
                message.contains(field),
                "message should name {field}: {what}"
            );
        }
        assert_eq!(state(&s).await, before, "state changed after {what}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_at_each_limit_are_accepted() {
    // proves every limit of API.md is inclusive: the value just inside is accepted
    let s = setup().await;
    let big = s
        .product("재고 많은 상품", 100_000_000, 1_000_000_000)
        .await;
    let mut ids = vec![big];
    for i in 0..49 {
        ids.push(s.product(&format!("p{i}"), 1, 10).await);
    }
    let auth = [("authorization", AUTH)];
    let inside: Vec<(Method, String, Value, bool, u16)> = vec![
        (
            Method::POST,
            "/api/v1/users/1/balance/charge".into(),
            json!({"amount": 1}),
            false,
            200,
        ),
        (
            Method::POST,
            "/api/v1/users/1/balance/charge".into(),
            json!({"amount": 10_000_000}),
            false,
            200,
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"name": "가"}),
            false,
            201,
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"name": "가".repeat(200)}),
            false,
            201,
        ),
        (
            Method::POST,
            "/api/v1/products".into(),
            json!({"name": "p", "price": 1, "stock": 0}),
            true,
            201,
        ),
        (
            Method::POST,
            "/api/v1/products".into(),
            json!({"name": "p", "price": 100_000_000, "stock": 1_000_000_000}),
            true,
            201,
        ),
        (
            Method::POST,
            "/api/v1/products/1/restock".into(),
            json!({"quantity": 1}),
            true,
            200,
        ),
        (
            Method::POST,
            "/api/v1/users/1/cart/items".into(),
            json!({"product_id": big, "quantity": 1}),
            false,
            200,
        ),
        (
            Method::POST,
            "/api/v1/users/1/cart/items".into(),
            json!({"product_id": big, "quantity": 1000}),
            false,
            200,
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            json!({"user_id": 1, "items": [{"product_id": big, "quantity": 1000}]}),
            false,
            201,
        ),
        (
            Method::POST,
            "/api/v1/orders".into(),
            json!({"user_id": 1, "items": ids.iter().map(|p| json!({"product_id": p, "quantity": 1})).collect::<Vec<_>>()}),
            false,
            201,
        ),
        (
            Method::POST,
            "/api/v1/coupons".into(),
            json!({"name": "c", "discount": {"kind": "fixed", "amount": 1}, "quantity": 1}),
            true,
            201,
        ),
        (
            Method::POST,
            "/api/v1/coupons".into(),
            json!({"name": "c", "discount": {"kind": "fixed", "amount": 100_000_000}, "quantity": 10_000_000}),
            true,
            201,
        ),
        (
            Method::POST,
            "/api/v1/coupons".into(),
            json!({"name": "c", "discount": {"kind": "percent", "percent": 1}, "quantity": 1}),
            true,
            201,
        ),
        (
            Method::POST,
            "/api/v1/coupons".into(),
            json!({"name": "c", "discount": {"kind": "percent", "percent": 100}, "quantity": 1}),
            true,
            201,
        ),
        (
            Method::GET,
            "/api/v1/products?limit=1".into(),
            Value::Null,
            false,
            200,
        ),
        (
            Method::GET,
            "/api/v1/products?limit=100".into(),
            Value::Null,
            false,
            200,
        ),
    ];
    for (method, path, body, is_admin, status) in inside {
        let headers: &[(&str, &str)] = if is_admin { &auth } else { &[] };
        let body = (!body.is_null()).then_some(body);
        let (st, got) = s.call(method.clone(), &path, body, headers).await;
        assert_eq!(st.as_u16(), status, "{method} {path}: {got}");
    }
    let (_, page) = s.get("/api/v1/products?limit=100").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(53));

    let key = "k".repeat(128);
    let keyed = [("idempotency-key", key.as_str())];
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "keyed"})),
            &keyed,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    // A body of exactly 64 KiB: JSON padded with spaces.
    let mut exact = String::from(r#"{"name":"padded"}"#);
    exact.push_str(&" ".repeat(64 * 1024 - exact.len()));
    let resp = s
        .client
        .post(s.url("/api/v1/users"))
        .body(exact)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::CREATED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_and_its_connection_is_closed() {
    // proves a 413 says `connection: close` (its body was never read), and the
    // same pooled client goes on working
    let s = setup().await;
    let body = format!(r#"{{"name":"{}"}}"#, "y".repeat(70 * 1024));
    let resp = s
        .client
        .post(s.url("/api/v1/users"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    for _ in 0..5 {
        assert_eq!(s.get("/api/v1/users/1").await.0, StatusCode::OK);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_refused_without_a_length_header() {
    // proves the 64 KiB limit also holds for a streamed body (413 PAYLOAD_TOO_LARGE, nothing created)
    let s = setup().await;
    let before = state(&s).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let chunk = format!(r#"{{"name":"{}"}}"#, "y".repeat(70 * 1024));
    let _ = tcp
        .write_all(format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len()).as_bytes())
        .await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"PAYLOAD_TOO_LARGE""#), "{answer}");
    assert_eq!(state(&s).await, before);
    let _ = TOKEN;
    s.stop().await;
}
