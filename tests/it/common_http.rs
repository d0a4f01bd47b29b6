//! Shared helpers of the HTTP tests: the real server on `127.0.0.1:0` with
//! an engine of the test's choosing, and a small JSON client.
#![allow(dead_code)] // each test module uses its own subset

use commerce_engine::engine::{Clock, DataPlatform, Engine, EngineConfig, SystemClock};
use commerce_engine::http::server::serve_on_engine_threads as serve_api_on_engine_threads;
use commerce_engine::http::{serve_api, HttpSettings};
use commerce_engine::store::memory::MemoryStore;
use commerce_engine::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-admin-token";

pub fn config() -> EngineConfig {
    EngineConfig {
        arbiter_count: 2,
        data_platform: DataPlatform::Off,
        actor_threads_io: true,
        ..EngineConfig::default()
    }
}

pub fn start_engine(store: Box<dyn Store>, clock: Arc<dyn Clock>) -> Engine {
    crate::engine_support::start(config(), store, clock)
}

pub struct TestServer {
    pub base: String,
    pub engine: Engine,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server over a fresh in-memory engine.
    pub async fn start() -> TestServer {
        let engine = start_engine(Box::new(MemoryStore::new()), Arc::new(SystemClock));
        TestServer::start_with(engine, HttpSettings::new(TOKEN)).await
    }

    pub async fn start_with(engine: Engine, settings: HttpSettings) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        TestServer::running(engine, addr, |engine, stop| {
            tokio::spawn(serve_api(engine, listener, settings, async move {
                let _ = stop.await;
            }))
        })
    }

    /// The same server with its connections served on the engine's own
    /// threads, as the `serve` command runs it.
    pub async fn start_on_engine_threads(engine: Engine, settings: HttpSettings) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        TestServer::running(engine, addr, |engine, stop| {
            let stopped = async move {
                let _ = stop.await;
            };
            tokio::spawn(serve_api_on_engine_threads(
                engine, listener, settings, stopped,
            ))
        })
    }

    /// The server `spawn` starts, given the engine and what tells it to stop.
    fn running(
        engine: Engine,
        addr: std::net::SocketAddr,
        spawn: impl FnOnce(Engine, oneshot::Receiver<()>) -> JoinHandle<std::io::Result<()>>,
    ) -> TestServer {
        let (tx, rx) = oneshot::channel::<()>();
        let task = spawn(engine.clone(), rx);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()
            .expect("client");
        TestServer {
            base: format!("http://{addr}"),
            engine,
            client,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; answers the status and the body as JSON (or a JSON
    /// string holding the text when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request sent");
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, None, &[]).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let auth = format!("Bearer {TOKEN}");
        self.call(Method::POST, path, Some(body), &[("authorization", &auth)])
            .await
    }

    /// A user with `balance` KRW (charged in one request).
    pub async fn user(&self, name: &str, balance: u64) -> u64 {
        let (s, u) = self.post("/api/v1/users", json!({ "name": name })).await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        let id = u["id"].as_u64().expect("user id");
        if balance > 0 {
            let path = format!("/api/v1/users/{id}/balance/charge");
            let (s, b) = self.post(&path, json!({ "amount": balance })).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        id
    }

    pub async fn product(&self, name: &str, price: u64, stock: u64) -> u64 {
        let body = json!({ "name": name, "price": price, "stock": stock });
        let (s, p) = self.admin_post("/api/v1/products", body).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        p["id"].as_u64().expect("product id")
    }

    pub async fn coupon(&self, discount: Value, quantity: u64) -> u64 {
        let body = json!({ "name": "test coupon", "discount": discount, "quantity": quantity });
        let (s, c) = self.admin_post("/api/v1/coupons", body).await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        c["id"].as_u64().expect("coupon id")
    }

    /// Stops the server (graceful) and the engine.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .expect("engine shutdown");
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Asserts an error answer: status, code, and a message.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}
