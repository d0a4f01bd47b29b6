//! [`Engine`]: users and their balance.

use super::{blocking, check_name, Engine, PageRequest};
use crate::domain::ids::UserId;
use crate::domain::money::Krw;
use crate::domain::user::{BalanceEntry, HISTORY_CHUNK};
use crate::domain::views::{BalanceView, Page, UserView};
use crate::engine::directory::CreateUser;
use crate::engine::error::{Error, Result};
use crate::engine::idempotency::IdempotencyKey;
use crate::engine::keyed_request::KeyedRequest;
use crate::engine::user_actor::Charge;
use crate::store::StorageError;

impl Engine {
    pub async fn create_user(&self, name: &str, key: Option<IdempotencyKey>) -> Result<UserView> {
        let name = check_name("name", name, &self.inner.limits)?;
        let request = KeyedRequest::CreateUser { name: &name };
        self.keyed(request.under(key), move |engine, tag| async move {
            engine
                .inner
                .directory
                .send(CreateUser {
                    name,
                    at: engine.now(),
                    tag,
                })
                .await?
        })
        .await
    }

    pub async fn user(&self, id: UserId) -> Result<UserView> {
        self.read_user(id, |u| UserView::from(u)).await
    }

    pub async fn balance(&self, id: UserId) -> Result<BalanceView> {
        self.read_user(id, |u| BalanceView {
            user_id: u.id,
            balance: u.balance,
        })
        .await
    }

    pub async fn charge(
        &self,
        id: UserId,
        amount: Krw,
        key: Option<IdempotencyKey>,
    ) -> Result<BalanceView> {
        let addr = self.user_addr(id)?;
        let request = KeyedRequest::Charge { user: id, amount };
        self.keyed(request.under(key), move |engine, tag| async move {
            addr.send(Charge {
                amount,
                at: engine.now(),
                tag,
            })
            .await?
        })
        .await
    }

    /// Balance history, newest first; the cursor is an entry's `seq`.
    /// The newest entries are in the user actor, older ones in the archive.
    pub async fn history(&self, id: UserId, page: PageRequest) -> Result<Page<BalanceEntry>> {
        let (upto, mut items) = self
            .read_user(id, move |u| {
                let len = u.history_len();
                // Entries with seq <= upto, newest first.
                let upto = page.after.map_or(len, |a| a.saturating_sub(1).min(len));
                let kept = upto.saturating_sub(u.history_base) as usize;
                let items: Vec<BalanceEntry> = u.history[..kept]
                    .iter()
                    .rev()
                    .take(page.limit)
                    .cloned()
                    .collect();
                (upto, items)
            })
            .await?;
        let mut older = upto - items.len() as u64;
        while items.len() < page.limit && older > 0 {
            let chunk = (older - 1) / HISTORY_CHUNK as u64;
            let archive = self.archive()?;
            let entries = blocking(move || archive.history_chunk(id, chunk))
                .await?
                .ok_or_else(|| {
                    Error::Storage(StorageError::Corrupt(format!(
                        "history chunk {chunk} of user {id} is not in the archive"
                    )))
                })?;
            items.extend(
                entries
                    .into_iter()
                    .rev()
                    .filter(|e| e.seq <= older)
                    .take(page.limit - items.len()),
            );
            older = chunk * HISTORY_CHUNK as u64;
        }
        let next = match items.last() {
            Some(last) if last.seq > 1 && items.len() == page.limit => Some(last.seq.to_string()),
            _ => None,
        };
        Ok(Page { items, next })
    }
}
