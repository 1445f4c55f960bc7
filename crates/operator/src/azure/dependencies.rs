//! Existence checks of a workspace's dependent resources (storage account, key vault, Application Insights,
//! container registry), each with its provider's api-version: one plain GET, counted as a read by ARM throttling.

use http::Method;
use serde::de::IgnoredAny;

use super::error::ArmError;
use super::ids::ResourceId;
use super::storage::STORAGE_API_VERSION;
use super::transport::{ArmClient, Call};

/// Operation name and api-version of the GET of each dependent resource type.
const TYPES: &[(&str, &str, &str)] = &[
    ("Microsoft.Storage/storageAccounts", "StorageAccounts_GetProperties", STORAGE_API_VERSION),
    ("Microsoft.KeyVault/vaults", "Vaults_Get", "2023-07-01"),
    ("Microsoft.Insights/components", "Components_Get", "2020-02-02"),
    ("Microsoft.ContainerRegistry/registries", "Registries_Get", "2023-07-01"),
];

impl ArmClient {
    /// Whether the dependent resource `id` exists (one GET; 404 is `false`). Ids of other types are refused with
    /// [`ArmError::InvalidId`], as no api-version for them is known.
    pub async fn dependency_exists(&self, id: &ResourceId) -> Result<bool, ArmError> {
        let rtype = id.resource_type().unwrap_or_default();
        let Some((_, operation, api_version)) = TYPES.iter().find(|(t, _, _)| t.eq_ignore_ascii_case(&rtype)) else {
            return Err(ArmError::InvalidId(super::ids::IdError::InvalidId {
                value: id.to_string(),
                reason: "not a dependent resource type of a workspace",
            }));
        };
        let call = Call::new(operation, Method::GET, id.to_string(), api_version, Some(id.subscription_id()));
        Ok(self.get_opt::<IgnoredAny>(&call).await?.is_some())
    }
}
