//! Takes over what data dirs written before the outbox had a tree of its
//! own kept in the snapshotted meta: `Meta.outbox`, the ids of paid orders
//! the data platform had not accepted, and `Meta.sink_len`, the file
//! sink's recorded length. The only reader of those fields: it goes when
//! they go.
//!
//! The pending orders become requeued blocks, a chunk at a time, each
//! chunk written with how far the takeover got (`legacy_through`), so a
//! restart part way goes on where it stopped and never adds an order
//! twice. The world then holds both fields empty, and its next snapshot
//! writes them so. Journal records of such a data dir (`OrderPaid` above
//! the snapshot) are derived again like any others
//! ([`outbox::recover`](crate::store::outbox::recover)); its
//! `OutboxDelivered` records replay as nothing, so orders they delivered
//! after the snapshot are delivered again, and the file sink is cut back
//! to the snapshot's length first: it still holds each event once.

use crate::domain::ids::OrderId;
use crate::domain::order::Order;
use crate::domain::platform::PlatformEvent;
use crate::domain::world::World;
use crate::store::outbox::{
    borrow, encode_event, OutboxState, OutboxStore, Requeue, Settlement, BLOCK_EVENTS_MAX,
};
use crate::store::{ArchiveReader, StorageError};

/// Takes over `world`'s legacy outbox fields into `outbox`, then empties
/// them in `world` (marked for the next snapshot). Answers the outbox's
/// state after.
pub fn take_over(
    outbox: &dyn OutboxStore,
    world: &mut World,
    archive: &ArchiveReader,
) -> Result<OutboxState, StorageError> {
    let mut state = outbox.state()?;
    if world.meta.outbox.is_empty() && world.meta.sink_len == 0 {
        return Ok(state);
    }
    if state.file_len.is_none() && world.meta.sink_len > 0 {
        state.file_len = Some(world.meta.sink_len);
        outbox.settle(&Settlement {
            delivered: state.delivered,
            dead_lettered: state.dead_lettered,
            file_len: state.file_len,
            ..Settlement::default()
        })?;
    }
    let done = state.legacy_through.unwrap_or(0);
    let ids: Vec<OrderId> = world
        .meta
        .outbox
        .iter()
        .copied()
        .filter(|id| id.0 > done)
        .collect();
    let mut taken = 0;
    for chunk in ids.chunks(BLOCK_EVENTS_MAX) {
        let events = events_of(chunk, world, archive)?;
        let mut block = Vec::new();
        for e in &events {
            encode_event(&borrow(e), &mut block)?;
        }
        let n = events.len() as u64;
        let requeue = Requeue {
            id: state.requeued,
            block,
            requeued: state.requeued + n,
            redriven: state.redriven,
            remove_dead: Vec::new(),
            legacy_through: chunk.last().map(|id| id.0),
        };
        outbox.requeue(&requeue)?;
        state.requeued = requeue.requeued;
        state.legacy_through = requeue.legacy_through;
        taken += n;
    }
    tracing::info!(
        orders = taken,
        sink_len = world.meta.sink_len,
        "outbox: an older data dir's pending paid orders taken over"
    );
    world.meta.outbox.clear();
    world.meta.sink_len = 0;
    world.dirty.meta = true;
    Ok(state)
}

/// The events of paid orders `ids`, from memory or the archive; an order
/// found in neither is left out (the data dir lost it before this).
fn events_of(
    ids: &[OrderId],
    world: &World,
    archive: &ArchiveReader,
) -> Result<Vec<PlatformEvent>, StorageError> {
    let missing: Vec<OrderId> = ids
        .iter()
        .copied()
        .filter(|id| !world.orders.contains_key(id))
        .collect();
    let mut archived = archive.orders(&missing)?.into_iter();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let order: Option<Order> = match world.orders.get(id) {
            Some(o) => Some(o.clone()),
            None => archived.next().flatten(),
        };
        match order {
            Some(order) => {
                let at = order.paid_at.unwrap_or(order.created_at);
                out.push(PlatformEvent::OrderPaid { order, at });
            }
            None => {
                tracing::warn!(order = %id, "a pending paid order of an older data dir is gone")
            }
        }
    }
    Ok(out)
}
