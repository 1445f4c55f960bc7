//! The reconciler shell: everything a controller of one custom resource kind does that is not about that kind.
//!
//! In the spirit of Azure Service Operator's generic reconciler and kube-runtime's `finalizer` helper, the shell
//! owns, for every kind:
//! - **watch set-up** ([`run`]): one kube-runtime `Controller` per watched namespace (or one for all), fed by a
//!   watch that lets only changes of generation, annotations, finalizers or deletion through ([`watch_changes`]), so
//!   the controller's own status patches never wake it; the kind adds its own triggers ([`Reconciler::watch`]);
//! - **the finalizer state machine** ([`reconcile`]): add the `azml.dev/cleanup` finalizer first; on deletion
//!   honour `deletionPolicy: Retain` and `azml.dev/paused` (nothing in Azure changes), else run the kind's cleanup
//!   until it says [`Deletion::Finished`], then remove the finalizer and forget the object;
//! - **status memory** ([`ObjectMemory`]): the status last written per uid (the watch cache may lag behind our own
//!   patch, and an operation in flight must never be forgotten) and the count of consecutive failures;
//! - **reporting** ([`Shell::write_status`], the only status writer: it compares without timestamps and patches
//!   only a change; [`Shell::finish`] and [`Shell::fail`] end a reconcile; [`Shell::publish`] writes events);
//! - **the error policy** ([`error::classify`], [`requeue_after_error`]): transient errors back off with jitter,
//!   throttling waits Retry-After, everything caused by the spec or the environment stalls (`Stalled`, a long
//!   requeue) instead of retrying in a hot loop.
//!
//! A kind implements two small traits: [`Kind`] on its resource type (its status type, finalizer, what `Retain`
//! and Ready mean for it) and [`Reconciler`] on its controller state (observe → plan → apply → report for a live
//! object, and its cleanup). `docs/reconciler-shell.md` walks one MlWorkspace through it.

pub mod binding;
pub mod config;
pub mod credentials;
pub mod error;
pub mod parent;
pub mod plan;
pub mod status;
pub mod watch_cache;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as RuntimeConfig, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

pub use self::config::ControllerConfig;
use self::credentials::CredentialCache;
use self::error::{Disposition, Error, backoff, classify, error_chain, scrub};
pub use self::status::Phase;
use self::status::TimestampedStatus;
pub use self::watch_cache::{Cached, WakeIndex};
use crate::api::conditions::{Reason, events};
use crate::api::v1alpha1::ANNOTATION_PAUSED;
use crate::events::Recorder;
use crate::metrics::ControllerScope;

/// Name the controllers report events under.
pub const CONTROLLER_NAME: &str = "azml-operator";

/// The API server rejects event notes over 1 kB.
const MAX_EVENT_NOTE_BYTES: usize = 1024;

pub(crate) use crate::sync::lock;

/// One kind of custom resource reconciled by the shell. Implemented on the resource type.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// Its `.status`.
    type Status: TimestampedStatus + DeserializeOwned + Default + Debug + PartialEq + Send + Sync + 'static;
    /// What it is called in logs and events ("workspace", "endpoint", "compute").
    const NOUN: &'static str;
    /// The finalizer its cleanup runs behind.
    const FINALIZER: &'static str;
    /// The name of its watch scope in the controller metrics (queue depth, cache synced), or `None` when it is not
    /// tracked there (today only MlWorkspace is; readiness waits for its cache).
    const METRICS_SCOPE: Option<&'static str>;
    /// Whether a failure that stalls also gets the stall's own Warning event (reason and message) besides
    /// `ReconcileFailed`. Endpoints and computes always did; the workspace reports such a failure once.
    const ANNOUNCE_FAILED_STALL: bool;
    /// Whether its watch feeds [`ControllerConfig::workspace_feed`] (the kinds that live in its objects are woken
    /// from it instead of watching it themselves). Only MlWorkspace does.
    const FEEDS_CHILDREN: bool = false;

    /// The status it carries.
    fn status(&self) -> Option<&Self::Status>;
    /// What its related objects find it by when they change (the watch caches hold metadata only): the workspace's
    /// subscription id (a SubscriptionBinding of it changed), a child's workspace name (that workspace changed).
    fn wake_key(&self) -> Option<String> {
        None
    }
    /// `deletionPolicy: Retain`: its deletion leaves Azure as it is.
    fn retains(&self) -> bool;
    /// Writes the kstatus conditions (Ready, Reconciling, Stalled) of `phase` and `observedGeneration` into
    /// `status`.
    fn set_phase(status: &mut Self::Status, phase: &Phase, generation: Option<i64>, now: &Time);
}

/// What a kind's cleanup achieved.
#[derive(Debug)]
pub enum Deletion {
    /// Azure is cleaned up (or must be left as it is): the finalizer may go.
    Finished,
    /// Not yet: keep the finalizer, look again as said (status is written already).
    Wait(Requeue),
}

/// The kind-specific half of a controller, implemented on its shared state (which holds a [`Shell`]).
///
/// The shell calls [`Reconciler::apply`] for a live object that carries the finalizer and [`Reconciler::cleanup`]
/// for one being deleted with a deletion policy that asks for it; both end with [`Shell::finish`] or
/// [`Shell::fail`] (or return an error, which the error policy requeues). The rest has defaults.
pub trait Reconciler: Send + Sync + Sized + 'static {
    /// The kind.
    type Kind: Kind;

    /// The shell state: client, settings, recorder, credentials, status memory.
    fn shell(&self) -> &Shell<Self::Kind>;

    /// Observe → plan → apply → report for a live object.
    fn apply(&self, obj: &Self::Kind) -> impl Future<Output = Result<Requeue, Error>> + Send;

    /// Deletion with a deletion policy that changes Azure, not paused.
    fn cleanup(&self, obj: &Self::Kind) -> impl Future<Output = Result<Deletion, Error>> + Send;

    /// Right after the finalizer was added (the workspace reports `Pending` at once for kstatus readers).
    fn on_finalizer_added(&self, obj: &Self::Kind) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }

    /// Right before the finalizer is removed (the endpoint deletes its keys Secret).
    fn before_finalizer_removed(&self, obj: &Self::Kind) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = obj;
        async { Ok(()) }
    }

    /// Forgets what the kind remembers of a deleted object beyond the shell's memory.
    fn forget(&self, uid: &str) {
        let _ = uid;
    }

    /// Forgets what the kind remembers of every object whose uid is not in `live` (see [`watch_cache::sweep`]).
    fn retain(&self, live: &std::collections::HashSet<String>) {
        let _ = live;
    }

    /// Adds the kind's own triggers to the controller of one namespace (`None`: all): watches of related objects,
    /// external wake-ups. `scope` counts what they request.
    fn watch(
        &self,
        controller: Controller<Cached<Self::Kind>>,
        namespace: Option<&str>,
        scope: Option<ControllerScope>,
    ) -> Controller<Cached<Self::Kind>> {
        let _ = (namespace, scope);
        controller
    }
}

/// What a controller remembers per object uid: the statuses written by the reconcile running now, and the count of
/// consecutive failures between reconciles.
pub struct ObjectMemory<S> {
    /// Consecutive transient failures (for the backoff).
    failures: Mutex<HashMap<String, u32>>,
    /// The status the running reconcile of the object last wrote: its later steps build on it (the object it read
    /// at its start predates the write). Dropped when the reconcile ends; the next one reads the object afresh.
    statuses: Mutex<HashMap<String, S>>,
}

impl<S> Default for ObjectMemory<S> {
    fn default() -> Self {
        ObjectMemory { failures: Mutex::default(), statuses: Mutex::default() }
    }
}

impl<S: Clone> ObjectMemory<S> {
    /// The status the running reconcile last wrote for `uid`, else `carried` (the status the object carried when
    /// the reconcile read it).
    pub fn status(&self, uid: Option<String>, carried: Option<&S>) -> Option<S> {
        let written = uid.and_then(|uid| lock(&self.statuses).get(&uid).cloned());
        written.or_else(|| carried.cloned())
    }

    /// The reconcile of `uid` ended: what it wrote is in the API server, which the next reconcile reads.
    pub fn reconciled(&self, uid: Option<&str>) {
        if let Some(uid) = uid {
            lock(&self.statuses).remove(uid);
        }
    }

    /// Forgets every object whose uid is not in `live` (deleted while nobody was looking).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.statuses).retain(|uid, _| live.contains(uid));
        lock(&self.failures).retain(|uid, _| live.contains(uid));
    }

    /// Remembers `status` as the one the running reconcile wrote for `uid`.
    pub fn wrote(&self, uid: Option<String>, status: S) {
        if let Some(uid) = uid {
            lock(&self.statuses).insert(uid, status);
        }
    }

    /// Counts one more consecutive failure of `uid` and returns the count.
    pub fn bump_failures(&self, uid: Option<String>) -> u32 {
        let Some(uid) = uid else { return 1 };
        let mut failures = lock(&self.failures);
        let n = failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Starts the failure count of `uid` afresh.
    pub fn reset_failures(&self, uid: Option<String>) {
        if let Some(uid) = uid {
            lock(&self.failures).remove(&uid);
        }
    }

    /// Forgets everything about `uid` (the object is gone).
    pub fn forget(&self, uid: &str) {
        lock(&self.statuses).remove(uid);
        lock(&self.failures).remove(uid);
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The shell's state for one kind: what every reconcile of it needs besides its own logic.
pub struct Shell<K: Kind> {
    /// Kubernetes client.
    pub client: Client,
    /// Settings.
    pub config: ControllerConfig,
    recorder: Recorder,
    /// One ARM client per SubscriptionBinding.
    pub credentials: CredentialCache,
    memory: ObjectMemory<K::Status>,
    /// Who to wake when a related object changes (the watch caches hold metadata only).
    pub index: Arc<WakeIndex<K>>,
}

impl<K: Kind> Shell<K> {
    /// A shell for `client` with `config`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
        Shell {
            client,
            config,
            recorder,
            credentials: CredentialCache::default(),
            memory: ObjectMemory::default(),
            index: Arc::default(),
        }
    }

    /// Publishes an event about `obj` (best effort: a failure is logged, never fails the reconcile). The note is
    /// scrubbed of secrets and cut to what the API server accepts.
    pub async fn publish(&self, obj: &K, type_: EventType, reason: impl AsRef<str>, note: String) {
        let (reason, note) = (reason.as_ref(), truncate_bytes(scrub(&note), MAX_EVENT_NOTE_BYTES));
        if let Err(err) = self.recorder.publish(type_, reason, "Reconcile", &note, &obj.object_ref(&())).await {
            warn!(error = %err, reason, "cannot publish event");
        }
    }

    /// The status as this reconcile last wrote it, else as `obj` carries it (`obj` is read from the API server at
    /// the start of each reconcile: our own earlier writes are in it).
    pub fn current_status(&self, obj: &K) -> Option<K::Status> {
        self.memory.status(obj.uid(), obj.status())
    }

    /// Counts one more consecutive failure of `obj` and returns the count (for a step's own backoff).
    pub fn bump_failures(&self, obj: &K) -> u32 {
        self.memory.bump_failures(obj.uid())
    }

    fn reset_failures(&self, obj: &K) {
        self.memory.reset_failures(obj.uid());
    }

    /// THE status writer: `edit` turns the current status ([`Shell::current_status`], default when none) into the
    /// next one (it gets the generation and now); the next one is patched (a merge patch that also removes what
    /// disappeared) only when it differs in more than timestamps. Returns whether it wrote.
    pub async fn write_status(
        &self,
        obj: &K,
        edit: impl FnOnce(&mut K::Status, Option<i64>, &Time),
    ) -> Result<bool, Error> {
        let previous = self.current_status(obj);
        let now = Time(self.config.clock().now());
        let mut next = previous.clone().unwrap_or_default();
        edit(&mut next, obj.meta().generation, &now);
        if !status::changed(previous.as_ref(), &next) {
            debug!("status unchanged");
            return Ok(false);
        }
        *next.last_sync_time_mut() = Some(now);
        let api: Api<K> = Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let patch = status::merge_patch(previous.as_ref(), &next);
        api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(PATCH_STATUS))?;
        self.memory.wrote(obj.uid(), next);
        Ok(true)
    }

    /// Ends a reconcile in `phase`: status (built by `edit`, which also gets the phase), a Warning event for a new
    /// stall, the failure count reset (unless the phase is a step's own transient failure, which keeps backing
    /// off), the requeue.
    pub async fn finish(
        &self,
        obj: &K,
        phase: Phase,
        requeue: Duration,
        edit: impl FnOnce(&mut K::Status, &Phase, Option<i64>, &Time),
    ) -> Result<Requeue, Error> {
        self.conclude(obj, phase, requeue, edit, true).await
    }

    /// [`Shell::finish`] for a kind that builds its whole next status itself: `status` with the phase's
    /// conditions ([`Kind::set_phase`]).
    pub async fn finish_status(
        &self,
        obj: &K,
        status: K::Status,
        phase: Phase,
        requeue: Duration,
    ) -> Result<Requeue, Error> {
        self.finish(obj, phase, requeue, replace_with::<K>(status)).await
    }

    async fn conclude(
        &self,
        obj: &K,
        phase: Phase,
        requeue: Duration,
        edit: impl FnOnce(&mut K::Status, &Phase, Option<i64>, &Time),
        announce_stall: bool,
    ) -> Result<Requeue, Error> {
        let written = self.write_status(obj, |s, generation, now| edit(s, &phase, generation, now)).await?;
        self.index.stalled(obj, stall_reason(&phase));
        // A new stall is worth a Warning event (kubectl describe); an unchanged one was already reported.
        if let (true, true, Phase::Stalled { reason, message }) = (announce_stall, written, &phase) {
            self.publish(obj, EventType::Warning, reason, message.clone()).await;
        }
        // A step that reports its own transient failure (a failed key resync) keeps counting, so its retries back
        // off exponentially instead of restarting at the base delay every time.
        if !matches!(phase, Phase::Transient { .. }) {
            self.reset_failures(obj);
        }
        Ok(Requeue::requeue(requeue))
    }

    /// Ends a reconcile that failed: THE error policy decides between Stalled (status written with `edit`, wait
    /// for a change) and retry (status says Transient, the error goes back to the controller, which requeues with
    /// backoff). A Warning event `ReconcileFailed` carries the error chain (scrubbed).
    pub async fn fail(
        &self,
        obj: &K,
        err: Error,
        edit: impl FnOnce(&mut K::Status, &Phase, Option<i64>, &Time),
    ) -> Result<Requeue, Error> {
        let chain = scrub(&error_chain(&err));
        warn!(error = %chain, request_id = err.request_id().unwrap_or("-"), "{} reconcile failed", K::NOUN);
        self.publish(obj, EventType::Warning, events::RECONCILE_FAILED, chain.clone()).await;
        match classify(&err) {
            Disposition::Stall { reason, message } => {
                let phase = Phase::Stalled { reason, message };
                self.conclude(obj, phase, self.config.stalled_requeue, edit, K::ANNOUNCE_FAILED_STALL).await
            }
            Disposition::Retry | Disposition::RetryAfter(_) => {
                let phase = Phase::Transient { message: chain };
                match self.write_status(obj, |s, g, now| edit(s, &phase, g, now)).await {
                    Ok(_) => self.index.stalled(obj, None),
                    Err(status_err) => warn!(error = %status_err, "cannot report the failure in status"),
                }
                Err(err)
            }
        }
    }

    /// [`Shell::fail`] for a kind that builds its whole next status itself (see [`Shell::finish_status`]).
    pub async fn fail_status(&self, obj: &K, status: K::Status, err: Error) -> Result<Requeue, Error> {
        self.fail(obj, err, replace_with::<K>(status)).await
    }
}

/// The reason of a stalled phase.
fn stall_reason(phase: &Phase) -> Option<Reason> {
    match phase {
        Phase::Stalled { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// The edit that replaces the status with `status` and sets the phase's conditions.
fn replace_with<K: Kind>(status: K::Status) -> impl FnOnce(&mut K::Status, &Phase, Option<i64>, &Time) {
    move |s, phase, generation, now| {
        *s = status;
        K::set_phase(s, phase, generation, now);
    }
}

const PATCH_STATUS: &str = "patch status";

/// Whether annotation `key` of `obj` says "true" (any case).
pub fn annotation_true<K: Resource>(obj: &K, key: &str) -> bool {
    obj.annotations().get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Adds or removes `finalizer` on `obj`.
pub async fn set_finalizer<K>(client: &Client, obj: &K, finalizer: &str, present: bool) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut finalizers: Vec<String> = obj.finalizers().iter().filter(|f| *f != finalizer).cloned().collect();
    if present {
        finalizers.push(finalizer.to_owned());
    }
    // resourceVersion in a merge patch is a precondition: a concurrent change of the list fails with 409 Conflict
    // (and is retried) instead of dropping someone else's finalizer.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() }
    });
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(if present { "add finalizer" } else { "remove finalizer" }))?;
    Ok(())
}

const READ_OBJECT: &str = "read object";

/// The finalizer state machine around one reconcile of one object. The watch cache holds its metadata only: the
/// object itself is read here, as the API server has it now (our own status writes included), and what the
/// reconcile wrote is forgotten when it ends.
pub async fn reconcile<R: Reconciler>(cached: Arc<Cached<R::Kind>>, r: Arc<R>) -> Result<Requeue, Error> {
    let (namespace, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    let span =
        info_span!("reconcile", object = %format!("{namespace}/{name}"), generation = cached.metadata.generation);
    async move {
        let shell = r.shell();
        let api: Api<R::Kind> = Api::namespaced(shell.client.clone(), &namespace);
        let Some(obj) = api.get_opt(&name).await.map_err(Error::kube(READ_OBJECT))? else {
            // Deleted (finalizer gone) since the event that scheduled this.
            if let Some(uid) = cached.uid() {
                forget_uid(&*r, &uid);
            }
            return Ok(Requeue::await_change());
        };
        shell.index.observe(&obj);
        let outcome = state_machine(&obj, &*r).await;
        shell.memory.reconciled(obj.meta().uid.as_deref());
        outcome
    }
    .instrument(span)
    .await
}

async fn state_machine<R: Reconciler>(obj: &R::Kind, r: &R) -> Result<Requeue, Error> {
    let shell = r.shell();
    let deleting = obj.meta().deletion_timestamp.is_some();
    let finalizer = <R::Kind as Kind>::FINALIZER;
    let has_finalizer = obj.finalizers().iter().any(|f| f == finalizer);
    match (deleting, has_finalizer) {
        (true, false) => {
            forget(r, obj);
            Ok(Requeue::await_change())
        }
        (false, false) => {
            set_finalizer(&shell.client, obj, finalizer, true).await?;
            r.on_finalizer_added(obj).await?;
            // The finalizer's watch event starts the next reconcile.
            Ok(Requeue::await_change())
        }
        (true, true) => {
            let noun = <R::Kind as Kind>::NOUN;
            if obj.retains() {
                info!("deletionPolicy Retain: leaving the {noun} in Azure as it is; removing the finalizer");
                return remove_finalizer(r, obj).await;
            }
            if annotation_true(obj, ANNOTATION_PAUSED) {
                // Paused means no writes to Azure, deletion included: the resource is left as it is.
                let note = format!("Paused: the {noun} is left in Azure although deletionPolicy is Delete");
                shell.publish(obj, EventType::Normal, Reason::Paused, note).await;
                return remove_finalizer(r, obj).await;
            }
            match r.cleanup(obj).await? {
                Deletion::Finished => remove_finalizer(r, obj).await,
                Deletion::Wait(requeue) => Ok(requeue),
            }
        }
        (false, true) => r.apply(obj).await,
    }
}

fn forget<R: Reconciler>(r: &R, obj: &R::Kind) {
    if let Some(uid) = obj.uid() {
        forget_uid(r, &uid);
    }
}

fn forget_uid<R: Reconciler>(r: &R, uid: &str) {
    r.forget(uid);
    r.shell().memory.forget(uid);
    r.shell().index.forget(uid);
}

async fn remove_finalizer<R: Reconciler>(r: &R, obj: &R::Kind) -> Result<Requeue, Error> {
    r.before_finalizer_removed(obj).await?;
    set_finalizer(&r.shell().client, obj, <R::Kind as Kind>::FINALIZER, false).await?;
    forget(r, obj);
    Ok(Requeue::await_change())
}

/// THE requeue policy after a failed reconcile: backoff with jitter for transient errors, Retry-After when
/// throttled, the stalled requeue otherwise. `bump_failures` counts the failure and returns how many in a row.
pub fn requeue_after_error(err: &Error, config: &ControllerConfig, bump_failures: impl FnOnce() -> u32) -> Requeue {
    match classify(err) {
        Disposition::RetryAfter(after) => Requeue::requeue(after.max(Duration::from_millis(100))),
        Disposition::Retry => {
            Requeue::requeue(backoff(bump_failures(), config.error_backoff_base, config.error_backoff_max))
        }
        Disposition::Stall { .. } => Requeue::requeue(config.stalled_requeue),
    }
}

fn error_policy<R: Reconciler>(obj: Arc<Cached<R::Kind>>, err: &Error, r: Arc<R>) -> Requeue {
    let shell = r.shell();
    requeue_after_error(err, &shell.config, || shell.memory.bump_failures(obj.uid()))
}

fn deletion_predicate<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    obj.meta().deletion_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut h);
    Some(h.finish())
}

/// The objects of `api` a controller runs on, cached in `writer`: only changes of generation, annotations,
/// finalizers or deletion pass, so the controller's own status patches do not wake it. `touched` sees every event
/// once the cache holds it (status changes and deletions too).
pub fn watch_changes<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    touched: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let predicate = predicates::generation
        .combine(predicates::annotations)
        .combine(predicates::finalizers)
        .combine(deletion_predicate);
    // Entries that expire count as changed; keep them well beyond a resync so our own status patches stay filtered.
    let predicate_config = kube::runtime::PredicateConfig::default().ttl(Duration::from_secs(24 * 3600));
    watcher(api, watcher::Config::default())
        .modify(watch_cache::strip)
        .default_backoff()
        .reflect(writer)
        .inspect_ok(touched)
        .applied_objects()
        .predicate_filter(predicate, predicate_config)
}

/// Runs the controller of one kind until `shutdown` is cancelled (one kube-runtime controller per watched
/// namespace), then lets running reconciles finish and returns.
pub async fn run<R: Reconciler>(reconciler: Arc<R>, shutdown: CancellationToken) {
    let noun = <R::Kind as Kind>::NOUN;
    let config = &reconciler.shell().config;
    let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    info!(
        kind = %R::Kind::kind(&()),
        resync_period = ?config.resync_period,
        concurrency = config.concurrency,
        namespaces = ?config.watch_namespaces,
        "starting the {noun} controller"
    );
    let runs = namespaces.into_iter().map(|ns| run_one(reconciler.clone(), ns, shutdown.clone()));
    futures::future::join_all(runs).await;
    info!(kind = %R::Kind::kind(&()), "{noun} controller stopped");
}

async fn run_one<R: Reconciler>(r: Arc<R>, namespace: Option<String>, shutdown: CancellationToken) {
    let shell = r.shell();
    let api: Api<Cached<R::Kind>> = match &namespace {
        Some(ns) => Api::namespaced(shell.client.clone(), ns),
        None => Api::all(shell.client.clone()),
    };
    let scope = <R::Kind as Kind>::METRICS_SCOPE.map(|name| {
        shell.config.metrics.controller_scope(match &namespace {
            Some(ns) => format!("{name}/{ns}"),
            None => name.to_owned(),
        })
    });
    let (reader, writer) = reflector::store();
    let requested = scope.clone();
    let feed = <R::Kind as Kind>::FEEDS_CHILDREN.then(|| shell.config.workspace_feed.clone());
    let touched = move |event: &watcher::Event<Cached<R::Kind>>| feed.iter().for_each(|feed| feed.publish(event));
    let stream = watch_changes(api, writer, touched).inspect_ok(move |obj| {
        if let Some(scope) = &requested {
            scope.requested(&ObjectRef::from_obj(obj));
        }
    });
    let sweep = {
        let (r, period) = (r.clone(), shell.config.resync_period);
        tokio::spawn(watch_cache::sweep(reader.clone(), period, shutdown.clone(), move |live| {
            r.shell().memory.retain(live);
            r.shell().index.retain(live);
            r.retain(live);
        }))
    };
    let controller = Controller::for_stream(stream, reader);
    let cache = controller.store();
    let controller = controller.with_config(RuntimeConfig::default().concurrency(shell.config.concurrency));
    let controller = r.watch(controller, namespace.as_deref(), scope.clone());
    let dropped = scope.clone();
    let run = controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            |obj, r| {
                let (metrics, object) = (r.shell().config.metrics.clone(), ObjectRef::from_obj(&*obj));
                async move { crate::metrics::instrument_reconcile(&metrics, object, reconcile(obj, r)).await }
            },
            error_policy::<R>,
            r.clone(),
        )
        .for_each(move |result| {
            // Deleted before its turn: the scheduler drops the request.
            if let (Err(kube::runtime::controller::Error::ObjectNotFound(obj)), Some(scope)) = (&result, &dropped) {
                scope.dropped(obj);
            }
            async move {
                match result {
                    Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                    // The chain carries ARM error messages, which are text we do not control.
                    Err(err) => debug!(error = %scrub(&error_chain(&err)), "reconcile error"),
                }
            }
        });
    match scope {
        Some(scope) => scope.run(cache, run).await,
        None => run.await,
    }
    sweep.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::MlWorkspace;

    #[test]
    fn deletion_changes_the_predicate_hash() {
        let spec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333", "resourceGroup": "rg", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .expect("spec");
        let mut ws = MlWorkspace::new("ws", spec);
        let before = deletion_predicate(&ws);
        ws.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(1_700_000_000).expect("ts")));
        assert_ne!(before, deletion_predicate(&ws));
    }

    #[test]
    fn event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_bytes("short".into(), 1024), "short");
        let cut = truncate_bytes("é".repeat(600), MAX_EVENT_NOTE_BYTES);
        assert!(cut.len() <= MAX_EVENT_NOTE_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_memory_holds_a_reconciles_writes_until_it_ends_and_counts_failures_across_reconciles() {
        let memory: ObjectMemory<u32> = ObjectMemory::default();
        assert_eq!(memory.status(Some("a".into()), Some(&1)), Some(1), "nothing written: the object's status");
        memory.wrote(Some("a".into()), 2);
        assert_eq!(memory.status(Some("a".into()), Some(&1)), Some(2), "the reconcile's own write wins");
        assert_eq!(memory.status(Some("b".into()), Some(&1)), Some(1), "per object");
        assert_eq!((memory.bump_failures(Some("a".into())), memory.bump_failures(Some("a".into()))), (1, 2));
        memory.reconciled(Some("a"));
        assert_eq!(memory.status(Some("a".into()), Some(&3)), Some(3), "the next reconcile reads the object");
        assert_eq!(memory.bump_failures(Some("a".into())), 3, "failures count across reconciles");
        memory.wrote(Some("a".into()), 4);
        memory.forget("a");
        assert_eq!(memory.status(Some("a".into()), None), None);
        assert_eq!(memory.bump_failures(Some("a".into())), 1);
    }
}
