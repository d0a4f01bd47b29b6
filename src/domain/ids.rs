//! Typed ids. Every id is a positive u64 assigned by the engine, from 1.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map keyed by ids, hashed by [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A hash set of ids, hashed by [`IdHasher`].
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Hashes ids with one folded multiply (the full 128-bit product of the
/// word and an odd constant, its halves xored: the core of foldhash and
/// ahash) instead of std's SipHash, which the hot maps paid for on every
/// record. Both ends of the result are well mixed: a table takes its bucket
/// from the low bits and its tag from the top seven.
///
/// Only for keys the engine assigns (ids count up from 1): a client can
/// name an id but never make the engine store one of its choosing, so no
/// request can pile keys into one bucket. Strings (idempotency keys) stay on
/// SipHash.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * u128::from(Self::K);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// Index into a dense, 1-based id space (`id - 1`).
            pub fn index(self) -> usize {
                (self.0 as usize).wrapping_sub(1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user (wallet, coupons, cart).
    UserId
);
id_type!(
    /// A product with stock.
    ProductId
);
id_type!(
    /// A coupon campaign.
    CouponId
);
id_type!(
    /// One coupon held by one user.
    UserCouponId
);
id_type!(
    /// An order.
    OrderId
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(v: T) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(v)
    }

    #[test]
    fn equal_ids_hash_equal_and_neighbours_apart() {
        assert_eq!(hash(OrderId(42)), hash(OrderId(42)));
        assert_ne!(hash(OrderId(42)), hash(OrderId(43)));
        assert_ne!(hash(UserId(1)), hash(UserId(2)));
    }

    /// A coordinator shard holds ids that share their low bits (every
    /// second, fourth, ...): they must still spread over a table's buckets,
    /// which are picked by the hash's low bits.
    #[test]
    fn ids_with_a_stride_spread_over_the_low_bits() {
        for stride in [1u64, 2, 4, 8, 64] {
            let buckets = 1024u64;
            let mut used = vec![false; buckets as usize];
            for i in 0..buckets {
                used[(hash(OrderId(1 + i * stride)) % buckets) as usize] = true;
            }
            let filled = used.iter().filter(|u| **u).count();
            // Random placement fills 1 - 1/e of them (63%).
            assert!(
                filled > 560,
                "stride {stride}: {filled} of {buckets} buckets"
            );
        }
    }

    #[test]
    fn id_sets_behave_as_sets() {
        let mut set: IdSet<UserId> = IdSet::default();
        for i in 1..=10_000 {
            assert!(set.insert(UserId(i)));
        }
        assert!(!set.insert(UserId(5)));
        assert_eq!(set.len(), 10_000);
        assert!(set.contains(&UserId(10_000)) && !set.contains(&UserId(10_001)));
        let mut bytes = IdHasher::default();
        bytes.write(b"not an id, but hashable");
        assert_ne!(bytes.finish(), IdHasher::default().finish());
    }
}
