//! Typed ids. Every id is a positive u64 assigned by the engine, from 1.

use serde::{Deserialize, Serialize};
use std::fmt;

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
