//! MlCompute: the real controllers (workspace and compute) against the Kubernetes API emulator and the ARM simulator
//! (both on port 0): a cluster that scales and has its drift corrected, an instance stopped and started by
//! annotation, the binding's VM-size and node caps, the quota check before create, properties that need a
//! re-creation, move blocking and deletion (its own and with its workspace).

use std::time::Duration;

use crate::common;
use crate::env::{TestEnv, env_type};
use azml_arm_simulator::CallKind;
use azml_operator::api::conditions::{self, Reason};
use azml_operator::api::v1alpha1::{ANNOTATION_COMPUTE_ACTION, MlCompute, MlWorkspace};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};

const NS: &str = "team-a";
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(25);
const DSV2: &str = "Standard DSv2 Family Cluster Dedicated vCPUs";

env_type!(Env);

impl Env {
    /// `limits`: SubscriptionBinding spec fields on top of allowedVmSizes Standard_D* and maxNodesPerCluster 8.
    async fn start(limits: Value) -> Env {
        let mut binding = json!({"allowedVmSizes": ["Standard_D*"], "maxNodesPerCluster": 8});
        binding.as_object_mut().unwrap().extend(limits.as_object().cloned().unwrap_or_default());
        let env = TestEnv::builder()
            .bind(&[NS], binding)
            // Short resyncs: drift in Azure is found without a change in Kubernetes.
            .resync(Duration::from_secs(2))
            .stalled(Duration::from_secs(60))
            .start()
            .await;
        Env(env)
    }

    fn workspaces(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn computes(&self) -> Api<MlCompute> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_workspace(&self, name: &str, extra: Value) {
        let spec = common::workspace_spec(&self.world, extra);
        self.workspaces().create(&PostParams::default(), &MlWorkspace::new(name, spec)).await.unwrap();
        let check = async || {
            let ws = self.workspaces().get(name).await.unwrap();
            let ready = ws.status.as_ref().is_some_and(|s| has(&s.conditions, conditions::READY, "True"));
            if ready { Ok(()) } else { Err(ws.status) }
        };
        common::wait_until(WAIT, POLL, check, |s| format!("{name}: workspace not Ready: {s:#?}")).await
    }

    async fn create(&self, name: &str, spec: Value) -> Result<MlCompute, kube::Error> {
        let mc: MlCompute = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlCompute",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.computes().create(&PostParams::default(), &mc).await
    }

    async fn patch(&self, name: &str, patch: Value) -> Result<MlCompute, kube::Error> {
        self.computes().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&MlCompute) -> bool) -> MlCompute {
        common::wait_for(&self.computes(), name, what, (WAIT, POLL), &self.sim, done).await
    }

    async fn wait_reason(&self, name: &str, reason: Reason) -> MlCompute {
        self.wait(name, reason.as_str(), |mc| ready_reason(mc).as_deref() == Some(reason.as_str()) && current(mc)).await
    }

    async fn wait_gone(&self, name: &str) {
        common::wait_gone(&self.computes(), name, WAIT, POLL).await
    }

    fn compute_id(&self, ws: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/computes/{name}",
            self.world.subscription_id, self.world.resource_group
        )
    }

    fn azure(&self, ws: &str, name: &str) -> Option<Value> {
        self.sim.handle.resource(&self.compute_id(ws, name))
    }

    /// Calls of the simulator whose operation starts with `Compute_` (or is a usage/VM size read), as
    /// `METHOD Operation`.
    fn compute_calls(&self) -> Vec<String> {
        self.sim
            .handle
            .calls()
            .into_iter()
            .filter(|c| c.operation.starts_with("Compute_") || c.operation == "Usages_List")
            .map(|c| format!("{} {}", c.method, c.operation))
            .collect()
    }

    fn compute_writes(&self) -> Vec<String> {
        self.sim
            .handle
            .calls()
            .into_iter()
            .filter(|c| c.kind == CallKind::Write && c.path.to_ascii_lowercase().contains("/computes/"))
            .map(|c| format!("{} {}", c.method, c.operation))
            .collect()
    }

    fn set_quota(&self, name: &str, limit: i64, in_use: i64) {
        let (sub, loc) = (self.world.subscription_id.clone(), self.world.location.clone());
        self.sim.handle.with_state(|s| s.set_ml_quota(&sub, &loc, name, limit, in_use));
    }
}

fn has(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str, s: &str) -> bool {
    conds.iter().any(|c| c.type_ == t && c.status == s)
}

fn condition<'a>(mc: &'a MlCompute, t: &str) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    mc.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

fn ready_reason(mc: &MlCompute) -> Option<String> {
    condition(mc, conditions::READY).map(|c| c.reason.clone())
}

fn current(mc: &MlCompute) -> bool {
    mc.status.as_ref().and_then(|s| s.observed_generation) == mc.metadata.generation
}

fn ready(mc: &MlCompute) -> bool {
    condition(mc, conditions::READY).is_some_and(|c| c.status == "True") && current(mc)
}

fn cluster(ws: &str, min: i32, max: i32) -> Value {
    json!({
        "workspaceRef": {"name": ws},
        "amlCompute": {"vmSize": "Standard_DS3_v2", "scale": {"minNodes": min, "maxNodes": max, "idleBeforeScaleDown": "2m"}},
        "deletionPolicy": "Delete",
    })
}

fn instance(ws: &str) -> Value {
    json!({
        "workspaceRef": {"name": ws},
        "computeInstance": {
            "vmSize": "Standard_DS11_v2",
            "assignedTo": "a11ce000-0000-4000-8000-000000000001",
            "idleShutdownAfter": "60m",
            "schedules": [{"action": "Stop", "cron": "0 19 * * 1-5", "timeZone": "W. Europe Standard Time"}],
        },
        "deletionPolicy": "Delete",
    })
}

/// A cluster: created with its nodes as the scale settings say, no writes in steady state, a scale change with one
/// PATCH, drift in Azure put back with one PATCH, deleted in Azure with deletionPolicy Delete.
#[tokio::test]
async fn cluster_scales_corrects_drift_and_is_deleted() {
    let env = Env::start(json!({})).await;
    env.create_workspace("ws-c", json!({})).await;
    env.create("cpu", cluster("ws-c", 1, 4)).await.unwrap();
    let mc = env.wait("cpu", "Ready", ready).await;
    let status = mc.status.clone().unwrap();
    assert_eq!(status.compute_type.as_deref(), Some("AmlCompute"));
    assert_eq!((status.current_node_count, status.target_node_count), (Some(1), Some(1)));
    assert_eq!(status.provisioning_state.as_deref(), Some("Succeeded"));
    assert!(has(&status.conditions, azml_operator::compute::USABLE, "True"));
    assert_eq!(status.binding.as_deref(), Some("sandbox"), "the binding whose credential it uses");
    let ws = env.workspaces().get("ws-c").await.unwrap();
    assert!(mc.owner_references().iter().any(|r| Some(&r.uid) == ws.metadata.uid.as_ref() && r.kind == "MlWorkspace"));
    let azure = env.azure("ws-c", "cpu").unwrap();
    let owner = format!("{NS}/cpu/{}", mc.uid().unwrap());
    assert_eq!(azure["tags"]["azml.dev-owner"], json!(owner));
    assert_eq!(azure["properties"]["properties"]["remoteLoginPortPublicAccess"], json!("Disabled"));
    assert_eq!(azure["properties"]["properties"]["scaleSettings"]["nodeIdleTimeBeforeScaleDown"], json!("PT2M"));
    // The quota was read once, before the create.
    assert_eq!(env.sim.handle.count("Usages_List"), 1);
    assert_eq!(env.sim.handle.count("VirtualMachineSizes_List"), 1);

    // Steady state: resyncs read the compute and write nothing.
    env.sim.handle.clear_calls();
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.sim.handle.count("Compute_Get") < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no resync: {:?}", env.sim.handle.call_summary());
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(env.compute_writes(), Vec::<String>::new(), "steady state wrote");
    assert_eq!(env.sim.handle.count("Usages_List"), 0, "the quota is read before a create only");

    // Scale change: one PATCH, nodes follow.
    env.patch("cpu", json!({"spec": {"amlCompute": {"scale": {"minNodes": 2, "maxNodes": 6}}}})).await.unwrap();
    let mc = env.wait("cpu", "2 nodes", |m| ready(m) && m.status.as_ref().unwrap().current_node_count == Some(2)).await;
    assert_eq!(env.compute_writes(), ["PATCH Compute_Update"]);
    assert_eq!(
        env.azure("ws-c", "cpu").unwrap()["properties"]["properties"]["scaleSettings"]["maxNodeCount"],
        json!(6)
    );
    assert_eq!(mc.status.unwrap().target_node_count, Some(2));

    // Drift: someone scales the cluster down in Azure; the next resync puts the spec back with one PATCH.
    env.sim.handle.clear_calls();
    let id = env.compute_id("ws-c", "cpu");
    env.sim
        .handle
        .edit_resource(
            &id,
            &json!({"properties": {"properties": {"scaleSettings": {"minNodeCount": 0, "maxNodeCount": 1}}}}),
        )
        .unwrap();
    let check = async || {
        let v = env.azure("ws-c", "cpu").unwrap();
        if v["properties"]["properties"]["scaleSettings"]["maxNodeCount"] == json!(6) { Ok(()) } else { Err(v) }
    };
    common::wait_until(WAIT, POLL, check, |v| format!("drift not corrected: {v:#}")).await;
    assert_eq!(env.compute_writes(), ["PATCH Compute_Update"]);
    let events = common::events(&env.client, NS).await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("DriftCorrected")), "no DriftCorrected event");

    // Delete: gone in Azure.
    env.computes().delete("cpu", &DeleteParams::default()).await.unwrap();
    env.wait_gone("cpu").await;
    assert!(env.azure("ws-c", "cpu").is_none());
    env.stop().await;
}

/// An instance: created running; stopped and started once per annotation value; its idle time updated with
/// updateIdleShutdownSetting.
#[tokio::test]
async fn instance_stops_and_starts_once_per_annotation_value() {
    let env = Env::start(json!({})).await;
    env.create_workspace("ws-i", json!({})).await;
    env.create("alice-nb", instance("ws-i")).await.unwrap();
    let mc = env
        .wait("alice-nb", "Ready and running", |m| {
            ready(m) && m.status.as_ref().unwrap().state.as_deref() == Some("Running")
        })
        .await;
    assert_eq!(mc.status.unwrap().compute_type.as_deref(), Some("ComputeInstance"));
    let azure = env.azure("ws-i", "alice-nb").unwrap();
    let props = &azure["properties"]["properties"];
    assert_eq!(
        props["personalComputeInstanceSettings"]["assignedUser"]["objectId"],
        json!("a11ce000-0000-4000-8000-000000000001")
    );
    assert_eq!(props["idleTimeBeforeShutdown"], json!("PT1H"));
    assert_eq!(props["schedules"]["computeStartStop"][0]["cron"]["timeZone"], json!("W. Europe Standard Time"));

    // Stop.
    env.patch("alice-nb", json!({"metadata": {"annotations": {ANNOTATION_COMPUTE_ACTION: "stop:1"}}})).await.unwrap();
    let mc = env
        .wait("alice-nb", "stopped", |m| m.status.as_ref().is_some_and(|s| s.state.as_deref() == Some("Stopped")))
        .await;
    assert_eq!(mc.status.as_ref().unwrap().last_action_request.as_deref(), Some("stop:1"));
    let usable = condition(&mc, azml_operator::compute::USABLE).unwrap();
    assert_eq!((usable.status.as_str(), usable.reason.as_str()), ("False", Reason::InstanceStopped.as_str()));
    assert_eq!(env.sim.handle.count("Compute_Stop"), 1);
    // The same value never acts again (several resyncs pass).
    let gets = env.sim.handle.count("Compute_Get");
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.sim.handle.count("Compute_Get") < gets + 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(env.sim.handle.count("Compute_Stop"), 1);

    // Start, and a new idle time, in one change.
    let patch = json!({
        "metadata": {"annotations": {ANNOTATION_COMPUTE_ACTION: "start:2"}},
        "spec": {"computeInstance": {"idleShutdownAfter": "30m"}},
    });
    env.patch("alice-nb", patch).await.unwrap();
    env.wait("alice-nb", "running again", |m| {
        ready(m)
            && m.status.as_ref().is_some_and(|s| {
                s.state.as_deref() == Some("Running") && s.last_action_request.as_deref() == Some("start:2")
            })
    })
    .await;
    assert_eq!(env.sim.handle.count("Compute_Start"), 1);
    assert_eq!(env.sim.handle.count("Compute_UpdateIdleShutdownSetting"), 1);
    assert_eq!(
        env.azure("ws-i", "alice-nb").unwrap()["properties"]["properties"]["idleTimeBeforeShutdown"],
        json!("PT30M")
    );
    assert_eq!(env.sim.handle.count("Compute_CreateOrUpdate"), 1, "no re-creation, no PUT for the idle time");

    // A new schedule: one PUT with the same immutable properties.
    let schedules = json!([{"action": "Stop", "cron": "0 20 * * *", "timeZone": "UTC"}]);
    env.patch("alice-nb", json!({"spec": {"computeInstance": {"schedules": schedules}}})).await.unwrap();
    let check = async || {
        let v = env.azure("ws-i", "alice-nb").unwrap();
        let cron = v["properties"]["properties"]["schedules"]["computeStartStop"][0]["cron"]["expression"].clone();
        if cron == json!("0 20 * * *") { Ok(()) } else { Err(cron) }
    };
    common::wait_until(WAIT, POLL, check, |c| format!("schedule not updated: {c}")).await;
    env.wait("alice-nb", "Ready", ready).await;
    assert_eq!(env.sim.handle.count("Compute_CreateOrUpdate"), 2);
    env.stop().await;
}

/// Policy: a VM size outside allowedVmSizes and a cluster above maxNodesPerCluster are NotPermitted with no Azure
/// call. Quota: a compute the quota cannot hold stalls with QuotaExceeded naming the family, limit and usage, and
/// nothing is created; raising the quota lets it through.
#[tokio::test]
async fn policy_and_quota_stall_before_any_create() {
    let env = Env::start(json!({})).await;
    env.create_workspace("ws-p", json!({})).await;
    env.sim.handle.clear_calls();

    let mut gpu = cluster("ws-p", 0, 2);
    gpu["amlCompute"]["vmSize"] = json!("Standard_NC6s_v3");
    env.create("gpu", gpu).await.unwrap();
    let mc = env.wait_reason("gpu", Reason::NotPermitted).await;
    let stalled = condition(&mc, conditions::STALLED).unwrap();
    assert_eq!(stalled.status, "True");
    assert!(
        stalled.message.contains("does not allow VM size Standard_NC6s_v3 (allowedVmSizes: Standard_D*)"),
        "{}",
        stalled.message
    );

    env.create("big", cluster("ws-p", 0, 9)).await.unwrap();
    let mc = env.wait_reason("big", Reason::NotPermitted).await;
    assert!(condition(&mc, conditions::STALLED).unwrap().message.contains("at most 8 nodes per cluster"));
    assert_eq!(env.compute_calls(), Vec::<String>::new(), "NotPermitted computes make no Azure call");

    // 6 nodes x 4 vCPUs = 24 > 30 - 10 free in the family.
    env.set_quota(DSV2, 30, 10);
    env.create("cpu", cluster("ws-p", 0, 6)).await.unwrap();
    let mc = env.wait_reason("cpu", Reason::QuotaExceeded).await;
    let message = condition(&mc, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains(DSV2), "{message}");
    assert!(message.contains("limit 30, current usage 10, this compute needs 24"), "{message}");
    assert_eq!(env.sim.handle.count("Compute_CreateOrUpdate"), 0, "nothing was created");
    assert!(env.azure("ws-p", "cpu").is_none());
    let usable = condition(&mc, azml_operator::compute::USABLE).unwrap();
    assert_eq!(usable.reason, Reason::QuotaExceeded);

    // Lowering maxNodes (a spec change) lets it fit.
    env.patch("cpu", json!({"spec": {"amlCompute": {"scale": {"maxNodes": 5}}}})).await.unwrap();
    env.wait("cpu", "Ready", ready).await;
    assert_eq!(env.sim.handle.count("Compute_CreateOrUpdate"), 1);
    env.stop().await;
}

/// Creation-only properties: admission refuses vmSize and type changes; a priority change stalls with
/// RecreateRequired and nothing is deleted. Computes block a workspace move; deleting the workspace with
/// deletionPolicy Delete deletes its MlComputes (and so the computes in Azure) first.
#[tokio::test]
async fn immutability_move_blocking_and_workspace_deletion() {
    let env = Env::start(json!({"allowMoves": true})).await;
    env.create_workspace("ws-m", json!({"deletionPolicy": "Delete"})).await;
    env.create("cpu", cluster("ws-m", 0, 2)).await.unwrap();
    env.wait("cpu", "Ready", ready).await;

    let err = env.patch("cpu", json!({"spec": {"amlCompute": {"vmSize": "Standard_DS4_v2"}}})).await.unwrap_err();
    assert!(err.to_string().contains("vmSize is immutable"), "{err}");
    let err = env
        .patch("cpu", json!({"spec": {"amlCompute": null, "computeInstance": instance("ws-m")["computeInstance"]}}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the compute type is immutable"), "{err}");

    env.sim.handle.clear_calls();
    env.patch("cpu", json!({"spec": {"amlCompute": {"vmPriority": "LowPriority"}}})).await.unwrap();
    let mc = env.wait_reason("cpu", Reason::RecreateRequired).await;
    let message = condition(&mc, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("amlCompute.vmPriority (Azure: Dedicated, spec: LowPriority)"), "{message}");
    assert!(env.azure("ws-m", "cpu").is_some(), "never deleted on its own");
    assert_eq!(env.compute_writes(), Vec::<String>::new());
    env.patch("cpu", json!({"spec": {"amlCompute": {"vmPriority": "Dedicated"}}})).await.unwrap();
    env.wait("cpu", "Ready", ready).await;

    // A move of the workspace is blocked by its compute, before Azure is asked.
    env.sim.handle.clear_calls();
    let patch = json!({"spec": {"resourceGroup": "rg-target"}});
    env.workspaces().patch("ws-m", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let check = async || {
        let ws = env.workspaces().get("ws-m").await.unwrap();
        let stalled =
            ws.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::STALLED).cloned());
        match stalled {
            Some(c) if c.reason == Reason::MoveBlocked => Ok(c.message),
            other => Err(other),
        }
    };
    let message = common::wait_until(WAIT, POLL, check, |c| format!("move not blocked: {c:#?}")).await;
    assert!(message.contains("computes (cpu)"), "{message}");
    assert_eq!(env.sim.handle.count("Resources_ValidateMoveResources"), 0);
    let patch = json!({"spec": {"resourceGroup": env.world.resource_group}});
    env.workspaces().patch("ws-m", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    // Deleting the workspace deletes the MlCompute first, and with it the compute in Azure.
    env.workspaces().delete("ws-m", &DeleteParams::default()).await.unwrap();
    env.wait_gone("cpu").await;
    assert!(env.azure("ws-m", "cpu").is_none());
    let check = async || match env.workspaces().get_opt("ws-m").await.unwrap() {
        None => Ok(()),
        Some(ws) => Err(ws.status),
    };
    common::wait_until(WAIT, POLL, check, |s| format!("workspace not deleted: {s:#?}")).await;
    env.stop().await;
}

/// Paused: a scale change is withheld and reported; Retain leaves the compute in Azure.
#[tokio::test]
async fn paused_withholds_and_retain_leaves_azure_alone() {
    let env = Env::start(json!({})).await;
    env.create_workspace("ws-r", json!({})).await;
    let mut spec = cluster("ws-r", 0, 2);
    spec["deletionPolicy"] = json!("Retain");
    env.create("keep", spec).await.unwrap();
    env.wait("keep", "Ready", ready).await;
    env.patch("keep", json!({"metadata": {"annotations": {"azml.dev/paused": "true"}}})).await.unwrap();
    env.sim.handle.clear_calls();
    env.patch("keep", json!({"spec": {"amlCompute": {"scale": {"maxNodes": 3}}}})).await.unwrap();
    let mc = env.wait_reason("keep", Reason::Paused).await;
    assert!(condition(&mc, conditions::READY).unwrap().message.contains("withheld: update the scale settings"));
    assert_eq!(env.compute_writes(), Vec::<String>::new());
    env.computes().delete("keep", &DeleteParams::default()).await.unwrap();
    env.wait_gone("keep").await;
    assert!(env.azure("ws-r", "keep").is_some());
    env.stop().await;
}

/// `azml-operator plan -f` on an MlCompute: the same policy check, quota read and plan as a reconcile, no write.
#[tokio::test]
async fn plan_command_covers_mlcompute() {
    let env = Env::start(json!({})).await;
    env.create_workspace("ws-plan", json!({})).await;
    let run = async |spec: Value| -> String {
        let doc = json!({"apiVersion": "azml.dev/v1alpha1", "kind": "MlCompute", "metadata": {"name": "planned", "namespace": NS}, "spec": spec});
        env.plan_file(&doc).await
    };
    let out = run(cluster("ws-plan", 0, 4)).await;
    assert!(out.contains(&format!("MlCompute {NS}/planned")), "{out}");
    assert!(out.contains("1. create the AmlCompute (Compute_CreateOrUpdate)"), "{out}");
    env.set_quota(DSV2, 8, 0);
    let out = run(cluster("ws-plan", 0, 4)).await;
    assert!(out.contains("stalled (QuotaExceeded)") && out.contains("limit 8"), "{out}");
    let mut gpu = cluster("ws-plan", 0, 1);
    gpu["amlCompute"]["vmSize"] = json!("Standard_NC6s_v3");
    let out = run(gpu).await;
    assert!(out.contains("blocked (NotPermitted)"), "{out}");
    assert_eq!(env.compute_writes(), Vec::<String>::new());
    assert!(env.computes().get_opt("planned").await.unwrap().is_none(), "plan created the object");
    env.stop().await;
}

/// Errors Azure reports on a compute reach the status: a cluster that cannot reach minNodes for lack of quota is
/// not Ready (reason ComputeErrors) and not Usable, with Azure's code and message; raising the quota and the next
/// scale change clear it.
#[tokio::test]
async fn errors_azure_reports_on_the_compute_are_in_the_status() {
    let env = Env::start(json!({})).await;
    env.create_workspace("ws-e", json!({})).await;
    env.create("cpu", cluster("ws-e", 0, 2)).await.unwrap();
    env.wait("cpu", "Ready", ready).await;
    // Other teams take the family's quota: 4 vCPUs left, one node.
    env.set_quota(DSV2, 24, 20);
    env.patch("cpu", json!({"spec": {"amlCompute": {"scale": {"minNodes": 2}}}})).await.unwrap();
    let mc = env.wait_reason("cpu", Reason::ComputeErrors).await;
    let status = mc.status.clone().unwrap();
    assert_eq!((status.current_node_count, status.target_node_count), (Some(1), Some(2)));
    assert!(status.errors.iter().any(|e| e.starts_with("QuotaExceeded: ") && e.contains(DSV2)), "{:?}", status.errors);
    let usable = condition(&mc, azml_operator::compute::USABLE).unwrap();
    assert_eq!((usable.status.as_str(), usable.reason.as_str()), ("False", Reason::ComputeErrors.as_str()));
    assert_eq!(env.compute_writes(), ["PUT Compute_CreateOrUpdate", "PATCH Compute_Update"]);
    // Quota raised, minNodes back to 1: one more PATCH, no errors, Ready.
    env.set_quota(DSV2, 48, 20);
    env.patch("cpu", json!({"spec": {"amlCompute": {"scale": {"minNodes": 1}}}})).await.unwrap();
    let mc = env
        .wait("cpu", "Ready without errors", |m| ready(m) && m.status.as_ref().is_some_and(|s| s.errors.is_empty()))
        .await;
    assert_eq!(mc.status.unwrap().current_node_count, Some(1));
    env.stop().await;
}
