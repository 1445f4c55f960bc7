//! One outcome for every step of a workspace reconcile.
//!
//! The move step, the workspace pipeline (observe → plan → apply), the access step, the key step, the exports and
//! the cleanup each return an [`Outcome`]: where the workspace stands ([`Standing`]), when to look again, and the
//! status changes the step owns ([`StatusChanges`]). [`Outcome::then`] folds a later step's outcome into the
//! earlier ones; [`super::Context::conclude`] hands the result to the shell's one status writer and ends the
//! reconcile. The only other status write is [`super::Context::checkpoint`]: a status that must be stored before
//! the next Azure call (the move's write-ahead), never the end of a reconcile.
//!
//! The typed changes each step owns live here too ([`WorkspaceFacts`], [`AccessReport`], [`KeysUpdate`],
//! [`MoveUpdate`]): the steps depend on this module, never the other way round. Pure: no I/O here, so the merge
//! rules are unit-tested below.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use uuid::Uuid;

use crate::api::conditions::{self, Reason};
use crate::api::v1alpha1::{AccessStatus, MlWorkspaceStatus, MoveStatus, PendingOperation, StorageKeysStatus};
use crate::azure::WorkspaceRef;
use crate::azure::workspaces::Workspace;
use crate::exports::ExportsOutcome;
use crate::reconciler::Phase;
use crate::reconciler::error::Error;
use crate::reconciler::status::set_condition;

/// What the reconcile learnt about the workspace in Azure.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum WorkspaceFacts {
    /// Not read this time: keep what status says.
    #[default]
    Unknown,
    /// It does not exist.
    Missing,
    /// As ARM returned it.
    Present(Box<Workspace>),
}

/// What the key step changes in the status ([`super::outcome::StatusChanges::keys`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KeysUpdate {
    /// New `status.storageKeys` (`None`: unchanged).
    pub storage_keys: Option<StorageKeysStatus>,
    /// `StorageKeysInSync`: (in sync, reason, message); `None`: unchanged.
    pub condition: Option<(bool, Reason, String)>,
}

impl KeysUpdate {
    /// Writes the update into `status`.
    pub fn apply(&self, status: &mut MlWorkspaceStatus, generation: Option<i64>, now: &Time) {
        if let Some(k) = &self.storage_keys {
            status.storage_keys = Some(k.clone());
        }
        if let Some((ok, reason, message)) = &self.condition {
            set_condition(
                &mut status.conditions,
                conditions::STORAGE_KEYS_IN_SYNC,
                *ok,
                *reason,
                message,
                generation,
                now,
            );
        }
    }
}

/// How the move step changes status beyond what [`super::status::compute`] does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MoveUpdate {
    /// `status.move`: `None` keeps it, `Some(None)` removes it.
    pub record: Option<Option<MoveStatus>>,
    /// The `Moved` condition (status, reason, message); `None` removes it.
    pub moved: Option<(bool, Reason, String)>,
    /// `status.access` entries to drop (by assignment name): deleted at the old scopes.
    pub drop_access: Vec<Uuid>,
}

impl MoveUpdate {
    /// Applies the update. Pure.
    pub fn apply(&self, status: &mut MlWorkspaceStatus, generation: Option<i64>, now: &Time) {
        if let Some(record) = &self.record {
            status.move_status = record.clone();
        }
        match &self.moved {
            Some((ok, reason, message)) => {
                set_condition(&mut status.conditions, conditions::MOVED, *ok, *reason, message, generation, now);
            }
            None => status.conditions.retain(|c| c.type_ != conditions::MOVED),
        }
        if !self.drop_access.is_empty() {
            status.access.retain(|a| {
                let name = Uuid::try_parse(&a.assignment_name).ok();
                !name.is_some_and(|n| self.drop_access.contains(&n))
            });
        }
    }
}

/// What the access step reports into status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessReport {
    /// The new `status.access`.
    pub entries: Vec<AccessStatus>,
    /// `AccessGranted` condition: status, reason, message.
    pub granted: bool,
    /// Condition reason.
    pub reason: Reason,
    /// Condition message.
    pub message: String,
}

/// Where a step leaves the workspace.
#[derive(Debug)]
pub enum Standing {
    /// The step has nothing to say about the phase: an earlier step's stands (Ready when no step said anything).
    Unchanged,
    /// The workspace is in this phase.
    Phase(Phase),
    /// The step failed: THE error policy ([`crate::reconciler::Shell::fail`]) turns the error into Stalled or a
    /// retry with backoff.
    Failed(Error),
}

/// The status changes of one or more steps. A field a step leaves at its default keeps what status says (except
/// `pending`, which is the operation in flight after the reconcile: `None` clears it).
#[derive(Debug, Default)]
pub struct StatusChanges {
    /// The workspace as Azure returned it (`Unknown`: not read, keep status's facts).
    pub workspace: WorkspaceFacts,
    /// The workspace's coordinates (for `status.location` / `resourceId` when Azure was not read).
    pub workspace_ref: Option<WorkspaceRef>,
    /// The operation in flight after this reconcile.
    pub pending: Option<PendingOperation>,
    /// The role assignments, when the access step ran.
    pub access: Option<AccessReport>,
    /// `status.storageKeys` and `StorageKeysInSync`, when the key step ran.
    pub keys: Option<KeysUpdate>,
    /// `status.move`, the `Moved` condition and the access entries deleted at the old scopes, when the move step ran.
    pub moved: Option<MoveUpdate>,
    /// `status.exports` and `Exported`, when the exports ran.
    pub exports: Option<ExportsOutcome>,
    /// The dependency a failed create found missing (`Some(None)`: it could not tell which), recorded when the
    /// failure stalls so the stalled requeues wait for it instead of re-sending the PUT.
    pub missing_dependency: Option<Option<String>>,
}

impl StatusChanges {
    /// `later`'s changes over these: what `later` says wins, what it leaves alone stays.
    fn then(self, later: StatusChanges) -> StatusChanges {
        StatusChanges {
            workspace: match later.workspace {
                WorkspaceFacts::Unknown => self.workspace,
                known => known,
            },
            workspace_ref: later.workspace_ref.or(self.workspace_ref),
            pending: later.pending.or(self.pending),
            access: later.access.or(self.access),
            keys: later.keys.or(self.keys),
            moved: later.moved.or(self.moved),
            exports: later.exports.or(self.exports),
            missing_dependency: later.missing_dependency.or(self.missing_dependency),
        }
    }
}

/// What a step decided: phase, requeue, status changes.
#[derive(Debug)]
pub struct Outcome {
    /// Where the workspace stands.
    pub standing: Standing,
    /// When to look again; `None`: the stalled requeue for a stall, else the resync period (or the error policy's
    /// delay for a failure).
    pub requeue: Option<Duration>,
    /// The step's status changes.
    pub status: StatusChanges,
}

impl Outcome {
    /// A step with nothing to say (yet): no phase, no requeue, no status change.
    pub fn unchanged() -> Self {
        Outcome { standing: Standing::Unchanged, requeue: None, status: StatusChanges::default() }
    }

    /// The workspace is in `phase`.
    pub fn phase(phase: Phase) -> Self {
        Outcome { standing: Standing::Phase(phase), ..Outcome::unchanged() }
    }

    /// Stalled: nothing moves until the spec or Azure changes.
    pub fn stalled(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::phase(Phase::Stalled { reason, message: message.into() })
    }

    /// Progressing: an operation is in flight, or the step just wrote something.
    pub fn progressing(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::phase(Phase::Progressing { reason, message: message.into() })
    }

    /// The step failed with `err`.
    pub fn failed(err: Error) -> Self {
        Outcome { standing: Standing::Failed(err), ..Outcome::unchanged() }
    }

    /// Look again after `after`.
    pub fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }

    /// With the workspace facts found in Azure.
    pub fn facts(mut self, workspace: WorkspaceFacts) -> Self {
        self.status.workspace = workspace;
        self
    }

    /// With the workspace's coordinates.
    pub fn at(mut self, workspace: WorkspaceRef) -> Self {
        self.status.workspace_ref = Some(workspace);
        self
    }

    /// With `pending` as the operation in flight.
    pub fn pending(mut self, pending: Option<PendingOperation>) -> Self {
        self.status.pending = pending;
        self
    }

    /// With the access step's report.
    pub fn access(mut self, access: AccessReport) -> Self {
        self.status.access = Some(access);
        self
    }

    /// With the key step's status changes.
    pub fn keys(mut self, keys: KeysUpdate) -> Self {
        self.status.keys = Some(keys);
        self
    }

    /// With the move step's status changes.
    pub fn moved(mut self, moved: MoveUpdate) -> Self {
        self.status.moved = Some(moved);
        self
    }

    /// With the exports' status changes.
    pub fn exports(mut self, exports: ExportsOutcome) -> Self {
        self.status.exports = Some(exports);
        self
    }

    /// With the dependency a failed create found missing (`None`: it could not tell).
    pub fn missing_dependency(mut self, dependency: Option<String>) -> Self {
        self.status.missing_dependency = Some(dependency);
        self
    }

    /// Whether the reconcile ends Ready so far (no step said otherwise, or one said Ready).
    pub fn is_ready(&self) -> bool {
        matches!(self.standing, Standing::Unchanged | Standing::Phase(Phase::Ready))
    }

    /// THE merge: `later` (a step that ran after these) folded in. A failure ends the reconcile, so a failed
    /// outcome keeps its error; a later failure replaces the phase; a later phase replaces the phase (the later
    /// steps run only on a Ready workspace) and a later stall waits `stalled_requeue`; otherwise the soonest
    /// requeue wins. Status changes: what `later` says wins ([`StatusChanges`]).
    pub fn then(self, later: Outcome, stalled_requeue: Duration) -> Outcome {
        let soonest = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (standing, requeue) = match (self.standing, later.standing) {
            (failed @ Standing::Failed(_), _) => (failed, self.requeue),
            (_, failed @ Standing::Failed(_)) => (failed, later.requeue),
            (earlier, Standing::Unchanged) => (earlier, soonest(self.requeue, later.requeue)),
            (_, Standing::Phase(stalled @ Phase::Stalled { .. })) => {
                (Standing::Phase(stalled), soonest(Some(stalled_requeue), later.requeue))
            }
            (_, Standing::Phase(phase)) => (Standing::Phase(phase), soonest(self.requeue, later.requeue)),
        };
        Outcome { standing, requeue, status: self.status.then(later.status) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALLED: Duration = Duration::from_secs(3600);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn phase_of(o: &Outcome) -> Option<Phase> {
        match &o.standing {
            Standing::Phase(p) => Some(p.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_later_phase_replaces_the_phase_and_the_soonest_requeue_wins() {
        let ready = || Outcome::phase(Phase::Ready).requeue(s(60));
        let merged = ready().then(Outcome::unchanged(), STALLED);
        assert_eq!((phase_of(&merged), merged.requeue), (Some(Phase::Ready), Some(s(60))));

        let pending = Phase::Progressing { reason: Reason::AccessPending, message: "m".into() };
        let merged = ready().then(Outcome::phase(pending.clone()).requeue(s(5)), STALLED);
        assert_eq!((phase_of(&merged), merged.requeue), (Some(pending), Some(s(5))));

        let merged = Outcome::phase(Phase::Ready).then(Outcome::unchanged().requeue(s(90)), STALLED);
        assert_eq!(merged.requeue, Some(s(90)));
    }

    #[test]
    fn a_later_stall_waits_the_stalled_requeue_even_when_longer() {
        let merged =
            Outcome::phase(Phase::Ready).requeue(s(60)).then(Outcome::stalled(Reason::AccessFailed, "m"), STALLED);
        assert_eq!(merged.requeue, Some(STALLED));
        assert!(matches!(phase_of(&merged), Some(Phase::Stalled { reason: Reason::AccessFailed, .. })));
    }

    #[test]
    fn a_failure_ends_the_reconcile_and_keeps_the_earlier_facts() {
        let pending = PendingOperation {
            kind: "CreateWorkspace".into(),
            poller: "{}".into(),
            started_at: None,
            generation: None,
        };
        let earlier = Outcome::phase(Phase::Ready).facts(WorkspaceFacts::Missing).pending(Some(pending.clone()));
        let merged = earlier.then(Outcome::failed(Error::BadPendingOperation("x".into())), STALLED);
        assert!(matches!(merged.standing, Standing::Failed(_)));
        assert_eq!(merged.status.workspace, WorkspaceFacts::Missing, "the facts read before the failure stay");
        assert_eq!(merged.status.pending, Some(pending), "the operation in flight is not forgotten");

        // Nothing after a failure changes its verdict.
        let merged =
            Outcome::failed(Error::BadPendingOperation("x".into())).then(Outcome::phase(Phase::Ready), STALLED);
        assert!(matches!(merged.standing, Standing::Failed(_)));
    }

    #[test]
    fn a_later_steps_status_changes_win_and_what_it_leaves_alone_stays() {
        let keys = KeysUpdate { storage_keys: None, condition: Some((true, Reason::KeysInSync, "m".into())) };
        let earlier = Outcome::phase(Phase::Ready).facts(WorkspaceFacts::Missing).keys(keys.clone());
        let merged = earlier.then(Outcome::unchanged().facts(WorkspaceFacts::Unknown), STALLED);
        assert_eq!(merged.status.workspace, WorkspaceFacts::Missing, "Unknown keeps the earlier facts");
        assert_eq!(merged.status.keys, Some(keys));
        let merged = merged.then(Outcome::unchanged().missing_dependency(None), STALLED);
        assert_eq!(merged.status.missing_dependency, Some(None), "'could not tell' is a statement too");
        assert!(merged.is_ready());
    }
}
