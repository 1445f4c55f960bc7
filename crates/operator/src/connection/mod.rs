//! The MlConnection controller: observe → plan ([`plan::plan`], pure) → apply → report.
//!
//! - A connection waits for its MlWorkspace (same namespace) to be Ready before any Azure call (reason
//!   `WorkspaceNotReady`), carries an owner reference to it, and uses the SubscriptionBinding that allows the
//!   workspace; that binding must also allow the connection's category and target ([`policy::check_connection`]),
//!   else `NotPermitted` and no Azure call.
//! - Credentials come from the Secret `spec.credentialsFrom.secretName` (read by name with `get` at every reconcile;
//!   never listed or watched). Azure never returns them, so their salted hash is kept in `status.credentialsHash`:
//!   a changed Secret sends the connection once (event `CredentialsUpdated`), an unchanged one sends nothing. A
//!   missing Secret or key stalls with `SecretNotFound` naming it, and is looked at again every resync period.
//! - Steady state: one GET of the connection (and of the Secret) per resync, no writes; status is patched only
//!   when something other than a timestamp changed.
//! - `azml.dev/paused: "true"` observes and reports only. Deletion runs behind the `azml.dev/cleanup` finalizer:
//!   deletionPolicy Delete deletes the connection in Azure (only one carrying this resource's owner mark).
//! - Credential values live in [`crate::azure::Secret`]s only: never in logs, events, status or errors.

pub mod plan;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as RuntimeConfig, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use self::plan::{DesiredConnection, Plan, ResolvedCredentials, WriteReason};
use crate::api::conditions::{self, events, reasons};
use crate::api::v1alpha1::{
    ANNOTATION_PAUSED, DeletionPolicy, FINALIZER, MlConnection, MlConnectionStatus, MlWorkspace,
};
use crate::azure::ArmClient;
use crate::azure::connections::{Connection, ConnectionName, ConnectionRef};
use crate::controller::credentials::CredentialCache;
use crate::controller::error::{Disposition, Error, classify, error_chain, scrub};
use crate::controller::plan::annotation_true;
use crate::controller::status::{self, Phase, TimestampedStatus, set_condition};
use crate::controller::{
    CONTROLLER_NAME, ControllerConfig, ObjectMemory, bindings_and_labels, publish_event, requeue_after_error,
    set_finalizer, spec_request, watch_changes,
};
use crate::endpoints::{ensure_workspace_owner, workspace_ready};

impl TimestampedStatus for MlConnectionStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn last_sync_time_mut(&mut self) -> &mut Option<Time> {
        &mut self.last_sync_time
    }
}

/// Shared state of the connection reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings (the workspace controller's).
    pub config: ControllerConfig,
    recorder: Recorder,
    credentials: CredentialCache,
    memory: ObjectMemory<MlConnectionStatus>,
}

impl Context {
    /// A context for `client` with `config`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
        Context { client, config, recorder, credentials: CredentialCache::default(), memory: ObjectMemory::default() }
    }

    fn current_status(&self, mc: &MlConnection) -> Option<MlConnectionStatus> {
        self.memory.status(mc.uid(), mc.status.as_ref())
    }

    /// Writes `next` when it differs from the current status in more than timestamps.
    async fn write_status(&self, mc: &MlConnection, mut next: MlConnectionStatus) -> Result<bool, Error> {
        let previous = self.current_status(mc);
        if !status::changed(previous.as_ref(), &next) {
            return Ok(false);
        }
        next.last_sync_time = Some(Time(jiff::Timestamp::now()));
        let api: Api<MlConnection> = Api::namespaced(self.client.clone(), &mc.namespace().unwrap_or_default());
        let patch = status::merge_patch(previous.as_ref(), &next);
        api.patch_status(&mc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("patch connection status"))?;
        self.memory.wrote(mc.uid(), next);
        Ok(true)
    }
}

/// The spec resolved against its workspace. Fails on values the schema should have rejected.
pub fn desired(mc: &MlConnection, ws: &MlWorkspace) -> Result<(ConnectionRef, DesiredConnection), String> {
    let ws_desired = crate::controller::plan::Desired::from_resource(ws).map_err(|e| format!("workspace: {e}"))?;
    let name = mc.name_any();
    let c_name = ConnectionName::new(mc.spec.azure_name_or(&name)).map_err(|e| format!("spec.azureName: {e}"))?;
    let owner = format!("{}/{}/{}", mc.namespace().unwrap_or_default(), name, mc.uid().unwrap_or_default());
    let desired = DesiredConnection {
        category: mc.spec.category.clone(),
        target: mc.spec.target.clone(),
        auth_type: mc.spec.auth_type,
        metadata: mc.spec.metadata.clone(),
        shared_to_all: mc.spec.shared_to_all,
        owner,
    };
    Ok((ConnectionRef::new(ws_desired.workspace, c_name), desired))
}

/// The ARM client a connection may use (and the binding's name), or why it may not use any. No Azure call.
async fn resolve_client(
    ctx: &Context,
    ws: &MlWorkspace,
    mc: &MlConnection,
    for_delete: bool,
) -> Result<Result<(ArmClient, String), String>, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let (bindings, labels) = bindings_and_labels(&ctx.client, &namespace, &[&ws.spec.subscription_id]).await?;
    let mut probe = ws.clone();
    probe.spec.access.clear();
    let request = spec_request(&probe, &namespace, labels.as_ref());
    let binding = match crate::policy::authorize(&bindings, &request) {
        Ok(b) => b,
        Err(denial) => return Ok(Err(denial.to_string())),
    };
    if !for_delete && let Err(denial) = policy::check_connection(binding, &mc.spec) {
        return Ok(Err(denial.to_string()));
    }
    let arm =
        ctx.credentials.client_for(&ctx.client, binding, &ctx.config.credential_sources(), &ctx.config.arm).await?;
    Ok(Ok((arm, binding.name_any())))
}

/// Reads the credentials Secret (by name) and resolves the credentials of the auth type.
#[instrument(skip_all)]
async fn read_credentials(
    ctx: &Context,
    mc: &MlConnection,
) -> Result<Result<ResolvedCredentials, plan::SecretProblem>, Error> {
    let secret_name = mc.spec.credentials_from.as_ref().map(|c| c.secret_name.as_str());
    let data = match secret_name {
        Some(name) => {
            let api: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), &mc.namespace().unwrap_or_default());
            match api.get_opt(name).await {
                Ok(secret) => secret.map(|s| s.data.unwrap_or_default()),
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    let message = format!(
                        "the operator may not read Secret {name} in namespace {}: grant its service account get on secrets there (see the README)",
                        mc.namespace().unwrap_or_default()
                    );
                    return Ok(Err((reasons::NOT_PERMITTED, message)));
                }
                Err(e) => return Err(Error::kube("read credentials Secret")(e)),
            }
        }
        None => None,
    };
    Ok(plan::resolve_credentials(mc.spec.auth_type, secret_name, data.as_ref(), &mc.uid().unwrap_or_default()))
}

/// Sets Ready, Reconciling and Stalled from `outcome`.
pub fn set_kstatus(status: &mut MlConnectionStatus, outcome: &Phase, generation: Option<i64>, now: &Time) {
    let conds = &mut status.conditions;
    let (ready, reconciling, stalled, reason, message) = match outcome {
        Phase::Ready => (true, false, false, reasons::RECONCILED, "the connection matches the spec".to_owned()),
        Phase::Progressing { reason, message } => (false, true, false, *reason, message.clone()),
        Phase::Stalled { reason, message } => (false, false, true, *reason, message.clone()),
        Phase::Transient { message } => (false, true, false, reasons::TRANSIENT_ERROR, message.clone()),
        Phase::Paused { in_sync, message } => (*in_sync, false, false, reasons::PAUSED, message.clone()),
    };
    set_condition(conds, conditions::READY, ready, reason, &message, generation, now);
    let (r, m) = if reconciling { (reason, message.as_str()) } else { (reasons::RECONCILED, "") };
    set_condition(conds, conditions::RECONCILING, reconciling, r, m, generation, now);
    let (r, m) = if stalled { (reason, message.as_str()) } else { (reasons::RECONCILED, "") };
    set_condition(conds, conditions::STALLED, stalled, r, m, generation, now);
    status.observed_generation = generation;
}

/// Copies what Azure reports into `status` (nothing from a connection that is not ours).
fn report_observed(status: &mut MlConnectionStatus, c_ref: &ConnectionRef, observed: Option<&Connection>, owner: &str) {
    match observed.filter(|c| plan::owner_of(c) == Some(owner)) {
        Some(c) => {
            status.resource_id = Some(c.id.clone().unwrap_or_else(|| c_ref.id()));
            status.category = c.properties.category.clone();
            status.auth_type = Some(c.properties.auth_type.clone());
            status.group = c.properties.group.clone();
        }
        None => {
            status.resource_id = None;
            status.category = None;
            status.auth_type = None;
            status.group = None;
        }
    }
}

/// One reconcile of one connection.
#[instrument(skip_all, fields(object = %format!("{}/{}", mc.namespace().unwrap_or_default(), mc.name_any()), generation = mc.metadata.generation))]
pub async fn reconcile(mc: Arc<MlConnection>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let deleting = mc.metadata.deletion_timestamp.is_some();
    let has_finalizer = mc.finalizers().iter().any(|f| f == FINALIZER);
    match (deleting, has_finalizer) {
        (true, false) => {
            forget(&ctx, &mc);
            Ok(Requeue::await_change())
        }
        (false, false) => {
            set_finalizer(&ctx.client, &*mc, FINALIZER, true).await?;
            Ok(Requeue::await_change())
        }
        (true, true) => reconcile_cleanup(&mc, &ctx).await,
        (false, true) => reconcile_apply(&mc, &ctx).await,
    }
}

fn forget(ctx: &Context, mc: &MlConnection) {
    if let Some(uid) = mc.uid() {
        ctx.memory.forget(&uid);
    }
}

async fn get_workspace(client: &Client, mc: &MlConnection) -> Result<Option<MlWorkspace>, Error> {
    let api: Api<MlWorkspace> = Api::namespaced(client.clone(), &mc.namespace().unwrap_or_default());
    api.get_opt(&mc.spec.workspace_ref.name).await.map_err(Error::kube("read workspace"))
}

/// Ends a reconcile: status (with `outcome`), a Warning event for a new stall, the requeue.
async fn finish(
    ctx: &Context,
    mc: &MlConnection,
    mut status: MlConnectionStatus,
    outcome: Phase,
    requeue: Duration,
) -> Result<Requeue, Error> {
    let now = Time(jiff::Timestamp::now());
    set_kstatus(&mut status, &outcome, mc.metadata.generation, &now);
    let written = ctx.write_status(mc, status).await?;
    if let (true, Phase::Stalled { reason, message }) = (written, &outcome) {
        publish_event(&ctx.recorder, mc, EventType::Warning, reason, message.clone()).await;
    }
    if !matches!(outcome, Phase::Transient { .. }) {
        ctx.memory.reset_failures(mc.uid());
    }
    Ok(Requeue::requeue(requeue))
}

/// Ends a reconcile that failed: stall or retry, as the workspace controller's error policy decides.
async fn fail(ctx: &Context, mc: &MlConnection, status: MlConnectionStatus, err: Error) -> Result<Requeue, Error> {
    let chain = scrub(&error_chain(&err));
    warn!(error = %chain, request_id = err.request_id().unwrap_or("-"), "connection reconcile failed");
    publish_event(&ctx.recorder, mc, EventType::Warning, events::RECONCILE_FAILED, chain.clone()).await;
    match classify(&err) {
        Disposition::Stall { reason, message } => {
            finish(ctx, mc, status, Phase::Stalled { reason, message }, ctx.config.stalled_requeue).await
        }
        Disposition::Retry | Disposition::RetryAfter(_) => {
            let mut status = status;
            let now = Time(jiff::Timestamp::now());
            set_kstatus(&mut status, &Phase::Transient { message: chain }, mc.metadata.generation, &now);
            if let Err(status_err) = ctx.write_status(mc, status).await {
                warn!(error = %status_err, "cannot report the failure in status");
            }
            Err(err)
        }
    }
}

async fn reconcile_apply(mc: &MlConnection, ctx: &Context) -> Result<Requeue, Error> {
    let mut status = ctx.current_status(mc).unwrap_or_default();
    let (resync, stalled) = (ctx.config.resync_period, ctx.config.stalled_requeue);
    let Some(ws) = get_workspace(&ctx.client, mc).await?.filter(workspace_ready) else {
        let message = format!(
            "waiting for MlWorkspace {} to be Ready; nothing is sent to Azure before",
            mc.spec.workspace_ref.name
        );
        return finish(ctx, mc, status, Phase::Progressing { reason: reasons::WORKSPACE_NOT_READY, message }, resync)
            .await;
    };
    ensure_workspace_owner(&ctx.client, mc, &ws).await?;
    let (arm, binding) = match resolve_client(ctx, &ws, mc, false).await {
        Ok(Ok(permitted)) => permitted,
        Ok(Err(message)) => {
            return finish(ctx, mc, status, Phase::Stalled { reason: reasons::NOT_PERMITTED, message }, stalled).await;
        }
        Err(e) => return fail(ctx, mc, status, e).await,
    };
    status.binding = Some(binding);
    let (c_ref, desired) = match desired(mc, &ws) {
        Ok(d) => d,
        Err(message) => {
            return finish(ctx, mc, status, Phase::Stalled { reason: reasons::INVALID_SPEC, message }, stalled).await;
        }
    };
    let creds = match read_credentials(ctx, mc).await {
        Ok(Ok(creds)) => creds,
        // A Secret is expected to appear (or be fixed) without a spec change: looked at again every resync.
        Ok(Err((reason, message))) => return finish(ctx, mc, status, Phase::Stalled { reason, message }, resync).await,
        Err(e) => return fail(ctx, mc, status, e).await,
    };
    let observed = match arm.get_connection(&c_ref).await {
        Ok(o) => o,
        Err(e) => return fail(ctx, mc, status, Error::arm("get connection")(e)).await,
    };
    let plan = plan::plan(&desired, observed.as_ref(), &creds, status.credentials_hash.as_deref());
    debug!(write = ?plan.write, "planned");
    report_observed(&mut status, &c_ref, observed.as_ref(), &desired.owner);
    if annotation_true(mc, ANNOTATION_PAUSED) {
        let in_sync = plan.converged();
        let message = match &plan.write {
            None => "paused by annotation azml.dev/paused; nothing withheld".to_owned(),
            Some((_, what)) => format!("paused by annotation azml.dev/paused; withheld: {what}"),
        };
        return finish(ctx, mc, status, Phase::Paused { in_sync, message }, resync).await;
    }
    if let Some((reason, message)) = plan.stall.clone() {
        return finish(ctx, mc, status, Phase::Stalled { reason, message }, stalled).await;
    }
    if let Err(e) = apply(ctx, mc, &arm, &c_ref, &desired, &creds, &plan, &mut status).await {
        return fail(ctx, mc, status, e).await;
    }
    finish(ctx, mc, status, Phase::Ready, resync).await
}

/// Sends the plan's PUT, if any, and records the credentials' hash as sent.
#[allow(clippy::too_many_arguments)]
#[instrument(skip_all, fields(connection = %c_ref.id()))]
async fn apply(
    ctx: &Context,
    mc: &MlConnection,
    arm: &ArmClient,
    c_ref: &ConnectionRef,
    desired: &DesiredConnection,
    creds: &ResolvedCredentials,
    plan: &Plan,
    status: &mut MlConnectionStatus,
) -> Result<(), Error> {
    let Some((why, what)) = &plan.write else { return Ok(()) };
    let written =
        arm.create_connection(c_ref, &plan::body(desired, creds)).await.map_err(Error::arm("put connection"))?;
    report_observed(status, c_ref, Some(&written), &desired.owner);
    status.credentials_hash = creds.hash.clone();
    if creds.hash.is_some() {
        status.last_credentials_sent = Some(Time(jiff::Timestamp::now()));
    }
    let drift = mc.status.as_ref().and_then(|s| s.observed_generation) == mc.metadata.generation;
    let (reason, note) = match why {
        WriteReason::Create => (events::CREATED, format!("Created connection {}", c_ref.id())),
        WriteReason::Properties if drift => {
            (events::DRIFT_CORRECTED, format!("Connection put back to the spec: {what}"))
        }
        WriteReason::Properties => (events::UPDATED, format!("Connection updated: {what}")),
        WriteReason::Credentials => {
            (events::CREDENTIALS_UPDATED, "Credentials sent again: the credentials Secret changed".to_owned())
        }
    };
    info!(%reason, "wrote connection");
    publish_event(&ctx.recorder, mc, EventType::Normal, reason, note).await;
    Ok(())
}

async fn remove_finalizer(mc: &MlConnection, ctx: &Context) -> Result<Requeue, Error> {
    set_finalizer(&ctx.client, mc, FINALIZER, false).await?;
    forget(ctx, mc);
    Ok(Requeue::await_change())
}

async fn reconcile_cleanup(mc: &MlConnection, ctx: &Context) -> Result<Requeue, Error> {
    let status = ctx.current_status(mc).unwrap_or_default();
    if mc.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: leaving the connection in Azure; removing the finalizer");
        return remove_finalizer(mc, ctx).await;
    }
    if annotation_true(mc, ANNOTATION_PAUSED) {
        let note = "Paused: the connection is left in Azure although deletionPolicy is Delete".to_owned();
        publish_event(&ctx.recorder, mc, EventType::Normal, reasons::PAUSED, note).await;
        return remove_finalizer(mc, ctx).await;
    }
    let Some(ws) = get_workspace(&ctx.client, mc).await? else {
        info!("the workspace is gone: the connection goes with it in Azure, or is left; removing the finalizer");
        return remove_finalizer(mc, ctx).await;
    };
    let arm = match resolve_client(ctx, &ws, mc, true).await {
        Ok(Ok((arm, _))) => arm,
        Ok(Err(_)) if status.resource_id.is_none() => return remove_finalizer(mc, ctx).await,
        Ok(Err(message)) => {
            let outcome = Phase::Stalled { reason: reasons::NOT_PERMITTED, message };
            return finish(ctx, mc, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return fail(ctx, mc, status, e).await,
    };
    let Ok((c_ref, desired)) = desired(mc, &ws) else { return remove_finalizer(mc, ctx).await };
    let found = match arm.get_connection(&c_ref).await {
        Ok(f) => f,
        // The workspace itself is gone from Azure: so are its connections.
        Err(e) if e.status() == Some(404) => None,
        Err(e) => return fail(ctx, mc, status, Error::arm("get connection")(e)).await,
    };
    if found.as_ref().is_some_and(|c| plan::owner_of(c) == Some(desired.owner.as_str())) {
        if let Err(e) = arm.delete_connection(&c_ref).await {
            return fail(ctx, mc, status, Error::arm("delete connection")(e)).await;
        }
        info!("deleted connection");
        publish_event(
            &ctx.recorder,
            mc,
            EventType::Normal,
            events::DELETED,
            format!("Deleted connection {}", c_ref.id()),
        )
        .await;
    }
    remove_finalizer(mc, ctx).await
}

/// Requeue after a failed reconcile: backoff with jitter, Retry-After when throttled.
pub fn error_policy(mc: Arc<MlConnection>, err: &Error, ctx: Arc<Context>) -> Requeue {
    requeue_after_error(err, &ctx.config, || ctx.memory.bump_failures(mc.uid()))
}

/// Runs the connection controller until `shutdown` is cancelled (started by [`crate::controller::run`], beside the
/// other controllers: same leader election, shutdown and metrics).
pub async fn run(client: Client, config: ControllerConfig, shutdown: CancellationToken) {
    let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    info!(namespaces = ?config.watch_namespaces, "starting the MlConnection controller");
    let ctx = Arc::new(Context::new(client.clone(), config));
    let runs = namespaces.into_iter().map(|ns| run_one(ns, client.clone(), ctx.clone(), shutdown.clone()));
    futures::future::join_all(runs).await;
    info!("MlConnection controller stopped");
}

async fn run_one(namespace: Option<String>, client: Client, ctx: Arc<Context>, shutdown: CancellationToken) {
    let (connections, workspaces): (Api<MlConnection>, Api<MlWorkspace>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (reader, writer) = reflector::store();
    let controller = Controller::for_stream(watch_changes(connections, writer), reader);
    let store = controller.store();
    controller
        .with_config(RuntimeConfig::default().concurrency(ctx.config.concurrency))
        .watches(workspaces, watcher::Config::default(), move |ws: MlWorkspace| {
            // A workspace change (Ready, a move, deletion) re-evaluates its connections.
            let ns = ws.namespace();
            store
                .state()
                .into_iter()
                .filter(|mc| mc.namespace() == ns && mc.spec.workspace_ref.name == ws.name_any())
                .map(|mc| ObjectRef::from_obj(&*mc))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            |mc, ctx| {
                let (metrics, object) = (ctx.config.metrics.clone(), ObjectRef::from_obj(&*mc));
                async move { crate::metrics::instrument_reconcile(&metrics, object, reconcile(mc, ctx)).await }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                debug!(error = %scrub(&error_chain(&err)), "connection reconcile error");
            }
        })
        .await;
}
