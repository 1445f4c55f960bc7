//! Admission of MlCompute: the schema and CEL rules as the API server checks them.

use serde_json::{Value, json};

use super::*;
use crate::api::test_support::{admission_errors, example_documents, schema_of};

/// Structural and CEL errors (defaults applied first), joined.
fn errors(object: &Value, old: Option<&Value>) -> String {
    admission_errors::<MlCompute>(object, old).join("\n")
}

fn schema() -> Value {
    schema_of::<MlCompute>()
}

/// The two documents of examples/mlcompute.yaml: (cluster, instance).
fn examples() -> (Value, Value) {
    let mut docs = example_documents("mlcompute.yaml").into_iter();
    (docs.next().expect("cluster"), docs.next().expect("instance"))
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    *object.pointer_mut(pointer).expect("path exists") = value;
    object
}

#[test]
fn the_examples_are_valid_and_round_trip() {
    let (cluster, instance) = examples();
    assert_eq!(errors(&cluster, None), "");
    assert_eq!(errors(&instance, None), "");
    let c: MlCompute = serde_json::from_value(cluster).expect("a cluster");
    let aml = c.spec.aml_compute.as_ref().expect("amlCompute");
    assert_eq!((aml.scale.min_nodes, aml.scale.max_nodes), (0, 4));
    assert_eq!(aml.remote_login, RemoteLogin::Disabled);
    let i: MlCompute = serde_json::from_value(instance).expect("an instance");
    let ci = i.spec.compute_instance.as_ref().expect("computeInstance");
    assert_eq!(ci.schedules[0].action, ScheduleAction::Stop);
    assert!(ci.schedules[0].enabled, "schedules are enabled by default");
    let again: MlCompute = serde_json::from_value(serde_json::to_value(&i).expect("JSON")).expect("reads");
    assert_eq!(i, again);
}

#[test]
fn exactly_one_type_and_the_type_is_immutable() {
    let (cluster, instance) = examples();
    let mut both = cluster.clone();
    both["spec"]["computeInstance"] = instance["spec"]["computeInstance"].clone();
    assert!(errors(&both, None).contains("exactly one of amlCompute or computeInstance"));
    let mut neither = cluster.clone();
    neither["spec"].as_object_mut().expect("spec").remove("amlCompute");
    assert!(errors(&neither, None).contains("exactly one of amlCompute or computeInstance"));
    let mut converted = instance.clone();
    converted["metadata"] = cluster["metadata"].clone();
    assert!(errors(&converted, Some(&cluster)).contains("the compute type is immutable"));
}

#[test]
fn immutable_fields_are_rejected_when_changed_and_mutable_ones_pass() {
    let (cluster, instance) = examples();
    let resized = with(cluster.clone(), "/spec/amlCompute/vmSize", json!("Standard_DS4_v2"));
    assert!(errors(&resized, Some(&cluster)).contains("vmSize is immutable"));
    let subnet = json!({"id": "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/ml"});
    let with_subnet = with(cluster.clone(), "/spec/amlCompute/remoteLogin", json!("Disabled"));
    let mut joined = with_subnet.clone();
    joined["spec"]["amlCompute"]["subnet"] = subnet;
    assert_eq!(errors(&joined, None), "");
    assert!(errors(&joined, Some(&cluster)).contains("subnet is immutable"));
    assert!(errors(&cluster, Some(&joined)).contains("subnet is immutable"));
    let instance_resized = with(instance.clone(), "/spec/computeInstance/vmSize", json!("Standard_DS12_v2"));
    assert!(errors(&instance_resized, Some(&instance)).contains("vmSize is immutable"));
    let moved = with(cluster.clone(), "/spec/workspaceRef", json!({"name": "other"}));
    assert!(errors(&moved, Some(&cluster)).contains("workspaceRef is immutable"));
    // Mutable: scale settings, idle times, schedules (and priority/remote login, which stall instead).
    let scaled = with(cluster.clone(), "/spec/amlCompute/scale", json!({"minNodes": 1, "maxNodes": 6}));
    assert_eq!(errors(&scaled, Some(&cluster)), "");
    let idle = with(instance.clone(), "/spec/computeInstance/idleShutdownAfter", json!("30m"));
    assert_eq!(errors(&idle, Some(&instance)), "");
}

#[test]
fn scale_names_durations_and_ids_are_checked() {
    let (cluster, instance) = examples();
    let inverted = with(cluster.clone(), "/spec/amlCompute/scale", json!({"minNodes": 5, "maxNodes": 2}));
    assert!(errors(&inverted, None).contains("minNodes must not exceed"));
    let bad_duration = with(cluster.clone(), "/spec/amlCompute/scale/idleBeforeScaleDown", json!("5 minutes"));
    assert!(!errors(&bad_duration, None).is_empty());
    let long_name = with(cluster.clone(), "/metadata/name", json!("a-cluster-name-too-long"));
    assert!(errors(&long_name, None).contains("not a valid compute name"));
    let instance_name = with(instance.clone(), "/metadata/name", json!("a-cluster-name-too-long"));
    assert_eq!(errors(&instance_name, None), "", "instances take up to 24 characters");
    let bad_subnet = with(cluster.clone(), "/spec/amlCompute/remoteLogin", json!("Disabled"));
    let mut bad_subnet = bad_subnet;
    bad_subnet["spec"]["amlCompute"]["subnet"] = json!({"id": "/subscriptions/x/../other"});
    assert!(!errors(&bad_subnet, None).is_empty());
    let user = with(cluster.clone(), "/spec/amlCompute/identity", json!({"type": "UserAssigned"}));
    assert!(errors(&user, None).contains("UserAssigned needs at least one"));
    let not_a_guid = with(instance, "/spec/computeInstance/assignedTo", json!("alice@example.com"));
    assert!(!errors(&not_a_guid, None).is_empty());
}

/// `kubectl explain` shows a description for every field of the spec and status.
#[test]
fn every_field_is_documented() {
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                if sub.get("description").and_then(Value::as_str).is_none_or(str::is_empty) && path != ".metadata" {
                    missing.push(p.clone());
                }
                walk(sub, &p, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let schema = schema();
    let mut missing = Vec::new();
    walk(&schema["properties"]["spec"], ".spec", &mut missing);
    walk(&schema["properties"]["status"], ".status", &mut missing);
    // Conditions are the Kubernetes type, documented upstream.
    missing.retain(|p| !p.starts_with(".status.conditions[]"));
    assert_eq!(missing, Vec::<String>::new());
}
