//! Per-user purchase limits (`max_per_user`).
//!
//! The count lives with the user: the user's actor handles one command at
//! a time, so it decides exactly, whatever the concurrency, with no lock.
//! An order being placed holds its units there as it holds a coupon (in
//! the same all-or-nothing saga); the placed record makes them durable;
//! cancel, failure and expiry release them, and so does a refund
//! ([`User::release_units`]). The count is part of the stored user, so
//! recovery rebuilds it exactly without reading any order (paid orders
//! leave memory for the archive).
//!
//! Which units count: every unit of every product, whatever its limit
//! history, so a limit first set on a product already sold counts what its
//! buyers hold ([`crate::domain::product::Product::counted_line`]). An order
//! with no coupon and no limited line takes no hold on its user (the hot
//! path stays one actor shorter); its units are counted when the user hears
//! it placed. The product keeps that exact: once a limit appears, it answers
//! no reservation until every reservation it answered unlimited is placed
//! or abandoned (`engine::product_actor`), and a placed order's news reaches
//! its user before its product's. The placed record counts every line.

use crate::domain::ids::ProductId;
use crate::domain::rejection::{Decision, Rejection};
use crate::domain::user::User;
use crate::domain::varint;
use serde::{Deserialize, Serialize};

/// Units per product, for the products that count; no entry holds zero.
///
/// Kept sorted by product, so that each order finds its lines by binary
/// search: every unit counts, so a user holds an entry per product ever
/// bought (hundreds in the bench's order flows, where a linear search made
/// this the user's costliest step). Units added go first to a short list
/// in arrival order, merged into the sorted entries once it holds
/// [`HeldUnits::MERGE_AT`] or before a removal: most orders only add (every
/// placed order counts its lines, and nothing but a limited line reads the
/// count), and an add then touches the end of that list instead of a
/// binary search and a shift of the user's entries. Two values are equal
/// when they count alike.
///
/// Stored (since format version 4) as one byte string holding what the two
/// lists hold together, by product: for each entry the step from the
/// previous entry's product id (from 0) and the units, each a varint
/// ([`crate::domain::varint`]). At a shop's scale that is two or three
/// bytes an entry where pairs of `u64` took 16, and every user a snapshot
/// writes carries its entries. Version 3 stored the pairs
/// (`store::legacy` reads them through [`HeldUnits::from_entries`]).
#[derive(Clone, Debug, Default)]
pub struct HeldUnits {
    /// Sorted by product, each product once, none zero.
    sorted: Vec<(ProductId, u64)>,
    /// Added since the last merge, in arrival order; none zero.
    recent: Vec<(ProductId, u64)>,
}

impl Serialize for HeldUnits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = if self.recent.is_empty() {
            encode_entries(&self.sorted)
        } else {
            encode_entries(&self.merged())
        };
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for HeldUnits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Stored;
        impl<'de> serde::de::Visitor<'de> for Stored {
            type Value = HeldUnits;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a user's counted units as varint bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<HeldUnits, E> {
                decode_entries(bytes).map_err(E::custom)
            }

            /// Formats without a byte string (JSON) give the bytes as a list.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HeldUnits, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                self.visit_bytes(&bytes)
            }
        }
        d.deserialize_bytes(Stored)
    }
}

/// Sorted entries (each product once, none zero) as their stored bytes.
fn encode_entries(entries: &[(ProductId, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 3);
    let mut last = 0;
    for &(product, units) in entries {
        debug_assert!(product.0 > last && units > 0, "sorted entries, none zero");
        varint::push(&mut out, product.0 - last);
        varint::push(&mut out, units);
        last = product.0;
    }
    out
}

/// The stored bytes as counts; refused unless products strictly rise from
/// 1 and no entry holds zero (what [`encode_entries`] writes).
fn decode_entries(bytes: &[u8]) -> Result<HeldUnits, &'static str> {
    let mut sorted = Vec::with_capacity(bytes.len() / 2);
    let (mut at, mut last) = (0, 0u64);
    while at < bytes.len() {
        let step = varint::read(bytes, &mut at).ok_or("a product's step is cut short")?;
        let units = varint::read(bytes, &mut at).ok_or("an entry's units are cut short")?;
        if step == 0 {
            return Err("counted units' products do not strictly rise");
        }
        if units == 0 {
            return Err("an entry of counted units holds zero");
        }
        last = last.checked_add(step).ok_or("a product id past u64")?;
        sorted.push((ProductId(last), units));
    }
    Ok(HeldUnits {
        sorted,
        recent: Vec::new(),
    })
}

impl PartialEq for HeldUnits {
    fn eq(&self, other: &Self) -> bool {
        if self.recent.is_empty() && other.recent.is_empty() {
            self.sorted == other.sorted
        } else {
            self.merged() == other.merged()
        }
    }
}

impl Eq for HeldUnits {}

/// `sorted` (by product, each once) with `more` (by product, repeats
/// allowed) added: sorted, each product once, units summed.
fn merge_sorted(sorted: &[(ProductId, u64)], more: &[(ProductId, u64)]) -> Vec<(ProductId, u64)> {
    let mut out: Vec<(ProductId, u64)> = Vec::with_capacity(sorted.len() + more.len());
    let (mut a, mut b) = (sorted.iter().peekable(), more.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        let &(p, n) = next.expect("peeked");
        match out.last_mut() {
            Some(last) if last.0 == p => last.1 = last.1.saturating_add(n),
            _ => out.push((p, n)),
        }
    }
    out
}

impl HeldUnits {
    /// Units added that wait in arrival order before a merge: 16 entries,
    /// 256 bytes, four cache lines to scan for a product.
    pub const MERGE_AT: usize = 16;

    pub fn of(&self, product: ProductId) -> u64 {
        let merged = self
            .sorted
            .binary_search_by_key(&product, |e| e.0)
            .map_or(0, |i| self.sorted[i].1);
        self.recent
            .iter()
            .filter(|e| e.0 == product)
            .fold(merged, |n, e| n.saturating_add(e.1))
    }

    pub fn add(&mut self, product: ProductId, units: u64) {
        if units == 0 {
            return;
        }
        self.recent.push((product, units));
        if self.recent.len() >= Self::MERGE_AT {
            self.merge();
        }
    }

    /// Takes away up to `units` (never below zero); an emptied entry goes.
    pub fn remove(&mut self, product: ProductId, units: u64) {
        self.merge();
        if let Ok(i) = self.sorted.binary_search_by_key(&product, |e| e.0) {
            let left = self.sorted[i].1.saturating_sub(units);
            if left == 0 {
                self.sorted.remove(i);
            } else {
                self.sorted[i].1 = left;
            }
        }
    }

    /// Counts from a list of entries in any order (repeats summed, zeros
    /// dropped): how format version 3 stored them.
    pub fn from_entries(mut entries: Vec<(ProductId, u64)>) -> HeldUnits {
        if !entries.is_sorted_by_key(|e| e.0) {
            entries.sort_by_key(|e| e.0);
        }
        entries.retain(|e| e.1 != 0);
        HeldUnits {
            sorted: merge_sorted(&[], &entries),
            recent: Vec::new(),
        }
    }

    /// Every entry, by product, each once.
    pub fn iter(&self) -> std::vec::IntoIter<(ProductId, u64)> {
        self.merged().into_iter()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty() && self.recent.is_empty()
    }

    /// What both lists hold, sorted, each product once.
    fn merged(&self) -> Vec<(ProductId, u64)> {
        let mut recent = self.recent.clone();
        recent.sort_unstable_by_key(|e| e.0);
        merge_sorted(&self.sorted, &recent)
    }

    /// Moves the units added in arrival order into the sorted entries.
    fn merge(&mut self) {
        if !self.recent.is_empty() {
            self.sorted = self.merged();
            self.recent.clear();
        }
    }
}

/// A line of an order whose product counts per user, as the product
/// answered when the order reserved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedLine {
    pub product_id: ProductId,
    pub quantity: u64,
    /// The product's limit then; `None` when it counts but has no limit now.
    pub max_per_user: Option<u64>,
}

impl User {
    /// Units of `product` this user holds, durable and being placed.
    pub fn units_held(&self, product: ProductId) -> u64 {
        self.limited
            .of(product)
            .saturating_add(self.limited_pending.of(product))
    }

    /// Every counted line fits its limit with what the user holds already
    /// (orders being placed included). A limit lowered below what the user
    /// holds refuses new units only.
    pub fn decide_hold_units(&self, lines: &[CountedLine]) -> Decision<()> {
        for line in lines {
            let Some(max) = line.max_per_user else {
                continue;
            };
            let held = self.units_held(line.product_id);
            if held.saturating_add(line.quantity) > max {
                return Err(Rejection::PurchaseLimitExceeded {
                    product_id: line.product_id,
                    max,
                    held,
                    requested: line.quantity,
                });
            }
        }
        Ok(())
    }

    /// Takes the units of an order being placed until it is durable or abandoned.
    pub fn hold_units(&mut self, lines: &[CountedLine]) {
        for l in lines {
            self.limited_pending.add(l.product_id, l.quantity);
        }
    }

    /// The order being placed is durable or abandoned: its hold goes.
    pub fn drop_units_hold(&mut self, lines: &[(ProductId, u64)]) {
        for &(p, q) in lines {
            self.limited_pending.remove(p, q);
        }
    }

    /// Applies a placed order's counted lines: the units are held for good.
    pub fn apply_units_placed(&mut self, lines: &[(ProductId, u64)]) {
        for &(p, q) in lines {
            self.limited.add(p, q);
        }
    }

    /// Frees units of an order's lines: an order ended unpaid (cancelled,
    /// failed, expired) or units refunded. Lines of products the user holds
    /// no counted units of change nothing. The entry point for every
    /// release, on the actor and in recovery alike.
    pub fn release_units(&mut self, lines: impl IntoIterator<Item = (ProductId, u64)>) {
        if self.limited.is_empty() {
            return;
        }
        for (p, q) in lines {
            self.limited.remove(p, q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;

    fn line(p: u64, quantity: u64, max: Option<u64>) -> CountedLine {
        CountedLine {
            product_id: ProductId(p),
            quantity,
            max_per_user: max,
        }
    }

    fn user() -> User {
        User::new(UserId(1), "kim".into())
    }

    proptest::proptest! {
        #[test]
        fn held_units_count_as_a_map_of_products_and_stay_sorted(
            steps in proptest::collection::vec((1u64..41, 0u64..5, 0u8..32), 0..300)
        ) {
            // proves add/remove/of agree with a map model, entries sorted, none zero
            // (mostly adds, so runs of them pass MERGE_AT between removals)
            let mut held = HeldUnits::default();
            let mut model: std::collections::BTreeMap<u64, u64> = Default::default();
            for (p, n, kind) in steps {
                if kind < 30 {
                    held.add(ProductId(p), n);
                    if n > 0 {
                        *model.entry(p).or_default() += n;
                    }
                } else {
                    held.remove(ProductId(p), n);
                    if let Some(m) = model.get_mut(&p) {
                        *m = m.saturating_sub(n);
                        if *m == 0 {
                            model.remove(&p);
                        }
                    }
                }
                for q in 0..42 {
                    proptest::prop_assert_eq!(held.of(ProductId(q)), model.get(&q).copied().unwrap_or(0));
                }
            }
            let entries: Vec<(u64, u64)> = held.iter().map(|(p, n)| (p.0, n)).collect();
            let expected: Vec<(u64, u64)> = model.into_iter().collect();
            proptest::prop_assert_eq!(&entries, &expected);
            // stored as the sorted list, read back equal, whatever waits unmerged
            let bytes = bincode::serialize(&held).unwrap();
            let sorted: Vec<(ProductId, u64)> = expected.iter().map(|&(p, n)| (ProductId(p), n)).collect();
            let mut stored = (encode_entries(&sorted).len() as u64).to_le_bytes().to_vec();
            stored.extend(encode_entries(&sorted));
            proptest::prop_assert_eq!(&bytes, &stored);
            let back: HeldUnits = bincode::deserialize(&bytes).unwrap();
            proptest::prop_assert_eq!(&back, &held);
            proptest::prop_assert!(back.recent.is_empty());
            proptest::prop_assert_eq!(HeldUnits::from_entries(sorted), held);
        }

        #[test]
        fn any_bytes_read_as_counts_or_refused_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            // proves whatever is read is sorted, each product once, none zero, and written back alike
            if let Ok(held) = decode_entries(&bytes) {
                let entries: Vec<(ProductId, u64)> = held.iter().collect();
                proptest::prop_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
                proptest::prop_assert!(entries.iter().all(|e| e.0 .0 > 0 && e.1 > 0));
                let again = decode_entries(&encode_entries(&entries)).unwrap();
                proptest::prop_assert_eq!(again, held);
            }
        }
    }

    #[test]
    fn held_units_are_stored_as_steps_and_units_in_varints() {
        // given products 3, 5 and 300, then the bytes are steps 3, 2, 295 and their units
        let mut held = HeldUnits::default();
        held.add(ProductId(300), 2);
        held.add(ProductId(3), 1);
        held.add(ProductId(5), 200);
        let bytes = bincode::serialize(&held).unwrap();
        let payload = [3, 1, 2, 0xc8, 0x01, 0xa7, 0x02, 2];
        assert_eq!(bytes[..8], (payload.len() as u64).to_le_bytes());
        assert_eq!(bytes[8..], payload);
        // 8 bytes of length and 8 of entries, where pairs took 8 + 3 * 16
        let pairs: Vec<(ProductId, u64)> = held.iter().collect();
        assert_eq!(bincode::serialize(&pairs).unwrap().len(), 56);
        assert_eq!(bincode::deserialize::<HeldUnits>(&bytes).unwrap(), held);
        assert_eq!(
            bincode::serialize(&HeldUnits::default()).unwrap(),
            0u64.to_le_bytes()
        );
    }

    #[test]
    fn stored_units_out_of_order_zero_or_cut_are_refused() {
        // given bytes a build never writes, when read, then an error (no panic, no wrong count)
        let stored = |payload: &[u8]| {
            let mut b = (payload.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(payload);
            bincode::deserialize::<HeldUnits>(&b)
        };
        assert!(stored(&[3, 1, 2, 1]).is_ok());
        for bad in [
            &[3, 1, 0, 1][..], // the same product twice
            &[0, 1][..],       // product 0
            &[3, 0][..],       // zero units
            &[3][..],          // units missing
            &[3, 0x80][..],    // units cut inside a varint
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 1, 1,
            ][..], // past u64
        ] {
            assert!(stored(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn held_units_stored_unsorted_are_read_sorted_with_repeats_summed() {
        // proves a list written before it was kept sorted reads as the same counts
        let stored: Vec<(ProductId, u64)> = vec![
            (ProductId(9), 2),
            (ProductId(3), 1),
            (ProductId(9), 1),
            (ProductId(5), 4),
            (ProductId(4), 0),
        ];
        let held = HeldUnits::from_entries(stored);
        let entries: Vec<(u64, u64)> = held.iter().map(|(p, n)| (p.0, n)).collect();
        assert_eq!(entries, vec![(3, 1), (5, 4), (9, 3)]);
        assert!(held.recent.is_empty());
    }

    #[test]
    fn units_beyond_the_limit_are_refused_counting_durable_and_pending_units() {
        // given a limit of 3, 1 unit durable and 1 being placed, when 2 more are asked, then refused; 1 fits
        let mut u = user();
        u.apply_units_placed(&[(ProductId(7), 1)]);
        u.hold_units(&[line(7, 1, Some(3))]);
        assert_eq!(
            u.decide_hold_units(&[line(7, 2, Some(3))]),
            Err(Rejection::PurchaseLimitExceeded {
                product_id: ProductId(7),
                max: 3,
                held: 2,
                requested: 2
            })
        );
        assert_eq!(u.decide_hold_units(&[line(7, 1, Some(3))]), Ok(()));
    }

    #[test]
    fn a_dropped_hold_and_a_release_free_units() {
        // proves holds, placement and releases move the count exactly, never below zero
        let mut u = user();
        u.hold_units(&[line(7, 2, Some(2))]);
        assert!(u.decide_hold_units(&[line(7, 1, Some(2))]).is_err());
        u.drop_units_hold(&[(ProductId(7), 2)]);
        assert_eq!(u.units_held(ProductId(7)), 0);
        u.hold_units(&[line(7, 2, Some(2))]);
        u.drop_units_hold(&[(ProductId(7), 2)]);
        u.apply_units_placed(&[(ProductId(7), 2)]);
        assert_eq!(u.units_held(ProductId(7)), 2);
        u.release_units([(ProductId(7), 1), (ProductId(8), 5)]);
        assert_eq!(u.units_held(ProductId(7)), 1);
        u.release_units([(ProductId(7), 5)]);
        assert_eq!(u.units_held(ProductId(7)), 0);
        assert!(u.limited.is_empty(), "no entry holds zero");
    }

    #[test]
    fn a_lowered_limit_refuses_new_units_only() {
        // given 3 units held, when the limit is 2, then nothing more fits, and what is held stays
        let mut u = user();
        u.apply_units_placed(&[(ProductId(7), 3)]);
        assert!(u.decide_hold_units(&[line(7, 1, Some(2))]).is_err());
        assert_eq!(u.units_held(ProductId(7)), 3);
        // a product that counts but has no limit now takes any quantity
        assert_eq!(u.decide_hold_units(&[line(7, 1000, None)]), Ok(()));
    }

    #[test]
    fn every_line_of_an_order_is_checked() {
        // proves the second line's product is checked too
        let mut u = user();
        u.apply_units_placed(&[(ProductId(9), 1)]);
        assert!(matches!(
            u.decide_hold_units(&[line(7, 1, Some(1)), line(9, 1, Some(1))]),
            Err(Rejection::PurchaseLimitExceeded { product_id, .. }) if product_id == ProductId(9)
        ));
    }
}
