//! MlOnlineEndpoint: the real controllers (workspace and endpoint) against the Kubernetes API emulator and the ARM
//! simulator (both on port 0): deployments and traffic, key export and regeneration, waiting for the workspace,
//! admission of invalid traffic, deletion with both policies.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;
use crate::env::{TestEnv, env_type};
use azml_arm_simulator::model::{ResourceExt, id_key};
use azml_arm_simulator::{CallKind, FaultAction, FaultRule};
use azml_operator::api::conditions::{self, Reason};
use azml_operator::api::v1alpha1::{ANNOTATION_REGENERATE_KEYS, MlOnlineEndpoint, MlWorkspace};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};

const NS: &str = "team-a";
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(25);

env_type!(Env);

impl Env {
    async fn start() -> Env {
        Env::start_with(json!({})).await
    }

    /// `limits`: extra SubscriptionBinding spec fields (allowedRoles, allowedScopes). Logs are captured (key values
    /// must never reach them).
    async fn start_with(limits: Value) -> Env {
        Env(TestEnv::builder().bind(&[NS], limits).capture_logs().start().await)
    }

    fn workspaces(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn endpoints(&self) -> Api<MlOnlineEndpoint> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_workspace(&self, name: &str, deletion_policy: &str) {
        let spec = common::workspace_spec(&self.world, json!({"deletionPolicy": deletion_policy}));
        self.workspaces().create(&PostParams::default(), &MlWorkspace::new(name, spec)).await.unwrap();
    }

    async fn create_endpoint(&self, name: &str, spec: Value) -> Result<MlOnlineEndpoint, kube::Error> {
        let ep: MlOnlineEndpoint = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1",
            "kind": "MlOnlineEndpoint",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.endpoints().create(&PostParams::default(), &ep).await
    }

    async fn patch_spec(&self, name: &str, spec: Value) {
        let patch = json!({"spec": spec});
        self.endpoints().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn wait_ws_ready(&self, name: &str) {
        let check = async || {
            let ws = self.workspaces().get(name).await.unwrap();
            match cond(ws.status.as_ref().map(|s| s.conditions.as_slice()), conditions::READY, "True") {
                true => Ok(()),
                false => Err(ws.status),
            }
        };
        common::wait_until(WAIT, POLL, check, |status| format!("{name}: workspace not Ready: {status:#?}")).await
    }

    async fn wait_ep(&self, name: &str, what: &str, done: impl Fn(&MlOnlineEndpoint) -> bool) -> MlOnlineEndpoint {
        let check = async || match self.endpoints().get_opt(name).await.unwrap() {
            Some(ep) if done(&ep) => Ok(ep),
            Some(ep) => Err(ep.status),
            None => panic!("{name}: gone while waiting for {what}"),
        };
        common::wait_until(WAIT, POLL, check, |status| {
            let calls = self.sim.handle.call_summary();
            format!("{name}: timed out waiting for {what}; status: {status:#?}; calls: {calls:?}")
        })
        .await
    }

    async fn wait_ready(&self, name: &str) -> MlOnlineEndpoint {
        self.wait_ep(name, "Ready", ep_ready).await
    }

    async fn wait_gone(&self, name: &str) {
        common::wait_gone(&self.endpoints(), name, WAIT, POLL).await
    }

    fn workspace_id(&self, ws: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{ws}",
            self.world.subscription_id, self.world.resource_group
        )
    }

    fn endpoint_id(&self, ws: &str, ep: &str) -> String {
        format!("{}/onlineEndpoints/{ep}", self.workspace_id(ws))
    }

    fn azure_traffic(&self, ws: &str, ep: &str) -> BTreeMap<String, i64> {
        let body = self.sim.handle.resource(&self.endpoint_id(ws, ep)).expect("endpoint in Azure");
        serde_json::from_value(body.pointer("/properties/traffic").cloned().unwrap_or(json!({}))).unwrap()
    }

    fn deployment_exists(&self, ws: &str, ep: &str, dep: &str) -> bool {
        self.sim.handle.resource(&format!("{}/deployments/{dep}", self.endpoint_id(ws, ep))).is_some()
    }

    /// (primary, secondary) as Azure holds them.
    fn azure_keys(&self, ws: &str, ep: &str) -> (String, String) {
        let key = id_key(&self.endpoint_id(ws, ep));
        self.sim.handle.with_state(|s| match s.resources.get(&key).map(|r| &r.ext) {
            Some(ResourceExt::Endpoint { primary, secondary }) => {
                (primary.expose().to_owned(), secondary.expose().to_owned())
            }
            _ => panic!("no endpoint keys in Azure"),
        })
    }

    async fn secret_value(&self, name: &str, key: &str) -> String {
        let secret = self.secrets().get(name).await.unwrap();
        let data = secret.data.unwrap_or_default();
        String::from_utf8(data.get(key).map(|b| b.0.clone()).unwrap_or_default()).unwrap()
    }

    fn arm_writes(&self, path_contains: &str) -> Vec<String> {
        self.sim
            .handle
            .calls()
            .into_iter()
            .filter(|c| {
                c.kind == CallKind::Write && c.path.to_ascii_lowercase().contains(&path_contains.to_lowercase())
            })
            .map(|c| format!("{} {}", c.method, c.operation))
            .collect()
    }
}

fn cond(conds: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>, t: &str, s: &str) -> bool {
    conds.is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == s))
}

fn reason_of(ep: &MlOnlineEndpoint, t: &str) -> Option<String> {
    ep.status.as_ref()?.conditions.iter().find(|c| c.type_ == t).map(|c| c.reason.clone())
}

fn ep_ready(ep: &MlOnlineEndpoint) -> bool {
    let status = ep.status.as_ref();
    cond(status.map(|s| s.conditions.as_slice()), conditions::READY, "True")
        && status.and_then(|s| s.observed_generation) == ep.metadata.generation
}

fn two_deployments(keys_secret: bool) -> Value {
    let mut spec = json!({
        "workspaceRef": {"name": "ws-ep"},
        "authMode": "Key",
        "deployments": [
            {"name": "blue", "model": "azureml:fraud-model:3", "instanceType": "Standard_DS3_v2", "instanceCount": 1},
            {"name": "green", "model": "azureml:fraud-model:4", "instanceType": "Standard_DS3_v2", "instanceCount": 2},
        ],
        "traffic": {"blue": 90, "green": 10},
        "deletionPolicy": "Delete",
    });
    if keys_secret {
        spec["keysSecret"] = json!({"name": "scoring-keys"});
    }
    spec
}

/// Create with two deployments and a 90/10 split, export the keys, regenerate one, shift the traffic, remove a
/// deployment, then delete with deletionPolicy Delete.
#[tokio::test]
async fn deployments_traffic_keys_and_deletion() {
    let env = Env::start().await;
    env.create_workspace("ws-ep", "Retain").await;
    env.wait_ws_ready("ws-ep").await;
    env.create_endpoint("scoring", two_deployments(true)).await.unwrap();
    let ep = env.wait_ready("scoring").await;

    // Azure and status agree with the spec.
    assert_eq!(env.azure_traffic("ws-ep", "scoring"), BTreeMap::from([("blue".into(), 90), ("green".into(), 10)]));
    let status = ep.status.clone().unwrap();
    assert_eq!(status.traffic, env.azure_traffic("ws-ep", "scoring"));
    assert_eq!(status.deployments.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["blue", "green"]);
    assert!(status.deployments.iter().all(|d| d.provisioning_state.as_deref() == Some("Succeeded")));
    assert_eq!(status.deployments[1].instance_count, Some(2));
    assert!(status.scoring_uri.as_deref().is_some_and(|u| u.starts_with("https://scoring.")), "{status:?}");
    assert!(cond(Some(&status.conditions), conditions::DEPLOYMENTS_READY, "True"));
    assert!(cond(Some(&status.conditions), conditions::KEYS_PUBLISHED, "True"));
    assert_eq!(status.binding.as_deref(), Some("sandbox"), "the binding whose credential it uses");
    // The endpoint is owned by its workspace.
    let ws = env.workspaces().get("ws-ep").await.unwrap();
    assert!(ep.owner_references().iter().any(|r| Some(&r.uid) == ws.metadata.uid.as_ref() && r.kind == "MlWorkspace"));

    // Keys: the Secret holds Azure's keys and is owned by the endpoint.
    let (primary, secondary) = env.azure_keys("ws-ep", "scoring");
    assert_eq!(env.secret_value("scoring-keys", "primaryKey").await, primary);
    assert_eq!(env.secret_value("scoring-keys", "secondaryKey").await, secondary);
    assert_eq!(env.secret_value("scoring-keys", "scoringUri").await, status.scoring_uri.clone().unwrap());
    let secret = env.secrets().get("scoring-keys").await.unwrap();
    assert!(secret.owner_references().iter().any(|r| Some(&r.uid) == ep.metadata.uid.as_ref()));

    // Regenerate the secondary key: Azure's secondary changes, the primary does not, the Secret follows.
    let patch = json!({"metadata": {"annotations": {ANNOTATION_REGENERATE_KEYS: "secondary:1"}}});
    env.endpoints().patch("scoring", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let ep = env
        .wait_ep("scoring", "secondary key regenerated", |e| {
            e.status.as_ref().and_then(|s| s.keys.as_ref()).and_then(|k| k.last_regenerate_request.as_deref())
                == Some("secondary:1")
        })
        .await;
    let (primary2, secondary2) = env.azure_keys("ws-ep", "scoring");
    assert_eq!(primary2, primary);
    assert_ne!(secondary2, secondary);
    assert_eq!(env.secret_value("scoring-keys", "secondaryKey").await, secondary2);
    assert_eq!(ep.status.unwrap().keys.unwrap().last_regenerated_key.as_deref(), Some("Secondary"));
    assert_eq!(env.sim.handle.count("OnlineEndpoints_RegenerateKeys"), 1);

    // Shift the traffic.
    env.patch_spec("scoring", json!({"traffic": {"blue": 20, "green": 80}})).await;
    env.wait_ep("scoring", "traffic 20/80", |e| {
        ep_ready(e) && e.status.as_ref().is_some_and(|s| s.traffic.get("green") == Some(&80))
    })
    .await;
    assert_eq!(env.azure_traffic("ws-ep", "scoring"), BTreeMap::from([("blue".into(), 20), ("green".into(), 80)]));

    // Remove blue (and its traffic in the same change): traffic moves first, then blue is deleted. A merge patch
    // merges the traffic map key by key, so blue's entry is removed with null.
    let green = two_deployments(true)["deployments"][1].clone();
    let patch = json!({"deployments": [green], "traffic": {"blue": null, "green": 100}});
    env.patch_spec("scoring", patch).await;
    let ep = env
        .wait_ep("scoring", "blue removed", |e| ep_ready(e) && e.status.as_ref().unwrap().deployments.len() == 1)
        .await;
    assert!(!env.deployment_exists("ws-ep", "scoring", "blue"));
    assert!(env.deployment_exists("ws-ep", "scoring", "green"));
    assert_eq!(env.azure_traffic("ws-ep", "scoring"), BTreeMap::from([("green".into(), 100)]));
    assert_eq!(ep.status.unwrap().traffic, BTreeMap::from([("green".into(), 100)]));
    // The simulator refuses to delete a deployment with traffic, so success means the order was right.
    let deletes = env.arm_writes("/deployments/blue");
    assert_eq!(deletes.iter().filter(|c| c.starts_with("DELETE")).count(), 1, "{deletes:?}");

    // The same value of the annotation never regenerates again.
    assert_eq!(env.sim.handle.count("OnlineEndpoints_RegenerateKeys"), 1);

    // Key values never reach the logs or events.
    let logs = env.logs();
    for k in [&primary, &secondary, &secondary2] {
        assert!(!logs.contains(k.as_str()), "an endpoint key is in the logs");
    }

    // Delete with deletionPolicy Delete: gone in Azure, the Secret deleted with the endpoint.
    env.endpoints().delete("scoring", &DeleteParams::default()).await.unwrap();
    env.wait_gone("scoring").await;
    assert!(env.sim.handle.resource(&env.endpoint_id("ws-ep", "scoring")).is_none());
    assert!(env.secrets().get_opt("scoring-keys").await.unwrap().is_none());
    env.stop().await;
}

/// A key regeneration is a long-running operation (Azure: Retry-After 10..600 s, minutes in all): it is started,
/// recorded in status and polled, never awaited in a worker; a restarted operator polls it and never sends it again.
#[tokio::test]
async fn key_regeneration_is_recorded_polled_and_never_sent_twice() {
    let env = Env::start().await;
    env.create_workspace("ws-ep", "Retain").await;
    env.wait_ws_ready("ws-ep").await;
    env.create_endpoint("scoring", two_deployments(true)).await.unwrap();
    env.wait_ready("scoring").await;
    let (primary, _) = env.azure_keys("ws-ep", "scoring");

    // A slow regeneration: the status shows it in flight while Azure still works on it.
    env.sim.handle.set_lro_duration(Duration::from_secs(4));
    let patch = json!({"metadata": {"annotations": {ANNOTATION_REGENERATE_KEYS: "primary:slow"}}});
    env.endpoints().patch("scoring", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let ep = env
        .wait_ep("scoring", "regeneration recorded", |e| {
            e.status.as_ref().and_then(|s| s.keys.as_ref()).and_then(|k| k.pending_regeneration.as_ref()).is_some()
        })
        .await;
    let pending = ep.status.as_ref().unwrap().keys.as_ref().unwrap().pending_regeneration.clone().unwrap();
    assert_eq!((pending.request.as_str(), pending.key_type.as_str()), ("primary:slow", "Primary"));
    assert_eq!(reason_of(&ep, conditions::READY).as_deref(), Some(Reason::KeysRegenerating.as_str()));
    assert_eq!(env.azure_keys("ws-ep", "scoring").0, primary, "recorded before Azure finished");

    // The operator restarts while Azure works: the new one polls the recorded operation.
    let mut env = env;
    env.stop_controller().await;
    env.start_controller();
    let ep = env
        .wait_ep("scoring", "regenerated", |e| {
            e.status.as_ref().and_then(|s| s.keys.as_ref()).is_some_and(|k| {
                k.last_regenerate_request.as_deref() == Some("primary:slow") && k.pending_regeneration.is_none()
            }) && ep_ready(e)
        })
        .await;
    assert_eq!(env.sim.handle.count("OnlineEndpoints_RegenerateKeys"), 1, "never sent twice");
    let (primary2, _) = env.azure_keys("ws-ep", "scoring");
    assert_ne!(primary2, primary);
    assert_eq!(env.secret_value("scoring-keys", "primaryKey").await, primary2);
    assert_eq!(ep.status.unwrap().keys.unwrap().last_regenerated_key.as_deref(), Some("Primary"));
    env.sim.handle.set_lro_duration(Duration::from_millis(150));
    env.stop().await;
}

/// Without a Ready workspace nothing is sent to Azure; once the workspace is Ready the endpoint converges.
/// deletionPolicy Retain leaves Azure as is; a workspace deleted with deletionPolicy Delete deletes its endpoints'
/// custom resources first.
#[tokio::test]
async fn waits_for_the_workspace_retains_and_goes_with_the_workspace() {
    let env = Env::start().await;
    let mut spec = two_deployments(false);
    spec["deletionPolicy"] = json!("Retain");
    env.create_endpoint("early", spec.clone()).await.unwrap();
    let ep = env
        .wait_ep("early", "WorkspaceNotReady", |e| {
            reason_of(e, conditions::READY).as_deref() == Some(Reason::WorkspaceNotReady.as_str())
        })
        .await;
    assert!(cond(ep.status.as_ref().map(|s| s.conditions.as_slice()), conditions::RECONCILING, "True"));
    let endpoint_calls: Vec<_> =
        env.sim.handle.calls().into_iter().filter(|c| c.operation.starts_with("Online")).collect();
    assert!(endpoint_calls.is_empty(), "{endpoint_calls:?}");

    env.create_workspace("ws-ep", "Delete").await;
    env.wait_ready("early").await;
    assert!(env.deployment_exists("ws-ep", "early", "green"));

    // Retain: the custom resource goes, the endpoint stays in Azure.
    env.endpoints().delete("early", &DeleteParams::default()).await.unwrap();
    env.wait_gone("early").await;
    assert!(env.sim.handle.resource(&env.endpoint_id("ws-ep", "early")).is_some());

    // A second endpoint, then the workspace with deletionPolicy Delete: the endpoint's resource goes first.
    let mut spec = two_deployments(false);
    spec["deletionPolicy"] = json!("Delete");
    env.create_endpoint("late", spec).await.unwrap();
    env.wait_ready("late").await;
    env.workspaces().delete("ws-ep", &DeleteParams::default()).await.unwrap();
    env.wait_gone("late").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.workspaces().get_opt("ws-ep").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "workspace not deleted");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The endpoint was deleted (by its own cleanup) before the workspace's deletion was sent.
    let calls = env.sim.handle.calls();
    let ep_delete = calls.iter().position(|c| c.operation == "OnlineEndpoints_Delete" && c.path.contains("/late"));
    let ws_delete = calls.iter().position(|c| c.operation == "Workspaces_Delete");
    assert!(ep_delete.is_some() && ws_delete.is_some() && ep_delete < ws_delete, "{ep_delete:?} {ws_delete:?}");
    assert!(env.sim.handle.resource(&env.workspace_id("ws-ep")).is_none());
    env.stop().await;
}

/// Invalid traffic is rejected at admission; a Secret the operator did not create is never overwritten.
#[tokio::test]
async fn invalid_traffic_is_rejected_and_foreign_secrets_are_left_alone() {
    let env = Env::start().await;
    let mut bad_sum = two_deployments(false);
    bad_sum["traffic"] = json!({"blue": 50, "green": 10});
    let err = env.create_endpoint("bad-sum", bad_sum).await.unwrap_err();
    assert!(err.to_string().contains("add up to 100"), "{err}");
    let mut unknown = two_deployments(false);
    unknown["traffic"] = json!({"blue": 90, "red": 10});
    let err = env.create_endpoint("bad-name", unknown).await.unwrap_err();
    assert!(err.to_string().contains("must name a deployment"), "{err}");
    let mut token_keys = two_deployments(true);
    token_keys["authMode"] = json!("AMLToken");
    let err = env.create_endpoint("bad-auth", token_keys).await.unwrap_err();
    assert!(err.to_string().contains("keysSecret needs authMode Key"), "{err}");
    // A valid endpoint cannot change its auth mode.
    env.create_endpoint("fixed", two_deployments(false)).await.unwrap();
    let patch = json!({"spec": {"authMode": "AADToken"}});
    let err = env.endpoints().patch("fixed", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
    assert!(err.to_string().contains("authMode is immutable"), "{err}");

    // Someone else's Secret under the keysSecret name.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "scoring-keys"},
        "stringData": {"primaryKey": "theirs"},
    }))
    .unwrap();
    env.secrets().create(&PostParams::default(), &foreign).await.unwrap();
    env.create_workspace("ws-ep", "Retain").await;
    env.create_endpoint("scoring", two_deployments(true)).await.unwrap();
    let ep = env
        .wait_ep("scoring", "SecretNotOwned", |e| {
            reason_of(e, conditions::READY).as_deref() == Some(Reason::SecretNotOwned.as_str())
        })
        .await;
    assert!(cond(ep.status.as_ref().map(|s| s.conditions.as_slice()), conditions::STALLED, "True"));
    assert!(env.secret_value("scoring-keys", "primaryKey").await == "theirs");
    env.stop().await;
}

/// `spec.access` grants roles at the endpoint itself, checked against the workspace's binding; removing an entry
/// removes the assignment the operator made.
#[tokio::test]
async fn access_at_the_endpoint_is_granted_and_checked_against_the_binding() {
    let env = Env::start_with(json!({"allowedRoles": ["Reader"], "allowedScopes": ["Workspace"]})).await;
    env.create_workspace("ws-ep", "Retain").await;
    let alice = env.world.users[0].clone();
    let mut spec = two_deployments(false);
    spec["access"] = json!([{"principalId": alice, "role": "Reader"}]);
    env.create_endpoint("scoring", spec).await.unwrap();
    let ep = env.wait_ready("scoring").await;
    let status = ep.status.unwrap();
    assert!(cond(Some(&status.conditions), conditions::ACCESS_GRANTED, "True"), "{status:?}");
    assert_eq!(status.access.len(), 1);
    let endpoint = id_key(&env.endpoint_id("ws-ep", "scoring"));
    let at_endpoint = |principal: &str| {
        env.sim.handle.with_state(|s| {
            s.role_assignments
                .values()
                .filter(|ra| id_key(&ra.scope) == endpoint && ra.principal_id.eq_ignore_ascii_case(principal))
                .count()
        })
    };
    assert_eq!(at_endpoint(&alice), 1);

    // Not allowed by the binding: Owner. Stalled before any Azure call for it.
    let mut owner = two_deployments(false);
    owner["access"] = json!([{"principalId": alice, "role": "Owner"}]);
    env.create_endpoint("too-much", owner).await.unwrap();
    let ep = env
        .wait_ep("too-much", "NotPermitted", |e| {
            reason_of(e, conditions::READY).as_deref() == Some(Reason::NotPermitted.as_str())
        })
        .await;
    assert!(cond(ep.status.as_ref().map(|s| s.conditions.as_slice()), conditions::STALLED, "True"));
    assert!(env.sim.handle.resource(&env.endpoint_id("ws-ep", "too-much")).is_none());

    // Removing the entry removes the assignment.
    let patch = json!({"spec": {"access": null}});
    env.endpoints().patch("scoring", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_ep("scoring", "access removed", |e| ep_ready(e) && e.status.as_ref().unwrap().access.is_empty()).await;
    assert_eq!(at_endpoint(&alice), 0);
    env.stop().await;
}

/// A deployment Azure fails to provision stalls the endpoint (no retry loop); a changed spec retries. A transient
/// ARM error is retried. Steady state makes no ARM write. `azml.dev/paused` withholds writes.
#[tokio::test]
async fn failed_provisioning_steady_state_and_pause() {
    let env = Env::start().await;
    env.create_workspace("ws-ep", "Retain").await;
    env.wait_ws_ready("ws-ep").await;
    env.sim.handle.inject_fault(FaultRule {
        operation: "OnlineDeployments_CreateOrUpdate".into(),
        action: FaultAction::LroFailure { status: None, code: "ResourceNotReady".into(), message: None },
        count: Some(1),
        rate: None,
    });
    let mut spec = two_deployments(true);
    spec["deployments"] = json!([spec["deployments"][0].clone()]);
    spec["traffic"] = json!({"blue": 100});
    env.create_endpoint("scoring", spec).await.unwrap();
    let ep = env
        .wait_ep("scoring", "ProvisioningFailed", |e| {
            reason_of(e, conditions::READY).as_deref() == Some(Reason::ProvisioningFailed.as_str())
        })
        .await;
    let status = ep.status.unwrap();
    assert!(cond(Some(&status.conditions), conditions::STALLED, "True"));
    assert_eq!(status.deployments[0].provisioning_state.as_deref(), Some("Failed"));
    assert_eq!(env.sim.handle.count("OnlineDeployments_CreateOrUpdate"), 1, "a failed deployment is not re-sent");

    // A changed spec retries; a transient error on the way is retried too.
    env.sim.handle.inject_fault(FaultRule::error("OnlineEndpoints_Get", 503, "ServiceUnavailable").times(2));
    let mut spec = two_deployments(true);
    spec["deployments"] = json!([{"name": "blue", "model": "azureml:fraud-model:3", "instanceType": "Standard_DS3_v2", "instanceCount": 2}]);
    spec["traffic"] = json!({"blue": 100});
    env.patch_spec("scoring", json!({"deployments": spec["deployments"]})).await;
    env.wait_ready("scoring").await;
    assert_eq!(env.azure_traffic("ws-ep", "scoring"), BTreeMap::from([("blue".into(), 100)]));

    // Steady state: a reconcile (woken by an unrelated annotation) writes nothing to Azure.
    env.sim.handle.clear_calls();
    let patch = json!({"metadata": {"annotations": {"example.com/touched": "1"}}});
    env.endpoints().patch("scoring", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    // listKeys is the last Azure call of a reconcile of a converged endpoint with a keys Secret.
    while env.sim.handle.count("OnlineEndpoints_ListKeys") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no reconcile: {:?}", env.sim.handle.call_summary());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let writes: Vec<String> = env
        .sim
        .handle
        .calls()
        .into_iter()
        .filter(|c| c.kind == CallKind::Write && c.operation != "OnlineEndpoints_ListKeys")
        .map(|c| c.operation)
        .collect();
    assert!(writes.is_empty(), "steady state wrote: {writes:?}");

    // Paused: a spec change is reported as withheld, nothing is written; unpausing applies it.
    let patch = json!({"metadata": {"annotations": {"azml.dev/paused": "true"}}});
    env.endpoints().patch("scoring", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let puts = env.sim.handle.count("OnlineDeployments_CreateOrUpdate");
    let mut deployments = spec["deployments"].clone();
    deployments[0]["instanceCount"] = json!(3);
    env.patch_spec("scoring", json!({"deployments": deployments})).await;
    let ep = env
        .wait_ep("scoring", "paused, withheld", |e| {
            reason_of(e, conditions::READY).as_deref() == Some(Reason::Paused.as_str())
                && e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
        })
        .await;
    let ready = ep.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY)).unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("withheld"), "{}", ready.message);
    assert_eq!(env.sim.handle.count("OnlineDeployments_CreateOrUpdate"), puts);
    let patch = json!({"metadata": {"annotations": {"azml.dev/paused": null}}});
    env.endpoints().patch("scoring", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let ep = env
        .wait_ep("scoring", "unpaused and applied", |e| {
            ep_ready(e) && e.status.as_ref().is_some_and(|s| s.deployments[0].instance_count == Some(3))
        })
        .await;
    assert_eq!(reason_of(&ep, conditions::READY).as_deref(), Some(Reason::Reconciled.as_str()));
    env.stop().await;
}

/// The real kubectl against the emulator: invalid traffic is refused with the rule's message.
#[tokio::test]
async fn kubectl_apply_rejects_invalid_traffic() {
    let env = Env::start().await;
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    env.kube.write_kubeconfig(&kubeconfig).unwrap();
    let manifest = home.path().join("bad.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: azml.dev/v1alpha1\nkind: MlOnlineEndpoint\nmetadata:\n  name: bad\n  namespace: {NS}\nspec:\n  \
             workspaceRef: {{name: ws-ep}}\n  deployments:\n    - {{name: blue, model: 'azureml:m:1', instanceType: Standard_DS3_v2}}\n  \
             traffic: {{blue: 60}}\n"
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new("kubectl");
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("HOME", home.path())
        .arg("--cache-dir")
        .arg(home.path().join("cache"))
        .args(["apply", "-f"])
        .arg(&manifest)
        .stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl accepted it: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("traffic percentages must add up to 100"), "{stderr}");
    assert!(env.endpoints().get_opt("bad").await.unwrap().is_none());
    env.stop().await;
}
