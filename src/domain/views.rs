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
}

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        ProductView {
            id: p.id,
            name: p.name.clone(),
            price: p.price,
            stock: p.available(),
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
    Product(ProductView),
    Coupon(CouponView),
    UserCoupon(UserCouponView),
    Cart(CartView),
    Order(Box<Order>),
    Top(TopProducts),
    /// A request that changed state and still failed (a payment refused for
    /// want of balance marks the order failed): the retry gets the same error.
    Rejected(Rejection),
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
replied!(ProductView, Product);
replied!(CouponView, Coupon);
replied!(UserCouponView, UserCoupon);
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
