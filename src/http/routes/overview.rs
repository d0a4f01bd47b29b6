//! `GET /api/v1/admin/overview`: what the operator's dashboard
//! ([`crate::http::dashboard`]) shows, in one answer, from facts the engine
//! reads cheaply: its running totals ([`Engine::metrics`]), readiness, the
//! top-products ranking as of its last refresh, the outbox's length, the
//! products' published stock and a bounded number of campaigns.
//!
//! Every list is bounded ([`LOW_STOCK_ITEMS`], [`CAMPAIGNS_MAX`],
//! [`PRODUCTS_SCANNED_MAX`]), and one computation serves every caller for
//! [`OVERVIEW_REUSE_MS`], so any number of open dashboards cost the engine
//! one overview a second. Orders by status come from the totals of durable
//! events, not from reading orders.

use crate::domain::ids::CouponId;
use crate::domain::stats::TopProducts;
use crate::domain::time::Timestamp;
use crate::domain::views::{CouponView, ProductView};
use crate::engine::{Engine, EngineMetrics, PageRequest};
use crate::http::dashboard::{Counters, Dashboard, Rates};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::Admin;
use crate::http::server::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use std::time::{Duration, Instant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Products in the "running low" list.
pub const LOW_STOCK_ITEMS: usize = 10;
/// Products read per overview at most, in id order; past it the low-stock
/// list covers the first ones only (and says so).
pub const PRODUCTS_SCANNED_MAX: usize = 50_000;
/// Products read per page of the scan.
const SCAN_PAGE: usize = 1_000;
/// Campaigns listed: the newest ones.
pub const CAMPAIGNS_MAX: usize = 50;
/// How long one computed overview answers every caller.
pub const OVERVIEW_REUSE_MS: u64 = 1_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(overview))
}

/// The shop at one moment, for its operator.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// When it was read (the engine's clock).
    pub at: Timestamp,
    pub readiness: ReadinessView,
    pub throughput: ThroughputView,
    pub orders: OrdersByStatus,
    /// KRW debited for paid orders since this process started.
    pub paid_krw: u64,
    /// Coupons issued since this process started.
    pub coupons_issued: u64,
    pub users: u64,
    /// The ranking as of its last refresh.
    pub top_products: TopProducts,
    pub low_stock: LowStock,
    pub campaigns: Campaigns,
    pub data_platform: DataPlatformView,
    pub journal: JournalHealth,
    pub snapshots: SnapshotHealth,
}

/// What `GET /ready` would answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadinessView {
    /// `ready`, `starting`, `storage_unavailable`, `standby` or `stopping`.
    pub status: &'static str,
    /// Why changes are not accepted; absent when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Throughput now and over the last 10 minutes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ThroughputView {
    /// Over the last 5 seconds.
    pub now: Rates,
    /// Seconds between two points of `history`.
    pub step_secs: u64,
    /// One point per `step_secs`, oldest first, at most 10 minutes of them;
    /// each says the seconds it covers (the oldest may cover less).
    pub history: Vec<Rates>,
}

/// Orders by status, from the durable events counted since this process
/// started: `pending` is placed minus the others.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OrdersByStatus {
    pub placed: u64,
    pub pending: u64,
    pub paid: u64,
    /// Payment refused.
    pub failed: u64,
    pub cancelled: u64,
    pub expired: u64,
}

/// The products with the least stock that can still be ordered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LowStock {
    /// At most 10, least stock first (ties by id).
    pub items: Vec<ProductView>,
    /// Products in the shop.
    pub products: u64,
    /// Products read to find them (the first ones by id, at most 50,000).
    pub scanned: u64,
}

/// Coupon campaigns and what they have left.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Campaigns {
    /// The newest campaigns, newest first, at most 50.
    pub items: Vec<CouponView>,
    /// Campaigns in the shop.
    pub campaigns: u64,
}

/// Delivery to the data platform.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DataPlatformView {
    /// Paid orders not yet accepted by the data platform (its backlog).
    pub pending: u64,
}

/// The journal's group commit.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JournalHealth {
    pub records_total: u64,
    pub batches_total: u64,
    /// Records waiting for the journal writer now.
    pub queued: u64,
    pub last_batch_records: u64,
    /// Time to write and flush the last batch (µs).
    pub last_flush_us: u64,
}

/// Snapshots since this process started.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotHealth {
    pub written_total: u64,
    pub failures_total: u64,
    /// While snapshots fail: how many in a row and the last error (changes
    /// are still accepted; the journal grows meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing: Option<SnapshotsFailing>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotsFailing {
    pub consecutive: u64,
    pub error: String,
}

/// The shop at a glance, for the operator's dashboard (admin). Computed at
/// most once a second; every caller within that second gets the same answer.
#[utoipa::path(get, path = "/api/v1/admin/overview", tag = "operations",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The overview", body = Overview),
        (status = 401, description = "UNAUTHORIZED", body = ErrorBody),
    ))]
async fn overview(_: Admin, State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let body = cached(&s.engine, &s.dashboard).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    ))
}

/// The overview of the last second, or a new one.
async fn cached(engine: &Engine, dashboard: &Dashboard) -> Result<Bytes, ApiError> {
    let mut last = dashboard.overview.lock().await;
    if let Some((at, body)) = last.as_ref() {
        if at.elapsed() < Duration::from_millis(OVERVIEW_REUSE_MS) {
            return Ok(body.clone());
        }
    }
    let overview = compute(engine, dashboard).await?;
    let body = Bytes::from(serde_json::to_vec(&overview).map_err(|e| {
        tracing::error!(error = %e, "the overview could not be serialized");
        ApiError::internal()
    })?);
    *last = Some((Instant::now(), body.clone()));
    Ok(body)
}

/// Reads everything the overview shows.
pub async fn compute(engine: &Engine, dashboard: &Dashboard) -> Result<Overview, ApiError> {
    let throughput = &dashboard.throughput;
    let m = engine.metrics();
    let now = throughput.now(Instant::now(), Counters::read(engine, throughput));
    let (top_products, low_stock, campaigns) = futures_util::try_join!(
        async { Ok::<_, ApiError>(engine.top_products().await?) },
        low_stock(engine, m.products),
        campaigns(engine, m.campaigns),
    )?;
    Ok(Overview {
        at: engine.now(),
        readiness: readiness(engine),
        throughput: ThroughputView {
            now,
            step_secs: crate::http::dashboard::HISTORY_STEP_MS / 1_000,
            history: throughput.history(),
        },
        orders: orders(&m),
        paid_krw: m.business.paid_krw,
        coupons_issued: m.business.coupons_issued,
        users: m.users,
        top_products,
        low_stock,
        campaigns,
        data_platform: data_platform(&m),
        journal: JournalHealth {
            records_total: m.journal_records,
            batches_total: m.journal_batches,
            queued: m.journal_queued,
            last_batch_records: m.journal_last_batch_records,
            last_flush_us: m.journal_last_flush_us,
        },
        snapshots: SnapshotHealth {
            written_total: m.snapshots,
            failures_total: m.snapshot_failures,
            failing: engine
                .snapshots_failing()
                .map(|(consecutive, error)| SnapshotsFailing { consecutive, error }),
        },
    })
}

fn readiness(engine: &Engine) -> ReadinessView {
    let r = engine.readiness();
    ReadinessView {
        status: r.status(),
        detail: (!r.is_ready()).then(|| r.detail()),
    }
}

/// Orders by status from the totals of durable events: every placed order
/// is pending until it is paid, failed, cancelled or expired.
pub fn orders(m: &EngineMetrics) -> OrdersByStatus {
    let b = &m.business;
    let ended = b
        .orders_paid
        .saturating_add(b.orders_failed)
        .saturating_add(b.orders_cancelled)
        .saturating_add(b.orders_expired);
    OrdersByStatus {
        placed: b.orders_placed,
        // Orders placed before a restart and ended after it are counted as
        // ended but not as placed: never below zero.
        pending: b.orders_placed.saturating_sub(ended),
        paid: b.orders_paid,
        failed: b.orders_failed,
        cancelled: b.orders_cancelled,
        expired: b.orders_expired,
    }
}

/// The data platform's backlog: the outbox's length.
fn data_platform(m: &EngineMetrics) -> DataPlatformView {
    DataPlatformView {
        pending: m.outbox_pending,
    }
}

/// The [`LOW_STOCK_ITEMS`] products with the least stock, reading at most
/// [`PRODUCTS_SCANNED_MAX`] products' published stock, a page at a time.
async fn low_stock(engine: &Engine, products: u64) -> Result<LowStock, ApiError> {
    let mut lowest: Vec<ProductView> = Vec::with_capacity(LOW_STOCK_ITEMS + SCAN_PAGE);
    let mut scanned = 0usize;
    let mut after = None;
    while scanned < PRODUCTS_SCANNED_MAX {
        let limit = SCAN_PAGE.min(PRODUCTS_SCANNED_MAX - scanned);
        let page = engine.products(PageRequest { limit, after }).await?;
        scanned += page.items.len();
        after = page.items.last().map(|p| p.id.0);
        lowest.extend(page.items);
        lowest.sort_by_key(|p| (p.stock, p.id.0));
        lowest.truncate(LOW_STOCK_ITEMS);
        if page.next.is_none() {
            break;
        }
    }
    Ok(LowStock {
        items: lowest,
        products,
        scanned: scanned as u64,
    })
}

/// The newest [`CAMPAIGNS_MAX`] campaigns (ids are dense from 1).
async fn campaigns(engine: &Engine, campaigns: u64) -> Result<Campaigns, ApiError> {
    let first = campaigns.saturating_sub(CAMPAIGNS_MAX as u64) + 1;
    let reads = (first..=campaigns)
        .rev()
        .map(|id| engine.coupon(CouponId(id)));
    let items = futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Campaigns { items, campaigns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::BusinessTotals;

    #[test]
    fn pending_orders_are_placed_minus_those_that_ended_and_never_negative() {
        // proves the status arithmetic, including totals from after a restart where more ended than were placed
        let mut m = EngineMetrics {
            business: BusinessTotals {
                orders_placed: 100,
                orders_paid: 60,
                orders_failed: 5,
                orders_cancelled: 7,
                orders_expired: 3,
                ..BusinessTotals::default()
            },
            ..EngineMetrics::default()
        };
        let o = orders(&m);
        assert_eq!(
            (
                o.placed,
                o.pending,
                o.paid,
                o.failed,
                o.cancelled,
                o.expired
            ),
            (100, 25, 60, 5, 7, 3)
        );
        m.business.orders_placed = 10;
        assert_eq!(orders(&m).pending, 0);
    }
}
