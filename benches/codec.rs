//! Codec benchmarks: what one record costs to frame (bincode, header,
//! CRC-32, the verify-after-build assertion) and to read back.
//!
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`

use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderLine, OrderStatus};
use commerce_engine::domain::refund::Refunds;
use commerce_engine::domain::time::Timestamp;
use commerce_engine::store::codec::{self, Kind};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const T: Timestamp = Timestamp(1_795_132_800_000);
const BATCH: usize = 256;

/// A typical placed order: two lines, no coupon.
fn order_placed(id: u64) -> Record {
    let items = vec![
        OrderLine {
            product_id: ProductId(17),
            name: "ceramic mug".into(),
            unit_price: Krw(12_000),
            quantity: 2,
        },
        OrderLine {
            product_id: ProductId(42),
            name: "drip coffee set".into(),
            unit_price: Krw(25_000),
            quantity: 1,
        },
    ];
    Record::new(
        T,
        Event::OrderPlaced {
            order: Box::new(Order {
                id: OrderId(id),
                user_id: UserId(id % 10_000 + 1),
                status: OrderStatus::Pending,
                items,
                total_amount: Krw(49_000),
                discount_amount: Krw(0),
                pay_amount: Krw(49_000),
                user_coupon_id: None,
                created_at: T,
                expires_at: T.plus_ms(600_000),
                paid_at: None,
                refunds: Refunds::NONE,
            }),
            from_cart: false,
        },
    )
}

fn one_record(c: &mut Criterion) {
    let record = order_placed(1);
    let bytes = codec::encode(Kind::Record, &record).expect("encodes");
    let mut g = c.benchmark_group("codec/order_placed");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut out = Vec::with_capacity(1024);
    g.bench_function("encode_into", |b| {
        b.iter(|| {
            out.clear();
            codec::encode_into(Kind::Record, black_box(&record), &mut out).expect("encodes")
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| codec::decode::<Record>(Kind::Record, black_box(&bytes)).expect("decodes"))
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let records: Vec<Record> = (1..=BATCH as u64).map(order_placed).collect();
    let mut frames = Vec::new();
    for r in &records {
        codec::encode_into(Kind::Record, r, &mut frames).expect("encodes");
    }
    let mut g = c.benchmark_group(format!("codec/batch_of_{BATCH}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut out = Vec::with_capacity(frames.len());
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for r in &records {
                codec::encode_into(Kind::Record, black_box(r), &mut out).expect("encodes");
            }
        })
    });
    g.bench_function("decode_all", |b| {
        b.iter(|| codec::decode_all::<Record>(Kind::Record, black_box(&frames)).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, one_record, batch);
criterion_main!(benches);
