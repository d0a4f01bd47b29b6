//! Model-based test: random sequences of every operation against a simple
//! sequential reference model. Every reply is compared, and at the end of
//! each case the engine is stopped, its store recovered, and the durable
//! state compared with the model. 320 cases × at least 320 operations: at
//! least 102,400 operations per run. More on demand: `MODEL_CASES=3200
//! cargo test --test it engine_model` runs ten times as many cases.

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::limits::Limits;
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{LineRequest, OrderStatus};
use commerce_engine::domain::time::{Timestamp, MS_PER_DAY};
use commerce_engine::engine::{
    Engine, EngineConfig, ManualClock, NewCoupon, OrderSource, PlaceOrder,
};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::MemoryStore;
use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const T0: u64 = 1_800_000_000_000;
const TTL_MS: u64 = 10_000;
/// A low balance limit so that the limit is hit often.
const BALANCE_MAX: u64 = 200_000;
const CHARGE_MAX: u64 = 50_000;

fn limits() -> Limits {
    Limits {
        balance_krw_max: Krw(BALANCE_MAX),
        charge_krw_max: Krw(CHARGE_MAX),
        ..Limits::API
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Coupon {
    Available,
    Used,
}

#[derive(Clone, Debug, Default)]
struct MUser {
    balance: u64,
    /// user coupon id → (campaign index, state)
    coupons: BTreeMap<u64, (usize, Coupon)>,
    cart: Vec<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct MProduct {
    price: u64,
    stock: u64,
}

#[derive(Clone, Debug)]
struct MCampaign {
    discount: Discount,
    quantity: u64,
    expires_at: Option<u64>,
    issued: BTreeSet<usize>,
}

#[derive(Clone, Debug)]
struct MOrder {
    user: usize,
    lines: Vec<(u64, u64)>,
    coupon: Option<u64>,
    pay: u64,
    status: OrderStatus,
    expires_at: u64,
}

/// The reference: plain vectors, applied one operation at a time.
#[derive(Clone, Debug)]
struct Model {
    now: u64,
    users: Vec<MUser>,
    products: Vec<MProduct>,
    campaigns: Vec<MCampaign>,
    orders: Vec<MOrder>,
    user_coupons: u64,
    /// (day, product id) → units paid
    sales: BTreeMap<(u64, u64), u64>,
    /// What the last operation answered.
    last: String,
}

#[derive(Clone, Debug)]
enum Op {
    CreateUser,
    Charge {
        user: u64,
        amount: u64,
    },
    CreateProduct {
        price: u64,
        stock: u64,
    },
    Restock {
        product: u64,
        quantity: u64,
    },
    CreateCoupon {
        discount: Discount,
        quantity: u64,
        ttl_ms: Option<u64>,
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
}

fn err(code: &str) -> String {
    format!("err {code}")
}

impl Model {
    fn user(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.users.len()).then(|| id as usize - 1)
    }
    fn product(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.products.len()).then(|| id as usize - 1)
    }
    fn campaign(&self, id: u64) -> Option<usize> {
        (id >= 1 && id as usize <= self.campaigns.len()).then(|| id as usize - 1)
    }

    /// An unpaid order ends: stock back, coupon available again.
    fn give_back(&mut self, o: usize, status: OrderStatus) {
        self.orders[o].status = status;
        let order = self.orders[o].clone();
        for (p, q) in &order.lines {
            self.products[*p as usize - 1].stock += q;
        }
        if let Some(c) = order.coupon {
            self.users[order.user].coupons.get_mut(&c).unwrap().1 = Coupon::Available;
        }
    }

    fn place(
        &mut self,
        u: usize,
        lines: Vec<(u64, u64)>,
        coupon: Option<u64>,
        from_cart: bool,
    ) -> String {
        if lines.is_empty() || lines.len() > 50 {
            return err("INVALID_REQUEST");
        }
        for (i, (p, q)) in lines.iter().enumerate() {
            if *q == 0 || *q > 1000 || lines[..i].iter().any(|l| l.0 == *p) {
                return err("INVALID_REQUEST");
            }
        }
        if let Some((p, _)) = lines.iter().find(|(p, _)| self.product(*p).is_none()) {
            let _ = p;
            return err("PRODUCT_NOT_FOUND");
        }
        if lines
            .iter()
            .any(|(p, q)| self.products[*p as usize - 1].stock < *q)
        {
            return err("OUT_OF_STOCK");
        }
        let total: u64 = lines
            .iter()
            .map(|(p, q)| self.products[*p as usize - 1].price * q)
            .sum();
        let mut off = 0;
        if let Some(c) = coupon {
            match self.users[u].coupons.get(&c) {
                Some((camp, Coupon::Available)) => {
                    let camp = &self.campaigns[*camp];
                    if camp.expires_at.is_some_and(|at| self.now >= at) {
                        return err("INVALID_COUPON");
                    }
                    off = match camp.discount {
                        Discount::Fixed { amount } => amount.0.min(total),
                        Discount::Percent { percent } => total * u64::from(percent) / 100,
                    };
                }
                _ => return err("INVALID_COUPON"),
            }
            self.users[u].coupons.get_mut(&c).unwrap().1 = Coupon::Used;
        }
        for (p, q) in &lines {
            self.products[*p as usize - 1].stock -= q;
        }
        if from_cart {
            self.users[u]
                .cart
                .retain(|(p, _)| !lines.iter().any(|l| l.0 == *p));
        }
        self.orders.push(MOrder {
            user: u,
            lines,
            coupon,
            pay: total - off,
            status: OrderStatus::Pending,
            expires_at: self.now + TTL_MS,
        });
        format!("order {} total {total} off {off}", self.orders.len())
    }

    fn step(&mut self, op: &Op) -> String {
        let lim = limits();
        match op {
            Op::CreateUser => {
                self.users.push(MUser::default());
                format!("user {}", self.users.len())
            }
            Op::Charge { user, amount } => {
                let Some(u) = self.user(*user) else {
                    return err("USER_NOT_FOUND");
                };
                if *amount == 0 || *amount > CHARGE_MAX {
                    return err("INVALID_AMOUNT");
                }
                if self.users[u].balance + amount > BALANCE_MAX {
                    return err("BALANCE_LIMIT_EXCEEDED");
                }
                self.users[u].balance += amount;
                format!("balance {}", self.users[u].balance)
            }
            Op::CreateProduct { price, stock } => {
                if *price == 0 || *price > lim.price_krw_max.0 {
                    return err("INVALID_REQUEST");
                }
                self.products.push(MProduct {
                    price: *price,
                    stock: *stock,
                });
                format!("product {}", self.products.len())
            }
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
            } => {
                let valid = match discount {
                    Discount::Fixed { amount } => amount.0 >= 1,
                    Discount::Percent { percent } => (1..=100).contains(percent),
                };
                if !valid || *quantity == 0 {
                    return err("INVALID_REQUEST");
                }
                let expires_at = ttl_ms.map(|t| self.now + t);
                self.campaigns.push(MCampaign {
                    discount: *discount,
                    quantity: *quantity,
                    expires_at,
                    issued: BTreeSet::new(),
                });
                format!("coupon {}", self.campaigns.len())
            }
            Op::Issue { coupon, user } => {
                let Some(c) = self.campaign(*coupon) else {
                    return err("COUPON_NOT_FOUND");
                };
                let Some(u) = self.user(*user) else {
                    return err("USER_NOT_FOUND");
                };
                let camp = &mut self.campaigns[c];
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
            Op::CartSet {
                user,
                product,
                quantity,
            } => {
                let Some(u) = self.user(*user) else {
                    return err("USER_NOT_FOUND");
                };
                let Some(p) = self.product(*product) else {
                    return err("PRODUCT_NOT_FOUND");
                };
                if *quantity == 0 || *quantity > 1000 {
                    return err("INVALID_REQUEST");
                }
                if self.products[p].stock < *quantity {
                    return err("OUT_OF_STOCK");
                }
                let cart = &mut self.users[u].cart;
                if let Some(line) = cart.iter_mut().find(|l| l.0 == *product) {
                    line.1 = *quantity;
                } else if cart.len() >= 50 {
                    return err("INVALID_REQUEST");
                } else {
                    cart.push((*product, *quantity));
                }
                self.cart_total(u)
            }
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
            } => {
                let Some(u) = self.user(*user) else {
                    return err("USER_NOT_FOUND");
                };
                self.place(u, lines.clone(), *coupon, false)
            }
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
            Op::Pay { order } => {
                let o = *order as usize;
                if o == 0 || o > self.orders.len() {
                    return err("ORDER_NOT_FOUND");
                }
                let o = o - 1;
                if self.orders[o].status != OrderStatus::Pending {
                    return err("ORDER_NOT_PAYABLE");
                }
                if self.now >= self.orders[o].expires_at {
                    self.give_back(o, OrderStatus::Expired);
                    return err("ORDER_NOT_PAYABLE");
                }
                let (u, pay) = (self.orders[o].user, self.orders[o].pay);
                if self.users[u].balance < pay {
                    self.give_back(o, OrderStatus::Failed);
                    return err("INSUFFICIENT_BALANCE");
                }
                self.users[u].balance -= pay;
                self.orders[o].status = OrderStatus::Paid;
                let day = self.now / MS_PER_DAY;
                for (p, q) in self.orders[o].lines.clone() {
                    *self.sales.entry((day, p)).or_default() += q;
                }
                format!("paid {}", o + 1)
            }
            Op::Cancel { order } => {
                let o = *order as usize;
                if o == 0 || o > self.orders.len() {
                    return err("ORDER_NOT_FOUND");
                }
                let o = o - 1;
                if self.orders[o].status != OrderStatus::Pending {
                    return err("ORDER_NOT_CANCELLABLE");
                }
                if self.now >= self.orders[o].expires_at {
                    self.give_back(o, OrderStatus::Expired);
                    return err("ORDER_NOT_CANCELLABLE");
                }
                self.give_back(o, OrderStatus::Cancelled);
                format!("cancelled {}", o + 1)
            }
            Op::Advance { ms } => {
                self.now += ms;
                "ok".into()
            }
            Op::ExpireDue => {
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
            Op::Refresh => {
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
        }
    }

    fn cart_total(&self, u: usize) -> String {
        let total: u64 = self.users[u]
            .cart
            .iter()
            .map(|(p, q)| self.products[*p as usize - 1].price * q)
            .sum();
        format!("cart {} lines total {total}", self.users[u].cart.len())
    }
}

struct Reference;

fn id_up_to(count: usize) -> BoxedStrategy<u64> {
    // Mostly existing ids, sometimes one past the end (not found), rarely 0.
    prop_oneof![20 => 1..=(count as u64).max(1), 2 => Just(count as u64 + 1), 1 => Just(0)].boxed()
}

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model {
            now: T0,
            users: Vec::new(),
            products: Vec::new(),
            campaigns: Vec::new(),
            orders: Vec::new(),
            user_coupons: 0,
            sales: BTreeMap::new(),
            last: String::new(),
        })
        .boxed()
    }

    fn transitions(s: &Model) -> BoxedStrategy<Op> {
        let (u, p, c, o) = (
            id_up_to(s.users.len()),
            id_up_to(s.products.len()),
            id_up_to(s.campaigns.len()),
            id_up_to(s.orders.len()),
        );
        let quantity = prop_oneof![10 => 1u64..=5, 1 => Just(0u64), 1 => 999u64..=1001];
        let amount =
            prop_oneof![10 => 1u64..=30_000, 1 => Just(0u64), 1 => CHARGE_MAX..=CHARGE_MAX + 1];
        let discount = prop_oneof![
            (0u64..=3_000).prop_map(|a| Discount::Fixed { amount: Krw(a) }),
            (0u8..=101).prop_map(|percent| Discount::Percent { percent }),
        ];
        let line = (p.clone(), quantity.clone());
        let user_coupon = proptest::option::of(0u64..=(s.user_coupons + 1));
        prop_oneof![
            3 => Just(Op::CreateUser),
            8 => (u.clone(), amount).prop_map(|(user, amount)| Op::Charge { user, amount }),
            3 => (prop_oneof![Just(0u64), 1u64..=5_000], 0u64..=8).prop_map(|(price, stock)| Op::CreateProduct { price, stock }),
            2 => (p.clone(), prop_oneof![5 => 1u64..=5, 1 => Just(0u64)]).prop_map(|(product, quantity)| Op::Restock { product, quantity }),
            2 => (discount, 0u64..=4, proptest::option::of(1u64..=30_000)).prop_map(|(discount, quantity, ttl_ms)| Op::CreateCoupon { discount, quantity, ttl_ms }),
            6 => (c.clone(), u.clone()).prop_map(|(coupon, user)| Op::Issue { coupon, user }),
            5 => (u.clone(), p.clone(), quantity).prop_map(|(user, product, quantity)| Op::CartSet { user, product, quantity }),
            2 => (u.clone(), p.clone()).prop_map(|(user, product)| Op::CartRemove { user, product }),
            12 => (u.clone(), proptest::collection::vec(line, 0..=3), user_coupon.clone()).prop_map(|(user, lines, coupon)| Op::Place { user, lines, coupon }),
            3 => (u.clone(), user_coupon).prop_map(|(user, coupon)| Op::PlaceFromCart { user, coupon }),
            10 => o.clone().prop_map(|order| Op::Pay { order }),
            4 => o.prop_map(|order| Op::Cancel { order }),
            3 => prop_oneof![10 => 1u64..=6_000, 1 => Just(MS_PER_DAY)].prop_map(|ms| Op::Advance { ms }),
            2 => Just(Op::ExpireDue),
            2 => Just(Op::Refresh),
            3 => p.prop_map(|product| Op::ReadProduct { product }),
            3 => u.prop_map(|user| Op::ReadBalance { user }),
            2 => c.prop_map(|coupon| Op::ReadCoupon { coupon }),
        ]
        .boxed()
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

impl Sut {
    fn run(&self, op: Op) -> String {
        let e = &self.engine;
        self.rt.block_on(async {
            match op {
                Op::CreateUser => {
                    show(e.create_user("u", None).await, |v| format!("user {}", v.id))
                }
                Op::Charge { user, amount } => {
                    show(e.charge(UserId(user), Krw(amount), None).await, |v| {
                        format!("balance {}", v.balance.0)
                    })
                }
                Op::CreateProduct { price, stock } => {
                    show(e.create_product("p", Krw(price), stock, None).await, |v| {
                        format!("product {}", v.id)
                    })
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
                } => {
                    let expires_at = ttl_ms.map(|t| Timestamp(self.clock_now() + t));
                    show(
                        e.create_coupon(
                            NewCoupon {
                                name: "c".into(),
                                discount,
                                quantity,
                                expires_at,
                                terms: Default::default(),
                            },
                            None,
                        )
                        .await,
                        |v| format!("coupon {}", v.id),
                    )
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
                    show(e.place_order(order, None).await, |o| {
                        format!(
                            "order {} total {} off {}",
                            o.id, o.total_amount.0, o.discount_amount.0
                        )
                    })
                }
                Op::PlaceFromCart { user, coupon } => {
                    let order = PlaceOrder {
                        user_id: UserId(user),
                        source: OrderSource::Cart,
                        user_coupon_id: coupon.map(UserCouponId),
                    };
                    show(e.place_order(order, None).await, |o| {
                        format!(
                            "order {} total {} off {}",
                            o.id, o.total_amount.0, o.discount_amount.0
                        )
                    })
                }
                Op::Pay { order } => show(e.pay_order(OrderId(order), None).await, |o| {
                    format!("paid {}", o.id)
                }),
                Op::Cancel { order } => show(e.cancel_order(OrderId(order), None).await, |o| {
                    format!("cancelled {}", o.id)
                }),
                Op::Advance { ms } => {
                    self.clock.advance_ms(ms);
                    "ok".into()
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
            }
        })
    }

    fn clock_now(&self) -> u64 {
        use commerce_engine::engine::Clock;
        self.clock.now().0
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
        let config = EngineConfig {
            limits: limits(),
            order_ttl_ms: TTL_MS,
            // Expiry only when asked, so the model and the engine see it at the same step.
            expiry_sweep_interval_ms: 86_400_000,
            stats_interval_ms: 86_400_000,
            arbiter_count: 2,
            ..EngineConfig::default()
        };
        let engine = Engine::start(config, Box::new(store.clone()), clock.clone()).unwrap();
        Sut {
            rt,
            engine,
            clock,
            store,
        }
    }

    fn apply(sut: Sut, model: &Model, op: Op) -> Sut {
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
        }
        for (w, m) in world.products.iter().zip(&model.products) {
            assert_eq!(w.stock, m.stock, "stock of product {}", w.id);
        }
        assert_eq!(world.orders.len(), model.orders.len());
        for (i, m) in model.orders.iter().enumerate() {
            assert_eq!(
                world.orders[&OrderId(i as u64 + 1)].status,
                m.status,
                "order {}",
                i + 1
            );
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
