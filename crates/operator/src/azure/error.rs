//! The ARM error envelope and the client's typed error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ids::IdError;

/// The `error` object of ARM's `ErrorResponse` envelope (common-types v3), recursive through `details`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmErrorBody {
    /// Machine-readable code, e.g. `ResourceNotFound`, `AuthorizationFailed`, `RoleAssignmentExists`.
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub code: String,
    /// Human-readable message.
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub message: String,
    /// The target of the error (a property or resource), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ArmErrorBody>,
    /// Additional info entries (`{type, info}`), kept as raw JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_info: Vec<serde_json::Value>,
}

/// `{"error": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ArmErrorEnvelope {
    pub(crate) error: ArmErrorBody,
}

impl ArmErrorBody {
    /// Parses an error response body: ARM's envelope `{"error": {...}}`, or the bare `{"code", "message"}` some
    /// services answer with (the activity log does); other bodies yield `None`.
    pub fn from_response_body(body: &[u8]) -> Option<Self> {
        if let Ok(e) = serde_json::from_slice::<ArmErrorEnvelope>(body) {
            return Some(e.error);
        }
        serde_json::from_slice::<Self>(body).ok().filter(|b| !b.code.is_empty())
    }
}

/// How callers should react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// Worth retrying later: 5xx, 429, timeouts, connection failures.
    Transient,
    /// The resource (or its parent) does not exist: 404.
    NotFound,
    /// Conflicting state: 409 (e.g. `RoleAssignmentExists`, a failed move validation, another operation running).
    Conflict,
    /// Authentication or authorization failed: 401/403, or the token could not be obtained.
    Auth,
    /// The request is wrong and retrying it unchanged will not help: other 4xx, invalid input, bad responses.
    Permanent,
}

/// Where an API error's request ids came from, for correlating with ARM logs and support cases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestIds {
    /// `x-ms-request-id`.
    pub request_id: Option<String>,
    /// `x-ms-correlation-request-id`.
    pub correlation_id: Option<String>,
}

impl std::fmt::Display for RequestIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request id {}, correlation id {}",
            self.request_id.as_deref().unwrap_or("-"),
            self.correlation_id.as_deref().unwrap_or("-")
        )
    }
}

/// Errors of the ARM client. None of them carries secret values: bodies of successful secret-bearing responses are
/// never included, and error bodies are ARM error envelopes.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// ARM answered with an error status.
    #[error("{operation}: HTTP {status} {}: {} ({ids})", body.code, body.message)]
    Api {
        /// Operation name, e.g. `Workspaces_Get`.
        operation: &'static str,
        /// HTTP status code.
        status: u16,
        /// Parsed error envelope (code `Http{status}` and an empty message when the body was not an envelope).
        body: Box<ArmErrorBody>,
        /// Request ids from the response headers.
        ids: RequestIds,
        /// `Retry-After` of the response, if any.
        retry_after: Option<Duration>,
    },
    /// A long-running operation ended in `Failed` or `Canceled`.
    #[error("{operation}: long-running operation {status}: {} {} ({ids})", body.code, body.message)]
    LroFailed {
        /// Operation name.
        operation: String,
        /// Terminal status (`Failed` / `Canceled`).
        status: String,
        /// The `error` object of the status monitor, if any.
        body: Box<ArmErrorBody>,
        /// Request ids of the final poll response.
        ids: RequestIds,
    },
    /// The request could not be sent or the response not received (connect error, TLS error, read timeout).
    #[error("{operation}: transport error: {source}")]
    Transport {
        /// Operation name.
        operation: &'static str,
        /// Underlying error (reqwest does not include bodies or headers in its errors).
        #[source]
        source: reqwest::Error,
    },
    /// A long-running operation did not finish in time.
    #[error("{operation}: long-running operation still running after {waited:?}")]
    LroTimeout {
        /// Operation name.
        operation: String,
        /// How long the client waited.
        waited: Duration,
    },
    /// The caller cancelled the wait.
    #[error("{operation}: cancelled")]
    Cancelled {
        /// Operation name.
        operation: String,
    },
    /// A success response could not be decoded.
    #[error("{operation}: cannot decode response: {source}")]
    Decode {
        /// Operation name.
        operation: &'static str,
        /// Decoder error (serde_json messages quote at most a token, and only from bodies that failed to parse).
        #[source]
        source: serde_json::Error,
    },
    /// ARM answered with a status this operation does not document, or with headers that break the protocol.
    #[error("{operation}: unexpected response: {reason} ({ids})")]
    Protocol {
        /// Operation name.
        operation: &'static str,
        /// What was wrong.
        reason: String,
        /// Request ids.
        ids: RequestIds,
    },
    /// An access token could not be obtained.
    #[error("cannot obtain an access token for {scope}: {source}")]
    Credential {
        /// The scope requested.
        scope: String,
        /// The credential's error (azure_identity redacts secrets in its errors).
        #[source]
        source: azure_core::Error,
    },
    /// An identifier failed validation.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The client or credential configuration is invalid.
    #[error("invalid ARM client configuration: {0}")]
    Config(String),
}

impl ArmError {
    /// Whether Entra ID refused the credential itself (the token endpoint answered 400 or 401: unknown client id or
    /// tenant, wrong or expired secret, bad assertion), as opposed to being unreachable or busy. Retrying does not
    /// help until the credential changes.
    pub fn credential_rejected(&self) -> bool {
        let ArmError::Credential { source, .. } = self else {
            return false;
        };
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(err) = current {
            if let Some(status) = err.downcast_ref::<azure_core::Error>().and_then(azure_core::Error::http_status) {
                return matches!(u16::from(status), 400 | 401);
            }
            current = err.source();
        }
        false
    }

    /// The class of this error: decides retry vs. wait for a change.
    pub fn class(&self) -> ErrorClass {
        match self {
            ArmError::Api { status, .. } => classify_status(*status),
            ArmError::LroFailed { body, .. } => classify_code(&body.code),
            ArmError::Transport { .. } | ArmError::LroTimeout { .. } => ErrorClass::Transient,
            ArmError::Cancelled { .. } => ErrorClass::Transient,
            ArmError::Credential { .. } => ErrorClass::Auth,
            ArmError::Decode { .. } | ArmError::Protocol { .. } => ErrorClass::Permanent,
            ArmError::InvalidId(_) | ArmError::Config(_) => ErrorClass::Permanent,
        }
    }

    /// Whether a retry (now or later) can succeed without changing the request.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// HTTP 404.
    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// HTTP 409.
    pub fn is_conflict(&self) -> bool {
        self.class() == ErrorClass::Conflict
    }

    /// The ARM error code, if ARM sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Api { body, .. } | ArmError::LroFailed { body, .. } if !body.code.is_empty() => Some(&body.code),
            _ => None,
        }
    }

    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `x-ms-request-id` of the failing response, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ArmError::Api { ids, .. } | ArmError::LroFailed { ids, .. } | ArmError::Protocol { ids, .. } => {
                ids.request_id.as_deref()
            }
            _ => None,
        }
    }

    /// `Retry-After` the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ArmError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Maps an HTTP error status to a class.
pub fn classify_status(status: u16) -> ErrorClass {
    match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        409 => ErrorClass::Conflict,
        408 | 429 => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Classifies the error code of a failed long-running operation (no HTTP status is available there).
fn classify_code(code: &str) -> ErrorClass {
    let c = code.to_ascii_lowercase();
    if c.contains("notfound") {
        ErrorClass::NotFound
    } else if c.contains("conflict") || c.contains("exists") || c.contains("anotheroperation") {
        ErrorClass::Conflict
    } else if c.contains("authorization") || c.contains("forbidden") || c.contains("authentication") {
        ErrorClass::Auth
    } else if c.contains("internal") || c.contains("timeout") || c.contains("throttl") || c.contains("unavailable") {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify_status(500), ErrorClass::Transient);
        assert_eq!(classify_status(503), ErrorClass::Transient);
        assert_eq!(classify_status(429), ErrorClass::Transient);
        assert_eq!(classify_status(400), ErrorClass::Permanent);
        assert_eq!(classify_status(403), ErrorClass::Auth);
        assert_eq!(classify_status(401), ErrorClass::Auth);
        assert_eq!(classify_status(404), ErrorClass::NotFound);
        assert_eq!(classify_status(409), ErrorClass::Conflict);
    }

    #[test]
    fn parses_envelope_with_details() {
        let body = br#"{"error":{"code":"ResourceMoveValidationFailed","message":"no","target":"x",
            "details":[{"code":"ResourceMoveNotSupported","message":"ws"}],"additionalInfo":[{"type":"t","info":{}}],"extra":1}}"#;
        let e = ArmErrorBody::from_response_body(body).unwrap();
        assert_eq!(e.code, "ResourceMoveValidationFailed");
        assert_eq!(e.target.as_deref(), Some("x"));
        assert_eq!(e.details[0].code, "ResourceMoveNotSupported");
        assert_eq!(e.additional_info.len(), 1);
        assert!(ArmErrorBody::from_response_body(b"<html>").is_none());
        // The activity log answers errors without the envelope.
        let bare = ArmErrorBody::from_response_body(br#"{"code":"BadRequest","message":"bad $filter"}"#).unwrap();
        assert_eq!((bare.code.as_str(), bare.message.as_str()), ("BadRequest", "bad $filter"));
        assert!(ArmErrorBody::from_response_body(br#"{"value":[]}"#).is_none());
        let nulls = ArmErrorBody::from_response_body(br#"{"error":{"code":"X","message":null}}"#).unwrap();
        assert_eq!(nulls.code, "X");
    }
}
