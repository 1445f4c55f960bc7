//! The workspace's access step: `spec.access` against the role assignments at the workspace, its resource group and
//! its subscription, with the pure planning of [`crate::access`] (deterministic names, the ownership marker,
//! deletions before creations) and what the step remembers between reconciles (last listing, principal-replication
//! windows).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock (the system's monotonic clock unless a test pauses it).
use tokio::time::Instant;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::Context;
use super::outcome::{AccessReport, Outcome};
use super::plan::Desired;
use crate::access::{
    AccessAction, AccessInput, ExistingAssignment, LastListing, Scopes, WAITING_FOR_REMOVALS, arm_message,
    create_request, describe, desired_assignments, fingerprint, is_assignment_exists, is_principal_not_found,
    needs_listing, not_removed, plan_access, record_create_failure, removal_failure, summarize,
};
pub use crate::access::{assignment_name, marker};
use crate::api::conditions::{Reason, events};
use crate::api::v1alpha1::{AccessState, AccessStatus, MlWorkspace};
use crate::azure::authorization::RoleAssignmentFilter;
use crate::azure::{ArmClient, RoleAssignmentRef};
use crate::reconciler::error::{Disposition, Error, backoff};
use crate::reconciler::{Phase, lock};

/// Per-workspace memory of the access step (in-process only; a restart costs one listing and restarts the
/// principal-replication windows).
#[derive(Debug, Default)]
pub struct AccessMemory {
    inner: Mutex<HashMap<String, WorkspaceMemory>>,
}

#[derive(Clone, Debug, Default)]
struct WorkspaceMemory {
    fingerprint: u64,
    listed_at: Option<Instant>,
    generation: Option<i64>,
    /// First `PrincipalNotFound` per assignment name, and the attempts since.
    not_found: HashMap<Uuid, (Instant, u32)>,
}

impl AccessMemory {
    fn get(&self, uid: &str) -> WorkspaceMemory {
        lock(&self.inner).get(uid).cloned().unwrap_or_default()
    }

    fn put(&self, uid: &str, memory: WorkspaceMemory) {
        lock(&self.inner).insert(uid.to_owned(), memory);
    }

    /// Forgets a workspace (it is gone).
    pub fn forget(&self, uid: &str) {
        lock(&self.inner).remove(uid);
    }

    /// Forgets every workspace whose uid is not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.inner).retain(|uid, _| live.contains(uid));
    }
}

/// What the access step decided for the reconcile.
#[derive(Debug)]
pub struct AccessOutcome {
    /// For status.
    pub report: AccessReport,
    /// Replaces the reconcile's Ready phase when access does not hold.
    pub phase: Option<Phase>,
    /// Look again this soon (a pending retry).
    pub requeue: Option<Duration>,
}

/// Reconciles the role assignments of a workspace that exists in Azure (after the workspace itself converged).
#[instrument(skip_all, fields(workspace = %desired.workspace.id()))]
pub async fn reconcile_access(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    previous: &[AccessStatus],
) -> Result<AccessOutcome, Error> {
    let scopes = Scopes::at(&desired.workspace);
    let wanted = match desired_assignments(&scopes, &ws.spec.access) {
        Ok(w) => w,
        Err(e) => {
            let message = e.to_string();
            return Ok(AccessOutcome {
                report: AccessReport {
                    entries: previous.to_vec(),
                    granted: false,
                    reason: Reason::InvalidSpec,
                    message: message.clone(),
                },
                phase: Some(Phase::Stalled { reason: Reason::InvalidSpec, message }),
                requeue: None,
            });
        }
    };
    let marker = marker(&desired.owner.namespace, &desired.owner.name);
    let uid = desired.owner.uid.clone();
    let mut memory = ctx.access.get(&uid);
    if memory.generation != desired.generation {
        // A new spec starts new replication windows.
        memory.not_found.clear();
        memory.generation = desired.generation;
    }
    let print = fingerprint(&wanted, &marker);
    let last = memory.listed_at.map(|t| LastListing { fingerprint: memory.fingerprint, age: t.elapsed() });
    let existing = if needs_listing(&wanted, previous, print, last, ctx.config.resync_period) {
        let listed = arm
            .list_role_assignments(&scopes.workspace, Some(RoleAssignmentFilter::AtScope))
            .await
            .map_err(Error::arm("list role assignments"))?;
        memory.listed_at = Some(Instant::now());
        memory.fingerprint = print;
        Some(listed.iter().filter_map(|ra| ExistingAssignment::from_arm(ra, &scopes)).collect::<Vec<_>>())
    } else {
        debug!("role assignments unchanged since the last listing; not listing");
        None
    };
    let plan = plan_access(AccessInput {
        desired: &wanted,
        scopes: &scopes,
        marker: &marker,
        previous,
        existing: existing.as_deref(),
    });
    let mut entries = plan.entries.clone();
    let mut removed = vec![false; entries.len()];
    let mut retry: Option<Duration> = None;
    let mut soonest = |d: Duration| retry = Some(retry.map_or(d, |r| r.min(d)));
    let mut deletions_ok = true;
    for action in &plan.actions {
        match action {
            AccessAction::Delete { entry, target } => {
                let ra = RoleAssignmentRef::new(target.scope.clone(), target.name);
                match arm.delete_role_assignment(&ra).await {
                    Ok(_) => {
                        info!(assignment = %target.name, scope = %target.scope, "deleted role assignment");
                        removed[*entry] = true;
                        let note = format!("Removed {} at {}", describe(&entries[*entry]), target.scope);
                        ctx.config.metrics.role_assignment_changed(crate::metrics::RoleAssignmentChange::Deleted);
                        ctx.publish(ws, EventType::Normal, events::ACCESS_REVOKED, note).await;
                    }
                    Err(err) => {
                        deletions_ok = false;
                        let (disposition, message) = arm_message("delete role assignment", err);
                        warn!(assignment = %target.name, error = %message, "cannot delete role assignment");
                        if !matches!(disposition, Disposition::Stall { .. }) {
                            soonest(ctx.config.error_backoff_base);
                        }
                        entries[*entry].message = Some(removal_failure(&disposition, &message));
                    }
                }
            }
            AccessAction::Create { entry, .. } if !deletions_ok => {
                entries[*entry].message = Some(WAITING_FOR_REMOVALS.into());
            }
            AccessAction::Create { entry, assignment } => {
                let (ra, body) = create_request(assignment, desired.workspace.subscription(), &marker);
                let slot = &mut entries[*entry];
                match arm.create_role_assignment(&ra, &body).await {
                    Ok(_) => {
                        memory.not_found.remove(&assignment.name);
                        slot.state = AccessState::Granted;
                        slot.message = None;
                        info!(assignment = %assignment.name, scope = %assignment.scope, "created role assignment");
                        let note = format!("Granted {} at {}", describe(slot), assignment.scope);
                        ctx.config.metrics.role_assignment_changed(crate::metrics::RoleAssignmentChange::Created);
                        ctx.publish(ws, EventType::Normal, events::ACCESS_GRANTED, note).await;
                    }
                    Err(err) if is_assignment_exists(&err) => {
                        // Someone else assigned it under another name since the listing: it holds, not ours.
                        memory.not_found.remove(&assignment.name);
                        slot.state = AccessState::Unmanaged;
                        slot.message = Some(
                            "already assigned outside azml-operator (RoleAssignmentExists); it is never deleted by the operator".into(),
                        );
                    }
                    Err(err) if is_principal_not_found(&err) => {
                        let now = Instant::now();
                        let (since, attempts) = memory.not_found.entry(assignment.name).or_insert((now, 0));
                        *attempts = attempts.saturating_add(1);
                        let waited = now.duration_since(*since);
                        if waited < ctx.config.principal_wait {
                            slot.state = AccessState::Pending;
                            slot.message =
                                Some("principal not found in the directory yet (replication delay?); retrying".into());
                            soonest(backoff(*attempts, ctx.config.error_backoff_base, ctx.config.error_backoff_max));
                        } else {
                            slot.state = AccessState::Failed;
                            slot.message = Some(format!(
                                "PrincipalNotFound: principal {} does not exist in the directory (waited {}s); check principalId, or set principalType for a principal created moments ago",
                                assignment.principal,
                                ctx.config.principal_wait.as_secs()
                            ));
                        }
                    }
                    Err(err) => {
                        let (disposition, message) = arm_message("create role assignment", err);
                        warn!(assignment = %assignment.name, error = %message, "cannot create role assignment");
                        if record_create_failure(slot, disposition, message) {
                            soonest(ctx.config.error_backoff_base);
                        }
                    }
                }
            }
        }
    }
    if !deletions_ok && plan.actions.iter().any(|a| matches!(a, AccessAction::Create { .. })) {
        soonest(ctx.config.error_backoff_base);
    }
    // Entries left behind (kept Granted with a message) while the declared ones come first.
    let declared = plan.declared;
    let kept = not_removed(entries, removed);
    let summary = summarize(&kept, declared);
    // Any failure means the next reconcile must look at Azure again.
    if !summary.granted {
        memory.listed_at = None;
    }
    ctx.access.put(&uid, memory);
    let phase = match (summary.granted, summary.pending) {
        (true, _) => None,
        (false, true) => Some(Phase::Progressing { reason: summary.reason, message: summary.message.clone() }),
        (false, false) => Some(Phase::Stalled { reason: summary.reason, message: summary.message.clone() }),
    };
    let requeue = if summary.pending { Some(retry.unwrap_or(ctx.config.error_backoff_base)) } else { None };
    Ok(AccessOutcome {
        report: AccessReport {
            entries: kept,
            granted: summary.granted,
            reason: summary.reason,
            message: summary.message,
        },
        phase,
        requeue,
    })
}

/// The access step, on a workspace the pipeline left Ready: its report for status and, when access does not hold
/// (yet), the phase that replaces Ready ([`Outcome::then`] folds it into the reconcile's).
pub async fn after_converge(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    previous: Option<&crate::api::v1alpha1::MlWorkspaceStatus>,
) -> Outcome {
    let previous = previous.map(|s| s.access.as_slice()).unwrap_or_default();
    match reconcile_access(ctx, ws, desired, arm, previous).await {
        Ok(outcome) => {
            debug!(object = %ws.name_any(), granted = outcome.report.granted, "access reconciled");
            let step = match outcome.phase {
                Some(phase) => Outcome::phase(phase),
                None => Outcome::unchanged(),
            };
            Outcome { requeue: outcome.requeue, ..step.access(outcome.report) }
        }
        Err(e) => Outcome::failed(e),
    }
}
