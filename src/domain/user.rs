//! Users: a wallet (balance and its history), coupons held, a cart.
//!
//! The wallet keeps pending credits and debits (holds) apart from the
//! durable balance, as a ledger does: a decision counts every hold against
//! the user (debits lower what can be paid, credits raise what counts
//! toward the limit), so any durable record stays valid whatever happens to
//! the holds decided before it.

use crate::domain::coupon::Discount;
use crate::domain::coupon_terms::{CouponTerms, Offer};
use crate::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::limits::Limits;
use crate::domain::money::Krw;
use crate::domain::purchase_limit::HeldUnits;
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Balance history entries per archived chunk: history leaves memory a
/// whole chunk at a time, once a snapshot has written it.
pub const HISTORY_CHUNK: usize = 16;

/// The capacity a full history of `capacity` entries grows to: doubling
/// up to one chunk (most users hold a few entries), then a chunk at a
/// time, since history leaves memory in chunks and a doubled Vec would
/// keep room for up to twice its entries.
fn history_grown(capacity: usize) -> usize {
    if capacity < HISTORY_CHUNK {
        (capacity * 2).clamp(4, HISTORY_CHUNK)
    } else {
        capacity + HISTORY_CHUNK
    }
}

/// Pushes `item`, growing `v` by half its length (at least one) when it
/// is full, not to the standard library's first capacity of four: most
/// users hold one coupon and a short cart, and every user is kept twice
/// (its actor and the journal's world), so four slots of a 136-byte coupon
/// cost a campaign of 10M users about 9 GiB more than one slot does
/// (docs/performance.md, "A user's coupons and cart grow by what they hold").
fn push_snug<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 2).max(1));
    }
    v.push(item);
}

/// The capacity a history of `len` entries keeps once some were archived:
/// its entries rounded up to whole chunks, plus one chunk to grow into.
fn history_room(len: usize) -> usize {
    len.div_ceil(HISTORY_CHUNK) * HISTORY_CHUNK + HISTORY_CHUNK
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Charge,
    Payment,
    Refund,
}

/// One line of balance history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceEntry {
    pub seq: u64,
    pub kind: EntryKind,
    pub amount: Krw,
    pub balance_after: Krw,
    /// The order of a payment or refund; null for a charge.
    #[schema(required = true)]
    pub order_id: Option<OrderId>,
    pub at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CouponUse {
    Available,
    /// Taken by an order being placed (a hold, not yet durable).
    Held,
    Used(OrderId),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCoupon {
    pub id: UserCouponId,
    pub coupon_id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub expires_at: Option<Timestamp>,
    pub state: CouponUse,
    /// The campaign's terms (since format version 3).
    pub terms: CouponTerms,
}

impl UserCoupon {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A cart line, with the product's name and price when it was set; the
/// engine answers carts with the product's current name and price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: ProductId,
    pub name: String,
    pub price: Krw,
    pub quantity: u64,
}

/// What is asked of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    /// Add money to the wallet.
    Charge {
        amount: Krw,
    },
    /// Pay for an order from the wallet.
    Pay {
        order_id: OrderId,
        amount: Krw,
    },
    /// Put a product in the cart, or set its quantity there.
    SetCartLine(CartLine),
    RemoveCartLine(ProductId),
}

/// What a durable record does to a user (registering creates one). One
/// journal event may touch a user through several of these: an order
/// placed from the cart with a coupon is `CouponUsed` and one
/// `CartLineRemoved` per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserEvent {
    /// `BalanceCharged`.
    Charged { amount: Krw },
    /// `OrderPaid`: the wallet is debited.
    Paid { order_id: OrderId, amount: Krw },
    /// `CouponIssued`: the campaign's coupon, as the holder keeps it
    /// ([`crate::domain::coupon::Campaign::coupon`]). Boxed: the largest
    /// event by far, it would set the size of every other one (a payment's
    /// included) that actors queue and move.
    CouponIssued(Box<UserCoupon>),
    /// `OrderPlaced` with a coupon.
    CouponUsed {
        coupon: UserCouponId,
        order_id: OrderId,
    },
    /// The order that used the coupon ended unpaid.
    CouponRestored(UserCouponId),
    /// `CartLineSet`: adding a product already in the cart sets its quantity.
    CartLineSet(CartLine),
    /// `CartLineRemoved`, and each line of an order placed from the cart.
    CartLineRemoved(ProductId),
    /// `OrderPlaced`: the units of every line are held for good
    /// ([`crate::domain::purchase_limit`]).
    UnitsHeld(Vec<(ProductId, u64)>),
    /// An order ended unpaid (or units were refunded): the units of these
    /// lines are freed.
    UnitsReleased(Vec<(ProductId, u64)>),
    /// `OrderRefunded`: the wallet is credited, even above the balance
    /// limit (money back is never refused).
    Refunded { order_id: OrderId, amount: Krw },
}

// Every payment's event is queued and moved by its user's actor: with the
// coupon boxed no event is larger than this (it was 136 bytes).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<UserEvent>() <= 48);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub balance: Krw,
    /// The newest balance history entries: those after `history_base`.
    pub history: Vec<BalanceEntry>,
    pub coupons: Vec<UserCoupon>,
    pub cart: Vec<CartLine>,
    /// Units held in live orders, of every product (since format version
    /// 3, stored as varints since 4; see [`crate::domain::purchase_limit`]).
    pub limited: HeldUnits,
    /// Such units taken by orders being placed (holds, not yet durable).
    #[serde(skip)]
    pub limited_pending: HeldUnits,
    /// Sum of charges decided but not yet durable.
    #[serde(skip)]
    pub credits_pending: Krw,
    /// Sum of payments decided but not yet durable.
    #[serde(skip)]
    pub debits_pending: Krw,
    /// How many history entries come before `history`: they are archived
    /// (in the store, in whole chunks), not in memory. Snapshots store it
    /// as the key of the user's last history chunk, not in the user.
    #[serde(skip)]
    pub history_base: u64,
}

/// A user as a snapshot stores it, borrowed: the fields of [`User`] in its
/// order, the balance history empty (snapshots store it in chunks), so its
/// bytes are those of [`User::without_history`] and writing a user copies
/// nothing of it.
#[derive(Serialize)]
pub struct StoredUser<'a> {
    id: UserId,
    name: &'a str,
    balance: Krw,
    history: &'a [BalanceEntry],
    coupons: &'a [UserCoupon],
    cart: &'a [CartLine],
    limited: &'a HeldUnits,
}

impl User {
    /// What a snapshot stores of this user ([`StoredUser`]).
    pub fn stored(&self) -> StoredUser<'_> {
        StoredUser {
            id: self.id,
            name: &self.name,
            balance: self.balance,
            history: &[],
            coupons: &self.coupons,
            cart: &self.cart,
            limited: &self.limited,
        }
    }

    /// A copy without the balance history: the value [`User::stored`] writes.
    pub fn without_history(&self) -> User {
        User {
            id: self.id,
            name: self.name.clone(),
            balance: self.balance,
            history: Vec::new(),
            coupons: self.coupons.clone(),
            cart: self.cart.clone(),
            limited: self.limited.clone(),
            limited_pending: self.limited_pending.clone(),
            credits_pending: self.credits_pending,
            debits_pending: self.debits_pending,
            history_base: self.history_base,
        }
    }

    /// Entries in the whole history, archived ones included.
    pub fn history_len(&self) -> u64 {
        self.history_base + self.history.len() as u64
    }

    /// Forgets the entries before `base` (they are archived); `base` is
    /// clamped to what the history holds. Room left by a burst is given
    /// back, so memory follows the entries kept, not the most ever kept.
    pub fn archive_history_before(&mut self, base: u64) {
        let base = base.min(self.history_len());
        if base > self.history_base {
            self.history.drain(..(base - self.history_base) as usize);
            self.history_base = base;
            let room = history_room(self.history.len());
            if self.history.capacity() > room {
                self.history.shrink_to(room);
            }
        }
    }

    pub fn new(id: UserId, name: String) -> User {
        User {
            id,
            name,
            balance: Krw::ZERO,
            history: Vec::new(),
            coupons: Vec::new(),
            cart: Vec::new(),
            limited: HeldUnits::default(),
            limited_pending: HeldUnits::default(),
            credits_pending: Krw::ZERO,
            debits_pending: Krw::ZERO,
            history_base: 0,
        }
    }

    /// Checks a command against the user, counting every hold; changes
    /// nothing.
    pub fn decide(
        &self,
        command: UserCommand,
        _now: Timestamp,
        limits: &Limits,
    ) -> Decision<UserEvent> {
        match command {
            UserCommand::Charge { amount } => {
                self.decide_charge(amount, limits)?;
                Ok(UserEvent::Charged { amount })
            }
            UserCommand::Pay { order_id, amount } => {
                self.decide_debit(amount)?;
                Ok(UserEvent::Paid { order_id, amount })
            }
            UserCommand::SetCartLine(line) => {
                self.decide_set_cart_line(line.product_id, line.quantity, limits)?;
                Ok(UserEvent::CartLineSet(line))
            }
            UserCommand::RemoveCartLine(product_id) => Ok(UserEvent::CartLineRemoved(product_id)),
        }
    }

    /// Applies a durable event. Cannot fail: the record was decided against
    /// this state (recovery checks that a record fits before applying it).
    pub fn apply(&mut self, event: UserEvent, at: Timestamp) {
        self.apply_event(event, at);
        // A payment drops its hold before it is applied, so what is still
        // held was decided within what is left.
        assert!(
            self.debits_pending <= self.balance,
            "user {}: debit holds beyond the balance",
            self.id
        );
    }

    fn apply_event(&mut self, event: UserEvent, at: Timestamp) {
        match event {
            UserEvent::Charged { amount } => self.apply_charged(amount, at),
            UserEvent::Paid { order_id, amount } => self.apply_paid(order_id, amount, at),
            UserEvent::CouponIssued(coupon) => self.apply_coupon_issued(*coupon),
            UserEvent::CouponUsed { coupon, order_id } => self.apply_coupon_used(coupon, order_id),
            UserEvent::CouponRestored(coupon) => self.apply_coupon_restored(coupon),
            UserEvent::CartLineSet(line) => self.apply_cart_line_set(line),
            UserEvent::CartLineRemoved(product_id) => self.apply_cart_line_removed(product_id),
            UserEvent::UnitsHeld(lines) => self.apply_units_placed(&lines),
            UserEvent::UnitsReleased(lines) => self.release_units(lines),
            UserEvent::Refunded { order_id, amount } => self.apply_refunded(order_id, amount, at),
        }
    }

    // ---- wallet ----

    fn decide_charge(&self, amount: Krw, limits: &Limits) -> Decision<()> {
        if amount < limits.charge_krw_min || amount > limits.charge_krw_max {
            return Err(Rejection::InvalidAmount {
                min: limits.charge_krw_min.0,
                max: limits.charge_krw_max.0,
            });
        }
        let ceiling = self
            .balance
            .checked_add(self.credits_pending)
            .and_then(|b| b.checked_add(amount));
        match ceiling {
            Some(b) if b <= limits.balance_krw_max => Ok(()),
            _ => Err(Rejection::BalanceLimitExceeded {
                max: limits.balance_krw_max.0,
            }),
        }
    }

    /// Marks what a decided event takes until its record is durable: a
    /// charge counts toward the limit, a payment lowers what can be spent.
    pub fn hold(&mut self, event: &UserEvent) {
        match *event {
            UserEvent::Charged { amount } | UserEvent::Refunded { amount, .. } => {
                self.hold_credit(amount)
            }
            UserEvent::Paid { amount, .. } => self.hold_debit(amount),
            _ => {}
        }
    }

    /// Drops what [`hold`](User::hold) marked for `event`.
    pub fn drop_hold(&mut self, event: &UserEvent) {
        match *event {
            UserEvent::Charged { amount } | UserEvent::Refunded { amount, .. } => {
                self.drop_credit(amount)
            }
            UserEvent::Paid { amount, .. } => self.drop_debit(amount),
            _ => {}
        }
    }

    fn hold_credit(&mut self, amount: Krw) {
        self.credits_pending = self
            .credits_pending
            .checked_add(amount)
            .expect("credit holds are bounded by the balance limit");
    }

    fn drop_credit(&mut self, amount: Krw) {
        self.credits_pending = self
            .credits_pending
            .checked_sub(amount)
            .expect("credit hold was placed");
    }

    /// What can be spent now: the balance less every pending debit.
    pub fn spendable(&self) -> Krw {
        self.balance
            .checked_sub(self.debits_pending)
            .unwrap_or(Krw::ZERO)
    }

    fn decide_debit(&self, due: Krw) -> Decision<()> {
        if due <= self.spendable() {
            Ok(())
        } else {
            Err(Rejection::InsufficientBalance {
                balance: self.spendable().0,
                due: due.0,
            })
        }
    }

    fn hold_debit(&mut self, due: Krw) {
        self.debits_pending = self
            .debits_pending
            .checked_add(due)
            .expect("debit holds never exceed the balance");
        assert!(
            self.debits_pending <= self.balance,
            "user {}: debit holds beyond the balance",
            self.id
        );
    }

    fn drop_debit(&mut self, due: Krw) {
        self.debits_pending = self
            .debits_pending
            .checked_sub(due)
            .expect("debit hold was placed");
    }

    fn push_entry(
        &mut self,
        kind: EntryKind,
        amount: Krw,
        order_id: Option<OrderId>,
        at: Timestamp,
    ) {
        let seq = self.history_len() + 1;
        let capacity = self.history.capacity();
        if self.history.len() == capacity {
            self.history
                .reserve_exact(history_grown(capacity) - capacity);
        }
        self.history.push(BalanceEntry {
            seq,
            kind,
            amount,
            balance_after: self.balance,
            order_id,
            at,
        });
    }

    /// Applies `BalanceCharged`.
    fn apply_charged(&mut self, amount: Krw, at: Timestamp) {
        self.balance = self
            .balance
            .checked_add(amount)
            .expect("charge was decided under the limit");
        self.push_entry(EntryKind::Charge, amount, None, at);
    }

    /// Applies `OrderPaid` to the wallet.
    fn apply_paid(&mut self, order_id: OrderId, amount: Krw, at: Timestamp) {
        self.balance = self
            .balance
            .checked_sub(amount)
            .expect("payment was decided within the balance");
        self.push_entry(EntryKind::Payment, amount, Some(order_id), at);
    }

    /// Applies a refund to the wallet: it may take the balance above
    /// its limit (money back is never refused). The caller checked that
    /// the sum fits.
    fn apply_refunded(&mut self, order_id: OrderId, amount: Krw, at: Timestamp) {
        self.balance = self
            .balance
            .checked_add(amount)
            .expect("a refund was checked to fit the balance");
        self.push_entry(EntryKind::Refund, amount, Some(order_id), at);
    }

    /// Whether every charge in memory left the balance within `max`
    /// (only a refund may take it above).
    pub fn charges_within(&self, max: Krw) -> bool {
        self.history
            .iter()
            .filter(|e| e.kind == EntryKind::Charge)
            .all(|e| e.balance_after <= max)
    }

    // ---- coupons ----

    pub fn coupon(&self, id: UserCouponId) -> Option<&UserCoupon> {
        self.coupons.iter().find(|c| c.id == id)
    }

    fn coupon_mut(&mut self, id: UserCouponId) -> Option<&mut UserCoupon> {
        self.coupons.iter_mut().find(|c| c.id == id)
    }

    pub fn holds_campaign(&self, coupon_id: CouponId) -> bool {
        self.coupons.iter().any(|c| c.coupon_id == coupon_id)
    }

    /// A coupon can pay toward an order of `total`: it is this user's,
    /// available, not expired, and the total reaches its minimum.
    pub fn decide_use_coupon(
        &self,
        id: UserCouponId,
        total: Krw,
        now: Timestamp,
    ) -> Decision<Offer> {
        let coupon = self.coupon(id).ok_or_else(|| {
            Rejection::InvalidCoupon(format!("user {} holds no coupon {id}", self.id))
        })?;
        if coupon.state != CouponUse::Available {
            return Err(Rejection::InvalidCoupon(format!(
                "coupon {id} is already used"
            )));
        }
        if coupon.is_expired(now) {
            return Err(Rejection::InvalidCoupon(format!("coupon {id} has expired")));
        }
        coupon.terms.decide_offer(coupon.discount, total)
    }

    pub fn hold_coupon(&mut self, id: UserCouponId) {
        if let Some(c) = self.coupon_mut(id) {
            c.state = CouponUse::Held;
        }
    }

    pub fn drop_coupon_hold(&mut self, id: UserCouponId) {
        if let Some(c) = self.coupon_mut(id) {
            if c.state == CouponUse::Held {
                c.state = CouponUse::Available;
            }
        }
    }

    /// Applies `CouponIssued` to the holder.
    fn apply_coupon_issued(&mut self, coupon: UserCoupon) {
        push_snug(&mut self.coupons, coupon);
    }

    /// The coupon is used by a placed order.
    fn apply_coupon_used(&mut self, id: UserCouponId, order_id: OrderId) {
        if let Some(c) = self.coupon_mut(id) {
            c.state = CouponUse::Used(order_id);
        }
    }

    /// The order that used the coupon gave it back.
    fn apply_coupon_restored(&mut self, id: UserCouponId) {
        if let Some(c) = self.coupon_mut(id) {
            c.state = CouponUse::Available;
        }
    }

    // ---- cart ----

    fn decide_set_cart_line(
        &self,
        product_id: ProductId,
        quantity: u64,
        limits: &Limits,
    ) -> Decision<()> {
        if quantity == 0 || quantity > limits.line_quantity_max {
            return Err(Rejection::InvalidRequest(format!(
                "quantity must be between 1 and {}",
                limits.line_quantity_max
            )));
        }
        let is_new = !self.cart.iter().any(|l| l.product_id == product_id);
        if is_new && self.cart.len() >= limits.cart_lines_max {
            return Err(Rejection::InvalidRequest(format!(
                "a cart holds at most {} lines",
                limits.cart_lines_max
            )));
        }
        Ok(())
    }

    /// Applies `CartLineSet`: adding a product already in the cart sets its quantity.
    fn apply_cart_line_set(&mut self, line: CartLine) {
        match self
            .cart
            .iter_mut()
            .find(|l| l.product_id == line.product_id)
        {
            Some(existing) => existing.quantity = line.quantity,
            None => push_snug(&mut self.cart, line),
        }
    }

    /// Applies `CartLineRemoved`.
    fn apply_cart_line_removed(&mut self, product_id: ProductId) {
        self.cart.retain(|l| l.product_id != product_id);
    }

    /// The history adds up to the balance: each entry moves the balance
    /// before it by its amount to its `balance_after`, entries are numbered
    /// without a gap, and the last leaves the balance as it is. Archived
    /// entries are not in memory: then the chain starts at the first entry
    /// kept, and an empty one cannot be checked here (`store::recovery`
    /// loads the archive where the whole chain is wanted).
    pub fn is_conserved(&self) -> bool {
        let signed = |e: &BalanceEntry| match e.kind {
            EntryKind::Charge | EntryKind::Refund => i128::from(e.amount.0),
            EntryKind::Payment => -i128::from(e.amount.0),
        };
        let mut balance: i128 = match self.history.first() {
            None => return self.history_base > 0 || self.balance == Krw::ZERO,
            Some(first) if self.history_base > 0 => {
                i128::from(first.balance_after.0) - signed(first)
            }
            Some(_) => 0,
        };
        for (i, e) in self.history.iter().enumerate() {
            balance += signed(e);
            if balance != i128::from(e.balance_after.0) || e.seq != self.history_base + i as u64 + 1
            {
                return false;
            }
        }
        balance == i128::from(self.balance.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User::new(UserId(1), "kim".into())
    }

    #[test]
    fn coupons_and_cart_lines_take_the_room_they_need_not_four_slots_at_once() {
        // proves a user's one coupon and one cart line each take one slot, and that
        // later pushes still grow by a share of the length (amortized, not one by one)
        let mut v: Vec<u64> = Vec::new();
        push_snug(&mut v, 1);
        assert_eq!(v.capacity(), 1);
        let mut grown = 0;
        for i in 2..=1_000 {
            let before = v.capacity();
            push_snug(&mut v, i);
            grown += usize::from(v.capacity() != before);
        }
        assert_eq!(v, (1..=1_000).collect::<Vec<u64>>());
        assert!(grown < 20, "{grown} reallocations for 1,000 pushes");
        let mut u = user();
        let line = CartLine {
            product_id: ProductId(1),
            name: "p".into(),
            price: Krw(10),
            quantity: 1,
        };
        u.apply(UserEvent::CartLineSet(line), Timestamp(1));
        assert_eq!((u.cart.len(), u.cart.capacity()), (1, 1));
    }

    #[test]
    fn charge_amount_must_be_within_the_per_request_limits() {
        let u = user();
        let l = Limits::API;
        assert!(matches!(
            u.decide_charge(Krw(0), &l),
            Err(Rejection::InvalidAmount { .. })
        ));
        assert_eq!(u.decide_charge(Krw(1), &l), Ok(()));
        assert_eq!(u.decide_charge(Krw(10_000_000), &l), Ok(()));
        assert!(matches!(
            u.decide_charge(Krw(10_000_001), &l),
            Err(Rejection::InvalidAmount { .. })
        ));
    }

    #[test]
    fn charge_is_refused_when_balance_plus_pending_credits_would_pass_the_limit() {
        // given a balance of 995,000,000 and a pending charge of 4,000,000
        let mut u = user();
        u.balance = Krw(995_000_000);
        u.hold_credit(Krw(4_000_000));
        // when 1,000,000 more is charged, then it fits exactly
        assert_eq!(u.decide_charge(Krw(1_000_000), &Limits::API), Ok(()));
        // when 1,000,001 is charged, then the limit is exceeded
        assert!(matches!(
            u.decide_charge(Krw(1_000_001), &Limits::API),
            Err(Rejection::BalanceLimitExceeded { .. })
        ));
    }

    #[test]
    fn debit_counts_pending_debits() {
        let mut u = user();
        u.apply_charged(Krw(100), Timestamp(1));
        u.hold_debit(Krw(60));
        assert_eq!(u.decide_debit(Krw(40)), Ok(()));
        assert!(matches!(
            u.decide_debit(Krw(41)),
            Err(Rejection::InsufficientBalance {
                balance: 40,
                due: 41
            })
        ));
    }

    #[test]
    fn archived_history_leaves_a_chain_that_still_adds_up() {
        // given 5 entries, when the first 3 are archived, then numbering and the check go on
        let mut u = user();
        for amount in [10, 20, 30] {
            u.apply_charged(Krw(amount), Timestamp(1));
        }
        u.apply_paid(OrderId(1), Krw(15), Timestamp(2));
        u.apply_charged(Krw(5), Timestamp(3));
        u.archive_history_before(3);
        assert_eq!(
            (u.history_base, u.history.len(), u.history_len()),
            (3, 2, 5)
        );
        assert!(u.is_conserved());
        u.apply_charged(Krw(1), Timestamp(4));
        assert_eq!(u.history.last().unwrap().seq, 6);
        assert!(u.is_conserved());
        // a balance that does not follow from the entries kept is caught
        u.balance = Krw(1);
        assert!(!u.is_conserved());
        u.balance = Krw(51);
        u.archive_history_before(100);
        assert_eq!((u.history_base, u.history.len()), (6, 0));
        assert!(u.is_conserved(), "nothing left in memory to check");
    }

    #[test]
    fn history_grows_a_chunk_at_a_time_and_gives_back_room_once_archived() {
        // given a burst of 5 chunks of entries
        let mut u = user();
        u.apply_charged(Krw(1), Timestamp(0));
        assert!(u.history.capacity() <= 4, "one entry takes no whole chunk");
        for i in 1..5 * HISTORY_CHUNK as u64 {
            u.apply_charged(Krw(1), Timestamp(i));
            assert!(u.history.capacity() <= u.history.len() + HISTORY_CHUNK);
        }
        // when all but the last 3 entries are archived
        u.archive_history_before(5 * HISTORY_CHUNK as u64 - 3);
        // then room for 3 entries and one chunk more is kept, not the burst's
        assert_eq!(u.history.len(), 3);
        assert!(u.history.capacity() <= 2 * HISTORY_CHUNK);
        assert!(u.history.capacity() >= HISTORY_CHUNK);
        assert_eq!(u.history[0].seq, 5 * HISTORY_CHUNK as u64 - 2);
        assert!(u.is_conserved());
    }

    #[test]
    fn history_records_balance_after_each_entry_and_conserves() {
        let mut u = user();
        u.apply_charged(Krw(100), Timestamp(1));
        u.apply_paid(OrderId(9), Krw(30), Timestamp(2));
        assert_eq!(u.history[1].balance_after, Krw(70));
        assert_eq!(u.history[1].order_id, Some(OrderId(9)));
        assert_eq!(u.history[1].seq, 2);
        assert!(u.is_conserved());
    }

    fn with_coupon(expires_at: Option<Timestamp>) -> User {
        let mut u = user();
        u.apply_coupon_issued(UserCoupon {
            id: UserCouponId(3),
            coupon_id: CouponId(1),
            name: "c".into(),
            discount: Discount::Fixed { amount: Krw(10) },
            expires_at,
            state: CouponUse::Available,
            terms: CouponTerms::default(),
        });
        u
    }

    #[test]
    fn a_stored_user_writes_the_bytes_of_the_user_without_its_history() {
        // given a user with history, a coupon, a cart line and counted units (some unmerged),
        // then what a snapshot writes equals the copy without history, and reads back as it
        let mut u = with_coupon(Some(Timestamp(9)));
        u.apply_charged(Krw(5_000), Timestamp(1));
        u.apply_paid(OrderId(4), Krw(1_000), Timestamp(2));
        u.apply_cart_line_set(CartLine {
            product_id: ProductId(2),
            name: "tea".into(),
            price: Krw(4_500),
            quantity: 3,
        });
        u.apply_units_placed(&[(ProductId(9), 2), (ProductId(2), 1)]);
        u.limited_pending.add(ProductId(5), 1);
        let bytes = bincode::serialize(&u.stored()).unwrap();
        assert_eq!(bytes, bincode::serialize(&u.without_history()).unwrap());
        let back: User = bincode::deserialize(&bytes).unwrap();
        assert!(back.history.is_empty());
        assert_eq!(
            (back.balance, back.limited.of(ProductId(9))),
            (Krw(4_000), 2)
        );
        assert_eq!((&back.coupons, &back.cart), (&u.coupons, &u.cart));
    }

    #[test]
    fn a_used_or_held_coupon_cannot_be_used_again() {
        let mut u = with_coupon(None);
        assert!(u
            .decide_use_coupon(UserCouponId(3), Krw(100), Timestamp(0))
            .is_ok());
        u.hold_coupon(UserCouponId(3));
        assert!(matches!(
            u.decide_use_coupon(UserCouponId(3), Krw(100), Timestamp(0)),
            Err(Rejection::InvalidCoupon(_))
        ));
        u.apply_coupon_used(UserCouponId(3), OrderId(1));
        assert!(matches!(
            u.decide_use_coupon(UserCouponId(3), Krw(100), Timestamp(0)),
            Err(Rejection::InvalidCoupon(_))
        ));
        u.apply_coupon_restored(UserCouponId(3));
        assert!(u
            .decide_use_coupon(UserCouponId(3), Krw(100), Timestamp(0))
            .is_ok());
    }

    #[test]
    fn an_expired_or_foreign_coupon_is_invalid() {
        let u = with_coupon(Some(Timestamp(50)));
        assert!(u
            .decide_use_coupon(UserCouponId(3), Krw(100), Timestamp(49))
            .is_ok());
        assert!(matches!(
            u.decide_use_coupon(UserCouponId(3), Krw(100), Timestamp(50)),
            Err(Rejection::InvalidCoupon(_))
        ));
        assert!(matches!(
            u.decide_use_coupon(UserCouponId(4), Krw(100), Timestamp(0)),
            Err(Rejection::InvalidCoupon(_))
        ));
    }

    #[test]
    fn adding_a_product_already_in_the_cart_sets_its_quantity() {
        let mut u = user();
        let line = |q| CartLine {
            product_id: ProductId(1),
            name: "p".into(),
            price: Krw(5),
            quantity: q,
        };
        u.apply_cart_line_set(line(2));
        u.apply_cart_line_set(line(7));
        assert_eq!(u.cart.len(), 1);
        assert_eq!(u.cart[0].quantity, 7);
    }

    #[test]
    fn cart_lines_and_quantities_are_bounded() {
        let mut u = user();
        let l = Limits::API;
        assert!(u.decide_set_cart_line(ProductId(1), 0, &l).is_err());
        assert!(u.decide_set_cart_line(ProductId(1), 1001, &l).is_err());
        for i in 0..l.cart_lines_max as u64 {
            u.apply_cart_line_set(CartLine {
                product_id: ProductId(i + 1),
                name: "p".into(),
                price: Krw(1),
                quantity: 1,
            });
        }
        assert!(u.decide_set_cart_line(ProductId(999), 1, &l).is_err());
        assert!(u.decide_set_cart_line(ProductId(1), 5, &l).is_ok());
    }
}
