//! Model-based test: random sequences of every operation against a simple
//! sequential reference model (`model_reference`): users and balances,
//! products with per-user purchase limits and PATCHed names, prices and
//! limits, coupon campaigns with start, minimum and discount cap, carts,
//! orders, payment, refunds (whole, line by line, unit by unit up to the
//! 20-refund cap), expiry and the ranking. Every reply is compared; the
//! engine restarts on what it wrote now and then in a sequence, and the
//! operations after a restart check what it recovered (balances, stock,
//! units held toward limits, refundable orders read back from the archive).
//! At the end of each case the engine is stopped, its store recovered, and
//! the durable state compared with the model.
//!
//! 320 cases × at least 320 operations: at least 102,400 operations per
//! run. More on demand: `MODEL_CASES=3200 cargo test --test it
//! engine_model` runs ten times as many cases.

use crate::model_reference::{
    err, show_history, show_product, show_refund, Entry, Model, Op, Reason, BALANCE_MAX,
    CHARGE_MAX, REASON_CHARS_MAX, T0, TTL_MS,
};
use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::coupon_terms::CouponTerms;
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::limits::Limits;
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{LineRequest, Order, OrderStatus};
use commerce_engine::domain::product::ProductPatch;
use commerce_engine::domain::refund::{RefundLine, RefundRequest};
use commerce_engine::domain::time::{Timestamp, MS_PER_DAY};
use commerce_engine::engine::{
    Engine, EngineConfig, ManualClock, NewCoupon, OrderSource, PageRequest, PlaceOrder,
};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::MemoryStore;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::strategy::Union;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use std::sync::Arc;

fn limits() -> Limits {
    Limits {
        balance_krw_max: Krw(BALANCE_MAX),
        charge_krw_max: Krw(CHARGE_MAX),
        ..Limits::API
    }
}

struct Reference;

fn id_up_to(count: usize) -> BoxedStrategy<u64> {
    // Mostly existing ids, sometimes one past the end (not found), rarely 0.
    prop_oneof![20 => 1..=(count as u64).max(1), 2 => Just(count as u64 + 1), 1 => Just(0)].boxed()
}

/// An order id: mostly of a pending order, if there is one.
fn pending_or(s: &Model, any: BoxedStrategy<u64>) -> BoxedStrategy<u64> {
    let pending: Vec<u64> = (1u64..)
        .zip(&s.orders)
        .filter(|(_, o)| o.status == OrderStatus::Pending)
        .map(|(id, _)| id)
        .collect();
    if pending.is_empty() {
        return any;
    }
    prop_oneof![1 => any, 2 => select(pending)].boxed()
}

/// Quantities of order and cart lines: mostly small, sometimes large
/// enough for 20 refunds of one order, sometimes out of range.
fn quantity() -> BoxedStrategy<u64> {
    prop_oneof![20 => 1u64..=5, 6 => 10u64..=25, 1 => Just(0u64), 1 => 999u64..=1001].boxed()
}

/// A limit: mostly small (so it is reached), sometimes out of range.
fn max_per_user() -> BoxedStrategy<u64> {
    prop_oneof![10 => 1u64..=6, 1 => Just(0u64), 1 => Just(1001u64)].boxed()
}

fn create_product() -> BoxedStrategy<Op> {
    // Cheap products make orders of more than 20 units payable.
    let price = prop_oneof![1 => Just(0u64), 14 => 1u64..=5_000, 6 => 1u64..=300];
    let stock = prop_oneof![5 => 0u64..=8, 3 => 20u64..=80];
    let max = proptest::option::weighted(0.4, max_per_user());
    (price, stock, max)
        .prop_map(|(price, stock, max_per_user)| Op::CreateProduct {
            price,
            stock,
            max_per_user,
        })
        .boxed()
}

/// PATCH of a product: each field given or not, sometimes invalid.
fn update_product(p: BoxedStrategy<u64>) -> BoxedStrategy<Op> {
    let name = proptest::option::weighted(0.3, prop_oneof![5 => Just(true), 1 => Just(false)]);
    let price = proptest::option::weighted(0.5, prop_oneof![1 => Just(0u64), 20 => 1u64..=5_000]);
    let max = proptest::option::weighted(0.6, proptest::option::weighted(0.7, max_per_user()));
    (p, name, price, max)
        .prop_map(|(product, name, price, max_per_user)| Op::UpdateProduct {
            product,
            name,
            price,
            max_per_user,
        })
        .boxed()
}

/// A campaign: the discount, and sometimes a start, a minimum and a cap.
fn create_coupon() -> BoxedStrategy<Op> {
    let discount = prop_oneof![
        (0u64..=3_000).prop_map(|a| Discount::Fixed { amount: Krw(a) }),
        (0u8..=101).prop_map(|percent| Discount::Percent { percent }),
    ];
    let start = proptest::option::weighted(0.3, 0u64..=20_000);
    let min_order =
        proptest::option::weighted(0.3, prop_oneof![1 => Just(0u64), 10 => 1u64..=15_000]);
    let cap = proptest::option::weighted(0.3, prop_oneof![1 => Just(0u64), 10 => 1u64..=2_000]);
    (
        discount,
        0u64..=4,
        proptest::option::of(1u64..=30_000),
        start,
        min_order,
        cap,
    )
        .prop_map(
            |(discount, quantity, ttl_ms, start_ms, min_order, max_discount)| Op::CreateCoupon {
                discount,
                quantity,
                ttl_ms,
                start_ms,
                min_order,
                max_discount,
            },
        )
        .boxed()
}

fn reason() -> BoxedStrategy<Reason> {
    prop_oneof![12 => Just(Reason::None), 4 => Just(Reason::Short), 1 => Just(Reason::TooLong)]
        .boxed()
}

/// Items of a refund of an order with `left` units per line: some of its
/// lines, each mostly within what is left, sometimes one unit more.
fn items_of(left: Vec<(u64, u64)>) -> BoxedStrategy<Option<Vec<(u64, u64)>>> {
    let n = left.len();
    let some = subsequence(left, 1..=n)
        .prop_flat_map(|lines| {
            lines
                .into_iter()
                .map(|(p, l)| (Just(p), prop_oneof![8 => 1..=l.max(1), 1 => Just(l + 1)]))
                .collect::<Vec<_>>()
        })
        .prop_map(Some);
    prop_oneof![1 => Just(None), 3 => some].boxed()
}

/// Refunds: of paid orders with items from their lines, and of any order
/// with any items (bad shapes, foreign products, unpaid orders).
fn refunds(s: &Model, p: BoxedStrategy<u64>) -> Vec<(u32, BoxedStrategy<Op>)> {
    let any_items = proptest::option::of(proptest::collection::vec(
        (p, prop_oneof![5 => 1u64..=3, 1 => Just(0u64)]),
        0..=2,
    ));
    let any = (id_up_to(s.orders.len()), any_items, reason())
        .prop_map(|(order, items, reason)| Op::Refund {
            order,
            items,
            reason,
        })
        .boxed();
    let refundable: Vec<(u64, Vec<(u64, u64)>)> = (1u64..)
        .zip(&s.orders)
        .filter(|(_, o)| o.is_refundable())
        .map(|(id, o)| (id, o.left()))
        .collect();
    if refundable.is_empty() {
        return vec![(3, any)];
    }
    let targeted = select(refundable.clone())
        .prop_flat_map(|(order, left)| (Just(order), items_of(left), reason()))
        .prop_map(|(order, items, reason)| Op::Refund {
            order,
            items,
            reason,
        })
        .boxed();
    let mut choices = vec![(3, any), (15, targeted.boxed())];
    choices.extend(refund_units(refundable));
    choices
}

/// Unit-by-unit refunds of a paid order with at least two units left, then
/// a whole refund; mostly of an order with more than 20 units left, whose
/// 20th refund is refused unless it takes everything.
fn refund_units(refundable: Vec<(u64, Vec<(u64, u64)>)>) -> Option<(u32, BoxedStrategy<Op>)> {
    let units = |left: &[(u64, u64)]| left.iter().map(|l| l.1).sum::<u64>();
    let (big, small): (Vec<_>, Vec<_>) = refundable
        .into_iter()
        .filter(|(_, left)| units(left) >= 2)
        .partition(|(_, left)| units(left) > 20);
    let (weight, orders) = match (big.is_empty(), small.is_empty()) {
        (false, _) => (3, big),
        (true, false) => (1, small),
        (true, true) => return None,
    };
    let op = select(orders).prop_map(|(order, left)| {
        let steps = left
            .into_iter()
            .flat_map(|(p, l)| (0..l).map(move |_| Some(p)))
            .take(30)
            .chain([None])
            .collect();
        Op::RefundUnits { order, steps }
    });
    Some((weight, op.boxed()))
}

/// An order of more than 20 units of one product without a limit, when
/// one has the stock: what a refund in more than 20 steps needs.
fn big_order(s: &Model, u: BoxedStrategy<u64>) -> Option<(u32, BoxedStrategy<Op>)> {
    let products: Vec<(u64, u64)> = (1u64..)
        .zip(&s.products)
        .filter(|(_, p)| p.stock > 20 && p.max_per_user.is_none())
        .map(|(id, p)| (id, p.stock.min(40)))
        .collect();
    if products.is_empty() {
        return None;
    }
    let line = select(products).prop_flat_map(|(p, most)| (Just(p), 21..=most));
    let op = (u, line).prop_map(|(user, line)| Op::Place {
        user,
        lines: vec![line],
        coupon: None,
    });
    Some((2, op.boxed()))
}

/// Units held toward a limit: mostly of a user and product of a recent order.
fn read_held(s: &Model, u: BoxedStrategy<u64>, p: BoxedStrategy<u64>) -> BoxedStrategy<Op> {
    let any = (u, p).prop_map(|(user, product)| Op::ReadHeld { user, product });
    let recent: Vec<Op> = s
        .orders
        .iter()
        .rev()
        .take(10)
        .flat_map(|o| {
            o.lines.iter().map(|l| Op::ReadHeld {
                user: o.user as u64 + 1,
                product: l.product,
            })
        })
        .collect();
    if recent.is_empty() {
        return any.boxed();
    }
    prop_oneof![1 => any, 3 => select(recent)].boxed()
}

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(s: &Model) -> BoxedStrategy<Op> {
        let (u, p, c, o) = (
            id_up_to(s.users.len()),
            id_up_to(s.products.len()),
            id_up_to(s.campaigns.len()),
            id_up_to(s.orders.len()),
        );
        let amount =
            prop_oneof![10 => 1u64..=30_000, 1 => Just(0u64), 1 => CHARGE_MAX..=CHARGE_MAX + 1];
        let line = (p.clone(), quantity());
        let user_coupon = proptest::option::of(0u64..=(s.user_coupons + 1));
        let ops = prop_oneof![
            3 => Just(Op::CreateUser),
            8 => (u.clone(), amount).prop_map(|(user, amount)| Op::Charge { user, amount }),
            3 => create_product(),
            3 => update_product(p.clone()),
            2 => (p.clone(), prop_oneof![5 => 1u64..=5, 1 => Just(0u64)]).prop_map(|(product, quantity)| Op::Restock { product, quantity }),
            3 => create_coupon(),
            6 => (c.clone(), u.clone()).prop_map(|(coupon, user)| Op::Issue { coupon, user }),
            5 => (u.clone(), p.clone(), quantity()).prop_map(|(user, product, quantity)| Op::CartSet { user, product, quantity }),
            2 => (u.clone(), p.clone()).prop_map(|(user, product)| Op::CartRemove { user, product }),
            12 => (u.clone(), proptest::collection::vec(line, 0..=3), user_coupon.clone()).prop_map(|(user, lines, coupon)| Op::Place { user, lines, coupon }),
            3 => (u.clone(), user_coupon).prop_map(|(user, coupon)| Op::PlaceFromCart { user, coupon }),
            10 => pending_or(s, o.clone()).prop_map(|order| Op::Pay { order }),
            4 => pending_or(s, o).prop_map(|order| Op::Cancel { order }),
            3 => prop_oneof![10 => 1u64..=6_000, 1 => Just(MS_PER_DAY)].prop_map(|ms| Op::Advance { ms }),
            2 => Just(Op::ExpireDue),
            2 => Just(Op::Refresh),
            3 => p.clone().prop_map(|product| Op::ReadProduct { product }),
            3 => u.clone().prop_map(|user| Op::ReadBalance { user }),
            2 => c.prop_map(|coupon| Op::ReadCoupon { coupon }),
            2 => read_held(s, u.clone(), p.clone()),
            2 => u.clone().prop_map(|user| Op::ReadHistory { user }),
        ];
        // About 1.3 restarts per case: each costs as much as a few hundred operations.
        let mut choices = vec![(260, ops.boxed()), (1, Just(Op::Restart).boxed())];
        choices.extend(big_order(s, u));
        choices.extend(refunds(s, p));
        Union::new_weighted(choices).boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.last = state.step(op);
        state
    }
}

struct Sut {
    rt: tokio::runtime::Runtime,
    engine: Engine,
    clock: Arc<ManualClock>,
    store: MemoryStore,
}

fn config() -> EngineConfig {
    EngineConfig {
        limits: limits(),
        order_ttl_ms: TTL_MS,
        // Expiry only when asked, so the model and the engine see it at the same step.
        expiry_sweep_interval_ms: 86_400_000,
        stats_interval_ms: 86_400_000,
        arbiter_count: 2,
        ..EngineConfig::default()
    }
}

fn show<T>(r: Result<T, commerce_engine::engine::Error>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => err(e.code()),
    }
}

fn lines_of(lines: &[(u64, u64)]) -> Vec<LineRequest> {
    lines
        .iter()
        .map(|&(p, q)| LineRequest {
            product_id: ProductId(p),
            quantity: q,
        })
        .collect()
}

fn refund_request(items: Option<&[(u64, u64)]>, reason: Reason) -> RefundRequest {
    RefundRequest {
        items: items.map(|items| {
            items
                .iter()
                .map(|&(p, q)| RefundLine {
                    product_id: ProductId(p),
                    quantity: q,
                })
                .collect()
        }),
        reason: match reason {
            Reason::None => None,
            Reason::Short => Some("damaged".into()),
            Reason::TooLong => Some("x".repeat(REASON_CHARS_MAX + 1)),
        },
    }
}

fn show_order(o: Order) -> String {
    format!(
        "order {} total {} off {}",
        o.id, o.total_amount.0, o.discount_amount.0
    )
}

fn show_refunded(o: Order) -> String {
    let amount = o.refunds.last().map_or(0, |r| r.amount.0);
    show_refund(o.id.0, o.status, amount, o.refunded_amount().0)
}

impl Sut {
    fn start(store: MemoryStore, clock: Arc<ManualClock>) -> Engine {
        crate::engine_support::start(config(), Box::new(store), clock)
    }

    fn restart(&mut self) {
        self.engine.shutdown();
        self.engine = Sut::start(self.store.clone(), self.clock.clone());
    }

    fn run(&mut self, op: Op) -> String {
        match op {
            Op::Restart => {
                self.restart();
                "restarted".into()
            }
            Op::Advance { ms } => {
                self.clock.advance_ms(ms);
                "ok".into()
            }
            op => self.rt.block_on(self.call(op)),
        }
    }

    async fn call(&self, op: Op) -> String {
        let e = &self.engine;
        match op {
            Op::CreateUser => show(e.create_user("u", None).await, |v| format!("user {}", v.id)),
            Op::Charge { user, amount } => {
                show(e.charge(UserId(user), Krw(amount), None).await, |v| {
                    format!("balance {}", v.balance.0)
                })
            }
            Op::CreateProduct {
                price,
                stock,
                max_per_user,
            } => show(
                e.create_limited_product("p", Krw(price), stock, max_per_user, None)
                    .await,
                |v| format!("product {}", v.id),
            ),
            Op::UpdateProduct {
                product,
                name,
                price,
                max_per_user,
            } => {
                let patch = ProductPatch {
                    name: name.map(|ok| match ok {
                        true => format!("renamed {product}"),
                        false => String::new(),
                    }),
                    price: price.map(Krw),
                    max_per_user,
                };
                show(
                    e.update_product(ProductId(product), patch, None).await,
                    |v| show_product(&v.name, v.price.0, v.stock, v.max_per_user),
                )
            }
            Op::Restock { product, quantity } => {
                show(e.restock(ProductId(product), quantity, None).await, |v| {
                    format!("stock {}", v.stock)
                })
            }
            Op::CreateCoupon {
                discount,
                quantity,
                ttl_ms,
                start_ms,
                min_order,
                max_discount,
            } => {
                let now = e.now().0;
                let new = NewCoupon {
                    name: "c".into(),
                    discount,
                    quantity,
                    expires_at: ttl_ms.map(|t| Timestamp(now + t)),
                    terms: CouponTerms {
                        starts_at: start_ms.map(|t| Timestamp(now + t)),
                        min_order_amount: min_order.map(Krw),
                        max_discount: max_discount.map(Krw),
                    },
                };
                show(e.create_coupon(new, None).await, |v| {
                    format!("coupon {}", v.id)
                })
            }
            Op::Issue { coupon, user } => show(
                e.issue_coupon(CouponId(coupon), UserId(user), None).await,
                |v| format!("user coupon {}", v.id),
            ),
            Op::CartSet {
                user,
                product,
                quantity,
            } => show(
                e.set_cart_item(UserId(user), ProductId(product), quantity, None)
                    .await,
                |c| format!("cart {} lines total {}", c.items.len(), c.total.0),
            ),
            Op::CartRemove { user, product } => show(
                e.remove_cart_item(UserId(user), ProductId(product)).await,
                |c| format!("cart {} lines total {}", c.items.len(), c.total.0),
            ),
            Op::Place {
                user,
                lines,
                coupon,
            } => {
                let order = PlaceOrder {
                    user_id: UserId(user),
                    source: OrderSource::Items(lines_of(&lines)),
                    user_coupon_id: coupon.map(UserCouponId),
                };
                show(e.place_order(order, None).await, show_order)
            }
            Op::PlaceFromCart { user, coupon } => {
                let order = PlaceOrder {
                    user_id: UserId(user),
                    source: OrderSource::Cart,
                    user_coupon_id: coupon.map(UserCouponId),
                };
                show(e.place_order(order, None).await, show_order)
            }
            Op::Pay { order } => show(e.pay_order(OrderId(order), None).await, |o| {
                format!("paid {}", o.id)
            }),
            Op::Cancel { order } => show(e.cancel_order(OrderId(order), None).await, |o| {
                format!("cancelled {}", o.id)
            }),
            Op::Refund {
                order,
                items,
                reason,
            } => {
                let request = refund_request(items.as_deref(), reason);
                show(
                    e.refund_order(OrderId(order), request, None).await,
                    show_refunded,
                )
            }
            Op::RefundUnits { order, steps } => {
                let mut replies = Vec::with_capacity(steps.len());
                for step in steps {
                    let items = step.map(|p| [(p, 1)]);
                    let request = refund_request(items.as_ref().map(|i| &i[..]), Reason::None);
                    let reply = e.refund_order(OrderId(order), request, None).await;
                    replies.push(show(reply, show_refunded));
                }
                replies.join("; ")
            }
            Op::ExpireDue => show(e.expire_due_orders().await, |n| format!("expired {n}")),
            Op::Refresh => show(e.refresh_stats().await, |t| {
                let ranked: Vec<(u64, u64)> = t
                    .items
                    .iter()
                    .map(|i| (i.product_id.0, i.sold_quantity))
                    .collect();
                format!("top {ranked:?}")
            }),
            Op::ReadProduct { product } => show(e.product(ProductId(product)).await, |p| {
                format!("stock {}", p.stock)
            }),
            Op::ReadBalance { user } => show(e.balance(UserId(user)).await, |b| {
                format!("balance {}", b.balance.0)
            }),
            Op::ReadCoupon { coupon } => show(e.coupon(CouponId(coupon)).await, |c| {
                format!("remaining {}", c.remaining)
            }),
            Op::ReadHeld { user, product } => {
                if e.product(ProductId(product)).await.is_err() {
                    return "held -".into();
                }
                show(e.units_held(UserId(user), ProductId(product)).await, |n| {
                    format!("held {n}")
                })
            }
            Op::ReadHistory { user } => show(
                e.history(UserId(user), PageRequest::first(3)).await,
                |page| {
                    let entries: Vec<(u64, Entry)> = page
                        .items
                        .into_iter()
                        .map(|b| {
                            let entry = Entry {
                                kind: b.kind,
                                amount: b.amount.0,
                                balance_after: b.balance_after.0,
                                order: b.order_id.map(|o| o.0),
                            };
                            (b.seq, entry)
                        })
                        .collect();
                    show_history(&entries)
                },
            ),
            Op::Advance { .. } | Op::Restart => unreachable!("run handles it"),
        }
    }
}

struct EngineMatchesModel;

impl StateMachineTest for EngineMatchesModel {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let store = MemoryStore::new();
        let engine = Sut::start(store.clone(), clock.clone());
        Sut {
            rt,
            engine,
            clock,
            store,
        }
    }

    fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
        let described = format!("{op:?}");
        let got = sut.run(op);
        assert_eq!(got, model.last, "reply to {described}");
        sut
    }

    fn teardown(sut: Sut, model: Model) {
        sut.engine.shutdown();
        let (world, _) = recover_store(&sut.store).expect("recovers with invariants holding");
        assert!(world.violations().is_empty());
        assert_eq!(world.users.len(), model.users.len());
        for (w, m) in world.users.iter().zip(&model.users) {
            assert_eq!(w.balance.0, m.balance, "balance of user {}", w.id);
            assert_eq!(w.coupons.len(), m.coupons.len());
            let cart: Vec<(u64, u64)> = w
                .cart
                .iter()
                .map(|l| (l.product_id.0, l.quantity))
                .collect();
            assert_eq!(cart, m.cart, "cart of user {}", w.id);
            // The history kept in memory is the newest part of the model's.
            let kept: Vec<Entry> = w
                .history
                .iter()
                .map(|b| Entry {
                    kind: b.kind,
                    amount: b.amount.0,
                    balance_after: b.balance_after.0,
                    order: b.order_id.map(|o| o.0),
                })
                .collect();
            assert!(m.history.ends_with(&kept), "history of user {}", w.id);
        }
        assert_eq!(world.products.len(), model.products.len());
        for (w, m) in world.products.iter().zip(&model.products) {
            assert_eq!(w.stock, m.stock, "stock of product {}", w.id);
            assert_eq!(w.sold, m.sold, "sold of product {}", w.id);
            assert_eq!(w.price.0, m.price, "price of product {}", w.id);
            assert_eq!(w.name, m.name, "name of product {}", w.id);
            assert_eq!(w.max_per_user, m.max_per_user, "limit of product {}", w.id);
        }
        // Finished orders may be in the archive (restarts snapshot): every
        // order is in memory or counted there.
        assert_eq!(
            world.orders.len() as u64 + world.archived.orders,
            model.orders.len() as u64
        );
        for (id, w) in &world.orders {
            let m = &model.orders[id.0 as usize - 1];
            assert_eq!(w.status, m.status, "status of order {id}");
            assert_eq!(
                w.refunded_amount().0,
                m.refunded_amount,
                "refunded of order {id}"
            );
            assert_eq!(w.refunds.len(), m.refunds, "refunds of order {id}");
        }
    }
}

/// Cases per run: `MODEL_CASES` if set, else 320 (at least 102,400 operations).
fn model_cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(320)
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: model_cases(), max_shrink_iters: 2_000, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn engine_replies_and_durable_state_match_the_reference_model(sequential 320..=400 => EngineMatchesModel);
}
