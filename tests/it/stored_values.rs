//! No stored value grows with history: whatever grows with users, orders,
//! coupons or products is stored as keyed entries or bounded chunks. Proved
//! by writing snapshots of a large history under a value limit far below
//! the codec's frame (64 KiB instead of 16 MiB) and recovering them whole.

use commerce_engine::domain::coupon::Discount;
use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderLine, OrderStatus};
use commerce_engine::domain::refund::Refunds;
use commerce_engine::domain::time::{Timestamp, MS_PER_DAY};
use commerce_engine::domain::world::World;
use commerce_engine::store::recovery::{cut_step, recover_for_serving, recover_store};
use commerce_engine::store::{MemoryStore, SnapshotEntries, Store};

const VALUE_BYTES_MAX: usize = 64 * 1024;

struct History {
    world: World,
    seq: u64,
    at: Timestamp,
}

impl History {
    fn apply(&mut self, event: Event) {
        self.seq += 1;
        self.world
            .apply(self.seq, &Record::new(self.at, event))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes a snapshot of everything changed, under the value limit, and
    /// lets go of what it archived.
    fn snapshot(&mut self, store: &MemoryStore) {
        self.world.begin_cut();
        let mut out = SnapshotEntries::with_value_limit(VALUE_BYTES_MAX);
        let archiving = cut_step(&mut self.world, &mut out, usize::MAX)
            .expect("every value fits the limit")
            .expect("a cut without a budget completes");
        for (key, value) in out.iter() {
            let len = value.map_or(0, <[u8]>::len);
            assert!(len <= VALUE_BYTES_MAX + 64, "{key:?} holds {len} bytes");
        }
        store.snapshot(self.seq, out).expect("snapshot written");
        self.world.archived(archiving);
    }
}

fn order(id: u64, user: u64, product: u64, coupon: Option<u64>, at: Timestamp) -> Order {
    Order {
        id: OrderId(id),
        user_id: UserId(user),
        status: OrderStatus::Pending,
        items: vec![OrderLine {
            product_id: ProductId(product),
            name: format!("product {product}"),
            unit_price: Krw(1_000),
            quantity: 1,
        }],
        total_amount: Krw(1_000),
        discount_amount: Krw(100 * u64::from(coupon.is_some())),
        pay_amount: Krw(1_000 - 100 * u64::from(coupon.is_some())),
        user_coupon_id: coupon.map(UserCouponId),
        created_at: at,
        expires_at: at.plus_ms(600_000),
        paid_at: None,
        refunds: Refunds::NONE,
    }
}

/// A campaign of 150,000 coupons issued to as many users, 3,000 products
/// each sold over several days, 20,000 orders paid (half with a coupon)
/// and archived: every snapshot value stays under 64 KiB, and recovery
/// gives back the same campaigns, products and archive sums.
#[test]
fn a_large_history_snapshots_under_a_64_kib_value_limit_and_recovers_whole() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let users = 150_000u64;
    let products = 3_000u64;
    let mut h = History {
        world: World::default(),
        seq: 0,
        at: Timestamp(20_000 * MS_PER_DAY),
    };
    let store = MemoryStore::new();
    for u in 1..=users {
        h.apply(Event::UserRegistered {
            user_id: UserId(u),
            name: format!("user {u}"),
        });
    }
    for p in 1..=products {
        h.apply(Event::ProductCreated {
            product_id: ProductId(p),
            name: format!("product {p}"),
            price: Krw(1_000),
            stock: 1_000,
        });
    }
    h.apply(Event::CampaignCreated {
        coupon_id: CouponId(1),
        name: "flash".into(),
        discount: Discount::Fixed { amount: Krw(100) },
        quantity: 10_000_000,
        expires_at: None,
    });
    for u in 1..=users {
        h.apply(Event::CouponIssued {
            coupon_id: CouponId(1),
            user_id: UserId(u),
            user_coupon_id: UserCouponId(u),
        });
    }
    h.snapshot(&store);
    let mut next_order = 0;
    for day in 0..4 {
        h.at = h.at.plus_ms(MS_PER_DAY);
        for i in 0..5_000u64 {
            next_order += 1;
            let user = 1 + (next_order * 7) % users;
            let product = 1 + (i + day) % products;
            let coupon = (next_order % 2 == 0 && user > users / 2).then_some(user);
            h.apply(Event::BalanceCharged {
                user_id: UserId(user),
                amount: Krw(1_000),
            });
            h.apply(Event::OrderPlaced {
                order: Box::new(order(next_order, user, product, coupon, h.at)),
                from_cart: false,
            });
            let pay = 1_000 - 100 * u64::from(coupon.is_some());
            h.apply(Event::OrderPaid {
                order_id: OrderId(next_order),
                user_id: UserId(user),
                amount: Krw(pay),
            });
        }
        h.apply(Event::OutboxDelivered {
            order_ids: (next_order - 4_999..=next_order).map(OrderId).collect(),
            sink_len: None,
        });
        h.snapshot(&store);
    }
    assert!(
        h.world.violations().is_empty(),
        "{:?}",
        h.world.violations()
    );

    let (recovered, report) = recover_for_serving(&store).expect("recovers");
    assert_eq!(report.records_replayed, 0);
    assert_eq!(recovered.campaigns, h.world.campaigns);
    assert_eq!(recovered.campaigns[0].issued.len(), users);
    assert_eq!(recovered.products, h.world.products);
    assert!(recovered.products[0].recent_sales.0.len() <= 3);
    assert_eq!(recovered.archived.orders, 20_000);
    assert_eq!(
        recovered.archived.coupons_used,
        h.world.archived.coupons_used
    );
    assert!(recovered.archived.coupons_used > 0);
    assert_eq!(recovered.archived.sold, h.world.archived.sold);
    assert!(recovered.violations().is_empty());
    let (whole, _) = recover_store(&store).expect("the whole store recovers");
    assert_eq!(whole.orders.len(), 20_000);
}
