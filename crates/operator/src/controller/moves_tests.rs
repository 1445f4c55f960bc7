use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::api::v1alpha1::{AccessScope, PendingOperation};
use crate::azure::{ArmErrorBody, FinalStateVia, LroKind};
use crate::reconciler::status::set_condition;

const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
const SUB2: &str = "0b1f6471-1bf0-4dda-aec3-444455556666";

fn spec(sub: &str, rg: &str, policy: &str) -> MlWorkspaceSpec {
    serde_json::from_value(json!({
        "subscriptionId": sub,
        "resourceGroup": rg,
        "location": "westeurope",
        "storageAccount": {"name": "sa1"},
        "keyVault": {"id": format!("/subscriptions/{sub}/resourceGroups/shared/providers/Microsoft.KeyVault/vaults/kv1")},
        "applicationInsights": {"name": "ai1"},
        "movePolicy": policy,
    }))
    .expect("spec")
}

fn loc(sub: &str, rg: &str) -> WorkspaceLocation {
    WorkspaceLocation { subscription_id: sub.into(), resource_group: rg.into() }
}

fn existing(sub: &str, rg: &str) -> MlWorkspaceStatus {
    MlWorkspaceStatus {
        location: Some(loc(sub, rg)),
        resource_id: Some(format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/ws"
        )),
        ..Default::default()
    }
}

fn handle() -> LroHandle {
    LroHandle {
        operation: "Resources_MoveResources".into(),
        kind: LroKind::Location,
        poll_url: format!("https://management.azure.com/subscriptions/{SUB}/operationresults/x"),
        resource_url: format!("https://management.azure.com/subscriptions/{SUB}/resourceGroups/a/moveResources"),
        location_url: None,
        final_state: FinalStateVia::Location,
        subscription: None,
        started_at: jiff::Timestamp::from_second(1_700_000_000).expect("ts"),
        retry_after_secs: None,
        not_before: None,
    }
}

fn record(phase: MovePhase, to_rg: &str) -> MoveStatus {
    MoveStatus { phase, from: loc(SUB, "a"), to: loc(SUB, to_rg), resources: vec!["/x".into()], message: None }
}

fn with_op(mut status: MlWorkspaceStatus, kind: &str, record: MoveStatus) -> MlWorkspaceStatus {
    status.pending_operation = Some(PendingOperation {
        kind: kind.into(),
        poller: serde_json::to_string(&handle()).expect("json"),
        started_at: None,
        generation: None,
    });
    status.move_status = Some(record);
    status
}

#[test]
fn a_move_is_needed_only_for_an_existing_workspace_whose_place_changed() {
    let s = spec(SUB, "b", "Move");
    assert_eq!(decide(&s, None), Ok(MoveStep::None), "never reconciled");
    assert_eq!(decide(&s, Some(&existing(SUB, "B"))), Ok(MoveStep::None), "same place, case-insensitive");
    let mut never_created = existing(SUB, "a");
    never_created.resource_id = None;
    assert_eq!(decide(&s, Some(&never_created)), Ok(MoveStep::None), "never created: created at the new place");
    assert_eq!(decide(&s, Some(&existing(SUB, "a"))), Ok(MoveStep::Start { from: loc(SUB, "a"), to: loc(SUB, "b") }));
    let across = spec(SUB2, "a", "Move");
    assert_eq!(
        decide(&across, Some(&existing(SUB, "a"))),
        Ok(MoveStep::Start { from: loc(SUB, "a"), to: loc(SUB2, "a") })
    );
    assert!(involved(&s, Some(&existing(SUB, "a"))));
    assert!(!involved(&s, Some(&existing(SUB, "b"))));
}

#[test]
fn refuse_policy_refuses() {
    let s = spec(SUB, "b", "Refuse");
    assert_eq!(decide(&s, Some(&existing(SUB, "a"))), Ok(MoveStep::Refuse { from: loc(SUB, "a"), to: loc(SUB, "b") }));
}

#[test]
fn a_running_move_is_polled_whatever_the_spec_says() {
    let status = with_op(existing(SUB, "a"), MOVE_OPERATION, record(MovePhase::Moving, "b"));
    for s in [spec(SUB, "b", "Move"), spec(SUB, "a", "Move"), spec(SUB, "c", "Refuse")] {
        assert_eq!(
            decide(&s, Some(&status)),
            Ok(MoveStep::PollMove { record: record(MovePhase::Moving, "b"), handle: handle() })
        );
    }
    // Its poller lost (or done, status not yet finished): finish at the recorded destination.
    let mut lost = status.clone();
    lost.pending_operation = None;
    assert_eq!(
        decide(&spec(SUB, "c", "Move"), Some(&lost)),
        Ok(MoveStep::Finish { record: record(MovePhase::Moving, "b") })
    );
}

#[test]
fn a_validation_is_abandoned_when_the_spec_changes() {
    let status = with_op(existing(SUB, "a"), VALIDATE_OPERATION, record(MovePhase::Validating, "b"));
    assert_eq!(
        decide(&spec(SUB, "b", "Move"), Some(&status)),
        Ok(MoveStep::PollValidation { record: record(MovePhase::Validating, "b"), handle: handle() })
    );
    assert_eq!(
        decide(&spec(SUB, "c", "Move"), Some(&status)),
        Ok(MoveStep::Start { from: loc(SUB, "a"), to: loc(SUB, "c") })
    );
    assert_eq!(decide(&spec(SUB, "a", "Move"), Some(&status)), Ok(MoveStep::Clear), "reverted");
}

#[test]
fn reverting_after_a_failure_clears_and_a_finished_move_is_steady() {
    let mut failed = existing(SUB, "a");
    failed.move_status = Some(record(MovePhase::Failed, "b"));
    assert_eq!(decide(&spec(SUB, "a", "Move"), Some(&failed)), Ok(MoveStep::Clear));
    assert_eq!(
        decide(&spec(SUB, "b", "Move"), Some(&failed)),
        Ok(MoveStep::Start { from: loc(SUB, "a"), to: loc(SUB, "b") }),
        "asked again: validated again"
    );
    // Refused (no record, Moved False): reverting clears the condition.
    let mut refused = existing(SUB, "a");
    let now = Time(jiff::Timestamp::from_second(1).expect("ts"));
    set_condition(&mut refused.conditions, conditions::MOVED, false, Reason::MoveRefused, "no", None, &now);
    assert_eq!(decide(&spec(SUB, "a", "Refuse"), Some(&refused)), Ok(MoveStep::Clear));
    // Done: nothing more to do.
    let mut done = existing(SUB, "b");
    done.move_status = Some(record(MovePhase::Succeeded, "b"));
    set_condition(&mut done.conditions, conditions::MOVED, true, Reason::Moved, "moved", None, &now);
    assert_eq!(decide(&spec(SUB, "b", "Move"), Some(&done)), Ok(MoveStep::None));
}

#[test]
fn an_unreadable_move_operation_is_an_error() {
    let mut status = with_op(existing(SUB, "a"), MOVE_OPERATION, record(MovePhase::Moving, "b"));
    status.move_status = None;
    assert!(decide(&spec(SUB, "b", "Move"), Some(&status)).is_err(), "no destination recorded");
    let mut status = with_op(existing(SUB, "a"), MOVE_OPERATION, record(MovePhase::Moving, "b"));
    if let Some(op) = status.pending_operation.as_mut() {
        op.poller = "{".into();
    }
    assert!(decide(&spec(SUB, "b", "Move"), Some(&status)).is_err());
    assert!(involved(&spec(SUB, "b", "Move"), Some(&status)));
}

#[test]
fn the_workspace_moves_with_the_dependencies_named_by_name() {
    let s = spec(SUB, "b", "Move");
    let rg = parse_location(&loc(SUB, "a")).expect("rg");
    let ws = WorkspaceRef::new(rg, crate::azure::ids::WorkspaceName::new("ws1").expect("name"));
    let ids: Vec<String> = resources_to_move(&s, &ws).expect("ids").iter().map(ToString::to_string).collect();
    let base = format!("/subscriptions/{SUB}/resourceGroups/a");
    assert_eq!(
        ids,
        vec![
            format!("{base}/providers/Microsoft.MachineLearningServices/workspaces/ws1"),
            format!("{base}/providers/Microsoft.Storage/storageAccounts/sa1"),
            format!("{base}/providers/Microsoft.Insights/components/ai1"),
        ],
        "the key vault is given by id: it stays"
    );
}

fn granted(kind: AccessScope, scope: &str, name: Uuid) -> AccessStatus {
    AccessStatus {
        principal_id: Uuid::nil().to_string(),
        role_definition_id: Uuid::nil().to_string(),
        scope_kind: kind,
        scope: scope.into(),
        assignment_name: name.to_string(),
        state: AccessState::Granted,
        message: None,
    }
}

#[test]
fn stale_assignments_are_the_owned_ones_at_scopes_the_move_changes() {
    let at = |sub: &str, rg: &str| {
        let rg = parse_location(&loc(sub, rg)).expect("rg");
        Scopes::at(&WorkspaceRef::new(rg, crate::azure::ids::WorkspaceName::new("ws1").expect("name")))
    };
    let from = at(SUB, "a");
    let (w, r, s, u) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut unmanaged = granted(AccessScope::ResourceGroup, from.resource_group.as_str(), u);
    unmanaged.state = AccessState::Unmanaged;
    let access = vec![
        granted(AccessScope::Workspace, from.workspace.as_str(), w),
        granted(AccessScope::ResourceGroup, &from.resource_group.as_str().to_uppercase(), r),
        granted(AccessScope::Subscription, from.subscription.as_str(), s),
        unmanaged,
    ];
    let names = |to: &Scopes| -> Vec<Uuid> { stale_assignments(&access, &from, to).iter().map(|ra| ra.name).collect() };
    assert_eq!(names(&at(SUB, "b")), vec![w, r], "same subscription: the subscription-scope one stays");
    assert_eq!(names(&at(SUB2, "a")), vec![w, r, s], "across subscriptions: all three scopes change");
    assert!(names(&from).is_empty(), "no move, nothing stale");
    let targets = stale_assignments(&access, &from, &at(SUB, "b"));
    assert_eq!(targets[0].scope, from.workspace, "deleted at the old scope");
}

#[test]
fn the_update_sets_or_clears_the_moved_condition_and_the_record() {
    let now = Time(jiff::Timestamp::from_second(10).expect("ts"));
    let keep = Uuid::new_v4();
    let drop = Uuid::new_v4();
    let mut status = MlWorkspaceStatus {
        access: vec![granted(AccessScope::Workspace, "/a", keep), granted(AccessScope::Workspace, "/b", drop)],
        ..Default::default()
    };
    let update = MoveUpdate {
        record: Some(Some(record(MovePhase::Moving, "b"))),
        moved: Some((false, Reason::Moving, "moving".into())),
        drop_access: vec![drop],
    };
    update.apply(&mut status, Some(4), &now);
    assert_eq!(status.move_status.as_ref().map(|r| r.phase), Some(MovePhase::Moving));
    let moved = status.conditions.iter().find(|c| c.type_ == conditions::MOVED).expect("Moved");
    assert_eq!((moved.status.as_str(), moved.reason.as_str(), moved.observed_generation), ("False", "Moving", Some(4)));
    assert_eq!(status.access.len(), 1);
    assert_eq!(status.access[0].assignment_name, keep.to_string());

    // None keeps the record; a missing condition is removed.
    MoveUpdate { record: None, moved: None, drop_access: vec![] }.apply(&mut status, Some(4), &now);
    assert!(status.move_status.is_some());
    assert!(status.conditions.iter().all(|c| c.type_ != conditions::MOVED));
    MoveUpdate { record: Some(None), moved: None, drop_access: vec![] }.apply(&mut status, Some(4), &now);
    assert!(status.move_status.is_none());
    // The record serialises as status.move.
    let status = MlWorkspaceStatus { move_status: Some(record(MovePhase::Failed, "b")), ..Default::default() };
    let v = serde_json::to_value(&status).expect("json");
    assert_eq!(v["move"]["phase"], "Failed");
}

#[test]
fn the_verdict_names_the_blocking_condition() {
    let err = ArmError::Api {
        operation: "LongRunningOperation_Poll",
        status: 409,
        body: Box::new(ArmErrorBody {
            code: "ResourceMoveValidationFailed".into(),
            message: "Resource move validation failed.".into(),
            details: vec![ArmErrorBody {
                code: "ResourceMoveNotSupported".into(),
                message: "Workspace 'ws' has 1 online endpoint(s)".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ids: Default::default(),
        retry_after: None,
    };
    let text = arm_verdict(&err);
    assert!(text.starts_with("ResourceMoveValidationFailed: Resource move validation failed."), "{text}");
    assert!(text.contains("ResourceMoveNotSupported: Workspace 'ws' has 1 online endpoint(s)"), "{text}");
}

#[test]
fn dry_run_describes_the_move() {
    let (reason, message) = dry_run(&spec(SUB, "b", "Move"), Some(&existing(SUB, "a"))).expect("move");
    assert_eq!(reason, Reason::Moving);
    assert!(message.contains("resource group a") && message.contains("resource group b"), "{message}");
    assert_eq!(dry_run(&spec(SUB, "b", "Refuse"), Some(&existing(SUB, "a"))).map(|r| r.0), Some(Reason::MoveRefused));
    assert_eq!(dry_run(&spec(SUB, "a", "Move"), Some(&existing(SUB, "a"))), None);
}

#[test]
fn cleanup_looks_where_the_workspace_is() {
    let ws = MlWorkspace::new("ws1", spec(SUB2, "b", "Move"));
    let status = existing(SUB, "a");
    let at = located(&ws.spec, Some(&status));
    assert_eq!((at.subscription_id, at.resource_group), (SUB, "a"));
    let there = existing(SUB2, "b");
    assert_eq!(located(&ws.spec, Some(&there)), Place::of(&ws.spec), "already there");
    assert_eq!(located(&ws.spec, None), Place::of(&ws.spec));
    // The workspace is deleted where it is: its ARM id (and that of a dependency named without an id) is there.
    let mut owned = ws.clone();
    owned.metadata.namespace = Some("ns".into());
    owned.metadata.uid = Some("uid-1".into());
    let desired = crate::controller::plan::Desired::at(&owned, at).expect("valid spec");
    let id = desired.workspace.id();
    assert!(id.contains("/resourceGroups/a/"), "{id}");
}

#[test]
fn a_move_across_tenants_is_blocked() {
    let binding = |sub: &str, tenant: &str| -> SubscriptionBinding {
        serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "SubscriptionBinding", "metadata": {"name": sub},
            "spec": {"subscriptionId": sub, "tenantId": tenant, "credential": {"managedIdentity": {}},
                     "namespaces": ["ns"], "resourceGroups": ["*"]},
        }))
        .expect("binding")
    };
    let t1 = "72f988bf-0000-4000-8000-000000000001";
    let t2 = "72f988bf-0000-4000-8000-000000000002";
    assert_eq!(tenant_blocker(&binding(SUB, t1), &binding(SUB2, &t1.to_uppercase())), None);
    let message = tenant_blocker(&binding(SUB, t1), &binding(SUB2, t2)).expect("blocked");
    assert!(message.contains(t1) && message.contains(t2) && message.contains("one tenant"), "{message}");
}

#[test]
fn the_operators_online_endpoints_on_the_workspace_block_its_move() {
    let endpoint = |name: &str, workspace: &str| -> MlOnlineEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlOnlineEndpoint",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"workspaceRef": {"name": workspace}},
        }))
        .unwrap()
    };
    assert!(endpoint_blockers("ws", &[]).is_empty());
    assert!(endpoint_blockers("ws", &[endpoint("other-ep", "other-ws")]).is_empty());
    let blockers = endpoint_blockers("ws", &[endpoint("b-ep", "ws"), endpoint("x", "other"), endpoint("a-ep", "ws")]);
    assert_eq!(blockers.len(), 1);
    assert!(blockers[0].contains("(a-ep, b-ep)"), "{}", blockers[0]);
}
