//! HTTP replies and the ARM error envelope.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

/// A response under construction: status, extra headers and an optional JSON body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self { status, headers: vec![], body: Some(body) }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub fn empty(status: StatusCode) -> Self {
        Self { status, headers: vec![], body: None }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = match &self.body {
            Some(v) => {
                let mut r = Response::new(Body::from(v.to_string()));
                r.headers_mut()
                    .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
                r
            }
            None => Response::new(Body::empty()),
        };
        *resp.status_mut() = self.status;
        for (k, v) in self.headers {
            // Header names and values are produced by the simulator itself; skip anything malformed rather than panic.
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                resp.headers_mut().append(name, value);
            }
        }
        resp
    }
}

/// An ARM error: rendered as `{"error": {"code", "message", "target"?, "details"?}}`.
#[derive(Debug, Clone)]
pub(crate) struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Rarely used parts, boxed to keep `Result<_, ArmError>` small.
    pub extra: Box<ErrorExtra>,
}

/// Optional parts of an ARM error.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorExtra {
    pub target: Option<String>,
    pub details: Vec<ArmError>,
    pub headers: Vec<(String, String)>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), extra: Box::default() }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        let name = id.rsplit('/').next().unwrap_or(id);
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource '{kind}/{name}' under resource group was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn target(mut self, target: &str) -> Self {
        self.extra.target = Some(target.into());
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.extra.headers.push((name.into(), value.into()));
        self
    }

    pub fn envelope_inner(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(t) = &self.extra.target {
            e["target"] = json!(t);
        }
        if !self.extra.details.is_empty() {
            e["details"] = Value::Array(self.extra.details.iter().map(Self::envelope_inner).collect());
        }
        e
    }

    pub fn envelope(&self) -> Value {
        json!({"error": self.envelope_inner()})
    }
}

impl From<ArmError> for Reply {
    fn from(e: ArmError) -> Self {
        Reply { status: e.status, headers: e.extra.headers.clone(), body: Some(e.envelope()) }
    }
}
