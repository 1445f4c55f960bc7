//! The Kubernetes version the emulator is: `/version` reports it (kubectl's dispatcher picks its client from it) and
//! the OpenAPI documents carry it.

/// The Kubernetes version the emulator reports, as (major, minor).
pub const KUBE_VERSION: (&str, &str) = ("1", "33");
