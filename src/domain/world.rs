//! The durable state of everything, as the journal says it is.
//!
//! `World` applies records in journal order. Recovery builds one from
//! snapshots and the journal, `verify` checks one, the journal writer keeps
//! one as its materialised view (to write incremental snapshots without
//! asking any actor), and the engine starts its actors from one.

use crate::domain::coupon::{Campaign, CampaignHeader};
use crate::domain::event::{Event, Record};
use crate::domain::id_bitmap::CHUNK_WORDS;
use crate::domain::ids::{CouponId, IdSet, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::key_hash::{key_hash, KeyHash};
use crate::domain::limits::Limits;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::product::Product;
use crate::domain::refund::RefundRequest;
use crate::domain::time::Timestamp;
use crate::domain::user::{CartLine, CouponUse, User, UserCoupon};
use crate::domain::views::Reply;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// How long an idempotency key is kept at least.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// A stored idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub fingerprint: u64,
    pub reply: Reply,
    pub at: Timestamp,
}

/// Counters and small global state, snapshotted as one value. Nothing in
/// it grows with history: what does is stored as keyed entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub user_count: u64,
    pub product_count: u64,
    pub campaign_count: u64,
    pub user_coupon_count: u64,
    pub order_id_max: u64,
    /// Legacy, always empty now: paid orders not yet accepted by the data
    /// platform, as data dirs kept them before `store::outbox`; taken over
    /// at start (`store::outbox_legacy`).
    pub outbox: BTreeSet<OrderId>,
    /// Legacy, always 0 now: the file sink's recorded length, likewise.
    pub sink_len: u64,
}

/// Products whose archived sales one stored entry of the tally holds.
pub const SOLD_CHUNK_PRODUCTS: u64 = 4096;

/// What the archive holds, in sums: finished orders leave memory for the
/// store's archive once a snapshot has written them there (they never
/// change again), and the invariants count them through this. Snapshotted
/// with the archive entries it sums, in the same commit: the counts as one
/// value, the units sold per product in chunks of [`SOLD_CHUNK_PRODUCTS`]
/// (only the chunks that changed), so no stored value grows with the
/// orders or the products.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveTally {
    pub orders: u64,
    /// Archived paid orders that used a coupon.
    pub coupons_used: u64,
    /// Units sold by archived paid orders, by product index (`id - 1`).
    pub sold: Vec<u64>,
    /// Chunks of `sold` changed since the tally was last written.
    pub sold_dirty: BTreeSet<u64>,
    /// The counts changed since the tally was last written.
    pub counts_dirty: bool,
}

/// The counts of an [`ArchiveTally`], as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyCounts {
    pub orders: u64,
    pub coupons_used: u64,
}

impl ArchiveTally {
    /// Counts a finished order in: the units it still counts as sold
    /// (a paid order's, less any refunded), and its coupon if it still
    /// holds it.
    pub fn add(&mut self, order: &Order) {
        self.orders += 1;
        self.counts_dirty = true;
        for (p, q) in order.units_kept() {
            self.add_sold(p, q);
        }
        if order.holds_coupon() {
            self.coupons_used += 1;
        }
    }

    /// Counts an archived order out (it is back in memory, refunded).
    /// Saturating: while a written snapshot is let go of a step at a
    /// time, the tally may not count it yet ([`World::archived_step`]
    /// takes it out again once it does).
    pub fn remove(&mut self, order: &Order) {
        self.orders = self.orders.saturating_sub(1);
        self.counts_dirty = true;
        for (p, q) in order.units_kept() {
            let i = p.index();
            if let Some(sold) = self.sold.get_mut(i) {
                *sold = sold.saturating_sub(q);
                self.sold_dirty.insert(i as u64 / SOLD_CHUNK_PRODUCTS);
            }
        }
        if order.holds_coupon() {
            self.coupons_used = self.coupons_used.saturating_sub(1);
        }
    }

    /// Counts `units` of `product` sold by archived orders.
    pub fn add_sold(&mut self, product: ProductId, units: u64) {
        let i = product.index();
        if self.sold.len() <= i {
            self.sold.resize(i + 1, 0);
        }
        self.sold[i] += units;
        self.sold_dirty.insert(i as u64 / SOLD_CHUNK_PRODUCTS);
    }

    /// Whether anything changed since the tally was last written.
    pub fn is_dirty(&self) -> bool {
        self.counts_dirty || !self.sold_dirty.is_empty()
    }

    /// The tally was written: nothing of it is changed any more.
    pub fn written(&mut self) {
        self.counts_dirty = false;
        self.sold_dirty.clear();
    }

    /// Units archived paid orders sold of `product`.
    pub fn sold_of(&self, product: ProductId) -> u64 {
        self.sold.get(product.index()).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> TallyCounts {
        TallyCounts {
            orders: self.orders,
            coupons_used: self.coupons_used,
        }
    }

    /// The stored units of chunk `chunk` (trailing products without sales left out).
    pub fn sold_chunk(&self, chunk: u64) -> &[u64] {
        let start = (chunk * SOLD_CHUNK_PRODUCTS) as usize;
        let end = (start + SOLD_CHUNK_PRODUCTS as usize).min(self.sold.len());
        self.sold.get(start..end).unwrap_or(&[])
    }

    /// Sets chunk `chunk` as loaded from storage.
    pub fn load_sold_chunk(&mut self, chunk: u64, units: &[u64]) -> Result<(), String> {
        if units.len() as u64 > SOLD_CHUNK_PRODUCTS {
            return Err(format!("a chunk of {} products", units.len()));
        }
        let start = (chunk * SOLD_CHUNK_PRODUCTS) as usize;
        if self.sold.len() < start + units.len() {
            self.sold.resize(start + units.len(), 0);
        }
        self.sold[start..start + units.len()].copy_from_slice(units);
        Ok(())
    }
}

/// What a snapshot moves to the archive; the world lets go of it once the
/// snapshot is written ([`World::archived`]).
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

/// A record that does not fit the state it is applied to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {seq} cannot be applied: {reason}")]
pub struct ApplyError {
    pub seq: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    pub users: Vec<User>,
    pub products: Vec<Product>,
    pub campaigns: Vec<Campaign>,
    pub orders: BTreeMap<OrderId, Order>,
    pub meta: Meta,
    /// The last journal sequence applied.
    pub seq: u64,
    pub dirty: Dirty,
    /// A snapshot being taken, if any.
    pub cut: Option<Cut>,
    /// Finished orders in the store's archive, summed (they are not in `orders`).
    pub archived: ArchiveTally,
    /// Orders that snapshots hold as pending: archiving one deletes that.
    pub orders_in_snapshots: IdSet<OrderId>,
    /// Refunds applied since the current cut began (bounded by the
    /// records between two snapshots).
    pub refunded_since_cut: Vec<RefundedSince>,
}

fn unfit(seq: u64, reason: String) -> ApplyError {
    ApplyError { seq, reason }
}

fn miss(seq: u64, what: impl std::fmt::Display) -> ApplyError {
    ApplyError {
        seq,
        reason: format!("{what} does not exist"),
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
    fn capture_user(&mut self, id: UserId) {
        if let Some(cut) = &mut self.cut {
            if cut.take_user(id) {
                if let Some(u) = self.users.get(id.index()) {
                    cut.captured.push(Captured::User(u.clone()));
                }
            }
        }
    }

    fn capture_order(&mut self, id: OrderId) {
        if let Some(cut) = &mut self.cut {
            if cut.take_order(id) {
                if let Some(o) = self.orders.get(&id) {
                    cut.captured.push(Captured::Order(o.clone()));
                }
            }
        }
    }

    pub fn user_mut(&mut self, seq: u64, id: UserId) -> Result<&mut User, ApplyError> {
        self.capture_user(id);
        self.dirty.users.insert(id);
        self.users
            .get_mut(id.index())
            .ok_or_else(|| miss(seq, format!("user {id}")))
    }

    pub fn product_mut(&mut self, seq: u64, id: ProductId) -> Result<&mut Product, ApplyError> {
        self.dirty.products.insert(id);
        self.products
            .get_mut(id.index())
            .ok_or_else(|| miss(seq, format!("product {id}")))
    }

    fn order_mut(&mut self, seq: u64, id: OrderId) -> Result<&mut Order, ApplyError> {
        self.capture_order(id);
        self.dirty.orders.insert(id);
        self.orders
            .get_mut(&id)
            .ok_or_else(|| miss(seq, format!("order {id}")))
    }

    /// Applies one journal record. Never panics on a record that does not fit:
    /// it says so, and recovery refuses to start on it.
    pub fn apply(&mut self, seq: u64, record: &Record) -> Result<(), ApplyError> {
        if seq <= self.seq && self.seq != 0 {
            return Err(ApplyError {
                seq,
                reason: format!("sequence after {} expected", self.seq),
            });
        }
        self.apply_event(seq, record.at, &record.event)?;
        if let Some(entry) = &record.idempotency {
            self.dirty.keys.push(NewKey {
                hash: key_hash(&entry.key),
                seq,
                key: StoredKey {
                    fingerprint: entry.fingerprint,
                    reply: entry.reply.clone(),
                    at: record.at,
                },
            });
        }
        self.seq = seq;
        Ok(())
    }

    fn apply_event(&mut self, seq: u64, at: Timestamp, event: &Event) -> Result<(), ApplyError> {
        match event {
            Event::UserRegistered { user_id, name } => {
                self.expect_next(seq, user_id.0, self.users.len())?;
                self.users.push(User::new(*user_id, name.clone()));
                self.dirty.users.insert(*user_id);
                self.meta.user_count = self.users.len() as u64;
                self.dirty.meta = true;
            }
            Event::BalanceCharged { user_id, amount } => {
                let user = self.user_mut(seq, *user_id)?;
                if user.balance.checked_add(*amount).is_none() {
                    return Err(unfit(seq, format!("user {user_id} balance would overflow")));
                }
                user.apply_charged(*amount, at);
            }
            Event::ProductCreated {
                product_id,
                name,
                price,
                stock,
            } => {
                self.expect_next(seq, product_id.0, self.products.len())?;
                self.products
                    .push(Product::new(*product_id, name.clone(), *price, *stock));
                self.dirty.products.insert(*product_id);
                self.meta.product_count = self.products.len() as u64;
                self.dirty.meta = true;
            }
            Event::ProductRestocked {
                product_id,
                quantity,
            } => {
                self.product_mut(seq, *product_id)?
                    .apply_restocked(*quantity);
            }
            Event::CampaignCreated {
                coupon_id,
                name,
                discount,
                quantity,
                expires_at,
            } => {
                self.expect_next(seq, coupon_id.0, self.campaigns.len())?;
                let c = Campaign::new(*coupon_id, name.clone(), *discount, *quantity, *expires_at);
                self.campaigns.push(c);
                self.dirty.campaigns.insert(*coupon_id);
                self.meta.campaign_count = self.campaigns.len() as u64;
                self.dirty.meta = true;
            }
            Event::CouponIssued {
                coupon_id,
                user_id,
                user_coupon_id,
            } => {
                self.apply_coupon_issued(seq, *coupon_id, *user_id, *user_coupon_id)?;
            }
            Event::CartLineSet {
                user_id,
                product_id,
                name,
                price,
                quantity,
            } => {
                let line = CartLine {
                    product_id: *product_id,
                    name: name.clone(),
                    price: *price,
                    quantity: *quantity,
                };
                self.user_mut(seq, *user_id)?.apply_cart_line_set(line);
            }
            Event::CartLineRemoved {
                user_id,
                product_id,
            } => {
                self.user_mut(seq, *user_id)?
                    .apply_cart_line_removed(*product_id);
            }
            Event::OrderPlaced { order, from_cart } => self.apply_placed(seq, order, *from_cart)?,
            Event::OrderPaid {
                order_id,
                user_id,
                amount,
            } => {
                // Taken out while the products change, put back settled: no clone.
                let mut order = self.take_pending(seq, *order_id)?;
                let fits = self.check_reserved(seq, &order).and_then(|()| {
                    let user = self.user_mut(seq, *user_id)?;
                    if user.balance < *amount || order.user_id != *user_id {
                        return Err(unfit(
                            seq,
                            format!("user {user_id} cannot pay order {order_id}"),
                        ));
                    }
                    Ok(())
                });
                if let Err(e) = fits {
                    self.orders.insert(order.id, order);
                    return Err(e);
                }
                order.apply_settled(OrderStatus::Paid, at);
                for line in &order.items {
                    self.product_mut(seq, line.product_id)?
                        .apply_sold(line.quantity, at);
                }
                self.orders.insert(order.id, order);
                self.user_mut(seq, *user_id)?
                    .apply_paid(*order_id, *amount, at);
                self.dirty.meta = true;
            }
            Event::OrderPaymentFailed { order_id } => {
                self.apply_returned(seq, *order_id, OrderStatus::Failed, at)?
            }
            Event::OrderCancelled { order_id } => {
                self.apply_returned(seq, *order_id, OrderStatus::Cancelled, at)?
            }
            Event::OrderExpired { order_id } => {
                self.apply_returned(seq, *order_id, OrderStatus::Expired, at)?
            }
            Event::OrderRefunded { order } => self.apply_refunded(seq, at, order)?,
            Event::RequestRefused => {}
            // Legacy: deliveries were journaled before the outbox had a
            // store of its own (`store::outbox`); nothing to apply now.
            Event::OutboxDelivered { .. } => {}
        }
        Ok(())
    }

    fn expect_next(&self, seq: u64, id: u64, len: usize) -> Result<(), ApplyError> {
        if id == len as u64 + 1 {
            Ok(())
        } else {
            Err(ApplyError {
                seq,
                reason: format!("id {id} created out of order (expected {})", len + 1),
            })
        }
    }

    fn apply_coupon_issued(
        &mut self,
        seq: u64,
        coupon_id: CouponId,
        user_id: UserId,
        user_coupon_id: UserCouponId,
    ) -> Result<(), ApplyError> {
        let campaign = self
            .campaigns
            .get_mut(coupon_id.index())
            .ok_or_else(|| miss(seq, format!("coupon {coupon_id}")))?;
        let chunk = campaign.apply_issued(user_id);
        let coupon = UserCoupon {
            id: user_coupon_id,
            coupon_id,
            name: campaign.name.clone(),
            discount: campaign.discount,
            expires_at: campaign.expires_at,
            state: CouponUse::Available,
        };
        self.dirty.campaigns.insert(coupon_id);
        self.dirty.issued.insert((coupon_id, chunk));
        self.user_mut(seq, user_id)?.apply_coupon_issued(coupon);
        self.meta.user_coupon_count = self.meta.user_coupon_count.max(user_coupon_id.0);
        self.dirty.meta = true;
        Ok(())
    }

    fn apply_placed(&mut self, seq: u64, order: &Order, from_cart: bool) -> Result<(), ApplyError> {
        // Check every line before changing any: a record applies whole or not at all.
        for line in &order.items {
            if self.product_mut(seq, line.product_id)?.stock < line.quantity {
                return Err(unfit(
                    seq,
                    format!("product {} stock would go negative", line.product_id),
                ));
            }
        }
        self.user_mut(seq, order.user_id)?;
        if self.orders.contains_key(&order.id) {
            return Err(unfit(seq, format!("order {} placed twice", order.id)));
        }
        for line in &order.items {
            self.product_mut(seq, line.product_id)?
                .apply_reserved(line.quantity);
        }
        let user = self.user_mut(seq, order.user_id)?;
        if let Some(coupon) = order.user_coupon_id {
            user.apply_coupon_used(coupon, order.id);
        }
        if from_cart {
            user.apply_cart_ordered(order.items.iter().map(|l| l.product_id));
        }
        self.meta.order_id_max = self.meta.order_id_max.max(order.id.0);
        self.dirty.meta = true;
        self.dirty.orders.insert(order.id);
        self.orders.insert(order.id, order.clone());
        Ok(())
    }

    /// Removes a pending order from the map; the caller puts it back.
    fn take_pending(&mut self, seq: u64, id: OrderId) -> Result<Order, ApplyError> {
        if self.order_mut(seq, id)?.status != OrderStatus::Pending {
            return Err(unfit(seq, format!("order {id} is not pending")));
        }
        Ok(self.orders.remove(&id).expect("the order was just found"))
    }

    /// Every line of a pending order is still reserved on its product.
    fn check_reserved(&mut self, seq: u64, order: &Order) -> Result<(), ApplyError> {
        for (product_id, quantity) in order.quantities() {
            if self.product_mut(seq, product_id)?.reserved < quantity {
                return Err(unfit(
                    seq,
                    format!(
                        "product {product_id} holds less than order {} reserved",
                        order.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A pending order ends without payment: stock returns and the coupon is available again.
    fn apply_returned(
        &mut self,
        seq: u64,
        order_id: OrderId,
        status: OrderStatus,
        at: Timestamp,
    ) -> Result<(), ApplyError> {
        let mut order = self.take_pending(seq, order_id)?;
        if let Err(e) = self.check_reserved(seq, &order) {
            self.orders.insert(order.id, order);
            return Err(e);
        }
        order.apply_settled(status, at);
        for (product_id, quantity) in order.quantities() {
            self.product_mut(seq, product_id)?.apply_released(quantity);
        }
        let (user_id, coupon) = (order.user_id, order.user_coupon_id);
        self.orders.insert(order.id, order);
        if let Some(coupon) = coupon {
            self.user_mut(seq, user_id)?.apply_coupon_restored(coupon);
        }
        Ok(())
    }

    /// A paid order refunded: `refunded` as it reads after the refund. The
    /// refund is checked against the order as it was (in memory, or as
    /// the archive holds it: `refunded` less its last refund) by deciding
    /// it again; then the user is credited, the units return to stock and
    /// leave the sales count, and a wholly refunded order's coupon is
    /// available again.
    fn apply_refunded(
        &mut self,
        seq: u64,
        at: Timestamp,
        refunded: &Order,
    ) -> Result<(), ApplyError> {
        let id = refunded.id;
        let Some(refund) = refunded.refunds.last() else {
            return Err(unfit(seq, format!("order {id} refunded without a refund")));
        };
        let count = refunded.refunds.len() - 1;
        let before = refunded.after_refunds(count);
        let in_memory = match self.orders.get(&id) {
            Some(o) if *o != before => {
                return Err(unfit(seq, format!("order {id} is not as its refund says")))
            }
            Some(_) => true,
            None => false,
        };
        let request = RefundRequest {
            items: Some(refund.items.clone()),
            reason: refund.reason.clone(),
        };
        let fits = before.decide_refund(&request, at).as_ref() == Ok(refund) && {
            let mut after = before.clone();
            after.apply_refund(refund.clone());
            after == *refunded
        };
        if !fits {
            return Err(unfit(seq, format!("refund of order {id} does not fit it")));
        }
        let paid_at = before.paid_at.unwrap_or_default();
        for line in &refund.items {
            if self.product_mut(seq, line.product_id)?.sold < line.quantity {
                return Err(unfit(
                    seq,
                    format!("product {} sold less than refunded", line.product_id),
                ));
            }
        }
        let user = self.user_mut(seq, refunded.user_id)?;
        if user.balance.checked_add(refund.amount).is_none() {
            return Err(unfit(
                seq,
                format!("user {} balance would overflow", user.id),
            ));
        }
        user.apply_refunded(id, refund.amount, at);
        if let (Some(coupon), false) = (refunded.user_coupon_id, refunded.holds_coupon()) {
            user.apply_coupon_restored(coupon);
        }
        for line in &refund.items {
            self.product_mut(seq, line.product_id)?
                .apply_refunded(line.quantity, paid_at);
        }
        if in_memory {
            *self.order_mut(seq, id)? = refunded.clone();
            self.refunded_since_cut
                .push(RefundedSince::InMemory(id, count));
        } else {
            self.archived.remove(&before);
            self.refunded_since_cut
                .push(RefundedSince::Archived(Box::new(before)));
            self.dirty.orders.insert(id);
            self.orders.insert(id, refunded.clone());
        }
        Ok(())
    }

    /// Checks every invariant of DESIGN.md under the limits of API.md.
    pub fn violations(&self) -> Vec<String> {
        self.violations_under(&Limits::API)
    }

    /// Checks every invariant of DESIGN.md under `limits`; returns what is violated.
    pub fn violations_under(&self, limits: &Limits) -> Vec<String> {
        let mut out = Vec::new();
        let live = self.live_order_sums(&mut out);
        self.check_products(&live, &mut out);
        self.check_users(&live, limits, &mut out);
        self.check_campaigns(&mut out);
        out
    }

    /// Units reserved and sold by the orders in memory, per product, and
    /// the coupon each live (pending or paid) order uses.
    fn live_order_sums(&self, out: &mut Vec<String>) -> LiveSums {
        let mut live = LiveSums::default();
        for order in self.orders.values() {
            if order.status == OrderStatus::Pending {
                for (p, q) in order.quantities() {
                    *live.reserved.entry(p).or_default() += q;
                }
            }
            for (p, q) in order.units_kept() {
                *live.sold.entry(p).or_default() += q;
            }
            if let (Some(c), true) = (order.user_coupon_id, order.holds_coupon()) {
                if live.coupons.insert(c, order.id).is_some() {
                    out.push(format!("user coupon {c} used by two live orders"));
                }
            }
        }
        live
    }

    fn check_products(&self, live: &LiveSums, out: &mut Vec<String>) {
        for p in &self.products {
            if !p.is_conserved() {
                out.push(format!(
                    "product {}: stock {} + reserved {} + sold {} != stocked {}",
                    p.id, p.stock, p.reserved, p.sold, p.stocked_total
                ));
            }
            let r = live.reserved.get(&p.id).copied().unwrap_or(0);
            let s = live.sold.get(&p.id).copied().unwrap_or(0) + self.archived.sold_of(p.id);
            if p.reserved != r || p.sold != s {
                out.push(format!(
                    "product {}: reserved {} sold {} but orders say {r} and {s}",
                    p.id, p.reserved, p.sold
                ));
            }
        }
    }

    /// Balances, and coupons: a used coupon is used by a live order, or by
    /// an archived paid one (counted in the tally); an available one by none.
    fn check_users(&self, live: &LiveSums, limits: &Limits, out: &mut Vec<String>) {
        let mut used_by_archived = 0u64;
        for u in &self.users {
            if !u.is_conserved() {
                out.push(format!(
                    "user {}: balance {} does not match its history",
                    u.id, u.balance.0
                ));
            }
            // Only a refund may take a balance above the limit.
            if !u.charges_within(limits.balance_krw_max) {
                out.push(format!(
                    "user {}: a charge took the balance above the limit",
                    u.id
                ));
            }
            for c in &u.coupons {
                match (c.state, live.coupons.get(&c.id)) {
                    (CouponUse::Used(o), Some(lo)) if o == *lo => {}
                    (CouponUse::Used(o), None) if !self.orders.contains_key(&o) => {
                        used_by_archived += 1
                    }
                    (CouponUse::Available, None) => {}
                    (state, live) => out.push(format!(
                        "user coupon {}: state {state:?} but live order {live:?}",
                        c.id
                    )),
                }
            }
        }
        if used_by_archived != self.archived.coupons_used {
            out.push(format!(
                "{used_by_archived} coupons used by orders not in memory, but the archive counts {}",
                self.archived.coupons_used
            ));
        }
    }

    fn check_campaigns(&self, out: &mut Vec<String>) {
        for c in &self.campaigns {
            if c.issued.len() > c.quantity {
                out.push(format!(
                    "coupon {}: {} issued of {}",
                    c.id,
                    c.issued.len(),
                    c.quantity
                ));
            }
            for user in c.issued.iter() {
                let held = self.users.get(UserId(user).index()).map_or(0, |u| {
                    u.coupons.iter().filter(|k| k.coupon_id == c.id).count()
                });
                if held != 1 {
                    out.push(format!(
                        "coupon {}: user {user} holds {held} coupons of it",
                        c.id
                    ));
                }
            }
        }
        let held_total: u64 = self.users.iter().map(|u| u.coupons.len() as u64).sum();
        let issued_total: u64 = self.campaigns.iter().map(|c| c.issued.len()).sum();
        if held_total != issued_total {
            out.push(format!(
                "{held_total} coupons held but {issued_total} issued"
            ));
        }
    }
}

/// What the orders in memory add up to, for the invariants.
#[derive(Default)]
struct LiveSums {
    reserved: HashMap<ProductId, u64>,
    sold: HashMap<ProductId, u64>,
    coupons: HashMap<UserCouponId, OrderId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{OrderId, ProductId, UserId};
    use crate::domain::money::Krw;
    use crate::domain::order::OrderLine;

    fn world() -> World {
        let mut w = World::default();
        let t = Timestamp(1);
        let events = [
            Event::UserRegistered {
                user_id: UserId(1),
                name: "kim".into(),
            },
            Event::ProductCreated {
                product_id: ProductId(1),
                name: "a".into(),
                price: Krw(10),
                stock: 5,
            },
            Event::ProductCreated {
                product_id: ProductId(2),
                name: "b".into(),
                price: Krw(10),
                stock: 1,
            },
        ];
        for (i, e) in events.into_iter().enumerate() {
            w.apply(i as u64 + 1, &Record::new(t, e)).unwrap();
        }
        w
    }

    fn order(lines: &[(u64, u64)]) -> Order {
        Order {
            id: OrderId(1),
            user_id: UserId(1),
            status: OrderStatus::Pending,
            items: lines
                .iter()
                .map(|&(p, q)| OrderLine {
                    product_id: ProductId(p),
                    name: "x".into(),
                    unit_price: Krw(10),
                    quantity: q,
                })
                .collect(),
            total_amount: Krw(0),
            discount_amount: Krw(0),
            pay_amount: Krw(0),
            user_coupon_id: None,
            created_at: Timestamp(1),
            expires_at: Timestamp(100),
            paid_at: None,
            refunded_amount: Krw(0),
            refunds: Vec::new(),
        }
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

    #[test]
    fn the_balance_limit_checked_is_the_configured_one() {
        // given a balance over API.md's limit, when checked under a higher configured limit, then it holds
        let mut w = world();
        let api_max = Limits::API.balance_krw_max;
        for i in 0..101 {
            let charge = Event::BalanceCharged {
                user_id: UserId(1),
                amount: Krw(10_000_000),
            };
            w.apply(4 + i, &Record::new(Timestamp(2), charge)).unwrap();
        }
        assert!(w.users[0].balance > api_max);
        assert_eq!(w.violations().len(), 1, "over API.md's limit");
        let higher = Limits {
            balance_krw_max: Krw(2 * api_max.0),
            ..Limits::API
        };
        assert!(w.violations_under(&higher).is_empty());
    }

    #[test]
    fn a_placed_order_that_does_not_fit_changes_nothing() {
        // given stock 5 and 1, when an order takes 3 and 2, then it is refused and no stock moved
        let mut w = world();
        let placed = Event::OrderPlaced {
            order: Box::new(order(&[(1, 3), (2, 2)])),
            from_cart: false,
        };
        assert!(w.apply(4, &Record::new(Timestamp(2), placed)).is_err());
        assert_eq!((w.products[0].stock, w.products[0].reserved), (5, 0));
        assert!(w.orders.is_empty());
    }

    #[test]
    fn a_payment_that_does_not_fit_is_an_error_not_a_panic() {
        // given an order placed with no balance, when a payment of 30 is replayed, then it is refused
        let mut w = world();
        let placed = Event::OrderPlaced {
            order: Box::new(order(&[(1, 3)])),
            from_cart: false,
        };
        w.apply(4, &Record::new(Timestamp(2), placed)).unwrap();
        let paid = Event::OrderPaid {
            order_id: OrderId(1),
            user_id: UserId(1),
            amount: Krw(30),
        };
        assert!(w
            .apply(5, &Record::new(Timestamp(3), paid.clone()))
            .is_err());
        assert_eq!(w.orders[&OrderId(1)].status, OrderStatus::Pending);
        let cancel = Event::OrderCancelled {
            order_id: OrderId(1),
        };
        w.apply(6, &Record::new(Timestamp(3), cancel.clone()))
            .unwrap();
        assert!(w.apply(7, &Record::new(Timestamp(3), cancel)).is_err());
        assert!(w.violations().is_empty());
    }
}
