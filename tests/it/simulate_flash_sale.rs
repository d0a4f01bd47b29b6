//! `simulate` runs its flash sale to the end, and its checks hold and bite.

use commerce_engine::domain::ids::ProductId;
use commerce_engine::simulate::{check_ranking, execute, RankedProduct, SimulateArgs};
use std::collections::BTreeMap;

#[test]
fn a_seeded_flash_sale_passes_every_check() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let args = SimulateArgs {
        users: 300,
        products: 8,
        stock: 10,
        coupon_quantity: 30,
        ..SimulateArgs::default()
    };
    let r = execute(&args).expect("the scenario runs");
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let c = &r.coupons;
    assert_eq!(c.issued, c.quantity.min(c.users_who_asked));
    let o = &r.orders;
    assert!(o.placed > 0);
    // Every placed order ended one way or another: nothing is left pending.
    assert_eq!(
        o.paid + o.failed_insufficient_balance + o.cancelled + o.expired,
        o.placed
    );
    assert!(r.units_sold <= r.units_stocked);
    // An event per paid order and one per refund.
    assert!(o.refunds > 0, "the sale refunds some orders");
    assert_eq!(r.delivered_events, o.paid + o.refunds);
}

#[test]
fn when_coupons_outnumber_askers_everyone_who_asked_gets_one() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let args = SimulateArgs {
        users: 100,
        products: 4,
        coupon_quantity: 10_000,
        seed: 7,
        ..SimulateArgs::default()
    };
    let r = execute(&args).expect("the scenario runs");
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.coupons.issued, r.coupons.users_who_asked);
    assert_eq!(r.coupons.sold_out, 0);
}

#[test]
fn ranking_check_wants_most_units_first_and_ties_by_lower_id() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
    let sold: BTreeMap<ProductId, u64> = [(ProductId(3), 5), (ProductId(1), 5), (ProductId(2), 9)]
        .into_iter()
        .collect();
    let ranked = |ids: &[(u64, u64)]| -> Vec<RankedProduct> {
        ids.iter()
            .enumerate()
            .map(|(i, (p, n))| RankedProduct {
                rank: i as u32 + 1,
                product_id: ProductId(*p),
                sold_quantity: *n,
            })
            .collect()
    };
    assert!(check_ranking(&ranked(&[(2, 9), (1, 5), (3, 5)]), &sold).is_empty());
    assert!(!check_ranking(&ranked(&[(2, 9), (3, 5), (1, 5)]), &sold).is_empty());
    assert!(!check_ranking(&ranked(&[(2, 9), (1, 5)]), &sold).is_empty());
}
