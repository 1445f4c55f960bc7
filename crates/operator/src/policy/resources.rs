//! Which Azure resources named by ARM id a namespace may reach through a binding, and for what.
//!
//! A workspace's own place (subscription, resource group) is judged by [`super::authorize`]. Everything else the
//! operator reads or writes on a namespace's behalf because a spec names it by ARM id (a workspace's storage account,
//! key vault, Application Insights, container registry; an online deployment's model or environment asset; and,
//! for the kinds to come, subnets and user-assigned identities) goes through [`check_resource`] with the binding that
//! allowed the workspace and the [`Intent`] of the call:
//!
//! - the id must be in the binding's subscription (a binding grants exactly one);
//! - [`Intent::Write`] (regenerating a storage key, assigning a role at the resource, moving it): its resource group
//!   must match `resourceGroups`, the groups the namespaces own;
//! - [`Intent::Read`] (linking it to a workspace, reading its properties or keys): `resourceGroups` or
//!   `dependencyResourceGroups`, the groups whose resources the namespaces may use but not change.
//!
//! Ids that do not parse as a resource below a resource group fail closed. The checks are pure and run before any
//! Azure call; a refusal becomes `Stalled`/`NotPermitted` with the [`ResourceDenial`] message, which names the spec
//! field.

use kube::ResourceExt;

use super::glob_matches;
use crate::api::v1alpha1::{MlOnlineEndpointSpec, MlWorkspaceSpec, SubscriptionBinding};
use crate::azure::ids::ResourceId;

/// What the operator will do with a resource it reaches by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Reference it (e.g. link it to a workspace), read its properties, list its keys: allowed in `resourceGroups`
    /// and `dependencyResourceGroups`.
    Read,
    /// Change it (regenerate its keys, assign roles at it, move it): allowed in `resourceGroups` only.
    Write,
}

impl Intent {
    fn as_str(self) -> &'static str {
        match self {
            Intent::Read => "read",
            Intent::Write => "write",
        }
    }
}

/// Why a binding does not let a namespace reach a resource named by id. `Display` is the `NotPermitted` message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceDenial {
    /// The id is not a resource below a resource group of a subscription.
    #[error("spec.{field} {id:?} is not the ARM id of a resource in a resource group; refusing to {} it", intent.as_str())]
    Malformed {
        /// The spec field, e.g. `storageAccount.id`.
        field: String,
        /// The id as written.
        id: String,
        /// What the operator would have done.
        intent: Intent,
    },
    /// The id is in another subscription than the binding's.
    #[error(
        "spec.{field} {id} is outside subscription {subscription}: a SubscriptionBinding grants one subscription, so resources named by id must be in the workspace's own subscription"
    )]
    Subscription {
        /// The spec field.
        field: String,
        /// The id as written.
        id: String,
        /// The binding's subscription.
        subscription: String,
    },
    /// The resource group is in neither list of the binding.
    #[error(
        "spec.{field} {id} is in resource group {}, which SubscriptionBinding {} allows neither in resourceGroups ({}) nor in dependencyResourceGroups ({})",
        limits.resource_group, limits.binding, list(&limits.resource_groups), list(&limits.dependency_resource_groups)
    )]
    ResourceGroup {
        /// The spec field.
        field: String,
        /// The id as written.
        id: String,
        /// The resource group and the binding's lists.
        limits: Box<GroupLimits>,
    },
    /// The resource group may be read (dependencyResourceGroups) but the operator would write to it.
    #[error(
        "spec.{field} {id} is in resource group {}, which SubscriptionBinding {} allows only to be used (dependencyResourceGroups), not written; {why} writes to it, which needs the group in resourceGroups ({})",
        limits.resource_group, limits.binding, list(&limits.resource_groups)
    )]
    ReadOnly {
        /// The spec field.
        field: String,
        /// The id as written.
        id: String,
        /// The resource group and the binding's lists.
        limits: Box<GroupLimits>,
        /// What would write, e.g. `spec.storageKeys.rotateEvery (storage key regeneration)`.
        why: String,
    },
}

/// The resource group of a refused resource and the lists of the binding that refused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    /// The resource's resource group.
    pub resource_group: String,
    /// The binding.
    pub binding: String,
    /// The binding's `resourceGroups`.
    pub resource_groups: Vec<String>,
    /// The binding's `dependencyResourceGroups`.
    pub dependency_resource_groups: Vec<String>,
}

fn list(patterns: &[String]) -> String {
    if patterns.is_empty() { "none".to_owned() } else { patterns.join(", ") }
}

/// THE check for every resource a spec names by ARM id: whether `binding` (the one [`super::authorize`] chose for
/// the namespace and the workspace's place) lets the operator `intent` the resource `id`, given in spec field `field`
/// (e.g. `storageAccount.id`, named in the refusal). Pure, no Azure call.
///
/// Kinds that reference more resources by id (MlCompute: `subnet`, user-assigned `identity`) call this with each
/// id and the intent of their use (a subnet joined by a cluster: [`Intent::Read`]; anything the operator changes:
/// [`Intent::Write`]); a write refused here must never be sent.
pub fn check_resource(
    binding: &SubscriptionBinding,
    field: &str,
    id: &str,
    intent: Intent,
) -> Result<(), ResourceDenial> {
    check_resource_because(binding, field, id, intent, "the operator")
}

/// [`check_resource`] with the reason of a write, named in the refusal of a write to a read-only group.
pub fn check_resource_because(
    binding: &SubscriptionBinding,
    field: &str,
    id: &str,
    intent: Intent,
    why: &str,
) -> Result<(), ResourceDenial> {
    let malformed = || ResourceDenial::Malformed { field: field.to_owned(), id: id.to_owned(), intent };
    // The id layer validates every segment (no '..', '%', '?', empty segments), so the groups compared below are the
    // ones ARM would address.
    let parsed = ResourceId::parse(id).map_err(|_| malformed())?;
    if !parsed.subscription_id().to_string().eq_ignore_ascii_case(&binding.spec.subscription_id) {
        return Err(ResourceDenial::Subscription {
            field: field.to_owned(),
            id: id.to_owned(),
            subscription: binding.spec.subscription_id.clone(),
        });
    }
    let Some(rg) = parsed.resource_group() else {
        return Err(malformed());
    };
    let rg = rg.name.as_str();
    let spec = &binding.spec;
    if spec.resource_groups.iter().any(|p| glob_matches(p, rg)) {
        return Ok(());
    }
    let readable = spec.dependency_resource_groups.iter().any(|p| glob_matches(p, rg));
    let limits = || {
        Box::new(GroupLimits {
            resource_group: rg.to_owned(),
            binding: binding.name_any(),
            resource_groups: spec.resource_groups.clone(),
            dependency_resource_groups: spec.dependency_resource_groups.clone(),
        })
    };
    let (field, id) = (field.to_owned(), id.to_owned());
    match (readable, intent) {
        (true, Intent::Read) => Ok(()),
        (true, Intent::Write) => Err(ResourceDenial::ReadOnly { field, id, limits: limits(), why: why.to_owned() }),
        (false, _) => Err(ResourceDenial::ResourceGroup { field, id, limits: limits() }),
    }
}

/// Why no binding allows a workspace together with the resources it names by id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No binding allows the workspace's place, roles or scopes.
    #[error(transparent)]
    Workspace(#[from] super::Denial),
    /// Bindings allow the workspace, but none of them the resources it names by id (the lowest-named one's refusal).
    #[error(transparent)]
    Resource(#[from] ResourceDenial),
}

/// [`super::authorize`] extended to the resources named by id: the binding (lowest name first) that allows the
/// request and every use of [`check_dependencies`] and `extra` (spec field, id, intent). Two bindings may allow the
/// same namespace and group with different `dependencyResourceGroups`; the first that allows everything is chosen.
pub fn authorize_with_resources<'a>(
    bindings: &'a [SubscriptionBinding],
    req: &super::Request<'_>,
    spec: &MlWorkspaceSpec,
    extra: &[(String, String, Intent)],
) -> Result<&'a SubscriptionBinding, Refusal> {
    let first = super::authorize(bindings, req)?;
    let mut candidates: Vec<&SubscriptionBinding> = bindings.iter().filter(|b| super::check(b, req).is_ok()).collect();
    candidates.sort_by_key(|b| b.name_any());
    let uses_ok = |b: &SubscriptionBinding| {
        check_dependencies(b, spec)?;
        extra.iter().try_for_each(|(field, id, intent)| check_resource(b, field, id, *intent))
    };
    let mut refusal = None;
    for binding in candidates {
        match uses_ok(binding) {
            Ok(()) => return Ok(binding),
            Err(denial) => {
                refusal.get_or_insert(denial);
            }
        }
    }
    // `first` passed `check`, so it was a candidate and `refusal` holds its denial.
    Err(refusal.map(Refusal::Resource).unwrap_or_else(|| {
        Refusal::Workspace(super::Denial::Subscription { subscription: first.spec.subscription_id.clone() })
    }))
}

/// The dependent resources a workspace spec names by `id`, each with the intent of the operator's use: the storage
/// account is written when `storageKeys.rotateEvery` is set (rotation regenerates its keys), everything else is only
/// linked and read. Resources given by `name` are in the workspace's own resource group, which
/// [`super::authorize`] already allowed for writing.
pub fn dependency_uses(spec: &MlWorkspaceSpec) -> Vec<(String, &str, Intent)> {
    super::dependencies(spec)
        .into_iter()
        .filter_map(|(field, dep)| {
            let id = dep.id.as_deref()?;
            let rotates = field == "storageAccount" && spec.storage_keys.rotate_every.is_some();
            Some((format!("{field}.id"), id, if rotates { Intent::Write } else { Intent::Read }))
        })
        .collect()
}

/// Checks every dependent resource a workspace names by id against `binding` ([`check_resource`] with the intents
/// of [`dependency_uses`]).
pub fn check_dependencies(binding: &SubscriptionBinding, spec: &MlWorkspaceSpec) -> Result<(), ResourceDenial> {
    for (field, id, intent) in dependency_uses(spec) {
        let why = "spec.storageKeys.rotateEvery (storage key regeneration)";
        check_resource_because(binding, &field, id, intent, why)?;
    }
    Ok(())
}

/// The assets an online endpoint's deployments name by ARM id or by `azureml://subscriptions/...` URI (a model or
/// environment of another workspace), as the id of what Azure reads on the operator's behalf, for [`check_resource`]
/// with [`Intent::Read`]. Short names (`azureml:name:version`) and registry URIs (`azureml://registries/...`) name
/// assets of the workspace itself or of a registry, not resources of a subscription, and are not listed. A URI of
/// the subscription form that cannot be read is listed as written, so the check refuses it.
pub fn endpoint_asset_uses(spec: &MlOnlineEndpointSpec) -> Vec<(String, String, Intent)> {
    let mut out = Vec::new();
    for (i, d) in spec.deployments.iter().enumerate() {
        let assets = [("model", Some(&d.model)), ("environment", d.environment.as_ref())];
        for (field, value) in assets {
            let Some(value) = value else { continue };
            let id = if value.starts_with('/') {
                value.clone()
            } else if value.get(..24).is_some_and(|p| p.eq_ignore_ascii_case("azureml://subscriptions/")) {
                azureml_uri_to_id(value).unwrap_or_else(|| value.clone())
            } else {
                continue;
            };
            out.push((format!("deployments[{i}].{field}"), id, Intent::Read));
        }
    }
    out
}

/// `azureml://subscriptions/{s}/resourcegroups/{rg}/workspaces/{ws}/...` as the ARM id of that workspace.
fn azureml_uri_to_id(uri: &str) -> Option<String> {
    let segs: Vec<&str> = uri.get("azureml://".len()..)?.split('/').collect();
    match segs.as_slice() {
        [s, sub, g, rg, w, ws, ..]
            if s.eq_ignore_ascii_case("subscriptions")
                && g.eq_ignore_ascii_case("resourcegroups")
                && w.eq_ignore_ascii_case("workspaces") =>
        {
            Some(format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{CredentialSpec, DependentResource, ManagedIdentityCredential, SubscriptionBindingSpec};

    const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
    const OTHER_SUB: &str = "0b1f6471-1bf0-4dda-aec3-999999999999";

    fn binding(dependency_groups: &[&str]) -> SubscriptionBinding {
        SubscriptionBinding::new(
            "team-b",
            SubscriptionBindingSpec {
                subscription_id: SUB.into(),
                tenant_id: "72f988bf-0000-0000-0000-000000000000".into(),
                credential: CredentialSpec {
                    workload_identity: None,
                    client_secret: None,
                    managed_identity: Some(ManagedIdentityCredential { client_id: None }),
                },
                namespaces: vec!["team-b".into()],
                namespace_selector: None,
                resource_groups: vec!["rg-teamb-*".into()],
                dependency_resource_groups: dependency_groups.iter().map(|s| s.to_string()).collect(),
                allowed_roles: Vec::new(),
                allowed_scopes: Vec::new(),
                allow_moves: false,
                allowed_vm_sizes: Vec::new(),
                max_nodes_per_cluster: None,
                allowed_connection_categories: Vec::new(),
                allowed_connection_targets: Vec::new(),
            },
        )
    }

    fn storage(sub: &str, rg: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/sa1")
    }

    fn spec(storage: DependentResource, rotate: bool) -> MlWorkspaceSpec {
        let mut spec: MlWorkspaceSpec = serde_json::from_value(serde_json::json!({
            "subscriptionId": SUB, "resourceGroup": "rg-teamb-ml", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .unwrap();
        spec.storage_account = storage;
        spec.storage_keys.rotate_every = rotate.then(|| "90d".to_owned());
        spec
    }

    #[test]
    fn own_groups_allow_reads_and_writes() {
        let b = binding(&[]);
        for intent in [Intent::Read, Intent::Write] {
            assert_eq!(check_resource(&b, "storageAccount.id", &storage(SUB, "rg-teamb-data"), intent), Ok(()));
            assert_eq!(check_resource(&b, "f", &storage(&SUB.to_uppercase(), "RG-TeamB-data"), intent), Ok(()));
        }
    }

    #[test]
    fn a_group_in_neither_list_is_refused_for_any_use() {
        let b = binding(&["rg-shared-*"]);
        for intent in [Intent::Read, Intent::Write] {
            let err = check_resource(&b, "storageAccount.id", &storage(SUB, "rg-risk-ml"), intent).unwrap_err();
            assert!(matches!(err, ResourceDenial::ResourceGroup { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("spec.storageAccount.id") && text.contains("rg-risk-ml"), "{text}");
            assert!(text.contains("rg-teamb-*") && text.contains("rg-shared-*"), "{text}");
        }
    }

    #[test]
    fn dependency_groups_allow_reads_only() {
        let b = binding(&["rg-shared-*"]);
        let id = storage(SUB, "rg-shared-data");
        assert_eq!(check_resource(&b, "storageAccount.id", &id, Intent::Read), Ok(()));
        let err = check_resource(&b, "storageAccount.id", &id, Intent::Write).unwrap_err();
        assert!(matches!(err, ResourceDenial::ReadOnly { .. }), "{err:?}");
        assert!(err.to_string().contains("dependencyResourceGroups"), "{err}");
    }

    #[test]
    fn other_subscriptions_and_malformed_ids_fail_closed() {
        let b = binding(&["*"]);
        let err = check_resource(&b, "keyVault.id", &storage(OTHER_SUB, "rg-teamb-x"), Intent::Read).unwrap_err();
        assert!(err.to_string().contains(&format!("spec.keyVault.id /subscriptions/{OTHER_SUB}")), "{err}");
        for id in [
            String::new(),
            "subscriptions/x".into(),
            format!("/subscriptions/{SUB}"),
            format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts/sa1"),
            format!("/subscriptions/{SUB}/resourceGroups/rg-teamb-x/../../resourceGroups/rg-risk-ml/providers/a/b/c"),
            format!("/subscriptions/{SUB}/resourceGroups/rg-teamb-x%2F..%2Frg-risk/providers/a/b/c"),
        ] {
            assert!(check_resource(&b, "f", &id, Intent::Read).is_err(), "{id:?}");
        }
    }

    #[test]
    fn endpoint_assets_of_other_groups_are_listed_for_the_check() {
        let spec: MlOnlineEndpointSpec = serde_json::from_value(serde_json::json!({
            "workspaceRef": {"name": "ws"},
            "deployments": [
                {"name": "blue", "model": "azureml:fraud:1", "instanceType": "Standard_DS3_v2"},
                {"name": "green", "instanceType": "Standard_DS3_v2",
                 "model": format!("/subscriptions/{SUB}/resourceGroups/rg-risk-ml/providers/Microsoft.MachineLearningServices/workspaces/w/models/m/versions/1"),
                 "environment": format!("azureml://subscriptions/{SUB}/resourcegroups/rg-risk-ml/workspaces/w/environments/e/versions/2")},
                {"name": "red", "instanceType": "Standard_DS3_v2", "model": "azureml://subscriptions/broken"},
            ],
        }))
        .unwrap();
        let uses = endpoint_asset_uses(&spec);
        let fields: Vec<&str> = uses.iter().map(|u| u.0.as_str()).collect();
        assert_eq!(fields, ["deployments[1].model", "deployments[1].environment", "deployments[2].model"]);
        let b = binding(&[]);
        for (field, id, intent) in &uses {
            let err = check_resource(&b, field, id, *intent).unwrap_err();
            assert!(err.to_string().contains(&format!("spec.{field}")), "{err}");
        }
        let shared = binding(&["rg-risk-*"]);
        assert!(check_resource(&shared, &uses[0].0, &uses[0].1, Intent::Read).is_ok());
        assert!(check_resource(&shared, &uses[1].0, &uses[1].1, Intent::Read).is_ok());
        assert!(check_resource(&shared, &uses[2].0, &uses[2].1, Intent::Read).is_err(), "unreadable URI");
    }

    #[test]
    fn the_binding_that_allows_the_resources_is_chosen() {
        let risk = DependentResource::by_id(storage(SUB, "rg-risk-ml"));
        let spec = spec(risk, false);
        let namespace_only = binding(&[]);
        let mut shared = binding(&["rg-risk-*"]);
        shared.metadata.name = Some("team-b-shared".into());
        let req = crate::policy::Request {
            namespace: "team-b",
            namespace_labels: None,
            subscription_id: SUB,
            resource_group: "rg-teamb-ml",
            access: &[],
            grantor: crate::policy::Grantor::Workspace,
        };
        let both = [namespace_only.clone(), shared];
        let chosen = authorize_with_resources(&both, &req, &spec, &[]).unwrap();
        assert_eq!(chosen.name_any(), "team-b-shared");
        let err = authorize_with_resources(&[namespace_only], &req, &spec, &[]).unwrap_err();
        assert!(matches!(err, Refusal::Resource(ResourceDenial::ResourceGroup { .. })), "{err:?}");
        let elsewhere = crate::policy::Request { resource_group: "rg-other", ..req };
        let err = authorize_with_resources(&both, &elsewhere, &spec, &[]).unwrap_err();
        assert!(matches!(err, Refusal::Workspace(_)), "{err:?}");
    }

    #[test]
    fn rotation_makes_the_storage_account_a_write() {
        let shared = DependentResource::by_id(storage(SUB, "rg-shared-data"));
        let b = binding(&["rg-shared-*"]);
        assert_eq!(check_dependencies(&b, &spec(shared.clone(), false)), Ok(()));
        let err = check_dependencies(&b, &spec(shared, true)).unwrap_err();
        assert!(err.to_string().contains("rotateEvery"), "{err}");
        // By name: in the workspace's own group, nothing to check here.
        assert_eq!(check_dependencies(&b, &spec(DependentResource::by_name("sa1"), true)), Ok(()));
        // The probe of the issue: a group the binding does not name at all.
        let risk = DependentResource::by_id(storage(SUB, "rg-risk-ml"));
        let err = check_dependencies(&binding(&[]), &spec(risk, true)).unwrap_err();
        assert!(matches!(err, ResourceDenial::ResourceGroup { ref field, .. } if field == "storageAccount.id"));
    }
}
