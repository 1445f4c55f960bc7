use std::collections::BTreeMap;

use jiff::Timestamp;

use super::*;
use crate::api::v1alpha1::{DependentResource, MlWorkspaceSpec};
use crate::azure::lro::{FinalStateVia, LroKind};

pub(crate) const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
pub(crate) const UID: &str = "11111111-2222-3333-4444-555555555555";

pub(crate) fn spec() -> MlWorkspaceSpec {
    serde_json::from_value(serde_json::json!({
        "subscriptionId": SUB,
        "resourceGroup": "rg-risk-ml",
        "location": "westeurope",
        "storageAccount": {"name": "riskmlsa"},
        "keyVault": {"name": "risk-ml-kv"},
    }))
    .expect("valid spec")
}

pub(crate) fn resource(spec: MlWorkspaceSpec) -> MlWorkspace {
    let mut ws = MlWorkspace::new("fraud-ws", spec);
    ws.metadata.namespace = Some("team-risk".into());
    ws.metadata.uid = Some(UID.into());
    ws.metadata.generation = Some(1);
    ws
}

fn workspace_with(f: impl FnOnce(&mut MlWorkspace)) -> MlWorkspace {
    let mut ws = resource(spec());
    f(&mut ws);
    ws
}

fn desired_with(f: impl FnOnce(&mut MlWorkspace)) -> Desired {
    Desired::from_resource(&workspace_with(f)).expect("valid")
}

fn desired() -> Desired {
    desired_with(|_| {})
}

/// What Azure returns right after creating `desired`.
fn azure_copy(desired: &Desired) -> Workspace {
    let mut ws = desired.workspace_body();
    ws.id = Some(desired.workspace.id());
    ws.properties.provisioning_state = Some(ProvisioningState::Succeeded);
    ws.properties.friendly_name = Some("fraud-ws".into());
    ws.properties.description = Some(String::new());
    ws
}

fn observed(ws: Option<Workspace>) -> Observed {
    Observed {
        pending: None,
        workspace: ws,
        resource_group: ResourceGroupState::Unknown,
        last_observed_generation: Some(1),
        foreign_owner: ForeignOwner::Unknown,
    }
}

fn observed_owner(ws: Workspace, foreign_owner: ForeignOwner) -> Observed {
    Observed { foreign_owner, ..observed(Some(ws)) }
}

fn only_update(actions: &[Action]) -> (&Vec<Field>, &UpdateCause, &WorkspaceUpdate) {
    match actions {
        [Action::UpdateWorkspace { fields, cause, patch }] => (fields, cause, patch.as_ref()),
        other => panic!("expected one update, got {other:?}"),
    }
}

#[test]
fn missing_workspace_with_existing_group_is_created() {
    let d = desired();
    let obs = Observed { resource_group: ResourceGroupState::Exists, ..observed(None) };
    assert_eq!(plan(&d, &obs).actions, vec![Action::CreateWorkspace { id: d.workspace.id() }]);
}

#[test]
fn missing_group_is_created_first_when_allowed() {
    let d = desired();
    let obs = Observed { resource_group: ResourceGroupState::Missing, ..observed(None) };
    let actions = plan(&d, &obs).actions;
    assert_eq!(
        actions,
        vec![
            Action::CreateResourceGroup {
                id: format!("/subscriptions/{SUB}/resourceGroups/rg-risk-ml"),
                location: "westeurope".into()
            },
            Action::CreateWorkspace { id: d.workspace.id() },
        ]
    );
}

#[test]
fn missing_group_stalls_without_create_resource_group() {
    let d = desired_with(|ws| ws.spec.create_resource_group = false);
    let obs = Observed { resource_group: ResourceGroupState::Missing, ..observed(None) };
    let planned = plan(&d, &obs);
    assert!(planned.actions.is_empty(), "{planned:?}");
    match planned.stall {
        Some((reason, message)) => {
            assert_eq!(reason, Reason::ResourceGroupMissing);
            assert!(message.contains("rg-risk-ml"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_body_carries_spec_and_owner_tag() {
    let d = desired_with(|ws| {
        ws.spec.friendly_name = Some("Fraud".into());
        ws.spec.tags = BTreeMap::from([("cost-center".into(), "42".into())]);
        ws.spec.application_insights = Some(DependentResource::by_name("risk-ai"));
    });
    let body = d.workspace_body();
    let tags = body.tags.expect("tags");
    assert_eq!(tags.get(OWNER_TAG).map(String::as_str), Some(format!("team-risk/fraud-ws/{UID}").as_str()));
    assert_eq!(tags.get("cost-center").map(String::as_str), Some("42"));
    assert_eq!(body.location.as_deref(), Some("westeurope"));
    assert_eq!(
        body.properties.storage_account.as_deref(),
        Some(
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg-risk-ml/providers/Microsoft.Storage/storageAccounts/riskmlsa"
            )
            .as_str()
        )
    );
    assert!(body.properties.application_insights.as_deref().is_some_and(|a| a.ends_with("/components/risk-ai")));
    assert_eq!(body.properties.friendly_name.as_deref(), Some("Fraud"));
    assert_eq!(body.identity.map(|i| i.type_).as_deref(), Some("SystemAssigned"));
}

#[test]
fn in_sync_workspace_needs_no_action() {
    let d = desired();
    assert!(plan(&d, &observed(Some(azure_copy(&d)))).converged());
}

#[test]
fn ids_and_locations_compare_case_insensitively() {
    let d = desired_with(|ws| ws.spec.container_registry = Some(DependentResource::by_name("riskacr")));
    let mut ws = azure_copy(&d);
    ws.properties.storage_account = ws.properties.storage_account.map(|s| s.to_lowercase());
    ws.properties.container_registry = ws.properties.container_registry.map(|s| s.to_uppercase());
    ws.properties.public_network_access = Some("enabled".into());
    ws.location = Some("West Europe".into());
    assert!(plan(&d, &observed(Some(ws))).converged());
}

#[test]
fn unmanaged_optional_fields_are_left_alone() {
    let d = desired();
    let mut ws = azure_copy(&d);
    ws.properties.friendly_name = Some("set in the portal".into());
    ws.properties.description = Some("also".into());
    ws.properties.application_insights = Some("/subscriptions/x/whatever".into());
    ws.properties.public_network_access = None;
    assert!(plan(&d, &observed(Some(ws))).converged());
}

fn assert_single_field_patch(mutate_spec: impl FnOnce(&mut MlWorkspace), field: Field) -> WorkspaceUpdate {
    let before = desired();
    let after = desired_with(|ws| {
        mutate_spec(ws);
        ws.metadata.generation = Some(2);
    });
    let actions = plan(&after, &observed(Some(azure_copy(&before)))).actions;
    let (fields, cause, patch) = only_update(&actions);
    assert_eq!(fields, &vec![field]);
    assert_eq!(cause, &UpdateCause::SpecChanged);
    patch.clone()
}

#[test]
fn friendly_name_change_patches_only_friendly_name() {
    let patch = assert_single_field_patch(|ws| ws.spec.friendly_name = Some("New".into()), Field::FriendlyName);
    assert_eq!(serde_json::to_value(&patch).unwrap(), serde_json::json!({"properties": {"friendlyName": "New"}}));
}

#[test]
fn description_change_patches_only_description() {
    let patch = assert_single_field_patch(|ws| ws.spec.description = Some("d".into()), Field::Description);
    assert_eq!(serde_json::to_value(&patch).unwrap(), serde_json::json!({"properties": {"description": "d"}}));
}

#[test]
fn tag_change_patches_all_tags_including_owner() {
    let patch =
        assert_single_field_patch(|ws| ws.spec.tags = BTreeMap::from([("env".into(), "prod".into())]), Field::Tags);
    let json = serde_json::to_value(&patch).unwrap();
    assert_eq!(json["tags"]["env"], "prod");
    assert_eq!(json["tags"][OWNER_TAG], format!("team-risk/fraud-ws/{UID}"));
    assert!(json.get("properties").is_none(), "{json}");
}

#[test]
fn public_network_access_change_patches_only_that() {
    let patch = assert_single_field_patch(
        |ws| ws.spec.public_network_access = PublicNetworkAccess::Disabled,
        Field::PublicNetworkAccess,
    );
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        serde_json::json!({"properties": {"publicNetworkAccess": "Disabled"}})
    );
}

#[test]
fn application_insights_change_patches_only_that() {
    let patch = assert_single_field_patch(
        |ws| ws.spec.application_insights = Some(DependentResource::by_name("ai")),
        Field::ApplicationInsights,
    );
    let props = patch.properties.expect("properties");
    assert!(props.application_insights.is_some_and(|a| a.ends_with("/providers/Microsoft.Insights/components/ai")));
    assert!(patch.tags.is_none());
}

#[test]
fn container_registry_change_patches_only_that() {
    let id =
        format!("/subscriptions/{SUB}/resourceGroups/shared/providers/Microsoft.ContainerRegistry/registries/acr1");
    let patch = assert_single_field_patch(
        |ws| ws.spec.container_registry = Some(DependentResource::by_id(id.clone())),
        Field::ContainerRegistry,
    );
    assert_eq!(patch.properties.and_then(|p| p.container_registry), Some(id));
}

#[test]
fn several_changes_make_one_patch() {
    let d = desired_with(|ws| {
        ws.spec.friendly_name = Some("F".into());
        ws.spec.public_network_access = PublicNetworkAccess::Disabled;
    });
    let actions = plan(&d, &observed(Some(azure_copy(&desired())))).actions;
    let (fields, _, _) = only_update(&actions);
    assert_eq!(fields, &vec![Field::FriendlyName, Field::PublicNetworkAccess]);
}

#[test]
fn azure_side_change_with_unchanged_generation_is_drift() {
    let d = desired_with(|ws| ws.spec.friendly_name = Some("Mine".into()));
    let mut ws = azure_copy(&d);
    ws.properties.friendly_name = Some("edited in portal".into());
    ws.tags.as_mut().unwrap().insert("added".into(), "by hand".into());
    let actions = plan(&d, &observed(Some(ws))).actions;
    let (fields, cause, patch) = only_update(&actions);
    assert_eq!(fields, &vec![Field::FriendlyName, Field::Tags]);
    assert_eq!(cause, &UpdateCause::Drift);
    assert!(!patch.tags.as_ref().unwrap().contains_key("added"));
}

#[test]
fn foreign_owner_stalls_naming_the_owner() {
    let d = desired();
    let mut ws = azure_copy(&d);
    ws.tags.as_mut().unwrap().insert(OWNER_TAG.into(), "team-other/ws/abc".into());
    for (owner, expected) in [
        (ForeignOwner::Gone, Reason::AlreadyExists),
        (ForeignOwner::Live, Reason::OwnedElsewhere),
        (ForeignOwner::Unknown, Reason::OwnedElsewhere),
    ] {
        match plan(&d, &observed_owner(ws.clone(), owner)).stall {
            Some((reason, message)) => {
                assert_eq!(reason, expected, "{owner:?}");
                assert!(message.contains("team-other/ws/abc"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_live_owner_is_never_adopted_whatever_the_spelling_of_its_tag() {
    let d = desired_with(|ws| {
        ws.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_ADOPT.into(), "true".into())]));
    });
    for name in [OWNER_TAG, "AZML.DEV-OWNER", "Azml.Dev-Owner"] {
        let mut ws = azure_copy(&d);
        let tags = ws.tags.as_mut().unwrap();
        tags.remove(OWNER_TAG);
        tags.insert(name.into(), "team-other/ws/abc".into());
        match plan(&d, &observed_owner(ws, ForeignOwner::Live)).stall {
            Some((reason, message)) => {
                assert_eq!(reason, Reason::OwnedElsewhere, "{name}");
                assert!(message.contains("team-other/ws/abc"), "{message}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Our own tag under another spelling is ours: the tag set is rewritten once, nothing is adopted.
    let mut ws = azure_copy(&d);
    let tags = ws.tags.as_mut().unwrap();
    let ours = tags.remove(OWNER_TAG).unwrap();
    tags.insert("AZML.DEV-OWNER".into(), ours);
    let actions = plan(&d, &observed(Some(ws))).actions;
    assert_eq!(only_update(&actions).1, &UpdateCause::Drift);
}

#[test]
fn reserved_and_invalid_tags_are_refused_before_any_call() {
    for (name, value) in [
        ("azml.dev-owner", "x"),
        ("AZML.DEV-OWNER", "x"),
        ("a/b", "x"),
        ("a<b", "x"),
        ("a\\b", "x"),
        ("", "x"),
        ("ok", &"v".repeat(257)),
    ] {
        let name = name.to_owned();
        let value = value.to_owned();
        let ws = workspace_with(|ws| {
            ws.spec.tags.insert(name.clone(), value.clone());
        });
        assert!(matches!(Desired::from_resource(&ws), Err(SpecError::Tags(_))), "{name:?}");
    }
    let many = workspace_with(|ws| {
        ws.spec.tags = (0..50).map(|i| (format!("t{i}"), String::new())).collect();
    });
    assert!(matches!(Desired::from_resource(&many), Err(SpecError::Tags(_))));
    let fine = workspace_with(|ws| {
        ws.spec.tags = (0..49).map(|i| (format!("t{i}"), "v".repeat(256))).collect();
        ws.spec.tags.insert("n".repeat(512), String::new());
        ws.spec.tags.remove("t0");
    });
    assert!(Desired::from_resource(&fine).is_ok());
}

#[test]
fn unowned_workspace_stalls() {
    let d = desired();
    let mut ws = azure_copy(&d);
    ws.tags = None;
    assert!(matches!(plan(&d, &observed(Some(ws))).stall, Some((Reason::AlreadyExists, _))));
}

#[test]
fn adopt_annotation_takes_over_with_a_tag_patch() {
    let d = desired_with(|ws| {
        ws.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_ADOPT.into(), "true".into())]));
    });
    let mut ws = azure_copy(&d);
    ws.tags.as_mut().unwrap().insert(OWNER_TAG.into(), "team-other/ws/abc".into());
    let actions = plan(&d, &observed_owner(ws.clone(), ForeignOwner::Gone)).actions;
    let (fields, cause, patch) = only_update(&actions);
    assert_eq!(fields, &vec![Field::Tags]);
    assert_eq!(cause, &UpdateCause::Adopt { previous_owner: Some("team-other/ws/abc".into()) });
    assert_eq!(patch.tags.as_ref().and_then(|t| t.get(OWNER_TAG)), d.tags.get(OWNER_TAG));
    ws.tags = None;
    let actions = plan(&d, &observed(Some(ws))).actions;
    assert_eq!(only_update(&actions).1, &UpdateCause::Adopt { previous_owner: None });
}

#[test]
fn previous_incarnation_is_reclaimed() {
    let d = desired();
    let mut ws = azure_copy(&d);
    ws.tags.as_mut().unwrap().insert(OWNER_TAG.into(), "team-risk/fraud-ws/old-uid".into());
    let actions = plan(&d, &observed(Some(ws))).actions;
    let (fields, cause, _) = only_update(&actions);
    assert_eq!(fields, &vec![Field::Tags]);
    assert_eq!(cause, &UpdateCause::Reclaim { previous_uid: "old-uid".into() });
}

#[test]
fn owner_tags_parse_only_in_the_operators_form() {
    let o = Owner::parse("team-a/ws-a/uid-1").unwrap();
    assert_eq!((o.namespace.as_str(), o.name.as_str(), o.uid.as_str()), ("team-a", "ws-a", "uid-1"));
    for bad in ["", "team-a", "team-a/ws-a", "team-a/ws-a/", "/ws-a/uid", "a/b/c/d", "set by hand"] {
        assert_eq!(Owner::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn owner_classification() {
    let o = Owner { namespace: "ns".into(), name: "a".into(), uid: "u1".into() };
    assert_eq!(o.classify(Some("ns/a/u1")), Ownership::Ours);
    assert_eq!(o.classify(Some("ns/a/u0")), Ownership::PreviousIncarnation { uid: "u0".into() });
    assert_eq!(o.classify(Some("ns/ab/u1")), Ownership::Foreign("ns/ab/u1".into()));
    assert_eq!(o.classify(Some("other/a/u1")), Ownership::Foreign("other/a/u1".into()));
    assert_eq!(o.classify(Some("garbage")), Ownership::Foreign("garbage".into()));
    assert_eq!(o.classify(None), Ownership::Unowned);
}

#[test]
fn a_paused_plan_still_says_what_would_be_written() {
    // The executor withholds the writes (apply::converge); the plan, and `azml-operator plan`, name them.
    let d = desired_with(|ws| {
        ws.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_PAUSED.into(), "true".into())]));
    });
    assert!(d.paused);
    let obs = Observed { resource_group: ResourceGroupState::Exists, ..observed(None) };
    assert_eq!(plan(&d, &obs).actions, vec![Action::CreateWorkspace { id: d.workspace.id() }]);
    assert!(plan(&d, &observed(Some(azure_copy(&d)))).converged());
    let not_paused = desired_with(|ws| {
        ws.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_PAUSED.into(), "false".into())]));
    });
    assert!(!not_paused.paused);
}

#[test]
fn paused_still_reports_stalls() {
    let d = desired_with(|ws| {
        ws.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_PAUSED.into(), "true".into())]));
    });
    let mut ws = azure_copy(&d);
    ws.tags = None;
    let planned = plan(&d, &observed(Some(ws)));
    assert!(planned.stall.is_some() && planned.actions.is_empty(), "{planned:?}");
}

#[test]
fn pending_operation_is_polled_never_reissued() {
    let d = desired();
    let handle = LroHandle {
        operation: "Workspaces_CreateOrUpdate".into(),
        kind: LroKind::Location,
        poll_url: "https://management.azure.com/op/1".into(),
        resource_url: "https://management.azure.com/x".into(),
        location_url: None,
        final_state: FinalStateVia::OriginalUri,
        subscription: None,
        started_at: Timestamp::UNIX_EPOCH,
        retry_after_secs: Some(1),
        not_before: None,
    };
    let obs = Observed {
        pending: Some(PendingOp { kind: OperationKind::CreateWorkspace, handle }),
        resource_group: ResourceGroupState::Missing,
        ..observed(None)
    };
    assert_eq!(plan(&d, &obs).actions, vec![Action::PollOperation { kind: OperationKind::CreateWorkspace }]);
}

#[test]
fn immutable_differences_stall_with_invalid_spec() {
    let d = desired();
    let mut ws = azure_copy(&d);
    ws.properties.storage_account =
        Some(format!("/subscriptions/{SUB}/resourceGroups/x/providers/Microsoft.Storage/storageAccounts/other"));
    assert!(matches!(
        plan(&d, &observed(Some(ws))).stall,
        Some((Reason::InvalidSpec, message)) if message.contains("storageAccount")
    ));
    let mut ws = azure_copy(&d);
    ws.location = Some("northeurope".into());
    assert!(matches!(plan(&d, &observed(Some(ws))).stall, Some((_, message)) if message.contains("location")));
    let mut ws = azure_copy(&d);
    ws.properties.key_vault = Some("/subscriptions/x/other".into());
    assert!(plan(&d, &observed(Some(ws))).stall.is_some());
}

#[test]
fn provisioning_in_progress_waits_and_failed_is_recreated() {
    let d = desired();
    let mut ws = azure_copy(&d);
    ws.properties.provisioning_state = Some(ProvisioningState::Creating);
    let waiting = plan(&d, &observed(Some(ws.clone())));
    assert!(waiting.actions.is_empty() && waiting.stall.is_none(), "{waiting:?}");
    assert_eq!(waiting.waiting, ["Azure reports provisioning state Creating"]);
    ws.properties.provisioning_state = Some(ProvisioningState::Failed);
    assert_eq!(plan(&d, &observed(Some(ws))).actions, vec![Action::CreateWorkspace { id: d.workspace.id() }]);
}

#[test]
fn invalid_ids_are_rejected_before_planning() {
    for bad in ["../x", "a/b", "rg?x=1", "rg%2Fx", "rg."] {
        let mut ws = resource(spec());
        ws.spec.resource_group = bad.into();
        assert!(Desired::from_resource(&ws).is_err(), "{bad} accepted");
    }
    let mut ws = resource(spec());
    ws.spec.storage_account = DependentResource::by_id(format!("/subscriptions/{SUB}/resourceGroups/rg"));
    assert!(Desired::from_resource(&ws).is_err(), "a resource group is not a storage account");
    let mut ws = resource(spec());
    ws.spec.key_vault = DependentResource::by_name("kv/../../x");
    assert!(Desired::from_resource(&ws).is_err());
    let mut ws = resource(spec());
    ws.metadata.uid = None;
    assert_eq!(Desired::from_resource(&ws), Err(SpecError::MissingMetadata("uid")));
}

#[test]
fn actions_display_for_the_plan_command() {
    let d = desired_with(|ws| ws.spec.friendly_name = Some("F".into()));
    let actions = plan(&d, &observed(Some(azure_copy(&desired())))).actions;
    assert_eq!(actions[0].to_string(), "update workspace (changed in Azure): friendlyName");
    assert!(actions[0].is_write());
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Arbitrary specs: validation and planning never panic, and every id the plan touches stays inside the
        /// spec's subscription and resource group.
        #[test]
        fn arbitrary_specs_never_escape_their_scope(
            rg in prop_oneof!["[A-Za-z0-9_().-]{1,12}", "[A-Za-z0-9./?%#-]{1,12}", any::<String>()],
            name in prop_oneof!["[A-Za-z0-9][A-Za-z0-9_-]{2,12}", "[A-Za-z0-9./?%-]{1,12}", any::<String>()],
            storage in prop_oneof!["[a-z0-9]{3,24}", "[a-z0-9./%?]{1,30}", any::<String>()],
            friendly in proptest::option::of(any::<String>()),
            tags in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
            rg_missing in any::<bool>(),
        ) {
            let mut ws = resource(spec());
            ws.spec.resource_group = rg.clone();
            ws.spec.azure_name = Some(name);
            ws.spec.storage_account = DependentResource::by_name(storage);
            ws.spec.friendly_name = friendly;
            ws.spec.tags = tags;
            let Ok(d) = Desired::from_resource(&ws) else { return Ok(()) };
            let prefix = format!("/subscriptions/{SUB}/resourceGroups/{rg}/");
            prop_assert!(d.workspace.id().starts_with(&prefix));
            prop_assert!(d.workspace.id().split('/').all(|seg| seg != ".." && seg != "."));
            prop_assert!(!d.workspace.id().contains('?'));
            let storage_prefix = format!("{prefix}providers/Microsoft.Storage/storageAccounts/");
            prop_assert!(d.storage_account.as_str().starts_with(&storage_prefix));
            prop_assert!(!d.storage_account.as_str()[storage_prefix.len()..].contains(['/', '?', '%', '#']));
            let obs = Observed {
                resource_group: if rg_missing { ResourceGroupState::Missing } else { ResourceGroupState::Exists },
                ..observed(None)
            };
            for action in plan(&d, &obs).actions {
                match action {
                    Action::CreateResourceGroup { id, .. } => prop_assert_eq!(format!("{id}/"), prefix.clone()),
                    Action::CreateWorkspace { id } => prop_assert!(id.starts_with(&prefix)),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            let mut in_sync = d.workspace_body();
            in_sync.properties.provisioning_state = Some(ProvisioningState::Succeeded);
            prop_assert!(plan(&d, &observed(Some(in_sync))).converged());
        }
    }
}
