//! Moving a workspace (issue #9) end to end: the real controller against the Kubernetes API emulator and the ARM
//! simulator, which enforces Azure's move restrictions in validateMoveResources.
//!
//! Each test starts both emulators on port 0, installs the CRDs and SubscriptionBindings for both subscriptions of
//! the simulated tenant, and runs `controller::run` in-process. Where things are in Azure is read from the
//! simulator's state, and what the operator asked from its call log.

mod common;

use std::time::Duration;

use azml_arm_simulator::control::CallKind;
use azml_arm_simulator::model::{RoleAssignment, id_key, roles};
use azml_arm_simulator::{RunningSim, World};
use azml_kube_emulator::RunningServer;
use azml_operator::api::conditions::{self, reasons};
use azml_operator::api::v1alpha1::{MlOnlineEndpoint, MlWorkspace, MlWorkspaceSpec, MovePhase, SubscriptionBinding};
use azml_operator::azure::credentials::{CredentialConfig, build_credential};
use azml_operator::azure::{ArmClient, ArmClientOptions, Secret, WorkspaceRef};
use azml_operator::controller::ControllerConfig;
use azml_operator::controller::access::marker;
use azml_operator::controller::moves::{MOVE_OPERATION, VALIDATE_OPERATION};
use common::{Emulators, RunningController, condition, is_current};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const NS: &str = "team-a";
const OPERATOR_NS: &str = "azml-system";
// Generous for a loaded CI machine, below the resync and stalled-requeue periods configured here, so only the
// mechanism under test (a watch event, an LRO poll) can end a wait in time.
const WAIT: Duration = Duration::from_secs(40);
const WS_TYPE: &str = "Microsoft.MachineLearningServices/workspaces";

struct Env {
    _kube: RunningServer,
    client: Client,
    sim: RunningSim,
    world: World,
    config: ControllerConfig,
    controller: Option<RunningController>,
}

impl Env {
    /// Emulators, CRDs, namespaces, the operator credential and a binding per subscription (`allow_moves` on both);
    /// the operator may also grant roles in the second subscription.
    async fn start(allow_moves: bool) -> Env {
        common::init_test_tracing();
        let mut world = World::default_sandbox();
        let other = format!("/subscriptions/{}", world.other_subscription_id);
        world.state.assign_role(&other, roles::USER_ACCESS_ADMINISTRATOR, &world.operator.object_id);
        let Emulators { kube, client, sim } = Emulators::start(&world, Duration::from_millis(100)).await;
        common::install_crds(&client, azml_operator::api::all_crds()).await;
        common::create_namespaces(&client, &[NS, OPERATOR_NS]).await;
        let limits = json!({
            "allowedRoles": ["Reader", "AzureMLDataScientist"],
            "allowedScopes": ["Workspace", "ResourceGroup", "Subscription"],
            "allowMoves": allow_moves,
        });
        common::seed_operator_binding(&client, &world, OPERATOR_NS, &[NS], limits.clone()).await;
        // The second subscription, same tenant, same credential.
        let other = world.other_subscription_id.clone();
        common::create_operator_binding(&client, &world, "sandbox-2", &other, &[NS], limits).await;

        let mut config = common::fast_config(&sim, OPERATOR_NS);
        config.resync_period = Duration::from_secs(120);
        config.stalled_requeue = Duration::from_secs(120);
        config.error_backoff_max = Duration::from_millis(400);
        let mut env = Env { _kube: kube, client, sim, world, config, controller: None };
        env.start_controller();
        env
    }

    fn start_controller(&mut self) {
        self.controller = Some(RunningController::start(self.client.clone(), self.config.clone()));
    }

    async fn stop_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.stop(Duration::from_secs(20)).await;
        }
    }

    /// An ARM client with the operator's credential, for calls the controller would not make.
    fn arm(&self) -> ArmClient {
        let cloud = common::sim_cloud(&self.sim);
        let config = CredentialConfig::ClientSecret {
            tenant_id: self.world.tenant_id.clone(),
            client_id: self.world.operator.client_id.clone(),
            client_secret: Secret::new(self.world.operator.secret.expose().to_owned()),
        };
        let credential = build_credential(&config, &cloud).unwrap();
        ArmClient::new(credential, ArmClientOptions { cloud, ..Default::default() }).unwrap()
    }

    fn api(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A workspace in the world's resource group with its storage account and key vault by `name` (they move along).
    async fn create(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "subscriptionId": self.world.subscription_id,
            "resourceGroup": self.world.resource_group,
            "location": self.world.location,
            "storageAccount": {"name": "stsandbox"},
            "keyVault": {"name": "kv-sandbox"},
            "applicationInsights": {"id": self.world.app_insights_id},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let spec: MlWorkspaceSpec = serde_json::from_value(spec).unwrap();
        let ws = MlWorkspace::new(name, spec);
        self.api().create(&PostParams::default(), &ws).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    async fn patch_spec(&self, name: &str, spec: Value) -> Result<MlWorkspace, kube::Error> {
        self.api().patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await
    }

    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || {
            let ws = self.api().get(name).await.unwrap_or_else(|e| panic!("get {name}: {e}"));
            if done(&ws) { Ok(ws) } else { Err(ws.status) }
        };
        common::wait_until(WAIT, Duration::from_millis(50), check, |status| {
            format!("{name}: timed out waiting for {what}; status: {status:#?}")
        })
        .await
    }

    /// The current generation is Ready (and its access granted).
    async fn wait_ready(&self, name: &str) -> MlWorkspace {
        self.wait_for(name, "Ready", |ws| {
            is_current(ws)
                && is(ws, conditions::READY, "True")
                && condition(ws, conditions::ACCESS_GRANTED).is_none_or(|c| c.status == "True")
        })
        .await
    }

    /// The current generation is Stalled with `reason`.
    async fn wait_stalled(&self, name: &str, reason: &str) -> MlWorkspace {
        self.wait_for(name, &format!("Stalled {reason}"), |ws| {
            is_current(ws)
                && condition(ws, conditions::STALLED).is_some_and(|c| c.status == "True" && c.reason == reason)
        })
        .await
    }

    fn ws_id(&self, sub: &str, rg: &str, name: &str) -> String {
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{WS_TYPE}/{name}")
    }

    fn exists(&self, id: &str) -> bool {
        self.sim.handle.resource(id).is_some()
    }

    fn count(&self, operation: &str) -> usize {
        self.sim.handle.count(operation)
    }

    fn writes(&self) -> Vec<String> {
        let calls = self.sim.handle.calls();
        calls.iter().filter(|c| c.kind == CallKind::Write).map(|c| format!("{} {}", c.method, c.path)).collect()
    }

    /// The operator's assignments for `ws` (by its marker).
    fn marked(&self, ws: &str) -> Vec<RoleAssignment> {
        let m = marker(NS, ws);
        self.sim.handle.with_state(|s| {
            s.role_assignments.values().filter(|ra| ra.description.as_deref() == Some(m.as_str())).cloned().collect()
        })
    }

    async fn event_reasons(&self) -> Vec<String> {
        common::events(&self.client, NS).await.into_iter().filter_map(|e| e.reason).collect()
    }
}

fn is(ws: &MlWorkspace, type_: &str, status: &str) -> bool {
    condition(ws, type_).is_some_and(|c| c.status == status)
}

fn move_phase(ws: &MlWorkspace) -> Option<MovePhase> {
    ws.status.as_ref()?.move_status.as_ref().map(|m| m.phase)
}

fn location(ws: &MlWorkspace) -> (String, String) {
    let l = ws.status.as_ref().and_then(|s| s.location.clone()).expect("status.location");
    (l.subscription_id, l.resource_group)
}

fn moved(ws: &MlWorkspace) -> bool {
    is_current(ws) && is(ws, conditions::MOVED, "True") && is(ws, conditions::READY, "True")
}

fn scope_of(ra: &RoleAssignment) -> String {
    id_key(&ra.scope)
}

#[tokio::test]
async fn resource_group_move_takes_named_dependencies_and_access_along() {
    let env = Env::start(true).await;
    let (alice, bob, group) = (env.world.users[0].clone(), env.world.users[1].clone(), env.world.group.clone());
    let sub = env.world.subscription_id.clone();
    let access = json!([
        {"principalId": alice, "role": "AzureMLDataScientist", "scope": "Workspace"},
        {"principalId": bob, "role": "Reader", "scope": "ResourceGroup"},
        {"principalId": group, "role": "Reader", "scope": "Subscription"},
    ]);
    env.create("ws-rg", json!({"access": access})).await;
    env.wait_ready("ws-rg").await;
    let before: Vec<String> = env.marked("ws-rg").iter().map(scope_of).collect();
    assert_eq!(before.len(), 3);
    env.sim.handle.clear_calls();

    env.patch_spec("ws-rg", json!({"resourceGroup": "rg-moved"})).await.unwrap();
    let ws = env.wait_for("ws-rg", "Moved", moved).await;

    // In Azure: the workspace and its dependencies named by `name` are in the new resource group, the one given by
    // `id` stayed; the workspace points at the moved storage account.
    let new_ws = env.ws_id(&sub, "rg-moved", "ws-rg");
    let new_rg = format!("/subscriptions/{sub}/resourceGroups/rg-moved");
    assert!(env.exists(&new_ws));
    assert!(!env.exists(&env.ws_id(&sub, &env.world.resource_group, "ws-rg")));
    let new_sa = format!("{new_rg}/providers/Microsoft.Storage/storageAccounts/stsandbox");
    assert!(env.exists(&new_sa) && !env.exists(&env.world.storage_account_id));
    assert!(env.exists(&format!("{new_rg}/providers/Microsoft.KeyVault/vaults/kv-sandbox")));
    assert!(env.exists(&env.world.app_insights_id), "given by id: not moved");
    let body = env.sim.handle.resource(&new_ws).unwrap();
    assert_eq!(id_key(body["properties"]["storageAccount"].as_str().unwrap()), id_key(&new_sa));

    // In status: the new place, the finished move, its resources.
    let status = ws.status.clone().unwrap();
    assert_eq!(location(&ws), (sub.clone(), "rg-moved".to_owned()));
    assert_eq!(status.resource_id.as_deref().map(id_key), Some(id_key(&new_ws)));
    assert_eq!(id_key(status.storage_account_id.as_deref().unwrap()), id_key(&new_sa));
    let record = status.move_status.clone().unwrap();
    assert_eq!(record.phase, MovePhase::Succeeded);
    assert_eq!((record.from.resource_group.as_str(), record.to.resource_group.as_str()), ("rg-sandbox", "rg-moved"));
    assert_eq!(record.resources.len(), 3, "{:?}", record.resources);
    assert!(status.pending_operation.is_none());

    // Validated first, moved once, never created anew.
    assert_eq!(env.count("Resources_ValidateMoveResources"), 1);
    assert_eq!(env.count("Resources_MoveResources"), 1);
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0, "{:?}", env.sim.handle.call_summary());
    let seq = |op: &str| env.sim.handle.calls().iter().find(|c| c.operation == op).map(|c| c.seq);
    assert!(seq("Resources_ValidateMoveResources") < seq("Resources_MoveResources"));

    // Access is the same as before, at the new scopes: the workspace- and resource-group-scoped assignments are
    // re-created there and the old resource-group one is gone; the subscription one did not change.
    let after: Vec<String> = env.marked("ws-rg").iter().map(scope_of).collect();
    assert_eq!(after.len(), 3, "{after:?}");
    for scope in [id_key(&new_ws), id_key(&new_rg), id_key(&format!("/subscriptions/{sub}"))] {
        assert!(after.contains(&scope), "{scope} missing in {after:?}");
    }
    assert!(!after.contains(&id_key(&env.world.resource_group_id)), "old resource-group assignment kept");
    assert_eq!(env.count("RoleAssignments_Create"), 2, "{:?}", env.sim.handle.call_summary());
    assert!(is(&ws, conditions::ACCESS_GRANTED, "True"));
    assert!(status.access.iter().all(|a| !id_key(&a.scope).contains("rg-sandbox")), "{:?}", status.access);

    let reasons = env.event_reasons().await;
    for r in ["MoveValidating", "MoveStarted", "Moved"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} event in {reasons:?}");
    }

    // Steady state after the move: reconciles make no write.
    env.sim.handle.clear_calls();
    for i in 0..3 {
        let patch = json!({"metadata": {"annotations": {"test/touch": i.to_string()}}});
        env.api().patch("ws-rg", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(env.count("Workspaces_Get") >= 2, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.writes(), Vec::<String>::new());
    assert_eq!(env.api().get("ws-rg").await.unwrap().status, ws.status, "status was rewritten");
}

#[tokio::test]
async fn subscription_move_recreates_access_in_the_new_subscription() {
    let env = Env::start(true).await;
    let alice = env.world.users[0].clone();
    let (sub, other) = (env.world.subscription_id.clone(), env.world.other_subscription_id.clone());
    let access = json!([
        {"principalId": alice, "role": "Reader", "scope": "Subscription"},
        {"principalId": alice, "role": "AzureMLDataScientist", "scope": "Workspace"},
    ]);
    // A dependency given by `id` in the old subscription would be out of the new binding's reach: none here.
    env.create("ws-sub", json!({"access": access, "applicationInsights": null})).await;
    env.wait_ready("ws-sub").await;

    env.patch_spec("ws-sub", json!({"subscriptionId": other})).await.unwrap();
    let ws = env.wait_for("ws-sub", "Moved", moved).await;
    let new_ws = env.ws_id(&other, &env.world.resource_group, "ws-sub");
    assert!(env.exists(&new_ws));
    assert!(!env.exists(&env.ws_id(&sub, &env.world.resource_group, "ws-sub")));
    assert_eq!(location(&ws), (other.clone(), env.world.resource_group.clone()));
    // The destination resource group was created (it did not exist in the second subscription).
    assert_eq!(env.count("ResourceGroups_CreateOrUpdate"), 1, "{:?}", env.sim.handle.call_summary());
    let after: Vec<String> = env.marked("ws-sub").iter().map(scope_of).collect();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&id_key(&format!("/subscriptions/{other}"))), "{after:?}");
    assert!(after.contains(&id_key(&new_ws)), "{after:?}");
    assert!(!after.contains(&id_key(&format!("/subscriptions/{sub}"))), "old subscription assignment kept");
}

#[tokio::test]
async fn failed_validation_moves_nothing_and_reverting_clears_it() {
    let env = Env::start(true).await;
    let sub = env.world.subscription_id.clone();
    env.create("ws-val", json!({})).await;
    env.wait_ready("ws-val").await;
    // An online endpoint: Azure refuses to move such a workspace.
    let old_ws = env.ws_id(&sub, &env.world.resource_group, "ws-val");
    env.sim.handle.seed_resource(
        &format!("{old_ws}/onlineEndpoints/ep1"),
        &format!("{WS_TYPE}/onlineEndpoints"),
        json!({"location": env.world.location, "properties": {"authMode": "Key"}}),
    );
    env.sim.handle.clear_calls();

    env.patch_spec("ws-val", json!({"resourceGroup": "rg-target"})).await.unwrap();
    let ws = env.wait_stalled("ws-val", reasons::MOVE_VALIDATION_FAILED).await;
    let stalled = condition(&ws, conditions::STALLED).unwrap();
    assert!(stalled.message.contains("ResourceMoveValidationFailed"), "{}", stalled.message);
    assert!(stalled.message.contains("online endpoint"), "names the blocking condition: {}", stalled.message);
    let moved_cond = condition(&ws, conditions::MOVED).unwrap();
    assert_eq!((moved_cond.status.as_str(), moved_cond.reason.as_str()), ("False", reasons::MOVE_VALIDATION_FAILED));
    assert_eq!(move_phase(&ws), Some(MovePhase::Failed));
    assert_eq!(location(&ws), (sub.clone(), env.world.resource_group.clone()), "old place still reported");
    assert_eq!(ws.status.as_ref().unwrap().resource_id.as_deref().map(id_key), Some(id_key(&old_ws)));
    assert!(env.exists(&old_ws));
    assert_eq!(env.count("Resources_MoveResources"), 0);
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0);
    let reasons_seen = env.event_reasons().await;
    assert!(reasons_seen.iter().any(|r| r == reasons::MOVE_VALIDATION_FAILED), "{reasons_seen:?}");

    // Reverting the spec clears the failed move.
    env.patch_spec("ws-val", json!({"resourceGroup": env.world.resource_group})).await.unwrap();
    let ws = env.wait_ready("ws-val").await;
    assert!(condition(&ws, conditions::MOVED).is_none(), "{:?}", ws.status);
    assert!(move_phase(&ws).is_none());
    assert!(is(&ws, conditions::STALLED, "False"));
    assert_eq!(env.count("Resources_MoveResources"), 0);
}

#[tokio::test]
async fn its_own_online_endpoints_block_a_move_before_azure_is_asked() {
    let env = Env::start(true).await;
    env.create("ws-ep", json!({})).await;
    env.wait_ready("ws-ep").await;
    let endpoint: MlOnlineEndpoint = serde_json::from_value(json!({
        "apiVersion": "azml.dev/v1alpha1", "kind": "MlOnlineEndpoint",
        "metadata": {"name": "scoring", "namespace": NS},
        "spec": {"workspaceRef": {"name": "ws-ep"}},
    }))
    .unwrap();
    Api::<MlOnlineEndpoint>::namespaced(env.client.clone(), NS)
        .create(&PostParams::default(), &endpoint)
        .await
        .unwrap();
    env.sim.handle.clear_calls();

    env.patch_spec("ws-ep", json!({"resourceGroup": "rg-target"})).await.unwrap();
    let ws = env.wait_stalled("ws-ep", reasons::MOVE_BLOCKED).await;
    let stalled = condition(&ws, conditions::STALLED).unwrap();
    assert!(stalled.message.contains("online endpoints (scoring)"), "{}", stalled.message);
    assert_eq!(env.count("Resources_ValidateMoveResources"), 0, "known beforehand: Azure is not asked");
    assert_eq!(env.count("Resources_MoveResources"), 0);
    assert_eq!(location(&ws).1, env.world.resource_group, "old place still reported");
}

#[tokio::test]
async fn refuse_policy_rejects_the_change_and_stalls_without_calling_azure() {
    let mut env = Env::start(true).await;
    env.create("ws-ref", json!({"movePolicy": "Refuse"})).await;
    let ready = env.wait_ready("ws-ref").await;

    // The CRD's transition rule rejects the change at admission.
    let err = env.patch_spec("ws-ref", json!({"resourceGroup": "rg-other"})).await.unwrap_err();
    assert!(err.to_string().contains("movePolicy is Refuse"), "{err}");

    // The policy switched to Refuse after the place changed, before the controller saw it: the controller refuses.
    env.stop_controller().await;
    env.patch_spec("ws-ref", json!({"movePolicy": "Move"})).await.unwrap();
    env.patch_spec("ws-ref", json!({"resourceGroup": "rg-other"})).await.unwrap();
    env.patch_spec("ws-ref", json!({"movePolicy": "Refuse"})).await.unwrap();
    env.sim.handle.clear_calls();
    env.start_controller();
    let ws = env.wait_stalled("ws-ref", reasons::MOVE_REFUSED).await;
    assert_eq!(condition(&ws, conditions::MOVED).map(|c| c.reason.as_str()), Some(reasons::MOVE_REFUSED));
    assert_eq!(location(&ws), location(&ready));
    assert_eq!(env.writes(), Vec::<String>::new(), "nothing happens in Azure");
    assert_eq!(env.count("Resources_ValidateMoveResources"), 0);
    let old_ws = env.ws_id(&env.world.subscription_id, &env.world.resource_group, "ws-ref");
    assert!(env.exists(&old_ws));

    // Deleted with deletionPolicy Delete while refused: the workspace is deleted where it is, not looked for where
    // the spec says.
    env.patch_spec("ws-ref", json!({"deletionPolicy": "Delete"})).await.unwrap();
    env.api().delete("ws-ref", &Default::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.api().get_opt("ws-ref").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "ws-ref was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!env.exists(&old_ws), "left behind in Azure");
}

#[tokio::test]
async fn a_move_in_progress_survives_a_restart_and_is_not_issued_twice() {
    let mut env = Env::start(true).await;
    let sub = env.world.subscription_id.clone();
    env.create("ws-rst", json!({})).await;
    env.wait_ready("ws-rst").await;
    // Long enough that the move is still running when the controller has stopped, even on a loaded machine.
    env.sim.handle.set_lro_duration(Duration::from_secs(5));
    env.sim.handle.clear_calls();

    env.patch_spec("ws-rst", json!({"resourceGroup": "rg-later"})).await.unwrap();
    let ws = env
        .wait_for("ws-rst", "the move running", |ws| {
            ws.status.as_ref().and_then(|s| s.pending_operation.as_ref()).is_some_and(|p| p.kind == MOVE_OPERATION)
        })
        .await;
    assert_eq!(move_phase(&ws), Some(MovePhase::Moving));
    assert_eq!(condition(&ws, conditions::MOVED).map(|c| c.reason.as_str()), Some(reasons::MOVING));
    assert_eq!(condition(&ws, conditions::READY).map(|c| c.reason.as_str()), Some(reasons::MOVING));
    env.stop_controller().await;
    // Still running in Azure: the workspace is at its old place.
    let old_ws = env.ws_id(&sub, &env.world.resource_group, "ws-rst");
    assert!(env.exists(&old_ws), "the move ended before the restart; lengthen the simulated LRO");
    // Meanwhile the workspace is unavailable: the resource groups of a running move refuse writes.
    let err = env.arm().begin_update_workspace(&WorkspaceRef::parse(&old_ws).unwrap(), &Default::default()).await;
    let err = err.expect_err("a write during the move succeeded");
    assert_eq!(err.code(), Some("ScopeLocked"), "{err}");
    let polls_before = env.count("Operations_GetResult");
    let last_seq = env.sim.handle.calls().iter().map(|c| c.seq).max().unwrap_or_default();

    env.start_controller();
    let ws = env.wait_for("ws-rst", "Moved", moved).await;
    assert!(env.exists(&env.ws_id(&sub, "rg-later", "ws-rst")));
    assert!(!env.exists(&old_ws));
    assert_eq!(env.count("Resources_ValidateMoveResources"), 1, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.count("Resources_MoveResources"), 1, "re-issued after the restart");
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0, "created at the new place");
    assert!(env.count("Operations_GetResult") > polls_before, "the new controller polled");
    let calls = env.sim.handle.calls();
    let writes_after: Vec<&str> =
        calls.iter().filter(|c| c.seq > last_seq && c.kind == CallKind::Write).map(|c| c.operation.as_str()).collect();
    assert!(writes_after.is_empty(), "the new controller wrote: {writes_after:?}");
    assert_eq!(location(&ws), (sub, "rg-later".to_owned()));
    let ops = ws.status.as_ref().and_then(|s| s.pending_operation.as_ref()).map(|p| p.kind.clone());
    assert!(ops.as_ref().is_none_or(|k| k != MOVE_OPERATION && k != VALIDATE_OPERATION), "{ops:?}");
}

#[tokio::test]
async fn moves_not_allowed_by_the_bindings_stall_without_any_arm_write() {
    let env = Env::start(false).await;
    env.create("ws-pol", json!({})).await;
    env.wait_ready("ws-pol").await;
    env.sim.handle.clear_calls();

    // allowMoves is false.
    env.patch_spec("ws-pol", json!({"resourceGroup": "rg-elsewhere"})).await.unwrap();
    let ws = env.wait_stalled("ws-pol", reasons::NOT_PERMITTED).await;
    let message = &condition(&ws, conditions::STALLED).unwrap().message;
    assert!(message.contains("allowMoves is false"), "{message}");
    assert_eq!(condition(&ws, conditions::MOVED).map(|c| c.reason.as_str()), Some(reasons::NOT_PERMITTED));
    assert_eq!(env.writes(), Vec::<String>::new());

    // Moves allowed, but the destination is not a resource group the binding allows.
    env.patch_spec("ws-pol", json!({"resourceGroup": env.world.resource_group})).await.unwrap();
    env.wait_ready("ws-pol").await;
    for name in ["sandbox", "sandbox-2"] {
        let patch = json!({"spec": {"allowMoves": true}});
        Api::<SubscriptionBinding>::all(env.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    env.patch_spec("ws-pol", json!({"resourceGroup": "forbidden-rg"})).await.unwrap();
    let ws = env.wait_stalled("ws-pol", reasons::NOT_PERMITTED).await;
    let message = &condition(&ws, conditions::STALLED).unwrap().message;
    assert!(message.contains("forbidden-rg"), "{message}");
    assert_eq!(env.writes(), Vec::<String>::new());
    assert_eq!(location(&ws).1, env.world.resource_group);
}

#[tokio::test]
async fn a_spec_changed_during_the_move_is_followed_by_a_second_move() {
    let env = Env::start(true).await;
    let sub = env.world.subscription_id.clone();
    env.create("ws-two", json!({})).await;
    env.wait_ready("ws-two").await;
    env.sim.handle.set_lro_duration(Duration::from_millis(1500));
    env.sim.handle.clear_calls();

    env.patch_spec("ws-two", json!({"resourceGroup": "rg-first"})).await.unwrap();
    env.wait_for("ws-two", "the move running", |ws| {
        ws.status.as_ref().and_then(|s| s.pending_operation.as_ref()).is_some_and(|p| p.kind == MOVE_OPERATION)
    })
    .await;
    // Azure moves to rg-first whatever the spec says now; then the operator moves on to rg-second.
    env.patch_spec("ws-two", json!({"resourceGroup": "rg-second"})).await.unwrap();
    let ws = env.wait_for("ws-two", "Moved", moved).await;
    assert_eq!(location(&ws), (sub.clone(), "rg-second".to_owned()));
    let record = ws.status.as_ref().and_then(|s| s.move_status.clone()).unwrap();
    assert_eq!((record.from.resource_group.as_str(), record.to.resource_group.as_str()), ("rg-first", "rg-second"));
    assert!(env.exists(&env.ws_id(&sub, "rg-second", "ws-two")));
    assert!(!env.exists(&env.ws_id(&sub, "rg-first", "ws-two")));
    assert!(!env.exists(&env.ws_id(&sub, &env.world.resource_group, "ws-two")));
    assert_eq!(env.count("Resources_ValidateMoveResources"), 2, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.count("Resources_MoveResources"), 2);
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0);
}
