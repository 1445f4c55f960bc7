//! `spec.exports` of MlWorkspace, read as an application would read it: the ConfigMap of facts and the opt-in Secret
//! of listKeys values, written by the real workspace controller against the Kubernetes API emulator and the ARM
//! simulator. Covers create, a storage-key resync, a move, removal, a ConfigMap the operator did not create, and a
//! steady state without listKeys or any write (asserted by call counts).

mod common;

use std::time::Duration;

use azml_arm_simulator::{CallKind, RunningSim, World};
use azml_kube_emulator::RunningServer;
use azml_operator::api::conditions::{self, reasons};
use azml_operator::api::v1alpha1::MlWorkspace;
use common::{Emulators, RunningController};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};

const NS: &str = "team-a";
const OPERATOR_NS: &str = "azml-system";
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(25);

struct Env {
    _kube: RunningServer,
    client: Client,
    sim: RunningSim,
    world: World,
    controller: RunningController,
}

impl Env {
    async fn start() -> Env {
        common::init_test_tracing();
        let world = World::default_sandbox();
        let Emulators { kube, client, sim } = Emulators::start(&world, Duration::from_millis(100)).await;
        common::install_crds(&client, azml_operator::api::all_crds()).await;
        common::create_namespaces(&client, &[NS, OPERATOR_NS]).await;
        common::seed_operator_binding(&client, &world, OPERATOR_NS, &[NS], json!({"allowMoves": true})).await;
        let mut config = common::fast_config(&sim, OPERATOR_NS);
        config.resync_period = Duration::from_secs(1);
        config.stalled_requeue = Duration::from_secs(60);
        let controller = RunningController::start(client.clone(), config);
        Env { _kube: kube, client, sim, world, controller }
    }

    fn workspaces(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create(&self, name: &str, exports: Value) {
        let mut extra = json!({
            "containerRegistry": {"id": self.world.container_registry_id},
            "applicationInsights": {"id": self.world.app_insights_id},
            "exports": exports,
        });
        if extra["exports"].is_null() {
            extra.as_object_mut().unwrap().remove("exports");
        }
        let spec = common::workspace_spec(&self.world, extra);
        self.workspaces().create(&PostParams::default(), &MlWorkspace::new(name, spec)).await.unwrap();
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || {
            let ws = self.workspaces().get(name).await.unwrap();
            if done(&ws) { Ok(ws) } else { Err(ws.status) }
        };
        common::wait_until(WAIT, POLL, check, |s| format!("{name}: timed out waiting for {what}: {s:#?}")).await
    }

    /// The object's data once `done` holds for it.
    async fn wait_data<K>(&self, api: &Api<K>, name: &str, done: impl Fn(&K) -> bool) -> K
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let check = async || match api.get_opt(name).await.unwrap() {
            Some(o) if done(&o) => Ok(o),
            other => Err(other),
        };
        common::wait_until(WAIT, POLL, check, |o| format!("{name}: not as expected: {o:#?}")).await
    }
}

fn exported(ws: &MlWorkspace) -> Option<(String, String)> {
    common::condition(ws, conditions::EXPORTED).map(|c| (c.status.clone(), c.reason.clone()))
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8(v.0.clone()).unwrap())
}

/// The ConfigMap and Secret as an application reads them (no Azure rights), current after a resync and a move, no
/// listKeys and no write in steady state, the Secret deleted when no longer declared.
#[tokio::test]
async fn exports_are_written_kept_current_and_free_in_steady_state() {
    let env = Env::start().await;
    let exports = json!({
        "configMap": {"name": "ws-facts"},
        "secret": {"name": "ws-keys", "items": ["userStorageKey", "containerRegistryUsername", "containerRegistryPassword", "appInsightsInstrumentationKey"]},
    });
    env.create("ws-x", exports).await;
    let ws = env.wait("ws-x", "Exported", |w| exported(w) == Some(("True".into(), reasons::EXPORTED.into()))).await;
    let status = ws.status.clone().unwrap();

    // What an application sees: facts in the ConfigMap, the keys it asked for in the Secret.
    let cm = env.config_maps().get("ws-facts").await.unwrap();
    let data = cm.data.clone().unwrap();
    assert_eq!(data.get("workspaceId"), status.workspace_id.as_ref());
    assert_eq!(data.get("resourceId"), status.resource_id.as_ref());
    assert_eq!(data.get("discoveryUrl"), status.discovery_url.as_ref());
    assert_eq!(data.get("mlflowTrackingUri"), status.ml_flow_tracking_uri.as_ref());
    assert_eq!(data["location"], env.world.location);
    assert_eq!(data["subscriptionId"], env.world.subscription_id);
    assert_eq!(data["resourceGroup"], env.world.resource_group);
    assert_eq!(data["workspaceName"], "ws-x");
    assert_eq!(data["storageAccountId"].to_ascii_lowercase(), env.world.storage_account_id.to_ascii_lowercase());
    assert_eq!(data["keyVaultId"].to_ascii_lowercase(), env.world.key_vault_id.to_ascii_lowercase());
    assert_eq!(data["containerRegistryId"].to_ascii_lowercase(), env.world.container_registry_id.to_ascii_lowercase());
    assert_eq!(data["applicationInsightsId"].to_ascii_lowercase(), env.world.app_insights_id.to_ascii_lowercase());
    let owner = |o: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
        o.iter().any(|r| Some(&r.uid) == ws.metadata.uid.as_ref() && r.kind == "MlWorkspace")
    };
    assert!(owner(cm.owner_references()));
    let secret = env.secrets().get("ws-keys").await.unwrap();
    assert!(owner(secret.owner_references()));
    let ws_id = status.resource_id.clone().unwrap();
    let cached = env.sim.handle.workspace_cached_key(&ws_id).unwrap();
    assert_eq!(text(&secret, "userStorageKey").as_deref(), Some(cached.expose()));
    assert_eq!(text(&secret, "containerRegistryUsername").as_deref(), Some("crsandbox"));
    assert!(text(&secret, "containerRegistryPassword").is_some_and(|p| p.len() >= 16));
    assert!(text(&secret, "appInsightsInstrumentationKey").is_some());
    assert_eq!(status.exports.as_ref().and_then(|e| e.secret.as_deref()), Some("ws-keys"));
    let in_status = serde_json::to_string(&status).unwrap();
    let in_events = serde_json::to_string(&common::events(&env.client, NS).await).unwrap();
    assert!(!in_status.contains(cached.expose()) && !in_events.contains(cached.expose()), "a key leaked");

    // Steady state: resyncs read the workspace; no listKeys, no write, no rewrite of the objects.
    let versions = (cm.resource_version(), secret.resource_version());
    env.sim.handle.clear_calls();
    let check = async || {
        let n = env.sim.handle.count("Workspaces_Get");
        if n >= 3 { Ok(()) } else { Err(n) }
    };
    common::wait_until(WAIT, POLL, check, |n| format!("only {n} resyncs")).await;
    assert_eq!(env.sim.handle.count("Workspaces_ListKeys"), 0, "listKeys in steady state");
    let writes: Vec<String> =
        env.sim.handle.calls().into_iter().filter(|c| c.kind == CallKind::Write).map(|c| c.operation).collect();
    assert_eq!(writes, Vec::<String>::new(), "steady state wrote");
    let now = (
        env.config_maps().get("ws-facts").await.unwrap().resource_version(),
        env.secrets().get("ws-keys").await.unwrap().resource_version(),
    );
    assert_eq!(now, versions, "the exported objects were rewritten");

    // The storage key is regenerated and the workspace resynced: the Secret follows.
    let used = status.storage_keys.as_ref().and_then(|k| k.workspace_uses_key.clone()).unwrap_or_else(|| "key1".into());
    let account = status.storage_account_id.clone().unwrap();
    env.sim.handle.regenerate_storage_key(&account, &used).unwrap();
    let annotate = json!({"metadata": {"annotations": {"azml.dev/resync-keys": "rotate-1"}}});
    env.workspaces().patch("ws-x", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    let secret = env
        .wait_data(&env.secrets(), "ws-keys", |s| {
            let now = env.sim.handle.workspace_cached_key(&ws_id).unwrap();
            now != cached && text(s, "userStorageKey").as_deref() == Some(now.expose())
        })
        .await;
    assert_ne!(text(&secret, "userStorageKey").as_deref(), Some(cached.expose()));

    // A move: the ConfigMap names the new resource group and resource id.
    env.workspaces()
        .patch("ws-x", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"resourceGroup": "rg-moved"}})))
        .await
        .unwrap();
    let cm = env
        .wait_data(&env.config_maps(), "ws-facts", |c| {
            c.data.as_ref().is_some_and(|d| d["resourceGroup"] == "rg-moved")
        })
        .await;
    assert!(cm.data.unwrap()["resourceId"].contains("/resourceGroups/rg-moved/"), "resource id after the move");

    // No longer declared: the Secret the operator owns is deleted, the ConfigMap stays.
    let patch = json!({"spec": {"exports": {"secret": null}}});
    env.workspaces().patch("ws-x", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let check = async || match env.secrets().get_opt("ws-keys").await.unwrap() {
        None => Ok(()),
        Some(s) => Err(s.metadata.name),
    };
    common::wait_until(WAIT, POLL, check, |s| format!("{s:?} not deleted")).await;
    assert!(env.config_maps().get_opt("ws-facts").await.unwrap().is_some());
    env.controller.stop(Duration::from_secs(10)).await;
}

/// A ConfigMap of that name the operator did not create is left untouched: condition Exported False, reason
/// ConfigMapNotOwned, one Warning event; the workspace itself stays Ready. Once it is gone, the export is written.
#[tokio::test]
async fn a_config_map_the_operator_did_not_create_is_never_overwritten() {
    let env = Env::start().await;
    let mine: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "ws-facts"}, "data": {"owner": "someone else"}})).unwrap();
    env.config_maps().create(&PostParams::default(), &mine).await.unwrap();
    env.create("ws-y", json!({"configMap": {"name": "ws-facts"}})).await;
    let ws = env
        .wait("ws-y", "ConfigMapNotOwned", |w| exported(w).is_some_and(|e| e.1 == reasons::CONFIG_MAP_NOT_OWNED))
        .await;
    assert!(common::condition(&ws, conditions::READY).is_some_and(|c| c.status == "True"), "the workspace stays Ready");
    assert!(
        common::condition(&ws, conditions::EXPORTED)
            .unwrap()
            .message
            .contains("ConfigMap ws-facts exists and was not created by azml-operator")
    );
    let cm = env.config_maps().get("ws-facts").await.unwrap();
    assert_eq!(cm.data.unwrap(), [("owner".to_owned(), "someone else".to_owned())].into_iter().collect());
    assert!(cm.metadata.owner_references.is_none());
    // One warning, not one per resync.
    let check = async || {
        let n = env.sim.handle.count("Workspaces_Get");
        if n >= 4 { Ok(()) } else { Err(n) }
    };
    common::wait_until(WAIT, POLL, check, |n| format!("only {n} resyncs")).await;
    assert_eq!(common::event_notes(&env.client, NS, reasons::CONFIG_MAP_NOT_OWNED).await.len(), 1);

    env.config_maps().delete("ws-facts", &Default::default()).await.unwrap();
    env.wait("ws-y", "Exported", |w| exported(w) == Some(("True".into(), reasons::EXPORTED.into()))).await;
    let cm = env.config_maps().get("ws-facts").await.unwrap();
    assert_eq!(cm.data.unwrap()["workspaceName"], "ws-y");
    env.controller.stop(Duration::from_secs(10)).await;
}

/// `spec.exports` of an MlOnlineEndpoint: the ConfigMap of its facts and the Secret of the keys asked for, read as an
/// application would; no listKeys and no write in steady state; the Secret follows a key regeneration.
#[tokio::test]
async fn endpoint_exports_follow_a_key_regeneration_and_cost_nothing_in_steady_state() {
    use azml_operator::api::v1alpha1::MlOnlineEndpoint;
    let env = Env::start().await;
    env.create("ws-e", json!(null)).await;
    env.wait("ws-e", "Ready", |w| common::condition(w, conditions::READY).is_some_and(|c| c.status == "True")).await;
    let endpoints: Api<MlOnlineEndpoint> = Api::namespaced(env.client.clone(), NS);
    let ep: MlOnlineEndpoint = serde_json::from_value(json!({
        "apiVersion": "azml.dev/v1alpha1", "kind": "MlOnlineEndpoint", "metadata": {"name": "scoring"},
        "spec": {"workspaceRef": {"name": "ws-e"}, "authMode": "Key",
                 "exports": {"configMap": {"name": "scoring-facts"}, "secret": {"name": "scoring-creds", "items": ["primaryKey"]}}},
    }))
    .unwrap();
    endpoints.create(&PostParams::default(), &ep).await.unwrap();
    let exported_ep = |e: &MlOnlineEndpoint| {
        e.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == conditions::EXPORTED && c.status == "True"))
    };
    let check = async || match endpoints.get("scoring").await {
        Ok(e) if exported_ep(&e) => Ok(e),
        other => Err(other.map(|e| e.status)),
    };
    let ep = common::wait_until(WAIT, POLL, check, |s| format!("endpoint not exported: {s:#?}")).await;
    let status = ep.status.clone().unwrap();
    let cm = env.config_maps().get("scoring-facts").await.unwrap().data.unwrap();
    assert_eq!(cm.get("scoringUri"), status.scoring_uri.as_ref());
    assert_eq!(cm.get("resourceId"), status.resource_id.as_ref());
    assert_eq!(
        (cm["endpointName"].as_str(), cm["authMode"].as_str(), cm["workspaceName"].as_str()),
        ("scoring", "Key", "ws-e")
    );
    let secret = env.secrets().get("scoring-creds").await.unwrap();
    let first = text(&secret, "primaryKey").expect("primaryKey exported");
    assert!(text(&secret, "secondaryKey").is_none(), "only the items asked for");

    // Steady state: endpoint reads only; no listKeys, no write.
    env.sim.handle.clear_calls();
    let check = async || {
        let n = env.sim.handle.count("OnlineEndpoints_Get");
        if n >= 3 { Ok(()) } else { Err(n) }
    };
    common::wait_until(WAIT, POLL, check, |n| format!("only {n} endpoint resyncs")).await;
    assert_eq!(env.sim.handle.count("OnlineEndpoints_ListKeys"), 0, "listKeys in steady state");
    let writes: Vec<String> =
        env.sim.handle.calls().into_iter().filter(|c| c.kind == CallKind::Write).map(|c| c.operation).collect();
    assert_eq!(writes, Vec::<String>::new(), "steady state wrote");

    // Regenerate the primary key: the exported Secret follows.
    let annotate = json!({"metadata": {"annotations": {"azml.dev/regenerate-keys": "primary:1"}}});
    endpoints.patch("scoring", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    let secret =
        env.wait_data(&env.secrets(), "scoring-creds", |s| text(s, "primaryKey").is_some_and(|k| k != first)).await;
    assert!(text(&secret, "primaryKey").is_some());
    env.controller.stop(Duration::from_secs(10)).await;
}
