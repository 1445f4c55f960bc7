//! azml-operator: manage Azure Machine Learning workspaces from Kubernetes.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod azure;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod compute;
pub mod connection;
pub mod controller;
pub mod endpoints;
pub mod events;
pub mod exports;
#[cfg(test)]
mod gitops_tests;
pub(crate) mod intern;
pub mod leader;
pub mod metrics;
pub mod plan_command;
pub mod policy;
pub mod reconciler;
pub mod run;
mod sync;
pub mod telemetry;
pub mod tls_provider;
