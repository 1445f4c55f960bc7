//! The MlWorkspace controller: observe → plan → apply → report.
//!
//! - [`run`] watches MlWorkspaces (all namespaces, or the configured ones) and SubscriptionBindings, and reconciles
//!   each workspace: it checks the bindings ([`crate::policy`]) before any Azure call, observes Azure
//!   ([`observe`]), plans ([`plan::plan`], pure), applies ([`apply`]) and reports status ([`status`]).
//! - Steady state costs one ARM GET per workspace per resync period and no writes: the watch ignores the
//!   controller's own status patches (only generation, annotations, finalizers and deletion pass), and status is
//!   patched only when something other than a timestamp changed.
//! - Errors are classified in one place ([`error::classify`]).
//! - Deletion runs behind the `azml.dev/cleanup` finalizer ([`cleanup`]).
//! - A changed subscription or resource group moves the workspace ([`moves`]), before the pipeline runs.

pub mod access;
pub mod apply;
pub mod binding_choice;
pub mod cleanup;
pub mod credential_watch;
pub mod credentials;
pub mod dependencies;
pub mod error;
pub mod key_signals;
pub mod keys;
pub mod moves;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod soft_delete;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as RuntimeConfig, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, instrument, warn};

use self::apply::{Progress, converge};
use self::cleanup::CleanupOutcome;
use self::credentials::{CredentialCache, CredentialSources};
use self::error::{Disposition, Error, backoff, classify, error_chain, scrub};
use self::plan::Desired;
use self::status::{Phase, Report, WorkspaceFacts};
use crate::api::conditions::{events, reasons};
use crate::api::v1alpha1::{
    ANNOTATION_PAUSED, FINALIZER, MlWorkspace, MlWorkspaceStatus, SubscriptionBinding, WorkspaceDeletionPolicy,
};
use crate::azure::{ArmClient, ArmClientOptions, AzureCloud};
use crate::events::Recorder;
use crate::policy;

/// Name the controller reports events under.
pub const CONTROLLER_NAME: &str = "azml-operator";

/// Everything the controller needs to know, parsed once at start (`azml-operator run` builds it from flags; tests
/// and the sandbox build it directly).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// How often an unchanged workspace is compared with Azure (one GET per period).
    pub resync_period: Duration,
    /// How many workspaces are reconciled at once (the same one is never reconciled twice at once).
    pub concurrency: u16,
    /// ARM client settings: the cloud (ARM endpoint, authority host, extra trusted roots), retries, throttling.
    pub arm: ArmClientOptions,
    /// Namespace the operator runs in: the only one it reads credential Secrets from.
    pub operator_namespace: String,
    /// Namespaces to watch; empty means all.
    pub watch_namespaces: Vec<String>,
    /// Federated token file for workload-identity bindings (`AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<PathBuf>,
    /// Lower bound of the delay between polls of a long-running operation.
    pub lro_poll_min: Duration,
    /// Upper bound of the delays the controller chooses itself while waiting on Azure. Azure's `Retry-After` (up to
    /// 600 s) is honoured in full, never shortened to this bound.
    pub lro_poll_max: Duration,
    /// How long an operation in flight is polled before the controller forgets it and looks at Azure afresh (it
    /// never re-sends the write because of this: Azure still shows the resource as being provisioned).
    pub lro_timeout: Duration,
    /// First retry delay after a transient failure; doubles per consecutive failure (with jitter).
    pub error_backoff_base: Duration,
    /// Cap of the transient-failure backoff.
    pub error_backoff_max: Duration,
    /// How long a stalled workspace waits before it is looked at again without any change.
    pub stalled_requeue: Duration,
    /// How long a role assignment whose principal Azure does not know yet (PrincipalNotFound: directory
    /// replication) is retried before it is reported Failed.
    pub principal_wait: Duration,
    /// Prometheus metrics (also wired into `arm.metrics`); steps count drift, key resyncs, role changes here.
    pub metrics: crate::metrics::Metrics,
    /// How often the storage-key watcher queries each subscription's activity log ([`key_signals`]).
    pub key_signal_interval: Duration,
}

impl ControllerConfig {
    /// Defaults for a cloud: resync 1 h, concurrency 8, LRO polls between 5 s and 60 s, backoff 5 s .. 5 min.
    pub fn new(cloud: AzureCloud) -> Self {
        let resync_period = Duration::from_secs(3600);
        let metrics = crate::metrics::Metrics::new();
        ControllerConfig {
            resync_period,
            concurrency: 8,
            arm: ArmClientOptions { cloud, metrics: Some(metrics.arm()), ..Default::default() },
            operator_namespace: "azml-system".into(),
            watch_namespaces: Vec::new(),
            federated_token_file: None,
            lro_poll_min: Duration::from_secs(5),
            lro_poll_max: Duration::from_secs(60),
            lro_timeout: Duration::from_secs(2 * 3600),
            error_backoff_base: Duration::from_secs(5),
            error_backoff_max: Duration::from_secs(300),
            stalled_requeue: resync_period,
            principal_wait: Duration::from_secs(600),
            metrics,
            key_signal_interval: Duration::from_secs(60),
        }
    }

    pub(crate) fn credential_sources(&self) -> CredentialSources {
        CredentialSources {
            operator_namespace: self.operator_namespace.clone(),
            federated_token_file: self.federated_token_file.clone(),
        }
    }
}

/// The API server rejects event notes over 1 kB.
const MAX_EVENT_NOTE_BYTES: usize = 1024;

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

/// What a controller remembers per object uid between reconciles.
pub(crate) struct ObjectMemory<S> {
    /// Consecutive transient failures (for the backoff).
    failures: Mutex<HashMap<String, u32>>,
    /// The last status the controller wrote. The watch cache may lag behind our own patch; an operation in flight
    /// must never be forgotten (that would send its PUT again), so our last write wins.
    statuses: Mutex<HashMap<String, S>>,
}

impl<S> Default for ObjectMemory<S> {
    fn default() -> Self {
        ObjectMemory { failures: Mutex::default(), statuses: Mutex::default() }
    }
}

impl<S: Clone> ObjectMemory<S> {
    /// The status last written for `uid`, else `carried` (the status the object carries).
    pub(crate) fn status(&self, uid: Option<String>, carried: Option<&S>) -> Option<S> {
        let cached = uid.and_then(|uid| self.statuses.lock().ok().and_then(|m| m.get(&uid).cloned()));
        cached.or_else(|| carried.cloned())
    }

    /// Remembers `status` as the one last written for `uid`.
    pub(crate) fn wrote(&self, uid: Option<String>, status: S) {
        if let (Some(uid), Ok(mut m)) = (uid, self.statuses.lock()) {
            m.insert(uid, status);
        }
    }

    /// Counts one more consecutive failure of `uid` and returns the count.
    pub(crate) fn bump_failures(&self, uid: Option<String>) -> u32 {
        match (uid, self.failures.lock()) {
            (Some(uid), Ok(mut m)) => {
                let n = m.entry(uid).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            _ => 1,
        }
    }

    /// Starts the failure count of `uid` afresh.
    pub(crate) fn reset_failures(&self, uid: Option<String>) {
        if let (Some(uid), Ok(mut m)) = (uid, self.failures.lock()) {
            m.remove(&uid);
        }
    }

    /// Forgets everything about `uid` (the object is gone).
    pub(crate) fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.statuses.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.failures.lock() {
            m.remove(uid);
        }
    }
}

/// Publishes an event about `obj` (best effort: a failure is logged, never fails the reconcile). The note is
/// scrubbed of secrets and cut to what the API server accepts.
pub(crate) async fn publish_event<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let note = truncate_bytes(scrub(&note), MAX_EVENT_NOTE_BYTES);
    if let Err(err) = recorder.publish(type_, reason, "Reconcile", &note, &obj.object_ref(&())).await {
        warn!(error = %err, reason, "cannot publish event");
    }
}

/// The status edit of the key step (none without `keys`), for [`Context::write_status_edit`].
fn keys_edit(keys: Option<&keys::KeysUpdate>) -> impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time) + '_ {
    move |next, generation, now| {
        if let Some(update) = keys {
            update.apply(next, generation, now);
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings.
    pub config: ControllerConfig,
    recorder: Recorder,
    credentials: CredentialCache,
    /// Failures and last written status per workspace uid.
    memory: ObjectMemory<MlWorkspaceStatus>,
    /// What the access step remembers per workspace (last listing, principal-replication windows).
    access: access::AccessMemory,
    /// Storage-key drift signals, intents and the registry the key watcher reads.
    pub keys: Arc<keys::KeyState>,
    /// The SubscriptionBinding chosen per workspace uid, for `status.binding`.
    bindings: binding_choice::BindingMemory,
}

impl Context {
    /// A context for `client` with `config`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
        Context {
            client,
            config,
            recorder,
            credentials: CredentialCache::default(),
            memory: ObjectMemory::default(),
            access: access::AccessMemory::default(),
            keys: Arc::default(),
            bindings: binding_choice::BindingMemory::default(),
        }
    }

    /// Publishes an event about `ws` (best effort: a failure is logged, never fails the reconcile).
    pub async fn publish(&self, ws: &MlWorkspace, type_: EventType, reason: &str, note: String) {
        publish_event(&self.recorder, ws, type_, reason, note).await;
    }

    /// The status as this controller last wrote it, else as the object carries it.
    pub fn current_status(&self, ws: &MlWorkspace) -> Option<MlWorkspaceStatus> {
        self.memory.status(ws.uid(), ws.status.as_ref())
    }

    fn forget(&self, ws: &MlWorkspace) {
        if let Some(uid) = ws.uid() {
            self.access.forget(&uid);
            self.keys.forget(&uid);
            self.bindings.forget(&uid);
            self.config.metrics.workspace_stalled(&uid, None);
            self.memory.forget(&uid);
        }
    }

    fn reset_failures(&self, ws: &MlWorkspace) {
        self.memory.reset_failures(ws.uid());
    }

    fn bump_failures(&self, ws: &MlWorkspace) -> u32 {
        self.memory.bump_failures(ws.uid())
    }

    /// Writes the status computed from `report`, when it differs from the current one in more than timestamps.
    /// Returns whether it wrote.
    async fn write_status(&self, ws: &MlWorkspace, report: &Report) -> Result<bool, Error> {
        self.write_status_with(ws, report, None).await
    }

    /// [`Context::write_status`] plus the key step's changes.
    async fn write_status_with(
        &self,
        ws: &MlWorkspace,
        report: &Report,
        keys: Option<&keys::KeysUpdate>,
    ) -> Result<bool, Error> {
        self.write_status_edit(ws, report, keys_edit(keys)).await
    }

    /// [`Context::write_status`] plus a step's own changes (`edit` gets the new status, the generation and now).
    async fn write_status_edit(
        &self,
        ws: &MlWorkspace,
        report: &Report,
        edit: impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time),
    ) -> Result<bool, Error> {
        let previous = self.current_status(ws);
        let now = Time(jiff::Timestamp::now());
        let mut next = status::compute(previous.as_ref(), ws.metadata.generation, report, &now);
        self.bindings.report(ws.uid(), &mut next, ws.metadata.generation, &now);
        edit(&mut next, ws.metadata.generation, &now);
        if let Some(uid) = ws.uid() {
            self.config.metrics.workspace_stalled(&uid, status::stalled_reason(&next));
        }
        if !status::changed(previous.as_ref(), &next) {
            debug!("status unchanged");
            return Ok(false);
        }
        next.last_sync_time = Some(now);
        let api: Api<MlWorkspace> = Api::namespaced(self.client.clone(), &ws.namespace().unwrap_or_default());
        let patch = status::merge_patch(previous.as_ref(), &next);
        api.patch_status(&ws.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("patch status"))?;
        self.memory.wrote(ws.uid(), next);
        Ok(true)
    }

    /// Ends a reconcile that made progress (or stalled cleanly): status, then the requeue.
    async fn finish(&self, ws: &MlWorkspace, report: Report, requeue: Duration) -> Result<Requeue, Error> {
        self.finish_with(ws, report, requeue, None).await
    }

    /// [`Context::finish`] plus the key step's status changes.
    async fn finish_with(
        &self,
        ws: &MlWorkspace,
        report: Report,
        requeue: Duration,
        keys: Option<&keys::KeysUpdate>,
    ) -> Result<Requeue, Error> {
        self.finish_edit(ws, report, requeue, keys_edit(keys)).await
    }

    /// [`Context::finish`] plus a step's own status changes (see [`Context::write_status_edit`]).
    async fn finish_edit(
        &self,
        ws: &MlWorkspace,
        report: Report,
        requeue: Duration,
        edit: impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time),
    ) -> Result<Requeue, Error> {
        let written = self.write_status_edit(ws, &report, edit).await?;
        // A new stall is worth a Warning event (kubectl describe); an unchanged one was already reported.
        if let (true, Phase::Stalled { reason, message }) = (written, &report.phase) {
            self.publish(ws, EventType::Warning, reason, message.clone()).await;
        }
        // A step that reports its own transient failure (a failed key resync) keeps counting, so its retries back
        // off exponentially instead of restarting at the base delay every time.
        if !matches!(report.phase, Phase::Transient { .. }) {
            self.reset_failures(ws);
        }
        Ok(Requeue::requeue(requeue))
    }

    /// Ends a reconcile that failed: THE error policy decides between Stalled (wait for a change) and retry.
    async fn fail(
        &self,
        ws: &MlWorkspace,
        err: Error,
        facts: WorkspaceFacts,
        pending: Option<crate::api::v1alpha1::PendingOperation>,
    ) -> Result<Requeue, Error> {
        self.fail_edit(ws, err, facts, pending, |_, _, _| {}).await
    }

    /// [`Context::fail`] plus a step's own status changes when the failure stalls (see
    /// [`Context::write_status_edit`]).
    async fn fail_edit(
        &self,
        ws: &MlWorkspace,
        err: Error,
        facts: WorkspaceFacts,
        pending: Option<crate::api::v1alpha1::PendingOperation>,
        edit: impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time),
    ) -> Result<Requeue, Error> {
        let chain = scrub(&error_chain(&err));
        warn!(error = %chain, request_id = err.request_id().unwrap_or("-"), "reconcile failed");
        self.publish(ws, EventType::Warning, events::RECONCILE_FAILED, chain.clone()).await;
        match classify(&err) {
            Disposition::Stall { reason, message } => {
                let report = Report {
                    phase: Phase::Stalled { reason, message },
                    workspace: facts,
                    workspace_ref: None,
                    pending,
                    access: None,
                };
                self.write_status_edit(ws, &report, edit).await?;
                self.reset_failures(ws);
                Ok(Requeue::requeue(self.config.stalled_requeue))
            }
            Disposition::Retry | Disposition::RetryAfter(_) => {
                let report = Report {
                    phase: Phase::Transient { message: chain },
                    workspace: facts,
                    workspace_ref: None,
                    pending,
                    access: None,
                };
                if let Err(status_err) = self.write_status(ws, &report).await {
                    warn!(error = %status_err, "cannot report the failure in status");
                }
                Err(err)
            }
        }
    }
}

/// The ARM client a workspace may use, or why it may not use any.
pub enum WorkspaceClient {
    /// A binding allows the workspace; its client.
    Permitted(ArmClient),
    /// No binding allows it: the message names the missing permission.
    Denied(String),
}

/// All SubscriptionBindings, and the labels of `namespace` when a binding of one of `subscriptions` selects
/// namespaces by label (otherwise the namespace is not read).
pub(crate) async fn bindings_and_labels(
    client: &Client,
    namespace: &str,
    subscriptions: &[&str],
) -> Result<(Vec<SubscriptionBinding>, Option<BTreeMap<String, String>>), Error> {
    let bindings: Api<SubscriptionBinding> = Api::all(client.clone());
    // Listed fresh on every reconcile so that a binding change is never judged against a stale cache.
    let bindings = bindings.list(&Default::default()).await.map_err(Error::kube("list SubscriptionBindings"))?.items;
    let labels = if subscriptions.iter().any(|sub| policy::needs_namespace_labels(&bindings, sub)) {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.get_opt(namespace).await.map_err(Error::kube("read namespace"))?.map(|n| n.labels().clone())
    } else {
        None
    };
    Ok((bindings, labels))
}

/// The policy request for `ws` where its spec places it, with its access entries.
pub(crate) fn spec_request<'a>(
    ws: &'a MlWorkspace,
    namespace: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
) -> policy::Request<'a> {
    policy::Request {
        namespace,
        namespace_labels: labels,
        subscription_id: &ws.spec.subscription_id,
        resource_group: &ws.spec.resource_group,
        access: &ws.spec.access,
    }
}

/// Finds the binding that allows `ws` and returns its ARM client. No Azure call is made.
pub async fn resolve_client(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
) -> Result<WorkspaceClient, Error> {
    resolve_client_with(client, credentials, config, ws, &[]).await
}

/// [`resolve_client`], also checking `extra` resources named by id (spec field, id, intent) against the binding
/// ([`policy::check_resource`]), e.g. an online deployment's model asset. No Azure call is made.
pub async fn resolve_client_with(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
    extra: &[(String, String, policy::Intent)],
) -> Result<WorkspaceClient, Error> {
    resolve_selecting(client, credentials, config, ws, extra).await.1
}

/// [`resolve_client_with`], also saying which binding was chosen and which others allow `ws` with other credentials
/// (known even when the chosen binding's credential then fails; `None` when no binding allows it or the bindings
/// could not be read).
pub(crate) async fn resolve_selecting(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
    extra: &[(String, String, policy::Intent)],
) -> (Option<policy::selection::Selection>, Result<WorkspaceClient, Error>) {
    let namespace = ws.namespace().unwrap_or_default();
    let (bindings, labels) = match bindings_and_labels(client, &namespace, &[&ws.spec.subscription_id]).await {
        Ok(found) => found,
        Err(e) => return (None, Err(e)),
    };
    let request = spec_request(ws, &namespace, labels.as_ref());
    // Everything named by id must be in the binding's subscription and in a resource group it allows for the use the
    // operator makes of it (writes only in resourceGroups).
    match policy::authorize_with_resources(&bindings, &request, &ws.spec, extra) {
        Err(refusal) => (None, Ok(WorkspaceClient::Denied(refusal.to_string()))),
        Ok(binding) => {
            let selection = policy::selection::select(&bindings, &request, &ws.spec, extra, binding);
            let arm = credentials.client_for(client, binding, &config.credential_sources(), &config.arm).await;
            (Some(selection), arm.map(WorkspaceClient::Permitted))
        }
    }
}

/// The actions the controller would take for `ws` right now, without taking them: the same policy check, observe
/// and plan as a reconcile (read-only calls only). Used by `azml-operator plan`.
pub async fn dry_run(client: &Client, config: &ControllerConfig, ws: &MlWorkspace) -> Result<Vec<plan::Action>, Error> {
    let stall = |reason, message| Ok(vec![plan::Action::Stall { reason, message }]);
    let desired = match Desired::from_resource(ws) {
        Ok(d) => d,
        Err(e) => return stall(reasons::INVALID_SPEC, e.to_string()),
    };
    let arm = match resolve_client(client, &CredentialCache::default(), config, ws).await? {
        WorkspaceClient::Permitted(arm) => arm,
        WorkspaceClient::Denied(message) => return stall(reasons::NOT_PERMITTED, message),
    };
    if let Some((reason, message)) = moves::dry_run(&ws.spec, ws.status.as_ref()) {
        return stall(reason, message);
    }
    let mut observed = observe::observe(&arm, &desired, ws.status.as_ref()).await?;
    ownership::check_foreign_owner(client, &desired, &mut observed).await?;
    Ok(plan::plan(&desired, &observed))
}

fn stalled(reason: &'static str, message: String) -> Report {
    Report {
        phase: Phase::Stalled { reason, message },
        workspace: WorkspaceFacts::Unknown,
        workspace_ref: None,
        pending: None,
        access: None,
    }
}

/// One reconcile of one workspace.
#[instrument(skip_all, fields(object = %format!("{}/{}", ws.namespace().unwrap_or_default(), ws.name_any()), generation = ws.metadata.generation))]
pub async fn reconcile(ws: Arc<MlWorkspace>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let deleting = ws.metadata.deletion_timestamp.is_some();
    let has_finalizer = ws.finalizers().iter().any(|f| f == FINALIZER);
    match (deleting, has_finalizer) {
        (true, false) => {
            ctx.forget(&ws);
            Ok(Requeue::await_change())
        }
        (false, false) => {
            set_finalizer(&ctx.client, &*ws, FINALIZER, true).await?;
            if ws.status.is_none() {
                // kstatus (Flux, kubectl wait) reads a resource without status as Current: say at once that work is
                // under way, so GitOps tools wait for the first real reconcile.
                let report = Report {
                    phase: Phase::Progressing {
                        reason: reasons::PENDING,
                        message: "the controller has not compared the workspace with Azure yet".into(),
                    },
                    workspace: WorkspaceFacts::Unknown,
                    workspace_ref: None,
                    pending: None,
                    access: None,
                };
                ctx.write_status(&ws, &report).await?;
            }
            // The finalizer's watch event starts the next reconcile.
            Ok(Requeue::await_change())
        }
        (true, true) => reconcile_cleanup(&ws, &ctx).await,
        (false, true) => reconcile_apply(&ws, &ctx).await,
    }
}

/// Adds or removes `finalizer` on `obj`.
pub(crate) async fn set_finalizer<K>(client: &Client, obj: &K, finalizer: &str, present: bool) -> Result<(), Error>
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

async fn reconcile_apply(ws: &MlWorkspace, ctx: &Context) -> Result<Requeue, Error> {
    let stall_requeue = ctx.config.stalled_requeue;
    let mut status = ctx.current_status(ws);
    // A move's operations run in the subscription the workspace comes from: the move step checks them.
    let moving = moves::involved(&ws.spec, status.as_ref());
    if !moving && let Err(message) = policy::check_pending_operation(status.as_ref(), &ws.spec.subscription_id) {
        // Reported, and forgotten (pending: None): the next reconcile reads Azure afresh.
        return ctx.fail(ws, Error::BadPendingOperation(message), WorkspaceFacts::Unknown, None).await;
    }
    let desired = match Desired::from_resource(ws) {
        Ok(d) => d,
        Err(e) => return ctx.finish(ws, stalled(reasons::INVALID_SPEC, e.to_string()), stall_requeue).await,
    };
    let arm = match binding_choice::resolve(ctx, ws).await {
        Ok(WorkspaceClient::Permitted(arm)) => arm,
        Ok(WorkspaceClient::Denied(message)) => {
            info!(%message, "not permitted");
            let mut report = stalled(reasons::NOT_PERMITTED, message);
            report.pending = status.as_ref().and_then(|s| s.pending_operation.clone());
            return ctx.finish(ws, report, stall_requeue).await;
        }
        Err(e) => return ctx.fail(ws, e, WorkspaceFacts::Unknown, status.and_then(|s| s.pending_operation)).await,
    };
    if moving {
        match moves::reconcile_move(ctx, ws, &desired, &arm, status.as_ref()).await {
            moves::MoveOutcome::Done(result) => return result,
            moves::MoveOutcome::Continue => status = ctx.current_status(ws),
        }
    }
    if keys::owns_pending(status.as_ref()) {
        // A key resync in flight: poll it; the workspace pipeline runs again once it is over.
        let result = keys::resume(ctx, ws, &desired, &arm, status.as_ref()).await;
        let base = Report {
            phase: Phase::Ready,
            workspace: WorkspaceFacts::Unknown,
            workspace_ref: Some(desired.workspace.clone()),
            pending: None,
            access: None,
        };
        return finish_keys(ctx, ws, status, result, base, None).await;
    }
    if let Some((dependency, message)) = dependencies::waiting_for(ws, &desired, status.as_ref()) {
        // Stalled for a missing dependency: one GET of it, and the create request only once it exists.
        match arm.dependency_exists(&dependency).await {
            Ok(false) => {
                debug!(%dependency, "the missing dependency still does not exist");
                return ctx.finish(ws, stalled(reasons::DEPENDENCY_MISSING, message), stall_requeue).await;
            }
            Ok(true) => info!(%dependency, "the missing dependency exists now"),
            Err(e) => {
                let err = Error::arm("read dependent resource")(e);
                return ctx.fail(ws, err, WorkspaceFacts::Unknown, None).await;
            }
        }
    }
    let mut observed = match observe::observe(&arm, &desired, status.as_ref()).await {
        Ok(o) => o,
        Err(e) => return ctx.fail(ws, e, WorkspaceFacts::Unknown, status.and_then(|s| s.pending_operation)).await,
    };
    if let Err(e) = ownership::check_foreign_owner(&ctx.client, &desired, &mut observed).await {
        return ctx.fail(ws, e, WorkspaceFacts::Unknown, None).await;
    }
    let mut progress = Progress::new(observed);
    let result = converge(ctx, ws, &desired, &arm, &mut progress).instrument(info_span!("apply")).await;
    let pending = progress.observed.pending.as_ref().map(|p| observe::pending_to_status(p, ws.metadata.generation));
    match result {
        Ok(mut applied) => {
            let (phase, requeue) = (&mut applied.phase, &mut applied.requeue);
            let previous = status.as_ref();
            let access = match access::after_converge(ctx, ws, &desired, &arm, previous, phase, requeue).await {
                Ok(access) => access,
                Err(e) => return ctx.fail(ws, e, progress.facts, pending).await,
            };
            let workspace_ref = matches!(progress.facts, WorkspaceFacts::Present(_)).then(|| desired.workspace.clone());
            let report = Report { phase: applied.phase, workspace: progress.facts, workspace_ref, pending, access };
            if report.phase == Phase::Ready
                && report.pending.is_none()
                && matches!(report.workspace, WorkspaceFacts::Present(_))
            {
                let observed = match &report.workspace {
                    WorkspaceFacts::Present(w) => Some(w.as_ref()),
                    _ => None,
                };
                let result = keys::after_ready(ctx, ws, &desired, &arm, status.as_ref(), observed).await;
                return finish_keys(ctx, ws, status, result, report, Some(applied.requeue)).await;
            }
            ctx.finish(ws, report, applied.requeue).await
        }
        Err(e) if progress.observed.workspace.is_none() && dependencies::is_dependency_missing(&e) => {
            // Remember which dependency is missing, so the stalled requeues wait for it instead of re-sending the PUT.
            let missing = match dependencies::find_missing(&arm, &desired, &e).await {
                Ok(missing) => missing,
                Err(probe) => {
                    warn!(error = %error::scrub(&probe.to_string()), "cannot tell which dependency is missing");
                    None
                }
            };
            let record = missing.map(|id| id.to_string());
            ctx.fail_edit(ws, e, progress.facts, pending, move |s, _, _| s.missing_dependency = record).await
        }
        Err(e) => ctx.fail(ws, e, progress.facts, pending).await,
    }
}

/// Ends a reconcile whose last step was the key step ([`keys`]).
///
/// `base` carries what the earlier steps found (workspace facts, access); the key step decides phase and pending.
async fn finish_keys(
    ctx: &Context,
    ws: &MlWorkspace,
    status: Option<MlWorkspaceStatus>,
    result: Result<keys::KeysOutcome, Error>,
    base: Report,
    requeue: Option<Duration>,
) -> Result<Requeue, Error> {
    match result {
        Ok(outcome) => {
            let report = Report { phase: outcome.phase.unwrap_or(Phase::Ready), pending: outcome.pending, ..base };
            let requeue = match (outcome.requeue, requeue) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(ctx.config.resync_period),
            };
            ctx.finish_with(ws, report, requeue, Some(&outcome.update)).await
        }
        Err(e) => {
            // A resync that could not be polled (Azure unreachable) is kept and polled again.
            let pending =
                status.and_then(|s| s.pending_operation).filter(|p| p.kind.starts_with(keys::RESYNC_OPERATION));
            ctx.fail(ws, e, base.workspace, pending).await
        }
    }
}

async fn reconcile_cleanup(ws: &MlWorkspace, ctx: &Context) -> Result<Requeue, Error> {
    let status = ctx.current_status(ws);
    if ws.spec.deletion_policy == WorkspaceDeletionPolicy::Retain {
        info!("deletionPolicy Retain: leaving Azure as it is; removing the finalizer");
        return remove_finalizer(ws, ctx).await;
    }
    if plan::annotation_true(ws, ANNOTATION_PAUSED) {
        // Paused means no writes to Azure, deletion included: the workspace is left as it is.
        let note = "Paused: the workspace is left in Azure although deletionPolicy is Delete".to_owned();
        ctx.publish(ws, EventType::Normal, reasons::PAUSED, note).await;
        return remove_finalizer(ws, ctx).await;
    }
    // A move in flight ends first; a workspace that never got where the spec says (a move refused, failed or not
    // permitted) is deleted where it is.
    if let Some(result) = moves::before_cleanup(ctx, ws, status.as_ref()).await {
        return result;
    }
    let status = ctx.current_status(ws);
    let located = moves::located(ws, status.as_ref());
    let ws = &located;
    if let Err(message) = policy::check_pending_operation(status.as_ref(), &ws.spec.subscription_id) {
        return ctx.fail(ws, Error::BadPendingOperation(message), WorkspaceFacts::Unknown, None).await;
    }
    let pending = status.as_ref().and_then(|s| s.pending_operation.clone());
    let client = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, ws).await {
        Ok(c) => c,
        Err(e) => return ctx.fail(ws, e, WorkspaceFacts::Unknown, pending).await,
    };
    // Without a binding Azure cannot be asked; a workspace never seen in Azure and with no operation in flight was
    // never created, so there is nothing to delete.
    let never_created = status.as_ref().is_none_or(|s| s.resource_id.is_none() && s.pending_operation.is_none());
    if matches!(client, WorkspaceClient::Denied(_)) && never_created {
        info!("not permitted and never created in Azure; removing the finalizer");
        return remove_finalizer(ws, ctx).await;
    }
    match cleanup::cleanup(ctx, ws, &client).await {
        Ok(CleanupOutcome::Done) => remove_finalizer(ws, ctx).await,
        Ok(CleanupOutcome::Waiting { report, requeue }) => ctx.finish(ws, *report, requeue).await,
        Err(e) => {
            let pending = if cleanup::forgets_operation(&e) { None } else { pending };
            ctx.fail(ws, e, WorkspaceFacts::Unknown, pending).await
        }
    }
}

async fn remove_finalizer(ws: &MlWorkspace, ctx: &Context) -> Result<Requeue, Error> {
    set_finalizer(&ctx.client, ws, FINALIZER, false).await?;
    ctx.forget(ws);
    Ok(Requeue::await_change())
}

/// Requeue after a failed reconcile: backoff with jitter for transient errors, Retry-After when throttled.
pub fn error_policy(ws: Arc<MlWorkspace>, err: &Error, ctx: Arc<Context>) -> Requeue {
    requeue_after_error(err, &ctx.config, || ctx.bump_failures(&ws))
}

/// THE requeue policy of both controllers: `bump_failures` counts the failure and returns how many in a row.
pub(crate) fn requeue_after_error(
    err: &Error,
    config: &ControllerConfig,
    bump_failures: impl FnOnce() -> u32,
) -> Requeue {
    match classify(err) {
        Disposition::RetryAfter(after) => Requeue::requeue(after.max(Duration::from_millis(100))),
        Disposition::Retry => {
            Requeue::requeue(backoff(bump_failures(), config.error_backoff_base, config.error_backoff_max))
        }
        Disposition::Stall { .. } => Requeue::requeue(config.stalled_requeue),
    }
}

fn deletion_predicate<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    obj.meta().deletion_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut h);
    Some(h.finish())
}

/// The objects of `api` a controller runs on, cached in `writer`: only changes of generation, annotations,
/// finalizers or deletion pass, so the controller's own status patches do not wake it.
pub(crate) fn watch_changes<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
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
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicate, predicate_config)
}

/// Runs the controller until `shutdown` is cancelled, then lets running reconciles finish and returns.
///
/// This is what `azml-operator run`, the sandbox and the integration tests call.
pub async fn run(client: Client, config: ControllerConfig, shutdown: CancellationToken) {
    let apis: Vec<Api<MlWorkspace>> = if config.watch_namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config.watch_namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    info!(
        resync_period = ?config.resync_period,
        concurrency = config.concurrency,
        arm_endpoint = %config.arm.cloud.arm_endpoint,
        namespaces = ?config.watch_namespaces,
        "starting the MlWorkspace controller"
    );
    let ctx = Arc::new(Context::new(client.clone(), config));
    let watcher_config = key_signals::WatcherConfig {
        interval: ctx.config.key_signal_interval,
        lookback: key_signals::ACTIVITY_LOG_LOOKBACK,
    };
    let watcher_stop = shutdown.child_token();
    let watcher = tokio::spawn(key_signals::watch(ctx.keys.clone(), watcher_config, watcher_stop.clone()));
    let controllers = apis.into_iter().map(|api| run_one(api, client.clone(), ctx.clone(), shutdown.clone()));
    // The MlOnlineEndpoint and MlCompute controllers run in this task, beside the workspace controllers: same leader election
    // (aborting this task stops both), shutdown and metrics.
    let endpoints = crate::endpoints::run(client.clone(), ctx.config.clone(), shutdown.clone());
    let computes = crate::compute::run(client.clone(), ctx.config.clone(), shutdown.clone());
    futures::future::join3(futures::future::join_all(controllers), endpoints, computes).await;
    watcher_stop.cancel();
    if let Err(err) = watcher.await {
        warn!(error = %err, "storage-key watcher ended abnormally");
    }
    info!("MlWorkspace controller stopped");
}

async fn run_one(api: Api<MlWorkspace>, client: Client, ctx: Arc<Context>, shutdown: CancellationToken) {
    let scope = ctx.config.metrics.controller_scope(match api.namespace() {
        Some(ns) => format!("mlworkspaces/{ns}"),
        None => "mlworkspaces".to_owned(),
    });
    let (reader, writer) = reflector::store();
    let stream = watch_changes(api, writer).inspect_ok({
        let scope = scope.clone();
        move |ws| scope.requested(&ObjectRef::from_obj(ws))
    });
    let controller = Controller::for_stream(stream, reader);
    let (store, cache, stalled) = (controller.store(), controller.store(), controller.store());
    let secrets = credential_watch::secret_changes(&client, &ctx.config.operator_namespace);
    let (mapped, signalled, dropped, woken) = (scope.clone(), scope.clone(), scope.clone(), scope.clone());
    let bindings: Api<SubscriptionBinding> = Api::all(client);
    let run = controller
        .with_config(RuntimeConfig::default().concurrency(ctx.config.concurrency))
        .watches(bindings, watcher::Config::default(), move |binding: SubscriptionBinding| {
            // A binding change re-evaluates the workspaces of its subscription.
            store
                .state()
                .into_iter()
                .filter(|ws| ws.spec.subscription_id.eq_ignore_ascii_case(&binding.spec.subscription_id))
                .map(|ws| ObjectRef::from_obj(&*ws))
                .inspect(|r| mapped.requested(r))
                .collect::<Vec<_>>()
        })
        .watches_stream(secrets, move |_| {
            let refs = credential_watch::to_recheck(&stalled);
            refs.iter().for_each(|r| woken.requested(r));
            refs
        })
        .reconcile_on(ctx.keys.triggers().inspect(move |r| signalled.requested(r)))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            |ws, ctx| {
                let (metrics, object) = (ctx.config.metrics.clone(), ObjectRef::from_obj(&*ws));
                async move { crate::metrics::instrument_reconcile(&metrics, object, reconcile(ws, ctx)).await }
            },
            error_policy,
            ctx,
        )
        .for_each(move |result| {
            // Deleted before its turn: the scheduler drops the request.
            if let Err(kube::runtime::controller::Error::ObjectNotFound(obj)) = &result {
                dropped.dropped(obj);
            }
            async move {
                match result {
                    Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                    // The chain carries ARM error messages, which are text we do not control.
                    Err(err) => debug!(error = %scrub(&error_chain(&err)), "reconcile error"),
                }
            }
        });
    scope.run(cache, run).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";

    #[test]
    fn deletion_changes_the_predicate_hash() {
        let mut ws = MlWorkspace::new("ws", desired_spec());
        let before = deletion_predicate(&ws);
        ws.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(1_700_000_000).expect("ts")));
        assert_ne!(before, deletion_predicate(&ws));
    }

    fn desired_spec() -> crate::api::v1alpha1::MlWorkspaceSpec {
        serde_json::from_value(serde_json::json!({
            "subscriptionId": SUB, "resourceGroup": "rg", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .expect("spec")
    }

    #[test]
    fn event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_bytes("short".into(), 1024), "short");
        let cut = truncate_bytes("é".repeat(600), MAX_EVENT_NOTE_BYTES);
        assert!(cut.len() <= MAX_EVENT_NOTE_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn config_defaults() {
        let c = ControllerConfig::new(AzureCloud::public());
        assert_eq!(c.resync_period, Duration::from_secs(3600));
        assert_eq!(c.stalled_requeue, c.resync_period);
        assert!(c.lro_poll_min <= c.lro_poll_max);
        assert!(c.error_backoff_base <= c.error_backoff_max);
    }
}
