//! What the controllers keep in memory per object, and for how long (issue 20: 10,000 workspaces in 64 MiB).
//!
//! - **The watch caches hold metadata only** ([`Cached`], `PartialObjectMetadata`: the API server sends nothing
//!   else). Metadata is all that decides whether an object needs a reconcile (generation, annotations, finalizers,
//!   deletion); the reconcile reads the object itself from the API server when it starts (one Kubernetes GET, no
//!   Azure call), so it also sees our own latest status write. kube-runtime's documentation recommends this for
//!   controllers whose objects are many and large; a whole MlWorkspace with its status is several KiB, its metadata
//!   a few hundred bytes.
//! - **What is left of metadata is what reconciles read.** [`strip`] runs on every watch event before the
//!   reflector stores it: `managedFields` (often larger than the spec) and the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation (a second copy of the whole object).
//! - **Related objects find whom to wake in a [`WakeIndex`]**, kept by the reconciles (an object's wake key, e.g.
//!   a workspace's subscription, and whether it is stalled, and why) instead of in the spec and status of a cached
//!   object.
//! - **One MlWorkspace watch.** Only the workspace controller watches MlWorkspaces. The kinds that live in a
//!   workspace (endpoints, computes, connections) are woken from that same watch through the [`WorkspaceFeed`]
//!   (every event it sees: status changes and deletions too) instead of each watching MlWorkspaces again.
//! - **Per-object memory is pruned.** [`sweep`] forgets, once per resync period, what the controller remembers about
//!   objects no longer in its cache (objects deleted while a watch was down, or before their finalizer was added),
//!   and a reconcile's own status writes are forgotten when it ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::conditions::Reason;
use crate::intern::Interner;

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

/// Removes from `obj` what deciding whether to reconcile it does not read, before the object enters a watch cache:
/// kept are its identity (name, namespace, uid), generation, annotations (but the last-applied copy), finalizers and
/// deletion timestamp. The reconcile reads the whole object from the API server. (The watcher resumes from the
/// resourceVersions it has seen itself, before this runs; every reference the scheduler keeps would carry a copy.)
pub fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.resource_version = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.creation_timestamp = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What a watch cache holds of an object of kind `K`: its metadata (see the module docs).
pub type Cached<K> = PartialObjectMeta<K>;

/// Per object uid, what related objects find it by: its namespace and name, its wake key
/// ([`super::Kind::wake_key`]) and the reason it is stalled for, if it is. Kept by the reconciles: every object is
/// reconciled when the controller starts, and an object not reconciled yet is in the queue anyway. Compact (10,000
/// workspaces): namespaces and keys, shared by many objects, are stored once.
pub struct WakeIndex<K> {
    inner: std::sync::Mutex<IndexInner>,
    kind: std::marker::PhantomData<fn() -> K>,
}

#[derive(Default)]
struct IndexInner {
    entries: HashMap<Box<str>, Indexed>,
    /// Namespaces and wake keys, each stored once (ASCII-lowercased keys).
    strings: Interner,
}

struct Indexed {
    namespace: Option<Arc<str>>,
    name: Box<str>,
    key: Option<Arc<str>>,
    stalled: Option<Reason>,
}

impl<K> Default for WakeIndex<K> {
    fn default() -> Self {
        WakeIndex { inner: std::sync::Mutex::default(), kind: std::marker::PhantomData }
    }
}

impl<K: super::Kind> WakeIndex<K> {
    /// Records `obj` as a reconcile read it (its stall, if any, stays until the reconcile reports).
    pub fn observe(&self, obj: &K) {
        let Some(uid) = obj.meta().uid.as_deref() else { return };
        let mut inner = super::lock(&self.inner);
        let namespace = obj.meta().namespace.as_deref().map(|ns| inner.strings.intern(ns));
        let key = obj.wake_key().map(|k| inner.strings.intern(&k.to_ascii_lowercase()));
        let name: Box<str> = obj.meta().name.as_deref().unwrap_or_default().into();
        match inner.entries.get_mut(uid) {
            Some(entry) => {
                entry.namespace = namespace;
                entry.name = name;
                entry.key = key;
            }
            None => {
                inner.entries.insert(uid.into(), Indexed { namespace, name, key, stalled: None });
            }
        }
    }

    /// Records whether `obj` is stalled now, and why.
    pub fn stalled(&self, obj: &K, reason: Option<Reason>) {
        let Some(uid) = obj.meta().uid.as_deref() else { return };
        if let Some(entry) = super::lock(&self.inner).entries.get_mut(uid) {
            entry.stalled = reason;
        }
    }

    /// The objects of `namespace` (`None`: any) whose wake key is `key` (ASCII case ignored).
    pub fn with_key(&self, namespace: Option<&str>, key: &str) -> Vec<ObjectRef<Cached<K>>> {
        let key = key.to_ascii_lowercase();
        self.select(|entry| {
            namespace.is_none_or(|ns| entry.namespace.as_deref() == Some(ns)) && entry.key.as_deref() == Some(&*key)
        })
    }

    /// Every object indexed.
    pub fn all(&self) -> Vec<ObjectRef<Cached<K>>> {
        self.select(|_| true)
    }

    /// The objects stalled for `reason`.
    pub fn stalled_for(&self, reason: Reason) -> Vec<ObjectRef<Cached<K>>> {
        self.select(|entry| entry.stalled == Some(reason))
    }

    fn select(&self, wanted: impl Fn(&Indexed) -> bool) -> Vec<ObjectRef<Cached<K>>> {
        let inner = super::lock(&self.inner);
        let reference = |e: &Indexed| {
            let reference = ObjectRef::new(&e.name);
            match &e.namespace {
                Some(ns) => reference.within(ns),
                None => reference,
            }
        };
        inner.entries.values().filter(|e| wanted(e)).map(reference).collect()
    }

    /// Forgets `uid` (the object is gone).
    pub fn forget(&self, uid: &str) {
        super::lock(&self.inner).entries.remove(uid);
    }

    /// Forgets every object whose uid is not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut inner = super::lock(&self.inner);
        inner.entries.retain(|uid, _| live.contains(&**uid));
        inner.strings.prune();
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
        ws.metadata.labels = Some(BTreeMap::from([("team".to_owned(), "a".to_owned())]));
        ws.metadata.resource_version = Some("42".into());
        ws.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let spec_before = serde_json::to_value(&ws.spec).expect("spec");
        strip(&mut ws);
        assert_eq!(ws.metadata.managed_fields, None);
        assert_eq!((ws.metadata.labels.as_ref(), ws.metadata.creation_timestamp.as_ref()), (None, None));
        assert_eq!(ws.metadata.resource_version, None);
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
    fn the_wake_index_finds_objects_by_key_namespace_and_stall_and_forgets_them() {
        let index: WakeIndex<MlWorkspace> = WakeIndex::default();
        let named = |name: &str, ns: &str, uid: &str, subscription: &str| {
            let mut ws = workspace();
            ws.metadata.name = Some(name.into());
            ws.metadata.namespace = Some(ns.into());
            ws.metadata.uid = Some(uid.into());
            ws.spec.subscription_id = subscription.into();
            ws
        };
        let a = named("a", "team-a", "uid-a", "0B1F6471-1BF0-4DDA-AEC3-111122223333");
        let b = named("b", "team-b", "uid-b", "0b1f6471-1bf0-4dda-aec3-111122223333");
        let c = named("c", "team-a", "uid-c", "11111111-1bf0-4dda-aec3-111122223333");
        for ws in [&a, &b, &c] {
            index.observe(ws);
        }
        let names = |refs: Vec<ObjectRef<Cached<MlWorkspace>>>| {
            let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert_eq!(names(index.with_key(None, "0b1f6471-1bf0-4dda-aec3-111122223333")), ["a", "b"], "case ignored");
        assert_eq!(names(index.with_key(Some("team-a"), "0b1f6471-1bf0-4dda-aec3-111122223333")), ["a"]);
        assert_eq!(index.with_key(None, "2b1f6471-1bf0-4dda-aec3-111122223333"), []);
        index.stalled(&b, Some(Reason::CredentialUnavailable));
        index.stalled(&c, Some(Reason::NotPermitted));
        assert_eq!(names(index.stalled_for(Reason::CredentialUnavailable)), ["b"]);
        // A later read keeps the stall until the reconcile reports; a report without a stall clears it.
        index.observe(&b);
        assert_eq!(names(index.stalled_for(Reason::CredentialUnavailable)), ["b"]);
        index.stalled(&b, None);
        assert_eq!(index.stalled_for(Reason::CredentialUnavailable), []);
        // The spec changed subscription: the key follows the latest read.
        let moved = named("a", "team-a", "uid-a", "11111111-1bf0-4dda-aec3-111122223333");
        index.observe(&moved);
        assert_eq!(names(index.with_key(None, "11111111-1bf0-4dda-aec3-111122223333")), ["a", "c"]);
        index.forget("uid-c");
        index.retain(&HashSet::from(["uid-a".to_owned()]));
        assert_eq!(names(index.all()), ["a"]);
        let shared = super::super::lock(&index.inner).strings.len();
        assert_eq!(shared, 2, "the namespace and key of the one object left");
        assert_eq!(index.all()[0].namespace.as_deref(), Some("team-a"));
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
