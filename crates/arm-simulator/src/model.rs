//! The simulator's in-memory world: subscriptions, resource groups, resources, principals, RBAC, activity log and
//! long-running operations. Everything here is plain data (serde), so a sandbox can save and restore it as JSON.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::federation::{FederatedCredential, OidcIssuerKey, TOKEN_EXCHANGE_AUDIENCE};
pub use super::secret::Secret;

/// The lookup key of an ARM id: ids are case-insensitive, so maps are keyed by the lower-cased id.
pub fn id_key(id: &str) -> String {
    let trimmed = id.trim_end_matches('/');
    let with_slash = if trimmed.starts_with('/') { trimmed.to_string() } else { format!("/{trimmed}") };
    with_slash.to_ascii_lowercase()
}

/// Whether `scope` equals `id` or is an ancestor of it (segment-wise, case-insensitive). Compares the two as
/// [`id_key`] would normalise them, without allocating: it runs for every role assignment of every request.
pub fn scope_contains(scope: &str, id: &str) -> bool {
    // id_key: without trailing slashes, with one leading slash.
    fn norm(x: &str) -> &str {
        let trimmed = x.trim_end_matches('/');
        trimmed.strip_prefix('/').unwrap_or(trimmed)
    }
    let (s, i) = (norm(scope).as_bytes(), norm(id).as_bytes());
    s.is_empty()
        || (i.len() >= s.len() && i[..s.len()].eq_ignore_ascii_case(s) && (i.len() == s.len() || i[s.len()] == b'/'))
}

/// Subscription id and resource group name of an ARM id, when present.
pub fn sub_and_rg(id: &str) -> (Option<String>, Option<String>) {
    let segs: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    let mut sub = None;
    let mut rg = None;
    let mut i = 0;
    while i + 1 < segs.len() {
        if segs[i].eq_ignore_ascii_case("subscriptions") && sub.is_none() {
            sub = Some(segs[i + 1].to_string());
        } else if segs[i].eq_ignore_ascii_case("resourceGroups") && rg.is_none() {
            rg = Some(segs[i + 1].to_string());
        }
        i += 2;
    }
    (sub, rg)
}

/// Kinds of Entra ID principals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalKind {
    /// A user.
    User,
    /// A security group; its `members` inherit its role assignments.
    Group,
    /// An application's service principal; can obtain tokens.
    ServicePrincipal,
}

impl PrincipalKind {
    /// The `principalType` string used by role assignments.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
            Self::ServicePrincipal => "ServicePrincipal",
        }
    }
}

/// An Entra ID principal known to the simulator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Object id (what role assignments reference).
    pub object_id: String,
    /// Display name.
    pub display_name: String,
    /// User, group or service principal.
    pub kind: PrincipalKind,
    /// Application (client) id, for service principals.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Client secrets accepted by the token endpoint.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Federated identity credentials: the token endpoint accepts a client assertion that one of them matches
    /// (issuer, subject, audience) and whose signature verifies against the issuer's published keys.
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// Member object ids (groups only).
    #[serde(default)]
    pub members: Vec<String>,
}

impl Principal {
    /// A user principal.
    pub fn user(object_id: &str, name: &str) -> Self {
        Self {
            object_id: object_id.into(),
            display_name: name.into(),
            kind: PrincipalKind::User,
            app_id: None,
            secrets: vec![],
            federated_credentials: vec![],
            members: vec![],
        }
    }

    /// A group principal with members.
    pub fn group(object_id: &str, name: &str, members: &[&str]) -> Self {
        Self {
            kind: PrincipalKind::Group,
            members: members.iter().map(|m| (*m).to_string()).collect(),
            ..Self::user(object_id, name)
        }
    }

    /// A service principal with a client id and optional secret.
    pub fn service_principal(object_id: &str, app_id: &str, name: &str, secret: Option<&str>) -> Self {
        Self {
            kind: PrincipalKind::ServicePrincipal,
            app_id: Some(app_id.into()),
            secrets: secret.map(Secret::new).into_iter().collect(),
            ..Self::user(object_id, name)
        }
    }
}

/// A subscription.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscription GUID.
    pub subscription_id: String,
    /// Display name.
    pub display_name: String,
    /// Resource provider namespaces this subscription has not registered (ARM answers their calls with 409
    /// `MissingSubscriptionRegistration`); every namespace the simulator serves is registered by default.
    #[serde(default)]
    pub unregistered_providers: Vec<String>,
    /// The Entra tenant the subscription belongs to, when not the simulator's own (cross-tenant moves).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A resource group.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroup {
    /// Full id, casing as created.
    pub id: String,
    /// Name, casing as created.
    pub name: String,
    /// Azure region.
    pub location: String,
    /// Tags object (or null).
    #[serde(default)]
    pub tags: Value,
    /// managedBy, if any.
    #[serde(default)]
    pub managed_by: Option<String>,
}

impl ResourceGroup {
    /// The ARM JSON representation.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": self.location,
            "properties": {"provisioningState": "Succeeded"},
        });
        if !self.tags.is_null() {
            v["tags"] = self.tags.clone();
        }
        if let Some(m) = &self.managed_by {
            v["managedBy"] = json!(m);
        }
        v
    }
}

/// Per-kind hidden state of a resource (not part of its ARM body).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ResourceExt {
    /// No hidden state.
    Plain,
    /// A storage account's two keys and their creation times.
    Storage {
        /// key1, key2.
        keys: [Secret; 2],
        /// Creation time of key1, key2.
        key_times: [Timestamp; 2],
    },
    /// An ML workspace's cached copy of its storage account key (refreshed by resyncKeys).
    Workspace {
        /// The storage key captured at creation / last resync.
        user_storage_key: Option<Secret>,
        /// App Insights instrumentation key.
        app_insights_key: Option<Secret>,
    },
    /// An ML workspace connection's credentials (write-only in ARM), as the JSON sent.
    Connection {
        /// The `credentials` object, serialised.
        credentials: Option<Secret>,
    },
    /// An online endpoint's auth keys.
    Endpoint {
        /// primaryKey.
        primary: Secret,
        /// secondaryKey.
        secondary: Secret,
    },
}

/// A resource below a resource group (storage accounts, vaults, workspaces, endpoints, ...).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// Full id (casing as created).
    pub id: String,
    /// Canonical full type, e.g. `Microsoft.Storage/storageAccounts`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The ARM body returned on GET (id/name/type kept in sync with `id`).
    pub body: Value,
    /// Hidden per-kind state.
    pub ext: ResourceExt,
}

impl Resource {
    /// provisioningState of the body, if any.
    pub fn provisioning_state(&self) -> Option<&str> {
        self.body.pointer("/properties/provisioningState").and_then(Value::as_str)
    }

    /// Sets properties.provisioningState.
    pub fn set_provisioning_state(&mut self, state: &str) {
        if !self.body.get("properties").is_some_and(Value::is_object) {
            self.body["properties"] = json!({});
        }
        self.body["properties"]["provisioningState"] = json!(state);
    }
}

/// A role assignment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// Full id: `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub id: String,
    /// The assignment GUID.
    pub name: String,
    /// Scope (leading slash).
    pub scope: String,
    /// Role definition GUID (lower case).
    pub role_definition_guid: String,
    /// Principal object id.
    pub principal_id: String,
    /// principalType.
    pub principal_type: String,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
    /// Optional ABAC condition.
    #[serde(default)]
    pub condition: Option<String>,
    /// Optional condition version.
    #[serde(default)]
    pub condition_version: Option<String>,
    /// Creation time.
    pub created_on: Timestamp,
    /// Object id of the creator.
    #[serde(default)]
    pub created_by: Option<String>,
}

impl RoleAssignment {
    /// The 2022-04-01 JSON representation.
    pub fn to_json(&self) -> Value {
        json!({
            "properties": {
                "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{}", self.role_definition_guid),
                "principalId": self.principal_id,
                "principalType": self.principal_type,
                "scope": self.scope,
                "description": self.description,
                "condition": self.condition,
                "conditionVersion": self.condition_version,
                "createdOn": self.created_on.to_string(),
                "updatedOn": self.created_on.to_string(),
                "createdBy": self.created_by,
                "updatedBy": self.created_by,
                "delegatedManagedIdentityResourceId": null,
            },
            "id": self.id,
            "type": "Microsoft.Authorization/roleAssignments",
            "name": self.name,
        })
    }
}

/// A role definition (built-in or custom).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// GUID (lower case).
    pub guid: String,
    /// roleName.
    pub role_name: String,
    /// description.
    pub description: String,
    /// `BuiltInRole` or `CustomRole`.
    pub role_type: String,
    /// Allowed control-plane actions (wildcards allowed).
    pub actions: Vec<String>,
    /// Excluded control-plane actions.
    pub not_actions: Vec<String>,
    /// Allowed data actions.
    #[serde(default)]
    pub data_actions: Vec<String>,
    /// Assignable scopes.
    pub assignable_scopes: Vec<String>,
}

impl RoleDefinition {
    /// The 2022-04-01 JSON representation.
    pub fn to_json(&self) -> Value {
        json!({
            "properties": {
                "roleName": self.role_name,
                "type": self.role_type,
                "description": self.description,
                "assignableScopes": self.assignable_scopes,
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": self.data_actions,
                    "notDataActions": [],
                }],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-01-01T00:00:00.0000000Z",
                "createdBy": null,
                "updatedBy": null,
            },
            "id": format!("/providers/Microsoft.Authorization/roleDefinitions/{}", self.guid),
            "type": "Microsoft.Authorization/roleDefinitions",
            "name": self.guid,
        })
    }
}

/// Well-known built-in role definition GUIDs.
pub mod roles {
    /// Owner.
    pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    /// Contributor.
    pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    /// Reader.
    pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
    /// User Access Administrator.
    pub const USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
    /// AzureML Data Scientist.
    pub const AZUREML_DATA_SCIENTIST: &str = "f6c7c914-8db3-469d-8ca1-694a8f32e121";
    /// AzureML Compute Operator.
    pub const AZUREML_COMPUTE_OPERATOR: &str = "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815";
}

fn builtin(guid: &str, name: &str, description: &str, actions: &[&str], not_actions: &[&str]) -> RoleDefinition {
    RoleDefinition {
        guid: guid.into(),
        role_name: name.into(),
        description: description.into(),
        role_type: "BuiltInRole".into(),
        actions: actions.iter().map(|s| (*s).to_string()).collect(),
        not_actions: not_actions.iter().map(|s| (*s).to_string()).collect(),
        data_actions: vec![],
        assignable_scopes: vec!["/".into()],
    }
}

/// The built-in role definitions the simulator knows (CONTRACTS §7 plus User Access Administrator).
pub fn builtin_roles() -> Vec<RoleDefinition> {
    vec![
        builtin(
            roles::OWNER,
            "Owner",
            "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
            &["*"],
            &[],
        ),
        builtin(
            roles::CONTRIBUTOR,
            "Contributor",
            "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
            &["*"],
            &[
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
            ],
        ),
        builtin(
            roles::READER,
            "Reader",
            "View all resources, but does not allow you to make any changes.",
            &["*/read"],
            &[],
        ),
        builtin(
            roles::USER_ACCESS_ADMINISTRATOR,
            "User Access Administrator",
            "Lets you manage user access to Azure resources.",
            &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
            &[],
        ),
        builtin(
            roles::AZUREML_DATA_SCIENTIST,
            "AzureML Data Scientist",
            "Can perform all actions within an Azure Machine Learning workspace, except for creating or deleting compute resources and modifying the workspace itself.",
            &[
                "Microsoft.MachineLearningServices/workspaces/*/read",
                "Microsoft.MachineLearningServices/workspaces/*/action",
                "Microsoft.MachineLearningServices/workspaces/*/delete",
                "Microsoft.MachineLearningServices/workspaces/*/write",
            ],
            &[
                "Microsoft.MachineLearningServices/workspaces/delete",
                "Microsoft.MachineLearningServices/workspaces/write",
                "Microsoft.MachineLearningServices/workspaces/computes/*/write",
                "Microsoft.MachineLearningServices/workspaces/computes/*/delete",
                "Microsoft.MachineLearningServices/workspaces/listKeys/action",
            ],
        ),
        builtin(
            roles::AZUREML_COMPUTE_OPERATOR,
            "AzureML Compute Operator",
            "Can access and perform CRUD operations on Machine Learning Services managed compute resources.",
            &[
                "Microsoft.MachineLearningServices/workspaces/computes/*",
                "Microsoft.MachineLearningServices/workspaces/read",
            ],
            &[],
        ),
    ]
}

/// One activity-log event (the ARM JSON body plus the fields the filters use).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEvent {
    /// eventTimestamp.
    pub timestamp: Timestamp,
    /// Subscription id.
    pub subscription_id: String,
    /// resourceId / resourceUri.
    pub resource_id: String,
    /// Resource group name (may be empty for subscription-level events).
    pub resource_group: String,
    /// operationName.value.
    pub operation: String,
    /// The full event JSON.
    pub body: Value,
}

/// What a long-running operation does when it completes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum OpKind {
    /// PUT/PATCH of a resource that moves provisioningState to Succeeded (workspaces, endpoints, deployments).
    Provision,
    /// DELETE of a resource (and its children).
    Delete,
    /// DELETE of an ML workspace without `forceToPurge`: soft-deleted for its retention period
    /// ([`super::soft_delete`]).
    SoftDeleteWorkspace,
    /// Workspace resyncKeys: refresh the cached storage key.
    ResyncKeys,
    /// Endpoint regenerateKeys.
    RegenerateEndpointKey {
        /// `Primary` or `Secondary`.
        key_type: String,
        /// Explicit new value, if given.
        key_value: Option<Secret>,
    },
    /// Resource group delete.
    DeleteResourceGroup,
    /// Start, stop or restart of an ML compute instance (`engine::compute`).
    ComputePower {
        /// `start`, `stop` or `restart`.
        action: String,
    },
    /// validateMoveResources; the verdict was computed at request time.
    ValidateMove,
    /// moveResources.
    Move {
        /// Ids being moved.
        resources: Vec<String>,
        /// Target resource group id.
        target: String,
    },
}

/// Final status of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpStatus {
    /// Still running.
    InProgress,
    /// Done, success.
    Succeeded,
    /// Done, failed.
    Failed,
}

/// The ARM error a failed operation reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpError {
    /// HTTP status returned by the Location poll.
    pub status: u16,
    /// error.code.
    pub code: String,
    /// error.message.
    pub message: String,
    /// error.details.
    #[serde(default)]
    pub details: Vec<(String, String, Option<String>)>,
}

/// A long-running operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Operation GUID (also in the poll URLs).
    pub id: String,
    /// Subscription (for poll URL and throttling).
    pub subscription_id: String,
    /// Resource provider namespace used in the poll URLs.
    pub namespace: String,
    /// The resource (or resource group) the operation acts on; used for RBAC of polls.
    pub resource_id: String,
    /// The ARM operation that started it (e.g. `Workspaces_CreateOrUpdate`).
    pub operation: String,
    /// RBAC action of the originating request, for the completion activity-log event.
    pub action: String,
    /// Who started it.
    pub caller: String,
    /// What happens on completion.
    pub kind: OpKind,
    /// Start time.
    pub started: Timestamp,
    /// When it completes.
    pub due: Timestamp,
    /// End time once finished.
    #[serde(default)]
    pub ended: Option<Timestamp>,
    /// Current status.
    pub status: OpStatus,
    /// Failure to report when it completes (injected or computed at request time).
    #[serde(default)]
    pub failure: Option<OpError>,
    /// Whether the Location poll returns the resource body (200) on success instead of 204.
    pub returns_body: bool,
    /// Azure region in the poll URLs (`locations/{region}/...`).
    #[serde(default)]
    pub region: String,
    /// api-version of the originating request, echoed in the poll URLs.
    #[serde(default)]
    pub api_version: String,
}

/// The whole simulated world.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SimState {
    /// The single Entra tenant.
    pub tenant_id: String,
    /// Subscriptions by lower-case id.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Resource groups by id key.
    pub resource_groups: BTreeMap<String, ResourceGroup>,
    /// Resources by id key.
    pub resources: BTreeMap<String, Resource>,
    /// Principals by lower-case object id.
    pub principals: BTreeMap<String, Principal>,
    /// Role assignments by id key.
    pub role_assignments: BTreeMap<String, RoleAssignment>,
    /// Role definitions by lower-case GUID.
    pub role_definitions: BTreeMap<String, RoleDefinition>,
    /// Activity log, oldest first.
    pub activity: Vec<ActivityEvent>,
    /// Long-running operations by id.
    pub operations: BTreeMap<String, Operation>,
    /// Signing keys (JWKs) of external OIDC issuers, by issuer URL: what Entra ID fetches from an issuer's
    /// `jwks_uri` to verify federated assertions.
    #[serde(default)]
    pub oidc_issuers: BTreeMap<String, Vec<Value>>,
    /// Azure ML vCPU quotas by lower-case `{subscription}/{location}` (unseeded: the simulator's defaults).
    #[serde(default)]
    pub ml_quotas: BTreeMap<String, MlQuota>,
    /// Soft-deleted ML workspaces by id key ([`super::soft_delete`]).
    #[serde(default)]
    pub soft_deleted: BTreeMap<String, SoftDeletedWorkspace>,
    /// How far the simulator's clock is ahead of the wall clock (admin API `/_sim/clock`), in seconds: retention
    /// periods and the activity log's ingestion delay run on this clock.
    #[serde(default)]
    pub clock_offset_secs: i64,
}

/// Azure ML vCPU quota of a subscription in one location, as Usages_List reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MlQuota {
    /// Limits by usage name (e.g. `Standard DSv2 Family Cluster Dedicated vCPUs`); `-1`: no limit of its own.
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
    /// vCPUs in use outside the simulated computes, by usage name.
    #[serde(default)]
    pub in_use: BTreeMap<String, i64>,
}

impl SimState {
    /// The resources at or below `scope`, in key order: a key range (keys are lowercased ids, so a scope's
    /// descendants share its key as a prefix) instead of a scan of every resource. Requests list by scope often
    /// (each storage LIST of the key watcher, each compute lookup); the cost must not grow with the world.
    pub fn resources_under<'a>(&'a self, scope: &str) -> impl Iterator<Item = &'a Resource> + 'a {
        let key = id_key(scope);
        let key = key.trim_end_matches('/').to_owned();
        let below = format!("{key}/");
        let at = self.resources.get(&key).filter(|_| !key.is_empty());
        at.into_iter().chain(
            self.resources.range(below.clone()..).take_while(move |(k, _)| k.starts_with(&below)).map(|(_, r)| r),
        )
    }

    /// The role assignments that apply to `scope` (at it or above it) and, with `below`, those under it too, in key
    /// order. An assignment's key is its lowercased id, `{scope}/providers/microsoft.authorization/roleassignments/
    /// {name}`, so each ancestor's assignments are one key range and those below one more: every authorisation of
    /// every request looks here, and a scan of all assignments made the simulator slower with each workspace.
    pub fn assignments_around(&self, scope: &str, below: bool) -> Vec<&RoleAssignment> {
        const AT: &str = "/providers/microsoft.authorization/roleassignments/";
        let key = id_key(scope);
        let key = key.trim_end_matches('/');
        let mut found: BTreeMap<&str, &RoleAssignment> = BTreeMap::new();
        let ancestors = key.match_indices('/').map(|(i, _)| &key[..i]).chain(std::iter::once(key));
        for ancestor in ancestors {
            let prefix = format!("{ancestor}{AT}");
            for (k, ra) in self.role_assignments.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                if !k[prefix.len()..].contains('/') {
                    found.insert(k.as_str(), ra);
                }
            }
        }
        if below {
            let prefix = format!("{key}/");
            for (k, ra) in self.role_assignments.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
                found.insert(k.as_str(), ra);
            }
        }
        found.into_values().collect()
    }

    /// An empty world for `tenant_id` with the built-in role definitions.
    pub fn new(tenant_id: &str) -> Self {
        let mut s = Self { tenant_id: tenant_id.into(), ..Self::default() };
        for r in builtin_roles() {
            s.role_definitions.insert(r.guid.clone(), r);
        }
        s
    }

    /// Sets an Azure ML vCPU quota (`name` as Usages_List spells it, e.g. `Standard DSv2 Family Cluster Dedicated
    /// vCPUs` or `Total Cluster Dedicated Regional vCPUs`) of `subscription_id` in `location`, with `in_use` vCPUs
    /// held outside the simulated computes.
    pub fn set_ml_quota(&mut self, subscription_id: &str, location: &str, name: &str, limit: i64, in_use: i64) {
        let location: String = location.chars().filter(|c| !c.is_whitespace()).collect();
        let key = format!("{}/{}", subscription_id.to_ascii_lowercase(), location.to_ascii_lowercase());
        let quota = self.ml_quotas.entry(key).or_default();
        quota.limits.insert(name.to_owned(), limit);
        quota.in_use.insert(name.to_owned(), in_use);
    }

    /// Adds (or replaces) a subscription.
    pub fn add_subscription(&mut self, subscription_id: &str, display_name: &str) {
        self.subscriptions.insert(
            subscription_id.to_ascii_lowercase(),
            Subscription {
                subscription_id: subscription_id.into(),
                display_name: display_name.into(),
                unregistered_providers: vec![],
                tenant_id: None,
            },
        );
    }

    /// Adds (or replaces) a resource group; returns its id.
    pub fn add_resource_group(&mut self, subscription_id: &str, name: &str, location: &str) -> String {
        let id = format!("/subscriptions/{subscription_id}/resourceGroups/{name}");
        self.resource_groups.insert(
            id_key(&id),
            ResourceGroup {
                id: id.clone(),
                name: name.into(),
                location: location.into(),
                tags: Value::Null,
                managed_by: None,
            },
        );
        id
    }

    /// Adds (or replaces) a principal.
    pub fn add_principal(&mut self, p: Principal) {
        self.principals.insert(p.object_id.to_ascii_lowercase(), p);
    }

    /// Adds a role assignment directly (no validation); returns its id.
    pub fn assign_role(&mut self, scope: &str, role_guid: &str, principal_id: &str) -> String {
        let name = uuid::Uuid::new_v4().to_string();
        let scope = if scope.starts_with('/') { scope.to_string() } else { format!("/{scope}") };
        let scope = scope.trim_end_matches('/').to_string();
        let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        let principal_type =
            self.principals.get(&principal_id.to_ascii_lowercase()).map_or("User", |p| p.kind.as_str()).to_string();
        self.role_assignments.insert(
            id_key(&id),
            RoleAssignment {
                id: id.clone(),
                name,
                scope,
                role_definition_guid: role_guid.to_ascii_lowercase(),
                principal_id: principal_id.into(),
                principal_type,
                description: None,
                condition: None,
                condition_version: None,
                created_on: Timestamp::now(),
                created_by: None,
            },
        );
        id
    }

    /// Inserts a resource from its ARM body, filling in id/name/type and kind-specific defaults and hidden state.
    pub fn put_resource(&mut self, id: &str, rtype: &str, body: Value) -> &mut Resource {
        let now = Timestamp::now();
        let name = id.rsplit('/').next().unwrap_or_default().to_string();
        let mut body = if body.is_object() { body } else { json!({}) };
        body["id"] = json!(id);
        body["name"] = json!(name);
        body["type"] = json!(rtype);
        if !body.get("properties").is_some_and(Value::is_object) {
            body["properties"] = json!({});
        }
        let lower = rtype.to_ascii_lowercase();
        let ext = match lower.as_str() {
            "microsoft.storage/storageaccounts" => {
                defaults_storage(&mut body, &name, now);
                ResourceExt::Storage { keys: [Secret::random(64), Secret::random(64)], key_times: [now, now] }
            }
            "microsoft.insights/components" => {
                let ikey = uuid::Uuid::new_v4().to_string();
                let props = &mut body["properties"];
                props["InstrumentationKey"] = json!(ikey);
                props["ConnectionString"] = json!(format!("InstrumentationKey={ikey}"));
                if props.get("Application_Type").is_none() {
                    props["Application_Type"] = json!("web");
                }
                ResourceExt::Plain
            }
            "microsoft.keyvault/vaults" => {
                body["properties"]["vaultUri"] = json!(format!("https://{name}.vault.azure.net/"));
                ResourceExt::Plain
            }
            "microsoft.containerregistry/registries" => {
                body["properties"]["loginServer"] = json!(format!("{}.azurecr.io", name.to_ascii_lowercase()));
                ResourceExt::Plain
            }
            _ => ResourceExt::Plain,
        };
        if body.pointer("/properties/provisioningState").is_none() {
            body["properties"]["provisioningState"] = json!("Succeeded");
        }
        let key = id_key(id);
        self.resources.insert(key.clone(), Resource { id: id.into(), rtype: rtype.into(), body, ext });
        // Just inserted under `key`, so the lookup cannot fail; fall back to a fresh entry to stay panic-free.
        self.resources.entry(key).or_insert_with(|| Resource {
            id: String::new(),
            rtype: String::new(),
            body: Value::Null,
            ext: ResourceExt::Plain,
        })
    }

    /// The simulator's clock: the wall clock plus [`State::clock_offset_secs`].
    pub fn clock_now(&self) -> Timestamp {
        Timestamp::now().checked_add(SignedDuration::from_secs(self.clock_offset_secs)).unwrap_or(Timestamp::MAX)
    }

    /// Regenerates key1 or key2 of a storage account (its creation time on the simulator's clock, as Azure's own
    /// clock stamps it); returns false when the account or key name is unknown.
    pub fn regenerate_storage_key(&mut self, account_id: &str, key_name: &str) -> bool {
        let now = self.clock_now();
        let Some(res) = self.resources.get_mut(&id_key(account_id)) else {
            return false;
        };
        let ResourceExt::Storage { keys, key_times } = &mut res.ext else {
            return false;
        };
        let idx = match key_name.to_ascii_lowercase().as_str() {
            "key1" => 0,
            "key2" => 1,
            _ => return false,
        };
        keys[idx] = Secret::random(64);
        key_times[idx] = now;
        res.body["properties"]["keyCreationTime"] =
            json!({"key1": key_times[0].to_string(), "key2": key_times[1].to_string()});
        true
    }

    /// The current value of a storage key (`key1`/`key2`).
    pub fn storage_key(&self, account_id: &str, key_name: &str) -> Option<Secret> {
        let res = self.resources.get(&id_key(account_id))?;
        let ResourceExt::Storage { keys, .. } = &res.ext else {
            return None;
        };
        match key_name.to_ascii_lowercase().as_str() {
            "key1" => Some(keys[0].clone()),
            "key2" => Some(keys[1].clone()),
            _ => None,
        }
    }

    /// The storage key a workspace has cached (what its listKeys returns).
    pub fn workspace_cached_key(&self, workspace_id: &str) -> Option<Secret> {
        match &self.resources.get(&id_key(workspace_id))?.ext {
            ResourceExt::Workspace { user_storage_key, .. } => user_storage_key.clone(),
            _ => None,
        }
    }

    /// Group object ids `principal_id` belongs to, plus itself.
    pub fn principal_and_groups(&self, principal_id: &str) -> Vec<String> {
        let me = principal_id.to_ascii_lowercase();
        let mut out = vec![me.clone()];
        for p in self.principals.values() {
            if p.kind == PrincipalKind::Group && p.members.iter().any(|m| m.eq_ignore_ascii_case(&me)) {
                out.push(p.object_id.to_ascii_lowercase());
            }
        }
        out
    }
}

fn defaults_storage(body: &mut Value, name: &str, now: Timestamp) {
    let t = now.to_string();
    let location = body.get("location").and_then(Value::as_str).unwrap_or("eastus").to_string();
    if body.get("kind").is_none() {
        body["kind"] = json!("StorageV2");
    }
    if body.get("sku").is_none() {
        body["sku"] = json!({"name": "Standard_LRS", "tier": "Standard"});
    }
    if body.get("tags").is_none() {
        body["tags"] = json!({});
    }
    let defaults = json!({
        "accountMigrationInProgress": false,
        "creationTime": t,
        "encryption": {
            "keySource": "Microsoft.Storage",
            "services": {
                "blob": {"enabled": true, "keyType": "Account", "lastEnabledTime": t},
                "file": {"enabled": true, "keyType": "Account", "lastEnabledTime": t}
            }
        },
        "isHnsEnabled": false,
        "isSkuConversionBlocked": false,
        "keyCreationTime": {"key1": t, "key2": t},
        "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "resourceAccessRules": [], "virtualNetworkRules": []},
        "primaryEndpoints": endpoints(name, ""),
        "primaryLocation": location,
        "provisioningState": "Succeeded",
        "routingPreference": {"publishInternetEndpoints": false, "publishMicrosoftEndpoints": false, "routingChoice": "MicrosoftRouting"},
        "statusOfPrimary": "available",
        "supportsHttpsTrafficOnly": true,
        "minimumTlsVersion": "TLS1_2",
        "allowBlobPublicAccess": false,
        "allowSharedKeyAccess": true,
        "accessTier": "Hot",
        "geoPriorityReplicationStatus": {"isBlobEnabled": false},
    });
    let geo =
        body.pointer("/sku/name").and_then(Value::as_str).is_some_and(|s| s.contains("GRS") || s.contains("GZRS"));
    let p = &mut body["properties"];
    if geo && let Some(obj) = p.as_object_mut() {
        // Geo-redundant accounts report their paired region.
        obj.entry("secondaryLocation").or_insert(json!(paired_region(&location)));
        obj.entry("statusOfSecondary").or_insert(json!("available"));
    }
    if let (Some(obj), Some(def)) = (p.as_object_mut(), defaults.as_object()) {
        for (k, v) in def {
            // keyCreationTime is always ours: clients cannot set it.
            if k == "keyCreationTime" || !obj.contains_key(k) {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
}

fn paired_region(location: &str) -> &'static str {
    match location.to_ascii_lowercase().as_str() {
        "eastus" => "westus",
        "westus" => "eastus",
        "westeurope" => "northeurope",
        "northeurope" => "westeurope",
        _ => "centralus",
    }
}

fn endpoints(name: &str, _suffix: &str) -> Value {
    let mk = |svc: &str, n: &str| format!("https://{n}.{svc}.core.windows.net/");
    let routing = |flavour: &str| {
        let n = format!("{name}-{flavour}");
        json!({"blob": mk("blob", &n), "dfs": mk("dfs", &n), "file": mk("file", &n), "web": mk("web", &n),
               "queue": mk("queue", &n), "table": mk("table", &n)})
    };
    json!({
        "blob": mk("blob", name), "dfs": mk("dfs", name), "file": mk("file", name),
        "queue": mk("queue", name), "table": mk("table", name), "web": mk("web", name),
        "internetEndpoints": routing("internetrouting"),
        "microsoftEndpoints": routing("microsoftrouting"),
    })
}

/// A service principal seeded by [`World::default_sandbox`], with its credentials.
#[derive(Clone, Debug)]
pub struct SeededSp {
    /// Object id.
    pub object_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Client secret (redacted in Debug).
    pub secret: Secret,
}

/// A ready-made world plus the names and credentials tests need to address it.
#[derive(Clone, Debug)]
pub struct World {
    /// The state to hand to [`super::SimConfig`].
    pub state: SimState,
    /// Tenant id.
    pub tenant_id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// A second subscription in the same tenant (move targets).
    pub other_subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Resource group id.
    pub resource_group_id: String,
    /// Azure region of everything seeded.
    pub location: String,
    /// Storage account id.
    pub storage_account_id: String,
    /// Key vault id.
    pub key_vault_id: String,
    /// App insights id.
    pub app_insights_id: String,
    /// Container registry id.
    pub container_registry_id: String,
    /// The operator's SP: Contributor + User Access Administrator on the subscription.
    pub operator: SeededSp,
    /// An SP with Reader on the subscription.
    pub reader: SeededSp,
    /// An SP with no role at all.
    pub nobody: SeededSp,
    /// A federated app (workload identity) with Contributor + User Access Administrator on the subscription.
    pub federated: SeededSp,
    /// The OIDC issuer the federated app trusts (a cluster's service-account issuer); signs assertions.
    pub federated_issuer: OidcIssuerKey,
    /// The subject (`sub`) the federated app's credential accepts.
    pub federated_subject: String,
    /// Two user object ids (alice, bob).
    pub users: Vec<String>,
    /// A group object id (members: the users).
    pub group: String,
}

impl World {
    /// Tenant, subscription `sub-…0001` (+ a second one), resource group `rg-sandbox` in `eastus`, a storage account,
    /// key vault, app insights, container registry, users, a group and service principals.
    pub fn default_sandbox() -> Self {
        let tenant_id = "72f988bf-0000-4000-8000-000000000001".to_string();
        let subscription_id = "00000000-0000-4000-8000-000000000001".to_string();
        let other_subscription_id = "00000000-0000-4000-8000-000000000002".to_string();
        let location = "eastus".to_string();
        let rg = "rg-sandbox".to_string();
        let mut s = SimState::new(&tenant_id);
        s.add_subscription(&subscription_id, "sandbox");
        s.add_subscription(&other_subscription_id, "sandbox-2");
        let rg_id = s.add_resource_group(&subscription_id, &rg, &location);
        let base = format!("{rg_id}/providers");
        let storage_account_id = format!("{base}/Microsoft.Storage/storageAccounts/stsandbox");
        let key_vault_id = format!("{base}/Microsoft.KeyVault/vaults/kv-sandbox");
        let app_insights_id = format!("{base}/Microsoft.Insights/components/ai-sandbox");
        let container_registry_id = format!("{base}/Microsoft.ContainerRegistry/registries/crsandbox");
        let loc = json!({"location": location});
        s.put_resource(
            &storage_account_id,
            "Microsoft.Storage/storageAccounts",
            json!({"location": location, "kind": "StorageV2", "sku": {"name": "Standard_GRS", "tier": "Standard"}}),
        );
        s.put_resource(&key_vault_id, "Microsoft.KeyVault/vaults", loc.clone());
        s.put_resource(&app_insights_id, "Microsoft.Insights/components", json!({"location": location, "kind": "web"}));
        s.put_resource(&container_registry_id, "Microsoft.ContainerRegistry/registries", loc);

        let sp = |n: u32, name: &str, secret: Option<&str>| {
            let oid = format!("10000000-0000-4000-8000-{n:012}");
            let app = format!("20000000-0000-4000-8000-{n:012}");
            (
                Principal::service_principal(&oid, &app, name, secret),
                SeededSp { object_id: oid, client_id: app, secret: Secret::new(secret.unwrap_or_default()) },
            )
        };
        let (op_p, operator) = sp(1, "azml-operator", Some("operator-secret-value"));
        let (rd_p, reader) = sp(2, "reader-app", Some("reader-secret-value"));
        let (nb_p, nobody) = sp(3, "nobody-app", Some("nobody-secret-value"));
        let (mut fed_p, federated) = sp(4, "azml-operator-wi", None);
        let federated_issuer = OidcIssuerKey::generate("https://oidc.sandbox.azml.invalid/cluster");
        let federated_subject = "system:serviceaccount:azml-system:azml-operator".to_string();
        federated_issuer.register(&mut s.oidc_issuers);
        fed_p.federated_credentials.push(FederatedCredential {
            name: "sandbox-cluster".into(),
            issuer: federated_issuer.issuer.clone(),
            subject: federated_subject.clone(),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
        });
        let sub_scope = format!("/subscriptions/{subscription_id}");
        for p in [op_p, rd_p, nb_p, fed_p] {
            s.add_principal(p);
        }
        let users = vec![
            "30000000-0000-4000-8000-000000000001".to_string(),
            "30000000-0000-4000-8000-000000000002".to_string(),
        ];
        s.add_principal(Principal::user(&users[0], "alice@contoso.example"));
        s.add_principal(Principal::user(&users[1], "bob@contoso.example"));
        let group = "40000000-0000-4000-8000-000000000001".to_string();
        s.add_principal(Principal::group(&group, "ml-team", &[&users[0], &users[1]]));
        for who in [&operator.object_id, &federated.object_id] {
            s.assign_role(&sub_scope, roles::CONTRIBUTOR, who);
            s.assign_role(&sub_scope, roles::USER_ACCESS_ADMINISTRATOR, who);
        }
        s.assign_role(&format!("/subscriptions/{other_subscription_id}"), roles::CONTRIBUTOR, &operator.object_id);
        s.assign_role(&sub_scope, roles::READER, &reader.object_id);
        World {
            state: s,
            tenant_id,
            subscription_id,
            other_subscription_id,
            resource_group: rg,
            resource_group_id: rg_id,
            location,
            storage_account_id,
            key_vault_id,
            app_insights_id,
            container_registry_id,
            operator,
            reader,
            nobody,
            federated,
            federated_issuer,
            federated_subject,
            users,
            group,
        }
    }
}

/// A soft-deleted workspace: the resource as it was, and when it goes for good.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SoftDeletedWorkspace {
    /// The workspace as it was when deleted.
    pub resource: Resource,
    /// When it was soft-deleted (simulator clock).
    pub deleted_at: Timestamp,
    /// When it is purged automatically (simulator clock).
    pub purge_at: Timestamp,
}

impl SoftDeletedWorkspace {
    /// What the admin API shows (no hidden state).
    pub fn summary(&self) -> Value {
        json!({
            "id": self.resource.id,
            "location": self.resource.body.get("location"),
            "tags": self.resource.body.get("tags"),
            "deletedAt": self.deleted_at.to_string(),
            "scheduledPurgeAt": self.purge_at.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_case_insensitive_and_scopes_nest() {
        assert_eq!(id_key("/Subscriptions/A/resourceGroups/RG/"), "/subscriptions/a/resourcegroups/rg");
        assert!(scope_contains("/subscriptions/a", "/SUBSCRIPTIONS/A/resourceGroups/x"));
        assert!(!scope_contains("/subscriptions/a", "/subscriptions/ab"));
        // As id_key normalises them: trailing and missing leading slashes, the root, equal ids.
        assert!(scope_contains("/", "/subscriptions/a") && scope_contains("", "/subscriptions/a"));
        assert!(scope_contains("subscriptions/A/", "/subscriptions/a/resourceGroups/x/"));
        assert!(scope_contains("/subscriptions/a/resourceGroups/X", "/subscriptions/A/resourcegroups/x"));
        assert!(!scope_contains("/subscriptions/a/resourceGroups/x", "/subscriptions/a"));
        assert!(!scope_contains("/subscriptions/a", "/"));
        assert_eq!(
            sub_and_rg("/subscriptions/s/resourceGroups/r/providers/x/y/z"),
            (Some("s".into()), Some("r".into()))
        );
    }

    #[test]
    fn key_ranges_find_what_a_scan_of_every_assignment_and_resource_finds() {
        let mut s = World::default_sandbox().state;
        let sub = "/subscriptions/00000000-0000-4000-9000-00000000000a";
        let ws = |rg: &str, n: &str| {
            format!("{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{n}")
        };
        for (rg, n) in [("rg", "w"), ("rg", "w2"), ("RG2", "w"), ("rg", "w-longer")] {
            s.put_resource(&ws(rg, n), "Microsoft.MachineLearningServices/workspaces", json!({}));
            s.put_resource(
                &format!("{}/computes/c", ws(rg, n)),
                "Microsoft.MachineLearningServices/workspaces/computes",
                json!({}),
            );
            s.assign_role(&ws(rg, n), roles::READER, "p1");
        }
        s.assign_role("/", roles::READER, "root");
        s.assign_role(sub, roles::OWNER, "p2");
        s.assign_role(&format!("{sub}/resourceGroups/RG"), roles::READER, "p3");
        s.assign_role(&format!("{}/computes/c", ws("rg", "w")), roles::READER, "p4");
        let scopes = [
            "/",
            sub,
            &format!("{sub}/resourceGroups/rg"),
            &ws("rg", "w"),
            &ws("RG", "W2"),
            &format!("{}/computes/c", ws("rg", "w")),
            "/subscriptions/other",
        ];
        for scope in scopes {
            for below in [false, true] {
                let scanned: Vec<&str> = s
                    .role_assignments
                    .values()
                    .filter(|ra| scope_contains(&ra.scope, scope) || (below && scope_contains(scope, &ra.scope)))
                    .map(|ra| ra.id.as_str())
                    .collect();
                let ranged: Vec<&str> = s.assignments_around(scope, below).iter().map(|ra| ra.id.as_str()).collect();
                assert_eq!(ranged, scanned, "{scope} below={below}");
            }
            let scanned: Vec<&str> =
                s.resources.values().filter(|r| scope_contains(scope, &r.id)).map(|r| r.id.as_str()).collect();
            let ranged: Vec<&str> = s.resources_under(scope).map(|r| r.id.as_str()).collect();
            assert_eq!(ranged, scanned, "{scope}");
        }
        assert!(s.assignments_around(&ws("rg", "w"), false).len() >= 4, "root, subscription, group and workspace");
    }

    #[test]
    fn regenerate_changes_key_and_time_and_state_round_trips() {
        let w = World::default_sandbox();
        let mut s = w.state.clone();
        let before = s.storage_key(&w.storage_account_id, "key1").unwrap();
        assert!(s.regenerate_storage_key(&w.storage_account_id.to_uppercase(), "KEY1"));
        assert_ne!(s.storage_key(&w.storage_account_id, "key1").unwrap(), before);
        assert!(!s.regenerate_storage_key(&w.storage_account_id, "key3"));
        let json = serde_json::to_string(&s).unwrap();
        let back: SimState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.storage_key(&w.storage_account_id, "key1"), s.storage_key(&w.storage_account_id, "key1"));
        assert_eq!(format!("{:?}", before), "<redacted>");
    }
}
