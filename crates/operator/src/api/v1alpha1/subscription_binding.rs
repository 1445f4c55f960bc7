//! `SubscriptionBinding`: which namespaces may use which Azure subscription, with which credential and limits.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AccessScope, SecretKeyRef};
use crate::api::patterns;

/// Grants namespaces the use of one Azure subscription. Written by cluster admins only.
// The derive's printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "azml.dev",
    version = "v1alpha1",
    kind = "SubscriptionBinding",
    plural = "subscriptionbindings",
    singular = "subscriptionbinding",
    status = "SubscriptionBindingStatus",
    derive = "PartialEq",
    shortname = "azsub",
    category = "azure",
    category = "azml",
    doc = "Allows namespaces to use an Azure subscription: which credential the operator uses for it, which resource groups, roles and scopes the namespaces may ask for, and whether workspaces may move. When several bindings allow a workspace, the one with the lowest name (in byte order) is used, credential included; the workspace shows it in status.binding (kubectl get mlws -o wide), and a Warning event (AmbiguousBinding) and its BindingSelected condition name the others when their credentials differ.",
    printcolumn(name = "Subscription", type_ = "string", json_path = ".spec.subscriptionId"),
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantId", priority = 1),
    printcolumn(name = "Moves", type_ = "boolean", json_path = ".spec.allowMoves"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.namespaces) > 0 || has(self.namespaceSelector)").message("set namespaces or namespaceSelector: a binding must name who may use it"))]
pub struct SubscriptionBindingSpec {
    /// The Azure subscription (GUID) this binding grants.
    #[schemars(regex(pattern = patterns::GUID))]
    pub subscription_id: String,

    /// The Entra ID tenant (GUID) the credential authenticates in.
    #[schemars(regex(pattern = patterns::GUID))]
    pub tenant_id: String,

    /// How the operator authenticates for this subscription: exactly one of workloadIdentity, clientSecret,
    /// managedIdentity.
    pub credential: CredentialSpec,

    /// Namespaces that may use the subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,

    /// Namespaces, selected by label, that may use the subscription (in addition to `namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Glob patterns of the resource groups the namespaces own, e.g. "rg-risk-*" ("*" allows all): where their
    /// workspaces may live, and where the operator may write on their behalf (create, update, move, delete, rotate
    /// storage keys, assign roles). Resources named by id (storageAccount.id, keyVault.id, ...) must be in one of these
    /// groups or in dependencyResourceGroups.
    #[schemars(length(min = 1, max = 64))]
    pub resource_groups: Vec<String>,

    /// Glob patterns of resource groups whose existing resources the namespaces may use without owning them: a
    /// workspace may link a storage account, key vault, Application Insights or container registry there by id (later
    /// also subnets and user-assigned identities), and the operator reads them, but never writes there. A spec that
    /// would make the operator write to such a resource (storageKeys.rotateEvery regenerates the storage account's
    /// keys) is refused with NotPermitted, as is a resource in a group of neither list. Empty (default): resources
    /// named by id must be in resourceGroups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub dependency_resource_groups: Vec<String>,

    /// Roles the namespaces may grant through `access`: built-in role names (Owner, Contributor, Reader,
    /// AzureMLDataScientist, AzureMLComputeOperator) or role definition GUIDs. Empty: no role may be granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_roles: Vec<String>,

    /// Scopes the namespaces may grant roles at: Workspace, ResourceGroup, Subscription. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_scopes: Vec<AccessScope>,

    /// Whether workspaces may move into, out of or within this subscription (default false).
    #[serde(default)]
    pub allow_moves: bool,

    /// Glob patterns of the VM sizes MlComputes may use, e.g. "Standard_D*" or "Standard_NC6s_v3" (matched without
    /// regard to case). Empty: no MlCompute may be created with this binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub allowed_vm_sizes: Vec<String>,

    /// Most nodes a compute cluster may scale out to (its scale.maxNodes). Unset: no cap beyond quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_nodes_per_cluster: Option<i32>,

    /// Glob patterns of the connection categories MlConnections may use, e.g. "Git", "ContainerRegistry" or "*"
    /// (matched without regard to case). Empty: no MlConnection may be created with this binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 64)))]
    pub allowed_connection_categories: Vec<String>,

    /// Glob patterns of the targets MlConnections may reach, e.g. "https://github.com/contoso/*" or
    /// "https://*.openai.azure.com/" (matched without regard to case). Empty: any target of an allowed category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 2048)))]
    pub allowed_connection_targets: Vec<String>,
}

/// The credential the operator uses for a subscription. Exactly one kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.workloadIdentity), has(self.clientSecret), has(self.managedIdentity)].filter(x, x).size() == 1").message("exactly one of workloadIdentity, clientSecret or managedIdentity must be set"))]
pub struct CredentialSpec {
    /// Workload identity federation: the operator exchanges its service account token (AZURE_FEDERATED_TOKEN_FILE)
    /// for an Entra ID token of this app registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentityCredential>,

    /// A service principal's client secret, read from a Secret in the operator's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<ClientSecretCredential>,

    /// The managed identity of the node or pod the operator runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_identity: Option<ManagedIdentityCredential>,
}

/// Workload identity federation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentityCredential {
    /// Client (application) id of the app registration or user-assigned identity trusting the operator's
    /// service account.
    #[schemars(regex(pattern = patterns::GUID))]
    pub client_id: String,
}

/// A client secret of a service principal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretCredential {
    /// Client (application) id of the service principal.
    #[schemars(regex(pattern = patterns::GUID))]
    pub client_id: String,
    /// The Secret (in the operator's namespace) and key holding the client secret.
    pub secret_ref: SecretKeyRef,
}

/// A managed identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentityCredential {
    /// Client id of a user-assigned identity; unset for the system-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::GUID))]
    pub client_id: Option<String>,
}

/// Observed state of a binding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionBindingStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, e.g. Ready when the credential could be built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
