use serde_json::json;

use super::*;
use crate::api::v1alpha1::StorageKeysStatus;
use crate::azure::ids::{ResourceGroupName, ResourceGroupRef, SubscriptionId, WorkspaceName};

fn ws_ref(rg: &str) -> WorkspaceRef {
    let sub = SubscriptionId::new("0b1f6471-1bf0-4dda-aec3-111122223333").expect("sub");
    WorkspaceRef::new(
        ResourceGroupRef::new(sub, ResourceGroupName::new(rg).expect("rg")),
        WorkspaceName::new("fraud-ws").expect("name"),
    )
}

fn workspace(rg: &str) -> Workspace {
    serde_json::from_value(json!({
        "id": ws_ref(rg).id(),
        "location": "westeurope",
        "properties": {
            "workspaceId": "5d2f0c58-0000-4000-8000-000000000001",
            "discoveryUrl": "https://westeurope.api.azureml.ms/discovery",
            "mlFlowTrackingUri": "azureml://westeurope.api.azureml.ms/mlflow/v1.0/x",
            "storageAccount": format!("/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/sa"),
            "keyVault": "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
        },
    }))
    .expect("workspace")
}

fn keys(storage: &str, with_registry: bool) -> WorkspaceKeys {
    let registry = with_registry.then(|| json!({"username": "acr1", "passwords": [{"name": "password", "value": "p1"}, {"name": "password2", "value": "p2"}]}));
    serde_json::from_value(json!({
        "userStorageKey": storage, "appInsightsInstrumentationKey": null, "containerRegistryCredentials": registry,
    }))
    .expect("keys")
}

fn export(items: &[WorkspaceSecretItem]) -> WorkspaceSecretExport {
    WorkspaceSecretExport { name: "fraud-ws-keys".into(), items: items.to_vec() }
}

#[test]
fn the_config_map_holds_the_facts_azure_reported_and_follows_a_move() {
    let data = desired_config_map(&ws_ref("rg-risk"), &workspace("rg-risk"));
    assert_eq!(data[config_keys::WORKSPACE_NAME], "fraud-ws");
    assert_eq!(data[config_keys::RESOURCE_GROUP], "rg-risk");
    assert_eq!(data[config_keys::SUBSCRIPTION_ID], "0b1f6471-1bf0-4dda-aec3-111122223333");
    assert_eq!(data[config_keys::LOCATION], "westeurope");
    assert_eq!(data[config_keys::WORKSPACE_ID], "5d2f0c58-0000-4000-8000-000000000001");
    assert!(
        data[config_keys::RESOURCE_ID]
            .ends_with("/resourceGroups/rg-risk/providers/Microsoft.MachineLearningServices/workspaces/fraud-ws")
    );
    assert!(data.contains_key(config_keys::MLFLOW_TRACKING_URI) && data.contains_key(config_keys::DISCOVERY_URL));
    assert!(!data.contains_key(config_keys::CONTAINER_REGISTRY_ID), "absent values are left out");
    let moved = desired_config_map(&ws_ref("rg-risk-2"), &workspace("rg-risk-2"));
    assert_eq!(moved[config_keys::RESOURCE_GROUP], "rg-risk-2");
    assert_ne!(moved[config_keys::RESOURCE_ID], data[config_keys::RESOURCE_ID]);
    assert!(moved[config_keys::STORAGE_ACCOUNT_ID].contains("/rg-risk-2/"));
}

#[test]
fn the_secret_holds_only_the_items_asked_for_that_azure_has() {
    let items = [WorkspaceSecretItem::UserStorageKey, WorkspaceSecretItem::ContainerRegistryPassword];
    let data = desired_secret(&items, &keys("k1", true));
    assert_eq!(data.keys().collect::<Vec<_>>(), ["containerRegistryPassword", "userStorageKey"]);
    assert_eq!(data["userStorageKey"].0, b"k1");
    assert_eq!(data["containerRegistryPassword"].0, b"p1");
    let no_registry = desired_secret(&items, &keys("k1", false));
    assert_eq!(no_registry.keys().collect::<Vec<_>>(), ["userStorageKey"]);
    let all = desired_secret(
        &[
            WorkspaceSecretItem::ContainerRegistryUsername,
            WorkspaceSecretItem::ContainerRegistryPassword2,
            WorkspaceSecretItem::AppInsightsInstrumentationKey,
        ],
        &keys("k1", true),
    );
    assert_eq!(all.keys().collect::<Vec<_>>(), ["containerRegistryPassword2", "containerRegistryUsername"]);
}

#[test]
fn the_fingerprint_changes_with_a_resync_a_move_or_the_items_only() {
    let ws = workspace("rg-risk");
    let e = export(&[WorkspaceSecretItem::UserStorageKey]);
    let mut status = MlWorkspaceStatus {
        storage_keys: Some(StorageKeysStatus {
            workspace_uses_key: Some("key1".into()),
            key_creation_time: BTreeMap::from([("key1".into(), "2026-01-01T00:00:00Z".into())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let base = secret_fingerprint(&ws, &e, Some(&status));
    assert_eq!(base, secret_fingerprint(&ws, &e, Some(&status)), "stable");
    assert_eq!(base.len(), 64);
    assert_ne!(base, secret_fingerprint(&workspace("rg-risk-2"), &e, Some(&status)), "a move");
    assert_ne!(
        base,
        secret_fingerprint(&ws, &export(&[WorkspaceSecretItem::AppInsightsInstrumentationKey]), Some(&status))
    );
    status.storage_keys.as_mut().unwrap().last_resync_time =
        Some(Time(jiff::Timestamp::from_second(2_000_000_000).unwrap()));
    assert_ne!(base, secret_fingerprint(&ws, &e, Some(&status)), "a resync");
}

#[test]
fn stale_keys_are_removed_by_the_data_patch() {
    let have = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
    let want = BTreeMap::from([("a".to_owned(), "3".to_owned())]);
    assert_eq!(data_patch(Some(&have), &want), json!({"a": "3", "b": null}));
}

#[test]
fn the_outcome_sets_or_removes_the_condition() {
    let now = Time(jiff::Timestamp::now());
    let mut status = MlWorkspaceStatus::default();
    let ok = ExportsOutcome {
        condition: Some((true, reasons::EXPORTED, "ConfigMap x current".into())),
        exports: Some(ExportsStatus { config_map: Some("x".into()), secret: None }),
        events: vec![],
    };
    ok.apply(&mut status, Some(1), &now);
    assert!(status.conditions.iter().any(|c| c.type_ == conditions::EXPORTED && c.status == "True"));
    assert_eq!(status.exports.as_ref().and_then(|e| e.config_map.as_deref()), Some("x"));
    ExportsOutcome::default().apply(&mut status, Some(1), &now);
    assert!(status.conditions.is_empty() && status.exports.is_none());
}

#[test]
fn the_endpoint_fingerprint_changes_with_a_regeneration_and_the_items_only() {
    use crate::api::v1alpha1::{EndpointKeysStatus, EndpointSecretExport, EndpointSecretItem, MlOnlineEndpointStatus};
    use crate::azure::ids::OnlineEndpointName;
    let ep_ref = OnlineEndpointRef::new(ws_ref("rg-risk"), OnlineEndpointName::new("scoring").expect("name"));
    let export = |items: &[EndpointSecretItem]| EndpointSecretExport { name: "k".into(), items: items.to_vec() };
    let mut status = MlOnlineEndpointStatus { resource_id: Some(ep_ref.id()), ..Default::default() };
    let base = endpoint_secret_fingerprint(&ep_ref, &export(&[EndpointSecretItem::PrimaryKey]), &status);
    assert_eq!(base, endpoint_secret_fingerprint(&ep_ref, &export(&[EndpointSecretItem::PrimaryKey]), &status));
    assert_ne!(base, endpoint_secret_fingerprint(&ep_ref, &export(&[EndpointSecretItem::SecondaryKey]), &status));
    status.keys = Some(EndpointKeysStatus { last_regenerate_request: Some("primary:1".into()), ..Default::default() });
    assert_ne!(base, endpoint_secret_fingerprint(&ep_ref, &export(&[EndpointSecretItem::PrimaryKey]), &status));
    let keys: EndpointKeys = serde_json::from_value(json!({"primaryKey": "p", "secondaryKey": "s"})).expect("keys");
    let data = desired_endpoint_secret(&[EndpointSecretItem::SecondaryKey], &keys);
    assert_eq!(data.keys().collect::<Vec<_>>(), ["secondaryKey"]);
}
