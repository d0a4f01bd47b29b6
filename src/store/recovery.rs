//! Recovery: snapshots, then every journal record after them, then the invariants.

use crate::domain::coupon::Campaign;
use crate::domain::event::Record;
use crate::domain::order::Order;
use crate::domain::product::Product;
use crate::domain::user::User;
use crate::domain::world::{Meta, StoredKey, World};
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
                world.users.push(u);
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

/// Encodes every entity that changed since the last snapshot, and clears the marks.
pub fn dirty_snapshot(world: &mut World) -> Result<SnapshotEntries, CodecError> {
    let dirty = std::mem::take(&mut world.dirty);
    let mut out = Vec::new();
    for id in dirty.users {
        if let Some(u) = world.users.get(id.index()) {
            out.push((SnapshotKey::User(id.0), Some(codec::encode(Kind::User, u)?)));
        }
    }
    for id in dirty.products {
        if let Some(p) = world.products.get(id.index()) {
            out.push((
                SnapshotKey::Product(id.0),
                Some(codec::encode(Kind::Product, p)?),
            ));
        }
    }
    for id in dirty.campaigns {
        if let Some(c) = world.campaigns.get(id.index()) {
            out.push((
                SnapshotKey::Campaign(id.0),
                Some(codec::encode(Kind::Campaign, c)?),
            ));
        }
    }
    for id in dirty.orders {
        if let Some(o) = world.orders.get(&id) {
            out.push((
                SnapshotKey::Order(id.0),
                Some(codec::encode(Kind::Order, o)?),
            ));
        }
    }
    for key in dirty.keys {
        let value = world
            .keys
            .get(&key)
            .map(|v| codec::encode(Kind::Key, v))
            .transpose()?;
        out.push((SnapshotKey::Key(key), value));
    }
    if dirty.meta {
        out.push((
            SnapshotKey::Meta,
            Some(codec::encode(Kind::Meta, &world.meta)?),
        ));
    }
    Ok(out)
}

/// Every entity of `world`, as a full snapshot (golden files, `verify`).
pub fn full_snapshot(world: &World) -> Result<SnapshotEntries, CodecError> {
    let mut w = world.clone();
    w.dirty.users = w.users.iter().map(|u| u.id).collect();
    w.dirty.products = w.products.iter().map(|p| p.id).collect();
    w.dirty.campaigns = w.campaigns.iter().map(|c| c.id).collect();
    w.dirty.orders = w.orders.keys().copied().collect();
    w.dirty.keys = w.keys.keys().cloned().collect();
    w.dirty.meta = true;
    dirty_snapshot(&mut w)
}
