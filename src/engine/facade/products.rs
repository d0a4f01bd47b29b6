//! [`Engine`]: products, stock and the top products.

use super::{Engine, PageRequest};
use crate::domain::ids::ProductId;
use crate::domain::money::Krw;
use crate::domain::rejection::Rejection;
use crate::domain::stats::TopProducts;
use crate::domain::views::{Page, ProductView};
use crate::engine::error::Result;
use crate::engine::idempotency::IdempotencyKey;
use crate::engine::keyed_request::KeyedRequest;
use crate::engine::product_actor::{ProductRef, Restock};
use crate::engine::stats_actor::{Refresh, Top};

impl Engine {
    pub async fn create_product(
        &self,
        name: &str,
        price: Krw,
        stock: u64,
        key: Option<IdempotencyKey>,
    ) -> Result<ProductView> {
        self.create_limited_product(name, price, stock, None, key)
            .await
    }

    pub async fn product(&self, id: ProductId) -> Result<ProductView> {
        let products = &self.inner.registry.products;
        match products.with(id.0, ProductRef::published) {
            None => Err(Rejection::ProductNotFound(id).into()),
            Some(Some(view)) => Ok(view),
            // News in flight: ask the actor, behind it.
            Some(None) => Ok(self.product_ref(id)?.view().await?),
        }
    }

    /// Products by id; the cursor is the last id of the page.
    pub async fn products(&self, page: PageRequest) -> Result<Page<ProductView>> {
        let first = page.after.map_or(1, |a| a.saturating_add(1));
        let products = self.inner.registry.products.range(first, page.limit + 1);
        let more = products.len() > page.limit;
        let reads = products
            .iter()
            .take(page.limit)
            .map(|(_, product)| product.view());
        let items = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more {
            items.last().map(|p| p.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub async fn restock(
        &self,
        id: ProductId,
        quantity: u64,
        key: Option<IdempotencyKey>,
    ) -> Result<ProductView> {
        let addr = self.product_ref(id)?.addr;
        let request = KeyedRequest::Restock {
            product: id,
            quantity,
        };
        self.keyed(request.under(key), move |engine, tag| async move {
            addr.send(Restock {
                quantity,
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
    }

    /// The ranking as of the last refresh.
    pub async fn top_products(&self) -> Result<TopProducts> {
        Ok(self.named_now(self.inner.stats.send(Top).await?))
    }

    /// Recomputes the ranking now.
    pub async fn refresh_stats(&self) -> Result<TopProducts> {
        Ok(self.named_now(self.inner.stats.send(Refresh).await?))
    }
}
