//! Soft-deleted ML workspaces, as Azure Machine Learning keeps them (Learn: "Workspace soft deletion").
//!
//! - `DELETE {ws}` soft-deletes by default: the workspace disappears from GET and lists, but its name stays taken
//!   for the retention period, `properties.softDeleteRetentionInDays` (1..14, default 14). Workspaces encrypted with
//!   a customer-managed key are always deleted for good. Its online endpoints and role assignments are deleted.
//! - While soft-deleted, a create (PUT) of the same name is accepted and its operation fails with Azure's answer:
//!   `BadRequest` "Soft-deleted workspace exists. Please purge or recover it. https://aka.ms/wsoftdelete" (as ARM
//!   deployments report it: the write reaches the terminal provisioning state Failed).
//! - Recover: a PUT of the same name, resource group and location whose body sets `properties.restore: true`. Azure
//!   ML publishes no REST operation for its portal's "Recover" button; this is how Azure's other soft-deleting
//!   resource providers (Cognitive Services accounts) recover, so the simulator models recovery that way. The
//!   workspace comes back as it was (tags included); a `restore` without a soft-deleted workspace fails with
//!   `BadRequest`.
//! - Purge: `DELETE {ws}?forceToPurge=true` deletes a live workspace for good, and purges a soft-deleted one (the name
//!   is free at once). A DELETE without `forceToPurge` of a soft-deleted workspace answers 204 (it does not exist).
//! - After the retention period a soft-deleted workspace is purged automatically. The period runs on the simulator's
//!   clock, which the admin API can advance (`POST /_sim/clock/advance`).
//! - Azure lists soft-deleted workspaces only in the portal ("Recently deleted"); there is no ARM list, so the
//!   simulator exposes them on its admin API (`GET /_sim/softDeletedWorkspaces`) only.

use http::StatusCode;
use jiff::{SignedDuration, Timestamp};

use serde_json::Value;

use super::engine::{Inner, PutCheck, Req};
use super::model::{OpError, OpKind, SoftDeletedWorkspace, id_key, scope_contains};
use super::reply::{ArmError, Reply};

/// Azure's message for a create over a soft-deleted workspace.
pub const SOFT_DELETED_MESSAGE: &str =
    "Soft-deleted workspace exists. Please purge or recover it. https://aka.ms/wsoftdelete";

/// Default retention of a soft-deleted workspace.
pub const DEFAULT_RETENTION_DAYS: i64 = 14;

fn retention_days(body: &Value) -> Result<i64, ArmError> {
    match body.pointer("/properties/softDeleteRetentionInDays") {
        None | Some(Value::Null) => Ok(DEFAULT_RETENTION_DAYS),
        Some(v) => match v.as_i64() {
            Some(d) if (1..=DEFAULT_RETENTION_DAYS).contains(&d) => Ok(d),
            _ => Err(ArmError::bad_request(
                "BadRequest",
                format!("softDeleteRetentionInDays must be between 1 and {DEFAULT_RETENTION_DAYS} days, not {v}."),
            )
            .target("properties.softDeleteRetentionInDays")),
        },
    }
}

fn wants_restore(body: &Value) -> bool {
    body.pointer("/properties/restore").and_then(Value::as_bool).unwrap_or(false)
}

fn cmk(body: &Value) -> bool {
    body.pointer("/properties/encryption/status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("Enabled"))
}

impl Inner {
    /// The simulator's clock: the wall clock plus the offset set through the admin API.
    pub(crate) fn sim_now(&self) -> Timestamp {
        self.state.clock_now()
    }

    /// Checks a workspace PUT against the soft-deleted workspaces (before the ordinary create/update runs).
    pub(crate) fn check_workspace_put(&self, id: &str, body: &Value, exists: bool) -> Result<PutCheck, ArmError> {
        retention_days(body)?;
        let restore = wants_restore(body);
        let Some(deleted) = self.state.soft_deleted.get(&id_key(id)) else {
            if restore && !exists {
                return Err(ArmError::bad_request(
                    "BadRequest",
                    format!("There is no soft-deleted workspace '{}' to recover.", id.rsplit('/').next().unwrap_or(id)),
                ));
            }
            return Ok(PutCheck::Proceed);
        };
        if !restore {
            return Ok(PutCheck::Blocked(OpError {
                status: 400,
                code: "BadRequest".into(),
                message: SOFT_DELETED_MESSAGE.into(),
                details: vec![],
            }));
        }
        let was = deleted.resource.body.get("location").and_then(Value::as_str).unwrap_or_default();
        let asked = body.get("location").and_then(Value::as_str).unwrap_or_default();
        if !was.eq_ignore_ascii_case(asked) {
            return Err(ArmError::bad_request(
                "BadRequest",
                format!(
                    "The soft-deleted workspace is in location '{was}'; recover it in that location, not '{asked}'."
                ),
            )
            .target("location"));
        }
        Ok(PutCheck::Recover)
    }

    /// Puts a soft-deleted workspace back (provisioning state `Creating`; the caller starts the operation).
    pub(crate) fn recover_workspace(&mut self, id: &str) {
        if let Some(deleted) = self.state.soft_deleted.remove(&id_key(id)) {
            let mut resource = deleted.resource;
            resource.set_provisioning_state("Creating");
            self.state.resources.insert(id_key(id), resource);
        }
    }

    /// The operation kind of a workspace DELETE: soft delete unless `forceToPurge=true` or the workspace is encrypted
    /// with a customer-managed key.
    pub(crate) fn workspace_delete_kind(&self, req: &Req, id: &str) -> OpKind {
        let force = req.q("forceToPurge").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let cmk = self.state.resources.get(&id_key(id)).is_some_and(|r| cmk(&r.body));
        if force || cmk { OpKind::Delete } else { OpKind::SoftDeleteWorkspace }
    }

    /// A DELETE of a workspace that is soft-deleted (not live): purge with `forceToPurge=true`, else 204. `None` when
    /// nothing of that name is soft-deleted (or it is live).
    pub(crate) fn delete_soft_deleted(&mut self, req: &Req, id: &str) -> Option<Reply> {
        let key = id_key(id);
        if self.state.resources.contains_key(&key) || !self.state.soft_deleted.contains_key(&key) {
            return None;
        }
        if req.q("forceToPurge").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.state.soft_deleted.remove(&key);
            return Some(Reply::empty(StatusCode::OK));
        }
        Some(Reply::empty(StatusCode::NO_CONTENT))
    }

    /// Completes a soft delete: the workspace leaves the live resources (its children and role assignments inside
    /// it are deleted) and is kept for its retention period.
    pub(crate) fn soft_delete_workspace(&mut self, id: &str) {
        let key = id_key(id);
        let Some(mut resource) = self.state.resources.get(&key).cloned() else { return };
        let days = retention_days(&resource.body).unwrap_or(DEFAULT_RETENTION_DAYS);
        self.state.resources.retain(|_, r| !scope_contains(id, &r.id));
        self.state.role_assignments.retain(|_, ra| !scope_contains(id, &ra.scope));
        resource.set_provisioning_state("Succeeded");
        let now = self.sim_now();
        let purge_at = now.checked_add(SignedDuration::from_hours(24 * days)).unwrap_or(Timestamp::MAX);
        self.state.soft_deleted.insert(key, SoftDeletedWorkspace { resource, deleted_at: now, purge_at });
    }

    /// Purges the soft-deleted workspaces whose retention period is over.
    pub(crate) fn expire_soft_deleted(&mut self) {
        let now = self.sim_now();
        self.state.soft_deleted.retain(|_, w| w.purge_at > now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn retention_is_between_one_and_fourteen_days() {
        assert_eq!(retention_days(&json!({"properties": {}})).unwrap(), 14);
        assert_eq!(retention_days(&json!({"properties": {"softDeleteRetentionInDays": 3}})).unwrap(), 3);
        assert!(retention_days(&json!({"properties": {"softDeleteRetentionInDays": 0}})).is_err());
        assert!(retention_days(&json!({"properties": {"softDeleteRetentionInDays": 15}})).is_err());
        assert!(wants_restore(&json!({"properties": {"restore": true}})));
        assert!(!wants_restore(&json!({"properties": {}})));
    }
}
