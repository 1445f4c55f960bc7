//! Role assignments (Microsoft.Authorization, api-version 2022-04-01).

use http::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ArmError;
use super::ids::{ResourceId, RoleAssignmentRef, RoleDefinitionId};
use super::transport::{ArmClient, Call};

/// Pinned api-version for role assignments.
pub const AUTHORIZATION_API_VERSION: &str = "2022-04-01";

/// Kind of principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrincipalType {
    /// A user.
    User,
    /// A group.
    Group,
    /// A service principal (including managed identities).
    ServicePrincipal,
    /// A foreign group.
    ForeignGroup,
    /// A device.
    Device,
}

/// A role assignment as returned by ARM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// ARM id.
    #[serde(default)]
    pub id: Option<String>,
    /// Name (GUID).
    #[serde(default)]
    pub name: Option<String>,
    /// Properties.
    #[serde(default)]
    pub properties: RoleAssignmentProperties,
}

/// Role assignment properties.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    /// Role definition id (ARM normalises it to `/providers/Microsoft.Authorization/roleDefinitions/{guid}`).
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub role_definition_id: String,
    /// Principal object id.
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub principal_id: String,
    /// Principal type as sent by ARM.
    #[serde(default)]
    pub principal_type: Option<String>,
    /// Scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// ABAC condition.
    #[serde(default)]
    pub condition: Option<String>,
    /// Condition version.
    #[serde(default)]
    pub condition_version: Option<String>,
}

impl RoleAssignment {
    /// The role definition, parsed (`None` if ARM sent something unparseable).
    pub fn role_definition(&self) -> Option<RoleDefinitionId> {
        RoleDefinitionId::parse(&self.properties.role_definition_id).ok()
    }

    /// The principal id, parsed.
    pub fn principal(&self) -> Option<Uuid> {
        Uuid::try_parse(&self.properties.principal_id).ok()
    }
}

/// Body of RoleAssignments_Create.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleAssignmentCreate {
    /// Role to assign.
    pub role_definition_id: RoleDefinitionId,
    /// Principal object id.
    pub principal_id: Uuid,
    /// Principal type (recommended: avoids replication-delay failures for new service principals).
    pub principal_type: Option<PrincipalType>,
    /// Description.
    pub description: Option<String>,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    properties: CreateProps<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateProps<'a> {
    role_definition_id: &'a RoleDefinitionId,
    principal_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_type: Option<PrincipalType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

/// `$filter` of RoleAssignments_ListForScope (typed so no caller text reaches the OData expression).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleAssignmentFilter {
    /// `atScope()`: assignments at or above the scope.
    AtScope,
    /// `principalId eq '{id}'`: assignments of a principal at, above or below the scope.
    PrincipalId(Uuid),
    /// `assignedTo('{id}')`.
    AssignedTo(Uuid),
}

impl RoleAssignmentFilter {
    /// The OData expression.
    pub fn to_odata(&self) -> String {
        match self {
            Self::AtScope => "atScope()".to_owned(),
            Self::PrincipalId(id) => format!("principalId eq '{}'", id.hyphenated()),
            Self::AssignedTo(id) => format!("assignedTo('{}')", id.hyphenated()),
        }
    }
}

impl ArmClient {
    /// RoleAssignments_Create (PUT; 201 created, 200 identical assignment existed). A 409 `RoleAssignmentExists`
    /// means the same principal/role/scope is assigned under another name.
    pub async fn create_role_assignment(
        &self,
        ra: &RoleAssignmentRef,
        body: &RoleAssignmentCreate,
    ) -> Result<RoleAssignment, ArmError> {
        let wire = CreateBody {
            properties: CreateProps {
                role_definition_id: &body.role_definition_id,
                principal_id: body.principal_id.hyphenated().to_string(),
                principal_type: body.principal_type,
                description: body.description.as_deref(),
            },
        };
        let call = Call::new(
            "RoleAssignments_Create",
            Method::PUT,
            ra.id(),
            AUTHORIZATION_API_VERSION,
            Some(ra.scope.subscription_id()),
        )
        .json(&wire)?;
        self.send(&call).await?.json(call.operation)
    }

    /// RoleAssignments_Get. `None` when absent.
    pub async fn get_role_assignment(&self, ra: &RoleAssignmentRef) -> Result<Option<RoleAssignment>, ArmError> {
        let call = Call::new(
            "RoleAssignments_Get",
            Method::GET,
            ra.id(),
            AUTHORIZATION_API_VERSION,
            Some(ra.scope.subscription_id()),
        );
        self.get_opt(&call).await
    }

    /// RoleAssignments_Delete: the deleted assignment (200) or `None` when it did not exist (204 or 404).
    pub async fn delete_role_assignment(&self, ra: &RoleAssignmentRef) -> Result<Option<RoleAssignment>, ArmError> {
        let call = Call::new(
            "RoleAssignments_Delete",
            Method::DELETE,
            ra.id(),
            AUTHORIZATION_API_VERSION,
            Some(ra.scope.subscription_id()),
        );
        match self.send_opt(&call).await? {
            Some(resp) if resp.status != 204 => resp.json::<Option<RoleAssignment>>(call.operation),
            _ => Ok(None),
        }
    }

    /// RoleAssignments_ListForScope with an optional filter, following `nextLink`.
    pub async fn list_role_assignments(
        &self,
        scope: &ResourceId,
        filter: Option<RoleAssignmentFilter>,
    ) -> Result<Vec<RoleAssignment>, ArmError> {
        let mut call = Call::new(
            "RoleAssignments_ListForScope",
            Method::GET,
            format!("{scope}/providers/Microsoft.Authorization/roleAssignments"),
            AUTHORIZATION_API_VERSION,
            Some(scope.subscription_id()),
        );
        if let Some(f) = filter {
            call = call.query("$filter", f.to_odata());
        }
        self.list_all(&call).await
    }
}
