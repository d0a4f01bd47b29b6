//! Snapshots taken without stopping the world: which entities changed
//! since the last snapshot ([`Dirty`]), the cut that copies them as they
//! were when it began ([`Cut`]), and what a written snapshot lets go of
//! ([`Archiving`]).
//!
//! The [`World`] keeps the marks and the cut as it applies records
//! (`World::user_mut` copies a user a cut still needs before changing it);
//! the journal writer begins a cut, encodes it a step at a time
//! ([`crate::store::recovery`]) and tells the world how writing went.

use crate::domain::coupon::CampaignHeader;
use crate::domain::id_bitmap::CHUNK_WORDS;
use crate::domain::ids::{CouponId, IdSet, OrderId, ProductId, UserId};
use crate::domain::key_hash::KeyHash;
use crate::domain::order::Order;
use crate::domain::product::Product;
use crate::domain::user::User;
use crate::domain::world::{ArchiveTally, Meta, StoredKey, World};
use std::collections::HashSet;

/// What a snapshot moves to the archive; the world lets go of it once the
/// snapshot is written (`World::archived`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archiving {
    /// Finished orders written to the archive.
    pub orders: Vec<OrderId>,
    /// Users whose history is archived up to (not including) entry `.1`.
    pub history: Vec<(UserId, u64)>,
    /// The tally once these orders are in.
    pub tally: ArchiveTally,
    /// Of `orders`, those refunded since the cut began: they stay in
    /// memory, to be archived again as they are now.
    pub kept: Vec<OrderId>,
}

/// A refund applied since the current cut began, as the archive's tally
/// must learn it when the snapshot's tally replaces the world's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundedSince {
    /// Of an order in memory: `.1` refunds it held before.
    InMemory(OrderId, usize),
    /// Of an archived order, brought back into memory: as it was archived.
    Archived(Box<Order>),
}

/// Which entities changed since the last snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    pub users: IdSet<UserId>,
    pub products: IdSet<ProductId>,
    pub campaigns: IdSet<CouponId>,
    /// Chunks of campaigns' issued sets: (campaign, chunk).
    pub issued: HashSet<(CouponId, u64)>,
    pub orders: IdSet<OrderId>,
    /// Idempotency keys recorded since, with their answers: the snapshot
    /// moves them to the store's key tables ([`crate::store::keys`]).
    pub keys: Vec<NewKey>,
    /// Keys a store from before the key tables kept among the snapshot
    /// entries: the snapshot deletes them there (they are among `keys`).
    pub legacy_keys: Vec<String>,
    pub meta: bool,
}

/// An idempotency key recorded by the record at `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub hash: KeyHash,
    pub seq: u64,
    pub key: StoredKey,
}

impl Dirty {
    /// Adds marks back (a snapshot that failed must be written again).
    pub fn merge(&mut self, other: Dirty) {
        self.users.extend(other.users);
        self.products.extend(other.products);
        self.campaigns.extend(other.campaigns);
        self.issued.extend(other.issued);
        self.orders.extend(other.orders);
        self.keys.extend(other.keys);
        self.legacy_keys.extend(other.legacy_keys);
        self.meta |= other.meta;
    }

    pub fn is_empty(&self) -> bool {
        !self.meta
            && self.users.is_empty()
            && self.products.is_empty()
            && self.campaigns.is_empty()
            && self.issued.is_empty()
            && self.orders.is_empty()
            && self.keys.is_empty()
            && self.legacy_keys.is_empty()
    }
}

/// A snapshot being taken without stopping the world: every changed entity
/// as it was when the cut began. Products, campaigns and the meta are few and change all the
/// time, so they are copied when the cut begins; so are the idempotency
/// keys recorded since the last cut (the world keeps no other). Users and
/// orders are many: they stay where they are, listed here, until they are encoded
/// (a step at a time, between journal batches) or until a record is about
/// to change one, which copies it first. So a cut costs no pause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// Unchanged since the cut began: read them from the world.
    pub users: Vec<UserId>,
    pub orders: Vec<OrderId>,
    /// The same ids, to look up an entity about to change: those still here are uncaptured.
    waiting_users: IdSet<UserId>,
    waiting_orders: IdSet<OrderId>,
    /// Copies as they were when the cut began.
    pub captured: Vec<Captured>,
    /// What this snapshot moves to the archive.
    pub archiving: Archiving,
}

/// An entity as it was when a [`Cut`] began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Captured {
    User(User),
    Product(Product),
    Campaign(CampaignHeader),
    /// A chunk of a campaign's issued set.
    IssuedChunk(CouponId, u64, Box<[u64; CHUNK_WORDS]>),
    Order(Order),
    Key(NewKey),
    /// A key of the snapshot entries of an older store, to delete there.
    LegacyKey(String),
    Meta(Meta),
}

impl Cut {
    /// Whether `id` still waits in the world (and is no longer after this call).
    pub fn take_user(&mut self, id: UserId) -> bool {
        self.waiting_users.remove(&id)
    }
    pub fn take_order(&mut self, id: OrderId) -> bool {
        self.waiting_orders.remove(&id)
    }

    /// Nothing is left to encode.
    pub fn is_done(&self) -> bool {
        self.users.is_empty() && self.orders.is_empty() && self.captured.is_empty()
    }
}

impl World {
    /// Begins a snapshot of every entity changed since the last one, as it
    /// is now; returns the marks it takes (to give back if writing fails).
    pub fn begin_cut(&mut self) -> Dirty {
        let marks = std::mem::take(&mut self.dirty);
        self.refunded_since_cut.clear();
        let mut cut = Cut::default();
        cut.archiving.tally = self.archived.clone();
        for id in &marks.products {
            if let Some(p) = self.products.get(id.index()) {
                cut.captured.push(Captured::Product(p.clone()));
            }
        }
        for id in &marks.campaigns {
            if let Some(c) = self.campaigns.get(id.index()) {
                cut.captured.push(Captured::Campaign(c.header()));
            }
        }
        for &(id, chunk) in &marks.issued {
            let words = self
                .campaigns
                .get(id.index())
                .and_then(|c| c.issued.chunk(chunk));
            if let Some(words) = words {
                cut.captured
                    .push(Captured::IssuedChunk(id, chunk, Box::new(*words)));
            }
        }
        if marks.meta {
            cut.captured.push(Captured::Meta(self.meta.clone()));
        }
        cut.captured
            .extend(marks.keys.iter().cloned().map(Captured::Key));
        cut.captured
            .extend(marks.legacy_keys.iter().cloned().map(Captured::LegacyKey));
        cut.users = marks.users.iter().copied().collect();
        cut.orders = marks.orders.iter().copied().collect();
        cut.waiting_users = marks.users.clone();
        cut.waiting_orders = marks.orders.clone();
        self.cut = Some(cut);
        marks
    }

    /// A snapshot was not written: its marks come back, to be written by the next one.
    pub fn snapshot_failed(&mut self, marks: Dirty) {
        self.dirty.merge(marks);
    }

    /// A snapshot was written, with what it archived: those orders and
    /// history entries leave memory (finished orders never change, and
    /// history only grows at its end, so nothing of them changed since).
    pub fn archived(&mut self, mut done: Archiving) {
        self.archived_step(&mut done, usize::MAX);
    }

    /// [`archived`](World::archived) a step at a time: lets go of up to
    /// `budget` of `done`'s orders and users' histories, taking them out of
    /// `done`; once none is left, takes its tally and answers true. Until
    /// then the world counts some archived orders nowhere (gone from
    /// memory, not in the tally yet), so nothing may read or cut it before
    /// the last step.
    ///
    /// An order refunded since the cut began stays (it changed: the next
    /// snapshot archives it again), and the tally learns every refund
    /// since the cut began: those orders count as they are now, not as
    /// the snapshot archived them.
    pub fn archived_step(&mut self, done: &mut Archiving, budget: usize) -> bool {
        for _ in 0..budget {
            if let Some(id) = done.orders.pop() {
                if self.dirty.orders.contains(&id) {
                    done.kept.push(id);
                    continue;
                }
                self.orders.remove(&id);
                self.orders_in_snapshots.remove(&id);
            } else if let Some((id, base)) = done.history.pop() {
                if let Some(u) = self.users.get_mut(id.index()) {
                    u.archive_history_before(base);
                }
            } else {
                let mut tally = std::mem::take(&mut done.tally);
                let mut seen = IdSet::default();
                for since in &self.refunded_since_cut {
                    match since {
                        RefundedSince::Archived(before) => tally.remove(before),
                        RefundedSince::InMemory(id, count) => {
                            // The snapshot archived it as it was before its first refund since.
                            if seen.insert(*id) && done.kept.contains(id) {
                                if let Some(o) = self.orders.get(id) {
                                    tally.remove(&o.after_refunds(*count));
                                }
                            }
                        }
                    }
                }
                self.archived = tally;
                return true;
            }
        }
        false
    }

    /// A user is about to change: if a cut still needs it as it was, copy it first.
    pub(crate) fn capture_user(&mut self, id: UserId) {
        if let Some(cut) = &mut self.cut {
            if cut.take_user(id) {
                if let Some(u) = self.users.get(id.index()) {
                    cut.captured.push(Captured::User(u.clone()));
                }
            }
        }
    }

    pub(crate) fn capture_order(&mut self, id: OrderId) {
        if let Some(cut) = &mut self.cut {
            if cut.take_order(id) {
                if let Some(o) = self.orders.get(&id) {
                    cut.captured.push(Captured::Order(o.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::OrderStatus;

    fn world() -> World {
        World {
            users: vec![User::new(UserId(1), "kim".into())],
            ..World::default()
        }
    }

    fn order(lines: &[(u64, u64)]) -> Order {
        crate::domain::order::sample_pending_order(lines)
    }

    #[test]
    fn archiving_a_step_at_a_time_ends_as_archiving_at_once() {
        // given 5 finished orders in memory, when they are archived 2 entries
        // a step, then they leave memory step by step and the tally comes last
        let finished = |id| Order {
            id: OrderId(id),
            status: OrderStatus::Paid,
            ..order(&[(1, 1)])
        };
        let mut w = world();
        let mut tally = ArchiveTally::default();
        for id in 1..=5 {
            let o = finished(id);
            tally.add(&o);
            w.orders_in_snapshots.insert(o.id);
            w.orders.insert(o.id, o);
        }
        let done = Archiving {
            orders: (1..=5).map(OrderId).collect(),
            history: vec![(UserId(1), 0)],
            tally: tally.clone(),
            kept: Vec::new(),
        };
        let mut at_once = w.clone();
        at_once.archived(done.clone());

        let mut stepped = done;
        let mut left = Vec::new();
        while !w.archived_step(&mut stepped, 2) {
            assert_eq!(w.archived, ArchiveTally::default(), "the tally comes last");
            left.push(w.orders.len());
        }
        assert_eq!(left, [3, 1, 0]);
        assert_eq!(w.archived, tally);
        assert!(w.orders.is_empty() && w.orders_in_snapshots.is_empty());
        assert_eq!(w, at_once);
    }
}
