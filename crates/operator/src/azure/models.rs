//! Model types shared by several resource families.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Tags of a resource.
pub type Tags = BTreeMap<String, String>;

/// `provisioningState` of ARM resources. Unknown values deserialize as [`ProvisioningState::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProvisioningState {
    /// Terminal success.
    Succeeded,
    /// Terminal failure.
    Failed,
    /// Terminal cancellation.
    Canceled,
    /// Being created.
    Creating,
    /// Being updated.
    Updating,
    /// Being deleted.
    Deleting,
    /// Being scaled (deployments).
    Scaling,
    /// Accepted, not yet started.
    Accepted,
    /// "Unknown" or any value this client does not know.
    #[serde(other)]
    Other,
}

impl ProvisioningState {
    /// Succeeded, Failed or Canceled.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// A managed identity block (`identity`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedServiceIdentity {
    /// `None`, `SystemAssigned`, `UserAssigned`, `SystemAssigned,UserAssigned`.
    #[serde(rename = "type", default, deserialize_with = "super::nullable::or_default")]
    pub type_: String,
    /// Principal id of the system-assigned identity (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant of the system-assigned identity (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// User-assigned identities by resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_assigned_identities: Option<BTreeMap<String, UserAssignedIdentity>>,
}

/// One user-assigned identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentity {
    /// Principal (object) id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Client id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A resource SKU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// SKU name.
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub name: String,
    /// Tier (`Free`, `Basic`, `Standard`, `Premium`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i64>,
}
