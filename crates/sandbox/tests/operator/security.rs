//! Multi-tenancy and security (issue #10), against the Kubernetes API emulator and the ARM simulator with the real
//! controller:
//!
//! - every way a SubscriptionBinding can refuse a workspace ends in `Stalled`/`NotPermitted` with zero Azure calls;
//! - a removed binding stops all Azure calls; deletion with Retain completes, deletion with Delete waits for the
//!   binding to come back (the controller never deletes in Azure without a binding, and never drops the finalizer
//!   of a workspace it created while it cannot clean up);
//! - two teams with two bindings and two service principals cannot reach each other's subscription, and every ARM
//!   call is made by the team's own principal (the simulator's call log records the caller);
//! - hostile strings are rejected at admission (422) and, with admission switched off, again by the controller and
//!   the ARM id layer, without an Azure call;
//! - no key, token or client secret appears in logs, events, status, error strings or any stored object;
//! - a property test feeds arbitrary specs through policy, validation and planning.

use std::time::Duration;

use crate::common::{self, condition, is_current};
use crate::env::{TestEnv, env_type};
use azml_arm_simulator::{CallKind, FaultAction, FaultRule, Principal, World, roles};
use azml_operator::api::conditions::{self, Reason};
use azml_operator::api::v1alpha1::{
    ANNOTATION_RESYNC_KEYS, MlWorkspace, MlWorkspaceSpec, SubscriptionBinding, WorkspaceDeletionPolicy,
};
use azml_operator::azure::ids::{ResourceGroupName, ResourceId, WorkspaceName, WorkspaceRef};
use azml_operator::azure::{CredentialConfig, Secret as AzSecret, SubscriptionId};
use azml_operator::controller;
use azml_operator::controller::plan::{Action, Desired, Observed, ResourceGroupState, plan};
use azml_operator::policy;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use serde_json::{Value, json};

const TEAM_A: &str = "team-a";
const TEAM_B: &str = "team-b";
const OPERATOR_NS: &str = "azml-system";
// An upper bound for slow CI machines, kept below the resync and stalled-requeue periods these tests configure, so
// only the mechanism under test (watch, signal) can end a wait in time.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// Second team's resource group in the second subscription.
const RG_B: &str = "rg-team-b";

// ---------------------------------------------------------------------------------------------------------------
// Harness.

env_type!(Env);

/// Edits the simulator's world before it starts.
type SeedWorld = Box<dyn FnOnce(&mut World) + Send>;

/// How to set up the emulators.
#[derive(Default)]
struct Setup {
    /// Install CRDs without patterns and CEL rules (an admission bypass), to test the controller's own validation.
    lax_crds: bool,
    /// Do not create the default `sandbox` binding (team-a, subscription 1, operator SP).
    no_default_binding: bool,
    /// Extra simulator state (principals, subscriptions, resources) before it starts.
    world: Option<SeedWorld>,
}

/// Removes every `pattern` and CEL rule from a CRD: what an old or hand-edited CRD without validation would accept.
fn strip_validation(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("pattern");
            m.remove("x-kubernetes-validations");
            m.remove("maxLength");
            m.values_mut().for_each(strip_validation);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_validation),
        _ => {}
    }
}

impl Env {
    /// Both teams' namespaces; `team-a` bound to the world's subscription with the operator's SP (unless
    /// `no_default_binding`); resync 1 s, stalled requeue 30 s. Everything logged is captured.
    async fn start(setup: Setup) -> Env {
        let mut crds = azml_operator::api::all_crds();
        if setup.lax_crds {
            for crd in &mut crds {
                let mut value = serde_json::to_value(&*crd).unwrap();
                strip_validation(&mut value);
                *crd = serde_json::from_value(value).unwrap();
            }
        }
        let mut builder = TestEnv::builder()
            .crds(crds)
            .namespaces(&[TEAM_A, TEAM_B])
            .bind(
                &[TEAM_A],
                json!({"allowedRoles": ["Reader", "AzureMLDataScientist"], "allowedScopes": ["Workspace"]}),
            )
            .resync(Duration::from_secs(1))
            .stalled(Duration::from_secs(30))
            .configure(|c| {
                c.lro_poll_max = Duration::from_millis(200);
                c.arm.retry.max_retry_after = Duration::from_secs(1);
            })
            .capture_logs();
        if setup.no_default_binding {
            builder = builder.no_binding();
        }
        if let Some(seed) = setup.world {
            builder = builder.world(seed);
        }
        Env(builder.start().await)
    }

    /// Creates the client-secret Secret and a binding for `namespaces`; `tweak` edits the binding's spec JSON.
    #[allow(clippy::too_many_arguments)]
    async fn add_binding(
        &self,
        name: &str,
        subscription: &str,
        namespaces: &[&str],
        client_id: &str,
        secret_name: &str,
        secret_value: &str,
        tweak: impl FnOnce(&mut Value),
    ) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": secret_name},
            "stringData": {"clientSecret": secret_value},
        }))
        .unwrap();
        let secrets = Api::<Secret>::namespaced(self.client.clone(), OPERATOR_NS);
        if secrets.get_opt(secret_name).await.unwrap().is_none() {
            secrets.create(&PostParams::default(), &secret).await.unwrap();
        }
        let mut spec = json!({
            "subscriptionId": subscription,
            "tenantId": self.world.tenant_id,
            "credential": {"clientSecret": {"clientId": client_id, "secretRef": {"name": secret_name, "key": "clientSecret"}}},
            "namespaces": namespaces,
            "resourceGroups": ["rg-*"],
            "allowedRoles": ["Reader", "AzureMLDataScientist"],
            "allowedScopes": ["Workspace"],
        });
        tweak(&mut spec);
        let binding: SubscriptionBinding = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "SubscriptionBinding",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        Api::<SubscriptionBinding>::all(self.client.clone()).create(&PostParams::default(), &binding).await.unwrap();
    }

    fn api(&self, ns: &str) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A spec in the default world's subscription and resource group, with its storage account and key vault.
    fn spec(&self) -> MlWorkspaceSpec {
        common::workspace_spec(&self.world, json!({}))
    }

    async fn create(&self, ns: &str, name: &str, spec: MlWorkspaceSpec) -> MlWorkspace {
        self.api(ns)
            .create(&PostParams::default(), &MlWorkspace::new(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create {ns}/{name}: {e}"))
    }

    async fn wait_for(&self, ns: &str, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || match self.api(ns).get_opt(name).await.unwrap() {
            Some(ws) if done(&ws) => Ok(ws),
            other => Err(other.map(|w| w.status)),
        };
        common::wait_until(WAIT, POLL, check, |status| {
            format!("{ns}/{name}: timed out waiting for {what}; status: {status:#?}")
        })
        .await
    }

    async fn wait_ready(&self, ns: &str, name: &str) -> MlWorkspace {
        self.wait_for(ns, name, "Ready", |ws| {
            condition(ws, conditions::READY).is_some_and(|c| c.status == "True") && is_current(ws)
        })
        .await
    }

    async fn wait_not_permitted(&self, ns: &str, name: &str) -> String {
        let ws = self.wait_for(ns, name, "NotPermitted", stalled_with(Reason::NotPermitted)).await;
        condition(&ws, conditions::STALLED).map(|c| c.message.clone()).unwrap_or_default()
    }

    async fn wait_gone(&self, ns: &str, name: &str) {
        common::wait_gone(&self.api(ns), name, WAIT, POLL).await
    }

    /// Every call to ARM and to the token endpoint.
    fn all_calls(&self) -> usize {
        self.sim.handle.calls().len()
    }

    fn count(&self, operation: &str) -> usize {
        self.sim.handle.count(operation)
    }

    fn workspace_id(&self, sub: &str, rg: &str, name: &str) -> String {
        format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{name}"
        )
    }
}

fn stalled_with(reason: Reason) -> impl Fn(&MlWorkspace) -> bool {
    move |ws| condition(ws, conditions::STALLED).is_some_and(|c| c.status == "True" && c.reason == reason)
}

fn with_json(spec: &MlWorkspaceSpec, patch: Value) -> MlWorkspaceSpec {
    let mut v = serde_json::to_value(spec).unwrap();
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Bindings refuse: zero Azure calls.

#[tokio::test]
async fn every_kind_of_refusal_is_not_permitted_without_any_azure_call() {
    let env = Env::start(Setup::default()).await;
    let base = env.spec();
    let other_sub = env.world.other_subscription_id.clone();
    let user = env.world.users[0].clone();
    let cases: Vec<(&str, &str, MlWorkspaceSpec, String)> = vec![
        ("ns-unbound", TEAM_B, base.clone(), format!("namespace {TEAM_B}")),
        (
            "sub-unbound",
            TEAM_A,
            with_json(
                &base,
                json!({"subscriptionId": other_sub, "storageAccount": {"id": null, "name": "sa1"}, "keyVault": {"id": null, "name": "kv1"}}),
            ),
            format!("no SubscriptionBinding grants subscription {other_sub}"),
        ),
        (
            "rg-outside",
            TEAM_A,
            with_json(&base, json!({"resourceGroup": "prod-shared"})),
            "resource group prod-shared".into(),
        ),
        (
            "role-owner",
            TEAM_A,
            with_json(&base, json!({"access": [{"principalId": user, "role": "Owner"}]})),
            "role Owner".into(),
        ),
        (
            "role-custom",
            TEAM_A,
            with_json(
                &base,
                json!({"access": [{"principalId": user, "roleDefinitionId": roles::USER_ACCESS_ADMINISTRATOR}]}),
            ),
            format!("role {}", roles::USER_ACCESS_ADMINISTRATOR),
        ),
        (
            "scope-sub",
            TEAM_A,
            with_json(&base, json!({"access": [{"principalId": user, "role": "Reader", "scope": "Subscription"}]})),
            "scope Subscription".into(),
        ),
        (
            "dep-foreign",
            TEAM_A,
            with_json(
                &base,
                json!({"keyVault": {"id": format!(
                "/subscriptions/{other_sub}/resourceGroups/rg-x/providers/Microsoft.KeyVault/vaults/kv-other")}}),
            ),
            format!("spec.keyVault.id /subscriptions/{other_sub}"),
        ),
    ];
    for (name, ns, spec, _) in &cases {
        env.create(ns, name, spec.clone()).await;
    }
    for (name, ns, _, expected) in &cases {
        let message = env.wait_not_permitted(ns, name).await;
        assert!(message.contains(expected.as_str()), "{name}: {message:?} does not name {expected:?}");
        let ws = env.api(ns).get(name).await.unwrap();
        let status = ws.status.unwrap_or_default();
        assert!(status.resource_id.is_none() && status.pending_operation.is_none(), "{name}: {status:?}");
    }
    // A look after more than one resync period: still nothing, not even a token request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(env.all_calls(), 0, "{:?}", env.sim.handle.call_summary());

    // The binding is widened: the affected workspace is re-evaluated at once (well before stalledRequeue) and built.
    let bindings = Api::<SubscriptionBinding>::all(env.client.clone());
    let widen = json!({"spec": {"allowedScopes": ["Workspace", "Subscription"]}});
    bindings.patch("sandbox", &PatchParams::default(), &Patch::Merge(&widen)).await.unwrap();
    env.wait_ready(TEAM_A, "scope-sub").await;
    // ... and the others stay refused without calls of their own.
    for (name, ns, _, _) in cases.iter().filter(|c| c.0 != "scope-sub") {
        let ws = env.api(ns).get(name).await.unwrap();
        assert!(stalled_with(Reason::NotPermitted)(&ws), "{name}");
        let calls = env.sim.handle.calls();
        assert!(calls.iter().all(|c| !c.path.contains(&format!("/workspaces/{name}"))), "{name} reached Azure");
    }
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// A binding removed while workspaces exist.

#[tokio::test]
async fn a_removed_binding_stops_azure_calls_and_keeps_deletion_sane() {
    let env = Env::start(Setup::default()).await;
    let mut retain = env.spec();
    retain.deletion_policy = WorkspaceDeletionPolicy::Retain;
    let mut delete = env.spec();
    delete.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(TEAM_A, "ws-retain", retain).await;
    env.create(TEAM_A, "ws-delete", delete).await;
    env.wait_ready(TEAM_A, "ws-retain").await;
    env.wait_ready(TEAM_A, "ws-delete").await;
    let (sub, rg) = (env.world.subscription_id.clone(), env.world.resource_group.clone());
    let delete_id = env.workspace_id(&sub, &rg, "ws-delete");
    let retain_id = env.workspace_id(&sub, &rg, "ws-retain");

    let bindings = Api::<SubscriptionBinding>::all(env.client.clone());
    let saved = bindings.get("sandbox").await.unwrap();
    bindings.delete("sandbox", &DeleteParams::default()).await.unwrap();
    for name in ["ws-retain", "ws-delete"] {
        let message = env.wait_not_permitted(TEAM_A, name).await;
        assert!(message.contains("namespace team-a") || message.contains("subscription"), "{message}");
    }
    env.sim.handle.clear_calls();
    // A spec change is not carried to Azure either.
    let patch = json!({"spec": {"friendlyName": "changed without a binding"}});
    env.api(TEAM_A).patch("ws-delete", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_for(TEAM_A, "ws-delete", "generation 2 judged", |w| {
        stalled_with(Reason::NotPermitted)(w) && w.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(env.all_calls(), 0, "{:?}", env.sim.handle.call_summary());

    // Retain: deletion completes at once; Azure is left as it is.
    env.api(TEAM_A).delete("ws-retain", &DeleteParams::default()).await.unwrap();
    env.wait_gone(TEAM_A, "ws-retain").await;
    assert!(env.sim.handle.resource(&retain_id).is_some());

    // Delete: the operator may not delete in Azure without a binding, and does not pretend it did: the finalizer
    // stays, the condition says what to do, and Azure is not called.
    env.api(TEAM_A).delete("ws-delete", &DeleteParams::default()).await.unwrap();
    let message = env
        .wait_for(TEAM_A, "ws-delete", "deletion blocked", |w| {
            w.metadata.deletion_timestamp.is_some()
                && condition(w, conditions::STALLED).is_some_and(|c| c.message.contains("cannot delete"))
        })
        .await;
    let message = condition(&message, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("restore the SubscriptionBinding") && message.contains("Retain"), "{message}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(env.api(TEAM_A).get_opt("ws-delete").await.unwrap().is_some(), "finalizer dropped without cleanup");
    assert_eq!(env.all_calls(), 0, "{:?}", env.sim.handle.call_summary());
    assert!(env.sim.handle.resource(&delete_id).is_some());

    // The binding comes back: the pending deletion is carried out (the binding watch wakes it up).
    let mut restored = SubscriptionBinding::new("sandbox", saved.spec.clone());
    restored.metadata.labels = saved.metadata.labels.clone();
    bindings.create(&PostParams::default(), &restored).await.unwrap();
    env.wait_gone(TEAM_A, "ws-delete").await;
    assert!(env.sim.handle.resource(&delete_id).is_none(), "workspace still in Azure");
    assert_eq!(env.count("Workspaces_Delete"), 1);
    assert!(env.sim.handle.resource(&retain_id).is_some(), "the retained workspace was touched");
    env.stop().await;
}

#[tokio::test]
async fn an_edited_status_cannot_aim_the_operator_at_another_subscription() {
    let mut env = Env::start(Setup::default()).await;
    env.create(TEAM_A, "ws-op", env.spec()).await;
    env.wait_ready(TEAM_A, "ws-op").await;
    // Someone with write access to mlworkspaces/status stores an "operation" whose status URL is on the ARM
    // endpoint, but in a subscription this namespace was never granted. A restarted operator reads it from status.
    let other = env.world.other_subscription_id.clone();
    let target = format!(
        "{}/subscriptions/{other}/resourceGroups/rg-x/providers/Microsoft.MachineLearningServices/workspaces/victim?api-version=2024-10-01",
        env.sim.endpoint
    );
    let poller = json!({
        "operation": "Workspaces_CreateOrUpdate", "kind": "Location", "pollUrl": target, "resourceUrl": target,
        "finalState": "OriginalUri", "startedAt": "2026-11-25T10:00:00Z",
    });
    let patch = json!({"status": {"pendingOperation": {"kind": "CreateWorkspace", "poller": poller.to_string()}}});
    env.api(TEAM_A).patch_status("ws-op", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.sim.handle.clear_calls();
    env.restart_controller().await;
    let ws = env.wait_for(TEAM_A, "ws-op", "InvalidSpec", stalled_with(Reason::InvalidSpec)).await;
    let message = &condition(&ws, conditions::STALLED).unwrap().message;
    assert!(message.contains("pendingOperation") && message.contains(&other), "{message}");
    assert!(ws.status.as_ref().is_some_and(|s| s.pending_operation.is_none()), "the forged operation was kept");
    let calls = env.sim.handle.calls();
    assert!(calls.iter().all(|c| !c.path.to_ascii_lowercase().contains(&other)), "{:?}", env.sim.handle.call_summary());
    // The next change is reconciled normally.
    let patch = json!({"spec": {"description": "after the forged operation"}});
    env.api(TEAM_A).patch("ws-op", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_ready(TEAM_A, "ws-op").await;
    assert!(env.sim.handle.calls().iter().all(|c| !c.path.to_ascii_lowercase().contains(&other)));
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Two teams, two subscriptions, two principals.

struct TeamSp {
    object_id: String,
    client_id: String,
    secret: String,
}

fn team_sp(n: u32) -> TeamSp {
    TeamSp {
        object_id: format!("50000000-0000-4000-8000-{n:012}"),
        client_id: format!("60000000-0000-4000-8000-{n:012}"),
        secret: format!("team-{n}-client-secret-value"),
    }
}

#[tokio::test]
async fn two_teams_with_two_bindings_are_isolated() {
    let (sp_a, sp_b) = (team_sp(1), team_sp(2));
    let seed = {
        let (a, b) =
            ((sp_a.object_id.clone(), sp_a.client_id.clone()), (sp_b.object_id.clone(), sp_b.client_id.clone()));
        let (secret_a, secret_b) = (sp_a.secret.clone(), sp_b.secret.clone());
        move |w: &mut World| {
            let (sub_a, sub_b) = (w.subscription_id.clone(), w.other_subscription_id.clone());
            let s = &mut w.state;
            s.add_principal(Principal::service_principal(&a.0, &a.1, "team-a-sp", Some(&secret_a)));
            s.add_principal(Principal::service_principal(&b.0, &b.1, "team-b-sp", Some(&secret_b)));
            // Each team's principal has rights on its own subscription only.
            for (who, sub) in [(&a.0, &sub_a), (&b.0, &sub_b)] {
                s.assign_role(&format!("/subscriptions/{sub}"), roles::CONTRIBUTOR, who);
                s.assign_role(&format!("/subscriptions/{sub}"), roles::USER_ACCESS_ADMINISTRATOR, who);
            }
            let rg = s.add_resource_group(&sub_b, RG_B, &w.location);
            let location = w.location.clone();
            s.put_resource(
                &format!("{rg}/providers/Microsoft.Storage/storageAccounts/stteamb"),
                "Microsoft.Storage/storageAccounts",
                json!({"location": location, "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"}}),
            );
            s.put_resource(
                &format!("{rg}/providers/Microsoft.KeyVault/vaults/kv-team-b"),
                "Microsoft.KeyVault/vaults",
                json!({"location": location}),
            );
        }
    };
    let env = Env::start(Setup { no_default_binding: true, world: Some(Box::new(seed)), ..Setup::default() }).await;
    let (sub_a, sub_b) = (env.world.subscription_id.clone(), env.world.other_subscription_id.clone());
    env.add_binding("team-a", &sub_a, &[TEAM_A], &sp_a.client_id, "team-a-sp", &sp_a.secret, |_| {}).await;
    env.add_binding("team-b", &sub_b, &[TEAM_B], &sp_b.client_id, "team-b-sp", &sp_b.secret, |_| {}).await;

    let spec_b: MlWorkspaceSpec = serde_json::from_value(json!({
        "subscriptionId": sub_b, "resourceGroup": RG_B, "location": env.world.location,
        "storageAccount": {"name": "stteamb"}, "keyVault": {"name": "kv-team-b"},
    }))
    .unwrap();
    env.create(TEAM_A, "ws-a", env.spec()).await;
    env.create(TEAM_B, "ws-b", spec_b.clone()).await;
    env.wait_ready(TEAM_A, "ws-a").await;
    env.wait_ready(TEAM_B, "ws-b").await;

    // Team A aims at team B's subscription, directly or through a dependent resource; team B at team A's.
    env.create(TEAM_A, "a-into-b", spec_b.clone()).await;
    let b_storage =
        format!("/subscriptions/{sub_b}/resourceGroups/{RG_B}/providers/Microsoft.Storage/storageAccounts/stteamb");
    env.create(TEAM_A, "a-uses-b-storage", with_json(&env.spec(), json!({"storageAccount": {"id": b_storage}}))).await;
    env.create(TEAM_B, "b-into-a", env.spec()).await;
    let m = env.wait_not_permitted(TEAM_A, "a-into-b").await;
    assert!(m.contains("namespace team-a") && m.contains(&sub_b), "{m}");
    let m = env.wait_not_permitted(TEAM_A, "a-uses-b-storage").await;
    assert!(m.contains("storageAccount") && m.contains(&sub_b), "{m}");
    let m = env.wait_not_permitted(TEAM_B, "b-into-a").await;
    assert!(m.contains("namespace team-b") && m.contains(&sub_a), "{m}");

    // Let a few resyncs happen, then read the call log: every call about a subscription came from its team's
    // principal, the refused workspaces never reached Azure, and each principal asked for its own tokens.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let calls = env.sim.handle.calls();
    let arm: Vec<_> = calls.iter().filter(|c| c.kind != CallKind::Auth).collect();
    assert!(!arm.is_empty());
    for call in &arm {
        let path = call.path.to_ascii_lowercase();
        let expected = if path.contains(&sub_a) {
            &sp_a.object_id
        } else if path.contains(&sub_b) {
            &sp_b.object_id
        } else {
            panic!("call outside both subscriptions: {} {}", call.method, call.path)
        };
        assert_eq!(call.principal.as_deref(), Some(expected.as_str()), "{} {}", call.method, call.path);
        for refused in ["a-into-b", "a-uses-b-storage", "b-into-a"] {
            assert!(!call.path.contains(&format!("/workspaces/{refused}")), "{refused} reached Azure: {}", call.path);
        }
    }
    for sp in [&sp_a, &sp_b] {
        assert!(
            arm.iter().any(|c| c.principal.as_deref() == Some(sp.object_id.as_str()) && c.kind == CallKind::Write),
            "{} made no write",
            sp.object_id
        );
    }
    assert!(
        calls.iter().all(|c| c.status != 403),
        "a principal was refused by Azure: {:?}",
        env.sim.handle.call_summary()
    );
    assert!(env.sim.handle.resource(&env.workspace_id(&sub_b, RG_B, "ws-b")).is_some());
    assert!(env.sim.handle.resource(&env.workspace_id(&sub_b, RG_B, "a-into-b")).is_none());
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Path injection: admission, then the controller and the id layer with admission off.

/// Hostile values for the fields that reach ARM paths.
fn hostile_values() -> Vec<(&'static str, Value)> {
    let sub = "00000000-0000-4000-8000-000000000001";
    let good_sa = format!("/subscriptions/{sub}/resourceGroups/rg-x/providers/Microsoft.Storage/storageAccounts/sa1");
    vec![
        ("subscriptionId", json!({"subscriptionId": format!("{sub}/resourceGroups/x")})),
        ("subscriptionId", json!({"subscriptionId": "../../providers/Microsoft.Authorization"})),
        ("resourceGroup", json!({"resourceGroup": "rg-x/../../other"})),
        ("resourceGroup", json!({"resourceGroup": ".."})),
        ("resourceGroup", json!({"resourceGroup": "rg-x?api-version=2020-01-01"})),
        ("resourceGroup", json!({"resourceGroup": "rg-x%2F..%2Fother"})),
        ("resourceGroup", json!({"resourceGroup": "rg-x#fragment"})),
        ("resourceGroup", json!({"resourceGroup": "r".repeat(91)})),
        ("azureName", json!({"azureName": "ws/../../x"})),
        ("azureName", json!({"azureName": "ws%2Fx"})),
        ("storageAccount", json!({"storageAccount": {"name": "sa1/../../kv", "id": null}})),
        ("storageAccount", json!({"storageAccount": {"name": "sa1?x=y", "id": null}})),
        ("storageAccount", json!({"storageAccount": {"id": format!("{good_sa}/../../../other")}})),
        ("storageAccount", json!({"storageAccount": {"id": format!("{good_sa}%2F..%2Fx")}})),
        ("storageAccount", json!({"storageAccount": {"id": format!("{good_sa}?api-version=1")}})),
        ("keyVault", json!({"keyVault": {"id": "https://evil.example/subscriptions/x"}})),
    ]
}

#[tokio::test]
async fn path_injection_is_rejected_at_admission() {
    let env = Env::start(Setup::default()).await;
    let base = serde_json::to_value(env.spec()).unwrap();
    let api = env.api(TEAM_A);
    let mut hostile = hostile_values();
    // Oversized and malformed specs are rejected too.
    hostile.push(("description", json!({"description": "d".repeat(2049)})));
    hostile.push((
        "tags",
        json!({"tags": (0..50).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
    ));
    hostile.push(("access", json!({"access": [{"principalId": "not-a-guid/..", "role": "Reader"}]})));
    hostile.push((
        "access",
        json!({"access": [{"principalId": env.world.users[0], "roleDefinitionId": "../roleDefinitions/x"}]}),
    ));
    hostile.push(("location", json!({"location": "westeurope/../x"})));
    for (i, (field, patch)) in hostile.iter().enumerate() {
        let mut spec = base.clone();
        json_patch::merge(&mut spec, patch);
        let object = json!({"apiVersion": "azml.dev/v1alpha1", "kind": "MlWorkspace",
                            "metadata": {"name": format!("hostile-{i}")}, "spec": spec});
        let ws: MlWorkspace = serde_json::from_value(object).unwrap();
        match api.create(&PostParams::default(), &ws).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{field} {patch}: {status:?}");
                assert!(
                    status.message.contains(field),
                    "{field}: the message does not name the field: {}",
                    status.message
                );
            }
            other => panic!("{field} {patch} was admitted: {other:?}"),
        }
    }
    assert!(api.list(&Default::default()).await.unwrap().items.is_empty());
    // Hostile bindings are rejected too: subscription and tenant reach ARM and token paths, the Secret's name a
    // Kubernetes API path.
    let sp = |name: &str| json!({"clientSecret": {"clientId": env.world.operator.client_id, "secretRef": {"name": name, "key": "k"}}});
    for (sub, tenant, credential) in [
        ("x/../y", env.world.tenant_id.as_str(), json!({"managedIdentity": {}})),
        (env.world.subscription_id.as_str(), "../common", json!({"managedIdentity": {}})),
        (env.world.subscription_id.as_str(), env.world.tenant_id.as_str(), sp("../../kube-system/secrets/x")),
        (env.world.subscription_id.as_str(), env.world.tenant_id.as_str(), sp("Operator_SP")),
    ] {
        let bad_binding: SubscriptionBinding = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "SubscriptionBinding", "metadata": {"name": "bad"},
            "spec": {"subscriptionId": sub, "tenantId": tenant, "resourceGroups": ["*"],
                     "namespaces": [TEAM_A], "credential": credential},
        }))
        .unwrap();
        let err =
            Api::<SubscriptionBinding>::all(env.client.clone()).create(&PostParams::default(), &bad_binding).await;
        assert!(matches!(err, Err(kube::Error::Api(ref s)) if s.code == 422), "{sub} {tenant} {credential}: {err:?}");
    }
    assert_eq!(env.all_calls(), 0);
    env.stop().await;
}

#[tokio::test]
async fn path_injection_is_rejected_again_by_the_controller_when_admission_is_bypassed() {
    let env = Env::start(Setup { lax_crds: true, ..Setup::default() }).await;
    let base = serde_json::to_value(env.spec()).unwrap();
    let hostile = hostile_values();
    for (i, (_, patch)) in hostile.iter().enumerate() {
        let mut spec = base.clone();
        json_patch::merge(&mut spec, patch);
        let ws: MlWorkspace = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlWorkspace",
            "metadata": {"name": format!("hostile-{i}")}, "spec": spec,
        }))
        .unwrap();
        env.api(TEAM_A)
            .create(&PostParams::default(), &ws)
            .await
            .unwrap_or_else(|e| panic!("lax CRD refused {patch}: {e}"));
    }
    for (i, (field, patch)) in hostile.iter().enumerate() {
        let ws = env
            .wait_for(TEAM_A, &format!("hostile-{i}"), "InvalidSpec", |w| {
                stalled_with(Reason::InvalidSpec)(w) || stalled_with(Reason::NotPermitted)(w)
            })
            .await;
        let c = condition(&ws, conditions::STALLED).unwrap();
        // A bad subscription id can also fail the binding match first; either way nothing is sent.
        assert!(c.message.contains(field) || c.reason == Reason::NotPermitted, "{patch}: {}", c.message);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.all_calls(), 0, "{:?}", env.sim.handle.call_summary());
    env.stop().await;
}

#[test]
fn the_arm_id_layer_rejects_path_injection_on_its_own() {
    for rg in ["..", ".", "a/b", "a?b", "a#b", "a%2Fb", "a b", "", "rg.", &"r".repeat(91), "rg\n"] {
        assert!(ResourceGroupName::new(rg).is_err(), "resource group {rg:?}");
    }
    for name in ["ws/x", "..", "ws?x", "ws%2F", "-ws", "ws\u{0}"] {
        assert!(WorkspaceName::new(name).is_err(), "workspace {name:?}");
    }
    assert!(SubscriptionId::new("00000000-0000-4000-8000-000000000001/x").is_err());
    let good = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1";
    assert!(ResourceId::parse(good).is_ok());
    for suffix in ["/..", "/../x", "?api-version=1", "#x", "%2F..", "/", "//x"] {
        assert!(ResourceId::parse(&format!("{good}{suffix}")).is_err(), "{suffix}");
    }
    assert!(ResourceId::parse("https://evil.example/subscriptions/x").is_err());
    let ws = WorkspaceRef::parse(
        &good.replace("Microsoft.Storage/storageAccounts/sa1", "Microsoft.MachineLearningServices/workspaces/ws1"),
    );
    assert!(ws.is_ok_and(|w| w.id().split('/').count() == 9));
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets: nothing leaks anywhere.

/// Every place a secret could end up, as text: captured logs, every object the emulator stores (current and in
/// its watch history) except the credential Secrets themselves.
fn everything_observable(env: &Env, extra: &[String]) -> Vec<(String, String)> {
    let mut out = vec![("logs".to_owned(), env.logs())];
    for obj in env.kube.store().all_objects() {
        let is_secret = obj.get("kind").and_then(Value::as_str) == Some("Secret")
            || obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(OPERATOR_NS)
                && obj.get("stringData").or_else(|| obj.get("data")).is_some();
        if is_secret {
            continue;
        }
        let name = format!(
            "{}/{}",
            obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("-"),
            obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("-")
        );
        out.push((name, obj.to_string()));
    }
    out.extend(extra.iter().enumerate().map(|(i, e)| (format!("error string {i}"), e.clone())));
    out
}

#[tokio::test]
async fn no_key_token_or_client_secret_appears_in_logs_events_status_or_errors() {
    let env = Env::start(Setup::default()).await;
    let storage = env.world.storage_account_id.clone();
    let mut secrets: Vec<String> = vec![env.world.operator.secret.expose().to_owned()];
    let remember_keys = |env: &Env, secrets: &mut Vec<String>| {
        for key in ["key1", "key2"] {
            secrets.extend(env.sim.handle.storage_key(&storage, key).map(|k| k.expose().to_owned()));
        }
    };
    remember_keys(&env, &mut secrets);

    // Create.
    let mut spec = env.spec();
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(TEAM_A, "ws-secret", spec).await;
    env.wait_ready(TEAM_A, "ws-secret").await;
    let ws_id = env.workspace_id(&env.world.subscription_id, &env.world.resource_group, "ws-secret");
    secrets.extend(env.sim.handle.workspace_cached_key(&ws_id).map(|k| k.expose().to_owned()));

    // Rotation in Azure, a requested resync and a few resync periods.
    env.sim.handle.regenerate_storage_key(&storage, "key1").unwrap();
    remember_keys(&env, &mut secrets);
    let annotate = json!({"metadata": {"annotations": {ANNOTATION_RESYNC_KEYS: "2026-11-25T10:00Z"}}});
    env.api(TEAM_A).patch("ws-secret", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    secrets.extend(env.sim.handle.workspace_cached_key(&ws_id).map(|k| k.expose().to_owned()));

    // Failures whose ARM error bodies carry keys (with and without base64 padding, named in a connection string and
    // in JSON), a token and a bearer header: first transient ones (retried), then a permanent one (stalls).
    let fake_key = "ZmFrZS1zdG9yYWdlLWtleS1mcm9tLWFuLWVycm9yLWJvZHktMDEyMzQ1Njc4OWFiY2RlZg==";
    let fake_endpoint_key = "Zq8Xr2Lm4Np6Tv8Wb0Yd2Fh4Jk6Mn8Pq";
    let fake_account_key = "Qm9ndXNBY2NvdW50S2V5Tm9QYWRkaW5n";
    let fake_jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJvaWQiOiJsZWFrIn0.c2lnbmF0dXJlLWxlYWs";
    let fake_bearer = "opaque-bearer-value-1234";
    let message = format!(
        "key {fake_key} was refused; {{\"primaryKey\": \"{fake_endpoint_key}\"}}; \
         AccountName=stsandbox;AccountKey={fake_account_key}; token {fake_jwt}; sent Authorization: Bearer {fake_bearer}"
    );
    for (status, code, count) in [(500, "InternalServerError", Some(3)), (400, "InvalidParameter", None)] {
        env.sim.handle.inject_fault(FaultRule {
            operation: "Workspaces_Update".into(),
            action: FaultAction::Error { status, code: code.into(), message: Some(message.clone()), retry_after: None },
            count,
            rate: None,
        });
    }
    let patch = json!({"spec": {"friendlyName": "trigger an update"}});
    env.api(TEAM_A).patch("ws-secret", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let ws = env.wait_for(TEAM_A, "ws-secret", "AzureRejected", stalled_with(Reason::AzureRejected)).await;
    let stalled = condition(&ws, conditions::STALLED).unwrap().message.clone();
    assert!(stalled.contains("InvalidParameter") && stalled.contains("[REDACTED]"), "{stalled}");
    secrets.extend([fake_key, fake_endpoint_key, fake_account_key, fake_jwt, fake_bearer].map(str::to_owned));
    assert_eq!(env.count("Workspaces_Update"), 4, "the transient failures were not all hit");

    // A token failure: the binding's Secret is rotated to a wrong value (the error chain of the identity library is
    // reported in status and events).
    let wrong = "wrong-client-secret-value-5678";
    let secrets_api = Api::<Secret>::namespaced(env.client.clone(), OPERATOR_NS);
    let wrong_patch = json!({"stringData": {"clientSecret": wrong}});
    secrets_api.patch("operator-sp", &PatchParams::default(), &Patch::Merge(&wrong_patch)).await.unwrap();
    env.sim.handle.clear_faults();
    let patch = json!({"spec": {"friendlyName": "after the rotation"}});
    env.api(TEAM_A).patch("ws-secret", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_for(TEAM_A, "ws-secret", "token refused", |w| {
        condition(w, conditions::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == Reason::CredentialUnavailable)
    })
    .await;
    secrets.push(wrong.to_owned());
    let restore = json!({"stringData": {"clientSecret": env.world.operator.secret.expose()}});
    secrets_api.patch("operator-sp", &PatchParams::default(), &Patch::Merge(&restore)).await.unwrap();

    // The error strings a user of the library sees: the dry run and a credential's Debug output.
    let mut errors = Vec::new();
    let live = env.api(TEAM_A).get("ws-secret").await.unwrap();
    match controller::dry_run(&env.client, &env.config, &live).await {
        Ok(actions) => errors.push(format!("{actions:?}")),
        Err(e) => errors.push(format!("{e} / {e:?} / {}", controller::error::error_chain(&e))),
    }
    let credential = CredentialConfig::ClientSecret {
        tenant_id: env.world.tenant_id.clone(),
        client_id: env.world.operator.client_id.clone(),
        client_secret: AzSecret::new(env.world.operator.secret.expose()),
    };
    errors.push(format!("{credential:?} {:?}", env.config));

    // Deletion.
    env.api(TEAM_A).delete("ws-secret", &DeleteParams::default()).await.unwrap();
    env.wait_gone(TEAM_A, "ws-secret").await;

    let tokens: Vec<String> = env.sim.handle.issued_tokens().iter().map(|t| t.expose().to_owned()).collect();
    assert!(!tokens.is_empty(), "no token was issued: the scenario did not reach Azure");
    secrets.extend(tokens);
    secrets.retain(|s| !s.is_empty());
    assert!(secrets.len() >= 8, "{} secret values collected", secrets.len());
    let haystacks = everything_observable(&env, &errors);
    assert!(haystacks.len() > 10, "too little to scan");
    assert!(haystacks[0].1.contains("ws-secret"), "the log capture saw nothing of the scenario");
    for (place, text) in &haystacks {
        for secret in &secrets {
            // Show where, with the secret itself masked.
            if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
                let line = line.replace(secret.as_str(), "<SECRET>");
                panic!("a secret starting {:?} appears in {place}: {line}", &secret[..6]);
            }
        }
    }
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Least-privilege RBAC of the operator itself.

#[test]
fn the_operators_rbac_does_not_read_secrets_cluster_wide() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/20-rbac.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect();
    let rules = |kind: &str| -> Vec<Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let cluster = rules("ClusterRole");
    assert!(!cluster.is_empty());
    for rule in &cluster {
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        assert!(!resources.iter().any(|r| r == "secrets" || r == "*"), "cluster-wide rule {rule}");
        assert!(!verbs.iter().any(|v| v == "*" || v == "deletecollection"), "{rule}");
        // The only deletes: a workspace deleted with deletionPolicy Delete deletes its MlOnlineEndpoints and
        // MlComputes first.
        assert!(
            !verbs.iter().any(|v| v == "delete") || resources == ["mlonlineendpoints"] || resources == ["mlcomputes"],
            "{rule}"
        );
        assert!(!strings(&rule["apiGroups"]).iter().any(|g| g == "*"), "{rule}");
    }
    // The only writes on workspaces are finalizer and status patches; bindings are read-only.
    for rule in cluster.iter().filter(|r| strings(&r["resources"]).iter().any(|x| x == "subscriptionbindings")) {
        assert_eq!(strings(&rule["verbs"]), ["get", "list", "watch"], "{rule}");
    }
    // Secrets: only in the operator's namespace: `get` (the operator reads the one a binding names), and `list` and
    // `watch`, which it uses only for a metadata watch (a fixed credential Secret wakes CredentialUnavailable stalls).
    let namespaced: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role").collect();
    assert!(namespaced.iter().all(|d| d["metadata"]["namespace"] == OPERATOR_NS));
    let secret_rules: Vec<Value> =
        rules("Role").into_iter().filter(|r| strings(&r["resources"]).iter().any(|x| x == "secrets")).collect();
    assert_eq!(secret_rules.len(), 1);
    assert_eq!(strings(&secret_rules[0]["verbs"]), ["get", "list", "watch"], "secrets: {}", secret_rules[0]);
}

// ---------------------------------------------------------------------------------------------------------------
// Property test: arbitrary specs through policy, validation and planning.

mod props {
    use super::*;
    use proptest::prelude::*;

    const SUB: &str = "00000000-0000-4000-8000-000000000001";
    const OTHER: &str = "00000000-0000-4000-8000-000000000002";

    fn binding() -> SubscriptionBinding {
        serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "SubscriptionBinding", "metadata": {"name": "team"},
            "spec": {"subscriptionId": SUB, "tenantId": SUB, "credential": {"managedIdentity": {}},
                     "namespaces": ["team"], "resourceGroups": ["rg-team-*"],
                     "allowedRoles": ["Reader"], "allowedScopes": ["Workspace", "ResourceGroup"]},
        }))
        .unwrap()
    }

    /// Strings that are sometimes valid, often hostile.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "rg-team-[a-z0-9]{1,8}",
            "[A-Za-z0-9_().-]{1,12}",
            "[A-Za-z0-9./?%#&=-]{1,16}",
            Just("..".to_owned()),
            Just("rg-team-x/../../other".to_owned()),
            Just("rg-team-x%2F..%2Fother".to_owned()),
            any::<String>(),
        ]
    }

    fn dependency(kind: &'static str) -> impl Strategy<Value = Value> {
        prop_oneof![
            segment().prop_map(|name| json!({"name": name})),
            (prop_oneof![Just(SUB), Just(OTHER)], segment(), segment()).prop_map(move |(sub, rg, name)| {
                json!({"id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{kind}/{name}")})
            }),
            any::<String>().prop_map(|id| json!({"id": id})),
        ]
    }

    fn access() -> impl Strategy<Value = Value> {
        let role = prop_oneof![Just("Reader"), Just("Owner"), Just("Contributor")];
        let scope = prop_oneof![Just("Workspace"), Just("ResourceGroup"), Just("Subscription")];
        proptest::collection::vec((role, scope, any::<String>()), 0..3).prop_map(|entries| {
            Value::Array(
                entries
                    .into_iter()
                    .map(|(role, scope, principal)| json!({"principalId": principal, "role": role, "scope": scope}))
                    .collect(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// No panic anywhere; whatever passes the binding and validation only ever addresses the bound
        /// subscription, a resource group the binding allows, and well-formed ids.
        #[test]
        fn arbitrary_specs_stay_inside_the_binding(
            namespace in prop_oneof![Just("team".to_owned()), any::<String>()],
            subscription in prop_oneof![Just(SUB.to_owned()), Just(OTHER.to_owned()), any::<String>()],
            rg in segment(),
            name in segment(),
            storage in dependency("Microsoft.Storage/storageAccounts"),
            vault in dependency("Microsoft.KeyVault/vaults"),
            registry in proptest::option::of(dependency("Microsoft.ContainerRegistry/registries")),
            access in access(),
            rg_exists in any::<bool>(),
        ) {
            let mut spec = json!({
                "subscriptionId": subscription, "resourceGroup": rg, "location": "eastus", "azureName": name,
                "storageAccount": storage, "keyVault": vault, "access": access,
            });
            if let Some(registry) = registry {
                spec["containerRegistry"] = registry;
            }
            let Ok(spec) = serde_json::from_value::<MlWorkspaceSpec>(spec) else { return Ok(()) };
            let mut ws = MlWorkspace::new("ws", spec);
            ws.metadata.namespace = Some(namespace.clone());
            ws.metadata.uid = Some("uid-1".into());
            let bindings = [binding()];
            let request = policy::Request {
                namespace: &namespace,
                namespace_labels: None,
                subscription_id: &ws.spec.subscription_id,
                resource_group: &ws.spec.resource_group,
                access: &ws.spec.access,
                grantor: policy::Grantor::Workspace,
            };
            let permitted = policy::authorize(&bindings, &request)
                .is_ok_and(|b| policy::check_dependencies(b, &ws.spec).is_ok());
            let desired = Desired::from_resource(&ws);
            let (true, Ok(desired)) = (permitted, desired) else { return Ok(()) };

            prop_assert_eq!(namespace.as_str(), "team");
            prop_assert!(ws.spec.access.iter().all(|a| a.scope.as_str() != "Subscription"));
            let rg_prefix = format!("/subscriptions/{SUB}/resourceGroups/");
            let mut ids = vec![desired.workspace.id(), desired.storage_account.to_string(), desired.key_vault.to_string()];
            ids.extend(desired.container_registry.as_ref().map(ToString::to_string));
            for id in &ids {
                prop_assert!(id.to_ascii_lowercase().starts_with(&rg_prefix.to_ascii_lowercase()), "{} escapes {}", id, SUB);
                prop_assert!(!id.contains(['?', '#', '%', '\\', ' ']), "{}", id);
                prop_assert!(id[1..].split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{}", id);
                // Every id, dependencies included, is in a resource group the binding allows (issue #16).
                let rg = id.split('/').nth(4).unwrap_or_default();
                prop_assert!(policy::glob_matches("rg-team-*", rg), "{} is outside the binding's groups", id);
            }
            let ws_rg = desired.workspace.resource_group.name.as_str().to_owned();
            prop_assert!(policy::glob_matches("rg-team-*", &ws_rg), "{}", ws_rg);
            prop_assert_eq!(desired.workspace.id().split('/').count(), 9);

            let observed = Observed {
                pending: None,
                workspace: None,
                resource_group: if rg_exists { ResourceGroupState::Exists } else { ResourceGroupState::Missing },
                last_observed_generation: None,
                foreign_owner: Default::default(),
            };
            let ws_prefix = format!("{rg_prefix}{ws_rg}");
            for action in plan(&desired, &observed).actions {
                match action {
                    Action::CreateResourceGroup { id, .. } => prop_assert!(id.eq_ignore_ascii_case(&ws_prefix), "{}", id),
                    Action::CreateWorkspace { id } => prop_assert!(id.starts_with(&ws_prefix), "{}", id),
                    other => prop_assert!(false, "unexpected action {:?}", other),
                }
            }
        }
    }
}
