//! The ARM client core: authentication, retries with backoff, client-side throttling, metrics and tracing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use bytes::Bytes;
use http::{HeaderMap, Method};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, field};
use url::Url;

use crate::clock::Clock;

use super::credentials::{AzureCloud, build_http_client};
use super::error::{ArmError, ArmErrorBody, ErrorClass, RequestIds, classify_status};
use super::ids::SubscriptionId;
use super::metrics::{ArmMetrics, StatusClass};
use super::throttle::{RequestKind, SubscriptionLimiter, ThrottlePolicy};

/// Retry behaviour for transient failures (5xx, 429, timeouts, connection errors).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retries).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each attempt.
    pub initial_backoff: Duration,
    /// Upper bound of the exponential backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for in-line: the error is returned for the caller to requeue.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `attempt + 1` (attempt counts from 1): exponential with "equal jitter" (half fixed,
    /// half random), or exactly the server's `Retry-After` when it sent one.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra;
        }
        let exp = self.initial_backoff.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let base = exp.min(self.max_backoff);
        let half = base / 2;
        let jitter = rand::rng().random_range(0.0..=1.0);
        half + half.mul_f64(jitter)
    }
}

/// Options of an [`ArmClient`].
#[derive(Clone, Debug)]
pub struct ArmClientOptions {
    /// Endpoints and extra trusted roots.
    pub cloud: AzureCloud,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Client-side throttling.
    pub throttle: ThrottlePolicy,
    /// Per-request timeout (each attempt and each poll).
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Metrics sink.
    pub metrics: Option<Arc<dyn ArmMetrics>>,
    /// Wall clock for long-running operations (when started, when the next poll is allowed, when to give up); the
    /// controllers read the same one ([`crate::reconciler::ControllerConfig::clock`]).
    pub clock: Clock,
}

impl Default for ArmClientOptions {
    fn default() -> Self {
        Self {
            cloud: AzureCloud::public(),
            retry: RetryPolicy::default(),
            throttle: ThrottlePolicy::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            metrics: None,
            clock: Clock::system(),
        }
    }
}

/// A typed Azure Resource Manager client. Cheap to clone (shared state behind an `Arc`).
///
/// Operations are methods grouped by resource family in sibling modules (`workspaces.rs`, `storage.rs`, ...).
#[derive(Clone, Debug)]
pub struct ArmClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    endpoint: Url,
    scope: String,
    retry: RetryPolicy,
    limiter: SubscriptionLimiter,
    metrics: Option<Arc<dyn ArmMetrics>>,
    pub(crate) clock: Clock,
}

/// One ARM request, before it is sent.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) operation: &'static str,
    pub(crate) method: Method,
    /// Absolute path built from validated ids, e.g. `/subscriptions/.../workspaces/ws`.
    pub(crate) path: String,
    pub(crate) api_version: &'static str,
    /// Extra query parameters (values are encoded by the URL serializer).
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) subscription: Option<SubscriptionId>,
}

impl Call {
    pub(crate) fn new(
        operation: &'static str,
        method: Method,
        path: String,
        api_version: &'static str,
        subscription: Option<SubscriptionId>,
    ) -> Self {
        Self { operation, method, path, api_version, query: Vec::new(), body: None, subscription }
    }

    pub(crate) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub(crate) fn json<T: Serialize>(mut self, body: &T) -> Result<Self, ArmError> {
        let value =
            serde_json::to_value(body).map_err(|source| ArmError::Decode { operation: self.operation, source })?;
        self.body = Some(value);
        Ok(self)
    }
}

/// A successful (2xx) response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) ids: RequestIds,
    /// The URL the request went to (the LRO "original URI").
    pub(crate) url: Url,
}

impl Response {
    pub(crate) fn json<T: DeserializeOwned>(&self, operation: &'static str) -> Result<T, ArmError> {
        decode(operation, &self.body)
    }
}

/// Decodes a body; an empty body decodes as JSON `null` (so `()` and `Option<T>` accept it).
pub(crate) fn decode<T: DeserializeOwned>(operation: &'static str, body: &[u8]) -> Result<T, ArmError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_value(serde_json::Value::Null)
    } else {
        serde_json::from_slice(body)
    }
    .map_err(|source| ArmError::Decode { operation, source })
}

pub(crate) fn request_ids(headers: &HeaderMap) -> RequestIds {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    RequestIds { request_id: get("x-ms-request-id"), correlation_id: get("x-ms-correlation-request-id") }
}

/// `Retry-After` in seconds (ARM sends integers; HTTP dates are not used by ARM and are ignored).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// One page of a pageable list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new", deserialize_with = "super::nullable::or_default")]
    pub(crate) value: Vec<T>,
    #[serde(default)]
    pub(crate) next_link: Option<String>,
}

/// Guard against a server that keeps returning nextLinks.
const MAX_PAGES: usize = 1000;

impl ArmClient {
    /// Creates a client. The credential must produce tokens for `options.cloud.arm_scope()`.
    pub fn new(credential: Arc<dyn TokenCredential>, options: ArmClientOptions) -> Result<Self, ArmError> {
        let http = build_http_client(&options.cloud, true, options.connect_timeout, options.request_timeout)?;
        let mut endpoint = options.cloud.arm_endpoint.clone();
        if endpoint.scheme() != "https" {
            return Err(ArmError::Config("ARM endpoint must use https".into()));
        }
        endpoint.set_path("");
        endpoint.set_query(None);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                credential,
                scope: options.cloud.arm_scope(),
                endpoint,
                retry: options.retry,
                limiter: SubscriptionLimiter::new(options.throttle),
                metrics: options.metrics,
                clock: options.clock,
            }),
        })
    }

    /// The wall clock of [`ArmClientOptions::clock`].
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The ARM endpoint this client talks to.
    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    /// The client-side limiter (exposed for inspection and tests).
    pub fn limiter(&self) -> &SubscriptionLimiter {
        &self.inner.limiter
    }

    /// Builds the URL of a call: endpoint + validated path + api-version + extra query.
    pub(crate) fn url_for(&self, call: &Call) -> Result<Url, ArmError> {
        let mut url = self.inner.endpoint.clone();
        // The path comes from validated ids only; set_path percent-encodes anything unexpected rather than
        // interpreting it.
        url.set_path(&call.path);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", call.api_version);
            for (k, v) in &call.query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Checks that a URL handed out by ARM (Location, Azure-AsyncOperation, nextLink) or stored in status points at
    /// our ARM endpoint, so the bearer token is never sent elsewhere.
    pub(crate) fn check_same_origin(&self, operation: &'static str, raw: &str) -> Result<Url, ArmError> {
        let url = Url::parse(raw).or_else(|_| self.inner.endpoint.join(raw)).map_err(|e| ArmError::Protocol {
            operation,
            reason: format!("invalid URL from ARM: {e}"),
            ids: RequestIds::default(),
        })?;
        if url.scheme() != "https" || url.origin() != self.inner.endpoint.origin() {
            return Err(ArmError::Protocol {
                operation,
                reason: format!(
                    "URL {} is not on the ARM endpoint {}",
                    url.origin().ascii_serialization(),
                    self.inner.endpoint.origin().ascii_serialization()
                ),
                ids: RequestIds::default(),
            });
        }
        Ok(url)
    }

    /// Sends a call with retries; returns 2xx responses, converts others to [`ArmError::Api`].
    pub(crate) async fn send(&self, call: &Call) -> Result<Response, ArmError> {
        let url = self.url_for(call)?;
        self.send_url(call.operation, call.method.clone(), url, call.body.as_ref(), call.subscription).await
    }

    /// Sends a GET and decodes the body.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ArmError> {
        self.send(call).await?.json(call.operation)
    }

    /// Sends a call where a 404 (the resource, or its parent, does not exist) is an answer: `None`.
    pub(crate) async fn send_opt(&self, call: &Call) -> Result<Option<Response>, ArmError> {
        match self.send(call).await {
            Ok(resp) => Ok(Some(resp)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A GET that maps 404 to `None`.
    pub(crate) async fn get_opt<T: DeserializeOwned>(&self, call: &Call) -> Result<Option<T>, ArmError> {
        self.send_opt(call).await?.map(|resp| resp.json(call.operation)).transpose()
    }

    /// Follows `nextLink` until the last page.
    pub(crate) async fn list_all<T: DeserializeOwned>(&self, call: &Call) -> Result<Vec<T>, ArmError> {
        let mut page: Page<T> = self.get_json(call).await?;
        let mut items = std::mem::take(&mut page.value);
        let mut pages = 1;
        while let Some(next) = page.next_link.take().filter(|l| !l.is_empty()) {
            if pages >= MAX_PAGES {
                return Err(ArmError::Protocol {
                    operation: call.operation,
                    reason: format!("more than {MAX_PAGES} pages"),
                    ids: RequestIds::default(),
                });
            }
            let url = self.check_same_origin(call.operation, &next)?;
            page =
                self.send_url(call.operation, Method::GET, url, None, call.subscription).await?.json(call.operation)?;
            items.append(&mut page.value);
            pages += 1;
        }
        Ok(items)
    }

    /// The retry loop around one logical request.
    pub(crate) async fn send_url(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        subscription: Option<SubscriptionId>,
    ) -> Result<Response, ArmError> {
        let span = tracing::info_span!(
            "arm_call",
            operation,
            method = %method,
            path = url.path(),
            status = field::Empty,
            request_id = field::Empty,
            attempts = field::Empty,
        );
        self.send_with_retries(operation, method, url, body, subscription).instrument(span).await
    }

    async fn send_with_retries(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        subscription: Option<SubscriptionId>,
    ) -> Result<Response, ArmError> {
        let kind = match method {
            Method::GET | Method::HEAD => RequestKind::Read,
            Method::DELETE => RequestKind::Delete,
            _ => RequestKind::Write,
        };
        // POST actions (regenerateKey, moveResources) are not idempotent: retry them only when ARM certainly did
        // not process them (429, connect failures), not after 5xx or a read timeout.
        let idempotent = method != Method::POST;
        let retry = &self.inner.retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempts", attempt);
            if let Some(sub) = subscription {
                let delay = self.inner.limiter.delay_for(sub, kind);
                if !delay.is_zero() {
                    tracing::debug!(?delay, "client-side throttling before ARM call");
                    if let Some(m) = &self.inner.metrics {
                        m.throttle_delay(operation, delay);
                    }
                    tokio::time::sleep(delay).await;
                }
            }
            let token = self
                .inner
                .credential
                .get_token(&[self.inner.scope.as_str()], None)
                .await
                .map_err(|source| ArmError::Credential { scope: self.inner.scope.clone(), source })?;
            let mut req = self.inner.http.request(method.clone(), url.clone()).bearer_auth(token.token.secret());
            if let Some(b) = body {
                req = req.json(b);
            } else if method == Method::POST || method == Method::PUT || method == Method::PATCH {
                // ARM wants a Content-Length on body-less writes.
                req = req.header(http::header::CONTENT_LENGTH, "0");
            }
            let started = Instant::now();
            let result = req.send().await;
            let outcome = match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await;
                    self.observe(operation, StatusClass::from_status(status), started.elapsed());
                    match body {
                        Ok(body) => Ok((status, headers, body)),
                        Err(source) => Err(source),
                    }
                }
                Err(source) => {
                    self.observe(operation, StatusClass::TransportError, started.elapsed());
                    Err(source)
                }
            };
            let (status, headers, body) = match outcome {
                Ok(parts) => parts,
                Err(source) => {
                    let safe_to_retry = idempotent || source.is_connect();
                    tracing::warn!(error = %source, attempt, "ARM call failed without a response");
                    if safe_to_retry && attempt < retry.max_attempts {
                        tokio::time::sleep(retry.backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(ArmError::Transport { operation, source });
                }
            };
            let ids = request_ids(&headers);
            let span = tracing::Span::current();
            span.record("status", status);
            if let Some(id) = &ids.request_id {
                span.record("request_id", id.as_str());
                super::metrics::note_arm_request_id(id);
            }
            if let Some(sub) = subscription {
                self.inner.limiter.observe(sub, &headers);
            }
            if (200..300).contains(&status) {
                tracing::debug!(status, "ARM call succeeded");
                return Ok(Response { status, headers, body, ids, url });
            }
            let ra = retry_after(&headers);
            let err = ArmError::Api {
                operation,
                status,
                body: Box::new(
                    ArmErrorBody::from_response_body(&body)
                        .unwrap_or_else(|| ArmErrorBody { code: format!("Http{status}"), ..Default::default() }),
                ),
                ids,
                retry_after: ra,
            };
            if status == 429
                && let (Some(sub), Some(ra)) = (subscription, ra)
            {
                self.inner.limiter.block(sub, ra);
            }
            let retryable = classify_status(status) == ErrorClass::Transient && (idempotent || status == 429);
            let within_budget = ra.is_none_or(|ra| ra <= retry.max_retry_after);
            if retryable && within_budget && attempt < retry.max_attempts {
                tracing::info!(status, code = err.code().unwrap_or_default(), attempt, "retrying ARM call");
                // After a 429 the limiter already holds the subscription for Retry-After; sleeping here as well
                // keeps the order simple when there is no subscription to key the limiter on.
                let wait = if status == 429 && subscription.is_some() && ra.is_some() {
                    Duration::ZERO
                } else {
                    retry.backoff(attempt, ra)
                };
                tokio::time::sleep(wait).await;
                continue;
            }
            tracing::info!(status, code = err.code().unwrap_or_default(), "ARM call failed");
            return Err(err);
        }
    }

    fn observe(&self, operation: &str, status: StatusClass, latency: Duration) {
        if let Some(m) = &self.inner.metrics {
            m.observe(operation, status, latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(1),
        };
        for attempt in 1..8 {
            let d = p.backoff(attempt, None);
            let base = Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(Duration::from_millis(400));
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        }
        assert_eq!(p.backoff(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
    }

    #[test]
    fn empty_body_decodes_as_null() {
        let () = decode::<()>("x", b"").unwrap();
        assert!(decode::<Option<u32>>("x", b" ").unwrap().is_none());
        assert!(decode::<u32>("x", b"").is_err());
    }
}
