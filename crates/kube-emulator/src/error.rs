//! API errors rendered as Kubernetes `Status` objects.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

/// One field-level cause of an `Invalid` (422) or conflict error, as in `Status.details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`.
    pub reason: String,
    /// Human-readable message without the field path.
    pub message: String,
    /// Field path such as `spec.location`.
    pub field: String,
}

impl Cause {
    /// Builds a cause.
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { reason: reason.to_string(), message: message.into(), field: field.into() }
    }
}

/// An error the emulated API server returns to its client.
///
/// Every error is rendered as a `Status` with the HTTP code, `reason` and `details` a real API server would use.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`, what kubectl prints.
    pub message: String,
    /// `Status.details` name, group and kind.
    pub details: Option<Box<Details>>,
    /// `Status.details.causes`.
    pub causes: Vec<Cause>,
}

/// `Status.details` identification of the object an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// Object name.
    pub name: String,
    /// API group, empty for core.
    pub group: String,
    /// Resource plural for most errors, Kind for Invalid.
    pub kind: String,
}

/// `plural` or `plural.group`, the way the API server names a resource in messages.
pub fn qualified_resource(plural: &str, group: &str) -> String {
    if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") }
}

impl ApiError {
    fn plain(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, causes: Vec::new() }
    }

    fn with_details(mut self, kind: &str, group: &str, name: &str) -> Self {
        self.details =
            Some(Box::new(Details { name: name.to_string(), group: group.to_string(), kind: kind.to_string() }));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, "BadRequest", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(plural: &str, group: &str, name: &str) -> Self {
        Self::plain(404, "NotFound", format!("{} \"{name}\" not found", qualified_resource(plural, group)))
            .with_details(plural, group, name)
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route(path: &str) -> Self {
        let mut e = Self::plain(404, "NotFound", "the server could not find the requested resource");
        e.causes.push(Cause::new("UnexpectedServerResponse", "", format!("404 page not found: {path}")));
        e
    }

    /// 409 AlreadyExists.
    pub fn already_exists(plural: &str, group: &str, name: &str) -> Self {
        Self::plain(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified_resource(plural, group)))
            .with_details(plural, group, name)
    }

    /// 409 Conflict for a stale resourceVersion or failed precondition.
    pub fn conflict(plural: &str, group: &str, name: &str, why: &str) -> Self {
        Self::plain(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified_resource(plural, group)),
        )
        .with_details(plural, group, name)
    }

    /// 409 Conflict raised by server-side apply, causes name the fields.
    pub fn apply_conflict(plural: &str, group: &str, name: &str, message: String, causes: Vec<Cause>) -> Self {
        let mut e = Self::plain(409, "Conflict", message).with_details(plural, group, name);
        e.causes = causes;
        e
    }

    /// 422 Invalid, formatted like the API server: `Kind.group "name" is invalid: field: message`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let render = |c: &Cause| {
            if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) }
        };
        let detail = match causes.as_slice() {
            [one] => render(one),
            many => format!("[{}]", many.iter().map(render).collect::<Vec<_>>().join(", ")),
        };
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let mut e = Self::plain(422, "Invalid", format!("{qualified} \"{name}\" is invalid: {detail}"))
            .with_details(kind, group, name);
        e.causes = causes;
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::plain(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }

    /// 410 Expired, for a continue token whose snapshot is older than the retained history (the API server's
    /// message after an etcd compaction).
    pub fn expired_continue() -> Self {
        Self::plain(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    /// 410 Expired, for a resourceVersion older than the retained watch history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::plain(410, "Expired", format!("too old resource version: {requested} ({oldest})"))
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::plain(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    /// 500 without a reason, carrying etcd's refusal of an object larger than its request limit: the API server
    /// passes that error through untranslated (kubernetes/kubernetes#112152).
    pub fn etcd_too_large() -> Self {
        Self::plain(500, "", "etcdserver: request is too large")
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: {accepted}"
            ),
        )
    }

    /// 415 UnsupportedMediaType for a request body, worded as the API server does (e.g. protobuf for a custom
    /// resource); `accepted` lists the media types it would read.
    pub fn unsupported_body(accepted: &str) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
        )
    }

    /// 406 NotAcceptable: the client's `Accept` header names no media type the resource is served in (e.g. only
    /// protobuf for a custom resource); `accepted` lists those it is served in.
    pub fn not_acceptable(accepted: &str) -> Self {
        Self::plain(406, "NotAcceptable", format!("only the following media types are accepted: {accepted}"))
    }

    /// 422 Invalid without object details (e.g. a failed JSON patch `test`).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::plain(422, "Invalid", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::plain(403, "Forbidden", message)
    }

    /// 500 InternalError; the message must not contain secret material.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::plain(500, "InternalError", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // StatusReasonUnknown is the empty string, which the server omits.
            if let Some(m) = status.as_object_mut() {
                m.remove("reason");
            }
        }
        let mut details = serde_json::Map::new();
        if let Some(d) = &self.details {
            details.insert("name".into(), json!(d.name));
            if !d.group.is_empty() {
                details.insert("group".into(), json!(d.group));
            }
            details.insert("kind".into(), json!(d.kind));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        (code, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;
