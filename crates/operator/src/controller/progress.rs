//! The workspace pipeline's state while it runs ([`Progress`], [`Applied`]) and the timing of operations in flight
//! ([`poll_delay`]): shared by the pipeline ([`super::apply`]), the soft-delete recovery ([`super::soft_delete`]) and
//! the steps that poll their own operations (keys, moves, cleanup).

use std::time::Duration;

use super::Context;
use super::outcome::WorkspaceFacts;
use super::plan::{Observed, OperationKind, PendingOp};
use crate::api::conditions::Reason;
use crate::azure::LroHandle;
use crate::azure::workspaces::Workspace;
use crate::reconciler::Phase;

/// What executing the plan achieved (the workspace pipeline turns it into its [`super::outcome::Outcome`]).
#[derive(Debug)]
pub struct Applied {
    /// Where the workspace stands.
    pub phase: Phase,
    /// When to look again.
    pub requeue: Duration,
}

/// Mutable facts of one reconcile, kept up to date so that status can be written even when a step fails.
#[derive(Debug)]
pub struct Progress {
    /// What Azure has, as far as this reconcile knows.
    pub observed: Observed,
    /// For status: the workspace facts.
    pub facts: WorkspaceFacts,
}

impl Progress {
    /// Starts from an observation.
    pub fn new(observed: Observed) -> Self {
        let facts = match (&observed.pending, &observed.workspace) {
            (Some(_), _) => WorkspaceFacts::Unknown,
            (None, Some(ws)) => WorkspaceFacts::Present(Box::new(ws.clone())),
            (None, None) => WorkspaceFacts::Missing,
        };
        Progress { observed, facts }
    }

    pub(crate) fn set_workspace(&mut self, ws: Option<Workspace>) {
        self.facts = match &ws {
            Some(w) => WorkspaceFacts::Present(Box::new(w.clone())),
            None => WorkspaceFacts::Missing,
        };
        self.observed.workspace = ws;
    }
}

/// Poll delay for an operation: the `Retry-After` ARM asked for (honoured in full: polling earlier only earns another
/// wait and costs a read of the subscription's budget), at least `lro_poll_min`; `lro_poll_min` when ARM asked nothing.
pub fn poll_delay(ctx: &Context, handle: &LroHandle) -> Duration {
    match handle.wait_remaining(ctx.config.clock().now()) {
        Some(left) => left.max(ctx.config.lro_poll_min),
        None => lro_poll_delay(handle.retry_after_secs, ctx.config.lro_poll_min),
    }
}

/// [`poll_delay`] without the context (pure).
pub fn lro_poll_delay(retry_after_secs: Option<u64>, min: Duration) -> Duration {
    retry_after_secs.map(Duration::from_secs).unwrap_or(min).max(min)
}

pub fn progressing(kind: OperationKind) -> Phase {
    let (reason, message) = match kind {
        OperationKind::CreateWorkspace => (Reason::Creating, "creating the workspace in Azure"),
        OperationKind::UpdateWorkspace => (Reason::Updating, "updating the workspace in Azure"),
        OperationKind::DeleteWorkspace => (Reason::Deleting, "deleting the workspace in Azure"),
        OperationKind::RecoverWorkspace => (Reason::Creating, "recovering the soft-deleted workspace"),
        OperationKind::RecoverToPurge => {
            (Reason::Creating, "recovering the soft-deleted workspace to read its owner tag before purging it")
        }
        OperationKind::PurgeWorkspace => (Reason::Deleting, "purging the soft-deleted workspace"),
    };
    Phase::Progressing { reason, message: message.to_owned() }
}

pub fn start_pending(ctx: &Context, progress: &mut Progress, kind: OperationKind, handle: LroHandle) -> Applied {
    let requeue = poll_delay(ctx, &handle);
    progress.observed.pending = Some(PendingOp { kind, handle });
    progress.facts = WorkspaceFacts::Unknown;
    Applied { phase: progressing(kind), requeue }
}

#[cfg(test)]
mod poll_delay_tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_in_full_and_bounded_below() {
        let min = Duration::from_secs(5);
        // Azure's 600 s stays 600 s: no upper clamp (the old code cut it to lro_poll_max).
        assert_eq!(lro_poll_delay(Some(600), min), Duration::from_secs(600));
        assert_eq!(lro_poll_delay(Some(10), min), Duration::from_secs(10));
        assert_eq!(lro_poll_delay(Some(1), min), min);
        assert_eq!(lro_poll_delay(None, min), min);
    }
}
