//! Protobuf against the Kubernetes API emulator, decoded with the typed `k8s-pb` messages (independent of the
//! emulator's descriptor-driven conversion): request bodies of workload kinds with full pod specs, responses when the
//! client asks for them (objects, lists, watch streams framed as the real server frames them), and custom resources
//! answered in JSON or 406 as a real server answers them.

use std::collections::BTreeMap;
use std::time::Duration;

use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

const PB: &str = "application/vnd.kubernetes.protobuf";
/// What client-go's typed clients send when configured for protobuf.
const PB_OR_JSON: &str = "application/vnd.kubernetes.protobuf, application/json";

async fn start(opts: ServerOptions) -> (RunningServer, reqwest::Client) {
    azml_operator::tls_provider::install();
    let server = KubeApiServer::start(opts).await.unwrap_or_else(|e| panic!("start: {e}"));
    (server, reqwest::Client::new())
}

fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

/// `(apiVersion, kind, raw)` of a protobuf body; panics on anything else.
fn unwrap_envelope(body: &[u8]) -> (String, String, Vec<u8>) {
    let payload =
        body.strip_prefix(b"k8s\0").unwrap_or_else(|| panic!("no k8s magic: {:?}", &body[..body.len().min(40)]));
    let u = Unknown::decode(payload).unwrap_or_else(|e| panic!("envelope: {e}"));
    let tm = u.type_meta.unwrap_or_default();
    (tm.api_version.unwrap_or_default(), tm.kind.unwrap_or_default(), u.raw.unwrap_or_default())
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() })
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "db".to_string())])
}

/// A pod template using fields well beyond the common ones: init containers, probes, env from secrets, volumes,
/// resources, affinity, tolerations, security contexts.
fn template() -> Option<core::PodTemplateSpec> {
    let container = core::Container {
        name: Some("db".into()),
        image: Some("postgres:16".into()),
        ports: vec![core::ContainerPort { name: Some("pg".into()), container_port: Some(5432), ..Default::default() }],
        env: vec![core::EnvVar {
            name: Some("PASSWORD".into()),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: Some("db-secret".into()) }),
                    key: Some("password".into()),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            requests: BTreeMap::from([("cpu".into(), Quantity { string: Some("250m".into()) })]),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                tcp_socket: Some(core::TcpSocketAction {
                    port: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("pg".into()) }),
                    host: Some(String::new()),
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            ..Default::default()
        }),
        volume_mounts: vec![core::VolumeMount {
            name: Some("config".into()),
            mount_path: Some("/etc/db".into()),
            ..Default::default()
        }],
        security_context: Some(core::SecurityContext { run_as_non_root: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let init = core::Container {
        name: Some("init".into()),
        image: Some("busybox:1.36".into()),
        command: vec!["sh".into(), "-c".into(), "true".into()],
        ..Default::default()
    };
    Some(core::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta { labels: labels(), ..Default::default() }),
        spec: Some(core::PodSpec {
            init_containers: vec![init],
            containers: vec![container],
            volumes: vec![core::Volume {
                name: Some("config".into()),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference { name: Some("db-config".into()) }),
                        default_mode: Some(0o644),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            tolerations: vec![core::Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("db".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }],
            affinity: Some(core::Affinity {
                node_affinity: Some(core::NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                        node_selector_terms: vec![core::NodeSelectorTerm {
                            match_expressions: vec![core::NodeSelectorRequirement {
                                key: Some("disk".into()),
                                operator: Some("In".into()),
                                values: vec!["ssd".into()],
                            }],
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
    })
}

fn selector() -> Option<meta::LabelSelector> {
    Some(meta::LabelSelector { match_labels: labels(), ..Default::default() })
}

/// POSTs a protobuf body asking for a protobuf answer: (code, content type, body).
async fn post_pb(http: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let resp = http
        .post(url)
        .header("content-type", PB)
        .header("accept", PB_OR_JSON)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let code = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (code, ct, resp.bytes().await.unwrap_or_default().to_vec())
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap_or_else(|e| panic!("{e}")).json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn workload_and_service_bodies_with_full_pod_specs_are_read_and_answered_in_protobuf() {
    let (server, http) = start(ServerOptions::default()).await;
    let apps_url = |plural: &str| format!("{}/apis/apps/v1/namespaces/default/{plural}", server.url());

    let sts = apps::StatefulSet {
        metadata: meta("db"),
        spec: Some(apps::StatefulSetSpec {
            replicas: Some(0),
            selector: selector(),
            template: template(),
            service_name: Some("db".into()),
            ..Default::default()
        }),
        status: None,
    };
    let (code, ct, body) =
        post_pb(&http, &apps_url("statefulsets"), wrap("apps/v1", "StatefulSet", sts.encode_to_vec())).await;
    assert_eq!((code, ct.as_str()), (201, PB), "{}", String::from_utf8_lossy(&body));
    let (api_version, kind, raw) = unwrap_envelope(&body);
    assert_eq!((api_version.as_str(), kind.as_str()), ("apps/v1", "StatefulSet"));
    let created = apps::StatefulSet::decode(raw.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    let spec = created.spec.unwrap_or_default();
    // The server's defaults come back in the answer, and an explicit zero stays zero.
    assert_eq!(spec.replicas, Some(0));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
    let m = created.metadata.unwrap_or_default();
    assert!(m.uid.is_some_and(|u| !u.is_empty()) && m.creation_timestamp.and_then(|t| t.seconds).is_some());

    // Nothing of the pod spec was lost: the JSON view shows every field sent, with the server's defaults.
    let stored = get_json(&http, &format!("{}/db", apps_url("statefulsets"))).await;
    let pod = &stored["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "db-secret", "key": "password", "optional": false})
    );
    assert_eq!(c["resources"]["requests"]["cpu"], "250m");
    assert_eq!(c["readinessProbe"]["tcpSocket"], json!({"port": "pg"}));
    assert_eq!(c["readinessProbe"]["initialDelaySeconds"], 5);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1, "probe defaults: {c}");
    assert_eq!(c["securityContext"], json!({"runAsNonRoot": true}));
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["initContainers"][0]["command"], json!(["sh", "-c", "true"]));
    assert_eq!(pod["volumes"][0], json!({"name": "config", "configMap": {"name": "db-config", "defaultMode": 420}}));
    assert_eq!(pod["tolerations"][0]["effect"], "NoSchedule");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
            [0],
        json!({"key": "disk", "operator": "In", "values": ["ssd"]})
    );
    assert_eq!(pod["automountServiceAccountToken"], false);

    let ds = apps::DaemonSet {
        metadata: meta("agent"),
        spec: Some(apps::DaemonSetSpec { selector: selector(), template: template(), ..Default::default() }),
        status: None,
    };
    let (code, _, body) =
        post_pb(&http, &apps_url("daemonsets"), wrap("apps/v1", "DaemonSet", ds.encode_to_vec())).await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let created = apps::DaemonSet::decode(unwrap_envelope(&body).2.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    let strategy = created.spec.and_then(|s| s.update_strategy).and_then(|s| s.r#type);
    assert_eq!(strategy.as_deref(), Some("RollingUpdate"));

    let rs = apps::ReplicaSet {
        metadata: meta("db-1"),
        spec: Some(apps::ReplicaSetSpec { selector: selector(), template: template(), ..Default::default() }),
        status: None,
    };
    let (code, _, body) =
        post_pb(&http, &apps_url("replicasets"), wrap("apps/v1", "ReplicaSet", rs.encode_to_vec())).await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));

    let svc = core::Service {
        metadata: meta("db"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: Some("pg".into()),
                port: Some(5432),
                target_port: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("pg".into()) }),
                ..Default::default()
            }],
            selector: labels(),
            ..Default::default()
        }),
        status: None,
    };
    let url = format!("{}/api/v1/namespaces/default/services", server.url());
    let (code, _, body) = post_pb(&http, &url, wrap("v1", "Service", svc.encode_to_vec())).await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let created = core::Service::decode(unwrap_envelope(&body).2.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    let spec = created.spec.unwrap_or_default();
    assert_eq!(spec.r#type.as_deref(), Some("ClusterIP"));
    assert!(spec.cluster_ip.is_some_and(|ip| ip.starts_with("10.")));
    assert_eq!(spec.ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(spec.ports[0].target_port.as_ref().and_then(|p| p.str_val.as_deref()), Some("pg"));
}

/// Reads from a streaming response until `n` complete length-delimited frames arrived (or the deadline).
async fn frames(resp: &mut reqwest::Response, buf: &mut Vec<u8>, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            out.push(buf[4..4 + len].to_vec());
            buf.drain(..4 + len);
        }
        if out.len() >= n {
            return out;
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => buf.extend_from_slice(&bytes),
            other => panic!("watch stream ended after {} frames: {other:?}", out.len()),
        }
    }
}

/// `(type, kind of the object, object message)` of a watch frame: a bare `WatchEvent` (the API server's raw stream
/// serializer) whose object is enveloped.
fn watch_event(frame: &[u8]) -> (String, String, Vec<u8>) {
    assert!(!frame.starts_with(b"k8s\0"), "watch frames carry no envelope");
    let event = meta::WatchEvent::decode(frame).unwrap_or_else(|e| panic!("{e}"));
    let (_, object_kind, object) = unwrap_envelope(&event.object.and_then(|o| o.raw).unwrap_or_default());
    (event.r#type.unwrap_or_default(), object_kind, object)
}

#[tokio::test]
async fn lists_and_watches_are_protobuf_when_asked_for_as_the_real_server_frames_them() {
    let opts = ServerOptions { bookmark_interval: Duration::from_millis(200), ..ServerOptions::default() };
    let (server, http) = start(opts).await;
    let url = format!("{}/api/v1/namespaces/default/configmaps", server.url());
    for name in ["a", "b"] {
        let cm = core::ConfigMap {
            metadata: meta(name),
            data: BTreeMap::from([("k".to_string(), name.to_string())]),
            binary_data: BTreeMap::from([("bin".to_string(), vec![0u8, 255])]),
            ..Default::default()
        };
        let (code, _, body) = post_pb(&http, &url, wrap("v1", "ConfigMap", cm.encode_to_vec())).await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    }

    let resp = http.get(&url).header("accept", PB_OR_JSON).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some(PB));
    let (_, kind, raw) = unwrap_envelope(&resp.bytes().await.unwrap_or_default());
    assert_eq!(kind, "ConfigMapList");
    let list = core::ConfigMapList::decode(raw.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = list.items.iter().filter_map(|i| i.metadata.as_ref()?.name.clone()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list.items[1].binary_data.get("bin"), Some(&vec![0u8, 255]));
    let rv = list.metadata.and_then(|m| m.resource_version).unwrap_or_default();
    assert!(!rv.is_empty());

    // A JSON client sees the same objects.
    let json_list = get_json(&http, &url).await;
    assert_eq!(json_list["items"][0]["binaryData"]["bin"], "AP8=");

    // A watch from the list's resourceVersion: length-delimited frames of enveloped WatchEvents.
    let mut watch = http
        .get(format!("{url}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"))
        .header("accept", PB_OR_JSON)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        watch.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/vnd.kubernetes.protobuf;stream=watch")
    );
    let cm = core::ConfigMap { metadata: meta("c"), ..Default::default() };
    let (code, _, _) = post_pb(&http, &url, wrap("v1", "ConfigMap", cm.encode_to_vec())).await;
    assert_eq!(code, 201);
    let mut buf = Vec::new();
    let mut seen_added = false;
    let mut seen_bookmark = false;
    while !(seen_added && seen_bookmark) {
        let frame = frames(&mut watch, &mut buf, 1).await.remove(0);
        let (type_, kind, object) = watch_event(&frame);
        assert_eq!(kind, "ConfigMap");
        let cm = core::ConfigMap::decode(object.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        match type_.as_str() {
            "ADDED" => {
                assert_eq!(cm.metadata.and_then(|m| m.name).as_deref(), Some("c"));
                seen_added = true;
            }
            "BOOKMARK" => {
                assert!(cm.metadata.and_then(|m| m.resource_version).is_some_and(|rv| !rv.is_empty()));
                seen_bookmark = true;
            }
            other => panic!("unexpected {other} event"),
        }
    }
}

#[tokio::test]
async fn custom_resources_are_answered_in_json_or_refused_with_406_and_415() {
    let (server, http) = start(ServerOptions::default()).await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.demo.azml.dev"},
        "spec": {
            "group": "demo.azml.dev",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    });
    let resp = http
        .post(format!("{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", server.url()))
        .json(&crd)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 201);
    let url = format!("{}/apis/demo.azml.dev/v1/namespaces/default/gadgets", server.url());
    let gadget = json!({"apiVersion": "demo.azml.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}});
    let resp =
        http.post(&url).header("accept", PB_OR_JSON).json(&gadget).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));

    // Only protobuf acceptable: 406, as the real server answers for custom resources.
    let resp = http.get(&url).header("accept", PB).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 406);
    let status: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(status["message"], "only the following media types are accepted: application/json, application/yaml");

    // A protobuf body: 415.
    let (code, _, body) = post_pb(&http, &url, wrap("demo.azml.dev/v1", "Gadget", Vec::new())).await;
    assert_eq!(code, 415, "{}", String::from_utf8_lossy(&body));
}
