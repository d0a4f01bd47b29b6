//! A full disk, for real: the data dir on a small tmpfs (mounting one needs
//! root; elsewhere the test says so and does nothing), filled by another
//! file while the engine writes. Changes are refused with a storage error
//! (503 `STORAGE_UNAVAILABLE`), readiness says so, nothing refused becomes
//! durable, and after a restart with room again every acknowledged change
//! is there and writes go on.

use crate::durability_support::{config, runtime};
use commerce_engine::domain::ids::UserId;
use commerce_engine::domain::money::Krw;
use commerce_engine::engine::{Engine, Error, SystemClock};
use commerce_engine::store::recovery::recover_store;
use commerce_engine::store::{SledStore, StorageError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid reads the process's effective user id and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir().expect("a mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("the filler file");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

fn start(dir: &Path) -> Engine {
    let store = SledStore::open(dir).expect("the store opens");
    crate::engine_support::start(config(), Box::new(store), Arc::new(SystemClock))
}

#[test]
fn a_full_disk_refuses_changes_honestly_and_a_restart_has_every_acknowledged_one() {
    let Some(fs) = Tmpfs::mount("48m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data: PathBuf = fs.path().join("data");
    let rt = runtime();
    let engine = start(&data);
    let users = 20u64;
    let mut acknowledged = vec![0u64; users as usize];
    rt.block_on(async {
        for u in 0..users {
            engine.create_user(&format!("u{u}"), None).await.unwrap();
        }
        for u in 0..users {
            engine
                .charge(UserId(u + 1), Krw(1_000), None)
                .await
                .unwrap();
            acknowledged[u as usize] += 1_000;
        }
    });
    fill(&fs.path().join("filler"));
    let mut refused = 0;
    let mut failed_at = None;
    rt.block_on(async {
        for i in 0..20_000u64 {
            let u = i % users;
            match engine.charge(UserId(u + 1), Krw(1), None).await {
                Ok(_) => acknowledged[u as usize] += 1,
                Err(Error::Storage(e)) => {
                    refused += 1;
                    failed_at.get_or_insert(i);
                    assert!(
                        matches!(e, StorageError::Io(_) | StorageError::Poisoned),
                        "{e:?}"
                    );
                }
                Err(e) => panic!("a full disk answered {e:?}"),
            }
            if refused >= 50 {
                break;
            }
        }
    });
    assert!(
        failed_at.is_some(),
        "the disk filled up within 20,000 charges"
    );
    assert!(engine.is_degraded());
    assert_eq!(engine.readiness().status(), "storage_unavailable");
    // Reads still answer.
    assert!(rt.block_on(engine.balance(UserId(1))).is_ok());
    engine.shutdown();
    drop(engine);

    std::fs::remove_file(fs.path().join("filler")).unwrap();
    {
        let store = SledStore::open(&data).expect("the store reopens");
        let (world, _) = recover_store(&store).expect("it recovers");
        for (u, paid_in) in acknowledged.iter().enumerate() {
            assert_eq!(
                world.users[u].balance,
                Krw(*paid_in),
                "user {}: every acknowledged charge and no refused one",
                u + 1
            );
        }
    }
    let engine = start(&data);
    let after = rt.block_on(engine.charge(UserId(1), Krw(5), None)).unwrap();
    assert_eq!(after.balance, Krw(acknowledged[0] + 5), "writes go on");
    engine.shutdown();
}
