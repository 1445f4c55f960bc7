//! Online endpoints and deployments (Microsoft.MachineLearningServices, api-version 2025-09-01).

use std::collections::BTreeMap;

use http::Method;
use serde::{Deserialize, Serialize};

use super::error::ArmError;
use super::ids::{OnlineDeploymentRef, OnlineEndpointRef};
use super::lro::{LroOptions, LroSpec, LroStart};
use super::models::{ManagedServiceIdentity, ProvisioningState, Sku, Tags};
use super::secret::Secret;
use super::transport::{ArmClient, Call};
use super::workspaces::ML_API_VERSION;

/// An online endpoint (request and response of PUT/GET).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpoint {
    /// ARM id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Location (required).
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub location: String,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// Properties.
    #[serde(default)]
    pub properties: OnlineEndpointProperties,
}

/// Online endpoint properties.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineEndpointProperties {
    /// `AMLToken` / `Key` / `AADToken` (required).
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub auth_mode: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free-form properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
    /// Traffic split: deployment name to percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<BTreeMap<String, i64>>,
    /// Mirror traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_traffic: Option<BTreeMap<String, i64>>,
    /// `Enabled` / `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_network_access: Option<String>,
    /// Compute (Kubernetes endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// Scoring URI (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,
    /// Swagger URI (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swagger_uri: Option<String>,
    /// Provisioning state (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
}

/// Endpoint keys (OnlineEndpoints_ListKeys). No `Serialize`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointKeys {
    /// Primary key.
    #[serde(default)]
    pub primary_key: Option<Secret>,
    /// Secondary key.
    #[serde(default)]
    pub secondary_key: Option<Secret>,
}

/// Which endpoint key to regenerate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndpointKeyType {
    /// Primary key.
    Primary,
    /// Secondary key.
    Secondary,
}

/// Body of OnlineEndpoints_RegenerateKeys.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegenerateEndpointKeys {
    /// Key to regenerate.
    pub key_type: EndpointKeyType,
    /// Value to set (ARM generates one when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_value: Option<Secret>,
}

/// An online deployment (managed or Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeployment {
    /// ARM id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Location (required).
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub location: String,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// SKU (capacity = instance count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// Properties.
    #[serde(default)]
    pub properties: OnlineDeploymentProperties,
}

/// Online deployment properties. Nested settings the operator passes through unchanged are raw JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeploymentProperties {
    /// `Managed` / `Kubernetes` (required).
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub endpoint_compute_type: String,
    /// Model asset id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// VM SKU, e.g. `Standard_DS3_v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Environment asset id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_variables: Option<BTreeMap<String, String>>,
    /// Code configuration (`{codeId, scoringScript}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_configuration: Option<serde_json::Value>,
    /// Scale settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_settings: Option<serde_json::Value>,
    /// Request settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_settings: Option<serde_json::Value>,
    /// Liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<serde_json::Value>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<serde_json::Value>,
    /// App Insights logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_insights_enabled: Option<bool>,
    /// Free-form properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
    /// Provisioning state (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
}

impl ArmClient {
    /// OnlineEndpoints_Get. `None` when absent.
    pub async fn get_online_endpoint(&self, ep: &OnlineEndpointRef) -> Result<Option<OnlineEndpoint>, ArmError> {
        let call =
            Call::new("OnlineEndpoints_Get", Method::GET, ep.id(), ML_API_VERSION, Some(ep.workspace.subscription()));
        self.get_opt(&call).await
    }

    /// OnlineEndpoints_CreateOrUpdate: 200 done, or 201 + Azure-AsyncOperation pending (final state: GET endpoint).
    pub async fn begin_create_or_update_online_endpoint(
        &self,
        ep: &OnlineEndpointRef,
        body: &OnlineEndpoint,
    ) -> Result<LroStart<OnlineEndpoint>, ArmError> {
        let call = Call::new(
            "OnlineEndpoints_CreateOrUpdate",
            Method::PUT,
            ep.id(),
            ML_API_VERSION,
            Some(ep.workspace.subscription()),
        )
        .json(body)?;
        self.begin(&call, LroSpec::ORIGINAL_URI).await
    }

    /// OnlineEndpoints_CreateOrUpdate, waiting for completion.
    pub async fn create_or_update_online_endpoint(
        &self,
        ep: &OnlineEndpointRef,
        body: &OnlineEndpoint,
        options: &LroOptions,
    ) -> Result<OnlineEndpoint, ArmError> {
        let start = self.begin_create_or_update_online_endpoint(ep, body).await?;
        self.finish(start, options).await
    }

    /// OnlineEndpoints_Delete: 200/204 (or 404) done, 202 + Location pending.
    pub async fn begin_delete_online_endpoint(&self, ep: &OnlineEndpointRef) -> Result<LroStart<()>, ArmError> {
        let call = Call::new(
            "OnlineEndpoints_Delete",
            Method::DELETE,
            ep.id(),
            ML_API_VERSION,
            Some(ep.workspace.subscription()),
        );
        self.begin_delete(&call).await
    }

    /// OnlineEndpoints_Delete, waiting for completion.
    pub async fn delete_online_endpoint(&self, ep: &OnlineEndpointRef, options: &LroOptions) -> Result<(), ArmError> {
        let start = self.begin_delete_online_endpoint(ep).await?;
        self.finish_action(start, options).await
    }

    /// OnlineEndpoints_ListKeys.
    pub async fn list_online_endpoint_keys(&self, ep: &OnlineEndpointRef) -> Result<EndpointKeys, ArmError> {
        let call = Call::new(
            "OnlineEndpoints_ListKeys",
            Method::POST,
            format!("{}/listKeys", ep.id()),
            ML_API_VERSION,
            Some(ep.workspace.subscription()),
        );
        self.send(&call).await?.json(call.operation)
    }

    /// OnlineEndpoints_RegenerateKeys: 200 done or 202 pending (final state via Location).
    pub async fn begin_regenerate_online_endpoint_keys(
        &self,
        ep: &OnlineEndpointRef,
        body: &RegenerateEndpointKeys,
    ) -> Result<LroStart<()>, ArmError> {
        let call = Call::new(
            "OnlineEndpoints_RegenerateKeys",
            Method::POST,
            format!("{}/regenerateKeys", ep.id()),
            ML_API_VERSION,
            Some(ep.workspace.subscription()),
        )
        .json(body)?;
        self.begin_action(&call).await
    }

    /// OnlineEndpoints_RegenerateKeys, waiting for completion.
    pub async fn regenerate_online_endpoint_keys(
        &self,
        ep: &OnlineEndpointRef,
        body: &RegenerateEndpointKeys,
        options: &LroOptions,
    ) -> Result<(), ArmError> {
        let start = self.begin_regenerate_online_endpoint_keys(ep, body).await?;
        self.finish_action(start, options).await
    }

    /// OnlineDeployments_Get. `None` when absent.
    pub async fn get_online_deployment(&self, dep: &OnlineDeploymentRef) -> Result<Option<OnlineDeployment>, ArmError> {
        let call = Call::new(
            "OnlineDeployments_Get",
            Method::GET,
            dep.id(),
            ML_API_VERSION,
            Some(dep.endpoint.workspace.subscription()),
        );
        self.get_opt(&call).await
    }

    /// OnlineDeployments_CreateOrUpdate: 200 done, or 201 + Azure-AsyncOperation pending (final state: GET).
    pub async fn begin_create_or_update_online_deployment(
        &self,
        dep: &OnlineDeploymentRef,
        body: &OnlineDeployment,
    ) -> Result<LroStart<OnlineDeployment>, ArmError> {
        let call = Call::new(
            "OnlineDeployments_CreateOrUpdate",
            Method::PUT,
            dep.id(),
            ML_API_VERSION,
            Some(dep.endpoint.workspace.subscription()),
        )
        .json(body)?;
        self.begin(&call, LroSpec::ORIGINAL_URI).await
    }

    /// OnlineDeployments_CreateOrUpdate, waiting for completion.
    pub async fn create_or_update_online_deployment(
        &self,
        dep: &OnlineDeploymentRef,
        body: &OnlineDeployment,
        options: &LroOptions,
    ) -> Result<OnlineDeployment, ArmError> {
        let start = self.begin_create_or_update_online_deployment(dep, body).await?;
        self.finish(start, options).await
    }

    /// OnlineDeployments_Delete: 200/204 (or 404) done, 202 + Location pending.
    pub async fn begin_delete_online_deployment(&self, dep: &OnlineDeploymentRef) -> Result<LroStart<()>, ArmError> {
        let call = Call::new(
            "OnlineDeployments_Delete",
            Method::DELETE,
            dep.id(),
            ML_API_VERSION,
            Some(dep.endpoint.workspace.subscription()),
        );
        self.begin_delete(&call).await
    }

    /// OnlineDeployments_Delete, waiting for completion.
    pub async fn delete_online_deployment(
        &self,
        dep: &OnlineDeploymentRef,
        options: &LroOptions,
    ) -> Result<(), ArmError> {
        let start = self.begin_delete_online_deployment(dep).await?;
        self.finish_action(start, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies as Azure sent them (recordings/online-endpoints.json): nulls, extra fields, `+00:00` timestamps.
    #[test]
    fn recorded_bodies_decode() {
        let ep: OnlineEndpoint = serde_json::from_str(
            r#"{"id":"/subscriptions/9e22/resourceGroups/ml-test/providers/Microsoft.MachineLearningServices/workspaces/mlworkspace-test2/onlineEndpoints/online-pwsh01",
                "name":"online-pwsh01","type":"Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                "properties":{"description":null,"properties":{"azureml.onlineendpointid":"/x","AzureAsyncOperationUri":"https://y"},
                  "scoringUri":"https://online-pwsh01.eastus.inference.ml.azure.com/score","swaggerUri":"https://s",
                  "authMode":"AADToken","provisioningState":"Succeeded","compute":null,"publicNetworkAccess":"Enabled",
                  "traffic":{},"mirrorTraffic":{}},
                "systemData":{"createdAt":"2024-07-25T06:35:43.8986223+00:00","createdBy":"x"},
                "tags":{},"location":"eastus","kind":"Managed",
                "identity":{"type":"SystemAssigned","principalId":"8ffc","tenantId":"72f9"}}"#,
        )
        .unwrap();
        assert_eq!(ep.properties.provisioning_state, Some(ProvisioningState::Succeeded));
        assert_eq!(ep.properties.auth_mode, "AADToken");
        let dep: OnlineDeployment = serde_json::from_str(
            r#"{"id":"/d","name":"online-pwsh01-blue01","type":"Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
                "properties":{"description":null,"properties":{"AzureAsyncOperationUri":"https://z"},
                  "codeConfiguration":{"codeId":"/c","scoringScript":"score.py"},"environmentId":"/e",
                  "environmentVariables":{},"scaleSettings":{"scaleType":"Default"},
                  "requestSettings":{"maxQueueWait":"PT0S","requestTimeout":"PT5S","maxConcurrentRequestsPerInstance":1},
                  "modelMountPath":null,"appInsightsEnabled":false,
                  "livenessProbe":{"failureThreshold":30,"successThreshold":1,"timeout":"PT2S","period":"PT10S","initialDelay":"PT10S"},
                  "provisioningState":"Creating","instanceType":"Standard_F4s_v2","model":"/m",
                  "egressPublicNetworkAccess":"Enabled","dataCollector":null,"endpointComputeType":"Managed"},
                "tags":{},"location":"eastus","kind":"Managed","sku":{"name":"Default","tier":"Standard","capacity":3}}"#,
        )
        .unwrap();
        assert_eq!(dep.properties.provisioning_state, Some(ProvisioningState::Creating));
        let keys: EndpointKeys = serde_json::from_str(r#"{"primaryKey":null,"secondaryKey":null}"#).unwrap();
        assert!(keys.primary_key.is_none() && keys.secondary_key.is_none());
        let nulls: OnlineEndpoint =
            serde_json::from_str(r#"{"location":null,"properties":{"authMode":null,"traffic":null}}"#).unwrap();
        assert_eq!((nulls.location.as_str(), nulls.properties.auth_mode.as_str()), ("", ""));
    }
}
