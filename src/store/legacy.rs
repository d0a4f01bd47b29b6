//! Readers of stored layouts that are no longer written, in one module that
//! can be deleted once no data dir holds them.
//!
//! Format version 1 stored values that grew with history: a campaign held
//! its whole issued set, the meta held the sales window of every product
//! and the tally a map entry per archived coupon-paid order. Version 2
//! stores those as keyed chunks (see [`crate::store::codec::Kind::current_since`]).
//! A version 1 value is decoded here into today's types and marked dirty,
//! so the next snapshot rewrites it in the current layout; until then it is
//! read here at every start.
//!
//! Format version 3 added per-user purchase limits and coupon windows:
//! products gained `max_per_user`, campaigns and the coupons users hold
//! gained their terms, users the units they hold of limited products. A
//! user, product or campaign of version 1 or 2 is decoded here with the
//! new fields empty (users' layout did not change from 1 to 2).
//!
//! Format version 4 stores a user's counted units compactly (a byte string
//! of varints, see [`HeldUnits`]); a version 3 user, whose units are a
//! list of pairs, is decoded here as [`UserV3`].
//!
//! Version 3 also added the refunds to an order (`refunded_amount`,
//! `refunds`). An order is also part of other values (a placed order's
//! record, an idempotent answer, a paid order's platform event), so the
//! order's `Deserialize` reads the layout of the frame being decoded:
//! [`decoding`] notes a frame's version while its payload is decoded,
//! and an order of a frame before version 3 is read as [`OrderV2`].
//!
//! Each layout below is the serde shape the older type had, field for
//! field: bincode has no field names, so these must never change.
//!
//! The sled store's own older layouts (keys and values it no longer
//! writes) are read by [`store_layouts`].

use crate::domain::coupon::{Campaign, CampaignHeader, Discount};
use crate::domain::coupon_terms::CouponTerms;
use crate::domain::ids::{CouponId, IdMap, IdSet, OrderId, ProductId, UserCouponId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::{Order, OrderFields, OrderLine, OrderStatus};
use crate::domain::product::{Product, RecentSales};
use crate::domain::purchase_limit::HeldUnits;
use crate::domain::refund::Refunds;
use crate::domain::time::Timestamp;
use crate::domain::user::{BalanceEntry, CartLine, CouponUse, User, UserCoupon};
use crate::domain::world::{ArchiveTally, Meta};
use crate::store::codec::{self, CodecError, Frame, Kind};
use serde::{Deserialize, Deserializer};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) mod store_layouts;

thread_local! {
    /// The format version of the frame whose payload this thread decodes.
    static DECODING: Cell<u8> = const { Cell::new(codec::FORMAT_VERSION) };
}

/// Runs `decode` (a frame's payload) with `version` noted as the layout
/// it is in; outside any frame (JSON, say) the current layout is read.
pub fn decoding<T>(version: u8, decode: impl FnOnce() -> T) -> T {
    let before = DECODING.with(|v| v.replace(version));
    let out = decode();
    DECODING.with(|v| v.set(before));
    out
}

/// An order before it held refunds (format versions 1 and 2).
#[derive(Deserialize)]
struct OrderV2 {
    id: OrderId,
    user_id: UserId,
    status: OrderStatus,
    items: Vec<OrderLine>,
    total_amount: Krw,
    discount_amount: Krw,
    pay_amount: Krw,
    user_coupon_id: Option<UserCouponId>,
    created_at: Timestamp,
    expires_at: Timestamp,
    paid_at: Option<Timestamp>,
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Order, D::Error> {
        if DECODING.with(Cell::get) >= 3 {
            return OrderFields::deserialize(d).map(Order::from);
        }
        let o = OrderV2::deserialize(d)?;
        Ok(Order {
            id: o.id,
            user_id: o.user_id,
            status: o.status,
            items: o.items,
            total_amount: o.total_amount,
            discount_amount: o.discount_amount,
            pay_amount: o.pay_amount,
            user_coupon_id: o.user_coupon_id,
            created_at: o.created_at,
            expires_at: o.expires_at,
            paid_at: o.paid_at,
            refunds: Refunds::NONE,
        })
    }
}

/// An order frame of any version.
pub fn order(frame: Frame<'_>) -> Result<Order, CodecError> {
    if frame.kind != Kind::Order {
        return Err(CodecError::WrongKind {
            expected: Kind::Order,
            found: frame.kind,
        });
    }
    decoding(frame.version, || codec::decode_payload(frame.payload))
}

/// A run of order frames of any versions (an archive block).
pub fn orders(mut bytes: &[u8]) -> Result<Vec<Order>, CodecError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (frame, rest) = codec::split_frame(bytes)?;
        out.push(order(frame)?);
        bytes = rest;
    }
    Ok(out)
}

/// A product before it carried its recent sales.
#[derive(Deserialize)]
struct ProductV1 {
    id: ProductId,
    name: String,
    price: Krw,
    stock: u64,
    reserved: u64,
    sold: u64,
    stocked_total: u64,
}

/// A product of version 2: with its recent sales, before `max_per_user`.
#[derive(Deserialize)]
struct ProductV2 {
    id: ProductId,
    name: String,
    price: Krw,
    stock: u64,
    reserved: u64,
    sold: u64,
    stocked_total: u64,
    recent_sales: RecentSales,
}

/// A campaign header of version 2, before its terms.
#[derive(Deserialize)]
struct CampaignHeaderV2 {
    id: CouponId,
    name: String,
    discount: Discount,
    quantity: u64,
    expires_at: Option<Timestamp>,
    issued_count: u64,
}

/// A coupon held by a user, versions 1 and 2, before its terms.
#[derive(Deserialize)]
struct UserCouponV2 {
    id: UserCouponId,
    coupon_id: CouponId,
    name: String,
    discount: Discount,
    expires_at: Option<Timestamp>,
    state: CouponUse,
}

/// A user, versions 1 and 2, before the units held of limited products.
#[derive(Deserialize)]
struct UserV2 {
    id: UserId,
    name: String,
    balance: Krw,
    history: Vec<BalanceEntry>,
    coupons: Vec<UserCouponV2>,
    cart: Vec<CartLine>,
}

/// A user of version 3: its counted units as a list of pairs.
#[derive(Deserialize)]
struct UserV3 {
    id: UserId,
    name: String,
    balance: Krw,
    history: Vec<BalanceEntry>,
    coupons: Vec<UserCoupon>,
    cart: Vec<CartLine>,
    limited: Vec<(ProductId, u64)>,
}

/// A campaign with its whole issued set inline.
#[derive(Deserialize)]
struct CampaignV1 {
    id: CouponId,
    name: String,
    discount: Discount,
    quantity: u64,
    expires_at: Option<Timestamp>,
    issued: IdSet<UserId>,
}

/// The sales window as the meta held it: units per product per day, and
/// the name and price of every product that sold.
#[derive(Deserialize)]
struct SalesWindowV1 {
    days: BTreeMap<u64, IdMap<ProductId, u64>>,
    #[allow(dead_code)] // read to follow the layout; names come from the products now
    catalogue: IdMap<ProductId, (String, Krw)>,
}

#[derive(Deserialize)]
struct MetaV1 {
    user_count: u64,
    product_count: u64,
    campaign_count: u64,
    user_coupon_count: u64,
    order_id_max: u64,
    outbox: BTreeSet<OrderId>,
    sink_len: u64,
    sales: SalesWindowV1,
}

#[derive(Deserialize)]
struct TallyV1 {
    orders: u64,
    sold: BTreeMap<ProductId, u64>,
    coupons: BTreeMap<UserCouponId, (UserId, OrderId)>,
}

/// What a version 1 meta held besides today's meta: the units paid per
/// product per day, which now live in each product.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LegacySales {
    pub days: BTreeMap<u64, Vec<(ProductId, u64)>>,
}

impl LegacySales {
    /// Gives each product its days; answers the products that changed.
    pub fn distribute(self, products: &mut [Product]) -> Vec<ProductId> {
        let mut changed = Vec::new();
        for (day, sold) in self.days {
            for (id, units) in sold {
                if let Some(p) = products.get_mut(id.index()) {
                    p.recent_sales.0.push((day, units));
                    changed.push(id);
                }
            }
        }
        for id in &changed {
            if let Some(p) = products.get_mut(id.index()) {
                p.recent_sales.0.sort_unstable();
                p.recent_sales.0.dedup_by_key(|(d, _)| *d);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }
}

fn check(frame: &Frame<'_>, kind: Kind) -> Result<(), CodecError> {
    check_in(frame, kind, 1..=1)
}

fn check_in(
    frame: &Frame<'_>,
    kind: Kind,
    versions: std::ops::RangeInclusive<u8>,
) -> Result<(), CodecError> {
    if frame.kind != kind {
        return Err(CodecError::WrongKind {
            expected: kind,
            found: frame.kind,
        });
    }
    if !versions.contains(&frame.version) {
        return Err(CodecError::UnknownVersion(frame.version));
    }
    Ok(())
}

/// A product of version 1 or 2.
pub fn product(frame: Frame<'_>) -> Result<Product, CodecError> {
    check_in(&frame, Kind::Product, 1..=2)?;
    let p = if frame.version == 1 {
        let p: ProductV1 = codec::decode_payload(frame.payload)?;
        ProductV2 {
            id: p.id,
            name: p.name,
            price: p.price,
            stock: p.stock,
            reserved: p.reserved,
            sold: p.sold,
            stocked_total: p.stocked_total,
            recent_sales: RecentSales::default(),
        }
    } else {
        codec::decode_payload(frame.payload)?
    };
    Ok(Product {
        id: p.id,
        name: p.name,
        price: p.price,
        stock: p.stock,
        reserved: p.reserved,
        sold: p.sold,
        stocked_total: p.stocked_total,
        recent_sales: p.recent_sales,
        max_per_user: None,
        counts_per_user: false,
        held: 0,
    })
}

/// A campaign header of version 2 (its issued set is in chunks, as today).
pub fn campaign_header(frame: Frame<'_>) -> Result<CampaignHeader, CodecError> {
    check_in(&frame, Kind::Campaign, 2..=2)?;
    let c: CampaignHeaderV2 = codec::decode_payload(frame.payload)?;
    Ok(CampaignHeader {
        id: c.id,
        name: c.name,
        discount: c.discount,
        quantity: c.quantity,
        expires_at: c.expires_at,
        issued_count: c.issued_count,
        terms: CouponTerms::default(),
    })
}

/// A user of version 1, 2 or 3.
pub fn user(frame: Frame<'_>) -> Result<User, CodecError> {
    check_in(&frame, Kind::User, 1..=3)?;
    if frame.version == 3 {
        let u: UserV3 = decoding(3, || codec::decode_payload(frame.payload))?;
        let mut user = User::new(u.id, u.name);
        user.balance = u.balance;
        user.history = u.history;
        user.coupons = u.coupons;
        user.cart = u.cart;
        user.limited = HeldUnits::from_entries(u.limited);
        return Ok(user);
    }
    let u: UserV2 = codec::decode_payload(frame.payload)?;
    let mut user = User::new(u.id, u.name);
    user.balance = u.balance;
    user.history = u.history;
    user.cart = u.cart;
    user.limited = HeldUnits::default();
    user.coupons = u
        .coupons
        .into_iter()
        .map(|c| UserCoupon {
            id: c.id,
            coupon_id: c.coupon_id,
            name: c.name,
            discount: c.discount,
            expires_at: c.expires_at,
            state: c.state,
            terms: CouponTerms::default(),
        })
        .collect();
    Ok(user)
}

/// A campaign of version 1, its issued set inline.
pub fn campaign(frame: Frame<'_>) -> Result<Campaign, CodecError> {
    check(&frame, Kind::Campaign)?;
    let c: CampaignV1 = codec::decode_payload(frame.payload)?;
    let mut campaign = Campaign::new(c.id, c.name, c.discount, c.quantity, c.expires_at);
    let mut users: Vec<UserId> = c.issued.into_iter().collect();
    users.sort_unstable();
    for user in users {
        if user.0 == 0 {
            return Err(CodecError::Payload("user 0 in an issued set".into()));
        }
        campaign.issued.insert(user.0);
    }
    Ok(campaign)
}

pub fn meta(frame: Frame<'_>) -> Result<(Meta, LegacySales), CodecError> {
    check(&frame, Kind::Meta)?;
    let m: MetaV1 = codec::decode_payload(frame.payload)?;
    let meta = Meta {
        user_count: m.user_count,
        product_count: m.product_count,
        campaign_count: m.campaign_count,
        user_coupon_count: m.user_coupon_count,
        order_id_max: m.order_id_max,
        outbox: m.outbox,
        sink_len: m.sink_len,
    };
    let days = m
        .sales
        .days
        .into_iter()
        .map(|(day, sold)| {
            let mut sold: Vec<(ProductId, u64)> = sold.into_iter().collect();
            sold.sort_unstable();
            (day, sold)
        })
        .collect();
    Ok((meta, LegacySales { days }))
}

/// The tally as today's type, every part of it marked to be written again.
pub fn tally(frame: Frame<'_>) -> Result<ArchiveTally, CodecError> {
    check(&frame, Kind::Tally)?;
    let t: TallyV1 = codec::decode_payload(frame.payload)?;
    let mut tally = ArchiveTally {
        orders: t.orders,
        coupons_used: t.coupons.len() as u64,
        ..ArchiveTally::default()
    };
    for (product, units) in t.sold {
        if product.0 == 0 {
            return Err(CodecError::Payload("product 0 in the tally".into()));
        }
        tally.add_sold(product, units);
    }
    tally.counts_dirty = true;
    Ok(tally)
}
