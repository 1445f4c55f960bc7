//! Cleanup when the custom resource is deleted (the `azml.dev/cleanup` finalizer).
//!
//! - `deletionPolicy: Retain`: nothing in Azure changes; the finalizer is removed.
//! - `deletionPolicy: Delete`: the workspace is deleted (a long-running operation, polled like any other) when it
//!   carries this resource's owner tag, then the role assignments the operator created (`status.access` entries in
//!   state Granted); a workspace Azure already lost counts as deleted. Then the finalizer is removed. Azure
//!   soft-deletes it: recoverable, and its name taken, for its retention period (14 days unless set otherwise).
//! - `deletionPolicy: Purge`: the same, with `forceToPurge=true`: deleted for good, the name is free at once.
//!   Before any of it, the workspace's MlOnlineEndpoints, then its MlComputes, are deleted and waited for.

use kube::runtime::events::EventType;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::outcome::Outcome;
use super::plan::{Desired, OperationKind, Ownership, PendingOp};
use super::{Context, WorkspaceClient, observe};
use crate::api::conditions::{Reason, events};
use crate::api::v1alpha1::{
    AccessState, MlCompute, MlOnlineEndpoint, MlWorkspace, MlWorkspaceStatus, WorkspaceDeletionPolicy, owner_tag_value,
};
use crate::azure::ids::{ResourceId, RoleAssignmentRef};
use crate::azure::{ArmClient, LroPoll, LroStart};
use crate::reconciler::Phase;
use crate::reconciler::binding::Place;
use crate::reconciler::error::Error;
use crate::reconciler::parent;

/// The step name of a failed deletion poll (see [`forgets_operation`]).
const POLL_DELETION: &str = "poll workspace deletion";

/// Whether a cleanup error ends the deletion in flight, so status must forget it.
pub fn forgets_operation(err: &Error) -> bool {
    matches!(err, Error::Arm { step, source } if *step == POLL_DELETION && crate::reconciler::error::ends_operation(source))
}

/// What cleanup decided.
pub enum CleanupOutcome {
    /// Done: the finalizer may go.
    Done,
    /// Not done yet: keep the finalizer, conclude the reconcile with this outcome (status, when to look again).
    Waiting(Box<Outcome>),
}

/// Waiting in `phase` before Azure is asked, keeping the operation in flight (if any) in status.
fn waiting(ctx: &Context, ws: &MlWorkspace, phase: Phase, requeue: std::time::Duration) -> CleanupOutcome {
    let pending = ctx.current_status(ws).and_then(|s| s.pending_operation);
    CleanupOutcome::Waiting(Box::new(Outcome::phase(phase).pending(pending).requeue(requeue)))
}

/// Runs the cleanup for a resource being deleted.
#[instrument(skip_all, fields(object = %format!("{}/{}", ws.metadata.namespace.as_deref().unwrap_or_default(), ws.metadata.name.as_deref().unwrap_or_default())))]
pub async fn cleanup(
    ctx: &Context,
    ws: &MlWorkspace,
    place: Place<'_>,
    client: &WorkspaceClient,
) -> Result<CleanupOutcome, Error> {
    if ws.spec.deletion_policy == WorkspaceDeletionPolicy::Retain {
        info!("deletionPolicy Retain: leaving Azure as it is");
        return Ok(CleanupOutcome::Done);
    }
    // The workspace's online endpoints go first: each one's own cleanup (its deletionPolicy, its keys Secret) needs
    // the workspace's binding and credential, so their custom resources are deleted and waited for.
    let remaining = parent::delete_children::<MlOnlineEndpoint>(&ctx.client, ws).await?;
    if remaining > 0 {
        let message = format!("waiting for {remaining} MlOnlineEndpoint(s) of the workspace to be deleted");
        let phase = Phase::Progressing { reason: Reason::Deleting, message };
        return Ok(waiting(ctx, ws, phase, ctx.config.lro_poll_min));
    }
    // Then its computes, the same way (their deletionPolicy decides what happens in Azure).
    let remaining = parent::delete_children::<MlCompute>(&ctx.client, ws).await?;
    if remaining > 0 {
        let message = format!("waiting for {remaining} MlCompute(s) of the workspace to be deleted");
        let phase = Phase::Progressing { reason: Reason::Deleting, message };
        return Ok(waiting(ctx, ws, phase, ctx.config.lro_poll_min));
    }
    let desired = match Desired::at(ws, place) {
        Ok(d) => d,
        Err(e) => {
            // Nothing valid was ever created from an invalid spec.
            warn!(error = %e, "invalid spec: nothing to delete in Azure");
            return Ok(CleanupOutcome::Done);
        }
    };
    let arm = match client {
        WorkspaceClient::Permitted(arm) => arm,
        WorkspaceClient::Denied(message) => {
            // Without a binding the operator may not touch Azure; keep the finalizer so nothing is leaked silently.
            let message = format!(
                "cannot delete the workspace in Azure: {message}; restore the SubscriptionBinding or set deletionPolicy: Retain"
            );
            let phase = Phase::Stalled { reason: Reason::NotPermitted, message };
            return Ok(waiting(ctx, ws, phase, ctx.config.stalled_requeue));
        }
    };
    let status = ctx.current_status(ws);
    let pending = observe::pending_from_status(status.as_ref())?;
    let purge = ws.spec.deletion_policy == WorkspaceDeletionPolicy::Purge;
    let deleting = |handle, requeue| {
        let operation = PendingOp { kind: OperationKind::DeleteWorkspace, handle };
        let pending = observe::pending_to_status(&operation, ws.metadata.generation);
        let outcome = Outcome::progressing(Reason::Deleting, "deleting the workspace in Azure");
        CleanupOutcome::Waiting(Box::new(outcome.pending(Some(pending)).requeue(requeue)))
    };
    match pending {
        Some(PendingOp { kind: OperationKind::DeleteWorkspace, handle }) => {
            match arm.poll_lro::<serde::de::IgnoredAny>(&handle).await {
                Ok(LroPoll::InProgress(next)) => {
                    let requeue = super::progress::poll_delay(ctx, &next);
                    return Ok(deleting(next, requeue));
                }
                Ok(LroPoll::Done(_)) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::Arm { step: POLL_DELETION, source: Box::new(e) }),
            }
        }
        // Another operation (create/update) may still run in Azure; a DELETE supersedes it.
        _ => {
            let existing = arm.get_workspace(&desired.workspace).await.map_err(Error::arm("read workspace"))?;
            if let Some(found) = existing {
                let tag = found.tags.as_ref().and_then(owner_tag_value);
                if desired.owner.classify(tag) == Ownership::Ours {
                    match arm
                        .begin_delete_workspace(&desired.workspace, purge)
                        .await
                        .map_err(Error::arm("delete workspace"))?
                    {
                        LroStart::Done(()) => {}
                        LroStart::Pending(handle) => {
                            let requeue = super::progress::poll_delay(ctx, &handle);
                            return Ok(deleting(handle, requeue));
                        }
                    }
                } else {
                    ctx.publish(
                        ws,
                        EventType::Warning,
                        events::DELETED,
                        format!(
                            "Not deleting workspace {}: it is not owned by this resource (owner tag {})",
                            desired.workspace.id(),
                            tag.unwrap_or("absent")
                        ),
                    )
                    .await;
                    return Ok(CleanupOutcome::Done);
                }
            }
        }
    }
    delete_role_assignments(arm, &desired, [status.as_ref(), ws.status.as_ref()]).await?;
    let (reason, note) = if purge {
        (events::PURGED, format!("Deleted workspace {} for good (deletionPolicy Purge)", desired.workspace.id()))
    } else {
        (
            events::DELETED,
            format!(
                "Deleted workspace {}; Azure keeps it soft-deleted (recoverable, name taken) for its retention period \
                 (14 days unless set otherwise); deletionPolicy Purge deletes for good",
                desired.workspace.id()
            ),
        )
    };
    ctx.publish(ws, EventType::Normal, reason, note).await;
    Ok(CleanupOutcome::Done)
}

/// Deletes the role assignments this operator created (state Granted), from the status this controller last wrote
/// and the object's own. Only assignments at the scopes the operator grants at (the workspace, its resource group,
/// its subscription) are deleted, so an edited status cannot aim the operator at anything else. Ones already gone
/// are fine.
async fn delete_role_assignments(
    arm: &ArmClient,
    desired: &Desired,
    statuses: [Option<&MlWorkspaceStatus>; 2],
) -> Result<(), Error> {
    let rg = &desired.workspace.resource_group;
    let allowed_scopes = [desired.workspace.id(), rg.id(), format!("/subscriptions/{}", rg.subscription)];
    let mut done: Vec<String> = Vec::new();
    let granted =
        statuses.into_iter().flatten().flat_map(|s| s.access.iter()).filter(|a| a.state == AccessState::Granted);
    for entry in granted {
        let key = entry.assignment_name.to_ascii_lowercase();
        if done.contains(&key) {
            continue;
        }
        done.push(key);
        if !allowed_scopes.iter().any(|s| s.eq_ignore_ascii_case(entry.scope.trim_end_matches('/'))) {
            warn!(scope = %entry.scope, assignment = %entry.assignment_name, "not deleting a role assignment outside the workspace's scopes");
            continue;
        }
        let (Ok(scope), Ok(name)) = (ResourceId::parse(&entry.scope), Uuid::try_parse(&entry.assignment_name)) else {
            warn!(scope = %entry.scope, assignment = %entry.assignment_name, "skipping unparseable role assignment in status");
            continue;
        };
        let ra = RoleAssignmentRef::new(scope, name);
        arm.delete_role_assignment(&ra).await.map_err(Error::arm("delete role assignment"))?;
        info!(assignment = %entry.assignment_name, "deleted role assignment");
    }
    Ok(())
}
