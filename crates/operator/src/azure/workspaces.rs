//! Machine Learning workspaces (Microsoft.MachineLearningServices, api-version 2025-09-01).

use http::Method;
use serde::{Deserialize, Serialize};

use super::error::ArmError;
use super::ids::WorkspaceRef;
use super::lro::{LroOptions, LroSpec, LroStart};
use super::models::{ManagedServiceIdentity, ProvisioningState, Sku, Tags};
use super::secret::Secret;
use super::transport::{ArmClient, Call};

/// Pinned api-version for workspaces, online endpoints and deployments.
pub const ML_API_VERSION: &str = "2025-09-01";

/// An ML workspace (request and response body of PUT/GET).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// ARM id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Resource type (read-only).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Location (required on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// Kind (`Default`, `Hub`, `Project`, `FeatureStore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Properties.
    #[serde(default)]
    pub properties: WorkspaceProperties,
}

/// Workspace properties the operator uses; unknown properties are ignored on read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceProperties {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Enabled` / `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_network_access: Option<String>,
    /// Storage account id (immutable after creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    /// Key vault id (immutable after creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault: Option<String>,
    /// Application Insights id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights: Option<String>,
    /// Container registry id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<String>,
    /// `AccessKey` / `Identity` / `UserDelegationSAS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_datastores_auth_mode: Option<String>,
    /// High business impact workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hbi_workspace: Option<bool>,
    /// Immutable workspace GUID (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Discovery URL (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// MLflow tracking URI (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml_flow_tracking_uri: Option<String>,
    /// Provisioning state (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// Days a deleted workspace stays soft-deleted (1..14; Azure's default 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_retention_in_days: Option<i64>,
    /// Set on a PUT to recover the soft-deleted workspace of the same name and location (see the simulator's
    /// `soft_delete` module for where this comes from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<bool>,
}

/// Body of Workspaces_Update (PATCH). Only set fields are sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceUpdate {
    /// Tags (replaces all tags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// SKU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// Identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// Properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<WorkspaceUpdateProperties>,
}

/// PATCH-able workspace properties (`WorkspacePropertiesUpdateParameters`; storageAccount and keyVault are not).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceUpdateProperties {
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Enabled` / `Disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_network_access: Option<String>,
    /// Application Insights id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_insights: Option<String>,
    /// Container registry id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<String>,
    /// `AccessKey` / `Identity` / `UserDelegationSAS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_datastores_auth_mode: Option<String>,
}

/// Result of Workspaces_ListKeys. Every secret is a [`Secret`]; no `Serialize` so it cannot be written anywhere
/// by accident.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "WorkspaceKeysWire")]
pub struct WorkspaceKeys {
    /// The storage account key the workspace currently uses.
    pub user_storage_key: Option<Secret>,
    /// The storage account id (`userStorageResourceId` in the swagger, `userStorageArmId` in examples).
    pub user_storage_resource_id: Option<String>,
    /// App Insights instrumentation key.
    pub app_insights_instrumentation_key: Option<Secret>,
    /// Container registry credentials.
    pub container_registry_credentials: Option<RegistryCredentials>,
    /// Notebook access keys.
    pub notebook_access_keys: Option<NotebookAccessKeys>,
}

/// Wire form of [`WorkspaceKeys`]. The storage id has two names (swagger vs. examples) and a response may carry
/// both, so they are separate fields here: a serde `alias` would reject such a body as a duplicate field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceKeysWire {
    #[serde(default)]
    user_storage_key: Option<Secret>,
    #[serde(default)]
    user_storage_resource_id: Option<String>,
    #[serde(default)]
    user_storage_arm_id: Option<String>,
    #[serde(default)]
    app_insights_instrumentation_key: Option<Secret>,
    #[serde(default)]
    container_registry_credentials: Option<RegistryCredentials>,
    #[serde(default)]
    notebook_access_keys: Option<NotebookAccessKeys>,
}

impl From<WorkspaceKeysWire> for WorkspaceKeys {
    fn from(w: WorkspaceKeysWire) -> Self {
        Self {
            user_storage_key: w.user_storage_key,
            user_storage_resource_id: w.user_storage_resource_id.or(w.user_storage_arm_id),
            app_insights_instrumentation_key: w.app_insights_instrumentation_key,
            container_registry_credentials: w.container_registry_credentials,
            notebook_access_keys: w.notebook_access_keys,
        }
    }
}

/// Container registry credentials of a workspace.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentials {
    /// Location.
    #[serde(default)]
    pub location: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Passwords.
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub passwords: Vec<RegistryPassword>,
}

/// One registry password.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegistryPassword {
    /// Name (`password`, `password2`).
    #[serde(default)]
    pub name: Option<String>,
    /// Value.
    #[serde(default)]
    pub value: Option<Secret>,
}

/// Notebook access keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotebookAccessKeys {
    /// Primary key.
    #[serde(default)]
    pub primary_access_key: Option<Secret>,
    /// Secondary key.
    #[serde(default)]
    pub secondary_access_key: Option<Secret>,
}

impl ArmClient {
    /// Workspaces_Get. `None` when the workspace (or its resource group) does not exist.
    pub async fn get_workspace(&self, ws: &WorkspaceRef) -> Result<Option<Workspace>, ArmError> {
        let call = Call::new("Workspaces_Get", Method::GET, ws.id(), ML_API_VERSION, Some(ws.subscription()));
        self.get_opt(&call).await
    }

    /// Workspaces_CreateOrUpdate: sends the PUT and returns the result (200) or a pending handle (202 + Location;
    /// final state: GET of the workspace).
    pub async fn begin_create_or_update_workspace(
        &self,
        ws: &WorkspaceRef,
        body: &Workspace,
    ) -> Result<LroStart<Workspace>, ArmError> {
        let call =
            Call::new("Workspaces_CreateOrUpdate", Method::PUT, ws.id(), ML_API_VERSION, Some(ws.subscription()))
                .json(body)?;
        self.begin(&call, LroSpec::ORIGINAL_URI).await
    }

    /// Workspaces_CreateOrUpdate, waiting for completion.
    pub async fn create_or_update_workspace(
        &self,
        ws: &WorkspaceRef,
        body: &Workspace,
        options: &LroOptions,
    ) -> Result<Workspace, ArmError> {
        let start = self.begin_create_or_update_workspace(ws, body).await?;
        self.finish(start, options).await
    }

    /// Workspaces_Update (PATCH): result (200) or pending handle (202 + Location; final state: GET of the workspace).
    pub async fn begin_update_workspace(
        &self,
        ws: &WorkspaceRef,
        body: &WorkspaceUpdate,
    ) -> Result<LroStart<Workspace>, ArmError> {
        let call = Call::new("Workspaces_Update", Method::PATCH, ws.id(), ML_API_VERSION, Some(ws.subscription()))
            .json(body)?;
        self.begin(&call, LroSpec::ORIGINAL_URI).await
    }

    /// Workspaces_Update, waiting for completion.
    pub async fn update_workspace(
        &self,
        ws: &WorkspaceRef,
        body: &WorkspaceUpdate,
        options: &LroOptions,
    ) -> Result<Workspace, ArmError> {
        let start = self.begin_update_workspace(ws, body).await?;
        self.finish(start, options).await
    }

    /// Workspaces_Delete: 200/204 done (204 = did not exist; a 404 is also treated as done), 202 pending
    /// (final state via Location). `force_to_purge` skips soft-delete.
    pub async fn begin_delete_workspace(
        &self,
        ws: &WorkspaceRef,
        force_to_purge: bool,
    ) -> Result<LroStart<()>, ArmError> {
        let mut call = Call::new("Workspaces_Delete", Method::DELETE, ws.id(), ML_API_VERSION, Some(ws.subscription()));
        if force_to_purge {
            call = call.query("forceToPurge", "true");
        }
        self.begin_delete(&call).await
    }

    /// Workspaces_Delete, waiting for completion.
    pub async fn delete_workspace(
        &self,
        ws: &WorkspaceRef,
        force_to_purge: bool,
        options: &LroOptions,
    ) -> Result<(), ArmError> {
        let start = self.begin_delete_workspace(ws, force_to_purge).await?;
        self.finish_action(start, options).await
    }

    /// Workspaces_ListKeys (POST, synchronous).
    pub async fn list_workspace_keys(&self, ws: &WorkspaceRef) -> Result<WorkspaceKeys, ArmError> {
        let call = Call::new(
            "Workspaces_ListKeys",
            Method::POST,
            format!("{}/listKeys", ws.id()),
            ML_API_VERSION,
            Some(ws.subscription()),
        );
        self.send(&call).await?.json(call.operation)
    }

    /// Workspaces_ResyncKeys (POST, no body): 200 done or 202 pending (final state via Location).
    pub async fn begin_resync_workspace_keys(&self, ws: &WorkspaceRef) -> Result<LroStart<()>, ArmError> {
        let call = Call::new(
            "Workspaces_ResyncKeys",
            Method::POST,
            format!("{}/resyncKeys", ws.id()),
            ML_API_VERSION,
            Some(ws.subscription()),
        );
        self.begin_action(&call).await
    }

    /// Workspaces_ResyncKeys, waiting for completion.
    pub async fn resync_workspace_keys(&self, ws: &WorkspaceRef, options: &LroOptions) -> Result<(), ArmError> {
        let start = self.begin_resync_workspace_keys(ws).await?;
        self.finish_action(start, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keys_accepts_both_storage_id_names_and_redacts() {
        let a: WorkspaceKeys =
            serde_json::from_str(r#"{"userStorageKey":"k1-secret","userStorageArmId":"/x","new":1}"#).unwrap();
        assert_eq!(a.user_storage_resource_id.as_deref(), Some("/x"));
        assert_eq!(a.user_storage_key.as_ref().map(Secret::expose), Some("k1-secret"));
        assert!(!format!("{a:?}").contains("k1-secret"));
        let b: WorkspaceKeys = serde_json::from_str(r#"{"userStorageKey":null,"userStorageResourceId":"/y"}"#).unwrap();
        assert_eq!(b.user_storage_resource_id.as_deref(), Some("/y"));
        assert!(b.user_storage_key.is_none());
        // Both names in one body (the swagger's and the examples'): not a duplicate-field error.
        let c: WorkspaceKeys = serde_json::from_str(
            r#"{"userStorageKey":"k2-secret","userStorageResourceId":"/z","userStorageArmId":"/z"}"#,
        )
        .unwrap();
        assert_eq!(c.user_storage_resource_id.as_deref(), Some("/z"));
        assert!(!format!("{c:?}").contains("k2-secret"));
    }

    /// Bodies as Azure sent them (recordings/ml-workspaces.json, examples): nulls where lists and strings are
    /// expected, `etag: null`, fields the operator does not know.
    #[test]
    fn recorded_bodies_decode() {
        let keys: WorkspaceKeys = serde_json::from_str(
            r#"{"userStorageKey":"********","userStorageArmId":"/subscriptions/9e22/resourceGroups/ml-test/providers/Microsoft.Storage/storageAccounts/storageaccount0722ml",
                "appInsightsInstrumentationKey":"REDACTED","containerRegistryCredentials":null,
                "notebookAccessKeys":{"primaryAccessKey":"********","secondaryAccessKey":"********"}}"#,
        )
        .unwrap();
        assert!(keys.container_registry_credentials.is_none());
        let identity: WorkspaceKeys = serde_json::from_str(
            r#"{"userStorageKey":null,"userStorageArmId":"/x","appInsightsInstrumentationKey":null,
                "containerRegistryCredentials":{"location":null,"username":"u","passwords":null},
                "notebookAccessKeys":{"primaryAccessKey":null,"secondaryAccessKey":null}}"#,
        )
        .unwrap();
        assert!(identity.user_storage_key.is_none());
        assert!(identity.container_registry_credentials.unwrap().passwords.is_empty());
        let ws: Workspace = serde_json::from_str(
            r#"{"id":"/subscriptions/0e74/resourceGroups/ml-psh-test/providers/Microsoft.MachineLearningServices/workspaces/mlworkspace-test1",
                "name":"mlworkspace-test1","type":"Microsoft.MachineLearningServices/workspaces","location":"eastus2",
                "tags":{"key1":"value1"},"etag":null,
                "properties":{"friendlyName":"","description":"","hbiWorkspace":false,"imageBuildCompute":null,
                  "provisioningState":"Succeeded","allowRoleAssignmentOnRG":true,"softDeleteEnabled":false,
                  "creationTime":"2025-11-04T09:09:55.7028648Z",
                  "notebookInfo":{"resourceId":"de9f","fqdn":"x","isPrivateLinkEnabled":false,"notebookPreparationError":null},
                  "ipAllowlist":[],"networkAcls":{"defaultAction":"Allow","bypass":"","ipRules":[],"resourceAccessRules":[]},
                  "serverlessComputeSettings":null,"EnableSoftwareBillOfMaterials":false,"enableDataIsolation":false},
                "identity":{"type":"SystemAssigned","principalId":"12a2","tenantId":"213e"},
                "kind":"Default","sku":{"name":"Basic","tier":"Basic"},
                "systemData":{"createdAt":"2025-11-04T09:09:55.7028648Z","createdByType":"User"}}"#,
        )
        .unwrap();
        assert_eq!(ws.properties.provisioning_state, Some(ProvisioningState::Succeeded));
        let nulls: Workspace =
            serde_json::from_str(r#"{"identity":{"type":null},"sku":{"name":null},"properties":{}}"#).unwrap();
        assert_eq!(nulls.identity.map(|i| i.type_), Some(String::new()));
    }
}
