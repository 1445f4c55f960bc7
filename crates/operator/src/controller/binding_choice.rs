//! Which SubscriptionBinding a workspace uses, in `status.binding` and condition `BindingSelected`, and a Warning
//! event (`AmbiguousBinding`) when other bindings allow it with different credentials ([`crate::policy::selection`]).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::{Context, WorkspaceClient, ask};
use crate::api::conditions::{self, events};
use crate::api::v1alpha1::{MlWorkspace, MlWorkspaceStatus};
use crate::policy::selection::Selection;
use crate::reconciler::binding::{self, Place, Verdict};
use crate::reconciler::error::Error;
use crate::reconciler::status::set_condition;
use crate::sync::lock;

/// The selection last made per workspace uid (`None`: no binding allows it).
#[derive(Default)]
pub struct BindingMemory(Mutex<HashMap<String, Option<Selection>>>);

impl BindingMemory {
    /// Remembers the selection for `uid`; returns whether it differs from the one before (first time included).
    pub fn record(&self, uid: Option<String>, selection: Option<Selection>) -> bool {
        let Some(uid) = uid else {
            return false;
        };
        lock(&self.0).insert(uid, selection.clone()).is_none_or(|before| before != selection)
    }

    /// Writes the remembered selection into `status`: `binding` and the `BindingSelected` condition (both removed
    /// when no binding allows the workspace). Nothing remembered (no reconcile has resolved a binding since the
    /// start): the status keeps what it says.
    pub fn report(&self, uid: Option<String>, status: &mut MlWorkspaceStatus, generation: Option<i64>, now: &Time) {
        let Some(selection) = uid.and_then(|uid| lock(&self.0).get(&uid).cloned()) else {
            return;
        };
        apply(status, selection.as_ref(), generation, now);
    }

    /// Forgets `uid`.
    pub fn forget(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }

    /// Forgets every workspace whose uid is not in `live` (deleted while nobody was looking).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.0).retain(|uid, _| live.contains(uid));
    }
}

/// Sets `status.binding` and `BindingSelected` from `selection` (pure).
pub fn apply(status: &mut MlWorkspaceStatus, selection: Option<&Selection>, generation: Option<i64>, now: &Time) {
    match selection {
        Some(selection) => {
            status.binding = Some(selection.chosen.clone());
            let (reason, message) = selection.condition();
            set_condition(
                &mut status.conditions,
                conditions::BINDING_SELECTED,
                true,
                reason,
                &message,
                generation,
                now,
            );
        }
        None => {
            status.binding = None;
            status.conditions.retain(|c| c.type_ != conditions::BINDING_SELECTED);
        }
    }
}

/// [`super::resolve_client`] for the workspace controller: also remembers the chosen binding for the status, and
/// publishes a Warning event when the choice becomes ambiguous (other bindings, other credentials).
pub async fn resolve(ctx: &Context, ws: &MlWorkspace) -> Result<WorkspaceClient, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let (selection, verdict) = binding::authorize_selecting(
        &ctx.client,
        &ctx.credentials,
        &ctx.config,
        &ask(ws, &namespace, Place::of(&ws.spec)),
        |_| Ok(()),
    )
    .await;
    let client = verdict.map(|v| match v {
        Verdict::Permitted { arm, .. } => WorkspaceClient::Permitted(arm),
        Verdict::Denied(message) => WorkspaceClient::Denied(message),
    });
    if client.is_err() && selection.is_none() {
        // The bindings could not be read: nothing is known about the choice.
        return client;
    }
    let ambiguous = selection.as_ref().filter(|s| !s.conflicting.is_empty()).map(|s| s.condition().1);
    if ctx.bindings.record(ws.uid(), selection)
        && let Some(message) = ambiguous
    {
        ctx.publish(ws, EventType::Warning, events::AMBIGUOUS_BINDING, message).await;
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::Reason;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).expect("ts"))
    }

    #[test]
    fn the_status_names_the_binding_and_says_when_it_is_ambiguous() {
        let mut status = MlWorkspaceStatus::default();
        let one = Selection { chosen: "risk-prod".into(), conflicting: vec![] };
        apply(&mut status, Some(&one), Some(2), &now());
        assert_eq!(status.binding.as_deref(), Some("risk-prod"));
        let c = status.conditions.iter().find(|c| c.type_ == conditions::BINDING_SELECTED).expect("condition");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", Reason::BindingSelected.as_str()));
        let two = Selection { chosen: "risk-prod".into(), conflicting: vec!["sandbox".into()] };
        apply(&mut status, Some(&two), Some(2), &now());
        let c = status.conditions.iter().find(|c| c.type_ == conditions::BINDING_SELECTED).expect("condition");
        assert_eq!(c.reason, Reason::AmbiguousBinding);
        assert!(c.message.contains("sandbox"), "{}", c.message);
        apply(&mut status, None, Some(2), &now());
        assert_eq!(status.binding, None);
        assert!(status.conditions.iter().all(|c| c.type_ != conditions::BINDING_SELECTED));
    }

    #[test]
    fn only_a_changed_selection_counts_as_new() {
        let memory = BindingMemory::default();
        let uid = || Some("uid-1".to_owned());
        let two = Selection { chosen: "a".into(), conflicting: vec!["b".into()] };
        assert!(memory.record(uid(), Some(two.clone())));
        assert!(!memory.record(uid(), Some(two.clone())), "the same ambiguity is warned about once");
        assert!(memory.record(uid(), None));
        assert!(memory.record(uid(), Some(two)));
        let mut status = MlWorkspaceStatus { binding: Some("kept".into()), ..Default::default() };
        memory.report(Some("unknown".into()), &mut status, None, &now());
        assert_eq!(status.binding.as_deref(), Some("kept"), "nothing remembered: the status is left as it is");
    }

    #[test]
    fn the_resync_sweep_forgets_workspaces_that_are_gone() {
        let memory = BindingMemory::default();
        let one = Selection { chosen: "a".into(), conflicting: vec![] };
        memory.record(Some("live".into()), Some(one.clone()));
        memory.record(Some("gone".into()), Some(one.clone()));
        memory.retain(&["live".to_owned()].into_iter().collect());
        assert!(!memory.record(Some("live".into()), Some(one.clone())), "kept");
        assert!(memory.record(Some("gone".into()), Some(one)), "forgotten: recorded as new");
    }
}
