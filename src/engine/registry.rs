//! Where entity actors live: addresses by id, and the Arbiters they run on.
//!
//! Ids are dense from 1, so each kind is a vector indexed by `id - 1`. The
//! directory actor is the only writer; every request reads. The lock guards
//! addresses (and, for products, the reference to the shelf each product's
//! actor publishes), never domain state (that stays inside the actors).

use crate::engine::campaign_actor::CampaignActor;
use crate::engine::product_actor::ProductRef;
use crate::engine::user_actor::UserActor;
use actix::{Addr, ArbiterHandle};
use std::sync::RwLock;

pub struct Registry {
    pub users: Slots<Addr<UserActor>>,
    pub products: Slots<ProductRef>,
    pub campaigns: Slots<Addr<CampaignActor>>,
    arbiters: Vec<ArbiterHandle>,
}

pub struct Slots<A: Clone> {
    addrs: RwLock<Vec<A>>,
}

impl<A: Clone> Slots<A> {
    fn new(addrs: Vec<A>) -> Self {
        Slots {
            addrs: RwLock::new(addrs),
        }
    }

    pub fn get(&self, id: u64) -> Option<A> {
        self.with(id, A::clone)
    }

    /// `f` of the entry of `id`, without cloning it.
    pub fn with<R>(&self, id: u64, f: impl FnOnce(&A) -> R) -> Option<R> {
        let addrs = self.addrs.read().unwrap_or_else(|e| e.into_inner());
        addrs.get((id as usize).wrapping_sub(1)).map(f)
    }

    pub fn len(&self) -> usize {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Addresses of ids `first..first + count` that exist.
    pub fn range(&self, first: u64, count: usize) -> Vec<(u64, A)> {
        let addrs = self.addrs.read().unwrap_or_else(|e| e.into_inner());
        let start = (first.max(1) - 1) as usize;
        addrs
            .iter()
            .enumerate()
            .skip(start)
            .take(count)
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect()
    }

    /// Registers the actor of id `len + 1`.
    pub fn push(&self, id: u64, addr: A) {
        let mut addrs = self.addrs.write().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            addrs.len() as u64 + 1,
            id,
            "entities are registered in id order"
        );
        addrs.push(addr);
    }
}

impl Registry {
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        users: Vec<Addr<UserActor>>,
        products: Vec<ProductRef>,
        campaigns: Vec<Addr<CampaignActor>>,
    ) -> Registry {
        Registry {
            users: Slots::new(users),
            products: Slots::new(products),
            campaigns: Slots::new(campaigns),
            arbiters,
        }
    }

    /// The Arbiter an entity of this id runs on: spread by id.
    pub fn arbiter_for(&self, id: u64) -> &ArbiterHandle {
        &self.arbiters[(id as usize) % self.arbiters.len()]
    }

    pub fn arbiters(&self) -> &[ArbiterHandle] {
        &self.arbiters
    }
}
