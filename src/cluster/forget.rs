//! `commerce-engine cluster-forget`: removes a decommissioned node's
//! report from `<cluster>-nodes`, so that the leader's trim of the journal
//! stream no longer waits for it (docs/cluster.md, "Trimming the stream").
//!
//! It refuses to forget the node that holds the lease: the leader reports
//! again within seconds, and forgetting it is never what an operator
//! means. A node that still runs reports again too: stop it first. A
//! forgotten node that starts again with its old data dir follows on if
//! the stream still holds what it needs, and otherwise stops with a
//! message asking for a copy of a current node's data dir.

use super::nodes::{lease_holder, NodeReports};
use super::ClusterName;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct ForgetArgs {
    /// The cluster's NATS servers (nats://HOST:PORT, comma-separated), as given to `serve`.
    #[arg(long, env = "COMMERCE_CLUSTER", value_delimiter = ',', required = true)]
    pub cluster: Vec<String>,
    /// The cluster's name, as given to `serve`.
    #[arg(long, env = "COMMERCE_CLUSTER_NAME", default_value = "commerce")]
    pub cluster_name: String,
    /// The node whose report is removed for good.
    #[arg(long)]
    pub node_id: String,
}

/// Runs `cluster-forget`; a sentence on stdout for what it did.
pub fn run(args: ForgetArgs) -> Result<ExitCode, crate::CliError> {
    let name = ClusterName::new(&args.cluster_name).map_err(|e| format!("--cluster-name: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let said = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), forget(&args, &name))
            .await
            .unwrap_or_else(|_| Err("the NATS servers did not answer within 30 s".into()))
    })?;
    println!("{said}");
    Ok(ExitCode::SUCCESS)
}

async fn forget(args: &ForgetArgs, name: &ClusterName) -> Result<String, crate::CliError> {
    let node = args.node_id.as_str();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(args.cluster.as_slice())
        .await
        .map_err(|e| format!("no NATS server answered at {}: {e}", args.cluster.join(",")))?;
    let js = async_nats::jetstream::new(client);
    if let Some(holder) = lease_holder(&js, name).await? {
        if holder.node == node {
            return Err(format!(
                "node {node} holds the lease (term {}): the current leader is never forgotten; stop it first and let a standby take over",
                holder.term
            )
            .into());
        }
    }
    let reports = NodeReports::existing(&js, name).await?;
    match reports.read(node).await? {
        None => Ok(format!(
            "node {node} has no report in cluster {}: nothing to forget",
            name.as_str()
        )),
        Some(report) => {
            reports.forget(node).await?;
            let was = match report {
                Ok(r) => format!("stream sequence {}", r.stream_seq),
                Err(why) => why,
            };
            Ok(format!(
                "forgot node {node} (it reported {was}): the journal stream's trimming no longer waits for it"
            ))
        }
    }
}
