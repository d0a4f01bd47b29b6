//! Reading the snapshot back: every live generation merged as sorted runs.

use super::layout::Layout;
use super::packs::{decode_pack, pack_prefix, PackEntry};
use super::{io, SledStore};
use crate::store::legacy::store_layouts;
use crate::store::StorageError;
use std::collections::VecDeque;

/// A sorted run of entries: one generation's packs, or the entries from before packs.
pub(super) struct Run<'a> {
    pub(super) source: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a>,
    /// The entries still to come, read in place: a pack and its entries,
    /// or (from before packs, where each sled value is one entry) one key
    /// and its value. The variant says which the run reads.
    pub(super) held: Held,
}

pub(super) enum Held {
    Pack(sled::IVec, VecDeque<PackEntry>),
    Single(Option<(sled::IVec, sled::IVec)>),
}

impl Run<'_> {
    /// A run of packs.
    pub(super) fn packs<'a>(
        source: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
    ) -> Run<'a> {
        Run {
            source: Box::new(source),
            held: Held::Pack(sled::IVec::default(), VecDeque::new()),
        }
    }

    /// A run of entries from before packs, one per sled value.
    pub(super) fn singles<'a>(
        source: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
    ) -> Run<'a> {
        Run {
            source: Box::new(source),
            held: Held::Single(None),
        }
    }

    /// Reads on until an entry is held, or the run is over.
    pub(super) fn fill(&mut self) -> Result<(), StorageError> {
        while self.peek().is_none() {
            let Some(kv) = self.source.next() else {
                return Ok(());
            };
            let (k, v) = kv.map_err(io)?;
            match &mut self.held {
                Held::Single(kv) => *kv = Some((k, v)),
                Held::Pack(pack, entries) => {
                    *entries = decode_pack(&v)?;
                    *pack = v;
                }
            }
        }
        Ok(())
    }

    /// The entry held: its key, and its value unless deleted.
    pub(super) fn peek(&self) -> Option<(&[u8], Option<&[u8]>)> {
        match &self.held {
            Held::Pack(pack, entries) => entries
                .front()
                .map(|(k, v)| (&pack[k.clone()], v.clone().map(|v| &pack[v]))),
            Held::Single(kv) => kv.as_ref().map(|(k, v)| (&k[..], Some(&v[..]))),
        }
    }

    pub(super) fn advance(&mut self) {
        match &mut self.held {
            Held::Pack(_, entries) => {
                entries.pop_front();
            }
            Held::Single(kv) => *kv = None,
        }
    }
}

impl SledStore {
    /// Every live entry of `layout`, in key order, the newest layer winning;
    /// deletions are applied, not passed on.
    pub(super) fn merged(
        &self,
        layout: &Layout,
        mut emit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        // Oldest first: on equal keys the last run wins.
        let mut runs: Vec<Run<'_>> = Vec::new();
        if layout.base == 0 {
            let before_packs = store_layouts::entries_before_packs(&self.tree);
            runs.push(Run::singles(before_packs));
        }
        for generation in layout.base.max(1)..=layout.generation {
            runs.push(Run::packs(self.tree.scan_prefix(pack_prefix(generation))));
        }
        let mut heads: Vec<usize> = Vec::with_capacity(runs.len());
        loop {
            for run in runs.iter_mut() {
                run.fill()?;
            }
            // The runs whose entry has the least key; the last of them wins.
            heads.clear();
            let mut least: Option<&[u8]> = None;
            for (i, run) in runs.iter().enumerate() {
                let Some((k, _)) = run.peek() else { continue };
                if least.is_none_or(|l| k < l) {
                    least = Some(k);
                    heads.clear();
                }
                if least == Some(k) {
                    heads.push(i);
                }
            }
            let Some(&last) = heads.last() else {
                return Ok(());
            };
            if let Some((k, Some(v))) = runs[last].peek() {
                emit(k, v)?;
            }
            for &i in &heads {
                runs[i].advance();
            }
        }
    }
}
