//! The settings every controller shares, parsed once at start.

use std::path::PathBuf;
use std::time::Duration;

use super::credentials::CredentialSources;
use crate::azure::{ArmClientOptions, AzureCloud};

/// Everything the controllers need to know, parsed once at start (`azml-operator run` builds it from flags; tests
/// and the sandbox build it directly).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// How often an unchanged workspace is compared with Azure (one GET per period).
    pub resync_period: Duration,
    /// How many workspaces are reconciled at once (the same one is never reconciled twice at once).
    pub concurrency: u16,
    /// ARM client settings: the cloud (ARM endpoint, authority host, extra trusted roots), retries, throttling.
    pub arm: ArmClientOptions,
    /// Namespace the operator runs in: the only one it reads credential Secrets from.
    pub operator_namespace: String,
    /// Namespaces to watch; empty means all.
    pub watch_namespaces: Vec<String>,
    /// Federated token file for workload-identity bindings (`AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<PathBuf>,
    /// Lower bound of the delay between polls of a long-running operation.
    pub lro_poll_min: Duration,
    /// Upper bound of the delays the controller chooses itself while waiting on Azure. Azure's `Retry-After` (up to
    /// 600 s) is honoured in full, never shortened to this bound.
    pub lro_poll_max: Duration,
    /// How long an operation in flight is polled before the controller forgets it and looks at Azure afresh (it
    /// never re-sends the write because of this: Azure still shows the resource as being provisioned).
    pub lro_timeout: Duration,
    /// First retry delay after a transient failure; doubles per consecutive failure (with jitter).
    pub error_backoff_base: Duration,
    /// Cap of the transient-failure backoff.
    pub error_backoff_max: Duration,
    /// How long a stalled workspace waits before it is looked at again without any change.
    pub stalled_requeue: Duration,
    /// How long a role assignment whose principal Azure does not know yet (PrincipalNotFound: directory
    /// replication) is retried before it is reported Failed.
    pub principal_wait: Duration,
    /// Prometheus metrics (also wired into `arm.metrics`); steps count drift, key resyncs, role changes here.
    pub metrics: crate::metrics::Metrics,
    /// How often the storage-key watcher queries each subscription's activity log (`controller::key_signals`).
    pub key_signal_interval: Duration,
    /// The MlWorkspace watch's events, for the controllers of the kinds that live in a workspace (one watch of
    /// MlWorkspaces for all of them); shared by every clone of this configuration.
    pub workspace_feed: super::watch_cache::WorkspaceFeed,
}

impl ControllerConfig {
    /// Defaults for a cloud: resync 1 h, concurrency 32, LRO polls between 5 s and 60 s, backoff 5 s .. 5 min.
    pub fn new(cloud: AzureCloud) -> Self {
        let resync_period = Duration::from_secs(3600);
        let metrics = crate::metrics::Metrics::new();
        ControllerConfig {
            resync_period,
            concurrency: 32,
            arm: ArmClientOptions { cloud, metrics: Some(metrics.arm()), ..Default::default() },
            operator_namespace: "azml-system".into(),
            watch_namespaces: Vec::new(),
            federated_token_file: None,
            lro_poll_min: Duration::from_secs(5),
            lro_poll_max: Duration::from_secs(60),
            lro_timeout: Duration::from_secs(2 * 3600),
            error_backoff_base: Duration::from_secs(5),
            error_backoff_max: Duration::from_secs(300),
            stalled_requeue: resync_period,
            principal_wait: Duration::from_secs(600),
            metrics,
            key_signal_interval: Duration::from_secs(60),
            workspace_feed: super::watch_cache::WorkspaceFeed::default(),
        }
    }

    /// The operator's wall clock (status timestamps, rotation schedules, activity-log windows, operations in
    /// flight): the ARM client's, so both agree. Set it through `arm.clock`.
    pub fn clock(&self) -> &crate::clock::Clock {
        &self.arm.clock
    }

    pub(crate) fn credential_sources(&self) -> CredentialSources {
        CredentialSources {
            operator_namespace: self.operator_namespace.clone(),
            federated_token_file: self.federated_token_file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let c = ControllerConfig::new(AzureCloud::public());
        assert_eq!(c.resync_period, Duration::from_secs(3600));
        assert_eq!(c.stalled_requeue, c.resync_period);
        assert!(c.lro_poll_min <= c.lro_poll_max);
        assert!(c.error_backoff_base <= c.error_backoff_max);
    }
}
