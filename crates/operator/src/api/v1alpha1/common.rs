//! Types shared by several kinds: access entries, roles, scopes, policies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A built-in Azure role, by name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum BuiltinRole {
    Owner,
    Contributor,
    Reader,
    AzureMLDataScientist,
    AzureMLComputeOperator,
}

impl BuiltinRole {
    /// Every built-in role the API accepts.
    pub const ALL: [BuiltinRole; 5] = [
        BuiltinRole::Owner,
        BuiltinRole::Contributor,
        BuiltinRole::Reader,
        BuiltinRole::AzureMLDataScientist,
        BuiltinRole::AzureMLComputeOperator,
    ];

    /// The role definition GUID Azure gives this built-in role (the same in every subscription and cloud).
    pub fn definition_guid(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            BuiltinRole::Contributor => "b24988ac-6180-42a0-ab88-20f7382dd24c",
            BuiltinRole::Reader => "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            BuiltinRole::AzureMLDataScientist => "f6c7c914-8db3-469d-8ca1-694a8f32e121",
            BuiltinRole::AzureMLComputeOperator => "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815",
        }
    }

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "Owner",
            BuiltinRole::Contributor => "Contributor",
            BuiltinRole::Reader => "Reader",
            BuiltinRole::AzureMLDataScientist => "AzureMLDataScientist",
            BuiltinRole::AzureMLComputeOperator => "AzureMLComputeOperator",
        }
    }
}

/// The kind of Entra ID object a principal id names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum PrincipalType {
    User,
    Group,
    ServicePrincipal,
}

/// Where a role assignment applies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum AccessScope {
    #[default]
    Workspace,
    ResourceGroup,
    Subscription,
}

impl AccessScope {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessScope::Workspace => "Workspace",
            AccessScope::ResourceGroup => "ResourceGroup",
            AccessScope::Subscription => "Subscription",
        }
    }
}

/// One role assignment a workspace grants: a principal gets a role at a scope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.role) != has(self.roleDefinitionId)").message("exactly one of role or roleDefinitionId must be set"))]
pub struct AccessEntry {
    /// Object id (GUID) of the Entra ID user, group or service principal that gets the role.
    #[schemars(regex(pattern = crate::api::patterns::GUID))]
    pub principal_id: String,

    /// Kind of principal: User, Group or ServicePrincipal. Set it for principals created moments ago: Azure then
    /// does not wait for the directory to replicate them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<PrincipalType>,

    /// Built-in role to grant: Owner, Contributor, Reader, AzureMLDataScientist or AzureMLComputeOperator.
    /// Deploying or managing web services needs Contributor or Owner. Exactly one of role and roleDefinitionId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<BuiltinRole>,

    /// GUID of any role definition (for custom roles) instead of a built-in role name.
    /// Exactly one of role and roleDefinitionId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::patterns::GUID))]
    pub role_definition_id: Option<String>,

    /// Where the assignment applies: Workspace (the workspace itself, the default), ResourceGroup (the workspace's
    /// resource group) or Subscription (the workspace's subscription).
    #[serde(default)]
    pub scope: AccessScope,
}

impl AccessEntry {
    /// The role definition GUID this entry grants (lower case), whether named by role or by id.
    pub fn role_definition_guid(&self) -> Option<String> {
        match (&self.role, &self.role_definition_id) {
            (Some(role), None) => Some(role.definition_guid().to_string()),
            (None, Some(id)) => Some(id.to_ascii_lowercase()),
            _ => None,
        }
    }
}

/// A resource the workspace depends on, named either by `name` (it lives in the workspace's subscription and
/// resource group, and moves with it) or by `id` (a full ARM resource id anywhere).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.id)").message("exactly one of name or id must be set"))]
pub struct DependentResource {
    /// Name of a resource in the workspace's own subscription and resource group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::patterns::RESOURCE_NAME))]
    pub name: Option<String>,

    /// Full ARM resource id, e.g. /subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::patterns::RESOURCE_ID), length(max = 1024))]
    pub id: Option<String>,
}

impl DependentResource {
    /// A dependent resource named by `name`.
    pub fn by_name(name: impl Into<String>) -> Self {
        DependentResource { name: Some(name.into()), id: None }
    }

    /// A dependent resource named by full ARM id.
    pub fn by_id(id: impl Into<String>) -> Self {
        DependentResource { name: None, id: Some(id.into()) }
    }
}

/// Whether the workspace is reachable from public networks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PublicNetworkAccess {
    #[default]
    Enabled,
    Disabled,
}

impl PublicNetworkAccess {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PublicNetworkAccess::Enabled => "Enabled",
            PublicNetworkAccess::Disabled => "Disabled",
        }
    }
}

/// What a changed `subscriptionId` or `resourceGroup` does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MovePolicy {
    #[default]
    Move,
    Refuse,
}

/// What deleting the custom resource does in Azure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Reference to a key of a Secret in the operator's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace the operator runs in.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::api::patterns::KUBE_NAME))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::api::patterns::SECRET_KEY))]
    pub key: String,
}
