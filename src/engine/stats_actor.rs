//! The best-seller ranking: paid units per day over a rolling window,
//! recomputed on a schedule and on demand.

use crate::domain::ids::ProductId;
use crate::domain::money::Krw;
use crate::domain::stats::{SalesWindow, TopProducts};
use crate::domain::time::Timestamp;
use crate::engine::clock::Clock;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

pub struct StatsActor {
    sales: SalesWindow,
    ranking: TopProducts,
    clock: Arc<dyn Clock>,
    interval_ms: u64,
}

impl StatsActor {
    pub fn new(sales: SalesWindow, clock: Arc<dyn Clock>, interval_ms: u64) -> StatsActor {
        let ranking = sales.top(clock.now());
        StatsActor {
            sales,
            ranking,
            clock,
            interval_ms,
        }
    }

    fn refresh(&mut self) -> TopProducts {
        let now = self.clock.now();
        self.sales.prune(now);
        self.ranking = self.sales.top(now);
        self.ranking.clone()
    }
}

impl Actor for StatsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(self.interval_ms.max(1)), |act, _| {
            act.refresh();
        });
    }
}

/// Lines of an order just paid.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sold {
    pub at: Timestamp,
    pub lines: Vec<(ProductId, String, Krw, u64)>,
}

impl Handler<Sold> for StatsActor {
    type Result = ();

    fn handle(&mut self, msg: Sold, _: &mut Context<Self>) {
        for (id, name, price, quantity) in &msg.lines {
            self.sales.record(msg.at, *id, name, *price, *quantity);
        }
    }
}

/// Units of an order paid at `paid_at` refunded: they leave the count.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsold {
    pub paid_at: Timestamp,
    pub lines: Vec<(ProductId, u64)>,
}

impl Handler<Unsold> for StatsActor {
    type Result = ();

    fn handle(&mut self, msg: Unsold, _: &mut Context<Self>) {
        for (id, quantity) in msg.lines {
            self.sales.unrecord(msg.paid_at, id, quantity);
        }
    }
}

/// The ranking as of the last refresh.
#[derive(Message)]
#[rtype(result = "TopProducts")]
pub struct Top;

impl Handler<Top> for StatsActor {
    type Result = MessageResult<Top>;

    fn handle(&mut self, _: Top, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.ranking.clone())
    }
}

/// Recompute now.
#[derive(Message)]
#[rtype(result = "TopProducts")]
pub struct Refresh;

impl Handler<Refresh> for StatsActor {
    type Result = MessageResult<Refresh>;

    fn handle(&mut self, _: Refresh, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.refresh())
    }
}
