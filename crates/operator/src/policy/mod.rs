//! Who may target what: matching an `MlWorkspace` against the cluster's `SubscriptionBinding`s.
//!
//! Pure functions over in-memory objects, so the rules are tested as plain code. Before any Azure call the
//! controller calls:
//! - [`authorize`]: a binding must allow the namespace, subscription, resource group (glob) and every access
//!   entry's role and scope; [`authorize_move`] does the same for both ends of a move, which must also allow moves;
//! - [`authorize_with_resources`] / [`check_resource`]: every resource a spec names by ARM id must be in the binding's
//!   subscription and in a resource group the binding allows for the intended use ([`Intent`]): `resourceGroups`
//!   for writes, `resourceGroups` or `dependencyResourceGroups` for reads ([`resources`]);
//! - [`check_pending_operation`]: an operation stored in status must stay in the workspace's subscription.
//!
//! A denial becomes `Stalled` with reason `NotPermitted` and the message of [`Denial`] / [`ResourceDenial`],
//! which names the missing permission.

use std::collections::BTreeMap;

use globset::GlobBuilder;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::v1alpha1::{
    AccessEntry, AccessScope, BuiltinRole, DependentResource, MlWorkspaceSpec, MlWorkspaceStatus, SubscriptionBinding,
};
use crate::azure::LroHandle;

pub mod resources;
pub mod selection;
pub use resources::{
    Intent, Refusal, ResourceDenial, authorize_with_resources, check_dependencies, check_resource,
    check_resource_because, dependency_uses,
};

/// What a workspace asks for, as far as bindings are concerned.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Namespace of the workspace.
    pub namespace: &'a str,
    /// Labels of that namespace; `None` when they were not read (then only `namespaces` lists can match).
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// `spec.subscriptionId`.
    pub subscription_id: &'a str,
    /// `spec.resourceGroup`.
    pub resource_group: &'a str,
    /// `spec.access` (an endpoint's entries in the workspace's terms: scope Workspace is the endpoint).
    pub access: &'a [AccessEntry],
    /// Which resource the access entries grant roles at (named in a scope denial).
    pub grantor: Grantor,
}

/// The resource whose `spec.access` a request carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grantor {
    /// An MlWorkspace: at the workspace, its resource group or its subscription.
    #[default]
    Workspace,
    /// An MlOnlineEndpoint: at the endpoint itself, which a binding allows with scope Workspace (the endpoint is part
    /// of the workspace).
    Endpoint,
}

impl Grantor {
    /// How a denied scope of an entry is named for this grantor.
    fn scope_name(self, scope: AccessScope) -> &'static str {
        match self {
            Grantor::Workspace => scope.as_str(),
            Grantor::Endpoint => "Endpoint (endpoint roles need Workspace in the binding's allowedScopes)",
        }
    }
}

/// The operation in `status.pendingOperation` addresses something outside the workspace's subscription.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("its URL {url} is outside subscription {subscription}; the operation is dropped")]
pub struct ForeignOperation {
    /// The URL that leaves the subscription.
    pub url: String,
    /// The workspace's subscription.
    pub subscription: String,
}

/// Why no binding allows a request. `Display` is the message users see in the `NotPermitted` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No binding grants the subscription at all.
    #[error("no SubscriptionBinding grants subscription {subscription}")]
    Subscription {
        /// The subscription asked for.
        subscription: String,
    },
    /// Bindings grant the subscription, but not to this namespace.
    #[error("no SubscriptionBinding allows namespace {namespace} to use subscription {subscription}")]
    Namespace {
        /// The workspace's namespace.
        namespace: String,
        /// The subscription asked for.
        subscription: String,
    },
    /// The namespace may use the subscription, but not this resource group.
    #[error(
        "SubscriptionBinding {binding} does not allow resource group {resource_group} (allowed: {})",
        allowed.join(", ")
    )]
    ResourceGroup {
        /// The binding that came closest.
        binding: String,
        /// The resource group asked for.
        resource_group: String,
        /// The binding's patterns.
        allowed: Vec<String>,
    },
    /// An access entry names no role (the schema should have caught it).
    #[error("access entry for principal {principal} names no role")]
    MissingRole {
        /// The entry's principal.
        principal: String,
    },
    /// An access entry asks for a role the binding does not allow.
    #[error(
        "SubscriptionBinding {binding} does not allow granting role {role} (access entry for principal {principal})"
    )]
    Role {
        /// The binding that came closest.
        binding: String,
        /// The role, as written in the spec.
        role: String,
        /// The entry's principal.
        principal: String,
    },
    /// An access entry asks for a scope the binding does not allow.
    #[error(
        "SubscriptionBinding {binding} does not allow granting roles at scope {scope} (access entry for principal {principal})"
    )]
    Scope {
        /// The binding that came closest.
        binding: String,
        /// The scope asked for.
        scope: &'static str,
        /// The entry's principal.
        principal: String,
    },
    /// A move the binding of its source or target does not allow.
    #[error(
        "SubscriptionBinding {binding} does not allow moving workspaces {direction} subscription {subscription} (allowMoves is false)"
    )]
    Move {
        /// The binding that refuses.
        binding: String,
        /// "out of" or "into".
        direction: &'static str,
        /// Its subscription.
        subscription: String,
    },
}

/// The dependent resources a spec names, with their field names.
pub fn dependencies(spec: &MlWorkspaceSpec) -> Vec<(&'static str, &DependentResource)> {
    let mut deps = vec![("storageAccount", &spec.storage_account), ("keyVault", &spec.key_vault)];
    deps.extend(spec.application_insights.as_ref().map(|d| ("applicationInsights", d)));
    deps.extend(spec.container_registry.as_ref().map(|d| ("containerRegistry", d)));
    deps
}

/// Checks that the operation stored in `status.pendingOperation` only ever addresses the workspace's own
/// subscription. Status is written by the operator, but anyone allowed to patch `mlworkspaces/status` could aim a
/// stored poller at another subscription's resources; the operator would then call ARM there with the binding's
/// credential. The ARM client already refuses URLs on other hosts. Returns the reason when the operation must be
/// dropped.
pub fn check_pending_operation(status: Option<&MlWorkspaceStatus>, subscription: &str) -> Result<(), ForeignOperation> {
    let Some(op) = status.and_then(|s| s.pending_operation.as_ref()) else {
        return Ok(());
    };
    // An unreadable poller is the observe step's business (it reports BadPendingOperation).
    let Ok(handle) = serde_json::from_str::<LroHandle>(&op.poller) else {
        return Ok(());
    };
    let prefix = format!("/subscriptions/{subscription}/").to_ascii_lowercase();
    let urls = [Some(&handle.poll_url), Some(&handle.resource_url), handle.location_url.as_ref()];
    for url in urls.into_iter().flatten() {
        // Parsing resolves `..` and `%2e%2e` segments, so the prefix test sees the path ARM would see.
        let inside = url::Url::parse(url)
            .is_ok_and(|u| u.path().to_ascii_lowercase().starts_with(&prefix) && !u.path().contains("%2"));
        if !inside {
            return Err(ForeignOperation { url: url.clone(), subscription: subscription.to_owned() });
        }
    }
    Ok(())
}

impl Denial {
    /// How far a binding got before it failed; the denial of the binding that got furthest is reported.
    fn stage(&self) -> u8 {
        match self {
            Denial::Subscription { .. } => 0,
            Denial::Namespace { .. } => 1,
            Denial::ResourceGroup { .. } => 2,
            Denial::MissingRole { .. } | Denial::Role { .. } => 3,
            Denial::Scope { .. } => 4,
            Denial::Move { .. } => 5,
        }
    }
}

/// Whether any binding for `subscription_id` selects namespaces by label, i.e. whether the caller must read the
/// namespace's labels before calling [`authorize`].
pub fn needs_namespace_labels(bindings: &[SubscriptionBinding], subscription_id: &str) -> bool {
    bindings
        .iter()
        .any(|b| b.spec.subscription_id.eq_ignore_ascii_case(subscription_id) && b.spec.namespace_selector.is_some())
}

/// The binding (lowest name first, for determinism) that allows everything the request asks for, or the denial of
/// the binding that came closest.
pub fn authorize<'a>(
    bindings: &'a [SubscriptionBinding],
    req: &Request<'_>,
) -> Result<&'a SubscriptionBinding, Denial> {
    let mut candidates: Vec<&SubscriptionBinding> = bindings.iter().collect();
    candidates.sort_by_key(|b| b.name_any());
    let mut best = Denial::Subscription { subscription: req.subscription_id.to_owned() };
    for binding in candidates {
        match check(binding, req) {
            Ok(()) => return Ok(binding),
            Err(denial) if denial.stage() > best.stage() => best = denial,
            Err(_) => {}
        }
    }
    Err(best)
}

/// Authorizes moving a workspace from `from` to `to` (another subscription or resource group): the namespace must
/// be allowed both places, and the bindings of both (the same one for a move within a subscription) must set
/// `allowMoves`. Returns the binding of the target, whose credential the move runs with.
pub fn authorize_move<'a>(
    bindings: &'a [SubscriptionBinding],
    from: &Request<'_>,
    to: &Request<'_>,
) -> Result<&'a SubscriptionBinding, Denial> {
    let source = authorize(bindings, from)?;
    let target = authorize(bindings, to)?;
    for (binding, direction) in [(source, "out of"), (target, "into")] {
        if !binding.spec.allow_moves {
            return Err(Denial::Move {
                binding: binding.name_any(),
                direction,
                subscription: binding.spec.subscription_id.clone(),
            });
        }
    }
    Ok(target)
}

/// Checks one binding against the request, in the order subscription, namespace, resource group, roles, scopes.
pub fn check(binding: &SubscriptionBinding, req: &Request<'_>) -> Result<(), Denial> {
    let spec = &binding.spec;
    let name = binding.name_any();
    if !spec.subscription_id.eq_ignore_ascii_case(req.subscription_id) {
        return Err(Denial::Subscription { subscription: req.subscription_id.to_owned() });
    }
    if !namespace_allowed(binding, req.namespace, req.namespace_labels) {
        return Err(Denial::Namespace {
            namespace: req.namespace.to_owned(),
            subscription: req.subscription_id.to_owned(),
        });
    }
    if !spec.resource_groups.iter().any(|p| glob_matches(p, req.resource_group)) {
        return Err(Denial::ResourceGroup {
            binding: name,
            resource_group: req.resource_group.to_owned(),
            allowed: spec.resource_groups.clone(),
        });
    }
    let allowed_roles: Vec<String> = spec.allowed_roles.iter().map(|r| role_guid(r)).collect();
    for entry in req.access {
        let Some(guid) = entry.role_definition_guid() else {
            return Err(Denial::MissingRole { principal: entry.principal_id.clone() });
        };
        if !allowed_roles.contains(&guid) {
            return Err(Denial::Role { binding: name, role: role_label(entry), principal: entry.principal_id.clone() });
        }
    }
    for entry in req.access {
        if !spec.allowed_scopes.contains(&entry.scope) {
            return Err(Denial::Scope {
                binding: name,
                scope: req.grantor.scope_name(entry.scope),
                principal: entry.principal_id.clone(),
            });
        }
    }
    Ok(())
}

/// Whether `name` is a valid Kubernetes object name (RFC 1123 subdomain), so it cannot change the path of a
/// Kubernetes API request (the admission schema checks the same for `secretRef.name`; this is the second check).
pub fn is_kube_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// Whether the binding names the namespace or selects it by label.
pub fn namespace_allowed(
    binding: &SubscriptionBinding,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if binding.spec.namespaces.iter().any(|n| n == namespace) {
        return true;
    }
    let (Some(selector), Some(labels)) = (&binding.spec.namespace_selector, labels) else {
        return false;
    };
    // An invalid selector (e.g. `In` without values) selects nothing: failing closed.
    match Selector::try_from(selector.clone()) {
        Ok(selector) => selector.matches(labels),
        Err(_) => false,
    }
}

/// Whether a resource group matches a binding's glob pattern. Azure names are case-insensitive, so is the match;
/// an invalid pattern matches nothing.
pub fn glob_matches(pattern: &str, resource_group: &str) -> bool {
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher().is_match(resource_group))
        .unwrap_or(false)
}

/// A binding's `allowedRoles` entry as a lower-case role definition GUID: built-in names map to their GUID.
fn role_guid(allowed: &str) -> String {
    BuiltinRole::ALL
        .iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(allowed))
        .map(|r| r.definition_guid().to_owned())
        .unwrap_or_else(|| allowed.to_ascii_lowercase())
}

/// The role of an entry as the user wrote it.
fn role_label(entry: &AccessEntry) -> String {
    match (&entry.role, &entry.role_definition_id) {
        (Some(role), _) => role.as_str().to_owned(),
        (None, Some(id)) => id.clone(),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests;
