//! Operational telemetry: Prometheus metrics, the health endpoints and the per-reconcile span summary.
//!
//! - [`Metrics`] owns the registry and every metric of the operator. A [`crate::reconciler::ControllerConfig`]
//!   carries one (also wired into the ARM client), so any reconcile step can count things through
//!   `ctx.config.metrics`: [`Metrics::drift_detected`], [`Metrics::keys_resynced`],
//!   [`Metrics::role_assignment_changed`].
//! - [`serve`] answers `/healthz` (the process is alive), `/readyz` ([`readiness`]: connected, the CRDs checked,
//!   and either a healthy standby or a leader whose controllers' watch caches have had their initial list) and
//!   `/metrics` (Prometheus text format).
//! - [`ControllerScope`] is one running controller's part: its watch cache (for readiness) and its queue of
//!   requested reconciles (`azml_reconcile_queue_depth`). A controller registers one with
//!   [`Metrics::controller_scope`], reports every trigger it receives ([`ControllerScope::requested`]) and requests
//!   the scheduler dropped ([`ControllerScope::dropped`]), and runs inside [`ControllerScope::run`] with its
//!   reflector store; see `run_one` in `src/controller/mod.rs`. A controller that does not register is invisible to
//!   readiness and to the queue metric.
//! - [`instrument_reconcile`] wraps one reconcile: it counts the result, observes the duration, tracks the
//!   reconciles in flight and logs one `reconcile finished` event naming the object and the ARM request ids of the
//!   calls the reconcile made (collected by [`crate::azure::metrics::note_arm_request_id`]). Inside the reconcile, every log line is in the
//!   `reconcile{object}` span and each ARM call in an `arm_call{operation,request_id}` child span.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use kube::runtime::reflector::Store;

use crate::azure::PrometheusArmMetrics;
use crate::azure::metrics::collect_arm_request_ids;
use crate::sync::lock;

/// Outcome of one reconcile, as counted by `azml_reconciles_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    /// The reconcile returned normally (converged, progressing, or stalled and reported in status).
    Success,
    /// The reconcile returned an error and is retried with backoff.
    Error,
}

/// What changed about a role assignment, for `azml_role_assignments_changed_total{change}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoleAssignmentChange {
    /// A missing assignment was created.
    Created,
    /// An assignment no longer in the spec was deleted.
    Deleted,
}

// Lower-case label values, as Prometheus conventions expect.
impl EncodeLabelValue for ReconcileResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
        })
    }
}

impl EncodeLabelValue for RoleAssignmentChange {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(match self {
            RoleAssignmentChange::Created => "created",
            RoleAssignmentChange::Deleted => "deleted",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    change: RoleAssignmentChange,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// What this replica is doing, for `/readyz` and the `azml_leader` gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not known yet: leader election has not reached the API server (or lost it and is setting up again).
    Pending,
    /// Another replica holds the lease: nothing is watched or reconciled here.
    Standby,
    /// This replica holds the lease (or leader election is off): it runs the controllers.
    Leader,
}

/// The state of one registered controller.
#[derive(Debug, Default)]
struct ScopeState {
    name: String,
    synced: bool,
    /// Objects whose reconcile was requested and has not started (`ObjectRef` display form).
    waiting: HashSet<String>,
}

/// Role and controllers of this replica.
#[derive(Debug)]
struct ControllerStates {
    role: Role,
    next_id: u64,
    scopes: BTreeMap<u64, ScopeState>,
    /// Stalled workspaces by uid, and why.
    stalled: HashMap<String, String>,
}

/// Every metric of the operator and the registry that exposes them. Cheap to clone (handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    arm: PrometheusArmMetrics,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    in_flight: Gauge,
    drift: Family<KindLabels, Counter>,
    keys_resynced: Counter,
    role_assignments: Family<ChangeLabels, Counter>,
    leader: Gauge,
    queue_depth: Family<ControllerLabels, Gauge>,
    cache_synced: Family<ControllerLabels, Gauge>,
    keys_resync_failures: Counter,
    stalled: Family<ReasonLabels, Gauge>,
    states: Arc<Mutex<ControllerStates>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric (names are prefixed `azml_`).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let arm = PrometheusArmMetrics::register(&mut registry);
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("azml_reconciles", "MlWorkspace reconciles by result", reconciles.clone());
        // 10 ms .. ~40 s: a reconcile is a handful of ARM calls; one that waits on throttling can take seconds.
        let reconcile_duration = Histogram::new(exponential_buckets(0.01, 2.0, 13));
        registry.register(
            "azml_reconcile_duration_seconds",
            "Duration of MlWorkspace reconciles",
            reconcile_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "azml_reconciles_in_flight",
            "MlWorkspace reconciles running now (at most the configured concurrency)",
            in_flight.clone(),
        );
        let drift = Family::<KindLabels, Counter>::default();
        registry.register(
            "azml_drift_detected",
            "Differences between the spec and Azure found by a resync",
            drift.clone(),
        );
        let keys_resynced = Counter::default();
        registry.register(
            "azml_storage_keys_resynced",
            "Storage account keys re-synchronised into a workspace after a rotation",
            keys_resynced.clone(),
        );
        let role_assignments = Family::<ChangeLabels, Counter>::default();
        registry.register(
            "azml_role_assignments_changed",
            "Role assignments created or deleted by the operator",
            role_assignments.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "azml_leader",
            "1 while this replica holds the leader-election lease, else 0",
            leader.clone(),
        );
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "azml_reconcile_queue_depth",
            "Objects whose reconcile a watch event, a SubscriptionBinding change or a storage-key signal requested and \
             that have not started yet (waiting for a free worker or for the running reconcile of the same object); \
             timed requeues (resyncs, retry backoff) are not counted until they start",
            queue_depth.clone(),
        );
        let cache_synced = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "azml_watch_cache_synced",
            "1 once the controller's watch cache has had its initial list, else 0",
            cache_synced.clone(),
        );
        let keys_resync_failures = Counter::default();
        registry.register(
            "azml_storage_keys_resync_failures",
            "Storage-key resyncs that Azure failed (retried with backoff)",
            keys_resync_failures.clone(),
        );
        let stalled = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "azml_workspaces_stalled",
            "MlWorkspaces whose Stalled condition is True now, by reason (they wait for a change of their spec, binding \
             or credential)",
            stalled.clone(),
        );
        let states =
            ControllerStates { role: Role::Pending, next_id: 0, scopes: BTreeMap::new(), stalled: HashMap::new() };
        Metrics {
            registry: Arc::new(registry),
            arm,
            reconciles,
            reconcile_duration,
            in_flight,
            drift,
            keys_resynced,
            role_assignments,
            leader,
            queue_depth,
            cache_synced,
            keys_resync_failures,
            stalled,
            states: Arc::new(Mutex::new(states)),
        }
    }

    /// The ARM client's metrics hook (`azml_arm_requests_total{operation,status}`, latency, throttling waits).
    pub fn arm(&self) -> Arc<dyn crate::azure::ArmMetrics> {
        Arc::new(self.arm.clone())
    }

    /// Counts one drift found in Azure; `kind` is a short, bounded name such as `friendlyName` or `tags`
    /// (never a value: label cardinality must stay small).
    pub fn drift_detected(&self, kind: &str) {
        self.drift.get_or_create(&KindLabels { kind: kind.to_owned() }).inc();
    }

    /// Counts one storage key resync.
    pub fn keys_resynced(&self) {
        self.keys_resynced.inc();
    }

    /// Counts one failed storage-key resync.
    pub fn keys_resync_failed(&self) {
        self.keys_resync_failures.inc();
    }

    /// Records whether the workspace `uid` is stalled now, and why (`None`: not stalled, or gone), for
    /// `azml_workspaces_stalled{reason}`.
    pub fn workspace_stalled(&self, uid: &str, reason: Option<&str>) {
        let mut states = self.states();
        let before = match reason {
            Some(reason) => states.stalled.insert(uid.to_owned(), reason.to_owned()),
            None => states.stalled.remove(uid),
        };
        for changed in before.into_iter().chain(reason.map(str::to_owned)) {
            let n = states.stalled.values().filter(|r| **r == changed).count();
            self.stalled.get_or_create(&ReasonLabels { reason: changed }).set(gauge_value(n));
        }
    }

    /// Counts one role assignment created or deleted.
    pub fn role_assignment_changed(&self, change: RoleAssignmentChange) {
        self.role_assignments.get_or_create(&ChangeLabels { change }).inc();
    }

    /// Sets the leader gauge and the role: [`Role::Leader`] or [`Role::Standby`].
    pub fn set_leader(&self, leader: bool) {
        self.set_role(if leader { Role::Leader } else { Role::Standby });
    }

    /// Sets the role (readiness) and the leader gauge.
    pub fn set_role(&self, role: Role) {
        self.states().role = role;
        self.leader.set(i64::from(role == Role::Leader));
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.states().role
    }

    /// Registers a running controller named `name` (a bounded label value such as `mlworkspaces`): until its watch
    /// cache is synced ([`ControllerScope::run`]) a leader is not ready. Deregistered when the last clone is dropped.
    pub fn controller_scope(&self, name: impl Into<String>) -> ControllerScope {
        let name = name.into();
        let id = {
            let mut states = self.states();
            let id = states.next_id;
            states.next_id += 1;
            states.scopes.insert(id, ScopeState { name: name.clone(), ..Default::default() });
            id
        };
        let labels = ControllerLabels { controller: name };
        self.cache_synced.get_or_create(&labels).set(0);
        self.queue_depth.get_or_create(&labels).set(0);
        ControllerScope { inner: Arc::new(ScopeHandle { metrics: self.clone(), id, labels }) }
    }

    /// Controllers registered now whose watch cache has not had its initial list yet (None: none registered).
    fn unsynced_controllers(&self) -> Option<Vec<String>> {
        let states = self.states();
        if states.scopes.is_empty() {
            return None;
        }
        Some(states.scopes.values().filter(|s| !s.synced).map(|s| s.name.clone()).collect())
    }

    /// A reconcile of `object` starts: it no longer waits in any controller's queue.
    fn reconcile_started(&self, object: &str) {
        let mut states = self.states();
        for scope in states.scopes.values_mut() {
            if scope.waiting.remove(object) {
                let labels = ControllerLabels { controller: scope.name.clone() };
                self.queue_depth.get_or_create(&labels).set(gauge_value(scope.waiting.len()));
            }
        }
    }

    fn states(&self) -> MutexGuard<'_, ControllerStates> {
        lock(&self.states)
    }

    /// Everything in the Prometheus text exposition format (OpenMetrics flavour of prometheus-client).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn finished(&self, result: ReconcileResult, seconds: f64) {
        self.reconciles.get_or_create(&ResultLabels { result }).inc();
        self.reconcile_duration.observe(seconds);
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One running controller, as registered by [`Metrics::controller_scope`]: its watch cache (readiness) and the
/// objects waiting for a reconcile (`azml_reconcile_queue_depth`). Cheap to clone; the registration ends when the
/// last clone is dropped (the controller stopped or was aborted).
#[derive(Clone)]
pub struct ControllerScope {
    inner: Arc<ScopeHandle>,
}

impl fmt::Debug for ControllerScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerScope").field("controller", &self.inner.labels.controller).finish()
    }
}

struct ScopeHandle {
    metrics: Metrics,
    id: u64,
    labels: ControllerLabels,
}

impl Drop for ScopeHandle {
    fn drop(&mut self) {
        self.metrics.states().scopes.remove(&self.id);
        self.metrics.queue_depth.remove(&self.labels);
        self.metrics.cache_synced.remove(&self.labels);
    }
}

impl ControllerScope {
    fn update(&self, change: impl FnOnce(&mut ScopeState)) {
        let mut states = self.inner.metrics.states();
        if let Some(scope) = states.scopes.get_mut(&self.inner.id) {
            change(scope);
            self.inner.metrics.queue_depth.get_or_create(&self.inner.labels).set(gauge_value(scope.waiting.len()));
            self.inner.metrics.cache_synced.get_or_create(&self.inner.labels).set(i64::from(scope.synced));
        }
    }

    /// A trigger (watch event, mapped change, signal) asked to reconcile `object` (an `ObjectRef`). Counted once
    /// per object until its reconcile starts, as the scheduler coalesces requests per object.
    pub fn requested(&self, object: &impl fmt::Display) {
        let key = object.to_string();
        self.update(|scope| {
            scope.waiting.insert(key);
        });
    }

    /// The scheduler dropped the request for `object` without reconciling it (the object was deleted meanwhile).
    pub fn dropped(&self, object: &impl fmt::Display) {
        let key = object.to_string();
        self.update(|scope| {
            scope.waiting.remove(&key);
        });
    }

    /// Runs `controller` (the future driving a kube-runtime controller whose cache is `store`) and marks the watch
    /// cache synced once the store has had its initial list.
    pub async fn run<K, T>(&self, store: Store<K>, controller: impl Future<Output = T>) -> T
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let synced = async {
            // An error means the store's writer is gone: the controller is ending, and stays "not synced".
            if store.wait_until_ready().await.is_ok() {
                self.update(|scope| scope.synced = true);
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::pin!(controller);
        tokio::pin!(synced);
        tokio::select! {
            out = &mut controller => out,
            never = &mut synced => match never {},
        }
    }
}

/// Decrements the in-flight gauge even when the reconcile future is dropped (shutdown, abort).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs one reconcile with metrics and a summary event naming `object` and the ARM request ids of the reconcile
/// (the reconcile's own span, opened by the controller's `reconcile`, carries the object too, and each ARM call's
/// child span its request id). `object` must be the `ObjectRef` the controller reported to
/// [`ControllerScope::requested`]: the reconcile starting takes it off the queue.
pub async fn instrument_reconcile<T, E: fmt::Display>(
    metrics: &Metrics,
    object: impl fmt::Display,
    reconcile: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let object = object.to_string();
    metrics.reconcile_started(&object);
    metrics.in_flight.inc();
    let _guard = InFlight(metrics.in_flight.clone());
    let started = Instant::now();
    let (result, ids) = collect_arm_request_ids(reconcile).await;
    let seconds = started.elapsed().as_secs_f64();
    let arm_request_ids = ids.join(",");
    match &result {
        Ok(_) => {
            metrics.finished(ReconcileResult::Success, seconds);
            info!(%object, duration_seconds = seconds, arm_request_ids, "reconcile finished");
        }
        Err(err) => {
            metrics.finished(ReconcileResult::Error, seconds);
            // ARM error messages are text we do not control: scrubbed like everything the controller logs.
            let error = crate::azure::secret::scrub(&err.to_string());
            warn!(%object, duration_seconds = seconds, arm_request_ids, %error, "reconcile finished with an error");
        }
    }
    result
}

/// The process part of readiness, set by the runner: connected to the API server and the CRDs checked, and not
/// shutting down. The controller part comes from [`Metrics`] (role, watch caches); [`readiness`] combines both.
#[derive(Clone, Debug, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the process started (connected, CRDs checked) or not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the process part is ready (see [`readiness`] for what `/readyz` answers).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// What `/readyz` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Not connected yet, CRDs not checked, or shutting down.
    NotStarted,
    /// Leader election has not reached the API server yet.
    Pending,
    /// A healthy standby: connected and taking part in leader election; it watches nothing, so it has no cache
    /// to wait for. Ready, so that rollouts proceed and the pod is counted as available.
    Standby,
    /// The leader, with controllers whose watch caches have not had their initial list (named; empty while the
    /// controllers are being started).
    Syncing(Vec<String>),
    /// The leader, every controller's watch cache synced.
    Ready,
}

impl Readiness {
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Standby | Readiness::Ready)
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::NotStarted => f.write_str("not ready: starting or shutting down"),
            Readiness::Pending => f.write_str("not ready: leader election has not reached the API server"),
            Readiness::Standby => f.write_str("ok: standby (another replica holds the leader-election lease)"),
            Readiness::Syncing(names) if names.is_empty() => f.write_str("not ready: starting the controllers"),
            Readiness::Syncing(names) => write!(f, "not ready: waiting for the initial list of {}", names.join(", ")),
            Readiness::Ready => f.write_str("ok: leader, watch caches synced"),
        }
    }
}

/// Readiness of this replica from the runner's [`Health`] and the controllers' state in `metrics`.
pub fn readiness(health: &Health, metrics: &Metrics) -> Readiness {
    if !health.is_ready() {
        return Readiness::NotStarted;
    }
    match metrics.role() {
        Role::Pending => Readiness::Pending,
        Role::Standby => Readiness::Standby,
        Role::Leader => match metrics.unsynced_controllers() {
            None => Readiness::Syncing(Vec::new()),
            Some(names) if names.is_empty() => Readiness::Ready,
            Some(names) => Readiness::Syncing(names),
        },
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Metrics,
}

/// The router of `/healthz`, `/readyz` and `/metrics`.
pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(err) = axum::serve(listener, router(health, metrics)).with_graceful_shutdown(shutdown).await {
        warn!(error = %err, "health and metrics endpoint stopped");
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let readiness = readiness(&state.health, &state.metrics);
    let code = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, readiness.to_string())
}

async fn metrics_text(State(state): State<AppState>) -> axum::response::Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::metrics::note_arm_request_id;

    #[tokio::test]
    async fn reconcile_results_durations_and_request_ids_are_recorded() {
        let m = Metrics::new();
        let ok: Result<(), String> = instrument_reconcile(&m, "ns/ws", async {
            note_arm_request_id("req-1");
            note_arm_request_id("req-2");
            Ok(())
        })
        .await;
        assert!(ok.is_ok());
        let err: Result<(), String> = instrument_reconcile(&m, "ns/ws", async { Err("boom".to_owned()) }).await;
        assert!(err.is_err());
        // Outside a reconcile the id is ignored, not a panic.
        note_arm_request_id("stray");
        m.drift_detected("tags");
        m.keys_resynced();
        m.role_assignment_changed(RoleAssignmentChange::Created);
        m.set_leader(true);
        let text = m.encode().expect("encodes");
        assert!(text.contains("azml_reconciles_total{result=\"success\"} 1"), "{text}");
        assert!(text.contains("azml_reconciles_total{result=\"error\"} 1"), "{text}");
        assert!(text.contains("azml_reconcile_duration_seconds_count 2"), "{text}");
        assert!(text.contains("azml_reconciles_in_flight 0"), "{text}");
        assert!(text.contains("azml_drift_detected_total{kind=\"tags\"} 1"), "{text}");
        assert!(text.contains("azml_storage_keys_resynced_total 1"), "{text}");
        assert!(text.contains("azml_role_assignments_changed_total{change=\"created\"} 1"), "{text}");
        assert!(text.contains("azml_leader 1"), "{text}");
    }

    #[tokio::test]
    async fn in_flight_drops_back_when_a_reconcile_is_cancelled() {
        let m = Metrics::new();
        let pending = instrument_reconcile::<(), String>(&m, "ns/ws", std::future::pending());
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), pending).await;
        assert!(timed_out.is_err());
        assert!(m.encode().expect("encodes").contains("azml_reconciles_in_flight 0"));
    }

    fn depth(m: &Metrics, controller: &str) -> Option<String> {
        let text = m.encode().expect("encodes");
        let series = format!("azml_reconcile_queue_depth{{controller=\"{controller}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
    }

    #[tokio::test]
    async fn the_queue_counts_requested_objects_until_their_reconcile_starts() {
        let m = Metrics::new();
        let scope = m.controller_scope("mlworkspaces");
        let other = m.controller_scope("endpoints");
        scope.requested(&"ns/a");
        scope.requested(&"ns/b");
        scope.requested(&"ns/a"); // coalesced, as the scheduler does
        other.requested(&"ns/e");
        assert_eq!(depth(&m, "mlworkspaces").as_deref(), Some("2"));
        let started: Result<(), String> = instrument_reconcile(&m, "ns/a", async {
            // While running, a new request for the same object waits for this reconcile to end.
            scope.requested(&"ns/a");
            Ok(())
        })
        .await;
        assert!(started.is_ok());
        assert_eq!(depth(&m, "mlworkspaces").as_deref(), Some("2"), "b, and a again");
        let again: Result<(), String> = instrument_reconcile(&m, "ns/a", async { Ok(()) }).await;
        assert!(again.is_ok());
        scope.dropped(&"ns/b");
        assert_eq!(depth(&m, "mlworkspaces").as_deref(), Some("0"));
        assert_eq!(depth(&m, "endpoints").as_deref(), Some("1"), "queues are per controller");
        drop(other);
        assert_eq!(depth(&m, "endpoints"), None, "a stopped controller's series is removed");
    }

    #[tokio::test]
    async fn readiness_needs_a_started_process_and_a_standby_or_a_synced_leader() {
        let (health, m) = (Health::default(), Metrics::new());
        assert_eq!(readiness(&health, &m), Readiness::NotStarted);
        health.set_ready(true);
        assert_eq!(readiness(&health, &m), Readiness::Pending, "leader election has not answered yet");
        m.set_leader(false);
        assert_eq!(readiness(&health, &m), Readiness::Standby);
        assert!(readiness(&health, &m).is_ready());
        m.set_leader(true);
        assert_eq!(readiness(&health, &m), Readiness::Syncing(Vec::new()), "no controller started yet");
        let (reader, mut writer) = kube::runtime::reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        let scope = m.controller_scope("mlworkspaces");
        let stop = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn({
            let (scope, stop) = (scope.clone(), stop.clone());
            async move { scope.run(reader, stop.cancelled_owned()).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(readiness(&health, &m), Readiness::Syncing(vec!["mlworkspaces".into()]));
        assert!(!readiness(&health, &m).is_ready());
        // The initial list ends.
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while readiness(&health, &m) != Readiness::Ready {
            assert!(tokio::time::Instant::now() < deadline, "{}", readiness(&health, &m));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(m.encode().expect("encodes").contains("azml_watch_cache_synced{controller=\"mlworkspaces\"} 1"));
        // The controller stops (lost the lease, shutting down): its cache is gone with it.
        stop.cancel();
        running.await.expect("no panic");
        drop(scope);
        assert_eq!(readiness(&health, &m), Readiness::Syncing(Vec::new()));
        health.set_ready(false);
        assert_eq!(readiness(&health, &m), Readiness::NotStarted);
    }
}
