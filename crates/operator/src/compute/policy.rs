//! What a SubscriptionBinding allows a compute: checked after the workspace's own authorization (the compute uses
//! the binding that allows its workspace) and before any Azure call.
//!
//! - `allowedVmSizes`: globs the VM size must match (empty: no compute at all);
//! - `maxNodesPerCluster`: a cap on a cluster's `scale.maxNodes`;
//! - the subnet and user-assigned identity ids must be in the workspace's subscription and in a resource group the
//!   binding's `resourceGroups` or `dependencyResourceGroups` globs allow ([`check_resource`], shared by every kind).

use kube::ResourceExt;

use crate::api::v1alpha1::{MlComputeSpec, SubscriptionBinding};
use crate::policy::{Intent, ResourceDenial, check_resource, glob_matches};

/// Why a binding does not allow a compute. `Display` is the message of the `NotPermitted` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComputeDenial {
    /// The VM size matches none of the binding's allowedVmSizes.
    #[error("SubscriptionBinding {binding} does not allow VM size {vm_size} (allowedVmSizes: {})", if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") })]
    VmSize {
        /// The binding.
        binding: String,
        /// The size asked for.
        vm_size: String,
        /// The binding's patterns.
        allowed: Vec<String>,
    },
    /// A cluster's maxNodes is above the binding's cap.
    #[error(
        "SubscriptionBinding {binding} allows at most {cap} nodes per cluster (maxNodesPerCluster); spec.amlCompute.scale.maxNodes is {max_nodes}"
    )]
    MaxNodes {
        /// The binding.
        binding: String,
        /// The cap.
        cap: i32,
        /// What the spec asks.
        max_nodes: i32,
    },
    /// A subnet or identity id outside what the binding grants (the check every kind shares).
    #[error(transparent)]
    ForeignResource(#[from] ResourceDenial),
}

/// Checks `spec` against `binding` (the binding that allows the compute's workspace; it grants one subscription).
pub fn check_compute(binding: &SubscriptionBinding, spec: &MlComputeSpec) -> Result<(), ComputeDenial> {
    let name = binding.name_any();
    if let Some(vm_size) = spec.vm_size()
        && !binding.spec.allowed_vm_sizes.iter().any(|p| glob_matches(p, vm_size))
    {
        return Err(ComputeDenial::VmSize {
            binding: name,
            vm_size: vm_size.to_owned(),
            allowed: binding.spec.allowed_vm_sizes.clone(),
        });
    }
    if let (Some(cluster), Some(cap)) = (&spec.aml_compute, binding.spec.max_nodes_per_cluster)
        && cluster.scale.max_nodes > cap
    {
        return Err(ComputeDenial::MaxNodes { binding: name, cap, max_nodes: cluster.scale.max_nodes });
    }
    let mut ids: Vec<(&'static str, &str)> = Vec::new();
    if let Some(c) = &spec.aml_compute {
        ids.extend(c.subnet.as_ref().map(|s| ("amlCompute.subnet.id", s.id.as_str())));
        for id in c.identity.iter().flat_map(|i| i.user_assigned_identities.iter()) {
            ids.push(("amlCompute.identity.userAssignedIdentities", id.as_str()));
        }
    }
    if let Some(i) = &spec.compute_instance {
        ids.extend(i.subnet.as_ref().map(|s| ("computeInstance.subnet.id", s.id.as_str())));
    }
    // The compute joins the subnet and uses the identities; neither is changed: a read use.
    for (field, id) in ids {
        check_resource(binding, field, id, Intent::Read)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";

    fn binding(extra: serde_json::Value) -> SubscriptionBinding {
        let mut spec = json!({
            "subscriptionId": SUB,
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "credential": {"managedIdentity": {}},
            "namespaces": ["team-a"],
            "resourceGroups": ["rg-risk-*", "rg-net"],
        });
        json_patch::merge(&mut spec, &extra);
        SubscriptionBinding::new("risk", serde_json::from_value(spec).expect("binding spec"))
    }

    fn cluster(vm_size: &str, max_nodes: i32, extra: serde_json::Value) -> MlComputeSpec {
        let mut aml = json!({"vmSize": vm_size, "scale": {"maxNodes": max_nodes}});
        json_patch::merge(&mut aml, &extra);
        serde_json::from_value(json!({"workspaceRef": {"name": "ws"}, "amlCompute": aml})).expect("spec")
    }

    #[test]
    fn vm_sizes_must_match_a_glob_and_none_means_no_compute() {
        let b = binding(json!({"allowedVmSizes": ["Standard_D*", "standard_nc6s_v3"]}));
        assert_eq!(check_compute(&b, &cluster("Standard_DS3_v2", 2, json!({}))), Ok(()));
        assert_eq!(check_compute(&b, &cluster("Standard_NC6s_v3", 2, json!({}))), Ok(()));
        let denied = check_compute(&b, &cluster("Standard_ND96asr_v4", 2, json!({}))).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "SubscriptionBinding risk does not allow VM size Standard_ND96asr_v4 (allowedVmSizes: Standard_D*, standard_nc6s_v3)"
        );
        let none = binding(json!({}));
        let denied = check_compute(&none, &cluster("Standard_DS3_v2", 2, json!({}))).unwrap_err();
        assert!(denied.to_string().ends_with("(allowedVmSizes: none)"), "{denied}");
    }

    #[test]
    fn max_nodes_are_capped_per_cluster() {
        let b = binding(json!({"allowedVmSizes": ["*"], "maxNodesPerCluster": 4}));
        assert_eq!(check_compute(&b, &cluster("Standard_DS3_v2", 4, json!({}))), Ok(()));
        let denied = check_compute(&b, &cluster("Standard_DS3_v2", 5, json!({}))).unwrap_err();
        assert!(matches!(denied, ComputeDenial::MaxNodes { cap: 4, max_nodes: 5, .. }), "{denied}");
    }

    #[test]
    fn subnets_and_identities_stay_in_the_subscription_and_allowed_resource_groups() {
        let b = binding(json!({"allowedVmSizes": ["*"]}));
        let subnet = |sub: &str, rg: &str| json!({"subnet": {"id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/v/subnets/s")}});
        assert_eq!(check_compute(&b, &cluster("Standard_DS3_v2", 2, subnet(SUB, "rg-net"))), Ok(()));
        let other_rg = check_compute(&b, &cluster("Standard_DS3_v2", 2, subnet(SUB, "rg-other"))).unwrap_err();
        assert!(
            other_rg.to_string().contains("is in resource group rg-other, which SubscriptionBinding"),
            "{other_rg}"
        );
        let other_sub = "11111111-2222-3333-4444-555555555555";
        let foreign = check_compute(&b, &cluster("Standard_DS3_v2", 2, subnet(other_sub, "rg-net"))).unwrap_err();
        assert!(foreign.to_string().contains("is outside subscription"), "{foreign}");
        let identity = json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": [
            format!("/subscriptions/{SUB}/resourceGroups/rg-secret/providers/Microsoft.ManagedIdentity/userAssignedIdentities/jobs")
        ]}});
        let denied = check_compute(&b, &cluster("Standard_DS3_v2", 2, identity)).unwrap_err();
        assert!(denied.to_string().starts_with("spec.amlCompute.identity.userAssignedIdentities "), "{denied}");
        let garbage =
            check_compute(&b, &cluster("Standard_DS3_v2", 2, json!({"subnet": {"id": "garbage"}}))).unwrap_err();
        assert!(matches!(garbage, ComputeDenial::ForeignResource(ResourceDenial::Malformed { .. })), "{garbage}");
    }
}
