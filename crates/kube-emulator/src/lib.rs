//! Kubernetes API server emulator: a small, faithful API server (discovery, OpenAPI, CRUD, patches, server-side
//! apply, watches, CRD schema and CEL admission, typed decoding, defaulting and validation of built-in kinds,
//! garbage collection) that kube-rs, kubectl, Helm and the official Python client accept. Request bodies are JSON,
//! YAML or, for built-in kinds, protobuf (what client-go's typed clients send); answers are JSON, or protobuf for
//! built-in kinds when the client asks for it. What it serves, how each part is verified and where it deliberately
//! differs from a real cluster: `docs/kube-api-emulator.md`.
#![forbid(unsafe_code)]

pub mod crossfield;
pub mod decode;
pub mod error;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod select;
pub mod server;
pub mod store;
pub mod structural;
pub mod typed;
pub mod validation;
pub mod version;

pub use error::{ApiError, ApiResult};
pub use server::{KubeApiServer, RunningServer, ServerOptions};
pub use store::Store;

/// Installs ring as the process-wide rustls provider (kube builds a rustls config even for plain http, and more than
/// one provider may be linked). Idempotent.
pub fn install_tls_provider() {
    // `install_default` fails only when a provider is already installed, which is exactly the idempotent case.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
