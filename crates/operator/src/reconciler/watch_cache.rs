//! What the controllers keep in memory per object, and for how long (issue 20: 10,000 workspaces in 64 MiB).
//!
//! - **Only what reconciles read enters a watch cache.** [`strip`] runs on every watch event before the reflector
//!   stores it: `managedFields` (often larger than the spec) and the `kubectl.kubernetes.io/last-applied-configuration`
//!   annotation (a second copy of the whole object) are never read by a reconcile. Both are metadata the API server
//!   keeps; no controller writes an object back from its cache (finalizers, owner references and status are merge
//!   patches), so nothing is lost.
//! - **One MlWorkspace cache.** Only the workspace controller caches MlWorkspaces; the endpoint and compute
//!   controllers watch them as triggers only (nothing stored).
//! - **Per-object memory is pruned.** [`sweep`] forgets, once per resync period, what the controller remembers about
//!   objects no longer in its cache (objects deleted while a watch was down, or before their finalizer was added),
//!   and [`super::ObjectMemory`] drops a remembered status once the cache shows it.

use std::collections::HashSet;
use std::time::Duration;

use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

/// The annotation `kubectl apply` writes (client-side apply): the whole last applied object, as JSON.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes from `obj` what no reconcile reads, before the object enters a watch cache.
pub fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The uids of the objects in `store`.
pub fn live_uids<K>(store: &Store<K>) -> HashSet<String>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().filter_map(|o| o.uid()).collect()
}

/// Every `period` once `store` is ready, calls `prune` with the uids of the objects in it (until `shutdown`).
pub async fn sweep<K>(
    store: Store<K>,
    period: Duration,
    shutdown: CancellationToken,
    prune: impl Fn(&HashSet<String>) + Send + Sync + 'static,
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ready = store.wait_until_ready() => if ready.is_err() { return },
    }
    let mut ticker = tokio::time::interval(period.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => prune(&live_uids(&store)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;
    use crate::api::v1alpha1::{MlWorkspace, MlWorkspaceSpec};

    fn workspace() -> MlWorkspace {
        let spec: MlWorkspaceSpec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333", "resourceGroup": "rg", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .expect("spec");
        let mut ws = MlWorkspace::new("ws", spec);
        ws.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl-client-side-apply".into()),
            operation: Some("Update".into()),
            ..Default::default()
        }]);
        ws
    }

    #[test]
    fn strip_drops_managed_fields_and_the_last_applied_copy_and_keeps_other_annotations() {
        let mut ws = workspace();
        ws.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED_ANNOTATION.to_owned(), "{\"big\": \"copy\"}".to_owned()),
            (crate::api::v1alpha1::ANNOTATION_PAUSED.to_owned(), "true".to_owned()),
        ]));
        ws.metadata.finalizers = Some(vec![crate::api::v1alpha1::FINALIZER.to_owned()]);
        let spec_before = serde_json::to_value(&ws.spec).expect("spec");
        strip(&mut ws);
        assert_eq!(ws.metadata.managed_fields, None);
        let annotations = ws.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), vec![crate::api::v1alpha1::ANNOTATION_PAUSED]);
        assert_eq!(ws.finalizers(), [crate::api::v1alpha1::FINALIZER.to_owned()]);
        assert_eq!(serde_json::to_value(&ws.spec).expect("spec"), spec_before);
    }

    #[test]
    fn strip_leaves_no_empty_annotation_map() {
        let mut ws = workspace();
        ws.metadata.annotations = Some(BTreeMap::from([(LAST_APPLIED_ANNOTATION.to_owned(), "{}".to_owned())]));
        strip(&mut ws);
        assert_eq!(ws.metadata.annotations, None);
    }

    #[test]
    fn a_remembered_status_is_dropped_once_the_cache_shows_it() {
        use crate::api::v1alpha1::MlWorkspaceStatus;
        let memory: super::super::ObjectMemory<MlWorkspaceStatus> = Default::default();
        let uid = || Some("uid-1".to_owned());
        let old = MlWorkspaceStatus::default();
        let new = MlWorkspaceStatus { resource_id: Some("/subscriptions/x".into()), ..Default::default() };
        memory.wrote(uid(), new.clone());
        // The cache lags behind our write: the write wins, and is kept.
        assert_eq!(memory.status(uid(), Some(&old)), Some(new.clone()));
        assert_eq!(memory.status(uid(), Some(&old)), Some(new.clone()));
        // The cache shows it: the copy is dropped, so from now on the cache is read.
        assert_eq!(memory.status(uid(), Some(&new)), Some(new.clone()));
        assert_eq!(memory.status(uid(), Some(&old)), Some(old));
    }

    #[test]
    fn retain_forgets_the_objects_no_longer_cached() {
        use crate::api::v1alpha1::MlWorkspaceStatus;
        let memory: super::super::ObjectMemory<MlWorkspaceStatus> = Default::default();
        let written = MlWorkspaceStatus { resource_id: Some("/subscriptions/x".into()), ..Default::default() };
        for uid in ["live", "gone"] {
            memory.wrote(Some(uid.into()), written.clone());
            memory.bump_failures(Some(uid.into()));
        }
        memory.retain(&HashSet::from(["live".to_owned()]));
        assert_eq!(memory.status(Some("live".into()), None), Some(written.clone()));
        assert_eq!(memory.status(Some("gone".into()), None), None);
        assert_eq!(memory.bump_failures(Some("live".into())), 2);
        assert_eq!(memory.bump_failures(Some("gone".into())), 1, "the failure count starts afresh");
    }

    #[test]
    fn stripping_makes_the_object_smaller_than_half() {
        let mut ws = workspace();
        let copy = serde_json::to_string(&ws).expect("json");
        ws.metadata.annotations = Some(BTreeMap::from([(LAST_APPLIED_ANNOTATION.to_owned(), copy)]));
        let before = serde_json::to_string(&ws).expect("json").len();
        strip(&mut ws);
        let after = serde_json::to_string(&ws).expect("json").len();
        assert!(after * 2 < before, "{after} of {before} bytes");
    }
}
