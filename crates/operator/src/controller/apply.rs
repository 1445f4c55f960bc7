//! Apply: execute the plan. Writes are started, never waited on: a long-running operation is recorded (status
//! `pendingOperation`) and polled once per reconcile, so no reconcile blocks and a restarted operator resumes
//! polling instead of sending the PUT again.

use kube::runtime::events::EventType;
use tracing::{info, instrument, warn};

use super::Context;
use super::plan::{Action, Desired, OperationKind, PendingOp, ResourceGroupState, UpdateCause, plan};
use super::progress::{Applied, Progress, poll_delay, progressing, start_pending};
use super::soft_delete;
use crate::api::conditions::{Reason, events};
use crate::api::v1alpha1::MlWorkspace;
use crate::azure::resource_groups::ResourceGroupCreate;
use crate::azure::workspaces::Workspace;
use crate::azure::{ArmClient, ArmError, LroHandle, LroPoll, LroStart};
use crate::reconciler::Phase;
use crate::reconciler::error::Error;

/// How many plan → apply rounds one reconcile runs (a synchronous write is followed by a re-plan on its result).
const MAX_ROUNDS: usize = 4;

/// Plans and executes until Azure matches, an operation is in flight, or the workspace is stalled or paused.
#[instrument(skip_all, fields(workspace = %desired.workspace.id()))]
pub async fn converge(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    progress: &mut Progress,
) -> Result<Applied, Error> {
    let resync = ctx.config.resync_period;
    for _ in 0..MAX_ROUNDS {
        let planned = plan(desired, &progress.observed);
        if let Some((reason, message)) = planned.stall {
            return Ok(Applied { phase: Phase::Stalled { reason, message }, requeue: ctx.config.stalled_requeue });
        }
        if !planned.waiting.is_empty() {
            // Azure works on the workspace and the controller did not start it: wait and look again.
            let message = planned.waiting.join("; ");
            let phase = Phase::Progressing { reason: Reason::OperationInProgress, message };
            return Ok(Applied { phase, requeue: ctx.config.lro_poll_max });
        }
        let polling = matches!(planned.actions.as_slice(), [Action::PollOperation { .. }]);
        if desired.paused && !polling {
            // Paused: observed only; the operation in flight is still polled (that is a read).
            let withheld = planned.actions.iter().map(ToString::to_string);
            return Ok(Applied { phase: Phase::paused(planned.actions.is_empty(), withheld), requeue: resync });
        }
        if planned.actions.is_empty() {
            return Ok(Applied { phase: Phase::Ready, requeue: resync });
        }
        for action in planned.actions {
            match action {
                Action::PollOperation { kind } => {
                    let Some(pending) = progress.observed.pending.clone() else {
                        continue;
                    };
                    if let Some(applied) = poll(ctx, ws, desired, arm, progress, kind, &pending.handle).await? {
                        return Ok(applied);
                    }
                }
                Action::CreateResourceGroup { location, .. } => {
                    let rg = &desired.workspace.resource_group;
                    let body = ResourceGroupCreate {
                        location,
                        tags: Some(
                            [(crate::api::v1alpha1::OWNER_TAG.to_owned(), desired.owner.tag_value())]
                                .into_iter()
                                .collect(),
                        ),
                        managed_by: None,
                    };
                    arm.create_or_update_resource_group(rg, &body)
                        .await
                        .map_err(Error::arm("create resource group"))?;
                    info!(resource_group = rg.name.as_str(), "created resource group");
                    ctx.publish(ws, EventType::Normal, events::CREATED, format!("Created resource group {}", rg.id()))
                        .await;
                    progress.observed.resource_group = ResourceGroupState::Exists;
                }
                Action::CreateWorkspace { id } => {
                    // A soft-deleted workspace holding the name, and the user said what to do with it.
                    let (body, kind) = match soft_delete::request(ws, ctx.current_status(ws).as_ref()) {
                        Some(soft_delete::Request::Recover) => {
                            (soft_delete::recovery_body(desired), OperationKind::RecoverWorkspace)
                        }
                        Some(soft_delete::Request::Purge) => {
                            (soft_delete::recovery_body(desired), OperationKind::RecoverToPurge)
                        }
                        None => (desired.workspace_body(), OperationKind::CreateWorkspace),
                    };
                    let start = match arm.begin_create_or_update_workspace(&desired.workspace, &body).await {
                        Ok(start) => start,
                        Err(e) if soft_delete::is_soft_deleted_conflict(&e) => {
                            return Ok(soft_delete::stalled(ctx, desired));
                        }
                        Err(e) => return Err(Error::arm("create workspace")(e)),
                    };
                    info!(workspace = %id, kind = kind.as_str(), "workspace PUT accepted");
                    if kind != OperationKind::CreateWorkspace {
                        match start {
                            LroStart::Done(result) => {
                                let done = soft_delete::after_done(ctx, ws, desired, arm, progress, kind, Some(result));
                                if let Some(applied) = done.await? {
                                    return Ok(applied);
                                }
                            }
                            LroStart::Pending(handle) => return Ok(start_pending(ctx, progress, kind, handle)),
                        }
                        continue;
                    }
                    match start {
                        LroStart::Done(result) => {
                            ctx.publish(ws, EventType::Normal, events::CREATED, format!("Created workspace {id}"))
                                .await;
                            progress.set_workspace(Some(result));
                        }
                        LroStart::Pending(handle) => {
                            return Ok(start_pending(ctx, progress, OperationKind::CreateWorkspace, handle));
                        }
                    }
                }
                Action::UpdateWorkspace { fields, cause, patch } => {
                    let names: Vec<String> = fields.iter().map(ToString::to_string).collect();
                    let start = arm
                        .begin_update_workspace(&desired.workspace, &patch)
                        .await
                        .map_err(Error::arm("update workspace"))?;
                    info!(fields = %names.join(","), ?cause, "workspace PATCH accepted");
                    if matches!(cause, UpdateCause::Drift) {
                        names.iter().for_each(|field| ctx.config.metrics.drift_detected(field));
                    }
                    let (reason, note) = match &cause {
                        UpdateCause::SpecChanged => (events::UPDATED, format!("Updated {}", names.join(", "))),
                        UpdateCause::Drift => (
                            events::DRIFT_CORRECTED,
                            format!("Changed in Azure, restored from the spec: {}", names.join(", ")),
                        ),
                        UpdateCause::Adopt { previous_owner: Some(owner) } => (
                            events::ADOPTED,
                            format!("Adopted workspace previously owned by {owner}, which no longer exists"),
                        ),
                        UpdateCause::Adopt { previous_owner: None } => {
                            (events::ADOPTED, "Adopted workspace that had no owner tag".to_owned())
                        }
                        UpdateCause::Reclaim { previous_uid } => (
                            events::ADOPTED,
                            format!("Took back workspace created by a previous incarnation (uid {previous_uid})"),
                        ),
                    };
                    ctx.publish(ws, EventType::Normal, reason, note).await;
                    match start {
                        LroStart::Done(result) => progress.set_workspace(Some(result)),
                        LroStart::Pending(handle) => {
                            return Ok(start_pending(ctx, progress, OperationKind::UpdateWorkspace, handle));
                        }
                    }
                }
            }
        }
    }
    // Still not converged after several synchronous rounds: Azure answers writes with something else than asked.
    Ok(Applied {
        phase: Phase::Progressing {
            reason: Reason::Updating,
            message: "Azure does not yet reflect the last update".to_owned(),
        },
        requeue: ctx.config.lro_poll_max,
    })
}

/// Polls the operation in flight once. `Some` ends the reconcile (still running); `None` means it finished and
/// planning continues with its result.
async fn poll(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    progress: &mut Progress,
    kind: OperationKind,
    handle: &LroHandle,
) -> Result<Option<Applied>, Error> {
    let waited = ctx.config.clock().now().duration_since(handle.started_at).unsigned_abs();
    if waited > ctx.config.lro_timeout {
        progress.observed.pending = None;
        let source = ArmError::LroTimeout { operation: handle.operation.clone(), waited };
        return Err(Error::Arm { step: "poll operation", source: Box::new(source) });
    }
    let polled = match arm.poll_lro::<Option<Workspace>>(handle).await {
        Ok(p) => p,
        // The status monitor is gone (expired, or Azure lost it): forget the operation and look at the resource.
        Err(err) if err.is_not_found() => {
            warn!(operation = %handle.operation, error = %crate::reconciler::error::scrub(&err.to_string()), "operation status no longer available; re-reading the workspace");
            progress.observed.pending = None;
            let workspace = arm.get_workspace(&desired.workspace).await.map_err(Error::arm("read workspace"))?;
            progress.set_workspace(workspace);
            if progress.observed.workspace.is_none() {
                progress.observed.resource_group = ResourceGroupState::Exists;
            }
            return Ok(None);
        }
        // Azure refused the create: a soft-deleted workspace holds the name.
        Err(err) if soft_delete::is_soft_deleted_conflict(&err) => {
            progress.observed.pending = None;
            return Ok(Some(soft_delete::stalled(ctx, desired)));
        }
        Err(err) => {
            // A failed operation is over: forget it, so the next reconcile observes and plans afresh.
            if crate::reconciler::error::ends_operation(&err) {
                progress.observed.pending = None;
            }
            return Err(Error::Arm { step: "poll operation", source: Box::new(err) });
        }
    };
    match polled {
        LroPoll::InProgress(next) => {
            let requeue = poll_delay(ctx, &next);
            progress.observed.pending = Some(PendingOp { kind, handle: next });
            Ok(Some(Applied { phase: progressing(kind), requeue }))
        }
        LroPoll::Done(result) => {
            progress.observed.pending = None;
            if matches!(
                kind,
                OperationKind::RecoverWorkspace | OperationKind::RecoverToPurge | OperationKind::PurgeWorkspace
            ) {
                return soft_delete::after_done(ctx, ws, desired, arm, progress, kind, result).await;
            }
            if kind == OperationKind::CreateWorkspace {
                let note = format!("Created workspace {}", desired.workspace.id());
                ctx.publish(ws, EventType::Normal, events::CREATED, note).await;
            }
            let workspace = match result {
                Some(workspace) => Some(workspace),
                // The operation ended without a body: look.
                None => arm.get_workspace(&desired.workspace).await.map_err(Error::arm("read workspace"))?,
            };
            progress.set_workspace(workspace);
            if progress.observed.workspace.is_none() {
                progress.observed.resource_group = ResourceGroupState::Exists;
            }
            Ok(None)
        }
    }
}
