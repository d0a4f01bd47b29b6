//! `bench` runs every workload on the embedded engine and its invariant
//! check catches what it claims to catch. Small and short: speed lives in
//! the benchmark itself, not here.

use commerce_engine::bench::workload::{Workload, STOCK};
use commerce_engine::bench::{execute, BenchArgs, ClientsOn, SinkChoice, StoreChoice};
use commerce_engine::check::{Acknowledged, Expect, Units, Wallet};
use commerce_engine::domain::event::{Event, Record};
use commerce_engine::domain::ids::{OrderId, ProductId, UserId};
use commerce_engine::domain::money::Krw;
use commerce_engine::domain::order::{Order, OrderLine, OrderStatus};
use commerce_engine::domain::refund::Refunds;
use commerce_engine::domain::time::Timestamp;
use commerce_engine::domain::world::World;
use commerce_engine::store::writer::Step;

fn small(workload: Workload) -> BenchArgs {
    BenchArgs {
        users: Some(200),
        products: Some(if workload == Workload::HotProduct {
            1
        } else {
            10
        }),
        concurrency: 8,
        duration_secs: 0.3,
        warmup_secs: 0.1,
        ..BenchArgs::new(workload)
    }
}

#[test]
fn every_workload_runs_on_sled_and_passes_its_invariant_check() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    for workload in [
        Workload::Charge,
        Workload::OrderPay,
        Workload::HotProduct,
        Workload::CouponFlash,
        Workload::Mixed,
    ] {
        let mut args = small(workload);
        if workload == Workload::CouponFlash {
            // 200 users ask once each: a warm-up would use them all up.
            args.warmup_secs = 0.0;
        }
        let report = execute(&args).expect("the run completes");
        assert!(
            report.invariants.ok(),
            "{workload:?}: {:?}",
            report.invariants
        );
        assert_eq!(report.clients_on, ClientsOn::Engine, "the default embedded");
        assert!(report.total.ops > 0, "{workload:?} measured nothing");
        // Records were written in the window, so the writer spent time
        // writing them, and it is one thread: at most the whole window,
        // give or take the steps that straddle its ends.
        let journal = report
            .journal
            .as_ref()
            .expect("embedded runs report the journal");
        assert!(journal.batches > 0, "{workload:?}: {journal:?}");
        let w = &journal.writer_percent;
        assert_eq!(w.len(), Step::ALL.len(), "{workload:?}: {journal:?}");
        assert!(w["writing"] > 0.0, "{workload:?}: {journal:?}");
        assert!(w.values().all(|p| *p >= 0.0), "{workload:?}: {journal:?}");
        // The process's CPU by thread family: the writer is one of them,
        // named without any number, and nothing used less than nothing.
        let process = report.process.as_ref().expect("embedded runs report CPU");
        if cfg!(target_os = "linux") {
            let by = &process.cpu_us_per_op_by_thread;
            assert!(by.contains_key("journal-writer"), "{workload:?}: {by:?}");
            assert!(by
                .keys()
                .all(|f| !f.ends_with(|c: char| c.is_ascii_digit())));
            assert!(by.values().all(|us| *us >= 0.0), "{workload:?}: {by:?}");
        }
        // Only refusals the workload provokes on purpose are allowed.
        for code in report.errors.keys() {
            assert_eq!(
                code, "COUPON_ALREADY_ISSUED",
                "{workload:?}: {:?}",
                report.errors
            );
        }
    }
}

/// `--data-platform http`: the bench's own sink takes the engine's
/// batches, and the report says what was delivered and what was left; a
/// sink down for the whole run leaves every paid order in the backlog.
#[test]
fn the_benchs_http_sink_takes_every_paid_order_and_the_report_says_so() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let args = BenchArgs {
        data_platform: SinkChoice::Http,
        ..small(Workload::OrderPay)
    };
    let report = execute(&args).expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    let d = report
        .data_platform
        .expect("embedded runs report the data platform");
    assert_eq!(d.sink, "http");
    assert!(d.delivered_per_sec > 0.0 && d.added_per_sec > 0.0, "{d:?}");
    assert!(d.sink_events.is_some_and(|n| n > 0), "{d:?}");
    assert_eq!(d.sink_refused, Some(0));
    assert!(report.timeline.iter().all(|s| s.backlog.is_some()));

    let down = BenchArgs {
        data_platform_down_secs: Some(3_600.0),
        ..args
    };
    let report = execute(&down).expect("the run completes");
    let d = report.data_platform.expect("reported");
    assert_eq!(
        (d.delivered_per_sec, d.sink_events),
        (0.0, Some(0)),
        "{d:?}"
    );
    assert!(d.backlog_at_end > 0 && d.failures > 0, "{d:?}");
    assert!(d.sink_refused.is_some_and(|n| n > 0), "{d:?}");
    assert!(
        execute(&BenchArgs {
            data_platform: SinkChoice::File,
            data_platform_down_secs: Some(1.0),
            ..small(Workload::OrderPay)
        })
        .is_err(),
        "an outage needs the bench's http sink"
    );
}

#[test]
fn coupon_flash_stops_when_every_user_has_asked_once() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let args = BenchArgs {
        users: Some(300),
        duration_secs: 30.0,
        warmup_secs: 0.0,
        ..small(Workload::CouponFlash)
    };
    let report = execute(&args).expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    // Every user asked exactly once, so every issue succeeded, and no more.
    assert_eq!(report.total.ok, 300);
    assert_eq!(report.total.ops, 300);
}

#[test]
fn the_memory_store_gives_the_same_checks() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let args = BenchArgs {
        store: StoreChoice::Memory,
        ..small(Workload::OrderPay)
    };
    let report = execute(&args).expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    assert!(report.total.ok > 0);
}

#[test]
fn workers_on_their_own_threads_give_the_same_checks() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    for threads in [None, Some(2)] {
        let args = BenchArgs {
            clients_on: Some(ClientsOn::Own),
            client_threads: threads,
            ..small(Workload::HotProduct)
        };
        let report = execute(&args).expect("the run completes");
        assert_eq!(report.clients_on, ClientsOn::Own);
        assert!(report.invariants.ok(), "{:?}", report.invariants);
        assert!(report.total.ok > 0);
    }
    // --client-threads alone means their own runtime.
    let args = BenchArgs {
        client_threads: Some(1),
        ..small(Workload::Charge)
    };
    assert_eq!(execute(&args).expect("runs").clients_on, ClientsOn::Own);
}

#[test]
fn workers_on_the_engines_threads_need_the_embedded_engine() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let over_http = BenchArgs {
        url: Some("http://127.0.0.1:9".into()),
        clients_on: Some(ClientsOn::Engine),
        ..small(Workload::Charge)
    };
    let e = execute(&over_http).expect_err("no engine threads over HTTP");
    assert!(e.to_string().contains("--clients-on engine"), "{e}");
    let sized = BenchArgs {
        clients_on: Some(ClientsOn::Engine),
        client_threads: Some(2),
        ..small(Workload::Charge)
    };
    let e = execute(&sized).expect_err("--client-threads sizes the own runtime");
    assert!(e.to_string().contains("--client-threads"), "{e}");
}

#[test]
fn open_loop_sends_what_the_schedule_says() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // 2,000/s over a 0.5 s window is 1,000 due operations, whatever the latency.
    let args = BenchArgs {
        rate: Some(2_000.0),
        duration_secs: 0.5,
        warmup_secs: 0.0,
        ..small(Workload::Charge)
    };
    let report = execute(&args).expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    assert!(
        (990..=1_010).contains(&report.total.ops),
        "{} operations",
        report.total.ops
    );
}

/// A world with one user (charged 10,000), one product, and one paid order.
fn world_with_a_paid_order() -> World {
    let at = Timestamp(1_000);
    let order = Order {
        id: OrderId(1),
        user_id: UserId(1),
        status: OrderStatus::Pending,
        items: vec![OrderLine {
            product_id: ProductId(1),
            name: "p".into(),
            unit_price: Krw(1_000),
            quantity: 1,
        }],
        total_amount: Krw(1_000),
        discount_amount: Krw(0),
        pay_amount: Krw(1_000),
        user_coupon_id: None,
        created_at: at,
        expires_at: at.plus_ms(600_000),
        paid_at: None,
        refunds: Refunds::NONE,
    };
    let events = [
        Event::UserRegistered {
            user_id: UserId(1),
            name: "u".into(),
        },
        Event::BalanceCharged {
            user_id: UserId(1),
            amount: Krw(10_000),
        },
        Event::ProductCreated {
            product_id: ProductId(1),
            name: "p".into(),
            price: Krw(1_000),
            stock: STOCK,
        },
        Event::OrderPlaced {
            order: Box::new(order),
            from_cart: false,
        },
        Event::OrderPaid {
            order_id: OrderId(1),
            user_id: UserId(1),
            amount: Krw(1_000),
        },
    ];
    let mut world = World::default();
    for (i, e) in events.into_iter().enumerate() {
        world.apply(i as u64 + 1, &Record::new(at, e)).unwrap();
    }
    world
}

/// What that world's clients were told: the charge, the order placed and paid.
pub(crate) fn acknowledged_of_that_world() -> Acknowledged {
    let mut acked = Acknowledged::default();
    *acked.user(UserId(1)) = Wallet {
        charged: 10_000,
        paid: 1_000,
        refunded: 0,
    };
    *acked.product(ProductId(1)) = Units {
        stocked: STOCK,
        placed: 1,
        sold: 1,
        ..Units::default()
    };
    acked.order(OrderId(1), Expect::PAID);
    acked
}

#[test]
fn check_accepts_a_world_that_holds_every_acknowledgement() {
    // proves the check passes a world that holds exactly what was acknowledged
    let v = acknowledged_of_that_world().check_world(&world_with_a_paid_order());
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn check_reports_an_acknowledged_charge_that_is_missing() {
    // proves the balance rule: a charge acknowledged and not recovered is a violation
    let mut acked = acknowledged_of_that_world();
    acked.user(UserId(1)).charged += 100;
    let v = acked.check_world(&world_with_a_paid_order());
    assert!(v.iter().any(|m| m.contains("balance")), "{v:?}");
}

#[test]
fn check_reports_an_acknowledged_payment_that_did_not_survive() {
    // proves the order rule: an order acknowledged paid and not recovered paid is a violation
    let mut acked = acknowledged_of_that_world();
    acked.order(OrderId(2), Expect::PAID);
    let v = acked.check_world(&world_with_a_paid_order());
    assert!(v.iter().any(|m| m.contains("order 2")), "{v:?}");
}

#[test]
fn check_reports_broken_stock_conservation() {
    // proves the stock rule: a unit more in stock than acknowledged is a violation
    let mut world = world_with_a_paid_order();
    world.products[0].stock += 1;
    let v = acknowledged_of_that_world().check_world(&world);
    assert!(v.iter().any(|m| m.contains("product 1: stock")), "{v:?}");
}

#[test]
fn with_unknown_outcomes_more_than_acknowledged_is_accepted_but_less_is_not() {
    // proves "at least" with an unknown outcome: a sale with no answer is accepted, a sale acknowledged and missing is not
    let mut acked = acknowledged_of_that_world();
    acked.unknown = 1;
    acked.product(ProductId(1)).sold = 0;
    acked.orders.clear();
    let world = world_with_a_paid_order();
    assert_eq!(acked.check_world(&world), Vec::<String>::new());
    acked.product(ProductId(1)).sold = 2;
    assert!(!acked.check_world(&world).is_empty());
}

#[test]
fn check_reports_an_acknowledged_refund_that_did_not_survive() {
    // proves the refund checks: money (charges - payments + refunds), stock and the order's status each catch a refund the world lacks
    let mut acked = acknowledged_of_that_world();
    acked.user(UserId(1)).refunded = 1_000;
    acked.product(ProductId(1)).refunded = 1;
    acked.orders = vec![(OrderId(1), Expect::REFUNDED)];
    let v = acked.check_world(&world_with_a_paid_order());
    for what in ["balance", "product 1", "order 1"] {
        assert!(v.iter().any(|m| m.contains(what)), "{what}: {v:?}");
    }
}

#[test]
fn a_refund_whose_answer_never_came_may_be_recovered_paid() {
    // proves an unknown refund relaxes the order's status check: recovered paid is accepted
    let mut acked = acknowledged_of_that_world();
    acked.unknown = 1;
    acked.product(ProductId(1)).refund_unknown = 1;
    acked.orders = vec![(OrderId(1), Expect::PAID_OR_REFUNDED)];
    let v = acked.check_world(&world_with_a_paid_order());
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn mixed_refunds_paid_orders_and_its_check_covers_them() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // proves mixed's refund share: refunds succeed with a latency line of their own, and the recovered world matches money and stock with them
    let args = BenchArgs {
        duration_secs: 0.5,
        ..small(Workload::Mixed)
    };
    let report = execute(&args).expect("the run completes");
    assert!(report.invariants.ok(), "{:?}", report.invariants);
    let refund = report
        .kinds
        .iter()
        .find(|k| k.kind == "refund")
        .expect("a refund line in the report");
    assert!(refund.ok > 0, "{refund:?}");
    assert!(
        report.invariants.summary.contains("refunded"),
        "{}",
        report.invariants.summary
    );
}
