//! Customer authentication through the real server: 401 for a missing or
//! bad token (garbled, expired, not yet valid, signed with another key),
//! 403 for another user's resources (path, body, order), nothing changed
//! by a refusal (not even an Idempotency-Key kept), admins by role or the
//! static token, the product reads open, RS256 and ES256 through a JWKS
//! file, and, with authentication off, the API as it always was.
//!
//! The keys under `fixtures/auth/` are test keys made for these tests only.

use crate::common_http;

use commerce_engine::http::auth::{mint_hs256, sign, Claims, Verifier};
use commerce_engine::http::HttpSettings;
use common_http::{assert_error, TestServer, TOKEN};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const SECRET: &[u8] = b"a-test-secret-of-the-shop";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn user_token(id: u64) -> String {
    mint_hs256(SECRET, Some(id), false, 300).unwrap()
}

fn admin_jwt() -> String {
    mint_hs256(SECRET, None, true, 300).unwrap()
}

/// An HS256 token of user `sub` with these times.
fn timed(sub: u64, exp: u64, nbf: Option<u64>) -> String {
    let claims = Claims {
        sub: Some(json!(sub.to_string())),
        role: None,
        exp,
        nbf,
    };
    let key = EncodingKey::from_secret(SECRET).unwrap();
    sign(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

async fn start_with_auth(verifier: Verifier) -> TestServer {
    let settings = HttpSettings {
        auth: Some(Arc::new(verifier)),
        ..HttpSettings::new(TOKEN)
    };
    let engine = common_http::start_engine(
        Box::new(commerce_engine::store::MemoryStore::new()),
        Arc::new(commerce_engine::engine::SystemClock),
    );
    TestServer::start_with(engine, settings).await
}

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    s.call(method, path, body, &headers).await
}

/// Two users with money, a product and a coupon, made with the static admin token.
async fn shop(s: &TestServer) -> (u64, u64, u64, u64) {
    let admin = format!("Bearer {TOKEN}");
    let h = [("authorization", admin.as_str())];
    let mut users = Vec::new();
    for name in ["ann", "bob"] {
        let (st, u) = s
            .call(
                Method::POST,
                "/api/v1/users",
                Some(json!({"name": name})),
                &h,
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{u}");
        let id = u["id"].as_u64().unwrap();
        let path = format!("/api/v1/users/{id}/balance/charge");
        let (st, b) = s
            .call(Method::POST, &path, Some(json!({"amount": 100_000})), &h)
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        users.push(id);
    }
    let product = s.product("mug", 1_000, 100).await;
    let coupon = s.coupon(json!({"kind": "fixed", "amount": 100}), 10).await;
    (users[0], users[1], product, coupon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_401_and_the_product_reads_stay_open() {
    // proves 401 UNAUTHORIZED for no, garbled, expired, not-yet-valid and wrongly signed tokens; leeway; open reads
    let s = start_with_auth(Verifier::hs256(SECRET).unwrap()).await;
    let (ann, _, product, _) = shop(&s).await;
    let t = now();
    let bad: [Option<String>; 6] = [
        None,
        Some("garbled".into()),
        Some("a.b.c".into()),
        Some(timed(ann, t - 120, None)),
        Some(timed(ann, t + 300, Some(t + 120))),
        Some(mint_hs256(b"another-secret", Some(ann), false, 300).unwrap()),
    ];
    let user_path = format!("/api/v1/users/{ann}");
    let order = json!({"user_id": ann, "items": [{"product_id": product, "quantity": 1}]});
    for token in bad.iter().map(Option::as_deref) {
        let got = call(&s, Method::GET, &user_path, None, token, &[]).await;
        assert_error(&got, 401, "UNAUTHORIZED");
        let got = call(
            &s,
            Method::POST,
            "/api/v1/orders",
            Some(order.clone()),
            token,
            &[],
        )
        .await;
        assert_error(&got, 401, "UNAUTHORIZED");
    }
    let basic = s
        .call(
            Method::GET,
            &user_path,
            None,
            &[("authorization", "Basic abc")],
        )
        .await;
    assert_error(&basic, 401, "UNAUTHORIZED");
    // within the leeway (30 s) a token still counts, on both sides
    for token in [timed(ann, t - 10, None), timed(ann, t + 300, Some(t + 10))] {
        let got = call(&s, Method::GET, &user_path, None, Some(&token), &[]).await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    }
    // nothing was placed by the refusals
    let (st, orders) = call(
        &s,
        Method::GET,
        &format!("{user_path}/orders"),
        None,
        Some(&user_token(ann)),
        &[],
    )
    .await;
    assert_eq!(
        (st, orders["items"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    for open in [
        "/api/v1/products".to_owned(),
        format!("/api/v1/products/{product}"),
        "/api/v1/products/top".to_owned(),
        "/api/v1/openapi.json".to_owned(),
        "/health".to_owned(),
    ] {
        let (st, body) = s.get(&open).await;
        assert_eq!(st, StatusCode::OK, "{open}: {body}");
    }
    assert_error(&s.get("/api/v1/coupons/1").await, 401, "UNAUTHORIZED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_acts_on_their_own_resources_only_and_a_refusal_changes_nothing() {
    // proves 403 FORBIDDEN by path user, body user and order user, and that nothing changed
    let s = start_with_auth(Verifier::hs256(SECRET).unwrap()).await;
    let (ann, bob, product, coupon) = shop(&s).await;
    let (ann_t, bob_t) = (user_token(ann), user_token(bob));
    let order_of =
        |user: u64| json!({"user_id": user, "items": [{"product_id": product, "quantity": 2}]});
    let (st, bobs) = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(order_of(bob)),
        Some(&bob_t),
        &[],
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{bobs}");
    let bobs = bobs["id"].as_u64().unwrap();

    // Ann's own resources
    for path in [
        format!("/api/v1/users/{ann}"),
        format!("/api/v1/users/{ann}/balance"),
        format!("/api/v1/users/{ann}/cart"),
    ] {
        let got = call(&s, Method::GET, &path, None, Some(&ann_t), &[]).await;
        assert_eq!(got.0, StatusCode::OK, "{path}: {}", got.1);
    }
    // Bob's, by path
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/users/{bob}"), None),
        (Method::GET, format!("/api/v1/users/{bob}/orders"), None),
        (
            Method::GET,
            format!("/api/v1/users/{bob}/balance/history"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{bob}/balance/charge"),
            Some(json!({"amount": 5})),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{bob}/cart/items"),
            Some(json!({"product_id": product, "quantity": 1})),
        ),
    ] {
        let got = call(&s, method, &path, body, Some(&ann_t), &[]).await;
        assert_error(&got, 403, "FORBIDDEN");
    }
    // by body
    let got = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(order_of(bob)),
        Some(&ann_t),
        &[],
    )
    .await;
    assert_error(&got, 403, "FORBIDDEN");
    let issue = format!("/api/v1/coupons/{coupon}/issue");
    let got = call(
        &s,
        Method::POST,
        &issue,
        Some(json!({"user_id": bob})),
        Some(&ann_t),
        &[],
    )
    .await;
    assert_error(&got, 403, "FORBIDDEN");
    // by the order's user
    for (method, path) in [
        (Method::GET, format!("/api/v1/orders/{bobs}")),
        (Method::POST, format!("/api/v1/orders/{bobs}/payment")),
        (Method::POST, format!("/api/v1/orders/{bobs}/cancel")),
    ] {
        let got = call(&s, method, &path, None, Some(&ann_t), &[]).await;
        assert_error(&got, 403, "FORBIDDEN");
    }
    // admin routes and creating users need an admin
    let got = call(
        &s,
        Method::POST,
        "/api/v1/products",
        Some(json!({"name": "x", "price": 1, "stock": 1})),
        Some(&ann_t),
        &[],
    )
    .await;
    assert_error(&got, 403, "FORBIDDEN");
    let got = call(&s, Method::GET, "/api/v1/orders", None, Some(&ann_t), &[]).await;
    assert_error(&got, 403, "FORBIDDEN");
    let got = call(
        &s,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "eve"})),
        Some(&ann_t),
        &[],
    )
    .await;
    assert_error(&got, 403, "FORBIDDEN");

    // nothing changed: Bob's balance, order, coupons and cart; no user made
    let (_, balance) = call(
        &s,
        Method::GET,
        &format!("/api/v1/users/{bob}/balance"),
        None,
        Some(&bob_t),
        &[],
    )
    .await;
    assert_eq!(balance["balance"], 100_000);
    let (_, order) = call(
        &s,
        Method::GET,
        &format!("/api/v1/orders/{bobs}"),
        None,
        Some(&bob_t),
        &[],
    )
    .await;
    assert_eq!(order["status"], "pending");
    let (_, coupons) = call(
        &s,
        Method::GET,
        &format!("/api/v1/users/{bob}/coupons"),
        None,
        Some(&bob_t),
        &[],
    )
    .await;
    assert_eq!(coupons["items"], json!([]));
    let (_, cart) = call(
        &s,
        Method::GET,
        &format!("/api/v1/users/{bob}/cart"),
        None,
        Some(&bob_t),
        &[],
    )
    .await;
    assert_eq!(cart["items"], json!([]));
    let (_, product_now) = s.get(&format!("/api/v1/products/{product}")).await;
    assert_eq!(product_now["stock"], 98, "only Bob's own order holds stock");
    let got = call(&s, Method::GET, "/api/v1/users/3", None, Some(TOKEN), &[]).await;
    assert_error(&got, 404, "USER_NOT_FOUND");

    // and Bob pays his own order
    let got = call(
        &s,
        Method::POST,
        &format!("/api/v1/orders/{bobs}/payment"),
        None,
        Some(&bob_t),
        &[],
    )
    .await;
    assert_eq!(
        (got.0, got.1["status"].clone()),
        (StatusCode::OK, json!("paid"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_keeps_no_idempotency_key() {
    // proves a 401 or 403 under an Idempotency-Key leaves the key free for the rightful request
    let s = start_with_auth(Verifier::hs256(SECRET).unwrap()).await;
    let (ann, bob, product, _) = shop(&s).await;
    let body = json!({"user_id": bob, "items": [{"product_id": product, "quantity": 1}]});
    let key = [("idempotency-key", "order-7")];
    let got = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(body.clone()),
        Some(&user_token(ann)),
        &key,
    )
    .await;
    assert_error(&got, 403, "FORBIDDEN");
    let got = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(body.clone()),
        Some("garbled"),
        &key,
    )
    .await;
    assert_error(&got, 401, "UNAUTHORIZED");
    let first = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(body.clone()),
        Some(&user_token(bob)),
        &key,
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let again = call(
        &s,
        Method::POST,
        "/api/v1/orders",
        Some(body),
        Some(&user_token(bob)),
        &key,
    )
    .await;
    assert_eq!(again, first, "the key holds Bob's answer, replayed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_by_role_or_by_the_static_token_acts_on_everyone_and_the_admin_routes() {
    // proves a role-admin JWT and the static token pass user, order and admin routes
    let s = start_with_auth(Verifier::hs256(SECRET).unwrap()).await;
    let (_, bob, product, _) = shop(&s).await;
    for admin in [admin_jwt(), TOKEN.to_owned()] {
        let a = Some(admin.as_str());
        let got = call(
            &s,
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "cup", "price": 10, "stock": 5})),
            a,
            &[],
        )
        .await;
        assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
        let got = call(
            &s,
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "cy"})),
            a,
            &[],
        )
        .await;
        assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
        let body = json!({"user_id": bob, "items": [{"product_id": product, "quantity": 1}]});
        let (st, order) = call(&s, Method::POST, "/api/v1/orders", Some(body), a, &[]).await;
        assert_eq!(st, StatusCode::CREATED, "{order}");
        let pay = format!("/api/v1/orders/{}/payment", order["id"]);
        let got = call(&s, Method::POST, &pay, None, a, &[]).await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        for path in [
            format!("/api/v1/users/{bob}/balance"),
            "/api/v1/orders?status=paid".into(),
            "/api/v1/coupons".into(),
        ] {
            let got = call(&s, Method::GET, &path, None, a, &[]).await;
            assert_eq!(got.0, StatusCode::OK, "{path}: {}", got.1);
        }
    }
    s.stop().await;
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/auth")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn signed_with(alg: Algorithm, kid: &str, key: EncodingKey, sub: u64) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = Claims {
        sub: Some(json!(sub.to_string())),
        role: None,
        exp: now() + 300,
        nbf: None,
    };
    sign(&header, &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_are_checked_against_the_jwks_file() {
    // proves keys of a JWKS file verify RS256 and ES256 tokens, and a token of another key or algorithm is 401
    let jwks = String::from_utf8(fixture("jwks.json")).unwrap();
    let s = start_with_auth(Verifier::from_jwks(&jwks).unwrap()).await;
    let (ann, bob, _, _) = shop(&s).await;
    let rsa = EncodingKey::from_rsa_pem(&fixture("rs256-private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&fixture("es256-private.pem")).unwrap();
    let other = EncodingKey::from_rsa_pem(&fixture("other-rs256-private.pem")).unwrap();
    let path = format!("/api/v1/users/{ann}");
    for token in [
        signed_with(Algorithm::RS256, "rsa-1", rsa.clone(), ann),
        signed_with(Algorithm::ES256, "ec-1", ec, ann),
    ] {
        let got = call(&s, Method::GET, &path, None, Some(&token), &[]).await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        let got = call(
            &s,
            Method::GET,
            &format!("/api/v1/users/{bob}"),
            None,
            Some(&token),
            &[],
        )
        .await;
        assert_error(&got, 403, "FORBIDDEN");
    }
    for token in [
        signed_with(Algorithm::RS256, "rsa-1", other, ann),
        signed_with(Algorithm::RS256, "ec-1", rsa, ann),
        user_token(ann),
    ] {
        let got = call(&s, Method::GET, &path, None, Some(&token), &[]).await;
        assert_error(&got, 401, "UNAUTHORIZED");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_off_the_api_is_as_before() {
    // proves no token is needed for customer routes, and a role-admin JWT is no admin token
    let s = TestServer::start().await;
    let ann = s.user("ann", 10_000).await;
    let product = s.product("mug", 1_000, 10).await;
    let body = json!({"user_id": ann, "items": [{"product_id": product, "quantity": 1}]});
    let (st, order) = s.post("/api/v1/orders", body).await;
    assert_eq!(st, StatusCode::CREATED, "{order}");
    let (st, _) = s.get(&format!("/api/v1/orders/{}", order["id"])).await;
    assert_eq!(st, StatusCode::OK);
    let got = call(
        &s,
        Method::GET,
        "/api/v1/orders",
        None,
        Some(&admin_jwt()),
        &[],
    )
    .await;
    assert_error(&got, 401, "UNAUTHORIZED");
    let got = call(&s, Method::GET, "/api/v1/orders", None, Some(TOKEN), &[]).await;
    assert_eq!(got.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_sends_tokens_to_a_server_that_checks_them_and_says_so_without_the_secret() {
    // proves bench --url --auth-jwt-secret runs clean against an auth server, and without it stops with a clear sentence
    use commerce_engine::bench::workload::Workload;
    use commerce_engine::bench::{execute, BenchArgs};
    let s = start_with_auth(Verifier::hs256(SECRET).unwrap()).await;
    let args = |secret: Option<&[u8]>| BenchArgs {
        url: Some(s.base.clone()),
        auth_jwt_secret: secret.map(|b| String::from_utf8(b.to_vec()).unwrap()),
        users: Some(50),
        products: Some(5),
        concurrency: 4,
        duration_secs: 0.5,
        warmup_secs: 0.1,
        ..BenchArgs::new(Workload::Mixed)
    };
    let with = args(Some(SECRET));
    let report = tokio::task::spawn_blocking(move || execute(&with))
        .await
        .unwrap()
        .expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    assert!(report.total.ok > 0, "measured nothing");
    // Refunds are admin calls: they pass with the admin token the bench mints.
    let refunds = report.kinds.iter().find(|k| k.kind == "refund");
    assert!(refunds.is_some_and(|k| k.ok > 0), "{:?}", report.kinds);
    for code in report.errors.keys() {
        assert!(
            !["UNAUTHORIZED", "FORBIDDEN"].contains(&code.as_str()),
            "{:?}",
            report.errors
        );
    }
    for (secret, says) in [
        (None, "requires customer authentication"),
        (Some(&b"wrong"[..]), "refuses the bench's tokens"),
    ] {
        let without = args(secret);
        let ran = tokio::task::spawn_blocking(move || execute(&without))
            .await
            .unwrap();
        let Err(e) = ran else {
            panic!("the run goes on without the server's secret")
        };
        let e = e.to_string();
        assert!(e.contains(says), "{e}");
    }
    s.stop().await;
}
