//! What the controllers keep in memory per object, and for how long (issue 20: 10,000 workspaces in 64 MiB).
//!
//! - **Only what reconciles read enters a watch cache.** [`strip`] runs on every watch event before the reflector
//!   stores it: `managedFields` (often larger than the spec) and the `kubectl.kubernetes.io/last-applied-configuration`
//!   annotation (a second copy of the whole object) are never read by a reconcile. Both are metadata the API server
//!   keeps; no controller writes an object back from its cache (finalizers, owner references and status are merge
//!   patches), so nothing is lost.
//! - **One MlWorkspace watch.** Only the workspace controller watches and caches MlWorkspaces. The kinds that live
//!   in a workspace (endpoints, computes, connections) are woken from that same watch through the
//!   [`WorkspaceFeed`] (every event it sees: status changes and deletions too) instead of each watching MlWorkspaces
//!   again: one LIST and one watch connection instead of four, and each event decoded once.
//! - **Per-object memory is pruned.** [`sweep`] forgets, once per resync period, what the controller remembers about
//!   objects no longer in its cache (objects deleted while a watch was down, or before their finalizer was added),
//!   and [`super::ObjectMemory`] drops a remembered status once the cache shows it.

use std::collections::HashSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The annotation `kubectl apply` writes (client-side apply): the whole last applied object, as JSON.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How many workspace events a woken controller may fall behind before it is told to look at all its objects.
const FEED_CAPACITY: usize = 1024;

/// The one MlWorkspace watch, shared: what it sees, for the controllers of the kinds that live in a workspace.
/// The workspace controller's watch publishes every event ([`WorkspaceFeed::publish`], after its cache is
/// updated); each child controller subscribes ([`WorkspaceFeed::subscribe`]) and wakes its objects that name the
/// workspace. Cheap to clone (one channel).
#[derive(Clone)]
pub struct WorkspaceFeed {
    tx: broadcast::Sender<Touched>,
}

impl std::fmt::Debug for WorkspaceFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceFeed").field("subscribers", &self.tx.receiver_count()).finish()
    }
}

impl Default for WorkspaceFeed {
    fn default() -> Self {
        WorkspaceFeed { tx: broadcast::channel(FEED_CAPACITY).0 }
    }
}

/// What changed, as a child controller learns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// The workspace `name` of `namespace` was created, changed (status included) or deleted.
    One {
        /// Its namespace.
        namespace: Option<String>,
        /// Its name.
        name: String,
    },
    /// Anything may have changed: the watch listed everything again (deletions while it was down are not events),
    /// or the subscriber fell behind and lost events.
    All,
}

impl Touched {
    /// Whether an object of `namespace` that belongs to the workspace `workspace` is concerned.
    pub fn concerns(&self, namespace: Option<&str>, workspace: &str) -> bool {
        match self {
            Touched::One { namespace: ns, name } => ns.as_deref() == namespace && name == workspace,
            Touched::All => true,
        }
    }
}

impl WorkspaceFeed {
    /// Publishes one event of the workspace watch (nobody listening is fine).
    pub fn publish<K: Resource>(&self, event: &watcher::Event<K>) {
        let touched = match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) | watcher::Event::Delete(obj) => {
                Touched::One { namespace: obj.namespace(), name: obj.name_any() }
            }
            watcher::Event::InitDone => Touched::All,
            watcher::Event::Init => return,
        };
        let _ = self.tx.send(touched);
    }

    /// The events published from now on; a subscriber that fell behind gets [`Touched::All`] for what it lost.
    pub fn subscribe(&self) -> impl Stream<Item = Touched> + Send + 'static {
        futures::stream::unfold(self.tx.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(touched) => Some((touched, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Touched::All, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}

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

/// `value` as it comes back from the API server: through JSON, whose timestamps (`metav1.Time`) have whole
/// seconds. A status remembered with the nanoseconds of the clock never equals the one the watch cache shows, so
/// its copy would stay in memory for the life of the object. Unchanged when it cannot be serialized.
pub fn as_stored<T: serde::Serialize + serde::de::DeserializeOwned>(value: T) -> T {
    serde_json::to_value(&value).and_then(serde_json::from_value).unwrap_or(value)
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
    fn a_status_written_with_sub_second_timestamps_is_recognised_in_the_cache() {
        use crate::api::v1alpha1::MlWorkspaceStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let memory: super::super::ObjectMemory<MlWorkspaceStatus> = Default::default();
        let now: jiff::Timestamp = "2026-12-07T03:04:05.678901234Z".parse().expect("timestamp");
        let written = MlWorkspaceStatus { last_sync_time: Some(Time(now)), ..Default::default() };
        memory.wrote(Some("uid-1".into()), written.clone());
        // What the API server returns (and the watch cache holds): the same status through JSON.
        let carried: MlWorkspaceStatus =
            serde_json::from_str(&serde_json::to_string(&written).expect("json")).expect("status");
        assert_ne!(carried, written, "metav1.Time drops the sub-second part");
        assert_eq!(memory.status(Some("uid-1".into()), Some(&carried)), Some(carried.clone()));
        // The copy is gone: an older status in the cache is what is read now.
        let older = MlWorkspaceStatus::default();
        assert_eq!(memory.status(Some("uid-1".into()), Some(&older)), Some(older));
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

    #[tokio::test]
    async fn the_feed_passes_every_workspace_event_and_tells_a_lagging_subscriber_to_look_at_everything() {
        let feed = WorkspaceFeed::default();
        let mut ws = workspace();
        ws.metadata.namespace = Some("team-a".into());
        let mut events = Box::pin(feed.subscribe());
        feed.publish(&watcher::Event::<MlWorkspace>::Init);
        feed.publish(&watcher::Event::InitApply(ws.clone()));
        feed.publish(&watcher::Event::<MlWorkspace>::InitDone);
        feed.publish(&watcher::Event::Apply(ws.clone()));
        feed.publish(&watcher::Event::Delete(ws.clone()));
        let one = Touched::One { namespace: Some("team-a".into()), name: "ws".into() };
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(events.next().await.expect("event"));
        }
        assert_eq!(got, [one.clone(), Touched::All, one.clone(), one.clone()]);
        assert!(one.concerns(Some("team-a"), "ws"));
        assert!(!one.concerns(Some("team-b"), "ws") && !one.concerns(Some("team-a"), "other"));
        for _ in 0..(FEED_CAPACITY + 1) {
            feed.publish(&watcher::Event::Apply(ws.clone()));
        }
        assert_eq!(events.next().await, Some(Touched::All), "lost events become one look at everything");
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
