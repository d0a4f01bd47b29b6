//! A set of dense ids as a bitmap in fixed chunks, allocated where used.
//!
//! A campaign remembers every user it issued a coupon to. As a hash set
//! that is about 16 bytes a user and one value that grows without bound (a
//! campaign of 10,000,000 coupons: over 160 MiB in memory and a stored value
//! far past any frame). Ids are dense from 1, so a bit per id does: a chunk
//! of [`CHUNK_BITS`] ids is 4 KiB, allocated on its first member, and each
//! chunk is stored as an entry of its own, so a snapshot writes only the
//! chunks that changed and no stored value grows with the campaign.

/// Ids per chunk.
pub const CHUNK_BITS: u64 = 32_768;
/// 64-bit words per chunk.
pub const CHUNK_WORDS: usize = (CHUNK_BITS / 64) as usize;

/// One chunk: the bits of ids `chunk * CHUNK_BITS + 1 ..= (chunk + 1) * CHUNK_BITS`.
pub type Chunk = Box<[u64; CHUNK_WORDS]>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdBitmap {
    chunks: Vec<Option<Chunk>>,
    len: u64,
}

/// Where id `id` (≥ 1) lies: its chunk, word and bit.
fn place(id: u64) -> (usize, usize, u64) {
    let index = id.wrapping_sub(1);
    let chunk = (index / CHUNK_BITS) as usize;
    let bit = index % CHUNK_BITS;
    (chunk, (bit / 64) as usize, 1u64 << (bit % 64))
}

impl IdBitmap {
    pub fn new() -> IdBitmap {
        IdBitmap::default()
    }

    /// The chunk id `id` (≥ 1) lies in.
    pub fn chunk_of(id: u64) -> u64 {
        place(id).0 as u64
    }

    /// Members.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, id: u64) -> bool {
        if id == 0 {
            return false;
        }
        let (chunk, word, mask) = place(id);
        self.chunks
            .get(chunk)
            .and_then(Option::as_ref)
            .is_some_and(|c| c[word] & mask != 0)
    }

    /// Adds `id` (≥ 1); answers whether it was new, and the chunk it is in.
    pub fn insert(&mut self, id: u64) -> (bool, u64) {
        assert!(id > 0, "ids start at 1");
        let (chunk, word, mask) = place(id);
        if self.chunks.len() <= chunk {
            self.chunks.resize_with(chunk + 1, || None);
        }
        let c = self.chunks[chunk].get_or_insert_with(|| Box::new([0; CHUNK_WORDS]));
        let new = c[word] & mask == 0;
        c[word] |= mask;
        if new {
            self.len += 1;
        }
        (new, chunk as u64)
    }

    /// The chunk `chunk`'s words, if any id of it is a member.
    pub fn chunk(&self, chunk: u64) -> Option<&[u64; CHUNK_WORDS]> {
        self.chunks
            .get(usize::try_from(chunk).ok()?)
            .and_then(Option::as_deref)
    }

    /// Indexes of the chunks allocated, ascending.
    pub fn chunk_indexes(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| i as u64)
    }

    /// Sets chunk `chunk` as loaded from storage (it must not be set yet).
    pub fn load_chunk(&mut self, chunk: u64, words: &[u64]) -> Result<(), String> {
        let index = usize::try_from(chunk).map_err(|_| format!("chunk {chunk} is out of range"))?;
        if words.len() != CHUNK_WORDS {
            return Err(format!("a chunk of {} words", words.len()));
        }
        if self.chunks.get(index).is_some_and(Option::is_some) {
            return Err(format!("chunk {chunk} twice"));
        }
        if self.chunks.len() <= index {
            self.chunks.resize_with(index + 1, || None);
        }
        let mut c = Box::new([0u64; CHUNK_WORDS]);
        c.copy_from_slice(words);
        self.len += c.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        self.chunks[index] = Some(c);
        Ok(())
    }

    /// Every member, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.iter().enumerate().flat_map(|(ci, c)| {
            c.iter().flat_map(move |words| {
                words.iter().enumerate().flat_map(move |(wi, w)| {
                    let base = ci as u64 * CHUNK_BITS + wi as u64 * 64 + 1;
                    (0..64)
                        .filter(move |b| w & (1u64 << b) != 0)
                        .map(move |b| base + b)
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_counted_once_and_found_across_chunks() {
        // given ids in three chunks, one twice, when inserted, then each counts once
        let mut b = IdBitmap::new();
        for id in [
            1,
            64,
            65,
            CHUNK_BITS,
            CHUNK_BITS + 1,
            5 * CHUNK_BITS + 7,
            64,
        ] {
            b.insert(id);
        }
        assert_eq!(b.len(), 6);
        assert!(b.contains(CHUNK_BITS) && b.contains(CHUNK_BITS + 1));
        assert!(!b.contains(0) && !b.contains(2) && !b.contains(3 * CHUNK_BITS));
        assert_eq!(b.chunk_indexes().collect::<Vec<_>>(), vec![0, 1, 5]);
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![1, 64, 65, CHUNK_BITS, CHUNK_BITS + 1, 5 * CHUNK_BITS + 7]
        );
        assert_eq!(b.insert(65), (false, 0));
        assert_eq!(b.insert(CHUNK_BITS + 2), (true, 1));
    }

    #[test]
    fn chunks_reload_into_the_same_set() {
        // given a set, when its chunks are loaded into a new one, then they are equal
        let mut b = IdBitmap::new();
        for id in (1..200_000).step_by(7) {
            b.insert(id);
        }
        let mut back = IdBitmap::new();
        for c in b.chunk_indexes() {
            back.load_chunk(c, b.chunk(c).unwrap()).unwrap();
        }
        assert_eq!(back, b);
        assert!(back.load_chunk(0, b.chunk(0).unwrap()).is_err(), "twice");
        assert!(back.load_chunk(9, &[0; 3]).is_err(), "wrong size");
    }
}
