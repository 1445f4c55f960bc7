//! azml-operator: manage Azure Machine Learning workspaces from Kubernetes.
#![forbid(unsafe_code)]

pub mod api;
pub mod azure;
pub mod sandbox;
pub mod tls_provider;
