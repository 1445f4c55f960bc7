//! Kubernetes API server emulator: a small, faithful API server (discovery, OpenAPI, CRUD, patches, server-side
//! apply, watches, CRD schema and CEL admission) that kube-rs and the real kubectl both accept.

pub mod error;
pub mod patch;
pub mod registry;
pub mod select;
pub mod store;
pub mod validation;
