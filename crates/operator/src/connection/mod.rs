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
//! - The shell ([`crate::reconciler`]) runs the watch, the finalizer, status memory and the error policy; this
//!   module implements [`Reconciler`] for the connection.

pub mod plan;
pub mod policy;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{debug, info, instrument};

use self::plan::{DesiredConnection, Plan, ResolvedCredentials, WriteReason};
use crate::api::conditions::{Reason, events};
use crate::api::v1alpha1::{
    ANNOTATION_PAUSED, DeletionPolicy, FINALIZER, MlConnection, MlConnectionStatus, MlWorkspace, SubscriptionBinding,
};
use crate::azure::ArmClient;
use crate::azure::connections::{Connection, ConnectionName, ConnectionRef};
use crate::policy::Grantor;
use crate::reconciler::ControllerConfig;
use crate::reconciler::binding::{self, Ask, Place, Verdict};
use crate::reconciler::credentials::CredentialCache;
use crate::reconciler::error::Error;
use crate::reconciler::parent::{self, ChildReconciler, InvalidWorkspace, WorkspaceChild};
use crate::reconciler::status;
use crate::reconciler::{Deletion, Kind, Phase, Shell, annotation_true};

/// The connection controller's state: the shell's (a connection remembers nothing else between reconciles; the
/// hash of the credentials last sent is in its status).
pub type Context = Shell<MlConnection>;

impl Kind for MlConnection {
    type Status = MlConnectionStatus;
    const NOUN: &'static str = "connection";
    const FINALIZER: &'static str = FINALIZER;
    const METRICS_SCOPE: Option<&'static str> = None;
    const ANNOUNCE_FAILED_STALL: bool = true;

    fn status(&self) -> Option<&MlConnectionStatus> {
        self.status.as_ref()
    }

    fn wake_key(&self) -> Option<String> {
        Some(crate::reconciler::parent::WorkspaceChild::workspace_name(self).to_owned())
    }

    fn retains(&self) -> bool {
        self.spec.deletion_policy == DeletionPolicy::Retain
    }

    fn set_phase(status: &mut MlConnectionStatus, phase: &Phase, generation: Option<i64>, now: &Time) {
        set_kstatus(status, phase, generation, now);
    }
}

impl status::TimestampedStatus for MlConnectionStatus {
    fn conditions_mut(&mut self) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        &mut self.conditions
    }
    fn last_sync_time_mut(&mut self) -> &mut Option<Time> {
        &mut self.last_sync_time
    }
}

impl WorkspaceChild for MlConnection {
    const LIST_STEP: &'static str = "list MlConnections";
    const DELETE_STEP: &'static str = "delete MlConnection";
    fn workspace_name(&self) -> &str {
        &self.spec.workspace_ref.name
    }
}

/// Sets Ready, Reconciling and Stalled from `outcome`.
pub fn set_kstatus(status: &mut MlConnectionStatus, outcome: &Phase, generation: Option<i64>, now: &Time) {
    status::set_kstatus(&mut status.conditions, outcome, "the connection matches the spec", generation, now);
    status.observed_generation = generation;
}

/// Why the spec cannot be resolved against its workspace (values the schema should have rejected).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConnection {
    /// The workspace's own place is invalid.
    #[error(transparent)]
    Workspace(#[from] InvalidWorkspace),
    /// `spec.azureName` (or the object's name) is no valid connection name.
    #[error("spec.azureName: {0}")]
    Name(#[source] crate::azure::ids::IdError),
}

/// The spec resolved against its workspace.
pub fn desired(mc: &MlConnection, ws: &MlWorkspace) -> Result<(ConnectionRef, DesiredConnection), InvalidConnection> {
    let workspace = parent::workspace_ref(ws)?;
    let name = mc.name_any();
    let c_name = ConnectionName::new(mc.spec.azure_name_or(&name)).map_err(InvalidConnection::Name)?;
    let owner = format!("{}/{}/{}", mc.namespace().unwrap_or_default(), name, mc.uid().unwrap_or_default());
    let desired = DesiredConnection {
        category: mc.spec.category.clone(),
        target: mc.spec.target.clone(),
        auth_type: mc.spec.auth_type,
        metadata: mc.spec.metadata.clone(),
        shared_to_all: mc.spec.shared_to_all,
        owner,
    };
    Ok((ConnectionRef::new(workspace, c_name), desired))
}

/// The ARM client a connection may use (and the binding's name), or why it may not use any: the binding that allows
/// the workspace must also allow the connection's category and target (unless `for_delete`). No Azure call.
async fn resolve_client(
    client: &kube::Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
    mc: &MlConnection,
    for_delete: bool,
) -> Result<Result<(ArmClient, SubscriptionBinding), String>, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let ask = Ask {
        namespace: &namespace,
        place: Place::of(&ws.spec),
        workspace: &ws.spec,
        access: &[],
        grantor: Grantor::Workspace,
        extra: &[],
    };
    let also = |binding: &SubscriptionBinding| match for_delete {
        true => Ok(()),
        false => policy::check_connection(binding, &mc.spec).map_err(|denial| denial.to_string()),
    };
    Ok(match binding::authorize(client, credentials, config, &ask, also).await? {
        Verdict::Permitted { arm, binding } => Ok((arm, *binding)),
        Verdict::Denied(message) => Err(message),
    })
}

/// Reads the credentials Secret (by name) and resolves the credentials of the auth type.
#[instrument(skip_all)]
async fn read_credentials(
    client: &kube::Client,
    mc: &MlConnection,
) -> Result<Result<ResolvedCredentials, plan::SecretProblem>, Error> {
    let secret_name = mc.spec.credentials_from.as_ref().map(|c| c.secret_name.as_str());
    let data = match secret_name {
        Some(name) => {
            let api: Api<KubeSecret> = Api::namespaced(client.clone(), &mc.namespace().unwrap_or_default());
            match api.get_opt(name).await {
                Ok(secret) => secret.map(|s| s.data.unwrap_or_default()),
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    let message = format!(
                        "the operator may not read Secret {name} in namespace {}: grant its service account get on secrets there (see the README)",
                        mc.namespace().unwrap_or_default()
                    );
                    return Ok(Err((Reason::NotPermitted, message)));
                }
                Err(e) => return Err(Error::kube("read credentials Secret")(e)),
            }
        }
        None => None,
    };
    Ok(plan::resolve_credentials(mc.spec.auth_type, secret_name, data.as_ref(), &mc.uid().unwrap_or_default()))
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

async fn reconcile_apply(mc: &MlConnection, ctx: &Context) -> Result<Requeue, Error> {
    let mut status = ctx.current_status(mc).unwrap_or_default();
    let (resync, stalled) = (ctx.config.resync_period, ctx.config.stalled_requeue);
    let Some(ws) = parent::get_workspace(&ctx.client, mc).await?.filter(parent::workspace_ready) else {
        let message = format!(
            "waiting for MlWorkspace {} to be Ready; nothing is sent to Azure before",
            mc.spec.workspace_ref.name
        );
        let outcome = Phase::Progressing { reason: Reason::WorkspaceNotReady, message };
        return ctx.finish_status(mc, status, outcome, resync).await;
    };
    parent::ensure_workspace_owner(&ctx.client, mc, &ws).await?;
    let (arm, binding) = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &ws, mc, false).await {
        Ok(Ok(permitted)) => permitted,
        Ok(Err(message)) => {
            return ctx
                .finish_status(mc, status, Phase::Stalled { reason: Reason::NotPermitted, message }, stalled)
                .await;
        }
        Err(e) => return ctx.fail_status(mc, status, e).await,
    };
    status.binding = Some(binding.name_any());
    let (c_ref, desired) = match desired(mc, &ws) {
        Ok(d) => d,
        Err(invalid) => {
            let outcome = Phase::Stalled { reason: Reason::InvalidSpec, message: invalid.to_string() };
            return ctx.finish_status(mc, status, outcome, stalled).await;
        }
    };
    let creds = match read_credentials(&ctx.client, mc).await {
        Ok(Ok(creds)) => creds,
        // A Secret is expected to appear (or be fixed) without a spec change: looked at again every resync.
        Ok(Err((reason, message))) => {
            return ctx.finish_status(mc, status, Phase::Stalled { reason, message }, resync).await;
        }
        Err(e) => return ctx.fail_status(mc, status, e).await,
    };
    if let Err(denial) = policy::check_identity(&binding, mc.spec.auth_type, &creds) {
        // The identity is named in the Secret: like a Secret problem, fixed without a spec change.
        let outcome = Phase::Stalled { reason: Reason::NotPermitted, message: denial.to_string() };
        return ctx.finish_status(mc, status, outcome, resync).await;
    }
    let observed = match arm.get_connection(&c_ref).await {
        Ok(o) => o,
        Err(e) => return ctx.fail_status(mc, status, Error::arm("get connection")(e)).await,
    };
    let plan = plan::plan(&desired, observed.as_ref(), &creds, status.credentials_hash.as_deref());
    debug!(write = ?plan.actions, "planned");
    report_observed(&mut status, &c_ref, observed.as_ref(), &desired.owner);
    if annotation_true(mc, ANNOTATION_PAUSED) {
        let in_sync = plan.converged();
        let message = match plan.actions.first() {
            None => "paused by annotation azml.dev/paused; nothing withheld".to_owned(),
            Some(put) => format!("paused by annotation azml.dev/paused; withheld: {}", put.what),
        };
        return ctx.finish_status(mc, status, Phase::Paused { in_sync, message }, resync).await;
    }
    if let Some((reason, message)) = plan.stall.clone() {
        return ctx.finish_status(mc, status, Phase::Stalled { reason, message }, stalled).await;
    }
    if let Err(e) = apply(ctx, mc, &arm, &c_ref, &desired, &creds, &plan, &mut status).await {
        return ctx.fail_status(mc, status, e).await;
    }
    ctx.finish_status(mc, status, Phase::Ready, resync).await
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
    let Some(plan::Put { reason: why, what }) = plan.actions.first() else { return Ok(()) };
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
    ctx.publish(mc, EventType::Normal, reason, note).await;
    Ok(())
}

/// The connection's cleanup: deletionPolicy Delete, not paused (the shell handled Retain and paused).
async fn reconcile_cleanup(mc: &MlConnection, ctx: &Context) -> Result<Deletion, Error> {
    let status = ctx.current_status(mc).unwrap_or_default();
    let Some(ws) = parent::get_workspace(&ctx.client, mc).await? else {
        info!("the workspace is gone: its connections go with it in Azure, or are left; removing the finalizer");
        return Ok(Deletion::Finished);
    };
    let arm = match resolve_client(&ctx.client, &ctx.credentials, &ctx.config, &ws, mc, true).await {
        Ok(Ok((arm, _))) => arm,
        Ok(Err(_)) if status.resource_id.is_none() => return Ok(Deletion::Finished),
        Ok(Err(message)) => {
            let outcome = Phase::Stalled { reason: Reason::NotPermitted, message };
            return ctx.finish_status(mc, status, outcome, ctx.config.stalled_requeue).await.map(Deletion::Wait);
        }
        Err(e) => return ctx.fail_status(mc, status, e).await.map(Deletion::Wait),
    };
    let Ok((c_ref, desired)) = desired(mc, &ws) else { return Ok(Deletion::Finished) };
    let found = match arm.get_connection(&c_ref).await {
        Ok(f) => f,
        // The workspace itself is gone from Azure: so are its connections.
        Err(e) if e.status() == Some(404) => None,
        Err(e) => return ctx.fail_status(mc, status, Error::arm("get connection")(e)).await.map(Deletion::Wait),
    };
    if found.as_ref().is_some_and(|c| plan::owner_of(c) == Some(desired.owner.as_str())) {
        if let Err(e) = arm.delete_connection(&c_ref).await {
            return ctx.fail_status(mc, status, Error::arm("delete connection")(e)).await.map(Deletion::Wait);
        }
        info!("deleted connection");
        ctx.publish(mc, EventType::Normal, events::DELETED, format!("Deleted connection {}", c_ref.id())).await;
    }
    Ok(Deletion::Finished)
}

/// What the controller would do for `mc` right now, without doing it: the same policy check, Secret read, observe
/// (one GET) and plan as a reconcile. Used by `azml-operator plan`.
pub async fn dry_run(client: &kube::Client, config: &ControllerConfig, mc: &MlConnection) -> Result<DryRun, Error> {
    let Some(ws) = parent::get_workspace(client, mc).await?.filter(parent::workspace_ready) else {
        let message = format!("MlWorkspace {} is not Ready", mc.spec.workspace_ref.name);
        return Ok(DryRun::blocked(Reason::WorkspaceNotReady, message));
    };
    let (arm, binding) = match resolve_client(client, &CredentialCache::default(), config, &ws, mc, false).await? {
        Ok(permitted) => permitted,
        Err(message) => return Ok(DryRun::blocked(Reason::NotPermitted, message)),
    };
    let (c_ref, desired) = match desired(mc, &ws) {
        Ok(d) => d,
        Err(invalid) => return Ok(DryRun::blocked(Reason::InvalidSpec, invalid.to_string())),
    };
    let creds = match read_credentials(client, mc).await? {
        Ok(creds) => creds,
        Err((reason, message)) => return Ok(DryRun::blocked(reason, message)),
    };
    if let Err(denial) = policy::check_identity(&binding, mc.spec.auth_type, &creds) {
        return Ok(DryRun::blocked(Reason::NotPermitted, denial.to_string()));
    }
    let observed = arm.get_connection(&c_ref).await.map_err(Error::arm("get connection"))?;
    let sent = mc.status.as_ref().and_then(|s| s.credentials_hash.as_deref());
    Ok(DryRun::Planned(plan::plan(&desired, observed.as_ref(), &creds, sent)))
}

/// The result of [`dry_run`]. Never holds a credential: only why a PUT would be sent.
pub type DryRun = crate::reconciler::plan::DryRun<plan::Put>;

impl ChildReconciler for MlConnection {
    async fn apply(shell: &Context, mc: &MlConnection) -> Result<Requeue, Error> {
        reconcile_apply(mc, shell).await
    }

    async fn cleanup(shell: &Context, mc: &MlConnection) -> Result<Deletion, Error> {
        reconcile_cleanup(mc, shell).await
    }
}
