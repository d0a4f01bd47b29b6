//! The 128-bit hash an idempotency key is kept under.
//!
//! A key is up to 128 characters; kept as its hash, an entry in memory is a
//! few dozen bytes whatever the key, and a stored one a fixed-size slot. The
//! hash is SipHash-2-4 with its 128-bit output (Aumasson and Bernstein's
//! reference), under a fixed key: stable across builds and restarts, which
//! std's hasher does not promise. Two keys share a hash with odds of 2^-128
//! per pair; a client cannot aim a key at another's without that work.

/// A key's hash. Stored little-endian.
pub type KeyHash = u128;

const SIP_KEY: (u64, u64) = (0x636f_6d6d_6572_6365, 0x656e_6769_6e65_2d31);

/// SipHash-2-4, 128-bit output, of `key` under the engine's fixed key.
pub fn key_hash(key: &str) -> KeyHash {
    siphash128(SIP_KEY.0, SIP_KEY.1, key.as_bytes())
}

struct Sip {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl Sip {
    #[inline]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13);
        self.v1 ^= self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16);
        self.v3 ^= self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21);
        self.v3 ^= self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17);
        self.v1 ^= self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }
}

/// SipHash-2-4 with the 128-bit output of the reference implementation.
fn siphash128(k0: u64, k1: u64, data: &[u8]) -> u128 {
    let mut s = Sip {
        v0: k0 ^ 0x736f_6d65_7073_6575,
        v1: k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
        v2: k0 ^ 0x6c79_6765_6e65_7261,
        v3: k1 ^ 0x7465_6462_7974_6573,
    };
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        s.compress(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    let b = u64::from_le_bytes(last) | ((data.len() as u64 & 0xff) << 56);
    s.compress(b);
    s.v2 ^= 0xee;
    for _ in 0..4 {
        s.round();
    }
    let low = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
    s.v1 ^= 0xdd;
    for _ in 0..4 {
        s.round();
    }
    let high = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
    u128::from(low) | (u128::from(high) << 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's first test vectors (vectors_sip128 in the SipHash
    /// repository): key 00..0f, inputs of length 0 and 1 (`00`).
    #[test]
    fn the_reference_vectors_match() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let expected: [[u8; 16]; 2] = [
            [
                0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55,
                0x02, 0x93,
            ],
            [
                0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22,
                0xfc, 0x45,
            ],
        ];
        for (len, want) in expected.iter().enumerate() {
            let input: Vec<u8> = (0..len as u8).collect();
            assert_eq!(
                siphash128(k0, k1, &input).to_le_bytes(),
                *want,
                "length {len}"
            );
        }
    }

    #[test]
    fn equal_keys_hash_equal_and_others_apart() {
        assert_eq!(key_hash("order-7"), key_hash("order-7"));
        assert_ne!(key_hash("order-7"), key_hash("order-8"));
        assert_ne!(key_hash(""), key_hash(" "));
        // every length of a block boundary gives its own hash
        let hashes: std::collections::HashSet<u128> =
            (0..40).map(|n| key_hash(&"k".repeat(n))).collect();
        assert_eq!(hashes.len(), 40);
    }
}
