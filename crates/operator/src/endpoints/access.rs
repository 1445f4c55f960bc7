//! Role assignments at an online endpoint (`spec.access`, scope Endpoint), with the shared access planning
//! ([`crate::access`]): deterministic names, the ownership marker, deletions before creations.
//!
//! The endpoint is passed to the shared planner as the "resource itself" (scope kind Workspace), and the planner's
//! three scopes all point at the endpoint, so only assignments exactly at the endpoint are ever considered, and an
//! assignment the workspace of the same name granted at its resource group or subscription can never be mistaken
//! for one of the endpoint's. The ownership marker names the kind (`<ns>/mlonlineendpoint/<name>`) for the same
//! reason.
//!
//! Policy: the entries are checked like the workspace's own (a typed request with
//! [`crate::policy::Grantor::Endpoint`]): a SubscriptionBinding must allow the workspace's namespace, subscription
//! and resource group and the entries' roles, and the Endpoint scope needs Workspace in allowedScopes, since the
//! endpoint is part of the workspace.
//!
//! Cost: one `RoleAssignments_ListForScope` at the endpoint per reconcile of a converged endpoint that declares or
//! still holds assignments (i.e. once per resync period in steady state), no writes.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, instrument, warn};

use super::Context;
use crate::access::{
    AccessAction, AccessInput, ExistingAssignment, Scopes, WAITING_FOR_REMOVALS, arm_message, create_request,
    desired_assignments, marker, not_removed, plan_access, record_create_failure, removal_failure, summarize_at,
};
use crate::api::conditions::{events, reasons};
use crate::api::v1alpha1::{
    AccessEntry, AccessScope, AccessState, AccessStatus, EndpointAccessStatus, MlOnlineEndpoint,
};
use crate::azure::authorization::RoleAssignmentFilter;
use crate::azure::{ArmClient, ResourceId, RoleAssignmentRef};
use crate::reconciler::error::Error;

/// The planner's scopes for an endpoint: all three are the endpoint.
pub fn endpoint_scopes(endpoint: &ResourceId) -> Scopes {
    Scopes { workspace: endpoint.clone(), resource_group: endpoint.clone(), subscription: endpoint.clone() }
}

/// The ownership marker of an endpoint's assignments.
pub fn endpoint_marker(namespace: &str, name: &str) -> String {
    marker(namespace, &format!("mlonlineendpoint/{name}"))
}

/// `status.access` in the planner's terms.
pub fn to_planner(entries: &[EndpointAccessStatus]) -> Vec<AccessStatus> {
    entries
        .iter()
        .map(|e| AccessStatus {
            principal_id: e.principal_id.clone(),
            role_definition_id: e.role_definition_id.clone(),
            scope_kind: AccessScope::Workspace,
            scope: e.scope.clone(),
            assignment_name: e.assignment_name.clone(),
            state: e.state,
            message: e.message.clone(),
        })
        .collect()
}

/// The planner's entries as the endpoint reports them.
pub fn from_planner(entries: &[AccessStatus]) -> Vec<EndpointAccessStatus> {
    entries
        .iter()
        .map(|e| EndpointAccessStatus {
            principal_id: e.principal_id.clone(),
            role_definition_id: e.role_definition_id.clone(),
            scope: e.scope.clone(),
            assignment_name: e.assignment_name.clone(),
            state: e.state,
            message: e.message.clone(),
        })
        .collect()
}

/// An entry's scope as the endpoint reports it: the planner's "resource itself" (Workspace) is the endpoint.
fn endpoint_scope_name(scope: AccessScope) -> &'static str {
    match scope {
        AccessScope::Workspace => "Endpoint",
        other => other.as_str(),
    }
}

/// What the access step reports.
#[derive(Debug)]
pub struct EndpointAccessOutcome {
    /// The new `status.access`.
    pub entries: Vec<EndpointAccessStatus>,
    /// AccessGranted condition: ok, reason, message.
    pub condition: (bool, &'static str, String),
    /// Some entries are pending (retry soon).
    pub pending: bool,
}

/// Reconciles the endpoint's role assignments (the endpoint exists and is provisioned).
#[instrument(skip_all, fields(endpoint = %endpoint))]
pub async fn reconcile_access(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    arm: &ArmClient,
    endpoint: &ResourceId,
    entries: &[AccessEntry],
    previous: &[EndpointAccessStatus],
) -> Result<EndpointAccessOutcome, Error> {
    let scopes = endpoint_scopes(endpoint);
    let wanted = match desired_assignments(&scopes, entries) {
        Ok(w) => w,
        Err(e) => {
            return Ok(EndpointAccessOutcome {
                entries: previous.to_vec(),
                condition: (false, reasons::INVALID_SPEC, e.to_string()),
                pending: false,
            });
        }
    };
    let marker = endpoint_marker(&ep.namespace().unwrap_or_default(), &ep.name_any());
    let listed = arm
        .list_role_assignments(endpoint, Some(RoleAssignmentFilter::AtScope))
        .await
        .map_err(Error::arm("list role assignments"))?;
    let existing: Vec<ExistingAssignment> =
        listed.iter().filter_map(|ra| ExistingAssignment::from_arm(ra, &scopes)).collect();
    let previous = to_planner(previous);
    let plan = plan_access(AccessInput {
        desired: &wanted,
        scopes: &scopes,
        marker: &marker,
        previous: &previous,
        existing: Some(&existing),
    });
    let mut entries = plan.entries.clone();
    let mut removed = vec![false; entries.len()];
    let mut deletions_ok = true;
    for action in &plan.actions {
        match action {
            AccessAction::Delete { entry, target } => {
                let ra = RoleAssignmentRef::new(target.scope.clone(), target.name);
                match arm.delete_role_assignment(&ra).await {
                    Ok(_) => {
                        removed[*entry] = true;
                        info!(assignment = %target.name, "deleted endpoint role assignment");
                        let note = format!("Removed role assignment {} at the endpoint", target.name);
                        ctx.publish(ep, EventType::Normal, events::ACCESS_REVOKED, note).await;
                    }
                    Err(err) => {
                        deletions_ok = false;
                        let (disposition, message) = arm_message("delete role assignment", err);
                        warn!(assignment = %target.name, error = %message, "cannot delete endpoint role assignment");
                        entries[*entry].message = Some(removal_failure(&disposition, &message));
                    }
                }
            }
            AccessAction::Create { entry, .. } if !deletions_ok => {
                entries[*entry].message = Some(WAITING_FOR_REMOVALS.into());
            }
            AccessAction::Create { entry, assignment } => {
                let (ra, body) = create_request(assignment, endpoint.subscription_id(), &marker);
                let slot = &mut entries[*entry];
                match arm.create_role_assignment(&ra, &body).await {
                    Ok(_) => {
                        slot.state = AccessState::Granted;
                        slot.message = None;
                        info!(assignment = %assignment.name, "created endpoint role assignment");
                        let note =
                            format!("Granted role {} to {} at the endpoint", assignment.role, assignment.principal);
                        ctx.publish(ep, EventType::Normal, events::ACCESS_GRANTED, note).await;
                    }
                    Err(err) => {
                        let (disposition, message) = arm_message("create role assignment", err);
                        warn!(assignment = %assignment.name, error = %message, "cannot create endpoint role assignment");
                        record_create_failure(slot, disposition, message);
                    }
                }
            }
        }
    }
    let kept = not_removed(entries, removed);
    let summary = summarize_at(&kept, plan.declared, endpoint_scope_name);
    Ok(EndpointAccessOutcome {
        entries: from_planner(&kept),
        condition: (summary.granted, summary.reason, summary.message),
        pending: summary.pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::DesiredAssignment;
    use uuid::Uuid;

    const EP: &str = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/scoring";

    #[test]
    fn only_assignments_at_the_endpoint_itself_are_considered() {
        let ep = ResourceId::parse(EP).expect("id");
        let scopes = endpoint_scopes(&ep);
        assert_eq!(scopes.kind_of(EP), Some(AccessScope::Workspace));
        assert_eq!(scopes.kind_of(&EP.to_uppercase()), Some(AccessScope::Workspace));
        let ws = EP.rsplit_once("/onlineEndpoints/").map(|(w, _)| w).expect("workspace");
        assert_eq!(scopes.kind_of(ws), None);
        assert_eq!(scopes.kind_of("/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg"), None);
    }

    #[test]
    fn markers_of_endpoints_and_workspaces_of_the_same_name_differ() {
        assert_ne!(endpoint_marker("ns", "x"), marker("ns", "x"));
    }

    #[test]
    fn declared_entries_resolve_at_the_endpoint_and_status_round_trips() {
        let ep = ResourceId::parse(EP).expect("id");
        let entry = AccessEntry {
            principal_id: "6f1c0000-0000-4000-8000-000000000001".into(),
            principal_type: None,
            role: Some(crate::api::v1alpha1::BuiltinRole::Reader),
            role_definition_id: None,
            scope: AccessScope::Workspace,
        };
        let wanted: Vec<DesiredAssignment> = desired_assignments(&endpoint_scopes(&ep), &[entry]).expect("valid");
        assert_eq!(wanted[0].scope, ep);
        let status = AccessStatus {
            principal_id: wanted[0].principal.to_string(),
            role_definition_id: wanted[0].role.to_string(),
            scope_kind: AccessScope::Workspace,
            scope: EP.into(),
            assignment_name: Uuid::nil().to_string(),
            state: AccessState::Granted,
            message: None,
        };
        assert_eq!(to_planner(&from_planner(std::slice::from_ref(&status))), vec![status]);
    }
}
