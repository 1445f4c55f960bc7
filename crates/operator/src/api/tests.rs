//! Tests of the API types and of the CRDs generated from them: serde, defaults, schema and CEL rules.

use std::path::Path;

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::test_support::schema_of;
use super::v1alpha1::*;
use super::{all_crds, crds_yaml};

fn example(name: &str) -> Value {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples").join(name);
    let text = std::fs::read_to_string(&path).expect("example exists");
    serde_yaml::from_str(&text).expect("example is YAML")
}

/// Structural validation as the API server does it before CEL: types, required, enums, patterns, lengths.
fn schema_errors<K: CustomResourceExt>(object: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema_of::<K>()).expect("the generated schema compiles");
    validator.iter_errors(object).map(|e| format!("{}: {}", e.instance_path(), e)).collect()
}

/// CEL validation (`x-kubernetes-validations`), with defaults applied first as the API server does.
fn cel_errors<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema_of::<K>();
    let defaulted = kube::core::cel::apply_defaults(&schema, object);
    let old = old.map(|o| kube::core::cel::apply_defaults(&schema, o));
    match kube::core::cel::Validator::new().validate(&schema, &defaulted, old.as_ref()) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.to_string()).collect(),
    }
}

fn minimal_workspace() -> Value {
    json!({
        "apiVersion": "azml.dev/v1alpha1",
        "kind": "MlWorkspace",
        "metadata": {"name": "ws-one", "namespace": "default"},
        "spec": {
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333",
            "resourceGroup": "rg-one",
            "location": "westeurope",
            "storageAccount": {"name": "sa1"},
            "keyVault": {"id": "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-shared/providers/Microsoft.KeyVault/vaults/kv1"}
        }
    })
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    object.pointer_mut(parent).expect("parent exists")[key] = value;
    object
}

#[test]
fn committed_crds_match_the_rust_types() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("crds/azml.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crds_yaml().expect("CRDs serialize"),
        "crds/azml.dev.yaml is stale: regenerate it with `cargo run -- crd > crds/azml.dev.yaml`"
    );
}

#[test]
fn crd_names_short_names_and_categories_follow_the_api_contract() {
    let crds = all_crds();
    let ws = &crds[0];
    assert_eq!(ws.spec.group, "azml.dev");
    assert_eq!(ws.spec.scope, "Namespaced");
    assert_eq!(ws.spec.names.short_names.as_deref(), Some(&["mlws".to_string()][..]));
    assert_eq!(ws.spec.names.categories.as_deref(), Some(&["azure".to_string(), "azml".to_string()][..]));
    let columns: Vec<_> =
        ws.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    for column in ["Subscription", "Resource Group", "Location", "Ready", "Keys", "Age"] {
        assert!(columns.contains(&column), "missing printer column {column}: {columns:?}");
    }
    assert!(ws.spec.versions[0].subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());

    let binding = &crds[1];
    assert_eq!(binding.spec.scope, "Cluster");
    assert_eq!(binding.spec.names.short_names.as_deref(), Some(&["azsub".to_string()][..]));
}

#[test]
fn every_spec_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let sub_path = format!("{path}.{name}");
                if sub.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                    missing.push(sub_path.clone());
                }
                walk(&sub_path, sub, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for (kind, schema) in
        [("MlWorkspace", schema_of::<MlWorkspace>()), ("SubscriptionBinding", schema_of::<SubscriptionBinding>())]
    {
        let mut missing = vec![];
        walk(kind, &schema["properties"]["spec"], &mut missing);
        walk(kind, &schema["properties"]["status"], &mut missing);
        assert!(missing.is_empty(), "fields without description: {missing:?}");
    }
}

#[test]
fn cel_rules_are_in_the_generated_schema() {
    let yaml = crds_yaml().expect("CRDs serialize");
    for rule in [
        "self == oldSelf",                               // location
        "has(self.azureName) == has(oldSelf.azureName)", // azureName
        "has(self.role) != has(self.roleDefinitionId)",  // access entry
        "has(self.name) != has(self.id)",                // dependent resources
        "[has(self.workloadIdentity), has(self.clientSecret), has(self.managedIdentity)].filter(x, x).size() == 1",
        "self.metadata.name.matches(", // default azureName is valid
    ] {
        assert!(yaml.contains(rule), "rule {rule:?} missing from the CRDs");
    }
}

#[test]
fn examples_deserialize_and_round_trip() {
    let ws: MlWorkspace = serde_json::from_value(example("mlworkspace.yaml")).expect("example is an MlWorkspace");
    assert_eq!(ws.spec.location, "westeurope");
    assert_eq!(ws.spec.access.len(), 2);
    assert_eq!(ws.spec.access[0].role, Some(BuiltinRole::AzureMLDataScientist));
    assert_eq!(ws.spec.access[1].scope, AccessScope::ResourceGroup);
    assert_eq!(ws.spec.storage_keys.rotate_every.as_deref(), Some("90d"));
    let again: MlWorkspace = serde_json::from_value(serde_json::to_value(&ws).expect("serializes")).expect("reads");
    assert_eq!(ws, again);

    let binding: SubscriptionBinding =
        serde_json::from_value(example("subscriptionbinding.yaml")).expect("example is a SubscriptionBinding");
    assert!(binding.spec.credential.client_secret.is_some());
    assert!(binding.spec.allow_moves);
    let again: SubscriptionBinding =
        serde_json::from_value(serde_json::to_value(&binding).expect("serializes")).expect("reads");
    assert_eq!(binding, again);
}

#[test]
fn examples_validate_against_the_schema_and_the_cel_rules() {
    let ws = example("mlworkspace.yaml");
    assert_eq!(schema_errors::<MlWorkspace>(&ws), Vec::<String>::new());
    assert_eq!(cel_errors::<MlWorkspace>(&ws, None), Vec::<String>::new());
    let binding = example("subscriptionbinding.yaml");
    assert_eq!(schema_errors::<SubscriptionBinding>(&binding), Vec::<String>::new());
    assert_eq!(cel_errors::<SubscriptionBinding>(&binding, None), Vec::<String>::new());
}

#[test]
fn defaults_apply_in_serde_and_in_the_schema() {
    let ws: MlWorkspace = serde_json::from_value(minimal_workspace()).expect("minimal spec reads");
    assert!(ws.spec.create_resource_group);
    assert!(ws.spec.storage_keys.auto_resync);
    assert_eq!(ws.spec.move_policy, MovePolicy::Move);
    assert_eq!(ws.spec.deletion_policy, WorkspaceDeletionPolicy::Retain);
    assert_eq!(ws.spec.public_network_access, PublicNetworkAccess::Enabled);
    assert_eq!(ws.spec.azure_name_or("ws-one"), "ws-one");

    let defaulted = kube::core::cel::apply_defaults(&schema_of::<MlWorkspace>(), &minimal_workspace());
    assert_eq!(defaulted["spec"]["createResourceGroup"], json!(true));
    assert_eq!(defaulted["spec"]["movePolicy"], json!("Move"));
    assert_eq!(defaulted["spec"]["deletionPolicy"], json!("Retain"));
    assert_eq!(defaulted["spec"]["publicNetworkAccess"], json!("Enabled"));
    assert_eq!(defaulted["spec"]["storageKeys"]["autoResync"], json!(true));
}

#[test]
fn schema_rejects_malformed_fields() {
    let cases = [
        ("/spec/subscriptionId", json!("not-a-guid")),
        ("/spec/resourceGroup", json!("rg/../other")),
        ("/spec/resourceGroup", json!("ends-with-dot.")),
        ("/spec/azureName", json!("a")),
        ("/spec/azureName", json!("name?api-version=1")),
        ("/spec/location", json!("West Europe")),
        ("/spec/publicNetworkAccess", json!("Sometimes")),
        ("/spec/deletionPolicy", json!("Destroy")),
        ("/spec/storageAccount/name", json!("../other")),
        ("/spec/keyVault/id", json!("/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv")),
        ("/spec/storageKeys", json!({"rotateEvery": "soon"})),
        ("/spec/access", json!([{"principalId": "nope", "role": "Owner"}])),
        ("/spec/access", json!([{"principalId": "6f1c2a34-5b6c-4d7e-8f90-a1b2c3d4e5f6", "role": "God"}])),
    ];
    for (pointer, value) in cases {
        let object = with(minimal_workspace(), pointer, value.clone());
        assert!(!schema_errors::<MlWorkspace>(&object).is_empty(), "{pointer} = {value} was accepted");
    }
    let mut missing = minimal_workspace();
    missing["spec"].as_object_mut().expect("object").remove("storageAccount");
    assert!(!schema_errors::<MlWorkspace>(&missing).is_empty(), "missing storageAccount was accepted");
}

#[test]
fn cel_rejects_what_the_schema_cannot_judge() {
    let guid = "6f1c2a34-5b6c-4d7e-8f90-a1b2c3d4e5f6";
    let both_roles = with(
        minimal_workspace(),
        "/spec/access",
        json!([{"principalId": guid, "role": "Owner", "roleDefinitionId": guid}]),
    );
    assert_eq!(cel_errors::<MlWorkspace>(&both_roles, None).len(), 1);
    let no_role = with(minimal_workspace(), "/spec/access", json!([{"principalId": guid}]));
    let errors = cel_errors::<MlWorkspace>(&no_role, None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("exactly one of role"), "{errors:?}");

    let duplicate = with(
        minimal_workspace(),
        "/spec/access",
        json!([{"principalId": guid, "role": "Reader"}, {"principalId": guid.to_uppercase(), "role": "Reader", "scope": "Workspace"}]),
    );
    let errors = cel_errors::<MlWorkspace>(&duplicate, None);
    assert!(errors.iter().any(|e| e.contains("unique")), "{errors:?}");
    let distinct = with(
        minimal_workspace(),
        "/spec/access",
        json!([{"principalId": guid, "role": "Reader"}, {"principalId": guid, "role": "Reader", "scope": "Subscription"}]),
    );
    assert_eq!(cel_errors::<MlWorkspace>(&distinct, None), Vec::<String>::new());

    let both_ids = with(minimal_workspace(), "/spec/storageAccount", json!({"name": "sa1", "id": "/x"}));
    assert!(!cel_errors::<MlWorkspace>(&both_ids, None).is_empty());

    for policy in ["Retain", "Delete", "Purge"] {
        let ok = with(minimal_workspace(), "/spec/deletionPolicy", json!(policy));
        assert_eq!(cel_errors::<MlWorkspace>(&ok, None), Vec::<String>::new(), "{policy}");
        assert!(schema_errors::<MlWorkspace>(&ok).is_empty(), "{policy}");
    }
    let destroy = with(minimal_workspace(), "/spec/deletionPolicy", json!("Destroy"));
    let errors = cel_errors::<MlWorkspace>(&destroy, None);
    assert!(errors.iter().any(|e| e.contains("Purge (delete for good")), "{errors:?}");

    let reserved_tag = with(minimal_workspace(), "/spec/tags", json!({"azml.dev-owner": "me"}));
    assert!(!cel_errors::<MlWorkspace>(&reserved_tag, None).is_empty());

    let bad_name = with(minimal_workspace(), "/metadata/name", json!("name.with.dots"));
    let errors = cel_errors::<MlWorkspace>(&bad_name, None);
    assert!(errors.iter().any(|e| e.contains("set spec.azureName")), "{errors:?}");
    let fixed = with(bad_name, "/spec/azureName", json!("valid-name"));
    assert_eq!(cel_errors::<MlWorkspace>(&fixed, None), Vec::<String>::new());
}

#[test]
fn cel_transition_rules_guard_immutable_fields() {
    let old = minimal_workspace();
    let moved_region = with(old.clone(), "/spec/location", json!("northeurope"));
    let errors = cel_errors::<MlWorkspace>(&moved_region, Some(&old));
    assert!(errors.iter().any(|e| e.contains("location is immutable")), "{errors:?}");

    let renamed = with(old.clone(), "/spec/azureName", json!("other-name"));
    let errors = cel_errors::<MlWorkspace>(&renamed, Some(&old));
    assert!(errors.iter().any(|e| e.contains("azureName is immutable")), "{errors:?}");

    let mutable_change = with(old.clone(), "/spec/description", json!("new words"));
    assert_eq!(cel_errors::<MlWorkspace>(&mutable_change, Some(&old)), Vec::<String>::new());

    // A move is an update like any other under movePolicy Move, and refused under Refuse.
    let moved = with(old.clone(), "/spec/resourceGroup", json!("rg-two"));
    assert_eq!(cel_errors::<MlWorkspace>(&moved, Some(&old)), Vec::<String>::new());
    let refusing = with(old.clone(), "/spec/movePolicy", json!("Refuse"));
    let refused = with(refusing.clone(), "/spec/resourceGroup", json!("rg-two"));
    let errors = cel_errors::<MlWorkspace>(&refused, Some(&refusing));
    assert!(errors.iter().any(|e| e.contains("movePolicy is Refuse")), "{errors:?}");
}

#[test]
fn binding_requires_exactly_one_credential_and_some_namespaces() {
    let binding = example("subscriptionbinding.yaml");
    let two = with(binding.clone(), "/spec/credential/managedIdentity", json!({}));
    assert!(!cel_errors::<SubscriptionBinding>(&two, None).is_empty());
    let none = with(binding.clone(), "/spec/credential", json!({}));
    assert!(!cel_errors::<SubscriptionBinding>(&none, None).is_empty());
    let nobody = with(binding.clone(), "/spec/namespaces", json!([]));
    let errors = cel_errors::<SubscriptionBinding>(&nobody, None);
    assert!(errors.iter().any(|e| e.contains("namespaceSelector")), "{errors:?}");
    let by_label = with(nobody, "/spec/namespaceSelector", json!({"matchLabels": {"team": "risk"}}));
    assert_eq!(cel_errors::<SubscriptionBinding>(&by_label, None), Vec::<String>::new());
    let bad_tenant = with(binding, "/spec/tenantId", json!("contoso.onmicrosoft.com"));
    assert!(!schema_errors::<SubscriptionBinding>(&bad_tenant).is_empty());
}

#[test]
fn role_names_map_to_built_in_definition_ids() {
    for role in BuiltinRole::ALL {
        let guid = role.definition_guid();
        assert!(regex_like_guid(guid), "{role:?} -> {guid}");
        let entry = AccessEntry {
            principal_id: "6f1c2a34-5b6c-4d7e-8f90-a1b2c3d4e5f6".into(),
            principal_type: None,
            role: Some(role),
            role_definition_id: None,
            scope: AccessScope::Workspace,
        };
        assert_eq!(entry.role_definition_guid().as_deref(), Some(guid));
    }
    assert_eq!(BuiltinRole::Contributor.definition_guid(), "b24988ac-6180-42a0-ab88-20f7382dd24c");
}

fn regex_like_guid(s: &str) -> bool {
    let parts: Vec<_> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[test]
fn tags_are_checked_as_azure_checks_them() {
    let tags = |t: Value| with(minimal_workspace(), "/spec/tags", t);
    let cel = |t: Value| cel_errors::<MlWorkspace>(&tags(t), None);
    for reserved in ["azml.dev-owner", "AZML.DEV-OWNER", "Azml.Dev-Owner"] {
        let errors = cel(json!({reserved: "me"}));
        assert!(errors.iter().any(|e| e.contains("reserved for the operator")), "{reserved}: {errors:?}");
    }
    for bad in ["a<b", "a>b", "a%b", "a&b", "a\\b", "a?b", "a/b"] {
        let errors = cel(json!({bad: "v"}));
        assert!(errors.iter().any(|e| e.contains("must not contain")), "{bad:?}: {errors:?}");
    }
    let errors = cel(json!({"n".repeat(513): "v"}));
    assert!(errors.iter().any(|e| e.contains("512")), "{errors:?}");
    assert_eq!(cel(json!({"n".repeat(512): "v", "cost-center": "42", "a.b-c_d e:f": ""})), Vec::<String>::new());
    // Values and the count are schema limits (maxLength, maxProperties: the owner tag is the 50th).
    assert!(!schema_errors::<MlWorkspace>(&tags(json!({"n": "v".repeat(257)}))).is_empty());
    assert!(schema_errors::<MlWorkspace>(&tags(json!({"n": "v".repeat(256)}))).is_empty());
    let many: serde_json::Map<String, Value> = (0..50).map(|i| (format!("t{i}"), json!("v"))).collect();
    assert!(!schema_errors::<MlWorkspace>(&tags(Value::Object(many))).is_empty());
}
