//! Observe: read what Azure has, with as few calls as possible.
//!
//! - An operation in flight (status.pendingOperation): nothing is read; the next step polls it.
//! - Otherwise one GET of the workspace; only when it is missing, one GET of its resource group.

use tracing::instrument;

use super::plan::{Desired, Observed, OperationKind, PendingOp, ResourceGroupState};
use crate::api::v1alpha1::{MlWorkspaceStatus, PendingOperation};
use crate::azure::{ArmClient, LroHandle};
use crate::reconciler::error::Error;

/// The operation in flight recorded in status, if any.
pub fn pending_from_status(status: Option<&MlWorkspaceStatus>) -> Result<Option<PendingOp>, Error> {
    let Some(op) = status.and_then(|s| s.pending_operation.as_ref()) else {
        return Ok(None);
    };
    if op.kind.starts_with(super::keys::RESYNC_OPERATION) {
        // A key resync belongs to the key step; for the workspace pipeline (and cleanup, dry runs) nothing of the
        // workspace itself is in flight.
        return Ok(None);
    }
    if super::moves::is_move_operation(&op.kind) {
        // A move belongs to the move step ([`super::moves`]), which runs before the workspace pipeline.
        return Ok(None);
    }
    let kind = OperationKind::parse(&op.kind)
        .ok_or_else(|| Error::BadPendingOperation(format!("unknown operation kind {:?}", op.kind)))?;
    let handle: LroHandle =
        serde_json::from_str(&op.poller).map_err(|e| Error::BadPendingOperation(format!("poller: {e}")))?;
    Ok(Some(PendingOp { kind, handle }))
}

/// The status record of an operation in flight.
pub fn pending_to_status(op: &PendingOp, generation: Option<i64>) -> PendingOperation {
    PendingOperation {
        kind: op.kind.as_str().to_owned(),
        // LroHandle is plain data (strings, enums, a timestamp); serialising it cannot fail.
        poller: serde_json::to_string(&op.handle).unwrap_or_default(),
        started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(op.handle.started_at)),
        generation,
    }
}

/// Reads Azure for `desired`. `status` supplies the operation in flight and the last observed generation.
#[instrument(skip_all, fields(workspace = %desired.workspace.id()))]
pub async fn observe(
    arm: &ArmClient,
    desired: &Desired,
    status: Option<&MlWorkspaceStatus>,
) -> Result<Observed, Error> {
    let last_observed_generation = status.and_then(|s| s.observed_generation);
    if let Some(pending) = pending_from_status(status)? {
        return Ok(Observed {
            pending: Some(pending),
            workspace: None,
            resource_group: ResourceGroupState::Unknown,
            last_observed_generation,
            foreign_owner: Default::default(),
        });
    }
    let workspace = arm.get_workspace(&desired.workspace).await.map_err(Error::arm("read workspace"))?;
    let resource_group = if workspace.is_some() {
        ResourceGroupState::Unknown
    } else {
        match arm
            .get_resource_group(&desired.workspace.resource_group)
            .await
            .map_err(Error::arm("read resource group"))?
        {
            Some(_) => ResourceGroupState::Exists,
            None => ResourceGroupState::Missing,
        }
    };
    Ok(Observed {
        pending: None,
        workspace,
        resource_group,
        last_observed_generation,
        foreign_owner: Default::default(),
    })
}
