use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;

use super::*;
use crate::api::v1alpha1::{
    AccessEntry, AccessScope, BuiltinRole, CredentialSpec, DependentResource, ManagedIdentityCredential,
    MlWorkspaceSpec, SubscriptionBindingSpec,
};

const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
const OTHER_SUB: &str = "0b1f6471-1bf0-4dda-aec3-999999999999";
const PRINCIPAL: &str = "6f1c0000-0000-0000-0000-000000000001";

fn binding(name: &str, sub: &str) -> SubscriptionBinding {
    SubscriptionBinding::new(
        name,
        SubscriptionBindingSpec {
            subscription_id: sub.into(),
            tenant_id: "72f988bf-0000-0000-0000-000000000000".into(),
            credential: CredentialSpec {
                workload_identity: None,
                client_secret: None,
                managed_identity: Some(ManagedIdentityCredential { client_id: None }),
            },
            namespaces: vec!["team-risk".into()],
            namespace_selector: None,
            resource_groups: vec!["rg-risk-*".into()],
            dependency_resource_groups: Vec::new(),
            allowed_roles: vec!["Contributor".into(), "Reader".into()],
            allowed_scopes: vec![AccessScope::Workspace, AccessScope::ResourceGroup],
            allow_moves: false,
            allowed_vm_sizes: vec![],
            max_nodes_per_cluster: None,
            allowed_connection_categories: Vec::new(),
            allowed_connection_targets: Vec::new(),
        },
    )
}

fn entry(role: BuiltinRole, scope: AccessScope) -> AccessEntry {
    AccessEntry {
        principal_id: PRINCIPAL.into(),
        principal_type: None,
        role: Some(role),
        role_definition_id: None,
        scope,
    }
}

fn request<'a>(access: &'a [AccessEntry]) -> Request<'a> {
    Request {
        namespace: "team-risk",
        namespace_labels: None,
        subscription_id: SUB,
        resource_group: "rg-risk-ml",
        access,
        grantor: Grantor::Workspace,
    }
}

#[test]
fn allowed_request_returns_the_binding() {
    let bindings = [binding("risk", SUB)];
    let access = [entry(BuiltinRole::Contributor, AccessScope::Workspace)];
    assert_eq!(authorize(&bindings, &request(&access)).map(|b| b.name_any()), Ok("risk".to_owned()));
}

#[test]
fn subscription_not_bound() {
    let bindings = [binding("risk", OTHER_SUB)];
    let err = authorize(&bindings, &request(&[])).unwrap_err();
    assert_eq!(err, Denial::Subscription { subscription: SUB.into() });
    assert!(err.to_string().contains(SUB), "{err}");
}

#[test]
fn no_bindings_at_all() {
    assert!(matches!(authorize(&[], &request(&[])), Err(Denial::Subscription { .. })));
}

#[test]
fn namespace_not_bound() {
    let bindings = [binding("risk", SUB)];
    let req = Request { namespace: "team-fraud", ..request(&[]) };
    let err = authorize(&bindings, &req).unwrap_err();
    assert!(matches!(err, Denial::Namespace { .. }), "{err:?}");
    assert!(err.to_string().contains("namespace team-fraud"), "{err}");
}

#[test]
fn resource_group_outside_glob() {
    let bindings = [binding("risk", SUB)];
    let req = Request { resource_group: "rg-fraud-ml", ..request(&[]) };
    let err = authorize(&bindings, &req).unwrap_err();
    assert!(err.to_string().contains("resource group rg-fraud-ml"), "{err}");
    assert!(err.to_string().contains("rg-risk-*"), "{err}");
}

#[test]
fn resource_group_glob_is_case_insensitive_and_anchored() {
    assert!(glob_matches("rg-risk-*", "RG-Risk-ML"));
    assert!(!glob_matches("rg-risk-*", "x-rg-risk-ml"));
    assert!(glob_matches("*", "anything"));
    assert!(glob_matches("rg-?", "rg-a"));
    assert!(!glob_matches("rg-[", "rg-["), "an invalid pattern matches nothing");
}

#[test]
fn role_not_allowed() {
    let bindings = [binding("risk", SUB)];
    let access = [entry(BuiltinRole::Owner, AccessScope::Workspace)];
    let err = authorize(&bindings, &request(&access)).unwrap_err();
    assert!(matches!(err, Denial::Role { ref role, .. } if role == "Owner"), "{err:?}");
    assert!(err.to_string().contains("role Owner"), "{err}");
}

#[test]
fn role_by_guid_matches_allowed_name_and_vice_versa() {
    let mut b = binding("risk", SUB);
    b.spec.allowed_roles = vec!["Contributor".into(), "ABCDEF00-0000-0000-0000-000000000000".into()];
    let bindings = [b];
    let by_guid = AccessEntry {
        role: None,
        role_definition_id: Some(BuiltinRole::Contributor.definition_guid().to_uppercase()),
        ..entry(BuiltinRole::Reader, AccessScope::Workspace)
    };
    let custom = AccessEntry {
        role: None,
        role_definition_id: Some("abcdef00-0000-0000-0000-000000000000".into()),
        ..entry(BuiltinRole::Reader, AccessScope::Workspace)
    };
    assert!(authorize(&bindings, &request(&[by_guid, custom])).is_ok());
    let reader = [entry(BuiltinRole::Reader, AccessScope::Workspace)];
    assert!(authorize(&bindings, &request(&reader)).is_err(), "Reader is no longer in the list");
}

#[test]
fn empty_allowed_roles_allows_no_access_entries() {
    let mut b = binding("risk", SUB);
    b.spec.allowed_roles.clear();
    let bindings = [b];
    assert!(authorize(&bindings, &request(&[])).is_ok());
    let access = [entry(BuiltinRole::Reader, AccessScope::Workspace)];
    assert!(matches!(authorize(&bindings, &request(&access)), Err(Denial::Role { .. })));
}

#[test]
fn scope_not_allowed() {
    let bindings = [binding("risk", SUB)];
    let access = [entry(BuiltinRole::Reader, AccessScope::Subscription)];
    let err = authorize(&bindings, &request(&access)).unwrap_err();
    assert!(err.to_string().contains("scope Subscription"), "{err}");
}

#[test]
fn an_endpoints_scope_denial_names_the_endpoint() {
    let mut b = binding("risk", SUB);
    b.spec.allowed_scopes = vec![AccessScope::ResourceGroup];
    let bindings = [b];
    // An endpoint's entries reach the policy in the workspace's terms (scope Workspace: the resource itself).
    let access = [entry(BuiltinRole::Reader, AccessScope::Workspace)];
    let req = Request { grantor: Grantor::Endpoint, ..request(&access) };
    let err = authorize(&bindings, &req).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "SubscriptionBinding risk does not allow granting roles at scope Endpoint (endpoint roles need Workspace \
             in the binding's allowedScopes) (access entry for principal {PRINCIPAL})"
        )
    );
    let err = authorize(&bindings, &request(&access)).unwrap_err();
    assert!(err.to_string().contains("at scope Workspace (access entry"), "{err}");
}

#[test]
fn entry_without_role_is_denied() {
    let bindings = [binding("risk", SUB)];
    let access = [AccessEntry { role: None, ..entry(BuiltinRole::Reader, AccessScope::Workspace) }];
    assert!(matches!(authorize(&bindings, &request(&access)), Err(Denial::MissingRole { .. })));
}

#[test]
fn namespace_selector_matches_labels() {
    let mut b = binding("selected", SUB);
    b.spec.namespaces.clear();
    b.spec.namespace_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("team".to_owned(), "risk".to_owned())])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "env".into(),
            operator: "In".into(),
            values: Some(vec!["prod".into(), "dev".into()]),
        }]),
    });
    let bindings = [b];
    assert!(needs_namespace_labels(&bindings, SUB));
    assert!(!needs_namespace_labels(&bindings, OTHER_SUB));
    let good = BTreeMap::from([("team".to_owned(), "risk".to_owned()), ("env".to_owned(), "dev".to_owned())]);
    let bad = BTreeMap::from([("team".to_owned(), "risk".to_owned()), ("env".to_owned(), "qa".to_owned())]);
    let with = |labels| Request { namespace: "ns-x", namespace_labels: Some(labels), ..request(&[]) };
    assert!(authorize(&bindings, &with(&good)).is_ok());
    assert!(matches!(authorize(&bindings, &with(&bad)), Err(Denial::Namespace { .. })));
    // Labels not read: a selector cannot match.
    let unknown = Request { namespace: "ns-x", ..request(&[]) };
    assert!(authorize(&bindings, &unknown).is_err());
}

#[test]
fn invalid_selector_fails_closed() {
    let mut b = binding("bad", SUB);
    b.spec.namespaces.clear();
    b.spec.namespace_selector = Some(LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "env".into(),
            operator: "Bogus".into(),
            values: None,
        }]),
    });
    let labels = BTreeMap::new();
    assert!(!namespace_allowed(&b, "any", Some(&labels)));
}

#[test]
fn reports_the_binding_that_came_closest_and_prefers_a_passing_one() {
    let mut strict = binding("a-strict", SUB);
    strict.spec.allowed_roles.clear();
    let wrong_ns = {
        let mut b = binding("b-other-team", SUB);
        b.spec.namespaces = vec!["team-fraud".into()];
        b
    };
    let access = [entry(BuiltinRole::Reader, AccessScope::Workspace)];
    let err = authorize(&[wrong_ns.clone(), strict.clone()], &request(&access)).unwrap_err();
    assert!(matches!(err, Denial::Role { ref binding, .. } if binding == "a-strict"), "{err:?}");
    let lenient = binding("z-lenient", SUB);
    let all = [strict, wrong_ns, lenient];
    let chosen = authorize(&all, &request(&access)).unwrap();
    assert_eq!(chosen.name_any(), "z-lenient");
}

#[test]
fn two_teams_are_isolated() {
    let risk = binding("risk", SUB);
    let mut fraud = binding("fraud", OTHER_SUB);
    fraud.spec.namespaces = vec!["team-fraud".into()];
    fraud.spec.resource_groups = vec!["rg-fraud-*".into()];
    let bindings = [risk, fraud];
    let fraud_into_risk = Request { namespace: "team-fraud", resource_group: "rg-fraud-x", ..request(&[]) };
    assert!(matches!(authorize(&bindings, &fraud_into_risk), Err(Denial::Namespace { .. })));
    let fraud_own = Request { subscription_id: OTHER_SUB, ..fraud_into_risk };
    assert_eq!(authorize(&bindings, &fraud_own).map(|b| b.name_any()), Ok("fraud".to_owned()));
}

fn arb_scope() -> impl Strategy<Value = AccessScope> {
    prop_oneof![Just(AccessScope::Workspace), Just(AccessScope::ResourceGroup), Just(AccessScope::Subscription)]
}

fn arb_entry() -> impl Strategy<Value = AccessEntry> {
    (any::<String>(), proptest::option::of(0usize..5), proptest::option::of(any::<String>()), arb_scope()).prop_map(
        |(principal_id, role, role_definition_id, scope)| AccessEntry {
            principal_id,
            principal_type: None,
            role: role.map(|i| BuiltinRole::ALL[i]),
            role_definition_id,
            scope,
        },
    )
}

proptest! {
    #[test]
    fn authorize_never_panics_and_only_returns_matching_bindings(
        namespace in any::<String>(),
        subscription in prop_oneof![Just(SUB.to_owned()), any::<String>()],
        resource_group in any::<String>(),
        patterns in proptest::collection::vec(any::<String>(), 0..4),
        roles in proptest::collection::vec(any::<String>(), 0..4),
        access in proptest::collection::vec(arb_entry(), 0..4),
    ) {
        let mut b = binding("fuzz", SUB);
        b.spec.namespaces = vec![namespace.clone()];
        b.spec.resource_groups = patterns;
        b.spec.allowed_roles = roles;
        let bindings = [b];
        let req = Request {
            namespace: &namespace,
            namespace_labels: None,
            subscription_id: &subscription,
            resource_group: &resource_group,
            access: &access,
            grantor: Grantor::Workspace,
        };
        if let Ok(chosen) = authorize(&bindings, &req) {
            prop_assert!(chosen.spec.subscription_id.eq_ignore_ascii_case(&subscription));
            prop_assert!(chosen.spec.resource_groups.iter().any(|p| glob_matches(p, &resource_group)));
        }
    }
}

fn workspace_spec(storage: DependentResource, registry: Option<DependentResource>) -> MlWorkspaceSpec {
    let mut spec: MlWorkspaceSpec = serde_json::from_value(serde_json::json!({
        "subscriptionId": SUB, "resourceGroup": "rg-risk-ml", "location": "westeurope",
        "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
    }))
    .unwrap();
    spec.storage_account = storage;
    spec.container_registry = registry;
    spec
}

#[test]
fn dependencies_must_be_in_the_workspaces_subscription() {
    let sa = |sub: &str| {
        DependentResource::by_id(format!(
            "/subscriptions/{sub}/resourceGroups/rg-risk-shared/providers/Microsoft.Storage/storageAccounts/sa1"
        ))
    };
    let b = binding("risk", SUB);
    assert_eq!(check_dependencies(&b, &workspace_spec(DependentResource::by_name("sa1"), None)), Ok(()));
    assert_eq!(check_dependencies(&b, &workspace_spec(sa(&SUB.to_uppercase()), None)), Ok(()), "case-insensitive");
    let err = check_dependencies(&b, &workspace_spec(sa(OTHER_SUB), None)).unwrap_err();
    assert!(matches!(err, ResourceDenial::Subscription { ref field, .. } if field == "storageAccount.id"), "{err:?}");
    assert!(err.to_string().contains(OTHER_SUB) && err.to_string().contains(SUB), "{err}");
    let registry = DependentResource::by_id(format!(
        "/subscriptions/{OTHER_SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/cr"
    ));
    let err = check_dependencies(&b, &workspace_spec(sa(SUB), Some(registry))).unwrap_err();
    assert!(err.to_string().contains("spec.containerRegistry.id"), "{err}");
    // Ids that do not start with the subscription fail closed.
    for id in ["", "subscriptions/x", "/providers/Microsoft.Storage/storageAccounts/sa1", &format!("//{SUB}")] {
        assert!(check_dependencies(&b, &workspace_spec(DependentResource::by_id(id), None)).is_err(), "{id:?}");
    }
}

#[test]
fn dependencies_must_be_in_a_resource_group_of_the_binding() {
    let other_rg = DependentResource::by_id(format!(
        "/subscriptions/{SUB}/resourceGroups/rg-fraud-ml/providers/Microsoft.Storage/storageAccounts/sa1"
    ));
    let mut b = binding("risk", SUB);
    let err = check_dependencies(&b, &workspace_spec(other_rg.clone(), None)).unwrap_err();
    assert!(err.to_string().contains("resource group rg-fraud-ml"), "{err}");
    b.spec.dependency_resource_groups = vec!["rg-fraud-*".into()];
    assert_eq!(check_dependencies(&b, &workspace_spec(other_rg, None)), Ok(()));
}

fn status_with_poller(poll_url: &str, location_url: Option<&str>) -> crate::api::v1alpha1::MlWorkspaceStatus {
    let handle = serde_json::json!({
        "operation": "Workspaces_CreateOrUpdate",
        "kind": "AzureAsyncOperation",
        "pollUrl": poll_url,
        "resourceUrl": format!("https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws?api-version=1"),
        "locationUrl": location_url,
        "finalState": "OriginalUri",
        "startedAt": "2026-11-25T10:00:00Z",
    });
    crate::api::v1alpha1::MlWorkspaceStatus {
        pending_operation: Some(crate::api::v1alpha1::PendingOperation {
            kind: "CreateWorkspace".into(),
            poller: handle.to_string(),
            started_at: None,
            generation: None,
        }),
        ..Default::default()
    }
}

#[test]
fn stored_operations_stay_in_the_workspaces_subscription() {
    let arm = "https://management.azure.com";
    assert_eq!(check_pending_operation(None, SUB), Ok(()));
    assert_eq!(check_pending_operation(Some(&Default::default()), SUB), Ok(()));
    let own = format!(
        "{arm}/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/eastus/workspaceOperationsStatus/op1?api-version=1"
    );
    assert_eq!(check_pending_operation(Some(&status_with_poller(&own, None)), SUB), Ok(()));
    assert_eq!(check_pending_operation(Some(&status_with_poller(&own, None)), &SUB.to_uppercase()), Ok(()));
    let hostile = [
        format!("{arm}/subscriptions/{OTHER_SUB}/providers/x/operations/op1"),
        format!("{arm}/subscriptions/{SUB}/../{OTHER_SUB}/providers/x/operations/op1"),
        format!("{arm}/subscriptions/{SUB}/%2e%2e/{OTHER_SUB}/providers/x"),
        format!("{arm}/subscriptions/{SUB}/resourceGroups/rg%2F..%2F..%2F{OTHER_SUB}"),
        format!("{arm}/providers/Microsoft.Authorization/roleAssignments"),
        "not a url".to_owned(),
    ];
    for url in &hostile {
        let err = check_pending_operation(Some(&status_with_poller(url, None)), SUB).unwrap_err();
        assert!(err.to_string().contains(SUB), "{err}");
        let err = check_pending_operation(Some(&status_with_poller(&own, Some(url))), SUB);
        assert!(err.is_err(), "location {url}");
    }
    // An unreadable poller is left to the observe step.
    let mut garbage = status_with_poller(&own, None);
    garbage.pending_operation.as_mut().unwrap().poller = "{".into();
    assert_eq!(check_pending_operation(Some(&garbage), SUB), Ok(()));
}

#[test]
fn moves_need_allow_moves_on_both_sides() {
    let mut risk = binding("risk", SUB);
    let mut other = binding("risk-other", OTHER_SUB);
    let from = request(&[]);
    let to = Request { subscription_id: OTHER_SUB, resource_group: "rg-risk-new", ..request(&[]) };
    let err = authorize_move(&[risk.clone(), other.clone()], &from, &to).unwrap_err();
    assert!(matches!(err, Denial::Move { ref binding, direction: "out of", .. } if binding == "risk"), "{err:?}");
    assert!(err.to_string().contains("allowMoves"), "{err}");
    risk.spec.allow_moves = true;
    let err = authorize_move(&[risk.clone(), other.clone()], &from, &to).unwrap_err();
    assert!(matches!(err, Denial::Move { ref binding, direction: "into", .. } if binding == "risk-other"), "{err:?}");
    other.spec.allow_moves = true;
    let both = [risk.clone(), other.clone()];
    assert_eq!(authorize_move(&both, &from, &to).map(|b| b.name_any()), Ok("risk-other".to_owned()));
    // The target must be allowed at all: a namespace cannot move its workspace into a subscription it was not given.
    other.spec.namespaces = vec!["team-fraud".into()];
    let err = authorize_move(&[risk.clone(), other], &from, &to).unwrap_err();
    assert!(matches!(err, Denial::Namespace { .. }), "{err:?}");
    // Within one subscription, into a resource group outside the glob: refused.
    let inside = Request { resource_group: "prod-shared", ..request(&[]) };
    assert!(matches!(authorize_move(&[risk], &from, &inside), Err(Denial::ResourceGroup { .. })));
}

#[test]
fn kube_names_cannot_change_an_api_path() {
    for good in ["operator-sp", "a", "sp.team-a", "x1"] {
        assert!(is_kube_name(good), "{good}");
    }
    for bad in ["", "../secrets/x", "a/b", "A", "a..b", ".a", "a.", "-a", "a-", "a?b", "a%2Fb", &"a".repeat(254)] {
        assert!(!is_kube_name(bad), "{bad:?}");
    }
}
