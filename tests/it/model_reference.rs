//! The reference model of `engine_model`: the rules of API.md written as
//! plainly as possible over vectors, one operation at a time. Each rule is
//! one function; a reply is the string the engine's answer is shown as
//! (`err CODE` for a refusal), so the two can be compared as they are.

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::order::OrderStatus;
use commerce_engine::domain::time::MS_PER_DAY;
use commerce_engine::domain::user::EntryKind;
use std::collections::{BTreeMap, BTreeSet};

pub const T0: u64 = 1_800_000_000_000;
pub const TTL_MS: u64 = 10_000;
/// A low balance limit so that the limit is hit often.
pub const BALANCE_MAX: u64 = 200_000;
pub const CHARGE_MAX: u64 = 50_000;
/// API.md's limits the model checks (the engine runs `Limits::API` for them).
const PRICE_MAX: u64 = 100_000_000;
const LINE_QUANTITY_MAX: u64 = 1_000;
const LINES_MAX: usize = 50;
const MAX_PER_USER_MAX: u64 = 1_000;
const MIN_ORDER_MAX: u64 = 1_000_000_000;
const DISCOUNT_FIXED_MAX: u64 = 100_000_000;
const REFUNDS_PER_ORDER_MAX: usize = 20;
/// A refund's reason longer than this is refused (the generator's long reason is longer).
pub const REASON_CHARS_MAX: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coupon {
    Available,
    Used,
}

/// One line of balance history: kind, amount, balance after, order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub amount: u64,
    pub balance_after: u64,
    pub order: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct MUser {
    pub balance: u64,
    /// user coupon id → (campaign index, state)
    pub coupons: BTreeMap<u64, (usize, Coupon)>,
    pub cart: Vec<(u64, u64)>,
    /// Oldest first; an entry's `seq` is its position from 1.
    pub history: Vec<Entry>,
}

#[derive(Clone, Debug)]
pub struct MProduct {
    pub name: String,
    pub price: u64,
    pub stock: u64,
    pub sold: u64,
    pub max_per_user: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct MCampaign {
    pub discount: Discount,
    pub quantity: u64,
    pub expires_at: Option<u64>,
    pub starts_at: Option<u64>,
    pub min_order: Option<u64>,
    pub max_discount: Option<u64>,
    pub issued: BTreeSet<usize>,
}

#[derive(Clone, Debug)]
pub struct MLine {
    pub product: u64,
    pub quantity: u64,
    /// The product's price when the order was placed.
    pub unit_price: u64,
    pub refunded: u64,
}

impl MLine {
    pub fn left(&self) -> u64 {
        self.quantity - self.refunded
    }
}

#[derive(Clone, Debug)]
pub struct MOrder {
    pub user: usize,
    pub lines: Vec<MLine>,
    pub coupon: Option<u64>,
    pub total: u64,
    pub pay: u64,
    pub status: OrderStatus,
    pub expires_at: u64,
    /// The UTC day it was paid (its units count toward that day's sales).
    pub paid_day: Option<u64>,
    pub refunded_amount: u64,
    pub refunds: usize,
}

impl MOrder {
    pub fn is_refundable(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::Paid | OrderStatus::PartiallyRefunded
        )
    }

    /// Whether its units count toward a purchase limit (refunded ones aside).
    fn holds_units(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::Pending | OrderStatus::Paid | OrderStatus::PartiallyRefunded
        )
    }

    /// (product, units not refunded) of every line.
    pub fn left(&self) -> Vec<(u64, u64)> {
        self.lines.iter().map(|l| (l.product, l.left())).collect()
    }
}

/// The reference: plain vectors, applied one operation at a time.
#[derive(Clone, Debug)]
pub struct Model {
    pub now: u64,
    pub users: Vec<MUser>,
    pub products: Vec<MProduct>,
    pub campaigns: Vec<MCampaign>,
    pub orders: Vec<MOrder>,
    pub user_coupons: u64,
    /// (day, product id) → units paid that day and not refunded; no zero entry.
    pub sales: BTreeMap<(u64, u64), u64>,
    /// What the last operation answered.
    pub last: String,
}

/// A refund's reason: none, a short one, or one too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    None,
    Short,
    TooLong,
}

#[derive(Clone, Debug)]
pub enum Op {
    CreateUser,
    Charge {
        user: u64,
        amount: u64,
    },
    CreateProduct {
        price: u64,
        stock: u64,
        max_per_user: Option<u64>,
    },
    /// PATCH: `name` `Some(false)` is an empty (invalid) name.
    UpdateProduct {
        product: u64,
        name: Option<bool>,
        price: Option<u64>,
        max_per_user: Option<Option<u64>>,
    },
    Restock {
        product: u64,
        quantity: u64,
    },
    CreateCoupon {
        discount: Discount,
        quantity: u64,
        ttl_ms: Option<u64>,
        start_ms: Option<u64>,
        min_order: Option<u64>,
        max_discount: Option<u64>,
    },
    Issue {
        coupon: u64,
        user: u64,
    },
    CartSet {
        user: u64,
        product: u64,
        quantity: u64,
    },
    CartRemove {
        user: u64,
        product: u64,
    },
    Place {
        user: u64,
        lines: Vec<(u64, u64)>,
        coupon: Option<u64>,
    },
    PlaceFromCart {
        user: u64,
        coupon: Option<u64>,
    },
    Pay {
        order: u64,
    },
    Cancel {
        order: u64,
    },
    /// Whole (no items) or the lines given.
    Refund {
        order: u64,
        items: Option<Vec<(u64, u64)>>,
        reason: Reason,
    },
    /// One refund per entry, in turn: one unit of the product, or (`None`)
    /// everything left. Reaches an order's 20-refund cap.
    RefundUnits {
        order: u64,
        steps: Vec<Option<u64>>,
    },
    Advance {
        ms: u64,
    },
    ExpireDue,
    Refresh,
    ReadProduct {
        product: u64,
    },
    ReadBalance {
        user: u64,
    },
    ReadCoupon {
        coupon: u64,
    },
    /// Units of a product the user holds toward its limit, if it has one
    /// now or gets one later (`held -` for no such product).
    ReadHeld {
        user: u64,
        product: u64,
    },
    /// The newest three balance history entries.
    ReadHistory {
        user: u64,
    },
    /// Stop the engine and start another on what it wrote.
    Restart,
}

pub fn err(code: &str) -> String {
    format!("err {code}")
}

/// How a refunded order is shown.
pub fn show_refund(id: u64, status: OrderStatus, amount: u64, refunded: u64) -> String {
    format!("refunded {id} {status:?} amount {amount} total {refunded}")
}

/// How a product is shown after a change.
pub fn show_product(name: &str, price: u64, stock: u64, max: Option<u64>) -> String {
    format!("product {name} price {price} stock {stock} max {max:?}")
}

/// How history entries are shown (newest first).
pub fn show_history(entries: &[(u64, Entry)]) -> String {
    entries
        .iter()
        .map(|(seq, e)| {
            format!(
                "{seq} {:?} {} -> {} order {:?}",
                e.kind, e.amount, e.balance_after, e.order
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The shape rules of order lines and refund items: 1..=50 lines, each
/// product once, quantities 1..=1,000.
fn lines_are_valid(lines: &[(u64, u64)]) -> bool {
    !lines.is_empty()
        && lines.len() <= LINES_MAX
        && lines.iter().enumerate().all(|(i, (p, q))| {
            (1..=LINE_QUANTITY_MAX).contains(q) && !lines[..i].iter().any(|l| l.0 == *p)
        })
}

impl Model {
    pub fn new() -> Model {
        Model {
            now: T0,
            users: Vec::new(),
            products: Vec::new(),
            campaigns: Vec::new(),
            orders: Vec::new(),
            user_coupons: 0,
            sales: BTreeMap::new(),
            last: String::new(),
        }
    }

    fn user(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.users.len()).then(|| id as usize - 1)
    }
    fn product(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.products.len()).then(|| id as usize - 1)
    }
    fn campaign(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.campaigns.len()).then(|| id as usize - 1)
    }
    fn order(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.orders.len()).then(|| id as usize - 1)
    }
    fn product_mut(&mut self, id: u64) -> &mut MProduct {
        &mut self.products[id as usize - 1]
    }

    /// A balance change and its history entry.
    fn book(&mut self, u: usize, kind: EntryKind, amount: u64, order: Option<u64>) {
        let user = &mut self.users[u];
        user.balance = match kind {
            EntryKind::Charge | EntryKind::Refund => user.balance + amount,
            EntryKind::Payment => user.balance - amount,
        };
        let balance_after = user.balance;
        user.history.push(Entry {
            kind,
            amount,
            balance_after,
            order,
        });
    }

    /// An unpaid order ends: stock back, coupon available again (its units
    /// stop counting toward purchase limits with its status).
    fn give_back(&mut self, o: usize, status: OrderStatus) {
        self.orders[o].status = status;
        let order = self.orders[o].clone();
        for l in &order.lines {
            self.product_mut(l.product).stock += l.quantity;
        }
        if let Some(c) = order.coupon {
            self.users[order.user].coupons.get_mut(&c).unwrap().1 = Coupon::Available;
        }
    }

    /// Purchase limits: units of `product` the user holds in pending, paid
    /// and partially refunded orders, refunded units aside. Every unit
    /// counts, including units ordered before the product had a limit.
    pub fn units_held(&self, u: usize, product: u64) -> u64 {
        self.orders
            .iter()
            .filter(|o| o.user == u && o.holds_units())
            .flat_map(|o| &o.lines)
            .filter(|l| l.product == product)
            .map(MLine::left)
            .sum()
    }

    /// Every line of a limited product fits its limit with what the user
    /// holds; a limit lowered below that refuses new units only.
    fn check_purchase_limits(&self, u: usize, lines: &[(u64, u64)]) -> Result<(), String> {
        for (p, q) in lines {
            if let Some(max) = self.products[*p as usize - 1].max_per_user {
                if self.units_held(u, *p) + q > max {
                    return Err(err("PURCHASE_LIMIT_EXCEEDED"));
                }
            }
        }
        Ok(())
    }

    /// What coupon `c` takes off an order of `total`, or why it cannot:
    /// available, not expired, the total at least its minimum; a percent
    /// discount rounds down and is capped at `max_discount`.
    fn coupon_off(&self, u: usize, c: u64, total: u64) -> Result<u64, String> {
        let Some((camp, Coupon::Available)) = self.users[u].coupons.get(&c) else {
            return Err(err("INVALID_COUPON"));
        };
        let camp = &self.campaigns[*camp];
        if camp.expires_at.is_some_and(|at| self.now >= at) {
            return Err(err("INVALID_COUPON"));
        }
        if camp.min_order.is_some_and(|min| total < min) {
            return Err(err("INVALID_COUPON"));
        }
        let off = match camp.discount {
            Discount::Fixed { amount } => amount.0.min(total),
            Discount::Percent { percent } => total * u64::from(percent) / 100,
        };
        Ok(camp.max_discount.map_or(off, |cap| off.min(cap)))
    }

    /// Placing: shape, products, stock, purchase limits, coupon, in that
    /// order; all or nothing. Lines are priced as the products are now.
    fn place(
        &mut self,
        u: usize,
        lines: Vec<(u64, u64)>,
        coupon: Option<u64>,
        from_cart: bool,
    ) -> String {
        if !lines_are_valid(&lines) {
            return err("INVALID_REQUEST");
        }
        if lines.iter().any(|(p, _)| self.product(*p).is_none()) {
            return err("PRODUCT_NOT_FOUND");
        }
        if lines
            .iter()
            .any(|(p, q)| self.products[*p as usize - 1].stock < *q)
        {
            return err("OUT_OF_STOCK");
        }
        if let Err(e) = self.check_purchase_limits(u, &lines) {
            return e;
        }
        let lines: Vec<MLine> = lines
            .iter()
            .map(|&(product, quantity)| MLine {
                product,
                quantity,
                unit_price: self.products[product as usize - 1].price,
                refunded: 0,
            })
            .collect();
        let total: u64 = lines.iter().map(|l| l.unit_price * l.quantity).sum();
        let off = match coupon {
            Some(c) => match self.coupon_off(u, c, total) {
                Ok(off) => off,
                Err(e) => return e,
            },
            None => 0,
        };
        if let Some(c) = coupon {
            self.users[u].coupons.get_mut(&c).unwrap().1 = Coupon::Used;
        }
        for l in &lines {
            self.product_mut(l.product).stock -= l.quantity;
        }
        if from_cart {
            self.users[u]
                .cart
                .retain(|(p, _)| !lines.iter().any(|l| l.product == *p));
        }
        self.orders.push(MOrder {
            user: u,
            lines,
            coupon,
            total,
            pay: total - off,
            status: OrderStatus::Pending,
            expires_at: self.now + TTL_MS,
            paid_day: None,
            refunded_amount: 0,
            refunds: 0,
        });
        format!("order {} total {total} off {off}", self.orders.len())
    }

    /// The pending order `order` within its time; one past it expires
    /// first. Otherwise the refusal: not found, or `refused`.
    fn pending_in_time(&mut self, order: u64, refused: &str) -> Result<usize, String> {
        let Some(o) = self.order(order) else {
            return Err(err("ORDER_NOT_FOUND"));
        };
        if self.orders[o].status != OrderStatus::Pending {
            return Err(err(refused));
        }
        if self.now >= self.orders[o].expires_at {
            self.give_back(o, OrderStatus::Expired);
            return Err(err(refused));
        }
        Ok(o)
    }

    fn pay(&mut self, order: u64) -> String {
        let o = match self.pending_in_time(order, "ORDER_NOT_PAYABLE") {
            Ok(o) => o,
            Err(refusal) => return refusal,
        };
        let (u, pay) = (self.orders[o].user, self.orders[o].pay);
        if self.users[u].balance < pay {
            self.give_back(o, OrderStatus::Failed);
            return err("INSUFFICIENT_BALANCE");
        }
        self.book(u, EntryKind::Payment, pay, Some(order));
        let day = self.now / MS_PER_DAY;
        let order_ref = &mut self.orders[o];
        order_ref.status = OrderStatus::Paid;
        order_ref.paid_day = Some(day);
        for l in order_ref.lines.clone() {
            *self.sales.entry((day, l.product)).or_default() += l.quantity;
            self.product_mut(l.product).sold += l.quantity;
        }
        format!("paid {order}")
    }

    /// Refunds: the request's shape first (400 whatever the order), then
    /// the order (404), then whether it is refundable and what is asked.
    fn refund(&mut self, order: u64, items: Option<&[(u64, u64)]>, reason: Reason) -> String {
        if reason == Reason::TooLong || items.is_some_and(|i| !lines_are_valid(i)) {
            return err("INVALID_REQUEST");
        }
        let Some(o) = self.order(order) else {
            return err("ORDER_NOT_FOUND");
        };
        match self.decide_refund(o, items) {
            Ok((take, amount)) => {
                self.apply_refund(o, &take, amount);
                let m = &self.orders[o];
                show_refund(order, m.status, amount, m.refunded_amount)
            }
            Err(e) => e,
        }
    }

    /// Which units a refund takes and what it returns: the refunded lines'
    /// share of the pay amount, rounded down; the refund that leaves no unit
    /// returns exactly what is left. The 20th refund must take all that is left.
    fn decide_refund(
        &self,
        o: usize,
        items: Option<&[(u64, u64)]>,
    ) -> Result<(Vec<(u64, u64)>, u64), String> {
        let order = &self.orders[o];
        if !order.is_refundable() {
            return Err(err("ORDER_NOT_REFUNDABLE"));
        }
        let left = order.left();
        let take: Vec<(u64, u64)> = match items {
            None => left.iter().copied().filter(|l| l.1 > 0).collect(),
            Some(asked) => {
                let fits = |(p, q): &(u64, u64)| left.iter().any(|l| l.0 == *p && *q <= l.1);
                if !asked.iter().all(fits) {
                    return Err(err("REFUND_EXCEEDS_ORDER"));
                }
                asked.to_vec()
            }
        };
        let taken: u64 = take.iter().map(|l| l.1).sum();
        let is_last = taken == left.iter().map(|l| l.1).sum::<u64>();
        if !is_last && order.refunds + 1 >= REFUNDS_PER_ORDER_MAX {
            return Err(err("REFUND_EXCEEDS_ORDER"));
        }
        let amount = if is_last {
            order.pay - order.refunded_amount
        } else {
            let value: u64 = take
                .iter()
                .map(|(p, q)| {
                    order
                        .lines
                        .iter()
                        .find(|l| l.product == *p)
                        .unwrap()
                        .unit_price
                        * q
                })
                .sum();
            (u128::from(order.pay) * u128::from(value) / u128::from(order.total)) as u64
        };
        Ok((take, amount))
    }

    /// A refund: money back (history kind `refund`), units back in stock
    /// and out of the sales, the coupon available again once refunded whole.
    fn apply_refund(&mut self, o: usize, take: &[(u64, u64)], amount: u64) {
        let day = self.orders[o]
            .paid_day
            .expect("a refundable order was paid");
        for &(p, q) in take {
            let line = self.orders[o].lines.iter_mut().find(|l| l.product == p);
            line.unwrap().refunded += q;
            let product = self.product_mut(p);
            product.stock += q;
            product.sold -= q;
            let sold = self.sales.get_mut(&(day, p)).unwrap();
            *sold -= q;
            if *sold == 0 {
                self.sales.remove(&(day, p));
            }
        }
        let order = &mut self.orders[o];
        order.refunds += 1;
        order.refunded_amount += amount;
        let whole = order.lines.iter().all(|l| l.left() == 0);
        order.status = if whole {
            OrderStatus::Refunded
        } else {
            OrderStatus::PartiallyRefunded
        };
        let (u, coupon) = (order.user, order.coupon);
        self.book(u, EntryKind::Refund, amount, Some(o as u64 + 1));
        if let (true, Some(c)) = (whole, coupon) {
            self.users[u].coupons.get_mut(&c).unwrap().1 = Coupon::Available;
        }
    }

    fn create_product(&mut self, price: u64, stock: u64, max_per_user: Option<u64>) -> String {
        let max_ok = max_per_user.is_none_or(|m| (1..=MAX_PER_USER_MAX).contains(&m));
        if !(1..=PRICE_MAX).contains(&price) || !max_ok {
            return err("INVALID_REQUEST");
        }
        self.products.push(MProduct {
            name: "p".into(),
            price,
            stock,
            sold: 0,
            max_per_user,
        });
        format!("product {}", self.products.len())
    }

    /// PATCH: the fields are checked first (at least one given), then the
    /// product; absent fields stay; `Some(None)` removes the limit.
    fn update_product(
        &mut self,
        product: u64,
        name: Option<bool>,
        price: Option<u64>,
        max_per_user: Option<Option<u64>>,
    ) -> String {
        let nothing = name.is_none() && price.is_none() && max_per_user.is_none();
        let bad_price = price.is_some_and(|p| !(1..=PRICE_MAX).contains(&p));
        let bad_max = matches!(max_per_user, Some(Some(m)) if !(1..=MAX_PER_USER_MAX).contains(&m));
        if nothing || name == Some(false) || bad_price || bad_max {
            return err("INVALID_REQUEST");
        }
        let Some(p) = self.product(product) else {
            return err("PRODUCT_NOT_FOUND");
        };
        let m = &mut self.products[p];
        if name.is_some() {
            m.name = format!("renamed {product}");
        }
        m.price = price.unwrap_or(m.price);
        m.max_per_user = max_per_user.unwrap_or(m.max_per_user);
        show_product(&m.name, m.price, m.stock, m.max_per_user)
    }

    /// A campaign: the discount in range, `starts_at` before `expires_at`,
    /// a minimum in range, `max_discount` for percent discounts only.
    fn create_coupon(
        &mut self,
        discount: Discount,
        quantity: u64,
        ttl_ms: Option<u64>,
        start_ms: Option<u64>,
        min_order: Option<u64>,
        max_discount: Option<u64>,
    ) -> String {
        let (expires_at, starts_at) =
            (ttl_ms.map(|t| self.now + t), start_ms.map(|t| self.now + t));
        let discount_ok = match discount {
            Discount::Fixed { amount } => (1..=DISCOUNT_FIXED_MAX).contains(&amount.0),
            Discount::Percent { percent } => (1..=100).contains(&percent),
        };
        let window_ok = match (starts_at, expires_at) {
            (Some(s), Some(e)) => s < e,
            _ => true,
        };
        let min_ok = min_order.is_none_or(|m| (1..=MIN_ORDER_MAX).contains(&m));
        let cap_ok = max_discount.is_none_or(|m| {
            matches!(discount, Discount::Percent { .. }) && (1..=DISCOUNT_FIXED_MAX).contains(&m)
        });
        if !(discount_ok && window_ok && min_ok && cap_ok) || quantity == 0 {
            return err("INVALID_REQUEST");
        }
        self.campaigns.push(MCampaign {
            discount,
            quantity,
            expires_at,
            starts_at,
            min_order,
            max_discount,
            issued: BTreeSet::new(),
        });
        format!("coupon {}", self.campaigns.len())
    }

    /// Issuing: started, not expired, one per user, at most `quantity`.
    fn issue(&mut self, coupon: u64, user: u64) -> String {
        let Some(c) = self.campaign(coupon) else {
            return err("COUPON_NOT_FOUND");
        };
        let Some(u) = self.user(user) else {
            return err("USER_NOT_FOUND");
        };
        let camp = &mut self.campaigns[c];
        if camp.starts_at.is_some_and(|at| self.now < at) {
            return err("COUPON_NOT_STARTED");
        }
        if camp.expires_at.is_some_and(|at| self.now >= at) {
            return err("COUPON_EXPIRED");
        }
        if camp.issued.contains(&u) {
            return err("COUPON_ALREADY_ISSUED");
        }
        if camp.issued.len() as u64 >= camp.quantity {
            return err("COUPON_SOLD_OUT");
        }
        camp.issued.insert(u);
        self.user_coupons += 1;
        self.users[u]
            .coupons
            .insert(self.user_coupons, (c, Coupon::Available));
        format!("user coupon {}", self.user_coupons)
    }

    fn charge(&mut self, user: u64, amount: u64) -> String {
        let Some(u) = self.user(user) else {
            return err("USER_NOT_FOUND");
        };
        if amount == 0 || amount > CHARGE_MAX {
            return err("INVALID_AMOUNT");
        }
        // A refund may have taken the balance above the limit: a charge still may not.
        if self.users[u].balance + amount > BALANCE_MAX {
            return err("BALANCE_LIMIT_EXCEEDED");
        }
        self.book(u, EntryKind::Charge, amount, None);
        format!("balance {}", self.users[u].balance)
    }

    fn cart_set(&mut self, user: u64, product: u64, quantity: u64) -> String {
        let Some(u) = self.user(user) else {
            return err("USER_NOT_FOUND");
        };
        let Some(p) = self.product(product) else {
            return err("PRODUCT_NOT_FOUND");
        };
        if quantity == 0 || quantity > LINE_QUANTITY_MAX {
            return err("INVALID_REQUEST");
        }
        if self.products[p].stock < quantity {
            return err("OUT_OF_STOCK");
        }
        let cart = &mut self.users[u].cart;
        if let Some(line) = cart.iter_mut().find(|l| l.0 == product) {
            line.1 = quantity;
        } else if cart.len() >= LINES_MAX {
            return err("INVALID_REQUEST");
        } else {
            cart.push((product, quantity));
        }
        self.cart_total(u)
    }

    /// A cart shows each product's current price.
    fn cart_total(&self, u: usize) -> String {
        let total: u64 = self.users[u]
            .cart
            .iter()
            .map(|(p, q)| self.products[*p as usize - 1].price * q)
            .sum();
        format!("cart {} lines total {total}", self.users[u].cart.len())
    }

    fn cancel(&mut self, order: u64) -> String {
        let o = match self.pending_in_time(order, "ORDER_NOT_CANCELLABLE") {
            Ok(o) => o,
            Err(refusal) => return refusal,
        };
        self.give_back(o, OrderStatus::Cancelled);
        format!("cancelled {order}")
    }

    fn expire_due(&mut self) -> String {
        let due: Vec<usize> = (0..self.orders.len())
            .filter(|&o| {
                self.orders[o].status == OrderStatus::Pending
                    && self.now >= self.orders[o].expires_at
            })
            .collect();
        for &o in &due {
            self.give_back(o, OrderStatus::Expired);
        }
        format!("expired {}", due.len())
    }

    /// The top 5 by units paid in the last 3 UTC days, refunded units aside.
    fn top(&self) -> String {
        let today = self.now / MS_PER_DAY;
        let mut totals: BTreeMap<u64, u64> = BTreeMap::new();
        for ((day, p), q) in &self.sales {
            if *day + 2 >= today && *day <= today {
                *totals.entry(*p).or_default() += q;
            }
        }
        let mut ranked: Vec<(u64, u64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(5);
        format!("top {ranked:?}")
    }

    fn read_held(&self, user: u64, product: u64) -> String {
        if self.product(product).is_none() {
            return "held -".into();
        }
        match self.user(user) {
            Some(u) => format!("held {}", self.units_held(u, product)),
            None => err("USER_NOT_FOUND"),
        }
    }

    fn read_history(&self, user: u64) -> String {
        let Some(u) = self.user(user) else {
            return err("USER_NOT_FOUND");
        };
        let history = &self.users[u].history;
        let newest: Vec<(u64, Entry)> = (1u64..)
            .zip(history.iter().cloned())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(3)
            .collect();
        show_history(&newest)
    }

    pub fn step(&mut self, op: &Op) -> String {
        match op {
            Op::CreateUser => {
                self.users.push(MUser::default());
                format!("user {}", self.users.len())
            }
            Op::Charge { user, amount } => self.charge(*user, *amount),
            Op::CreateProduct {
                price,
                stock,
                max_per_user,
            } => self.create_product(*price, *stock, *max_per_user),
            Op::UpdateProduct {
                product,
                name,
                price,
                max_per_user,
            } => self.update_product(*product, *name, *price, *max_per_user),
            Op::Restock { product, quantity } => {
                let Some(p) = self.product(*product) else {
                    return err("PRODUCT_NOT_FOUND");
                };
                if *quantity == 0 {
                    return err("INVALID_REQUEST");
                }
                self.products[p].stock += quantity;
                format!("stock {}", self.products[p].stock)
            }
            Op::CreateCoupon {
                discount,
                quantity,
                ttl_ms,
                start_ms,
                min_order,
                max_discount,
            } => self.create_coupon(
                *discount,
                *quantity,
                *ttl_ms,
                *start_ms,
                *min_order,
                *max_discount,
            ),
            Op::Issue { coupon, user } => self.issue(*coupon, *user),
            Op::CartSet {
                user,
                product,
                quantity,
            } => self.cart_set(*user, *product, *quantity),
            Op::CartRemove { user, product } => {
                let Some(u) = self.user(*user) else {
                    return err("USER_NOT_FOUND");
                };
                let in_cart = self.users[u].cart.iter().any(|l| l.0 == *product);
                if !in_cart && self.product(*product).is_none() {
                    return err("PRODUCT_NOT_FOUND");
                }
                self.users[u].cart.retain(|l| l.0 != *product);
                self.cart_total(u)
            }
            Op::Place {
                user,
                lines,
                coupon,
            } => match self.user(*user) {
                Some(u) => self.place(u, lines.clone(), *coupon, false),
                None => err("USER_NOT_FOUND"),
            },
            Op::PlaceFromCart { user, coupon } => {
                let Some(u) = self.user(*user) else {
                    return err("USER_NOT_FOUND");
                };
                if self.users[u].cart.is_empty() {
                    return err("INVALID_REQUEST");
                }
                let lines = self.users[u].cart.clone();
                self.place(u, lines, *coupon, true)
            }
            Op::Pay { order } => self.pay(*order),
            Op::Cancel { order } => self.cancel(*order),
            Op::Refund {
                order,
                items,
                reason,
            } => self.refund(*order, items.as_deref(), *reason),
            Op::RefundUnits { order, steps } => steps
                .iter()
                .map(|step| {
                    let items = step.map(|p| [(p, 1)]);
                    self.refund(*order, items.as_ref().map(|i| &i[..]), Reason::None)
                })
                .collect::<Vec<_>>()
                .join("; "),
            Op::Advance { ms } => {
                self.now += ms;
                "ok".into()
            }
            Op::ExpireDue => self.expire_due(),
            Op::Refresh => self.top(),
            Op::ReadProduct { product } => match self.product(*product) {
                Some(p) => format!("stock {}", self.products[p].stock),
                None => err("PRODUCT_NOT_FOUND"),
            },
            Op::ReadBalance { user } => match self.user(*user) {
                Some(u) => format!("balance {}", self.users[u].balance),
                None => err("USER_NOT_FOUND"),
            },
            Op::ReadCoupon { coupon } => match self.campaign(*coupon) {
                Some(c) => format!(
                    "remaining {}",
                    self.campaigns[c].quantity - self.campaigns[c].issued.len() as u64
                ),
                None => err("COUPON_NOT_FOUND"),
            },
            Op::ReadHeld { user, product } => self.read_held(*user, *product),
            Op::ReadHistory { user } => self.read_history(*user),
            Op::Restart => "restarted".into(),
        }
    }
}
