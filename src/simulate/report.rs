//! What `simulate` reports: counts of what happened, and the violations.

use crate::domain::ids::ProductId;
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct OrderCounts {
    pub placed: u64,
    pub rejected_out_of_stock: u64,
    /// Refused for a product's per-user limit (each checked against the ledger).
    pub rejected_over_limit: u64,
    pub rejected_other: u64,
    pub paid: u64,
    pub failed_insufficient_balance: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// Refunds answered 200, and refused (a concurrent one took what was left).
    pub refunds: u64,
    pub refunds_refused: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CouponCounts {
    pub quantity: u64,
    pub users_who_asked: u64,
    pub issued: u64,
    pub sold_out: u64,
    pub already_issued: u64,
    pub used_in_paid_orders: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RankedProduct {
    pub rank: u32,
    pub product_id: ProductId,
    pub sold_quantity: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SimulationReport {
    pub seed: u64,
    pub users: usize,
    pub products: usize,
    pub stock_per_product: u64,
    pub orders: OrderCounts,
    pub coupons: CouponCounts,
    pub units_stocked: u64,
    pub units_sold: u64,
    pub revenue_krw: u64,
    pub discounts_krw: u64,
    pub refunded_krw: u64,
    pub top5: Vec<RankedProduct>,
    pub outbox_pending: u64,
    pub delivered_events: u64,
    pub delivered_duplicates: u64,
    pub recovered_records: u64,
    pub violations: Vec<String>,
}

impl SimulationReport {
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let o = &self.orders;
        let c = &self.coupons;
        let _ = writeln!(
            s,
            "flash sale, seed {}: {} users, {} products x {} units",
            self.seed, self.users, self.products, self.stock_per_product
        );
        let _ = writeln!(
            s,
            "orders: {} placed ({} out of stock, {} over a per-user limit, {} other refusals); {} paid, {} failed (balance), {} cancelled, {} expired",
            o.placed, o.rejected_out_of_stock, o.rejected_over_limit, o.rejected_other, o.paid,
            o.failed_insufficient_balance, o.cancelled, o.expired
        );
        let _ = writeln!(
            s,
            "refunds: {} made ({} KRW), {} refused (a concurrent refund took what was left)",
            o.refunds, self.refunded_krw, o.refunds_refused
        );
        let _ = writeln!(
            s,
            "coupons: {} issued of {} to {} users who asked ({} sold out, {} already issued); {} used in paid orders",
            c.issued, c.quantity, c.users_who_asked, c.sold_out, c.already_issued, c.used_in_paid_orders
        );
        let _ = writeln!(
            s,
            "stock: {} of {} units sold; revenue {} KRW after {} KRW of discounts",
            self.units_sold, self.units_stocked, self.revenue_krw, self.discounts_krw
        );
        let top: Vec<String> = self
            .top5
            .iter()
            .map(|r| {
                format!(
                    "#{} product {} ({} sold)",
                    r.rank, r.product_id, r.sold_quantity
                )
            })
            .collect();
        let _ = writeln!(s, "top 5: {}", top.join(", "));
        let _ = writeln!(
            s,
            "data platform: {} events delivered ({} duplicates), {} left in the outbox",
            self.delivered_events, self.delivered_duplicates, self.outbox_pending
        );
        if self.violations.is_empty() {
            let _ = writeln!(
                s,
                "invariants: ok (recovered from disk, {} records replayed; every expectation holds)",
                self.recovered_records
            );
        } else {
            let _ = writeln!(s, "invariants: {} VIOLATION(S)", self.violations.len());
            for v in self.violations.iter().take(20) {
                let _ = writeln!(s, "  - {v}");
            }
        }
        s
    }
}
