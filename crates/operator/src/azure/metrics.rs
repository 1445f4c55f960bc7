//! Metrics hook for ARM calls, and the ARM request ids of the calls one reconcile makes.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Coarse outcome of one HTTP exchange with ARM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 3xx (ARM does not redirect; counted for completeness).
    Redirect,
    /// 429.
    Throttled,
    /// Other 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No response (connect error, TLS error, timeout).
    TransportError,
}

impl StatusClass {
    /// Classifies an HTTP status.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            429 => StatusClass::Throttled,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

/// Receives one observation per HTTP exchange (every retry attempt and every LRO poll counts).
pub trait ArmMetrics: Send + Sync + fmt::Debug {
    /// Records a finished exchange.
    fn observe(&self, operation: &str, status: StatusClass, latency: Duration);

    /// Records a delay the client imposed on itself (client-side limiter or Retry-After) before a call.
    fn throttle_delay(&self, _operation: &str, _delay: Duration) {}
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
}

/// Prometheus implementation of [`ArmMetrics`]:
/// `azml_arm_requests_total{operation,status}`, `azml_arm_request_duration_seconds{operation}` and
/// `azml_arm_client_throttle_seconds_total{operation}`.
#[derive(Debug, Clone)]
pub struct PrometheusArmMetrics {
    requests: Family<CallLabels, Counter>,
    latency: Family<OpLabels, Histogram>,
    throttle: Family<OpLabels, Counter<f64>>,
}

impl PrometheusArmMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<CallLabels, Counter>::default();
        let latency =
            Family::<OpLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 12)));
        let throttle = Family::<OpLabels, Counter<f64>>::default();
        registry.register("azml_arm_requests", "HTTP exchanges with Azure Resource Manager", requests.clone());
        registry.register(
            "azml_arm_request_duration_seconds",
            "Latency of HTTP exchanges with Azure Resource Manager",
            latency.clone(),
        );
        registry.register(
            "azml_arm_client_throttle_seconds",
            "Time the ARM client waited on its own limiter or on Retry-After before calls",
            throttle.clone(),
        );
        Self { requests, latency, throttle }
    }
}

impl ArmMetrics for PrometheusArmMetrics {
    fn observe(&self, operation: &str, status: StatusClass, latency: Duration) {
        self.requests.get_or_create(&CallLabels { operation: operation.to_owned(), status }).inc();
        self.latency.get_or_create(&OpLabels { operation: operation.to_owned() }).observe(latency.as_secs_f64());
    }

    fn throttle_delay(&self, operation: &str, delay: Duration) {
        self.throttle.get_or_create(&OpLabels { operation: operation.to_owned() }).inc_by(delay.as_secs_f64());
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

/// Runs `fut` (one reconcile) collecting the ARM request ids of the calls it makes ([`note_arm_request_id`]).
pub async fn collect_arm_request_ids<T>(fut: impl Future<Output = T>) -> (T, Vec<String>) {
    ARM_REQUEST_IDS
        .scope(RefCell::new(Vec::new()), async move {
            let out = fut.await;
            let ids = ARM_REQUEST_IDS.with(|ids| ids.take());
            (out, ids)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_metrics_encode_observations() {
        let mut registry = Registry::default();
        let m = PrometheusArmMetrics::register(&mut registry);
        m.observe("Workspaces_Get", StatusClass::from_status(200), Duration::from_millis(20));
        m.observe("Workspaces_Get", StatusClass::from_status(429), Duration::from_millis(20));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains(r#"azml_arm_requests_total{operation="Workspaces_Get",status="Success"} 1"#), "{out}");
        assert!(out.contains(r#"azml_arm_requests_total{operation="Workspaces_Get",status="Throttled"} 1"#), "{out}");
        assert!(out.contains("azml_arm_request_duration_seconds_count{operation=\"Workspaces_Get\"} 2"), "{out}");
    }
}
