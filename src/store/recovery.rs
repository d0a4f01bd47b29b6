//! Recovery: snapshots, then every journal record after them, then the invariants.

use crate::domain::coupon::CampaignHeader;
use crate::domain::event::Record;
use crate::domain::id_bitmap::CHUNK_WORDS;
use crate::domain::ids::{CouponId, IdSet, OrderId, UserId};
use crate::domain::key_hash::key_hash;
use crate::domain::limits::Limits;
use crate::domain::order::Order;
use crate::domain::user::{BalanceEntry, User, HISTORY_CHUNK};
use crate::domain::world::{Meta, StoredKey, TallyCounts, World};
use crate::store::archive_statuses::status_bit;
use crate::store::codec::{self, CodecError, Kind};
use crate::store::cut::{Archiving, Captured, NewKey};
use crate::store::legacy::{self, LegacySales};
use crate::store::{ArchiveReader, Loaded, SnapshotEntries, SnapshotKey, StorageError, Store};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("snapshot {key:?} does not decode: {error}")]
    Snapshot { key: SnapshotKey, error: CodecError },
    #[error("journal batch at {seq} does not decode: {error}")]
    Journal { seq: u64, error: CodecError },
    #[error("journal is not contiguous: batch at {found} follows record {expected_after}")]
    Gap { expected_after: u64, found: u64 },
    #[error(transparent)]
    Apply(#[from] crate::domain::world::ApplyError),
    #[error("snapshot ids are not dense: {0}")]
    Sparse(String),
    #[error("recovered state violates invariants: {0:?}")]
    Invariants(Vec<String>),
}

/// What recovery did, for logs and `verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub snapshot_seq: u64,
    pub snapshot_entries: usize,
    pub records_replayed: u64,
    pub last_seq: u64,
}

/// Loads and recovers a store as the engine serves it: what is archived
/// stays in the store ([`crate::store::archive`]).
pub fn recover_for_serving(store: &dyn Store) -> Result<(World, RecoveryReport), RecoveryError> {
    recover(store.load()?)
}

/// [`recover_for_serving`], the invariants checked under `limits` (an
/// engine configured with other limits than API.md's).
pub fn recover_for_serving_under(
    store: &dyn Store,
    limits: &Limits,
) -> Result<(World, RecoveryReport), RecoveryError> {
    recover_under(store.load()?, limits)
}

/// Loads and recovers a store whole: archived orders and history too, then
/// checks every invariant again over all of it (the history of every user
/// from its first entry). For checks and tools, not for serving: it holds
/// everything ever stored in memory.
pub fn recover_store(store: &dyn Store) -> Result<(World, RecoveryReport), RecoveryError> {
    let (mut world, report) = recover(store.load()?)?;
    let archive = ArchiveReader(store.archive());
    let mut archived = Vec::new();
    archive.each_order(|o| archived.push(o))?;
    for o in archived {
        match world.orders.get(&o.id) {
            None => {
                world.orders.insert(o.id, o);
            }
            // Refunded since it was archived: memory holds it as it is now.
            Some(now) if now.refunds.len() > o.refunds.len() => {}
            Some(_) => {
                return Err(RecoveryError::Sparse(
                    "an order is both archived and in the snapshot".into(),
                ))
            }
        }
    }
    world.archived = Default::default();
    for u in &mut world.users {
        let chunks = u.history_base / HISTORY_CHUNK as u64;
        let mut whole = Vec::with_capacity(u.history_len() as usize);
        for chunk in 0..chunks {
            let entries = archive.history_chunk(u.id, chunk)?.ok_or_else(|| {
                RecoveryError::Sparse(format!(
                    "history chunk {chunk} of user {} is not archived",
                    u.id
                ))
            })?;
            whole.extend(entries);
        }
        whole.append(&mut u.history);
        u.history = whole;
        u.history_base = 0;
    }
    let violations = world.violations();
    if !violations.is_empty() {
        return Err(RecoveryError::Invariants(violations));
    }
    Ok((world, report))
}

pub fn recover(loaded: Loaded) -> Result<(World, RecoveryReport), RecoveryError> {
    recover_under(loaded, &Limits::API)
}

/// Snapshots, then every journal record after them, then the invariants
/// under `limits`.
pub fn recover_under(
    loaded: Loaded,
    limits: &Limits,
) -> Result<(World, RecoveryReport), RecoveryError> {
    let mut world = World::default();
    let mut report = RecoveryReport {
        snapshot_seq: loaded.snapshot_seq,
        snapshot_entries: loaded.snapshots.len(),
        ..RecoveryReport::default()
    };
    load_snapshots(&mut world, loaded.snapshots, loaded.snapshot_seq)?;
    world.seq = loaded.snapshot_seq;
    for (first_seq, frames) in loaded.batches {
        report.records_replayed += replay_batch(&mut world, first_seq, &frames)?;
    }
    // Keep the snapshot marks of what replay changed: those entities are on
    // disk only as journal records, and the next snapshot, which trims the
    // journal up to its sequence, must write them (loading snapshots marks
    // nothing, so only replayed changes are marked here).
    report.last_seq = world.seq;
    let violations = world.violations_under(limits);
    if !violations.is_empty() {
        return Err(RecoveryError::Invariants(violations));
    }
    Ok((world, report))
}

/// How many records the journal batch `frames` holds (each decoded).
pub fn batch_records(frames: &[u8]) -> Result<u64, CodecError> {
    codec::decode_all::<Record>(Kind::Record, frames).map(|records| records.len() as u64)
}

/// Applies one journal batch (records `first_seq..`, encoded as `frames`)
/// to `world`: records it already holds are skipped, a batch that starts
/// past its next record is a gap. How many records it applied. Recovery
/// replays the local journal with it, and a cluster standby every batch
/// it reads from the stream.
pub fn replay_batch(
    world: &mut World,
    first_seq: u64,
    frames: &[u8],
) -> Result<u64, RecoveryError> {
    let records: Vec<Record> =
        codec::decode_all(Kind::Record, frames).map_err(|error| RecoveryError::Journal {
            seq: first_seq,
            error,
        })?;
    let Some(last) = (first_seq + records.len() as u64).checked_sub(1) else {
        return Ok(0);
    };
    if records.is_empty() || last <= world.seq {
        return Ok(0); // wholly covered already
    }
    if first_seq > world.seq + 1 {
        return Err(RecoveryError::Gap {
            expected_after: world.seq,
            found: first_seq,
        });
    }
    let mut applied = 0;
    for (i, record) in records.iter().enumerate() {
        let seq = first_seq + i as u64;
        if seq > world.seq {
            world.apply(seq, record)?;
            applied += 1;
        }
    }
    Ok(applied)
}

fn load_snapshots(
    world: &mut World,
    entries: Vec<(SnapshotKey, Vec<u8>)>,
    snapshot_seq: u64,
) -> Result<(), RecoveryError> {
    let mut entries = entries;
    // Keys sort owners before their parts: users before their history
    // chunks, campaigns before their issued chunks, the tally before its
    // sold chunks.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut load = Loading {
        snapshot_seq,
        ..Loading::default()
    };
    for (key, bytes) in entries {
        load_entry(world, &mut load, &key, &bytes).map_err(|e| match e {
            Load::Codec(error) => RecoveryError::Snapshot { key, error },
            Load::Other(e) => e,
        })?;
    }
    for c in &world.campaigns {
        if let Some(&count) = load.issued_counts.get(&c.id) {
            if c.issued.len() != count {
                return Err(RecoveryError::Sparse(format!(
                    "coupon {}: {} issued in its chunks, {count} in its header",
                    c.id,
                    c.issued.len()
                )));
            }
        }
    }
    if let Some(sales) = load.legacy_sales.take() {
        for id in sales.distribute(&mut world.products) {
            world.dirty.products.insert(id);
        }
    }
    Ok(())
}

/// What loading the snapshot entries carries from one entry to the next.
#[derive(Default)]
struct Loading {
    /// Users whose first history chunk in the snapshot was seen: it says
    /// how many entries before it are archived.
    chunked: HashSet<u64>,
    /// The issued count each campaign's header states, to check its chunks.
    issued_counts: HashMap<CouponId, u64>,
    /// A version 1 meta's sales, given to the products once all are loaded.
    legacy_sales: Option<LegacySales>,
    /// The sequence every snapshot entry includes.
    snapshot_seq: u64,
}

enum Load {
    Codec(CodecError),
    Other(RecoveryError),
}

impl From<CodecError> for Load {
    fn from(e: CodecError) -> Load {
        Load::Codec(e)
    }
}

impl From<RecoveryError> for Load {
    fn from(e: RecoveryError) -> Load {
        Load::Other(e)
    }
}

fn sparse(message: String) -> Load {
    Load::Other(RecoveryError::Sparse(message))
}

fn load_entry(
    world: &mut World,
    load: &mut Loading,
    key: &SnapshotKey,
    bytes: &[u8],
) -> Result<(), Load> {
    match key {
        SnapshotKey::User(id) => load_user(world, *id, bytes),
        SnapshotKey::History(id, chunk) => load_history(world, load, *id, *chunk, bytes),
        SnapshotKey::Product(id) => load_product(world, *id, bytes),
        SnapshotKey::Campaign(id) => load_campaign(world, load, *id, bytes),
        SnapshotKey::Issued(id, chunk) => load_issued(world, *id, *chunk, bytes),
        SnapshotKey::Order(_) => load_order(world, bytes),
        SnapshotKey::Key(k) => load_legacy_key(world, load, k, bytes),
        SnapshotKey::Meta => load_meta(world, load, bytes),
        SnapshotKey::Tally => load_tally(world, bytes),
        SnapshotKey::TallySold(chunk) => load_sold_chunk(world, *chunk, bytes),
        SnapshotKey::IdemKey { .. }
        | SnapshotKey::ArchivedOrder { .. }
        | SnapshotKey::ArchivedHistory(..) => {
            Err(sparse(format!("{key:?} among the snapshot entries")))
        }
    }
}

fn load_user(world: &mut World, id: u64, bytes: &[u8]) -> Result<(), Load> {
    // A user written before history chunks has its history inline.
    let frame = codec::open(bytes)?;
    let u: User = if frame.version < Kind::User.current_since() {
        // Rewritten in the current layout when the user next changes.
        legacy::user(frame)?
    } else {
        codec::decode_frame(Kind::User, frame)?
    };
    dense(world.users.len(), id, u.id.0, "user")?;
    world.users.push(u);
    Ok(())
}

fn load_history(
    world: &mut World,
    load: &mut Loading,
    id: u64,
    chunk: u64,
    bytes: &[u8],
) -> Result<(), Load> {
    let entries: Vec<BalanceEntry> = codec::decode(Kind::History, bytes)?;
    let user = world
        .users
        .get_mut(UserId(id).index())
        .filter(|u| u.id.0 == id)
        .ok_or_else(|| sparse(format!("history of user {id}, who is not there")))?;
    if load.chunked.insert(id) && user.history.is_empty() {
        // Chunks before the first one here are in the archive.
        user.history_base = chunk * HISTORY_CHUNK as u64;
    }
    if user.history_len() != chunk * HISTORY_CHUNK as u64 {
        return Err(sparse(format!(
            "history chunk {chunk} of user {id} after {} entries",
            user.history_len()
        )));
    }
    user.history.extend(entries);
    Ok(())
}

fn load_product(world: &mut World, id: u64, bytes: &[u8]) -> Result<(), Load> {
    let frame = codec::open(bytes)?;
    let p = if frame.version < Kind::Product.current_since() {
        world
            .dirty
            .products
            .insert(crate::domain::ids::ProductId(id));
        legacy::product(frame)?
    } else {
        codec::decode_frame(Kind::Product, frame)?
    };
    dense(world.products.len(), id, p.id.0, "product")?;
    world.products.push(p);
    Ok(())
}

fn load_campaign(world: &mut World, load: &mut Loading, id: u64, bytes: &[u8]) -> Result<(), Load> {
    let frame = codec::open(bytes)?;
    let c = if frame.version == 2 {
        let header = legacy::campaign_header(frame)?;
        load.issued_counts.insert(header.id, header.issued_count);
        world.dirty.campaigns.insert(header.id);
        header.into_campaign()
    } else if frame.version < Kind::Campaign.current_since() {
        let c = legacy::campaign(frame)?;
        world.dirty.campaigns.insert(c.id);
        world
            .dirty
            .issued
            .extend(c.issued.chunk_indexes().map(|chunk| (c.id, chunk)));
        c
    } else {
        let header: CampaignHeader = codec::decode_frame(Kind::Campaign, frame)?;
        load.issued_counts.insert(header.id, header.issued_count);
        header.into_campaign()
    };
    dense(world.campaigns.len(), id, c.id.0, "coupon")?;
    world.campaigns.push(c);
    Ok(())
}

fn load_issued(world: &mut World, id: u64, chunk: u64, bytes: &[u8]) -> Result<(), Load> {
    let words: Vec<u64> = codec::decode(Kind::IssuedChunk, bytes)?;
    if words.len() != CHUNK_WORDS {
        return Err(sparse(format!(
            "issued chunk {chunk} of coupon {id}: {} words",
            words.len()
        )));
    }
    let campaign = world
        .campaigns
        .get_mut(CouponId(id).index())
        .filter(|c| c.id.0 == id)
        .ok_or_else(|| sparse(format!("issued chunk of coupon {id}, which is not there")))?;
    campaign
        .issued
        .load_chunk(chunk, &words)
        .map_err(|e| sparse(format!("coupon {id}: {e}")))
}

fn load_order(world: &mut World, bytes: &[u8]) -> Result<(), Load> {
    let o: Order = legacy::order(codec::open(bytes)?)?;
    if o.status.is_final() {
        // Snapshotted before the archive: the next snapshot archives it.
        world.dirty.orders.insert(o.id);
    }
    world.orders_in_snapshots.insert(o.id);
    world.orders.insert(o.id, o);
    Ok(())
}

/// A store from before the key tables: the key moves there with the next
/// snapshot, which deletes it here.
fn load_legacy_key(world: &mut World, load: &Loading, k: &str, bytes: &[u8]) -> Result<(), Load> {
    let key: StoredKey = codec::decode(Kind::Key, bytes)?;
    world.dirty.keys.push(NewKey {
        hash: key_hash(k),
        seq: load.snapshot_seq,
        key,
    });
    world.dirty.legacy_keys.push(k.to_owned());
    Ok(())
}

fn load_meta(world: &mut World, load: &mut Loading, bytes: &[u8]) -> Result<(), Load> {
    let frame = codec::open(bytes)?;
    world.meta = if frame.version < Kind::Meta.current_since() {
        let (meta, sales) = legacy::meta(frame)?;
        load.legacy_sales = Some(sales);
        world.dirty.meta = true;
        meta
    } else {
        codec::decode_frame::<Meta>(Kind::Meta, frame)?
    };
    Ok(())
}

fn load_tally(world: &mut World, bytes: &[u8]) -> Result<(), Load> {
    let frame = codec::open(bytes)?;
    if frame.version < Kind::Tally.current_since() {
        world.archived = legacy::tally(frame)?;
    } else {
        let counts: TallyCounts = codec::decode_frame(Kind::Tally, frame)?;
        world.archived.orders = counts.orders;
        world.archived.coupons_used = counts.coupons_used;
    }
    Ok(())
}

fn load_sold_chunk(world: &mut World, chunk: u64, bytes: &[u8]) -> Result<(), Load> {
    let units: Vec<u64> = codec::decode(Kind::SoldChunk, bytes)?;
    world
        .archived
        .load_sold_chunk(chunk, &units)
        .map_err(|e| sparse(format!("tally: {e}")))
}

fn dense(len: usize, key: u64, id: u64, what: &str) -> Result<(), Load> {
    if key == id && id == len as u64 + 1 {
        Ok(())
    } else {
        Err(sparse(format!("{what} {id} under key {key} after {len}")))
    }
}

/// A user as snapshot entries: the user without its history; each whole
/// chunk of history still in memory, to the archive (history only grows,
/// so a whole chunk never changes); and the last, partial chunk (maybe
/// empty: its key says how many entries the archive holds). Keys of
/// chunks the snapshot held as partial before are deleted.
fn encode_user(
    u: &User,
    archiving: &mut Archiving,
    out: &mut SnapshotEntries,
) -> Result<(), CodecError> {
    let id = u.id.0;
    out.push_frame(SnapshotKey::User(id), Kind::User, &u.stored())?;
    let chunk = HISTORY_CHUNK as u64;
    let (base, len) = (u.history_base, u.history_len());
    let whole = len / chunk * chunk;
    for c in base / chunk..whole / chunk {
        let from = (c * chunk - base) as usize;
        let part = &u.history[from..from + HISTORY_CHUNK];
        out.push_frame(SnapshotKey::ArchivedHistory(id, c), Kind::History, part)?;
        out.delete(SnapshotKey::History(id, c));
    }
    let tail = &u.history[(whole - base) as usize..];
    out.push_frame(SnapshotKey::History(id, whole / chunk), Kind::History, tail)?;
    if whole > base {
        archiving.history.push((u.id, whole));
    }
    Ok(())
}

/// An order as snapshot entries: a finished one goes to the archive (and
/// leaves the snapshot, if it was there as pending), a pending one to the
/// snapshot.
fn encode_order(
    o: &Order,
    in_snapshots: &mut IdSet<OrderId>,
    archiving: &mut Archiving,
    out: &mut SnapshotEntries,
) -> Result<(), CodecError> {
    if o.status.is_final() {
        let key = SnapshotKey::ArchivedOrder {
            user: o.user_id.0,
            id: o.id.0,
            status_bit: status_bit(o.status),
        };
        out.push_frame(key, Kind::Order, o)?;
        if in_snapshots.contains(&o.id) {
            out.delete(SnapshotKey::Order(o.id.0));
        }
        archiving.orders.push(o.id);
        archiving.tally.add(o);
    } else {
        out.push_frame(SnapshotKey::Order(o.id.0), Kind::Order, o)?;
        in_snapshots.insert(o.id);
    }
    Ok(())
}

/// Encodes up to `budget` entries of the world's [`Cut`](crate::store::cut::Cut)
/// into `out`. Once the cut is complete it ends it and answers what it
/// archives (to hand to [`World::archived`] once the snapshot is written).
/// No record is applied during a step, so the cut is taken out meanwhile.
pub fn cut_step(
    world: &mut World,
    out: &mut SnapshotEntries,
    budget: usize,
) -> Result<Option<Archiving>, CodecError> {
    let Some(mut cut) = world.cut.take() else {
        return Ok(Some(Archiving {
            tally: world.archived.clone(),
            ..Archiving::default()
        }));
    };
    let mut left = budget;
    while left > 0 {
        if let Some(captured) = cut.captured.pop() {
            encode_captured(world, &mut cut.archiving, captured, out)?;
        } else if let Some(id) = cut.users.pop() {
            if !cut.take_user(id) {
                continue; // copied when it changed: among `captured`
            }
            if let Some(u) = world.users.get(id.index()) {
                encode_user(u, &mut cut.archiving, out)?;
            }
        } else if let Some(id) = cut.orders.pop() {
            if !cut.take_order(id) {
                continue;
            }
            if let Some(o) = world.orders.get(&id) {
                encode_order(o, &mut world.orders_in_snapshots, &mut cut.archiving, out)?;
            }
        } else {
            break;
        }
        left -= 1;
    }
    if !cut.is_done() {
        world.cut = Some(cut);
        return Ok(None);
    }
    let mut archiving = cut.archiving;
    if archiving.tally.is_dirty() {
        // The sums commit with the orders they count: the counts, and the
        // chunks of units sold that changed.
        let tally = &archiving.tally;
        out.push_frame(SnapshotKey::Tally, Kind::Tally, &tally.counts())?;
        for &chunk in &tally.sold_dirty {
            let units = tally.sold_chunk(chunk);
            out.push_frame(SnapshotKey::TallySold(chunk), Kind::SoldChunk, units)?;
        }
        archiving.tally.written();
    }
    Ok(Some(archiving))
}

/// An entity copied by a cut, as snapshot entries.
fn encode_captured(
    world: &mut World,
    archiving: &mut Archiving,
    captured: Captured,
    out: &mut SnapshotEntries,
) -> Result<(), CodecError> {
    match captured {
        Captured::User(u) => encode_user(&u, archiving, out),
        Captured::Order(o) => encode_order(&o, &mut world.orders_in_snapshots, archiving, out),
        Captured::Product(p) => out.push_frame(SnapshotKey::Product(p.id.0), Kind::Product, &p),
        Captured::Campaign(c) => out.push_frame(SnapshotKey::Campaign(c.id.0), Kind::Campaign, &c),
        Captured::IssuedChunk(id, chunk, words) => out.push_frame(
            SnapshotKey::Issued(id.0, chunk),
            Kind::IssuedChunk,
            &words[..],
        ),
        Captured::Key(k) => {
            let key = SnapshotKey::IdemKey {
                hash: k.hash,
                fingerprint: k.key.fingerprint,
                at_ms: k.key.at.0,
            };
            out.push_frame(key, Kind::Key, &k.key)
        }
        Captured::LegacyKey(k) => {
            out.delete(SnapshotKey::Key(k));
            Ok(())
        }
        Captured::Meta(m) => out.push_frame(SnapshotKey::Meta, Kind::Meta, &m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::coupon::Discount;
    use crate::domain::event::{Event, IdempotencyEntry};
    use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
    use crate::domain::money::Krw;
    use crate::domain::order::{OrderLine, OrderStatus};
    use crate::domain::refund::Refunds;
    use crate::domain::rejection::Rejection;
    use crate::domain::time::Timestamp;
    use crate::domain::views::Reply;
    use std::collections::BTreeMap;

    /// Encodes every entity that changed since the last snapshot, and clears
    /// the marks: a whole cut at once (nothing changes in between).
    fn dirty_snapshot(world: &mut World) -> Result<SnapshotEntries, CodecError> {
        world.begin_cut();
        let mut out = SnapshotEntries::new();
        let done = cut_step(world, &mut out, usize::MAX)?;
        debug_assert!(done.is_some(), "a cut with no budget limit completes");
        Ok(out)
    }

    #[test]
    fn a_user_of_format_version_3_loads_with_its_counts_and_is_written_again_in_the_current_layout()
    {
        // given the golden version 3 user (its counted units as pairs), when recovery loads it,
        // then its counts are summed per product, and a snapshot writes it in the current version
        let bytes = include_bytes!("../../snapshots/golden/v3/user.bin");
        assert_eq!(codec::open(bytes).unwrap().version, 3);
        let mut world = World::default();
        assert!(load_user(&mut world, 1, bytes).is_ok());
        let user = world.users[0].clone();
        let counts: Vec<(u64, u64)> = user.limited.iter().map(|(p, n)| (p.0, n)).collect();
        assert_eq!(counts, [(1, 2), (2, 4), (700, 1), (1_000_000, 9)]);
        let mut out = SnapshotEntries::new();
        encode_user(&user, &mut Archiving::default(), &mut out).unwrap();
        let (_, written) = out
            .iter()
            .find(|(k, _)| **k == SnapshotKey::User(1))
            .expect("the user is written");
        let frame = codec::open(written.unwrap()).unwrap();
        assert_eq!(frame.version, codec::FORMAT_VERSION);
        let back: User = codec::decode_frame(Kind::User, frame).unwrap();
        assert_eq!(back, user.without_history());
    }

    fn order(id: u64, user: u64, product: u64) -> Order {
        Order {
            id: OrderId(id),
            user_id: UserId(user),
            status: OrderStatus::Pending,
            items: vec![OrderLine {
                product_id: ProductId(product),
                name: "p".into(),
                unit_price: Krw(100),
                quantity: 1,
            }],
            total_amount: Krw(100),
            discount_amount: Krw(0),
            pay_amount: Krw(100),
            user_coupon_id: None,
            created_at: Timestamp(1),
            expires_at: Timestamp(1_000),
            paid_at: None,
            refunds: Refunds::NONE,
        }
    }

    fn keyed(at: u64, event: Event, key: &str) -> Record {
        let mut r = Record::new(Timestamp(at), event);
        r.idempotency = Some(Box::new(IdempotencyEntry {
            key: key.into(),
            fingerprint: 7,
            reply: Reply::Rejected(Rejection::InvalidRequest(key.into())),
        }));
        r
    }

    fn charge(user: u64, amount: u64) -> Event {
        Event::BalanceCharged {
            user_id: UserId(user),
            amount: Krw(amount),
        }
    }

    fn as_map(entries: SnapshotEntries) -> BTreeMap<SnapshotKey, Option<Vec<u8>>> {
        let mut map = BTreeMap::new();
        for (k, v) in entries.iter() {
            assert!(
                map.insert(k.clone(), v.map(<[u8]>::to_vec)).is_none(),
                "{k:?} twice"
            );
        }
        map
    }

    /// Four users charged, two products, a campaign, three pending orders
    /// and two keyed charges (`old`, `young`): the world a cut begins on,
    /// and the last sequence applied.
    fn world_to_cut() -> (World, u64) {
        let mut world = World::default();
        let mut seq = 0;
        let mut apply = |world: &mut World, record: Record| {
            seq += 1;
            world.apply(seq, &record).unwrap();
        };
        for u in 1..=4 {
            apply(
                &mut world,
                Record::new(
                    Timestamp(1),
                    Event::UserRegistered {
                        user_id: UserId(u),
                        name: format!("u{u}"),
                    },
                ),
            );
            apply(&mut world, Record::new(Timestamp(1), charge(u, 1_000)));
        }
        for p in 1..=2 {
            apply(
                &mut world,
                Record::new(
                    Timestamp(1),
                    Event::ProductCreated {
                        product_id: ProductId(p),
                        name: "p".into(),
                        price: Krw(100),
                        stock: 10,
                    },
                ),
            );
        }
        apply(
            &mut world,
            Record::new(
                Timestamp(1),
                Event::CampaignCreated {
                    coupon_id: CouponId(1),
                    name: "c".into(),
                    discount: Discount::Fixed { amount: Krw(10) },
                    quantity: 5,
                    expires_at: Some(Timestamp(10_000)),
                },
            ),
        );
        for o in 1..=3 {
            let placed = Event::OrderPlaced {
                order: Box::new(order(o, o, 1 + o % 2)),
                from_cart: false,
            };
            apply(&mut world, Record::new(Timestamp(2), placed));
        }
        apply(&mut world, keyed(2, charge(1, 5), "old"));
        apply(&mut world, keyed(3, charge(2, 5), "young"));
        (world, seq)
    }

    /// Changes to [`world_to_cut`]'s entities: a charge, a payment, a
    /// cancel, a coupon issued, the key `young` recorded again, a new order.
    fn records_after_the_cut() -> [Record; 6] {
        [
            Record::new(Timestamp(4), charge(1, 1)),
            Record::new(
                Timestamp(4),
                Event::OrderPaid {
                    order_id: OrderId(1),
                    user_id: UserId(1),
                    amount: Krw(100),
                },
            ),
            Record::new(
                Timestamp(4),
                Event::OrderCancelled {
                    order_id: OrderId(2),
                },
            ),
            Record::new(
                Timestamp(4),
                Event::CouponIssued {
                    coupon_id: CouponId(1),
                    user_id: UserId(3),
                    user_coupon_id: UserCouponId(1),
                },
            ),
            keyed(4, charge(4, 1), "young"),
            Record::new(
                Timestamp(4),
                Event::OrderPlaced {
                    order: Box::new(order(4, 4, 1)),
                    from_cart: false,
                },
            ),
        ]
    }

    /// A cut is the world as it was when the cut began, whatever changes
    /// while it is encoded a step at a time: entities changed after the cut
    /// are copied before they change, the others are read in place.
    #[test]
    fn a_cut_encoded_a_step_at_a_time_is_the_world_as_it_was_at_the_cut() {
        let (mut world, mut seq) = world_to_cut();
        let expected = dirty_snapshot(&mut world.clone()).unwrap();
        world.begin_cut();
        let mut entries = SnapshotEntries::new();
        // One entry, one change, in turn: some entities are encoded before
        // they change, others are copied first.
        for record in records_after_the_cut() {
            assert!(cut_step(&mut world, &mut entries, 1).unwrap().is_none());
            seq += 1;
            world.apply(seq, &record).unwrap();
        }
        while cut_step(&mut world, &mut entries, 1).unwrap().is_none() {}
        assert!(world.cut.is_none());
        assert_eq!(as_map(entries), as_map(expected));

        // What changed after the cut is marked for the next one.
        let next = &world.dirty;
        assert!(next.users.contains(&UserId(1)) && next.users.contains(&UserId(4)));
        assert!(next.orders.contains(&OrderId(4)));
        let young = crate::domain::key_hash::key_hash("young");
        assert_eq!(
            next.keys.iter().map(|k| k.hash).collect::<Vec<_>>(),
            vec![young],
            "the key recorded again after the cut, only"
        );
    }

    /// A long history goes to the archive in whole chunks, each once; the
    /// snapshot keeps the last, partial chunk. Recovery for serving keeps
    /// only that in memory; a whole recovery puts the history back entire.
    #[test]
    fn history_is_archived_in_whole_chunks_each_once() {
        use crate::store::{MemoryStore, Store};
        let mut world = World::default();
        let mut seq = 0;
        let mut apply = |world: &mut World, event: Event| {
            seq += 1;
            world.apply(seq, &Record::new(Timestamp(1), event)).unwrap();
            seq
        };
        apply(
            &mut world,
            Event::UserRegistered {
                user_id: UserId(1),
                name: "kim".into(),
            },
        );
        let mut last = 0;
        for _ in 0..150 {
            last = apply(&mut world, charge(1, 1));
        }
        let full = world.users[0].clone();
        let store = MemoryStore::new();
        let snapshot = |world: &mut World, seq: u64| {
            world.begin_cut();
            let mut out = SnapshotEntries::new();
            let archiving = cut_step(world, &mut out, usize::MAX).unwrap().unwrap();
            let keys: Vec<SnapshotKey> = out.iter().map(|(k, _)| k.clone()).collect();
            store.snapshot(seq, out).unwrap();
            world.archived(archiving);
            keys
        };
        let first = snapshot(&mut world, last);
        let whole = 150 / HISTORY_CHUNK as u64; // 9 whole chunks
        for chunk in 0..whole {
            assert!(
                first.contains(&SnapshotKey::ArchivedHistory(1, chunk)),
                "{first:?}"
            );
        }
        assert!(first.contains(&SnapshotKey::History(1, whole)));
        assert!(!first.contains(&SnapshotKey::ArchivedHistory(1, whole)));
        assert_eq!(world.users[0].history_base, 144);
        assert_eq!(world.users[0].history.len(), 6);
        assert!(world.users[0].is_conserved());

        for _ in 0..20 {
            last = apply(&mut world, charge(1, 1)); // 170 entries
        }
        let second = snapshot(&mut world, last);
        let archived: Vec<_> = second.iter().filter(|k| k.is_archived()).cloned().collect();
        assert_eq!(
            archived,
            vec![SnapshotKey::ArchivedHistory(1, 9)],
            "only the chunk that filled since"
        );
        assert!(second.contains(&SnapshotKey::History(1, 10)));
        assert_eq!(world.users[0].history.len(), 10);

        let (serving, report) = recover_for_serving(&store).unwrap();
        assert_eq!(report.records_replayed, 0);
        assert_eq!(serving.users, world.users);
        assert_eq!(serving.users[0].history_base, 160);

        let (whole_world, _) = recover_store(&store).unwrap();
        let u = &whole_world.users[0];
        assert_eq!((u.history_base, u.history.len()), (0, 170));
        assert_eq!(u.history[..150], full.history[..]);
        assert!(u.is_conserved());
    }
}
