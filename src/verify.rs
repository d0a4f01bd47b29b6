//! `commerce-engine verify`: recovers a data dir without starting the
//! engine (no actors, no journal writer, no delivery), checks every
//! invariant, and prints a summary.
//!
//! Exit status: 0 when the data recovers and every invariant holds; 1 when
//! it recovers but an invariant is violated; 2 when the data cannot be read
//! (missing, corrupt, or a journal that does not replay).
//!
//! It writes nothing to the data dir. sled 0.34 has no read-only mode:
//! opening a database may replay its log and write, and takes a lock. So
//! verify copies the `sled` and `sled-journal` directories into a scratch
//! directory, opens the copy, and removes it afterwards. Run it on a
//! stopped server's data dir (a copy taken while a server writes may be
//! torn).

use crate::domain::order::OrderStatus;
use crate::domain::world::World;
use crate::store::outbox::{self, OutboxState};
use crate::store::recovery::{recover_store, RecoveryError, RecoveryReport};
use crate::store::sled::DATABASE_DIRS;
use crate::store::{SledStore, StorageError, Store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The data dir to check, as given to `serve`.
    #[arg(long, env = "COMMERCE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where the scratch copy is made (default: the system temp dir); removed afterwards.
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Totals over all products.
#[derive(Debug, Default, Serialize)]
pub struct StockTotals {
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
    pub stocked_total: u64,
}

/// What verify reports about a data dir.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub snapshot_seq: u64,
    pub snapshot_entries: usize,
    pub records_replayed: u64,
    pub last_seq: u64,
    pub users: usize,
    pub products: usize,
    pub coupons: usize,
    pub coupons_issued: usize,
    /// Every order, archived or not (verify loads the archive too).
    pub orders: usize,
    pub orders_by_status: BTreeMap<String, u64>,
    pub balances_total_krw: u64,
    pub stock: StockTotals,
    /// Events for the data platform not yet delivered, as the engine would
    /// find them at start (the outbox, events it would derive again from
    /// the journal, and an older data dir's pending orders).
    pub outbox_pending: u64,
    pub dead_letters: u64,
    /// The file sink's recorded length.
    pub sink_len: u64,
    /// Idempotency keys recorded since the last snapshot (older ones are
    /// in the key tables, which recovery does not read).
    pub idempotency_keys: usize,
    pub violations: Vec<String>,
}

impl Summary {
    pub fn of(world: &World, report: &RecoveryReport, outbox: &OutboxSummary) -> Summary {
        let mut orders_by_status: BTreeMap<String, u64> = OrderStatus::ALL
            .iter()
            .map(|&status| (status_name(status), 0))
            .collect();
        for o in world.orders.values() {
            *orders_by_status.entry(status_name(o.status)).or_default() += 1;
        }
        let mut stock = StockTotals::default();
        for p in &world.products {
            stock.available += p.stock;
            stock.reserved += p.reserved;
            stock.sold += p.sold;
            stock.stocked_total += p.stocked_total;
        }
        Summary {
            snapshot_seq: report.snapshot_seq,
            snapshot_entries: report.snapshot_entries,
            records_replayed: report.records_replayed,
            last_seq: report.last_seq,
            users: world.users.len(),
            products: world.products.len(),
            coupons: world.campaigns.len(),
            coupons_issued: world
                .campaigns
                .iter()
                .map(|c| c.issued.len() as usize)
                .sum(),
            orders: world.orders.len(),
            orders_by_status,
            balances_total_krw: world.users.iter().map(|u| u.balance.0).sum(),
            stock,
            outbox_pending: outbox.pending(world),
            dead_letters: outbox.state.dead_letters(),
            sink_len: outbox.state.file_len.unwrap_or(world.meta.sink_len),
            idempotency_keys: world.dirty.keys.len(),
            violations: world.violations(),
        }
    }

    fn print_text(&self, data_dir: &Path) {
        let statuses: Vec<String> = self
            .orders_by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        println!("data dir          {}", data_dir.display());
        println!(
            "snapshot          seq {} ({} entries)",
            self.snapshot_seq, self.snapshot_entries
        );
        println!(
            "journal           {} records replayed, last seq {}",
            self.records_replayed, self.last_seq
        );
        println!("users             {}", self.users);
        println!(
            "products          {} (stock {}, reserved {}, sold {}, stocked {})",
            self.products,
            self.stock.available,
            self.stock.reserved,
            self.stock.sold,
            self.stock.stocked_total
        );
        println!(
            "coupons           {} campaigns, {} issued",
            self.coupons, self.coupons_issued
        );
        println!("orders            {}: {}", self.orders, statuses.join(", "));
        println!("balances total    {} KRW", self.balances_total_krw);
        println!(
            "outbox pending    {} ({} dead letters, file sink length {})",
            self.outbox_pending, self.dead_letters, self.sink_len
        );
        println!("keys since snapshot {}", self.idempotency_keys);
        if self.violations.is_empty() {
            println!("invariants        ok");
        } else {
            println!("invariants        {} VIOLATED", self.violations.len());
            for v in &self.violations {
                println!("  - {v}");
            }
        }
    }
}

/// A status as the API writes it (`partially_refunded`).
fn status_name(s: OrderStatus) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{s:?}"),
    }
}

const EXIT_VIOLATION: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

pub fn run(args: VerifyArgs) -> Result<ExitCode, crate::CliError> {
    let sled_dir = args.data_dir.join(DATABASE_DIRS[0]);
    if !sled_dir.is_dir() {
        eprintln!(
            "verify: no database at {} (is --data-dir right?)",
            sled_dir.display()
        );
        return Ok(ExitCode::from(EXIT_UNREADABLE));
    }
    let scratch = Scratch::new(args.scratch_dir.as_deref())?;
    for name in DATABASE_DIRS {
        // A store written before the journal had a database of its own has only the main one.
        let from = args.data_dir.join(name);
        if from.is_dir() {
            copy_dir(&from, &scratch.path.join(name))?;
        }
    }
    let outcome = check(&scratch.path);
    drop(scratch);
    match outcome {
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                summary.print_text(&args.data_dir);
            }
            Ok(if summary.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_VIOLATION)
            })
        }
        Err(Failure::Violations(violations)) => {
            if args.json {
                let v = serde_json::json!({ "violations": violations });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            eprintln!("verify: the recovered state violates invariants:");
            for v in &violations {
                eprintln!("  - {v}");
            }
            Ok(ExitCode::from(EXIT_VIOLATION))
        }
        Err(Failure::Unreadable(why)) => {
            eprintln!("verify: the data cannot be read: {why}");
            Ok(ExitCode::from(EXIT_UNREADABLE))
        }
    }
}

enum Failure {
    Violations(Vec<String>),
    Unreadable(String),
}

/// The outbox's counters, and what a start would add to them.
pub struct OutboxSummary {
    pub state: OutboxState,
    /// Payments and refunds in the journal above the watermark and the snapshot.
    pub rederivable: u64,
}

impl OutboxSummary {
    pub fn read(store: &dyn Store, report: &RecoveryReport) -> Result<OutboxSummary, StorageError> {
        let state = store.outbox().state()?;
        let rederivable = if report.last_seq > state.watermark.max(report.snapshot_seq) {
            outbox::rederivable_events(store, report.snapshot_seq)?
        } else {
            0
        };
        Ok(OutboxSummary { state, rederivable })
    }

    fn pending(&self, world: &World) -> u64 {
        let done = self.state.legacy_through.unwrap_or(0);
        let legacy = world.meta.outbox.iter().filter(|id| id.0 > done).count() as u64;
        self.state.pending() + self.rederivable + legacy
    }
}

/// Opens the copy, loads it and recovers it.
fn check(copy: &Path) -> Result<Summary, Failure> {
    let store = SledStore::open(copy).map_err(|e| Failure::Unreadable(e.to_string()))?;
    // A journal whose records pass their checksums yet do not fit each
    // other may trip an assertion in the domain: report it as unreadable.
    // Recovered whole: archived orders and history are checked too.
    let recovered =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recover_store(&store)))
            .map_err(|_| Failure::Unreadable("replay panicked (see above)".into()))?;
    match recovered {
        Ok((world, report)) => {
            let outbox = OutboxSummary::read(&store, &report)
                .map_err(|e| Failure::Unreadable(e.to_string()))?;
            Ok(Summary::of(&world, &report, &outbox))
        }
        Err(RecoveryError::Invariants(v)) => Err(Failure::Violations(v)),
        Err(e) => Err(Failure::Unreadable(e.to_string())),
    }
}

/// A scratch directory, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(base: Option<&Path>) -> std::io::Result<Scratch> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!("commerce-verify-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Copies a directory tree (sled's: plain files and subdirectories).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
