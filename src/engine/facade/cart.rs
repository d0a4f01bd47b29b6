//! [`Engine`]: a user's cart.

use super::Engine;
use crate::domain::ids::{ProductId, UserId};
use crate::domain::rejection::Rejection;
use crate::domain::user::{CartLine, User};
use crate::domain::views::{CartView, ProductView};
use crate::engine::actor::Read;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::IdempotencyKey;
use crate::engine::keyed_request::KeyedRequest;
use crate::engine::user_actor::{CartChange, ChangeCart};

impl Engine {
    pub async fn cart(&self, user_id: UserId) -> Result<CartView> {
        let cart = self.read_user(user_id, |u| CartView::from(u)).await?;
        Ok(self.priced_now(cart))
    }

    /// Adds a line, or sets the quantity of a product already in the cart.
    /// Refused when the product's stock is below `quantity`; reserves nothing.
    pub async fn set_cart_item(
        &self,
        user_id: UserId,
        product_id: ProductId,
        quantity: u64,
        key: Option<IdempotencyKey>,
    ) -> Result<CartView> {
        let user = self.user_addr(user_id)?;
        let product = self.product_ref(product_id)?;
        let limits = &self.inner.limits;
        if quantity == 0 || quantity > limits.line_quantity_max {
            return Err(Error::invalid(format!(
                "quantity must be between 1 and {}",
                limits.line_quantity_max
            )));
        }
        let request = KeyedRequest::SetCartItem {
            user: user_id,
            product: product_id,
            quantity,
        };
        self.keyed(request.under(key), move |engine, tag| async move {
            let ProductView {
                name,
                price,
                stock: available,
                ..
            } = product.view().await?;
            if available < quantity {
                return Err(Rejection::OutOfStock {
                    product_id,
                    available,
                    requested: quantity,
                }
                .into());
            }
            let line = CartLine {
                product_id,
                name,
                price,
                quantity,
            };
            user.send(ChangeCart {
                change: CartChange::Set(line),
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
        .map(|cart| self.priced_now(cart))
    }

    pub async fn remove_cart_item(
        &self,
        user_id: UserId,
        product_id: ProductId,
    ) -> Result<CartView> {
        let user = self.user_addr(user_id)?;
        let in_cart = user
            .send(Read::new(move |u: &User| {
                u.cart.iter().any(|l| l.product_id == product_id)
            }))
            .await?;
        if !in_cart {
            // Nothing to remove: answer the cart as it is (DELETE is idempotent).
            self.product_ref(product_id)?;
            return self.cart(user_id).await;
        }
        let cart = user
            .send(ChangeCart {
                change: CartChange::Remove(product_id),
                at: self.now(),
                tag: None,
            })
            .await??;
        Ok(self.priced_now(cart))
    }
}
