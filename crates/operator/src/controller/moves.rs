//! Moves: a changed `spec.subscriptionId` or `spec.resourceGroup` moves the workspace (issue #9).
//!
//! Pure planning ([`decide`], [`resources_to_move`], [`stale_assignments`], [`known_blockers`],
//! [`MoveUpdate::apply`]) is separated from the I/O ([`reconcile_move`]).
//!
//! - **When**: `status.location` (where the workspace was last seen) differs from the spec, and the workspace exists
//!   (`status.resourceId`). A workspace never created is simply created at the new place by the normal pipeline.
//! - **Refuse**: with `movePolicy: Refuse` nothing happens in Azure: Stalled, reason `MoveRefused`.
//! - **Policy first**: before any ARM call the bindings must allow the namespace at both ends and set `allowMoves`
//!   ([`crate::policy::authorize_move`]); otherwise Stalled `NotPermitted`.
//! - **Validate, then move**: the target resource group is created if missing (and allowed), then
//!   `validateMoveResources` runs on the source resource group for the workspace and its dependent resources named
//!   by `name`; only when Azure says yes is `moveResources` called. A failed validation moves nothing: Stalled
//!   `MoveValidationFailed` with Azure's message, `status.location` keeps the old place; reverting the spec clears it.
//! - **Credentials**: validate, move and the removal of the old role assignments go to the source subscription with
//!   the source binding's credential (ARM wants the caller to hold write access on both resource groups); the
//!   re-read at the new place uses the destination's binding.
//! - **Restart safe**: each long-running call is recorded in `status.pendingOperation` (kinds [`VALIDATE_OPERATION`],
//!   [`MOVE_OPERATION`]) with the destination fixed in `status.move`; a restarted operator polls instead of calling
//!   again, and never creates the workspace at the new place while the move runs.
//! - **Access**: Azure does not carry role assignments. Once the move finished, the assignments the operator owned at
//!   the old scopes are deleted, and the access step re-creates every declared one at its new scope.
//! - **Conditions**: `Moved` is False while a move is validating or running or blocked (reason `ValidatingMove`,
//!   `Moving`, `MoveValidationFailed`, `MoveFailed`, `MoveRefused`, `NotPermitted`, ...), True (`Moved`) once done.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use serde::de::IgnoredAny;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::outcome::{MoveUpdate, Outcome, StatusChanges, WorkspaceFacts};
use super::plan::{Desired, Ownership, SpecError, named_dependencies};
use super::{Context, progress::poll_delay};
use crate::access::Scopes;
use crate::api::conditions::{self, Reason, events};
use crate::api::v1alpha1::{
    AccessState, AccessStatus, MlCompute, MlOnlineEndpoint, MlWorkspace, MlWorkspaceSpec, MlWorkspaceStatus, MovePhase,
    MovePolicy, MoveStatus, OWNER_TAG, PendingOperation, SubscriptionBinding, WorkspaceLocation,
};
use crate::azure::ids::ResourceGroupName;
use crate::azure::resource_groups::ResourceGroupCreate;
use crate::azure::resources::MoveRequest;
use crate::azure::{
    ArmClient, ArmError, LroHandle, LroPoll, LroStart, ResourceGroupRef, ResourceId, RoleAssignmentRef, SubscriptionId,
    WorkspaceRef,
};
use crate::policy;
use crate::reconciler::Phase;
use crate::reconciler::binding::Place;
use crate::reconciler::error::{Error, scrub};
use crate::reconciler::{binding, parent};

/// `status.pendingOperation.kind` of a running `validateMoveResources`.
pub const VALIDATE_OPERATION: &str = "ValidateMove";
/// ARM's error code for a write to a locked scope (resource groups are locked while a move runs).
const SCOPE_LOCKED: &str = "ScopeLocked";

/// `status.pendingOperation.kind` of a running `moveResources`.
pub const MOVE_OPERATION: &str = "MoveResources";

/// Whether `kind` is one of the move step's operations.
pub fn is_move_operation(kind: &str) -> bool {
    kind == VALIDATE_OPERATION || kind == MOVE_OPERATION
}

/// Whether two locations name the same subscription and resource group (ARM names are case-insensitive).
pub fn same_location(a: &WorkspaceLocation, b: &WorkspaceLocation) -> bool {
    a.subscription_id.eq_ignore_ascii_case(&b.subscription_id)
        && a.resource_group.eq_ignore_ascii_case(&b.resource_group)
}

/// Where the spec puts the workspace.
pub fn spec_location(spec: &MlWorkspaceSpec) -> WorkspaceLocation {
    WorkspaceLocation { subscription_id: spec.subscription_id.clone(), resource_group: spec.resource_group.clone() }
}

fn describe(l: &WorkspaceLocation) -> String {
    format!("subscription {} resource group {}", l.subscription_id, l.resource_group)
}

/// What the move step does in this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum MoveStep {
    /// No move is involved: the normal pipeline runs.
    None,
    /// The spec is back where the workspace is after a failed, refused or abandoned move: the `Moved` condition and
    /// the unfinished `status.move` are cleared, then the normal pipeline runs.
    Clear,
    /// `movePolicy: Refuse`: Stalled `MoveRefused`, nothing happens in Azure.
    Refuse {
        /// Where the workspace is.
        from: WorkspaceLocation,
        /// Where the spec wants it.
        to: WorkspaceLocation,
    },
    /// Start a move: policy, known blockers, target resource group, then validation.
    Start {
        /// Where the workspace is.
        from: WorkspaceLocation,
        /// Where the spec wants it.
        to: WorkspaceLocation,
    },
    /// Poll the running validation.
    PollValidation {
        /// The move.
        record: MoveStatus,
        /// Its poller.
        handle: LroHandle,
    },
    /// Poll the running move.
    PollMove {
        /// The move.
        record: MoveStatus,
        /// Its poller.
        handle: LroHandle,
    },
    /// The move ran (its poller finished or was lost): re-read at the destination and finish.
    Finish {
        /// The move.
        record: MoveStatus,
    },
}

/// Why a recorded move operation cannot be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableMove {
    /// `status.pendingOperation` names a move step but `status.move` is gone.
    #[error("a {0} operation without status.move")]
    NoRecord(String),
    /// The stored poller does not parse.
    #[error("poller: {0}")]
    Poller(String),
}

/// A recorded move that cannot be carried out as recorded: the field of `status.move` and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadMoveRecord {
    /// A location or resource id that does not parse.
    #[error("status.move.{field}: {source}")]
    Id {
        /// `from`, `to` or `resources`.
        field: &'static str,
        /// The id layer's verdict.
        #[source]
        source: crate::azure::ids::IdError,
    },
    /// No resource to move.
    #[error("status.move.resources is empty")]
    NoResources,
}

/// Decides the move step from the spec and the status. Pure. An error means the recorded move operation cannot
/// be resumed (it is then dropped and reported, like any unreadable `pendingOperation`).
pub fn decide(spec: &MlWorkspaceSpec, status: Option<&MlWorkspaceStatus>) -> Result<MoveStep, UnreadableMove> {
    let Some(status) = status else {
        return Ok(MoveStep::None);
    };
    let wanted = spec_location(spec);
    let record = status.move_status.as_ref();
    if let Some(op) = status.pending_operation.as_ref().filter(|op| is_move_operation(&op.kind)) {
        let record = record.ok_or_else(|| UnreadableMove::NoRecord(op.kind.clone()))?;
        let handle: LroHandle = serde_json::from_str(&op.poller).map_err(|e| UnreadableMove::Poller(e.to_string()))?;
        if op.kind == MOVE_OPERATION {
            // Running in Azure whatever the spec says now: it is polled to its end.
            return Ok(MoveStep::PollMove { record: record.clone(), handle });
        }
        if same_location(&record.to, &wanted) {
            return Ok(MoveStep::PollValidation { record: record.clone(), handle });
        }
        // The spec changed while Azure validated: nothing moved, so the validation is moot; decide afresh.
    }
    if let Some(record) = record.filter(|r| r.phase == MovePhase::Moving) {
        return Ok(MoveStep::Finish { record: record.clone() });
    }
    if let (Some(location), Some(_)) = (&status.location, &status.resource_id)
        && !same_location(location, &wanted)
    {
        let (from, to) = (location.clone(), wanted);
        return Ok(match spec.move_policy {
            MovePolicy::Refuse => MoveStep::Refuse { from, to },
            MovePolicy::Move => MoveStep::Start { from, to },
        });
    }
    let unfinished = record.is_some_and(|r| r.phase != MovePhase::Succeeded);
    let moved_false = status.conditions.iter().any(|c| c.type_ == conditions::MOVED && c.status != "True");
    Ok(if unfinished || moved_false { MoveStep::Clear } else { MoveStep::None })
}

/// Whether the move step has anything to do for this status and spec (including reporting an unreadable move).
pub fn involved(spec: &MlWorkspaceSpec, status: Option<&MlWorkspaceStatus>) -> bool {
    !matches!(decide(spec, status), Ok(MoveStep::None))
}

/// Conditions the operator knows, before asking Azure, that block a move of `ws`; each entry says which and why.
///
/// Known from Kubernetes: the operator's own MlOnlineEndpoints and MlComputes on the workspace (Azure refuses to
/// move a workspace with online endpoints or computes). Azure's validation reports the rest (customer-managed
/// keys, ...). Two list calls, made only when a move is about to be validated.
pub async fn known_blockers(ctx: &Context, ws: &MlWorkspace) -> Result<Vec<String>, Error> {
    let api: Api<MlOnlineEndpoint> = Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    let endpoints =
        api.list(&Default::default()).await.map_err(Error::kube("list the workspace's MlOnlineEndpoints"))?;
    let mut blockers = endpoint_blockers(&ws.name_any(), &endpoints.items);
    let computes = parent::list_children::<MlCompute>(&ctx.client, ws).await?;
    blockers.extend(compute_blockers(&parent::names_of(&ws.name_any(), &computes)));
    Ok(blockers)
}

/// The MlComputes (by name) of a workspace, as blockers of its move. Pure.
pub fn compute_blockers(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "it has computes ({}): Azure moves a workspace only without compute clusters or instances; delete the \
         MlComputes first",
        names.join(", ")
    )]
}

/// The MlOnlineEndpoints among `endpoints` that reference workspace `name`, as blockers of its move. Pure.
pub fn endpoint_blockers(name: &str, endpoints: &[MlOnlineEndpoint]) -> Vec<String> {
    let mut names: Vec<String> =
        endpoints.iter().filter(|e| e.spec.workspace_ref.name == name).map(ResourceExt::name_any).collect();
    names.sort();
    if names.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "it has online endpoints ({}): Azure moves a workspace only without online endpoints or deployments; delete \
         the MlOnlineEndpoints first",
        names.join(", ")
    )]
}

fn parse_location(l: &WorkspaceLocation) -> Result<ResourceGroupRef, crate::azure::ids::IdError> {
    Ok(ResourceGroupRef::new(
        SubscriptionId::new(&l.subscription_id)?,
        ResourceGroupName::new(l.resource_group.clone())?,
    ))
}

/// The workspace `desired` names, in resource group `rg`.
fn workspace_at(desired: &Desired, rg: ResourceGroupRef) -> WorkspaceRef {
    WorkspaceRef::new(rg, desired.workspace.name.clone())
}

/// The top-level resources that move together: the workspace and its dependent resources named by `name` (they
/// live beside it), all at the source. Pure.
pub fn resources_to_move(spec: &MlWorkspaceSpec, workspace: &WorkspaceRef) -> Result<Vec<ResourceId>, SpecError> {
    let mut ids = vec![workspace.resource_id()];
    let deps = named_dependencies(spec, &workspace.resource_group)?;
    for id in deps {
        if !ids.iter().any(|i| i.as_str().eq_ignore_ascii_case(id.as_str())) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The role assignments the operator owns (`Granted` in `status.access`) at one of the old scopes that the move
/// changes: the workspace scope always, the resource group scope always, the subscription scope only across
/// subscriptions. Azure does not carry them; they are deleted once the move is done. Pure.
pub fn stale_assignments(access: &[AccessStatus], from: &Scopes, to: &Scopes) -> Vec<RoleAssignmentRef> {
    let mut out: Vec<RoleAssignmentRef> = Vec::new();
    for entry in access.iter().filter(|a| a.state == AccessState::Granted) {
        let (Some(kind), Ok(name)) = (from.kind_of(&entry.scope), Uuid::try_parse(&entry.assignment_name)) else {
            continue;
        };
        if to.get(kind).as_str().eq_ignore_ascii_case(from.get(kind).as_str()) {
            continue;
        }
        let target = RoleAssignmentRef::new(from.get(kind).clone(), name);
        if !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// What the move step decided.
pub enum MoveOutcome {
    /// The reconcile ends with this outcome.
    Done(Box<Outcome>),
    /// The workspace is where the spec wants it: run the normal pipeline (re-read the status first: the step may
    /// have stored a checkpoint).
    Continue,
}

/// The ARM clients of both ends.
struct Clients {
    source: ArmClient,
    target: ArmClient,
}

/// Why the move may not go on.
enum Refusal {
    /// The bindings do not allow it (reason `NotPermitted`).
    NotPermitted(String),
    /// The operator knows it cannot succeed (reason `MoveBlocked`).
    Blocked(String),
}

/// A move between subscriptions of different Entra tenants, which Azure does not support, or `None`. Pure.
pub fn tenant_blocker(source: &SubscriptionBinding, target: &SubscriptionBinding) -> Option<String> {
    let (from, to) = (&source.spec.tenant_id, &target.spec.tenant_id);
    (!from.eq_ignore_ascii_case(to)).then(|| {
        format!(
            "subscription {} is in Entra tenant {from} and subscription {} in tenant {to}; Azure moves workspaces only within one tenant",
            source.spec.subscription_id, target.spec.subscription_id
        )
    })
}

/// Builds the source client after the policy check (with `starting`, the move's: both ends allow moves, one tenant).
async fn clients(
    ctx: &Context,
    ws: &MlWorkspace,
    from: &WorkspaceLocation,
    target: &ArmClient,
    starting: bool,
) -> Result<Result<Clients, Refusal>, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let subscriptions = [from.subscription_id.as_str(), ws.spec.subscription_id.as_str()];
    let (bindings, labels) = binding::bindings_and_labels(&ctx.client, &namespace, &subscriptions).await?;
    // The old place only needs to be usable by this namespace: the access entries are checked at the new one.
    let source_req = policy::Request {
        namespace: &namespace,
        namespace_labels: labels.as_ref(),
        subscription_id: &from.subscription_id,
        resource_group: &from.resource_group,
        access: &[],
        grantor: policy::Grantor::Workspace,
    };
    let target_req = binding::request(&super::ask(ws, &namespace, Place::of(&ws.spec)), labels.as_ref());
    let target_binding = if starting {
        match policy::authorize_move(&bindings, &source_req, &target_req) {
            Ok(b) => Some(b),
            Err(denial) => return Ok(Err(Refusal::NotPermitted(denial.to_string()))),
        }
    } else {
        None
    };
    let source_binding = match policy::authorize(&bindings, &source_req) {
        Ok(b) => b,
        Err(denial) => return Ok(Err(Refusal::NotPermitted(denial.to_string()))),
    };
    if let Some(blocker) = target_binding.and_then(|t| tenant_blocker(source_binding, t)) {
        return Ok(Err(Refusal::Blocked(blocker)));
    }
    let source = ctx
        .credentials
        .client_for(&ctx.client, source_binding, &ctx.config.credential_sources(), &ctx.config.arm)
        .await?;
    Ok(Ok(Clients { source, target: target.clone() }))
}

/// A message naming Azure's verdict: code, message, and the blocking conditions in `details`.
pub fn arm_verdict(err: &ArmError) -> String {
    let body = match err {
        ArmError::Api { body, .. } | ArmError::LroFailed { body, .. } => Some(body),
        _ => None,
    };
    let Some(body) = body else {
        return scrub(&err.to_string());
    };
    let mut text = format!("{}: {}", body.code, body.message);
    for d in &body.details {
        text.push_str(&format!("; {}: {}", d.code, d.message));
    }
    scrub(&text)
}

/// One reconcile's view of the move.
struct Step<'a> {
    ctx: &'a Context,
    ws: &'a MlWorkspace,
    desired: &'a Desired,
    status: Option<&'a MlWorkspaceStatus>,
}

impl Step<'_> {
    fn previous_pending(&self) -> Option<PendingOperation> {
        self.status.and_then(|s| s.pending_operation.clone())
    }

    fn pending(&self, kind: &str, handle: &LroHandle) -> PendingOperation {
        PendingOperation {
            kind: kind.to_owned(),
            // LroHandle is plain data (strings, enums, a timestamp); serialising it cannot fail.
            poller: serde_json::to_string(handle).unwrap_or_default(),
            started_at: Some(Time(handle.started_at)),
            generation: self.ws.metadata.generation,
        }
    }

    /// Stalled with `reason`; `Moved` False with the same reason; `pending` is what stays recorded.
    async fn stall(
        &self,
        reason: Reason,
        message: String,
        record: Option<Option<MoveStatus>>,
        pending: Option<PendingOperation>,
    ) -> MoveOutcome {
        info!(%reason, %message, "move stalled");
        let update = MoveUpdate { record, moved: Some((false, reason, message.clone())), drop_access: vec![] };
        MoveOutcome::Done(Box::new(Outcome::stalled(reason, message).pending(pending).moved(update)))
    }

    /// Progressing with `reason` (Moved False, same reason), `pending` recorded.
    async fn progressing(
        &self,
        reason: Reason,
        message: String,
        record: MoveStatus,
        pending: Option<PendingOperation>,
        workspace: WorkspaceFacts,
        requeue: Duration,
    ) -> MoveOutcome {
        let update = MoveUpdate {
            record: Some(Some(record)),
            moved: Some((false, reason, message.clone())),
            drop_access: vec![],
        };
        let outcome = Outcome::progressing(reason, message).facts(workspace).pending(pending).moved(update);
        MoveOutcome::Done(Box::new(outcome.requeue(requeue)))
    }

    /// A failed call: THE error policy decides (stall or retry); `pending` stays recorded.
    async fn fail(&self, err: Error, pending: Option<PendingOperation>) -> MoveOutcome {
        MoveOutcome::Done(Box::new(Outcome::failed(err).pending(pending)))
    }

    fn failed_record(record: &MoveStatus, message: &str) -> Option<Option<MoveStatus>> {
        Some(Some(MoveStatus { phase: MovePhase::Failed, message: Some(message.to_owned()), ..record.clone() }))
    }

    /// Stalled because the bindings do not allow the move or it cannot succeed; `pending` stays recorded.
    async fn refused(&self, refusal: Refusal, pending: Option<PendingOperation>) -> MoveOutcome {
        match refusal {
            Refusal::NotPermitted(message) => self.stall(Reason::NotPermitted, message, None, pending).await,
            Refusal::Blocked(message) => self.stall(Reason::MoveBlocked, message, None, pending).await,
        }
    }

    async fn refuse(&self, from: &WorkspaceLocation, to: &WorkspaceLocation) -> MoveOutcome {
        let message = format!(
            "movePolicy is Refuse: the workspace stays in {}; spec asks for {}. Restore spec.subscriptionId/resourceGroup, or set movePolicy: Move",
            describe(from),
            describe(to)
        );
        self.stall(Reason::MoveRefused, message, None, self.previous_pending()).await
    }

    async fn start(&self, target: &ArmClient, from: WorkspaceLocation, to: WorkspaceLocation) -> MoveOutcome {
        let (ctx, ws, desired) = (self.ctx, self.ws, self.desired);
        let (from_rg, to_rg) = match (parse_location(&from), parse_location(&to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => {
                return self.stall(Reason::InvalidSpec, format!("cannot move: {e}"), Some(None), None).await;
            }
        };
        if desired.paused {
            let message = format!(
                "paused by annotation azml.dev/paused; withheld: move from {} to {}",
                describe(&from),
                describe(&to)
            );
            let update = MoveUpdate {
                record: None,
                moved: Some((false, Reason::Paused, message.clone())),
                ..Default::default()
            };
            let paused = Outcome::phase(Phase::Paused { in_sync: false, message });
            return MoveOutcome::Done(Box::new(paused.pending(self.previous_pending()).moved(update)));
        }
        // The policy before any call: both ends allowed, both bindings allow moves.
        let clients = match clients(ctx, ws, &from, target, true).await {
            Ok(Ok(c)) => c,
            Ok(Err(refusal)) => return self.refused(refusal, self.previous_pending()).await,
            Err(e) => return self.fail(e, self.previous_pending()).await,
        };
        let blockers = match known_blockers(ctx, ws).await {
            Ok(b) => b,
            Err(e) => return self.fail(e, self.previous_pending()).await,
        };
        if !blockers.is_empty() {
            let message = format!("the workspace cannot be moved: {}", blockers.join("; "));
            return self.stall(Reason::MoveBlocked, message, None, self.previous_pending()).await;
        }
        let old = workspace_at(desired, from_rg.clone());
        let found = match clients.source.get_workspace(&old).await {
            Ok(w) => w,
            Err(e) => {
                return self
                    .fail(Error::arm("read workspace at the source of the move")(e), self.previous_pending())
                    .await;
            }
        };
        let record = |phase, resources: Vec<String>| MoveStatus {
            phase,
            from: from.clone(),
            to: to.clone(),
            resources,
            message: None,
        };
        let Some(found) = found else {
            // Not at the old place: moved already (a lost status, or someone moved it), or gone.
            let new = workspace_at(desired, to_rg.clone());
            return match clients.target.get_workspace(&new).await {
                Ok(Some(_)) => self.finalize(&clients, record(MovePhase::Moving, vec![]), true).await,
                // Gone from Azure: nothing to move; the normal pipeline re-creates it where the spec says.
                Ok(None) => {
                    warn!(workspace = %old.id(), "the workspace to move no longer exists");
                    MoveOutcome::Continue
                }
                Err(e) => self.fail(Error::arm("read workspace at the destination of the move")(e), None).await,
            };
        };
        if desired.owner.classify(found.tags.as_ref().and_then(crate::api::v1alpha1::owner_tag_value))
            != Ownership::Ours
        {
            let message =
                format!("workspace {} is not owned by this resource ({OWNER_TAG} tag); not moving it", old.id());
            return self.stall(Reason::MoveBlocked, message, None, None).await;
        }
        if let Some(state) = found.properties.provisioning_state.as_ref().filter(|s| !s.is_terminal()) {
            // An operation of the workspace itself is running: moving now would fail (or race it).
            let message = format!("waiting for provisioning state {state:?} to end before moving");
            return self
                .progressing(
                    Reason::OperationInProgress,
                    message,
                    record(MovePhase::Validating, vec![]),
                    self.previous_pending(),
                    WorkspaceFacts::Present(Box::new(found)),
                    ctx.config.lro_poll_max,
                )
                .await;
        }
        let resources = match resources_to_move(&ws.spec, &old) {
            Ok(r) => r,
            Err(e) => return self.stall(Reason::InvalidSpec, e.to_string(), None, None).await,
        };
        // The destination resource group: created when missing and allowed.
        match clients.target.get_resource_group(&to_rg).await {
            Ok(Some(_)) => {}
            Ok(None) if desired.create_resource_group => {
                let body = ResourceGroupCreate {
                    location: desired.location.clone(),
                    tags: Some([(OWNER_TAG.to_owned(), desired.owner.tag_value())].into_iter().collect()),
                    managed_by: None,
                };
                if let Err(e) = clients.target.create_or_update_resource_group(&to_rg, &body).await {
                    return self.fail(Error::arm("create the destination resource group")(e), None).await;
                }
                info!(resource_group = %to_rg.id(), "created the destination resource group");
                ctx.publish(ws, EventType::Normal, events::CREATED, format!("Created resource group {}", to_rg.id()))
                    .await;
            }
            Ok(None) => {
                let message = format!(
                    "the destination resource group {} does not exist and spec.createResourceGroup is false",
                    to_rg.name
                );
                return self.stall(Reason::ResourceGroupMissing, message, None, None).await;
            }
            Err(e) => return self.fail(Error::arm("read the destination resource group")(e), None).await,
        }
        let ids: Vec<String> = resources.iter().map(ToString::to_string).collect();
        let record = record(MovePhase::Validating, ids.clone());
        let request = MoveRequest { resources, target_resource_group: to_rg };
        ctx.publish(
            ws,
            EventType::Normal,
            events::MOVE_VALIDATING,
            format!("Validating the move of {} from {} to {}", ids.join(", "), describe(&from), describe(&to)),
        )
        .await;
        match clients.source.begin_validate_move_resources(&from_rg, &request).await {
            Ok(LroStart::Pending(handle)) => {
                let message = format!("Azure validates the move from {} to {}", describe(&from), describe(&to));
                let pending = self.pending(VALIDATE_OPERATION, &handle);
                self.progressing(
                    Reason::ValidatingMove,
                    message,
                    record,
                    Some(pending),
                    WorkspaceFacts::Present(Box::new(found)),
                    poll_delay(ctx, &handle),
                )
                .await
            }
            Ok(LroStart::Done(())) => self.begin_move(&clients, &from_rg, request, record).await,
            Err(e) if e.is_transient() => self.fail(Error::arm("validate the move")(e), None).await,
            // A move of these resource groups runs (ours, sent before a restart, or someone's): wait for its end.
            Err(e) if e.code() == Some(SCOPE_LOCKED) => {
                let message = format!("a move into or out of {} runs in Azure; waiting for it to end", describe(&from));
                let found = WorkspaceFacts::Present(Box::new(found));
                self.progressing(Reason::Moving, message, record, None, found, ctx.config.lro_poll_max).await
            }
            Err(e) => self.validation_failed(&record, &e).await,
        }
    }

    async fn validation_failed(&self, record: &MoveStatus, err: &ArmError) -> MoveOutcome {
        let message = format!("Azure refuses the move, nothing moved: {}", arm_verdict(err));
        warn!(%message, "move validation failed");
        self.stall(Reason::MoveValidationFailed, message.clone(), Self::failed_record(record, &message), None).await
    }

    async fn poll_validation(&self, target: &ArmClient, record: MoveStatus, handle: LroHandle) -> MoveOutcome {
        let pending = Some(self.pending(VALIDATE_OPERATION, &handle));
        // The policy again: it may have changed since the validation started, and the move is a write.
        let clients = match clients(self.ctx, self.ws, &record.from, target, true).await {
            Ok(Ok(c)) => c,
            Ok(Err(refusal)) => return self.refused(refusal, None).await,
            Err(e) => return self.fail(e, pending).await,
        };
        match clients.source.poll_lro::<IgnoredAny>(&handle).await {
            Ok(LroPoll::InProgress(next)) => {
                let message =
                    format!("Azure validates the move from {} to {}", describe(&record.from), describe(&record.to));
                let requeue = poll_delay(self.ctx, &next);
                let pending = Some(self.pending(VALIDATE_OPERATION, &next));
                self.progressing(Reason::ValidatingMove, message, record, pending, WorkspaceFacts::Unknown, requeue)
                    .await
            }
            Ok(LroPoll::Done(_)) => {
                let (from_rg, request) = match request_of(&record) {
                    Ok(r) => r,
                    Err(bad) => return self.stall(Reason::InvalidSpec, bad.to_string(), Some(None), None).await,
                };
                self.begin_move(&clients, &from_rg, request, record).await
            }
            Err(e) if e.is_transient() => self.fail(Error::arm("poll the move validation")(e), pending).await,
            Err(e) => self.validation_failed(&record, &e).await,
        }
    }

    async fn begin_move(
        &self,
        clients: &Clients,
        from_rg: &ResourceGroupRef,
        request: MoveRequest,
        record: MoveStatus,
    ) -> MoveOutcome {
        let (ctx, ws) = (self.ctx, self.ws);
        let record = MoveStatus { phase: MovePhase::Moving, ..record };
        // Write-ahead: status says Moving (and no longer holds the validation) before moveResources is sent, so an
        // operator that stops before it hears Azure's answer never sends it again: it looks where the workspace is
        // ([`MoveStep::Finish`]) and validates again only if it is still at the source.
        let message = format!("Azure moves the workspace to {}", describe(&record.to));
        let update = MoveUpdate {
            record: Some(Some(record.clone())),
            moved: Some((false, Reason::Moving, message.clone())),
            drop_access: vec![],
        };
        let write_ahead = StatusChanges { moved: Some(update), ..Default::default() };
        if let Err(e) = ctx.checkpoint(ws, &Phase::Progressing { reason: Reason::Moving, message }, &write_ahead).await
        {
            return MoveOutcome::Done(Box::new(Outcome::failed(e)));
        }
        match clients.source.begin_move_resources(from_rg, &request).await {
            Ok(start) => {
                info!(from = %from_rg.id(), to = %request.target_resource_group.id(), "move accepted");
                let note = format!(
                    "Moving {} to {}; the workspace is unavailable until the move ends",
                    record.resources.join(", "),
                    describe(&record.to)
                );
                ctx.publish(ws, EventType::Normal, events::MOVE_STARTED, note).await;
                match start {
                    LroStart::Pending(handle) => {
                        let message = format!("Azure moves the workspace to {}", describe(&record.to));
                        let pending = Some(self.pending(MOVE_OPERATION, &handle));
                        let requeue = poll_delay(ctx, &handle);
                        self.progressing(Reason::Moving, message, record, pending, WorkspaceFacts::Unknown, requeue)
                            .await
                    }
                    LroStart::Done(()) => self.finalize(clients, record, true).await,
                }
            }
            // Unknown whether Azure took it: the next reconcile looks (validates again, or finds it moved).
            Err(e) if e.is_transient() => self.fail(Error::arm("move")(e), None).await,
            Err(e) => self.move_failed(&record, &e).await,
        }
    }

    async fn move_failed(&self, record: &MoveStatus, err: &ArmError) -> MoveOutcome {
        let message = format!("the move failed: {}", arm_verdict(err));
        warn!(%message, "move failed");
        self.stall(Reason::MoveFailed, message.clone(), Self::failed_record(record, &message), None).await
    }

    async fn poll_move(&self, target: &ArmClient, record: MoveStatus, handle: LroHandle) -> MoveOutcome {
        let pending = Some(self.pending(MOVE_OPERATION, &handle));
        let clients = match clients(self.ctx, self.ws, &record.from, target, false).await {
            Ok(Ok(c)) => c,
            Ok(Err(refusal)) => return self.refused(refusal, pending).await,
            Err(e) => return self.fail(e, pending).await,
        };
        match clients.source.poll_lro::<IgnoredAny>(&handle).await {
            Ok(LroPoll::InProgress(next)) => {
                let message = format!("Azure moves the workspace to {}", describe(&record.to));
                let requeue = poll_delay(self.ctx, &next);
                let pending = Some(self.pending(MOVE_OPERATION, &next));
                self.progressing(Reason::Moving, message, record, pending, WorkspaceFacts::Unknown, requeue).await
            }
            Ok(LroPoll::Done(_)) => self.finalize(&clients, record, true).await,
            // The status monitor is gone: look where the workspace is.
            Err(e) if e.is_not_found() => {
                warn!(error = %scrub(&e.to_string()), "move status no longer available; looking at the destination");
                self.finalize(&clients, record, false).await
            }
            Err(e) if e.is_transient() => self.fail(Error::arm("poll the move")(e), pending).await,
            Err(e) => self.move_failed(&record, &e).await,
        }
    }

    /// The move ran: re-read at the destination, remove the old role assignments, record the new place.
    ///
    /// `confirmed`: Azure said the move ended. Otherwise (a restart after moveResources may have been sent) a
    /// workspace still at the source was not moved, or is being moved: the move starts again from its validation,
    /// which Azure refuses (`ScopeLocked`) while a move runs.
    async fn finalize(&self, clients: &Clients, record: MoveStatus, confirmed: bool) -> MoveOutcome {
        let (ctx, ws, desired) = (self.ctx, self.ws, self.desired);
        let (from_rg, to_rg) = match (parse_location(&record.from), parse_location(&record.to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => {
                return self.stall(Reason::InvalidSpec, format!("status.move: {e}"), Some(None), None).await;
            }
        };
        let (old, new) = (workspace_at(desired, from_rg), workspace_at(desired, to_rg));
        let moving = MoveStatus { phase: MovePhase::Moving, ..record.clone() };
        let found = match clients.target.get_workspace(&new).await {
            Ok(w) => w,
            Err(e) => return self.fail(Error::arm("read workspace at the destination of the move")(e), None).await,
        };
        let Some(found) = found else {
            return match clients.source.get_workspace(&old).await {
                Ok(Some(found)) if !confirmed => {
                    let message = format!("the workspace is still at {}: validating the move again", old.id());
                    info!(%message, "move not confirmed");
                    let record = MoveStatus { phase: MovePhase::Validating, ..record };
                    let found = WorkspaceFacts::Present(Box::new(found));
                    self.progressing(Reason::ValidatingMove, message, record, None, found, ctx.config.lro_poll_min)
                        .await
                }
                Ok(Some(_)) => {
                    let message = format!("the move ended but the workspace is still at {}", old.id());
                    self.stall(Reason::MoveFailed, message.clone(), Self::failed_record(&record, &message), None).await
                }
                Ok(None) => {
                    // Neither here nor there: ARM's reads may lag behind the move; look again soon.
                    let message = format!("waiting for the workspace to appear at {}", new.id());
                    self.progressing(
                        Reason::Moving,
                        message,
                        moving,
                        None,
                        WorkspaceFacts::Unknown,
                        ctx.config.lro_poll_max,
                    )
                    .await
                }
                Err(e) => self.fail(Error::arm("read workspace at the source of the move")(e), None).await,
            };
        };
        // Azure carries no role assignment: remove the ones owned at the old scopes (the access step creates the
        // declared ones at the new scopes next).
        let access = self.status.map(|s| s.access.as_slice()).unwrap_or_default();
        let stale = stale_assignments(access, &Scopes::at(&old), &Scopes::at(&new));
        let mut dropped = Vec::new();
        let marker = crate::access::marker(&desired.owner.namespace, &desired.owner.name);
        for ra in &stale {
            // Only what still carries the operator's marker is deleted (status alone is not trusted with deletions
            // outside the workspace's current scopes); what is gone, Azure removed with its scope.
            let result = match clients.source.get_role_assignment(ra).await {
                Ok(Some(found)) if found.properties.description.as_deref() == Some(marker.as_str()) => {
                    clients.source.delete_role_assignment(ra).await.map(|_| true)
                }
                Ok(Some(_)) => {
                    warn!(assignment = %ra.id(), "role assignment at the old scope no longer carries the operator's marker; left alone");
                    Ok(false)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            match result {
                Ok(false) => dropped.push(ra.name),
                Ok(true) => {
                    info!(assignment = %ra.id(), "removed role assignment at the old scope");
                    ctx.publish(
                        ws,
                        EventType::Normal,
                        events::ACCESS_REVOKED,
                        format!("Removed {} (old scope after the move)", ra.id()),
                    )
                    .await;
                    dropped.push(ra.name);
                }
                Err(e) if e.is_not_found() => dropped.push(ra.name),
                Err(e) if e.is_transient() => {
                    // Kept in status (and record still Moving): the next reconcile deletes what is left.
                    let update = MoveUpdate {
                        record: Some(Some(moving.clone())),
                        moved: Some((false, Reason::Moving, "removing role assignments at the old scopes".into())),
                        drop_access: dropped,
                    };
                    let failed = Outcome::failed(Error::arm("delete role assignment at the old scope")(e));
                    return MoveOutcome::Done(Box::new(
                        failed.facts(WorkspaceFacts::Present(Box::new(found))).moved(update),
                    ));
                }
                Err(e) => {
                    let message = format!(
                        "the workspace moved, but role assignment {} at the old scope cannot be removed: {}",
                        ra.id(),
                        arm_verdict(&e)
                    );
                    let update = MoveUpdate {
                        record: Some(Some(moving.clone())),
                        moved: Some((false, Reason::MoveFailed, message.clone())),
                        drop_access: dropped,
                    };
                    return MoveOutcome::Done(Box::new(Outcome::stalled(Reason::MoveFailed, message).moved(update)));
                }
            }
        }
        let message = format!("moved from {} to {}", describe(&record.from), describe(&record.to));
        info!(%message, "move finished");
        ctx.publish(ws, EventType::Normal, events::MOVED, format!("Moved the workspace {message}")).await;
        let update = MoveUpdate {
            record: Some(Some(MoveStatus { phase: MovePhase::Succeeded, message: None, ..record.clone() })),
            moved: Some((true, Reason::Moved, message.clone())),
            drop_access: dropped,
        };
        let phase = Phase::Progressing { reason: Reason::Moved, message };
        let moved = Outcome::phase(phase.clone()).facts(WorkspaceFacts::Present(Box::new(found))).at(new).moved(update);
        if !same_location(&record.to, &spec_location(&ws.spec)) {
            // The spec changed while the move ran: the next reconcile moves on from here.
            return MoveOutcome::Done(Box::new(moved.requeue(ctx.config.lro_poll_min)));
        }
        // Stored before the pipeline runs: the access and key steps read the new place and the pruned access list
        // back from status.
        match ctx.checkpoint(ws, &phase, &moved.status).await {
            Ok(()) => MoveOutcome::Continue,
            Err(e) => MoveOutcome::Done(Box::new(Outcome::failed(e))),
        }
    }
}

/// The source resource group and the request of a recorded move.
fn request_of(record: &MoveStatus) -> Result<(ResourceGroupRef, MoveRequest), BadMoveRecord> {
    let from = parse_location(&record.from).map_err(|source| BadMoveRecord::Id { field: "from", source })?;
    let to = parse_location(&record.to).map_err(|source| BadMoveRecord::Id { field: "to", source })?;
    let resources = record
        .resources
        .iter()
        .map(|r| ResourceId::parse(r).map_err(|source| BadMoveRecord::Id { field: "resources", source }))
        .collect::<Result<Vec<_>, _>>()?;
    if resources.is_empty() {
        return Err(BadMoveRecord::NoResources);
    }
    Ok((from, MoveRequest { resources, target_resource_group: to }))
}

/// The move step. `target` is the client of the spec's binding (already authorized for the destination).
#[instrument(skip_all, fields(workspace = %desired.workspace.id()))]
pub async fn reconcile_move(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    target: &ArmClient,
    status: Option<&MlWorkspaceStatus>,
) -> MoveOutcome {
    let step = Step { ctx, ws, desired, status };
    let decision = match decide(&ws.spec, status) {
        Ok(d) => d,
        Err(unreadable) => {
            // Reported, and forgotten: the next reconcile looks at Azure afresh (finds the workspace moved or not).
            return step.fail(Error::BadPendingOperation(unreadable.to_string()), None).await;
        }
    };
    // A stored poller must stay in the subscription the move started from (status is writable by others).
    if let MoveStep::PollValidation { record, .. } | MoveStep::PollMove { record, .. } = &decision
        && let Err(foreign) = policy::check_pending_operation(status, &record.from.subscription_id)
    {
        return step.fail(Error::BadPendingOperation(foreign.to_string()), None).await;
    }
    match decision {
        MoveStep::None => MoveOutcome::Continue,
        MoveStep::Clear => {
            let keep = status.and_then(|s| s.move_status.clone()).filter(|r| r.phase == MovePhase::Succeeded);
            let update = MoveUpdate { record: Some(keep), moved: None, drop_access: vec![] };
            // The normal pipeline reports the outcome right after; this checkpoint only records that the move is off.
            let phase = Phase::Progressing { reason: Reason::Updating, message: "the move was called off".into() };
            let changes = StatusChanges {
                pending: status.and_then(|s| s.pending_operation.clone()).filter(|p| !is_move_operation(&p.kind)),
                moved: Some(update),
                ..Default::default()
            };
            match ctx.checkpoint(ws, &phase, &changes).await {
                Ok(()) => MoveOutcome::Continue,
                Err(e) => MoveOutcome::Done(Box::new(Outcome::failed(e))),
            }
        }
        MoveStep::Refuse { from, to } => step.refuse(&from, &to).await,
        MoveStep::Start { from, to } => step.start(target, from, to).await,
        MoveStep::PollValidation { record, handle } => step.poll_validation(target, record, handle).await,
        MoveStep::PollMove { record, handle } => step.poll_move(target, record, handle).await,
        MoveStep::Finish { record } => {
            let clients = match clients(ctx, ws, &record.from, target, false).await {
                Ok(Ok(c)) => c,
                Ok(Err(refusal)) => return step.refused(refusal, None).await,
                Err(e) => return step.fail(e, None).await,
            };
            step.finalize(&clients, record, false).await
        }
    }
}

/// Before deleting: a running move (or one whose result was not recorded yet) is brought to its end, so cleanup
/// finds the workspace where it is. `Some` ends this reconcile.
pub async fn before_cleanup(ctx: &Context, ws: &MlWorkspace, status: Option<&MlWorkspaceStatus>) -> Option<Outcome> {
    let Ok(MoveStep::PollMove { .. } | MoveStep::Finish { .. }) = decide(&ws.spec, status) else {
        return None;
    };
    let desired = Desired::from_resource(ws).ok()?;
    let arm = match super::resolve_client(&ctx.client, &ctx.credentials, &ctx.config, ws).await {
        Ok(super::WorkspaceClient::Permitted(arm)) => arm,
        // The destination cannot be read: cleanup looks where status last saw the workspace.
        Ok(super::WorkspaceClient::Denied(_)) => return None,
        Err(e) => return Some(Outcome::failed(e)),
    };
    match reconcile_move(ctx, ws, &desired, &arm, status).await {
        MoveOutcome::Done(outcome) => Some(*outcome),
        MoveOutcome::Continue => None,
    }
}

/// Where the workspace is in Azure: status's subscription and resource group when status saw it elsewhere than
/// `spec` says (a move refused, failed or not permitted), else the spec's. Pure.
pub fn located<'a>(spec: &'a MlWorkspaceSpec, status: Option<&'a MlWorkspaceStatus>) -> Place<'a> {
    match status {
        Some(s) if s.resource_id.is_some() => match &s.location {
            Some(l) if !same_location(l, &spec_location(spec)) => {
                Place { subscription_id: &l.subscription_id, resource_group: &l.resource_group }
            }
            _ => Place::of(spec),
        },
        _ => Place::of(spec),
    }
}

/// What a dry run reports for the move step: the condition reason and a message, or `None` when no move is involved.
pub fn dry_run(spec: &MlWorkspaceSpec, status: Option<&MlWorkspaceStatus>) -> Option<(Reason, String)> {
    match decide(spec, status) {
        Ok(MoveStep::None) | Ok(MoveStep::Clear) => None,
        Ok(MoveStep::Refuse { from, to }) => Some((
            Reason::MoveRefused,
            format!("movePolicy is Refuse: would not move from {} to {}", describe(&from), describe(&to)),
        )),
        Ok(MoveStep::Start { from, to }) => Some((
            Reason::Moving,
            format!("would validate, then move the workspace from {} to {}", describe(&from), describe(&to)),
        )),
        Ok(MoveStep::PollValidation { record, .. }) => {
            Some((Reason::ValidatingMove, format!("a move to {} is being validated", describe(&record.to))))
        }
        Ok(MoveStep::PollMove { record, .. }) | Ok(MoveStep::Finish { record }) => {
            Some((Reason::Moving, format!("a move to {} is running", describe(&record.to))))
        }
        Err(unreadable) => Some((Reason::InvalidSpec, unreadable.to_string())),
    }
}

#[cfg(test)]
#[path = "moves_tests.rs"]
mod tests;
