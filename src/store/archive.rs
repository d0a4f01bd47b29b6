//! The archive: what no longer changes, kept in the store rather than in memory.
//!
//! A finished order (paid, failed, cancelled, expired) changes again only
//! if it is refunded, and then is archived again (the last written is
//! read); a user's balance history only grows at its end. So a snapshot moves
//! finished orders and whole chunks of history ([`HISTORY_CHUNK`] entries)
//! to the archive, in the same commit as the rest of the snapshot, and once
//! it is written the durable world and the actors let go of them: memory
//! holds what can still change plus a little, whatever the number of
//! orders served. Reads of archived things come here; recovery does not
//! load them (the invariants count them through
//! [`ArchiveTally`](crate::domain::world::ArchiveTally)).
//!
//! Stores keep finished orders by block of [`ORDER_BLOCK`] consecutive ids,
//! so one read finds an order among a few neighbours written together, and
//! an index of each user's archived order ids, so a user's orders page
//! reads a range of it: memory holds no list of a user's archived orders.
//!
//! [`HISTORY_CHUNK`]: crate::domain::user::HISTORY_CHUNK

use crate::domain::event::Record;
use crate::domain::ids::{OrderId, UserId};
use crate::domain::order::Order;
use crate::domain::user::BalanceEntry;
use crate::domain::world::StoredKey;
use crate::store::codec::{self, Kind};
use crate::store::legacy;
use crate::store::StorageError;
use std::collections::hash_map::{Entry, HashMap};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Consecutive order ids archived together.
pub const ORDER_BLOCK: u64 = 256;

/// What a store's archive answers, as stored frames.
pub trait Archive: Send + Sync {
    /// Order frames (`Kind::Order`, concatenated) of block `block`
    /// (`id / ORDER_BLOCK`): every archived order of it, maybe twice.
    fn order_block(&self, block: u64) -> Result<Vec<u8>, StorageError>;

    /// The frame of chunk `chunk` of user `user`'s history, if archived.
    fn history_chunk(&self, user: u64, chunk: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// Ids of user `user`'s archived orders below `before`, newest first,
    /// at most `limit`. An id may show here a moment before
    /// [`order_block`](Archive::order_block) has its order: until the
    /// snapshot archiving it is committed, the order is still in memory.
    fn user_orders(&self, user: u64, before: u64, limit: usize) -> Result<Vec<u64>, StorageError>;

    /// Calls `f` with the order frames of every block, in no set order.
    fn each_order_block(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError>;

    /// The status masks of the archive's blocks as the store keeps them
    /// (`(block, mask)`, a block maybe more than once: the masks of one
    /// block OR together), or `None` if this store does not keep them and
    /// the blocks themselves must be read ([`crate::store::archive_statuses`]).
    fn status_masks(&self) -> Result<Option<Vec<(u64, u16)>>, StorageError> {
        Ok(None)
    }

    /// The frame (`Kind::Key`) of the idempotency key of `hash`, if a
    /// snapshot moved it to the key tables and it has not expired.
    fn key(&self, hash: u128) -> Result<Option<Vec<u8>>, StorageError>;

    /// The journal batch holding record `seq`, as (its first sequence,
    /// its frames), while the journal still holds it.
    fn journal_batch_of(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StorageError>;
}

fn corrupt(e: codec::CodecError) -> StorageError {
    StorageError::Corrupt(format!("archive: {e}"))
}

/// Typed reads of an [`Archive`].
#[derive(Clone)]
pub struct ArchiveReader(pub Arc<dyn Archive>);

impl ArchiveReader {
    pub fn order(&self, id: OrderId) -> Result<Option<Order>, StorageError> {
        Ok(self.orders(&[id])?.pop().flatten())
    }

    /// The archived orders of `ids`, in their order (`None` where not
    /// archived); each block is read once however many of them it holds.
    pub fn orders(&self, ids: &[OrderId]) -> Result<Vec<Option<Order>>, StorageError> {
        let mut blocks: HashMap<u64, Vec<Order>> = HashMap::new();
        ids.iter()
            .map(|id| {
                let orders = match blocks.entry(id.0 / ORDER_BLOCK) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let frames = self.0.order_block(*e.key())?;
                        e.insert(legacy::orders(&frames).map_err(corrupt)?)
                    }
                };
                // The last written: a refunded order is archived again.
                Ok(orders.iter().rfind(|o| o.id == *id).cloned())
            })
            .collect()
    }

    /// The archived orders of block `block` (`id / ORDER_BLOCK`), by id;
    /// of an order written twice, the copy written last.
    pub fn order_block(&self, block: u64) -> Result<Vec<Order>, StorageError> {
        let frames = self.0.order_block(block)?;
        let orders: Vec<Order> = codec::decode_all(Kind::Order, &frames).map_err(corrupt)?;
        let by_id: std::collections::BTreeMap<_, _> =
            orders.into_iter().map(|o| (o.id, o)).collect();
        Ok(by_id.into_values().collect())
    }

    pub fn history_chunk(
        &self,
        user: UserId,
        chunk: u64,
    ) -> Result<Option<Vec<BalanceEntry>>, StorageError> {
        self.0
            .history_chunk(user.0, chunk)?
            .map(|frame| codec::decode(Kind::History, &frame).map_err(corrupt))
            .transpose()
    }

    /// Ids of `user`'s archived orders below `before`, newest first, at most `limit`.
    pub fn user_orders(
        &self,
        user: UserId,
        before: Option<OrderId>,
        limit: usize,
    ) -> Result<Vec<OrderId>, StorageError> {
        let before = before.map_or(u64::MAX, |b| b.0);
        Ok(self
            .0
            .user_orders(user.0, before, limit)?
            .into_iter()
            .map(OrderId)
            .collect())
    }

    /// The stored idempotency key of `hash`, if the key tables hold it.
    pub fn key(&self, hash: u128) -> Result<Option<StoredKey>, StorageError> {
        self.0
            .key(hash)?
            .map(|frame| codec::decode(Kind::Key, &frame).map_err(corrupt))
            .transpose()
    }

    /// Record `seq`, while the journal still holds it.
    pub fn journal_record(&self, seq: u64) -> Result<Option<Record>, StorageError> {
        let Some((first, frames)) = self.0.journal_batch_of(seq)? else {
            return Ok(None);
        };
        let records: Vec<Record> = codec::decode_all(Kind::Record, &frames).map_err(corrupt)?;
        Ok(seq
            .checked_sub(first)
            .and_then(|i| records.into_iter().nth(i as usize)))
    }

    /// Every archived order once, in no set order.
    pub fn each_order(&self, mut f: impl FnMut(Order)) -> Result<(), StorageError> {
        self.0.each_order_block(&mut |frames| {
            // Of an order archived twice (refunded after it was archived,
            // or a snapshot redone), the last written.
            let mut latest: BTreeMap<OrderId, Order> = BTreeMap::new();
            for o in legacy::orders(frames).map_err(corrupt)? {
                latest.insert(o.id, o);
            }
            latest.into_values().for_each(&mut f);
            Ok(())
        })
    }
}
