//! The Argo CD health check shipped in deploy/argocd/ (Lua, run by Argo CD's Lua 5.1 interpreter) applied to the
//! statuses the controllers really write: each kstatus outcome maps to the Argo CD health it should.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::{Value, json};

use crate::api::conditions::Reason;
use crate::controller::outcome::StatusChanges;
use crate::controller::status::{self, Phase};

const HEALTH_LUA: &str = include_str!("../../../deploy/argocd/health.lua");
const ARGOCD_CM: &str = include_str!("../../../deploy/argocd/argocd-cm.yaml");

/// Runs the health check on `obj` as Argo CD does (the object as a global `obj`); returns (status, message).
fn health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    let value = lua.to_value(obj).expect("object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let hs: Table = lua.load(HEALTH_LUA).eval().expect("health.lua runs");
    (hs.get("status").expect("status"), hs.get::<Option<String>>("message").expect("message").unwrap_or_default())
}

fn workspace_status(phase: Phase, generation: i64) -> Value {
    let now = Time(jiff::Timestamp::now());
    let status = status::compute(None, Some(generation), &phase, &StatusChanges::default(), &now);
    serde_json::to_value(status).expect("status to JSON")
}

fn workspace(generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "azml.dev/v1alpha1", "kind": "MlWorkspace",
        "metadata": {"name": "ws", "namespace": "team-a", "generation": generation},
        "spec": {},
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

#[test]
fn each_outcome_maps_to_its_argo_cd_health() {
    let progressing = Phase::Progressing { reason: Reason::Creating, message: "creating the workspace".into() };
    let stalled = Phase::Stalled { reason: Reason::NotPermitted, message: "no binding allows it".into() };
    let transient = Phase::Transient { message: "ARM answered 503".into() };
    let paused = Phase::Paused { in_sync: false, message: "withheld: update".into() };
    let cases = [
        (Phase::Ready, "Healthy"),
        (progressing, "Progressing"),
        (stalled, "Degraded"),
        (transient, "Progressing"),
        (paused, "Suspended"),
    ];
    for (phase, expected) in cases {
        let label = format!("{phase:?}");
        let (health, message) = health(&workspace(3, Some(workspace_status(phase, 3))));
        assert_eq!(health, expected, "{label}: {message}");
    }
    let (_, message) = health(&workspace(
        3,
        Some(workspace_status(Phase::Stalled { reason: Reason::NotPermitted, message: "no binding".into() }, 3)),
    ));
    assert!(message.starts_with("NotPermitted: no binding"), "{message}");
}

#[test]
fn an_unobserved_spec_is_progressing_whatever_the_old_conditions_say() {
    assert_eq!(health(&workspace(1, None)).0, "Progressing", "no status yet");
    assert_eq!(health(&workspace(1, Some(json!({})))).0, "Progressing", "no conditions yet");
    // Ready for generation 3, but the spec is at 4: not healthy until the operator has looked at it.
    let (health, message) = health(&workspace(4, Some(workspace_status(Phase::Ready, 3))));
    assert_eq!(health, "Progressing");
    assert!(message.contains("latest spec"), "{message}");
}

#[test]
fn online_endpoints_use_the_same_check() {
    let mut status = crate::api::v1alpha1::MlOnlineEndpointStatus::default();
    let now = Time(jiff::Timestamp::now());
    crate::endpoints::set_kstatus(&mut status, &Phase::Ready, Some(2), &now);
    let mut obj = workspace(2, Some(serde_json::to_value(&status).unwrap()));
    obj["kind"] = json!("MlOnlineEndpoint");
    assert_eq!(health(&obj).0, "Healthy");
    let stalled = Phase::Stalled { reason: Reason::ProvisioningFailed, message: "quota".into() };
    crate::endpoints::set_kstatus(&mut status, &stalled, Some(2), &now);
    obj["status"] = serde_json::to_value(&status).unwrap();
    assert_eq!(health(&obj).0, "Degraded");
}

#[test]
fn computes_use_the_same_check() {
    let mut status = crate::api::v1alpha1::MlComputeStatus::default();
    let now = Time(jiff::Timestamp::now());
    crate::compute::set_kstatus(&mut status, &Phase::Ready, Some(2), &now);
    let mut obj = workspace(2, Some(serde_json::to_value(&status).unwrap()));
    obj["kind"] = json!("MlCompute");
    assert_eq!(health(&obj).0, "Healthy");
    let stalled = Phase::Stalled { reason: Reason::QuotaExceeded, message: "no cores".into() };
    crate::compute::set_kstatus(&mut status, &stalled, Some(2), &now);
    obj["status"] = serde_json::to_value(&status).unwrap();
    let (health, message) = health(&obj);
    assert_eq!(health, "Degraded");
    assert!(message.starts_with("QuotaExceeded"), "{message}");
}

#[test]
fn connections_use_the_same_check() {
    use crate::reconciler::Kind;
    let mut status = crate::api::v1alpha1::MlConnectionStatus::default();
    let now = Time(jiff::Timestamp::now());
    crate::api::v1alpha1::MlConnection::set_phase(&mut status, &Phase::Ready, Some(2), &now);
    let mut obj = workspace(2, Some(serde_json::to_value(&status).unwrap()));
    obj["kind"] = json!("MlConnection");
    assert_eq!(health(&obj).0, "Healthy");
    let stalled = Phase::Stalled { reason: Reason::SecretNotFound, message: "Secret git-pat not found".into() };
    crate::api::v1alpha1::MlConnection::set_phase(&mut status, &stalled, Some(2), &now);
    obj["status"] = serde_json::to_value(&status).unwrap();
    let (health, message) = health(&obj);
    assert_eq!(health, "Degraded");
    assert!(message.starts_with("SecretNotFound"), "{message}");
}

/// Every namespaced kind (what teams write; each reports kstatus conditions) gets the check, so a new kind without
/// one fails here. The cluster-scoped SubscriptionBinding gets none: the operator writes no status on it.
#[test]
fn the_argocd_configmap_carries_the_tested_script_for_every_namespaced_kind() {
    let cm: Value = serde_yaml::from_str(ARGOCD_CM).expect("argocd-cm.yaml parses");
    let kinds: Vec<String> = crate::api::all_crds()
        .into_iter()
        .filter(|crd| crd.spec.scope == "Namespaced")
        .map(|crd| crd.spec.names.kind)
        .collect();
    assert!(kinds.len() >= 4 && !kinds.iter().any(|k| k == "SubscriptionBinding"), "{kinds:?}");
    for kind in kinds {
        let key = format!("resource.customizations.health.azml.dev_{kind}");
        assert_eq!(cm["data"][&key].as_str(), Some(HEALTH_LUA), "{key} differs from deploy/argocd/health.lua");
    }
}
