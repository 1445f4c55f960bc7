//! The soak: many workspaces under injected faults (5xx, 429, failed long-running operations, latency) for one
//! scaled hour of changes, then the faults stop and everything must converge with no duplicate role assignment and
//! nothing orphaned. Shared by `benches/soak.rs` (full size: 200 workspaces, 20 % faults) and `tests/soak.rs` (a
//! small size inside the normal test run). Included with `#[path]` beside `common`.
//!
//! Time is scaled: the simulated hour lasts [`SoakOptions::hour`] of real time, and every period of the operator
//! (resync 1 h, LRO polls 5..60 s, back-off 5 s..5 min, key-signal interval 60 s) and of Azure (LROs of 30 s,
//! 2 s of added latency) is divided by the same factor.
//!
//! During the hour: at 10 % every workspace is created; at 30 % a fifth of them change properties; at 50 % a tenth
//! get a requested key resync and a tenth change their access (one grant, one prune); at 70 % a twentieth (with
//! `deletionPolicy: Delete`) are deleted. The workspaces with `rotateEvery` rotate their account's key once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azml_arm_simulator::model::id_key;
use azml_arm_simulator::{FaultAction, FaultRule, OpCount, World, roles};
use azml_operator::api::conditions;
use azml_operator::api::v1alpha1::{ANNOTATION_RESYNC_KEYS, MlWorkspace};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{self, Emulators, RunningController, condition, is_current};

const NS: &str = "soak";
const OPERATOR_NS: &str = "azml-system";
const RG: &str = "rg-soak";
/// Workspaces per subscription (ARM throttles per subscription, as the operator's users spread theirs).
const PER_SUBSCRIPTION: usize = 50;

/// How big and how hostile.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Workspaces declared.
    pub workspaces: usize,
    /// Real duration of the simulated hour.
    pub hour: Duration,
    /// Share of ARM calls hit by an injected fault (0..1).
    pub fault_rate: f64,
    /// How long convergence may take once the faults stop (real time).
    pub settle: Duration,
}

/// What the soak found.
#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    /// Workspaces that must exist at the end.
    pub expected: usize,
    /// Of those, Ready with keys in sync and access granted, in Azure with their declared properties.
    pub converged: usize,
    /// Deleted workspaces whose custom resource is gone and which are gone from Azure.
    pub deleted: usize,
    /// Deletions expected.
    pub deletions: usize,
    /// Role assignments that exist more than once (same scope, role, principal).
    pub duplicates: usize,
    /// Assignments or workspaces in Azure that nothing declares.
    pub orphans: usize,
    /// Declared assignments missing in Azure.
    pub missing: usize,
    /// Calls per ARM operation (errors include the injected faults).
    pub calls: BTreeMap<String, OpCount>,
    /// Faulted ARM calls (status >= 400).
    pub faulted: u64,
    /// Real time to converge after the faults stopped.
    pub settle_time: Duration,
    /// Not converged, one line each (first few).
    pub problems: Vec<String>,
}

impl SoakReport {
    /// ARM calls (token calls excluded).
    pub fn total_calls(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(op, _)| !matches!(op.as_str(), "Token" | "OpenIdConfiguration"))
            .map(|(_, c)| c.calls)
            .sum()
    }

    /// A printable summary.
    pub fn render(&self, options: &SoakOptions) -> String {
        let mut out = format!(
            "soak: {} workspaces, {:.0} % faults, scaled hour {:?}\n  converged {}/{}, deleted {}/{}, duplicates {}, orphans {}, missing {}\n  ARM calls {} ({} faulted), settle {:.1?}\n",
            options.workspaces,
            options.fault_rate * 100.0,
            options.hour,
            self.converged,
            self.expected,
            self.deleted,
            self.deletions,
            self.duplicates,
            self.orphans,
            self.missing,
            self.total_calls(),
            self.faulted,
            self.settle_time,
        );
        for (op, c) in &self.calls {
            out.push_str(&format!("    {op:<44} {:>6} calls {:>6} errors\n", c.calls, c.errors));
        }
        for p in &self.problems {
            out.push_str(&format!("  ! {p}\n"));
        }
        out
    }
}

struct Plan {
    name: String,
    sub: String,
    storage: String,
    /// (principal, role GUID) granted at the workspace.
    access: Vec<(String, &'static str)>,
    deleted: bool,
}

fn access_json(access: &[(String, &'static str)]) -> Value {
    let role = |guid: &str| if guid == roles::READER { "Reader" } else { "AzureMLDataScientist" };
    Value::Array(access.iter().map(|(p, r)| json!({"principalId": p, "role": role(r), "scope": "Workspace"})).collect())
}

/// Runs the soak and reports; asserts nothing (the caller decides).
pub async fn run(options: &SoakOptions) -> SoakReport {
    let factor = (3600.0 / options.hour.as_secs_f64()).max(1.0);
    let scaled = |real: Duration| Duration::from_secs_f64(real.as_secs_f64() / factor).max(Duration::from_millis(10));
    let mut world = World::default_sandbox();
    let subscriptions = options.workspaces.div_ceil(PER_SUBSCRIPTION).max(1);
    let mut plans = Vec::new();
    let mut subs = Vec::new();
    for s in 0..subscriptions {
        let sub = format!("00000000-0000-4000-a000-{s:012}");
        world.state.add_subscription(&sub, &format!("soak-{s}"));
        let scope = format!("/subscriptions/{sub}");
        world.state.assign_role(&scope, roles::CONTRIBUTOR, &world.operator.object_id);
        world.state.assign_role(&scope, roles::USER_ACCESS_ADMINISTRATOR, &world.operator.object_id);
        world.state.add_resource_group(&sub, RG, &world.location);
        subs.push(sub);
    }
    let (alice, bob, group) = (world.users[0].clone(), world.users[1].clone(), world.group.clone());
    for i in 0..options.workspaces {
        let sub = subs[i / PER_SUBSCRIPTION].clone();
        let rg = format!("/subscriptions/{sub}/resourceGroups/{RG}");
        // One storage account per five workspaces: a rotation or resync touches its neighbours.
        let storage = format!("stsoak{:05}", i / 5);
        let sa_id = format!("{rg}/providers/Microsoft.Storage/storageAccounts/{storage}");
        if i % 5 == 0 {
            let sa = json!({"location": world.location, "kind": "StorageV2", "sku": {"name": "Standard_LRS"}});
            world.state.put_resource(&sa_id, "Microsoft.Storage/storageAccounts", sa);
            world.state.put_resource(
                &format!("{rg}/providers/Microsoft.KeyVault/vaults/kv-soak{:05}", i / 5),
                "Microsoft.KeyVault/vaults",
                json!({"location": world.location}),
            );
        }
        let mut access = vec![(alice.clone(), roles::READER)];
        if i % 2 == 0 {
            access.push((group.clone(), roles::AZUREML_DATA_SCIENTIST));
        }
        plans.push(Plan { name: format!("ws-soak-{i:04}"), sub, storage, access, deleted: false });
    }

    let Emulators { kube: _kube, client, sim } = Emulators::start(&world, scaled(Duration::from_secs(30))).await;
    common::install_crds(&client, azml_operator::api::all_crds()).await;
    common::create_namespaces(&client, &[NS, OPERATOR_NS]).await;
    let limits = json!({"allowedRoles": ["Reader", "AzureMLDataScientist"], "allowedScopes": ["Workspace"]});
    common::seed_operator_binding(&client, &world, OPERATOR_NS, &["unused"], json!({})).await;
    for (s, sub) in subs.iter().enumerate() {
        common::create_operator_binding(&client, &world, &format!("soak-{s}"), sub, &[NS], limits.clone()).await;
    }
    let mut config = common::fast_config(&sim, OPERATOR_NS);
    config.resync_period = scaled(Duration::from_secs(3600));
    config.stalled_requeue = config.resync_period;
    config.lro_poll_min = scaled(Duration::from_secs(5));
    config.lro_poll_max = scaled(Duration::from_secs(60));
    config.error_backoff_base = scaled(Duration::from_secs(5));
    config.error_backoff_max = scaled(Duration::from_secs(300));
    config.key_signal_interval = scaled(Duration::from_secs(60));
    config.principal_wait = scaled(Duration::from_secs(600));
    config.concurrency = 16;
    let controller = RunningController::start(client.clone(), config);

    // Faults: together about `fault_rate` of the calls.
    let f = options.fault_rate;
    let error = |status: u16, code: &str, rate: f64, retry_after: Option<u64>| FaultRule {
        operation: "*".into(),
        action: FaultAction::Error { status, code: code.into(), message: None, retry_after },
        count: None,
        rate: Some(rate),
    };
    if f > 0.0 {
        sim.handle.inject_fault(error(500, "InternalServerError", f * 0.3, None));
        sim.handle.inject_fault(error(503, "ServiceUnavailable", f * 0.2, None));
        sim.handle.inject_fault(error(429, "TooManyRequests", f * 0.2, Some(1)));
        sim.handle.inject_fault(FaultRule {
            operation: "*".into(),
            action: FaultAction::LroFailure { status: None, code: "InternalServerError".into(), message: None },
            count: None,
            rate: Some(f * 0.15),
        });
        let millis = u64::try_from(scaled(Duration::from_secs(2)).as_millis()).unwrap_or(u64::MAX);
        sim.handle.inject_fault(FaultRule {
            operation: "*".into(),
            action: FaultAction::Latency { millis },
            count: None,
            rate: Some(f * 0.15),
        });
    }

    let api: Api<MlWorkspace> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    let at = |share: f64| async move {
        let when = options.hour.mul_f64(share);
        if let Some(wait) = when.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    };
    at(0.1).await;
    for (i, p) in plans.iter().enumerate() {
        let mut spec = json!({
            "subscriptionId": p.sub,
            "resourceGroup": RG,
            "location": world.location,
            "storageAccount": {"name": p.storage},
            "keyVault": {"name": format!("kv-soak{:05}", i / 5)},
            "access": access_json(&p.access),
            "deletionPolicy": if i % 20 == 7 { "Delete" } else { "Retain" },
        });
        if i % 10 == 3 {
            spec["storageKeys"] = json!({"rotateEvery": "90d"});
        }
        let ws = MlWorkspace::new(&p.name, serde_json::from_value(spec).expect("spec"));
        api.create(&PostParams::default(), &ws).await.unwrap_or_else(|e| panic!("create {}: {e}", p.name));
    }
    at(0.3).await;
    for p in plans.iter().step_by(5) {
        let patch = json!({"spec": {"friendlyName": format!("{} (soaked)", p.name), "tags": {"soak": "1"}}});
        api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    }
    at(0.5).await;
    for p in plans.iter().skip(1).step_by(10) {
        let patch = json!({"metadata": {"annotations": {ANNOTATION_RESYNC_KEYS: "soak"}}});
        api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    }
    for p in plans.iter_mut().skip(2).step_by(10) {
        // One grant (bob), one prune (alice).
        p.access = vec![(bob.clone(), roles::READER)];
        let patch = json!({"spec": {"access": access_json(&p.access)}});
        api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("access");
    }
    at(0.7).await;
    for (i, p) in plans.iter_mut().enumerate() {
        if i % 20 == 7 {
            p.deleted = true;
            api.delete(&p.name, &DeleteParams::default()).await.expect("delete");
        }
    }
    at(1.0).await;
    sim.handle.clear_faults();

    // Settle: everything converges once Azure behaves.
    let settle_start = Instant::now();
    let mut report = loop {
        let report = check(&api, &sim.handle, &plans).await;
        let done = report.converged == report.expected && report.deleted == report.deletions;
        if done || settle_start.elapsed() >= options.settle {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.settle_time = settle_start.elapsed();
    report.calls = sim.handle.call_summary();
    report.faulted = report
        .calls
        .iter()
        .filter(|(op, _)| !matches!(op.as_str(), "Token" | "OpenIdConfiguration"))
        .map(|(_, c)| c.errors)
        .sum();
    controller.cancel(Duration::from_secs(10)).await;
    report
}

/// Compares Kubernetes and Azure with the plans.
async fn check(api: &Api<MlWorkspace>, sim: &azml_arm_simulator::SimHandle, plans: &[Plan]) -> SoakReport {
    let mut report = SoakReport::default();
    let listed: BTreeMap<String, MlWorkspace> = api
        .list(&Default::default())
        .await
        .map(|l| l.items.into_iter().map(|w| (w.metadata.name.clone().unwrap_or_default(), w)).collect())
        .unwrap_or_default();
    let state = sim.snapshot();
    // (scope, role, principal) -> count, of the soak's subscriptions.
    let mut assignments: BTreeMap<(String, String, String), (usize, Option<String>)> = BTreeMap::new();
    for ra in state.role_assignments.values() {
        if ra.description.as_deref().is_some_and(|d| d.contains(&format!(" {NS}/"))) {
            let key =
                (id_key(&ra.scope), ra.role_definition_guid.to_ascii_lowercase(), ra.principal_id.to_ascii_lowercase());
            let entry = assignments.entry(key).or_insert((0, ra.description.clone()));
            entry.0 += 1;
        }
    }
    report.duplicates = assignments.values().filter(|(n, _)| *n > 1).map(|(n, _)| n - 1).sum();
    let mut declared = std::collections::BTreeSet::new();
    for p in plans {
        let ws_id = format!(
            "/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{}",
            p.sub, p.name
        );
        let in_azure = state.resources.contains_key(&id_key(&ws_id));
        if p.deleted {
            report.deletions += 1;
            // deletionPolicy Delete (all deleted ones have it): gone in Kubernetes and Azure.
            if !listed.contains_key(&p.name) && !in_azure {
                report.deleted += 1;
            } else if report.problems.len() < 10 {
                report.problems.push(format!(
                    "{}: not deleted (in Kubernetes {}, in Azure {in_azure})",
                    p.name,
                    listed.contains_key(&p.name)
                ));
            }
            continue;
        }
        report.expected += 1;
        let mut ok = in_azure;
        for (principal, role) in &p.access {
            let key = (id_key(&ws_id), role.to_string(), principal.to_ascii_lowercase());
            declared.insert(key.clone());
            if !assignments.contains_key(&key) {
                report.missing += 1;
                ok = false;
            }
        }
        let settled = listed.get(&p.name).is_some_and(|ws| {
            let is = |t: &str| condition(ws, t).is_some_and(|c| c.status == "True");
            is_current(ws)
                && is(conditions::READY)
                && is(conditions::STORAGE_KEYS_IN_SYNC)
                && condition(ws, conditions::ACCESS_GRANTED).is_none_or(|c| c.status == "True")
                && ws.status.as_ref().and_then(|s| s.pending_operation.as_ref()).is_none()
        });
        if ok && settled {
            report.converged += 1;
        } else if report.problems.len() < 10 {
            let status = listed.get(&p.name).and_then(|w| w.status.as_ref()).map(|s| {
                s.conditions
                    .iter()
                    .filter(|c| c.status != "True" || c.type_ == conditions::READY)
                    .map(|c| format!("{}={} {}", c.type_, c.status, c.reason))
                    .collect::<Vec<_>>()
            });
            report.problems.push(format!("{}: in Azure {in_azure}, status {status:?}", p.name));
        }
    }
    report.orphans = assignments.keys().filter(|k| !declared.contains(*k)).count();
    // Workspaces in Azure that no remaining plan declares (a deleted one still there counts above, not here).
    let wanted: std::collections::BTreeSet<String> = plans.iter().map(|p| p.name.to_ascii_lowercase()).collect();
    report.orphans += state
        .resources
        .values()
        .filter(|r| r.rtype.eq_ignore_ascii_case("Microsoft.MachineLearningServices/workspaces"))
        .filter(|r| !wanted.contains(&r.id.rsplit('/').next().unwrap_or_default().to_ascii_lowercase()))
        .count();
    report
}
