//! Resource groups (Microsoft.Resources, api-version 2025-04-01).

use http::Method;
use serde::{Deserialize, Serialize};

use super::error::ArmError;
use super::ids::ResourceGroupRef;
use super::lro::{LroOptions, LroStart};
use super::models::Tags;
use super::transport::{ArmClient, Call};

/// Pinned api-version for resource groups and resource moves.
pub const RESOURCES_API_VERSION: &str = "2025-04-01";

/// A resource group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroup {
    /// ARM id.
    #[serde(default)]
    pub id: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Location.
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub location: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Id of the resource managing this group, if any.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Properties.
    #[serde(default)]
    pub properties: Option<ResourceGroupProperties>,
}

/// Resource group properties.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupProperties {
    /// Provisioning state (a string for resource groups, e.g. `Succeeded`, `Deleting`).
    #[serde(default)]
    pub provisioning_state: Option<String>,
}

/// Body of ResourceGroups_CreateOrUpdate.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupCreate {
    /// Location (required).
    pub location: String,
    /// Tags (replaces all tags when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Managing resource id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

impl ArmClient {
    /// ResourceGroups_Get. `None` when the group does not exist.
    pub async fn get_resource_group(&self, rg: &ResourceGroupRef) -> Result<Option<ResourceGroup>, ArmError> {
        let call = Call::new("ResourceGroups_Get", Method::GET, rg.id(), RESOURCES_API_VERSION, Some(rg.subscription));
        self.get_opt(&call).await
    }

    /// ResourceGroups_CreateOrUpdate (201 created / 200 updated; synchronous).
    pub async fn create_or_update_resource_group(
        &self,
        rg: &ResourceGroupRef,
        body: &ResourceGroupCreate,
    ) -> Result<ResourceGroup, ArmError> {
        let call = Call::new(
            "ResourceGroups_CreateOrUpdate",
            Method::PUT,
            rg.id(),
            RESOURCES_API_VERSION,
            Some(rg.subscription),
        )
        .json(body)?;
        self.send(&call).await?.json(call.operation)
    }

    /// ResourceGroups_CheckExistence (HEAD): 204 exists, 404 does not (no body either way).
    pub async fn resource_group_exists(&self, rg: &ResourceGroupRef) -> Result<bool, ArmError> {
        let call = Call::new(
            "ResourceGroups_CheckExistence",
            Method::HEAD,
            rg.id(),
            RESOURCES_API_VERSION,
            Some(rg.subscription),
        );
        Ok(self.send_opt(&call).await?.is_some())
    }

    /// ResourceGroups_Delete: 200 done, or 202 + `Location` pending (ARM's `operationresults` monitor answers 202
    /// until the group and everything in it is gone, then 200 with an empty body). A 404 is done.
    pub async fn begin_delete_resource_group(&self, rg: &ResourceGroupRef) -> Result<LroStart<()>, ArmError> {
        let call =
            Call::new("ResourceGroups_Delete", Method::DELETE, rg.id(), RESOURCES_API_VERSION, Some(rg.subscription));
        self.begin_delete(&call).await
    }

    /// ResourceGroups_Delete, waiting for completion.
    pub async fn delete_resource_group(&self, rg: &ResourceGroupRef, options: &LroOptions) -> Result<(), ArmError> {
        let start = self.begin_delete_resource_group(rg).await?;
        self.finish_action(start, options).await
    }
}
