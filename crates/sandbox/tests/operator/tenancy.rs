//! Tenancy holes of issue #16, closed: the real controller against the Kubernetes API emulator and the ARM simulator.
//!
//! - a resource named by id (a workspace's storage account) must be in a resource group the binding allows for what
//!   the operator does with it: `resourceGroups` to write (storage key rotation), `dependencyResourceGroups` to read;
//!   anything else is `NotPermitted` before any Azure call;
//! - adoption never takes the workspace of another live MlWorkspace (`OwnedElsewhere`), so deleting the adopter with
//!   deletionPolicy Delete cannot delete it; a deleted owner's workspace is adopted only with the annotation, evented;
//! - a workspace stalled on a missing dependency waits for it with one GET per stalled requeue, never re-sending the
//!   create request, and is created once the dependency exists.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{self, Emulators, condition, is_current};
use crate::env::{TestEnv, env_type};
use azml_arm_simulator::World;
use azml_operator::api::conditions::{self, Reason, events};
use azml_operator::api::v1alpha1::{
    ANNOTATION_ADOPT, MlWorkspace, MlWorkspaceSpec, OWNER_TAG, WorkspaceDeletionPolicy,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const TEAM_A: &str = "team-a";
const TEAM_B: &str = "team-b";
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Another team's resource group, holding a storage account the bound namespaces were never given.
const RISK_RG: &str = "rg-risk-ml";

env_type!(Env);

impl Env {
    /// Emulators with the default world plus a storage account in [`RISK_RG`] whose keys are old (a rotation of
    /// `rotateEvery: 30d` is due at once), both teams bound, and a controller with `stalled_requeue`.
    async fn start(binding_limits: Value, stalled_requeue: Duration) -> Env {
        let mut env = TestEnv::builder()
            .world(|world| {
                let (sub, location) = (world.subscription_id.clone(), world.location.clone());
                world.state.add_resource_group(&sub, RISK_RG, &location);
                world.state.put_resource(
                    &risk_storage_id(world),
                    "Microsoft.Storage/storageAccounts",
                    json!({"location": location, "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"}}),
                );
            })
            .namespaces(&[TEAM_A, TEAM_B])
            .bind(&[TEAM_A, TEAM_B], binding_limits)
            .resync(Duration::from_secs(1))
            .stalled(stalled_requeue)
            .without_controller()
            .start()
            .await;
        let old = json!({"properties": {"keyCreationTime": {"key1": "2020-01-01T00:00:00Z", "key2": "2020-01-01T00:00:00Z"}}});
        env.sim.handle.edit_resource(&risk_storage_id(&env.world), &old).unwrap();
        env.start_controller();
        Env(env)
    }

    fn api(&self, ns: &str) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn spec(&self, extra: Value) -> MlWorkspaceSpec {
        common::workspace_spec(&self.world, extra)
    }

    async fn create(&self, ns: &str, name: &str, spec: MlWorkspaceSpec, annotations: &[(&str, &str)]) {
        let mut ws = MlWorkspace::new(name, spec);
        if !annotations.is_empty() {
            let map: BTreeMap<String, String> =
                annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            ws.metadata.annotations = Some(map);
        }
        self.api(ns).create(&PostParams::default(), &ws).await.unwrap_or_else(|e| panic!("create {ns}/{name}: {e}"));
    }

    async fn wait_for(&self, ns: &str, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || match self.api(ns).get_opt(name).await.unwrap() {
            Some(ws) if done(&ws) => Ok(ws),
            other => Err(other.map(|w| w.status)),
        };
        common::wait_until(WAIT, POLL, check, |status| format!("{ns}/{name}: no {what}; status: {status:#?}")).await
    }

    async fn wait_ready(&self, ns: &str, name: &str) -> MlWorkspace {
        self.wait_for(ns, name, "Ready", |ws| {
            condition(ws, conditions::READY).is_some_and(|c| c.status == "True") && is_current(ws)
        })
        .await
    }

    /// Waits for Stalled with `reason` at the current generation; returns the message.
    async fn wait_stalled(&self, ns: &str, name: &str, reason: Reason) -> String {
        let ws = self
            .wait_for(ns, name, reason.as_str(), |ws| {
                condition(ws, conditions::STALLED).is_some_and(|c| c.status == "True" && c.reason == reason)
                    && is_current(ws)
            })
            .await;
        condition(&ws, conditions::STALLED).map(|c| c.message.clone()).unwrap_or_default()
    }

    async fn wait_gone(&self, ns: &str, name: &str) {
        common::wait_gone(&self.api(ns), name, WAIT, POLL).await
    }

    fn count(&self, operation: &str) -> usize {
        self.sim.handle.count(operation)
    }

    fn workspace_id(&self, name: &str) -> String {
        format!("{}/providers/Microsoft.MachineLearningServices/workspaces/{name}", self.world.resource_group_id)
    }

    fn owner_tag_in_azure(&self, name: &str) -> Option<String> {
        let ws = self.sim.handle.resource(&self.workspace_id(name))?;
        ws.pointer(&format!("/tags/{OWNER_TAG}")).and_then(Value::as_str).map(str::to_owned)
    }
}

fn risk_storage_id(world: &World) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{RISK_RG}/providers/Microsoft.Storage/storageAccounts/striskml",
        world.subscription_id
    )
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Resources named by id stay inside the binding's resource groups.

#[tokio::test]
async fn a_dependency_in_another_teams_resource_group_is_never_touched() {
    // The probe of the issue: the namespace may use only rg-teamb-*, and links another team's storage account with
    // rotateEvery. Before the fix the operator created the workspace and regenerated that account's key.
    let env = Env::start(json!({"resourceGroups": ["rg-teamb-*"]}), Duration::from_secs(30)).await;
    let risk = risk_storage_id(&env.world);
    let keys_before = env.sim.handle.storage_key(&risk, "key1").map(|k| k.expose().to_owned());
    let spec = env.spec(json!({
        "resourceGroup": "rg-teamb-ml",
        "storageAccount": {"id": risk},
        "storageKeys": {"rotateEvery": "30d"},
    }));
    env.create(TEAM_B, "probe", spec, &[]).await;
    let message = env.wait_stalled(TEAM_B, "probe", Reason::NotPermitted).await;
    assert!(message.contains("spec.storageAccount.id") && message.contains(RISK_RG), "{message}");
    assert!(message.contains("rg-teamb-*"), "{message}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.sim.handle.calls().len(), 0, "{:?}", env.sim.handle.call_summary());

    // The admin lets the namespace use (read) the other team's group and the shared one holding the key vault: linking
    // is allowed, rotating (a write) is not.
    let bindings = Api::<azml_operator::api::v1alpha1::SubscriptionBinding>::all(env.client.clone());
    let read_only = json!({"spec": {"dependencyResourceGroups": ["rg-risk-*", env.world.resource_group]}});
    bindings.patch("sandbox", &PatchParams::default(), &Patch::Merge(&read_only)).await.unwrap();
    let message = env
        .wait_for(TEAM_B, "probe", "the refusal of the write", |ws| {
            condition(ws, conditions::STALLED).is_some_and(|c| c.message.contains("rotateEvery"))
        })
        .await;
    let message = condition(&message, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("dependencyResourceGroups") && message.contains("spec.storageAccount.id"), "{message}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.sim.handle.calls().len(), 0, "{:?}", env.sim.handle.call_summary());

    // Without rotation the workspace is built on the shared account; its keys are read, never regenerated.
    let patch = json!({"spec": {"storageKeys": {"rotateEvery": null}}});
    env.api(TEAM_B).patch("probe", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_ready(TEAM_B, "probe").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 0, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.sim.handle.storage_key(&risk, "key1").map(|k| k.expose().to_owned()), keys_before);
    let writes_outside = env
        .sim
        .handle
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET" && c.path.to_ascii_lowercase().contains(&RISK_RG.to_ascii_lowercase()))
        .filter(|c| !c.operation.eq_ignore_ascii_case("StorageAccounts_ListKeys"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect::<Vec<_>>();
    assert!(writes_outside.is_empty(), "writes in {RISK_RG}: {writes_outside:?}");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Adoption takes only what nobody owns.

#[tokio::test]
async fn adoption_never_takes_the_workspace_of_a_live_owner() {
    let env = Env::start(json!({}), Duration::from_secs(30)).await;
    let shared = "shared-ws";
    let mut spec_a = env.spec(json!({"azureName": shared}));
    spec_a.deletion_policy = WorkspaceDeletionPolicy::Retain;
    env.create(TEAM_A, "ws-a", spec_a, &[]).await;
    let ws_a = env.wait_ready(TEAM_A, "ws-a").await;
    let owner_a = env.owner_tag_in_azure(shared).expect("owner tag");
    assert!(owner_a.starts_with("team-a/ws-a/"), "{owner_a}");

    // Another namespace names the same workspace, asks to adopt it, and would delete it on deletion.
    let mut spec_b = env.spec(json!({"azureName": shared}));
    spec_b.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(TEAM_B, "ws-b", spec_b, &[(ANNOTATION_ADOPT, "true")]).await;
    let message = env.wait_stalled(TEAM_B, "ws-b", Reason::OwnedElsewhere).await;
    assert!(message.contains(&owner_a), "{message}");
    assert_eq!(env.owner_tag_in_azure(shared).as_deref(), Some(owner_a.as_str()), "the owner tag was taken");
    assert_eq!(env.count("Workspaces_Update"), 0, "{:?}", env.sim.handle.call_summary());

    // Deleting the would-be adopter leaves the owner's workspace alone.
    env.api(TEAM_B).delete("ws-b", &DeleteParams::default()).await.unwrap();
    env.wait_gone(TEAM_B, "ws-b").await;
    assert!(env.sim.handle.resource(&env.workspace_id(shared)).is_some(), "the live owner's workspace was deleted");
    assert_eq!(env.count("Workspaces_Delete"), 0);
    let ws_a_now = env.wait_ready(TEAM_A, "ws-a").await;
    assert_eq!(ws_a_now.status.unwrap().resource_id, ws_a.status.unwrap().resource_id);

    // Once the owner is gone (deleted with Retain), the workspace may be taken over, but only with the annotation.
    env.api(TEAM_A).delete("ws-a", &DeleteParams::default()).await.unwrap();
    env.wait_gone(TEAM_A, "ws-a").await;
    env.create(TEAM_B, "ws-c", env.spec(json!({"azureName": shared})), &[]).await;
    let message = env.wait_stalled(TEAM_B, "ws-c", Reason::AlreadyExists).await;
    assert!(message.contains(&owner_a) && message.contains(ANNOTATION_ADOPT), "{message}");
    assert_eq!(env.count("Workspaces_Update"), 0);
    let adopt = json!({"metadata": {"annotations": {ANNOTATION_ADOPT: "true"}}});
    env.api(TEAM_B).patch("ws-c", &PatchParams::default(), &Patch::Merge(&adopt)).await.unwrap();
    env.wait_ready(TEAM_B, "ws-c").await;
    assert!(env.owner_tag_in_azure(shared).is_some_and(|t| t.starts_with("team-b/ws-c/")));
    let notes = common::event_notes(&env.client, TEAM_B, events::ADOPTED).await;
    assert!(notes.iter().any(|n| n.contains(&owner_a) && n.contains("no longer exists")), "{notes:?}");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 6. A missing dependency is waited for, not re-created against.

#[tokio::test]
async fn a_missing_dependency_is_waited_for_with_one_get_per_requeue() {
    let requeue = Duration::from_millis(250);
    let env = Env::start(json!({}), requeue).await;
    let missing = format!("{}/providers/Microsoft.Storage/storageAccounts/stlater", env.world.resource_group_id);
    env.create(TEAM_A, "ws-wait", env.spec(json!({"storageAccount": {"id": missing}})), &[]).await;
    env.wait_stalled(TEAM_A, "ws-wait", Reason::DependencyMissing).await;
    let ws = env.api(TEAM_A).get("ws-wait").await.unwrap();
    assert_eq!(ws.status.unwrap().missing_dependency.as_deref(), Some(missing.as_str()));
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1);

    // Several stalled requeues: no create request, only GETs of the missing account, at most one per requeue.
    env.sim.handle.clear_calls();
    let started = tokio::time::Instant::now();
    let check = async || match env.count("StorageAccounts_GetProperties") {
        n if n >= 4 => Ok(n),
        n => Err(n),
    };
    common::wait_until(WAIT, POLL, check, |n| format!("only {n} GETs of the missing account")).await;
    let elapsed = started.elapsed();
    let summary = env.sim.handle.call_summary();
    let gets = env.count("StorageAccounts_GetProperties");
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0, "the create request was re-sent: {summary:?}");
    assert_eq!(env.count("Workspaces_Get") + env.count("ResourceGroups_Get"), 0, "{summary:?}");
    let requeues = (elapsed.as_millis() / requeue.as_millis()) as usize + 2;
    assert!(gets <= requeues, "{gets} GETs in at most {requeues} requeues ({elapsed:?}): {summary:?}");
    let other: Vec<_> = env
        .sim
        .handle
        .calls()
        .into_iter()
        .filter(|c| c.operation != "StorageAccounts_GetProperties" && c.operation != "Token")
        .map(|c| c.operation)
        .collect();
    assert!(other.is_empty(), "{other:?}");

    // The account appears: the next requeue sees it and creates the workspace.
    env.sim.handle.seed_resource(
        &missing,
        "Microsoft.Storage/storageAccounts",
        json!({"location": env.world.location, "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"}}),
    );
    let ws = env.wait_ready(TEAM_A, "ws-wait").await;
    assert!(ws.status.unwrap().missing_dependency.is_none());
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1, "{:?}", env.sim.handle.call_summary());
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// 3. The simulator refuses the tags Azure refuses, on the wire.

#[tokio::test]
async fn the_simulator_refuses_tags_azure_refuses() {
    use azml_operator::azure::credentials::{CredentialConfig, build_credential};
    use azml_operator::azure::ids::{ResourceGroupName, ResourceGroupRef, WorkspaceName, WorkspaceRef};
    use azml_operator::azure::resource_groups::ResourceGroupCreate;
    use azml_operator::azure::workspaces::WorkspaceUpdate;
    use azml_operator::azure::{ArmClient, ArmClientOptions, Secret, SubscriptionId};

    let world = World::default_sandbox();
    let Emulators { sim, .. } = Emulators::start(&world, Duration::from_millis(50)).await;
    let cloud = common::sim_cloud(&sim);
    let credential = build_credential(
        &CredentialConfig::ClientSecret {
            tenant_id: world.tenant_id.clone(),
            client_id: world.operator.client_id.clone(),
            client_secret: Secret::new(world.operator.secret.expose()),
        },
        &cloud,
    )
    .unwrap();
    let arm = ArmClient::new(credential, ArmClientOptions { cloud, ..Default::default() }).unwrap();
    let sub = SubscriptionId::new(&world.subscription_id).unwrap();
    let rg = ResourceGroupRef::new(sub, ResourceGroupName::new("rg-tags").unwrap());
    let group = |tags: Vec<(String, String)>| ResourceGroupCreate {
        location: world.location.clone(),
        tags: Some(tags.into_iter().collect()),
        managed_by: None,
    };
    let code = |e: azml_operator::azure::ArmError| (e.status(), e.code().map(str::to_owned));
    let bad = group(vec![("team/name".into(), "x".into())]);
    let err = arm.create_or_update_resource_group(&rg, &bad).await.unwrap_err();
    assert_eq!(code(err), (Some(400), Some("InvalidTagNameCharacters".into())));
    let long_value = group(vec![("n".into(), "v".repeat(257))]);
    let err = arm.create_or_update_resource_group(&rg, &long_value).await.unwrap_err();
    assert_eq!(code(err), (Some(400), Some("InvalidTagValueLength".into())));
    let created = || sim.handle.with_state(|s| s.resource_groups.keys().any(|k| k.ends_with("/rg-tags")));
    assert!(!created(), "a refused PUT created the group");
    let fine = group((0..50).map(|i| (format!("t{i}"), "v".repeat(256))).collect());
    arm.create_or_update_resource_group(&rg, &fine).await.unwrap();
    assert!(created());

    // A PATCH of a workspace's tags is judged the same way, before the resource provider sees it.
    let ws = WorkspaceRef::new(
        ResourceGroupRef::new(sub, ResourceGroupName::new(world.resource_group.clone()).unwrap()),
        WorkspaceName::new("ws-tags").unwrap(),
    );
    let too_many = WorkspaceUpdate {
        tags: Some((0..51).map(|i| (format!("t{i}"), String::new())).collect()),
        ..Default::default()
    };
    let err = arm.begin_update_workspace(&ws, &too_many).await.unwrap_err();
    assert_eq!(code(err), (Some(400), Some("InvalidTags".into())));
}
