//! Domain benchmarks: the pure decide/apply functions an order goes through.
//!
//! These are the floor of what an actor can do per message: everything the
//! engine adds (mailboxes, thread hops, the journal) comes on top.
//!
//! `cargo bench --bench domain -- --warm-up-time 1 --measurement-time 3`

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::coupon_terms::Offer;
use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::limits::Limits;
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{price, Order, OrderLine, OrderStatus};
use commerce_engine::domain::product::{Product, ProductCommand};
use commerce_engine::domain::refund::Refunds;
use commerce_engine::domain::time::Timestamp;
use commerce_engine::domain::user::{User, UserCommand, UserEvent};
use commerce_engine::domain::world::World;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;

const T: Timestamp = Timestamp(1_795_132_800_000);

fn lines(n: u64) -> Vec<OrderLine> {
    (1..=n)
        .map(|i| OrderLine {
            product_id: ProductId(i),
            name: format!("product {i}"),
            unit_price: Krw(1_000 * i),
            quantity: i,
        })
        .collect()
}

fn order(id: u64, items: Vec<OrderLine>) -> Order {
    let amounts = price(&items, None).expect("prices");
    Order {
        id: OrderId(id),
        user_id: UserId(1),
        status: OrderStatus::Pending,
        items,
        total_amount: amounts.total,
        discount_amount: amounts.discount,
        pay_amount: amounts.pay,
        user_coupon_id: None,
        created_at: T,
        expires_at: T.plus_ms(600_000),
        paid_at: None,
        refunds: Refunds::NONE,
    }
}

fn user_decide_and_apply(c: &mut Criterion) {
    let limits = Limits::API;
    let mut g = c.benchmark_group("user");
    let user = User::new(UserId(1), "buyer".into());
    g.bench_function("decide_charge", |b| {
        b.iter(|| {
            let charge = UserCommand::Charge {
                amount: black_box(Krw(1_000)),
            };
            black_box(&user).decide(charge, T, &limits)
        })
    });
    g.bench_function("apply_charged", |b| {
        // A fresh user per batch: history grows by one entry per charge.
        b.iter_batched_ref(
            || User::new(UserId(1), "buyer".into()),
            |u| {
                let charged = UserEvent::Charged {
                    amount: black_box(Krw(1_000)),
                };
                u.apply(charged, T)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn product_decide(c: &mut Criterion) {
    let product = Product::new(ProductId(1), "mug".into(), Krw(1_000), 1_000_000);
    c.bench_function("product/decide_reserve", |b| {
        b.iter(|| {
            let reserve = ProductCommand::Reserve(black_box(3));
            black_box(&product).decide(reserve, T, &Limits::API)
        })
    });
}

fn order_price(c: &mut Criterion) {
    let mut g = c.benchmark_group("order/price");
    let discount = Some(Offer {
        discount: Discount::Percent { percent: 10 },
        max_discount: None,
    });
    for n in [1u64, 5, 50] {
        let items = lines(n);
        g.bench_function(format!("{n}_lines"), |b| {
            b.iter(|| price(black_box(&items), black_box(discount)))
        });
    }
    g.finish();
}

/// `World::apply` of an `OrderPlaced`, as the journal writer and recovery run it.
fn world_apply_order_placed(c: &mut Criterion) {
    let mut world = World::default();
    let mut seq = 0;
    let mut push = |world: &mut World, e: Event| {
        seq += 1;
        world.apply(seq, &Record::new(T, e)).expect("applies");
    };
    push(
        &mut world,
        Event::UserRegistered {
            user_id: UserId(1),
            name: "buyer".into(),
        },
    );
    for p in 1..=3 {
        push(
            &mut world,
            Event::ProductCreated {
                product_id: ProductId(p),
                name: format!("product {p}"),
                price: Krw(1_000 * p),
                stock: 1_000_000_000,
            },
        );
    }
    let mut next_seq = world.seq;
    let mut next_id = 0;
    c.bench_function("world/apply_order_placed_3_lines", |b| {
        b.iter_batched(
            || {
                next_seq += 1;
                next_id += 1;
                let e = Event::OrderPlaced {
                    order: Box::new(order(next_id, lines(3))),
                    from_cart: false,
                };
                (next_seq, Record::new(T, e))
            },
            |(seq, record)| world.apply(seq, &record).expect("applies"),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    user_decide_and_apply,
    product_decide,
    order_price,
    world_apply_order_placed
);
criterion_main!(benches);
