//! The embedded engine a run loads: started on a store of the bench's
//! choice, then shut down, recovered from its store and checked.

use crate::bench::options::{BenchArgs, SinkChoice, StoreChoice};
use crate::bench::report::InvariantReport;
use crate::bench::sink::BenchSink;
use crate::bench::temp_dir;
use crate::check::{Acknowledged, Expect};
use crate::engine::{DataPlatform, Engine, EngineConfig, SystemClock};
use crate::store::recovery::{recover_store, RecoveryError};
use crate::store::{MemoryStore, SledStore, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// An embedded engine and where its data lives.
pub(crate) struct Embedded {
    pub(crate) engine: Engine,
    pub(crate) dir: PathBuf,
    pub(crate) remove_dir: bool,
    pub(crate) memory: Option<MemoryStore>,
    /// The data platform of `--data-platform http`.
    pub(crate) sink: Option<Arc<BenchSink>>,
}

impl Embedded {
    pub(crate) fn start(args: &BenchArgs) -> Result<Embedded, crate::CliError> {
        let (dir, remove_dir) = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), false)
            }
            None => (temp_dir("commerce-bench")?, true),
        };
        let mut config = EngineConfig::default();
        if let Some(n) = args.arbiters {
            config.arbiter_count = n.max(1);
        }
        if let Some(n) = args.snapshot_every_records {
            config.journal.snapshot_every_records = n.max(1);
        }
        let down_for = args.data_platform_down_secs.map(Duration::from_secs_f64);
        let sink = match args.data_platform {
            SinkChoice::Http => Some(Arc::new(BenchSink::start(down_for)?)),
            _ => None,
        };
        config.data_platform = match (args.data_platform, &sink) {
            (SinkChoice::File, _) => DataPlatform::File(dir.join("data-platform.jsonl")),
            (SinkChoice::Http, Some(sink)) => DataPlatform::Http(sink.url.clone()),
            _ => DataPlatform::Off,
        };
        let (store, memory): (Box<dyn Store>, _) = match args.store {
            StoreChoice::Sled => (Box::new(SledStore::open(&dir)?), None),
            StoreChoice::Memory => {
                let m = MemoryStore::new();
                (Box::new(m.clone()), Some(m))
            }
        };
        let engine = Engine::start(config, store, Arc::new(SystemClock))?;
        Ok(Embedded {
            engine,
            dir,
            remove_dir,
            memory,
            sink,
        })
    }

    /// Shuts the engine down, recovers its store, and checks the result.
    pub(crate) fn finish(self, acked: &Acknowledged) -> InvariantReport {
        self.engine.shutdown();
        drop(self.engine);
        let recovered = match &self.memory {
            Some(m) => recover_store(m),
            None => match SledStore::open(&self.dir) {
                Ok(s) => recover_store(&s),
                Err(e) => Err(RecoveryError::Storage(e)),
            },
        };
        let refunded = acked.orders.iter().filter(|o| o.1 == Expect::REFUNDED);
        let refunded = refunded.count();
        let report = match recovered {
            Ok((world, r)) => InvariantReport {
                checked: true,
                violations: acked.check_world(&world),
                unreachable: Vec::new(),
                summary: format!(
                    "recovered {} records after snapshot {}; every invariant and every acknowledged effect checked ({} paid orders, {} of them refunded)",
                    r.records_replayed, r.snapshot_seq, acked.orders.len(), refunded
                ),
            },
            Err(RecoveryError::Invariants(v)) => InvariantReport {
                checked: true,
                violations: v,
                unreachable: Vec::new(),
                summary: "recovery found the state inconsistent".into(),
            },
            Err(e) => InvariantReport {
                checked: true,
                violations: vec![format!("recovery failed: {e}")],
                unreachable: Vec::new(),
                summary: "the store could not be recovered".into(),
            },
        };
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        report
    }
}
