//! Soft-deleted workspaces: what the controller does when a workspace's name is held by a deleted one.
//!
//! Azure soft-deletes a deleted ML workspace: it is kept, recoverable, for its retention period (14 days unless
//! the workspace says otherwise), and its name cannot be reused until it is recovered or purged. A create over it
//! fails with `BadRequest` "Soft-deleted workspace exists. Please purge or recover it." (`kubectl delete` then
//! `kubectl apply` of an MlWorkspace with `deletionPolicy: Delete` hits exactly this.)
//!
//! - Such a create stalls the MlWorkspace with reason `SoftDeleted` and a Warning event that says what to do. It is
//!   not retried in a loop.
//! - `azml.dev/recover-soft-deleted: "true"` recovers it (a PUT with `properties.restore: true`); the normal
//!   pipeline then takes over, ownership rules included (a workspace tagged by another resource stays
//!   `AlreadyExists` unless adopted).
//! - `azml.dev/purge-soft-deleted: "true"` purges it and creates a new one. Azure shows nothing of a soft-deleted
//!   workspace (no GET, no list), so its owner tag can only be read once it is back: the controller recovers it,
//!   reads the tag, and purges (`DELETE ?forceToPurge=true`) only a workspace whose owner tag names this
//!   MlWorkspace (any incarnation) or, with `azml.dev/adopt: "true"`, any workspace. Otherwise it stays recovered
//!   and the MlWorkspace stalls `AlreadyExists`. Each step is a long-running operation recorded in
//!   `status.pendingOperation` (`RecoverToPurge`, then `PurgeWorkspace`), so a restart continues where it stopped.
//! - The annotations act only while the workspace is stalled `SoftDeleted`: left in place, they do nothing later.

use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::Context;
use super::plan::{Desired, OperationKind, Ownership, ResourceGroupState};
use super::progress::{Applied, Progress, start_pending};
use crate::api::conditions::{self, Reason, events};
use crate::api::v1alpha1::{
    ANNOTATION_ADOPT, ANNOTATION_PURGE_SOFT_DELETED, ANNOTATION_RECOVER_SOFT_DELETED, MlWorkspace, MlWorkspaceStatus,
    OWNER_TAG, owner_tag_value,
};
use crate::azure::workspaces::Workspace;
use crate::azure::{ArmClient, ArmError, LroStart};
use crate::reconciler::Phase;
use crate::reconciler::annotation_true;
use crate::reconciler::error::Error;

/// What the user asked for a soft-deleted workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Recover it.
    Recover,
    /// Purge it (if ours) and create a new one.
    Purge,
}

/// Whether `err` is Azure refusing a create because a soft-deleted workspace holds the name.
pub fn is_soft_deleted_conflict(err: &ArmError) -> bool {
    let message = match err {
        ArmError::Api { body, .. } | ArmError::LroFailed { body, .. } => &body.message,
        _ => return false,
    };
    message.to_ascii_lowercase().contains("soft-deleted workspace exists")
}

/// Whether `status` reports the workspace stalled on a soft-deleted one.
pub fn stalled_on_soft_deleted(status: Option<&MlWorkspaceStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == conditions::STALLED && c.status == "True" && c.reason == Reason::SoftDeleted)
    })
}

/// The request to act on now: an annotation set while the workspace is stalled `SoftDeleted` (recover wins when
/// both are set: it loses nothing).
pub fn request(ws: &MlWorkspace, status: Option<&MlWorkspaceStatus>) -> Option<Request> {
    if !stalled_on_soft_deleted(status) {
        return None;
    }
    if annotation_true(ws, ANNOTATION_RECOVER_SOFT_DELETED) {
        Some(Request::Recover)
    } else if annotation_true(ws, ANNOTATION_PURGE_SOFT_DELETED) {
        Some(Request::Purge)
    } else {
        None
    }
}

/// The PUT that recovers the soft-deleted workspace of the desired name and location.
pub fn recovery_body(desired: &Desired) -> Workspace {
    let mut body = desired.workspace_body();
    body.properties.restore = Some(true);
    body
}

/// The stall of a create over a soft-deleted workspace.
pub fn stalled(ctx: &Context, desired: &Desired) -> Applied {
    let message = format!(
        "workspace {} was deleted in Azure and is soft-deleted: Azure keeps it (recoverable) for its retention period, \
         14 days unless set otherwise, and its name cannot be reused until then. Set annotation \
         {ANNOTATION_RECOVER_SOFT_DELETED}: \"true\" to recover it, or {ANNOTATION_PURGE_SOFT_DELETED}: \"true\" to \
         delete it for good and create a new one (only a workspace whose {OWNER_TAG} tag names this MlWorkspace, or \
         one adopted with {ANNOTATION_ADOPT}: \"true\", is purged)",
        desired.workspace.name.as_str()
    );
    warn!("the workspace's name is held by a soft-deleted workspace");
    Applied { phase: Phase::Stalled { reason: Reason::SoftDeleted, message }, requeue: ctx.config.stalled_requeue }
}

/// Whether the recovered `workspace` may be purged by this resource: its owner tag names this MlWorkspace (any
/// incarnation), or `azml.dev/adopt` allows taking over anything.
pub fn may_purge(desired: &Desired, workspace: &Workspace) -> Result<(), NotPurgeable> {
    let tag = workspace.tags.as_ref().and_then(owner_tag_value);
    match desired.owner.classify(tag) {
        Ownership::Ours | Ownership::PreviousIncarnation { .. } => Ok(()),
        _ if desired.adopt => Ok(()),
        Ownership::Foreign(owner) => Err(NotPurgeable::Foreign(owner)),
        Ownership::Unowned => Err(NotPurgeable::Untagged),
    }
}

/// Why a recovered workspace is not purged by this resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotPurgeable {
    /// Another resource's owner tag.
    #[error("its {OWNER_TAG} tag names {0}")]
    Foreign(String),
    /// No owner tag.
    #[error("it has no {OWNER_TAG} tag")]
    Untagged,
}

/// Continues after a recovery or purge finished. `Some` ends the reconcile; `None` lets planning continue.
pub async fn after_done(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    progress: &mut Progress,
    kind: OperationKind,
    result: Option<Workspace>,
) -> Result<Option<Applied>, Error> {
    let id = desired.workspace.id();
    let workspace = match (kind, result) {
        (OperationKind::PurgeWorkspace, _) => None,
        (_, Some(w)) => Some(w),
        (_, None) => arm.get_workspace(&desired.workspace).await.map_err(Error::arm("read workspace"))?,
    };
    match (kind, workspace) {
        (OperationKind::RecoverWorkspace, workspace) => {
            if workspace.is_some() {
                info!(workspace = %id, "recovered the soft-deleted workspace");
                ctx.publish(ws, EventType::Normal, events::RECOVERED, format!("Recovered soft-deleted workspace {id}"))
                    .await;
            }
            set(progress, workspace);
            Ok(None)
        }
        (OperationKind::RecoverToPurge, Some(workspace)) => match may_purge(desired, &workspace) {
            Err(why) => {
                let message = format!(
                    "recovered soft-deleted workspace {id} to purge it, but {why}: it was not purged; set annotation \
                     {ANNOTATION_ADOPT}: \"true\" to take it over, or choose another name"
                );
                set(progress, Some(workspace));
                Ok(Some(Applied {
                    phase: Phase::Stalled { reason: Reason::AlreadyExists, message },
                    requeue: ctx.config.stalled_requeue,
                }))
            }
            Ok(()) => {
                let start = arm
                    .begin_delete_workspace(&desired.workspace, true)
                    .await
                    .map_err(Error::arm("purge workspace"))?;
                match start {
                    LroStart::Done(()) => {
                        purged(ctx, ws, &id).await;
                        set(progress, None);
                        Ok(None)
                    }
                    LroStart::Pending(handle) => {
                        Ok(Some(start_pending(ctx, progress, OperationKind::PurgeWorkspace, handle)))
                    }
                }
            }
        },
        (OperationKind::PurgeWorkspace, _) => {
            purged(ctx, ws, &id).await;
            set(progress, None);
            Ok(None)
        }
        // Recovered to purge, but gone meanwhile (purged or expired): create it.
        (_, workspace) => {
            set(progress, workspace);
            Ok(None)
        }
    }
}

async fn purged(ctx: &Context, ws: &MlWorkspace, id: &str) {
    info!(workspace = %id, "purged the soft-deleted workspace");
    let note =
        format!("Purged soft-deleted workspace {id} (annotation {ANNOTATION_PURGE_SOFT_DELETED}); creating it afresh");
    ctx.publish(ws, EventType::Normal, events::PURGED, note).await;
}

fn set(progress: &mut Progress, workspace: Option<Workspace>) {
    let missing = workspace.is_none();
    progress.set_workspace(workspace);
    if missing {
        progress.observed.resource_group = ResourceGroupState::Exists;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::error::{ArmErrorBody, RequestIds};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use kube::ResourceExt;

    fn lro_failed(code: &str, message: &str) -> ArmError {
        ArmError::LroFailed {
            operation: "Workspaces_CreateOrUpdate".into(),
            status: "Failed".into(),
            body: Box::new(ArmErrorBody { code: code.into(), message: message.into(), ..Default::default() }),
            ids: RequestIds::default(),
        }
    }

    #[test]
    fn azure_s_soft_delete_refusal_is_recognised() {
        assert!(is_soft_deleted_conflict(&lro_failed(
            "BadRequest",
            "Soft-deleted workspace exists. Please purge or recover it. https://aka.ms/wsoftdelete"
        )));
        assert!(!is_soft_deleted_conflict(&lro_failed("BadRequest", "Invalid workspace name")));
    }

    fn stalled_status(reason: Reason) -> MlWorkspaceStatus {
        MlWorkspaceStatus {
            conditions: vec![Condition {
                type_: conditions::STALLED.into(),
                status: "True".into(),
                reason: reason.into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_a_workspace_tagged_for_this_resource_or_adopted_may_be_purged() {
        let spec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333", "resourceGroup": "rg", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .unwrap();
        let mut ws = MlWorkspace::new("ws-a", spec);
        ws.metadata.namespace = Some("team-a".into());
        ws.metadata.uid = Some("uid-2".into());
        let desired = Desired::from_resource(&ws).unwrap();
        let tagged = |tag: Option<&str>| Workspace {
            tags: tag.map(|t| [(OWNER_TAG.to_owned(), t.to_owned())].into()),
            ..Default::default()
        };
        assert!(may_purge(&desired, &tagged(Some("team-a/ws-a/uid-2"))).is_ok());
        assert!(may_purge(&desired, &tagged(Some("team-a/ws-a/uid-1"))).is_ok(), "an earlier incarnation");
        let foreign = may_purge(&desired, &tagged(Some("team-b/ws/uid-9"))).unwrap_err().to_string();
        assert!(foreign.contains("team-b/ws/uid-9"), "{foreign}");
        assert!(may_purge(&desired, &tagged(None)).is_err());
        ws.annotations_mut().insert(ANNOTATION_ADOPT.to_owned(), "true".to_owned());
        let adopting = Desired::from_resource(&ws).unwrap();
        assert!(may_purge(&adopting, &tagged(Some("team-b/ws/uid-9"))).is_ok());
        assert!(may_purge(&adopting, &tagged(None)).is_ok());
    }

    #[test]
    fn annotations_act_only_while_stalled_on_a_soft_deleted_workspace() {
        let spec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333", "resourceGroup": "rg", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .unwrap();
        let mut ws = MlWorkspace::new("ws", spec);
        let soft = stalled_status(Reason::SoftDeleted);
        assert_eq!(request(&ws, Some(&soft)), None, "no annotation");
        ws.metadata.annotations = Some([(ANNOTATION_PURGE_SOFT_DELETED.to_owned(), "true".to_owned())].into());
        assert_eq!(request(&ws, Some(&soft)), Some(Request::Purge));
        assert_eq!(request(&ws, Some(&stalled_status(Reason::AlreadyExists))), None, "not stalled on soft delete");
        assert_eq!(request(&ws, None), None);
        ws.annotations_mut().insert(ANNOTATION_RECOVER_SOFT_DELETED.to_owned(), "true".to_owned());
        assert_eq!(request(&ws, Some(&soft)), Some(Request::Recover), "recover wins");
    }
}
