//! What a run measures besides latencies: the process's CPU, memory and
//! writes, the journal's batches and the data platform's deliveries, each
//! as the difference between two samples around the measured window.

use crate::bench::options::SinkChoice;
use crate::bench::report::{DataPlatformReport, JournalReport, ProcessReport};
use crate::bench::sink::BenchSink;
use crate::bench::target::Target;
use crate::engine::EngineMetrics;
use crate::store::writer::Step;
use std::collections::BTreeMap;
use std::time::Instant;

/// The process at one moment of the run.
#[derive(Clone)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    /// Operations finished so far.
    pub(crate) completed: u64,
    pub(crate) usage: Option<crate::process::Usage>,
    pub(crate) threads: Option<crate::process::ThreadCpu>,
}

/// What the process used between two samples.
pub(crate) fn process_delta(
    a: &Sample,
    b: &Sample,
    journal: Option<&JournalReport>,
) -> Option<ProcessReport> {
    let (ua, ub) = (a.usage?, b.usage?);
    let secs = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
    let user = (ub.user_secs - ua.user_secs).max(0.0);
    let system = (ub.system_secs - ua.system_secs).max(0.0);
    let ops = b.completed.saturating_sub(a.completed).max(1);
    let written = match (ua.storage_write_bytes, ub.storage_write_bytes) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64),
        _ => None,
    };
    let by_thread = match (&a.threads, &b.threads) {
        (Some(ta), Some(tb)) => tb
            .since(ta)
            .into_iter()
            .map(|(family, cpu)| (family, cpu * 1e6 / ops as f64))
            .collect(),
        _ => BTreeMap::new(),
    };
    Some(ProcessReport {
        cpu_percent: (user + system) / secs * 100.0,
        system_percent: system / secs * 100.0,
        cpu_us_per_op: (user + system) * 1e6 / ops as f64,
        cpu_us_per_op_by_thread: by_thread,
        storage_write_mib_per_sec: written.map(|w| w / secs / (1024.0 * 1024.0)),
        storage_write_bytes_per_record: written
            .zip(journal)
            .filter(|(_, j)| j.records > 0)
            .map(|(w, j)| w / j.records as f64),
    })
}

/// Resident memory of this process (Linux), in MiB; `None` elsewhere.
pub(crate) fn rss_mib() -> Option<f64> {
    crate::process::resident_bytes().map(|b| b as f64 / (1024.0 * 1024.0))
}

/// The resident memory that setup grows: the server's over HTTP (from its
/// `/metrics`), this process's embedded.
pub(crate) async fn setup_rss(target: &Target) -> Option<f64> {
    match target {
        Target::Embedded(_) => rss_mib(),
        Target::Http(_) => target.server_rss_mib().await,
    }
}

pub(crate) fn journal_delta(a: &EngineMetrics, b: &EngineMetrics, secs: f64) -> JournalReport {
    let records = b.journal_records.saturating_sub(a.journal_records);
    let batches = b.journal_batches.saturating_sub(a.journal_batches);
    let steps = b.journal_steps.since(&a.journal_steps);
    JournalReport {
        records,
        batches,
        records_per_batch: records as f64 / batches.max(1) as f64,
        records_per_sec: records as f64 / secs,
        flushes_per_sec: batches as f64 / secs,
        writer_percent: steps
            .named()
            .map(|(step, us)| (step, us as f64 / 1e4 / secs))
            .collect(),
        write_us_per_batch: steps.get(Step::Writing) as f64 / batches.max(1) as f64,
    }
}

/// The data platform over the measured window, from the engine's counters.
pub(crate) fn data_platform_delta(
    choice: SinkChoice,
    a: &EngineMetrics,
    b: &EngineMetrics,
    secs: f64,
    sink: Option<&BenchSink>,
) -> DataPlatformReport {
    let per_sec = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    DataPlatformReport {
        sink: match choice {
            SinkChoice::File => "file",
            SinkChoice::Http => "http",
            SinkChoice::Off => "off",
        },
        delivered_per_sec: per_sec(a.data_platform_delivered, b.data_platform_delivered),
        added_per_sec: per_sec(a.data_platform_added, b.data_platform_added),
        backlog_at_start: a.outbox_pending,
        backlog_at_end: b.outbox_pending,
        events_in_memory_max: b.data_platform_events_in_memory_max,
        failures: b
            .data_platform_failures
            .saturating_sub(a.data_platform_failures),
        sink_events: sink.map(BenchSink::events),
        sink_refused: sink.map(BenchSink::refused),
    }
}
