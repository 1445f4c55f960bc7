//! The MlCompute controller: observe → plan ([`plan::plan`], pure) → apply → report.
//!
//! - A compute waits for its MlWorkspace (same namespace) to be Ready before any Azure call (reason
//!   `WorkspaceNotReady`), carries an owner reference to it, and uses the SubscriptionBinding and credential that
//!   allow the workspace; that binding must also allow the compute ([`policy::check_compute`]: VM size, node cap,
//!   subnet and identity ids), else `NotPermitted` with no Azure call.
//! - Before a create, the subscription's ML VM sizes and usages in the location are read; a compute the quota
//!   cannot hold stalls with `QuotaExceeded` and is not created.
//! - Writes are started, not awaited: the next reconcile (after `lro_poll_min`) reads the provisioning state, so a
//!   restarted operator simply looks again.
//! - Steady state: one GET of the compute per resync, no writes; status is patched only when something other than
//!   a timestamp changed.
//! - `azml.dev/paused: "true"` observes and reports only; `azml.dev/compute-action` starts, stops or restarts an
//!   instance once per new value.
//! - Deletion runs behind the `azml.dev/cleanup` finalizer: deletionPolicy Delete deletes the compute in Azure.

pub mod plan;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as RuntimeConfig, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use self::plan::{
    Action, ActionRequest, DesiredCluster, DesiredCompute, DesiredInstance, DesiredKind, ObservedCompute, Plan,
    QuotaView,
};
use crate::api::conditions::{self, events, reasons};
use crate::api::v1alpha1::{
    ANNOTATION_COMPUTE_ACTION, ANNOTATION_PAUSED, DeletionPolicy, FINALIZER, MlCompute, MlComputeStatus, MlWorkspace,
};
use crate::azure::ArmClient;
use crate::azure::computes::{ComputeName, ComputeRef, Location};
use crate::azure::ids::SubscriptionId;
use crate::controller::credentials::CredentialCache;
use crate::controller::error::{Disposition, Error, classify, error_chain, scrub};
use crate::controller::plan::annotation_true;
use crate::controller::status::{self, Phase, TimestampedStatus, set_condition};
use crate::controller::{
    CONTROLLER_NAME, ControllerConfig, ObjectMemory, bindings_and_labels, publish_event, requeue_after_error,
    set_finalizer, spec_request, watch_changes,
};
use crate::endpoints::{ensure_workspace_owner, workspace_ready};
use crate::events::Recorder;

pub use crate::api::conditions::USABLE;

impl TimestampedStatus for MlComputeStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn last_sync_time_mut(&mut self) -> &mut Option<Time> {
        &mut self.last_sync_time
    }
}

/// Shared state of the compute reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings (the workspace controller's).
    pub config: ControllerConfig,
    recorder: Recorder,
    credentials: CredentialCache,
    memory: ObjectMemory<MlComputeStatus>,
}

impl Context {
    /// A context for `client` with `config`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: CONTROLLER_NAME.into(), instance: None });
        Context { client, config, recorder, credentials: CredentialCache::default(), memory: ObjectMemory::default() }
    }

    async fn publish(&self, mc: &MlCompute, type_: EventType, reason: &str, note: String) {
        publish_event(&self.recorder, mc, type_, reason, note).await;
    }

    fn current_status(&self, mc: &MlCompute) -> Option<MlComputeStatus> {
        self.memory.status(mc.uid(), mc.status.as_ref())
    }

    fn forget(&self, mc: &MlCompute) {
        if let Some(uid) = mc.uid() {
            self.memory.forget(&uid);
        }
    }

    /// Writes `next` when it differs from the current status in more than timestamps.
    async fn write_status(&self, mc: &MlCompute, mut next: MlComputeStatus) -> Result<bool, Error> {
        let previous = self.current_status(mc);
        if !status::changed(previous.as_ref(), &next) {
            debug!("status unchanged");
            return Ok(false);
        }
        next.last_sync_time = Some(Time(jiff::Timestamp::now()));
        let api: Api<MlCompute> = Api::namespaced(self.client.clone(), &mc.namespace().unwrap_or_default());
        let patch = status::merge_patch(previous.as_ref(), &next);
        api.patch_status(&mc.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("patch compute status"))?;
        self.memory.wrote(mc.uid(), next);
        Ok(true)
    }
}

/// Sets Ready, Reconciling and Stalled from `outcome`.
pub fn set_kstatus(status: &mut MlComputeStatus, outcome: &Phase, generation: Option<i64>, now: &Time) {
    let conds = &mut status.conditions;
    let (ready, reconciling, stalled, reason, message) = match outcome {
        Phase::Ready => (true, false, false, reasons::RECONCILED, "the compute matches the spec".to_owned()),
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

/// The spec resolved against its workspace (and the binding's tenant, for an instance's user). Fails on values
/// the schema should have rejected.
pub fn desired(mc: &MlCompute, ws: &MlWorkspace, tenant_id: &str) -> Result<(ComputeRef, DesiredCompute), String> {
    let ws_desired = crate::controller::plan::Desired::from_resource(ws).map_err(|e| format!("workspace: {e}"))?;
    let name = mc.name_any();
    let compute_name = ComputeName::new(mc.spec.azure_name_or(&name)).map_err(|e| format!("spec.azureName: {e}"))?;
    let duration = |field: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        v.as_deref()
            .map(|s| plan::parse_duration(s).ok_or_else(|| format!("{field}: {s:?} is not a duration like 30m")))
            .transpose()
    };
    let kind = match (&mc.spec.aml_compute, &mc.spec.compute_instance) {
        (Some(c), None) => DesiredKind::Cluster(DesiredCluster {
            vm_size: c.vm_size.clone(),
            vm_priority: c.vm_priority,
            min_nodes: i64::from(c.scale.min_nodes),
            max_nodes: i64::from(c.scale.max_nodes),
            idle_before_scale_down: duration(
                "spec.amlCompute.scale.idleBeforeScaleDown",
                &c.scale.idle_before_scale_down,
            )?,
            remote_login: c.remote_login,
            subnet: c.subnet.as_ref().map(|s| s.id.clone()),
            identity: c.identity.clone(),
        }),
        (None, Some(i)) => {
            let idle = duration("spec.computeInstance.idleShutdownAfter", &i.idle_shutdown_after)?;
            if let Some(secs) = idle
                && !(15 * 60..=3 * 24 * 3600).contains(&secs)
            {
                return Err("spec.computeInstance.idleShutdownAfter must be between 15m and 72h (Azure's range)".into());
            }
            DesiredKind::Instance(DesiredInstance {
                vm_size: i.vm_size.clone(),
                assigned_to: i.assigned_to.to_ascii_lowercase(),
                tenant_id: tenant_id.to_owned(),
                idle_shutdown_after: idle,
                schedules: i.schedules.clone(),
                setup_script: i.setup_script.clone(),
                subnet: i.subnet.as_ref().map(|s| s.id.clone()),
            })
        }
        _ => return Err("exactly one of spec.amlCompute or spec.computeInstance must be set".into()),
    };
    let owner = format!("{}/{}/{}", mc.namespace().unwrap_or_default(), name, mc.uid().unwrap_or_default());
    let desired = DesiredCompute { location: ws.spec.location.clone(), owner, kind };
    Ok((ComputeRef::new(ws_desired.workspace, compute_name), desired))
}

/// The ARM client a compute may use (with the binding's tenant), or why it may not use any.
pub enum ComputeClient {
    /// The binding of the workspace allows the compute.
    Permitted {
        /// Its client.
        arm: ArmClient,
        /// The binding's tenant.
        tenant_id: String,
    },
    /// Not allowed: the message names the missing permission.
    Denied(String),
}

/// Finds the binding that allows the compute's workspace, checks the compute against it (unless `for_delete`:
/// deleting needs only the workspace's permission) and returns its client. No Azure call is made.
pub async fn resolve_client(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
    mc: &MlCompute,
    for_delete: bool,
) -> Result<ComputeClient, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let (bindings, labels) = bindings_and_labels(client, &namespace, &[&ws.spec.subscription_id]).await?;
    let mut probe = ws.clone();
    probe.spec.access.clear();
    let request = spec_request(&probe, &namespace, labels.as_ref());
    let binding = match crate::policy::authorize(&bindings, &request) {
        Ok(b) => b,
        Err(denial) => return Ok(ComputeClient::Denied(denial.to_string())),
    };
    if let Err(foreign) = crate::policy::check_dependencies(binding, &ws.spec) {
        return Ok(ComputeClient::Denied(foreign.to_string()));
    }
    if !for_delete && let Err(denial) = policy::check_compute(binding, &mc.spec) {
        return Ok(ComputeClient::Denied(denial.to_string()));
    }
    let arm = credentials.client_for(client, binding, &config.credential_sources(), &config.arm).await?;
    Ok(ComputeClient::Permitted { arm, tenant_id: binding.spec.tenant_id.clone() })
}

/// Reads the compute; when it does not exist, the VM sizes and usages the quota check needs.
#[instrument(skip_all, fields(compute = %c_ref.id()))]
async fn observe(arm: &ArmClient, c_ref: &ComputeRef, desired: &DesiredCompute) -> Result<ObservedCompute, Error> {
    let compute = arm.get_compute(c_ref).await.map_err(Error::arm("get compute"))?;
    if compute.is_some() {
        return Ok(ObservedCompute { compute, quota: None });
    }
    let location = Location::new(&desired.location).map_err(|e| Error::BadPendingOperation(e.to_string()))?;
    let sub: SubscriptionId = c_ref.workspace.subscription();
    let vm_sizes = arm.list_ml_vm_sizes(sub, &location).await.map_err(Error::arm("list ML VM sizes"))?;
    let usages = arm.list_ml_usages(sub, &location).await.map_err(Error::arm("list ML usages"))?;
    Ok(ObservedCompute { compute: None, quota: Some(QuotaView { vm_sizes, usages }) })
}

/// Executes the plan's writes (started, not awaited).
#[instrument(skip_all, fields(compute = %c_ref.id()))]
async fn apply(
    ctx: &Context,
    mc: &MlCompute,
    arm: &ArmClient,
    c_ref: &ComputeRef,
    actions: &[Action],
) -> Result<(), Error> {
    let drift = mc.status.as_ref().and_then(|s| s.observed_generation) == mc.metadata.generation;
    let updated = if drift { events::DRIFT_CORRECTED } else { events::UPDATED };
    for action in actions {
        match action {
            Action::Create { body } => {
                arm.begin_create_or_update_compute(c_ref, body).await.map_err(Error::arm("create compute"))?;
                info!("creating compute");
                let note = format!("Creating {} {}", body.properties.compute_type, c_ref.id());
                ctx.publish(mc, EventType::Normal, events::CREATED, note).await;
            }
            Action::UpdateScale { body, change } => {
                arm.begin_update_compute(c_ref, body).await.map_err(Error::arm("update compute scale settings"))?;
                info!(%change, "updating scale settings");
                ctx.publish(mc, EventType::Normal, updated, format!("Scale settings updated: {change}")).await;
            }
            Action::UpdateIdleShutdown { body } => {
                arm.update_idle_shutdown(c_ref, body).await.map_err(Error::arm("update idle shutdown"))?;
                let note = format!("Idle shutdown set to {}", body.idle_time_before_shutdown);
                ctx.publish(mc, EventType::Normal, updated, note).await;
            }
            Action::UpdateSchedules { body } => {
                arm.begin_create_or_update_compute(c_ref, body)
                    .await
                    .map_err(Error::arm("update compute schedules"))?;
                ctx.publish(mc, EventType::Normal, updated, "Schedules updated".into()).await;
            }
            Action::Power { action, request } => {
                arm.begin_compute_power(c_ref, *action).await.map_err(Error::arm("start, stop or restart compute"))?;
                info!(%action, %request, "instance action");
                let note = format!("Instance {action} requested (azml.dev/compute-action {request})");
                ctx.publish(mc, EventType::Normal, events::INSTANCE_ACTION, note).await;
            }
        }
    }
    Ok(())
}

/// Copies what Azure reports into `status`.
pub fn report_observed(status: &mut MlComputeStatus, c_ref: &ComputeRef, observed: &ObservedCompute, owner: &str) {
    let Some(c) = observed.compute.as_ref().filter(|c| plan::owned(c, owner)) else {
        *status = MlComputeStatus {
            observed_generation: status.observed_generation,
            conditions: std::mem::take(&mut status.conditions),
            last_action_request: status.last_action_request.take(),
            last_sync_time: status.last_sync_time.take(),
            ..Default::default()
        };
        return;
    };
    status.resource_id = Some(c.id.clone().unwrap_or_else(|| c_ref.id()));
    status.compute_type = Some(c.properties.compute_type.clone());
    status.provisioning_state = c.properties.provisioning_state.clone();
    status.errors = plan::compute_errors(c);
    if let Some(p) = c.aml() {
        status.vm_size = p.vm_size;
        status.current_node_count = Some(p.current_node_count.unwrap_or(0));
        status.target_node_count = Some(p.target_node_count.unwrap_or(0));
        status.allocation_state = p.allocation_state.clone();
        status.state = p.allocation_state;
    } else if let Some(p) = c.instance() {
        status.vm_size = p.vm_size;
        status.current_node_count = None;
        status.target_node_count = None;
        status.allocation_state = None;
        status.state = p.state;
    }
}

fn usable_condition(
    status: &mut MlComputeStatus,
    observed: &ObservedCompute,
    plan: &Plan,
    generation: Option<i64>,
    now: &Time,
) {
    let (ok, reason, message) = match (&observed.compute, &plan.stall) {
        (None, Some((reason, message))) => (false, *reason, message.clone()),
        (None, None) => (false, reasons::CREATING, "the compute does not exist yet".to_owned()),
        (Some(c), _) => match plan::usability(c) {
            Ok(message) => (true, reasons::RECONCILED, message),
            Err((reason, message)) => (false, reason, message),
        },
    };
    set_condition(&mut status.conditions, USABLE, ok, reason, &message, generation, now);
}

/// One reconcile of one compute.
#[instrument(skip_all, fields(object = %format!("{}/{}", mc.namespace().unwrap_or_default(), mc.name_any()), generation = mc.metadata.generation))]
pub async fn reconcile(mc: Arc<MlCompute>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let deleting = mc.metadata.deletion_timestamp.is_some();
    let has_finalizer = mc.finalizers().iter().any(|f| f == FINALIZER);
    match (deleting, has_finalizer) {
        (true, false) => {
            ctx.forget(&mc);
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

async fn get_workspace(client: &Client, mc: &MlCompute) -> Result<Option<MlWorkspace>, Error> {
    let api: Api<MlWorkspace> = Api::namespaced(client.clone(), &mc.namespace().unwrap_or_default());
    api.get_opt(&mc.spec.workspace_ref.name).await.map_err(Error::kube("read workspace"))
}

/// Ends a reconcile: status (with `outcome`), a Warning event for a new stall, the requeue.
async fn finish(
    ctx: &Context,
    mc: &MlCompute,
    mut status: MlComputeStatus,
    outcome: Phase,
    requeue: Duration,
) -> Result<Requeue, Error> {
    let now = Time(jiff::Timestamp::now());
    set_kstatus(&mut status, &outcome, mc.metadata.generation, &now);
    let written = ctx.write_status(mc, status).await?;
    if let (true, Phase::Stalled { reason, message }) = (written, &outcome) {
        ctx.publish(mc, EventType::Warning, reason, message.clone()).await;
    }
    if !matches!(outcome, Phase::Transient { .. }) {
        ctx.memory.reset_failures(mc.uid());
    }
    Ok(Requeue::requeue(requeue))
}

/// Ends a reconcile that failed: stall or retry, as the workspace controller's error policy decides.
async fn fail(ctx: &Context, mc: &MlCompute, status: MlComputeStatus, err: Error) -> Result<Requeue, Error> {
    let chain = scrub(&error_chain(&err));
    warn!(error = %chain, request_id = err.request_id().unwrap_or("-"), "compute reconcile failed");
    ctx.publish(mc, EventType::Warning, events::RECONCILE_FAILED, chain.clone()).await;
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

fn action_request(mc: &MlCompute, status: &MlComputeStatus) -> ActionRequest {
    ActionRequest {
        value: mc.annotations().get(ANNOTATION_COMPUTE_ACTION).cloned(),
        honoured: status.last_action_request.clone(),
    }
}

async fn reconcile_apply(mc: &MlCompute, ctx: &Context) -> Result<Requeue, Error> {
    let mut status = ctx.current_status(mc).unwrap_or_default();
    let generation = mc.metadata.generation;
    let now = Time(jiff::Timestamp::now());
    let Some(ws) = get_workspace(&ctx.client, mc).await?.filter(workspace_ready) else {
        let message = format!(
            "waiting for MlWorkspace {} to be Ready; nothing is sent to Azure before",
            mc.spec.workspace_ref.name
        );
        set_condition(&mut status.conditions, USABLE, false, reasons::WORKSPACE_NOT_READY, &message, generation, &now);
        let outcome = Phase::Progressing { reason: reasons::WORKSPACE_NOT_READY, message };
        return finish(ctx, mc, status, outcome, ctx.config.resync_period).await;
    };
    ensure_workspace_owner(&ctx.client, mc, &ws).await?;
    let (arm, tenant_id) = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &ws, mc, false).await {
        Ok(ComputeClient::Permitted { arm, tenant_id }) => (arm, tenant_id),
        Ok(ComputeClient::Denied(message)) => {
            set_condition(&mut status.conditions, USABLE, false, reasons::NOT_PERMITTED, &message, generation, &now);
            let outcome = Phase::Stalled { reason: reasons::NOT_PERMITTED, message };
            return finish(ctx, mc, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return fail(ctx, mc, status, e).await,
    };
    let (c_ref, desired) = match desired(mc, &ws, &tenant_id) {
        Ok(d) => d,
        Err(message) => {
            let outcome = Phase::Stalled { reason: reasons::INVALID_SPEC, message };
            return finish(ctx, mc, status, outcome, ctx.config.stalled_requeue).await;
        }
    };
    let observed = match observe(&arm, &c_ref, &desired).await {
        Ok(o) => o,
        Err(e) => return fail(ctx, mc, status, e).await,
    };
    let plan = plan::plan(&desired, &observed, &action_request(mc, &status));
    report_observed(&mut status, &c_ref, &observed, &desired.owner);
    usable_condition(&mut status, &observed, &plan, generation, &now);
    debug!(actions = plan.actions.len(), waiting = ?plan.waiting, "planned");
    if annotation_true(mc, ANNOTATION_PAUSED) {
        let in_sync = plan.converged();
        let message = if in_sync {
            "paused by annotation azml.dev/paused; Azure matches the spec".to_owned()
        } else {
            let mut withheld: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
            withheld.extend(plan.waiting.iter().cloned());
            format!("paused by annotation azml.dev/paused; withheld: {}", withheld.join("; "))
        };
        return finish(ctx, mc, status, Phase::Paused { in_sync, message }, ctx.config.resync_period).await;
    }
    if let Err(e) = apply(ctx, mc, &arm, &c_ref, &plan.actions).await {
        return fail(ctx, mc, status, e).await;
    }
    // An action started (or found already done) is honoured: the same annotation value never acts again.
    for action in &plan.actions {
        if let Action::Power { request, .. } = action {
            status.last_action_request = Some(request.clone());
        }
    }
    if let Some(value) = &plan.honour_without_call {
        status.last_action_request = Some(value.clone());
    }
    if let Some((reason, message)) = plan.stall.clone() {
        return finish(ctx, mc, status, Phase::Stalled { reason, message }, ctx.config.stalled_requeue).await;
    }
    if !plan.converged() {
        let reason = match (&observed.compute, plan.actions.first()) {
            (None, _) => reasons::CREATING,
            (_, Some(Action::Power { .. })) => reasons::INSTANCE_ACTION,
            (_, Some(_)) => reasons::UPDATING,
            (_, None) => reasons::OPERATION_IN_PROGRESS,
        };
        let outcome = Phase::Progressing { reason, message: plan.waiting.join("; ") };
        return finish(ctx, mc, status, outcome, ctx.config.lro_poll_min).await;
    }
    let compute_errors = observed.compute.as_ref().map(plan::compute_errors).unwrap_or_default();
    if !compute_errors.is_empty() {
        // Converged with the spec, but Azure says the compute cannot do its work (e.g. it cannot scale for lack
        // of quota): not Ready, and looked at again after a resync period (Azure may recover on its own).
        let message = format!("Azure reports errors on the compute: {}", compute_errors.join("; "));
        let outcome = Phase::Progressing { reason: reasons::COMPUTE_ERRORS, message };
        return finish(ctx, mc, status, outcome, ctx.config.resync_period).await;
    }
    finish(ctx, mc, status, Phase::Ready, ctx.config.resync_period).await
}

async fn remove_finalizer(mc: &MlCompute, ctx: &Context) -> Result<Requeue, Error> {
    set_finalizer(&ctx.client, mc, FINALIZER, false).await?;
    ctx.forget(mc);
    Ok(Requeue::await_change())
}

async fn reconcile_cleanup(mc: &MlCompute, ctx: &Context) -> Result<Requeue, Error> {
    let status = ctx.current_status(mc).unwrap_or_default();
    if mc.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: leaving the compute in Azure; removing the finalizer");
        return remove_finalizer(mc, ctx).await;
    }
    if annotation_true(mc, ANNOTATION_PAUSED) {
        let note = "Paused: the compute is left in Azure although deletionPolicy is Delete".to_owned();
        ctx.publish(mc, EventType::Normal, reasons::PAUSED, note).await;
        return remove_finalizer(mc, ctx).await;
    }
    let Some(ws) = get_workspace(&ctx.client, mc).await? else {
        let note = format!(
            "MlWorkspace {} is gone: the compute cannot be reached and is left in Azure although deletionPolicy is Delete",
            mc.spec.workspace_ref.name
        );
        ctx.publish(mc, EventType::Warning, reasons::WORKSPACE_NOT_READY, note).await;
        return remove_finalizer(mc, ctx).await;
    };
    let (arm, tenant_id) = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &ws, mc, true).await {
        Ok(ComputeClient::Permitted { arm, tenant_id }) => (arm, tenant_id),
        Ok(ComputeClient::Denied(_)) if status.resource_id.is_none() => {
            info!("not permitted and never created in Azure; removing the finalizer");
            return remove_finalizer(mc, ctx).await;
        }
        Ok(ComputeClient::Denied(message)) => {
            let outcome = Phase::Stalled { reason: reasons::NOT_PERMITTED, message };
            return finish(ctx, mc, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return fail(ctx, mc, status, e).await,
    };
    let (c_ref, desired) = match desired(mc, &ws, &tenant_id) {
        Ok(d) => d,
        Err(message) => {
            let outcome = Phase::Stalled { reason: reasons::INVALID_SPEC, message };
            return finish(ctx, mc, status, outcome, ctx.config.stalled_requeue).await;
        }
    };
    let found = match arm.get_compute(&c_ref).await {
        Ok(f) => f,
        Err(e) => return fail(ctx, mc, status, Error::arm("get compute")(e)).await,
    };
    let Some(found) = found else {
        info!("compute gone from Azure; removing the finalizer");
        return remove_finalizer(mc, ctx).await;
    };
    if !plan::owned(&found, &desired.owner) {
        info!("the compute in Azure is not ours; leaving it");
        return remove_finalizer(mc, ctx).await;
    }
    if !found.properties.provisioning_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Deleting")) {
        if let Err(e) = arm.begin_delete_compute(&c_ref).await {
            return fail(ctx, mc, status, Error::arm("delete compute")(e)).await;
        }
        info!("deleting compute");
        ctx.publish(mc, EventType::Normal, events::DELETED, format!("Deleting compute {}", c_ref.id())).await;
    }
    let outcome = Phase::Progressing { reason: reasons::DELETING, message: "deleting the compute in Azure".into() };
    finish(ctx, mc, status, outcome, ctx.config.lro_poll_min).await
}

/// Requeue after a failed reconcile: backoff with jitter, Retry-After when throttled.
pub fn error_policy(mc: Arc<MlCompute>, err: &Error, ctx: Arc<Context>) -> Requeue {
    requeue_after_error(err, &ctx.config, || ctx.memory.bump_failures(mc.uid()))
}

/// Runs the compute controller until `shutdown` is cancelled (started by [`crate::controller::run`], so it shares
/// leader election, shutdown and metrics with the workspace controller).
pub async fn run(client: Client, config: ControllerConfig, shutdown: CancellationToken) {
    let namespaces: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    info!(namespaces = ?config.watch_namespaces, "starting the MlCompute controller");
    let ctx = Arc::new(Context::new(client.clone(), config));
    let runs = namespaces.into_iter().map(|ns| run_one(ns, client.clone(), ctx.clone(), shutdown.clone()));
    futures::future::join_all(runs).await;
    info!("MlCompute controller stopped");
}

async fn run_one(namespace: Option<String>, client: Client, ctx: Arc<Context>, shutdown: CancellationToken) {
    let (computes, workspaces): (Api<MlCompute>, Api<MlWorkspace>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (reader, writer) = reflector::store();
    let controller = Controller::for_stream(watch_changes(computes, writer), reader);
    let store = controller.store();
    controller
        .with_config(RuntimeConfig::default().concurrency(ctx.config.concurrency))
        .watches(workspaces, watcher::Config::default(), move |ws: MlWorkspace| {
            // A workspace change (Ready, deletion) re-evaluates its computes.
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
            match result {
                Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                Err(err) => debug!(error = %scrub(&error_chain(&err)), "compute reconcile error"),
            }
        })
        .await;
}

/// The MlComputes of the workspace `name` among `computes`, sorted by name.
pub fn computes_of(name: &str, computes: &[MlCompute]) -> Vec<String> {
    let mut names: Vec<String> =
        computes.iter().filter(|c| c.spec.workspace_ref.name == name).map(ResourceExt::name_any).collect();
    names.sort();
    names
}

/// Lists the MlComputes in the namespace of `ws` (none when the CRD is not installed).
pub async fn list_computes(client: &Client, ws: &MlWorkspace) -> Result<Vec<MlCompute>, Error> {
    let api: Api<MlCompute> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    match api.list(&Default::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(Error::kube("list MlComputes")(e)),
    }
}

/// Deletes the MlComputes of `ws` and returns how many still exist (their own cleanup runs first). Used by the
/// workspace's cleanup with deletionPolicy Delete.
pub async fn delete_computes_of(client: &Client, ws: &MlWorkspace) -> Result<usize, Error> {
    let api: Api<MlCompute> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    let mine: Vec<MlCompute> =
        list_computes(client, ws).await?.into_iter().filter(|c| c.spec.workspace_ref.name == ws.name_any()).collect();
    for mc in mine.iter().filter(|c| c.metadata.deletion_timestamp.is_none()) {
        info!(compute = %mc.name_any(), "deleting compute of the deleted workspace");
        match api.delete(&mc.name_any(), &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::kube("delete MlCompute")(e)),
        }
    }
    Ok(mine.len())
}

/// What the controller would do for `mc` right now, without doing it: the same policy check, observe (reads
/// only) and plan as a reconcile. Used by `azml-operator plan`.
pub async fn dry_run(client: &Client, config: &ControllerConfig, mc: &MlCompute) -> Result<DryRun, Error> {
    let Some(ws) = get_workspace(client, mc).await?.filter(workspace_ready) else {
        return Ok(DryRun::Blocked {
            reason: reasons::WORKSPACE_NOT_READY,
            message: format!("MlWorkspace {} is not Ready", mc.spec.workspace_ref.name),
        });
    };
    let (arm, tenant_id) = match resolve_client(client, &CredentialCache::default(), config, &ws, mc, false).await? {
        ComputeClient::Permitted { arm, tenant_id } => (arm, tenant_id),
        ComputeClient::Denied(message) => return Ok(DryRun::Blocked { reason: reasons::NOT_PERMITTED, message }),
    };
    let (c_ref, desired) = match desired(mc, &ws, &tenant_id) {
        Ok(d) => d,
        Err(message) => return Ok(DryRun::Blocked { reason: reasons::INVALID_SPEC, message }),
    };
    let observed = observe(&arm, &c_ref, &desired).await?;
    let status = mc.status.clone().unwrap_or_default();
    let plan = plan::plan(&desired, &observed, &action_request(mc, &status));
    Ok(DryRun::Planned { actions: plan.actions, stall: plan.stall.map(|(r, m)| (r.to_owned(), m)) })
}

/// The result of [`dry_run`].
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DryRun {
    /// Nothing can be planned: the reason and message the compute would stall or wait with.
    Blocked {
        /// Reason constant.
        reason: &'static str,
        /// Message.
        message: String,
    },
    /// The writes the controller would make, and the stall it would report.
    Planned {
        /// Writes, in order.
        actions: Vec<Action>,
        /// (reason, message).
        stall: Option<(String, String)>,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

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

    fn compute(spec: Value) -> MlCompute {
        let mut mc: MlCompute = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlCompute",
            "metadata": {"name": "cpu", "namespace": "team-a", "uid": "mc-uid"},
            "spec": spec,
        }))
        .expect("compute");
        mc.metadata.generation = Some(1);
        mc
    }

    #[test]
    fn the_spec_resolves_against_its_workspace() {
        let mc = compute(json!({
            "workspaceRef": {"name": "fraud"},
            "amlCompute": {"vmSize": "Standard_DS3_v2", "scale": {"maxNodes": 4, "idleBeforeScaleDown": "2m"}},
        }));
        let (c_ref, d) = desired(&mc, &workspace(), "tenant").expect("valid");
        assert_eq!(
            c_ref.id(),
            "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-risk/providers/Microsoft.MachineLearningServices/workspaces/fraud/computes/cpu"
        );
        assert_eq!((d.location.as_str(), d.owner.as_str()), ("westeurope", "team-a/cpu/mc-uid"));
        let DesiredKind::Cluster(c) = d.kind else { panic!("a cluster") };
        assert_eq!((c.min_nodes, c.max_nodes, c.idle_before_scale_down), (0, 4, Some(120)));
        let short = compute(json!({
            "workspaceRef": {"name": "fraud"},
            "computeInstance": {"vmSize": "Standard_DS11_v2", "assignedTo": "a11ce000-0000-4000-8000-000000000001", "idleShutdownAfter": "5m"},
        }));
        let err = desired(&short, &workspace(), "tenant").unwrap_err();
        assert!(err.contains("between 15m and 72h"), "{err}");
    }

    #[test]
    fn the_workspaces_computes_block_its_move_by_name() {
        let a = compute(
            json!({"workspaceRef": {"name": "fraud"}, "amlCompute": {"vmSize": "Standard_DS3_v2", "scale": {"maxNodes": 1}}}),
        );
        let mut b = a.clone();
        b.metadata.name = Some("another".into());
        let mut other = a.clone();
        other.spec.workspace_ref.name = "other".into();
        assert_eq!(computes_of("fraud", &[a, other, b]), ["another", "cpu"]);
    }

    #[test]
    fn timestamps_alone_do_not_change_the_status() {
        let now = Time(jiff::Timestamp::now());
        let mut a = MlComputeStatus::default();
        set_kstatus(&mut a, &Phase::Ready, Some(1), &now);
        let mut b = a.clone();
        b.last_sync_time = Some(Time(jiff::Timestamp::from_second(2_000_000_000).expect("ts")));
        assert!(!status::changed(Some(&a), &b));
        b.current_node_count = Some(2);
        assert!(status::changed(Some(&a), &b));
    }
}
