//! Products with per-user limits, and changes of a product's name, price
//! and limit (`PATCH /api/v1/products/{id}`).
//!
//! A product's name and price reach every reader through its shelf (see
//! [`crate::engine::product_actor`]), replaced once an update is durable:
//! orders take them from the product when they reserve it, so a new price
//! applies to orders placed after it. Carts keep the name and price a line
//! was set with (their stored layout); every cart the engine answers shows
//! each line's product as published now instead, so a cart never shows a
//! stale price, and no update has to visit the carts that hold the product.
//! The ranking shows current names and prices the same way.

use super::{check_name, Engine};
use crate::domain::ids::{ProductId, UserId};
use crate::domain::money::Krw;
use crate::domain::product::{check_max_per_user, check_price, ProductPatch};
use crate::domain::stats::TopProducts;
use crate::domain::views::{CartView, ProductView};
use crate::engine::directory::CreateProduct;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::IdempotencyKey;
use crate::engine::keyed_request::KeyedRequest;
use crate::engine::product_actor::{ProductRef, Update};

impl Engine {
    /// Creates a product, with an optional per-user limit (1..=1,000 units).
    pub async fn create_limited_product(
        &self,
        name: &str,
        price: Krw,
        stock: u64,
        max_per_user: Option<u64>,
        key: Option<IdempotencyKey>,
    ) -> Result<ProductView> {
        let limits = &self.inner.limits;
        let name = check_name("name", name, limits)?;
        check_price(price, limits)?;
        if stock > limits.stock_count_max {
            return Err(Error::invalid(format!(
                "stock must be between 0 and {}",
                limits.stock_count_max
            )));
        }
        if let Some(max) = max_per_user {
            check_max_per_user(max, limits)?;
        }
        let request = KeyedRequest::CreateProduct {
            name: &name,
            price,
            stock,
            max_per_user,
        };
        self.keyed(request.under(key), move |engine, tag| async move {
            engine
                .inner
                .directory
                .send(CreateProduct {
                    name,
                    price,
                    stock,
                    max_per_user,
                    at: engine.now(),
                    tag,
                })
                .await?
        })
        .await
    }

    /// Changes a product's name, price or limit; absent fields stay.
    pub async fn update_product(
        &self,
        id: ProductId,
        patch: ProductPatch,
        key: Option<IdempotencyKey>,
    ) -> Result<ProductView> {
        let limits = &self.inner.limits;
        if let Some(name) = &patch.name {
            check_name("name", name, limits)?;
        }
        let patch = patch.validate(limits)?;
        let addr = self.product_ref(id)?.addr;
        let keyed = KeyedRequest::UpdateProduct {
            product: id,
            patch: &patch,
        }
        .under(key);
        self.keyed(keyed, move |engine, tag| async move {
            addr.send(Update {
                patch,
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
    }

    /// Units of `product` that `user` holds toward its per-user limit
    /// (orders being placed included).
    pub async fn units_held(&self, user: UserId, product: ProductId) -> Result<u64> {
        self.read_user(user, move |u| u.units_held(product)).await
    }

    /// The cart with each line's name and price as its product has them now.
    pub(crate) fn priced_now(&self, mut cart: CartView) -> CartView {
        let products = &self.inner.registry.products;
        for item in &mut cart.items {
            if let Some(now) = products.with(item.product_id.0, ProductRef::identity) {
                item.name = now.name;
                item.price = now.price;
                // price ≤ 1e8 and quantity ≤ 1e3: cannot overflow u64.
                item.subtotal = now
                    .price
                    .checked_mul(item.quantity)
                    .unwrap_or(Krw(u64::MAX));
            }
        }
        cart.total = cart.items.iter().fold(Krw::ZERO, |t, i| {
            t.checked_add(i.subtotal).unwrap_or(Krw(u64::MAX))
        });
        cart
    }

    /// The ranking with each product's name and price as they are now.
    pub(crate) fn named_now(&self, mut top: TopProducts) -> TopProducts {
        let products = &self.inner.registry.products;
        for item in &mut top.items {
            if let Some(now) = products.with(item.product_id.0, ProductRef::identity) {
                item.name = now.name;
                item.price = now.price;
            }
        }
        top
    }
}
