//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one reconciles.
//!
//! The lease itself is managed by the `kube-lease-manager` crate (server-side apply on the Lease, expiry judged from
//! `renewTime + leaseDurationSeconds`, expired leases taken over). This module decides what leadership means for the
//! operator ([`run_elected`]):
//!
//! - a standby replica runs no controller (no watches, no ARM calls) and waits for the lease; it is ready
//!   (`/readyz`) once its lease manager has reached the API server, as a healthy standby;
//! - on becoming leader it starts the controllers it is given (`run::controllers`) and is not ready until the controllers' watch caches have had
//!   their initial list; the lease is renewed `renew_margin` before it expires;
//! - on losing the lease (another replica took it, or a renewal failed) the controller is aborted at once (another
//!   replica may already be reconciling) and the replica goes back to standby with a fresh lease manager;
//! - on shutdown the controller stops taking work and in-flight reconciles finish (bounded by the drain timeout)
//!   while the lease keeps being renewed; then the lease is released so a standby takes over without waiting for
//!   the lease to expire.
//!
//! A leader that dies without releasing (crash, SIGKILL, node loss) is replaced once its lease expires: within
//! the lease duration plus at most one second (the standby's random back-off before taking an expired lease).

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Role;
use crate::reconciler::ControllerConfig;

/// Default lease duration (as client-go's leader election).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default time before expiry at which the leader renews.
pub const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(5);

/// How long releasing the lease may take on shutdown (the drain timeout plus this stays below the grace period).
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Invalid leader-election settings.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease manager works in whole seconds and needs `0 < renew margin < lease duration`.
    #[error(
        "invalid leader election timing: lease duration {duration:?} and renew margin {margin:?} must be whole \
         seconds with 0 < margin < duration"
    )]
    Timing {
        /// Lease duration.
        duration: Duration,
        /// Renew margin.
        margin: Duration,
    },
    /// The identity or lease name is empty.
    #[error("leader election needs a non-empty {0}")]
    Empty(&'static str),
}

/// Leader-election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease (the operator's namespace).
    pub namespace: String,
    /// This replica's identity, unique among replicas (the pod name).
    pub identity: String,
    /// How long a lease stays valid after its last renewal: the longest fail-over after a crash.
    pub lease_duration: Duration,
    /// How long before expiry the leader renews (also the tolerated clock skew between nodes).
    pub renew_margin: Duration,
    /// On shutdown, how long in-flight reconciles may run before they are dropped (they resume from status).
    pub drain_timeout: Duration,
}

impl LeaderElection {
    /// Settings with the defaults: lease `azml-operator`, 15 s duration, renewed 5 s before expiry, 20 s drain.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderElection {
            lease_name: "azml-operator".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_margin: DEFAULT_RENEW_MARGIN,
            drain_timeout: Duration::from_secs(20),
        }
    }

    /// Checks the settings; the lease manager panics on bad timing, so this must pass before it is built.
    pub fn validate(&self) -> Result<(u64, u64), LeaderError> {
        let (duration, margin) = (self.lease_duration, self.renew_margin);
        let whole = |d: Duration| d.subsec_nanos() == 0;
        let (d, m) = (duration.as_secs(), margin.as_secs());
        if !whole(duration) || !whole(margin) || m == 0 || m >= d {
            return Err(LeaderError::Timing { duration, margin });
        }
        if self.identity.trim().is_empty() {
            return Err(LeaderError::Empty("identity"));
        }
        if self.lease_name.trim().is_empty() {
            return Err(LeaderError::Empty("lease name"));
        }
        Ok((d, m))
    }

    async fn manager(
        &self,
        client: Client,
        (duration, margin): (u64, u64),
    ) -> kube_lease_manager::Result<LeaseManager> {
        LeaseManagerBuilder::new(client, &self.lease_name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_field_manager(format!("azml-operator-{}", self.identity))
            .with_duration(duration)
            .with_grace(margin)
            .build()
            .await
    }
}

/// A pod's identity: `POD_NAME` (downward API) when set, else the host name, else a random id.
pub fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

enum SessionEnd {
    Shutdown,
    Lost,
}

/// Runs the controllers (`controllers(client, config, token)`, ended by cancelling `token`: `run::controllers`) only
/// while this replica holds the lease, until `shutdown` is cancelled; then drains and releases the lease. Errors only
/// on invalid settings; API errors are logged and retried.
pub async fn run_elected<C, F>(
    client: Client,
    election: LeaderElection,
    config: ControllerConfig,
    shutdown: CancellationToken,
    controllers: C,
) -> Result<(), LeaderError>
where
    C: Fn(Client, ControllerConfig, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let timing = election.validate()?;
    let metrics = config.metrics.clone();
    // Not ready until the lease manager has reached the API server: a standby that cannot, cannot take over.
    metrics.set_role(Role::Pending);
    info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity,
        "waiting for the leader-election lease");
    loop {
        let manager = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            built = election.manager(client.clone(), timing) => built,
        };
        let manager = match manager {
            Ok(m) => {
                metrics.set_role(Role::Standby);
                m
            }
            Err(err) => {
                metrics.set_role(Role::Pending);
                warn!(error = %err, "cannot set up the leader-election lease; retrying");
                if pause(&shutdown, election.lease_duration / 3).await {
                    return Ok(());
                }
                continue;
            }
        };
        let end = session(&manager, &client, &election, &config, &shutdown, &controllers).await;
        metrics.set_role(Role::Pending);
        // Released even after a loss: harmless when another replica holds it (only our own lock is released).
        // Bounded, so that shutdown stays within the pod's grace period when the API server does not answer.
        match tokio::time::timeout(RELEASE_TIMEOUT, manager.release()).await {
            Ok(Ok(())) => info!("leader-election lease released"),
            Ok(Err(err)) => warn!(error = %err, "cannot release the leader-election lease; it expires by itself"),
            Err(_) => warn!("releasing the leader-election lease timed out; it expires by itself"),
        }
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost => {
                if pause(&shutdown, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sleeps `d`; true when shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

type Running = (CancellationToken, JoinHandle<()>);

async fn session<C, F>(
    manager: &LeaseManager,
    client: &Client,
    election: &LeaderElection,
    config: &ControllerConfig,
    shutdown: &CancellationToken,
    controllers: &C,
) -> SessionEnd
where
    C: Fn(Client, ControllerConfig, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut running: Option<Running> = None;
    let end = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            changed = manager.changed() => match changed {
                Ok(true) => {
                    info!(identity = %election.identity, "became the leader: starting the controller");
                    config.metrics.set_leader(true);
                    let token = CancellationToken::new();
                    let task = tokio::spawn(controllers(client.clone(), config.clone(), token.clone()));
                    running = Some((token, task));
                }
                Ok(false) => {
                    warn!(identity = %election.identity, "lost the leader-election lease: stopping the controller");
                    config.metrics.set_leader(false);
                    abort(running.take()).await;
                }
                Err(err) => {
                    // The lease may expire while renewals fail: stop reconciling before another replica starts.
                    warn!(error = %err, "leader-election lease error: stopping the controller");
                    abort(running.take()).await;
                    break SessionEnd::Lost;
                }
            },
        }
    };
    if let Some((token, mut task)) = running.take() {
        // Stop taking work; in-flight reconciles finish (each polls an operation at most once, then records it in
        // status) while the lease keeps being renewed.
        token.cancel();
        let deadline = tokio::time::sleep(election.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut task => break,
                _ = &mut deadline => {
                    warn!("in-flight reconciles did not finish in time; dropping them (they resume from status)");
                    abort(Some((token, task))).await;
                    break;
                }
                changed = manager.changed() => if !matches!(changed, Ok(true)) {
                    warn!("lost the lease while draining: dropping in-flight reconciles");
                    abort(Some((token, task))).await;
                    break;
                },
            }
        }
        info!("controller stopped");
    }
    end
}

async fn abort(running: Option<Running>) {
    if let Some((token, task)) = running {
        token.cancel();
        task.abort();
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_validated_before_the_manager_can_panic() {
        let mut e = LeaderElection::new("azml-system", "pod-a");
        assert_eq!(e.validate().expect("defaults are valid"), (15, 5));
        e.renew_margin = Duration::from_secs(15);
        assert!(matches!(e.validate(), Err(LeaderError::Timing { .. })));
        e.renew_margin = Duration::ZERO;
        assert!(matches!(e.validate(), Err(LeaderError::Timing { .. })));
        e.renew_margin = Duration::from_millis(1500);
        assert!(matches!(e.validate(), Err(LeaderError::Timing { .. })));
        e.renew_margin = Duration::from_secs(1);
        e.identity = " ".into();
        assert!(matches!(e.validate(), Err(LeaderError::Empty("identity"))));
    }
}
