//! The object store: one lock around all objects, the type registry and the bounded watch history, so every
//! write is atomic and every watcher sees a gap-free sequence of events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::error::{ApiError, ApiResult, Cause};
use super::patch::{self, Scope, Writer};
use super::registry::{Registry, ResKey, ResourceType, crd_status};
use super::select::{FieldSelector, LabelSelector};
use super::typed;
use super::validation::{self, FieldValidation};

/// Type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created (or entered the selector).
    Added,
    /// Object changed.
    Modified,
    /// Object removed (or left the selector).
    Deleted,
}

impl EventType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// A committed change.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Resource type.
    pub key: ResKey,
    /// What happened.
    pub type_: EventType,
    /// Object after the change (before it, for deletes).
    pub object: Arc<Value>,
    /// Object before the change, for modifications.
    pub old: Option<Arc<Value>>,
}

/// Addressed resource of a request.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural.
    pub plural: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource (`status`).
    pub subresource: Option<String>,
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Field manager (from `?fieldManager=` or the User-Agent).
    pub field_manager: String,
    /// Unknown-field handling.
    pub field_validation: FieldValidation,
    /// `?dryRun=All`.
    pub dry_run: bool,
    /// `?force=true` for apply.
    pub force: bool,
}

/// Result of a write.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The stored (or would-be stored) object.
    pub object: Value,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
    /// Whether the object was created (201).
    pub created: bool,
}

/// Selection for list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size.
    pub limit: Option<usize>,
    /// Continue token.
    pub continue_token: Option<String>,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Matching objects (presented in the requested version).
    pub items: Vec<Value>,
    /// resourceVersion of the list.
    pub resource_version: u64,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// Items left after this page.
    pub remaining: Option<usize>,
}

/// What a new watch starts with.
#[derive(Debug)]
pub struct WatchStart {
    /// Events to send first (replayed history or synthetic ADDED).
    pub initial: Vec<(EventType, Arc<Value>, Option<Arc<Value>>)>,
    /// Live events after `initial`.
    pub rx: broadcast::Receiver<Arc<WatchEvent>>,
    /// resourceVersion when the watch started.
    pub resource_version: u64,
    /// The resource type watched.
    pub rt: Arc<ResourceType>,
}

/// How a write records managed fields.
#[derive(Clone, Copy)]
enum Managed<'a> {
    /// An `Update` by this manager.
    Update(&'a str),
    /// Already computed (server-side apply).
    Precomputed,
}

type ObjKey = (String, String);

struct State {
    rv: u64,
    registry: Registry,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_limit: usize,
    /// Highest resourceVersion dropped from history; watches from before it get 410.
    compacted: u64,
    /// Events dropped from history while locked, freed once the lock is released.
    garbage: Vec<Arc<WatchEvent>>,
}

impl State {
    /// The objects of type `key` as they were at resourceVersion `rv`, in key order: `current` with every change
    /// after `rv` rolled back from the watch history (the caller checked that `rv` is not compacted away).
    fn as_of(
        &self,
        key: &ResKey,
        current: Option<&BTreeMap<ObjKey, Arc<Value>>>,
        rv: u64,
    ) -> Vec<(ObjKey, Arc<Value>)> {
        // The earliest change after `rv` of each object tells what it was at `rv`: nothing (added since) or `before`.
        let mut before: BTreeMap<ObjKey, Option<Arc<Value>>> = BTreeMap::new();
        for e in self.history.iter().filter(|e| e.rv > rv && &e.key == key) {
            let obj_key = (meta_str(&e.object, "namespace").to_owned(), meta_str(&e.object, "name").to_owned());
            before.entry(obj_key).or_insert_with(|| match e.type_ {
                EventType::Added => None,
                EventType::Deleted => Some(e.object.clone()),
                EventType::Modified => e.old.clone(),
            });
        }
        let mut out: Vec<(ObjKey, Arc<Value>)> = Vec::new();
        for (k, v) in current.into_iter().flatten() {
            match before.remove(k) {
                None => out.push((k.clone(), v.clone())),
                Some(Some(old)) => out.push((k.clone(), old)),
                Some(None) => {}
            }
        }
        // Deleted since `rv`: in the list as they were.
        out.extend(before.into_iter().filter_map(|(k, old)| old.map(|o| (k, o))));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The finalizer that holds an owner deleted with `propagationPolicy: Foreground` until its dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";

/// How a delete treats the objects that name the deleted one in their ownerReferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents keep existing, without the reference.
    Orphan,
    /// The owner goes at once; the garbage collector then deletes the dependents (the default).
    Background,
    /// The owner stays, with a `foregroundDeletion` finalizer, until the dependents are deleted.
    Foreground,
}

impl Propagation {
    /// From a `DeleteOptions` body (`propagationPolicy`, or the older `orphanDependents`).
    pub fn from_delete_options(rt: &ResourceType, name: &str, opts: &Value) -> ApiResult<Self> {
        match (opts.get("propagationPolicy").and_then(Value::as_str), opts.get("orphanDependents")) {
            (Some("Orphan"), _) => Ok(Self::Orphan),
            (Some("Background"), _) => Ok(Self::Background),
            (Some("Foreground"), _) => Ok(Self::Foreground),
            (Some(other), _) => Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                name,
                vec![Cause::new(
                    "FieldValueNotSupported",
                    "propagationPolicy",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            )),
            (None, Some(Value::Bool(true))) => Ok(Self::Orphan),
            (None, _) => Ok(Self::Background),
        }
    }
}

/// The owner uids in an object's ownerReferences.
/// Whether `obj`'s ownerReference to `owner` sets `blockOwnerDeletion`.
fn blocks_owner(obj: &Value, owner: &str) -> bool {
    obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| {
        refs.iter().any(|r| {
            r.get("uid").and_then(Value::as_str) == Some(owner)
                && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
        })
    })
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(String::from).collect())
        .unwrap_or_default()
}

/// The largest object etcd stores with its default `--max-request-bytes` (1.5 MiB).
pub const ETCD_MAX_OBJECT_BYTES: usize = 3 * 512 * 1024;

/// How often a write whose object changed while it was being prepared is prepared again before giving up with a
/// conflict (the API server's `GuaranteedUpdate` retries the same way).
const MAX_WRITE_ATTEMPTS: usize = 64;

/// The shared store behind the emulated API server.
///
/// Writes are prepared (decoded, merged, defaulted, validated) without the lock, against a snapshot of the object
/// they change, and committed under it only if that object is still the current one (optimistic concurrency, as the
/// API server does against etcd): so no request body, however large or costly, holds the lock for long.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    /// Longest time the lock was held, in nanoseconds, since the last [`Store::take_max_lock_hold`].
    max_hold_nanos: AtomicU64,
}

/// The locked state; records how long it was held when released.
struct Held<'a> {
    /// Always `Some` until dropped.
    guard: Option<MutexGuard<'a, State>>,
    since: Instant,
    max_hold_nanos: &'a AtomicU64,
}

impl std::ops::Deref for Held<'_> {
    type Target = State;
    #[allow(clippy::expect_used)]
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("the guard is only taken when dropped")
    }
}

impl std::ops::DerefMut for Held<'_> {
    #[allow(clippy::expect_used)]
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("the guard is only taken when dropped")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Large values that left the store are freed after the lock is released: freeing a big object takes
        // milliseconds that other requests need not wait for.
        let garbage = self.guard.as_mut().map(|g| std::mem::take(&mut g.garbage));
        self.guard = None;
        drop(garbage);
        let held = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.max_hold_nanos.fetch_max(held, Ordering::Relaxed);
    }
}

/// A write computed outside the lock.
enum Prepared {
    /// Nothing changes: the current object is the answer (no new resourceVersion).
    NoOp(Arc<Value>),
    /// The object to store; for a CRD, the resource type it defines (compiled outside the lock).
    Write(Value, Option<Arc<ResourceType>>),
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("rv", &self.rv).finish_non_exhaustive()
    }
}

/// Current time as RFC 3339 with second precision, as the API server writes timestamps.
pub fn now() -> String {
    let ts = jiff::Timestamp::now();
    jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts).to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        // The branch above guarantees an object; an empty map keeps this total without panicking.
        None => unreachable_meta(),
    }
}

#[allow(clippy::unreachable)]
fn unreachable_meta() -> &'static mut Map<String, Value> {
    // `meta_mut` always inserts an object first, so this cannot run.
    unreachable!("metadata was just set to an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// Copies the object and stamps the apiVersion/kind of the version it is read in.
pub fn present(obj: &Value, rt: &ResourceType, version: &str) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), json!(rt.api_version(version)));
        map.insert("kind".into(), json!(rt.kind));
    }
    out
}

/// Content of an object that counts for `metadata.generation`.
fn generation_content(obj: &Value, has_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if has_status {
            m.remove("status");
        }
    }
    v
}

fn without_volatile(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

impl Store {
    /// A store holding the `default`, `kube-system`, `kube-public` and `kube-node-lease` namespaces.
    ///
    /// `history_limit` bounds the watch history; watches from older resourceVersions get 410 Expired.
    pub fn new(history_limit: usize) -> Self {
        let history_limit = history_limit.max(16);
        let (events, _) = broadcast::channel(history_limit);
        let store = Self {
            state: Mutex::new(State {
                rv: 0,
                registry: Registry::default(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_limit,
                compacted: 0,
                garbage: Vec::new(),
            }),
            events,
            max_hold_nanos: AtomicU64::new(0),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let t = Target { version: "v1".into(), plural: "namespaces".into(), ..Target::default() };
            let opts = WriteOptions { field_manager: "kube-apiserver".into(), ..WriteOptions::default() };
            // Creating the bootstrap namespaces in an empty store cannot conflict.
            let _ = store.create(&t, json!({"metadata": {"name": ns}}), &opts);
        }
        store
    }

    fn lock(&self) -> Held<'_> {
        // A panic while holding the lock cannot leave a half-written object (writes are single inserts), so a
        // poisoned lock is still consistent.
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Held { guard: Some(guard), since: Instant::now(), max_hold_nanos: &self.max_hold_nanos }
    }

    /// The longest time any request held the store lock since the previous call (which resets it).
    pub fn take_max_lock_hold(&self) -> Duration {
        Duration::from_nanos(self.max_hold_nanos.swap(0, Ordering::Relaxed))
    }

    /// Every stored object and the resourceVersion counter as JSON, so a restarted sandbox continues where it
    /// stopped. CRDs come first so that a restore serves their kinds before their objects arrive.
    pub fn snapshot_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            group: &'a str,
            plural: &'a str,
            object: &'a Value,
        }
        // Only the (cheap) Arc clones happen under the lock; writers are not held up by the serialisation.
        let (rv, mut entries) = {
            let st = self.lock();
            let entries: Vec<(ResKey, Arc<Value>)> =
                st.objects.iter().flat_map(|(k, m)| m.values().map(move |o| (k.clone(), o.clone()))).collect();
            (st.rv, entries)
        };
        entries.sort_by(|(a, _), (b, _)| {
            (a.group != "apiextensions.k8s.io", &a.group, &a.plural).cmp(&(
                b.group != "apiextensions.k8s.io",
                &b.group,
                &b.plural,
            ))
        });
        let objects: Vec<Entry<'_>> =
            entries.iter().map(|(k, o)| Entry { group: &k.group, plural: &k.plural, object: o }).collect();
        #[derive(serde::Serialize)]
        struct Snapshot<'a> {
            #[serde(rename = "resourceVersion")]
            resource_version: u64,
            objects: Vec<Entry<'a>>,
        }
        // Serialising JSON values into a string cannot fail.
        serde_json::to_string(&Snapshot { resource_version: rv, objects }).unwrap_or_default()
    }

    /// Every committed change as it happens, across all types (for observers of the whole store, such as the
    /// sandbox's state writer). A lagging receiver only learns that it missed events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    /// Replaces the content of the store with a [`Store::snapshot_json`]. Watch history starts empty: a watcher
    /// resuming from before the snapshot gets 410 Gone and relists, as after an etcd compaction.
    pub fn restore_json(&self, text: &str) -> Result<(), String> {
        let snapshot: Value = serde_json::from_str(text).map_err(|e| format!("not a store snapshot: {e}"))?;
        let rv = snapshot["resourceVersion"].as_u64().ok_or("the snapshot has no resourceVersion")?;
        let entries = snapshot["objects"].as_array().ok_or("the snapshot has no objects")?;
        let mut st = self.lock();
        let mut objects: HashMap<ResKey, BTreeMap<ObjKey, Arc<Value>>> = HashMap::new();
        let mut registry = Registry::default();
        for entry in entries {
            let key = ResKey {
                group: entry["group"].as_str().unwrap_or_default().to_string(),
                plural: entry["plural"].as_str().unwrap_or_default().to_string(),
            };
            let object = entry["object"].clone();
            if key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions" {
                registry.register_crd(&object).map_err(|e| format!("CRD in snapshot: {e:?}"))?;
            }
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let name = object["metadata"]["name"].as_str().ok_or("an object in the snapshot has no name")?.to_string();
            objects.entry(key).or_default().insert((namespace, name), Arc::new(object));
        }
        st.objects = objects;
        st.registry = registry;
        st.rv = rv;
        st.history.clear();
        st.compacted = rv;
        Ok(())
    }

    /// A snapshot of the served resource types.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Number of stored objects across all types.
    pub fn object_count(&self) -> usize {
        self.lock().objects.values().map(BTreeMap::len).sum()
    }

    /// Every stored object, followed by every object version still in the watch history (so a value written and
    /// later overwritten is still seen). For tests that scan the whole store, e.g. for leaked secrets.
    pub fn all_objects(&self) -> Vec<Arc<Value>> {
        let st = self.lock();
        let current = st.objects.values().flat_map(|m| m.values().cloned());
        let history = st.history.iter().map(|e| e.object.clone());
        current.chain(history).collect()
    }

    /// Reads one object.
    pub fn get(&self, t: &Target) -> ApiResult<Value> {
        let (rt, found, name) = {
            let st = self.lock();
            let rt = st.resolve(t)?;
            let (ns, name) = st.object_key(&rt, t)?;
            let found = st.lookup(&rt, &ns, &name);
            (rt, found, name)
        };
        found.map(|o| present(&o, &rt, &t.version)).ok_or_else(|| ApiError::not_found(&rt.plural, &rt.group, &name))
    }

    /// Lists objects (all namespaces when the target has none).
    pub fn list(&self, t: &Target, q: &ListQuery) -> ApiResult<ListPage> {
        let (rt, matching, rv, continue_token, remaining) = self.select(t, q)?;
        Ok(ListPage {
            items: matching.iter().map(|o| present(o, &rt, &t.version)).collect(),
            resource_version: rv,
            continue_token,
            remaining,
        })
    }

    /// The matching objects of a list, taken under the lock; presenting them happens after it is released.
    #[allow(clippy::type_complexity)]
    fn select(
        &self,
        t: &Target,
        q: &ListQuery,
    ) -> ApiResult<(Arc<ResourceType>, Vec<Arc<Value>>, u64, Option<String>, Option<usize>)> {
        let st = self.lock();
        let rt = st.resolve(t)?;
        if !rt.namespaced && t.namespace.is_some() {
            return Err(ApiError::no_route(&t.plural));
        }
        // A continued list is served from the first page's snapshot, as etcd serves every page at one revision:
        // changes made while a client pages through a list must not be lost between its pages (the client's watch
        // starts from the list's resourceVersion). A snapshot older than the kept history is gone: 410 Expired.
        let (start, snapshot) = match &q.continue_token {
            Some(token) => {
                let (key, rv) = decode_continue(token)?;
                if rv < st.compacted {
                    return Err(ApiError::expired_continue());
                }
                (Some(key), Some(rv))
            }
            None => (None, None),
        };
        let list_rv = snapshot.unwrap_or(st.rv);
        let current = st.objects.get(&rt.key());
        let wanted = |k: &ObjKey, v: &Value| {
            t.namespace.as_ref().is_none_or(|ns| &k.0 == ns)
                && start.as_ref().is_none_or(|s| k > s)
                && q.labels.matches(v)
                && q.fields.matches(v)
        };
        let mut matching: Vec<Arc<Value>> = match snapshot {
            None => current.into_iter().flatten().filter(|(k, v)| wanted(k, v)).map(|(_, v)| v.clone()).collect(),
            Some(rv) => {
                st.as_of(&rt.key(), current, rv).into_iter().filter(|(k, v)| wanted(k, v)).map(|(_, v)| v).collect()
            }
        };
        let mut continue_token = None;
        let mut remaining = None;
        if let Some(limit) = q.limit.filter(|l| *l > 0 && matching.len() > *l) {
            remaining = Some(matching.len() - limit);
            matching.truncate(limit);
            if let Some(last) = matching.last() {
                continue_token = Some(encode_continue(meta_str(last, "namespace"), meta_str(last, "name"), list_rv));
            }
        }
        Ok((rt, matching, list_rv, continue_token, remaining))
    }

    /// Creates an object (POST).
    pub fn create(&self, t: &Target, body: Value, opts: &WriteOptions) -> ApiResult<Outcome> {
        self.create_with(t, &body, opts, Managed::Update(&opts.field_manager))
    }

    /// Prepares a create outside the lock and commits it.
    fn create_with(&self, t: &Target, body: &Value, opts: &WriteOptions, managed: Managed<'_>) -> ApiResult<Outcome> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let rt = self.lock().resolve(t)?;
            let mut warnings = Vec::new();
            let mut prepared = Some(prepare_create(&rt, t, body.clone(), opts, managed, &mut warnings)?);
            let committed = self.lock().commit_create(&rt, t, &mut prepared, opts.dry_run, false, &self.events)?;
            if let Some(object) = committed {
                return Ok(Outcome { object: present(&object, &rt, &t.version), warnings, created: true });
            }
        }
        Err(too_much_contention(t))
    }

    /// The resource type, the current object (if any) and its name, read under a short lock.
    fn snapshot(&self, t: &Target) -> ApiResult<(Arc<ResourceType>, Option<Arc<Value>>, String)> {
        let st = self.lock();
        let rt = st.resolve(t)?;
        let (ns, name) = st.object_key(&rt, t)?;
        let old = st.lookup(&rt, &ns, &name);
        Ok((rt, old, name))
    }

    /// Changes an existing object: `make` builds the new object from the current one, outside the lock; the
    /// result is committed only if the object did not change meanwhile, else everything is done again.
    fn modify(
        &self,
        t: &Target,
        opts: &WriteOptions,
        managed: Managed<'_>,
        is_put: bool,
        make: impl Fn(&ResourceType, &Value) -> ApiResult<Value>,
    ) -> ApiResult<Outcome> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (rt, old, name) = self.snapshot(t)?;
            let old = old.ok_or_else(|| ApiError::not_found(&rt.plural, &rt.group, &name))?;
            let new = make(&rt, &old)?;
            let mut warnings = Vec::new();
            let mut prepared = Some(prepare_update(&rt, t, &old, new, opts, managed, is_put, &mut warnings)?);
            let committed = self.lock().commit_update(&rt, t, &old, &mut prepared, opts.dry_run, &self.events)?;
            if let Some(object) = committed {
                return Ok(Outcome { object: present(&object, &rt, &t.version), warnings, created: false });
            }
        }
        Err(too_much_contention(t))
    }

    /// Replaces an object or its status (PUT).
    pub fn update(&self, t: &Target, body: Value, opts: &WriteOptions) -> ApiResult<Outcome> {
        self.modify(t, opts, Managed::Update(&opts.field_manager), true, |_, _| Ok(body.clone()))
    }

    /// Patches an object or its status (PATCH) with the given content type.
    ///
    /// The body is decoded before anything is read from the store; the merge, defaulting and admission run without
    /// the lock.
    pub fn patch(&self, t: &Target, content_type: &str, body: &[u8], opts: &WriteOptions) -> ApiResult<Outcome> {
        let scope = if t.subresource.as_deref() == Some("status") {
            Scope::Status
        } else {
            Scope::Main { status_is_subresource: false }
        };
        let media = content_type.split(';').next().unwrap_or("").trim();
        // Repeated fields in the patch itself, reported per `fieldValidation` before the unknown fields of the result.
        let found = |problems: Vec<String>, strict: String| -> ApiResult<Vec<String>> {
            match opts.field_validation {
                _ if problems.is_empty() => Ok(problems),
                FieldValidation::Strict => Err(ApiError::bad_request(strict)),
                FieldValidation::Warn => Ok(problems),
                FieldValidation::Ignore => Ok(Vec::new()),
            }
        };
        if media == "application/apply-patch+yaml" || media == "application/apply-patch+json" {
            let applied: Value =
                super::decode::yaml(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            let dups = super::decode::yaml_duplicates(body);
            let strict = format!(
                "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  {}",
                dups.join("\n  ")
            );
            let warnings = found(dups, strict)?;
            return self.apply(t, applied, opts, scope).map(|out| with_warnings_first(out, warnings));
        }
        let (patch_doc, dups) = super::decode::json_with_duplicates(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let problems = if media == "application/json-patch+json" {
            super::decode::json_patch_problems(body)
        } else {
            dups.iter().map(|d| format!("duplicate field \"{d}\"")).collect()
        };
        let strict = format!("strict decoding error: {}", problems.join(", "));
        let warnings = found(problems, strict)?;
        let known =
            ["application/merge-patch+json", "application/json-patch+json", "application/strategic-merge-patch+json"];
        if !known.contains(&media) {
            return Err(ApiError::unsupported_media_type(
                media,
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        self.modify(t, opts, Managed::Update(&opts.field_manager), false, |rt, old| {
            let mut doc = present(old, rt, &t.version);
            match media {
                "application/merge-patch+json" => patch::merge_patch(&mut doc, &patch_doc),
                "application/json-patch+json" => patch::json_patch(&mut doc, &patch_doc)?,
                "application/strategic-merge-patch+json" if !rt.custom => patch::strategic_merge(&mut doc, &patch_doc),
                other => {
                    return Err(ApiError::unsupported_media_type(
                        other,
                        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
            }
            Ok(doc)
        })
        .map(|out| with_warnings_first(out, warnings))
    }

    /// Server-side apply: merges with field ownership, creating the object when it does not exist.
    fn apply(&self, t: &Target, mut applied: Value, opts: &WriteOptions, scope: Scope) -> ApiResult<Outcome> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (rt, old, name) = self.snapshot(t)?;
            let scope = match scope {
                Scope::Main { .. } => Scope::Main { status_is_subresource: rt.has_status },
                other => other,
            };
            if opts.field_manager.is_empty() {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &rt.group,
                    &name,
                    vec![Cause::new(
                        "FieldValueRequired",
                        "fieldManager",
                        "Required value: is required for apply patch",
                    )],
                ));
            }
            if !applied.is_object() {
                return Err(ApiError::bad_request("apply patch must be an object"));
            }
            check_type_meta(&rt, &t.version, &applied)?;
            if meta_str(&applied, "name").is_empty() {
                // As on a real server, the URL names the object when the applied configuration does not.
                meta_mut(&mut applied).insert("name".into(), json!(name));
            }
            let applied_name = meta_str(&applied, "name");
            if applied_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({applied_name}) does not match the name on the URL ({name})"
                )));
            }
            let api_version = rt.api_version(&t.version);
            let now = now();
            let w = Writer { manager: &opts.field_manager, api_version: &api_version, now: &now, scope };
            let base = old.as_ref().map(|o| present(o, &rt, &t.version));
            let merged = patch::server_side_apply(base.as_ref(), &applied, &w, opts.force)
                .map_err(|c| patch::apply_conflict_error(&rt.plural, &rt.group, &name, &c))?;
            let Some(old) = old else {
                if t.subresource.is_some() {
                    return Err(ApiError::not_found(&rt.plural, &rt.group, &name));
                }
                let mut warnings = Vec::new();
                let mut prepared = Some(prepare_create(&rt, t, merged, opts, Managed::Precomputed, &mut warnings)?);
                let committed = self.lock().commit_create(&rt, t, &mut prepared, opts.dry_run, true, &self.events)?;
                match committed {
                    Some(object) => {
                        return Ok(Outcome { object: present(&object, &rt, &t.version), warnings, created: true });
                    }
                    // Created meanwhile: apply again, now as an update.
                    None => continue,
                }
            };
            let mut warnings = Vec::new();
            let mut prepared =
                Some(prepare_update(&rt, t, &old, merged, opts, Managed::Precomputed, false, &mut warnings)?);
            let committed = self.lock().commit_update(&rt, t, &old, &mut prepared, opts.dry_run, &self.events)?;
            if let Some(object) = committed {
                return Ok(Outcome { object: present(&object, &rt, &t.version), warnings, created: false });
            }
        }
        Err(too_much_contention(t))
    }

    /// Deletes an object (DELETE). Objects with finalizers are only marked with a deletionTimestamp.
    pub fn delete(&self, t: &Target, delete_options: &Value, dry_run: bool) -> ApiResult<Value> {
        let mut st = self.lock();
        let rt = st.resolve(t)?;
        let (ns, name) = st.object_key(&rt, t)?;
        let old = st.lookup(&rt, &ns, &name).ok_or_else(|| ApiError::not_found(&rt.plural, &rt.group, &name))?;
        if let Some(uid) = delete_options.pointer("/preconditions/uid").and_then(Value::as_str)
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &rt.plural,
                &rt.group,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = delete_options.pointer("/preconditions/resourceVersion").and_then(Value::as_str)
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.plural,
                &rt.group,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        let policy = Propagation::from_delete_options(&rt, &name, delete_options)?;
        if dry_run {
            drop(st);
            return Ok(present(&old, &rt, &t.version));
        }
        let out = st.delete_inner(&rt, &ns, &name, policy, &self.events);
        drop(st);
        Ok(present(&out, &rt, &t.version))
    }

    /// Deletes every matching object of a collection.
    pub fn delete_collection(&self, t: &Target, q: &ListQuery, dry_run: bool) -> ApiResult<Vec<Value>> {
        let page = self.list(t, q)?;
        if dry_run {
            return Ok(page.items);
        }
        let mut st = self.lock();
        let rt = st.resolve(t)?;
        let mut out = Vec::new();
        for item in page.items {
            let ns = meta_str(&item, "namespace").to_string();
            let name = meta_str(&item, "name").to_string();
            if st.lookup(&rt, &ns, &name).is_some() {
                let gone = st.delete_inner(&rt, &ns, &name, Propagation::Background, &self.events);
                out.push(present(&gone, &rt, &t.version));
            }
        }
        Ok(out)
    }

    /// Starts a watch: subscribes to live events and computes what to send first, atomically.
    ///
    /// `resource_version`: None or "0" starts with the current state as ADDED events; a number replays history
    /// after it (410 Expired when compacted). `send_initial_events` forces the current state first.
    pub fn watch(
        &self,
        t: &Target,
        resource_version: Option<&str>,
        send_initial_events: bool,
    ) -> ApiResult<WatchStart> {
        let st = self.lock();
        let rt = st.resolve(t)?;
        let rx = self.events.subscribe();
        let requested = match resource_version {
            None | Some("") => None,
            Some(raw) => Some(
                raw.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version \"{raw}\"")))?,
            ),
        };
        let snapshot = |st: &State| -> Vec<(EventType, Arc<Value>, Option<Arc<Value>>)> {
            st.objects
                .get(&rt.key())
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| t.namespace.as_ref().is_none_or(|ns| &k.0 == ns))
                        .map(|(_, v)| (EventType::Added, v.clone(), None))
                        .collect()
                })
                .unwrap_or_default()
        };
        let initial = match requested {
            _ if send_initial_events => snapshot(&st),
            None | Some(0) => snapshot(&st),
            Some(rv) if rv < st.compacted => return Err(ApiError::expired(rv, st.compacted + 1)),
            Some(rv) => st
                .history
                .iter()
                .filter(|e| e.rv > rv && e.key == rt.key())
                .map(|e| (e.type_, e.object.clone(), e.old.clone()))
                .collect(),
        };
        Ok(WatchStart { initial, rx, resource_version: st.rv, rt })
    }
}

/// The continue token of a page: the last key served and the list's snapshot resourceVersion.
fn encode_continue(ns: &str, name: &str, rv: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([ns, name, rv]).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(ObjKey, u64)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let (ns, name, rv): (String, String, u64) = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok(((ns, name), rv))
}

fn check_type_meta(rt: &ResourceType, version: &str, obj: &Value) -> ApiResult<()> {
    let expected = rt.api_version(version);
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != expected
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({expected})"
        )));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

impl State {
    fn resolve(&self, t: &Target) -> ApiResult<Arc<ResourceType>> {
        self.registry
            .find(&t.group, &t.version, &t.plural)
            .ok_or_else(|| ApiError::no_route(&format!("{}/{}/{}", t.group, t.version, t.plural)))
    }

    fn object_key(&self, rt: &ResourceType, t: &Target) -> ApiResult<ObjKey> {
        let name = t.name.clone().unwrap_or_default();
        match (rt.namespaced, &t.namespace) {
            (true, Some(ns)) => Ok((ns.clone(), name)),
            (false, None) => Ok((String::new(), name)),
            _ => Err(ApiError::no_route(&t.plural)),
        }
    }

    fn lookup(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects.get(&rt.key()).and_then(|m| m.get(&(ns.to_string(), name.to_string()))).cloned()
    }

    fn record(&mut self, events: &broadcast::Sender<Arc<WatchEvent>>, ev: WatchEvent) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
                self.garbage.push(old);
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = events.send(ev);
    }

    /// Stores an object under a fresh resourceVersion and emits the event.
    fn put(
        &mut self,
        rt: &ResourceType,
        mut obj: Value,
        old: Option<Arc<Value>>,
        events: &broadcast::Sender<Arc<WatchEvent>>,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (meta_str(&obj, "namespace").to_string(), meta_str(&obj, "name").to_string());
        let obj = Arc::new(obj);
        self.objects.entry(rt.key()).or_default().insert(key, obj.clone());
        let type_ = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.record(events, WatchEvent { rv, key: rt.key(), type_, object: obj.clone(), old });
        self.mirror_event(rt, &obj, events);
        obj
    }

    /// The real API server keeps one Event storage behind core/v1 and events.k8s.io/v1: an Event written through
    /// either API is read through both (controllers write events.k8s.io/v1, as kube-rs and client-go's new recorder
    /// do; `kubectl get events`, `kubectl events` and `kubectl describe` read core/v1; older clients write core/v1).
    /// So each write is also stored, converted, under the other API (without mirroring back).
    fn mirror_event(&mut self, rt: &ResourceType, obj: &Value, events: &broadcast::Sender<Arc<WatchEvent>>) {
        if rt.plural != "events" || meta_str(obj, "name").is_empty() {
            return;
        }
        let (other, converted) = match rt.group.as_str() {
            "events.k8s.io" => (self.registry.find("", "v1", "events"), event_to_core_v1(obj)),
            "" => (self.registry.find("events.k8s.io", "v1", "events"), event_from_core_v1(obj)),
            _ => return,
        };
        let Some(other) = other else {
            return;
        };
        let old = self.lookup(&other, meta_str(obj, "namespace"), meta_str(obj, "name"));
        self.rv += 1;
        let rv = self.rv;
        let mut converted = converted;
        meta_mut(&mut converted).insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (meta_str(&converted, "namespace").to_string(), meta_str(&converted, "name").to_string());
        let converted = Arc::new(converted);
        self.objects.entry(other.key()).or_default().insert(key, converted.clone());
        let type_ = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.record(events, WatchEvent { rv, key: other.key(), type_, object: converted, old });
    }

    /// Removes an object for good, emitting DELETED; cascades for namespaces' content and CRDs' objects.
    fn remove(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        events: &broadcast::Sender<Arc<WatchEvent>>,
    ) -> Option<Value> {
        let old = self.objects.get_mut(&rt.key())?.remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        let mut gone = (*old).clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(
            events,
            WatchEvent { rv, key: rt.key(), type_: EventType::Deleted, object: Arc::new(gone.clone()), old: Some(old) },
        );
        // One storage behind both Event APIs (see `mirror_event`); the second removal finds nothing and stops.
        if rt.plural == "events"
            && (rt.group.is_empty() || rt.group == "events.k8s.io")
            && let Some(other) =
                self.registry.find(if rt.group.is_empty() { "events.k8s.io" } else { "" }, "v1", "events")
        {
            self.remove(&other, ns, name, events);
        }
        if rt.group == "apiextensions.k8s.io"
            && rt.plural == "customresourcedefinitions"
            && let Some(key) = self.registry.unregister_crd(&gone)
        {
            let custom = ResourceType { group: key.group.clone(), plural: key.plural.clone(), ..(*rt).clone() };
            let keys: Vec<ObjKey> = self.objects.get(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
            for (ons, oname) in keys {
                self.remove(&custom, &ons, &oname, events);
            }
            self.objects.remove(&key);
        }
        self.collect_garbage(&gone, events);
        if rt.namespaced {
            self.maybe_finalize_namespace(ns, events);
        }
        Some(gone)
    }

    fn maybe_finalize_namespace(&mut self, ns: &str, events: &broadcast::Sender<Arc<WatchEvent>>) {
        let Some(ns_rt) = self.registry.find("", "v1", "namespaces") else {
            return;
        };
        let Some(ns_obj) = self.lookup(&ns_rt, "", ns) else {
            return;
        };
        if meta_str(&ns_obj, "deletionTimestamp").is_empty() {
            return;
        }
        let empty = self.objects.iter().all(|(key, objs)| {
            let namespaced = self.registry.get(key).is_some_and(|t| t.namespaced);
            !namespaced || !objs.keys().any(|(ons, _)| ons == ns)
        });
        if empty {
            self.remove(&ns_rt, "", ns, events);
        }
    }

    fn delete_inner(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        policy: Propagation,
        events: &broadcast::Sender<Arc<WatchEvent>>,
    ) -> Value {
        let Some(mut old) = self.lookup(rt, ns, name) else {
            return Value::Null;
        };
        let uid = meta_str(&old, "uid").to_string();
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        match policy {
            Propagation::Orphan => {
                // The garbage collector's `orphan` finalizer: dependents lose their reference to this owner.
                for (drt, dns, dname, _) in self.dependents_of(&uid) {
                    self.drop_owner_reference(&drt, &dns, &dname, &uid, events);
                }
            }
            Propagation::Foreground if !is_namespace && meta_str(&old, "deletionTimestamp").is_empty() => {
                let dependents = self.dependents_of(&uid);
                if !dependents.is_empty() {
                    // The owner stays, marked and held by `foregroundDeletion`, until its dependents are gone.
                    let mut marked = (*old).clone();
                    let meta = meta_mut(&mut marked);
                    meta.insert("deletionTimestamp".into(), json!(now()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                    let mut fins = finalizers(&old);
                    fins.push(FOREGROUND.into());
                    meta.insert("finalizers".into(), json!(fins));
                    if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
                        meta.insert("generation".into(), json!(g + 1));
                    }
                    let stored = self.put(rt, marked, Some(old), events);
                    for (drt, dns, dname, _) in dependents {
                        self.delete_inner(&drt, &dns, &dname, Propagation::Foreground, events);
                    }
                    self.finish_foreground(&uid, events);
                    return self.lookup(rt, ns, name).map(|o| (*o).clone()).unwrap_or_else(|| (*stored).clone());
                }
            }
            _ => {}
        }
        if let Some(current) = self.lookup(rt, ns, name) {
            old = current;
        }
        if !finalizers(&old).is_empty() || is_namespace {
            if !meta_str(&old, "deletionTimestamp").is_empty() {
                return (*old).clone();
            }
            let mut marked = (*old).clone();
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
                meta.insert("generation".into(), json!(g + 1));
            }
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            let stored = self.put(rt, marked, Some(old), events);
            if is_namespace {
                self.delete_namespace_content(name, events);
                if let Some(still) = self.lookup(rt, "", name) {
                    return (*still).clone();
                }
                let mut gone = (*stored).clone();
                meta_mut(&mut gone).insert("resourceVersion".into(), json!(self.rv.to_string()));
                return gone;
            }
            return (*stored).clone();
        }
        self.remove(rt, ns, name, events).unwrap_or(Value::Null)
    }

    /// Every object with an ownerReference to `uid`: (type, namespace, name, object).
    fn dependents_of(&self, uid: &str) -> Vec<(Arc<ResourceType>, String, String, Arc<Value>)> {
        if uid.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (key, objs) in &self.objects {
            let Some(rt) = self.registry.get(key) else { continue };
            for ((ns, name), obj) in objs {
                if owner_uids(obj).iter().any(|u| u == uid) {
                    out.push((rt.clone(), ns.clone(), name.clone(), obj.clone()));
                }
            }
        }
        out
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().any(|objs| objs.values().any(|o| meta_str(o, "uid") == uid))
    }

    /// Removes the ownerReference to `owner_uid` from an object (the garbage collector's patch).
    fn drop_owner_reference(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        owner_uid: &str,
        events: &broadcast::Sender<Arc<WatchEvent>>,
    ) {
        let Some(obj) = self.lookup(rt, ns, name) else { return };
        let mut changed = (*obj).clone();
        let meta = meta_mut(&mut changed);
        let kept: Vec<Value> = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter().filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid)).cloned().collect()
            })
            .unwrap_or_default();
        if kept.is_empty() {
            meta.remove("ownerReferences");
        } else {
            meta.insert("ownerReferences".into(), json!(kept));
        }
        self.put(rt, changed, Some(obj), events);
    }

    /// What kube-controller-manager's garbage collector does once an object is gone: its dependents are deleted
    /// (in the background) unless another owner of theirs still exists, in which case only the dangling reference
    /// is removed; and an owner waiting in foreground deletion for it is released when it was the last dependent.
    fn collect_garbage(&mut self, gone: &Value, events: &broadcast::Sender<Arc<WatchEvent>>) {
        let uid = meta_str(gone, "uid").to_string();
        for (rt, ns, name, obj) in self.dependents_of(&uid) {
            let others_alive = owner_uids(&obj).iter().any(|u| *u != uid && self.uid_exists(u));
            if others_alive {
                self.drop_owner_reference(&rt, &ns, &name, &uid, events);
            } else {
                self.delete_inner(&rt, &ns, &name, Propagation::Background, events);
            }
        }
        for owner in owner_uids(gone) {
            self.finish_foreground(&owner, events);
        }
    }

    /// Releases an owner deleted in the foreground once it has no dependents left.
    fn finish_foreground(&mut self, uid: &str, events: &broadcast::Sender<Arc<WatchEvent>>) {
        let found = self.objects.iter().find_map(|(key, objs)| {
            objs.iter()
                .find(|(_, o)| meta_str(o, "uid") == uid)
                .map(|((ns, name), o)| (key.clone(), ns.clone(), name.clone(), o.clone()))
        });
        let Some((key, ns, name, obj)) = found else { return };
        let Some(rt) = self.registry.get(&key) else { return };
        let fins = finalizers(&obj);
        // Only dependents whose reference sets `blockOwnerDeletion` hold the owner; the others are deleted too, but
        // the owner does not wait for them (kube-controller-manager's `blockingDependents`).
        let blocked = self.dependents_of(uid).iter().any(|(_, _, _, d)| blocks_owner(d, uid));
        if !fins.iter().any(|f| f == FOREGROUND) || blocked {
            return;
        }
        let rest: Vec<String> = fins.into_iter().filter(|f| f != FOREGROUND).collect();
        let mut released = (*obj).clone();
        let meta = meta_mut(&mut released);
        if rest.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert("finalizers".into(), json!(rest));
        }
        let done = rest.is_empty();
        self.put(&rt, released, Some(obj), events);
        if done {
            self.remove(&rt, &ns, &name, events);
        }
    }

    fn delete_namespace_content(&mut self, ns: &str, events: &broadcast::Sender<Arc<WatchEvent>>) {
        let types: Vec<Arc<ResourceType>> = self.registry.all().filter(|t| t.namespaced).cloned().collect();
        for rt in types {
            let names: Vec<String> = self
                .objects
                .get(&rt.key())
                .map(|m| m.keys().filter(|(o, _)| o == ns).map(|(_, n)| n.clone()).collect())
                .unwrap_or_default();
            for name in names {
                self.delete_inner(&rt, ns, &name, Propagation::Background, events);
            }
        }
        self.maybe_finalize_namespace(ns, events);
    }

    /// Commits a prepared create: the namespace must exist and not be terminating, the name must be free. `None`
    /// when the resource type changed while the create was prepared (or, with `exists_retries`, when the object
    /// appeared meanwhile): the caller prepares it again.
    fn commit_create(
        &mut self,
        rt: &Arc<ResourceType>,
        t: &Target,
        prepared: &mut Option<Prepared>,
        dry_run: bool,
        exists_retries: bool,
        events: &broadcast::Sender<Arc<WatchEvent>>,
    ) -> ApiResult<Option<Arc<Value>>> {
        if !Arc::ptr_eq(&self.resolve(t)?, rt) {
            return Ok(None);
        }
        let name = match prepared.as_ref() {
            Some(Prepared::Write(obj, _)) => meta_str(obj, "name").to_string(),
            Some(Prepared::NoOp(obj)) => return Ok(Some(obj.clone())),
            None => return Ok(None),
        };
        let ns = t.namespace.clone().unwrap_or_default();
        if rt.namespaced {
            let ns_obj = self
                .registry
                .find("", "v1", "namespaces")
                .and_then(|nrt| self.lookup(&nrt, "", &ns))
                .ok_or_else(|| ApiError::not_found("namespaces", "", &ns))?;
            if !meta_str(&ns_obj, "deletionTimestamp").is_empty() {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    rt.plural
                )));
            }
        }
        if self.lookup(rt, &ns, &name).is_some() {
            if exists_retries {
                return Ok(None);
            }
            return Err(ApiError::already_exists(&rt.plural, &rt.group, &name));
        }
        let Some(Prepared::Write(obj, crd_type)) = prepared.take() else {
            return Ok(None);
        };
        if dry_run {
            return Ok(Some(Arc::new(obj)));
        }
        if let Some(crd_type) = crd_type {
            self.registry.insert(crd_type);
        }
        let stored = self.put(rt, obj, None, events);
        Ok(Some(stored))
    }

    /// Commits a prepared update if `old` is still the current object; `None` when it is not (or the resource
    /// type changed): the caller prepares it again against the new state.
    fn commit_update(
        &mut self,
        rt: &Arc<ResourceType>,
        t: &Target,
        old: &Arc<Value>,
        prepared: &mut Option<Prepared>,
        dry_run: bool,
        events: &broadcast::Sender<Arc<WatchEvent>>,
    ) -> ApiResult<Option<Arc<Value>>> {
        if !Arc::ptr_eq(&self.resolve(t)?, rt) {
            return Ok(None);
        }
        let ns = meta_str(old, "namespace").to_string();
        let name = meta_str(old, "name").to_string();
        if !self.lookup(rt, &ns, &name).is_some_and(|current| Arc::ptr_eq(&current, old)) {
            return Ok(None);
        }
        let (result, crd_type) = match prepared.take() {
            Some(Prepared::NoOp(obj)) => return Ok(Some(obj)),
            Some(Prepared::Write(result, crd_type)) => (result, crd_type),
            None => return Ok(None),
        };
        if dry_run {
            return Ok(Some(Arc::new(result)));
        }
        if let Some(crd_type) = crd_type {
            self.registry.insert(crd_type);
        }
        if !meta_str(&result, "deletionTimestamp").is_empty() && finalizers(&result).is_empty() {
            let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
            if !is_namespace {
                let stored = self.put(rt, result, Some(old.clone()), events);
                let gone = self.remove(rt, &ns, &name, events).map(Arc::new).unwrap_or(stored);
                return Ok(Some(gone));
            }
        }
        let stored = self.put(rt, result, Some(old.clone()), events);
        Ok(Some(stored))
    }
}

/// 409 when a write kept losing the race against other writers of the same object.
/// Puts the patch's own warnings (repeated fields) before those about the patched object.
fn with_warnings_first(mut out: Outcome, mut first: Vec<String>) -> Outcome {
    first.append(&mut out.warnings);
    out.warnings = first;
    out
}

fn too_much_contention(t: &Target) -> ApiError {
    ApiError::conflict(
        &t.plural,
        &t.group,
        t.name.as_deref().unwrap_or(""),
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// Refuses an object etcd would refuse (`--max-request-bytes`, 1.5 MiB by default). Measured on the JSON form,
/// which is what etcd stores for custom resources (built-in kinds are stored as protobuf, somewhat smaller).
fn check_etcd_size(obj: &Value) -> ApiResult<()> {
    let size = serde_json::to_vec(obj).map(|v| v.len()).unwrap_or(0);
    if size > ETCD_MAX_OBJECT_BYTES { Err(ApiError::etcd_too_large()) } else { Ok(()) }
}

/// Typed decoding of a built-in object (unknown fields removed and returned); kinds without a typed schema have
/// their top-level and metadata fields checked.
fn decode_builtin(rt: &ResourceType, version: &str, obj: &mut Value) -> ApiResult<Vec<String>> {
    if typed::is_typed(rt, version) {
        return typed::decode(rt, version, obj);
    }
    let mut unknown = Vec::new();
    validation::prune_builtin(rt, obj, &mut unknown);
    Ok(unknown)
}

/// Built-in defaulting and validation.
fn admit_builtin(rt: &ResourceType, version: &str, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let name = meta_str(obj, "name").to_string();
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => {
            let string_data = obj.as_object_mut().and_then(|m| m.remove("stringData"));
            if let Some(Value::Object(sd)) = string_data {
                let data = obj.as_object_mut().map(|m| m.entry("data").or_insert_with(|| json!({})));
                if let Some(Value::Object(data)) = data {
                    for (k, v) in sd {
                        let raw = v.as_str().unwrap_or_default();
                        data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(raw)));
                    }
                }
            }
            if let Some(data) = obj.get("data").and_then(Value::as_object) {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                    if !ok {
                        // Never echo the value: it is secret material.
                        return Err(ApiError::bad_request(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{k}"
                        )));
                    }
                }
            }
            if obj.get("type").is_none_or(Value::is_null) {
                obj["type"] = json!("Opaque");
            }
            check_immutable(rt, &name, obj, old, &["data", "type"])?;
        }
        ("", "ConfigMap") => check_immutable(rt, &name, obj, old, &["data", "binaryData"])?,
        ("", "Namespace") => {
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        _ => {}
    }
    if rt.group.is_empty() && rt.kind == "Service" {
        allocate_service_addresses(obj, old);
    }
    if typed::is_typed(rt, version) {
        typed::apply_defaults(rt, obj);
        let mut causes = typed::validate(rt, version, obj);
        for cause in super::crossfield::validate(rt, obj) {
            // The schema already reports a missing required field the cross-field rules also need.
            if !causes.iter().any(|c| c.field == cause.field && c.message == cause.message) {
                causes.push(cause);
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes));
        }
    }
    Ok(())
}

/// What the API server's Service registry allocates (an API server job, not a controller's): a cluster IP from the
/// default service CIDR 10.96.0.0/12 (kept across updates that leave it out), its single-stack IPv4 family, and node
/// ports for NodePort and LoadBalancer Services.
fn allocate_service_addresses(obj: &mut Value, old: Option<&Value>) {
    use rand::Rng as _;
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if kind == "ExternalName" {
        return;
    }
    let old_spec = old.and_then(|o| o.get("spec"));
    for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if spec.get(key).is_none_or(|v| v.is_null() || v == "")
            && let Some(v) = old_spec.and_then(|s| s.get(key))
        {
            spec.insert(key.into(), v.clone());
        }
    }
    let mut rng = rand::rng();
    if spec.get("clusterIP").is_none_or(|v| v.is_null() || v == "") {
        // Skips 10.96.0.1, the `kubernetes` Service's address.
        let ip = format!("10.{}.{}.{}", rng.random_range(96..112), rng.random_range(0..256), rng.random_range(2..255));
        spec.insert("clusterIP".into(), json!(ip));
    }
    if spec.get("clusterIPs").is_none_or(Value::is_null) {
        let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        let old_ports = old_spec.and_then(|s| s.get("ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        for port in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if port.get("nodePort").is_none_or(Value::is_null) {
                let same = old_ports.iter().find(|o| o.get("port") == port.get("port"));
                let node_port = same
                    .and_then(|o| o.get("nodePort").cloned())
                    .unwrap_or_else(|| json!(rng.random_range(30000..32768)));
                port["nodePort"] = node_port;
            }
        }
    }
    if kind == "LoadBalancer" {
        spec.entry("allocateLoadBalancerNodePorts").or_insert_with(|| json!(true));
    }
}

/// The status a Pod gets on create: Pending (nothing schedules it here), with the QoS class of its resources.
fn pending_pod_status(pod: &Value) -> Value {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let resources = |c: &Value, k: &str| c.pointer(&format!("/resources/{k}")).and_then(Value::as_object).cloned();
    let any = containers.iter().any(|c| {
        resources(c, "requests").is_some_and(|r| !r.is_empty()) || resources(c, "limits").is_some_and(|r| !r.is_empty())
    });
    let guaranteed = !containers.is_empty()
        && containers.iter().all(|c| {
            let limits = resources(c, "limits").unwrap_or_default();
            let requests = resources(c, "requests").unwrap_or_else(|| limits.clone());
            ["cpu", "memory"].iter().all(|r| limits.contains_key(*r) && limits.get(*r) == requests.get(*r))
        });
    let qos = if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    };
    json!({"phase": "Pending", "qosClass": qos})
}

/// Everything a create does that needs no store state: type meta, name, defaulting, admission, managed fields.
fn prepare_create(
    rt: &Arc<ResourceType>,
    t: &Target,
    mut obj: Value,
    opts: &WriteOptions,
    managed: Managed<'_>,
    warnings: &mut Vec<String>,
) -> ApiResult<Prepared> {
    if t.subresource.is_some() || t.name.is_some() && !matches!(managed, Managed::Precomputed) {
        return Err(ApiError::method_not_allowed());
    }
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
            rt.kind, t.version, rt.kind
        )));
    }
    check_type_meta(rt, &t.version, &obj)?;
    obj["apiVersion"] = json!(rt.api_version(&t.version));
    obj["kind"] = json!(rt.kind);
    let meta = meta_mut(&mut obj);
    // System fields are the server's to set.
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        meta.remove(f);
    }
    let mut name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.is_empty() {
        let prefix = meta.get("generateName").and_then(Value::as_str).unwrap_or("").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                "",
                vec![Cause::new(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        }
        name = format!("{prefix}{}", random_suffix());
        meta.insert("name".into(), json!(name));
    }
    if let Some(message) = typed::name_error(rt, &name) {
        return Err(ApiError::invalid(
            &rt.kind,
            &rt.group,
            &name,
            vec![Cause::new("FieldValueInvalid", "metadata.name", message)],
        ));
    }
    if rt.namespaced {
        let path_ns = t.namespace.clone().unwrap_or_default();
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !body_ns.is_empty() && body_ns != path_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(path_ns));
    } else {
        meta.remove("namespace");
    }
    if rt.has_status && (rt.custom || typed::is_typed(rt, &t.version)) {
        // Status is written through /status only; a new object's status is the server's to set.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    let mut obj = if rt.custom {
        validation::admit_custom(rt, &t.version, obj, None, opts.field_validation, warnings)?
    } else {
        let unknown = decode_builtin(rt, &t.version, &mut obj)?;
        validation::handle_unknown(&rt.kind, &t.version, unknown, opts.field_validation, warnings)?;
        admit_builtin(rt, &t.version, &mut obj, None)?;
        obj
    };
    let now = now();
    let meta = meta_mut(&mut obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now));
    if rt.custom || typed::tracks_generation(rt) {
        meta.insert("generation".into(), json!(1));
    }
    if !rt.custom && rt.group == "batch" && rt.kind == "Job" {
        typed::job_selector(&mut obj);
    }
    if !rt.custom && rt.group.is_empty() && rt.kind == "Pod" {
        obj["status"] = pending_pod_status(&obj);
    }
    let is_crd = rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
    let crd_type = if is_crd {
        // Validate (and compile the schema) before committing anything.
        let crd_type = Arc::new(super::registry::resource_type_from_crd(&obj)?);
        obj["status"] = crd_status(&obj, &now);
        Some(crd_type)
    } else {
        None
    };
    if let Managed::Update(manager) = managed {
        let api_version = rt.api_version(&t.version);
        let w = Writer {
            manager,
            api_version: &api_version,
            now: &now,
            scope: Scope::Main { status_is_subresource: rt.has_status },
        };
        patch::track_update(None, &mut obj, &w);
    }
    check_etcd_size(&obj)?;
    Ok(Prepared::Write(obj, crd_type))
}

/// Everything an update does that needs no store state beyond the current object `old`.
#[allow(clippy::too_many_arguments)]
fn prepare_update(
    rt: &Arc<ResourceType>,
    t: &Target,
    old: &Arc<Value>,
    mut new: Value,
    opts: &WriteOptions,
    managed: Managed<'_>,
    is_put: bool,
    warnings: &mut Vec<String>,
) -> ApiResult<Prepared> {
    let name = meta_str(old, "name").to_string();
    if !new.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
            rt.kind, t.version, rt.kind
        )));
    }
    check_type_meta(rt, &t.version, &new)?;
    let body_name = meta_str(&new, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = meta_str(&new, "namespace");
    if rt.namespaced && !body_ns.is_empty() && body_ns != meta_str(old, "namespace") {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let rv = meta_str(&new, "resourceVersion");
    if rv.is_empty() && is_put && rt.custom {
        return Err(ApiError::invalid(
            &rt.kind,
            &rt.group,
            &name,
            vec![Cause::new(
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )],
        ));
    }
    if !rv.is_empty() && rv != meta_str(old, "resourceVersion") {
        return Err(ApiError::conflict(
            &rt.plural,
            &rt.group,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let is_status = t.subresource.as_deref() == Some("status");
    if let Some(sub) = &t.subresource
        && (sub != "status" || !rt.has_status)
    {
        return Err(ApiError::no_route(sub));
    }
    let mut result = if is_status {
        let mut r = (**old).clone();
        match new.get("status") {
            Some(s) => r["status"] = s.clone(),
            None => {
                if let Some(m) = r.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if matches!(managed, Managed::Precomputed)
            && let Some(mf) = new.pointer("/metadata/managedFields")
        {
            meta_mut(&mut r).insert("managedFields".into(), mf.clone());
        }
        r
    } else {
        if rt.has_status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        new
    };
    result["apiVersion"] = json!(rt.api_version(&t.version));
    result["kind"] = json!(rt.kind);
    {
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let meta = meta_mut(&mut result);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(f) {
                Some(v) => meta.insert(f.into(), v.clone()),
                None => meta.remove(f),
            };
        }
        if matches!(managed, Managed::Update(_)) {
            match old_meta.get("managedFields") {
                Some(v) => meta.insert("managedFields".into(), v.clone()),
                None => meta.remove("managedFields"),
            };
        }
    }
    if !meta_str(old, "deletionTimestamp").is_empty() {
        let before = finalizers(old);
        if let Some(added) = finalizers(&result).into_iter().find(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                &name,
                vec![Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}"
                    ),
                )],
            ));
        }
    }
    let mut result = if rt.custom {
        validation::admit_custom(
            rt,
            &t.version,
            result,
            Some(&present(old, rt, &t.version)),
            opts.field_validation,
            warnings,
        )?
    } else {
        let unknown = decode_builtin(rt, &t.version, &mut result)?;
        validation::handle_unknown(&rt.kind, &t.version, unknown, opts.field_validation, warnings)?;
        admit_builtin(rt, &t.version, &mut result, Some(old))?;
        result
    };
    if (rt.custom || typed::tracks_generation(rt))
        && generation_content(&result, rt.has_status) != generation_content(old, rt.has_status)
    {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        meta_mut(&mut result).insert("generation".into(), json!(g + 1));
    }
    let is_crd = rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions";
    let crd_type =
        if is_crd && !is_status { Some(Arc::new(super::registry::resource_type_from_crd(&result)?)) } else { None };
    if let Managed::Update(manager) = managed {
        let api_version = rt.api_version(&t.version);
        let now = now();
        let w = Writer {
            manager,
            api_version: &api_version,
            now: &now,
            scope: if is_status { Scope::Status } else { Scope::Main { status_is_subresource: rt.has_status } },
        };
        patch::track_update(Some(&present(old, rt, &t.version)), &mut result, &w);
    }
    if without_volatile(&result) == without_volatile(&present(old, rt, &t.version)) {
        // A no-op write does not bump the resourceVersion, as on a real server.
        return Ok(Prepared::NoOp(old.clone()));
    }
    check_etcd_size(&result)?;
    Ok(Prepared::Write(result, crd_type))
}

fn check_immutable(rt: &ResourceType, name: &str, obj: &Value, old: Option<&Value>, fields: &[&str]) -> ApiResult<()> {
    let Some(old) = old else {
        return Ok(());
    };
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let mut causes = Vec::new();
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        causes.push(Cause::new(
            "FieldValueForbidden",
            "immutable",
            "Forbidden: field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        if obj.get(*f) != old.get(*f) {
            causes.push(Cause::new("FieldValueForbidden", *f, "Forbidden: field is immutable when `immutable` is set"));
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(&rt.kind, &rt.group, name, causes)) }
}

fn random_suffix() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// Converts an events.k8s.io/v1 Event into its core/v1 form (the field mapping of the API server's conversion).
fn event_to_core_v1(event: &Value) -> Value {
    let mut core = json!({"apiVersion": "v1", "kind": "Event", "metadata": event["metadata"].clone()});
    let renames = [
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("related", "related"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ];
    for (from, to) in renames {
        if let Some(value) = event.get(from).filter(|v| !v.is_null()) {
            core[to] = value.clone();
        }
    }
    core
}

/// Converts a core/v1 Event into its events.k8s.io/v1 form (the inverse mapping; `reportingComponent` and `source`
/// as the API server's conversion fills them).
fn event_from_core_v1(core: &Value) -> Value {
    let mut event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": core["metadata"].clone()});
    let renames = [
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("related", "related"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ];
    for (from, to) in renames {
        if let Some(value) = core.get(from).filter(|v| !v.is_null()) {
            event[to] = value.clone();
        }
    }
    event
}
