//! Operational telemetry: Prometheus metrics, the health endpoints and the per-reconcile span summary.
//!
//! - [`Metrics`] owns the registry and every metric of the operator. A [`crate::controller::ControllerConfig`]
//!   carries one (also wired into the ARM client), so any reconcile step can count things through
//!   `ctx.config.metrics`: [`Metrics::drift_detected`], [`Metrics::keys_resynced`],
//!   [`Metrics::role_assignment_changed`].
//! - [`serve`] answers `/healthz` (the process is alive), `/readyz` ([`Health`]: connected and the CRDs checked;
//!   a standby replica is ready too) and `/metrics` (Prometheus text format).
//! - [`instrument_reconcile`] wraps one reconcile: it counts the result, observes the duration, tracks the
//!   reconciles in flight and logs one `reconcile finished` event naming the object and the ARM request ids of the
//!   calls the reconcile made (collected by [`note_arm_request_id`]). Inside the reconcile, every log line is in the
//!   `reconcile{object}` span and each ARM call in an `arm_call{operation,request_id}` child span.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::azure::PrometheusArmMetrics;

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

    /// Counts one role assignment created or deleted.
    pub fn role_assignment_changed(&self, change: RoleAssignmentChange) {
        self.role_assignments.get_or_create(&ChangeLabels { change }).inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
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

tokio::task_local! {
    static ARM_REQUEST_IDS: RefCell<Vec<String>>;
}

/// Remembers the ARM request id of a call made by the current reconcile (no-op outside one). The ARM transport calls
/// this for every response, so the reconcile's summary event lists every request id support may ask for.
pub fn note_arm_request_id(id: &str) {
    let _ = ARM_REQUEST_IDS.try_with(|ids| {
        if let Ok(mut ids) = ids.try_borrow_mut() {
            ids.push(id.to_owned());
        }
    });
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
/// child span its request id).
pub async fn instrument_reconcile<T, E: fmt::Display>(
    metrics: &Metrics,
    object: impl fmt::Display,
    reconcile: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    metrics.in_flight.inc();
    let _guard = InFlight(metrics.in_flight.clone());
    let started = Instant::now();
    let (result, ids) = ARM_REQUEST_IDS
        .scope(RefCell::new(Vec::new()), async move {
            let result = reconcile.await;
            let ids = ARM_REQUEST_IDS.with(|ids| ids.take());
            (result, ids)
        })
        .await;
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
            let error = crate::controller::error::scrub(&err.to_string());
            warn!(%object, duration_seconds = seconds, arm_request_ids, %error, "reconcile finished with an error");
        }
    }
    result
}

/// Readiness shared by the health endpoint and the controller runner.
#[derive(Clone, Debug, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the process ready (connected, CRDs checked) or not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
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

    /// Collects what the JSON formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_json_summary_names_the_object_and_the_arm_request_ids() {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(move || writer.clone()));
        let _default = tracing::subscriber::set_default(subscriber);
        let m = Metrics::new();
        let done: Result<(), String> = instrument_reconcile(&m, "team-a/ws-1", async {
            note_arm_request_id("11111111-aaaa");
            note_arm_request_id("22222222-bbbb");
            Ok(())
        })
        .await;
        assert!(done.is_ok());
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        let line: serde_json::Value = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "reconcile finished")
            .unwrap_or_else(|| panic!("no summary in {text}"));
        assert_eq!(line["fields"]["arm_request_ids"], "11111111-aaaa,22222222-bbbb", "{line}");
        assert_eq!(line["fields"]["object"], "team-a/ws-1", "{line}");
    }
}
