//! The durable state of everything, as the journal says it is.
//!
//! `World` applies records in journal order: each journal event goes to
//! the entities it touches, through the same `apply` the actors call.
//! Recovery builds one from snapshots and the journal, `verify` checks one
//! ([`crate::domain::invariants`]), the journal writer keeps one as its
//! materialised view (to write incremental snapshots without asking any
//! actor: [`crate::store::cut`]), and the engine starts its actors from one.

use crate::domain::coupon::{Campaign, CampaignEvent};
use crate::domain::event::{Event, Record};
use crate::domain::id_bitmap::IdBitmap;
use crate::domain::ids::{CouponId, IdSet, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::key_hash::key_hash;
use crate::domain::money::Krw;
use crate::domain::order::{Order, OrderEvent, OrderStatus};
use crate::domain::product::{Product, ProductEvent};
use crate::domain::refund::{Refund, RefundRequest};
use crate::domain::time::Timestamp;
use crate::domain::user::{CartLine, User, UserEvent};
use crate::domain::views::Reply;
use crate::store::cut::{Cut, Dirty, NewKey, RefundedSince};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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

/// An order names each product once, as placing checks: its lines can
/// then be checked against their products one by one.
fn distinct_lines(seq: u64, order: &Order) -> Result<(), ApplyError> {
    for (i, line) in order.items.iter().enumerate() {
        if order.items[..i]
            .iter()
            .any(|l| l.product_id == line.product_id)
        {
            return Err(unfit(
                seq,
                format!("order {} lists product {} twice", order.id, line.product_id),
            ));
        }
    }
    Ok(())
}

fn miss(seq: u64, what: impl std::fmt::Display) -> ApplyError {
    ApplyError {
        seq,
        reason: format!("{what} does not exist"),
    }
}

impl World {
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

    /// Which entities `event` touches, each given its part through its
    /// `apply` (the same the actors call once a record is durable), after
    /// the checks that refuse a record that does not fit.
    fn apply_event(&mut self, seq: u64, at: Timestamp, event: &Event) -> Result<(), ApplyError> {
        match event {
            Event::UserRegistered { user_id, name } => {
                self.apply_user_registered(seq, *user_id, name)
            }
            Event::BalanceCharged { user_id, amount } => {
                self.apply_charged(seq, at, *user_id, *amount)
            }
            Event::ProductCreated {
                product_id,
                name,
                price,
                stock,
            } => {
                let p = Product::new(*product_id, name.clone(), *price, *stock);
                self.apply_product_created(seq, p)
            }
            Event::ProductCreatedWithLimit {
                product_id,
                name,
                price,
                stock,
                max_per_user,
            } => {
                let p = Product::new(*product_id, name.clone(), *price, *stock)
                    .with_limit(Some(*max_per_user));
                self.apply_product_created(seq, p)
            }
            Event::ProductUpdated { product_id, patch } => {
                self.product_mut(seq, *product_id)?.apply_updated(patch);
                Ok(())
            }
            Event::ProductRestocked {
                product_id,
                quantity,
            } => self.apply_restocked(seq, at, *product_id, *quantity),
            Event::CampaignCreated {
                coupon_id,
                name,
                discount,
                quantity,
                expires_at,
            } => {
                let c = Campaign::new(*coupon_id, name.clone(), *discount, *quantity, *expires_at);
                self.apply_campaign_created(seq, c)
            }
            Event::CampaignCreatedWithTerms {
                coupon_id,
                name,
                discount,
                quantity,
                expires_at,
                terms,
            } => {
                let c = Campaign::new(*coupon_id, name.clone(), *discount, *quantity, *expires_at)
                    .with_terms(**terms);
                self.apply_campaign_created(seq, c)
            }
            Event::CouponIssued {
                coupon_id,
                user_id,
                user_coupon_id,
            } => self.apply_coupon_issued(seq, at, *coupon_id, *user_id, *user_coupon_id),
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
                self.apply_to_user(seq, at, *user_id, UserEvent::CartLineSet(line))
            }
            Event::CartLineRemoved {
                user_id,
                product_id,
            } => self.apply_to_user(seq, at, *user_id, UserEvent::CartLineRemoved(*product_id)),
            Event::OrderPlaced { order, from_cart }
            | Event::OrderPlacedCounted {
                order, from_cart, ..
            } => self.apply_placed(seq, at, order, *from_cart),
            Event::OrderPaid {
                order_id,
                user_id,
                amount,
            } => self.apply_paid(seq, at, *order_id, *user_id, *amount),
            Event::OrderPaymentFailed { order_id } => {
                self.apply_returned(seq, *order_id, OrderEvent::PaymentFailed, at)
            }
            Event::OrderCancelled { order_id } => {
                self.apply_returned(seq, *order_id, OrderEvent::Cancelled, at)
            }
            Event::OrderExpired { order_id } => {
                self.apply_returned(seq, *order_id, OrderEvent::Expired, at)
            }
            Event::OrderRefunded { order } => self.apply_refunded(seq, at, order),
            Event::RequestRefused => Ok(()),
            // Legacy: deliveries were journaled before the outbox had a
            // store of its own (`store::outbox`); nothing to apply now.
            Event::OutboxDelivered { .. } => Ok(()),
        }
    }

    fn apply_user_registered(
        &mut self,
        seq: u64,
        user_id: UserId,
        name: &str,
    ) -> Result<(), ApplyError> {
        self.expect_next(seq, user_id.0, self.users.len())?;
        self.users.push(User::new(user_id, name.to_owned()));
        self.dirty.users.insert(user_id);
        self.meta.user_count = self.users.len() as u64;
        self.dirty.meta = true;
        Ok(())
    }

    /// `BalanceCharged`: the wallet credited, if its balance stays within range.
    fn apply_charged(
        &mut self,
        seq: u64,
        at: Timestamp,
        user_id: UserId,
        amount: Krw,
    ) -> Result<(), ApplyError> {
        let user = self.user_mut(seq, user_id)?;
        if user.balance.checked_add(amount).is_none() {
            return Err(unfit(seq, format!("user {user_id} balance would overflow")));
        }
        user.apply(UserEvent::Charged { amount }, at);
        Ok(())
    }

    /// `ProductRestocked`: stock and the total ever stocked grow, if both stay within range.
    fn apply_restocked(
        &mut self,
        seq: u64,
        at: Timestamp,
        product_id: ProductId,
        quantity: u64,
    ) -> Result<(), ApplyError> {
        let product = self.product_mut(seq, product_id)?;
        let fits = |n: u64| n.checked_add(quantity).is_some();
        if !fits(product.stock) || !fits(product.stocked_total) {
            return Err(unfit(
                seq,
                format!("product {product_id} stock would overflow"),
            ));
        }
        product.apply(ProductEvent::Restocked(quantity), at);
        Ok(())
    }

    /// An event that touches one user's cart and nothing else.
    fn apply_to_user(
        &mut self,
        seq: u64,
        at: Timestamp,
        user_id: UserId,
        event: UserEvent,
    ) -> Result<(), ApplyError> {
        self.user_mut(seq, user_id)?.apply(event, at);
        Ok(())
    }

    fn apply_product_created(&mut self, seq: u64, p: Product) -> Result<(), ApplyError> {
        self.expect_next(seq, p.id.0, self.products.len())?;
        self.dirty.products.insert(p.id);
        self.products.push(p);
        self.meta.product_count = self.products.len() as u64;
        self.dirty.meta = true;
        Ok(())
    }

    fn apply_campaign_created(&mut self, seq: u64, c: Campaign) -> Result<(), ApplyError> {
        self.expect_next(seq, c.id.0, self.campaigns.len())?;
        self.dirty.campaigns.insert(c.id);
        self.campaigns.push(c);
        self.meta.campaign_count = self.campaigns.len() as u64;
        self.dirty.meta = true;
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

    /// `CouponIssued`: the campaign counts the user in, the user holds the campaign's coupon.
    fn apply_coupon_issued(
        &mut self,
        seq: u64,
        at: Timestamp,
        coupon_id: CouponId,
        user_id: UserId,
        user_coupon_id: UserCouponId,
    ) -> Result<(), ApplyError> {
        self.user_mut(seq, user_id)?;
        let campaign = self
            .campaigns
            .get_mut(coupon_id.index())
            .ok_or_else(|| miss(seq, format!("coupon {coupon_id}")))?;
        if campaign.issued.contains(user_id.0) || campaign.issued.len() >= campaign.quantity {
            return Err(unfit(
                seq,
                format!("coupon {coupon_id} cannot be issued to user {user_id}"),
            ));
        }
        campaign.apply(CampaignEvent::Issued(user_id), at);
        let coupon = campaign.coupon(user_coupon_id);
        self.dirty.campaigns.insert(coupon_id);
        self.dirty
            .issued
            .insert((coupon_id, IdBitmap::chunk_of(user_id.0)));
        self.user_mut(seq, user_id)?
            .apply(UserEvent::CouponIssued(Box::new(coupon)), at);
        self.meta.user_coupon_count = self.meta.user_coupon_count.max(user_coupon_id.0);
        self.dirty.meta = true;
        Ok(())
    }

    /// `OrderPlaced`: every line reserved, the coupon used, ordered cart lines removed.
    fn apply_placed(
        &mut self,
        seq: u64,
        at: Timestamp,
        order: &Order,
        from_cart: bool,
    ) -> Result<(), ApplyError> {
        // Check every line before changing any: a record applies whole or not at all.
        distinct_lines(seq, order)?;
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
        for (product_id, quantity) in order.quantities() {
            self.product_mut(seq, product_id)?
                .apply(ProductEvent::Reserved(quantity), at);
        }
        let user = self.user_mut(seq, order.user_id)?;
        if let Some(coupon) = order.user_coupon_id {
            let used = UserEvent::CouponUsed {
                coupon,
                order_id: order.id,
            };
            user.apply(used, at);
        }
        if from_cart {
            for line in &order.items {
                user.apply(UserEvent::CartLineRemoved(line.product_id), at);
            }
        }
        user.apply(UserEvent::UnitsHeld(order.quantities().collect()), at);
        self.meta.order_id_max = self.meta.order_id_max.max(order.id.0);
        self.dirty.meta = true;
        self.dirty.orders.insert(order.id);
        self.orders.insert(order.id, order.clone());
        Ok(())
    }

    /// `OrderPaid`: the order paid, its reserved units sold, the wallet debited.
    fn apply_paid(
        &mut self,
        seq: u64,
        at: Timestamp,
        order_id: OrderId,
        user_id: UserId,
        amount: Krw,
    ) -> Result<(), ApplyError> {
        let (owner, lines) = self.pending_lines(seq, order_id)?;
        self.check_reserved(seq, order_id, &lines)?;
        let user = self.user_mut(seq, user_id)?;
        if user.balance < amount || owner != user_id {
            return Err(unfit(
                seq,
                format!("user {user_id} cannot pay order {order_id}"),
            ));
        }
        for &(product_id, quantity) in &lines {
            self.product_mut(seq, product_id)?
                .apply(ProductEvent::Sold(quantity), at);
        }
        self.settle_pending(order_id, OrderEvent::Paid, at);
        self.user_mut(seq, user_id)?
            .apply(UserEvent::Paid { order_id, amount }, at);
        self.dirty.meta = true;
        Ok(())
    }

    /// The owner and the lines (product, units) of a pending order, which
    /// is marked as changing. The order stays in its place in the map: a
    /// removal and a new insert would each shift a node's orders.
    fn pending_lines(
        &mut self,
        seq: u64,
        id: OrderId,
    ) -> Result<(UserId, Vec<(ProductId, u64)>), ApplyError> {
        let order = self.order_mut(seq, id)?;
        if order.status != OrderStatus::Pending {
            return Err(unfit(seq, format!("order {id} is not pending")));
        }
        distinct_lines(seq, order)?;
        Ok((order.user_id, order.quantities().collect()))
    }

    /// Applies `event` to a pending order [`pending_lines`](World::pending_lines)
    /// checked, and gives it back as it is now.
    fn settle_pending(&mut self, id: OrderId, event: OrderEvent, at: Timestamp) -> &Order {
        let order = self
            .orders
            .get_mut(&id)
            .expect("the order was just checked pending");
        order.apply(event, at);
        order
    }

    /// Every line of a pending order is still reserved on its product.
    fn check_reserved(
        &mut self,
        seq: u64,
        order_id: OrderId,
        lines: &[(ProductId, u64)],
    ) -> Result<(), ApplyError> {
        for &(product_id, quantity) in lines {
            if self.product_mut(seq, product_id)?.reserved < quantity {
                return Err(unfit(
                    seq,
                    format!("product {product_id} holds less than order {order_id} reserved"),
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
        event: OrderEvent,
        at: Timestamp,
    ) -> Result<(), ApplyError> {
        let (user_id, lines) = self.pending_lines(seq, order_id)?;
        self.check_reserved(seq, order_id, &lines)?;
        for &(product_id, quantity) in &lines {
            self.product_mut(seq, product_id)?
                .apply(ProductEvent::Released(quantity), at);
        }
        let coupon = self.settle_pending(order_id, event, at).user_coupon_id;
        let user = self.user_mut(seq, user_id)?;
        user.apply(UserEvent::UnitsReleased(lines), at);
        if let Some(coupon) = coupon {
            user.apply(UserEvent::CouponRestored(coupon), at);
        }
        Ok(())
    }

    /// A paid order refunded: `refunded` as it reads after the refund. The
    /// refund is checked against the order as it was (in memory, or as
    /// the archive holds it: `refunded` less its last refund) by deciding
    /// it again; then the user is credited, the units return to stock and
    /// leave the sales count (and any purchase limit's count), and a wholly
    /// refunded order's coupon is available again.
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
        let in_memory = self.check_refund_fits(seq, at, refunded, refund, &before)?;
        let paid_at = before.paid_at.unwrap_or_default();
        for line in &refund.items {
            if self.product_mut(seq, line.product_id)?.sold < line.quantity {
                return Err(unfit(
                    seq,
                    format!("product {} sold less than refunded", line.product_id),
                ));
            }
        }
        self.credit_refund(seq, at, refunded, refund)?;
        for line in &refund.items {
            self.product_mut(seq, line.product_id)?.apply(
                ProductEvent::Refunded {
                    quantity: line.quantity,
                    paid_at,
                },
                at,
            );
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

    /// Whether `refund`, the last of `refunded`'s, is the one `before` (the
    /// order as it was) decides again for the same request, and leaves it
    /// as `refunded` reads. Says whether `before` is in memory (else it is
    /// archived); one in memory must equal `before`.
    fn check_refund_fits(
        &self,
        seq: u64,
        at: Timestamp,
        refunded: &Order,
        refund: &Refund,
        before: &Order,
    ) -> Result<bool, ApplyError> {
        let id = refunded.id;
        let in_memory = match self.orders.get(&id) {
            Some(o) if o != before => {
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
        Ok(in_memory)
    }

    /// The user's part of a refund: credited, a wholly refunded order's
    /// coupon available again, the refunded units no longer counted toward
    /// a purchase limit.
    fn credit_refund(
        &mut self,
        seq: u64,
        at: Timestamp,
        refunded: &Order,
        refund: &Refund,
    ) -> Result<(), ApplyError> {
        let user = self.user_mut(seq, refunded.user_id)?;
        if user.balance.checked_add(refund.amount).is_none() {
            return Err(unfit(
                seq,
                format!("user {} balance would overflow", user.id),
            ));
        }
        user.apply(
            UserEvent::Refunded {
                order_id: refunded.id,
                amount: refund.amount,
            },
            at,
        );
        if let (Some(coupon), false) = (refunded.user_coupon_id, refunded.holds_coupon()) {
            user.apply(UserEvent::CouponRestored(coupon), at);
        }
        let lines = refund.items.iter().map(|l| (l.product_id, l.quantity));
        user.apply(UserEvent::UnitsReleased(lines.collect()), at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::Limits;

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
        crate::domain::order::sample_pending_order(lines)
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
    fn records_the_entities_would_assert_on_are_refused_not_applied() {
        // given stock 5, when a journal lists a product twice in one order, restocks past
        // u64, or issues a coupon twice or past its quantity, then each is an error, no panic
        use crate::domain::coupon::Discount;
        let mut w = world();
        let at = Timestamp(2);
        let twice = Event::OrderPlaced {
            order: Box::new(order(&[(1, 3), (1, 3)])),
            from_cart: false,
        };
        assert!(w.apply(4, &Record::new(at, twice)).is_err());
        let overflow = Event::ProductRestocked {
            product_id: ProductId(1),
            quantity: u64::MAX,
        };
        assert!(w.apply(5, &Record::new(at, overflow)).is_err());
        let campaign = Event::CampaignCreated {
            coupon_id: CouponId(1),
            name: "c".into(),
            discount: Discount::Fixed { amount: Krw(1) },
            quantity: 1,
            expires_at: None,
        };
        w.apply(6, &Record::new(at, campaign)).unwrap();
        let issue = |user_coupon| Event::CouponIssued {
            coupon_id: CouponId(1),
            user_id: UserId(1),
            user_coupon_id: UserCouponId(user_coupon),
        };
        w.apply(7, &Record::new(at, issue(1))).unwrap();
        assert!(w.apply(8, &Record::new(at, issue(2))).is_err());
        assert_eq!((w.products[0].stock, w.products[0].reserved), (5, 0));
        assert!(w.violations().is_empty());
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
