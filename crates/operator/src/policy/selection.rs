//! Which SubscriptionBinding a workspace uses when several allow it: the lowest name (byte order) wins, and the
//! others are reported when their credential differs (the user should know whose identity acts in Azure). Pure.

use kube::ResourceExt;

use super::resources::{Intent, check_dependencies, check_resource};
use super::{Request, check};
use crate::api::conditions::Reason;
use crate::api::v1alpha1::{MlWorkspaceSpec, SubscriptionBinding};

/// The binding chosen for a workspace, and the other bindings that allow it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The binding used (the lowest name of those that allow the workspace).
    pub chosen: String,
    /// Other bindings that allow it with a different credential (or tenant), by name.
    pub conflicting: Vec<String>,
}

impl Selection {
    /// The `BindingSelected` condition's reason and message.
    pub fn condition(&self) -> (Reason, String) {
        if self.conflicting.is_empty() {
            (Reason::BindingSelected, format!("SubscriptionBinding {} is used", self.chosen))
        } else {
            (
                Reason::AmbiguousBinding,
                format!(
                    "SubscriptionBindings {} and {} allow this workspace with different credentials; {} is used (the \
                     lowest name wins): restrict the others' namespaces or resource groups, or give them the same \
                     credential",
                    self.chosen,
                    self.conflicting.join(", "),
                    self.chosen
                ),
            )
        }
    }
}

/// The selection for a request that `chosen` (the binding [`super::authorize_with_resources`] returned) allows: the
/// other bindings that pass the same checks (namespace, resource group, roles, scopes, resources named by id) with a
/// credential or tenant of their own.
pub fn select(
    bindings: &[SubscriptionBinding],
    req: &Request<'_>,
    spec: &MlWorkspaceSpec,
    extra: &[(String, String, Intent)],
    chosen: &SubscriptionBinding,
) -> Selection {
    let chosen_name = chosen.name_any();
    let mut conflicting: Vec<String> = bindings
        .iter()
        .filter(|b| b.name_any() != chosen_name)
        .filter(|b| b.spec.credential != chosen.spec.credential || b.spec.tenant_id != chosen.spec.tenant_id)
        .filter(|b| check(b, req).is_ok() && check_dependencies(b, spec).is_ok())
        .filter(|b| extra.iter().all(|(field, id, intent)| check_resource(b, field, id, *intent).is_ok()))
        .map(ResourceExt::name_any)
        .collect();
    conflicting.sort();
    Selection { chosen: chosen_name, conflicting }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::authorize_with_resources;

    const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";

    fn binding(name: &str, client_id: &str, resource_groups: &[&str]) -> SubscriptionBinding {
        serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "SubscriptionBinding",
            "metadata": {"name": name},
            "spec": {
                "subscriptionId": SUB,
                "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "credential": {"clientSecret": {"clientId": client_id, "secretRef": {"name": "sp", "key": "clientSecret"}}},
                "namespaces": ["team-a"],
                "resourceGroups": resource_groups,
            },
        }))
        .expect("binding")
    }

    fn spec() -> MlWorkspaceSpec {
        serde_json::from_value(json!({
            "subscriptionId": SUB, "resourceGroup": "rg-risk-ml", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .expect("spec")
    }

    fn selection(bindings: &[SubscriptionBinding]) -> Selection {
        let spec = spec();
        let req = Request {
            subscription_id: SUB,
            namespace: "team-a",
            namespace_labels: None,
            resource_group: "rg-risk-ml",
            access: &[],
            grantor: crate::policy::Grantor::Workspace,
        };
        let chosen = authorize_with_resources(bindings, &req, &spec, &[]).expect("allowed");
        select(bindings, &req, &spec, &[], chosen)
    }

    #[test]
    fn the_lowest_name_wins_and_other_credentials_are_named() {
        let bindings = [
            binding("sandbox", "11111111-0000-4000-8000-000000000001", &["*"]),
            binding("risk-prod", "22222222-0000-4000-8000-000000000002", &["rg-risk-*"]),
            binding("zz-same", "22222222-0000-4000-8000-000000000002", &["*"]),
            binding("other-groups", "33333333-0000-4000-8000-000000000003", &["rg-other-*"]),
        ];
        let s = selection(&bindings);
        assert_eq!(s.chosen, "risk-prod");
        assert_eq!(s.conflicting, ["sandbox"], "same credential and bindings that do not allow it are not conflicts");
        let (reason, message) = s.condition();
        assert_eq!(reason, Reason::AmbiguousBinding);
        assert!(message.contains("risk-prod and sandbox") && message.contains("risk-prod is used"), "{message}");
    }

    #[test]
    fn a_single_binding_is_simply_selected() {
        let s = selection(&[binding("sandbox", "11111111-0000-4000-8000-000000000001", &["*"])]);
        assert_eq!((s.chosen.as_str(), s.conflicting.len()), ("sandbox", 0));
        assert_eq!(s.condition().0, Reason::BindingSelected);
    }
}
