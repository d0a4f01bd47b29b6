//! The operations on an engine in this process, through its facade.

use super::{OpResult, Placed};
use crate::domain::coupon::Discount;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::order::{LineRequest, OrderStatus};
use crate::domain::refund::RefundRequest;
use crate::engine::{Engine, NewCoupon, OrderSource, PlaceOrder};

pub(super) async fn create_user(e: &Engine, name: &str) -> OpResult<UserId> {
    Ok(e.create_user(name, None).await?.id)
}

pub(super) async fn charge(e: &Engine, user: UserId, amount: Krw) -> OpResult<()> {
    e.charge(user, amount, None)
        .await
        .map(drop)
        .map_err(Into::into)
}

pub(super) async fn balance(e: &Engine, user: UserId) -> OpResult<Krw> {
    Ok(e.balance(user).await?.balance)
}

pub(super) async fn create_product(
    e: &Engine,
    name: &str,
    price: Krw,
    stock: u64,
) -> OpResult<ProductId> {
    Ok(e.create_product(name, price, stock, None).await?.id)
}

pub(super) async fn product_stock(e: &Engine, id: ProductId) -> OpResult<u64> {
    Ok(e.product(id).await?.stock)
}

pub(super) async fn create_coupon(
    e: &Engine,
    name: &str,
    off: Krw,
    quantity: u64,
) -> OpResult<CouponId> {
    let new = NewCoupon {
        name: name.to_owned(),
        discount: Discount::Fixed { amount: off },
        quantity,
        expires_at: None,
        terms: Default::default(),
    };
    Ok(e.create_coupon(new, None).await?.id)
}

pub(super) async fn coupon_remaining(e: &Engine, id: CouponId) -> OpResult<u64> {
    Ok(e.coupon(id).await?.remaining)
}

pub(super) async fn issue_coupon(e: &Engine, coupon: CouponId, user: UserId) -> OpResult<()> {
    e.issue_coupon(coupon, user, None)
        .await
        .map(drop)
        .map_err(Into::into)
}

pub(super) async fn place(
    e: &Engine,
    user: UserId,
    product: ProductId,
    quantity: u64,
) -> OpResult<Placed> {
    let order = PlaceOrder {
        user_id: user,
        source: OrderSource::Items(vec![LineRequest {
            product_id: product,
            quantity,
        }]),
        user_coupon_id: None,
    };
    let o = e.place_order(order, None).await?;
    Ok(Placed {
        order_id: o.id,
        pay_amount: o.pay_amount,
    })
}

pub(super) async fn pay(e: &Engine, order: OrderId) -> OpResult<()> {
    e.pay_order(order, None).await.map(drop).map_err(Into::into)
}

pub(super) async fn refund(e: &Engine, order: OrderId) -> OpResult<()> {
    e.refund_order(order, RefundRequest::default(), None)
        .await
        .map(drop)
        .map_err(Into::into)
}

pub(super) async fn order_status(e: &Engine, order: OrderId) -> OpResult<OrderStatus> {
    Ok(e.order(order).await?.status)
}
