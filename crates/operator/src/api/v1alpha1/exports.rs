//! `spec.exports` of MlWorkspace: the facts applications need, written to a ConfigMap, and opt-in key material
//! (what only `listKeys` gives) written to a Secret, both in the resource's namespace and owned by it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::patterns;

/// Keys of the exported ConfigMap of a workspace (present when Azure reports the value).
pub mod config_keys {
    /// Name of the workspace in Azure.
    pub const WORKSPACE_NAME: &str = "workspaceName";
    /// The workspace's immutable GUID (Azure's workspaceId).
    pub const WORKSPACE_ID: &str = "workspaceId";
    /// ARM id of the workspace (changes with a move).
    pub const RESOURCE_ID: &str = "resourceId";
    /// Discovery URL of the regional Azure ML services.
    pub const DISCOVERY_URL: &str = "discoveryUrl";
    /// MLflow tracking URI (`MLFLOW_TRACKING_URI`).
    pub const MLFLOW_TRACKING_URI: &str = "mlflowTrackingUri";
    /// Azure region.
    pub const LOCATION: &str = "location";
    /// Subscription id.
    pub const SUBSCRIPTION_ID: &str = "subscriptionId";
    /// Resource group name.
    pub const RESOURCE_GROUP: &str = "resourceGroup";
    /// ARM id of the storage account.
    pub const STORAGE_ACCOUNT_ID: &str = "storageAccountId";
    /// ARM id of the key vault.
    pub const KEY_VAULT_ID: &str = "keyVaultId";
    /// ARM id of the container registry.
    pub const CONTAINER_REGISTRY_ID: &str = "containerRegistryId";
    /// ARM id of Application Insights.
    pub const APPLICATION_INSIGHTS_ID: &str = "applicationInsightsId";
}

/// What a workspace exports for applications in its namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceExports {
    /// A ConfigMap the operator creates (owned by the workspace, deleted with it) and keeps current, also after a
    /// move, with the keys workspaceName, workspaceId, resourceId, discoveryUrl, mlflowTrackingUri, location,
    /// subscriptionId, resourceGroup, storageAccountId, keyVaultId, containerRegistryId, applicationInsightsId
    /// (each present once Azure reports it). Nothing secret. A ConfigMap of that name the operator did not create
    /// is never overwritten (condition Exported, reason ConfigMapNotOwned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ExportTarget>,

    /// A Secret the operator creates (owned by the workspace, deleted with it) holding only the listed items of
    /// the workspace's listKeys, each under its own key; updated when Azure's values change (a storage-key
    /// resync included). Values never reach logs, events or status. A Secret of that name the operator did not
    /// create is never overwritten (reason SecretNotOwned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<WorkspaceSecretExport>,
}

/// A ConfigMap by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportTarget {
    /// Name of the object in the resource's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::KUBE_NAME))]
    pub name: String,
}

/// The exported Secret of a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSecretExport {
    /// Name of the Secret in the workspace's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::KUBE_NAME))]
    pub name: String,

    /// The values to export (opt-in, each one a key of the Secret): userStorageKey (the storage account key the
    /// workspace uses), appInsightsInstrumentationKey, containerRegistryUsername, containerRegistryPassword,
    /// containerRegistryPassword2. A value Azure does not have (no registry, identity-based storage) is left out.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(validation = Rule::new("self.all(i, self.filter(j, j == i).size() == 1)").message("items must be unique"))]
    pub items: Vec<WorkspaceSecretItem>,
}

/// A value of the workspace's listKeys that can be exported.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WorkspaceSecretItem {
    /// The storage account key the workspace holds (listKeys userStorageKey).
    UserStorageKey,
    /// Application Insights instrumentation key.
    AppInsightsInstrumentationKey,
    /// Container registry user name.
    ContainerRegistryUsername,
    /// The container registry's first password.
    ContainerRegistryPassword,
    /// The container registry's second password.
    ContainerRegistryPassword2,
}

impl WorkspaceSecretItem {
    /// The key of the item in the Secret.
    pub fn key(self) -> &'static str {
        match self {
            WorkspaceSecretItem::UserStorageKey => "userStorageKey",
            WorkspaceSecretItem::AppInsightsInstrumentationKey => "appInsightsInstrumentationKey",
            WorkspaceSecretItem::ContainerRegistryUsername => "containerRegistryUsername",
            WorkspaceSecretItem::ContainerRegistryPassword => "containerRegistryPassword",
            WorkspaceSecretItem::ContainerRegistryPassword2 => "containerRegistryPassword2",
        }
    }
}

/// What was exported, as the operator last wrote it (names only, never values).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportsStatus {
    /// The ConfigMap the operator owns and keeps current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// The Secret the operator owns and keeps current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Keys of the exported ConfigMap of an online endpoint (present when Azure reports the value).
pub mod endpoint_config_keys {
    /// Name of the endpoint in Azure.
    pub const ENDPOINT_NAME: &str = "endpointName";
    /// ARM id of the endpoint.
    pub const RESOURCE_ID: &str = "resourceId";
    /// URI callers send scoring requests to.
    pub const SCORING_URI: &str = "scoringUri";
    /// URI of the endpoint's OpenAPI document.
    pub const SWAGGER_URI: &str = "swaggerUri";
    /// Key, AMLToken or AADToken.
    pub const AUTH_MODE: &str = "authMode";
    /// Name of the workspace in Azure.
    pub const WORKSPACE_NAME: &str = "workspaceName";
    /// Subscription id.
    pub const SUBSCRIPTION_ID: &str = "subscriptionId";
    /// Resource group name.
    pub const RESOURCE_GROUP: &str = "resourceGroup";
}

/// What an online endpoint exports for applications in its namespace (beside keysSecret, which stays as it is).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointExports {
    /// A ConfigMap the operator creates (owned by the endpoint, deleted with it) and keeps current, with the keys
    /// endpointName, resourceId, scoringUri, swaggerUri, authMode, workspaceName, subscriptionId, resourceGroup (each
    /// present once known). A ConfigMap of that name the operator did not create is never overwritten (condition
    /// Exported, reason ConfigMapNotOwned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ExportTarget>,

    /// A Secret the operator creates (owned by the endpoint, deleted with it) holding only the listed keys (authMode
    /// Key only): primaryKey, secondaryKey. Read with listKeys only when the keys may have changed (a regeneration);
    /// values never reach logs, events or status. A Secret of that name the operator did not create is never
    /// overwritten (reason SecretNotOwned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<EndpointSecretExport>,
}

/// The exported Secret of an online endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSecretExport {
    /// Name of the Secret in the endpoint's namespace (not the keysSecret's).
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::KUBE_NAME))]
    pub name: String,

    /// The keys to export (opt-in, each one a key of the Secret): primaryKey, secondaryKey.
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(i, self.filter(j, j == i).size() == 1)").message("items must be unique"))]
    pub items: Vec<EndpointSecretItem>,
}

/// An endpoint key that can be exported.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EndpointSecretItem {
    /// The primary key.
    PrimaryKey,
    /// The secondary key.
    SecondaryKey,
}

impl EndpointSecretItem {
    /// The key of the item in the Secret.
    pub fn key(self) -> &'static str {
        match self {
            EndpointSecretItem::PrimaryKey => "primaryKey",
            EndpointSecretItem::SecondaryKey => "secondaryKey",
        }
    }
}
