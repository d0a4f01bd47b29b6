//! The operations files in `ops/`: the Prometheus alert rules pass
//! `promtool check rules`, and the Grafana dashboard is JSON whose queries
//! name only families the server exports.

use std::path::Path;
use std::process::Command;

fn ops(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops").join(file)
}

#[test]
fn the_alert_rules_pass_promtool() {
    // proves ops/alerts.yml is valid Prometheus rules (CI installs promtool; locally it is skipped with a note if absent)
    let rules = ops("alerts.yml");
    let run = match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "note: promtool is not installed here; ops/alerts.yml not checked (CI installs it)"
            );
            return;
        }
        Err(e) => panic!("promtool did not run: {e}"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Metric families the server exports (src/http/metrics.rs and the
/// facade's), with their histogram series.
const EXPORTED: &[&str] = &[
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_overloaded_total",
    "http_outcome_unknown_total",
    "journal_flush_seconds_bucket",
    "data_platform_delivered_total",
    "data_platform_failures_total",
    "engine_ready",
    "engine_storage_available",
    "engine_outbox_pending",
    "engine_journal_records_total",
    "engine_journal_batches_total",
    "engine_journal_queued",
    "engine_snapshots_total",
    "engine_users",
    "engine_products",
    "engine_coupon_campaigns",
    "engine_idempotency_keys",
    "commerce_orders_total",
    "commerce_paid_krw_total",
    "commerce_coupons_issued_total",
    "commerce_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

/// The metric names in a PromQL expression: identifiers followed by `{`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if c == '{' && !word.is_empty() {
                names.push(word.clone());
            }
            word.clear();
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_only_exported_families() {
    // proves ops/grafana-dashboard.json parses, has panels, and every selector names a family /metrics exports
    let text = std::fs::read_to_string(ops("grafana-dashboard.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{}", panels.len());
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                assert!(
                    EXPORTED.contains(&name.as_str()),
                    "panel {:?} queries {name}, which /metrics does not export",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked}");
}
