use super::archive::*;
use super::journal::*;
use super::layout::*;
use super::packs::*;
use super::snapshot_keys::*;
use super::snapshot_write::*;
use super::*;
use crate::domain::order::OrderStatus;
use crate::domain::refund::Refunds;
use crate::store::archive_statuses::status_bit;
use crate::store::legacy::store_layouts::chunk_key;
use crate::store::SnapshotKey;
use std::collections::{BTreeMap, BTreeSet};

const PAID: u16 = status_bit(OrderStatus::Paid);

/// A finished order of no lines, as the archive tests store them.
fn finished_order(id: u64, user: u64, status: OrderStatus) -> crate::domain::order::Order {
    use crate::domain::ids::{OrderId, UserId};
    use crate::domain::money::Krw;
    use crate::domain::time::Timestamp;
    crate::domain::order::Order {
        id: OrderId(id),
        user_id: UserId(user),
        status,
        items: Vec::new(),
        total_amount: Krw(0),
        discount_amount: Krw(0),
        pay_amount: Krw(0),
        user_coupon_id: None,
        created_at: Timestamp(1),
        expires_at: Timestamp(2),
        paid_at: (status == OrderStatus::Paid).then_some(Timestamp(1)),
        refunds: Refunds::NONE,
    }
}

#[test]
fn snapshot_keys_round_trip() {
    for key in [
        SnapshotKey::User(7),
        SnapshotKey::Product(1),
        SnapshotKey::Campaign(u64::MAX),
        SnapshotKey::Order(3),
        SnapshotKey::History(7, 2),
        SnapshotKey::Issued(3, 305),
        SnapshotKey::TallySold(9),
        SnapshotKey::Tally,
        SnapshotKey::Meta,
        SnapshotKey::Key("retry-1".into()),
    ] {
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
    }
}

/// sled writes a value over 128 KiB to a blob file of its own and does
/// not sync it; `append` syncs it before it returns. Were sled's blob
/// layout not the one `sled_sync` checks, the file would count as
/// incomplete here, and the batch is read back whole.
#[test]
fn a_batch_sled_keeps_in_a_blob_file_is_synced_before_append_returns() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let batch = vec![7u8; 300 * 1024];
    s.append(1, &batch).unwrap();
    let files = std::fs::read_dir(journal_db_dir(dir.path()).join("blobs"))
        .unwrap()
        .count();
    assert!(files >= 1, "sled kept the batch in a blob file");
    assert_eq!(
        s.journal.blobs.sync_new().unwrap(),
        crate::store::sled_sync::Synced::default(),
        "every blob file was synced whole by append"
    );
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.batches, vec![(1, batch)]);
}

/// The log grows a segment at a time; `append` syncs its new length
/// (sled's flush does not) before it returns.
#[test]
fn append_syncs_the_logs_new_length() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let len = || {
        std::fs::metadata(journal_db_dir(dir.path()).join("db"))
            .unwrap()
            .len()
    };
    let before = len();
    for seq in 0..64 {
        s.append(seq * 10 + 1, &[seq as u8; 16 * 1024]).unwrap();
    }
    assert!(len() > before, "the log grew");
    assert!(!s.journal.log.sync_if_grown().unwrap(), "append synced it");
}

/// Journal keys in the main tree, as stores kept them before the
/// journal had a database of its own.
fn legacy_journal(s: &SledStore) -> Vec<u64> {
    s.tree
        .scan_prefix([JOURNAL])
        .keys()
        .map(|k| journal_seq(&k.unwrap()).unwrap())
        .collect()
}

/// Batches go to the journal's own database. Those an older store
/// kept in the main tree are read first, and trimmed by the snapshots
/// that cover them, as the new ones are.
#[test]
fn an_older_stores_journal_in_the_main_tree_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.tree.insert(journal_key(1), b"a").unwrap();
        s.tree.insert(journal_key(3), b"b").unwrap();
        s.flush().unwrap();
        s.append(6, b"c").unwrap();
        s.append(8, b"d").unwrap();
        assert_eq!(
            legacy_journal(&s),
            [1, 3],
            "append wrote to the journal's database"
        );
    }
    let batches = |s: &SledStore| s.load().unwrap().batches;
    let s = SledStore::open(dir.path()).unwrap();
    let all: Vec<(u64, Vec<u8>)> = [(1, "a"), (3, "b"), (6, "c"), (8, "d")]
        .map(|(seq, v)| (seq, v.as_bytes().to_vec()))
        .into();
    assert_eq!(batches(&s), all);
    // Batch 1 (1..=2) is covered; batch 3 (3..=5) is not, 6 > 4 + 1.
    s.snapshot(4, vec![(SnapshotKey::User(1), Some(b"u".to_vec()))].into())
        .unwrap();
    assert_eq!(batches(&s), all[1..]);
    assert_eq!(legacy_journal(&s), [3]);
    // Batch 3 (the main tree's last) and 6 (the journal database's first) are covered.
    s.snapshot(7, vec![(SnapshotKey::User(1), Some(b"v".to_vec()))].into())
        .unwrap();
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(batches(&s), all[3..]);
    assert!(legacy_journal(&s).is_empty());
    assert_eq!(s.load().unwrap().snapshot_seq, 7);
}

/// A pack is read in place: each entry's key and value are found where
/// they lie, and a pack that is cut short, altered or unknown is refused.
#[test]
fn packs_are_read_in_place_and_damaged_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let entries: [(&[u8], Option<&[u8]>); 4] = [
        (b"a", Some(b"one")),
        (b"bb", None),
        (b"c", Some(b"")),
        (&[7; 300], Some(&[9; 70_000])),
    ];
    let mut w = PackWriter::new(&s.tree, 9);
    for (k, v) in entries {
        w.push(k, v).unwrap();
    }
    w.finish().unwrap();
    let packs: Vec<sled::IVec> = s
        .tree
        .scan_prefix(pack_prefix(9))
        .values()
        .map(Result::unwrap)
        .collect();
    assert_eq!(packs.len(), 1, "the last entry closes the one pack");
    let raw = &packs[0];
    let read: Vec<(&[u8], Option<&[u8]>)> = decode_pack(raw)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (&raw[k], v.map(|v| &raw[v])))
        .collect();
    assert_eq!(read, entries);

    let refused = |bytes: &[u8]| decode_pack(bytes).unwrap_err().to_string();
    let sealed = |body: &[u8]| [body, &crc32fast::hash(body).to_be_bytes()].concat();
    let mut altered = raw.to_vec();
    altered[5] ^= 1;
    assert!(refused(&altered).contains("checksum"));
    assert!(refused(&raw[..3]).contains("too short"));
    let body = &raw[..raw.len() - 4];
    assert!(refused(&sealed(&body[..body.len() - 1])).contains("truncated"));
    assert!(refused(&sealed(&[2, 0, 1, b'k'])).contains("unknown entry tag"));
    assert!(decode_pack(&sealed(&[])).unwrap().is_empty());
}

#[test]
fn appended_batches_survive_reopen_and_snapshots_trim_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.append(1, b"a").unwrap();
        s.append(3, b"b").unwrap();
        s.append(6, b"c").unwrap();
        s.snapshot(5, vec![(SnapshotKey::User(1), Some(b"u".to_vec()))].into())
            .unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.snapshot_seq, 5);
    assert_eq!(
        loaded.snapshots,
        vec![(SnapshotKey::User(1), b"u".to_vec())]
    );
    // batch 1 (1..=2) is trimmed; batch 3 (3..=5) too, since 6 <= 5 + 1; batch 6 stays.
    assert_eq!(loaded.batches, vec![(6, b"c".to_vec())]);
}

fn entries(pairs: &[(SnapshotKey, Option<&str>)]) -> SnapshotEntries {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), v.map(|v| v.as_bytes().to_vec())))
        .collect()
}

fn loaded(dir: &Path) -> Vec<(SnapshotKey, String)> {
    let mut out: Vec<_> = SledStore::open(dir)
        .unwrap()
        .load()
        .unwrap()
        .snapshots
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect();
    out.sort();
    out
}

/// What a snapshot of `generation` leaves when it stops before its
/// commit: the `x` mark and packs of these entries.
fn leave_unfinished(s: &SledStore, generation: u64, pairs: &[(SnapshotKey, &str)]) {
    s.tree
        .insert(UNFINISHED, &generation.to_be_bytes())
        .unwrap();
    let mut w = PackWriter::new(&s.tree, generation);
    for (key, value) in pairs {
        w.push(&encode_key(key), Some(value.as_bytes())).unwrap();
    }
    w.finish().unwrap();
    s.tree.flush().unwrap();
}

/// The generations that have packs, and whether `x` or entries from before packs remain.
fn raw(dir: &Path) -> (BTreeSet<u64>, bool, usize) {
    let s = SledStore::open(dir).unwrap();
    let generations = s
        .tree
        .scan_prefix([PACK])
        .keys()
        .map(|k| pack_generation(&k.unwrap()).unwrap())
        .collect();
    let unfinished = s.tree.contains_key(UNFINISHED).unwrap();
    (
        generations,
        unfinished,
        s.before_packs_keys().unwrap().len(),
    )
}

#[test]
fn snapshots_overwrite_and_delete_across_generations() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        // More than one pack, so a generation spans several sled values.
        let many: Vec<_> = (1..=600)
            .map(|i| (SnapshotKey::Order(i), Some(vec![b'o'; 300])))
            .collect();
        s.snapshot(3, many.into()).unwrap();
        s.snapshot(
            7,
            entries(&[
                (SnapshotKey::Order(1), Some("o1-paid")),
                (SnapshotKey::Order(2), None),
                (SnapshotKey::Key("k".into()), Some("key")),
            ]),
        )
        .unwrap();
    }
    let got = loaded(dir.path());
    assert_eq!(got.len(), 600); // 599 orders and the key
    assert!(got.contains(&(SnapshotKey::Order(1), "o1-paid".into())));
    assert!(!got.iter().any(|(k, _)| *k == SnapshotKey::Order(2)));
    let loaded = SledStore::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(loaded.snapshot_seq, 7);
    let (generations, unfinished, _) = raw(dir.path());
    assert_eq!(generations, BTreeSet::from([1, 2]));
    assert!(!unfinished);
}

/// Archived orders are read by block, only from committed snapshots; an
/// unfinished snapshot's parts are invisible and removed at the next
/// open. History chunks are read back by key. Neither is loaded.
#[test]
fn archived_entries_are_read_by_block_and_an_unfinished_snapshots_parts_removed() {
    let dir = tempfile::tempdir().unwrap();
    let frame = |s: &str| s.as_bytes().to_vec();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.snapshot(
            4,
            vec![
                (
                    SnapshotKey::ArchivedOrder {
                        user: 1,
                        id: 3,
                        status_bit: PAID,
                    },
                    Some(frame("o3")),
                ),
                (
                    SnapshotKey::ArchivedOrder {
                        user: 2,
                        id: 300,
                        status_bit: PAID,
                    },
                    Some(frame("o300")),
                ),
                (SnapshotKey::ArchivedHistory(1, 0), Some(frame("h10"))),
                (SnapshotKey::Order(9), Some(frame("pending"))),
            ]
            .into(),
        )
        .unwrap();
        s.snapshot(
            5,
            vec![(
                SnapshotKey::ArchivedOrder {
                    user: 1,
                    id: 5,
                    status_bit: PAID,
                },
                Some(frame("o5")),
            )]
            .into(),
        )
        .unwrap();
        let a = s.archive();
        assert_eq!(a.order_block(0).unwrap(), frame("o3o5"));
        assert_eq!(a.order_block(1).unwrap(), frame("o300"));
        assert_eq!(a.history_chunk(1, 0).unwrap(), Some(frame("h10")));
        assert_eq!(a.history_chunk(1, 1).unwrap(), None);
        assert_eq!(a.user_orders(1, u64::MAX, 10).unwrap(), vec![5, 3]);
        assert_eq!(a.user_orders(2, u64::MAX, 10).unwrap(), vec![300]);
        assert_eq!(a.user_orders(3, u64::MAX, 10).unwrap(), Vec::<u64>::new());
        // A crash part way through the next snapshot (generation 3, block 0).
        let mut mark = 3u64.to_be_bytes().to_vec();
        mark.extend_from_slice(&0u64.to_be_bytes());
        s.tree.insert(UNFINISHED, mark).unwrap();
        s.tree.insert(part_key(0, 3), frame("o7")).unwrap();
        s.tree.flush().unwrap();
        assert_eq!(a.order_block(0).unwrap(), frame("o3o5"), "not committed");
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert!(!s.tree.contains_key(part_key(0, 3)).unwrap(), "tidied");
    assert!(
        s.tree.contains_key(part_key(0, 2)).unwrap(),
        "committed parts stay"
    );
    let mut blocks = Vec::new();
    s.archive()
        .each_order_block(&mut |frames| {
            blocks.push(frames.to_vec());
            Ok(())
        })
        .unwrap();
    assert_eq!(blocks, vec![frame("o3o5"), frame("o300")]);
    let loaded = s.load().unwrap();
    assert_eq!(
        loaded.snapshots,
        vec![(SnapshotKey::Order(9), frame("pending"))]
    );
}

/// A user's archived order ids come newest first below the cursor,
/// exactly, however the parts of successive snapshots overlap (an order
/// that finished late lands in a later part than newer ones).
#[test]
fn a_users_archived_orders_read_in_id_order_across_overlapping_parts() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    // Snapshot by snapshot, the ids each archived of user 7 (and of 8).
    let snapshots: [&[u64]; 5] = [&[10, 11, 13], &[14, 15], &[12, 20, 21], &[22], &[1, 30]];
    let mut all: Vec<u64> = Vec::new();
    for (i, ids) in snapshots.iter().enumerate() {
        let mut entries: SnapshotEntries = ids
            .iter()
            .map(|id| {
                (
                    SnapshotKey::ArchivedOrder {
                        user: 7,
                        id: *id,
                        status_bit: PAID,
                    },
                    Some(vec![1]),
                )
            })
            .collect();
        entries.push(
            SnapshotKey::ArchivedOrder {
                user: 8,
                id: 100 + i as u64,
                status_bit: PAID,
            },
            Some(&[1]),
        );
        s.snapshot(i as u64 + 1, entries).unwrap();
        all.extend_from_slice(ids);
    }
    all.sort_unstable_by(|a, b| b.cmp(a));
    let a = s.archive();
    let befores = [u64::MAX, 31, 30, 22, 21, 15, 13, 12, 11, 2, 1, 0];
    assert_pages(&*a, 7, &all, &befores, &Vec::from_iter(0..=all.len() + 1));
    assert_eq!(a.user_orders(8, u64::MAX, 2).unwrap(), vec![104, 103]);
}

/// Many snapshots archive a user's orders, some finished late (an id
/// below ids already archived), one archived twice (an unfinished
/// snapshot redone): the open part is sealed every [`SEALED_PART_IDS`]
/// ids, so sled holds one key per part rather than per snapshot, and
/// every page still reads exactly, newest first.
#[test]
fn the_index_by_user_seals_full_parts_and_pages_read_exactly_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let mut all = BTreeSet::new();
    let mut late: Vec<u64> = Vec::new();
    let mut next = 1u64;
    let mut snapshots = 0u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    // Until some ids are in sealed parts, and the newest only in the open one.
    while all.len() < 5 * SEALED_PART_IDS + 17 || !s.tree.contains_key(open_part_key(7)).unwrap() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut ids: Vec<u64> = Vec::new();
        for _ in 0..(state >> 59) + 1 {
            // Every third order finishes a few snapshots later.
            if next.is_multiple_of(3) {
                late.push(next);
            } else {
                ids.push(next);
            }
            next += 1;
        }
        if snapshots % 4 == 3 {
            ids.append(&mut late);
        }
        if let Some(again) = all.iter().next_back() {
            ids.push(*again);
        }
        snapshots += 1;
        let entries = ids
            .iter()
            .map(|id| {
                (
                    SnapshotKey::ArchivedOrder {
                        user: 7,
                        id: *id,
                        status_bit: PAID,
                    },
                    Some(vec![1]),
                )
            })
            .collect();
        s.snapshot(snapshots, entries).unwrap();
        all.extend(ids);
    }
    let sealed = s.tree.scan_prefix(&by_user_key(7, 0)[..10]).count();
    let open = decode_ids(
        7,
        &s.tree.get(open_part_key(7)).unwrap().unwrap_or_default(),
    )
    .unwrap()
    .len();
    // A sealed part holds at least SEALED_PART_IDS ids.
    assert!(
        (4..=all.len() / SEALED_PART_IDS).contains(&sealed),
        "{sealed} sealed parts for {} ids in {snapshots} snapshots",
        all.len()
    );
    assert!((1..SEALED_PART_IDS).contains(&open), "{open} ids open");
    let all: Vec<u64> = all.into_iter().rev().collect();
    let befores: Vec<u64> = (0..=next + 1).step_by(7).chain([u64::MAX]).collect();
    let limits = [0, 1, 2, 20, 127, 128, 129, 300, all.len() + 1];
    assert_pages(&*s.archive(), 7, &all, &befores, &limits);
}

/// A reader racing snapshots that seal open parts never misses an id
/// archived before its read began: the sealed part is written before
/// the open part is removed.
#[test]
fn a_reader_racing_sealing_snapshots_sees_every_id_archived_before_it() {
    use std::sync::atomic::AtomicU64;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SledStore::open(dir.path()).unwrap());
    let archived = Arc::new(AtomicU64::new(0));
    let per_snapshot = SEALED_PART_IDS as u64 / 2 + 1;
    let snapshots = 120u64;
    let writer = {
        let (s, archived) = (s.clone(), archived.clone());
        std::thread::spawn(move || {
            for n in 0..snapshots {
                let ids = n * per_snapshot + 1..=(n + 1) * per_snapshot;
                let entries = ids
                    .clone()
                    .map(|id| {
                        (
                            SnapshotKey::ArchivedOrder {
                                user: 7,
                                id,
                                status_bit: PAID,
                            },
                            Some(vec![1]),
                        )
                    })
                    .collect();
                s.snapshot(n + 1, entries).unwrap();
                archived.store(*ids.end(), Ordering::SeqCst);
            }
        })
    };
    let a = s.archive();
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let before = archived.load(Ordering::SeqCst);
        let ids = a.user_orders(7, u64::MAX, usize::MAX).unwrap();
        let mut seen: Vec<u64> = ids.into_iter().filter(|id| *id <= before).collect();
        seen.reverse();
        assert_eq!(seen, Vec::from_iter(1..=before), "read {reads}");
        reads += 1;
        if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(archived.load(Ordering::SeqCst), snapshots * per_snapshot);
    assert!(reads > snapshots, "{reads} reads");
}

/// Every page of user `user`'s archived orders, for each cursor and
/// limit, is the model's: `newest_first` below the cursor, `limit` of them.
fn assert_pages(
    a: &dyn Archive,
    user: u64,
    newest_first: &[u64],
    befores: &[u64],
    limits: &[usize],
) {
    for &before in befores {
        for &limit in limits {
            let expected: Vec<u64> = newest_first
                .iter()
                .copied()
                .filter(|id| *id < before)
                .take(limit)
                .collect();
            assert_eq!(
                a.user_orders(user, before, limit).unwrap(),
                expected,
                "before {before}, limit {limit}"
            );
        }
    }
}

/// History chunks are archived in groups of [`HISTORY_GROUP_CHUNKS`]
/// per key, across snapshots and group boundaries, a redone chunk
/// replaced by the same bytes; a chunk a store wrote before groups
/// (one key per chunk) still reads.
#[test]
fn history_chunks_are_archived_in_groups_and_old_single_chunks_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let frame = |user: u64, chunk: u64| format!("history {user}/{chunk}").into_bytes();
    let snapshots: [&[(u64, u64)]; 3] = [
        &[(5, 0), (5, 1), (5, 2), (6, 0)],
        &[(5, 2), (5, 3), (5, 4), (6, 1)],
        &[(5, 5), (5, 9), (6, 1)],
    ];
    for (i, chunks) in snapshots.iter().enumerate() {
        let entries = chunks
            .iter()
            .map(|&(user, chunk)| {
                (
                    SnapshotKey::ArchivedHistory(user, chunk),
                    Some(frame(user, chunk)),
                )
            })
            .collect();
        s.snapshot(i as u64 + 1, entries).unwrap();
    }
    // As a store from before groups wrote it.
    s.tree.insert(chunk_key(5, 12), frame(5, 12)).unwrap();
    let a = s.archive();
    for (user, chunk) in [
        (5, 0),
        (5, 1),
        (5, 2),
        (5, 3),
        (5, 4),
        (5, 5),
        (5, 9),
        (6, 0),
        (6, 1),
        (5, 12),
    ] {
        assert_eq!(
            a.history_chunk(user, chunk).unwrap(),
            Some(frame(user, chunk)),
            "user {user}, chunk {chunk}"
        );
    }
    for (user, chunk) in [(5, 6), (5, 8), (5, 10), (6, 2), (7, 0)] {
        assert_eq!(
            a.history_chunk(user, chunk).unwrap(),
            None,
            "user {user}, chunk {chunk}"
        );
    }
    // Chunks 0-3, 4-7 and 8-11 of user 5, 0-3 of user 6.
    assert_eq!(s.tree.scan_prefix(ARCHIVED_HISTORY_GROUP).count(), 4);
    let group = s.tree.get(group_key(5, 2)).unwrap().unwrap();
    assert_eq!(decode_group(&group).unwrap().len(), 4);
    assert!(matches!(
        decode_group(&group[..group.len() - 1]),
        Err(StorageError::Corrupt(_))
    ));
}

/// A store archived before the index by user existed gets it built
/// from the archived orders at its next open.
#[test]
fn the_index_by_user_is_built_for_a_store_archived_without_it() {
    use crate::store::codec::{self, Kind};
    let dir = tempfile::tempdir().unwrap();
    let order = |id: u64, user: u64| finished_order(id, user, OrderStatus::Paid);
    let placed = [(1, 5), (2, 6), (3, 5), (700, 5), (701, 6)];
    {
        let s = SledStore::open(dir.path()).unwrap();
        let entries = placed
            .iter()
            .map(|(id, user)| {
                (
                    SnapshotKey::ArchivedOrder {
                        user: *user,
                        id: *id,
                        status_bit: PAID,
                    },
                    Some(codec::encode(Kind::Order, &order(*id, *user)).unwrap()),
                )
            })
            .collect();
        s.snapshot(1, entries).unwrap();
        // As the version before the index left it.
        for prefix in [ARCHIVED_BY_USER, OPEN_BY_USER] {
            for k in s.tree.scan_prefix(prefix).keys() {
                s.tree.remove(k.unwrap()).unwrap();
            }
        }
        s.tree.remove(BY_USER_BUILT).unwrap();
        s.tree.flush().unwrap();
        assert_eq!(
            s.archive().user_orders(5, u64::MAX, 9).unwrap(),
            Vec::<u64>::new()
        );
    }
    let s = SledStore::open(dir.path()).unwrap();
    let a = s.archive();
    assert_eq!(a.user_orders(5, u64::MAX, 9).unwrap(), vec![700, 3, 1]);
    assert_eq!(a.user_orders(6, u64::MAX, 9).unwrap(), vec![701, 2]);
    assert_eq!(a.user_orders(5, 700, 1).unwrap(), vec![3]);
}

/// Proves each archived block's statuses are kept with it (committed
/// generations only), and built at open for a store archived without them.
#[test]
fn status_masks_are_kept_with_each_block_and_built_for_a_store_archived_without_them() {
    use crate::store::codec::{self, Kind};
    let dir = tempfile::tempdir().unwrap();
    let order = |id: u64, status: OrderStatus| finished_order(id, 1, status);
    let archived = |orders: &[(u64, OrderStatus)]| -> SnapshotEntries {
        orders
            .iter()
            .map(|&(id, status)| {
                (
                    SnapshotKey::ArchivedOrder {
                        user: 1,
                        id,
                        status_bit: status_bit(status),
                    },
                    Some(codec::encode(Kind::Order, &order(id, status)).unwrap()),
                )
            })
            .collect::<Vec<_>>()
            .into()
    };
    let block = crate::store::ORDER_BLOCK;
    let by_block = |masks: Option<Vec<(u64, u16)>>| -> BTreeMap<u64, u16> {
        let mut all = BTreeMap::new();
        for (b, m) in masks.expect("sled keeps masks") {
            *all.entry(b).or_insert(0) |= m;
        }
        all
    };
    let (paid, cancelled, refunded) = (
        status_bit(OrderStatus::Paid),
        status_bit(OrderStatus::Cancelled),
        status_bit(OrderStatus::Refunded),
    );
    let expected = BTreeMap::from([(0, paid | cancelled | refunded), (3, cancelled)]);
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.snapshot(
            1,
            archived(&[(1, OrderStatus::Paid), (2, OrderStatus::Cancelled)]),
        )
        .unwrap();
        s.snapshot(
            2,
            archived(&[
                (1, OrderStatus::Refunded),
                (3 * block + 5, OrderStatus::Cancelled),
            ]),
        )
        .unwrap();
        assert_eq!(by_block(s.archive().status_masks().unwrap()), expected);
        // An unfinished snapshot's masks are not read, and removed at open.
        let mut mark = 3u64.to_be_bytes().to_vec();
        mark.extend_from_slice(&9u64.to_be_bytes());
        s.tree.insert(UNFINISHED, mark).unwrap();
        s.tree
            .insert(status_mask_key(9, 3), &paid.to_le_bytes())
            .unwrap();
        s.tree.flush().unwrap();
        assert_eq!(by_block(s.archive().status_masks().unwrap()), expected);
    }
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert!(
            !s.tree.contains_key(status_mask_key(9, 3)).unwrap(),
            "tidied"
        );
        assert_eq!(by_block(s.archive().status_masks().unwrap()), expected);
        // As a version before the masks left the store.
        for k in s.tree.scan_prefix(STATUS_MASKS).keys() {
            s.tree.remove(k.unwrap()).unwrap();
        }
        s.tree.remove(STATUS_MASKS_BUILT).unwrap();
        s.tree.flush().unwrap();
    }
    // Built from the blocks as they read now: order 1's later copy
    // (refunded) stands for it, so the paid bit, a hint no longer true, is gone.
    let s = SledStore::open(dir.path()).unwrap();
    assert!(s.tree.contains_key(STATUS_MASKS_BUILT).unwrap());
    assert_eq!(
        by_block(s.archive().status_masks().unwrap()),
        BTreeMap::from([(0, cancelled | refunded), (3, cancelled)])
    );
}

/// A crash while a snapshot's packs were being written: recovery sees
/// the last committed snapshot only, and the next open removes the packs.
#[test]
fn an_unfinished_snapshot_is_invisible_and_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
            .unwrap();
        // What snapshot() does before it commits, then "crashes".
        leave_unfinished(
            &s,
            2,
            &[
                (SnapshotKey::User(1), "u1-new"),
                (SnapshotKey::User(2), "u2"),
            ],
        );
    }
    assert_eq!(
        loaded(dir.path()),
        vec![(SnapshotKey::User(1), "u1".into())]
    );
    assert_eq!(raw(dir.path()).0, BTreeSet::from([1]));
    assert!(!raw(dir.path()).1);
    // The next snapshot reuses generation 2 cleanly.
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.snapshot(5, entries(&[(SnapshotKey::User(3), Some("u3"))]))
            .unwrap();
    }
    assert_eq!(
        loaded(dir.path()),
        vec![
            (SnapshotKey::User(1), "u1".into()),
            (SnapshotKey::User(3), "u3".into())
        ]
    );
}

/// A crash after a merge was committed, before the generations it
/// folded in were removed: the base wins, and the next open tidies.
#[test]
fn a_merge_that_was_not_tidied_is_tidied_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
            .unwrap();
        s.snapshot(
            3,
            entries(&[
                (SnapshotKey::User(1), None),
                (SnapshotKey::User(2), Some("u2")),
            ]),
        )
        .unwrap();
        // What merge() does up to its commit.
        let layout = s.layout();
        s.tree.insert(UNFINISHED, &3u64.to_be_bytes()).unwrap();
        let mut w = PackWriter::new(&s.tree, 3);
        s.merged(&layout, |k, v| w.push(k, Some(v))).unwrap();
        let bytes = w.finish().unwrap();
        s.commit(Layout {
            generation: 3,
            base: 3,
            base_bytes: bytes,
            newer_bytes: 0,
            ..layout
        })
        .unwrap();
    }
    assert_eq!(raw(dir.path()).0, BTreeSet::from([3]));
    assert_eq!(
        loaded(dir.path()),
        vec![(SnapshotKey::User(2), "u2".into())]
    );
}

/// Stores written before packs: their entries load as the oldest layer
/// and are folded into the first merge.
#[test]
fn entries_from_before_packs_load_and_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        for (key, value) in [
            (SnapshotKey::User(1), "u1"),
            (SnapshotKey::User(2), "u2"),
            (SnapshotKey::Key("a".into()), "ka"),
        ] {
            s.tree.insert(encode_key(&key), value).unwrap();
        }
        s.tree.insert(META, &9u64.to_be_bytes()).unwrap();
        s.tree.flush().unwrap();
    }
    let before = vec![
        (SnapshotKey::User(1), "u1".to_string()),
        (SnapshotKey::User(2), "u2".into()),
        (SnapshotKey::Key("a".into()), "ka".into()),
    ];
    assert_eq!(loaded(dir.path()), before);
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().snapshot_seq, 9);
        s.snapshot(
            12,
            entries(&[
                (SnapshotKey::User(1), Some("u1-new")),
                (SnapshotKey::Key("a".into()), None),
            ]),
        )
        .unwrap();
    }
    let after = vec![
        (SnapshotKey::User(1), "u1-new".to_string()),
        (SnapshotKey::User(2), "u2".into()),
    ];
    assert_eq!(loaded(dir.path()), after);
    assert_eq!(raw(dir.path()).2, 3, "not merged yet");
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.merge(s.layout()).unwrap();
    }
    assert_eq!(loaded(dir.path()), after);
    assert_eq!(raw(dir.path()).2, 0, "folded into the base");
}

/// Hundreds of snapshots of random changes, reopening now and then:
/// what loads is always the model, and merges keep the generations few.
#[test]
fn random_snapshots_load_as_the_model_through_merges_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<SnapshotKey, Vec<u8>> = BTreeMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut store = SledStore::open(dir.path()).unwrap();
    for seq in 1..=300u64 {
        let mut changes = SnapshotEntries::new();
        for _ in 0..next(40) {
            let key = match next(3) {
                0 => SnapshotKey::User(1 + next(50)),
                1 => SnapshotKey::Order(1 + next(200)),
                _ => SnapshotKey::Key(format!("key-{}", next(30))),
            };
            let value = (next(5) > 0).then(|| vec![seq as u8; 1 + next(3000) as usize]);
            match &value {
                Some(v) => model.insert(key.clone(), v.clone()),
                None => model.remove(&key),
            };
            changes.push(key, value.as_deref());
        }
        store.snapshot(seq, changes).unwrap();
        if seq % 37 == 0 {
            drop(store);
            store = SledStore::open(dir.path()).unwrap();
        }
        let loaded = store.load().unwrap();
        assert_eq!(loaded.snapshot_seq, seq);
        let got: BTreeMap<_, _> = loaded.snapshots.into_iter().collect();
        assert_eq!(got, model, "after snapshot {seq}");
    }
    let layout = store.layout();
    assert!(layout.base > 1, "merged at least once: {layout:?}");
    assert!(layout.generation - layout.base < GENERATIONS_MAX);
}

/// A snapshot that failed part way is tidied by the next one in the
/// same process, which reuses its generation cleanly: snapshots go on
/// after a passing failure, with no restart.
#[test]
fn the_snapshot_after_a_failed_one_tidies_it_and_snapshots_go_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.snapshot(2, entries(&[(SnapshotKey::User(1), Some("u1"))]))
            .unwrap();
        // What a failure part way leaves: the mark and packs of generation 2.
        leave_unfinished(&s, 2, &[(SnapshotKey::User(9), "stale")]);
        s.needs_tidy.store(true, Ordering::Release);
        s.snapshot(3, entries(&[(SnapshotKey::User(2), Some("u2"))]))
            .unwrap();
        assert!(!s.needs_tidy.load(Ordering::Acquire));
    }
    let s = SledStore::open(dir.path()).unwrap();
    drop(s);
    assert_eq!(
        loaded(dir.path()),
        vec![
            (SnapshotKey::User(1), "u1".into()),
            (SnapshotKey::User(2), "u2".into())
        ]
    );
}
