//! Azure ML workspace connections (`Microsoft.MachineLearningServices/workspaces/connections`, api-version
//! 2025-09-01; shapes as the spec's `WorkspaceConnection/{create,get,update,delete,list,listSecrets}.json`).
//!
//! - PUT (WorkspaceConnections_Create) answers 200 with the connection, synchronously; DELETE 200 or 204.
//! - Credentials are write-only: GET and list never return them; only `listsecrets` (a POST) does.
//! - A connection has no tags: the owner mark lives in `properties.metadata`.

use std::collections::BTreeMap;
use std::fmt;

use http::Method;
use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::error::ArmError;
use super::ids::{IdError, WorkspaceRef};
use super::secret::Secret;
use super::transport::{ArmClient, Call};
use super::workspaces::ML_API_VERSION;

/// A connection name: 3-33 ASCII letters, digits, `_` or `-`, starting with a letter or digit (the spec's
/// `ConnectionName` pattern), so it can never change an ARM path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionName(String);

impl ConnectionName {
    /// Validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let ok = (3..=33).contains(&s.len())
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::InvalidName {
                kind: "connection name",
                value: s,
                reason: "must be 3-33 letters, digits, '_' or '-', starting with a letter or digit",
            })
        }
    }
}

impl fmt::Display for ConnectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection of a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionRef {
    /// Parent workspace.
    pub workspace: WorkspaceRef,
    /// Connection name.
    pub name: ConnectionName,
}

impl ConnectionRef {
    /// Builds a reference from validated parts.
    pub fn new(workspace: WorkspaceRef, name: ConnectionName) -> Self {
        Self { workspace, name }
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/connections/{}", self.workspace.id(), self.name)
    }
}

/// A connection (request and response of WorkspaceConnections_Create / Get / ListSecrets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// ARM id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Properties.
    #[serde(default)]
    pub properties: ConnectionProperties,
}

/// `WorkspaceConnectionPropertiesV2` (discriminated by `authType`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionProperties {
    /// PAT, ManagedIdentity, UsernamePassword, None, SAS, AccountKey, ServicePrincipal, AccessKey, ApiKey,
    /// CustomKeys, OAuth2 or AAD (required).
    #[serde(default)]
    pub auth_type: String,
    /// ConnectionCategory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// User metadata (and the operator's owner mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Shared with every user of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_shared_to_all: Option<bool>,
    /// Group of the category (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Credentials: write-only (never in GET responses; returned by listsecrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// The credentials of a connection: Azure's fields for the auth type (`pat`, `username`, `key`, ...), or the
/// named keys of CustomKeys (sent as `{"keys": {...}}`). Every value is a [`Secret`]; `Debug` redacts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Field name to value.
    pub fields: BTreeMap<String, Secret>,
    /// CustomKeys: the keys object instead of fields.
    pub custom_keys: bool,
}

impl Serialize for Credentials {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.custom_keys {
            let mut map = serializer.serialize_map(Some(1))?;
            map.serialize_entry("keys", &self.fields)?;
            map.end()
        } else {
            self.fields.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Field {
            Text(Secret),
            Keys(BTreeMap<String, Secret>),
            Other(de::IgnoredAny),
        }
        let raw: BTreeMap<String, Field> = BTreeMap::deserialize(deserializer)?;
        let mut out = Credentials::default();
        for (name, value) in raw {
            match value {
                Field::Text(s) => {
                    out.fields.insert(name, s);
                }
                Field::Keys(keys) if name == "keys" => {
                    out.custom_keys = true;
                    out.fields.extend(keys);
                }
                Field::Keys(_) | Field::Other(_) => {}
            }
        }
        Ok(out)
    }
}

impl ArmClient {
    /// WorkspaceConnections_Get. `None` when absent. Never carries credentials.
    pub async fn get_connection(&self, c: &ConnectionRef) -> Result<Option<Connection>, ArmError> {
        let call = Call::new(
            "WorkspaceConnections_Get",
            Method::GET,
            c.id(),
            ML_API_VERSION,
            Some(c.workspace.subscription()),
        );
        self.get_opt(&call).await
    }

    /// WorkspaceConnections_Create (PUT, 200, synchronous): creates or replaces the connection, credentials
    /// included.
    pub async fn create_connection(&self, c: &ConnectionRef, body: &Connection) -> Result<Connection, ArmError> {
        let call = Call::new(
            "WorkspaceConnections_Create",
            Method::PUT,
            c.id(),
            ML_API_VERSION,
            Some(c.workspace.subscription()),
        )
        .json(body)?;
        self.send(&call).await?.json(call.operation)
    }

    /// WorkspaceConnections_Delete: 200 or 204 (absent), 404 taken as done.
    pub async fn delete_connection(&self, c: &ConnectionRef) -> Result<(), ArmError> {
        let call = Call::new(
            "WorkspaceConnections_Delete",
            Method::DELETE,
            c.id(),
            ML_API_VERSION,
            Some(c.workspace.subscription()),
        );
        self.send_opt(&call).await.map(|_| ())
    }

    /// WorkspaceConnections_ListSecrets (POST `listsecrets`): the connection with its credentials.
    pub async fn list_connection_secrets(&self, c: &ConnectionRef) -> Result<Connection, ArmError> {
        let call = Call::new(
            "WorkspaceConnections_ListSecrets",
            Method::POST,
            format!("{}/listsecrets", c.id()),
            ML_API_VERSION,
            Some(c.workspace.subscription()),
        );
        self.send(&call).await?.json(call.operation)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_follow_the_spec_pattern() {
        assert!(ConnectionName::new("connection-1").is_ok());
        assert!(ConnectionName::new("a_b").is_ok());
        assert!(ConnectionName::new("ab").is_err());
        assert!(ConnectionName::new("-abc").is_err());
        assert!(ConnectionName::new("a/b/c").is_err());
        assert!(ConnectionName::new("a".repeat(34)).is_err());
    }

    #[test]
    fn credentials_serialise_as_azure_fields_or_custom_keys_and_redact() {
        let mut c = Credentials::default();
        c.fields.insert("pat".into(), Secret::new("ghp_x"));
        assert_eq!(serde_json::to_value(&c).unwrap(), json!({"pat": "ghp_x"}));
        assert!(!format!("{c:?}").contains("ghp_x"));
        c.custom_keys = true;
        assert_eq!(serde_json::to_value(&c).unwrap(), json!({"keys": {"pat": "ghp_x"}}));
        // The spec's listSecrets example reads back.
        let listed: Connection = serde_json::from_value(json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/connections/c",
            "name": "connection-1",
            "type": "Microsoft.MachineLearningServices/workspaces/connections",
            "properties": {"authType": "AccessKey", "credentials": {"accessKeyId": "some_string", "secretAccessKey": "some_string"},
                "category": "CustomKeys", "expiryTime": "2020-01-01T00:00:00Z", "target": "some_string", "metadata": {}},
            "systemData": {"createdAt": "2020-01-01T00:00:00Z"}
        }))
        .unwrap();
        let creds = listed.properties.credentials.unwrap();
        assert_eq!(creds.fields["secretAccessKey"].expose(), "some_string");
        let keys: Credentials = serde_json::from_value(json!({"keys": {"a": "1", "b": "2"}})).unwrap();
        assert!(keys.custom_keys);
        assert_eq!(keys.fields.len(), 2);
    }
}
