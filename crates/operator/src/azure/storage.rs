//! Storage accounts (Microsoft.Storage, api-version 2025-06-01).

use http::Method;
use serde::{Deserialize, Serialize};

use super::error::ArmError;
use super::ids::{StorageAccountRef, SubscriptionId};
use super::models::{Sku, Tags};
use super::secret::Secret;
use super::transport::{ArmClient, Call};

/// Pinned api-version for storage accounts.
pub const STORAGE_API_VERSION: &str = "2025-06-01";

/// A storage account (GetProperties / List).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    /// ARM id.
    #[serde(default)]
    pub id: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Location.
    #[serde(default)]
    pub location: Option<String>,
    /// Kind (`StorageV2`, ...).
    #[serde(default)]
    pub kind: Option<String>,
    /// SKU.
    #[serde(default)]
    pub sku: Option<Sku>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Properties.
    #[serde(default)]
    pub properties: StorageAccountProperties,
}

/// Storage account properties the operator uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccountProperties {
    /// Provisioning state (a string for storage: `Creating`, `ResolvingDNS`, `Succeeded`).
    #[serde(default)]
    pub provisioning_state: Option<String>,
    /// Creation time.
    #[serde(default)]
    pub creation_time: Option<String>,
    /// When each key was last (re)generated; changes on regenerateKey.
    #[serde(default)]
    pub key_creation_time: Option<KeyCreationTime>,
    /// Whether shared-key (account key) access is allowed; `None` means allowed.
    #[serde(default)]
    pub allow_shared_key_access: Option<bool>,
    /// `Enabled` / `Disabled` / `SecuredByPerimeter`.
    #[serde(default)]
    pub public_network_access: Option<String>,
}

/// `keyCreationTime` (ISO-8601 strings as sent by ARM; compare them for change, parse with [`jiff`] if needed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCreationTime {
    /// Creation time of key1.
    #[serde(default)]
    pub key1: Option<String>,
    /// Creation time of key2.
    #[serde(default)]
    pub key2: Option<String>,
}

/// Which account key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageKeyName {
    /// `key1`.
    #[serde(rename = "key1")]
    Key1,
    /// `key2`.
    #[serde(rename = "key2")]
    Key2,
}

/// One account key (listKeys / regenerateKey).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccountKey {
    /// `key1`, `key2` (or `kerb1`/`kerb2` with `$expand=kerb`, which this client does not request).
    pub key_name: String,
    /// The key.
    pub value: Secret,
    /// `Full` / `Read`.
    #[serde(default)]
    pub permissions: Option<String>,
    /// When the key was created.
    #[serde(default)]
    pub creation_time: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeyList {
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    keys: Vec<StorageAccountKey>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegenerateKeyBody {
    key_name: StorageKeyName,
}

impl ArmClient {
    /// StorageAccounts_GetProperties. `None` when the account does not exist.
    pub async fn get_storage_account(&self, sa: &StorageAccountRef) -> Result<Option<StorageAccount>, ArmError> {
        let call = Call::new(
            "StorageAccounts_GetProperties",
            Method::GET,
            sa.id(),
            STORAGE_API_VERSION,
            Some(sa.subscription()),
        );
        self.get_opt(&call).await
    }

    /// StorageAccounts_List: every account of a subscription (all pages), `keyCreationTime` included. One paged
    /// read per subscription notices key changes on all its accounts.
    pub async fn list_storage_accounts(&self, sub: SubscriptionId) -> Result<Vec<StorageAccount>, ArmError> {
        let call = Call::new(
            "StorageAccounts_List",
            Method::GET,
            format!("/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts"),
            STORAGE_API_VERSION,
            Some(sub),
        );
        self.list_all(&call).await
    }

    /// StorageAccounts_ListKeys.
    pub async fn list_storage_account_keys(&self, sa: &StorageAccountRef) -> Result<Vec<StorageAccountKey>, ArmError> {
        let call = Call::new(
            "StorageAccounts_ListKeys",
            Method::POST,
            format!("{}/listKeys", sa.id()),
            STORAGE_API_VERSION,
            Some(sa.subscription()),
        );
        Ok(self.send(&call).await?.json::<KeyList>(call.operation)?.keys)
    }

    /// StorageAccounts_RegenerateKey: regenerates one key, returns the new key list. Not retried after 5xx or
    /// timeouts (a second regeneration would invalidate the first new key).
    pub async fn regenerate_storage_account_key(
        &self,
        sa: &StorageAccountRef,
        key: StorageKeyName,
    ) -> Result<Vec<StorageAccountKey>, ArmError> {
        let call = Call::new(
            "StorageAccounts_RegenerateKey",
            Method::POST,
            format!("{}/regenerateKey", sa.id()),
            STORAGE_API_VERSION,
            Some(sa.subscription()),
        )
        .json(&RegenerateKeyBody { key_name: key })?;
        Ok(self.send(&call).await?.json::<KeyList>(call.operation)?.keys)
    }
}
