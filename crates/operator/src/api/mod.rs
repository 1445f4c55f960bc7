//! The user-facing API: CRD types of group `azml.dev`, version `v1alpha1`, and their conditions.
//!
//! The contract is `shared/API.md`; every field carries a doc comment because it becomes the description that
//! `kubectl explain` shows.

pub mod conditions;
pub mod patterns;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use v1alpha1::{MlWorkspace, MlWorkspaceSpec, MlWorkspaceStatus, SubscriptionBinding, SubscriptionBindingSpec};

/// API group of every custom resource of the operator.
pub const GROUP: &str = "azml.dev";

/// Every CRD the operator serves, in a stable order (the order `azml-operator crd` prints them in).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        MlWorkspace::crd(),
        SubscriptionBinding::crd(),
        v1alpha1::MlOnlineEndpoint::crd(),
        v1alpha1::MlCompute::crd(),
        v1alpha1::MlConnection::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream: the exact content of `crds/azml.dev.yaml`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
