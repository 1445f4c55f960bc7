//! Version `v1alpha1` of the `azml.dev` API.

mod common;
mod mlcompute;
mod mlonlineendpoint;
mod mlworkspace;
mod subscription_binding;

pub use common::*;
pub use mlcompute::*;
pub use mlonlineendpoint::*;
pub use mlworkspace::*;
pub use subscription_binding::*;
