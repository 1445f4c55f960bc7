//! The real MlWorkspace controller against the Kubernetes API emulator and the ARM simulator.
//!
//! Each test starts both emulators on port 0, installs the CRDs, a bound namespace with a client-secret
//! SubscriptionBinding, and runs `controller::run` in-process with short periods. ARM calls are counted in the
//! simulator's call log.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{self, condition, is_current};
use crate::env::{TestEnv, env_type};
use azml_arm_simulator::{CallKind, FaultAction, FaultRule};
use azml_operator::api::conditions::{self, Reason};
use azml_operator::api::v1alpha1::{
    ANNOTATION_ADOPT, ANNOTATION_PAUSED, MlWorkspace, MlWorkspaceSpec, OWNER_TAG, SubscriptionBinding,
    WorkspaceDeletionPolicy,
};
use azml_operator::controller::{self, ControllerConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const NS: &str = "team-a";
const OPERATOR_NS: &str = "azml-system";
// An upper bound for slow CI machines, kept below the resync and stalled-requeue periods these tests configure, so
// only the mechanism under test (watch, signal) can end a wait in time.
const WAIT: Duration = Duration::from_secs(25);
const POLL: Duration = Duration::from_millis(50);

env_type!(Env);

impl Env {
    async fn start() -> Env {
        Env::start_with(Duration::from_millis(200)).await
    }

    async fn start_with(lro_duration: Duration) -> Env {
        Env::start_configured(lro_duration, |_| {}).await
    }

    /// `team-a` bound (Reader at the workspace), `team-b` not; resync 1 s, stalled requeue 30 s, then `tweak`.
    async fn start_configured(
        lro_duration: Duration,
        tweak: impl FnOnce(&mut ControllerConfig) + Send + 'static,
    ) -> Env {
        let env = TestEnv::builder()
            .lro(lro_duration)
            .namespaces(&[NS, "team-b"])
            .bind(&[NS], json!({"allowedRoles": ["Reader"], "allowedScopes": ["Workspace"]}))
            .resync(Duration::from_secs(1))
            .stalled(Duration::from_secs(30))
            .configure(tweak)
            .start()
            .await;
        Env(env)
    }

    fn api(&self, ns: &str) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn spec(&self, rg: &str) -> MlWorkspaceSpec {
        common::workspace_spec(&self.world, json!({"resourceGroup": rg}))
    }

    async fn create(&self, ns: &str, name: &str, spec: MlWorkspaceSpec, annotations: &[(&str, &str)]) -> MlWorkspace {
        let mut ws = MlWorkspace::new(name, spec);
        if !annotations.is_empty() {
            ws.metadata.annotations =
                Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>());
        }
        self.api(ns).create(&PostParams::default(), &ws).await.unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// Polls the object until `done` holds.
    async fn wait_for(&self, ns: &str, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let api = self.api(ns);
        let check = async || match api.get_opt(name).await.unwrap_or_else(|e| panic!("get {name}: {e}")) {
            Some(ws) if done(&ws) => Ok(ws),
            other => Err(other.map(|ws| ws.status)),
        };
        common::wait_until(WAIT, POLL, check, |seen| match seen {
            Some(status) => format!("{name}: timed out waiting for {what}; status: {status:#?}"),
            None => format!("{name}: timed out waiting for {what}; object is gone"),
        })
        .await
    }

    async fn wait_ready(&self, ns: &str, name: &str) -> MlWorkspace {
        self.wait_for(ns, name, "Ready", is_ready).await
    }

    async fn wait_gone(&self, ns: &str, name: &str) {
        common::wait_gone(&self.api(ns), name, WAIT, POLL).await
    }

    fn workspace_id(&self, rg: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{name}",
            self.world.subscription_id
        )
    }

    fn count(&self, operation: &str) -> usize {
        self.sim.handle.count(operation)
    }

    fn arm_writes(&self) -> usize {
        self.sim.handle.calls().iter().filter(|c| c.kind == CallKind::Write).count()
    }

    fn arm_calls(&self) -> usize {
        self.sim.handle.calls().iter().filter(|c| c.kind != CallKind::Auth).count()
    }

    async fn events(&self, ns: &str, reason: &str) -> Vec<String> {
        common::event_notes(&self.client, ns, reason).await
    }

    async fn annotate(&self, ns: &str, name: &str, key: &str, value: Option<&str>) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.api(ns).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
}

fn is_ready(ws: &MlWorkspace) -> bool {
    condition(ws, conditions::READY).is_some_and(|c| c.status == "True" && c.reason == Reason::Reconciled)
        && is_current(ws)
}

fn stalled_with(reason: Reason) -> impl Fn(&MlWorkspace) -> bool {
    move |ws| condition(ws, conditions::STALLED).is_some_and(|c| c.status == "True" && c.reason == reason)
}

/// An injected ARM error: `count` times (always when `None`), with an optional message and Retry-After.
fn error_fault(
    operation: &str,
    status: u16,
    code: &str,
    message: Option<String>,
    retry_after: Option<u64>,
    count: Option<u32>,
) -> FaultRule {
    FaultRule {
        operation: operation.into(),
        action: FaultAction::Error { status, code: code.into(), message, retry_after },
        count,
        rate: None,
    }
}

fn owner_tag(body: &serde_json::Value) -> Option<String> {
    body.pointer(&format!("/tags/{OWNER_TAG}")).and_then(|v| v.as_str()).map(str::to_owned)
}

#[tokio::test]
async fn lifecycle_create_update_resync_drift_delete() {
    let env = Env::start().await;
    let mut spec = env.spec(&env.world.resource_group);
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    spec.tags = BTreeMap::from([("cost-center".into(), "42".into())]);
    let created = env.create(NS, "ws-life", spec, &[]).await;
    let ws = env.wait_ready(NS, "ws-life").await;
    let status = ws.status.clone().unwrap();
    let id = env.workspace_id(&env.world.resource_group, "ws-life");
    assert!(status.resource_id.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(&id)), "{status:?}");
    assert!(status.workspace_id.is_some() && status.discovery_url.is_some(), "{status:?}");
    assert_eq!(status.provisioning_state.as_deref(), Some("Succeeded"));
    assert!(status.pending_operation.is_none());
    assert!(status.last_sync_time.is_some());
    assert_eq!(condition(&ws, conditions::WORKSPACE_PROVISIONED).map(|c| c.status.as_str()), Some("True"));
    assert_eq!(condition(&ws, conditions::STALLED).map(|c| c.status.as_str()), Some("False"));
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1);
    let body = env.sim.handle.resource(&id).expect("workspace in Azure");
    assert_eq!(owner_tag(&body), Some(format!("{NS}/ws-life/{}", created.uid().unwrap())));
    assert_eq!(body.pointer("/tags/cost-center").and_then(|v| v.as_str()), Some("42"));
    assert!(!env.events(NS, "Created").await.is_empty());

    // Steady state: several resyncs, one GET each, no writes and no status rewrites.
    env.sim.handle.clear_calls();
    let version = ws.resource_version();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let gets = env.count("Workspaces_Get");
    // At most one GET per period (3 periods fit in 3.5 s; one spare for timing); at least one even on a slow machine.
    assert!((1..=4).contains(&gets), "{gets} GETs in 3.5 s with a 1 s resync");
    assert_eq!(env.arm_writes(), 0, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.api(NS).get("ws-life").await.unwrap().resource_version(), version, "status was rewritten");

    // A mutable field: exactly one PATCH, no PUT.
    env.sim.handle.clear_calls();
    let patch = json!({"spec": {"friendlyName": "Fraud detection"}});
    env.api(NS).patch("ws-life", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_for(NS, "ws-life", "generation 2 ready", |w| is_ready(w) && w.metadata.generation == Some(2)).await;
    assert_eq!(env.count("Workspaces_Update"), 1, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0);
    let body = env.sim.handle.resource(&id).unwrap();
    assert_eq!(body.pointer("/properties/friendlyName").and_then(|v| v.as_str()), Some("Fraud detection"));

    // Drift in Azure is put back on the next resync, with an event naming the field.
    env.sim.handle.clear_calls();
    env.sim.handle.edit_resource(&id, &json!({"properties": {"friendlyName": "edited in the portal"}})).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let name = env.sim.handle.resource(&id).unwrap().pointer("/properties/friendlyName").cloned();
        if name == Some(json!("Fraud detection")) && env.count("Workspaces_Update") == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "drift not corrected: {name:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drift = env.events(NS, "DriftCorrected").await;
    assert!(drift.iter().any(|n| n.contains("friendlyName")), "{drift:?}");

    // deletionPolicy Delete: the workspace goes, then the object.
    env.sim.handle.clear_calls();
    env.api(NS).delete("ws-life", &DeleteParams::default()).await.unwrap();
    env.wait_gone(NS, "ws-life").await;
    assert!(env.sim.handle.resource(&id).is_none(), "workspace still in Azure");
    assert_eq!(env.count("Workspaces_Delete"), 1);
}

#[tokio::test]
async fn resource_group_is_created_only_when_allowed() {
    let env = Env::start().await;
    env.create(NS, "ws-newrg", env.spec("rg-new"), &[]).await;
    env.wait_ready(NS, "ws-newrg").await;
    assert_eq!(env.count("ResourceGroups_CreateOrUpdate"), 1);
    assert!(env.sim.handle.resource(&env.workspace_id("rg-new", "ws-newrg")).is_some());

    let mut spec = env.spec("rg-absent");
    spec.create_resource_group = false;
    env.create(NS, "ws-norg", spec, &[]).await;
    let ws = env.wait_for(NS, "ws-norg", "Stalled", stalled_with(Reason::ResourceGroupMissing)).await;
    assert!(condition(&ws, conditions::READY).unwrap().message.contains("rg-absent"));
    assert_eq!(env.count("ResourceGroups_CreateOrUpdate"), 1, "no resource group created for ws-norg");
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1, "no workspace created for ws-norg");
}

#[tokio::test]
async fn retain_keeps_azure_and_a_new_incarnation_takes_it_back() {
    let env = Env::start().await;
    let rg = env.world.resource_group.clone();
    let id = env.workspace_id(&rg, "ws-keep");
    let first = env.create(NS, "ws-keep", env.spec(&rg), &[]).await;
    env.wait_ready(NS, "ws-keep").await;
    env.api(NS).delete("ws-keep", &DeleteParams::default()).await.unwrap();
    env.wait_gone(NS, "ws-keep").await;
    assert_eq!(env.count("Workspaces_Delete"), 0);
    let body = env.sim.handle.resource(&id).expect("retained");
    assert_eq!(owner_tag(&body), Some(format!("{NS}/ws-keep/{}", first.uid().unwrap())));

    let second = env.create(NS, "ws-keep", env.spec(&rg), &[]).await;
    env.wait_ready(NS, "ws-keep").await;
    let body = env.sim.handle.resource(&id).unwrap();
    assert_eq!(owner_tag(&body), Some(format!("{NS}/ws-keep/{}", second.uid().unwrap())));
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1, "taken back with a PATCH, not re-created");
    let adopted = env.events(NS, "Adopted").await;
    assert!(adopted.iter().any(|n| n.contains("previous incarnation")), "{adopted:?}");
}

#[tokio::test]
async fn foreign_workspaces_are_only_adopted_on_request() {
    let env = Env::start().await;
    let rg = env.world.resource_group.clone();
    for (name, tags) in [("ws-foreign", json!({OWNER_TAG: "other-team/ws/1234"})), ("ws-untagged", json!({}))] {
        let id = env.workspace_id(&rg, name);
        env.sim.handle.seed_resource(
            &id,
            "Microsoft.MachineLearningServices/workspaces",
            json!({
                "location": env.world.location,
                "tags": tags,
                "properties": {
                    "storageAccount": env.world.storage_account_id,
                    "keyVault": env.world.key_vault_id,
                    "provisioningState": "Succeeded",
                },
            }),
        );
    }
    env.create(NS, "ws-foreign", env.spec(&rg), &[]).await;
    env.create(NS, "ws-untagged", env.spec(&rg), &[]).await;
    let ws = env.wait_for(NS, "ws-foreign", "AlreadyExists", stalled_with(Reason::AlreadyExists)).await;
    assert!(condition(&ws, conditions::STALLED).unwrap().message.contains("other-team/ws/1234"));
    env.wait_for(NS, "ws-untagged", "AlreadyExists", stalled_with(Reason::AlreadyExists)).await;
    assert_eq!(env.arm_writes(), 0, "{:?}", env.sim.handle.call_summary());

    env.annotate(NS, "ws-foreign", ANNOTATION_ADOPT, Some("true")).await;
    let ws = env.wait_ready(NS, "ws-foreign").await;
    let body = env.sim.handle.resource(&env.workspace_id(&rg, "ws-foreign")).unwrap();
    assert_eq!(owner_tag(&body), Some(format!("{NS}/ws-foreign/{}", ws.uid().unwrap())));
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0);
    let adopted = env.events(NS, "Adopted").await;
    assert!(adopted.iter().any(|n| n.contains("other-team/ws/1234")), "{adopted:?}");
    // The untagged one is still left alone.
    assert!(stalled_with(Reason::AlreadyExists)(&env.api(NS).get("ws-untagged").await.unwrap()));
}

#[tokio::test]
async fn paused_workspaces_are_observed_only() {
    let env = Env::start().await;
    let mut spec = env.spec(&env.world.resource_group);
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(NS, "ws-paused", spec, &[(ANNOTATION_PAUSED, "true")]).await;
    let ws = env
        .wait_for(NS, "ws-paused", "Paused", |w| {
            condition(w, conditions::READY).is_some_and(|c| c.reason == Reason::Paused)
        })
        .await;
    let ready = condition(&ws, conditions::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("create workspace"), "{}", ready.message);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.arm_writes(), 0);
    assert!(env.count("Workspaces_Get") >= 1, "paused still observes");

    env.annotate(NS, "ws-paused", ANNOTATION_PAUSED, None).await;
    env.wait_ready(NS, "ws-paused").await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1);

    // Paused again, then deleted: deletionPolicy Delete is not carried out while paused.
    env.annotate(NS, "ws-paused", ANNOTATION_PAUSED, Some("true")).await;
    env.wait_for(NS, "ws-paused", "Paused", |w| {
        condition(w, conditions::READY).is_some_and(|c| c.reason == Reason::Paused && c.status == "True")
    })
    .await;
    env.api(NS).delete("ws-paused", &DeleteParams::default()).await.unwrap();
    env.wait_gone(NS, "ws-paused").await;
    assert_eq!(env.count("Workspaces_Delete"), 0);
    assert!(env.sim.handle.resource(&env.workspace_id(&env.world.resource_group, "ws-paused")).is_some());
}

#[tokio::test]
async fn permanent_errors_stall_without_a_retry_storm() {
    let env = Env::start().await;
    env.sim.handle.inject_fault(error_fault(
        "Workspaces_CreateOrUpdate",
        400,
        "InvalidParameter",
        Some("The workspace name is reserved".into()),
        None,
        None,
    ));
    env.create(NS, "ws-bad", env.spec(&env.world.resource_group), &[]).await;
    let ws = env.wait_for(NS, "ws-bad", "AzureRejected", stalled_with(Reason::AzureRejected)).await;
    let message = &condition(&ws, conditions::STALLED).unwrap().message;
    assert!(message.contains("InvalidParameter") && message.contains("reserved"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1, "a permanent error is not retried");
    let warnings = env.events(NS, "ReconcileFailed").await;
    assert!(warnings.iter().any(|n| n.contains("InvalidParameter")), "{warnings:?}");
}

#[tokio::test]
async fn transient_errors_and_throttling_converge() {
    let env = Env::start().await;
    env.sim.handle.inject_fault(FaultRule::error("Workspaces_CreateOrUpdate", 500, "InternalServerError").times(3));
    env.sim.handle.inject_fault(error_fault("Workspaces_Get", 429, "TooManyRequests", None, Some(1), Some(3)));
    env.create(NS, "ws-flaky", env.spec(&env.world.resource_group), &[]).await;
    env.wait_ready(NS, "ws-flaky").await;
    let puts = env.count("Workspaces_CreateOrUpdate");
    assert!((4..=6).contains(&puts), "3 failed PUTs then success, got {puts}");
}

#[tokio::test]
async fn restart_mid_operation_resumes_polling_without_a_second_put() {
    let mut env = Env::start_with(Duration::from_secs(3)).await;
    env.create(NS, "ws-restart", env.spec(&env.world.resource_group), &[]).await;
    env.wait_for(NS, "ws-restart", "pending operation", |w| {
        w.status.as_ref().is_some_and(|s| s.pending_operation.is_some())
    })
    .await;
    env.stop_controller().await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1);
    env.sim.handle.clear_calls();
    env.start_controller();
    env.wait_ready(NS, "ws-restart").await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0, "the restarted controller re-sent the PUT");
    let polls = env.count("Operations_GetResult") + env.count("Operations_GetStatus");
    assert!(polls >= 1, "the stored operation was not polled: {:?}", env.sim.handle.call_summary());
    env.stop_controller().await;
}

#[tokio::test]
async fn not_permitted_workspaces_make_no_azure_calls() {
    let env = Env::start().await;
    // Namespace not bound.
    env.create("team-b", "ws-nobind", env.spec(&env.world.resource_group), &[]).await;
    let ws = env.wait_for("team-b", "ws-nobind", "NotPermitted", stalled_with(Reason::NotPermitted)).await;
    assert!(condition(&ws, conditions::STALLED).unwrap().message.contains("namespace team-b"));
    let warnings = env.events("team-b", Reason::NotPermitted.as_str()).await;
    assert!(warnings.iter().any(|n| n.contains("namespace team-b")), "{warnings:?}");
    // Resource group outside the glob.
    env.create(NS, "ws-badrg", env.spec("other-rg"), &[]).await;
    let ws = env.wait_for(NS, "ws-badrg", "NotPermitted", stalled_with(Reason::NotPermitted)).await;
    assert!(condition(&ws, conditions::STALLED).unwrap().message.contains("other-rg"));
    // A role the binding does not allow.
    let mut spec = env.spec(&env.world.resource_group);
    spec.access = serde_json::from_value(json!([{"principalId": env.world.users[0], "role": "Owner"}])).unwrap();
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(NS, "ws-owner", spec, &[]).await;
    let ws = env.wait_for(NS, "ws-owner", "NotPermitted", stalled_with(Reason::NotPermitted)).await;
    assert!(condition(&ws, conditions::STALLED).unwrap().message.contains("role Owner"));
    assert_eq!(env.arm_calls(), 0, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.sim.handle.calls().len(), 0, "not even a token was requested");

    // A permitted workspace, then its binding disappears: it stops touching Azure and says why.
    env.create(NS, "ws-ok", env.spec(&env.world.resource_group), &[]).await;
    env.wait_ready(NS, "ws-ok").await;
    Api::<SubscriptionBinding>::all(env.client.clone()).delete("sandbox", &DeleteParams::default()).await.unwrap();
    env.wait_for(NS, "ws-ok", "NotPermitted", stalled_with(Reason::NotPermitted)).await;
    env.sim.handle.clear_calls();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.arm_calls(), 0, "{:?}", env.sim.handle.call_summary());

    // Deleting never-created workspaces needs no binding and no Azure call.
    for (ns, name) in [("team-b", "ws-nobind"), (NS, "ws-badrg"), (NS, "ws-owner")] {
        env.api(ns).delete(name, &DeleteParams::default()).await.unwrap();
        env.wait_gone(ns, name).await;
    }
    assert_eq!(env.arm_calls(), 0);
}

#[tokio::test]
async fn dry_run_prints_the_plan_without_writing() {
    let mut env = Env::start().await;
    let mut ws = MlWorkspace::new("ws-plan", env.spec("rg-planned"));
    ws.metadata.namespace = Some(NS.into());
    ws.metadata.uid = Some("not-yet-created".into());
    let actions = controller::dry_run(&env.client, &env.config, &ws).await.unwrap();
    let text = actions.render(&ws);
    assert!(text.contains("1. create resource group") && text.contains("2. create workspace"), "{text}");
    assert_eq!(env.arm_writes(), 0);
    assert_eq!(env.count("ResourceGroups_Get"), 1);

    // Against a live, reconciled object: no changes; with an edited spec: exactly the PATCH the controller would send.
    env.create(NS, "ws-plan", env.spec(&env.world.resource_group), &[]).await;
    let mut live = env.wait_ready(NS, "ws-plan").await;
    // The calls counted below are the dry run's alone: the controller's own resyncs (every second here) stop first.
    env.stop_controller().await;
    let steady = controller::dry_run(&env.client, &env.config, &live).await.unwrap();
    assert!(steady.plan().is_some_and(|p| p.converged()), "{steady:?}");
    live.spec.description = Some("new".into());
    env.sim.handle.clear_calls();
    let actions = controller::dry_run(&env.client, &env.config, &live).await.unwrap();
    let text = actions.render(&live);
    assert!(text.contains("update workspace") && text.contains("description"), "{text}");
    assert_eq!(env.arm_writes(), 0);

    // Not permitted: said so, and Azure is not asked.
    live.metadata.namespace = Some("team-b".into());
    env.sim.handle.clear_calls();
    let planned = controller::dry_run(&env.client, &env.config, &live).await.unwrap();
    assert!(matches!(planned, controller::DryRun::Blocked { reason: Reason::NotPermitted, .. }), "{planned:?}");
    assert_eq!(env.arm_calls(), 0);
}

#[tokio::test]
async fn secrets_in_arm_error_messages_never_reach_status_or_events() {
    let env = Env::start().await;
    let key = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LW11c3Qtbm90LWxlYWstMDEyMzQ1Njc4OQ==";
    env.sim.handle.inject_fault(error_fault(
        "Workspaces_CreateOrUpdate",
        400,
        "InvalidParameter",
        Some(format!("storage key {key} rejected")),
        None,
        None,
    ));
    env.create(NS, "ws-leak", env.spec(&env.world.resource_group), &[]).await;
    let ws = env.wait_for(NS, "ws-leak", "AzureRejected", stalled_with(Reason::AzureRejected)).await;
    let status = serde_json::to_string(&ws.status).unwrap();
    assert!(status.contains("[REDACTED]"), "{status}");
    let all = serde_json::to_string(&common::events(&env.client, NS).await).unwrap();
    let client_secret = env.world.operator.secret.expose();
    for text in [&status, &all] {
        assert!(!text.contains(key), "key leaked: {text}");
        assert!(!text.contains(client_secret), "client secret leaked");
    }
}

#[tokio::test]
async fn each_binding_uses_its_own_credential_and_a_rotated_secret_is_picked_up() {
    // Also: only the configured namespaces are watched.
    let env = Env::start_configured(Duration::from_millis(200), |c| {
        c.watch_namespaces = vec![NS.into(), "team-b".into()];
    })
    .await;
    env.create(OPERATOR_NS, "ws-unwatched", env.spec(&env.world.resource_group), &[]).await;
    // team-b gets its own binding and credential: the reader app, first with a wrong secret.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "reader-sp"},
        "stringData": {"clientSecret": "not-the-secret"},
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(env.client.clone(), OPERATOR_NS);
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let binding: SubscriptionBinding = serde_json::from_value(json!({
        "apiVersion": "azml.dev/v1alpha1",
        "kind": "SubscriptionBinding",
        "metadata": {"name": "team-b"},
        "spec": {
            "subscriptionId": env.world.subscription_id,
            "tenantId": env.world.tenant_id,
            "credential": {"clientSecret": {
                "clientId": env.world.reader.client_id,
                "secretRef": {"name": "reader-sp", "key": "clientSecret"},
            }},
            "namespaces": ["team-b"],
            "resourceGroups": ["rg-b-*"],
            // The workspace links the world's storage account and key vault by id: usable, not writable.
            "dependencyResourceGroups": [env.world.resource_group],
        }
    }))
    .unwrap();
    Api::<SubscriptionBinding>::all(env.client.clone()).create(&PostParams::default(), &binding).await.unwrap();

    env.create(NS, "ws-a", env.spec(&env.world.resource_group), &[]).await;
    env.create("team-b", "ws-b", env.spec("rg-b-1"), &[]).await;
    env.wait_ready(NS, "ws-a").await;
    // Entra ID refuses the secret: stalled until the binding or the Secret changes, not retried in a loop.
    let ws = env.wait_for("team-b", "ws-b", "CredentialUnavailable", stalled_with(Reason::CredentialUnavailable)).await;
    let message = &condition(&ws, conditions::STALLED).unwrap().message;
    assert!(!message.contains("not-the-secret"), "{message}");
    let refused_tokens = env.sim.handle.calls().iter().filter(|c| c.kind == CallKind::Auth && c.status >= 400).count();
    assert!(refused_tokens >= 1, "the wrong secret was never tried: {:?}", env.sim.handle.call_summary());

    // Rotate the Secret: its change wakes the stalled workspace (well before the 30 s stalled requeue) and the cached
    // credential is rebuilt. The reader app may read but not write: Azure says 403.
    let fixed = json!({"stringData": {"clientSecret": env.world.reader.secret.expose()}});
    secrets.patch("reader-sp", &PatchParams::default(), &Patch::Merge(&fixed)).await.unwrap();
    let ws = env.wait_for("team-b", "ws-b", "AzureRejected", stalled_with(Reason::AzureRejected)).await;
    assert!(condition(&ws, conditions::STALLED).unwrap().message.contains("AuthorizationFailed"));

    // Every ARM call about ws-b was made as the reader app, every call about ws-a as the operator app.
    let calls = env.sim.handle.calls();
    let principal_of = |fragment: &str| -> Vec<Option<String>> {
        calls
            .iter()
            .filter(|c| c.kind != CallKind::Auth && c.path.contains(fragment))
            .map(|c| c.principal.clone())
            .collect()
    };
    let b_calls = principal_of("rg-b-1");
    assert!(!b_calls.is_empty());
    assert!(b_calls.iter().all(|p| p.as_deref() == Some(env.world.reader.object_id.as_str())), "{b_calls:?}");
    let a_calls = principal_of("/workspaces/ws-a");
    assert!(!a_calls.is_empty());
    assert!(a_calls.iter().all(|p| p.as_deref() == Some(env.world.operator.object_id.as_str())), "{a_calls:?}");
    let unwatched = env.api(OPERATOR_NS).get("ws-unwatched").await.unwrap();
    assert!(
        unwatched.status.is_none() && unwatched.finalizers().is_empty(),
        "a namespace outside the watch list was reconciled"
    );
}

#[tokio::test]
async fn delete_policy_removes_only_the_role_assignments_the_operator_granted() {
    use azml_arm_simulator::{model::id_key, roles};
    let env = Env::start().await;
    let rg = env.world.resource_group.clone();
    let mut spec = env.spec(&rg);
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(NS, "ws-roles", spec, &[]).await;
    env.wait_ready(NS, "ws-roles").await;
    let rg_scope = env.world.resource_group_id.clone();
    let user = env.world.users[0].clone();
    let (granted, foreign, outside) = env.sim.handle.with_state(|s| {
        (
            s.assign_role(&rg_scope, roles::READER, &user),
            s.assign_role(&rg_scope, roles::CONTRIBUTOR, &user),
            s.assign_role(&format!("/subscriptions/{}", env.world.other_subscription_id), roles::READER, &user),
        )
    });
    let entry = |id: &str, state: &str| {
        let (scope, name) = id.split_once("/providers/Microsoft.Authorization/roleAssignments/").unwrap();
        json!({"principalId": user, "roleDefinitionId": roles::READER, "scopeKind": "ResourceGroup",
               "scope": scope, "assignmentName": name, "state": state})
    };
    let status = json!({"status": {"access": [entry(&granted, "Granted"), entry(&foreign, "Unmanaged"), entry(&outside, "Granted")]}});
    env.api(NS).patch_status("ws-roles", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    env.api(NS).delete("ws-roles", &DeleteParams::default()).await.unwrap();
    env.wait_gone(NS, "ws-roles").await;
    let exists = |id: &str| env.sim.handle.with_state(|s| s.role_assignments.contains_key(&id_key(id)));
    assert!(!exists(&granted), "the operator's assignment was left behind");
    assert!(exists(&foreign), "an assignment made by someone else was deleted");
    assert!(exists(&outside), "an assignment outside the workspace's scopes was deleted");
    assert!(env.sim.handle.resource(&env.workspace_id(&rg, "ws-roles")).is_none());
}

#[tokio::test]
async fn deletion_works_when_azure_already_lost_the_workspace() {
    let env = Env::start().await;
    let rg = env.world.resource_group.clone();
    let mut spec = env.spec(&rg);
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(NS, "ws-lost", spec, &[]).await;
    env.wait_ready(NS, "ws-lost").await;
    let id = env.workspace_id(&rg, "ws-lost");
    env.sim.handle.with_state(|s| s.resources.remove(&azml_arm_simulator::model::id_key(&id)));
    env.api(NS).delete("ws-lost", &DeleteParams::default()).await.unwrap();
    env.wait_gone(NS, "ws-lost").await;
    assert_eq!(env.count("Workspaces_Delete"), 0, "nothing left to delete");
    assert!(env.count("Workspaces_Get") >= 1);
}

#[tokio::test]
async fn an_operation_polled_too_long_is_forgotten_without_a_second_put() {
    let env = Env::start_configured(Duration::from_secs(3), |c| c.lro_timeout = Duration::from_millis(500)).await;
    env.create(NS, "ws-slow", env.spec(&env.world.resource_group), &[]).await;
    let ws = env
        .wait_for(NS, "ws-slow", "operation forgotten", |w| {
            condition(w, conditions::READY).is_some_and(|c| c.reason == Reason::OperationInProgress)
        })
        .await;
    assert!(ws.status.unwrap().pending_operation.is_none());
    env.wait_ready(NS, "ws-slow").await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1);
}

#[tokio::test]
async fn plan_command_prints_the_actions_for_a_file() {
    let env = Env::start().await;
    let mut ws = MlWorkspace::new("ws-cli", env.spec("rg-cli"));
    ws.metadata.namespace = Some(NS.into());
    let stdout = env.plan_file(&ws).await;
    assert!(stdout.contains(&format!("MlWorkspace {NS}/ws-cli")), "{stdout}");
    assert!(stdout.contains("1. create resource group") && stdout.contains("2. create workspace"), "{stdout}");
    assert_eq!(env.arm_writes(), 0);
    assert!(env.api(NS).get_opt("ws-cli").await.unwrap().is_none(), "plan created the object");
}

#[tokio::test]
async fn a_lost_operation_status_is_forgotten_without_a_second_put() {
    let env = Env::start_with(Duration::from_secs(2)).await;
    for op in ["Operations_GetResult", "Operations_GetStatus"] {
        env.sim.handle.inject_fault(FaultRule::error(op, 404, "OperationNotFound").times(1));
    }
    env.create(NS, "ws-lostop", env.spec(&env.world.resource_group), &[]).await;
    env.wait_ready(NS, "ws-lostop").await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 1, "{:?}", env.sim.handle.call_summary());
    let lost =
        env.sim.handle.calls().iter().filter(|c| c.operation.starts_with("Operations_") && c.status == 404).count();
    assert_eq!(lost, 1, "the injected 404 was not hit");
}

#[tokio::test]
async fn a_failed_deletion_is_retried_until_the_workspace_is_gone() {
    let env = Env::start().await;
    let rg = env.world.resource_group.clone();
    let mut spec = env.spec(&rg);
    spec.deletion_policy = WorkspaceDeletionPolicy::Delete;
    env.create(NS, "ws-redelete", spec, &[]).await;
    env.wait_ready(NS, "ws-redelete").await;
    env.sim.handle.inject_fault(FaultRule {
        operation: "Workspaces_Delete".into(),
        action: FaultAction::LroFailure { status: Some(500), code: "InternalServerError".into(), message: None },
        count: Some(1),
        rate: None,
    });
    env.api(NS).delete("ws-redelete", &DeleteParams::default()).await.unwrap();
    env.wait_gone(NS, "ws-redelete").await;
    assert!(env.sim.handle.resource(&env.workspace_id(&rg, "ws-redelete")).is_none());
    assert_eq!(env.count("Workspaces_Delete"), 2, "{:?}", env.sim.handle.call_summary());
}

#[tokio::test]
async fn a_failed_creation_is_sent_again() {
    let env = Env::start().await;
    env.sim.handle.inject_fault(FaultRule {
        operation: "Workspaces_CreateOrUpdate".into(),
        action: FaultAction::LroFailure { status: Some(500), code: "InternalServerError".into(), message: None },
        count: Some(1),
        rate: None,
    });
    env.create(NS, "ws-refail", env.spec(&env.world.resource_group), &[]).await;
    env.wait_ready(NS, "ws-refail").await;
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 2, "{:?}", env.sim.handle.call_summary());
}

/// kstatus reads a resource without status as Current: the controller must say at once that work is under way, before
/// its first (slow) look at Azure, so Flux and `kubectl wait` do not pass a workspace that was never reconciled.
#[tokio::test]
async fn a_new_workspace_reports_reconciling_before_the_first_azure_call() {
    let env = Env::start().await;
    env.sim.handle.inject_fault(FaultRule {
        operation: "Workspaces_Get".into(),
        action: FaultAction::Latency { millis: 3000 },
        count: Some(1),
        rate: None,
    });
    env.create(NS, "ws-slow", env.spec(&env.world.resource_group), &[]).await;
    let ws = env
        .wait_for(NS, "ws-slow", "an initial Reconciling status", |w| {
            condition(w, conditions::RECONCILING).is_some_and(|c| c.status == "True" && c.reason == Reason::Pending)
        })
        .await;
    assert_eq!(ws.status.as_ref().and_then(|s| s.observed_generation), ws.metadata.generation);
    assert!(!is_ready(&ws), "Ready before Azure was read");
    assert_eq!(env.count("Workspaces_CreateOrUpdate"), 0);
    env.wait_ready(NS, "ws-slow").await;
}
