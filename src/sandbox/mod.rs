//! The embedded default: emulators that stand in for Kubernetes and Azure in tests and `azml-operator sandbox`.

pub mod arm;
pub mod command;
pub mod kube_api;
pub mod persist;
pub mod tls;
pub mod world;
