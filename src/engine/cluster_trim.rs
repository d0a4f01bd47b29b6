//! Trimming the journal stream (`serve --cluster`): every node reports
//! where its local store stands, the leader purges below the least report.
//!
//! - [`start_reporter`]: every node writes its kept position (the
//!   `cluster-position` file's content once synced, never more) to its key
//!   in `<cluster>-nodes`, at start and then every [`REPORT_EVERY`] when it
//!   moved: one small write every few seconds, none per batch.
//! - [`start_trimmer`]: every node reads the reports every `trim_every`
//!   for `/metrics` (the stream's first sequence, the least report); the
//!   leader, while its lease permits, purges the stream up to the least
//!   report ([`crate::cluster::trim`]), never its last message. The node
//!   that holds trimming back is told at warn once it lags
//!   [`FAR_BEHIND_MESSAGES`] behind the stream's end, once a minute.

use crate::cluster::nodes::ReadReport;
use crate::cluster::trim::{floor, lags_far, purge_through, Floor, FloorError};
use crate::cluster::{JournalStream, LeaseHandle, NodeReport, NodeReports};
use crate::engine::cluster_node::ClusterStatus;
use crate::store::replicated::StreamPosition;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a node reports its position when it moved.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// The default interval of the leader's trim (`--cluster-trim-secs`).
pub const TRIM_EVERY_DEFAULT_SECS: u64 = 10;

/// A node this many messages behind the stream's end, holding trimming
/// back, is named in a warning (some 100 MB of stream at 10 kB a batch).
pub const FAR_BEHIND_MESSAGES: u64 = 10_000;

/// How often that warning is repeated while it holds.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A request to NATS that does not answer within this is tried next round.
const REQUEST_WITHIN: Duration = Duration::from_secs(5);

/// Reports what `kept` holds under `node`, at start (unless `reported`
/// already is that) and whenever it changed, checked every
/// [`REPORT_EVERY`]; a failed report is made again at the next check.
/// Runs for the process's life on the current runtime.
pub fn start_reporter(
    nodes: NodeReports,
    node: String,
    kept: watch::Receiver<StreamPosition>,
    mut reported: Option<StreamPosition>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = *kept.borrow();
            if reported == Some(now) {
                continue;
            }
            let report = NodeReport {
                stream_seq: now.stream_seq,
                record_seq: now.record_seq,
            };
            match tokio::time::timeout(REQUEST_WITHIN, nodes.report(&node, report)).await {
                Ok(Ok(())) => reported = Some(now),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "the position report failed; again shortly")
                }
                Err(_) => tracing::debug!("the position report timed out; again shortly"),
            }
        }
    });
}

/// Every `every`: the stream's bounds and the least report to `/metrics`;
/// on the leader whose lease permits, the purge up to the least report.
/// Runs for the process's life on the current runtime.
pub fn start_trimmer(
    journal: JournalStream,
    nodes: NodeReports,
    status: Arc<ClusterStatus>,
    lease: LeaseHandle,
    every: Duration,
) {
    let mut trimmer = Trimmer {
        journal,
        nodes,
        status,
        lease,
        warned: None,
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            trimmer.round().await;
        }
    });
}

/// What [`start_trimmer`]'s task holds.
struct Trimmer {
    journal: JournalStream,
    nodes: NodeReports,
    status: Arc<ClusterStatus>,
    lease: LeaseHandle,
    /// When the far-behind warning was last given.
    warned: Option<Instant>,
}

impl Trimmer {
    /// One round; a request that fails or does not answer ends it.
    async fn round(&mut self) {
        let Ok(Ok(bounds)) = tokio::time::timeout(REQUEST_WITHIN, self.journal.bounds()).await
        else {
            return;
        };
        if let Some((first, _)) = bounds {
            metrics::gauge!("cluster_stream_first_seq").set(first as f64);
        }
        let Some(reports) = self.reports().await else {
            return;
        };
        let leading = self.status.is_leading() && self.lease.permit().is_some();
        let least = match floor(&reports) {
            Ok(least) => least,
            Err(FloorError::NoReports) => return,
            Err(e @ FloorError::Unreadable { .. }) => {
                if leading {
                    tracing::warn!(error = %e, "the journal stream is not trimmed");
                }
                return;
            }
        };
        metrics::gauge!("cluster_trim_floor_seq").set(least.stream_seq as f64);
        if !leading {
            return;
        }
        let last = bounds.map_or(0, |b| b.1);
        self.warn_if_far_behind(&least, last);
        let Some(through) = purge_through(least.stream_seq, bounds) else {
            return;
        };
        // The lease may have ended while the reports were read.
        if self.lease.permit().is_none() || !self.status.is_leading() {
            return;
        }
        self.purge(through, &least.node).await;
    }

    /// Every node's report; `None` when they could not be read.
    async fn reports(&self) -> Option<Vec<(String, ReadReport)>> {
        match tokio::time::timeout(REQUEST_WITHIN, self.nodes.all()).await {
            Ok(Ok(reports)) => Some(reports),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the node reports could not be read");
                None
            }
            Err(_) => None,
        }
    }

    /// Names the node holding the trim back when it lags far behind the
    /// stream's `last` message, at most once every [`WARN_EVERY`].
    fn warn_if_far_behind(&mut self, least: &Floor, last: u64) {
        if lags_far(least.stream_seq, last, FAR_BEHIND_MESSAGES)
            && self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY)
        {
            self.warned = Some(Instant::now());
            tracing::warn!(
                node = %least.node,
                reported = least.stream_seq,
                stream_last = last,
                "node {} holds the journal stream's trimming back: its store stands {} messages behind the stream's end; if it is gone for good, remove its report with cluster-forget",
                least.node,
                last.saturating_sub(least.stream_seq)
            );
        }
    }

    /// Purges the stream through message `through`, the report of `holder`.
    async fn purge(&self, through: u64, holder: &str) {
        match tokio::time::timeout(REQUEST_WITHIN, self.journal.purge_up_to(through)).await {
            Ok(Ok(purged)) => {
                metrics::counter!("cluster_stream_purged_total").increment(purged);
                metrics::gauge!("cluster_stream_first_seq").set((through + 1) as f64);
                tracing::debug!(purged, through, %holder, "trimmed the journal stream");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "trimming the journal stream failed; again next round")
            }
            Err(_) => tracing::warn!("trimming the journal stream timed out; again next round"),
        }
    }
}
