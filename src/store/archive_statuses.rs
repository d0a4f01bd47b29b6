//! Which order statuses each block of the archive holds, so that a list of
//! orders by status reads only blocks that have some.
//!
//! The archive keeps finished orders by block of [`ORDER_BLOCK`]
//! consecutive ids ([`crate::store::archive`]). For each block this holds
//! one bit per status found in it (16 bits, a status's bit is
//! `1 << status as u8`): 2 bytes per 256 orders, 78 KiB for 10,000,000
//! orders. A page of an admin list walks the masks from its cursor's block
//! and reads only blocks whose mask has the status asked for, so each block
//! read yields at least one order of the page: at most `limit + 1` block
//! reads per page, whatever the number of orders or how rare the status.
//!
//! A bit is a hint, never the answer: the orders listed are those read
//! from the blocks, filtered by their status. A bit may be set for a block
//! that no longer holds the status (it cost one read); a bit must never be
//! missing. Bits are set from two sides, which together cover every
//! archived order:
//! - [`ArchivedStatuses::mark`]: a coordinator shard marks each finished
//!   order it lets go of (the archive holds it then), before it lets go,
//!   so a reader that reads the shard and then the masks finds it in one
//!   or the other;
//! - [`ArchivedStatuses::scan`]: once per process, the first list that
//!   needs the masks marks every order the archive held before, from the
//!   masks the store writes with each block (sled: 2 bytes per block and
//!   snapshot; a store archived before it kept them gets them built at
//!   its next open), or, from a store that keeps none, by reading every
//!   block once, on a blocking thread. Bits only grow, so the two sides
//!   can run in any order.

use crate::domain::order::{Order, OrderStatus};
use crate::store::{ArchiveReader, StorageError, ORDER_BLOCK};
use std::sync::Mutex;

/// What [`ArchivedStatuses::scan`] found.
enum Found {
    Masks(Vec<(u64, u16)>),
    Orders(Vec<(u64, OrderStatus)>),
}

/// The bit of `status` in a block's mask.
pub const fn status_bit(status: OrderStatus) -> u16 {
    let n = status as u8 as u32;
    1u16 << if n > 15 { 15 } else { n }
}

/// Masks of statuses by archive block; see the module's docs.
#[derive(Debug, Default)]
pub struct ArchivedStatuses {
    masks: Mutex<Vec<u16>>,
    /// Set once [`scan`](ArchivedStatuses::scan) has marked what the
    /// archive held before this process began marking.
    scanned: tokio::sync::OnceCell<()>,
}

impl ArchivedStatuses {
    /// Marks archived orders: `(id, status)` each.
    pub fn mark(&self, orders: impl IntoIterator<Item = (u64, OrderStatus)>) {
        let mut masks = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        for (id, status) in orders {
            let block = (id / ORDER_BLOCK) as usize;
            if masks.len() <= block {
                masks.resize(block + 1, 0);
            }
            masks[block] |= status_bit(status);
        }
    }

    /// ORs whole masks into blocks: `(block, mask)` each.
    pub fn mark_blocks(&self, masks: impl IntoIterator<Item = (u64, u16)>) {
        let mut all = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        for (block, mask) in masks {
            let Ok(block) = usize::try_from(block) else {
                continue;
            };
            if all.len() <= block {
                all.resize(block + 1, 0);
            }
            all[block] |= mask;
        }
    }

    /// Marks every order the archive holds (once per process, on a
    /// blocking thread, the others waiting for it): from the masks the
    /// store keeps with its blocks, or, from a store that keeps none, by
    /// reading every block. A storage error leaves it to be tried again.
    pub async fn scan(&self, archive: &ArchiveReader) -> Result<(), StorageError> {
        self.scanned
            .get_or_try_init(|| async {
                let archive = archive.clone();
                let run = move || {
                    if let Some(masks) = archive.0.status_masks()? {
                        return Ok::<_, StorageError>(Found::Masks(masks));
                    }
                    let mut found: Vec<(u64, OrderStatus)> = Vec::new();
                    archive.each_order(|o: Order| found.push((o.id.0, o.status)))?;
                    Ok(Found::Orders(found))
                };
                let found = match tokio::runtime::Handle::try_current() {
                    Ok(_) => tokio::task::spawn_blocking(run)
                        .await
                        .map_err(|_| StorageError::Closed)??,
                    Err(_) => run()?,
                };
                match found {
                    Found::Masks(masks) => self.mark_blocks(masks),
                    Found::Orders(orders) => self.mark(orders),
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The first block at or after `from` whose mask shares a bit with `bits`.
    pub fn next_block(&self, from: u64, bits: u16) -> Option<u64> {
        let masks = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(from).ok()?;
        masks
            .get(start..)?
            .iter()
            .position(|m| m & bits != 0)
            .map(|i| (start + i) as u64)
    }
}

/// The orders of the archive with a status in `bits` and an id above
/// `after`, by id, at least `want` of them if there are so many (a whole
/// block more at most). Reads only blocks whose mask says they have some.
pub fn archived_orders_after(
    archive: &ArchiveReader,
    statuses: &ArchivedStatuses,
    bits: u16,
    after: u64,
    want: usize,
) -> Result<Vec<Order>, StorageError> {
    let mut found: Vec<Order> = Vec::new();
    let mut block = after.saturating_add(1) / ORDER_BLOCK;
    while found.len() < want {
        let Some(next) = statuses.next_block(block, bits) else {
            break;
        };
        found.extend(
            archive
                .order_block(next)?
                .into_iter()
                .filter(|o| o.id.0 > after && status_bit(o.status) & bits != 0),
        );
        block = next + 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_find_the_next_block_with_a_status_and_only_grow() {
        // proves a block is found by any status marked in it, never by another, from any start
        let s = ArchivedStatuses::default();
        s.mark([
            (3, OrderStatus::Paid),
            (ORDER_BLOCK * 5 + 1, OrderStatus::Failed),
        ]);
        let paid = status_bit(OrderStatus::Paid);
        let failed = status_bit(OrderStatus::Failed);
        assert_eq!(s.next_block(0, paid), Some(0));
        assert_eq!(s.next_block(1, paid), None);
        assert_eq!(s.next_block(0, failed), Some(5));
        assert_eq!(s.next_block(6, failed), None);
        assert_eq!(s.next_block(0, status_bit(OrderStatus::Cancelled)), None);
        s.mark([(ORDER_BLOCK * 2, OrderStatus::Paid)]);
        assert_eq!(s.next_block(1, paid), Some(2));
        assert_eq!(s.next_block(0, paid), Some(0), "bits are never cleared");
        assert_eq!(s.next_block(0, u16::MAX), Some(0));
        assert_eq!(s.next_block(u64::MAX, u16::MAX), None);
    }

    #[test]
    fn every_status_has_its_own_bit() {
        // proves no two statuses share a bit, so a filter never reads another status's blocks
        let mut seen = 0u16;
        for s in OrderStatus::ALL {
            assert_eq!(seen & status_bit(s), 0, "{s:?}");
            seen |= status_bit(s);
        }
    }
}
