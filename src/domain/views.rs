//! What the engine answers: the shapes of `API.md`, serialisable as JSON
//! (and as bincode inside stored idempotent replies).

use crate::domain::coupon::{Campaign, Discount};
use crate::domain::ids::{CouponId, ProductId, UserCouponId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::Order;
use crate::domain::product::Product;
use crate::domain::rejection::Rejection;
use crate::domain::stats::TopProducts;
use crate::domain::time::Timestamp;
use crate::domain::user::{CouponUse, User, UserCoupon};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub name: String,
    pub balance: Krw,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            name: u.name.clone(),
            balance: u.balance,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceView {
    pub user_id: UserId,
    pub balance: Krw,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductView {
    pub id: ProductId,
    pub name: String,
    pub price: Krw,
    /// What can still be ordered now (reserved units are not in it).
    pub stock: u64,
    /// Units one user may hold in pending, paid and partially refunded
    /// orders; null when unlimited.
    #[schema(required = true)]
    pub max_per_user: Option<u64>,
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            id: p.id,
            name: p.name.clone(),
            price: p.price,
            stock: p.available(),
            max_per_user: p.max_per_user,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CouponView {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    pub remaining: u64,
    /// Always present; null when the coupons never expire.
    #[schema(required = true)]
    pub expires_at: Option<Timestamp>,
    /// No coupon is issued before it; null when issuing starts at once.
    #[schema(required = true)]
    pub starts_at: Option<Timestamp>,
    /// An order's total must reach it to use the coupon; null for none.
    #[schema(required = true)]
    pub min_order_amount: Option<Krw>,
    /// The most a percent discount takes off; null for no cap.
    #[schema(required = true)]
    pub max_discount: Option<Krw>,
}

impl From<&Campaign> for CouponView {
    fn from(c: &Campaign) -> Self {
        CouponView {
            id: c.id,
            name: c.name.clone(),
            discount: c.discount,
            quantity: c.quantity,
            remaining: c.remaining(),
            expires_at: c.expires_at,
            starts_at: c.terms.starts_at,
            min_order_amount: c.terms.min_order_amount,
            max_discount: c.terms.max_discount,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserCouponStatus {
    Available,
    Used,
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserCouponView {
    pub id: UserCouponId,
    pub coupon_id: CouponId,
    pub user_id: UserId,
    pub name: String,
    pub discount: Discount,
    pub status: UserCouponStatus,
    /// Always present; null when the coupons never expire.
    #[schema(required = true)]
    pub expires_at: Option<Timestamp>,
    /// An order's total must reach it to use the coupon; null for none.
    #[schema(required = true)]
    pub min_order_amount: Option<Krw>,
    /// The most a percent discount takes off; null for no cap.
    #[schema(required = true)]
    pub max_discount: Option<Krw>,
}

impl UserCouponView {
    pub fn new(user_id: UserId, c: &UserCoupon, now: Timestamp) -> Self {
        let status = match c.state {
            CouponUse::Used(_) | CouponUse::Held => UserCouponStatus::Used,
            CouponUse::Available if c.is_expired(now) => UserCouponStatus::Expired,
            CouponUse::Available => UserCouponStatus::Available,
        };
        UserCouponView {
            id: c.id,
            coupon_id: c.coupon_id,
            user_id,
            name: c.name.clone(),
            discount: c.discount,
            status,
            expires_at: c.expires_at,
            min_order_amount: c.terms.min_order_amount,
            max_discount: c.terms.max_discount,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartItemView {
    pub product_id: ProductId,
    pub name: String,
    pub price: Krw,
    pub quantity: u64,
    pub subtotal: Krw,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartView {
    pub user_id: UserId,
    pub items: Vec<CartItemView>,
    pub total: Krw,
}

impl From<&User> for CartView {
    fn from(u: &User) -> Self {
        let items: Vec<CartItemView> = u
            .cart
            .iter()
            .map(|l| CartItemView {
                product_id: l.product_id,
                name: l.name.clone(),
                price: l.price,
                quantity: l.quantity,
                // price ≤ 1e8 and quantity ≤ 1e3: cannot overflow u64.
                subtotal: l.price.checked_mul(l.quantity).unwrap_or(Krw(u64::MAX)),
            })
            .collect();
        let total = items.iter().fold(Krw::ZERO, |t, i| {
            t.checked_add(i.subtotal).unwrap_or(Krw(u64::MAX))
        });
        CartView {
            user_id: u.id,
            items,
            total,
        }
    }
}

/// A page of a list: `next` is the cursor to pass as `after`, or null at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The first answer to a request made with an idempotency key, kept with the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    User(UserView),
    Balance(BalanceView),
    /// As answered before format version 3 (no limit); read, no longer written.
    Product(ProductViewV2),
    /// As answered before format version 3 (no terms); read, no longer written.
    Coupon(CouponViewV2),
    /// As answered before format version 3 (no terms); read, no longer written.
    UserCoupon(UserCouponViewV2),
    Cart(CartView),
    Order(Box<Order>),
    Top(TopProducts),
    /// A request that changed state and still failed (a payment refused for
    /// want of balance marks the order failed): the retry gets the same error.
    Rejected(Rejection),
    ProductV3(ProductView),
    /// Boxed: the widest answers would widen every journal record.
    CouponV3(Box<CouponView>),
    UserCouponV3(Box<UserCouponView>),
}

/// A view that can be kept as the first answer of an idempotent request.
pub trait Replied: Sized {
    fn to_reply(&self) -> Reply;
    fn from_reply(reply: Reply) -> Option<Self>;
}

macro_rules! replied {
    ($ty:ty, $variant:ident) => {
        impl Replied for $ty {
            fn to_reply(&self) -> Reply {
                Reply::$variant(self.clone())
            }
            fn from_reply(reply: Reply) -> Option<Self> {
                match reply {
                    Reply::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

replied!(UserView, User);
replied!(BalanceView, Balance);

/// Views whose stored layout changed in format version 3: written as the
/// new variant, the old one read with the new fields empty.
macro_rules! replied_v3 {
    ($ty:ty, $new:ident, $old:ident, $wrap:expr, $unwrap:expr) => {
        impl Replied for $ty {
            fn to_reply(&self) -> Reply {
                Reply::$new($wrap(self.clone()))
            }
            fn from_reply(reply: Reply) -> Option<Self> {
                match reply {
                    Reply::$new(v) => Some($unwrap(v)),
                    Reply::$old(v) => Some(v.into()),
                    _ => None,
                }
            }
        }
    };
}

replied_v3!(ProductView, ProductV3, Product, |v| v, |v| v);
replied_v3!(CouponView, CouponV3, Coupon, Box::new, |v: Box<
    CouponView,
>| *v);
replied_v3!(
    UserCouponView,
    UserCouponV3,
    UserCoupon,
    Box::new,
    |v: Box<UserCouponView>| *v
);

/// A product answer as stored before format version 3, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductViewV2 {
    pub id: ProductId,
    pub name: String,
    pub price: Krw,
    pub stock: u64,
}

impl From<ProductViewV2> for ProductView {
    fn from(v: ProductViewV2) -> Self {
        ProductView {
            id: v.id,
            name: v.name,
            price: v.price,
            stock: v.stock,
            max_per_user: None,
        }
    }
}

/// A coupon answer as stored before format version 3, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponViewV2 {
    pub id: CouponId,
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    pub remaining: u64,
    pub expires_at: Option<Timestamp>,
}

impl From<CouponViewV2> for CouponView {
    fn from(v: CouponViewV2) -> Self {
        CouponView {
            id: v.id,
            name: v.name,
            discount: v.discount,
            quantity: v.quantity,
            remaining: v.remaining,
            expires_at: v.expires_at,
            starts_at: None,
            min_order_amount: None,
            max_discount: None,
        }
    }
}

/// A user coupon answer as stored before format version 3, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCouponViewV2 {
    pub id: UserCouponId,
    pub coupon_id: CouponId,
    pub user_id: UserId,
    pub name: String,
    pub discount: Discount,
    pub status: UserCouponStatus,
    pub expires_at: Option<Timestamp>,
}

impl From<UserCouponViewV2> for UserCouponView {
    fn from(v: UserCouponViewV2) -> Self {
        UserCouponView {
            id: v.id,
            coupon_id: v.coupon_id,
            user_id: v.user_id,
            name: v.name,
            discount: v.discount,
            status: v.status,
            expires_at: v.expires_at,
            min_order_amount: None,
            max_discount: None,
        }
    }
}
replied!(CartView, Cart);
replied!(TopProducts, Top);

impl Replied for Order {
    fn to_reply(&self) -> Reply {
        Reply::Order(Box::new(self.clone()))
    }
    fn from_reply(reply: Reply) -> Option<Self> {
        match reply {
            Reply::Order(v) => Some(*v),
            _ => None,
        }
    }
}
