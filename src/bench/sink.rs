//! The bench's own data platform (`--data-platform http`): an HTTP server
//! on 127.0.0.1, on a thread and runtime of its own, that takes batches of
//! events (JSON arrays) and counts them. It parses each body (so a malformed
//! one is refused with 400, as a real platform would) but keeps nothing,
//! so it costs the machine little next to the engine it measures.
//!
//! `--data-platform-down-secs N` makes it answer 503 from the start of the
//! load for N seconds: the backlog builds up on disk, then drains.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    events: AtomicU64,
    requests: AtomicU64,
    /// Requests answered 503 while down.
    refused: AtomicU64,
    down_until: Mutex<Option<Instant>>,
}

impl Counts {
    fn is_down(&self) -> bool {
        let until = *self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }
}

pub struct BenchSink {
    pub url: String,
    counts: Arc<Counts>,
    down_for: Option<Duration>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

async fn receive(State(c): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    c.requests.fetch_add(1, Ordering::Relaxed);
    if c.is_down() {
        c.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body) {
        Ok(events) => {
            c.events.fetch_add(events.len() as u64, Ordering::Relaxed);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl BenchSink {
    /// Starts the sink on a port of its own; `down_for`: how long it
    /// refuses once [`start_outage`](BenchSink::start_outage) is called.
    pub fn start(down_for: Option<Duration>) -> std::io::Result<BenchSink> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/events", post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(counts.clone());
        let rt = crate::engine::current_thread_runtime(true)?;
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(BenchSink {
            url,
            counts,
            down_for,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The load begins: refuse for the outage asked, if any.
    pub fn start_outage(&self) {
        if let Some(d) = self.down_for {
            *self
                .counts
                .down_until
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + d);
        }
    }

    /// Events accepted so far.
    pub fn events(&self) -> u64 {
        self.counts.events.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Requests refused during the outage.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }
}

impl Drop for BenchSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
