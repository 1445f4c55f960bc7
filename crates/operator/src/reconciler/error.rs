//! The controller's errors and THE error policy: which failures are retried (and how soon) and which stall the
//! workspace until its spec (or Azure) changes.

use std::time::Duration;

use rand::Rng;

use crate::api::conditions::Reason;
pub use crate::azure::secret::scrub;
use crate::azure::{ArmError, ErrorClass};

/// Errors of one reconcile. Messages never carry secret values (see [`scrub`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An ARM call failed.
    #[error("{step}: {source}")]
    Arm {
        /// What the controller was doing, e.g. "create workspace".
        step: &'static str,
        /// The client's error.
        #[source]
        source: Box<ArmError>,
    },
    /// A Kubernetes API call failed.
    #[error("{step}: {source}")]
    Kube {
        /// What the controller was doing, e.g. "patch status".
        step: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The credential of a binding could not be built.
    #[error("credential of SubscriptionBinding {binding}: {reason}")]
    Credential {
        /// The binding.
        binding: String,
        /// Why (never the secret value).
        reason: String,
    },
    /// The credential of a binding cannot work as configured (Secret or key missing, no federated token file, no
    /// credential kind): nothing to retry until the binding or the Secret changes.
    #[error("credential of SubscriptionBinding {binding} is unavailable: {reason}")]
    CredentialUnavailable {
        /// The binding.
        binding: String,
        /// Why (never the secret value).
        reason: String,
    },
    /// The operation stored in status cannot be resumed (edited by hand, or from an incompatible version).
    #[error("status.pendingOperation cannot be resumed: {0}")]
    BadPendingOperation(String),
    /// A value of the spec (or one derived from it, e.g. a deployment name or the location) cannot address an
    /// Azure resource; the schema should have refused it.
    #[error("{what}: {source}")]
    InvalidId {
        /// What the value is, e.g. `spec.deployments[].name`.
        what: &'static str,
        /// The id layer's verdict.
        #[source]
        source: crate::azure::ids::IdError,
    },
}

impl Error {
    /// Wraps an ARM error with the step that failed.
    pub fn arm(step: &'static str) -> impl FnOnce(ArmError) -> Error {
        move |source| Error::Arm { step, source: Box::new(source) }
    }

    /// Wraps a Kubernetes error with the step that failed.
    pub fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { step, source }
    }

    /// The ARM request id of the failing call, for logs.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Arm { source, .. } => source.request_id(),
            _ => None,
        }
    }
}

/// Whether a failed poll means the operation is over, so it must be forgotten and the next reconcile should look at
/// Azure afresh instead of polling it again: the operation failed, or its status monitor answered with an error
/// status (the client already retried transient ones). Only failures to reach ARM keep the operation.
pub fn ends_operation(err: &ArmError) -> bool {
    matches!(err, ArmError::LroFailed { .. } | ArmError::Api { .. }) || !err.is_transient()
}

/// What to do about an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: retry with exponential backoff and jitter.
    Retry,
    /// Throttled (or ARM said when): retry after this long.
    RetryAfter(Duration),
    /// Caused by the spec or the environment: report `Stalled` and wait for a change (or a long requeue).
    Stall {
        /// Condition reason.
        reason: Reason,
        /// Message with the ARM code and message.
        message: String,
    },
}

/// THE error policy: classifies an error.
pub fn classify(err: &Error) -> Disposition {
    match err {
        Error::Arm { source, .. } => classify_arm(source, &err.to_string()),
        Error::BadPendingOperation(_) | Error::InvalidId { .. } => {
            Disposition::Stall { reason: Reason::InvalidSpec, message: scrub(&error_chain(err)) }
        }
        Error::CredentialUnavailable { .. } => {
            Disposition::Stall { reason: Reason::CredentialUnavailable, message: scrub(&error_chain(err)) }
        }
        Error::Kube { .. } | Error::Credential { .. } => Disposition::Retry,
    }
}

fn classify_arm(source: &ArmError, context: &str) -> Disposition {
    let message = || {
        let code = source.code().map(|c| format!("{c}: ")).unwrap_or_default();
        scrub(&format!("{code}{context}"))
    };
    if let ArmError::InvalidId(_) = source {
        return Disposition::Stall { reason: Reason::InvalidSpec, message: message() };
    }
    match source.class() {
        ErrorClass::Transient | ErrorClass::Conflict => match source.retry_after() {
            Some(after) => Disposition::RetryAfter(after),
            None if source.status() == Some(429) => Disposition::RetryAfter(Duration::from_secs(30)),
            None => Disposition::Retry,
        },
        // Entra ID refusing the credential (wrong secret, unknown client): stalled until the binding or its Secret
        // changes (both wake the workspace). A token endpoint that cannot be reached or is busy is retried.
        ErrorClass::Auth if source.credential_rejected() => {
            Disposition::Stall { reason: Reason::CredentialUnavailable, message: message() }
        }
        ErrorClass::Auth if matches!(source, ArmError::Credential { .. }) => Disposition::Retry,
        ErrorClass::NotFound => Disposition::Stall { reason: Reason::DependencyMissing, message: message() },
        ErrorClass::Permanent if source.code().is_some_and(|c| c.to_ascii_lowercase().contains("notfound")) => {
            Disposition::Stall { reason: Reason::DependencyMissing, message: message() }
        }
        ErrorClass::Auth | ErrorClass::Permanent => {
            Disposition::Stall { reason: Reason::AzureRejected, message: message() }
        }
    }
}

/// Exponential backoff with "equal jitter" for the `attempt`-th consecutive failure (1-based), capped.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let capped = exp.min(cap);
    let half = capped / 2;
    half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
}

/// "outer: inner: innermost", skipping causes already contained in their parent's text.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::ArmErrorBody;
    use crate::azure::error::RequestIds;

    fn api(status: u16, code: &str, retry_after: Option<u64>) -> Error {
        Error::Arm {
            step: "create workspace",
            source: Box::new(ArmError::Api {
                operation: "Workspaces_CreateOrUpdate",
                status,
                body: Box::new(ArmErrorBody {
                    code: code.into(),
                    message: format!("{code} happened"),
                    ..Default::default()
                }),
                ids: RequestIds { request_id: Some("req-1".into()), correlation_id: None },
                retry_after: retry_after.map(Duration::from_secs),
            }),
        }
    }

    #[test]
    fn transient_errors_retry() {
        assert_eq!(classify(&api(500, "InternalServerError", None)), Disposition::Retry);
        assert_eq!(classify(&api(503, "ServiceUnavailable", None)), Disposition::Retry);
        assert_eq!(classify(&api(409, "AnotherOperationInProgress", None)), Disposition::Retry);
        assert_eq!(api(500, "x", None).request_id(), Some("req-1"));
    }

    #[test]
    fn throttling_waits_retry_after() {
        assert_eq!(classify(&api(429, "TooManyRequests", Some(7))), Disposition::RetryAfter(Duration::from_secs(7)));
        assert_eq!(classify(&api(429, "TooManyRequests", None)), Disposition::RetryAfter(Duration::from_secs(30)));
        assert_eq!(classify(&api(503, "Busy", Some(3))), Disposition::RetryAfter(Duration::from_secs(3)));
    }

    #[test]
    fn spec_errors_stall_with_code_and_message() {
        for (status, code, reason) in [
            (400, "InvalidParameter", Reason::AzureRejected),
            (400, "LocationNotAvailableForResourceType", Reason::AzureRejected),
            (403, "AuthorizationFailed", Reason::AzureRejected),
            (404, "ResourceGroupNotFound", Reason::DependencyMissing),
            (400, "StorageAccountNotFound", Reason::DependencyMissing),
        ] {
            match classify(&api(status, code, None)) {
                Disposition::Stall { reason: r, message } => {
                    assert_eq!(r, reason, "{code}");
                    assert!(message.starts_with(&format!("{code}: ")), "{message}");
                    assert!(message.contains(&format!("{code} happened")), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn kube_and_credential_errors_retry_and_bad_pending_stalls() {
        let e = Error::Credential { binding: "b".into(), reason: "cannot read Secret x: connection refused".into() };
        assert_eq!(classify(&e), Disposition::Retry);
        assert!(matches!(classify(&Error::BadPendingOperation("x".into())), Disposition::Stall { .. }));
        let name = crate::azure::ids::OnlineDeploymentName::new("bad/name").unwrap_err();
        let wrong_name = Error::InvalidId { what: "online deployment name", source: name };
        match classify(&wrong_name) {
            Disposition::Stall { reason, message } => {
                assert_eq!(reason, Reason::InvalidSpec);
                assert!(message.starts_with("online deployment name: "), "{message}");
                assert!(
                    !message.contains("pendingOperation"),
                    "a wrong name is not an unreadable operation: {message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A token endpoint's answer as azure_identity reports it: a Credential error wrapping the HTTP response's.
    fn token_error(status: u16) -> Error {
        use azure_core::error::ErrorKind;
        let response = azure_core::Error::with_message(
            ErrorKind::HttpResponse { status: status.into(), error_code: Some("7000215".into()), raw_response: None },
            "AADSTS7000215: Invalid client secret provided.",
        );
        let source = azure_core::Error::with_error(ErrorKind::Credential, response, "ClientSecretCredential failed");
        Error::Arm {
            step: "get workspace",
            source: Box::new(ArmError::Credential { scope: "https://management.azure.com/.default".into(), source }),
        }
    }

    #[test]
    fn a_credential_that_cannot_work_stalls_and_a_busy_token_endpoint_retries() {
        let missing = Error::CredentialUnavailable { binding: "b".into(), reason: "Secret x has no key y".into() };
        let Disposition::Stall { reason, message } = classify(&missing) else { panic!("{:?}", classify(&missing)) };
        assert_eq!(reason, Reason::CredentialUnavailable);
        assert!(message.contains("SubscriptionBinding b") && message.contains("no key y"), "{message}");
        for refused in [400, 401] {
            let err = token_error(refused);
            assert!(
                matches!(classify(&err), Disposition::Stall { reason: Reason::CredentialUnavailable, .. }),
                "{refused}: {:?}",
                classify(&err)
            );
        }
        for busy in [429, 500, 503] {
            assert_eq!(classify(&token_error(busy)), Disposition::Retry, "{busy}");
        }
    }

    #[test]
    fn failed_polls_end_the_operation_unless_arm_was_unreachable() {
        let Error::Arm { source, .. } = api(500, "InternalServerError", None) else { unreachable!() };
        assert!(ends_operation(&source));
        let failed = ArmError::LroFailed {
            operation: "Workspaces_Delete".into(),
            status: "Failed".into(),
            body: Box::default(),
            ids: RequestIds::default(),
        };
        assert!(ends_operation(&failed));
        let timeout = ArmError::LroTimeout { operation: "x".into(), waited: Duration::from_secs(1) };
        assert!(!ends_operation(&timeout));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for attempt in 1..40 {
            let d = backoff(attempt, base, cap);
            let ceiling = base.saturating_mul(2u32.saturating_pow((attempt - 1).min(20))).min(cap);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(10, base, cap) >= Duration::from_secs(30));
    }
}
