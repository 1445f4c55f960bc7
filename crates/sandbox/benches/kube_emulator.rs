//! Benchmark of the Kubernetes API emulator (not a timed test): write throughput and watch fan-out with 10,000
//! custom resources and 10 watchers, and memory per stored object.
//!
//! Run with `cargo bench --bench kube_emulator`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azml_kube_emulator::store::{Target, WriteOptions};
use azml_kube_emulator::{KubeApiServer, ServerOptions, Store};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

const OBJECTS: usize = 10_000;
const WATCHERS: usize = 10;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.bench.azml.dev"},
        "spec": {"group": "bench.azml.dev", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["location"], "properties": {
                        "location": {"type": "string", "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "location is immutable"}]},
                        "replicas": {"type": "integer", "minimum": 1, "default": 1},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}
    })
}

fn widget(i: usize) -> Value {
    json!({"apiVersion": "bench.azml.dev/v1", "kind": "Widget",
           "metadata": {"name": format!("w{i:05}"), "labels": {"shard": (i % 10).to_string()}},
           "spec": {"location": "westeurope", "tags": {"team": "ml", "env": "bench"}}})
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn store_only() {
    let store = Store::new(OBJECTS * 2);
    let crd_target = Target {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        plural: "customresourcedefinitions".into(),
        ..Target::default()
    };
    let opts = WriteOptions { field_manager: "bench".into(), ..WriteOptions::default() };
    if let Err(e) = store.create(&crd_target, crd(), &opts) {
        eprintln!("crd: {e}");
        return;
    }
    let t = Target {
        group: "bench.azml.dev".into(),
        version: "v1".into(),
        plural: "widgets".into(),
        namespace: Some("default".into()),
        ..Target::default()
    };
    let before = rss_kib();
    let started = Instant::now();
    for i in 0..OBJECTS {
        if let Err(e) = store.create(&t, widget(i), &opts) {
            eprintln!("create: {e}");
            return;
        }
    }
    let elapsed = started.elapsed();
    let after = rss_kib();
    let bytes: usize = (0..100).map(|i| widget(i).to_string().len()).sum::<usize>() / 100;
    println!(
        "store only: {OBJECTS} creates (schema + CEL admission) in {:.2?} = {:.0} creates/s; RSS +{} KiB = {:.1} KiB per object (incl. watch history; request JSON ~{bytes} B)",
        elapsed,
        OBJECTS as f64 / elapsed.as_secs_f64(),
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / OBJECTS as f64,
    );
}

async fn over_http() -> Result<(), Box<dyn std::error::Error>> {
    let opts = ServerOptions { history_limit: OBJECTS * 2, ..ServerOptions::default() };
    let server = KubeApiServer::start(opts).await?;
    let client = server.client()?;
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crds.create(&PostParams::default(), &serde_json::from_value(crd())?).await?;
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("bench.azml.dev", "v1", "Widget"), "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);

    let received = Arc::new(AtomicUsize::new(0));
    let start_rv = server.store().resource_version().to_string();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let api = api.clone();
        let received = received.clone();
        let rv = start_rv.clone();
        let mut stream = api.watch(&WatchParams::default().timeout(290), &rv).await?.boxed();
        watchers.push(tokio::spawn(async move {
            let mut n = 0;
            while let Ok(Some(ev)) = stream.try_next().await {
                if matches!(ev, WatchEvent::Added(_)) {
                    n += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                    if n == OBJECTS {
                        break;
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let results: Vec<Result<DynamicObject, kube::Error>> = futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let api = api.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(widget(i)).map_err(kube::Error::SerdeError)?;
                api.create(&PostParams::default(), &obj).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let write_elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < OBJECTS * WATCHERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fanout_elapsed = started.elapsed();
    let delivered = received.load(Ordering::Relaxed);
    println!(
        "over HTTP (kube-rs, 16 in flight): {OBJECTS} creates in {write_elapsed:.2?} = {:.0} creates/s ({failed} failed)",
        OBJECTS as f64 / write_elapsed.as_secs_f64()
    );
    println!(
        "watch fan-out: {delivered}/{} events to {WATCHERS} watchers, all delivered {:.2?} after the first write ({:.0} events/s delivered); last event {:.2?} after the last write",
        OBJECTS * WATCHERS,
        fanout_elapsed,
        delivered as f64 / fanout_elapsed.as_secs_f64(),
        fanout_elapsed.saturating_sub(write_elapsed),
    );
    for w in watchers {
        w.abort();
    }
    server.shutdown().await;
    Ok(())
}

fn main() {
    store_only();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    if let Err(e) = runtime.block_on(over_http()) {
        eprintln!("bench failed: {e}");
    }
}
