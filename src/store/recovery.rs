//! Recovery: snapshots, then every journal record after them, then the invariants.

use crate::domain::coupon::Campaign;
use crate::domain::event::Record;
use crate::domain::ids::UserId;
use crate::domain::order::Order;
use crate::domain::product::Product;
use crate::domain::user::{BalanceEntry, User};
use crate::domain::world::{Captured, Meta, StoredKey, World};
use crate::store::codec::{self, CodecError, Kind};
use crate::store::{Loaded, SnapshotEntries, SnapshotKey, StorageError, Store};

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

/// Loads and recovers a store.
pub fn recover_store(store: &dyn Store) -> Result<(World, RecoveryReport), RecoveryError> {
    recover(store.load()?)
}

pub fn recover(loaded: Loaded) -> Result<(World, RecoveryReport), RecoveryError> {
    let mut world = World::default();
    let mut report = RecoveryReport {
        snapshot_seq: loaded.snapshot_seq,
        snapshot_entries: loaded.snapshots.len(),
        ..RecoveryReport::default()
    };
    load_snapshots(&mut world, loaded.snapshots)?;
    world.seq = loaded.snapshot_seq;
    for (first_seq, frames) in loaded.batches {
        let records: Vec<Record> =
            codec::decode_all(Kind::Record, &frames).map_err(|error| RecoveryError::Journal {
                seq: first_seq,
                error,
            })?;
        let last = first_seq + records.len() as u64 - 1;
        if last <= world.seq {
            continue; // wholly covered by the snapshots
        }
        if first_seq > world.seq + 1 {
            return Err(RecoveryError::Gap {
                expected_after: world.seq,
                found: first_seq,
            });
        }
        for (i, record) in records.iter().enumerate() {
            let seq = first_seq + i as u64;
            if seq > world.seq {
                world.apply(seq, record)?;
                report.records_replayed += 1;
            }
        }
    }
    // Keep the snapshot marks of what replay changed: those entities are on
    // disk only as journal records, and the next snapshot, which trims the
    // journal up to its sequence, must write them (loading snapshots marks
    // nothing, so only replayed changes are marked here).
    report.last_seq = world.seq;
    let violations = world.violations();
    if !violations.is_empty() {
        return Err(RecoveryError::Invariants(violations));
    }
    Ok((world, report))
}

fn load_snapshots(
    world: &mut World,
    entries: Vec<(SnapshotKey, Vec<u8>)>,
) -> Result<(), RecoveryError> {
    let mut entries = entries;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, bytes) in entries {
        let bad = |error| RecoveryError::Snapshot {
            key: key.clone(),
            error,
        };
        match &key {
            SnapshotKey::User(id) => {
                let u: User = codec::decode(Kind::User, &bytes).map_err(bad)?;
                dense(world.users.len(), *id, u.id.0, "user")?;
                // A user with its history inline (written before history
                // chunks) has no chunks yet: the next snapshot writes them all.
                world.set_history_persisted(u.id, 0);
                world.users.push(u);
            }
            SnapshotKey::History(id, chunk) => {
                let entries: Vec<BalanceEntry> =
                    codec::decode(Kind::History, &bytes).map_err(bad)?;
                let user = world
                    .users
                    .get_mut(UserId(*id).index())
                    .filter(|u| u.id.0 == *id)
                    .ok_or_else(|| {
                        RecoveryError::Sparse(format!("history of user {id}, who is not there"))
                    })?;
                if user.history.len() as u64 != chunk * HISTORY_CHUNK as u64 {
                    return Err(RecoveryError::Sparse(format!(
                        "history chunk {chunk} of user {id} after {} entries",
                        user.history.len()
                    )));
                }
                user.history.extend(entries);
                let len = user.history.len();
                world.set_history_persisted(UserId(*id), len);
            }
            SnapshotKey::Product(id) => {
                let p: Product = codec::decode(Kind::Product, &bytes).map_err(bad)?;
                dense(world.products.len(), *id, p.id.0, "product")?;
                world.products.push(p);
            }
            SnapshotKey::Campaign(id) => {
                let c: Campaign = codec::decode(Kind::Campaign, &bytes).map_err(bad)?;
                dense(world.campaigns.len(), *id, c.id.0, "coupon")?;
                world.campaigns.push(c);
            }
            SnapshotKey::Order(_) => {
                let o: Order = codec::decode(Kind::Order, &bytes).map_err(bad)?;
                world.orders.insert(o.id, o);
            }
            SnapshotKey::Key(k) => {
                let v: StoredKey = codec::decode(Kind::Key, &bytes).map_err(bad)?;
                world.keys.insert(k.clone(), v);
            }
            SnapshotKey::Meta => {
                world.meta = codec::decode::<Meta>(Kind::Meta, &bytes).map_err(bad)?
            }
        }
    }
    Ok(())
}

fn dense(len: usize, key: u64, id: u64, what: &str) -> Result<(), RecoveryError> {
    if key == id && id == len as u64 + 1 {
        Ok(())
    } else {
        Err(RecoveryError::Sparse(format!(
            "{what} {id} under key {key} after {len}"
        )))
    }
}

/// Balance history entries per snapshot chunk.
pub const HISTORY_CHUNK: usize = 16;

/// A user as snapshot entries: the user without its history, then the
/// chunks of history from the one holding entry `from` (the first not
/// stored yet). History only grows, so earlier chunks are already stored:
/// a user with a long history costs a snapshot what changed, not all of it.
/// The caller records that the history is stored up to its length now.
fn encode_user(u: &User, from: usize, out: &mut SnapshotEntries) -> Result<(), CodecError> {
    out.push((
        SnapshotKey::User(u.id.0),
        Some(codec::encode(Kind::User, &u.without_history())?),
    ));
    let len = u.history.len();
    if from < len {
        for chunk in from / HISTORY_CHUNK..len.div_ceil(HISTORY_CHUNK) {
            let part = &u.history[chunk * HISTORY_CHUNK..len.min((chunk + 1) * HISTORY_CHUNK)];
            out.push((
                SnapshotKey::History(u.id.0, chunk as u64),
                Some(codec::encode(Kind::History, part)?),
            ));
        }
    }
    Ok(())
}

/// Encodes up to `budget` entries of the world's [`Cut`](crate::domain::world::Cut)
/// into `out`; returns whether the cut is complete (and then ends it).
/// No record is applied during a step, so the cut is taken out meanwhile.
pub fn cut_step(
    world: &mut World,
    out: &mut SnapshotEntries,
    budget: usize,
) -> Result<bool, CodecError> {
    let Some(mut cut) = world.cut.take() else {
        return Ok(true);
    };
    let mut left = budget;
    while left > 0 {
        if let Some(captured) = cut.captured.pop() {
            encode_captured(world, captured, out)?;
        } else if let Some(id) = cut.users.pop() {
            if !cut.take_user(id) {
                continue; // copied when it changed: among `captured`
            }
            if let Some(u) = world.users.get(id.index()) {
                encode_user(u, world.history_persisted(id), out)?;
                let len = u.history.len();
                world.set_history_persisted(id, len);
            }
        } else if let Some(id) = cut.orders.pop() {
            if !cut.take_order(id) {
                continue;
            }
            if let Some(o) = world.orders.get(&id) {
                out.push((
                    SnapshotKey::Order(id.0),
                    Some(codec::encode(Kind::Order, o)?),
                ));
            }
        } else if let Some(key) = cut.keys.pop() {
            if !cut.take_key(&key) {
                continue;
            }
            let value = world.keys.get(&key).cloned();
            encode_captured(world, Captured::Key(key, value), out)?;
        } else {
            break;
        }
        left -= 1;
    }
    let done = cut.is_done();
    if !done {
        world.cut = Some(cut);
    }
    Ok(done)
}

/// An entity copied by a cut, as snapshot entries.
fn encode_captured(
    world: &mut World,
    captured: Captured,
    out: &mut SnapshotEntries,
) -> Result<(), CodecError> {
    let entry = match captured {
        Captured::User(u) => {
            encode_user(&u, world.history_persisted(u.id), out)?;
            world.set_history_persisted(u.id, u.history.len());
            return Ok(());
        }
        Captured::Product(p) => (
            SnapshotKey::Product(p.id.0),
            Some(codec::encode(Kind::Product, &p)?),
        ),
        Captured::Campaign(c) => (
            SnapshotKey::Campaign(c.id.0),
            Some(codec::encode(Kind::Campaign, &c)?),
        ),
        Captured::Order(o) => (
            SnapshotKey::Order(o.id.0),
            Some(codec::encode(Kind::Order, &o)?),
        ),
        Captured::Key(k, v) => {
            let value = v.map(|v| codec::encode(Kind::Key, &v)).transpose()?;
            (SnapshotKey::Key(k), value)
        }
        Captured::Meta(m) => (SnapshotKey::Meta, Some(codec::encode(Kind::Meta, &m)?)),
    };
    out.push(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::coupon::Discount;
    use crate::domain::event::{Event, IdempotencyEntry};
    use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
    use crate::domain::money::Krw;
    use crate::domain::order::{OrderLine, OrderStatus};
    use crate::domain::rejection::Rejection;
    use crate::domain::time::Timestamp;
    use crate::domain::views::Reply;
    use crate::domain::world::IDEMPOTENCY_TTL_MS;
    use std::collections::BTreeMap;

    /// Encodes every entity that changed since the last snapshot, and clears
    /// the marks: a whole cut at once (nothing changes in between).
    fn dirty_snapshot(world: &mut World) -> Result<SnapshotEntries, CodecError> {
        world.begin_cut();
        let mut out = Vec::new();
        let done = cut_step(world, &mut out, usize::MAX)?;
        debug_assert!(done, "a cut with no budget limit completes");
        Ok(out)
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
        }
    }

    fn keyed(at: u64, event: Event, key: &str) -> Record {
        let mut r = Record::new(Timestamp(at), event);
        r.idempotency = Some(IdempotencyEntry {
            key: key.into(),
            fingerprint: 7,
            reply: Reply::Rejected(Rejection::InvalidRequest(key.into())),
        });
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
        for (k, v) in entries {
            assert!(map.insert(k.clone(), v).is_none(), "{k:?} twice");
        }
        map
    }

    /// A cut is the world as it was when the cut began, whatever changes
    /// while it is encoded a step at a time: entities changed after the cut
    /// are copied before they change, the others are read in place.
    #[test]
    fn a_cut_encoded_a_step_at_a_time_is_the_world_as_it_was_at_the_cut() {
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

        let expected = dirty_snapshot(&mut world.clone()).unwrap();
        world.begin_cut();
        let mut entries = Vec::new();
        let later = [
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
        ];
        // One entry, one change, in turn: some entities are encoded before
        // they change, others are copied first.
        for record in later {
            assert!(!cut_step(&mut world, &mut entries, 1).unwrap());
            apply(&mut world, record);
        }
        world.prune(Timestamp(2 + IDEMPOTENCY_TTL_MS + 1)); // drops "old"
        while !cut_step(&mut world, &mut entries, 1).unwrap() {}
        assert!(world.cut.is_none());
        assert_eq!(as_map(entries), as_map(expected));

        // What changed after the cut is marked for the next one.
        let next = &world.dirty;
        assert!(next.users.contains(&UserId(1)) && next.users.contains(&UserId(4)));
        assert!(next.orders.contains(&OrderId(4)) && next.keys.contains("old"));
    }

    /// A long history is stored in chunks, and a snapshot writes only the
    /// chunks that changed; recovery puts the history back whole.
    #[test]
    fn history_is_snapshotted_in_chunks_and_only_new_chunks_are_written() {
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
        for _ in 0..150 {
            apply(&mut world, charge(1, 1));
        }
        let store = MemoryStore::new();
        let first = dirty_snapshot(&mut world).unwrap();
        let keys: Vec<_> = first.iter().map(|(k, _)| k.clone()).collect();
        let chunks = 150u64.div_ceil(HISTORY_CHUNK as u64);
        for chunk in 0..chunks {
            assert!(keys.contains(&SnapshotKey::History(1, chunk)), "{keys:?}");
        }
        assert!(!keys.contains(&SnapshotKey::History(1, chunks)));
        store.snapshot(world.seq, first).unwrap();

        let mut last = 0;
        for _ in 0..20 {
            last = apply(&mut world, charge(1, 1)); // 170 entries
        }
        world.begin_cut();
        let mut second = Vec::new();
        while !cut_step(&mut world, &mut second, 1000).unwrap() {}
        let keys: Vec<_> = second.iter().map(|(k, _)| k.clone()).collect();
        let from = 150 / HISTORY_CHUNK as u64; // the chunk entry 150 is in
        let mut expected = vec![SnapshotKey::User(1)];
        expected.extend(
            (from..170u64.div_ceil(HISTORY_CHUNK as u64)).map(|c| SnapshotKey::History(1, c)),
        );
        assert!(expected.len() < 4, "a few chunks, not the whole history");
        assert_eq!(
            keys, expected,
            "only the user and the chunks from entry 150 on"
        );
        store.snapshot(last, second).unwrap();

        let (recovered, report) = recover_store(&store).unwrap();
        assert_eq!(report.records_replayed, 0);
        assert_eq!(recovered.users, world.users);
        assert_eq!(recovered.users[0].history.len(), 170);
        assert_eq!(recovered.history_persisted(UserId(1)), 170);
    }
}
