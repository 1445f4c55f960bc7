//! Long-running operations: `Azure-AsyncOperation` and `Location` polling, final-state rules, resumable handles.
//!
//! An operation is started with a `begin_*` method, which returns [`LroStart::Done`] when ARM finished
//! synchronously or [`LroStart::Pending`] with an [`LroHandle`]. The handle is plain data (serde): the controller
//! can store it in a status field and, after a restart, call [`ArmClient::poll_lro`] / [`ArmClient::wait_lro`] with
//! it instead of issuing the request again.

use std::time::Duration;

use http::{HeaderMap, Method};
use jiff::Timestamp;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::error::{ArmError, ArmErrorBody};
use super::ids::SubscriptionId;
use super::transport::{ArmClient, Call, Response, decode, retry_after};

/// Which status monitor the operation is polled through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LroKind {
    /// Poll the `Azure-AsyncOperation` URL: 200 with `{status}` until Succeeded/Failed/Canceled.
    AzureAsyncOperation,
    /// Poll the `Location` URL: 202 while running, then 200/204 with the result, or an error status.
    Location,
}

/// Where the final result comes from (`x-ms-long-running-operation-options.final-state-via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalStateVia {
    /// GET the resource URL the operation was started on (PUT/PATCH default).
    OriginalUri,
    /// GET the `Location` URL of the initial response (POST/DELETE default).
    Location,
    /// The operation has no result body (the status monitor is enough).
    None,
}

/// A pending long-running operation. Serialisable so it can be stored and resumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LroHandle {
    /// Operation name, e.g. `Workspaces_CreateOrUpdate`.
    pub operation: String,
    /// Status monitor kind.
    pub kind: LroKind,
    /// URL to poll next (absolute; must be on the ARM endpoint).
    pub poll_url: String,
    /// URL of the resource the operation was started on, with its api-version.
    pub resource_url: String,
    /// `Location` of the initial response, when both headers were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_url: Option<String>,
    /// Final-state rule.
    pub final_state: FinalStateVia,
    /// Subscription, for client-side throttling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionId>,
    /// When the operation was started.
    pub started_at: Timestamp,
    /// Poll delay ARM asked for in its last response, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Not to be polled before this instant (the last response's time + its `Retry-After`). [`ArmClient::poll_lro`]
    /// does not send a request before then, so the wait ARM asked for holds across reconciles and restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
}

impl LroHandle {
    /// How long after `now` the handle may be polled (`None`: now).
    pub fn wait_remaining(&self, now: Timestamp) -> Option<Duration> {
        let not_before = self.not_before?;
        let left = not_before.duration_since(now);
        (left.is_positive()).then(|| left.unsigned_abs())
    }

    fn set_retry_after(&mut self, retry_after: Option<Duration>, now: Timestamp) {
        self.retry_after_secs = retry_after.map(|d| d.as_secs());
        self.not_before = retry_after
            .filter(|d| !d.is_zero())
            .and_then(|d| jiff::SignedDuration::try_from(d).ok())
            .and_then(|d| now.checked_add(d).ok());
    }
}

/// Result of starting an operation.
#[derive(Debug)]
pub enum LroStart<T> {
    /// ARM completed synchronously.
    Done(T),
    /// ARM accepted the operation; poll the handle.
    Pending(LroHandle),
}

/// Result of one poll.
#[derive(Debug)]
pub enum LroPoll<T> {
    /// Still running; the handle may have been updated (new poll URL, new Retry-After). Store it.
    InProgress(LroHandle),
    /// Finished successfully with this result.
    Done(T),
}

/// Waiting parameters.
#[derive(Clone, Debug)]
pub struct LroOptions {
    /// Give up (with [`ArmError::LroTimeout`]) after this long, measured from the handle's `started_at`.
    pub timeout: Duration,
    /// Poll interval when ARM sends no `Retry-After`, and the shortest wait between two polls.
    pub default_poll_interval: Duration,
    /// Upper bound of the interval this client picks itself (when ARM sends no `Retry-After`). A `Retry-After` ARM
    /// sends is always honoured, even when longer (ARM answers polls that come too early with a new wait and may
    /// count them against the subscription's read budget).
    pub max_poll_interval: Duration,
    /// Cancels the wait (the operation itself keeps running in Azure; the handle stays valid).
    pub cancel: CancellationToken,
}

impl Default for LroOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30 * 60),
            default_poll_interval: Duration::from_secs(5),
            max_poll_interval: Duration::from_secs(60),
            cancel: CancellationToken::new(),
        }
    }
}

impl LroOptions {
    /// How long to wait before the next poll: ARM's `Retry-After` when it sent one (never less than the minimum
    /// interval, never cut short), else the default interval within the maximum.
    pub fn poll_delay(&self, retry_after_secs: Option<u64>) -> Duration {
        match retry_after_secs {
            Some(secs) => Duration::from_secs(secs).max(self.default_poll_interval),
            None => self.default_poll_interval.min(self.max_poll_interval),
        }
    }
}

/// Status monitor body of `Azure-AsyncOperation`.
#[derive(Debug, Deserialize)]
struct OperationStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: Option<ArmErrorBody>,
}

/// Per-operation LRO rules, given to [`ArmClient::begin`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LroSpec {
    pub(crate) final_state: FinalStateVia,
}

impl LroSpec {
    /// The result is a GET of the URL the call addressed: PUT and PATCH of a resource.
    pub(crate) const ORIGINAL_URI: LroSpec = LroSpec { final_state: FinalStateVia::OriginalUri };
    /// The result is the last answer of the `Location` URL: deletes and POST actions.
    pub(crate) const LOCATION: LroSpec = LroSpec { final_state: FinalStateVia::Location };
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).filter(|s| !s.is_empty())
}

impl ArmClient {
    /// Turns the initial response of an LRO-capable call into [`LroStart`].
    pub(crate) fn start_lro<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        spec: LroSpec,
        resp: Response,
        subscription: Option<SubscriptionId>,
    ) -> Result<LroStart<T>, ArmError> {
        let async_op = header_str(&resp.headers, "azure-asyncoperation");
        let location = header_str(&resp.headers, "location");
        let pending = resp.status == 202 || (resp.status == 201 && async_op.is_some());
        if !pending {
            return Ok(LroStart::Done(resp.json(operation)?));
        }
        let (kind, poll_url) = match (&async_op, &location) {
            (Some(a), _) => (LroKind::AzureAsyncOperation, a.clone()),
            (None, Some(l)) => (LroKind::Location, l.clone()),
            (None, None) => {
                return Err(ArmError::Protocol {
                    operation,
                    reason: format!("HTTP {} without Azure-AsyncOperation or Location header", resp.status),
                    ids: resp.ids,
                });
            }
        };
        // Validate now so a bad URL fails the call instead of a later poll.
        self.check_same_origin(operation, &poll_url)?;
        if let Some(l) = &location {
            self.check_same_origin(operation, l)?;
        }
        let mut handle = LroHandle {
            operation: operation.to_owned(),
            kind,
            poll_url,
            resource_url: resp.url.to_string(),
            location_url: location,
            final_state: spec.final_state,
            subscription,
            started_at: self.clock().now(),
            retry_after_secs: None,
            not_before: None,
        };
        handle.set_retry_after(retry_after(&resp.headers), self.clock().now());
        tracing::info!(operation, kind = ?handle.kind, request_id = resp.ids.request_id.as_deref().unwrap_or("-"), "long-running operation accepted");
        Ok(LroStart::Pending(handle))
    }

    /// Polls a pending operation once. Works with handles restored from storage (URLs are re-validated).
    ///
    /// Before the `Retry-After` of the previous answer has passed, no request is sent: the handle is returned
    /// unchanged as in progress (ARM answers early polls with another wait and counts them as reads).
    pub async fn poll_lro<T: DeserializeOwned>(&self, handle: &LroHandle) -> Result<LroPoll<T>, ArmError> {
        const OP: &str = "LongRunningOperation_Poll";
        let url = self.check_same_origin(OP, &handle.poll_url)?;
        if handle.wait_remaining(self.clock().now()).is_some() {
            return Ok(LroPoll::InProgress(handle.clone()));
        }
        let resp = self.send_url(OP, Method::GET, url, None, handle.subscription).await?;
        let mut next = handle.clone();
        next.set_retry_after(retry_after(&resp.headers), self.clock().now());
        match handle.kind {
            LroKind::AzureAsyncOperation => {
                let status: OperationStatus = resp.json(OP)?;
                match status.status.to_ascii_lowercase().as_str() {
                    "succeeded" => self.fetch_final(handle, None).await.map(LroPoll::Done),
                    "failed" | "canceled" | "cancelled" => Err(ArmError::LroFailed {
                        operation: handle.operation.clone(),
                        status: status.status,
                        body: Box::new(status.error.unwrap_or_default()),
                        ids: resp.ids,
                    }),
                    _ => Ok(LroPoll::InProgress(next)),
                }
            }
            LroKind::Location => {
                if resp.status == 202 {
                    if let Some(l) = header_str(&resp.headers, "location") {
                        self.check_same_origin(OP, &l)?;
                        next.poll_url = l;
                    }
                    return Ok(LroPoll::InProgress(next));
                }
                self.fetch_final(handle, Some(resp)).await.map(LroPoll::Done)
            }
        }
    }

    /// Reads the final result per the handle's final-state rule. `location_resp` is the terminal response of a
    /// Location poll, which already is the result when the rule is `Location`.
    async fn fetch_final<T: DeserializeOwned>(
        &self,
        handle: &LroHandle,
        location_resp: Option<Response>,
    ) -> Result<T, ArmError> {
        const OP: &str = "LongRunningOperation_Result";
        match (handle.final_state, location_resp) {
            (FinalStateVia::OriginalUri, _) => {
                let url = self.check_same_origin(OP, &handle.resource_url)?;
                self.send_url(OP, Method::GET, url, None, handle.subscription).await?.json(OP)
            }
            (FinalStateVia::Location, Some(resp)) => resp.json(OP),
            (FinalStateVia::Location, None) => match &handle.location_url {
                Some(l) => {
                    let url = self.check_same_origin(OP, l)?;
                    self.send_url(OP, Method::GET, url, None, handle.subscription).await?.json(OP)
                }
                None => decode(OP, b""),
            },
            (FinalStateVia::None, _) => decode(OP, b""),
        }
    }

    /// Polls until the operation finishes, honouring `Retry-After`, the timeout and cancellation.
    pub async fn wait_lro<T: DeserializeOwned>(&self, handle: LroHandle, options: &LroOptions) -> Result<T, ArmError> {
        let mut handle = handle;
        let deadline_from_start = options.timeout;
        loop {
            let now = self.clock().now();
            let elapsed = now.duration_since(handle.started_at).unsigned_abs();
            if elapsed >= deadline_from_start {
                return Err(ArmError::LroTimeout { operation: handle.operation.clone(), waited: elapsed });
            }
            // ARM's Retry-After, in full; the default interval when it asked for none.
            let wait = handle
                .wait_remaining(now)
                .unwrap_or_else(|| options.poll_delay(None))
                .min(deadline_from_start - elapsed);
            tokio::select! {
                () = options.cancel.cancelled() => {
                    return Err(ArmError::Cancelled { operation: handle.operation.clone() });
                }
                () = tokio::time::sleep(wait) => {}
            }
            match self.poll_lro::<T>(&handle).await? {
                LroPoll::Done(v) => return Ok(v),
                LroPoll::InProgress(next) => handle = next,
            }
        }
    }

    /// Sends an LRO-capable call (the one path every resource type's `begin_*` takes): ARM's result when it
    /// finished at once, else the handle to poll (see [`Self::start_lro`]).
    pub(crate) async fn begin<T: DeserializeOwned>(&self, call: &Call, spec: LroSpec) -> Result<LroStart<T>, ArmError> {
        let resp = self.send(call).await?;
        self.start_lro(call.operation, spec, resp, call.subscription)
    }

    /// [`Self::begin`] of a POST action or a delete whose result is not read (final state via `Location`).
    pub(crate) async fn begin_action(&self, call: &Call) -> Result<LroStart<()>, ArmError> {
        Ok(match self.begin::<IgnoredAny>(call, LroSpec::LOCATION).await? {
            LroStart::Done(_) => LroStart::Done(()),
            LroStart::Pending(h) => LroStart::Pending(h),
        })
    }

    /// A DELETE: [`Self::begin_action`], where a 404 (already gone) is done too.
    pub(crate) async fn begin_delete(&self, call: &Call) -> Result<LroStart<()>, ArmError> {
        match self.begin_action(call).await {
            Err(e) if e.status() == Some(404) => Ok(LroStart::Done(())),
            other => other,
        }
    }

    /// Waits on the start of an action or delete ([`Self::begin_action`], [`Self::begin_delete`]).
    pub(crate) async fn finish_action(&self, start: LroStart<()>, options: &LroOptions) -> Result<(), ArmError> {
        match start {
            LroStart::Done(()) => Ok(()),
            LroStart::Pending(h) => self.wait_lro::<IgnoredAny>(h, options).await.map(|_| ()),
        }
    }

    /// Starts-or-finishes helper: waits on a pending start.
    pub(crate) async fn finish<T: DeserializeOwned>(
        &self,
        start: LroStart<T>,
        options: &LroOptions,
    ) -> Result<T, ArmError> {
        match start {
            LroStart::Done(v) => Ok(v),
            LroStart::Pending(h) => self.wait_lro(h, options).await,
        }
    }
}
