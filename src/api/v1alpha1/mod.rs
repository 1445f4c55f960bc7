//! Version `v1alpha1` of the `azml.dev` API.

mod common;
mod mlworkspace;
mod subscription_binding;

pub use common::*;
pub use mlworkspace::*;
pub use subscription_binding::*;
