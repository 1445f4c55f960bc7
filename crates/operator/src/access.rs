//! Role assignments: `spec.access` is the complete desired set of role assignments a resource grants.
//!
//! Pure planning ([`plan_access`], [`needs_listing`], [`summarize`]), shared by every kind that grants roles; the
//! I/O is each kind's own step (`controller::access` for MlWorkspace, `endpoints::access` for MlOnlineEndpoint).
//!
//! - **Names are deterministic**: [`assignment_name`] is the UUIDv5 of scope, role definition and principal, so a
//!   crash between the PUT and the status update never creates a duplicate (the next PUT of the same name is
//!   idempotent, and the listing finds the assignment again), and a re-created custom resource finds its
//!   assignments again.
//! - **Ownership**: the operator marks what it creates with the description [`marker`]
//!   (`managed by azml-operator for <namespace>/<name>`) and records it in `status.access` as `Granted`. It deletes
//!   only assignments that carry its marker (or, when Azure was not listed, that status records as `Granted`) and
//!   that sit at one of the workspace's three scopes. An equivalent assignment made by anyone else (found in the
//!   listing, or a 409 `RoleAssignmentExists`) is reported `Unmanaged`, counts as granted, and is never deleted.
//! - **Order**: all deletions of a reconcile run before any creation, and no creation runs while a deletion failed.
//!   A changed principal, role or scope is "delete the old, create the new": creating first would briefly give the
//!   principal both assignments (e.g. AzureMLDataScientist and AzureMLComputeOperator), i.e. more rights than
//!   either declaration; deleting first only ever leaves it with a subset of the old set, then a subset of the new.
//!   The price is a short gap without the new access, which is the safe direction.
//! - **Listing**: one `RoleAssignments_ListForScope` at the workspace with `$filter=atScope()` (which returns the
//!   assignments at the workspace, its resource group and its subscription, paged) per reconcile at most; skipped
//!   when the declared set has not changed, every entry is already Granted/Unmanaged and the resync period has not
//!   elapsed since the last listing, so steady state costs no ARM call for access between resyncs.
//! - **Replication delay**: a `PrincipalNotFound` (a service principal created moments ago) keeps the entry
//!   `Pending` and retries with backoff until [`ControllerConfig::principal_wait`](crate::reconciler::ControllerConfig) has passed
//!   since the first such answer, then the entry is `Failed` with the reason (and retried only at resyncs).
//!   The window is kept in memory: a restarted operator starts a new one.

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use uuid::Uuid;

use crate::api::conditions::reasons;
use crate::api::v1alpha1::{AccessEntry, AccessScope, AccessState, AccessStatus, PrincipalType};
use crate::azure::authorization::{self, RoleAssignment, RoleAssignmentCreate};
use crate::azure::{ArmError, ResourceId, RoleAssignmentRef, RoleDefinitionId, SubscriptionId, WorkspaceRef};
use crate::reconciler::error::{Disposition, Error, classify, error_chain, scrub};

/// Namespace of the assignment-name UUIDv5s: uuid5(NAMESPACE_URL, "https://azml.dev/role-assignments").
/// Never change it: the names of every assignment the operator created derive from it.
pub const NAME_NAMESPACE: Uuid = uuid::uuid!("45ba89f5-7e23-50b3-8621-e48a4d8cab69");

/// The deterministic name of the assignment of `role` to `principal` at `scope` (scope compared case-insensitively).
pub fn assignment_name(scope: &ResourceId, role: Uuid, principal: Uuid) -> Uuid {
    let key = format!(
        "{}|{}|{}",
        scope.as_str().trim_end_matches('/').to_ascii_lowercase(),
        role.hyphenated(),
        principal.hyphenated()
    );
    Uuid::new_v5(&NAME_NAMESPACE, key.as_bytes())
}

/// The description the operator puts on the assignments it creates for the custom resource `namespace/name`.
pub fn marker(namespace: &str, name: &str) -> String {
    format!("managed by azml-operator for {namespace}/{name}")
}

/// The three scopes a workspace grants at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes {
    /// The workspace itself.
    pub workspace: ResourceId,
    /// Its resource group.
    pub resource_group: ResourceId,
    /// Its subscription.
    pub subscription: ResourceId,
}

impl Scopes {
    /// The three scopes of a workspace at `ws`.
    pub fn at(ws: &WorkspaceRef) -> Self {
        Scopes {
            workspace: ws.resource_id(),
            resource_group: ws.resource_group.resource_id(),
            subscription: ResourceId::subscription(ws.subscription()),
        }
    }

    /// The scope of a kind.
    pub fn get(&self, kind: AccessScope) -> &ResourceId {
        match kind {
            AccessScope::Workspace => &self.workspace,
            AccessScope::ResourceGroup => &self.resource_group,
            AccessScope::Subscription => &self.subscription,
        }
    }

    /// Which of the three scopes `scope` is (case-insensitive), if any.
    pub fn kind_of(&self, scope: &str) -> Option<AccessScope> {
        let scope = scope.trim_end_matches('/');
        [AccessScope::Workspace, AccessScope::ResourceGroup, AccessScope::Subscription]
            .into_iter()
            .find(|k| self.get(*k).as_str().eq_ignore_ascii_case(scope))
    }
}

/// One declared assignment, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredAssignment {
    /// Principal object id.
    pub principal: Uuid,
    /// Declared principal type (lets ARM skip the directory lookup).
    pub principal_type: Option<PrincipalType>,
    /// Role definition GUID.
    pub role: Uuid,
    /// Scope kind as declared.
    pub scope_kind: AccessScope,
    /// Full scope.
    pub scope: ResourceId,
    /// Deterministic assignment name.
    pub name: Uuid,
}

/// An access entry that cannot be resolved (the schema should have caught it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessSpecError {
    /// principalId is not a GUID.
    #[error("spec.access[{index}].principalId {value:?} is not a GUID")]
    Principal {
        /// Entry index.
        index: usize,
        /// The value.
        value: String,
    },
    /// No role, or a roleDefinitionId that is not a GUID.
    #[error("spec.access[{index}]: set exactly one of role or roleDefinitionId (a GUID)")]
    Role {
        /// Entry index.
        index: usize,
    },
}

/// Resolves `spec.access`. Entries that resolve to the same assignment (e.g. `role: Reader` and the Reader GUID as
/// `roleDefinitionId`, which the CRD's uniqueness rule cannot see) are merged: the first one wins.
pub fn desired_assignments(
    scopes: &Scopes,
    entries: &[AccessEntry],
) -> Result<Vec<DesiredAssignment>, AccessSpecError> {
    let mut out: Vec<DesiredAssignment> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let principal = Uuid::try_parse(&entry.principal_id)
            .map_err(|_| AccessSpecError::Principal { index, value: entry.principal_id.clone() })?;
        let role = entry
            .role_definition_guid()
            .and_then(|g| Uuid::try_parse(&g).ok())
            .ok_or(AccessSpecError::Role { index })?;
        let scope = scopes.get(entry.scope).clone();
        let name = assignment_name(&scope, role, principal);
        if out.iter().all(|d| d.name != name) {
            out.push(DesiredAssignment {
                principal,
                principal_type: entry.principal_type,
                role,
                scope_kind: entry.scope,
                scope,
                name,
            });
        }
    }
    Ok(out)
}

/// A role assignment found in Azure at one of the workspace's scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingAssignment {
    /// Assignment name.
    pub name: Uuid,
    /// Scope kind.
    pub scope_kind: AccessScope,
    /// Role definition GUID.
    pub role: Uuid,
    /// Principal.
    pub principal: Uuid,
    /// Description (the operator's marker, or anything else).
    pub description: Option<String>,
}

impl ExistingAssignment {
    /// Reads a listed assignment; `None` when it is not at one of `scopes` (e.g. a management group) or unparseable.
    pub fn from_arm(ra: &RoleAssignment, scopes: &Scopes) -> Option<Self> {
        let id = ra.id.as_deref()?;
        let (scope_from_id, name) = split_assignment_id(id)?;
        let scope = ra.properties.scope.as_deref().unwrap_or(scope_from_id);
        Some(ExistingAssignment {
            name: Uuid::try_parse(ra.name.as_deref().unwrap_or(name)).ok()?,
            scope_kind: scopes.kind_of(scope)?,
            role: ra.role_definition()?.guid(),
            principal: ra.principal()?,
            description: ra.properties.description.clone(),
        })
    }

    fn matches(&self, d: &DesiredAssignment) -> bool {
        self.scope_kind == d.scope_kind && self.role == d.role && self.principal == d.principal
    }

    /// Whether the operator created this for the resource marked `marker`: the marker and the deterministic name
    /// of its own scope, role and principal.
    fn is_ours(&self, scopes: &Scopes, marker: &str) -> bool {
        self.description.as_deref() == Some(marker)
            && self.name == assignment_name(scopes.get(self.scope_kind), self.role, self.principal)
    }
}

fn split_assignment_id(id: &str) -> Option<(&str, &str)> {
    let lower = id.to_ascii_lowercase();
    let at = lower.find("/providers/microsoft.authorization/roleassignments/")?;
    let name_at = at + "/providers/microsoft.authorization/roleassignments/".len();
    Some((&id[..at], &id[name_at..]))
}

/// What the plan does to Azure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessAction {
    /// Delete an assignment the operator created that is no longer declared; `entry` indexes
    /// [`AccessPlan::entries`].
    Delete {
        /// Index of its status entry.
        entry: usize,
        /// The assignment.
        target: RoleAssignmentTarget,
    },
    /// Create a declared assignment under its deterministic name.
    Create {
        /// Index of its status entry.
        entry: usize,
        /// The assignment.
        assignment: DesiredAssignment,
    },
}

/// An assignment to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentTarget {
    /// Scope.
    pub scope: ResourceId,
    /// Name.
    pub name: Uuid,
}

/// The plan: status entries as they stand before the actions, and the actions (all deletions before all creations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPlan {
    /// One entry per declared assignment (spec order), then one per undeclared assignment the operator still owns.
    pub entries: Vec<AccessStatus>,
    /// How many of `entries` are declared.
    pub declared: usize,
    /// Deletions first, then creations.
    pub actions: Vec<AccessAction>,
}

/// Everything [`plan_access`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct AccessInput<'a> {
    /// The resolved declared set.
    pub desired: &'a [DesiredAssignment],
    /// The workspace's scopes.
    pub scopes: &'a Scopes,
    /// This resource's description marker.
    pub marker: &'a str,
    /// `status.access` as last written.
    pub previous: &'a [AccessStatus],
    /// What Azure has at the three scopes; `None` when not listed this time.
    pub existing: Option<&'a [ExistingAssignment]>,
}

fn entry(
    principal: Uuid,
    role: Uuid,
    kind: AccessScope,
    scopes: &Scopes,
    name: Uuid,
    state: AccessState,
    message: Option<String>,
) -> AccessStatus {
    AccessStatus {
        principal_id: principal.hyphenated().to_string(),
        role_definition_id: role.hyphenated().to_string(),
        scope_kind: kind,
        scope: scopes.get(kind).to_string(),
        assignment_name: name.hyphenated().to_string(),
        state,
        message,
    }
}

fn same_name(status_name: &str, name: Uuid) -> bool {
    Uuid::try_parse(status_name).is_ok_and(|n| n == name)
}

/// The access plan. Pure; see the module docs for the rules.
pub fn plan_access(input: AccessInput<'_>) -> AccessPlan {
    let AccessInput { desired, scopes, marker, previous, existing } = input;
    let mut entries = Vec::new();
    let mut creates = Vec::new();
    for d in desired {
        let make = |state, message| entry(d.principal, d.role, d.scope_kind, scopes, d.name, state, message);
        let state = match existing {
            Some(existing) => {
                let matching: Vec<&ExistingAssignment> = existing.iter().filter(|e| e.matches(d)).collect();
                if matching.iter().any(|e| e.name == d.name && e.description.as_deref() == Some(marker)) {
                    Some(make(AccessState::Granted, None))
                } else {
                    // Prefer the one under our name (made with our scheme by someone else), else the first.
                    matching.iter().find(|e| e.name == d.name).or(matching.first()).map(|e| {
                        let mut s = make(AccessState::Unmanaged, Some(unmanaged_message(e.name)));
                        s.assignment_name = e.name.hyphenated().to_string();
                        s
                    })
                }
            }
            None => previous
                .iter()
                .find(|p| {
                    (p.state == AccessState::Granted && same_name(&p.assignment_name, d.name))
                        || (p.state == AccessState::Unmanaged && status_matches(p, d))
                })
                .map(|p| {
                    let mut s = make(p.state, p.message.clone());
                    s.assignment_name = p.assignment_name.clone();
                    s
                }),
        };
        match state {
            Some(s) => entries.push(s),
            None => {
                creates.push((entries.len(), d.clone()));
                entries.push(make(AccessState::Pending, Some("creating the role assignment".into())));
            }
        }
    }
    let declared = entries.len();
    let is_declared = |name: Uuid| desired.iter().any(|d| d.name == name);

    // Undeclared assignments the operator owns: from status (Granted) and, when listed, marked ones in Azure
    // (created just before a crash that lost the status update).
    let mut candidates: Vec<(Uuid, AccessScope, Uuid, Uuid)> = Vec::new();
    for p in previous.iter().filter(|p| p.state == AccessState::Granted) {
        let (Ok(name), Some(kind), Ok(role), Ok(principal)) = (
            Uuid::try_parse(&p.assignment_name),
            scopes.kind_of(&p.scope),
            Uuid::try_parse(&p.role_definition_id),
            Uuid::try_parse(&p.principal_id),
        ) else {
            // Outside the workspace's scopes or edited by hand: never aimed at.
            continue;
        };
        candidates.push((name, kind, role, principal));
    }
    if let Some(existing) = existing {
        for e in existing.iter().filter(|e| e.is_ours(scopes, marker)) {
            candidates.push((e.name, e.scope_kind, e.role, e.principal));
        }
    }
    let mut deletes = Vec::new();
    for (name, kind, role, principal) in candidates {
        if is_declared(name) || entries[declared..].iter().any(|s| same_name(&s.assignment_name, name)) {
            continue;
        }
        let owned = match existing {
            // Only what still exists and still carries our marker.
            Some(existing) => existing
                .iter()
                .any(|e| e.name == name && e.scope_kind == kind && e.description.as_deref() == Some(marker)),
            None => true,
        };
        if owned {
            deletes.push(AccessAction::Delete {
                entry: entries.len(),
                target: RoleAssignmentTarget { scope: scopes.get(kind).clone(), name },
            });
            let message = Some("removing: no longer declared".to_owned());
            entries.push(entry(principal, role, kind, scopes, name, AccessState::Granted, message));
        }
    }
    let mut actions = deletes;
    actions.extend(creates.into_iter().map(|(entry, assignment)| AccessAction::Create { entry, assignment }));
    AccessPlan { entries, declared, actions }
}

fn status_matches(p: &AccessStatus, d: &DesiredAssignment) -> bool {
    p.scope_kind == d.scope_kind
        && Uuid::try_parse(&p.role_definition_id).is_ok_and(|r| r == d.role)
        && Uuid::try_parse(&p.principal_id).is_ok_and(|r| r == d.principal)
}

fn unmanaged_message(name: Uuid) -> String {
    format!("already assigned outside azml-operator (assignment {name}); it is never deleted by the operator")
}

/// A fingerprint of the declared set (names and principal types) and the marker, to notice a change.
pub fn fingerprint(desired: &[DesiredAssignment], marker: &str) -> u64 {
    let mut h = DefaultHasher::new();
    marker.hash(&mut h);
    for d in desired {
        d.name.hash(&mut h);
        d.principal_type.hash(&mut h);
    }
    h.finish()
}

/// What the controller remembers of the last access reconcile of a workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastListing {
    /// Fingerprint of the declared set then.
    pub fingerprint: u64,
    /// How long ago Azure was listed.
    pub age: Duration,
}

/// Whether Azure must be listed this reconcile. Not when nothing is declared and status records nothing the
/// operator owns; not when the declared set is unchanged since a listing younger than `resync` and status shows
/// every declared assignment Granted or Unmanaged and nothing else.
pub fn needs_listing(
    desired: &[DesiredAssignment],
    previous: &[AccessStatus],
    fingerprint: u64,
    last: Option<LastListing>,
    resync: Duration,
) -> bool {
    if desired.is_empty() && previous.iter().all(|p| p.state != AccessState::Granted) {
        return false;
    }
    let settled = previous.len() == desired.len()
        && desired.iter().all(|d| {
            previous.iter().any(|p| {
                (p.state == AccessState::Granted && same_name(&p.assignment_name, d.name))
                    || (p.state == AccessState::Unmanaged && status_matches(p, d))
            })
        });
    let fresh = last.is_some_and(|l| l.fingerprint == fingerprint && l.age < resync);
    !(settled && fresh)
}

/// The verdict on a workspace's access after a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessSummary {
    /// Every declared assignment holds and nothing undeclared is left.
    pub granted: bool,
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
    /// Something is still in progress (retry soon), as opposed to failed (wait for a change or a resync).
    pub pending: bool,
}

/// Summarises entries (the first `declared` are declared, the rest are undeclared ones still owned).
pub fn summarize(entries: &[AccessStatus], declared: usize) -> AccessSummary {
    summarize_at(entries, declared, AccessScope::as_str)
}

/// [`summarize`] naming each entry's scope with `scope_name` (an endpoint's entries use the planner's scope kind
/// Workspace for "the resource itself" and are reported as Endpoint).
pub fn summarize_at(
    entries: &[AccessStatus],
    declared: usize,
    scope_name: fn(AccessScope) -> &'static str,
) -> AccessSummary {
    let (wanted, leftover) = entries.split_at(declared.min(entries.len()));
    let ok = |s: &AccessStatus| matches!(s.state, AccessState::Granted | AccessState::Unmanaged);
    let mut problems: Vec<String> = Vec::new();
    let mut pending = false;
    for s in wanted.iter().filter(|s| !ok(s)) {
        pending |= s.state == AccessState::Pending;
        problems.push(format!("{} {} ({}): {}", describe(s), state_name(s.state), scope_name(s.scope_kind), msg(s)));
    }
    for s in leftover {
        // A leftover whose removal failed for good carries a message starting with "cannot remove".
        pending |= !msg(s).starts_with(CANNOT_REMOVE);
        problems.push(format!(
            "{} not declared, still assigned ({}): {}",
            describe(s),
            scope_name(s.scope_kind),
            msg(s)
        ));
    }
    if problems.is_empty() {
        let unmanaged = wanted.iter().filter(|s| s.state == AccessState::Unmanaged).count();
        let message = match (wanted.len(), unmanaged) {
            (0, _) => "no role assignments declared".to_owned(),
            (n, 0) => format!("{n} role assignment(s) granted"),
            (n, u) => format!("{n} role assignment(s) granted ({u} assigned outside azml-operator)"),
        };
        return AccessSummary { granted: true, reason: reasons::ACCESS_GRANTED, message, pending: false };
    }
    let reason = if pending { reasons::ACCESS_PENDING } else { reasons::ACCESS_FAILED };
    let mut message = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        let _ = write!(message, "{p}");
    }
    AccessSummary { granted: false, reason, message, pending }
}

const CANNOT_REMOVE: &str = "cannot remove";

/// The message of a leftover whose deletion failed: "cannot remove" when retrying cannot help (the access report then
/// no longer counts it as pending), else "removal failed, retrying".
pub(crate) fn removal_failure(disposition: &Disposition, message: &str) -> String {
    match disposition {
        Disposition::Stall { .. } => format!("{CANNOT_REMOVE}: {message}"),
        Disposition::Retry | Disposition::RetryAfter(_) => format!("removal failed, retrying: {message}"),
    }
}

pub(crate) fn describe(s: &AccessStatus) -> String {
    let role = crate::api::v1alpha1::BuiltinRole::ALL
        .iter()
        .find(|r| r.definition_guid().eq_ignore_ascii_case(&s.role_definition_id))
        .map_or_else(|| s.role_definition_id.clone(), |r| r.as_str().to_owned());
    format!("{role} for {}", s.principal_id)
}

fn state_name(state: AccessState) -> &'static str {
    match state {
        AccessState::Granted => "granted",
        AccessState::Pending => "pending",
        AccessState::Unmanaged => "unmanaged",
        AccessState::Failed => "failed",
    }
}

fn msg(s: &AccessStatus) -> &str {
    s.message.as_deref().unwrap_or("-")
}

pub(crate) fn is_principal_not_found(err: &ArmError) -> bool {
    err.code().is_some_and(|c| c.eq_ignore_ascii_case("PrincipalNotFound"))
}

pub(crate) fn is_assignment_exists(err: &ArmError) -> bool {
    err.code().is_some_and(|c| c.eq_ignore_ascii_case("RoleAssignmentExists"))
}

/// How a failed ARM call of the access step is handled, and its message (scrubbed).
pub(crate) fn arm_message(step: &'static str, err: ArmError) -> (Disposition, String) {
    let err = Error::Arm { step, source: Box::new(err) };
    let message = scrub(&error_chain(&err));
    (classify(&err), message)
}

/// The role assignment to create for `assignment` and its body: the role's definition in `subscription`, the
/// ownership `marker` as description.
pub(crate) fn create_request(
    assignment: &DesiredAssignment,
    subscription: SubscriptionId,
    marker: &str,
) -> (RoleAssignmentRef, RoleAssignmentCreate) {
    let body = RoleAssignmentCreate {
        role_definition_id: RoleDefinitionId::new(Some(subscription), assignment.role),
        principal_id: assignment.principal,
        principal_type: assignment.principal_type.map(principal_type),
        description: Some(marker.to_owned()),
    };
    (RoleAssignmentRef::new(assignment.scope.clone(), assignment.name), body)
}

/// The message of a creation held back because deletions failed.
pub(crate) const WAITING_FOR_REMOVALS: &str =
    "waiting until the assignments no longer declared are removed (never more rights than declared)";

/// Records a failed creation in `slot`: Failed when retrying cannot help, else Pending. Returns whether it is
/// retried.
pub(crate) fn record_create_failure(slot: &mut AccessStatus, disposition: Disposition, message: String) -> bool {
    match disposition {
        Disposition::Stall { .. } => {
            slot.state = AccessState::Failed;
            slot.message = Some(message);
            false
        }
        Disposition::Retry | Disposition::RetryAfter(_) => {
            slot.state = AccessState::Pending;
            slot.message = Some(format!("retrying: {message}"));
            true
        }
    }
}

/// The entries whose assignment was not deleted (`removed` is parallel to `entries`).
pub(crate) fn not_removed(entries: Vec<AccessStatus>, removed: Vec<bool>) -> Vec<AccessStatus> {
    entries.into_iter().zip(removed).filter(|(_, gone)| !gone).map(|(e, _)| e).collect()
}

/// The ARM principal type of a declared one.
pub fn principal_type(t: PrincipalType) -> authorization::PrincipalType {
    match t {
        PrincipalType::User => authorization::PrincipalType::User,
        PrincipalType::Group => authorization::PrincipalType::Group,
        PrincipalType::ServicePrincipal => authorization::PrincipalType::ServicePrincipal,
    }
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
