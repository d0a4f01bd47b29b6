//! What a benchmark talks to: the embedded [`Engine`] or a running server.
//!
//! Both offer the same few operations with the same answers, so workloads
//! and invariant checks are written once. An enum rather than a trait
//! object: async methods stay plain `async fn`, with no boxing per request.

use crate::bench::http_client::{ExchangeError, HttpClient};
use crate::domain::coupon::Discount;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::LineRequest;
use crate::domain::refund::RefundRequest;
use crate::engine::{Engine, Error, NewCoupon, OrderSource, PlaceOrder};
use axum::http::{Method, StatusCode};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Why an operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// An error code of `API.md`, or `TRANSPORT` / `HTTP_<status>` / `BAD_BODY`.
    pub code: String,
    /// True when the operation may or may not have happened (a timeout, a
    /// dropped connection, an engine shutting down): exact checks relax then.
    pub unknown_outcome: bool,
}

impl OpError {
    fn known(code: impl Into<String>) -> OpError {
        OpError {
            code: code.into(),
            unknown_outcome: false,
        }
    }

    fn unknown(code: impl Into<String>) -> OpError {
        OpError {
            code: code.into(),
            unknown_outcome: true,
        }
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        match e {
            // A refusal changed nothing (a failed payment is a known outcome too).
            Error::Rejected(_)
            | Error::IdempotencyKeyReused
            | Error::Overloaded
            | Error::NotLeader => OpError::known(e.code()),
            Error::Storage(_) | Error::ShuttingDown | Error::OutcomeUnknown => {
                OpError::unknown(e.code())
            }
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code)
    }
}

impl std::error::Error for OpError {}

pub type OpResult<T> = Result<T, OpError>;

/// A placed order, as far as a workload needs it.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub order_id: OrderId,
    pub pay_amount: Krw,
}

/// A running server: its keep-alive connections and the admin token.
#[derive(Clone)]
pub struct HttpTarget {
    client: Arc<HttpClient>,
    url: Arc<str>,
    admin_token: Option<String>,
    requests: Arc<RequestLatencies>,
    reach: Arc<Reach>,
    /// With `--keys`: each change request carries a new key, `<prefix>-<n>`.
    keys: Option<Arc<KeySource>>,
    /// With `--auth-jwt-secret`: the tokens it sends (the server checks them).
    tokens: Option<Arc<Tokens>>,
}

/// Who a request acts as, for the token it carries when the server checks tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// An admin route: the static admin token if given, else an admin JWT.
    Admin,
    /// An admin route the load itself calls (a refund): the admin's token
    /// as for `Admin`, and with `--keys` a key as on every change request.
    Operator,
    /// A customer's request: that user's token.
    User(UserId),
    /// A request of the bench itself (creating users, reading a coupon or
    /// an order to check the run): an admin JWT, and no token without one.
    Bench,
}

/// Users whose token is kept once minted; past this, tokens are minted per request.
const TOKENS_KEPT_MAX: usize = 100_000;
/// How long minted tokens are valid: longer than any run.
const TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// HS256 tokens for a server started with `--auth-jwt-secret`: one per
/// user (`sub` = the user id), minted on first use, and an admin's.
pub struct Tokens {
    secret: Vec<u8>,
    admin: String,
    users: Mutex<std::collections::HashMap<u64, Arc<str>>>,
}

impl Tokens {
    pub fn new(secret: &str) -> Result<Tokens, String> {
        let secret = secret.as_bytes().to_vec();
        let admin = crate::http::auth::mint_hs256(&secret, None, true, TOKEN_TTL_SECS)?;
        Ok(Tokens {
            secret,
            admin,
            users: Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn user(&self, id: UserId) -> Arc<str> {
        let mut kept = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = kept.get(&id.0) {
            return t.clone();
        }
        let token: Arc<str> =
            crate::http::auth::mint_hs256(&self.secret, Some(id.0), false, TOKEN_TTL_SECS)
                .unwrap_or_default()
                .into();
        if kept.len() < TOKENS_KEPT_MAX {
            kept.insert(id.0, token.clone());
        }
        token
    }
}

/// New idempotency keys, unique within a run and across runs.
pub struct KeySource {
    prefix: String,
    next: AtomicU64,
}

impl KeySource {
    pub fn new() -> KeySource {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        KeySource {
            prefix: format!("bench-{nanos:x}"),
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource::new()
    }
}

/// Attempts in a row that could not reach the server (refused, reset, cut
/// off or unanswered within the timeout) after which it is taken for gone...
pub const UNREACHABLE_ATTEMPTS: u64 = 200;
/// ...or the time from the first such attempt with no answer since.
pub const UNREACHABLE_MS: u64 = 3_000;

/// Whether the server still answers. Any answer, whatever its status,
/// resets the count; once gone, the target stays gone and every call fails
/// at once with `UNREACHABLE`, so the bench stops instead of hammering a
/// dead address.
struct Reach {
    base: Instant,
    failed_in_row: AtomicU64,
    /// Milliseconds after `base`, plus one, of the first failure of the
    /// current row; 0 while the server answers.
    failing_since: AtomicU64,
    last_error: Mutex<Option<String>>,
    gone: OnceLock<String>,
}

impl Reach {
    fn new() -> Reach {
        Reach {
            base: Instant::now(),
            failed_in_row: AtomicU64::new(0),
            failing_since: AtomicU64::new(0),
            last_error: Mutex::new(None),
            gone: OnceLock::new(),
        }
    }

    fn answered(&self) {
        if self.failed_in_row.load(Ordering::Relaxed) != 0 {
            self.failed_in_row.store(0, Ordering::Relaxed);
            self.failing_since.store(0, Ordering::Relaxed);
        }
    }

    fn failed(&self, url: &str, error: &ExchangeError) {
        let text = match error {
            ExchangeError::Timeout => "no answer within the request timeout".to_owned(),
            ExchangeError::Transport(e) => e.to_string(),
        };
        let in_row = self.failed_in_row.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let _ =
            self.failing_since
                .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
        let since = self.failing_since.load(Ordering::Relaxed);
        let failing_ms = now_ms.saturating_sub(since.max(1));
        if in_row >= UNREACHABLE_ATTEMPTS || (since != 0 && failing_ms >= UNREACHABLE_MS) {
            self.gone.get_or_init(|| {
                format!(
                    "the server at {url} is unreachable: {in_row} attempts in a row over {:.1} s \
                     could not reach it (last: {text})",
                    failing_ms as f64 / 1e3
                )
            });
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}

/// The latency of each HTTP request on its own, from writing it to having
/// read the whole response (an operation such as place + pay is two
/// requests; workloads time operations). Only the workers' requests sent
/// once the measured window is open are recorded: not setup's, not the
/// warm-up's, not the invariant check's.
struct RequestLatencies {
    from: OnceLock<Instant>,
    stopped: AtomicBool,
    answered: Mutex<Histogram<u64>>,
    ok: AtomicU64,
}

#[derive(Clone)]
pub enum Target {
    Embedded(Engine),
    Http(HttpTarget),
}

#[derive(Deserialize)]
struct IdBody {
    id: u64,
}

#[derive(Deserialize)]
struct OrderBody {
    id: u64,
    pay_amount: u64,
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

#[derive(Deserialize)]
struct ProductBody {
    stock: u64,
}

#[derive(Deserialize)]
struct BalanceBody {
    balance: u64,
}

#[derive(Deserialize)]
struct CouponBody {
    remaining: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
}

impl HttpTarget {
    /// With `keys`, every POST but the admin setup's carries an `Idempotency-Key`.
    /// With `auth_secret`, requests carry HS256 tokens minted with it.
    pub fn new(
        url: &str,
        admin_token: Option<String>,
        keys: bool,
        auth_secret: Option<&str>,
    ) -> Result<HttpTarget, String> {
        let tokens = auth_secret.map(Tokens::new).transpose()?.map(Arc::new);
        // Whatever path the URL has goes before `/api/v1`.
        let client = HttpClient::new(url, Duration::from_secs(30))?;
        Ok(HttpTarget {
            client: Arc::new(client),
            url: Arc::from(url),
            admin_token,
            reach: Arc::new(Reach::new()),
            keys: keys.then(|| Arc::new(KeySource::new())),
            tokens,
            requests: Arc::new(RequestLatencies {
                from: OnceLock::new(),
                stopped: AtomicBool::new(false),
                answered: Mutex::new(
                    Histogram::new(3).map_err(|e| format!("latency histogram: {e}"))?,
                ),
                ok: AtomicU64::new(0),
            }),
        })
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        who: Who,
    ) -> OpResult<T> {
        let body = body.map(|b| b.to_string().into_bytes());
        let admin = who == Who::Admin;
        let user_token;
        let bearer = match (who, &self.tokens) {
            (Who::Admin | Who::Operator, _) if self.admin_token.is_some() => {
                self.admin_token.as_deref()
            }
            (Who::Admin | Who::Operator | Who::Bench, Some(t)) => Some(t.admin.as_str()),
            (Who::User(id), Some(t)) => {
                user_token = t.user(id);
                Some(&*user_token)
            }
            _ => None,
        };
        if self.reach.gone.get().is_some() {
            return Err(OpError::unknown(UNREACHABLE));
        }
        let key = match &self.keys {
            Some(keys) if method == Method::POST && !admin => Some(keys.next()),
            _ => None,
        };
        let started = Instant::now();
        let answer = self
            .client
            .send_keyed(
                &method,
                &format!("/api/v1{path}"),
                bearer,
                key.as_deref(),
                body.as_deref(),
            )
            .await
            .map_err(|e| {
                self.reach.failed(&self.url, &e);
                OpError::unknown(match e {
                    ExchangeError::Timeout => TIMEOUT,
                    ExchangeError::Transport(_) => TRANSPORT,
                })
            })?;
        self.reach.answered();
        self.requests.record(started, answer.status);
        let status =
            StatusCode::from_u16(answer.status).map_err(|_| OpError::unknown("BAD_STATUS"))?;
        let bytes = answer.body;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|_| OpError::known("BAD_BODY"));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            // 5xx other than a refusal to take work may have done something.
            Ok(e) if status.is_server_error() && e.code != "OVERLOADED" => {
                Err(OpError::unknown(e.code))
            }
            Ok(e) => Err(OpError::known(e.code)),
            Err(_) => Err(OpError::unknown(format!("HTTP_{}", status.as_u16()))),
        }
    }
}

/// The error code of an attempt that reached no server: refused, reset or cut off.
pub const TRANSPORT: &str = "TRANSPORT";
/// ...or that got no answer within the request timeout.
pub const TIMEOUT: &str = "TIMEOUT";
/// ...or that was not made: the server was already taken for gone.
pub const UNREACHABLE: &str = "UNREACHABLE";

impl OpError {
    /// True when the attempt could not reach the server: nothing can be
    /// concluded from it, neither success nor a violated invariant.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.code.as_str(), TRANSPORT | TIMEOUT | UNREACHABLE)
    }
}

impl HttpTarget {
    /// `GET /health` once: `Err` with a sentence when no server answers;
    /// then whether the server checks tokens, and takes the bench's.
    pub async fn probe(&self) -> Result<(), String> {
        self.probe_health().await?;
        self.probe_auth().await
    }

    /// A user read (user 1, which may not exist): 401 means the server
    /// checks tokens, and either the bench sends none or the server refuses them.
    async fn probe_auth(&self) -> Result<(), String> {
        let token = self.tokens.as_ref().map(|t| t.user(UserId(1)));
        let answer = self
            .client
            .send(&Method::GET, "/api/v1/users/1", token.as_deref(), None)
            .await;
        match answer {
            Ok(a) if a.status == 401 && token.is_none() => Err(format!(
                "the server at {} requires customer authentication (401 UNAUTHORIZED without a token): \
                 give --auth-jwt-secret with the server's secret",
                self.url
            )),
            Ok(a) if a.status == 401 => Err(format!(
                "the server at {} refuses the bench's tokens (401 UNAUTHORIZED): \
                 is --auth-jwt-secret the server's secret?",
                self.url
            )),
            _ => Ok(()),
        }
    }

    async fn probe_health(&self) -> Result<(), String> {
        match self.client.send(&Method::GET, "/health", None, None).await {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!(
                "the server at {} answered GET /health with {}: is it a commerce-engine?",
                self.url, a.status
            )),
            Err(ExchangeError::Timeout) => Err(format!(
                "the server at {} did not answer GET /health within the request timeout",
                self.url
            )),
            Err(ExchangeError::Transport(e)) => Err(format!(
                "the server at {} cannot be reached ({e}): is it running?",
                self.url
            )),
        }
    }
}

/// `process_resident_memory_bytes` of a Prometheus text page, in MiB.
fn resident_mib(page: &str) -> Option<f64> {
    let line = page
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))?;
    let bytes: f64 = line.rsplit(' ').next()?.parse().ok()?;
    (bytes.is_finite() && bytes >= 0.0).then(|| bytes / (1024.0 * 1024.0))
}

impl RequestLatencies {
    fn record(&self, started: Instant, status: u16) {
        if self.from.get().is_none_or(|from| started < *from)
            || self.stopped.load(Ordering::Relaxed)
        {
            return;
        }
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Auto-resizing: `record` grows the histogram rather than clamping.
        let _ = self
            .answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(ns.max(1));
        if (200..300).contains(&status) {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Target {
    /// Over HTTP, starts timing each request on its own from `from` on.
    pub fn time_requests_from(&self, from: Instant) {
        if let Target::Http(h) = self {
            let _ = h.requests.from.set(from);
        }
    }

    /// Over HTTP, stops timing requests (the workers are done).
    pub fn stop_timing_requests(&self) {
        if let Target::Http(h) = self {
            h.requests.stopped.store(true, Ordering::Relaxed);
        }
    }

    /// Over HTTP: the latency of every answered request in the measured
    /// window, and how many of them succeeded (2xx).
    pub fn request_latencies(&self) -> Option<(Histogram<u64>, u64)> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => Some((
                h.requests
                    .answered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                h.requests.ok.load(Ordering::Relaxed),
            )),
        }
    }

    /// Embedded: the data platform's backlog (events pending) now.
    pub fn backlog(&self) -> Option<u64> {
        match self {
            Target::Embedded(e) => Some(e.metrics().outbox_pending),
            Target::Http(_) => None,
        }
    }

    /// With `--url`: the server's resident memory (MiB), from its
    /// `/metrics`; `None` embedded, or when the server does not say. Not
    /// counted among the workers' requests. Gives up after half a second,
    /// so a slow server does not hold up the run's once-a-second timeline.
    pub async fn server_rss_mib(&self) -> Option<f64> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => {
                if h.reach.gone.get().is_some() {
                    return None;
                }
                let scrape = h.client.send(&Method::GET, "/metrics", None, None);
                let answer = tokio::time::timeout(Duration::from_millis(500), scrape)
                    .await
                    .ok()?
                    .ok()?;
                if answer.status != 200 {
                    return None;
                }
                resident_mib(std::str::from_utf8(&answer.body).ok()?)
            }
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Target::Embedded(_))
    }

    /// Over HTTP: the server is taken for gone (see [`UNREACHABLE_ATTEMPTS`]).
    pub fn is_gone(&self) -> bool {
        matches!(self, Target::Http(h) if h.reach.gone.get().is_some())
    }

    /// Over HTTP, once the server is taken for gone: why.
    pub fn unreachable(&self) -> Option<String> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => h.reach.gone.get().cloned(),
        }
    }

    /// Over HTTP, the last attempt that reached no server, if any.
    pub fn last_transport_error(&self) -> Option<String> {
        match self {
            Target::Embedded(_) => None,
            Target::Http(h) => h
                .reach
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    pub async fn create_user(&self, name: &str) -> OpResult<UserId> {
        match self {
            Target::Embedded(e) => Ok(e.create_user(name, None).await?.id),
            Target::Http(h) => {
                let b: IdBody = h
                    .call(
                        Method::POST,
                        "/users",
                        Some(json!({ "name": name })),
                        Who::Bench,
                    )
                    .await?;
                Ok(UserId(b.id))
            }
        }
    }

    pub async fn charge(&self, user: UserId, amount: Krw) -> OpResult<()> {
        match self {
            Target::Embedded(e) => e
                .charge(user, amount, None)
                .await
                .map(drop)
                .map_err(Into::into),
            Target::Http(h) => {
                let path = format!("/users/{user}/balance/charge");
                let _: BalanceBody = h
                    .call(
                        Method::POST,
                        &path,
                        Some(json!({ "amount": amount.0 })),
                        Who::User(user),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    pub async fn balance(&self, user: UserId) -> OpResult<Krw> {
        match self {
            Target::Embedded(e) => Ok(e.balance(user).await?.balance),
            Target::Http(h) => {
                let path = format!("/users/{user}/balance");
                let b: BalanceBody = h.call(Method::GET, &path, None, Who::User(user)).await?;
                Ok(Krw(b.balance))
            }
        }
    }

    pub async fn create_product(&self, name: &str, price: Krw, stock: u64) -> OpResult<ProductId> {
        match self {
            Target::Embedded(e) => Ok(e.create_product(name, price, stock, None).await?.id),
            Target::Http(h) => {
                let body = json!({ "name": name, "price": price.0, "stock": stock });
                let b: IdBody = h
                    .call(Method::POST, "/products", Some(body), Who::Admin)
                    .await?;
                Ok(ProductId(b.id))
            }
        }
    }

    /// The stock a product can still sell now.
    pub async fn product_stock(&self, id: ProductId) -> OpResult<u64> {
        match self {
            Target::Embedded(e) => Ok(e.product(id).await?.stock),
            Target::Http(h) => {
                let b: ProductBody = h
                    .call(Method::GET, &format!("/products/{id}"), None, Who::Bench)
                    .await?;
                Ok(b.stock)
            }
        }
    }

    pub async fn create_coupon(&self, name: &str, off: Krw, quantity: u64) -> OpResult<CouponId> {
        match self {
            Target::Embedded(e) => {
                let new = NewCoupon {
                    name: name.to_owned(),
                    discount: Discount::Fixed { amount: off },
                    quantity,
                    expires_at: None,
                    terms: Default::default(),
                };
                Ok(e.create_coupon(new, None).await?.id)
            }
            Target::Http(h) => {
                let body = json!({
                    "name": name,
                    "discount": { "kind": "fixed", "amount": off.0 },
                    "quantity": quantity,
                });
                let b: IdBody = h
                    .call(Method::POST, "/coupons", Some(body), Who::Admin)
                    .await?;
                Ok(CouponId(b.id))
            }
        }
    }

    /// Coupons of a campaign still to issue.
    pub async fn coupon_remaining(&self, id: CouponId) -> OpResult<u64> {
        match self {
            Target::Embedded(e) => Ok(e.coupon(id).await?.remaining),
            Target::Http(h) => {
                let b: CouponBody = h
                    .call(Method::GET, &format!("/coupons/{id}"), None, Who::Bench)
                    .await?;
                Ok(b.remaining)
            }
        }
    }

    pub async fn issue_coupon(&self, coupon: CouponId, user: UserId) -> OpResult<()> {
        match self {
            Target::Embedded(e) => e
                .issue_coupon(coupon, user, None)
                .await
                .map(drop)
                .map_err(Into::into),
            Target::Http(h) => {
                let path = format!("/coupons/{coupon}/issue");
                let _: IdBody = h
                    .call(
                        Method::POST,
                        &path,
                        Some(json!({ "user_id": user.0 })),
                        Who::User(user),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    /// Places a one-line order.
    pub async fn place(&self, user: UserId, product: ProductId, quantity: u64) -> OpResult<Placed> {
        match self {
            Target::Embedded(e) => {
                let order = PlaceOrder {
                    user_id: user,
                    source: OrderSource::Items(vec![LineRequest {
                        product_id: product,
                        quantity,
                    }]),
                    user_coupon_id: None,
                };
                let o = e.place_order(order, None).await?;
                Ok(Placed {
                    order_id: o.id,
                    pay_amount: o.pay_amount,
                })
            }
            Target::Http(h) => {
                let body = json!({
                    "user_id": user.0,
                    "items": [{ "product_id": product.0, "quantity": quantity }],
                });
                let o: OrderBody = h
                    .call(Method::POST, "/orders", Some(body), Who::User(user))
                    .await?;
                Ok(Placed {
                    order_id: OrderId(o.id),
                    pay_amount: Krw(o.pay_amount),
                })
            }
        }
    }

    /// Pays `order`, as its user `user`.
    pub async fn pay(&self, user: UserId, order: OrderId) -> OpResult<()> {
        match self {
            Target::Embedded(e) => e.pay_order(order, None).await.map(drop).map_err(Into::into),
            Target::Http(h) => {
                let path = format!("/orders/{order}/payment");
                let _: IdBody = h.call(Method::POST, &path, None, Who::User(user)).await?;
                Ok(())
            }
        }
    }

    /// Refunds all of `order` (admin).
    pub async fn refund(&self, order: OrderId) -> OpResult<()> {
        match self {
            Target::Embedded(e) => e
                .refund_order(order, RefundRequest::default(), None)
                .await
                .map(drop)
                .map_err(Into::into),
            Target::Http(h) => {
                let path = format!("/orders/{order}/refund");
                let _: IdBody = h
                    .call(Method::POST, &path, Some(json!({})), Who::Operator)
                    .await?;
                Ok(())
            }
        }
    }

    /// An order's status as `API.md` spells it (`paid`, `pending`, ...).
    pub async fn order_status(&self, order: OrderId) -> OpResult<String> {
        match self {
            Target::Embedded(e) => {
                let o = e.order(order).await?;
                let json =
                    serde_json::to_value(o.status).map_err(|_| OpError::known("BAD_BODY"))?;
                Ok(json.as_str().unwrap_or_default().to_owned())
            }
            Target::Http(h) => {
                let b: StatusBody = h
                    .call(Method::GET, &format!("/orders/{order}"), None, Who::Bench)
                    .await?;
                Ok(b.status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_rss_is_read_from_its_metrics_page() {
        let page = "# HELP process_resident_memory_bytes x\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 3145728\n\
                    engine_users 10\n";
        assert_eq!(resident_mib(page), Some(3.0));
        assert_eq!(resident_mib("engine_users 10\n"), None);
        assert_eq!(resident_mib("process_resident_memory_bytes NaN\n"), None);
        assert_eq!(resident_mib("process_resident_memory_bytes -1\n"), None);
    }
}
