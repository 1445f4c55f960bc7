//! End-to-end tests of the Kubernetes API emulator: kube-rs (controller, watches, conflicts, CEL) and the real
//! kubectl against a served instance.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, schemars::JsonSchema)]
#[kube(group = "test.azml.dev", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
struct WidgetSpec {
    location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, schemars::JsonSchema)]
struct WidgetStatus {
    #[serde(default)]
    conditions: Vec<Value>,
}

/// The test CRD: status subresource, short name, category, printer columns, defaults, enum and a CEL
/// transition rule making `spec.location` immutable.
fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.azml.dev"},
        "spec": {
            "group": "test.azml.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList",
                      "shortNames": ["wd"], "categories": ["azml"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Location", "type": "string", "jsonPath": ".spec.location"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A Widget for tests.",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "description": "Desired state of the widget.",
                            "required": ["location"],
                            "properties": {
                                "location": {"type": "string", "description": "Azure region of the widget.",
                                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "location is immutable"}]},
                                "sku": {"type": "string", "enum": ["Basic", "Premium"], "default": "Basic"},
                                "replicas": {"type": "integer", "minimum": 1}
                            }
                        },
                        "status": {"type": "object", "properties": {
                            "conditions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                        }}
                    }
                }}
            }]
        }
    })
}

async fn start(history: usize) -> (RunningServer, Client) {
    let opts = ServerOptions {
        history_limit: history,
        bookmark_interval: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = KubeApiServer::start(opts).await.unwrap_or_else(|e| panic!("start: {e}"));
    let client = server.client().unwrap_or_else(|e| panic!("client: {e}"));
    (server, client)
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).unwrap_or_else(|e| panic!("{e}"));
    crds.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("create crd: {e}"));
    let established = await_condition(crds, "widgets.test.azml.dev", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(5), established)
        .await
        .unwrap_or_else(|e| panic!("crd not established: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn widget(name: &str, location: &str) -> Widget {
    Widget::new(name, WidgetSpec { location: location.into(), sku: None, replicas: None })
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn controller_with_finalizer_runs_end_to_end() {
    let (_server, client) = start(1000).await;
    install_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let cleaned = Arc::new(AtomicUsize::new(0));

    struct Ctx {
        client: Client,
        cleaned: Arc<AtomicUsize>,
    }
    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct ReconcileError(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>);

    async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
        let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &w.namespace().unwrap_or_default());
        let finalizer_api = api.clone();
        finalizer(&finalizer_api, "test.azml.dev/cleanup", w, |event| async {
            match event {
                Finalizer::Apply(w) => {
                    let status = json!({"apiVersion": "test.azml.dev/v1", "kind": "Widget", "status": {"conditions": [
                        {"type": "Ready", "status": "True", "reason": "Reconciled", "observedGeneration": w.metadata.generation}
                    ]}});
                    api.patch_status(&w.name_any(), &PatchParams::apply("widget-controller").force(), &Patch::Apply(&status))
                        .await?;
                    Ok(Action::await_change())
                }
                Finalizer::Cleanup(_) => {
                    ctx.cleaned.fetch_add(1, Ordering::SeqCst);
                    Ok(Action::await_change())
                }
            }
        })
        .await
        .map_err(|e| ReconcileError(Box::new(e)))
    }
    fn error_policy(_: Arc<Widget>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
        eprintln!("reconcile error: {e:?}");
        Action::requeue(Duration::from_millis(100))
    }

    let ctx = Arc::new(Ctx { client: client.clone(), cleaned: cleaned.clone() });
    let controller = tokio::spawn(
        Controller::new(widgets.clone(), Default::default()).run(reconcile, error_policy, ctx).for_each(|_| async {}),
    );

    widgets.create(&PostParams::default(), &widget("w1", "westeurope")).await.unwrap_or_else(|e| panic!("{e}"));
    let ready = await_condition(widgets.clone(), "w1", |w: Option<&Widget>| {
        w.and_then(|w| w.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .unwrap_or_else(|e| panic!("never ready: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let live = widgets.get("w1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(live.finalizers(), &["test.azml.dev/cleanup".to_string()]);
    assert_eq!(live.spec.sku.as_deref(), Some("Basic"), "schema default applied");
    assert_eq!(live.metadata.generation, Some(1), "status and finalizer writes do not bump generation");

    widgets.delete("w1", &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let uid = live.uid().unwrap_or_default();
    let gone = await_condition(widgets.clone(), "w1", conditions::is_deleted(&uid));
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .unwrap_or_else(|e| panic!("never deleted: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    controller.abort();
}

#[tokio::test]
async fn watch_resumes_from_history_and_expires_with_410() {
    let (_server, client) = start(16).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"n": "0"}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let created = cms.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));
    let first_rv = created.resource_version().unwrap_or_default();

    // Resume from a recent resourceVersion: exactly the later events arrive, in order.
    for n in 1..=3 {
        cm = cms.get("c").await.unwrap_or_else(|e| panic!("{e}"));
        cm.data = Some([("n".to_string(), n.to_string())].into());
        cms.replace("c", &PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let mut stream =
        cms.watch(&WatchParams::default().timeout(2), &first_rv).await.unwrap_or_else(|e| panic!("{e}")).boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.unwrap_or_else(|e| panic!("{e}")) {
            Some(WatchEvent::Modified(cm)) => seen.push(cm.data.unwrap_or_default()["n"].clone()),
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(seen, vec!["1", "2", "3"]);

    // Push the first resourceVersion out of the bounded history.
    for n in 0..40 {
        let body = json!({"metadata": {"name": format!("f{n}")}});
        let filler: ConfigMap = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        cms.create(&PostParams::default(), &filler).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let expired = cms.watch(&WatchParams::default().timeout(2), &first_rv).await;
    let code = match expired {
        Err(e) => api_error(e).code,
        Ok(stream) => match stream.boxed().try_next().await {
            Ok(Some(WatchEvent::Error(e))) => e.code,
            other => panic!("expected 410, got {other:?}"),
        },
    };
    assert_eq!(code, 410);

    // kube-rs's watcher relists after the 410 and still sees everything.
    let objs: Vec<ConfigMap> = kube::runtime::watcher(cms.clone(), Default::default())
        .take(1)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(objs.is_empty());
    let listed = cms.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.items.len(), 41);
}

#[tokio::test]
async fn stale_updates_conflict_and_apply_conflicts_name_the_manager() {
    let (_server, client) = start(1000).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let created = cms.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));
    let mut a = created.clone();
    a.data = Some([("k".to_string(), "a".to_string())].into());
    cms.replace("c", &PostParams::default(), &a).await.unwrap_or_else(|e| panic!("{e}"));
    let mut b = created.clone();
    b.data = Some([("k".to_string(), "b".to_string())].into());
    let err =
        api_error(cms.replace("c", &PostParams::default(), &b).await.err().unwrap_or_else(|| panic!("no conflict")));
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("the object has been modified"), "{}", err.message);

    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"k": "alice"}});
    cms.patch("s", &PatchParams::apply("alice"), &Patch::Apply(&applied)).await.unwrap_or_else(|e| panic!("{e}"));
    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"k": "bob"}});
    let err = api_error(
        cms.patch("s", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .err()
            .unwrap_or_else(|| panic!("no conflict")),
    );
    assert_eq!(err.code, 409);
    assert!(err.message.contains("conflict with \"alice\""), "{}", err.message);
    assert!(err.message.contains(".data.k"), "{}", err.message);
    let forced =
        cms.patch("s", &PatchParams::apply("bob").force(), &Patch::Apply(&bob)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(forced.data.unwrap_or_default()["k"], "bob");
    let managers: Vec<String> =
        forced.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, vec!["bob".to_string()]);
}

#[tokio::test]
async fn crd_schema_and_cel_rules_are_enforced() {
    let (_server, client) = start(1000).await;
    install_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets.create(&PostParams::default(), &widget("w", "westeurope")).await.unwrap_or_else(|e| panic!("{e}"));
    let patch = json!({"spec": {"location": "northeurope"}});
    let err = api_error(
        widgets
            .patch("w", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted")),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Widget.test.azml.dev \"w\" is invalid: spec.location: Invalid value: \"string\": location is immutable"
    );
    let bad_enum = json!({"spec": {"sku": "Gold"}});
    let err = api_error(
        widgets
            .patch("w", &PatchParams::default(), &Patch::Merge(&bad_enum))
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted")),
    );
    assert!(err.message.contains("spec.sku: Unsupported value: \"Gold\""), "{}", err.message);

    // Unknown fields: rejected under Strict, pruned with a warning otherwise.
    let unknown = json!({"spec": {"bogus": 1}});
    let strict = PatchParams::default().validation_strict();
    let err = api_error(
        widgets.patch("w", &strict, &Patch::Merge(&unknown)).await.err().unwrap_or_else(|| panic!("accepted")),
    );
    assert_eq!(err.code, 400);
    assert!(err.message.contains("unknown field \"spec.bogus\""), "{}", err.message);
    let pruned =
        widgets.patch("w", &PatchParams::default(), &Patch::Merge(&unknown)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned.metadata.generation, Some(1), "pruned-only change is a no-op");

    // Spec changes bump generation; status writes do not and cannot touch spec.
    let scaled = widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scaled.metadata.generation, Some(2));
    let status = json!({"spec": {"replicas": 9}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let after = widgets
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.spec.replicas, Some(2));
    assert_eq!(after.metadata.generation, Some(2));
    assert_eq!(after.status.unwrap_or_default().conditions.len(), 1);
}

/// Every page of a paged list is served from the first page's snapshot, as etcd serves them at one revision: what
/// changes while a client pages (a kube-runtime watcher's relist) is seen by its watch from the list's
/// resourceVersion, never lost between pages. A snapshot older than the kept history is 410 Expired.
#[tokio::test]
async fn paged_lists_are_served_from_the_first_pages_snapshot() {
    let (_server, client) = start(1000).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = |name: &str, labels: Value| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap_or_else(|e| panic!("{e}"))
    };
    for n in 0..6 {
        cms.create(&PostParams::default(), &cm(&format!("cm{n}"), json!({"v": "1"})))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let page1 = cms.list(&ListParams::default().limit(2)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page1.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["cm0", "cm1"]);
    // While the client pages: one created after the token, one deleted, one relabelled.
    cms.create(&PostParams::default(), &cm("cm3a", json!({"v": "1"}))).await.unwrap_or_else(|e| panic!("{e}"));
    cms.delete("cm4", &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let relabel = json!({"metadata": {"labels": {"v": "2"}}});
    cms.patch("cm5", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap_or_else(|e| panic!("{e}"));
    let token = page1.metadata.continue_.clone().unwrap_or_default();
    let page2 =
        cms.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page2.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["cm2", "cm3", "cm4", "cm5"]);
    assert_eq!(page2.items[3].labels().get("v").map(String::as_str), Some("1"), "cm5 as it was at the snapshot");
    assert_eq!(page2.metadata.resource_version, page1.metadata.resource_version, "one resourceVersion for all pages");
    // A selector applies to the objects as they were.
    let v1 = cms.list(&ListParams::default().labels("v=1").limit(1)).await.unwrap_or_else(|e| panic!("{e}"));
    cms.patch("cm3", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap_or_else(|e| panic!("{e}"));
    let token = v1.metadata.continue_.clone().unwrap_or_default();
    let rest =
        cms.list(&ListParams::default().labels("v=1").continue_token(&token)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rest.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["cm1", "cm2", "cm3", "cm3a"]);
    // A fresh list sees the present.
    let now = cms.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(now.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["cm0", "cm1", "cm2", "cm3", "cm3a", "cm5"]);

    // History kept for 16 changes (the store's floor): a snapshot older than that is gone.
    let (_small, client) = start(5).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for n in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("x{n}"), json!({}))).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let page1 = cms.list(&ListParams::default().limit(1)).await.unwrap_or_else(|e| panic!("{e}"));
    for n in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("y{n}"), json!({}))).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let token = page1.metadata.continue_.clone().unwrap_or_default();
    let expired = api_error(
        cms.list(&ListParams::default().continue_token(&token)).await.err().unwrap_or_else(|| panic!("listed")),
    );
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"), "{}", expired.message);
}

#[tokio::test]
async fn core_semantics_selectors_paging_secrets_and_bad_requests() {
    let (server, client) = start(1000).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s", "labels": {"app": "x"}}, "stringData": {"key": "hunter2"}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let created = secrets.create(&PostParams::default(), &s).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created.data.unwrap_or_default()["key"].0, b"hunter2".to_vec());
    assert!(created.string_data.is_none());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for n in 0..5 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm{n}"), "labels": {"even": (n % 2 == 0).to_string()}}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        cms.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let even = cms.list(&ListParams::default().labels("even=true")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(even.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), vec!["cm0", "cm2", "cm4"]);
    let one = cms.list(&ListParams::default().fields("metadata.name=cm3")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.items.len(), 1);
    let page1 = cms.list(&ListParams::default().limit(2)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().unwrap_or_default();
    let page2 =
        cms.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page2.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), vec!["cm2", "cm3", "cm4"]);
    assert!(page2.metadata.continue_.unwrap_or_default().is_empty());

    let missing = api_error(cms.get("nope").await.err().unwrap_or_else(|| panic!("found")));
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");
    let dup = api_error(
        cms.create(&PostParams::default(), &cms.get("cm0").await.unwrap_or_else(|e| panic!("{e}")))
            .await
            .err()
            .unwrap_or_else(|| panic!("created")),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    // Raw HTTP: malformed JSON, wrong kind, oversized body all get Status errors and leave the store intact.
    let http = reqwest::Client::builder().build().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/api/v1/namespaces/default/configmaps", server.url());
    let before = server.store().resource_version();
    for (body, code) in [
        ("{not json".to_string(), 400),
        (json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}).to_string(), 400),
        ("x".repeat(4 * 1024 * 1024), 413),
    ] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), code);
        let status: Value = resp.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], code);
    }
    assert_eq!(server.store().resource_version(), before);

    // Namespaces: deleting one removes its content.
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap_or_else(|e| panic!("{e}"));
    ns_api.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("{e}"));
    let tmp_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "inner"}})).unwrap_or_else(|e| panic!("{e}"));
    tmp_cms.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));
    ns_api.delete("tmp", &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api_error(ns_api.get("tmp").await.err().unwrap_or_else(|| panic!("still there"))).code, 404);
}

// ---------------------------------------------------------------- kubectl

struct Kubectl {
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(server: &RunningServer) -> Self {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = home.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap_or_else(|e| panic!("{e}"));
        Self { kubeconfig, home }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl to completion (off the async runtime) and returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        self.run_command(self.command(args)).await
    }

    /// Runs `helm` against the same server, with its caches and config in the temporary home.
    async fn helm(&self, helm: &str, args: &[&str]) -> (bool, String, String) {
        let home = self.home.path();
        let mut cmd = Command::new(helm);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_DATA_HOME", home.join("helm-data"))
            // The default storage driver: release records are Secrets written by a typed (protobuf) client.
            .env_remove("HELM_DRIVER")
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .stdin(Stdio::null());
        self.run_command(cmd).await
    }

    async fn run_command(&self, mut cmd: Command) -> (bool, String, String) {
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed: {stderr}");
        stdout
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p: &Path = self.home.path();
        let path = p.join(name);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
        path.to_string_lossy().into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_script() {
    let (server, client) = start(1000).await;
    let k = Kubectl::new(&server);

    let crd = k.write("crd.json", &widget_crd().to_string());
    let out = k.ok(&["apply", "-f", &crd]).await;
    assert_eq!(out.trim(), "customresourcedefinition.apiextensions.k8s.io/widgets.test.azml.dev created");

    let w1 = k.write(
        "w1.yaml",
        "apiVersion: test.azml.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  location: westeurope\n",
    );
    assert_eq!(k.ok(&["apply", "-f", &w1]).await.trim(), "widget.test.azml.dev/w1 created");
    let w1b = k.write("w1b.yaml", "apiVersion: test.azml.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  location: westeurope\n  replicas: 2\n");
    assert_eq!(k.ok(&["apply", "-f", &w1b]).await.trim(), "widget.test.azml.dev/w1 configured");

    // Client-side apply of a core kind goes through strategic merge patch.
    let cm =
        k.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: \"1\"\n  b: \"2\"\n");
    assert_eq!(k.ok(&["apply", "-f", &cm]).await.trim(), "configmap/c1 created");
    let cm2 =
        k.write("cm2.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\ndata:\n  a: \"1\"\n  c: \"3\"\n");
    assert_eq!(k.ok(&["apply", "-f", &cm2]).await.trim(), "configmap/c1 configured");
    let data = k.ok(&["get", "configmap", "c1", "-o", "jsonpath={.data}"]).await;
    assert_eq!(serde_json::from_str::<Value>(&data).unwrap_or_default(), json!({"a": "1", "c": "3"}));

    // Server-side apply, then a conflicting one from another manager.
    let ss = k.write("ss.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c2\ndata:\n  k: one\n");
    assert_eq!(k.ok(&["apply", "--server-side", "-f", &ss]).await.trim(), "configmap/c2 serverside-applied");
    let ss2 = k.write("ss2.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c2\ndata:\n  k: two\n");
    let (ok, _, err) = k.run(&["apply", "--server-side", "--field-manager", "other", "-f", &ss2]).await;
    assert!(!ok && err.contains("conflict with \"kubectl\""), "{err}");
    k.ok(&["apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", &ss2]).await;

    let table = k.ok(&["get", "wd"]).await;
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "LOCATION", "READY", "AGE"], "{table}");
    assert!(table.lines().any(|l| l.starts_with("w1") && l.contains("westeurope")), "{table}");
    let by_category = k.ok(&["get", "azml"]).await;
    assert!(by_category.lines().any(|l| l.starts_with("w1") && l.contains("westeurope")), "{by_category}");

    let yaml = k.ok(&["get", "widget", "w1", "-o", "yaml"]).await;
    assert!(
        yaml.contains("location: westeurope") && yaml.contains("replicas: 2") && yaml.contains("sku: Basic"),
        "{yaml}"
    );

    assert_eq!(
        k.ok(&["patch", "widget", "w1", "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]).await.trim(),
        "widget.test.azml.dev/w1 patched"
    );
    let json_patch =
        r#"[{"op":"test","path":"/spec/replicas","value":3},{"op":"replace","path":"/spec/replicas","value":4}]"#;
    assert_eq!(
        k.ok(&["patch", "widget", "w1", "--type", "json", "-p", json_patch]).await.trim(),
        "widget.test.azml.dev/w1 patched"
    );
    assert_eq!(k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.replicas}"]).await, "4");
    let (ok, _, err) =
        k.run(&["patch", "widget", "w1", "--type", "merge", "-p", r#"{"spec":{"location":"northeurope"}}"#]).await;
    assert!(!ok && err.contains("spec.location: Invalid value: \"string\": location is immutable"), "{err}");

    let explain = k.ok(&["explain", "widgets.spec"]).await;
    assert!(explain.contains("location") && explain.contains("Azure region of the widget"), "{explain}");

    // get -w: the initial row, then a created object and a modification.
    let mut watch_cmd = k.command(&["get", "widgets", "-w", "--request-timeout=5s"]);
    watch_cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let watcher = watch_cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets.create(&PostParams::default(), &widget("w2", "eastus")).await.unwrap_or_else(|e| panic!("{e}"));
    // kubectl wait: blocks until the status condition appears.
    let waiter = {
        let mut cmd = k.command(&["wait", "--for=condition=Ready", "widget/w1", "--timeout=10s"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap_or_else(|e| panic!("{e}"))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    widgets.patch_status("w1", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap_or_else(|e| panic!("{e}"));
    let waited = tokio::task::spawn_blocking(move || waiter.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "widget.test.azml.dev/w1 condition met");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut watcher = watcher;
    let _ = watcher.kill();
    let watched = tokio::task::spawn_blocking(move || watcher.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let watched = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert!(watched.lines().next().unwrap_or("").starts_with("NAME"), "{watched}");
    assert!(watched.lines().any(|l| l.starts_with("w2") && l.contains("eastus")), "{watched}");
    assert!(watched.lines().any(|l| l.starts_with("w1") && l.contains("True")), "{watched}");

    // Delete waits for finalizers: kubectl delete --wait=false marks, removing the finalizer deletes.
    let fin = json!({"metadata": {"finalizers": ["test.azml.dev/hold"]}});
    widgets.patch("w2", &PatchParams::default(), &Patch::Merge(&fin)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(k.ok(&["delete", "widget", "w2", "--wait=false"]).await.trim(), "widget.test.azml.dev \"w2\" deleted");
    let marked = widgets.get("w2").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(marked.metadata.deletion_timestamp.is_some());
    let unfin = json!({"metadata": {"finalizers": null}});
    widgets.patch("w2", &PatchParams::default(), &Patch::Merge(&unfin)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(widgets.get_opt("w2").await.unwrap_or_else(|e| panic!("{e}")).is_none());
    assert_eq!(k.ok(&["delete", "widget", "w1"]).await.trim(), "widget.test.azml.dev \"w1\" deleted");
    let (ok, _, err) = k.run(&["get", "widget", "w1"]).await;
    assert!(!ok && err.contains("widgets.test.azml.dev \"w1\" not found"), "{err}");
}

/// The project's own install story with the real kubectl: the CRDs printed by `azml-operator crd` and the deploy/
/// manifests pass `kubectl apply --dry-run=client`, the examples pass the server's schema and CEL admission, and an
/// invalid workspace is rejected with a readable message.
#[tokio::test]
async fn install_manifests_and_examples_with_kubectl() {
    let (server, _client) = start(1000).await;
    let k = Kubectl::new(&server);
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));

    let crd_output = std::process::Command::new(env!("CARGO_BIN_EXE_azml-sandbox"))
        .arg("crd")
        .output()
        .unwrap_or_else(|e| panic!("azml-operator crd: {e}"));
    assert!(crd_output.status.success());
    let crds = k.write("crds.yaml", &String::from_utf8_lossy(&crd_output.stdout));
    let out = k.ok(&["apply", "--dry-run=client", "-f", &crds]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/mlworkspaces.azml.dev created (dry run)"),
        "{out}"
    );

    let deploy = root.join("deploy");
    let out = k.ok(&["apply", "--dry-run=client", "-f", deploy.to_str().unwrap_or_default()]).await;
    for expected in [
        "namespace/azml-system",
        "clusterrole.rbac.authorization.k8s.io/azml-operator",
        "deployment.apps/azml-operator",
    ] {
        assert!(out.contains(&format!("{expected} created (dry run)")), "{expected} missing from: {out}");
    }

    // Install the CRDs for real, then let the server judge the examples without storing them.
    k.ok(&["apply", "-f", &crds]).await;
    let examples = root.join("examples");
    let out = k.ok(&["apply", "--dry-run=server", "-f", examples.to_str().unwrap_or_default()]).await;
    assert!(out.contains("mlworkspace.azml.dev/fraud-detection created (server dry run)"), "{out}");
    assert!(out.contains("subscriptionbinding.azml.dev/risk-prod created (server dry run)"), "{out}");
    assert_eq!(k.ok(&["get", "mlws", "-A", "-o", "name"]).await.trim(), "", "a dry run stored the example");

    let invalid = k.write(
        "invalid.yaml",
        "apiVersion: azml.dev/v1alpha1\nkind: MlWorkspace\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  \
         subscriptionId: 0b1f6471-1bf0-4dda-aec3-111122223333\n  resourceGroup: rg\n  location: westeurope\n  \
         storageAccount: {name: sa, id: /subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa}\n  keyVault: {name: kv}\n",
    );
    let (ok, _, stderr) = k.run(&["apply", "-f", &invalid]).await;
    assert!(!ok);
    assert!(stderr.contains("exactly one of name or id must be set"), "{stderr}");
}

/// A protobuf request body as client-go's typed clients send it: `k8s\0` and a `runtime.Unknown` envelope.
fn protobuf_body(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use prost::Message;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

async fn post_protobuf(client: &Client, path: &str, body: Vec<u8>) -> Result<Value, kube::Error> {
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf")
        // Protobuf answers are covered by tests/kube_emulator_protobuf.rs; this helper reads JSON.
        .header(http::header::ACCEPT, "application/json")
        .body(body)
        .unwrap_or_else(|e| panic!("{e}"));
    client.request::<Value>(req).await
}

/// `kubectl create <kind>` posts protobuf bodies; the emulator stores what the JSON path would have stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_subcommands_send_protobuf() {
    let (server, client) = start(1000).await;
    let k = Kubectl::new(&server);

    let (ok, out, verbose) = k.run(&["create", "namespace", "team-a", "-v=8"]).await;
    assert!(ok, "{verbose}");
    assert_eq!(out.trim(), "namespace/team-a created");
    // The point of this test: kubectl really sent protobuf (if a future kubectl stops, this says so).
    assert!(verbose.contains("Content-Type: application/vnd.kubernetes.protobuf"), "{verbose}");
    let ns = k.ok(&["get", "namespace", "team-a", "-o", "json"]).await;
    let ns: Value = serde_json::from_str(&ns).unwrap_or_else(|e| panic!("{e}: {ns}"));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team-a");

    let out = k
        .ok(&[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            "team-a",
            "--from-literal=user=admin",
            "--from-literal=pw=p@ss",
        ])
        .await;
    assert_eq!(out.trim(), "secret/s1 created");
    let secret = k.ok(&["get", "secret", "s1", "-n", "team-a", "-o", "json"]).await;
    let secret: Value = serde_json::from_str(&secret).unwrap_or_else(|e| panic!("{e}: {secret}"));
    assert_eq!(secret["data"], json!({"user": "YWRtaW4=", "pw": "cEBzcw=="}));
    assert_eq!(secret["type"], "Opaque");
    let out = k
        .ok(&["create", "secret", "generic", "s2", "-n", "team-a", "--type=example.com/t", "--from-literal=a=b"])
        .await;
    assert_eq!(out.trim(), "secret/s2 created");
    assert_eq!(k.ok(&["get", "secret", "s2", "-n", "team-a", "-o", "jsonpath={.type}"]).await, "example.com/t");

    let out = k.ok(&["create", "configmap", "c1", "-n", "team-a", "--from-literal=a=1", "--from-literal=b="]).await;
    assert_eq!(out.trim(), "configmap/c1 created");
    let data = k.ok(&["get", "configmap", "c1", "-n", "team-a", "-o", "jsonpath={.data}"]).await;
    assert_eq!(serde_json::from_str::<Value>(&data).unwrap_or_default(), json!({"a": "1", "b": ""}));

    assert_eq!(k.ok(&["create", "serviceaccount", "bot", "-n", "team-a"]).await.trim(), "serviceaccount/bot created");
    assert_eq!(k.ok(&["get", "sa", "bot", "-n", "team-a", "-o", "name"]).await.trim(), "serviceaccount/bot");

    let out = k.ok(&["create", "role", "reader", "-n", "team-a", "--verb=get,list", "--resource=secrets"]).await;
    assert_eq!(out.trim(), "role.rbac.authorization.k8s.io/reader created");
    let out = k
        .ok(&["create", "rolebinding", "reader-bot", "-n", "team-a", "--role=reader", "--serviceaccount=team-a:bot"])
        .await;
    assert_eq!(out.trim(), "rolebinding.rbac.authorization.k8s.io/reader-bot created");
    let out = k.ok(&["create", "clusterrole", "cm-reader", "--verb=get", "--resource=configmaps"]).await;
    assert_eq!(out.trim(), "clusterrole.rbac.authorization.k8s.io/cm-reader created");
    let out = k.ok(&["create", "clusterrolebinding", "cm-reader-bot", "--clusterrole=cm-reader", "--user=alice"]).await;
    assert_eq!(out.trim(), "clusterrolebinding.rbac.authorization.k8s.io/cm-reader-bot created");

    // What was stored, read with kube-rs.
    let get = |path: String| {
        let client = client.clone();
        async move {
            let req = http::Request::get(&path).body(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
            client.request::<Value>(req).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
        }
    };
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let role = get(format!("{rbac}/namespaces/team-a/roles/reader")).await;
    assert_eq!(role["rules"], json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"]}]));
    let binding = get(format!("{rbac}/namespaces/team-a/rolebindings/reader-bot")).await;
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "team-a"}]));
    assert_eq!(binding["roleRef"], json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}));
    let crb = get(format!("{rbac}/clusterrolebindings/cm-reader-bot")).await;
    assert_eq!(crb["subjects"], json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]));
    let cr = get(format!("{rbac}/clusterroles/cm-reader")).await;
    assert_eq!(cr["rules"][0]["resources"], json!(["configmaps"]));
    // Metadata the server owns was set as for JSON bodies.
    assert!(cr["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{cr}");
    assert!(cr["metadata"]["creationTimestamp"].is_string(), "{cr}");

    // Errors from the JSON path still apply: the name is taken.
    let (ok, _, err) = k.run(&["create", "configmap", "c1", "-n", "team-a"]).await;
    assert!(!ok && err.contains("configmaps \"c1\" already exists"), "{err}");
}

/// Raw protobuf requests: a custom resource is refused with 415 as a real server does, built-in kinds not decoded
/// here too, a malformed body is a 400, and metadata (generateName, ownerReferences, finalizers) survives.
#[tokio::test]
async fn protobuf_bodies_for_custom_resources_are_unsupported() {
    use prost::Message;
    let (_server, client) = start(1000).await;
    install_crd(&client).await;

    let err = post_protobuf(
        &client,
        "/apis/test.azml.dev/v1/namespaces/default/widgets",
        protobuf_body("test.azml.dev/v1", "Widget", vec![]),
    )
    .await
    .map_err(api_error)
    .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(
        err.message,
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
    );
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    assert!(widgets.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("{e}")).items.is_empty());

    // Built-in kinds are decoded (an empty StatefulSet message is read, then refused by validation as on a cluster).
    let err = post_protobuf(
        &client,
        "/apis/apps/v1/namespaces/default/statefulsets",
        protobuf_body("apps/v1", "StatefulSet", vec![]),
    )
    .await
    .map_err(api_error)
    .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);

    let err = post_protobuf(&client, "/api/v1/namespaces/default/secrets", b"k8s\0\x0a\xff".to_vec())
        .await
        .map_err(api_error)
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"), "{}", err.message);

    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    let owner = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some("owner".into()), ..Default::default() },
        ..Default::default()
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap_or_else(|e| panic!("{e}"));
    let secret = k8s_pb::api::core::v1::Secret {
        metadata: Some(meta::ObjectMeta {
            generate_name: Some("gen-".into()),
            namespace: Some("default".into()),
            labels: [("app".to_string(), "x".to_string())].into(),
            owner_references: vec![meta::OwnerReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: Some("owner".into()),
                uid: owner.metadata.uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            }],
            finalizers: vec!["test.azml.dev/hold".into()],
            ..Default::default()
        }),
        string_data: [("token".to_string(), "s3cret".to_string())].into(),
        ..Default::default()
    };
    let created = post_protobuf(
        &client,
        "/api/v1/namespaces/default/secrets",
        protobuf_body("v1", "Secret", secret.encode_to_vec()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let name = created["metadata"]["name"].as_str().unwrap_or_default().to_string();
    assert!(name.starts_with("gen-") && name.len() > 4, "{created}");
    let stored: Secret = Api::namespaced(client.clone(), "default").get(&name).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.data.unwrap_or_default().get("token").map(|b| b.0.clone()), Some(b"s3cret".to_vec()));
    assert_eq!(stored.string_data, None);
    assert_eq!(stored.metadata.labels.unwrap_or_default().get("app").map(String::as_str), Some("x"));
    assert_eq!(stored.metadata.finalizers, Some(vec!["test.azml.dev/hold".to_string()]));
    let refs = stored.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        (refs.len(), refs[0].uid.as_str(), refs[0].controller),
        (1, owner.metadata.uid.as_deref().unwrap_or(""), Some(true))
    );
}

/// The real Helm with its default Secret storage: `helm install` of the chart creates the chart's objects and the
/// release record, `helm upgrade` supersedes it, and `helm uninstall` removes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_the_chart() {
    let helm = std::env::var("AZML_HELM").unwrap_or_else(|_| "helm".into());
    let probe = Command::new(&helm).args(["version", "--short"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED helm_install_upgrade_and_uninstall_the_chart: cannot run {helm} (set AZML_HELM)");
        return;
    }
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let (server, client) = start(1000).await;
    let k = Kubectl::new(&server);
    let chart = "deploy/helm/azml-operator";

    let (ok, out, err) =
        k.helm(&helm, &["install", "azml-operator", chart, "-n", "azml-system", "--create-namespace"]).await;
    assert!(ok && out.contains("STATUS: deployed"), "{out}\n{err}");

    let ns = "azml-system";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let release = secrets.get("sh.helm.release.v1.azml-operator.v1").await.unwrap_or_else(|e| panic!("{e}"));
    let labels = release.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("owner").map(String::as_str), Some("helm"), "{labels:?}");
    assert_eq!(labels.get("status").map(String::as_str), Some("deployed"), "{labels:?}");
    assert_eq!(release.type_.as_deref(), Some("helm.sh/release.v1"));
    assert!(release.data.unwrap_or_default().get("release").is_some_and(|r| !r.0.is_empty()));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let role_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let cluster_role_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let exists = |found: Result<Option<()>, kube::Error>| found.unwrap_or_else(|e| panic!("{e}")).is_some();
    let n = "azml-operator";
    let present = || async {
        [
            exists(deployments.get_opt(n).await.map(|o| o.map(drop))),
            exists(sas.get_opt(n).await.map(|o| o.map(drop))),
            exists(roles.get_opt(n).await.map(|o| o.map(drop))),
            exists(role_bindings.get_opt(n).await.map(|o| o.map(drop))),
            exists(cluster_roles.get_opt(n).await.map(|o| o.map(drop))),
            exists(cluster_role_bindings.get_opt(n).await.map(|o| o.map(drop))),
        ]
    };
    // The chart names everything after the release, except the ServiceAccount (values: serviceAccount.name).
    let stored = || {
        let objects = server.store().all_objects();
        objects.iter().map(|o| format!("{} {}", o["kind"], o["metadata"]["name"])).collect::<Vec<_>>()
    };
    assert_eq!(
        present().await,
        [true; 6],
        "deployment, sa, role, rolebinding, clusterrole, clusterrolebinding: {:?}",
        stored()
    );
    assert!(exists(crds.get_opt("mlworkspaces.azml.dev").await.map(|o| o.map(drop))), "chart CRDs installed");

    let (ok, out, err) =
        k.helm(&helm, &["upgrade", "azml-operator", chart, "-n", "azml-system", "--set", "replicas=3"]).await;
    assert!(ok && out.contains("REVISION: 2"), "{out}\n{err}");
    let deployment = deployments.get(n).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(deployment.spec.replicas, Some(3));
    let v1 = secrets.get("sh.helm.release.v1.azml-operator.v1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v1.metadata.labels.unwrap_or_default().get("status").map(String::as_str), Some("superseded"));
    let (ok, out, err) = k.helm(&helm, &["list", "-n", "azml-system", "-o", "json"]).await;
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((list[0]["name"].as_str(), list[0]["revision"].as_str()), (Some("azml-operator"), Some("2")), "{list}");

    let (ok, out, err) = k.helm(&helm, &["uninstall", "azml-operator", "-n", "azml-system"]).await;
    assert!(ok && out.contains("release \"azml-operator\" uninstalled"), "{out}\n{err}");
    assert_eq!(present().await, [false; 6], "chart objects left after uninstall: {:?}", stored());
    let left = secrets.list(&ListParams::default().labels("owner=helm")).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        left.items.is_empty(),
        "release records left: {:?}",
        left.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );
}

/// One Event storage behind core/v1 and events.k8s.io/v1, as in the real API server: an Event written through either
/// API reads through both (kube-rs and client-go's new recorder write events.k8s.io, `kubectl describe` and
/// `kubectl events` read core/v1, older clients write core/v1), a series bump shows in both, a deletion removes both,
/// and the core/v1 form of an events.k8s.io Event has no lastTimestamp (the server converts, it does not invent).
#[tokio::test]
async fn events_share_one_storage_behind_both_apis() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let (_server, client) = start(1000).await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let regarding =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": "default", "uid": "u-1"});

    let written: NewEvent = serde_json::from_value(json!({
        "metadata": {"name": "cm.1", "namespace": "default"},
        "eventTime": "2026-12-07T00:00:00.000000Z", "reportingController": "azml-operator",
        "reportingInstance": "azml-operator", "action": "Reconcile", "reason": "Created", "type": "Normal",
        "note": "Created the thing", "regarding": regarding,
    }))
    .unwrap();
    new.create(&PostParams::default(), &written).await.unwrap();
    let seen = core.get("cm.1").await.unwrap();
    assert_eq!(seen.message.as_deref(), Some("Created the thing"));
    assert_eq!(seen.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(seen.last_timestamp, None, "the conversion does not invent a lastTimestamp");
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-12-07T00:01:00.000000Z"}});
    new.patch("cm.1", &PatchParams::default(), &Patch::Merge(&series)).await.unwrap();
    let seen = core.get("cm.1").await.unwrap();
    assert_eq!(seen.series.and_then(|s| s.count), Some(2), "the series shows through core/v1");

    let old_style: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "cm.2", "namespace": "default"},
        "involvedObject": regarding, "reason": "Scaled", "message": "Scaled up", "type": "Normal",
        "source": {"component": "old-controller"}, "count": 3,
        "firstTimestamp": "2026-12-07T00:00:00Z", "lastTimestamp": "2026-12-07T00:02:00Z",
    }))
    .unwrap();
    core.create(&PostParams::default(), &old_style).await.unwrap();
    let seen = new.get("cm.2").await.unwrap();
    assert_eq!(seen.note.as_deref(), Some("Scaled up"));
    assert_eq!(seen.regarding.and_then(|r| r.name).as_deref(), Some("cm"));
    assert_eq!(seen.deprecated_count, Some(3));
    assert_eq!(new.list(&ListParams::default()).await.unwrap().items.len(), 2);

    core.delete("cm.2", &DeleteParams::default()).await.unwrap();
    new.delete("cm.1", &DeleteParams::default()).await.unwrap();
    assert!(new.get_opt("cm.2").await.unwrap().is_none(), "deleted through core/v1: gone from events.k8s.io");
    assert!(core.get_opt("cm.1").await.unwrap().is_none(), "deleted through events.k8s.io: gone from core/v1");
}

/// A raw GET with `accept`: status code and JSON body (watches are read as their first line).
async fn get_as(client: &Client, path: &str, accept: &str) -> (u16, Value) {
    let request = http::Request::get(path).header("Accept", accept).body(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let response = client.send(request.map(kube::client::Body::from)).await.unwrap_or_else(|e| panic!("{e}"));
    let code = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        bytes.extend_from_slice(&frame.unwrap_or_else(|e| panic!("{e}")).into_data().unwrap_or_default());
        if path.contains("watch=true") && bytes.contains(&b'\n') {
            break;
        }
    }
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    (code, serde_json::from_slice(first_line).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes))))
}

#[tokio::test]
async fn metadata_only_lists_gets_and_watches_carry_no_spec_or_data() {
    const ONE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    const LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (_server, client) = start(64).await;
    install_crd(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut w = widget("w1", "westeurope");
    w.metadata.labels = Some([("app".to_string(), "a".to_string())].into());
    widgets.create(&PostParams::default(), &w).await.unwrap_or_else(|e| panic!("{e}"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"secret-ish": "v"}}))
        .unwrap_or_else(|e| panic!("{e}"));
    cms.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));

    let base = "/apis/test.azml.dev/v1/namespaces/default/widgets";
    let (code, list) = get_as(&client, base, LIST).await;
    assert_eq!(code, 200);
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("PartialObjectMetadataList"), Some("meta.k8s.io/v1"))
    );
    assert!(list["metadata"]["resourceVersion"].is_string());
    let item = &list["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert_eq!(item["metadata"]["name"], "w1");
    assert_eq!(item["metadata"]["labels"]["app"], "a");
    assert!(item.get("spec").is_none(), "metadata only: {item}");

    let (code, one) = get_as(&client, &format!("{base}/w1"), ONE).await;
    assert_eq!((code, one["kind"].as_str()), (200, Some("PartialObjectMetadata")));
    assert!(one.get("spec").is_none() && one["metadata"]["uid"].is_string());
    let (code, cm) = get_as(&client, "/api/v1/namespaces/default/configmaps/c", ONE).await;
    assert_eq!((code, cm.get("data")), (200, None), "a built-in kind converts too (and never as protobuf)");

    // The wrong shape is 406, as the API server answers it.
    assert_eq!(get_as(&client, base, ONE).await.0, 406);
    assert_eq!(get_as(&client, &format!("{base}/w1"), LIST).await.0, 406);

    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
    let watch = tokio::spawn({
        let client = client.clone();
        async move { get_as(&client, &format!("{base}?watch=true&resourceVersion={rv}&timeoutSeconds=5"), ONE).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    widgets
        .patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, event) = watch.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((code, event["type"].as_str()), (200, Some("MODIFIED")));
    assert_eq!(event["object"]["kind"], "PartialObjectMetadata");
    assert!(event["object"].get("spec").is_none(), "{event}");

    // kube-runtime's watcher of `Api<PartialObjectMeta<_>>` lists and watches this way.
    let metadata: Api<kube::core::PartialObjectMeta<Widget>> = Api::namespaced(client.clone(), "default");
    let seen: Vec<kube::core::PartialObjectMeta<Widget>> = kube::runtime::watcher(metadata, Default::default())
        .filter_map(|e| async move {
            match e {
                Ok(kube::runtime::watcher::Event::InitApply(o)) => Some(o),
                _ => None,
            }
        })
        .take(1)
        .collect()
        .await;
    assert_eq!(seen[0].metadata.name.as_deref(), Some("w1"));
    assert_eq!(seen[0].types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
}
