//! What a keyed request asked, typed: its idempotency fingerprint.
//!
//! A key reused for another request is refused (`IDEMPOTENCY_KEY_REUSED`);
//! "another" means another fingerprint. The fingerprint is FNV-1a over a
//! canonical text of the request, streamed into the hash (nothing is
//! allocated). The texts are the ones stores already hold fingerprints of,
//! byte for byte (a test pins each), so keys written before stay readable;
//! a new request kind adds a variant and a text of its own, and an existing
//! text never changes.

use crate::domain::coupon::Discount;
use crate::domain::coupon_terms::CouponTerms;
use crate::domain::ids::{CouponId, OrderId, ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::product::ProductPatch;
use crate::domain::refund::RefundRequest;
use crate::domain::time::Timestamp;
use crate::engine::coordinator::OrderSource;
use crate::engine::facade::PlaceOrder;
use crate::engine::idempotency::IdempotencyKey;
use std::fmt::{self, Write};

/// A request that may carry an idempotency key.
#[derive(Clone, Copy, Debug)]
pub enum KeyedRequest<'a> {
    CreateUser {
        name: &'a str,
    },
    Charge {
        user: UserId,
        amount: Krw,
    },
    CreateProduct {
        name: &'a str,
        price: Krw,
        stock: u64,
        max_per_user: Option<u64>,
    },
    UpdateProduct {
        product: ProductId,
        patch: &'a ProductPatch,
    },
    Restock {
        product: ProductId,
        quantity: u64,
    },
    CreateCoupon {
        name: &'a str,
        discount: &'a Discount,
        quantity: u64,
        expires_at: Option<Timestamp>,
        terms: CouponTerms,
    },
    IssueCoupon {
        coupon: CouponId,
        user: UserId,
    },
    SetCartItem {
        user: UserId,
        product: ProductId,
        quantity: u64,
    },
    PlaceOrder(&'a PlaceOrder),
    CancelOrder(OrderId),
    PayOrder(OrderId),
    RefundOrder {
        order: OrderId,
        request: &'a RefundRequest,
    },
}

impl KeyedRequest<'_> {
    /// The key with this request's fingerprint, taken only when there is a
    /// key (a request without one runs as it comes).
    pub fn under(&self, key: Option<IdempotencyKey>) -> Option<(IdempotencyKey, u64)> {
        key.map(|key| (key, self.fingerprint()))
    }

    /// FNV-1a of the request's canonical text: stable across builds and
    /// restarts (std's hasher is not promised to be).
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv1a::default();
        self.write_canonical(&mut h)
            .expect("hashing text cannot fail");
        h.0
    }

    /// The canonical text (the fingerprint hashes exactly these bytes).
    fn write_canonical(&self, w: &mut impl Write) -> fmt::Result {
        match *self {
            KeyedRequest::CreateUser { name } => write!(w, "create_user|{name:?}"),
            KeyedRequest::Charge { user, amount } => write!(w, "charge|{user}|{}", amount.0),
            KeyedRequest::CreateProduct {
                name,
                price,
                stock,
                max_per_user,
            } => {
                write!(w, "create_product|{name:?}|{}|{stock}", price.0)?;
                // Absent, the text is as it was before limits: stored keys keep matching.
                match max_per_user {
                    Some(max) => write!(w, "|max_per_user={max}"),
                    None => Ok(()),
                }
            }
            KeyedRequest::UpdateProduct { product, patch } => {
                write!(w, "update_product|{product}|{patch:?}")
            }
            KeyedRequest::Restock { product, quantity } => {
                write!(w, "restock|{product}|{quantity}")
            }
            KeyedRequest::CreateCoupon {
                name,
                discount,
                quantity,
                expires_at,
                terms,
            } => {
                write!(
                    w,
                    "create_coupon|{name:?}|{discount:?}|{quantity}|{expires_at:?}"
                )?;
                // Without terms, the text is as it was before them.
                if terms == CouponTerms::default() {
                    Ok(())
                } else {
                    write!(w, "|{terms:?}")
                }
            }
            KeyedRequest::IssueCoupon { coupon, user } => write!(w, "issue_coupon|{coupon}|{user}"),
            KeyedRequest::SetCartItem {
                user,
                product,
                quantity,
            } => write!(w, "set_cart_item|{user}|{product}|{quantity}"),
            KeyedRequest::PlaceOrder(order) => {
                w.write_str("place_order|")?;
                write_place_order(w, order)
            }
            KeyedRequest::CancelOrder(id) => write!(w, "cancel_order|{id}"),
            KeyedRequest::PayOrder(id) => write!(w, "pay_order|{id}"),
            KeyedRequest::RefundOrder { order, request } => {
                write!(w, "refund_order|{order}|")?;
                match &request.items {
                    None => w.write_str("all")?,
                    Some(items) => {
                        for (i, l) in items.iter().enumerate() {
                            let sep = if i > 0 { "," } else { "" };
                            write!(w, "{sep}{}x{}", l.product_id, l.quantity)?;
                        }
                    }
                }
                write!(w, "|{:?}", request.reason)
            }
        }
    }
}

/// The text of an order to place, as its fingerprint has always read it
/// (the shape of the type's `Debug` when fingerprints were first stored;
/// written out here so that the type can grow without changing it).
fn write_place_order(w: &mut impl Write, order: &PlaceOrder) -> fmt::Result {
    write!(
        w,
        "PlaceOrder {{ user_id: UserId({}), source: ",
        order.user_id.0
    )?;
    match &order.source {
        OrderSource::Cart => w.write_str("Cart")?,
        OrderSource::Items(lines) => {
            w.write_str("Items([")?;
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                write!(
                    w,
                    "LineRequest {{ product_id: ProductId({}), quantity: {} }}",
                    line.product_id.0, line.quantity
                )?;
            }
            w.write_str("])")?;
        }
    }
    match order.user_coupon_id {
        Some(c) => write!(w, ", user_coupon_id: Some(UserCouponId({})) }}", c.0),
        None => w.write_str(", user_coupon_id: None }"),
    }
}

/// FNV-1a, fed through `fmt::Write`.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserCouponId;
    use crate::domain::order::LineRequest;

    fn text(r: KeyedRequest<'_>) -> String {
        let mut s = String::new();
        r.write_canonical(&mut s).unwrap();
        s
    }

    fn fnv(s: &str) -> u64 {
        let mut h = Fnv1a::default();
        h.write_str(s).unwrap();
        h.0
    }

    #[test]
    fn fnv1a_matches_its_published_vectors() {
        assert_eq!(fnv(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv("foobar"), 0x8594_4171_f739_67e8);
    }

    /// The texts are those fingerprints were stored under: keys written by
    /// earlier builds keep matching their requests.
    #[test]
    fn every_canonical_text_is_the_one_stored_keys_were_hashed_from() {
        let discount = Discount::Percent { percent: 10 };
        let cases: Vec<(KeyedRequest<'_>, String)> = vec![
            (
                KeyedRequest::CreateUser { name: "kim \"j\"" },
                format!("create_user|{:?}", "kim \"j\""),
            ),
            (
                KeyedRequest::Charge {
                    user: UserId(7),
                    amount: Krw(5_000),
                },
                "charge|7|5000".into(),
            ),
            (
                KeyedRequest::CreateProduct {
                    name: "tea",
                    price: Krw(300),
                    stock: 9,
                    max_per_user: None,
                },
                "create_product|\"tea\"|300|9".into(),
            ),
            (
                KeyedRequest::Restock {
                    product: ProductId(3),
                    quantity: 4,
                },
                "restock|3|4".into(),
            ),
            (
                KeyedRequest::CreateCoupon {
                    name: "ten",
                    discount: &discount,
                    quantity: 100,
                    expires_at: Some(Timestamp(1_000)),
                    terms: CouponTerms::default(),
                },
                format!(
                    "create_coupon|\"ten\"|{discount:?}|100|{:?}",
                    Some(Timestamp(1_000))
                ),
            ),
            (
                KeyedRequest::IssueCoupon {
                    coupon: CouponId(2),
                    user: UserId(8),
                },
                "issue_coupon|2|8".into(),
            ),
            (
                KeyedRequest::SetCartItem {
                    user: UserId(1),
                    product: ProductId(2),
                    quantity: 3,
                },
                "set_cart_item|1|2|3".into(),
            ),
            (
                KeyedRequest::CancelOrder(OrderId(11)),
                "cancel_order|11".into(),
            ),
            (KeyedRequest::PayOrder(OrderId(12)), "pay_order|12".into()),
        ];
        for (request, stored) in cases {
            assert_eq!(text(request), stored);
            assert_eq!(request.fingerprint(), fnv(&stored));
        }
    }

    #[test]
    fn an_order_reads_as_its_debug_form_did() {
        let orders = [
            PlaceOrder {
                user_id: UserId(4),
                source: OrderSource::Items(vec![
                    LineRequest {
                        product_id: ProductId(1),
                        quantity: 2,
                    },
                    LineRequest {
                        product_id: ProductId(9),
                        quantity: 1,
                    },
                ]),
                user_coupon_id: Some(UserCouponId(5)),
            },
            PlaceOrder {
                user_id: UserId(4),
                source: OrderSource::Cart,
                user_coupon_id: None,
            },
            PlaceOrder {
                user_id: UserId(1),
                source: OrderSource::Items(Vec::new()),
                user_coupon_id: None,
            },
        ];
        for order in &orders {
            assert_eq!(
                text(KeyedRequest::PlaceOrder(order)),
                format!("place_order|{order:?}")
            );
        }
    }

    #[test]
    fn requests_that_differ_have_different_fingerprints() {
        let a = KeyedRequest::Charge {
            user: UserId(1),
            amount: Krw(10),
        }
        .fingerprint();
        let b = KeyedRequest::Charge {
            user: UserId(1),
            amount: Krw(11),
        }
        .fingerprint();
        let c = KeyedRequest::PayOrder(OrderId(1)).fingerprint();
        let d = KeyedRequest::CancelOrder(OrderId(1)).fingerprint();
        assert!(a != b && c != d);
    }

    #[test]
    fn a_refund_reads_as_its_order_items_and_reason() {
        // given a whole and a partial refund, then each has its own text, and another reason another fingerprint
        use crate::domain::refund::{RefundLine, RefundRequest};
        let whole = RefundRequest::default();
        let part = RefundRequest {
            items: Some(vec![
                RefundLine {
                    product_id: ProductId(2),
                    quantity: 1,
                },
                RefundLine {
                    product_id: ProductId(5),
                    quantity: 3,
                },
            ]),
            reason: Some("broken \"lid\"".into()),
        };
        let refund = |request| KeyedRequest::RefundOrder {
            order: OrderId(9),
            request,
        };
        assert_eq!(text(refund(&whole)), "refund_order|9|all|None");
        assert_eq!(
            text(refund(&part)),
            "refund_order|9|2x1,5x3|Some(\"broken \\\"lid\\\"\")"
        );
        let other = RefundRequest {
            reason: Some("late".into()),
            ..part.clone()
        };
        assert_ne!(refund(&part).fingerprint(), refund(&other).fingerprint());
        assert_ne!(refund(&whole).fingerprint(), refund(&part).fingerprint());
    }
}
