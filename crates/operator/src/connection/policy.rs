//! What a SubscriptionBinding allows a connection: checked after the workspace's own authorization (the connection
//! uses the binding that allows its workspace) and before any Azure call.
//!
//! - `allowedConnectionCategories`: globs the category must match (empty: no connection at all);
//! - `allowedConnectionTargets`: globs the target must match (empty: any target of an allowed category);
//! - the user-assigned identity a ManagedIdentity connection names ([`check_identity`]): like every ARM id a
//!   namespace hands the operator, it must be in the binding's resource groups.

use kube::ResourceExt;

use super::plan::ResolvedCredentials;
use crate::api::v1alpha1::{ConnectionAuthType, MlConnectionSpec, SubscriptionBinding};
use crate::policy::{Intent, ResourceDenial, check_resource, glob_matches};

/// Where a ManagedIdentity connection's identity is named, for the refusal.
pub const IDENTITY_FIELD: &str = "credentialsFrom (key resourceId)";

/// The user-assigned identity of a ManagedIdentity connection (`resourceId` in its credentials Secret): Azure ML uses
/// it to reach the target, so it must be one the binding lets the namespace use, checked as an MlCompute's
/// identities are ([`check_resource`], a read use: the identity is used, not changed). Otherwise a namespace could
/// lend its workspace another team's identity. Other auth types name no ARM resource.
pub fn check_identity(
    binding: &SubscriptionBinding,
    auth_type: ConnectionAuthType,
    creds: &ResolvedCredentials,
) -> Result<(), ResourceDenial> {
    if auth_type != ConnectionAuthType::ManagedIdentity {
        return Ok(());
    }
    match creds.credentials.as_ref().and_then(|c| c.fields.get("resourceId")) {
        Some(id) => check_resource(binding, IDENTITY_FIELD, id.expose(), Intent::Read),
        None => Ok(()),
    }
}

/// Why a binding does not allow a connection. `Display` is the message of the `NotPermitted` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionDenial {
    /// The category matches none of the binding's allowedConnectionCategories.
    #[error("SubscriptionBinding {binding} does not allow connection category {category} (allowedConnectionCategories: {})", if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") })]
    Category {
        /// The binding.
        binding: String,
        /// The category asked for.
        category: String,
        /// The binding's patterns.
        allowed: Vec<String>,
    },
    /// The target matches none of the binding's allowedConnectionTargets.
    #[error("SubscriptionBinding {binding} does not allow connection target {target} (allowedConnectionTargets: {})", allowed.join(", "))]
    Target {
        /// The binding.
        binding: String,
        /// The target asked for.
        target: String,
        /// The binding's patterns.
        allowed: Vec<String>,
    },
}

/// Checks `spec` against `binding` (the binding that allows the connection's workspace).
pub fn check_connection(binding: &SubscriptionBinding, spec: &MlConnectionSpec) -> Result<(), ConnectionDenial> {
    let name = binding.name_any();
    let allowed = &binding.spec.allowed_connection_categories;
    if !allowed.iter().any(|p| glob_matches(p, &spec.category)) {
        return Err(ConnectionDenial::Category {
            binding: name,
            category: spec.category.clone(),
            allowed: allowed.clone(),
        });
    }
    let targets = &binding.spec.allowed_connection_targets;
    if !targets.is_empty() && !targets.iter().any(|p| glob_matches(p, &spec.target)) {
        return Err(ConnectionDenial::Target { binding: name, target: spec.target.clone(), allowed: targets.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn binding(extra: serde_json::Value) -> SubscriptionBinding {
        let mut spec = json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "credential": {"managedIdentity": {}},
            "namespaces": ["team-a"],
            "resourceGroups": ["rg-*"],
        });
        json_patch::merge(&mut spec, &extra);
        SubscriptionBinding::new("risk", serde_json::from_value(spec).expect("binding spec"))
    }

    fn spec(category: &str, target: &str) -> MlConnectionSpec {
        serde_json::from_value(json!({
            "workspaceRef": {"name": "ws"}, "category": category, "target": target, "authType": "None",
        }))
        .expect("spec")
    }

    #[test]
    fn categories_must_match_a_glob_and_none_means_no_connection() {
        let b = binding(json!({"allowedConnectionCategories": ["Git", "container*"]}));
        assert_eq!(check_connection(&b, &spec("Git", "https://github.com/x")), Ok(()));
        assert_eq!(check_connection(&b, &spec("ContainerRegistry", "x.azurecr.io")), Ok(()));
        let denied = check_connection(&b, &spec("AzureOpenAI", "https://x.openai.azure.com")).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "SubscriptionBinding risk does not allow connection category AzureOpenAI (allowedConnectionCategories: Git, container*)"
        );
        let none = check_connection(&binding(json!({})), &spec("Git", "x")).unwrap_err();
        assert!(none.to_string().ends_with("(allowedConnectionCategories: none)"), "{none}");
    }

    #[test]
    fn a_managed_identity_must_be_in_the_bindings_resource_groups() {
        let b = binding(json!({"allowedConnectionCategories": ["*"]}));
        let creds = |id: &str| {
            let data = std::collections::BTreeMap::from([
                ("clientId".to_owned(), k8s_openapi::ByteString(b"00000000-0000-4000-8000-00000000000a".to_vec())),
                ("resourceId".to_owned(), k8s_openapi::ByteString(id.as_bytes().to_vec())),
            ]);
            super::super::plan::resolve_credentials(ConnectionAuthType::ManagedIdentity, Some("mi"), Some(&data), "u")
                .expect("credentials")
        };
        let sub = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333";
        let ours = creds(&format!(
            "{sub}/resourceGroups/rg-team/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ci"
        ));
        assert_eq!(check_identity(&b, ConnectionAuthType::ManagedIdentity, &ours), Ok(()));
        let theirs = creds(&format!(
            "{sub}/resourceGroups/other-team/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ci"
        ));
        let denied = check_identity(&b, ConnectionAuthType::ManagedIdentity, &theirs).unwrap_err();
        assert!(denied.to_string().contains(IDENTITY_FIELD) && denied.to_string().contains("other-team"), "{denied}");
        let elsewhere = creds(
            "/subscriptions/11111111-1bf0-4dda-aec3-111122223333/resourceGroups/rg-team/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ci",
        );
        assert!(check_identity(&b, ConnectionAuthType::ManagedIdentity, &elsewhere).is_err(), "another subscription");
        // Only ManagedIdentity names an ARM resource.
        assert_eq!(check_identity(&b, ConnectionAuthType::Pat, &theirs), Ok(()));
    }

    #[test]
    fn targets_are_limited_when_the_binding_lists_them() {
        let b = binding(
            json!({"allowedConnectionCategories": ["*"], "allowedConnectionTargets": ["https://github.com/contoso/*"]}),
        );
        assert_eq!(check_connection(&b, &spec("Git", "https://github.com/contoso/ml")), Ok(()));
        let denied = check_connection(&b, &spec("Git", "https://github.com/evil/ml")).unwrap_err();
        assert!(matches!(denied, ConnectionDenial::Target { .. }), "{denied}");
    }
}
