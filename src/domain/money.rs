//! Money: an integer amount of KRW. No floats anywhere near money.
//!
//! Every operation that could overflow or go below zero is checked and
//! returns `None`; callers turn that into a typed rejection.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of Korean won. Whole units only (KRW has no minor unit).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Krw(pub u64);

impl Krw {
    pub const ZERO: Krw = Krw(0);

    pub fn checked_add(self, other: Krw) -> Option<Krw> {
        self.0.checked_add(other.0).map(Krw)
    }

    pub fn checked_sub(self, other: Krw) -> Option<Krw> {
        self.0.checked_sub(other.0).map(Krw)
    }

    pub fn checked_mul(self, quantity: u64) -> Option<Krw> {
        self.0.checked_mul(quantity).map(Krw)
    }

    /// `percent`% of this amount, rounded down to whole KRW.
    pub fn percent_floor(self, percent: u8) -> Krw {
        // u128 so that no amount times 100 can overflow.
        Krw((u128::from(self.0) * u128::from(percent) / 100) as u64)
    }

    pub fn min(self, other: Krw) -> Krw {
        Krw(self.0.min(other.0))
    }
}

impl fmt::Display for Krw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KRW", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_down_to_whole_won() {
        // given 999 KRW, when 10% is taken, then 99 (99.9 rounded down)
        assert_eq!(Krw(999).percent_floor(10), Krw(99));
        assert_eq!(Krw(u64::MAX).percent_floor(100), Krw(u64::MAX));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Krw(1).checked_sub(Krw(2)), None);
        assert_eq!(Krw(u64::MAX).checked_add(Krw(1)), None);
        assert_eq!(Krw(u64::MAX).checked_mul(2), None);
    }
}
