//! Garbage collection in the Kubernetes API emulator, as kube-controller-manager's garbage collector does it:
//! dependents (objects whose ownerReferences name a deleted owner) are deleted in the background, the owner waits
//! for them in the foreground, or they are orphaned.

use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

async fn start() -> (RunningServer, Api<ConfigMap>) {
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let client = server.client().unwrap_or_else(|e| panic!("{e}"));
    (server, Api::default_namespaced(client))
}

/// Creates a ConfigMap owned by `owners` (with blockOwnerDeletion), with optional finalizers.
async fn create(api: &Api<ConfigMap>, name: &str, owners: &[&ConfigMap], finalizers: &[&str]) -> ConfigMap {
    create_with(api, name, owners, finalizers, true).await
}

async fn create_with(
    api: &Api<ConfigMap>,
    name: &str,
    owners: &[&ConfigMap],
    finalizers: &[&str],
    block_owner_deletion: bool,
) -> ConfigMap {
    let refs: Vec<OwnerReference> = owners
        .iter()
        .map(|o| OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: o.metadata.name.clone().unwrap_or_default(),
            uid: o.metadata.uid.clone().unwrap_or_default(),
            block_owner_deletion: Some(block_owner_deletion),
            controller: None,
        })
        .collect();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    if !refs.is_empty() {
        cm.metadata.owner_references = Some(refs);
    }
    if !finalizers.is_empty() {
        cm.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    }
    api.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("create {name}: {e}"))
}

async fn exists(api: &Api<ConfigMap>, name: &str) -> Option<ConfigMap> {
    api.get_opt(name).await.unwrap_or_else(|e| panic!("get {name}: {e}"))
}

#[tokio::test]
async fn background_deletion_collects_dependents_transitively_but_not_those_with_another_live_owner() {
    let (_server, api) = start().await;
    let owner = create(&api, "owner", &[], &[]).await;
    let other = create(&api, "other-owner", &[], &[]).await;
    let child = create(&api, "child", &[&owner], &[]).await;
    create(&api, "grandchild", &[&child], &[]).await;
    create(&api, "shared", &[&owner, &other], &[]).await;
    create(&api, "unrelated", &[], &[]).await;

    api.delete("owner", &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(exists(&api, "owner").await.is_none());
    assert!(exists(&api, "child").await.is_none(), "the dependent is collected");
    assert!(exists(&api, "grandchild").await.is_none(), "and its own dependent");
    let shared = exists(&api, "shared").await.unwrap_or_else(|| panic!("an object with a live owner stays"));
    let refs = shared.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        refs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["other-owner"],
        "only the dangling ref goes"
    );
    assert!(exists(&api, "unrelated").await.is_some());
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let (_server, api) = start().await;
    let owner = create(&api, "owner", &[], &[]).await;
    create(&api, "child", &[&owner], &[]).await;
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..DeleteParams::default() };
    api.delete("owner", &dp).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(exists(&api, "owner").await.is_none());
    let child = exists(&api, "child").await.unwrap_or_else(|| panic!("orphaned, not deleted"));
    assert!(child.metadata.owner_references.is_none(), "{:?}", child.metadata.owner_references);
}

#[tokio::test]
async fn foreground_deletion_holds_the_owner_until_its_dependents_are_gone() {
    let (_server, api) = start().await;
    let owner = create(&api, "owner", &[], &[]).await;
    create(&api, "held", &[&owner], &["test.azml.dev/hold"]).await;
    create(&api, "free", &[&owner], &[]).await;
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..DeleteParams::default() };
    api.delete("owner", &dp).await.unwrap_or_else(|e| panic!("{e}"));

    let waiting = exists(&api, "owner").await.unwrap_or_else(|| panic!("the owner waits for its dependents"));
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(waiting.metadata.finalizers, Some(vec!["foregroundDeletion".to_string()]));
    assert!(exists(&api, "free").await.is_none(), "a dependent without finalizers is deleted at once");
    let held = exists(&api, "held").await.unwrap_or_else(|| panic!("a dependent with a finalizer is only marked"));
    assert!(held.metadata.deletion_timestamp.is_some());

    // Releasing the last dependent releases the owner.
    let release = json!({"metadata": {"finalizers": null}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(exists(&api, "held").await.is_none());
    assert!(exists(&api, "owner").await.is_none(), "the owner goes once its dependents are gone");
}

#[tokio::test]
async fn foreground_deletion_waits_only_for_dependents_that_block_it() {
    let (_server, api) = start().await;
    let owner = create(&api, "owner", &[], &[]).await;
    create_with(&api, "lingering", &[&owner], &["test.azml.dev/hold"], false).await;
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..DeleteParams::default() };
    api.delete("owner", &dp).await.unwrap_or_else(|e| panic!("{e}"));
    // The dependent is being deleted (its finalizer holds it), but it does not block its owner.
    let lingering = exists(&api, "lingering").await.unwrap_or_else(|| panic!("held by its own finalizer"));
    assert!(lingering.metadata.deletion_timestamp.is_some());
    assert!(exists(&api, "owner").await.is_none(), "a non-blocking dependent does not hold the owner");
}
