//! The in-memory index of the durable outbox: paid orders the data platform
//! has not accepted yet. The journal writer adds each paid order once its
//! record is durable (the payment record *is* the outbox entry); the
//! delivery task takes from here and journals `OutboxDelivered` when the
//! sink accepted them. A std mutex: critical sections are a few map
//! operations, never held across I/O or an await.

use crate::domain::ids::OrderId;
use crate::domain::order::Order;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct PendingOutbox {
    orders: Mutex<BTreeMap<OrderId, Order>>,
    pub notify: tokio::sync::Notify,
}

impl PendingOutbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<OrderId, Order>> {
        self.orders.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, order: Order) {
        self.lock().insert(order.id, order);
        self.notify.notify_one();
    }

    /// Up to `count_max` pending orders, oldest first.
    pub fn peek(&self, count_max: usize) -> Vec<Order> {
        self.lock().values().take(count_max).cloned().collect()
    }

    pub fn remove(&self, ids: &[OrderId]) {
        let mut map = self.lock();
        for id in ids {
            map.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
