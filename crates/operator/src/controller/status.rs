//! The MlWorkspace's status, computed from the phase and the steps' changes ([`StatusChanges`]); written by the shell
//! ([`crate::reconciler::Shell::write_status`]) only when something a reader could act on changed.
//!
//! Conditions: kstatus `Ready`, `Reconciling`, `Stalled` plus `WorkspaceProvisioned`, each with `observedGeneration`
//! and a [`crate::api::conditions::Reason`]. `lastTransitionTime` moves only when a condition's status
//! flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::outcome::{StatusChanges, WorkspaceFacts};
use crate::api::conditions::{self, Reason};
use crate::api::v1alpha1::{MlWorkspaceStatus, WorkspaceLocation};
use crate::azure::models::ProvisioningState;
use crate::azure::workspaces::Workspace;
pub use crate::reconciler::Phase;
use crate::reconciler::status::{TRUE, condition_is};
pub use crate::reconciler::status::{changed, merge_patch, set_condition};

/// The reason of the workspace's Stalled condition when it is True.
pub fn stalled_reason(status: &MlWorkspaceStatus) -> Option<&str> {
    status.conditions.iter().find(|c| c.type_ == conditions::STALLED && c.status == "True").map(|c| c.reason.as_str())
}

/// The status after a reconcile that ends in `phase` with the steps' `changes`. `previous` supplies
/// lastTransitionTimes and facts not re-read this time.
pub fn compute(
    previous: Option<&MlWorkspaceStatus>,
    generation: Option<i64>,
    phase: &Phase,
    changes: &StatusChanges,
    now: &Time,
) -> MlWorkspaceStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.pending_operation = changes.pending.clone();
    // The missing dependency is remembered while the workspace waits for it (a transient failure meanwhile does not
    // make it forget); any other outcome ends the wait.
    let waiting = matches!(phase, Phase::Stalled { reason, .. } if *reason == Reason::DependencyMissing);
    if !waiting && !matches!(phase, Phase::Transient { .. }) {
        status.missing_dependency = None;
    }
    if let (Some(found), Phase::Stalled { .. }) = (&changes.missing_dependency, phase) {
        status.missing_dependency.clone_from(found);
    }
    match &changes.workspace {
        WorkspaceFacts::Unknown => {}
        WorkspaceFacts::Missing => clear_workspace_facts(&mut status),
        WorkspaceFacts::Present(ws) => fill_workspace_facts(&mut status, ws),
    }
    if let Some(r) = &changes.workspace_ref {
        status.location = Some(WorkspaceLocation {
            subscription_id: r.subscription().to_string(),
            resource_group: r.resource_group.name.as_str().to_owned(),
        });
    }

    if let Some(access) = &changes.access {
        status.access = access.entries.clone();
        let (ok, reason, message) = (access.granted, access.reason, &access.message);
        set_condition(&mut status.conditions, conditions::ACCESS_GRANTED, ok, reason, message, generation, now);
    }
    set_phase(&mut status, phase, generation, now);
    match &changes.workspace {
        WorkspaceFacts::Unknown => {}
        WorkspaceFacts::Missing => {
            let (reason, message) = match phase {
                Phase::Progressing { reason, .. } => (*reason, "the workspace is being created"),
                Phase::Stalled { reason, .. } => (*reason, "the workspace does not exist in Azure"),
                Phase::Paused { .. } => (Reason::Paused, "the workspace does not exist in Azure"),
                _ => (Reason::Creating, "the workspace does not exist in Azure"),
            };
            set_condition(
                &mut status.conditions,
                conditions::WORKSPACE_PROVISIONED,
                false,
                reason,
                message,
                generation,
                now,
            );
        }
        WorkspaceFacts::Present(ws) => {
            let state = ws.properties.provisioning_state.clone();
            let (ok, reason) = match state {
                Some(ProvisioningState::Succeeded) => (true, Reason::Reconciled),
                Some(ProvisioningState::Creating) | Some(ProvisioningState::Accepted) => (false, Reason::Creating),
                Some(ProvisioningState::Updating) => (false, Reason::Updating),
                Some(ProvisioningState::Deleting) => (false, Reason::Deleting),
                Some(ProvisioningState::Failed) | Some(ProvisioningState::Canceled) => (false, Reason::AzureRejected),
                // Azure omits the state only for workspaces that exist and work.
                None => (true, Reason::Reconciled),
                Some(_) => (false, Reason::OperationInProgress),
            };
            let message = format!("provisioning state {}", state.map(|s| format!("{s:?}")).unwrap_or("unknown".into()));
            set_condition(
                &mut status.conditions,
                conditions::WORKSPACE_PROVISIONED,
                ok,
                reason,
                &message,
                generation,
                now,
            );
        }
    }
    if let Some(keys) = &changes.keys {
        keys.apply(&mut status, generation, now);
    }
    if let Some(exports) = &changes.exports {
        exports.apply(&mut status, generation, now);
    }
    if let Some(moved) = &changes.moved {
        moved.apply(&mut status, generation, now);
    }
    status
}

/// The kstatus conditions (Ready, Reconciling, Stalled) of a workspace in `phase`, and `observedGeneration`. A
/// failed resync says nothing new about Azure: a Ready workspace stays Ready while the controller retries.
pub fn set_phase(status: &mut MlWorkspaceStatus, phase: &Phase, generation: Option<i64>, now: &Time) {
    status.observed_generation = generation;
    let was_ready = condition_is(&status.conditions, conditions::READY, TRUE);
    let mut set = |type_: &str, ok: bool, reason: Reason, message: &str| {
        set_condition(&mut status.conditions, type_, ok, reason, message, generation, now);
    };
    match phase {
        Phase::Ready => {
            let msg = "the workspace in Azure matches the spec";
            set(conditions::READY, true, Reason::Reconciled, msg);
            set(conditions::RECONCILING, false, Reason::Reconciled, msg);
            set(conditions::STALLED, false, Reason::Reconciled, msg);
        }
        Phase::Progressing { reason, message } => {
            set(conditions::READY, false, *reason, message);
            set(conditions::RECONCILING, true, *reason, message);
            set(conditions::STALLED, false, *reason, message);
        }
        Phase::Stalled { reason, message } => {
            set(conditions::READY, false, *reason, message);
            set(conditions::RECONCILING, false, *reason, message);
            set(conditions::STALLED, true, *reason, message);
        }
        Phase::Paused { in_sync, message } => {
            set(conditions::READY, *in_sync, Reason::Paused, message);
            set(conditions::RECONCILING, false, Reason::Paused, message);
            set(conditions::STALLED, false, Reason::Paused, message);
        }
        Phase::Transient { message } => {
            // A failed resync says nothing new about Azure: a Ready workspace stays Ready while the controller retries.
            if !was_ready {
                set(conditions::READY, false, Reason::TransientError, message);
            }
            set(conditions::RECONCILING, true, Reason::TransientError, message);
            set(conditions::STALLED, false, Reason::TransientError, message);
        }
    }
}

fn fill_workspace_facts(status: &mut MlWorkspaceStatus, ws: &Workspace) {
    let p = &ws.properties;
    status.resource_id = ws.id.clone().or(status.resource_id.take());
    status.workspace_id = p.workspace_id.clone();
    status.provisioning_state = p.provisioning_state.as_ref().map(|s| format!("{s:?}"));
    status.discovery_url = p.discovery_url.clone();
    status.ml_flow_tracking_uri = p.ml_flow_tracking_uri.clone();
    status.storage_account_id = p.storage_account.clone();
    status.key_vault_id = p.key_vault.clone();
    status.application_insights_id = p.application_insights.clone();
    status.container_registry_id = p.container_registry.clone();
}

fn clear_workspace_facts(status: &mut MlWorkspaceStatus) {
    status.resource_id = None;
    status.workspace_id = None;
    status.provisioning_state = None;
    status.discovery_url = None;
    status.ml_flow_tracking_uri = None;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use serde_json::Value;

    use super::*;
    use crate::api::v1alpha1::PendingOperation;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn cond<'a>(s: &'a MlWorkspaceStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_}"))
    }

    fn ready_ws() -> Workspace {
        let mut ws =
            Workspace { id: Some("/subscriptions/s/resourceGroups/r/providers/M/w/x".into()), ..Default::default() };
        ws.properties.provisioning_state = Some(ProvisioningState::Succeeded);
        ws.properties.workspace_id = Some("guid".into());
        ws.properties.discovery_url = Some("https://d".into());
        ws
    }

    fn compute(
        previous: Option<&MlWorkspaceStatus>,
        generation: Option<i64>,
        (phase, changes): &(Phase, StatusChanges),
        now: &Time,
    ) -> MlWorkspaceStatus {
        super::compute(previous, generation, phase, changes, now)
    }

    fn report(phase: Phase, ws: WorkspaceFacts) -> (Phase, StatusChanges) {
        (phase, StatusChanges { workspace: ws, ..Default::default() })
    }

    #[test]
    fn ready_sets_kstatus_conditions_and_facts() {
        let s = compute(None, Some(3), &report(Phase::Ready, WorkspaceFacts::Present(Box::new(ready_ws()))), &t(10));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, conditions::READY).status, "True");
        assert_eq!(cond(&s, conditions::READY).reason, Reason::Reconciled);
        assert_eq!(cond(&s, conditions::READY).observed_generation, Some(3));
        assert_eq!(cond(&s, conditions::RECONCILING).status, "False");
        assert_eq!(cond(&s, conditions::STALLED).status, "False");
        assert_eq!(cond(&s, conditions::WORKSPACE_PROVISIONED).status, "True");
        assert_eq!(s.workspace_id.as_deref(), Some("guid"));
        assert_eq!(s.provisioning_state.as_deref(), Some("Succeeded"));
        assert_eq!(s.resource_id.as_deref(), Some("/subscriptions/s/resourceGroups/r/providers/M/w/x"));
    }

    #[test]
    fn stalled_and_progressing() {
        let stalled = Phase::Stalled { reason: Reason::NotPermitted, message: "no binding".into() };
        let s = compute(None, Some(1), &report(stalled, WorkspaceFacts::Unknown), &t(1));
        assert_eq!(cond(&s, conditions::STALLED).status, "True");
        assert_eq!(cond(&s, conditions::STALLED).reason, Reason::NotPermitted);
        assert_eq!(cond(&s, conditions::READY).message, "no binding");
        assert_eq!(cond(&s, conditions::RECONCILING).status, "False");
        assert!(s.conditions.iter().all(|c| c.type_ != conditions::WORKSPACE_PROVISIONED));

        let creating = Phase::Progressing { reason: Reason::Creating, message: "creating".into() };
        let s = compute(Some(&s), Some(1), &report(creating, WorkspaceFacts::Missing), &t(2));
        assert_eq!(cond(&s, conditions::RECONCILING).status, "True");
        assert_eq!(cond(&s, conditions::STALLED).status, "False");
        assert_eq!(cond(&s, conditions::WORKSPACE_PROVISIONED).status, "False");
        assert_eq!(cond(&s, conditions::WORKSPACE_PROVISIONED).reason, Reason::Creating);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let s1 = compute(None, Some(1), &report(Phase::Ready, WorkspaceFacts::Unknown), &t(100));
        let s2 = compute(Some(&s1), Some(2), &report(Phase::Ready, WorkspaceFacts::Unknown), &t(200));
        assert_eq!(cond(&s2, conditions::READY).last_transition_time, t(100));
        assert_eq!(cond(&s2, conditions::READY).observed_generation, Some(2));
        let updating = Phase::Progressing { reason: Reason::Updating, message: "patch".into() };
        let s3 = compute(Some(&s2), Some(2), &report(updating, WorkspaceFacts::Unknown), &t(300));
        assert_eq!(cond(&s3, conditions::READY).last_transition_time, t(300));
        assert_eq!(cond(&s3, conditions::STALLED).last_transition_time, t(100), "Stalled stayed False");
    }

    #[test]
    fn unchanged_status_is_not_rewritten() {
        let ws = WorkspaceFacts::Present(Box::new(ready_ws()));
        let s1 = compute(None, Some(1), &report(Phase::Ready, ws.clone()), &t(100));
        let mut s2 = compute(Some(&s1), Some(1), &report(Phase::Ready, ws.clone()), &t(5000));
        s2.last_sync_time = Some(t(5000));
        assert!(!changed(Some(&s1), &s2), "only timestamps differ");
        let s3 = compute(Some(&s1), Some(2), &report(Phase::Ready, ws), &t(5000));
        assert!(changed(Some(&s1), &s3), "observedGeneration differs");
        assert!(changed(None, &s3));
    }

    #[test]
    fn paused_and_transient() {
        let paused = Phase::Paused { in_sync: true, message: "paused".into() };
        let s = compute(None, Some(1), &report(paused, WorkspaceFacts::Unknown), &t(1));
        assert_eq!(cond(&s, conditions::READY).status, "True");
        assert_eq!(cond(&s, conditions::READY).reason, Reason::Paused);
        assert_eq!(cond(&s, conditions::RECONCILING).reason, Reason::Paused);

        let ready = compute(None, Some(1), &report(Phase::Ready, WorkspaceFacts::Unknown), &t(1));
        let transient = Phase::Transient { message: "HTTP 500".into() };
        let s = compute(Some(&ready), Some(1), &report(transient.clone(), WorkspaceFacts::Unknown), &t(2));
        assert_eq!(cond(&s, conditions::READY).status, "True", "a failed resync keeps Ready");
        assert_eq!(cond(&s, conditions::RECONCILING).reason, Reason::TransientError);
        let s = compute(None, Some(1), &report(transient, WorkspaceFacts::Unknown), &t(2));
        assert_eq!(cond(&s, conditions::READY).status, "False");
    }

    #[test]
    fn pending_operation_and_missing_workspace_clear_fields_in_the_patch() {
        let mut old =
            compute(None, Some(1), &report(Phase::Ready, WorkspaceFacts::Present(Box::new(ready_ws()))), &t(1));
        old.pending_operation = Some(PendingOperation {
            kind: "CreateWorkspace".into(),
            poller: "{}".into(),
            started_at: None,
            generation: None,
        });
        let new = compute(Some(&old), Some(1), &report(Phase::Ready, WorkspaceFacts::Missing), &t(2));
        assert!(new.pending_operation.is_none());
        assert!(new.workspace_id.is_none());
        let patch = merge_patch(Some(&old), &new);
        assert_eq!(patch["status"]["pendingOperation"], Value::Null);
        assert_eq!(patch["status"]["workspaceId"], Value::Null);
        assert!(patch["status"]["conditions"].is_array());
    }

    #[test]
    fn nested_fields_that_disappeared_are_nulled() {
        let old = MlWorkspaceStatus {
            storage_keys: Some(crate::api::v1alpha1::StorageKeysStatus {
                workspace_uses_key: Some("key1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut new = old.clone();
        new.storage_keys = Some(Default::default());
        let patch = merge_patch(Some(&old), &new);
        assert_eq!(patch["status"]["storageKeys"]["workspaceUsesKey"], Value::Null);
    }

    #[test]
    fn the_access_report_sets_status_access_and_the_condition_and_none_keeps_them() {
        use crate::api::v1alpha1::{AccessScope, AccessState, AccessStatus};
        let entry = AccessStatus {
            principal_id: "30000000-0000-4000-8000-000000000001".into(),
            role_definition_id: "acdd72a7-3385-48ef-bd42-f606fba81ae7".into(),
            scope_kind: AccessScope::Workspace,
            scope: "/subscriptions/s/resourceGroups/r/providers/M/w/x".into(),
            assignment_name: "00000000-0000-0000-0000-000000000001".into(),
            state: AccessState::Pending,
            message: None,
        };
        let mut r = report(Phase::Ready, WorkspaceFacts::Unknown);
        r.1.access = Some(super::super::outcome::AccessReport {
            entries: vec![entry.clone()],
            granted: false,
            reason: Reason::AccessPending,
            message: "Reader for alice pending".into(),
        });
        let s = compute(None, Some(2), &r, &t(1));
        assert_eq!(s.access, [entry]);
        let c = cond(&s, conditions::ACCESS_GRANTED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("False", Reason::AccessPending.as_str(), Some(2))
        );
        // A reconcile that did not reach the access step keeps both.
        r.1.access = None;
        let kept = compute(Some(&s), Some(3), &r, &t(2));
        assert_eq!(kept.access, s.access);
        assert_eq!(cond(&kept, conditions::ACCESS_GRANTED).reason, Reason::AccessPending);
    }
}
