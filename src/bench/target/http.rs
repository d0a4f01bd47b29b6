//! A running server as a benchmark target: its keep-alive connections,
//! the tokens and keys its requests carry, whether it still answers, and
//! the latency of each request.

use super::credentials::{KeySource, Tokens};
use super::reach::Reach;
use super::{OpError, OpResult, Placed, TIMEOUT, TRANSPORT, UNREACHABLE};
use crate::bench::http_client::{ExchangeError, HttpClient};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::OrderStatus;
use axum::http::{Method, StatusCode};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

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
    status: OrderStatus,
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

impl HttpTarget {
    /// Starts timing each request on its own from `from` on.
    pub(super) fn time_requests_from(&self, from: Instant) {
        let _ = self.requests.from.set(from);
    }

    /// Stops timing requests (the workers are done).
    pub(super) fn stop_timing_requests(&self) {
        self.requests.stopped.store(true, Ordering::Relaxed);
    }

    /// The latency of every answered request in the measured window, and
    /// how many of them succeeded (2xx).
    pub(super) fn request_latencies(&self) -> (Histogram<u64>, u64) {
        (
            self.requests
                .answered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            self.requests.ok.load(Ordering::Relaxed),
        )
    }

    /// The server's resident memory (MiB), from its `/metrics`; `None`
    /// when it does not say, or not within half a second.
    pub(super) async fn server_rss_mib(&self) -> Option<f64> {
        if self.reach.gone.get().is_some() {
            return None;
        }
        let scrape = self.client.send(&Method::GET, "/metrics", None, None);
        let answer = tokio::time::timeout(Duration::from_millis(500), scrape)
            .await
            .ok()?
            .ok()?;
        if answer.status != 200 {
            return None;
        }
        resident_mib(std::str::from_utf8(&answer.body).ok()?)
    }

    /// The server is taken for gone (see [`UNREACHABLE_ATTEMPTS`](super::UNREACHABLE_ATTEMPTS)).
    pub(super) fn is_gone(&self) -> bool {
        self.reach.gone.get().is_some()
    }

    /// Once the server is taken for gone: why.
    pub(super) fn unreachable(&self) -> Option<String> {
        self.reach.gone.get().cloned()
    }

    /// The last attempt that reached no server, if any.
    pub(super) fn last_transport_error(&self) -> Option<String> {
        self.reach
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The operations, as requests to the API.
impl HttpTarget {
    pub(super) async fn create_user(&self, name: &str) -> OpResult<UserId> {
        let b: IdBody = self
            .call(
                Method::POST,
                "/users",
                Some(json!({ "name": name })),
                Who::Bench,
            )
            .await?;
        Ok(UserId(b.id))
    }

    pub(super) async fn charge(&self, user: UserId, amount: Krw) -> OpResult<()> {
        let path = format!("/users/{user}/balance/charge");
        let _: BalanceBody = self
            .call(
                Method::POST,
                &path,
                Some(json!({ "amount": amount.0 })),
                Who::User(user),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn balance(&self, user: UserId) -> OpResult<Krw> {
        let path = format!("/users/{user}/balance");
        let b: BalanceBody = self.call(Method::GET, &path, None, Who::User(user)).await?;
        Ok(Krw(b.balance))
    }

    pub(super) async fn create_product(
        &self,
        name: &str,
        price: Krw,
        stock: u64,
    ) -> OpResult<ProductId> {
        let body = json!({ "name": name, "price": price.0, "stock": stock });
        let b: IdBody = self
            .call(Method::POST, "/products", Some(body), Who::Admin)
            .await?;
        Ok(ProductId(b.id))
    }

    pub(super) async fn product_stock(&self, id: ProductId) -> OpResult<u64> {
        let b: ProductBody = self
            .call(Method::GET, &format!("/products/{id}"), None, Who::Bench)
            .await?;
        Ok(b.stock)
    }

    pub(super) async fn create_coupon(
        &self,
        name: &str,
        off: Krw,
        quantity: u64,
    ) -> OpResult<CouponId> {
        let body = json!({
            "name": name,
            "discount": { "kind": "fixed", "amount": off.0 },
            "quantity": quantity,
        });
        let b: IdBody = self
            .call(Method::POST, "/coupons", Some(body), Who::Admin)
            .await?;
        Ok(CouponId(b.id))
    }

    pub(super) async fn coupon_remaining(&self, id: CouponId) -> OpResult<u64> {
        let b: CouponBody = self
            .call(Method::GET, &format!("/coupons/{id}"), None, Who::Bench)
            .await?;
        Ok(b.remaining)
    }

    pub(super) async fn issue_coupon(&self, coupon: CouponId, user: UserId) -> OpResult<()> {
        let path = format!("/coupons/{coupon}/issue");
        let _: IdBody = self
            .call(
                Method::POST,
                &path,
                Some(json!({ "user_id": user.0 })),
                Who::User(user),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn place(
        &self,
        user: UserId,
        product: ProductId,
        quantity: u64,
    ) -> OpResult<Placed> {
        let body = json!({
            "user_id": user.0,
            "items": [{ "product_id": product.0, "quantity": quantity }],
        });
        let o: OrderBody = self
            .call(Method::POST, "/orders", Some(body), Who::User(user))
            .await?;
        Ok(Placed {
            order_id: OrderId(o.id),
            pay_amount: Krw(o.pay_amount),
        })
    }

    pub(super) async fn pay(&self, user: UserId, order: OrderId) -> OpResult<()> {
        let path = format!("/orders/{order}/payment");
        let _: IdBody = self
            .call(Method::POST, &path, None, Who::User(user))
            .await?;
        Ok(())
    }

    pub(super) async fn refund(&self, order: OrderId) -> OpResult<()> {
        let path = format!("/orders/{order}/refund");
        let _: IdBody = self
            .call(Method::POST, &path, Some(json!({})), Who::Operator)
            .await?;
        Ok(())
    }

    pub(super) async fn order_status(&self, order: OrderId) -> OpResult<OrderStatus> {
        let b: StatusBody = self
            .call(Method::GET, &format!("/orders/{order}"), None, Who::Bench)
            .await?;
        Ok(b.status)
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
