//! Version `v1alpha1` of the `azml.dev` API.

mod common;
mod exports;
mod mlcompute;
mod mlconnection;
mod mlonlineendpoint;
mod mlworkspace;
mod subscription_binding;

pub use common::*;
pub use exports::*;
pub use mlcompute::*;
pub use mlconnection::*;
pub use mlonlineendpoint::*;
pub use mlworkspace::*;
pub use subscription_binding::*;

#[cfg(test)]
#[path = "mlconnection_tests.rs"]
mod mlconnection_tests;
