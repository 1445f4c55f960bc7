//! The MlOnlineEndpoint controller: observe → plan ([`plan::plan`], pure) → apply → report.
//!
//! - An endpoint waits for its MlWorkspace (same namespace) to be Ready before any Azure call (reason
//!   `WorkspaceNotReady`), carries an owner reference to it, and uses the workspace's SubscriptionBinding and
//!   credential ([`crate::reconciler::binding`]). The shell ([`crate::reconciler`]) runs the watch, the finalizer,
//!   status memory and the error policy; this module implements [`Reconciler`] for the endpoint.
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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use tracing::{debug, info, instrument};

use self::plan::{Action, DesiredDeployment, DesiredEndpoint, ObservedEndpoint, Plan};
use crate::api::conditions::{self, Reason, events};
use crate::api::v1alpha1::{
    ANNOTATION_PAUSED, AccessEntry, DeletionPolicy, DeploymentStatus, ENDPOINT_FINALIZER, EndpointAuthMode,
    MlOnlineEndpoint, MlOnlineEndpointStatus, MlWorkspace,
};
use crate::azure::ids::{OnlineDeploymentName, OnlineDeploymentRef, OnlineEndpointName, OnlineEndpointRef};
use crate::azure::models::ProvisioningState;
use crate::azure::online_endpoints::OnlineEndpoint;
use crate::azure::{ArmClient, ResourceId};
use crate::policy::{Grantor, Intent};
use crate::reconciler::binding::{self, Ask, Place, Verdict};
use crate::reconciler::error::Error;
use crate::reconciler::parent::{self, ChildReconciler, InvalidWorkspace};
use crate::reconciler::status::{self, set_condition};
use crate::reconciler::{Deletion, Kind, Phase, Shell, annotation_true};

/// The endpoint controller's state: the shell's (an endpoint remembers nothing else between reconciles).
pub type Context = Shell<MlOnlineEndpoint>;

impl Kind for MlOnlineEndpoint {
    type Status = MlOnlineEndpointStatus;
    const NOUN: &'static str = "endpoint";
    const FINALIZER: &'static str = ENDPOINT_FINALIZER;
    const METRICS_SCOPE: Option<&'static str> = None;
    const ANNOUNCE_FAILED_STALL: bool = true;

    fn status(&self) -> Option<&MlOnlineEndpointStatus> {
        self.status.as_ref()
    }

    fn wake_key(&self) -> Option<String> {
        Some(crate::reconciler::parent::WorkspaceChild::workspace_name(self).to_owned())
    }

    fn retains(&self) -> bool {
        self.spec.deletion_policy == DeletionPolicy::Retain
    }

    fn set_phase(status: &mut MlOnlineEndpointStatus, phase: &Phase, generation: Option<i64>, now: &Time) {
        set_kstatus(status, phase, generation, now);
    }
}

/// Sets Ready, Reconciling and Stalled from `outcome`.
pub fn set_kstatus(status: &mut MlOnlineEndpointStatus, outcome: &Phase, generation: Option<i64>, now: &Time) {
    status::set_kstatus(&mut status.conditions, outcome, "the endpoint matches the spec", generation, now);
    status.observed_generation = generation;
}

/// Why the spec cannot be resolved against its workspace (names the schema should have rejected).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEndpoint {
    /// The workspace's own place is invalid.
    #[error(transparent)]
    Workspace(#[from] InvalidWorkspace),
    /// A name that would not address an Azure resource: the spec field and the id layer's verdict.
    #[error("{field}: {source}")]
    Name {
        /// `spec.azureName` or `spec.deployments`.
        field: &'static str,
        /// The id layer's verdict.
        #[source]
        source: crate::azure::ids::IdError,
    },
}

/// The spec resolved against its workspace. Fails on names the schema should have rejected.
pub fn desired(
    ep: &MlOnlineEndpoint,
    ws: &MlWorkspace,
) -> Result<(OnlineEndpointRef, DesiredEndpoint), InvalidEndpoint> {
    let workspace = parent::workspace_ref(ws)?;
    let name = ep.name_any();
    let azure_name = ep.spec.azure_name_or(&name);
    let ep_name = OnlineEndpointName::new(azure_name)
        .map_err(|source| InvalidEndpoint::Name { field: "spec.azureName", source })?;
    for d in &ep.spec.deployments {
        OnlineDeploymentName::new(d.name.as_str())
            .map_err(|source| InvalidEndpoint::Name { field: "spec.deployments", source })?;
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
    Ok((OnlineEndpointRef::new(workspace, ep_name), desired))
}

fn deployment_ref(ep: &OnlineEndpointRef, name: &str) -> Result<OnlineDeploymentRef, Error> {
    // Names come from the spec (validated by `desired`) or from Azure; a wrong one is a spec error, not an
    // unreadable operation.
    let name = OnlineDeploymentName::new(name)
        .map_err(|source| Error::InvalidId { what: "online deployment name", source })?;
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
        (true, Reason::DeploymentsReady, format!("{n} deployment(s) ready; traffic as declared"))
    } else if let Some((reason, message)) = &plan.stall {
        (false, *reason, message.clone())
    } else {
        (false, Reason::DeploymentsPending, plan.waiting.join("; "))
    };
    set_condition(&mut status.conditions, conditions::DEPLOYMENTS_READY, ok, reason, &message, generation, now);
}

async fn reconcile_apply(ep: &MlOnlineEndpoint, ctx: &Context) -> Result<Requeue, Error> {
    let previous = ctx.current_status(ep);
    let mut status = previous.clone().unwrap_or_default();
    let generation = ep.metadata.generation;
    let now = Time(ctx.config.clock().now());
    let ws = parent::get_workspace(&ctx.client, ep).await?;
    let Some(ws) = ws.filter(parent::workspace_ready) else {
        let message = format!(
            "waiting for MlWorkspace {} to be Ready; nothing is sent to Azure before",
            ep.spec.workspace_ref.name
        );
        let outcome = Phase::Progressing { reason: Reason::WorkspaceNotReady, message };
        // The workspace watch wakes the endpoint when the workspace changes.
        return ctx.finish_status(ep, status, outcome, ctx.config.resync_period).await;
    };
    parent::ensure_workspace_owner(&ctx.client, ep, &ws).await?;
    let (ep_ref, desired) = match desired(ep, &ws) {
        Ok(d) => d,
        Err(invalid) => {
            let outcome = Phase::Stalled { reason: Reason::InvalidSpec, message: invalid.to_string() };
            return ctx.finish_status(ep, status, outcome, ctx.config.stalled_requeue).await;
        }
    };
    // The binding must allow the workspace's place and the endpoint's own access entries.
    let access_entries: Vec<_> = ep.spec.access.iter().map(|a| a.as_resource_entry()).collect();
    // Assets of other workspaces named by id are read by Azure on the binding's credential: they must be in groups
    // the binding allows.
    let assets = crate::policy::resources::endpoint_asset_uses(&ep.spec);
    let arm = match authorize(ctx, ep, &ws, &access_entries, &assets).await {
        Ok(Verdict::Permitted { arm, binding }) => {
            status.binding = Some(binding.name_any());
            arm
        }
        Ok(Verdict::Denied(message)) => {
            let outcome = Phase::Stalled { reason: Reason::NotPermitted, message };
            return ctx.finish_status(ep, status, outcome, ctx.config.stalled_requeue).await;
        }
        Err(e) => return ctx.fail_status(ep, status, e).await,
    };
    let observed = match observe(&arm, &ep_ref, &desired, previous.as_ref()).await {
        Ok(o) => o,
        Err(e) => return ctx.fail_status(ep, status, e).await,
    };
    let plan = plan::plan(&desired, &observed);
    report_observed(&mut status, &ep_ref, &observed, &desired.owner);
    deployments_condition(&mut status, &plan, generation, &now);
    debug!(actions = plan.actions.len(), waiting = ?plan.waiting, "planned");
    if annotation_true(ep, ANNOTATION_PAUSED) {
        // Observe and report only: no write to Azure (nor key regeneration, nor role assignments).
        let paused = Phase::paused(plan.converged(), plan.waiting.iter().cloned());
        return ctx.finish_status(ep, status, paused, ctx.config.resync_period).await;
    }
    if let Err(e) = apply(ctx, ep, &arm, &ep_ref, &plan.actions).await {
        return ctx.fail_status(ep, status, e).await;
    }
    if let Some((reason, message)) = plan.stall.clone() {
        return ctx.finish_status(ep, status, Phase::Stalled { reason, message }, ctx.config.stalled_requeue).await;
    }
    if !plan.converged() {
        let reason = if observed.endpoint.is_none() { Reason::Creating } else { Reason::DeploymentsPending };
        let outcome = Phase::Progressing { reason, message: plan.waiting.join("; ") };
        return ctx.finish_status(ep, status, outcome, ctx.config.lro_poll_min).await;
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
                return ctx.finish_status(ep, status, outcome, requeue).await;
            }
            result.outcome
        }
        Err(e) => {
            // A regeneration recorded in flight stays recorded: the next reconcile tells from Azure's keys whether
            // it happened, instead of sending it again.
            status.keys = ctx.current_status(ep).and_then(|s| s.keys);
            return ctx.fail_status(ep, status, e).await;
        }
    };
    let exported = crate::exports::export_endpoint(&ctx.client, ep, &ep_ref, &arm, &status).await;
    exported.apply_to(&mut status.exports, &mut status.conditions, generation, &now);
    for (type_, reason, note) in &exported.events {
        ctx.publish(ep, *type_, reason, note.clone()).await;
    }
    // Then the role assignments at the endpoint.
    let mut requeue = ctx.config.resync_period;
    if !access_entries.is_empty() || !status.access.is_empty() {
        let endpoint = match ResourceId::parse(&ep_ref.id()) {
            Ok(id) => id,
            Err(source) => {
                return ctx.fail_status(ep, status, Error::InvalidId { what: "online endpoint id", source }).await;
            }
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
            Err(e) => return ctx.fail_status(ep, status, e).await,
        }
    } else {
        status.conditions.retain(|c| c.type_ != conditions::ACCESS_GRANTED);
    }
    let outcome = outcome.unwrap_or(Phase::Ready);
    if let Phase::Stalled { .. } = outcome {
        requeue = ctx.config.stalled_requeue;
    }
    ctx.finish_status(ep, status, outcome, requeue).await
}

/// The endpoint's cleanup: deletionPolicy Delete, not paused (the shell handled Retain and paused).
async fn reconcile_cleanup(ep: &MlOnlineEndpoint, ctx: &Context) -> Result<Deletion, Error> {
    let status = ctx.current_status(ep).unwrap_or_default();
    let Some(ws) = parent::get_workspace(&ctx.client, ep).await? else {
        let note = format!(
            "MlWorkspace {} is gone: the endpoint cannot be reached and is left in Azure although deletionPolicy is Delete",
            ep.spec.workspace_ref.name
        );
        ctx.publish(ep, EventType::Warning, Reason::WorkspaceNotReady, note).await;
        return Ok(Deletion::Finished);
    };
    let (ep_ref, desired) = match desired(ep, &ws) {
        Ok(d) => d,
        Err(invalid) => {
            let outcome = Phase::Stalled { reason: Reason::InvalidSpec, message: invalid.to_string() };
            return wait(ctx.finish_status(ep, status, outcome, ctx.config.stalled_requeue).await);
        }
    };
    // Deleting needs the client only: the endpoint's access entries go with the endpoint.
    let arm = match authorize(ctx, ep, &ws, &[], &[]).await {
        Ok(Verdict::Permitted { arm, .. }) => arm,
        Ok(Verdict::Denied(_)) if status.resource_id.is_none() => {
            info!("not permitted and never created in Azure; removing the finalizer");
            return Ok(Deletion::Finished);
        }
        Ok(Verdict::Denied(message)) => {
            let outcome = Phase::Stalled { reason: Reason::NotPermitted, message };
            return wait(ctx.finish_status(ep, status, outcome, ctx.config.stalled_requeue).await);
        }
        Err(e) => return wait(ctx.fail_status(ep, status, e).await),
    };
    let found = match arm.get_online_endpoint(&ep_ref).await {
        Ok(f) => f,
        Err(e) => return wait(ctx.fail_status(ep, status, Error::arm("get online endpoint")(e)).await),
    };
    let Some(found) = found else {
        info!("online endpoint gone from Azure; removing the finalizer");
        return Ok(Deletion::Finished);
    };
    if !owned_by(&found, &desired.owner) {
        info!("the endpoint in Azure is not ours; leaving it");
        return Ok(Deletion::Finished);
    }
    if found.properties.provisioning_state != Some(ProvisioningState::Deleting) {
        if let Err(e) = arm.begin_delete_online_endpoint(&ep_ref).await {
            return wait(ctx.fail_status(ep, status, Error::arm("delete online endpoint")(e)).await);
        }
        info!("deleting online endpoint");
        ctx.publish(ep, EventType::Normal, events::DELETED, format!("Deleting online endpoint {}", ep_ref.id())).await;
    }
    let outcome = Phase::Progressing { reason: Reason::Deleting, message: "deleting the endpoint in Azure".into() };
    wait(ctx.finish_status(ep, status, outcome, ctx.config.lro_poll_min).await)
}

fn wait(result: Result<Requeue, Error>) -> Result<Deletion, Error> {
    result.map(Deletion::Wait)
}

/// The binding check of an endpoint: the workspace's namespace, subscription, resource group and the dependent
/// resources it names, with the endpoint's own access entries (granted at the endpoint) and the assets it names by
/// id. No Azure call is made.
async fn authorize(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    ws: &MlWorkspace,
    access: &[AccessEntry],
    assets: &[(String, String, Intent)],
) -> Result<Verdict, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let _ = ep;
    let ask = Ask {
        namespace: &namespace,
        place: Place::of(&ws.spec),
        workspace: &ws.spec,
        access,
        grantor: Grantor::Endpoint,
        extra: assets,
    };
    binding::authorize(&ctx.client, &ctx.credentials, &ctx.config, &ask, |_| Ok(())).await
}

impl ChildReconciler for MlOnlineEndpoint {
    async fn apply(shell: &Context, ep: &MlOnlineEndpoint) -> Result<Requeue, Error> {
        reconcile_apply(ep, shell).await
    }

    async fn cleanup(shell: &Context, ep: &MlOnlineEndpoint) -> Result<Deletion, Error> {
        reconcile_cleanup(ep, shell).await
    }

    /// The owned keys Secret goes at once, before the endpoint (the garbage collector would delete it after; key
    /// material should not outlive the endpoint even briefly).
    async fn before_finalizer_removed(shell: &Context, ep: &MlOnlineEndpoint) -> Result<(), Error> {
        keys::delete_owned_secret(shell, ep).await
    }
}

fn owned_by(ep: &OnlineEndpoint, owner: &str) -> bool {
    ep.tags.as_ref().and_then(crate::api::v1alpha1::owner_tag_value).is_some_and(|v| v == owner)
}

/// Whether the endpoint uses keys that can be exported.
pub fn exports_keys(ep: &MlOnlineEndpoint) -> bool {
    ep.spec.auth_mode == EndpointAuthMode::Key && ep.spec.keys_secret.is_some()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::reconciler::parent::fixtures::workspace;

    fn status_with(traffic: &[(&str, i64)]) -> MlOnlineEndpointStatus {
        MlOnlineEndpointStatus {
            traffic: traffic.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..Default::default()
        }
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
        set_kstatus(&mut b, &Phase::Progressing { reason: Reason::Creating, message: "x".into() }, Some(1), &now);
        assert!(status::changed(Some(&a), &b));
    }
}
