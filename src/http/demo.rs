//! The demo catalogue of `snapshots/demo/catalogue.json`, embedded in the
//! binary: a new data dir is seeded with it unless `serve --empty`.
//!
//! Seeding goes through the engine's own use cases (create, charge), so
//! every limit and every journal record is the same as for a client's
//! request. Each call carries an idempotency key named after its line of
//! the catalogue.

use crate::domain::coupon::Discount;
use crate::domain::money::Krw;
use crate::domain::time::MS_PER_DAY;
use crate::engine::{Engine, Error, IdempotencyKey, NewCoupon};
use serde::Deserialize;

/// The catalogue, as shipped.
pub const CATALOGUE_JSON: &str = include_str!("../../snapshots/demo/catalogue.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub products: Vec<DemoProduct>,
    pub coupons: Vec<DemoCoupon>,
    pub users: Vec<DemoUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoProduct {
    pub name: String,
    pub price: u64,
    pub stock: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoCoupon {
    pub name: String,
    pub discount: Discount,
    pub quantity: u64,
    /// Days from seeding until the coupons expire; none: never.
    #[serde(default)]
    pub expires_in_days: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUser {
    pub name: String,
    pub balance: u64,
}

/// What a seed created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub products: usize,
    pub coupons: usize,
    pub users: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the demo catalogue is malformed: {0}")]
    Catalogue(#[from] serde_json::Error),
    #[error("the engine refused the demo catalogue: {0}")]
    Engine(#[from] Error),
}

pub fn catalogue() -> Result<Catalogue, serde_json::Error> {
    serde_json::from_str(CATALOGUE_JSON)
}

/// True for an engine that holds nothing yet (a new data dir).
pub fn is_new(engine: &Engine) -> bool {
    let m = engine.metrics();
    m.users == 0 && m.products == 0 && m.campaigns == 0
}

fn key(name: String) -> Result<Option<IdempotencyKey>, Error> {
    IdempotencyKey::new(name).map(Some)
}

/// Creates everything of the catalogue in `engine`.
pub async fn seed(engine: &Engine) -> Result<Seeded, SeedError> {
    let catalogue = catalogue()?;
    for (i, p) in catalogue.products.iter().enumerate() {
        let k = key(format!("demo-seed:product:{i}"))?;
        engine
            .create_product(&p.name, Krw(p.price), p.stock, k)
            .await?;
    }
    for (i, c) in catalogue.coupons.iter().enumerate() {
        let expires_at = c
            .expires_in_days
            .map(|days| engine.now().plus_ms(days.saturating_mul(MS_PER_DAY)));
        let new = NewCoupon {
            name: c.name.clone(),
            discount: c.discount,
            quantity: c.quantity,
            expires_at,
            terms: Default::default(),
        };
        engine
            .create_coupon(new, key(format!("demo-seed:coupon:{i}"))?)
            .await?;
    }
    let charge_max = engine.limits().charge_krw_max.0.max(1);
    for (i, u) in catalogue.users.iter().enumerate() {
        let user = engine
            .create_user(&u.name, key(format!("demo-seed:user:{i}"))?)
            .await?;
        let (mut left, mut part) = (u.balance, 0);
        while left > 0 {
            let amount = left.min(charge_max);
            let k = key(format!("demo-seed:user:{i}:charge:{part}"))?;
            engine.charge(user.id, Krw(amount), k).await?;
            left -= amount;
            part += 1;
        }
    }
    Ok(Seeded {
        products: catalogue.products.len(),
        coupons: catalogue.coupons.len(),
        users: catalogue.users.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::Limits;

    #[test]
    fn embedded_catalogue_parses_and_respects_the_limits() {
        // proves the shipped catalogue can seed an engine with API.md's limits
        let c = catalogue().expect("catalogue parses");
        let l = Limits::API;
        assert!(c.products.len() >= 10);
        assert!(!c.coupons.is_empty() && !c.users.is_empty());
        for p in &c.products {
            assert!((1..=l.name_chars_max).contains(&p.name.chars().count()));
            assert!((l.price_krw_min.0..=l.price_krw_max.0).contains(&p.price));
            assert!(p.stock <= l.stock_count_max);
        }
        for cp in &c.coupons {
            assert!(cp.discount.validate(&l).is_ok(), "{}", cp.name);
            assert!((1..=l.coupon_quantity_max).contains(&cp.quantity));
        }
        for u in &c.users {
            assert!(u.balance <= l.balance_krw_max.0);
        }
    }
}
