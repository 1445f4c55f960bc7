//! THE plan shape of every kind: what to call now, what is still under way, what blocks.
//!
//! Each kind plans with a pure function from what its spec wants and what Azure has to a [`Plan`] of its own
//! actions (`controller::plan::Action` for workspaces, `endpoints::plan::Action`, `compute::plan::Action`,
//! `connection::plan::Write`). The controller executes `actions`; `azml-operator plan` prints the same plan, so the
//! dry run and the controller never disagree.

use std::fmt::Display;

use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::api::conditions::Reason;
use crate::api::v1alpha1::ANNOTATION_PAUSED;

/// One action of a plan.
pub trait PlanAction: Display {
    /// Whether executing it calls Azure. An action that only records something in status (a compute action
    /// already done) does not keep the resource from being converged.
    fn calls_azure(&self) -> bool {
        true
    }
}

/// What a reconcile should do about one resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan<A> {
    /// The actions to execute now, in order: writes, and the poll of an operation in flight.
    pub actions: Vec<A>,
    /// What is under way although nothing (else) is to be written: operations Azure runs, parts waiting for
    /// others, what the actions will achieve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// Nothing moves until the spec or Azure changes: (condition reason, a message a person can act on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall: Option<(Reason, String)>,
}

impl<A> Default for Plan<A> {
    fn default() -> Self {
        Plan { actions: Vec::new(), waiting: Vec::new(), stall: None }
    }
}

impl<A: PlanAction> Plan<A> {
    /// A plan of `actions`.
    pub fn of(actions: Vec<A>) -> Self {
        Plan { actions, ..Plan::default() }
    }

    /// Nothing moves until the spec or Azure changes.
    pub fn stalled(reason: Reason, message: impl Into<String>) -> Self {
        Plan { stall: Some((reason, message.into())), ..Plan::default() }
    }

    /// Nothing to call; `what` is under way.
    pub fn waiting_for(what: impl Into<String>) -> Self {
        Plan { waiting: vec![what.into()], ..Plan::default() }
    }

    /// Nothing to call, nothing to wait for, nothing wrong: Azure matches the spec.
    pub fn converged(&self) -> bool {
        !self.actions.iter().any(PlanAction::calls_azure) && self.waiting.is_empty() && self.stall.is_none()
    }

    /// Whether executing the plan calls Azure.
    pub fn calls_azure(&self) -> bool {
        self.actions.iter().any(PlanAction::calls_azure)
    }

    /// The plan as numbered lines for `azml-operator plan`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.converged() && self.actions.is_empty() {
            out.push_str("  no changes: Azure matches the spec\n");
        }
        for (i, action) in self.actions.iter().enumerate() {
            out.push_str(&format!("  {}. {action}\n", i + 1));
        }
        for what in &self.waiting {
            out.push_str(&format!("  waiting: {what}\n"));
        }
        if let Some((reason, message)) = &self.stall {
            out.push_str(&format!("  stalled ({reason}): {message}\n"));
        }
        out
    }
}

/// What `azml-operator plan` shows for one object of any kind: why nothing can be planned, or the plan. Reads only;
/// the same policy check, observe and plan code as a reconcile.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DryRun<A> {
    /// Nothing can be planned: the reason and message the object would wait or stall with.
    Blocked {
        /// Condition reason.
        reason: Reason,
        /// A message a person can act on.
        message: String,
    },
    /// What the controller would do.
    Planned(Plan<A>),
}

impl<A: PlanAction> DryRun<A> {
    /// Nothing can be planned.
    pub fn blocked(reason: Reason, message: impl Into<String>) -> Self {
        DryRun::Blocked { reason, message: message.into() }
    }

    /// The plan, when there is one.
    pub fn plan(&self) -> Option<&Plan<A>> {
        match self {
            DryRun::Planned(plan) => Some(plan),
            DryRun::Blocked { .. } => None,
        }
    }

    /// The text `azml-operator plan` prints for `obj`: a header naming it, then the plan or why there is none.
    pub fn render<K: Resource<DynamicType = ()>>(&self, obj: &K) -> String {
        let mut out = format!("{} {}/{}:\n", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any());
        match self {
            DryRun::Blocked { reason, message } => out.push_str(&format!("  blocked ({reason}): {message}\n")),
            DryRun::Planned(plan) => {
                if super::annotation_true(obj, ANNOTATION_PAUSED) && plan.calls_azure() {
                    out.push_str("  paused (azml.dev/paused): the controller withholds these calls\n");
                }
                out.push_str(&plan.render());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    #[derive(Debug)]
    enum Step {
        Write,
        Record,
    }

    impl fmt::Display for Step {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Step::Write => "write",
                Step::Record => "record",
            })
        }
    }

    impl PlanAction for Step {
        fn calls_azure(&self) -> bool {
            matches!(self, Step::Write)
        }
    }

    #[test]
    fn only_calls_waits_and_stalls_keep_a_plan_from_being_converged() {
        assert!(Plan::<Step>::default().converged());
        assert!(Plan::of(vec![Step::Record]).converged(), "recording in status is not a call");
        assert!(!Plan::of(vec![Step::Write]).converged());
        assert!(!Plan::<Step>::waiting_for("the endpoint is Updating").converged());
        assert!(!Plan::<Step>::stalled(Reason::InvalidSpec, "m").converged());
    }

    #[test]
    fn the_rendering_numbers_actions_then_says_what_waits_and_what_blocks() {
        assert_eq!(Plan::<Step>::default().render(), "  no changes: Azure matches the spec\n");
        let mut plan = Plan::of(vec![Step::Write]);
        plan.waiting.push("creating".into());
        plan.stall = Some((Reason::AzureRejected, "no".into()));
        assert_eq!(plan.render(), "  1. write\n  waiting: creating\n  stalled (AzureRejected): no\n");
    }
}
