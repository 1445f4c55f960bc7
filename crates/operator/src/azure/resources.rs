//! Moving resources between resource groups / subscriptions (Microsoft.Resources, api-version 2025-04-01).

use http::Method;
use serde::Serialize;

use super::error::ArmError;
use super::ids::{ResourceGroupRef, ResourceId};
use super::lro::{LroOptions, LroStart};
use super::resource_groups::RESOURCES_API_VERSION;
use super::transport::{ArmClient, Call};

/// Body of validateMoveResources / moveResources.
#[derive(Clone, Debug, PartialEq)]
pub struct MoveRequest {
    /// Top-level resources to move (all in the source resource group).
    pub resources: Vec<ResourceId>,
    /// Destination resource group (possibly in another subscription of the same tenant).
    pub target_resource_group: ResourceGroupRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MoveBody<'a> {
    resources: &'a [ResourceId],
    target_resource_group: String,
}

impl ArmClient {
    async fn begin_move_like(
        &self,
        operation: &'static str,
        action: &str,
        source: &ResourceGroupRef,
        req: &MoveRequest,
    ) -> Result<LroStart<()>, ArmError> {
        let body = MoveBody { resources: &req.resources, target_resource_group: req.target_resource_group.id() };
        let call = Call::new(
            operation,
            Method::POST,
            format!("{}/{action}", source.id()),
            RESOURCES_API_VERSION,
            Some(source.subscription),
        )
        .json(&body)?;
        self.begin_action(&call).await
    }

    /// Resources_ValidateMoveResources: 202 + Location; polling ends in 204 (valid) or an error — a 409
    /// (`ResourceMoveValidationFailed`, class Conflict) when the move is not allowed.
    pub async fn begin_validate_move_resources(
        &self,
        source: &ResourceGroupRef,
        req: &MoveRequest,
    ) -> Result<LroStart<()>, ArmError> {
        self.begin_move_like("Resources_ValidateMoveResources", "validateMoveResources", source, req).await
    }

    /// Resources_ValidateMoveResources, waiting for the verdict.
    pub async fn validate_move_resources(
        &self,
        source: &ResourceGroupRef,
        req: &MoveRequest,
        options: &LroOptions,
    ) -> Result<(), ArmError> {
        let start = self.begin_validate_move_resources(source, req).await?;
        self.finish_action(start, options).await
    }

    /// Resources_MoveResources: 202 + Location (or 204), polled until done.
    pub async fn begin_move_resources(
        &self,
        source: &ResourceGroupRef,
        req: &MoveRequest,
    ) -> Result<LroStart<()>, ArmError> {
        self.begin_move_like("Resources_MoveResources", "moveResources", source, req).await
    }

    /// Resources_MoveResources, waiting for completion.
    pub async fn move_resources(
        &self,
        source: &ResourceGroupRef,
        req: &MoveRequest,
        options: &LroOptions,
    ) -> Result<(), ArmError> {
        let start = self.begin_move_resources(source, req).await?;
        self.finish_action(start, options).await
    }
}
