//! The MlOnlineEndpoint controller: observe → plan ([`plan::plan`], pure) → apply → report.
//!
//! - An endpoint waits for its MlWorkspace (same namespace) to be Ready before any Azure call (reason
//!   `WorkspaceNotReady`), carries an owner reference to it, and uses the workspace's SubscriptionBinding and
//!   credential ([`crate::controller::resolve_client`]).
//! - Writes are started, not awaited: the next reconcile (after `lro_poll_min`) reads the provisioning states, so
//!   a restarted operator simply looks again and never re-sends a write because it lost track of one. The one
//!   exception used to be key regeneration; it is now started, recorded and polled like the others ([`keys`]).
//! - Steady state: one GET of the endpoint and of each deployment, one listKeys when keys are exported, one role
//!   assignment listing when access is declared, no writes; status is patched only when something other than a
//!   timestamp changed.
//! - `azml.dev/paused: "true"` observes and reports only.
//! - Keys ([`keys`]) go to a Secret owned by the endpoint; `azml.dev/regenerate-keys` regenerates one key.
//! - Deletion runs behind the `azml.dev/cleanup` finalizer: deletionPolicy Delete deletes the endpoint (and with
//!   it its deployments) in Azure; the owned keys Secret is deleted explicitly in both cases, before the endpoint
//!   goes (the garbage collector would delete it after; key material should not outlive the endpoint even briefly).

pub mod access;
pub mod dry_run;
pub mod keys;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as RuntimeConfig, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use self::plan::{Action, DesiredDeployment, DesiredEndpoint, ObservedEndpoint, Plan};
use crate::api::conditions::{self, events, reasons};
use crate::api::v1alpha1::{
    ANNOTATION_PAUSED, DeletionPolicy, DeploymentStatus, ENDPOINT_FINALIZER, EndpointAuthMode, MlOnlineEndpoint,
    MlOnlineEndpointStatus, MlWorkspace,
};
use crate::azure::ids::{OnlineDeploymentName, OnlineDeploymentRef, OnlineEndpointName, OnlineEndpointRef};
use crate::azure::models::ProvisioningState;
use crate::azure::online_endpoints::OnlineEndpoint;
use crate::azure::{ArmClient, ResourceId};
use crate::controller::credentials::CredentialCache;
use crate::controller::error::{Disposition, Error, classify, error_chain, scrub};
use crate::controller::plan::annotation_true;
use crate::controller::status::{self, Phase, set_condition};
use crate::controller::{
    CONTROLLER_NAME, ControllerConfig, ObjectMemory, WorkspaceClient, publish_event, requeue_after_error,
    resolve_client, set_finalizer, watch_changes,
};
use crate::events::Recorder;

/// Shared state of the endpoint reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings (the workspace controller's).
    pub config: ControllerConfig,
    recorder: Recorder,
    credentials: CredentialCache,
    /// Failures and last written status per endpoint uid.
    memory: ObjectMemory<MlOnlineEndpointStatus>,
}

impl Context {
    /// A context for `client` with `config`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
        Context { client, config, recorder, credentials: CredentialCache::default(), memory: ObjectMemory::default() }
    }

    async fn publish(&self, ep: &MlOnlineEndpoint, type_: EventType, reason: &str, note: String) {
        publish_event(&self.recorder, ep, type_, reason, note).await;
    }

    fn current_status(&self, ep: &MlOnlineEndpoint) -> Option<MlOnlineEndpointStatus> {
        self.memory.status(ep.uid(), ep.status.as_ref())
    }

    fn forget(&self, ep: &MlOnlineEndpoint) {
        if let Some(uid) = ep.uid() {
            self.memory.forget(&uid);
        }
    }

    fn bump_failures(&self, ep: &MlOnlineEndpoint) -> u32 {
        self.memory.bump_failures(ep.uid())
    }

    fn reset_failures(&self, ep: &MlOnlineEndpoint) {
        self.memory.reset_failures(ep.uid());
    }

    /// Writes `next` when it differs from the current status in more than timestamps.
    async fn write_status(&self, ep: &MlOnlineEndpoint, mut next: MlOnlineEndpointStatus) -> Result<bool, Error> {
        let previous = self.current_status(ep);
        if !status::changed(previous.as_ref(), &next) {
            debug!("status unchanged");
            return Ok(false);
        }
        next.last_sync_time = Some(Time(jiff::Timestamp::now()));
        let api: Api<MlOnlineEndpoint> = Api::namespaced(self.client.clone(), &ep.namespace().unwrap_or_default());
        let patch = status::merge_patch(previous.as_ref(), &next);
        api.patch_status(&ep.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("patch endpoint status"))?;
        self.memory.wrote(ep.uid(), next);
        Ok(true)
    }
}

/// Sets Ready, Reconciling and Stalled from `outcome`.
pub fn set_kstatus(status: &mut MlOnlineEndpointStatus, outcome: &Phase, generation: Option<i64>, now: &Time) {
    let conds = &mut status.conditions;
    let (ready, reconciling, stalled, reason, message) = match outcome {
        Phase::Ready => (true, false, false, reasons::RECONCILED, "the endpoint matches the spec".to_owned()),
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

/// Whether the workspace is Ready (and not being deleted).
pub fn workspace_ready(ws: &MlWorkspace) -> bool {
    ws.metadata.deletion_timestamp.is_none()
        && ws.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True") && s.resource_id.is_some()
        })
}

/// The spec resolved against its workspace. Fails on names the schema should have rejected.
pub fn desired(ep: &MlOnlineEndpoint, ws: &MlWorkspace) -> Result<(OnlineEndpointRef, DesiredEndpoint), String> {
    let ws_desired = crate::controller::plan::Desired::from_resource(ws).map_err(|e| format!("workspace: {e}"))?;
    let name = ep.name_any();
    let azure_name = ep.spec.azure_name_or(&name);
    let ep_name = OnlineEndpointName::new(azure_name).map_err(|e| format!("spec.azureName: {e}"))?;
    for d in &ep.spec.deployments {
        OnlineDeploymentName::new(d.name.as_str()).map_err(|e| format!("spec.deployments: {e}"))?;
    }
    let owner = format!("{}/{}/{}", ep.namespace().unwrap_or_default(), name, ep.uid().unwrap_or_default());
    let desired = DesiredEndpoint {
        location: ws.spec.location.clone(),
        auth_mode: ep.spec.auth_mode,
        description: ep.spec.description.clone(),
        public_network_access: ep.spec.public_network_access,
        deployments: ep
            .spec
            .deployments
            .iter()
            .map(|d| DesiredDeployment {
                name: d.name.clone(),
                model: d.model.clone(),
                instance_type: d.instance_type.clone(),
                instance_count: i64::from(d.instance_count),
                environment: d.environment.clone(),
                description: d.description.clone(),
            })
            .collect(),
        traffic: plan::normalize_traffic(&ep.spec.traffic),
        owner,
    };
    Ok((OnlineEndpointRef::new(ws_desired.workspace, ep_name), desired))
}

fn deployment_ref(ep: &OnlineEndpointRef, name: &str) -> Result<OnlineDeploymentRef, Error> {
    let name = OnlineDeploymentName::new(name).map_err(|e| Error::BadPendingOperation(e.to_string()))?;
    Ok(OnlineDeploymentRef::new(ep.clone(), name))
}

/// Reads the endpoint and the deployments that matter: the declared ones, the ones the status lists, and the
/// ones the endpoint routes traffic to.
#[instrument(skip_all, fields(endpoint = %ep_ref.id()))]
async fn observe(
    arm: &ArmClient,
    ep_ref: &OnlineEndpointRef,
    desired: &DesiredEndpoint,
    previous: Option<&MlOnlineEndpointStatus>,
) -> Result<ObservedEndpoint, Error> {
    let endpoint = arm.get_online_endpoint(ep_ref).await.map_err(Error::arm("get online endpoint"))?;
    let mut observed = ObservedEndpoint { endpoint, deployments: BTreeMap::new() };
    let Some(ep) = &observed.endpoint else {
        return Ok(observed);
    };
    let mut names: BTreeSet<String> = desired.deployments.iter().map(|d| d.name.clone()).collect();
    names
        .extend(previous.map(|s| s.deployments.iter().map(|d| d.name.clone()).collect::<Vec<_>>()).unwrap_or_default());
    names.extend(ep.properties.traffic.iter().flat_map(|t| t.keys().cloned()));
    for name in names {
        // A name that is not a valid deployment name (a hand-edited status) is skipped, never sent.
        let Ok(dep_ref) = deployment_ref(ep_ref, &name) else { continue };
        if let Some(d) = arm.get_online_deployment(&dep_ref).await.map_err(Error::arm("get online deployment"))? {
            observed.deployments.insert(name, d);
        }
    }
    Ok(observed)
}

/// Executes the plan's writes (started, not awaited).
#[instrument(skip_all, fields(endpoint = %ep_ref.id()))]
async fn apply(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    arm: &ArmClient,
    ep_ref: &OnlineEndpointRef,
    actions: &[Action],
) -> Result<(), Error> {
    for action in actions {
        match action {
            Action::CreateEndpoint(body) => {
                arm.begin_create_or_update_online_endpoint(ep_ref, body)
                    .await
                    .map_err(Error::arm("create online endpoint"))?;
                info!("creating online endpoint");
                ctx.publish(
                    ep,
                    EventType::Normal,
                    events::CREATED,
                    format!("Creating online endpoint {}", ep_ref.id()),
                )
                .await;
            }
            Action::UpdateEndpoint { body, traffic_changed } => {
                arm.begin_create_or_update_online_endpoint(ep_ref, body)
                    .await
                    .map_err(Error::arm("update online endpoint"))?;
                let traffic = body.properties.traffic.clone().unwrap_or_default();
                info!(?traffic, "updating online endpoint");
                if *traffic_changed {
                    let split = traffic.iter().map(|(k, v)| format!("{k}={v}%")).collect::<Vec<_>>().join(", ");
                    ctx.publish(ep, EventType::Normal, events::TRAFFIC_UPDATED, format!("Traffic set to {{{split}}}"))
                        .await;
                } else {
                    ctx.publish(ep, EventType::Normal, events::UPDATED, "Updated the endpoint's properties".into())
                        .await;
                }
            }
            Action::PutDeployment { name, body, create } => {
                let dep_ref = deployment_ref(ep_ref, name)?;
                arm.begin_create_or_update_online_deployment(&dep_ref, body)
                    .await
                    .map_err(Error::arm("create or update online deployment"))?;
                info!(deployment = %name, create, "putting online deployment");
                let verb = if *create { "Creating" } else { "Updating" };
                ctx.publish(ep, EventType::Normal, events::DEPLOYMENT_UPDATED, format!("{verb} deployment {name}"))
                    .await;
            }
            Action::DeleteDeployment { name } => {
                let dep_ref = deployment_ref(ep_ref, name)?;
                arm.begin_delete_online_deployment(&dep_ref).await.map_err(Error::arm("delete online deployment"))?;
                info!(deployment = %name, "deleting online deployment");
                ctx.publish(ep, EventType::Normal, events::DEPLOYMENT_DELETED, format!("Deleting deployment {name}"))
                    .await;
            }
        }
    }
    Ok(())
}

fn state_name(p: Option<&ProvisioningState>) -> Option<String> {
    p.and_then(|p| serde_json::to_value(p).ok()).and_then(|v| v.as_str().map(str::to_owned))
}

/// Copies what Azure reports into `status`.
fn report_observed(
    status: &mut MlOnlineEndpointStatus,
    ep_ref: &OnlineEndpointRef,
    observed: &ObservedEndpoint,
    owner: &str,
) {
    let Some(ep) = &observed.endpoint else {
        status.resource_id = None;
        status.scoring_uri = None;
        status.swagger_uri = None;
        status.provisioning_state = None;
        status.traffic.clear();
        status.deployments.clear();
        return;
    };
    status.resource_id = Some(ep.id.clone().unwrap_or_else(|| ep_ref.id()));
    status.scoring_uri = ep.properties.scoring_uri.clone();
    status.swagger_uri = ep.properties.swagger_uri.clone();
    status.provisioning_state = state_name(ep.properties.provisioning_state.as_ref());
    status.traffic = ep.properties.traffic.clone().unwrap_or_default();
    status.deployments = observed
        .deployments
        .iter()
        // Only the deployments this resource manages (its owner tag); others in the endpoint are not reported.
        .filter(|(_, d)| d.tags.as_ref().and_then(crate::api::v1alpha1::owner_tag_value).is_some_and(|v| v == owner))
        .map(|(name, d)| DeploymentStatus {
            name: name.clone(),
            provisioning_state: state_name(d.properties.provisioning_state.as_ref()),
            model: d.properties.model.clone(),
            instance_count: d.sku.as_ref().and_then(|s| s.capacity),
        })
        .collect();
}

fn deployments_condition(status: &mut MlOnlineEndpointStatus, plan: &Plan, generation: Option<i64>, now: &Time) {
    let (ok, reason, message) = if plan.converged() {
        let n = status.deployments.len();
        (true, reasons::DEPLOYMENTS_READY, format!("{n} deployment(s) ready; traffic as declared"))
    } else if let Some((reason, message)) = &plan.stall {
        (false, *reason, message.clone())
    } else {
        (false, reasons::DEPLOYMENTS_PENDING, plan.waiting.join("; "))
    };
    set_condition(&mut status.conditions, conditions::DEPLOYMENTS_READY, ok, reason, &message, generation, now);
}

/// One reconcile of one endpoint.
#[instrument(skip_all, fields(object = %format!("{}/{}", ep.namespace().unwrap_or_default(), ep.name_any()), generation = ep.metadata.generation))]
pub async fn reconcile(ep: Arc<MlOnlineEndpoint>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let deleting = ep.metadata.deletion_timestamp.is_some();
    let has_finalizer = ep.finalizers().iter().any(|f| f == ENDPOINT_FINALIZER);
    match (deleting, has_finalizer) {
        (true, false) => {
            ctx.forget(&ep);
            Ok(Requeue::await_change())
        }
        (false, false) => {
            set_finalizer(&ctx.client, &*ep, ENDPOINT_FINALIZER, true).await?;
            Ok(Requeue::await_change())
        }
        (true, true) => reconcile_cleanup(&ep, &ctx).await,
        (false, true) => reconcile_apply(&ep, &ctx).await,
    }
}

/// The owner reference an endpoint carries to its workspace: deleting the workspace deletes its endpoints, and
/// with foreground deletion it waits for them.
pub fn workspace_owner_reference(ws: &MlWorkspace) -> Option<OwnerReference> {
    let mut reference = ws.controller_owner_ref(&())?;
    reference.controller = Some(false);
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

async fn ensure_owner_reference(ctx: &Context, ep: &MlOnlineEndpoint, ws: &MlWorkspace) -> Result<(), Error> {
    ensure_workspace_owner(&ctx.client, ep, ws).await
}

/// Gives `obj` (a namespaced resource of the workspace: an endpoint, a compute) the owner reference to its
/// workspace ([`workspace_owner_reference`]) unless it has it; one patch, guarded by the resource version.
pub(crate) async fn ensure_workspace_owner<K>(client: &Client, obj: &K, ws: &MlWorkspace) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let Some(reference) = workspace_owner_reference(ws) else { return Ok(()) };
    let refs = obj.owner_references();
    if refs.iter().any(|r| r.uid == reference.uid) {
        return Ok(());
    }
    let mut next: Vec<OwnerReference> = refs.iter().filter(|r| r.kind != "MlWorkspace").cloned().collect();
    next.push(reference);
    let patch = json!({ "metadata": { "ownerReferences": next, "resourceVersion": obj.resource_version() } });
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("set owner reference"))?;
    Ok(())
}

async fn get_workspace(ctx: &Context, ep: &MlOnlineEndpoint) -> Result<Option<MlWorkspace>, Error> {
    let api: Api<MlWorkspace> = Api::namespaced(ctx.client.clone(), &ep.namespace().unwrap_or_default());
    api.get_opt(&ep.spec.workspace_ref.name).await.map_err(Error::kube("read workspace"))
}

/// Ends a reconcile: status (with `outcome`), a Warning event for a new stall, the requeue.
async fn finish(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    mut status: MlOnlineEndpointStatus,
    outcome: Phase,
    requeue: Duration,
) -> Result<Requeue, Error> {
    let now = Time(jiff::Timestamp::now());
    set_kstatus(&mut status, &outcome, ep.metadata.generation, &now);
    let written = ctx.write_status(ep, status).await?;
    if let (true, Phase::Stalled { reason, message }) = (written, &outcome) {
        ctx.publish(ep, EventType::Warning, reason, message.clone()).await;
    }
    if !matches!(outcome, Phase::Transient { .. }) {
        ctx.reset_failures(ep);
    }
    Ok(Requeue::requeue(requeue))
}

/// Ends a reconcile that failed: stall or retry, as the workspace controller's error policy decides.
async fn fail(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    status: MlOnlineEndpointStatus,
    err: Error,
) -> Result<Requeue, Error> {
    let chain = scrub(&error_chain(&err));
    warn!(error = %chain, request_id = err.request_id().unwrap_or("-"), "endpoint reconcile failed");
    ctx.publish(ep, EventType::Warning, events::RECONCILE_FAILED, chain.clone()).await;
    match classify(&err) {
        Disposition::Stall { reason, message } => {
            finish(ctx, ep, status, Phase::Stalled { reason, message }, ctx.config.stalled_requeue).await
        }
        Disposition::Retry | Disposition::RetryAfter(_) => {
            let mut status = status;
            let now = Time(jiff::Timestamp::now());
            set_kstatus(&mut status, &Phase::Transient { message: chain }, ep.metadata.generation, &now);
            if let Err(status_err) = ctx.write_status(ep, status).await {
                warn!(error = %status_err, "cannot report the failure in status");
            }
            Err(err)
        }
    }
}

async fn reconcile_apply(ep: &MlOnlineEndpoint, ctx: &Context) -> Result<Requeue, Error> {
    let previous = ctx.current_status(ep);
    let mut status = previous.clone().unwrap_or_default();
    let generation = ep.metadata.generation;
    let now = Time(jiff::Timestamp::now());
    let ws = get_workspace(ctx, ep).await?;
    let Some(ws) = ws.filter(workspace_ready) else {
        let message = format!(
            "waiting for MlWorkspace {} to be Ready; nothing is sent to Azure before",
            ep.spec.workspace_ref.name
        );
        let outcome = Phase::Progressing { reason: reasons::WORKSPACE_NOT_READY, message };
        // The workspace watch wakes the endpoint when the workspace changes.
        return finish(ctx, ep, status, outcome, ctx.config.resync_period).await;
    };
    ensure_owner_reference(ctx, ep, &ws).await?;
    let (ep_ref, desired) = match desired(ep, &ws) {
        Ok(d) => d,
        Err(message) => {
            let outcome = Phase::Stalled { reason: reasons::INVALID_SPEC, message };
            return finish(ctx, ep, status, outcome, ctx.config.stalled_requeue).await;
        }
    };
    // The binding must allow the workspace's place and the endpoint's own access entries.
    let access_entries: Vec<_> = ep.spec.access.iter().map(|a| a.as_resource_entry()).collect();
    let probe = access::policy_probe(&ws, &access_entries);
    // Assets of other workspaces named by id are read by Azure on the binding's credential: they must be in groups
    // the binding allows.
    let assets = crate::policy::resources::endpoint_asset_uses(&ep.spec);
    let arm = match crate::controller::resolve_client_with(&ctx.client, &ctx.credentials, &ctx.config, &probe, &assets)
        .await
    {
        Ok(WorkspaceClient::Permitted(arm)) => arm,
        Ok(WorkspaceClient::Denied(message)) => {
            let outcome = Phase::Stalled { reason: reasons::NOT_PERMITTED, message: access::endpoint_denial(&message) };
            return finish(ctx, ep, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return fail(ctx, ep, status, e).await,
    };
    let observed = match observe(&arm, &ep_ref, &desired, previous.as_ref()).await {
        Ok(o) => o,
        Err(e) => return fail(ctx, ep, status, e).await,
    };
    let plan = plan::plan(&desired, &observed);
    report_observed(&mut status, &ep_ref, &observed, &desired.owner);
    deployments_condition(&mut status, &plan, generation, &now);
    debug!(actions = plan.actions.len(), waiting = ?plan.waiting, "planned");
    if annotation_true(ep, ANNOTATION_PAUSED) {
        // Observe and report only: no write to Azure (nor key regeneration, nor role assignments).
        let in_sync = plan.converged();
        let message = if in_sync {
            "paused by annotation azml.dev/paused; Azure matches the spec".to_owned()
        } else {
            format!("paused by annotation azml.dev/paused; withheld: {}", plan.waiting.join("; "))
        };
        return finish(ctx, ep, status, Phase::Paused { in_sync, message }, ctx.config.resync_period).await;
    }
    if let Err(e) = apply(ctx, ep, &arm, &ep_ref, &plan.actions).await {
        return fail(ctx, ep, status, e).await;
    }
    if let Some((reason, message)) = plan.stall.clone() {
        return finish(ctx, ep, status, Phase::Stalled { reason, message }, ctx.config.stalled_requeue).await;
    }
    if !plan.converged() {
        let reason = if observed.endpoint.is_none() { reasons::CREATING } else { reasons::DEPLOYMENTS_PENDING };
        let outcome = Phase::Progressing { reason, message: plan.waiting.join("; ") };
        return finish(ctx, ep, status, outcome, ctx.config.lro_poll_min).await;
    }
    // Converged: the keys.
    let scoring_uri = status.scoring_uri.clone();
    let keys = keys::reconcile_keys(ctx, ep, &arm, &ep_ref, scoring_uri.as_deref(), previous.as_ref()).await;
    let mut outcome = match keys {
        Ok(result) => {
            result.apply(&mut status, generation, &now);
            // A regeneration in flight (or one that just failed): record it at once, look again soon.
            if let Some(requeue) = result.requeue {
                let outcome = result.outcome.unwrap_or(Phase::Ready);
                return finish(ctx, ep, status, outcome, requeue).await;
            }
            result.outcome
        }
        Err(e) => {
            // A regeneration recorded in flight stays recorded: the next reconcile tells from Azure's keys whether
            // it happened, instead of sending it again.
            status.keys = ctx.current_status(ep).and_then(|s| s.keys);
            return fail(ctx, ep, status, e).await;
        }
    };
    // Then the role assignments at the endpoint.
    let mut requeue = ctx.config.resync_period;
    if !access_entries.is_empty() || !status.access.is_empty() {
        let endpoint = match ResourceId::parse(&ep_ref.id()) {
            Ok(id) => id,
            Err(e) => return fail(ctx, ep, status, Error::BadPendingOperation(e.to_string())).await,
        };
        let previous_access = status.access.clone();
        match access::reconcile_access(ctx, ep, &arm, &endpoint, &access_entries, &previous_access).await {
            Ok(result) => {
                let (ok, reason, message) = result.condition;
                status.access = result.entries;
                set_condition(
                    &mut status.conditions,
                    conditions::ACCESS_GRANTED,
                    ok,
                    reason,
                    &message,
                    generation,
                    &now,
                );
                if !ok && outcome.is_none() {
                    outcome = Some(if result.pending {
                        requeue = ctx.config.error_backoff_base;
                        Phase::Progressing { reason, message }
                    } else {
                        Phase::Stalled { reason, message }
                    });
                }
            }
            Err(e) => return fail(ctx, ep, status, e).await,
        }
    } else {
        status.conditions.retain(|c| c.type_ != conditions::ACCESS_GRANTED);
    }
    let outcome = outcome.unwrap_or(Phase::Ready);
    if let Phase::Stalled { .. } = outcome {
        requeue = ctx.config.stalled_requeue;
    }
    finish(ctx, ep, status, outcome, requeue).await
}

async fn remove_finalizer(ep: &MlOnlineEndpoint, ctx: &Context) -> Result<Requeue, Error> {
    keys::delete_owned_secret(ctx, ep).await?;
    set_finalizer(&ctx.client, ep, ENDPOINT_FINALIZER, false).await?;
    ctx.forget(ep);
    Ok(Requeue::await_change())
}

async fn reconcile_cleanup(ep: &MlOnlineEndpoint, ctx: &Context) -> Result<Requeue, Error> {
    let status = ctx.current_status(ep).unwrap_or_default();
    if ep.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: leaving the endpoint in Azure; removing the finalizer");
        return remove_finalizer(ep, ctx).await;
    }
    if annotation_true(ep, ANNOTATION_PAUSED) {
        // Paused means no writes to Azure, deletion included.
        let note = "Paused: the endpoint is left in Azure although deletionPolicy is Delete".to_owned();
        ctx.publish(ep, EventType::Normal, reasons::PAUSED, note).await;
        return remove_finalizer(ep, ctx).await;
    }
    let Some(ws) = get_workspace(ctx, ep).await? else {
        let note = format!(
            "MlWorkspace {} is gone: the endpoint cannot be reached and is left in Azure although deletionPolicy is Delete",
            ep.spec.workspace_ref.name
        );
        ctx.publish(ep, EventType::Warning, reasons::WORKSPACE_NOT_READY, note).await;
        return remove_finalizer(ep, ctx).await;
    };
    let (ep_ref, desired) = match desired(ep, &ws) {
        Ok(d) => d,
        Err(message) => {
            let outcome = Phase::Stalled { reason: reasons::INVALID_SPEC, message };
            return finish(ctx, ep, status, outcome, ctx.config.stalled_requeue).await;
        }
    };
    // Deleting needs the client only: the endpoint's access entries go with the endpoint.
    let probe = access::policy_probe(&ws, &[]);
    let arm = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &probe).await {
        Ok(WorkspaceClient::Permitted(arm)) => arm,
        Ok(WorkspaceClient::Denied(_)) if status.resource_id.is_none() => {
            info!("not permitted and never created in Azure; removing the finalizer");
            return remove_finalizer(ep, ctx).await;
        }
        Ok(WorkspaceClient::Denied(message)) => {
            let outcome = Phase::Stalled { reason: reasons::NOT_PERMITTED, message };
            return finish(ctx, ep, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return fail(ctx, ep, status, e).await,
    };
    let found = match arm.get_online_endpoint(&ep_ref).await {
        Ok(f) => f,
        Err(e) => return fail(ctx, ep, status, Error::arm("get online endpoint")(e)).await,
    };
    let Some(found) = found else {
        info!("online endpoint gone from Azure; removing the finalizer");
        return remove_finalizer(ep, ctx).await;
    };
    if !owned_by(&found, &desired.owner) {
        info!("the endpoint in Azure is not ours; leaving it");
        return remove_finalizer(ep, ctx).await;
    }
    if found.properties.provisioning_state != Some(ProvisioningState::Deleting) {
        if let Err(e) = arm.begin_delete_online_endpoint(&ep_ref).await {
            return fail(ctx, ep, status, Error::arm("delete online endpoint")(e)).await;
        }
        info!("deleting online endpoint");
        ctx.publish(ep, EventType::Normal, events::DELETED, format!("Deleting online endpoint {}", ep_ref.id())).await;
    }
    let outcome = Phase::Progressing { reason: reasons::DELETING, message: "deleting the endpoint in Azure".into() };
    finish(ctx, ep, status, outcome, ctx.config.lro_poll_min).await
}

fn owned_by(ep: &OnlineEndpoint, owner: &str) -> bool {
    ep.tags.as_ref().and_then(crate::api::v1alpha1::owner_tag_value).is_some_and(|v| v == owner)
}

/// Requeue after a failed reconcile: backoff with jitter, Retry-After when throttled.
pub fn error_policy(ep: Arc<MlOnlineEndpoint>, err: &Error, ctx: Arc<Context>) -> Requeue {
    requeue_after_error(err, &ctx.config, || ctx.bump_failures(&ep))
}

/// Runs the endpoint controller until `shutdown` is cancelled (started by [`crate::controller::run`], so it shares
/// leader election, shutdown and metrics with the workspace controller).
pub async fn run(client: Client, config: ControllerConfig, shutdown: CancellationToken) {
    let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    info!(namespaces = ?config.watch_namespaces, "starting the MlOnlineEndpoint controller");
    let ctx = Arc::new(Context::new(client.clone(), config));
    let runs = namespaces.into_iter().map(|ns| run_one(ns, client.clone(), ctx.clone(), shutdown.clone()));
    futures::future::join_all(runs).await;
    info!("MlOnlineEndpoint controller stopped");
}

async fn run_one(namespace: Option<String>, client: Client, ctx: Arc<Context>, shutdown: CancellationToken) {
    let (endpoints, workspaces): (Api<MlOnlineEndpoint>, Api<MlWorkspace>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (reader, writer) = reflector::store();
    let controller = Controller::for_stream(watch_changes(endpoints, writer), reader);
    let store = controller.store();
    controller
        .with_config(RuntimeConfig::default().concurrency(ctx.config.concurrency))
        .watches(workspaces, watcher::Config::default(), move |ws: MlWorkspace| {
            // A workspace change (Ready, deletion) re-evaluates its endpoints.
            let ns = ws.namespace();
            store
                .state()
                .into_iter()
                .filter(|ep| ep.namespace() == ns && ep.spec.workspace_ref.name == ws.name_any())
                .map(|ep| ObjectRef::from_obj(&*ep))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            |ep, ctx| {
                let (metrics, object) = (ctx.config.metrics.clone(), ObjectRef::from_obj(&*ep));
                async move { crate::metrics::instrument_reconcile(&metrics, object, reconcile(ep, ctx)).await }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                Err(err) => debug!(error = %scrub(&error_chain(&err)), "endpoint reconcile error"),
            }
        })
        .await;
}

/// Deletes the MlOnlineEndpoints of `ws` (same namespace, `spec.workspaceRef.name`) and returns how many still
/// exist (their own cleanup runs first). Used by the workspace's cleanup with deletionPolicy Delete.
pub async fn delete_endpoints_of(client: &Client, ws: &MlWorkspace) -> Result<usize, Error> {
    let api: Api<MlOnlineEndpoint> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    let list = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        // No MlOnlineEndpoint CRD installed: no endpoints.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(0),
        Err(e) => return Err(Error::kube("list online endpoints")(e)),
    };
    let mine: Vec<MlOnlineEndpoint> =
        list.into_iter().filter(|ep| ep.spec.workspace_ref.name == ws.name_any()).collect();
    for ep in mine.iter().filter(|ep| ep.metadata.deletion_timestamp.is_none()) {
        info!(endpoint = %ep.name_any(), "deleting online endpoint of the deleted workspace");
        match api.delete(&ep.name_any(), &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::kube("delete online endpoint")(e)),
        }
    }
    Ok(mine.len())
}

/// Whether the endpoint uses keys that can be exported.
pub fn exports_keys(ep: &MlOnlineEndpoint) -> bool {
    ep.spec.auth_mode == EndpointAuthMode::Key && ep.spec.keys_secret.is_some()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn status_with(traffic: &[(&str, i64)]) -> MlOnlineEndpointStatus {
        MlOnlineEndpointStatus {
            traffic: traffic.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..Default::default()
        }
    }

    fn workspace() -> MlWorkspace {
        let spec = serde_json::from_value(json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333",
            "resourceGroup": "rg-risk",
            "location": "westeurope",
            "storageAccount": {"name": "sa1"},
            "keyVault": {"name": "kv1"},
        }))
        .expect("workspace spec");
        let mut ws = MlWorkspace::new("fraud", spec);
        ws.metadata.namespace = Some("team-a".into());
        ws.metadata.uid = Some("ws-uid".into());
        ws
    }

    fn endpoint(spec: Value) -> MlOnlineEndpoint {
        let mut ep: MlOnlineEndpoint = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlOnlineEndpoint",
            "metadata": {"name": "scoring", "namespace": "team-a", "uid": "ep-uid"},
            "spec": spec,
        }))
        .expect("endpoint");
        ep.metadata.generation = Some(1);
        ep
    }

    #[test]
    fn the_spec_resolves_against_its_workspace() {
        let ep = endpoint(json!({
            "workspaceRef": {"name": "fraud"},
            "deployments": [{"name": "blue", "model": "azureml:m:1", "instanceType": "Standard_DS3_v2"}],
            "traffic": {"blue": 100},
        }));
        let (ep_ref, desired) = desired(&ep, &workspace()).expect("valid");
        assert_eq!(
            ep_ref.id(),
            "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-risk/providers/Microsoft.MachineLearningServices/workspaces/fraud/onlineEndpoints/scoring"
        );
        assert_eq!(desired.location, "westeurope");
        assert_eq!(desired.owner, "team-a/scoring/ep-uid");
        assert_eq!(desired.deployments[0].instance_count, 1, "instanceCount defaults to 1");
        let renamed = endpoint(json!({"workspaceRef": {"name": "fraud"}, "azureName": "other-name"}));
        assert!(desired_ok_name(&renamed).ends_with("/onlineEndpoints/other-name"));
        let bad = endpoint(json!({"workspaceRef": {"name": "fraud"}, "azureName": "bad/name"}));
        assert!(super::desired(&bad, &workspace()).is_err(), "a name that would change the ARM path is refused");
    }

    fn desired_ok_name(ep: &MlOnlineEndpoint) -> String {
        super::desired(ep, &workspace()).expect("valid").0.id()
    }

    #[test]
    fn the_owner_reference_to_the_workspace_blocks_its_deletion_but_does_not_control() {
        let r = workspace_owner_reference(&workspace()).expect("reference");
        assert_eq!((r.kind.as_str(), r.name.as_str(), r.uid.as_str()), ("MlWorkspace", "fraud", "ws-uid"));
        assert_eq!((r.controller, r.block_owner_deletion), (Some(false), Some(true)));
    }

    #[test]
    fn the_workspace_is_ready_only_with_ready_true_and_a_resource_id() {
        let mut ws = workspace();
        assert!(!workspace_ready(&ws));
        let now = Time(jiff::Timestamp::now());
        let mut status = crate::api::v1alpha1::MlWorkspaceStatus::default();
        set_condition(&mut status.conditions, conditions::READY, true, reasons::RECONCILED, "", Some(1), &now);
        ws.status = Some(status.clone());
        assert!(!workspace_ready(&ws), "no resource id yet");
        status.resource_id = Some("/subscriptions/x".into());
        ws.status = Some(status);
        assert!(workspace_ready(&ws));
        ws.metadata.deletion_timestamp = Some(now);
        assert!(!workspace_ready(&ws), "a workspace being deleted is not ready");
    }

    #[test]
    fn merge_patch_nulls_removed_traffic_entries() {
        let old = status_with(&[("blue", 90), ("green", 10)]);
        let new = status_with(&[("green", 100)]);
        let patch = status::merge_patch(Some(&old), &new);
        assert_eq!(patch["status"]["traffic"], json!({"blue": null, "green": 100}));
    }

    #[test]
    fn timestamps_alone_do_not_change_the_status() {
        let now = Time(jiff::Timestamp::now());
        let later = Time(jiff::Timestamp::from_second(2_000_000_000).expect("ts"));
        let mut a = MlOnlineEndpointStatus::default();
        set_kstatus(&mut a, &Phase::Ready, Some(1), &now);
        let mut b = a.clone();
        b.last_sync_time = Some(later);
        assert!(!status::changed(Some(&a), &b));
        set_kstatus(&mut b, &Phase::Progressing { reason: reasons::CREATING, message: "x".into() }, Some(1), &now);
        assert!(status::changed(Some(&a), &b));
    }
}
