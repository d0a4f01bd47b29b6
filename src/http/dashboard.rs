//! The operator's dashboard: `GET /dashboard`, one page whose HTML, script
//! and style are compiled into the binary (`src/http/dashboard/`), and the
//! throughput history it charts.
//!
//! The page asks for the admin token once (kept in `sessionStorage`, so for
//! the tab's lifetime only) or takes it from the URL fragment
//! (`/dashboard#token=...`, for a wall display: a fragment never leaves the
//! browser), then polls `GET /api/v1/admin/overview`
//! ([`crate::http::routes::overview`]) every 2 seconds and draws what it
//! answers. Nothing is fetched from anywhere else: the page is served with
//! a `Content-Security-Policy` that allows this origin only, so a stray
//! reference elsewhere is refused by the browser and reported as an error.
//!
//! [`Throughput`] keeps the history: every second the server's sampler
//! ([`spawn_sampler`], run by [`serve`](crate::http::server::serve)) reads
//! a few running totals (requests answered, orders placed and paid, journal
//! batches and the time spent writing them) into a ring of the last 10
//! minutes, [`SAMPLES_MAX`] entries at most. Rates are differences of those
//! totals, so a missed tick only widens one interval.

use crate::engine::Engine;
use crate::http::server::AppState;
use crate::store::writer::Step;
use axum::body::Bytes;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How often the sampler reads the running totals.
pub const SAMPLE_EVERY_MS: u64 = 1_000;
/// Samples kept: 10 minutes of one-second intervals.
pub const SAMPLES_MAX: usize = 601;
/// The chart's step: one point per 5 seconds (120 points over 10 minutes).
pub const HISTORY_STEP_MS: u64 = 5_000;
/// "Now" is the rate over the last 5 seconds.
pub const NOW_WINDOW_MS: u64 = 5_000;

const PAGE_HTML: &str = include_str!("dashboard/index.html");
const PAGE_JS: &str = include_str!("dashboard/app.js");
const PAGE_CSS: &str = include_str!("dashboard/app.css");
const PAGE_ICON: &str = include_str!("dashboard/icon.svg");

/// This origin only: the page's script, style and API calls. No inline
/// script or style, no frames, no forms sent elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// The dashboard's state, shared by every request: the throughput history
/// and the last overview answered.
#[derive(Default)]
pub struct Dashboard {
    pub throughput: Throughput,
    /// The last overview and when it was computed: reused for a second, so
    /// any number of open dashboards cost one computation a second.
    pub overview: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

/// Running totals read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests that reached the router (every route, the dashboard's own too).
    pub requests: u64,
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub journal_batches: u64,
    /// Microseconds the journal writer spent writing and flushing batches.
    pub journal_write_us: u64,
}

impl Counters {
    /// The engine's totals now, and the requests `throughput` counted.
    pub fn read(engine: &Engine, throughput: &Throughput) -> Counters {
        let m = engine.metrics();
        Counters {
            requests: throughput.requests(),
            orders_placed: m.business.orders_placed,
            orders_paid: m.business.orders_paid,
            journal_batches: m.journal_batches,
            journal_write_us: m.journal_steps.get(Step::Writing),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    counters: Counters,
}

/// Requests counted as they arrive, and the ring of samples.
#[derive(Default)]
pub struct Throughput {
    requests: AtomicU64,
    samples: Mutex<VecDeque<Sample>>,
}

/// Rates over one interval.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rates {
    /// The interval's length in seconds (0 when nothing is known yet).
    pub secs: f64,
    pub requests_per_sec: f64,
    pub orders_placed_per_sec: f64,
    pub orders_paid_per_sec: f64,
    /// Mean time to write and flush one journal batch (ms); null when no
    /// batch was written in the interval.
    pub journal_flush_ms: Option<f64>,
}

impl Rates {
    fn between(a: &Sample, b: &Sample) -> Rates {
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        let per_sec = |x: u64, y: u64| {
            if secs > 0.0 {
                y.saturating_sub(x) as f64 / secs
            } else {
                0.0
            }
        };
        let (a, b) = (&a.counters, &b.counters);
        let batches = b.journal_batches.saturating_sub(a.journal_batches);
        let write_us = b.journal_write_us.saturating_sub(a.journal_write_us);
        Rates {
            secs,
            requests_per_sec: per_sec(a.requests, b.requests),
            orders_placed_per_sec: per_sec(a.orders_placed, b.orders_placed),
            orders_paid_per_sec: per_sec(a.orders_paid, b.orders_paid),
            journal_flush_ms: (batches > 0).then(|| write_us as f64 / batches as f64 / 1e3),
        }
    }

    fn unknown() -> Rates {
        Rates {
            secs: 0.0,
            requests_per_sec: 0.0,
            orders_placed_per_sec: 0.0,
            orders_paid_per_sec: 0.0,
            journal_flush_ms: None,
        }
    }
}

impl Throughput {
    /// Counts one request (the router calls it for each).
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the totals read at `at`; the oldest sample goes past [`SAMPLES_MAX`].
    pub fn record(&self, at: Instant, counters: Counters) {
        let mut samples = self.samples();
        if samples.len() >= SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back(Sample { at, counters });
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.samples().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rates from the newest sample at least [`NOW_WINDOW_MS`] older
    /// than `at` (or the oldest there is) to `current`, read at `at`.
    pub fn now(&self, at: Instant, current: Counters) -> Rates {
        let samples = self.samples();
        let window = Duration::from_millis(NOW_WINDOW_MS);
        let base = samples
            .iter()
            .rev()
            .find(|s| at.saturating_duration_since(s.at) >= window)
            .or_else(|| samples.front());
        match base {
            Some(base) if base.at < at => Rates::between(
                base,
                &Sample {
                    at,
                    counters: current,
                },
            ),
            _ => Rates::unknown(),
        }
    }

    /// One point per [`HISTORY_STEP_MS`] over the samples kept, oldest
    /// first: each the rates since the point before it. Walks back from the
    /// newest sample, so the last point always ends at the newest sample;
    /// the oldest point covers what is left, less than a step when the
    /// samples do not divide evenly (a chart has a point a second after the
    /// server starts, not only after a whole step).
    pub fn history(&self) -> Vec<Rates> {
        let samples = self.samples();
        // Half a tick of slack: ticks are a second apart give or take.
        let step = Duration::from_millis(HISTORY_STEP_MS - SAMPLE_EVERY_MS / 2);
        let mut points = Vec::with_capacity(samples.len() / 4 + 1);
        let mut later: Option<&Sample> = None;
        for s in samples.iter().rev() {
            match later {
                None => later = Some(s),
                Some(l) if l.at.saturating_duration_since(s.at) >= step => {
                    points.push(Rates::between(s, l));
                    later = Some(s);
                }
                Some(_) => {}
            }
        }
        if let (Some(l), Some(oldest)) = (later, samples.front()) {
            if oldest.at < l.at {
                points.push(Rates::between(oldest, l));
            }
        }
        points.reverse();
        points
    }
}

/// Samples the totals now, before the server answers anything, then every
/// [`SAMPLE_EVERY_MS`] until aborted: the first overview already has an
/// interval to measure rates over, however soon it is asked for.
pub fn spawn_sampler(engine: Engine, dashboard: Arc<Dashboard>) -> tokio::task::JoinHandle<()> {
    let first = Counters::read(&engine, &dashboard.throughput);
    dashboard.throughput.record(Instant::now(), first);
    tokio::spawn(async move {
        let every = Duration::from_millis(SAMPLE_EVERY_MS);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let counters = Counters::read(&engine, &dashboard.throughput);
            dashboard.throughput.record(Instant::now(), counters);
        }
    })
}

/// The page and its assets.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .route("/dashboard/app.js", axum::routing::get(script))
        .route("/dashboard/app.css", axum::routing::get(style))
        .route("/dashboard/icon.svg", axum::routing::get(icon))
}

/// An asset, with headers that keep it to this origin and never sniffed.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
}

/// The operator's dashboard: throughput, orders by status, top products,
/// stock running low, campaigns' remaining coupons, the data platform's
/// backlog, the journal's and snapshots' health. It asks for the admin
/// token (or reads `#token=...`) and polls `/api/v1/admin/overview`.
#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, description = "The page (HTML; its script and style are /dashboard/app.js and /dashboard/app.css)", body = String, content_type = "text/html")))]
async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE_HTML)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

/// The tab's icon: declared by the page, so the browser asks for no
/// `/favicon.ico` (a 404 it would report as an error).
async fn icon() -> impl IntoResponse {
    asset("image/svg+xml", PAGE_ICON)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(requests: u64, paid: u64, batches: u64, write_us: u64) -> Counters {
        Counters {
            requests,
            orders_placed: paid,
            orders_paid: paid,
            journal_batches: batches,
            journal_write_us: write_us,
        }
    }

    #[test]
    fn the_ring_keeps_ten_minutes_of_samples_and_no_more() {
        // proves the history is bounded: after 2,000 one-second samples, SAMPLES_MAX remain, the newest ones
        let t = Throughput::default();
        let start = Instant::now();
        for i in 0..2_000u64 {
            t.record(start + Duration::from_secs(i), counters(i, i, 0, 0));
        }
        assert_eq!(t.len(), SAMPLES_MAX);
        let history = t.history();
        // 600 seconds kept, one point per 5: 120 points, each 5 s at 1/s.
        assert_eq!(history.len(), 120);
        assert!(history
            .iter()
            .all(|r| r.secs == 5.0 && r.requests_per_sec == 1.0));
    }

    #[test]
    fn rates_are_differences_of_totals_over_the_time_between_samples() {
        // proves the arithmetic: requests, paid orders and mean flush time per interval, a missed tick widening one interval
        let t = Throughput::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // 100 requests/s and 10 paid orders/s; 4 batches a second of 500 µs each.
        for s in 0..=10u64 {
            if s == 7 {
                continue; // a missed tick
            }
            t.record(at(s), counters(100 * s, 10 * s, 4 * s, 2_000 * s));
        }
        let history = t.history();
        assert_eq!(history.len(), 2, "{history:?}");
        for r in &history {
            assert_eq!(r.secs, 5.0);
            assert_eq!(r.requests_per_sec, 100.0);
            assert_eq!(r.orders_paid_per_sec, 10.0);
            assert_eq!(r.journal_flush_ms, Some(0.5));
        }
        // Now: from the sample 5 s before 12 s (second 7 is missing: 6 is used).
        let now = t.now(at(12), counters(100 * 12, 10 * 12 + 60, 48, 96_000));
        assert_eq!(now.secs, 6.0);
        assert_eq!(now.requests_per_sec, 100.0);
        assert_eq!(now.orders_paid_per_sec, 20.0);
        // No batch in the interval: no flush time, not a division by zero.
        let idle = t.now(at(15), counters(1_000, 100, 40, 80_000));
        assert_eq!(idle.journal_flush_ms, None);
    }

    #[test]
    fn the_oldest_point_covers_what_is_left_of_a_step() {
        // proves a history shorter than a step still has a point, and 7 s of samples give a 5 s point after a 2 s one
        let t = Throughput::default();
        let start = Instant::now();
        for s in 0..=2u64 {
            t.record(start + Duration::from_secs(s), counters(10 * s, s, 0, 0));
        }
        let history = t.history();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!((history[0].secs, history[0].requests_per_sec), (2.0, 10.0));
        for s in 3..=7u64 {
            t.record(start + Duration::from_secs(s), counters(10 * s, s, 0, 0));
        }
        let secs: Vec<f64> = t.history().iter().map(|r| r.secs).collect();
        assert_eq!(secs, vec![2.0, 5.0]);
    }

    #[test]
    fn with_no_sample_yet_rates_are_unknown_not_infinite() {
        // proves an empty or one-sample history answers zero-length rates, never NaN or a division by zero
        let t = Throughput::default();
        let start = Instant::now();
        assert_eq!(t.now(start, counters(5, 5, 1, 1)), Rates::unknown());
        assert!(t.history().is_empty());
        t.record(start, counters(0, 0, 0, 0));
        assert!(t.history().is_empty());
        assert_eq!(t.now(start, counters(5, 5, 1, 1)), Rates::unknown());
        let r = t.now(start + Duration::from_millis(500), counters(5, 5, 1, 1_000));
        assert_eq!((r.secs, r.requests_per_sec), (0.5, 10.0));
        assert_eq!(r.journal_flush_ms, Some(1.0));
    }
}
