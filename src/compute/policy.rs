//! What a SubscriptionBinding allows a compute: checked after the workspace's own authorization (the compute uses
//! the binding that allows its workspace) and before any Azure call.
//!
//! - `allowedVmSizes`: globs the VM size must match (empty: no compute at all);
//! - `maxNodesPerCluster`: a cap on a cluster's `scale.maxNodes`;
//! - the subnet and user-assigned identity ids must be in the workspace's subscription and in a resource group the
//!   binding's `resourceGroups` globs allow ([`check_arm_id`]).

use kube::ResourceExt;

use crate::api::v1alpha1::{MlComputeSpec, SubscriptionBinding};
use crate::policy::glob_matches;

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
    /// A subnet or identity id outside what the binding grants.
    #[error("spec.{field} {id} is outside what SubscriptionBinding {binding} grants: {reason}")]
    ForeignResource {
        /// The binding.
        binding: String,
        /// The spec field.
        field: &'static str,
        /// The id as written.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Checks `spec` against `binding` (the binding that allows the compute's workspace, in `subscription`).
pub fn check_compute(
    binding: &SubscriptionBinding,
    spec: &MlComputeSpec,
    subscription: &str,
) -> Result<(), ComputeDenial> {
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
    for (field, id) in ids {
        check_arm_id(binding, subscription, id).map_err(|reason| ComputeDenial::ForeignResource {
            binding: name.clone(),
            field,
            id: id.to_owned(),
            reason,
        })?;
    }
    Ok(())
}

/// Whether the resource `id` is in `subscription` and in a resource group the binding's `resourceGroups` globs
/// allow; `Err` says why not. Fails closed on ids that do not start `/subscriptions/{sub}/resourceGroups/{rg}/`.
pub fn check_arm_id(binding: &SubscriptionBinding, subscription: &str, id: &str) -> Result<(), String> {
    let mut segments = id.strip_prefix('/').unwrap_or_default().split('/');
    let (Some(subs), Some(sub), Some(rgs), Some(rg)) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err("not a resource id below a resource group".into());
    };
    if !subs.eq_ignore_ascii_case("subscriptions") || !rgs.eq_ignore_ascii_case("resourceGroups") {
        return Err("not a resource id below a resource group".into());
    }
    if !sub.eq_ignore_ascii_case(subscription) {
        return Err(format!("it is in subscription {sub}, the workspace's is {subscription}"));
    }
    if !binding.spec.resource_groups.iter().any(|p| glob_matches(p, rg)) {
        return Err(format!(
            "resource group {rg} is not allowed (resourceGroups: {})",
            binding.spec.resource_groups.join(", ")
        ));
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
        assert_eq!(check_compute(&b, &cluster("Standard_DS3_v2", 2, json!({})), SUB), Ok(()));
        assert_eq!(check_compute(&b, &cluster("Standard_NC6s_v3", 2, json!({})), SUB), Ok(()));
        let denied = check_compute(&b, &cluster("Standard_ND96asr_v4", 2, json!({})), SUB).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "SubscriptionBinding risk does not allow VM size Standard_ND96asr_v4 (allowedVmSizes: Standard_D*, standard_nc6s_v3)"
        );
        let none = binding(json!({}));
        let denied = check_compute(&none, &cluster("Standard_DS3_v2", 2, json!({})), SUB).unwrap_err();
        assert!(denied.to_string().ends_with("(allowedVmSizes: none)"), "{denied}");
    }

    #[test]
    fn max_nodes_are_capped_per_cluster() {
        let b = binding(json!({"allowedVmSizes": ["*"], "maxNodesPerCluster": 4}));
        assert_eq!(check_compute(&b, &cluster("Standard_DS3_v2", 4, json!({})), SUB), Ok(()));
        let denied = check_compute(&b, &cluster("Standard_DS3_v2", 5, json!({})), SUB).unwrap_err();
        assert!(matches!(denied, ComputeDenial::MaxNodes { cap: 4, max_nodes: 5, .. }), "{denied}");
    }

    #[test]
    fn subnets_and_identities_stay_in_the_subscription_and_allowed_resource_groups() {
        let b = binding(json!({"allowedVmSizes": ["*"]}));
        let subnet = |sub: &str, rg: &str| json!({"subnet": {"id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/v/subnets/s")}});
        assert_eq!(check_compute(&b, &cluster("Standard_DS3_v2", 2, subnet(SUB, "rg-net")), SUB), Ok(()));
        let other_rg = check_compute(&b, &cluster("Standard_DS3_v2", 2, subnet(SUB, "rg-other")), SUB).unwrap_err();
        assert!(other_rg.to_string().contains("resource group rg-other is not allowed"), "{other_rg}");
        let other_sub = "11111111-2222-3333-4444-555555555555";
        let foreign = check_compute(&b, &cluster("Standard_DS3_v2", 2, subnet(other_sub, "rg-net")), SUB).unwrap_err();
        assert!(foreign.to_string().contains("is in subscription 11111111"), "{foreign}");
        let identity = json!({"identity": {"type": "UserAssigned", "userAssignedIdentities": [
            format!("/subscriptions/{SUB}/resourceGroups/rg-secret/providers/Microsoft.ManagedIdentity/userAssignedIdentities/jobs")
        ]}});
        let denied = check_compute(&b, &cluster("Standard_DS3_v2", 2, identity), SUB).unwrap_err();
        assert!(matches!(
            denied,
            ComputeDenial::ForeignResource { field: "amlCompute.identity.userAssignedIdentities", .. }
        ));
        assert!(check_arm_id(&b, SUB, "/subscriptions/../resourceGroups/rg-net").is_err());
        assert!(check_arm_id(&b, SUB, "garbage").is_err());
    }
}
