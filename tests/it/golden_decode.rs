//! Golden files: encoded records and snapshot frames written by an earlier
//! build and committed under `snapshots/golden/`. Every build must decode
//! them to the values below; a build that cannot read old data fails here.
//!
//! The files were made once by `generate_golden_files` (ignored). Never
//! regenerate them to make this test pass: a failure means stored data
//! would no longer be readable. To add a file for a new event variant, run
//! `cargo test --test it -- --ignored golden_decode::generate_golden_files`;
//! existing files are left as they are.

use commerce_engine::domain::coupon::{Campaign, CampaignHeader, Discount};
use commerce_engine::domain::coupon_terms::CouponTerms;
use commerce_engine::domain::event::{Event, IdempotencyEntry, Record};
use commerce_engine::domain::ids::{CouponId, OrderId, ProductId, UserCouponId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderLine, OrderStatus};
use commerce_engine::domain::product::{Product, RecentSales};
use commerce_engine::domain::refund::{Refund, RefundLine, Refunds};
use commerce_engine::domain::rejection::Rejection;
use commerce_engine::domain::stats::{TopItem, TopProducts};
use commerce_engine::domain::time::Timestamp;
use commerce_engine::domain::user::{
    BalanceEntry, CartLine, CouponUse, EntryKind, User, UserCoupon,
};
use commerce_engine::domain::views::{
    BalanceView, CartItemView, CartView, CouponViewV2, ProductViewV2, Reply, UserCouponStatus,
    UserCouponViewV2, UserView,
};
use commerce_engine::domain::world::{ArchiveTally, Meta, StoredKey, TallyCounts};
use commerce_engine::store::codec::{self, Kind, FORMAT_VERSION};
use commerce_engine::store::legacy::{self, LegacySales};
use commerce_engine::store::recovery::recover;
use commerce_engine::store::Loaded;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;

/// The format version the golden files were written with.
const GOLDEN_VERSION: u8 = 1;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots/golden")
}

const T: Timestamp = Timestamp(1_795_132_800_123);

/// The file name of each event variant. Exhaustive on purpose: a new
/// variant does not compile until it is named here and given golden files.
fn variant_name(e: &Event) -> &'static str {
    match e {
        Event::UserRegistered { .. } => "user_registered",
        Event::BalanceCharged { .. } => "balance_charged",
        Event::ProductCreated { .. } => "product_created",
        Event::ProductRestocked { .. } => "product_restocked",
        Event::CampaignCreated { .. } => "campaign_created",
        Event::CouponIssued { .. } => "coupon_issued",
        Event::CartLineSet { .. } => "cart_line_set",
        Event::CartLineRemoved { .. } => "cart_line_removed",
        Event::OrderPlaced { .. } => "order_placed",
        Event::OrderPaid { .. } => "order_paid",
        Event::OrderPaymentFailed { .. } => "order_payment_failed",
        Event::OrderCancelled { .. } => "order_cancelled",
        Event::OrderExpired { .. } => "order_expired",
        Event::OutboxDelivered { .. } => "outbox_delivered",
        Event::RequestRefused => "request_refused",
        Event::CampaignCreatedWithTerms { .. } => "campaign_created_with_terms",
        Event::ProductCreatedWithLimit { .. } => "product_created_with_limit",
        Event::ProductUpdated { .. } => "product_updated",
        Event::OrderPlacedCounted { .. } => "order_placed_counted",
        Event::OrderRefunded { .. } => "order_refunded",
    }
}

/// The format version an event variant's golden files were written with:
/// the one it first appeared in.
fn written_in(e: &Event) -> u8 {
    match e {
        Event::RequestRefused => 2,
        Event::CampaignCreatedWithTerms { .. }
        | Event::ProductCreatedWithLimit { .. }
        | Event::ProductUpdated { .. }
        | Event::OrderPlacedCounted { .. }
        | Event::OrderRefunded { .. } => 3,
        _ => 1,
    }
}

fn order() -> Order {
    Order {
        id: OrderId(7),
        user_id: UserId(1),
        status: OrderStatus::Pending,
        items: vec![
            OrderLine {
                product_id: ProductId(1),
                name: "머그컵".into(),
                unit_price: Krw(12_000),
                quantity: 2,
            },
            OrderLine {
                product_id: ProductId(2),
                name: "tea".into(),
                unit_price: Krw(4_500),
                quantity: 1,
            },
        ],
        total_amount: Krw(28_500),
        discount_amount: Krw(2_850),
        pay_amount: Krw(25_650),
        user_coupon_id: Some(UserCouponId(3)),
        created_at: T,
        expires_at: T.plus_ms(600_000),
        paid_at: None,
        refunds: Refunds::NONE,
    }
}

fn events() -> Vec<Event> {
    vec![
        Event::UserRegistered {
            user_id: UserId(1),
            name: "Kim Minji".into(),
        },
        Event::BalanceCharged {
            user_id: UserId(1),
            amount: Krw(50_000),
        },
        Event::ProductCreated {
            product_id: ProductId(1),
            name: "머그컵".into(),
            price: Krw(12_000),
            stock: 100,
        },
        Event::ProductRestocked {
            product_id: ProductId(1),
            quantity: 25,
        },
        Event::CampaignCreated {
            coupon_id: CouponId(1),
            name: "10% off".into(),
            discount: Discount::Percent { percent: 10 },
            quantity: 500,
            expires_at: Some(T.plus_ms(86_400_000)),
        },
        Event::CouponIssued {
            coupon_id: CouponId(1),
            user_id: UserId(1),
            user_coupon_id: UserCouponId(3),
        },
        Event::CartLineSet {
            user_id: UserId(1),
            product_id: ProductId(2),
            name: "tea".into(),
            price: Krw(4_500),
            quantity: 3,
        },
        Event::CartLineRemoved {
            user_id: UserId(1),
            product_id: ProductId(2),
        },
        Event::OrderPlaced {
            order: Box::new(order()),
            from_cart: true,
        },
        Event::OrderPaid {
            order_id: OrderId(7),
            user_id: UserId(1),
            amount: Krw(25_650),
        },
        Event::OrderPaymentFailed {
            order_id: OrderId(8),
        },
        Event::OrderCancelled {
            order_id: OrderId(9),
        },
        Event::OrderExpired {
            order_id: OrderId(10),
        },
        Event::OutboxDelivered {
            order_ids: vec![OrderId(7), OrderId(11)],
            sink_len: Some(1_234),
        },
        Event::RequestRefused,
    ]
}

/// One of every kind of stored reply, handed out to the keyed records in turn.
fn replies() -> Vec<Reply> {
    let discount = Discount::Fixed { amount: Krw(1_000) };
    vec![
        Reply::User(UserView {
            id: UserId(1),
            name: "Kim Minji".into(),
            balance: Krw(0),
        }),
        Reply::Balance(BalanceView {
            user_id: UserId(1),
            balance: Krw(50_000),
        }),
        Reply::Product(ProductViewV2 {
            id: ProductId(1),
            name: "머그컵".into(),
            price: Krw(12_000),
            stock: 100,
        }),
        Reply::Coupon(CouponViewV2 {
            id: CouponId(1),
            name: "10% off".into(),
            discount,
            quantity: 500,
            remaining: 499,
            expires_at: None,
        }),
        Reply::UserCoupon(UserCouponViewV2 {
            id: UserCouponId(3),
            coupon_id: CouponId(1),
            user_id: UserId(1),
            name: "10% off".into(),
            discount,
            status: UserCouponStatus::Available,
            expires_at: Some(T),
        }),
        Reply::Cart(CartView {
            user_id: UserId(1),
            items: vec![CartItemView {
                product_id: ProductId(2),
                name: "tea".into(),
                price: Krw(4_500),
                quantity: 3,
                subtotal: Krw(13_500),
            }],
            total: Krw(13_500),
        }),
        Reply::Order(Box::new(order())),
        Reply::Top(TopProducts {
            items: vec![TopItem {
                rank: 1,
                product_id: ProductId(1),
                name: "머그컵".into(),
                price: Krw(12_000),
                sold_quantity: 2,
            }],
            window_days: 3,
            computed_at: T,
        }),
        Reply::Rejected(Rejection::InsufficientBalance {
            balance: 100,
            due: 25_650,
        }),
    ]
}

/// Every golden record: each event alone, and each with an idempotency entry.
fn golden_records() -> Vec<(String, Record)> {
    let replies = replies();
    let mut out = Vec::new();
    for (i, event) in events().into_iter().enumerate() {
        let name = variant_name(&event);
        out.push((format!("records/{name}.bin"), Record::new(T, event.clone())));
        out.push((
            format!("records/{name}_keyed.bin"),
            Record {
                at: T.plus_ms(i as u64),
                event,
                idempotency: Some(Box::new(IdempotencyEntry {
                    key: format!("retry-{name}"),
                    fingerprint: 0xcbf2_9ce4_8422_2325 ^ i as u64,
                    reply: replies[i % replies.len()].clone(),
                })),
            },
        ));
    }
    out
}

fn user() -> User {
    User {
        id: UserId(1),
        name: "Kim Minji".into(),
        balance: Krw(24_350),
        history: vec![
            BalanceEntry {
                seq: 1,
                kind: EntryKind::Charge,
                amount: Krw(50_000),
                balance_after: Krw(50_000),
                order_id: None,
                at: T,
            },
            BalanceEntry {
                seq: 2,
                kind: EntryKind::Payment,
                amount: Krw(25_650),
                balance_after: Krw(24_350),
                order_id: Some(OrderId(7)),
                at: T.plus_ms(1),
            },
        ],
        coupons: vec![UserCoupon {
            id: UserCouponId(3),
            coupon_id: CouponId(1),
            name: "10% off".into(),
            discount: Discount::Percent { percent: 10 },
            expires_at: Some(T.plus_ms(86_400_000)),
            state: CouponUse::Used(OrderId(7)),
            terms: Default::default(),
        }],
        cart: vec![CartLine {
            product_id: ProductId(2),
            name: "tea".into(),
            price: Krw(4_500),
            quantity: 3,
        }],
        limited: Default::default(),
        limited_pending: Default::default(),
        credits_pending: Krw(0),
        debits_pending: Krw(0),
        history_base: 0,
    }
}

fn product() -> Product {
    Product {
        id: ProductId(1),
        name: "머그컵".into(),
        price: Krw(12_000),
        stock: 120,
        reserved: 3,
        sold: 2,
        stocked_total: 125,
        recent_sales: Default::default(),
        max_per_user: None,
        counts_per_user: false,
        held: 0,
    }
}

fn campaign() -> Campaign {
    let mut c = Campaign::new(
        CouponId(1),
        "10% off".into(),
        Discount::Percent { percent: 10 },
        500,
        Some(T.plus_ms(86_400_000)),
    );
    for user in [1, 4, 9] {
        c.issued.insert(user);
    }
    c
}

fn paid_order() -> Order {
    Order {
        status: OrderStatus::Paid,
        paid_at: Some(T.plus_ms(1)),
        refunds: Refunds::NONE,
        ..order()
    }
}

fn stored_key() -> StoredKey {
    StoredKey {
        fingerprint: 0x1234_5678_9abc_def0,
        reply: Reply::Order(Box::new(paid_order())),
        at: T.plus_ms(1),
    }
}

fn meta() -> Meta {
    Meta {
        user_count: 9,
        product_count: 2,
        campaign_count: 1,
        user_coupon_count: 3,
        order_id_max: 11,
        outbox: BTreeSet::from([OrderId(7)]),
        sink_len: 1_234,
    }
}

/// The sales window the version 1 meta held, as each product's days.
fn meta_v1_sales() -> LegacySales {
    let day = T.day();
    LegacySales {
        days: BTreeMap::from([
            (day, vec![(ProductId(1), 2)]),
            (day + 1, vec![(ProductId(2), 1)]),
        ]),
    }
}

/// Decodes a frame's bytes and compares them with the value it holds.
type Check = Box<dyn Fn(&[u8])>;

/// Every golden snapshot frame, as recovery reads them.
fn golden_snapshots() -> Vec<(&'static str, Kind, Check)> {
    fn check<T: DeserializeOwned + PartialEq + Debug + 'static>(kind: Kind, expected: T) -> Check {
        Box::new(move |bytes| {
            let got: T = codec::decode(kind, bytes)
                .unwrap_or_else(|e| panic!("{kind:?} snapshot does not decode: {e}"));
            assert_eq!(got, expected, "{kind:?} snapshot");
        })
    }
    vec![
        (
            "snapshots/user.bin",
            Kind::User,
            Box::new(|bytes| {
                let got = legacy::user(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, user(), "version 1 user");
            }),
        ),
        (
            "snapshots/product.bin",
            Kind::Product,
            Box::new(|bytes| {
                let got = legacy::product(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, product(), "version 1 product");
            }),
        ),
        (
            "snapshots/campaign.bin",
            Kind::Campaign,
            Box::new(|bytes| {
                let got = legacy::campaign(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, campaign(), "version 1 campaign");
            }),
        ),
        (
            "snapshots/order.bin",
            Kind::Order,
            Box::new(|bytes| {
                let got = legacy::order(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, paid_order(), "version 1 order");
            }),
        ),
        (
            "snapshots/key.bin",
            Kind::Key,
            check(Kind::Key, stored_key()),
        ),
        (
            "snapshots/meta.bin",
            Kind::Meta,
            Box::new(|bytes| {
                let got = legacy::meta(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, (meta(), meta_v1_sales()), "version 1 meta");
            }),
        ),
        (
            "snapshots/history.bin",
            Kind::History,
            check(Kind::History, user().history),
        ),
        (
            "snapshots/tally.bin",
            Kind::Tally,
            Box::new(|bytes| {
                let got = legacy::tally(codec::open(bytes).unwrap()).unwrap();
                let expected = tally_v1_read();
                assert_eq!(got.orders, expected.orders, "version 1 tally: orders");
                assert_eq!(
                    got.coupons_used, expected.coupons_used,
                    "version 1 tally: coupons used"
                );
                assert_eq!(got.sold, expected.sold, "version 1 tally: units sold");
                assert!(
                    got.counts_dirty,
                    "version 1 tally: rewritten by the next snapshot"
                );
            }),
        ),
    ]
}

/// Every snapshot kind in format version 2 (`snapshots/golden/v2/`), user,
/// product and campaign through the legacy reader (version 3 layouts): the
/// kinds whose layout changed (product, campaign header and its issued
/// chunks, meta, tally and its sold chunks) and those that did not.
fn golden_snapshots_v2() -> Vec<(&'static str, Kind, Check)> {
    fn check<T: DeserializeOwned + PartialEq + Debug + 'static>(kind: Kind, expected: T) -> Check {
        Box::new(move |bytes| {
            let got: T = codec::decode(kind, bytes)
                .unwrap_or_else(|e| panic!("{kind:?} snapshot does not decode: {e}"));
            assert_eq!(got, expected, "version 2 {kind:?} snapshot");
        })
    }
    vec![
        (
            "v2/user.bin",
            Kind::User,
            Box::new(|bytes| {
                let got = legacy::user(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, user(), "version 2 user, read as version 3");
            }),
        ),
        (
            "v2/product.bin",
            Kind::Product,
            Box::new(|bytes| {
                let got = legacy::product(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, product_v2(), "version 2 product, read as version 3");
            }),
        ),
        (
            "v2/campaign.bin",
            Kind::Campaign,
            Box::new(|bytes| {
                let got = legacy::campaign_header(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(
                    got,
                    campaign_header(),
                    "version 2 campaign, read as version 3"
                );
            }),
        ),
        (
            "v2/issued.bin",
            Kind::IssuedChunk,
            check(Kind::IssuedChunk, issued_words()),
        ),
        (
            "v2/order.bin",
            Kind::Order,
            Box::new(|bytes| {
                let got = legacy::order(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, paid_order(), "version 2 order, read as version 3");
            }),
        ),
        ("v2/key.bin", Kind::Key, check(Kind::Key, stored_key())),
        ("v2/meta.bin", Kind::Meta, check(Kind::Meta, meta())),
        (
            "v2/history.bin",
            Kind::History,
            check(Kind::History, user().history),
        ),
        (
            "v2/tally.bin",
            Kind::Tally,
            check(Kind::Tally, tally_counts()),
        ),
        (
            "v2/sold.bin",
            Kind::SoldChunk,
            check(Kind::SoldChunk, sold_units()),
        ),
    ]
}

/// A user as version 3 stores it: a coupon with terms, and the units it
/// holds of the products it bought (as a plain list of pairs).
fn user_v3() -> User {
    let mut u = user();
    u.coupons[0].terms = coupon_terms();
    for (product, units) in [(2, 3), (1, 2), (700, 1), (2, 1), (1_000_000, 9)] {
        u.limited.add(ProductId(product), units);
    }
    u
}

fn coupon_terms() -> CouponTerms {
    CouponTerms {
        starts_at: Some(Timestamp(T.0 - 3_600_000)),
        min_order_amount: Some(Krw(20_000)),
        max_discount: Some(Krw(5_000)),
    }
}

/// A product as version 3 stores it: limited per user.
fn product_v3() -> Product {
    Product {
        max_per_user: Some(2),
        counts_per_user: true,
        ..product_v2()
    }
}

/// A campaign header as version 3 stores it: with its terms.
fn campaign_header_v3() -> CampaignHeader {
    CampaignHeader {
        terms: coupon_terms(),
        ..campaign_header()
    }
}

/// An order as version 3 stores it: partially refunded, line by line.
fn refunded_order() -> Order {
    Order {
        status: OrderStatus::PartiallyRefunded,
        refunds: Refunds::from_parts(
            Krw(10_800),
            vec![Refund {
                items: vec![RefundLine {
                    product_id: ProductId(1),
                    quantity: 1,
                }],
                amount: Krw(10_800),
                reason: Some("깨짐".into()),
                at: T.plus_ms(60_000),
            }],
        ),
        ..paid_order()
    }
}

/// The snapshot kinds whose layout changed in format version 3
/// (`snapshots/golden/v3/`): users with their counted units and their
/// coupons' terms, products limited per user, campaign headers with terms,
/// orders with their refunds; and a journal batch.
fn golden_snapshots_v3() -> Vec<(&'static str, Kind, Check)> {
    vec![
        (
            "v3/user.bin",
            Kind::User,
            Box::new(|bytes| {
                let got = legacy::user(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, user_v3().without_history(), "version 3 user");
                let units: Vec<(ProductId, u64)> = got.limited.iter().collect();
                assert_eq!(
                    units,
                    [(1, 2), (2, 4), (700, 1), (1_000_000, 9)].map(|(p, n)| (ProductId(p), n))
                );
            }),
        ),
        (
            "v3/product.bin",
            Kind::Product,
            Box::new(|bytes| {
                let got: Product = codec::decode(Kind::Product, bytes).unwrap();
                assert_eq!(got, product_v3(), "version 3 product");
            }),
        ),
        (
            "v3/campaign.bin",
            Kind::Campaign,
            Box::new(|bytes| {
                let got: CampaignHeader = codec::decode(Kind::Campaign, bytes).unwrap();
                assert_eq!(got, campaign_header_v3(), "version 3 campaign");
            }),
        ),
        (
            "v3/order.bin",
            Kind::Order,
            Box::new(|bytes| {
                let got = legacy::order(codec::open(bytes).unwrap()).unwrap();
                assert_eq!(got, refunded_order(), "version 3 order");
                // The order is still written in this layout, byte for byte.
                let again = codec::encode(Kind::Order, &got).unwrap();
                assert_eq!(
                    codec::open(&again).unwrap().payload,
                    codec::open(bytes).unwrap().payload,
                    "the order written again"
                );
            }),
        ),
    ]
}

/// A product as version 2 stores it: with the units it sold per day.
fn product_v2() -> Product {
    Product {
        recent_sales: RecentSales(vec![(T.day(), 2), (T.day() + 1, 1)]),
        ..product()
    }
}

/// [`campaign`] as version 2 stores it: a header; its issued set in chunks.
fn campaign_header() -> CampaignHeader {
    CampaignHeader {
        id: CouponId(1),
        name: "10% off".into(),
        discount: Discount::Percent { percent: 10 },
        quantity: 500,
        expires_at: Some(T.plus_ms(86_400_000)),
        issued_count: 3,
        terms: Default::default(),
    }
}

/// A chunk of an issued set: users 1, 4 and 9, and a full last word.
fn issued_words() -> Vec<u64> {
    vec![(1 << 1) | (1 << 4) | (1 << 9), 0, u64::MAX]
}

fn tally_counts() -> TallyCounts {
    TallyCounts {
        orders: 40,
        coupons_used: 2,
    }
}

/// A chunk of the archive's units sold, by product index.
fn sold_units() -> Vec<u64> {
    vec![5, 0, 12]
}

/// The tally in its version 1 layout (the serde shape of the version 1
/// type, field for field, as `store::legacy` reads it).
#[derive(Serialize, Deserialize)]
struct TallyV1 {
    orders: u64,
    sold: BTreeMap<ProductId, u64>,
    coupons: BTreeMap<UserCouponId, (UserId, OrderId)>,
}

fn tally_v1() -> TallyV1 {
    TallyV1 {
        orders: 40,
        sold: BTreeMap::from([(ProductId(1), 5), (ProductId(3), 12)]),
        coupons: BTreeMap::from([
            (UserCouponId(1), (UserId(2), OrderId(7))),
            (UserCouponId(4), (UserId(5), OrderId(9))),
        ]),
    }
}

/// [`tally_v1`] as read today: counts, and units sold by product index.
fn tally_v1_read() -> ArchiveTally {
    let mut tally = ArchiveTally {
        orders: 40,
        coupons_used: 2,
        ..ArchiveTally::default()
    };
    tally.add_sold(ProductId(1), 5);
    tally.add_sold(ProductId(3), 12);
    tally
}

/// A journal batch as one group commit stores it (frames back to back),
/// replayable from an empty store: a user buys with a coupon and the paid
/// order is delivered.
fn batch_records() -> Vec<Record> {
    let mut placed = order();
    placed.items.truncate(1);
    placed.total_amount = Krw(24_000);
    placed.discount_amount = Krw(2_400);
    placed.pay_amount = Krw(21_600);
    placed.id = OrderId(1);
    placed.user_coupon_id = Some(UserCouponId(1));
    let events = vec![
        Event::UserRegistered {
            user_id: UserId(1),
            name: "Kim Minji".into(),
        },
        Event::ProductCreated {
            product_id: ProductId(1),
            name: "머그컵".into(),
            price: Krw(12_000),
            stock: 10,
        },
        Event::CampaignCreated {
            coupon_id: CouponId(1),
            name: "10% off".into(),
            discount: Discount::Percent { percent: 10 },
            quantity: 5,
            expires_at: None,
        },
        Event::CouponIssued {
            coupon_id: CouponId(1),
            user_id: UserId(1),
            user_coupon_id: UserCouponId(1),
        },
        Event::BalanceCharged {
            user_id: UserId(1),
            amount: Krw(30_000),
        },
        Event::OrderPlaced {
            order: Box::new(placed),
            from_cart: false,
        },
        Event::OrderPaid {
            order_id: OrderId(1),
            user_id: UserId(1),
            amount: Krw(21_600),
        },
        Event::OutboxDelivered {
            order_ids: vec![OrderId(1)],
            sink_len: Some(400),
        },
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| Record::new(T.plus_ms(i as u64), e))
        .collect()
}

fn read(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("golden file {path:?}: {e}"))
}

fn assert_golden_header(name: &str, bytes: &[u8], kind: Kind, version: u8) {
    assert_eq!(&bytes[..2], b"CE", "{name}: magic");
    assert_eq!(
        bytes[2], version,
        "{name}: written with format version {version}"
    );
    assert!(FORMAT_VERSION >= version);
    assert_eq!(bytes[3], kind as u8, "{name}: kind");
}

/// Every committed record decodes to the record it was written from.
#[test]
fn golden_records_of_every_event_variant_still_decode() {
    let records = golden_records();
    let variants: BTreeSet<&str> = records
        .iter()
        .map(|(_, r)| variant_name(&r.event))
        .collect();
    assert_eq!(variants.len(), 15, "every event variant has golden files");
    for (name, expected) in records {
        let bytes = read(&name);
        assert_golden_header(&name, &bytes, Kind::Record, written_in(&expected.event));
        let got: Record = codec::decode(Kind::Record, &bytes)
            .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        assert_eq!(got, expected, "{name}");
    }
}

/// Every committed snapshot frame (user, product, campaign, order, key,
/// meta) decodes to the value it was written from.
#[test]
fn golden_snapshot_frames_still_decode() {
    for (name, kind, check) in golden_snapshots() {
        let bytes = read(name);
        assert_golden_header(name, &bytes, kind, GOLDEN_VERSION);
        check(&bytes);
    }
}

/// Every committed version 2 snapshot frame decodes to the value it was
/// written from, field for field.
#[test]
fn golden_snapshot_frames_of_format_version_2_still_decode() {
    for (name, kind, check) in golden_snapshots_v2() {
        let bytes = read(name);
        assert_golden_header(name, &bytes, kind, 2);
        check(&bytes);
    }
}

/// Every committed version 3 snapshot frame decodes to the value it was
/// written from.
#[test]
fn golden_snapshot_frames_of_format_version_3_still_decode() {
    for (name, kind, check) in golden_snapshots_v3() {
        let bytes = read(name);
        assert_golden_header(name, &bytes, kind, 3);
        check(&bytes);
    }
}

/// A committed journal batch decodes record by record and replays from an
/// empty store to the state it describes, invariants included.
#[test]
fn golden_journal_batch_still_decodes_and_replays() {
    replays_as_described("journal_batch.bin", GOLDEN_VERSION);
}

/// The same batch written in format version 2 does too.
#[test]
fn golden_journal_batch_of_format_version_2_still_decodes_and_replays() {
    replays_as_described("v2/journal_batch.bin", 2);
}

/// And written in format version 3.
#[test]
fn golden_journal_batch_of_format_version_3_still_decodes_and_replays() {
    replays_as_described("v3/journal_batch.bin", 3);
}

fn replays_as_described(name: &str, version: u8) {
    let bytes = read(name);
    for (i, frame) in frames(&bytes).into_iter().enumerate() {
        assert_golden_header(&format!("{name} frame {i}"), frame, Kind::Record, version);
    }
    let records: Vec<Record> = codec::decode_all(Kind::Record, &bytes).unwrap();
    assert_eq!(records, batch_records());
    let (world, report) = recover(Loaded {
        snapshot_seq: 0,
        snapshots: Vec::new(),
        batches: vec![(1, bytes)],
    })
    .unwrap();
    assert_eq!(report.records_replayed, 8);
    assert_eq!(world.users[0].balance, Krw(8_400));
    assert_eq!(world.products[0].sold, 2);
    assert_eq!(world.products[0].stock, 8);
    assert_eq!(world.orders[&OrderId(1)].status, OrderStatus::Paid);
    // OutboxDelivered is legacy and replays as nothing; the outbox's
    // state lives in a store of its own.
    assert!(world.meta.outbox.is_empty());
    assert_eq!(world.meta.sink_len, 0);
}

/// The frames of a batch, each with its header and payload.
fn frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (frame, rest) = codec::split_frame(bytes).expect("a frame");
        let len = codec::HEADER_LEN + frame.payload.len();
        out.push(&bytes[..len]);
        bytes = rest;
    }
    out
}

fn write_new(name: &str, bytes: &[u8]) {
    let path = golden_dir().join(name);
    if path.exists() {
        return; // Golden files are never rewritten.
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    eprintln!("wrote {path:?}");
}

fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    codec::encode(kind, value).unwrap()
}

/// Writes the golden files that do not exist yet (run once, by hand).
#[test]
#[ignore = "writes snapshots/golden; run by hand only to add files for new variants"]
fn generate_golden_files() {
    for (name, record) in golden_records() {
        write_new(&name, &encode(Kind::Record, &record));
    }
    // Version 1 layouts of products, campaigns and the meta are no longer
    // written: their files stay as they are.
    write_new("snapshots/user.bin", &encode(Kind::User, &user()));
    write_new("snapshots/order.bin", &encode(Kind::Order, &paid_order()));
    write_new("snapshots/key.bin", &encode(Kind::Key, &stored_key()));
    write_new(
        "snapshots/history.bin",
        &encode(Kind::History, &user().history),
    );
    let mut batch = Vec::new();
    for r in batch_records() {
        codec::encode_into(Kind::Record, &r, &mut batch).unwrap();
    }
    write_new("journal_batch.bin", &batch);
    if FORMAT_VERSION == 2 {
        generate_version_2_files(&batch);
    }
    if FORMAT_VERSION == 3 {
        generate_version_3_files(&batch);
    }
}

/// The version 3 files, written by a version 3 build.
fn generate_version_3_files(batch: &[u8]) {
    write_new(
        "v3/user.bin",
        &encode(Kind::User, &user_v3().without_history()),
    );
    write_new("v3/product.bin", &encode(Kind::Product, &product_v3()));
    write_new(
        "v3/campaign.bin",
        &encode(Kind::Campaign, &campaign_header_v3()),
    );
    write_new("v3/order.bin", &encode(Kind::Order, &refunded_order()));
    write_new("v3/journal_batch.bin", batch);
}

/// The version 2 files (written by the build that introduced version 2's
/// layouts) and the version 1 tally, written from its version 1 layout.
fn generate_version_2_files(batch: &[u8]) {
    write_new("v2/user.bin", &encode(Kind::User, &user()));
    write_new("v2/product.bin", &encode(Kind::Product, &product_v2()));
    write_new(
        "v2/campaign.bin",
        &encode(Kind::Campaign, &campaign_header()),
    );
    write_new("v2/issued.bin", &encode(Kind::IssuedChunk, &issued_words()));
    write_new("v2/order.bin", &encode(Kind::Order, &paid_order()));
    write_new("v2/key.bin", &encode(Kind::Key, &stored_key()));
    write_new("v2/meta.bin", &encode(Kind::Meta, &meta()));
    write_new("v2/history.bin", &encode(Kind::History, &user().history));
    write_new("v2/tally.bin", &encode(Kind::Tally, &tally_counts()));
    write_new("v2/sold.bin", &encode(Kind::SoldChunk, &sold_units()));
    write_new("v2/journal_batch.bin", batch);
    // The checksum covers the payload only: the header's version byte is
    // the one difference between a version 1 frame and a version 2 one.
    let mut tally = encode(Kind::Tally, &tally_v1());
    tally[2] = 1;
    write_new("snapshots/tally.bin", &tally);
}
