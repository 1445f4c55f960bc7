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
//! - The shell ([`crate::reconciler`]) runs the watch, the finalizer, status memory and the error policy; this
//!   module implements [`Reconciler`] for the compute.

pub mod plan;
pub mod policy;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use tracing::{debug, info, instrument};

use self::plan::{
    Action, ActionRequest, DesiredCluster, DesiredCompute, DesiredInstance, DesiredKind, ObservedCompute, Plan,
    QuotaView,
};
use crate::api::conditions::{Reason, events};
use crate::api::v1alpha1::{
    ANNOTATION_COMPUTE_ACTION, ANNOTATION_PAUSED, DeletionPolicy, FINALIZER, MlCompute, MlComputeStatus, MlWorkspace,
};
use crate::azure::ArmClient;
use crate::azure::computes::{ComputeName, ComputeRef, Location};
use crate::azure::ids::SubscriptionId;
use crate::policy::Grantor;
use crate::reconciler::binding::{self, Ask, Place, Verdict};
use crate::reconciler::credentials::CredentialCache;
use crate::reconciler::error::Error;
use crate::reconciler::parent::{self, ChildReconciler, InvalidWorkspace};
use crate::reconciler::status::{self, set_condition};
use crate::reconciler::{ControllerConfig, Deletion, Kind, Phase, Shell, annotation_true};

pub use crate::api::conditions::USABLE;

/// The compute controller's state: the shell's (a compute remembers nothing else between reconciles).
pub type Context = Shell<MlCompute>;

impl Kind for MlCompute {
    type Status = MlComputeStatus;
    const NOUN: &'static str = "compute";
    const FINALIZER: &'static str = FINALIZER;
    const METRICS_SCOPE: Option<&'static str> = None;
    const ANNOUNCE_FAILED_STALL: bool = true;

    fn status(&self) -> Option<&MlComputeStatus> {
        self.status.as_ref()
    }

    fn wake_key(&self) -> Option<String> {
        Some(crate::reconciler::parent::WorkspaceChild::workspace_name(self).to_owned())
    }

    fn retains(&self) -> bool {
        self.spec.deletion_policy == DeletionPolicy::Retain
    }

    fn set_phase(status: &mut MlComputeStatus, phase: &Phase, generation: Option<i64>, now: &Time) {
        set_kstatus(status, phase, generation, now);
    }
}

/// Sets Ready, Reconciling and Stalled from `outcome`.
pub fn set_kstatus(status: &mut MlComputeStatus, outcome: &Phase, generation: Option<i64>, now: &Time) {
    status::set_kstatus(&mut status.conditions, outcome, "the compute matches the spec", generation, now);
    status.observed_generation = generation;
}

/// Why the spec cannot be resolved against its workspace (values the schema should have rejected).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCompute {
    /// The workspace's own place is invalid.
    #[error(transparent)]
    Workspace(#[from] InvalidWorkspace),
    /// `spec.azureName` (or the object's name) is no valid compute name.
    #[error("spec.azureName: {0}")]
    Name(#[source] crate::azure::ids::IdError),
    /// A duration that does not parse.
    #[error("{field}: {value:?} is not a duration like 30m")]
    Duration {
        /// The spec field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// An idle shutdown outside Azure's range.
    #[error("spec.computeInstance.idleShutdownAfter must be between 15m and 72h (Azure's range)")]
    IdleShutdownRange,
    /// Neither or both kinds.
    #[error("exactly one of spec.amlCompute or spec.computeInstance must be set")]
    Kind,
}

/// The spec resolved against its workspace (and the binding's tenant, for an instance's user). Fails on values
/// the schema should have rejected.
pub fn desired(
    mc: &MlCompute,
    ws: &MlWorkspace,
    tenant_id: &str,
) -> Result<(ComputeRef, DesiredCompute), InvalidCompute> {
    let workspace = parent::workspace_ref(ws)?;
    let name = mc.name_any();
    let compute_name = ComputeName::new(mc.spec.azure_name_or(&name)).map_err(InvalidCompute::Name)?;
    let duration = |field: &'static str, v: &Option<String>| -> Result<Option<i64>, InvalidCompute> {
        v.as_deref()
            .map(|s| plan::parse_duration(s).ok_or_else(|| InvalidCompute::Duration { field, value: s.to_owned() }))
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
                return Err(InvalidCompute::IdleShutdownRange);
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
        _ => return Err(InvalidCompute::Kind),
    };
    let owner = format!("{}/{}/{}", mc.namespace().unwrap_or_default(), name, mc.uid().unwrap_or_default());
    let desired = DesiredCompute { location: ws.spec.location.clone(), owner, kind };
    Ok((ComputeRef::new(workspace, compute_name), desired))
}

/// The ARM client a compute may use (with the binding's tenant), or why it may not use any.
pub enum ComputeClient {
    /// The binding of the workspace allows the compute.
    Permitted {
        /// Its client.
        arm: ArmClient,
        /// The binding's tenant.
        tenant_id: String,
        /// The binding's name.
        binding: String,
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
    // The workspace's place and the resources it names; its access entries are the workspace's business.
    let ask = Ask {
        namespace: &namespace,
        place: Place::of(&ws.spec),
        workspace: &ws.spec,
        access: &[],
        grantor: Grantor::Workspace,
        extra: &[],
    };
    let also = |binding: &crate::api::v1alpha1::SubscriptionBinding| match for_delete {
        true => Ok(()),
        false => policy::check_compute(binding, &mc.spec).map_err(|denial| denial.to_string()),
    };
    Ok(match binding::authorize(client, credentials, config, &ask, also).await? {
        Verdict::Permitted { arm, binding } => {
            ComputeClient::Permitted { arm, binding: binding.name_any(), tenant_id: binding.spec.tenant_id }
        }
        Verdict::Denied(message) => ComputeClient::Denied(message),
    })
}

/// Reads the compute; when it does not exist, the VM sizes and usages the quota check needs.
#[instrument(skip_all, fields(compute = %c_ref.id()))]
async fn observe(arm: &ArmClient, c_ref: &ComputeRef, desired: &DesiredCompute) -> Result<ObservedCompute, Error> {
    let compute = arm.get_compute(c_ref).await.map_err(Error::arm("get compute"))?;
    if compute.is_some() {
        return Ok(ObservedCompute { compute, quota: None });
    }
    let location = Location::new(&desired.location)
        .map_err(|source| Error::InvalidId { what: "the workspace's location", source })?;
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
            // Recorded in status by the caller; nothing to ask Azure.
            Action::Honour { .. } => {}
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
        (None, None) => (false, Reason::Creating, "the compute does not exist yet".to_owned()),
        (Some(c), _) => match plan::usability(c) {
            Ok(message) => (true, Reason::Reconciled, message),
            Err((reason, message)) => (false, reason, message),
        },
    };
    set_condition(&mut status.conditions, USABLE, ok, reason, &message, generation, now);
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
    let now = Time(ctx.config.clock().now());
    let Some(ws) = parent::get_workspace(&ctx.client, mc).await?.filter(parent::workspace_ready) else {
        let message = format!(
            "waiting for MlWorkspace {} to be Ready; nothing is sent to Azure before",
            mc.spec.workspace_ref.name
        );
        set_condition(&mut status.conditions, USABLE, false, Reason::WorkspaceNotReady, &message, generation, &now);
        let outcome = Phase::Progressing { reason: Reason::WorkspaceNotReady, message };
        return ctx.finish_status(mc, status, outcome, ctx.config.resync_period).await;
    };
    parent::ensure_workspace_owner(&ctx.client, mc, &ws).await?;
    let (arm, tenant_id) = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &ws, mc, false).await {
        Ok(ComputeClient::Permitted { arm, tenant_id, binding }) => {
            status.binding = Some(binding);
            (arm, tenant_id)
        }
        Ok(ComputeClient::Denied(message)) => {
            set_condition(&mut status.conditions, USABLE, false, Reason::NotPermitted, &message, generation, &now);
            let outcome = Phase::Stalled { reason: Reason::NotPermitted, message };
            return ctx.finish_status(mc, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return ctx.fail_status(mc, status, e).await,
    };
    let (c_ref, desired) = match desired(mc, &ws, &tenant_id) {
        Ok(d) => d,
        Err(invalid) => {
            let outcome = Phase::Stalled { reason: Reason::InvalidSpec, message: invalid.to_string() };
            return ctx.finish_status(mc, status, outcome, ctx.config.stalled_requeue).await;
        }
    };
    let observed = match observe(&arm, &c_ref, &desired).await {
        Ok(o) => o,
        Err(e) => return ctx.fail_status(mc, status, e).await,
    };
    let plan = plan::plan(&desired, &observed, &action_request(mc, &status));
    report_observed(&mut status, &c_ref, &observed, &desired.owner);
    usable_condition(&mut status, &observed, &plan, generation, &now);
    debug!(actions = plan.actions.len(), waiting = ?plan.waiting, "planned");
    if annotation_true(mc, ANNOTATION_PAUSED) {
        let withheld = plan.actions.iter().map(ToString::to_string).chain(plan.waiting.iter().cloned());
        let paused = Phase::paused(plan.converged(), withheld);
        return ctx.finish_status(mc, status, paused, ctx.config.resync_period).await;
    }
    if let Err(e) = apply(ctx, mc, &arm, &c_ref, &plan.actions).await {
        return ctx.fail_status(mc, status, e).await;
    }
    // An action started (or found already done) is honoured: the same annotation value never acts again.
    for action in &plan.actions {
        if let Action::Power { request, .. } | Action::Honour { request } = action {
            status.last_action_request = Some(request.clone());
        }
    }
    if let Some((reason, message)) = plan.stall.clone() {
        return ctx.finish_status(mc, status, Phase::Stalled { reason, message }, ctx.config.stalled_requeue).await;
    }
    if !plan.converged() {
        let reason = match (&observed.compute, plan.actions.first()) {
            (None, _) => Reason::Creating,
            (_, Some(Action::Power { .. })) => Reason::InstanceAction,
            (_, Some(_)) => Reason::Updating,
            (_, None) => Reason::OperationInProgress,
        };
        let outcome = Phase::Progressing { reason, message: plan.waiting.join("; ") };
        return ctx.finish_status(mc, status, outcome, ctx.config.lro_poll_min).await;
    }
    let compute_errors = observed.compute.as_ref().map(plan::compute_errors).unwrap_or_default();
    if !compute_errors.is_empty() {
        // Converged with the spec, but Azure says the compute cannot do its work (e.g. it cannot scale for lack
        // of quota): not Ready, and looked at again after a resync period (Azure may recover on its own).
        let message = format!("Azure reports errors on the compute: {}", compute_errors.join("; "));
        let outcome = Phase::Progressing { reason: Reason::ComputeErrors, message };
        return ctx.finish_status(mc, status, outcome, ctx.config.resync_period).await;
    }
    ctx.finish_status(mc, status, Phase::Ready, ctx.config.resync_period).await
}

/// The compute's cleanup: deletionPolicy Delete, not paused (the shell handled Retain and paused).
async fn reconcile_cleanup(mc: &MlCompute, ctx: &Context) -> Result<Deletion, Error> {
    let status = ctx.current_status(mc).unwrap_or_default();
    let Some(ws) = parent::get_workspace(&ctx.client, mc).await? else {
        let note = format!(
            "MlWorkspace {} is gone: the compute cannot be reached and is left in Azure although deletionPolicy is Delete",
            mc.spec.workspace_ref.name
        );
        ctx.publish(mc, EventType::Warning, Reason::WorkspaceNotReady, note).await;
        return Ok(Deletion::Finished);
    };
    let (arm, tenant_id) = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &ws, mc, true).await {
        Ok(ComputeClient::Permitted { arm, tenant_id, .. }) => (arm, tenant_id),
        Ok(ComputeClient::Denied(_)) if status.resource_id.is_none() => {
            info!("not permitted and never created in Azure; removing the finalizer");
            return Ok(Deletion::Finished);
        }
        Ok(ComputeClient::Denied(message)) => {
            let outcome = Phase::Stalled { reason: Reason::NotPermitted, message };
            return wait(ctx.finish_status(mc, status, outcome, ctx.config.stalled_requeue).await);
        }
        Err(e) => return wait(ctx.fail_status(mc, status, e).await),
    };
    let (c_ref, desired) = match desired(mc, &ws, &tenant_id) {
        Ok(d) => d,
        Err(invalid) => {
            let outcome = Phase::Stalled { reason: Reason::InvalidSpec, message: invalid.to_string() };
            return wait(ctx.finish_status(mc, status, outcome, ctx.config.stalled_requeue).await);
        }
    };
    let found = match arm.get_compute(&c_ref).await {
        Ok(f) => f,
        Err(e) => return wait(ctx.fail_status(mc, status, Error::arm("get compute")(e)).await),
    };
    let Some(found) = found else {
        info!("compute gone from Azure; removing the finalizer");
        return Ok(Deletion::Finished);
    };
    if !plan::owned(&found, &desired.owner) {
        info!("the compute in Azure is not ours; leaving it");
        return Ok(Deletion::Finished);
    }
    if !found.properties.provisioning_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("Deleting")) {
        if let Err(e) = arm.begin_delete_compute(&c_ref).await {
            return wait(ctx.fail_status(mc, status, Error::arm("delete compute")(e)).await);
        }
        info!("deleting compute");
        ctx.publish(mc, EventType::Normal, events::DELETED, format!("Deleting compute {}", c_ref.id())).await;
    }
    let outcome = Phase::Progressing { reason: Reason::Deleting, message: "deleting the compute in Azure".into() };
    wait(ctx.finish_status(mc, status, outcome, ctx.config.lro_poll_min).await)
}

fn wait(result: Result<Requeue, Error>) -> Result<Deletion, Error> {
    result.map(Deletion::Wait)
}

impl ChildReconciler for MlCompute {
    async fn apply(shell: &Context, mc: &MlCompute) -> Result<Requeue, Error> {
        reconcile_apply(mc, shell).await
    }

    async fn cleanup(shell: &Context, mc: &MlCompute) -> Result<Deletion, Error> {
        reconcile_cleanup(mc, shell).await
    }
}

/// What the controller would do for `mc` right now, without doing it: the same policy check, observe (reads
/// only) and plan as a reconcile. Used by `azml-operator plan`.
pub async fn dry_run(client: &Client, config: &ControllerConfig, mc: &MlCompute) -> Result<DryRun, Error> {
    let Some(ws) = parent::get_workspace(client, mc).await?.filter(parent::workspace_ready) else {
        let message = format!("MlWorkspace {} is not Ready", mc.spec.workspace_ref.name);
        return Ok(DryRun::blocked(Reason::WorkspaceNotReady, message));
    };
    let (arm, tenant_id) = match resolve_client(client, &CredentialCache::default(), config, &ws, mc, false).await? {
        ComputeClient::Permitted { arm, tenant_id, .. } => (arm, tenant_id),
        ComputeClient::Denied(message) => return Ok(DryRun::blocked(Reason::NotPermitted, message)),
    };
    let (c_ref, desired) = match desired(mc, &ws, &tenant_id) {
        Ok(d) => d,
        Err(invalid) => return Ok(DryRun::blocked(Reason::InvalidSpec, invalid.to_string())),
    };
    let observed = observe(&arm, &c_ref, &desired).await?;
    let status = mc.status.clone().unwrap_or_default();
    let plan = plan::plan(&desired, &observed, &action_request(mc, &status));
    Ok(DryRun::Planned(plan))
}

/// The result of [`dry_run`].
pub type DryRun = crate::reconciler::plan::DryRun<Action>;

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::reconciler::parent::fixtures::workspace;

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
        let err = desired(&short, &workspace(), "tenant").unwrap_err().to_string();
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
        assert_eq!(parent::names_of("fraud", &[a, other, b]), ["another", "cpu"]);
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
