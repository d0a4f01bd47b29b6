//! The outbox: events for the data platform, kept on disk until it accepts
//! them, so memory stays bounded whatever the backlog.
//!
//! **How events get in.** After each durable journal batch, the journal
//! writer encodes the batch's events ([`PlatformEvent`], one codec frame
//! each, the order as the durable world holds it) and gathers them into
//! *blocks*, which it adds with one atomic write together with the
//! *watermark*: "the events of every record up to sequence S are in the
//! outbox". A block is keyed by the journal sequence of its first event's
//! record ([`BlockKey::Journal`]) and holds at most [`BLOCK_EVENTS_MAX`]
//! events. The writer writes once a block is full, once the first event
//! gathered has waited `OUTBOX_LINGER` (20 ms), and always before a
//! snapshot begins. One sled batch per block rather than per event (sled
//! costs about 7 µs per key) nor per journal batch: a write per journal
//! batch, about 900 a second under order_pay at 256 in flight, kept the
//! writer acknowledging 17–28% of the time (5–6% without an outbox) and
//! wrote 5.2–6.5 KB to storage per journal record (2.1–2.5 KB without);
//! gathered over 20 ms, 8–12% and 3.0–3.8 KB, at the same throughput
//! (`bench --workload order_pay --concurrency 256 --data-platform off`,
//! three alternating runs of each). What is left is mostly sled rewriting
//! a leaf, values and all, every ten changes and at each split.
//!
//! **Why no flush there.** The write is not flushed by the writer: the
//! snapshot thread flushes the same database before it commits any
//! snapshot (and so before it trims the journal records the block came
//! from), and a snapshot covering a batch is only begun after that batch's
//! block was added. So a block is durable before the last copy of its
//! records can go. After a crash, [`recover`] derives again the events of
//! the journal records above the watermark that the store replays (it is
//! idempotent: what the watermark covers is never derived twice).
//!
//! **How events leave.** Delivery reads blocks in key order, holds a
//! bounded window of them in memory, and settles a block once every event
//! of it is accepted or dead-lettered: one atomic write removes the block,
//! adds its dead letters and moves the counters ([`Settlement`]). The file
//! sink's write also records how long the file is and is flushed, so the
//! file holds each event once (see `engine::delivery`).
//!
//! **Dead letters** are kept one per key, with their last error and
//! refusal count, until a redrive puts them back as a block of their own
//! ([`BlockKey::Requeued`], numbered by a counter).
//!
//! **Counters.** Each counter is written by one party only, in the same
//! atomic write as the change it counts: the writer `added` (with the
//! watermark), delivery `delivered` and `dead_lettered` (with a
//! settlement), a requeue `requeued` and `redriven`. So what is pending
//! and how many dead letters there are is known without reading a block:
//! `added + requeued - delivered - dead_lettered` and `dead_lettered -
//! redriven`.

use crate::domain::event::Record;
use crate::domain::ids::OrderId;
use crate::domain::platform::{PlatformEvent, PlatformEventRef};
use crate::domain::time::Timestamp;
use crate::domain::world::World;
use crate::store::codec::{self, CodecError, Kind};
use crate::store::{ArchiveReader, StorageError, Store};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Events in one block at most: a batch with more makes several blocks.
/// Delivery holds whole blocks, so this also bounds what one read adds to
/// its window.
pub const BLOCK_EVENTS_MAX: usize = 2048;

/// The two key spaces of blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// Events of journal records, by the sequence of the first one's record.
    Journal,
    /// Events put back (redriven dead letters, or taken over from an older
    /// data dir), by a counter.
    Requeued,
}

/// Where a block is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockKey {
    pub space: Space,
    pub id: u64,
}

/// The outbox's counters and marks, as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// The events of every journal record up to this sequence are in.
    pub watermark: u64,
    /// Events added from journal records, ever.
    pub added: u64,
    /// Events put back as requeued blocks, ever.
    pub requeued: u64,
    /// Of those, redriven dead letters.
    pub redriven: u64,
    /// Events the data platform accepted, ever.
    pub delivered: u64,
    /// Events that became dead letters, ever.
    pub dead_lettered: u64,
    /// The file sink's length after the last settled write, once there was one.
    pub file_len: Option<u64>,
    /// How far an older data dir's pending orders were taken over (the
    /// largest order id), once begun (see `store::outbox_legacy`).
    pub legacy_through: Option<u64>,
}

impl OutboxState {
    pub fn pending(&self) -> u64 {
        (self.added + self.requeued).saturating_sub(self.delivered + self.dead_lettered)
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered.saturating_sub(self.redriven)
    }
}

/// Delivery's outcome for some blocks, written atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Blocks whose every event is accepted or dead-lettered.
    pub remove: Vec<BlockKey>,
    /// Their dead letters, by id (encoded [`DeadLetter`]s).
    pub dead: Vec<(u64, Vec<u8>)>,
    /// The new totals.
    pub delivered: u64,
    pub dead_lettered: u64,
    /// The file sink's new length.
    pub file_len: Option<u64>,
    /// Flush before answering (the file sink's record must be durable
    /// before the next write to the file).
    pub flush: bool,
}

/// Events put back as one block, written atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requeue {
    /// The block (id: `requeued` before this).
    pub id: u64,
    pub block: Vec<u8>,
    /// The new totals.
    pub requeued: u64,
    pub redriven: u64,
    /// Dead letters the block holds again: removed.
    pub remove_dead: Vec<u64>,
    /// For a takeover from an older data dir: how far it got.
    pub legacy_through: Option<u64>,
}

/// The outbox as a store keeps it: bytes and counters. Each method is one
/// atomic change; only the writer adds journal blocks, only delivery
/// settles, and requeues are made one at a time (the engine serialises
/// them), so no two writers ever race on one counter.
pub trait OutboxStore: Send + Sync {
    fn state(&self) -> Result<OutboxState, StorageError>;

    /// Adds journal blocks `(first sequence, block)` with the watermark and
    /// the new `added` total. Not flushed (see the module's documentation).
    fn add(&self, blocks: &[(u64, &[u8])], watermark: u64, added: u64) -> Result<(), StorageError>;

    /// The first block of `space` with an id at or above `from`.
    fn block_from(&self, space: Space, from: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError>;

    fn settle(&self, s: &Settlement) -> Result<(), StorageError>;

    /// Dead letters with ids at or above `from`, at most `limit`, by id.
    fn dead_letters(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;

    fn requeue(&self, r: &Requeue) -> Result<(), StorageError>;
}

/// An event the data platform refused too often, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: PlatformEvent,
    /// What the data platform answered the last time.
    pub last_error: String,
    pub refusals: u32,
    /// When it became a dead letter.
    pub at: Timestamp,
}

fn corrupt(what: &str, e: CodecError) -> StorageError {
    StorageError::Corrupt(format!("outbox {what}: {e}"))
}

/// Appends one event's frame to a block.
pub fn encode_event(event: &PlatformEventRef<'_>, block: &mut Vec<u8>) -> Result<(), StorageError> {
    let start = block.len();
    codec::encode_into(Kind::PlatformEvent, event, block).map_err(|e| {
        block.truncate(start);
        corrupt("event", e)
    })
}

pub fn decode_block(block: &[u8]) -> Result<Vec<PlatformEvent>, StorageError> {
    codec::decode_all(Kind::PlatformEvent, block).map_err(|e| corrupt("block", e))
}

/// The first event of a block, reading no further.
pub fn first_event(block: &[u8]) -> Result<Option<PlatformEvent>, StorageError> {
    if block.is_empty() {
        return Ok(None);
    }
    let (head, rest) = codec::split_frame(block).map_err(|e| corrupt("block", e))?;
    if head.kind != Kind::PlatformEvent {
        let kind = head.kind;
        return Err(StorageError::Corrupt(format!("outbox block of {kind:?}")));
    }
    let frame = &block[..block.len() - rest.len()];
    codec::decode(Kind::PlatformEvent, frame)
        .map(Some)
        .map_err(|e| corrupt("block", e))
}

pub fn encode_dead_letter(d: &DeadLetter) -> Result<Vec<u8>, StorageError> {
    codec::encode(Kind::DeadLetter, d).map_err(|e| corrupt("dead letter", e))
}

pub fn decode_dead_letter(bytes: &[u8]) -> Result<DeadLetter, StorageError> {
    codec::decode(Kind::DeadLetter, bytes).map_err(|e| corrupt("dead letter", e))
}

/// Encodes events into blocks of at most [`BLOCK_EVENTS_MAX`], each with
/// the id (`key(i)` of its first event) it is stored under. The journal
/// writer keeps one and reuses its buffers from batch to batch.
#[derive(Default)]
pub struct BlockBuilder {
    /// Bytes of every block, one after another.
    bytes: Vec<u8>,
    /// (id, end in `bytes`, events) of each block.
    blocks: Vec<(u64, usize, usize)>,
}

impl BlockBuilder {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.blocks.clear();
    }

    /// Adds an event whose block id is `id` if it begins a block.
    pub fn push(&mut self, id: u64, event: &PlatformEventRef<'_>) -> Result<(), StorageError> {
        let full = self
            .blocks
            .last()
            .is_none_or(|&(_, _, n)| n >= BLOCK_EVENTS_MAX);
        encode_event(event, &mut self.bytes)?;
        if full {
            self.blocks.push((id, self.bytes.len(), 1));
        } else if let Some(last) = self.blocks.last_mut() {
            last.1 = self.bytes.len();
            last.2 += 1;
        }
        Ok(())
    }

    pub fn events(&self) -> u64 {
        self.blocks.iter().map(|b| b.2 as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Every block: its id and bytes.
    pub fn blocks(&self) -> Vec<(u64, &[u8])> {
        let mut start = 0;
        self.blocks
            .iter()
            .map(|&(id, end, _)| {
                let b = (id, &self.bytes[start..end]);
                start = end;
                b
            })
            .collect()
    }
}

/// The outbox's counters in memory, for gauges and the admin status, and
/// the signal that blocks were added. Each moves right before (added,
/// requeued) or right after (delivered, dead-lettered) its durable write,
/// so `delivered` never runs ahead of what was added.
#[derive(Debug, Default)]
pub struct OutboxLive {
    added: AtomicU64,
    requeued: AtomicU64,
    redriven: AtomicU64,
    delivered: AtomicU64,
    dead_lettered: AtomicU64,
    /// The time (ms) of the oldest event the writer gathered and has not
    /// written to the store yet, 0 when none: counted as pending already,
    /// so the status's oldest pending event considers it too.
    gathering_at: AtomicU64,
    /// Woken when blocks were added (by the writer, a redrive).
    pub added_signal: tokio::sync::Notify,
}

impl OutboxLive {
    pub fn new(s: &OutboxState) -> OutboxLive {
        let live = OutboxLive::default();
        live.added.store(s.added, Ordering::SeqCst);
        live.requeued.store(s.requeued, Ordering::SeqCst);
        live.redriven.store(s.redriven, Ordering::SeqCst);
        live.delivered.store(s.delivered, Ordering::SeqCst);
        live.dead_lettered.store(s.dead_lettered, Ordering::SeqCst);
        live
    }

    /// The writer gathered events from `at` on (set before they are
    /// counted as added).
    pub fn gathering(&self, at: Timestamp) {
        // 0 means none: the epoch's first millisecond is told as the next.
        let _ =
            self.gathering_at
                .compare_exchange(0, at.0.max(1), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The gathered events are in the store (or were dropped).
    pub fn gathered(&self) {
        self.gathering_at.store(0, Ordering::SeqCst);
    }

    /// The oldest event gathered and not yet in the store, if any.
    pub fn gathering_at(&self) -> Option<Timestamp> {
        match self.gathering_at.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Timestamp(ms)),
        }
    }

    /// Events not yet accepted nor dead-lettered.
    pub fn pending(&self) -> u64 {
        // Read the settled ones first: what is added only grows, so this
        // never counts more settled than added.
        let settled =
            self.delivered.load(Ordering::SeqCst) + self.dead_lettered.load(Ordering::SeqCst);
        let put = self.added.load(Ordering::SeqCst) + self.requeued.load(Ordering::SeqCst);
        put.saturating_sub(settled)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::SeqCst)
    }

    pub fn dead_letters(&self) -> u64 {
        let redriven = self.redriven.load(Ordering::SeqCst);
        self.dead_lettered
            .load(Ordering::SeqCst)
            .saturating_sub(redriven)
    }

    pub fn added(&self) -> u64 {
        self.added.load(Ordering::SeqCst)
    }

    /// `events` are about to be added from the journal; answers the new total.
    pub fn adding(&self, events: u64) -> u64 {
        self.added.fetch_add(events, Ordering::SeqCst) + events
    }

    /// The add of `events` failed.
    pub fn not_added(&self, events: u64) {
        self.added.fetch_sub(events, Ordering::SeqCst);
    }

    /// A requeue of `events` (`redriven` of them dead letters) is about to be written.
    pub fn requeuing(&self, events: u64, redriven: u64) {
        self.requeued.fetch_add(events, Ordering::SeqCst);
        self.redriven.fetch_add(redriven, Ordering::SeqCst);
    }

    pub fn not_requeued(&self, events: u64, redriven: u64) {
        self.requeued.fetch_sub(events, Ordering::SeqCst);
        self.redriven.fetch_sub(redriven, Ordering::SeqCst);
    }

    pub fn requeued(&self) -> u64 {
        self.requeued.load(Ordering::SeqCst)
    }

    pub fn redriven(&self) -> u64 {
        self.redriven.load(Ordering::SeqCst)
    }

    /// A settlement with these totals is durable.
    pub fn settled(&self, delivered: u64, dead_lettered: u64) {
        self.delivered.store(delivered, Ordering::SeqCst);
        self.dead_lettered.store(dead_lettered, Ordering::SeqCst);
    }
}

/// What [`recover`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Events derived again from journal records above the watermark.
    pub rederived: u64,
    pub state: OutboxState,
}

/// The journal records above `from` (`(sequence, record)`), as the store holds them.
fn journal_tail(store: &dyn Store, from: u64) -> Result<Vec<(u64, Record)>, StorageError> {
    let mut out = Vec::new();
    for (first, frames) in store.journal_after(from)? {
        let records: Vec<Record> = codec::decode_all(Kind::Record, &frames)
            .map_err(|e| corrupt(&format!("journal batch at {first}"), e))?;
        for (i, record) in records.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq > from {
                out.push((seq, record));
            }
        }
    }
    Ok(out)
}

/// Makes the outbox whole after recovery: the events of the journal records
/// that the watermark does not cover (written by a batch whose block was
/// not durable yet when the process stopped) are derived again from
/// `world`, the recovered state, and added with the watermark moved to
/// `world.seq`. Records the snapshot covers are never derived again: their
/// blocks were durable before the snapshot was committed.
pub fn recover(
    store: &dyn Store,
    outbox: &dyn OutboxStore,
    world: &World,
    snapshot_seq: u64,
) -> Result<Recovered, StorageError> {
    let mut state = outbox.state()?;
    let from = state.watermark.max(snapshot_seq);
    if world.seq <= from {
        return Ok(Recovered {
            rederived: 0,
            state,
        });
    }
    let tail = journal_tail(store, from)?;
    let archive = ArchiveReader(store.archive());
    let mut owned: Vec<(u64, PlatformEvent)> = Vec::new();
    for (seq, record) in &tail {
        // A paid order stays in memory until a snapshot archives it, and
        // that snapshot covers its payment: so it is in `world.orders`.
        // The archive is read only should that ever not hold.
        let event = match PlatformEventRef::of(record, |id| world.orders.get(&id)) {
            Some(e) => Some(e.to_owned()),
            None => archived_event(&archive, record)?,
        };
        if let Some(e) = event {
            owned.push((*seq, e));
        }
    }
    let mut builder = BlockBuilder::default();
    for (seq, event) in &owned {
        builder.push(*seq, &borrow(event))?;
    }
    let rederived = builder.events();
    if rederived > 0 {
        state.added += rederived;
        state.watermark = world.seq;
        outbox.add(&builder.blocks(), state.watermark, state.added)?;
        tracing::info!(
            events = rederived,
            watermark = state.watermark,
            "outbox: events of journal records above the watermark derived again"
        );
    }
    Ok(Recovered { rederived, state })
}

/// The event of a record whose order is no longer in memory.
fn archived_event(
    archive: &ArchiveReader,
    record: &Record,
) -> Result<Option<PlatformEvent>, StorageError> {
    let crate::domain::event::Event::OrderPaid { order_id, .. } = &record.event else {
        return Ok(None);
    };
    match archive.order(*order_id)? {
        Some(order) => Ok(Some(PlatformEvent::OrderPaid {
            order,
            at: record.at,
        })),
        None => {
            tracing::error!(order = %order_id, "a paid order is neither in memory nor archived; its event is lost");
            Ok(None)
        }
    }
}

pub fn borrow(event: &PlatformEvent) -> PlatformEventRef<'_> {
    match event {
        PlatformEvent::OrderPaid { order, at } => PlatformEventRef::OrderPaid { order, at: *at },
        PlatformEvent::OrderRefunded {
            order_id,
            number,
            amount,
            items,
            at,
        } => PlatformEventRef::OrderRefunded {
            order_id: *order_id,
            number: *number,
            amount: *amount,
            items,
            at: *at,
        },
    }
}

/// Everything the outbox holds, read whole: for tests and tools, never
/// while serving (it holds the whole backlog in memory).
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    pub state: OutboxState,
    /// Events of every block, in key order (requeued blocks first).
    pub pending: Vec<PlatformEvent>,
    /// Orders whose payment is in the journal above the watermark and the
    /// snapshot: a start derives their events again.
    pub rederivable: Vec<OrderId>,
    pub dead_letters: Vec<(u64, DeadLetter)>,
}

/// How many events a start would derive again: one per payment and per
/// refund in the journal above the watermark and `snapshot_seq`.
pub fn rederivable_events(store: &dyn Store, snapshot_seq: u64) -> Result<u64, StorageError> {
    let state = store.outbox().state()?;
    Ok(journal_tail(store, state.watermark.max(snapshot_seq))?
        .iter()
        .filter(|(_, r)| {
            matches!(
                r.event,
                crate::domain::event::Event::OrderPaid { .. }
                    | crate::domain::event::Event::OrderRefunded { .. }
            )
        })
        .count() as u64)
}

/// The orders whose payment a start would derive an event of again:
/// those in the journal above the watermark and `snapshot_seq`.
pub fn rederivable(store: &dyn Store, snapshot_seq: u64) -> Result<Vec<OrderId>, StorageError> {
    let state = store.outbox().state()?;
    Ok(journal_tail(store, state.watermark.max(snapshot_seq))?
        .into_iter()
        .filter_map(|(_, r)| match r.event {
            crate::domain::event::Event::OrderPaid { order_id, .. } => Some(order_id),
            _ => None,
        })
        .collect())
}

pub fn inspect(store: &dyn Store, snapshot_seq: u64) -> Result<Inspection, StorageError> {
    let outbox = store.outbox();
    let state = outbox.state()?;
    let mut pending = Vec::new();
    for space in [Space::Requeued, Space::Journal] {
        let mut from = 0;
        while let Some((id, block)) = outbox.block_from(space, from)? {
            pending.extend(decode_block(&block)?);
            from = id + 1;
        }
    }
    let rederivable = rederivable(store, snapshot_seq)?;
    let mut dead_letters = Vec::new();
    let mut from = 0;
    loop {
        let page = outbox.dead_letters(from, 256)?;
        let Some(&(last, _)) = page.last() else { break };
        for (id, bytes) in page {
            dead_letters.push((id, decode_dead_letter(&bytes)?));
        }
        from = last + 1;
    }
    Ok(Inspection {
        state,
        pending,
        rederivable,
        dead_letters,
    })
}

/// The payment time of the oldest pending event, read from the first
/// block of each space (blocks of the journal are in payment order; a
/// requeued block may hold older events after its first).
pub fn oldest_pending_at(outbox: &dyn OutboxStore) -> Result<Option<Timestamp>, StorageError> {
    let mut oldest: Option<Timestamp> = None;
    for space in [Space::Requeued, Space::Journal] {
        if let Some((_, block)) = outbox.block_from(space, 0)? {
            if let Some(e) = first_event(&block)? {
                oldest = Some(oldest.map_or(e.at(), |o| o.min(e.at())));
            }
        }
    }
    Ok(oldest)
}

/// A fixed-layout value of the outbox's own keys: a version byte, then
/// big-endian words.
pub mod words {
    use crate::store::StorageError;

    const VERSION: u8 = 1;

    pub fn encode(words: &[u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + words.len() * 8);
        out.push(VERSION);
        for w in words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    pub fn decode<const N: usize>(what: &str, raw: &[u8]) -> Result<[u64; N], StorageError> {
        match raw.split_first() {
            Some((&VERSION, rest)) if rest.len() == N * 8 => {
                let mut out = [0u64; N];
                for (i, w) in rest.chunks_exact(8).enumerate() {
                    out[i] = u64::from_be_bytes(w.try_into().expect("8 bytes"));
                }
                Ok(out)
            }
            Some((&v, _)) if v != VERSION => Err(StorageError::Corrupt(format!(
                "outbox {what}: format version {v} is not one this build reads"
            ))),
            _ => Err(StorageError::Corrupt(format!(
                "outbox {what} of {} bytes",
                raw.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::Order;

    fn order(id: u64) -> Order {
        crate::domain::order::sample_paid_order(id)
    }

    #[test]
    fn the_writers_borrowed_events_decode_as_owned_ones() {
        // proves PlatformEventRef and PlatformEvent share one encoding
        let o = order(7);
        let mut block = Vec::new();
        let event = PlatformEventRef::OrderPaid {
            order: &o,
            at: Timestamp(2_000),
        };
        encode_event(&event, &mut block).unwrap();
        assert_eq!(decode_block(&block).unwrap(), vec![event.to_owned()]);
        assert_eq!(first_event(&block).unwrap(), Some(event.to_owned()));
    }

    #[test]
    fn a_builder_cuts_blocks_at_the_maximum_keyed_by_their_first_event() {
        // proves block boundaries and ids exactly, for a batch of more than two blocks
        let orders: Vec<Order> = (1..=BLOCK_EVENTS_MAX as u64 * 2 + 3).map(order).collect();
        let mut b = BlockBuilder::default();
        for (i, o) in orders.iter().enumerate() {
            let e = PlatformEventRef::OrderPaid {
                order: o,
                at: Timestamp(0),
            };
            b.push(100 + i as u64, &e).unwrap();
        }
        let blocks = b.blocks();
        let ids: Vec<u64> = blocks.iter().map(|(id, _)| *id).collect();
        let max = BLOCK_EVENTS_MAX as u64;
        assert_eq!(ids, vec![100, 100 + max, 100 + 2 * max]);
        let sizes: Vec<usize> = blocks
            .iter()
            .map(|(_, bytes)| decode_block(bytes).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![BLOCK_EVENTS_MAX, BLOCK_EVENTS_MAX, 3]);
        assert_eq!(b.events(), orders.len() as u64);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn counter_values_carry_a_version_and_refuse_another() {
        // proves an unknown layout is refused with a clear error, not misread
        let raw = words::encode(&[1, 2]);
        assert_eq!(words::decode::<2>("counters", &raw).unwrap(), [1, 2]);
        let mut newer = raw.clone();
        newer[0] = 9;
        let e = words::decode::<2>("counters", &newer).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        assert!(words::decode::<3>("counters", &raw).is_err());
    }

    #[test]
    fn pending_counts_what_was_put_in_less_what_was_settled() {
        // proves the counters' arithmetic, dead letters and redrives included
        let s = OutboxState {
            added: 10,
            requeued: 3,
            redriven: 2,
            delivered: 6,
            dead_lettered: 4,
            ..OutboxState::default()
        };
        assert_eq!(s.pending(), 3);
        assert_eq!(s.dead_letters(), 2);
        let live = OutboxLive::new(&s);
        assert_eq!((live.pending(), live.dead_letters()), (3, 2));
    }
}
