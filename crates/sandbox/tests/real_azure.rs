//! The operator against what real Azure does that a kind simulator would hide: soft-deleted workspaces and
//! identity-based storage access. The real controller runs against the Kubernetes API emulator and the ARM
//! simulator (both on port 0).

mod common;

use std::time::Duration;

use azml_arm_simulator::{RunningSim, World};
use azml_operator::api::conditions::{self, events as event_reasons, reasons};
use azml_operator::api::v1alpha1::{
    ANNOTATION_PURGE_SOFT_DELETED, ANNOTATION_RECOVER_SOFT_DELETED, ANNOTATION_RESYNC_KEYS, MlWorkspace,
};
use common::{Emulators, RunningController, condition, is_current};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const NS: &str = "team-a";
const OPERATOR_NS: &str = "azml-system";
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(25);
const DAY: Duration = Duration::from_secs(86_400);

struct Env {
    _kube: azml_kube_emulator::RunningServer,
    client: Client,
    sim: RunningSim,
    world: World,
    controller: RunningController,
}

impl Env {
    async fn start() -> Env {
        common::init_test_tracing();
        let world = World::default_sandbox();
        let Emulators { kube, client, sim } = Emulators::start(&world, Duration::from_millis(200)).await;
        common::install_crds(&client, azml_operator::api::all_crds()).await;
        common::create_namespaces(&client, &[NS, OPERATOR_NS]).await;
        common::seed_operator_binding(&client, &world, OPERATOR_NS, &[NS], json!({})).await;
        let mut config = common::fast_config(&sim, OPERATOR_NS);
        config.resync_period = Duration::from_secs(60);
        config.stalled_requeue = Duration::from_secs(60);
        config.key_signal_interval = Duration::from_millis(200);
        let controller = RunningController::start(client.clone(), config);
        Env { _kube: kube, client, sim, world, controller }
    }

    fn api(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create(&self, name: &str, extra: Value) {
        let spec = common::workspace_spec(&self.world, extra);
        self.api().create(&PostParams::default(), &MlWorkspace::new(name, spec)).await.unwrap();
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || match self.api().get_opt(name).await.unwrap() {
            Some(ws) if done(&ws) => Ok(ws),
            other => Err(other.map(|ws| ws.status)),
        };
        common::wait_until(WAIT, POLL, check, |status| {
            let calls = self.sim.handle.call_summary();
            format!("{name}: timed out waiting for {what}; status: {status:#?}; calls: {calls:?}")
        })
        .await
    }

    async fn delete(&self, name: &str) {
        self.api().delete(name, &DeleteParams::default()).await.unwrap();
        let check = async || match self.api().get_opt(name).await.unwrap() {
            None => Ok(()),
            Some(ws) => Err(ws.status),
        };
        common::wait_until(WAIT, POLL, check, |status| format!("{name} not deleted: {status:#?}")).await
    }

    fn workspace_id(&self, azure_name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{azure_name}",
            self.world.subscription_id, self.world.resource_group
        )
    }

    /// The soft-deleted workspaces' ids, lowercased.
    fn soft_deleted(&self) -> Vec<String> {
        let list = self.sim.handle.soft_deleted_workspaces();
        list.iter().filter_map(|w| w["id"].as_str()).map(str::to_ascii_lowercase).collect()
    }

    fn azure_workspace_id(&self, azure_name: &str) -> Option<String> {
        let body = self.sim.handle.resource(&self.workspace_id(azure_name))?;
        body.pointer("/properties/workspaceId").and_then(Value::as_str).map(String::from)
    }

    async fn events(&self, reason: &str) -> Vec<String> {
        common::event_notes(&self.client, NS, reason).await
    }
}

fn ready(ws: &MlWorkspace) -> bool {
    condition(ws, conditions::READY).is_some_and(|c| c.status == "True") && is_current(ws)
}

fn stalled(ws: &MlWorkspace, reason: &str) -> bool {
    condition(ws, conditions::STALLED).is_some_and(|c| c.status == "True" && c.reason == reason)
}

/// `kubectl delete` + `kubectl apply` of the same MlWorkspace with deletionPolicy Delete: Azure soft-deleted the
/// first one, so the second stalls SoftDeleted (message and event say what to do) until an annotation recovers it
/// or purges it; deletionPolicy Purge frees the name at once.
#[tokio::test]
async fn delete_soft_deletes_and_the_annotations_recover_or_purge() {
    let env = Env::start().await;
    let id = env.workspace_id("ws-sd").to_ascii_lowercase();
    env.create("ws-sd", json!({"deletionPolicy": "Delete"})).await;
    env.wait_for("ws-sd", "Ready", ready).await;
    let first = env.azure_workspace_id("ws-sd").unwrap();

    // Delete: soft-deleted, not gone; still there after 13 of its 14 days.
    env.delete("ws-sd").await;
    assert!(env.sim.handle.resource(&id).is_none(), "no longer served");
    assert_eq!(env.soft_deleted(), vec![id.clone()]);
    env.sim.handle.advance_clock(13 * DAY);
    assert_eq!(env.soft_deleted(), vec![id.clone()], "kept for the retention period");
    assert!(env.events(event_reasons::DELETED).await.iter().any(|n| n.contains("soft-deleted")));

    // Re-created: stalls with an actionable message and a Warning event, and is not retried in a loop.
    env.create("ws-sd", json!({"deletionPolicy": "Delete"})).await;
    let ws = env.wait_for("ws-sd", "Stalled SoftDeleted", |w| stalled(w, reasons::SOFT_DELETED)).await;
    let message = condition(&ws, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains(ANNOTATION_RECOVER_SOFT_DELETED) && message.contains(ANNOTATION_PURGE_SOFT_DELETED));
    let warned = env.events(reasons::SOFT_DELETED).await;
    assert!(warned.iter().any(|n| n.contains("soft-deleted")), "{warned:?}");
    let puts = env.sim.handle.count("Workspaces_CreateOrUpdate");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.sim.handle.count("Workspaces_CreateOrUpdate"), puts, "no retry loop");

    // Recover: the same workspace comes back (its workspaceId), the normal pipeline takes it over.
    env.annotate("ws-sd", ANNOTATION_RECOVER_SOFT_DELETED, "true").await;
    env.wait_for("ws-sd", "Ready after recovery", ready).await;
    assert_eq!(env.azure_workspace_id("ws-sd").as_deref(), Some(first.as_str()), "recovered, not re-created");
    assert!(env.soft_deleted().is_empty());
    assert!(!env.events(event_reasons::RECOVERED).await.is_empty());

    // Purge: delete again, re-create, ask for a purge: a new workspace under the same name.
    let patch = json!({"metadata": {"annotations": {ANNOTATION_RECOVER_SOFT_DELETED: null}}});
    env.api().patch("ws-sd", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.delete("ws-sd").await;
    assert_eq!(env.soft_deleted(), vec![id.clone()]);
    env.create("ws-sd", json!({"deletionPolicy": "Delete"})).await;
    env.wait_for("ws-sd", "Stalled SoftDeleted", |w| stalled(w, reasons::SOFT_DELETED)).await;
    env.annotate("ws-sd", ANNOTATION_PURGE_SOFT_DELETED, "true").await;
    env.wait_for("ws-sd", "Ready after purge", ready).await;
    let fresh = env.azure_workspace_id("ws-sd").unwrap();
    assert_ne!(fresh, first, "purged and created afresh");
    assert!(env.soft_deleted().is_empty());
    assert!(!env.events(event_reasons::PURGED).await.is_empty());

    // deletionPolicy Purge: nothing soft-deleted, the name is free at once.
    let patch = json!({"spec": {"deletionPolicy": "Purge"}});
    env.api().patch("ws-sd", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_for("ws-sd", "Ready with Purge", ready).await;
    env.delete("ws-sd").await;
    assert!(env.soft_deleted().is_empty(), "purged, not soft-deleted");
    env.create("ws-sd", json!({})).await;
    env.wait_for("ws-sd", "Ready on a purged name", ready).await;
    env.controller.stop(Duration::from_secs(10)).await;
}

/// A soft-deleted workspace that another MlWorkspace created is never purged, even when asked; the retention
/// period frees a name by itself.
#[tokio::test]
async fn a_foreign_soft_deleted_workspace_is_never_purged_and_retention_frees_the_name() {
    let env = Env::start().await;
    let id = env.workspace_id("shared-ws").to_ascii_lowercase();
    env.create("other", json!({"azureName": "shared-ws", "deletionPolicy": "Delete"})).await;
    env.wait_for("other", "Ready", ready).await;
    env.delete("other").await;
    assert_eq!(env.soft_deleted(), vec![id.clone()]);
    env.sim.handle.clear_calls();

    env.create("mine", json!({"azureName": "shared-ws"})).await;
    env.wait_for("mine", "Stalled SoftDeleted", |w| stalled(w, reasons::SOFT_DELETED)).await;
    env.annotate("mine", ANNOTATION_PURGE_SOFT_DELETED, "true").await;
    let ws = env.wait_for("mine", "Stalled AlreadyExists", |w| stalled(w, reasons::ALREADY_EXISTS)).await;
    let message = condition(&ws, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("team-a/other/"), "{message}");
    let purges = env.sim.handle.calls().into_iter().filter(|c| c.path.contains("shared-ws") && c.method == "DELETE");
    assert_eq!(purges.count(), 0, "never purged");
    let tags = env.sim.handle.resource(&id).unwrap()["tags"].clone();
    assert!(tags["azml.dev-owner"].as_str().unwrap().starts_with("team-a/other/"), "left as it was: {tags}");

    // Retention: 14 days after a soft delete the name is free without anyone's help.
    env.create("third", json!({"deletionPolicy": "Delete"})).await;
    env.wait_for("third", "Ready", ready).await;
    env.delete("third").await;
    let third = env.workspace_id("third").to_ascii_lowercase();
    assert_eq!(env.soft_deleted(), vec![third.clone()]);
    env.sim.handle.advance_clock(15 * DAY);
    assert!(env.soft_deleted().is_empty(), "purged when its retention ended");
    env.create("third", json!({})).await;
    let ws = env.wait_for("third", "Ready on an expired name", ready).await;
    assert!(condition(&ws, conditions::STALLED).is_none_or(|c| c.status == "False"));
    env.controller.stop(Duration::from_secs(10)).await;
}

/// With identity-based datastores (systemDatastoresAuthMode Identity, set in Azure after creation) listKeys has no
/// userStorageKey: the operator reports IdentityBased, claims no key and never resyncs, even when asked.
#[tokio::test]
async fn identity_based_storage_is_reported_and_never_resynced() {
    let env = Env::start().await;
    env.create("ws-id", json!({})).await;
    let ws = env
        .wait_for("ws-id", "keys in sync", |w| {
            ready(w) && condition(w, conditions::STORAGE_KEYS_IN_SYNC).is_some_and(|c| c.status == "True")
        })
        .await;
    let keys = ws.status.unwrap().storage_keys.unwrap();
    assert_eq!(keys.workspace_uses_key.as_deref(), Some("key1"), "access keys by default");

    // Switched to identity-based access in Azure ("sandbox azure edit").
    let patch = json!({"properties": {"systemDatastoresAuthMode": "Identity"}});
    env.sim.handle.edit_resource(&env.workspace_id("ws-id"), &patch).unwrap();
    env.sim.handle.clear_calls();
    // A resync request and a regenerated key: neither may lead to a resync.
    env.annotate("ws-id", ANNOTATION_RESYNC_KEYS, "please").await;
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key1").unwrap();
    let ws = env
        .wait_for("ws-id", "IdentityBased", |w| {
            condition(w, conditions::STORAGE_KEYS_IN_SYNC)
                .is_some_and(|c| c.status == "True" && c.reason == reasons::IDENTITY_BASED)
        })
        .await;
    let keys = ws.status.clone().unwrap().storage_keys.unwrap();
    assert_eq!(keys.workspace_uses_key, None, "no key claimed");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for op in ["Workspaces_ResyncKeys", "StorageAccounts_RegenerateKey", "Workspaces_ListKeys"] {
        assert_eq!(env.sim.handle.count(op), 0, "{op}: {:?}", env.sim.handle.call_summary());
    }
    env.controller.stop(Duration::from_secs(10)).await;
}
