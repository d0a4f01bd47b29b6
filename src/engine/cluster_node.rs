//! A node of a cluster (`serve --cluster`): it follows the journal stream
//! as a standby until the lease makes it leader, then runs the engine with
//! a journal writer that publishes every batch to the stream first.
//!
//! - [`ClusterNode::join`]: connects, starts the lease, and places the
//!   local store in the stream (its [`StreamPosition`], kept in a file or
//!   found by a search of the stream).
//! - [`ClusterNode::follow_until_leader`]: the standby. It reads the
//!   stream from the message after its position, applies every batch to
//!   its world through recovery's code and writes it to the local store
//!   ([`follow_batch`]), snapshots locally, and, once the lease permits,
//!   reads to the stream's end, opens its term (a marker; on `Behind` it
//!   applies what is new and opens it again) and hands back what the
//!   engine starts from: the world, the store and the [`StreamReplica`].
//! - [`StreamReplica`]: the leader's journal writer's [`Replica`]: it
//!   appends each batch through the [`Replicator`] (expected last
//!   sequence, message id) and waits for the ack. A refused append, or a
//!   lease that ended, ends leadership at once ([`ClusterStatus`]).
//! - [`ClusterStatus`]: role, term and lag for the HTTP layer and `/metrics`.

use crate::cluster::{
    Cluster, ClusterError, ClusterName, JournalEntry, LeaseConfig, LeaseHandle, LeaseState,
    LeaseTask, NodeReport, ReadError, ReplicateError, Replicator, ReplicatorConfig,
};
use crate::domain::world::World;
use crate::engine::cluster_trim;
use crate::store::replicated::{
    decode_batch, encode_batch, follow_batch, locate, snapshot_world, LocateError, Replica,
    StreamPosition,
};
use crate::store::writer::JournalConfig;
use crate::store::{StorageError, Store};
use bytes::Bytes;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::watch;

/// How a node joins its cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `nats://host:port` of the NATS servers.
    pub urls: Vec<String>,
    pub name: ClusterName,
    /// This node's name, unique in the cluster (in message ids and the lease).
    pub node_id: String,
    /// Where clients reach this node's API (`X-Leader` on the standbys).
    pub advertise_url: String,
    pub lease: LeaseConfig,
    /// How often the leader trims the journal stream below the nodes' reports.
    pub trim_every: Duration,
}

/// Why a node cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("applying the journal failed: {0}")]
    Apply(String),
    #[error("{0}")]
    Mismatch(String),
}

/// What the HTTP layer and `/metrics` know of the cluster.
pub struct ClusterStatus {
    lease: LeaseHandle,
    node: String,
    leading: AtomicBool,
    term: AtomicU64,
    /// The last stream sequence this node applied or appended.
    applied_seq: AtomicU64,
    /// The stream's last sequence, as last asked.
    stream_last_seq: AtomicU64,
    /// Turns true once this node stops leading (it never leads again).
    stepped_down: watch::Sender<bool>,
}

impl ClusterStatus {
    fn new(lease: LeaseHandle, node: &str) -> ClusterStatus {
        ClusterStatus {
            lease,
            node: node.to_owned(),
            leading: AtomicBool::new(false),
            term: AtomicU64::new(0),
            applied_seq: AtomicU64::new(0),
            stream_last_seq: AtomicU64::new(0),
            stepped_down: watch::channel(false).0,
        }
    }

    /// Whether this node serves changes now.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// The leader's advertise URL, as last seen in the lease (never this
    /// node's own).
    pub fn leader_url(&self) -> Option<String> {
        self.lease
            .holder()
            .filter(|v| v.node != self.node)
            .map(|v| v.url)
    }

    /// The term this node leads in, or last saw applied.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq.load(Ordering::Relaxed)
    }

    /// Stream messages this node has not applied (0 on the leader).
    pub fn lag(&self) -> u64 {
        self.stream_last_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.applied_seq())
    }

    /// Completes once this node has stopped leading.
    pub async fn stepped_down(&self) {
        let mut rx = self.stepped_down.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    fn lead(&self, term: u64) {
        self.term.store(term, Ordering::Relaxed);
        self.leading.store(true, Ordering::Release);
        self.publish_metrics();
    }

    /// Ends leadership: from now on the HTTP layer answers `NOT_LEADER`.
    fn step_down(&self, why: &str) {
        if self.leading.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                why,
                "this node stopped leading; it answers NOT_LEADER and rejoins as a standby"
            );
            self.stepped_down.send_replace(true);
            self.publish_metrics();
        }
    }

    fn applied(&self, seq: u64, term: u64) {
        self.applied_seq.store(seq, Ordering::Relaxed);
        self.term.fetch_max(term, Ordering::Relaxed);
        self.stream_last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Sets the cluster gauges of `/metrics`.
    pub fn publish_metrics(&self) {
        let leading = self.is_leading();
        metrics::gauge!("cluster_role", "role" => "leader").set(if leading { 1.0 } else { 0.0 });
        metrics::gauge!("cluster_role", "role" => "standby").set(if leading { 0.0 } else { 1.0 });
        metrics::gauge!("cluster_term").set(self.term() as f64);
        metrics::gauge!("cluster_replication_lag").set(self.lag() as f64);
        metrics::gauge!("cluster_applied_seq").set(self.applied_seq() as f64);
    }
}

/// Describes the cluster gauges (HELP lines); once per process.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "cluster_role",
        "1 for this node's role in the cluster (leader or standby), 0 for the other."
    );
    metrics::describe_gauge!(
        "cluster_term",
        "The leader's term this node leads in or last applied."
    );
    metrics::describe_gauge!(
        "cluster_replication_lag",
        "Journal stream messages not yet applied by this node (stream's last sequence minus applied)."
    );
    metrics::describe_gauge!(
        "cluster_applied_seq",
        "The last journal stream sequence this node applied or appended."
    );
    metrics::describe_gauge!(
        "cluster_stream_first_seq",
        "The journal stream's first sequence: everything before it was trimmed."
    );
    metrics::describe_gauge!(
        "cluster_trim_floor_seq",
        "The least stream sequence the nodes report their stores hold: the stream is trimmed up to it, never past."
    );
    metrics::describe_counter!(
        "cluster_stream_purged_total",
        "Journal stream messages this node purged as the leader."
    );
}

/// Where the local store stands, kept to disk by a thread of its own (a
/// sync at most every 200 ms, off the journal writer's path). What the
/// file holds, once synced, is published on `kept`: that is what the node
/// reports for trimming (`cluster_trim`), never a position the disk does
/// not hold yet.
#[derive(Clone)]
struct PositionKeeper {
    latest: Arc<Mutex<StreamPosition>>,
    kept: watch::Receiver<StreamPosition>,
}

impl PositionKeeper {
    /// `at` is what `data_dir`'s file holds already.
    fn start(data_dir: PathBuf, at: StreamPosition) -> PositionKeeper {
        let latest = Arc::new(Mutex::new(at));
        let shared = latest.clone();
        let (kept_tx, kept) = watch::channel(at);
        let spawned = std::thread::Builder::new()
            .name("cluster-position".into())
            .spawn(move || {
                let mut saved = at;
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let now = *shared.lock().unwrap_or_else(|e| e.into_inner());
                    if now != saved {
                        match now.save(&data_dir) {
                            Ok(()) => {
                                saved = now;
                                kept_tx.send_replace(now);
                            }
                            Err(e) => tracing::error!(error = %e, "the cluster position could not be kept; a restart reads more of the stream"),
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the cluster position thread did not start");
        }
        PositionKeeper { latest, kept }
    }

    /// The local store now holds the stream up to `stream_seq`, whose last record is `record_seq`.
    fn set(&self, record_seq: u64, stream_seq: u64) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = StreamPosition {
            record_seq,
            stream_seq,
        };
    }
}

/// A node that has joined its cluster and follows the stream.
pub struct ClusterNode {
    runtime: Handle,
    cluster: Cluster,
    /// Kept for the process's life: dropping it would not stop the task,
    /// but the node owns it.
    _lease_task: LeaseTask,
    lease: LeaseHandle,
    replicator: Replicator,
    status: Arc<ClusterStatus>,
    position: PositionKeeper,
    world: World,
    store: Box<dyn Store>,
    journal: JournalConfig,
    since_snapshot: u64,
    last_snapshot: Instant,
}

/// What a node that became leader starts its engine from.
pub struct Leading {
    pub world: World,
    pub store: Box<dyn Store>,
    pub replica: StreamReplica,
    pub term: u64,
}

impl ClusterNode {
    /// Joins the cluster on `runtime` with the local store recovered as
    /// `world`. Where the store stands in the stream comes from its
    /// `cluster-position` file, or, without one that fits, from a search
    /// of the stream ([`locate`]); a store whose records the stream does
    /// not hold (another cluster's, or one trimmed past it) is refused.
    pub fn join(
        runtime: Handle,
        settings: &ClusterSettings,
        data_dir: PathBuf,
        world: World,
        store: Box<dyn Store>,
        journal: JournalConfig,
    ) -> Result<ClusterNode, NodeError> {
        let kept = StreamPosition::load(&data_dir)?;
        // Bounded by `cluster::JOIN_WITHIN`.
        let cluster = runtime.block_on(Cluster::join(
            &settings.urls,
            &settings.name,
            &settings.lease,
        ))?;
        let (position, stream_last) = place_store(&runtime, &cluster, kept, &*store, world.seq)?;
        if kept != Some(position) {
            // What the node reports must be what its disk holds.
            position.save(&data_dir)?;
        }
        let reported = report_now(&runtime, &cluster, &settings.node_id, position);
        let lease_task = start_lease(&runtime, &cluster, settings);
        let lease = lease_task.handle();
        let replicator = Replicator::new(
            cluster.journal.clone(),
            lease.clone(),
            &settings.node_id,
            position.stream_seq,
            ReplicatorConfig::default(),
        );
        let status = Arc::new(ClusterStatus::new(lease.clone(), &settings.node_id));
        status.applied(position.stream_seq, 0);
        status.stream_last_seq.store(stream_last, Ordering::Relaxed);
        status.publish_metrics();
        let keeper = PositionKeeper::start(data_dir, position);
        start_trimming(
            &runtime, &cluster, settings, &keeper, reported, &status, &lease,
        );
        tracing::info!(
            node = %settings.node_id,
            stream_seq = position.stream_seq,
            record_seq = world.seq,
            stream_last,
            "joined the cluster as a standby"
        );
        Ok(ClusterNode {
            runtime,
            cluster,
            _lease_task: lease_task,
            lease,
            replicator,
            status,
            position: keeper,
            world,
            store,
            journal,
            since_snapshot: 0,
            last_snapshot: Instant::now(),
        })
    }

    pub fn status(&self) -> Arc<ClusterStatus> {
        self.status.clone()
    }

    /// The largest batch one stream message holds (the servers' `max_payload`).
    pub fn max_batch_bytes(&self) -> usize {
        self.cluster.journal.max_batch_bytes()
    }

    /// The lease, for a node that leaves on a signal to give it up.
    pub fn lease(&self) -> LeaseHandle {
        self.lease.clone()
    }

    /// Follows the stream as a standby until this node leads; blocking
    /// (run it on a thread of its own). An error is one the node cannot
    /// go on from (a corrupt batch, a failed local write).
    pub fn follow_until_leader(mut self) -> Result<Leading, NodeError> {
        self.start_lag_watch();
        let runtime = self.runtime.clone();
        let mut follow = None;
        loop {
            if self.lease.permit().is_some() {
                match runtime.block_on(self.take_over()) {
                    Ok(term) => return Ok(self.leading(term)),
                    Err(TakeOver::Fatal(e)) => return Err(e),
                    Err(TakeOver::Retry(why)) => {
                        tracing::info!(%why, "taking over did not complete; following on");
                        follow = None;
                    }
                }
            }
            if follow.is_none() {
                let from = self.replicator.last_seq() + 1;
                match runtime.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        self.cluster.journal.read_from(from),
                    )
                    .await
                }) {
                    Ok(Ok(f)) => follow = Some(f),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "following the journal failed; trying again");
                        std::thread::sleep(Duration::from_millis(250));
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!("following the journal timed out; trying again");
                        continue;
                    }
                }
            }
            let Some(f) = follow.as_mut() else { continue };
            let next = runtime.block_on(async {
                tokio::time::timeout(Duration::from_millis(250), f.next()).await
            });
            match next {
                Err(_) => {} // nothing new: check the lease, snapshot
                Ok(Some(Ok(entry))) => self.apply(entry)?,
                Ok(Some(Err(ReadError::Gap { expected, found }))) => {
                    return Err(needs_copy(format!(
                        "the journal stream no longer holds message {expected} (it goes on at {found})"
                    )))
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "reading the journal failed; following again");
                    follow = None;
                }
                Ok(None) => follow = None,
            }
            self.maybe_snapshot();
        }
    }

    /// Reads to the stream's end and opens the lease's term; the term.
    async fn take_over(&mut self) -> Result<u64, TakeOver> {
        let journal = self.cluster.journal.clone();
        loop {
            let last = tokio::time::timeout(Duration::from_secs(2), journal.last_seq())
                .await
                .map_err(|_| TakeOver::Retry("the stream's end was not known in time".into()))?
                .map_err(|e| TakeOver::Retry(e.to_string()))?;
            if last > self.replicator.last_seq() {
                let mut follow = journal
                    .read_from(self.replicator.last_seq() + 1)
                    .await
                    .map_err(|e| TakeOver::Retry(e.to_string()))?;
                while self.replicator.last_seq() < last {
                    let entry = tokio::time::timeout(Duration::from_secs(5), follow.next())
                        .await
                        .map_err(|_| TakeOver::Retry("reading the stream timed out".into()))?
                        .ok_or_else(|| TakeOver::Retry("the stream's reader ended".into()))?
                        .map_err(|e| TakeOver::Retry(e.to_string()))?;
                    self.apply(entry).map_err(TakeOver::Fatal)?;
                }
            }
            match self.replicator.begin_term().await {
                Ok(marker) => {
                    let term = self.replicator.term().unwrap_or_default();
                    self.position.set(self.world.seq, marker);
                    self.status.applied(marker, term);
                    tracing::info!(term, marker, record_seq = self.world.seq, "this node leads");
                    return Ok(term);
                }
                Err(ReplicateError::Behind) => continue,
                Err(e) => return Err(TakeOver::Retry(e.to_string())),
            }
        }
    }

    /// Applies one stream message: a batch to the world and the local
    /// store; a term marker only moves the position.
    fn apply(&mut self, entry: JournalEntry) -> Result<(), NodeError> {
        if !entry.is_marker() {
            let (first_seq, frames) = decode_batch(&entry.bytes)?;
            let applied = follow_batch(&mut self.world, &*self.store, first_seq, frames)
                .map_err(|e| NodeError::Apply(format!("stream message {}: {e}", entry.seq)))?;
            self.since_snapshot += applied;
        }
        self.replicator
            .on_applied(entry.seq, entry.term)
            .map_err(|e| NodeError::Apply(e.to_string()))?;
        self.position.set(self.world.seq, entry.seq);
        self.status.applied(entry.seq, entry.term);
        Ok(())
    }

    /// Snapshots the world as often as the leader's journal writer does.
    fn maybe_snapshot(&mut self) {
        let due = self.since_snapshot >= self.journal.snapshot_every_records
            || (self.since_snapshot > 0
                && self.last_snapshot.elapsed()
                    >= Duration::from_millis(self.journal.snapshot_every_ms));
        if !due {
            return;
        }
        match snapshot_world(
            &mut self.world,
            &*self.store,
            self.journal.snapshot_value_bytes_max,
        ) {
            Ok(()) => {
                self.since_snapshot = 0;
                metrics::counter!("cluster_standby_snapshots_total").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "a standby snapshot failed; the next one retries it")
            }
        }
        self.last_snapshot = Instant::now();
    }

    /// Asks the stream's end every second, for the lag gauge.
    fn start_lag_watch(&self) {
        let (journal, status) = (self.cluster.journal.clone(), self.status.clone());
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Ok(Ok(last)) =
                    tokio::time::timeout(Duration::from_secs(1), journal.last_seq()).await
                {
                    status.stream_last_seq.store(last, Ordering::Relaxed);
                }
                status.publish_metrics();
            }
        });
    }

    fn leading(self, term: u64) -> Leading {
        self.status.lead(term);
        // Leadership ends the moment the lease's deadline passes, even
        // with no batch to find it out.
        let (lease, status) = (self.lease.clone(), self.status.clone());
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                if lease.permit() != Some(term) {
                    status.step_down("the lease ended");
                    return;
                }
            }
        });
        Leading {
            world: self.world,
            store: self.store,
            replica: StreamReplica {
                runtime: self.runtime,
                replicator: self.replicator,
                status: self.status,
                position: self.position,
                last_stream_seq: 0,
                _cluster: self.cluster,
                _lease_task: self._lease_task,
            },
            term,
        }
    }
}

enum TakeOver {
    /// Not this time (the lease ended, the stream did not answer): follow on.
    Retry(String),
    Fatal(NodeError),
}

/// The leader's journal writer's [`Replica`]: every batch is appended to
/// the stream (and acknowledged by a quorum of servers) before the local write.
pub struct StreamReplica {
    runtime: Handle,
    replicator: Replicator,
    status: Arc<ClusterStatus>,
    position: PositionKeeper,
    last_stream_seq: u64,
    /// The connection and the lease live as long as the writer does.
    _cluster: Cluster,
    _lease_task: LeaseTask,
}

impl StreamReplica {
    pub fn status(&self) -> Arc<ClusterStatus> {
        self.status.clone()
    }
}

impl Replica for StreamReplica {
    fn publish(&mut self, first_seq: u64, frames: &[u8]) -> Result<(), StorageError> {
        if !self.status.is_leading() {
            return Err(StorageError::NotLeader);
        }
        let batch = Bytes::from(encode_batch(first_seq, frames));
        match self.runtime.block_on(self.replicator.append(batch)) {
            Ok(seq) => {
                self.last_stream_seq = seq;
                self.status.applied(seq, 0);
                Ok(())
            }
            Err(e) => {
                self.status.step_down(&e.to_string());
                Err(match e {
                    ReplicateError::OutcomeUnknown => StorageError::OutcomeUnknown,
                    ReplicateError::NotLeader
                    | ReplicateError::Fenced
                    | ReplicateError::Behind
                    | ReplicateError::TooLarge(_) => StorageError::NotLeader,
                    ReplicateError::OutOfOrder(e) => StorageError::Corrupt(e.to_string()),
                })
            }
        }
    }

    fn written(&mut self, last_seq: u64) {
        self.position.set(last_seq, self.last_stream_seq);
    }
}

/// Where the local store (ending at record `record_seq`) stands in the
/// stream, and the stream's last message: the position kept after a local
/// flush when it fits, else one found by a search of the stream; refused
/// when the stream was trimmed past what the store holds.
fn place_store(
    runtime: &Handle,
    cluster: &Cluster,
    kept: Option<StreamPosition>,
    store: &dyn Store,
    record_seq: u64,
) -> Result<(StreamPosition, u64), NodeError> {
    let bounds = runtime.block_on(cluster.journal.bounds())?;
    // Everything before `first` was trimmed (a stream that holds no
    // message never had one: purges keep the last).
    let (first, stream_last) = bounds.unwrap_or((1, 0));
    let position = match kept {
        // The fast path: the position kept after a local flush. It may
        // be older than the store (a longer read), never newer; the
        // stream must still hold the message after it.
        Some(p)
            if p.record_seq <= record_seq
                && p.stream_seq <= stream_last
                && p.stream_seq.saturating_add(1) >= first =>
        {
            p
        }
        _ if record_seq == 0 && first > 1 => {
            return Err(needs_copy(format!(
                "this node's store is empty and the journal stream was trimmed (it starts at message {first})"
            )))
        }
        _ if record_seq == 0 => StreamPosition::default(),
        kept => {
            let found = locate_in_stream(runtime, cluster, store, record_seq)?;
            tracing::info!(
                kept = ?kept,
                record_seq = found.record_seq,
                stream_seq = found.stream_seq,
                "the local store was placed in the journal stream by a search"
            );
            found
        }
    };
    Ok((position, stream_last))
}

/// Starts the lease's task on `runtime`: from now on this node takes the
/// lease when it is free.
fn start_lease(runtime: &Handle, cluster: &Cluster, settings: &ClusterSettings) -> LeaseTask {
    let _inside = runtime.enter();
    LeaseTask::start(
        cluster.lease_bucket.clone(),
        LeaseState::new(
            settings.lease.clone(),
            settings.node_id.clone(),
            settings.advertise_url.clone(),
        ),
    )
}

/// Starts, on `runtime`, the report of what `keeper` has kept (`reported`
/// once already) and the trim of the stream below the nodes' reports,
/// which purges while this node leads ([`cluster_trim`]).
fn start_trimming(
    runtime: &Handle,
    cluster: &Cluster,
    settings: &ClusterSettings,
    keeper: &PositionKeeper,
    reported: Option<StreamPosition>,
    status: &Arc<ClusterStatus>,
    lease: &LeaseHandle,
) {
    let _inside = runtime.enter();
    cluster_trim::start_reporter(
        cluster.nodes.clone(),
        settings.node_id.clone(),
        keeper.kept.clone(),
        reported,
    );
    cluster_trim::start_trimmer(
        cluster.journal.clone(),
        cluster.nodes.clone(),
        status.clone(),
        lease.clone(),
        settings.trim_every,
    );
}

/// Reports `position` before anything is read, so the stream keeps
/// everything after it from the leader's next trim on; `Some(position)`
/// once reported (a failed report is made again by the reporter).
fn report_now(
    runtime: &Handle,
    cluster: &Cluster,
    node: &str,
    position: StreamPosition,
) -> Option<StreamPosition> {
    let reported = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                cluster.nodes.report(node, report_of(position)),
            )
            .await
        })
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match reported {
        Ok(()) => Some(position),
        Err(e) => {
            tracing::warn!(error = %e, "this node's position could not be reported yet; it is reported again in a few seconds");
            None
        }
    }
}

/// The refusal of a node whose store ends below the stream's first
/// message: following on would skip what was trimmed.
fn needs_copy(why: String) -> NodeError {
    NodeError::Mismatch(format!(
        "{why}: this node needs a copy of a current node's data dir (stop a node that follows the cluster, copy its data dir here, start both)"
    ))
}

/// What a node reports for `position`.
fn report_of(position: StreamPosition) -> NodeReport {
    NodeReport {
        stream_seq: position.stream_seq,
        record_seq: position.record_seq,
    }
}

/// Where a local store ending at record `record_seq` stands in the stream,
/// found by [`locate`]; the stream's batch that ends there must be the
/// local journal's, byte for byte, when the local journal still holds it.
fn locate_in_stream(
    runtime: &Handle,
    cluster: &Cluster,
    store: &dyn Store,
    record_seq: u64,
) -> Result<StreamPosition, NodeError> {
    let journal = &cluster.journal;
    let read = |e: ClusterError| LocateError::Read(e.to_string());
    let bounds = runtime.block_on(journal.bounds())?;
    let found = locate(record_seq, bounds, &mut |seq| {
        runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(5), journal.get(seq))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClusterError::JetStream(format!(
                            "journal message {seq}: timed out"
                        )))
                    })
            })
            .map_err(read)
    })
    .map_err(|e| match e {
        LocateError::Trimmed(why) => needs_copy(why),
        e => NodeError::Mismatch(format!("{e}: this data dir cannot follow this cluster")),
    })?;
    if let Some((first, frames)) = &found.batch {
        let local = store.journal_after(record_seq.saturating_sub(1))?;
        if let Some((_, held)) = local.iter().find(|(f, _)| f == first) {
            if held[..] != frames[..] {
                return Err(NodeError::Mismatch(format!(
                    "the local journal's batch at record {first} differs from the stream's: this data dir belongs to another cluster"
                )));
            }
        }
    }
    Ok(found.position)
}
