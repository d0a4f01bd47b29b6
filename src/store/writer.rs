//! The journal writer: group commit on one thread, off the actors' threads.
//!
//! Actors `submit` records without blocking (a bounded queue: when it is
//! full the caller is told `Overloaded`). The writer takes everything queued
//! (up to a batch limit), encodes it, appends the batch with one write and
//! one flush, and then acknowledges every record in it. Records are
//! acknowledged in the order they were queued, so an acknowledged record
//! implies that every record queued before it is durable too.
//!
//! The writer also keeps the durable [`World`] by applying each flushed
//! batch: incremental snapshots are written from it (no actor is asked),
//! and each batch's events for the data platform (a paid order as the
//! durable world holds it) go from it to the outbox
//! ([`crate::store::outbox`]), gathered over batches into blocks: one
//! write once a block is full or its first event has waited
//! [`OUTBOX_LINGER`], and always before a snapshot begins.
//!
//! After a failed append the journal is poisoned: that batch and every later
//! submission are refused, so nothing is acknowledged that could depend on
//! a record that was not written. The engine answers errors until restarted.

use crate::domain::event::{Event, Record};
use crate::domain::key_hash::key_hash;
use crate::domain::platform::PlatformEventRef;
use crate::domain::world::World;
use crate::store::codec::{self, Kind};
use crate::store::cut::{Archiving, Dirty};
use crate::store::outbox::{BlockBuilder, OutboxLive, OutboxStore, BLOCK_EVENTS_MAX};
use crate::store::recent_keys::{RecentKey, RecentKeys};
use crate::store::recovery::cut_step;
use crate::store::replicated::Replica;
use crate::store::{SnapshotEntries, StorageError, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Limits and intervals of the journal, units in the names.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Records waiting for the writer at most; past it, `Overloaded`.
    pub queue_records_max: usize,
    pub batch_records_max: usize,
    pub batch_bytes_max: usize,
    /// Write a snapshot after this many records...
    pub snapshot_every_records: u64,
    /// ...or after this long with changes, whichever comes first.
    pub snapshot_every_ms: u64,
    /// No snapshot value's encoded payload is larger (at most the codec's
    /// frame limit). Values never grow with history, so a lower limit only
    /// proves it (the lifetime test runs with 64 KiB).
    pub snapshot_value_bytes_max: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            queue_records_max: 65_536,
            batch_records_max: 8_192,
            batch_bytes_max: 8 * 1024 * 1024,
            snapshot_every_records: 200_000,
            snapshot_every_ms: 30_000,
            snapshot_value_bytes_max: codec::PAYLOAD_LEN_MAX,
        }
    }
}

/// What a submission gets back: the record's sequence once durable.
pub type Ack = Result<u64, StorageError>;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the journal queue is full")]
    Overloaded,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

// Nearly every command is an append: boxing its record would cost an
// allocation per record to save room only in the rare other commands.
#[allow(clippy::large_enum_variant)]
enum Command {
    Append(Record, oneshot::Sender<Ack>),
    /// Write a snapshot now (tests, shutdown); answers with the sequence it covers.
    Snapshot(oneshot::Sender<Ack>),
    /// Commit what is queued, write a last snapshot, and stop.
    Shutdown,
}

/// Counters the engine exports as metrics.
#[derive(Default, Debug)]
pub struct JournalStats {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub last_batch_records: AtomicU64,
    pub last_flush_us: AtomicU64,
    pub snapshots: AtomicU64,
    pub queued: AtomicU64,
    pub time: WriterTime,
    pub snapshot_health: SnapshotHealth,
    /// Business events made durable since start.
    pub business: BusinessCounts,
}

/// How snapshots fare: a snapshot that cannot be cut or written is retried
/// by the next one (its marks come back), and meanwhile the journal keeps
/// every record since the last one, so a failure that lasts makes memory,
/// the journal and the replay after a crash grow. It is logged at error,
/// counted here, and shown by `/ready` and `/metrics`.
#[derive(Default, Debug)]
pub struct SnapshotHealth {
    failures: AtomicU64,
    consecutive: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl SnapshotHealth {
    fn failed(&self, what: &str, error: &StorageError) {
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            error = %error,
            consecutive,
            "snapshot {what} failed; the next snapshot retries it, and the journal keeps every record since the last one"
        );
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    fn written(&self) {
        if self.consecutive.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("a snapshot was written again after failures");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Snapshots that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Snapshots that failed since the last one written, and the last error.
    pub fn failing(&self) -> Option<(u64, String)> {
        let consecutive = self.consecutive.load(Ordering::Relaxed);
        let error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        (consecutive > 0).then(|| (consecutive, error.clone().unwrap_or_default()))
    }
}

/// Business events made durable since start, counted where every durable
/// record passes ([`JournalWriter`]'s commit), once each, after the flush.
#[derive(Default, Debug)]
pub struct BusinessCounts {
    pub orders_placed: AtomicU64,
    pub orders_paid: AtomicU64,
    pub orders_failed: AtomicU64,
    pub orders_cancelled: AtomicU64,
    pub orders_expired: AtomicU64,
    /// KRW debited for paid orders.
    pub paid_krw: AtomicU64,
    pub coupons_issued: AtomicU64,
}

/// A reading of [`BusinessCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusinessTotals {
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub orders_failed: u64,
    pub orders_cancelled: u64,
    pub orders_expired: u64,
    pub paid_krw: u64,
    pub coupons_issued: u64,
}

impl BusinessCounts {
    pub fn load(&self) -> BusinessTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BusinessTotals {
            orders_placed: get(&self.orders_placed),
            orders_paid: get(&self.orders_paid),
            orders_failed: get(&self.orders_failed),
            orders_cancelled: get(&self.orders_cancelled),
            orders_expired: get(&self.orders_expired),
            paid_krw: get(&self.paid_krw),
            coupons_issued: get(&self.coupons_issued),
        }
    }

    /// Counts one durable record.
    fn count(&self, event: &Event) {
        let one = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match event {
            Event::OrderPlaced { .. } => one(&self.orders_placed),
            Event::OrderPaid { amount, .. } => {
                one(&self.orders_paid);
                // Only the writer thread adds, so a load and a store suffice.
                let paid = self.paid_krw.load(Ordering::Relaxed);
                self.paid_krw
                    .store(paid.saturating_add(amount.0), Ordering::Relaxed);
            }
            Event::OrderPaymentFailed { .. } => one(&self.orders_failed),
            Event::OrderCancelled { .. } => one(&self.orders_cancelled),
            Event::OrderExpired { .. } => one(&self.orders_expired),
            Event::CouponIssued { .. } => one(&self.coupons_issued),
            _ => {}
        }
    }
}

/// A step of the writer's cycle. The steps of a batch run one after
/// another on one thread, so the time in each says what bounds group
/// commit: with little waiting, the writer is the bottleneck, and the
/// largest step is what to make cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for records (idle).
    Waiting,
    /// Taking records off the queue and encoding them, then applying the
    /// batch to the durable world.
    Preparing,
    /// Writing the batch to the store and flushing it.
    Writing,
    /// Handing the batch's events to the outbox and acknowledging every record.
    Acknowledging,
    /// Encoding snapshot cuts between batches and taking in written snapshots.
    Snapshotting,
}

impl Step {
    /// Every step, in the order a batch goes through them.
    pub const ALL: [Step; 5] = [
        Step::Waiting,
        Step::Preparing,
        Step::Writing,
        Step::Acknowledging,
        Step::Snapshotting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Waiting => "waiting",
            Step::Preparing => "preparing",
            Step::Writing => "writing",
            Step::Acknowledging => "acknowledging",
            Step::Snapshotting => "snapshotting",
        }
    }
}

/// The writer thread's time since start, by [`Step`] (µs).
#[derive(Default, Debug)]
pub struct WriterTime {
    us: [AtomicU64; Step::ALL.len()],
}

impl WriterTime {
    /// Adds the time since `since` to `step` and returns now, where the next step starts.
    fn add(&self, step: Step, since: Instant) -> Instant {
        self.add_timed(step, since).0
    }

    /// [`add`](WriterTime::add), also returning the step's time (µs).
    fn add_timed(&self, step: Step, since: Instant) -> (Instant, u64) {
        let now = Instant::now();
        let us = now.saturating_duration_since(since).as_micros() as u64;
        self.us[step as usize].fetch_add(us, Ordering::Relaxed);
        (now, us)
    }

    pub fn load(&self) -> WriterSteps {
        WriterSteps(self.us.each_ref().map(|us| us.load(Ordering::Relaxed)))
    }
}

/// [`WriterTime`] read at one moment: µs since start, by [`Step`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterSteps([u64; Step::ALL.len()]);

impl WriterSteps {
    pub fn get(&self, step: Step) -> u64 {
        self.0[step as usize]
    }

    /// The time spent in each step between `earlier` and `self`.
    pub fn since(&self, earlier: &WriterSteps) -> WriterSteps {
        WriterSteps(Step::ALL.map(|step| self.get(step).saturating_sub(earlier.get(step))))
    }

    /// Every step's name and time, in the order a batch goes through them.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Step::ALL
            .into_iter()
            .map(|step| (step.name(), self.get(step)))
    }
}

/// Snapshots as the actors see them, to let go of what is archived.
///
/// Snapshots are numbered as they begin. A change acknowledged before
/// snapshot `n` began is in it (or, if an earlier one failed, in a later
/// one, which takes the failed one's marks). So an actor notes
/// [`mark`](ArchiveWatch::mark) right after a change is acknowledged, and
/// once [`is_written`](ArchiveWatch::is_written) says so, what that change
/// finished (an order, a chunk of history) is in the store's archive.
#[derive(Debug, Default)]
pub struct ArchiveWatch {
    begun: AtomicU64,
    written: AtomicU64,
    /// Statuses by archive block, for the admin list of orders.
    pub statuses: crate::store::archive_statuses::ArchivedStatuses,
}

impl ArchiveWatch {
    pub fn mark(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// A snapshot begun after `mark` was taken is written.
    pub fn is_written(&self, mark: u64) -> bool {
        self.written.load(Ordering::SeqCst) > mark
    }
}

#[derive(Clone)]
pub struct JournalHandle {
    tx: SyncSender<Command>,
    poisoned: Arc<AtomicBool>,
    pub stats: Arc<JournalStats>,
    pub archive: Arc<ArchiveWatch>,
}

impl JournalHandle {
    /// Queues a record; the receiver resolves once it is durable (or failed).
    pub fn submit(&self, record: Record) -> Result<oneshot::Receiver<Ack>, SubmitError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(SubmitError::Storage(StorageError::Poisoned));
        }
        let (ack, rx) = oneshot::channel();
        match self.tx.try_send(Command::Append(record, ack)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Storage(StorageError::Closed)),
        }
    }

    /// Forces a snapshot of everything durable so far.
    pub async fn snapshot(&self) -> Ack {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Command::Snapshot(ack))
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

pub struct JournalWriter {
    handle: JournalHandle,
    thread: Option<JoinHandle<()>>,
}

impl JournalWriter {
    /// Starts the writer thread on `store`, whose durable state is `world`.
    pub fn start(
        store: Box<dyn Store>,
        world: World,
        config: JournalConfig,
        outbox: Arc<OutboxLive>,
        recent_keys: Arc<RecentKeys>,
    ) -> JournalWriter {
        Self::start_replicated(store, world, config, outbox, recent_keys, None)
    }

    /// [`start`](JournalWriter::start), and with a `replica` every batch
    /// goes to it before the local write (a cluster's leader: see
    /// [`Replica`]).
    pub fn start_replicated(
        store: Box<dyn Store>,
        world: World,
        config: JournalConfig,
        outbox: Arc<OutboxLive>,
        recent_keys: Arc<RecentKeys>,
        replica: Option<Box<dyn Replica>>,
    ) -> JournalWriter {
        let (tx, rx) = mpsc::sync_channel(config.queue_records_max);
        let poisoned = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(JournalStats::default());
        let watch = Arc::new(ArchiveWatch::default());
        let handle = JournalHandle {
            tx,
            poisoned: poisoned.clone(),
            stats: stats.clone(),
            archive: watch.clone(),
        };
        let store: Arc<dyn Store> = Arc::from(store);
        let outbox_store = store.outbox();
        let (jobs, done, snapshotter) = start_snapshotter(
            store.clone(),
            stats.clone(),
            watch.clone(),
            recent_keys.clone(),
        );
        let mut worker = Worker {
            store,
            jobs: Some(jobs),
            done,
            snapshotter: Some(snapshotter),
            snapshot_in_flight: false,
            cut: None,
            releasing: None,
            world,
            config,
            outbox,
            outbox_store,
            blocks: BlockBuilder::default(),
            blocks_since: None,
            outbox_broken: false,
            recent_keys,
            poisoned,
            stats,
            watch,
            since_snapshot: 0,
            last_snapshot: Instant::now(),
            replica,
            refusal: StorageError::Poisoned,
        };
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || worker.run(rx))
            .expect("spawn the journal writer");
        JournalWriter {
            handle,
            thread: Some(thread),
        }
    }

    pub fn handle(&self) -> JournalHandle {
        self.handle.clone()
    }

    /// Commits everything queued before this call, writes a last snapshot,
    /// and waits for the writer to stop. Later submissions answer `Closed`.
    pub fn join(mut self) {
        let _ = self.handle.tx.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A snapshot for the snapshot thread to write: everything durable up to `seq`.
struct SnapshotJob {
    seq: u64,
    /// The snapshot's number (see [`ArchiveWatch`]).
    number: u64,
    entries: SnapshotEntries,
    archiving: Archiving,
    /// The marks the entries came from: given back if the write fails.
    marks: Dirty,
    ack: Option<oneshot::Sender<Ack>>,
}

/// A snapshot written (what it archived) or not (its marks come back).
enum SnapshotDone {
    /// Written, with what it archived.
    Written(Archiving),
    Failed(Dirty),
}

/// The snapshot thread: writes snapshots while the writer goes on
/// committing batches (a snapshot of many entities takes long enough to
/// stall group commit otherwise). One job at a time, in order, so the
/// sequence snapshots cover only ever moves forward.
fn start_snapshotter(
    store: Arc<dyn Store>,
    stats: Arc<JournalStats>,
    watch: Arc<ArchiveWatch>,
    recent_keys: Arc<RecentKeys>,
) -> (
    SyncSender<SnapshotJob>,
    Receiver<SnapshotDone>,
    JoinHandle<()>,
) {
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<SnapshotJob>(1);
    let (done_tx, done_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("journal-snapshots".into())
        .spawn(move || {
            for job in jobs_rx {
                let result = store.snapshot(job.seq, job.entries);
                if let Err(e) = &result {
                    stats.snapshot_health.failed("write", e);
                } else {
                    stats.snapshots.fetch_add(1, Ordering::Relaxed);
                    stats.snapshot_health.written();
                    watch.written.store(job.number, Ordering::SeqCst);
                    // Its keys are in the store's key tables now.
                    recent_keys.written_up_to(job.seq);
                }
                let done = match result {
                    Ok(()) => SnapshotDone::Written(job.archiving),
                    Err(_) => SnapshotDone::Failed(job.marks),
                };
                // Marks go back before the answer, so a caller that snapshots again sees them.
                let _ = done_tx.send(done);
                if let Some(ack) = job.ack {
                    let _ = ack.send(result.map(|()| job.seq));
                }
            }
        })
        .expect("spawn the snapshot thread");
    (jobs_tx, done_rx, thread)
}

struct Worker {
    store: Arc<dyn Store>,
    jobs: Option<SyncSender<SnapshotJob>>,
    done: Receiver<SnapshotDone>,
    snapshotter: Option<JoinHandle<()>>,
    snapshot_in_flight: bool,
    /// A snapshot being encoded, a step at a time.
    cut: Option<PendingCut>,
    /// What a written snapshot archived, leaving memory a step at a time.
    releasing: Option<Archiving>,
    world: World,
    config: JournalConfig,
    outbox: Arc<OutboxLive>,
    outbox_store: Arc<dyn OutboxStore>,
    /// Events of durable batches not yet written to the outbox, encoded
    /// (buffers reused from write to write).
    blocks: BlockBuilder,
    /// When the first of them was encoded.
    blocks_since: Option<Instant>,
    /// The outbox failed once: nothing more is written to it (a watermark
    /// written later would cover the events it did not take), and the next
    /// start derives every event since then from the journal.
    outbox_broken: bool,
    /// Idempotency keys of durable records not yet in a written snapshot.
    recent_keys: Arc<RecentKeys>,
    poisoned: Arc<AtomicBool>,
    stats: Arc<JournalStats>,
    watch: Arc<ArchiveWatch>,
    since_snapshot: u64,
    last_snapshot: Instant,
    /// A cluster leader's stream: each batch is published to it first.
    replica: Option<Box<dyn Replica>>,
    /// What batches are told once the journal is poisoned: `NotLeader`
    /// after leadership ended (nothing later was sent anywhere).
    refusal: StorageError,
}

/// The batch being gathered: its records, who waits for each, and the
/// records encoded as journal frames (buffers reused from batch to batch).
struct Batch {
    records: Vec<Record>,
    acks: Vec<oneshot::Sender<Ack>>,
    frames: Vec<u8>,
}

impl Batch {
    fn with_capacity(records_max: usize) -> Batch {
        Batch {
            records: Vec::with_capacity(records_max),
            acks: Vec::with_capacity(records_max),
            frames: Vec::with_capacity(1 << 20),
        }
    }

    /// Adds a record, or answers at once that it does not encode.
    fn push(&mut self, record: Record, ack: oneshot::Sender<Ack>) {
        if let Err(e) = codec::encode_into(Kind::Record, &record, &mut self.frames) {
            let _ = ack.send(Err(StorageError::Corrupt(e.to_string())));
        } else {
            self.records.push(record);
            self.acks.push(ack);
        }
    }
}

impl Worker {
    fn run(&mut self, rx: Receiver<Command>) {
        let mut batch = Batch::with_capacity(self.config.batch_records_max);
        let tick = Duration::from_millis(self.config.snapshot_every_ms.clamp(10, 1000));
        let mut since = Instant::now();
        loop {
            let wait = match self.blocks_since {
                Some(t) => tick.min(OUTBOX_LINGER.saturating_sub(t.elapsed())),
                None => tick,
            };
            let received = rx.recv_timeout(wait);
            since = self.stats.time.add(Step::Waiting, since);
            let first = match received {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    since = self.idle(since);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let (stopping, gathered) = self.gather(first, &rx, &mut batch, since);
            since = gathered;
            since = self.stats.time.add(Step::Preparing, since);
            since = self.commit(&mut batch, since);
            if stopping {
                break;
            }
            self.maybe_snapshot(false);
            since = self.stats.time.add(Step::Snapshotting, since);
        }
        self.commit(&mut batch, Instant::now());
        self.write_outbox();
        self.maybe_snapshot(true);
        self.collect_snapshots(true);
        // Ends the snapshot thread; the store is closed once both threads are done.
        self.jobs = None;
        if let Some(t) = self.snapshotter.take() {
            let _ = t.join();
        }
    }

    /// Nothing arrived for a tick: the outbox written if due, the release
    /// and the snapshot under way finished at once. Returns when it finished.
    fn idle(&mut self, mut since: Instant) -> Instant {
        if self.poisoned.load(Ordering::Acquire) {
            // Make it durable that the failed batches are gone.
            let _ = self.store.forget_failed_appends();
        }
        if self.outbox_due() {
            self.write_outbox();
            since = self.stats.time.add(Step::Acknowledging, since);
        }
        self.advance_release(usize::MAX);
        self.advance_cut(usize::MAX);
        self.maybe_snapshot(false);
        self.stats.time.add(Step::Snapshotting, since)
    }

    /// Gathers `first` and whatever else is queued into `batch`, up to the
    /// batch limits; a snapshot asked for commits what was gathered before
    /// it. Returns whether shutdown was asked, and when it finished.
    fn gather(
        &mut self,
        first: Command,
        rx: &Receiver<Command>,
        batch: &mut Batch,
        mut since: Instant,
    ) -> (bool, Instant) {
        let mut next = Some(first);
        let mut stopping = false;
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Shutdown => stopping = true,
                Command::Append(record, ack) => batch.push(record, ack),
                Command::Snapshot(ack) => {
                    since = self.stats.time.add(Step::Preparing, since);
                    since = self.commit(batch, since);
                    // Whatever is under way first, then everything durable now.
                    self.advance_cut(usize::MAX);
                    self.begin_cut(Some(ack));
                    self.advance_cut(usize::MAX);
                    since = self.stats.time.add(Step::Snapshotting, since);
                }
            }
            if !stopping
                && batch.records.len() < self.config.batch_records_max
                && batch.frames.len() < self.config.batch_bytes_max
            {
                next = rx.try_recv().ok();
            }
        }
        (stopping, since)
    }

    /// Applies, writes and acknowledges the batch; its steps' time since
    /// `since` goes to [`WriterTime`]. Returns when it finished.
    fn commit(&mut self, batch: &mut Batch, mut since: Instant) -> Instant {
        if batch.records.is_empty() {
            return since;
        }
        let count = batch.records.len() as u64;
        self.stats.queued.fetch_sub(count, Ordering::Relaxed);
        let first_seq = self.world.seq + 1;
        let result = if self.poisoned.load(Ordering::Acquire) {
            Err(self.refusal.clone())
        } else {
            // Assert the batch against the durable state right before it goes
            // to disk: a record the state cannot take is a bug, and it must
            // not become durable (every later recovery would refuse it).
            self.apply_batch(first_seq, &batch.records)
        };
        since = self.stats.time.add(Step::Preparing, since);
        let result = result.and_then(|()| self.write_batch(first_seq, count, batch, &mut since));
        match result {
            Ok(()) => self.acknowledge_batch(first_seq, batch),
            Err(e) => self.refuse_batch(e, batch),
        }
        batch.records.clear();
        batch.frames.clear();
        self.stats.time.add(Step::Acknowledging, since)
    }

    /// Writes the batch's frames: to a cluster's stream first, then to the
    /// store. `since` moves to when the write finished.
    fn write_batch(
        &mut self,
        first_seq: u64,
        count: u64,
        batch: &Batch,
        since: &mut Instant,
    ) -> Result<(), StorageError> {
        // In a cluster the stream stores the batch first: the local
        // store only ever holds what the stream holds.
        if let Some(replica) = self.replica.as_mut() {
            replica.publish(first_seq, &batch.frames)?;
        }
        let written = self.store.append(first_seq, &batch.frames);
        let (now, flush_us) = self.stats.time.add_timed(Step::Writing, *since);
        *since = now;
        self.stats.last_flush_us.store(flush_us, Ordering::Relaxed);
        metrics::histogram!("journal_flush_seconds").record(flush_us as f64 / 1e6);
        metrics::histogram!("journal_batch_records").record(count as f64);
        written
    }

    /// A durable batch: its keys known and its records counted, then every
    /// waiter answered with its sequence, then its events to the outbox.
    fn acknowledge_batch(&mut self, first_seq: u64, batch: &mut Batch) {
        let count = batch.records.len() as u64;
        if let Some(replica) = self.replica.as_mut() {
            replica.written(first_seq + count - 1);
        }
        for (i, record) in batch.records.iter().enumerate() {
            self.stats.business.count(&record.event);
            if let Some(entry) = &record.idempotency {
                // Known before anyone hears back, so a retry finds it.
                let key = RecentKey {
                    fingerprint: entry.fingerprint,
                    at: record.at,
                    seq: first_seq + i as u64,
                };
                self.recent_keys.insert(key_hash(&entry.key), key);
            }
        }
        // Counted before anyone hears back: whoever got an answer
        // reads metrics that include its record, and its event as
        // pending (written to the outbox after the answers).
        let encoded = self.encode_events(first_seq, &batch.records);
        self.stats.records.fetch_add(count, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_batch_records
            .store(count, Ordering::Relaxed);
        self.since_snapshot += count;
        for (i, ack) in batch.acks.drain(..).enumerate() {
            let _ = ack.send(Ok(first_seq + i as u64));
        }
        match encoded {
            Ok(()) if self.outbox_due() => self.write_outbox(),
            Ok(()) => {}
            Err(e) => self.outbox_failed(e),
        }
    }

    /// A batch that failed, or came after a failure: the journal is
    /// poisoned and every waiter hears the error.
    fn refuse_batch(&mut self, e: StorageError, batch: &mut Batch) {
        if matches!(e, StorageError::NotLeader | StorageError::OutcomeUnknown) {
            self.refusal = StorageError::NotLeader;
            if e == StorageError::OutcomeUnknown {
                tracing::warn!(
                    "leadership ended during a batch's replication; acknowledging nothing more"
                );
            }
        } else if e != self.refusal {
            tracing::error!(error = %e, "journal batch failed; acknowledging nothing more");
        }
        // The world may now hold records that are not on disk: with
        // the journal poisoned it is never snapshotted again.
        self.poisoned.store(true, Ordering::Release);
        for ack in batch.acks.drain(..) {
            let _ = ack.send(Err(e.clone()));
        }
    }

    /// Encodes the events of a durable batch into the outbox's next blocks
    /// and counts them as added.
    fn encode_events(&mut self, first_seq: u64, records: &[Record]) -> Result<(), StorageError> {
        let (orders, blocks) = (&self.world.orders, &mut self.blocks);
        let before = blocks.events();
        let mut encoded = Ok(());
        for (i, record) in records.iter().enumerate() {
            if let Some(event) = PlatformEventRef::of(record, |id| orders.get(&id)) {
                self.outbox.gathering(event.at());
                encoded = blocks.push(first_seq + i as u64, &event);
                if encoded.is_err() {
                    break;
                }
            }
        }
        let events = blocks.events() - before;
        if events > 0 {
            self.outbox.adding(events);
            self.blocks_since.get_or_insert_with(Instant::now);
        }
        encoded
    }

    /// A block is full, or the first event encoded has waited long enough.
    fn outbox_due(&self) -> bool {
        self.blocks.events() >= BLOCK_EVENTS_MAX as u64
            || self
                .blocks_since
                .is_some_and(|t| t.elapsed() >= OUTBOX_LINGER)
    }

    /// Writes the encoded events with the watermark (every record applied
    /// so far): one atomic write, not flushed (see `store::outbox`).
    fn write_outbox(&mut self) {
        if self.blocks.is_empty() {
            return;
        }
        let events = self.blocks.events();
        let added = self.outbox.added();
        let written = if self.outbox_broken {
            Err(StorageError::Poisoned)
        } else {
            self.outbox_store
                .add(&self.blocks.blocks(), self.world.seq, added)
        };
        self.blocks.clear();
        self.blocks_since = None;
        // After the write: a reader that no longer sees them gathered finds
        // them in the store.
        self.outbox.gathered();
        match written {
            Ok(()) => self.outbox.added_signal.notify_one(),
            Err(e) => {
                self.outbox.not_added(events);
                self.outbox_failed(e);
            }
        }
    }

    /// The outbox did not take events of durable (and acknowledged)
    /// batches: they are derived again from the journal at the next start,
    /// and with the journal poisoned no snapshot trims it before then.
    fn outbox_failed(&mut self, e: StorageError) {
        if !self.outbox_broken {
            tracing::error!(error = %e, "the outbox could not take durable events; acknowledging nothing more");
        }
        self.outbox_broken = true;
        self.poisoned.store(true, Ordering::Release);
    }

    /// Applies a batch to the durable world (before it is written).
    fn apply_batch(&mut self, first_seq: u64, records: &[Record]) -> Result<(), StorageError> {
        for (i, record) in records.iter().enumerate() {
            self.world
                .apply(first_seq + i as u64, record)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self, force: bool) {
        self.collect_snapshots(false);
        if force {
            // The last one, at shutdown: wait until it is written.
            self.advance_cut(usize::MAX);
            if self.since_snapshot > 0 {
                let (ack, rx) = oneshot::channel();
                self.begin_cut(Some(ack));
                self.advance_cut(usize::MAX);
                let _ = rx.blocking_recv();
            }
            return;
        }
        if self.releasing.is_some() {
            self.advance_release(RELEASE_STEP_ENTRIES);
            return;
        }
        if self.cut.is_some() {
            self.advance_cut(CUT_STEP_ENTRIES);
            return;
        }
        let due = self.since_snapshot >= self.config.snapshot_every_records
            || (self.since_snapshot > 0
                && self.last_snapshot.elapsed()
                    >= Duration::from_millis(self.config.snapshot_every_ms));
        if due && !self.snapshot_in_flight {
            self.begin_cut(None);
            self.advance_cut(CUT_STEP_ENTRIES);
        }
    }

    /// Takes in finished snapshots; with `wait`, until none is in flight.
    fn collect_snapshots(&mut self, wait: bool) {
        while self.snapshot_in_flight {
            let done = if wait {
                self.done.recv().ok()
            } else {
                self.done.try_recv().ok()
            };
            let Some(done) = done else { break };
            self.snapshot_in_flight = false;
            match done {
                SnapshotDone::Written(archiving) => {
                    // One snapshot at a time: a release under way is the one before.
                    self.advance_release(usize::MAX);
                    self.releasing = Some(archiving);
                }
                // Written again by the next snapshot, from the entities as they are then.
                SnapshotDone::Failed(marks) => self.world.snapshot_failed(marks),
            }
        }
    }

    /// Begins a snapshot of everything durable now: a cut of the world,
    /// encoded a step at a time between batches (see [`advance_cut`]), so
    /// that group commit never waits for a whole snapshot to be encoded.
    /// `ack` answers once it is written.
    ///
    /// [`advance_cut`]: Worker::advance_cut
    fn begin_cut(&mut self, ack: Option<oneshot::Sender<Ack>>) {
        // The events of every record the snapshot covers are in the
        // outbox's tree before the snapshot thread's flush.
        self.write_outbox();
        // One snapshot at a time, so the sequence they cover only moves
        // forward; and the world whole (released) before it is cut.
        self.collect_snapshots(true);
        self.advance_release(usize::MAX);
        if self.poisoned.load(Ordering::Acquire) {
            return refuse(ack, StorageError::Poisoned);
        }
        let marks = self.world.begin_cut();
        let number = self.watch.begun.fetch_add(1, Ordering::SeqCst) + 1;
        self.cut = Some(PendingCut {
            seq: self.world.seq,
            number,
            entries: SnapshotEntries::with_value_limit(self.config.snapshot_value_bytes_max),
            marks,
            ack,
        });
        self.since_snapshot = 0;
        self.last_snapshot = Instant::now();
    }

    /// Lets go of up to `budget` of the entries a written snapshot archived
    /// (see [`World::archived_step`]). A whole snapshot's, 100k orders,
    /// took the writer 50–80 ms at once, and every acknowledgement waited.
    fn advance_release(&mut self, budget: usize) {
        if let Some(done) = self.releasing.as_mut() {
            if self.world.archived_step(done, budget) {
                self.releasing = None;
            }
        }
    }

    /// Encodes up to `budget` entries of the cut under way; once it is
    /// complete, hands it to the snapshot thread.
    fn advance_cut(&mut self, budget: usize) {
        let Some(pending) = self.cut.as_mut() else {
            return;
        };
        let step = if self.poisoned.load(Ordering::Acquire) {
            Err(StorageError::Poisoned)
        } else {
            cut_step(&mut self.world, &mut pending.entries, budget)
                .map_err(|e| StorageError::Corrupt(e.to_string()))
        };
        match step {
            Ok(None) => {}
            Ok(Some(archiving)) => {
                let PendingCut {
                    seq,
                    number,
                    entries,
                    marks,
                    ack,
                } = self.cut.take().expect("a cut under way");
                let Some(jobs) = &self.jobs else {
                    self.world.snapshot_failed(marks);
                    return refuse(ack, StorageError::Closed);
                };
                match jobs.send(SnapshotJob {
                    seq,
                    number,
                    entries,
                    archiving,
                    marks,
                    ack,
                }) {
                    Ok(()) => self.snapshot_in_flight = true,
                    Err(mpsc::SendError(job)) => {
                        self.world.snapshot_failed(job.marks);
                        refuse(job.ack, StorageError::Closed);
                    }
                }
            }
            Err(e) => {
                if e != StorageError::Poisoned {
                    self.stats.snapshot_health.failed("cut", &e);
                }
                // Written again by the next snapshot, from the entities as they are then.
                self.world.cut = None;
                let pending = self.cut.take().expect("a cut under way");
                self.world.snapshot_failed(pending.marks);
                refuse(pending.ack, e);
            }
        }
    }
}

/// The longest an encoded event waits before the outbox is written: each
/// write is one sled batch, and rewriting sled's nodes for a small block
/// per journal batch (about 900 a second under order_pay) more than
/// doubled the bytes written to storage.
pub const OUTBOX_LINGER: Duration = Duration::from_millis(20);

/// Entries encoded per step of a cut: about a millisecond between batches.
const CUT_STEP_ENTRIES: usize = 512;

/// Archived entries let go of per step of a release: about half a
/// millisecond between batches.
const RELEASE_STEP_ENTRIES: usize = 1024;

/// A snapshot being encoded.
struct PendingCut {
    seq: u64,
    number: u64,
    entries: SnapshotEntries,
    marks: Dirty,
    ack: Option<oneshot::Sender<Ack>>,
}

fn refuse(ack: Option<oneshot::Sender<Ack>>, e: StorageError) {
    if let Some(ack) = ack {
        let _ = ack.send(Err(e));
    }
}
