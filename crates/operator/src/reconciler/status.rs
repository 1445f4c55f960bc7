//! Status, kind-independent: the outcome phase, conditions, the comparison that ignores timestamps and the merge
//! patch. Each kind's facts are its own (`controller::status` for MlWorkspace); writing goes through
//! [`super::Shell::write_status`], the only status writer.
//!
//! Conditions carry `observedGeneration` and a [`crate::api::conditions::Reason`];
//! `lastTransitionTime` moves only when a condition's status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::conditions::{self, Reason};
use crate::api::v1alpha1::{MlComputeStatus, MlOnlineEndpointStatus, MlWorkspaceStatus};

pub(crate) const TRUE: &str = "True";
const FALSE: &str = "False";

/// Where a reconcile left the resource: what the kstatus conditions (Ready, Reconciling, Stalled) say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Azure matches the spec.
    Ready,
    /// The controller is working (an operation is in flight, or it just wrote something).
    Progressing {
        /// Condition reason (Creating, Updating, OperationInProgress, Deleting).
        reason: Reason,
        /// What is happening.
        message: String,
    },
    /// No progress without a change to the spec or to Azure.
    Stalled {
        /// Condition reason (NotPermitted, AlreadyExists, AzureRejected, InvalidSpec, ...).
        reason: Reason,
        /// What is wrong, with the ARM code and message where there is one.
        message: String,
    },
    /// `azml.dev/paused`: observed only.
    Paused {
        /// Whether Azure matches the spec.
        in_sync: bool,
        /// What the controller withholds.
        message: String,
    },
    /// A transient failure; the controller retries with backoff.
    Transient {
        /// The error chain (redacted).
        message: String,
    },
}

impl Phase {
    /// `azml.dev/paused`: observed only. Ready when Azure matches (`in_sync`); the message names what the
    /// controller withholds.
    pub fn paused(in_sync: bool, withheld: impl IntoIterator<Item = String>) -> Phase {
        let message = if in_sync {
            "paused by annotation azml.dev/paused; Azure matches the spec".to_owned()
        } else {
            let withheld: Vec<String> = withheld.into_iter().collect();
            format!("paused by annotation azml.dev/paused; withheld: {}", withheld.join("; "))
        };
        Phase::Paused { in_sync, message }
    }
}

/// Sets a condition; `lastTransitionTime` changes only when the status flips (or the condition is new).
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if ok { TRUE } else { FALSE };
    let message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status.to_owned();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Condition messages are capped (Kubernetes allows 32768 bytes; ARM messages can be long).
const MAX_MESSAGE_CHARS: usize = 2048;

/// A status the controllers patch only on change: what [`changed`] must ignore (its timestamps).
pub trait TimestampedStatus: Clone + PartialEq + Serialize {
    /// The conditions (their `lastTransitionTime` is ignored, and so is their order).
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// `status.lastSyncTime`.
    fn last_sync_time_mut(&mut self) -> &mut Option<Time>;
}

impl TimestampedStatus for MlWorkspaceStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn last_sync_time_mut(&mut self) -> &mut Option<Time> {
        &mut self.last_sync_time
    }
}

impl TimestampedStatus for MlOnlineEndpointStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn last_sync_time_mut(&mut self) -> &mut Option<Time> {
        &mut self.last_sync_time
    }
}

/// The status with every timestamp blanked, for comparisons.
fn without_timestamps<S: TimestampedStatus>(status: &S) -> S {
    let epoch = Time(jiff::Timestamp::UNIX_EPOCH);
    let mut s = status.clone();
    *s.last_sync_time_mut() = None;
    let conditions = s.conditions_mut();
    for c in conditions.iter_mut() {
        c.last_transition_time = epoch.clone();
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    s
}

/// Whether `new` differs from `old` in anything but timestamps.
pub fn changed<S: TimestampedStatus>(old: Option<&S>, new: &S) -> bool {
    match old {
        None => true,
        Some(old) => without_timestamps(old) != without_timestamps(new),
    }
}

/// A JSON merge patch (`{"status": ...}`) turning `old` into `new`: fields that disappeared are sent as `null`,
/// because a merge patch leaves absent fields untouched.
pub fn merge_patch<S: Serialize>(old: Option<&S>, new: &S) -> Value {
    let to_map = |s: &S| match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut patch = to_map(new);
    if let Some(old) = old {
        null_removed(&to_map(old), &mut patch);
    }
    serde_json::json!({ "status": Value::Object(patch) })
}

/// Adds `null` for every field of `old` missing in `new`, in nested objects too (a merge patch merges objects
/// recursively, so a field removed from e.g. `storageKeys` would otherwise stay).
fn null_removed(old: &Map<String, Value>, new: &mut Map<String, Value>) {
    for (key, old_value) in old {
        match (new.get_mut(key), old_value) {
            (None, _) => {
                new.insert(key.clone(), Value::Null);
            }
            (Some(Value::Object(n)), Value::Object(o)) => null_removed(o, n),
            _ => {}
        }
    }
}

impl TimestampedStatus for MlComputeStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn last_sync_time_mut(&mut self) -> &mut Option<Time> {
        &mut self.last_sync_time
    }
}

/// Whether `conds` hold condition `type_` with status `status` ("True"/"False").
pub fn condition_is(conds: &[Condition], type_: &str, status: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == status)
}

/// Ready, Reconciling and Stalled of a kind that lives in a workspace (endpoints, computes) for `phase`:
/// `ready_message` says what Ready means for it.
pub fn set_kstatus(
    conds: &mut Vec<Condition>,
    phase: &Phase,
    ready_message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let (ready, reconciling, stalled, reason, message) = match phase {
        Phase::Ready => (true, false, false, Reason::Reconciled, ready_message.to_owned()),
        Phase::Progressing { reason, message } => (false, true, false, *reason, message.clone()),
        Phase::Stalled { reason, message } => (false, false, true, *reason, message.clone()),
        Phase::Transient { message } => (false, true, false, Reason::TransientError, message.clone()),
        Phase::Paused { in_sync, message } => (*in_sync, false, false, Reason::Paused, message.clone()),
    };
    set_condition(conds, conditions::READY, ready, reason, &message, generation, now);
    let (r, m) = if reconciling { (reason, message.as_str()) } else { (Reason::Reconciled, "") };
    set_condition(conds, conditions::RECONCILING, reconciling, r, m, generation, now);
    let (r, m) = if stalled { (reason, message.as_str()) } else { (Reason::Reconciled, "") };
    set_condition(conds, conditions::STALLED, stalled, r, m, generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_capped() {
        let mut conds = Vec::new();
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        set_condition(&mut conds, conditions::STALLED, true, Reason::AzureRejected, &"x".repeat(10_000), None, &now);
        assert_eq!(conds[0].message.len(), MAX_MESSAGE_CHARS);
    }
}
