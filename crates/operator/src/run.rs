//! `azml-operator run`: the controllers, with leader election and health endpoints (`azml-operator plan`, the dry
//! run, is `plan_command`; it shares this module's configuration and errors).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::v1alpha1::MlCompute;
use crate::api::v1alpha1::MlOnlineEndpoint;
use crate::azure::{ArmError, AzureCloud};
use crate::cli::{AzureArgs, RunArgs};
use crate::controller::{self, key_signals};
use crate::leader::{self, LeaderElection};
use crate::metrics::{self, Health};
use crate::reconciler::{self, ControllerConfig, Shell};

/// Errors of the `run` and `plan` commands.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration was found.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server could not be reached or refused a request.
    #[error("Kubernetes API request failed: {0}")]
    Api(#[source] kube::Error),
    /// The health endpoint could not listen.
    #[error("cannot serve health endpoints on {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The leader-election settings are invalid.
    #[error(transparent)]
    LeaderElection(crate::leader::LeaderError),
    /// Waiting for the termination signal failed.
    #[error("cannot listen for termination signals: {0}")]
    Signal(#[source] std::io::Error),
    /// The Azure settings are invalid (endpoint not HTTPS, unreadable CA file, ...).
    #[error("invalid Azure settings: {0}")]
    AzureConfig(#[source] Box<ArmError>),
    /// The object to plan could not be read.
    #[error("cannot read the object to plan from {path}: {reason}")]
    Input {
        /// File name (or "-").
        path: String,
        /// Why.
        reason: String,
    },
    /// The live object to plan does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFoundKind { kind: String, namespace: String, name: String },
    /// Observing Azure for the plan failed.
    #[error("cannot compute the plan: {0}")]
    Plan(#[source] Box<reconciler::error::Error>),
    /// The plan could not be printed.
    #[error("cannot print the plan: {0}")]
    Output(#[source] serde_json::Error),
}

/// The cloud described by the Azure flags.
pub fn cloud(args: &AzureArgs) -> Result<AzureCloud, RunError> {
    let cloud = AzureCloud::custom(args.authority_host.as_str(), args.arm_endpoint.as_str())
        .map_err(|e| RunError::AzureConfig(Box::new(e)))?;
    match &args.extra_ca_file {
        Some(path) => cloud.with_extra_root_ca_file(path).map_err(|e| RunError::AzureConfig(Box::new(e))),
        None => Ok(cloud),
    }
}

pub(crate) fn base_config(args: &AzureArgs) -> Result<ControllerConfig, RunError> {
    let mut config = ControllerConfig::new(cloud(args)?);
    config.operator_namespace = args.operator_namespace.clone();
    config.federated_token_file = args.federated_token_file.clone();
    Ok(config)
}

/// The controller settings described by the `run` flags.
pub fn controller_config(args: &RunArgs) -> Result<ControllerConfig, RunError> {
    let mut config = base_config(&args.azure)?;
    config.resync_period = args.resync_period;
    config.stalled_requeue = args.resync_period;
    config.concurrency = args.concurrency;
    config.lro_poll_min = args.lro_poll_min;
    config.lro_poll_max = args.lro_poll_max.max(args.lro_poll_min);
    config.lro_timeout = args.lro_timeout;
    config.principal_wait = args.principal_wait;
    config.key_signal_interval = args.key_signal_interval;
    config.watch_namespaces = args.watch_namespaces.clone();
    Ok(config)
}

/// Serves health and metrics, connects, checks the CRDs and runs the controller (as leader, or standby with
/// leader election) until Ctrl-C / SIGTERM; then drains in-flight reconciles and releases the lease.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let config = controller_config(&args)?;
    let election = leader_election(&args)?;
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .map_err(|source| RunError::Health { addr: args.health_addr, source })?;
    let server_stop = CancellationToken::new();
    let server =
        {
            let stop = server_stop.clone();
            tokio::spawn(metrics::serve(listener, health.clone(), config.metrics.clone(), async move {
                stop.cancelled().await
            }))
        };

    let client = Client::try_default().await.map_err(RunError::Client)?;
    let version = client.apiserver_version().await.map_err(RunError::Api)?;
    info!(server = %version.git_version, "connected to the Kubernetes API server");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for expected in crate::api::all_crds() {
        let name = expected.name_any();
        match crds.get_opt(&name).await.map_err(RunError::Api)? {
            Some(_) => info!(crd = %name, "CRD installed"),
            None => warn!(crd = %name, "CRD missing: install it with `azml-operator crd | kubectl apply -f -`"),
        }
    }
    health.set_ready(true);

    let shutdown = CancellationToken::new();
    let signal = {
        let (shutdown, health) = (shutdown.clone(), health.clone());
        tokio::spawn(async move {
            let result = shutdown_signal().await;
            info!("shutting down");
            // Unready at once: the drain may take the whole shutdown timeout.
            health.set_ready(false);
            shutdown.cancel();
            result
        })
    };
    run_controller(client, config, election, args.shutdown_timeout, shutdown).await?;
    health.set_ready(false);
    server_stop.cancel();
    let _ = server.await;
    if signal.is_finished() {
        signal.await.map_err(|e| RunError::Signal(std::io::Error::other(e)))?.map_err(RunError::Signal)?;
    } else {
        signal.abort();
    }
    Ok(())
}

/// The leader-election settings of the `run` flags (None when leader election is off).
pub fn leader_election(args: &RunArgs) -> Result<Option<LeaderElection>, RunError> {
    if !args.leader.leader_elect {
        return Ok(None);
    }
    let identity = args.leader.leader_election_identity.clone().unwrap_or_else(leader::default_identity);
    let mut election = LeaderElection::new(args.azure.operator_namespace.clone(), identity);
    election.lease_name = args.leader.leader_election_lease.clone();
    election.lease_duration = args.leader.leader_election_lease_duration;
    election.renew_margin = args.leader.leader_election_renew_margin;
    election.drain_timeout = args.shutdown_timeout;
    election.validate().map_err(RunError::LeaderElection)?;
    Ok(Some(election))
}

/// Runs the controller until `shutdown`, as elected leader when `election` is set. After `shutdown`, in-flight
/// reconciles get `drain` to finish (a stuck one is dropped: operations in flight resume from status).
pub async fn run_controller(
    client: Client,
    config: ControllerConfig,
    election: Option<LeaderElection>,
    drain: Duration,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    match election {
        Some(election) => {
            leader::run_elected(client, election, config, shutdown, controllers).await.map_err(RunError::LeaderElection)
        }
        None => {
            // Leader without election: ready once the controllers' watch caches are synced.
            config.metrics.set_leader(true);
            let stop = CancellationToken::new();
            let mut task = tokio::spawn(controllers(client, config, stop.clone()));
            tokio::select! {
                _ = &mut task => return Ok(()),
                _ = shutdown.cancelled() => stop.cancel(),
            }
            if tokio::time::timeout(drain, &mut task).await.is_err() {
                warn!("in-flight reconciles did not finish in time; dropping them (they resume from status)");
                task.abort();
            }
            Ok(())
        }
    }
}

/// Runs every controller until `shutdown` is cancelled, then lets running reconciles finish and returns: the
/// MlWorkspace, MlOnlineEndpoint, MlCompute and MlConnection controllers (each in the reconciler shell) and the storage-key watcher
/// that wakes workspaces. They run in one task: same leader election (aborting it stops them all), shutdown and
/// metrics.
///
/// This is what `azml-operator run`, leader election, the sandbox and the integration tests call.
pub async fn controllers(client: Client, config: ControllerConfig, shutdown: CancellationToken) {
    info!(arm_endpoint = %config.arm.cloud.arm_endpoint, "starting the controllers");
    let workspaces = std::sync::Arc::new(controller::Context::new(client.clone(), config.clone()));
    let endpoints = std::sync::Arc::new(Shell::<MlOnlineEndpoint>::new(client.clone(), config.clone()));
    let computes = std::sync::Arc::new(Shell::<MlCompute>::new(client.clone(), config.clone()));
    let connections = std::sync::Arc::new(Shell::<crate::api::v1alpha1::MlConnection>::new(client, config.clone()));
    let watcher_config = key_signals::WatcherConfig {
        interval: config.key_signal_interval,
        lookback: key_signals::ACTIVITY_LOG_LOOKBACK,
    };
    let watcher_stop = shutdown.child_token();
    let watcher = tokio::spawn(key_signals::watch(workspaces.keys.clone(), watcher_config, watcher_stop.clone()));
    futures::future::join4(
        reconciler::run(workspaces, shutdown.clone()),
        reconciler::run(endpoints, shutdown.clone()),
        reconciler::run(computes, shutdown.clone()),
        reconciler::run(connections, shutdown),
    )
    .await;
    watcher_stop.cancel();
    if let Err(err) = watcher.await {
        warn!(error = %err, "storage-key watcher ended abnormally");
    }
    info!("controllers stopped");
}

/// Ctrl-C, or SIGTERM (what Kubernetes sends on pod deletion).
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
