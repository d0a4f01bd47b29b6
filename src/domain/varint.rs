//! Unsigned LEB128 varints: 7 bits a byte, low bits first, the high bit set
//! on every byte but the last. A value below 128 takes one byte, any `u64`
//! at most ten. Used where small numbers are stored or kept many at a time
//! (a user's counted units, the bench's log of order ids).

/// The most bytes a `u64` takes.
pub const MAX_LEN: usize = 10;

/// Appends `value` to `out`.
pub fn push(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The varint at `bytes[*at..]`, moving `at` past it; `None` when the bytes
/// end inside it or it does not fit a `u64` (`at` then stays put).
pub fn read(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut i = *at;
    for shift in (0..MAX_LEN as u32 * 7).step_by(7) {
        let byte = *bytes.get(i)?;
        i += 1;
        let bits = u64::from(byte & 0x7f);
        // the tenth byte holds the 64th bit alone
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            *at = i;
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_in_the_fewest_bytes() {
        // proves the round trip and the length at each 7-bit boundary
        let cases: [(u64, usize); 9] = [
            (0, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (1 << 56, 9),
            (1 << 63, 10),
            (u64::MAX, 10),
        ];
        let mut out = Vec::new();
        for (value, len) in cases {
            let start = out.len();
            push(&mut out, value);
            assert_eq!(out.len() - start, len, "{value}");
        }
        let mut at = 0;
        for (value, _) in cases {
            assert_eq!(read(&out, &mut at), Some(value));
        }
        assert_eq!(at, out.len());
        assert_eq!(read(&out, &mut at), None, "nothing after the last");
    }

    #[test]
    fn a_cut_or_oversized_varint_is_refused_and_leaves_the_position() {
        // given bytes that end inside a varint, or encode more than 64 bits, then None
        for bad in [
            &[0x80][..],
            &[0xff, 0xff],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
        ] {
            let mut at = 0;
            assert_eq!(read(bad, &mut at), None, "{bad:?}");
            assert_eq!(at, 0);
        }
        // 300 as [0xac, 0x02], read from the middle of a buffer
        let mut at = 1;
        assert_eq!(read(&[9, 0xac, 0x02, 7], &mut at), Some(300));
        assert_eq!(at, 3);
    }
}
