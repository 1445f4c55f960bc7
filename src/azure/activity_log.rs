//! Activity log (Microsoft.Insights, api-version 2015-04-01).

use http::Method;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ArmError;
use super::ids::{ResourceGroupName, ResourceId, SubscriptionId};
use super::transport::{ArmClient, Call};

/// Pinned api-version for the activity log.
pub const ACTIVITY_LOG_API_VERSION: &str = "2015-04-01";

/// The storage RBAC action logged by StorageAccounts_RegenerateKey.
pub const REGENERATE_KEY_OPERATION: &str = "Microsoft.Storage/storageAccounts/regenerateKey/action";

/// What to select events by, besides the time window.
#[derive(Clone, Debug, PartialEq)]
pub enum ActivityLogScope {
    /// `resourceUri eq '{id}'`.
    Resource(ResourceId),
    /// `resourceGroupName eq '{rg}'`.
    ResourceGroup(ResourceGroupName),
    /// `correlationId eq '{id}'`.
    CorrelationId(Uuid),
    /// The whole subscription.
    Subscription,
}

/// Typed `$filter` of ActivityLogs_List. Values are validated types, so no quote can end an OData string early.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityLogFilter {
    /// `eventTimestamp ge` (required by ARM).
    pub from: Timestamp,
    /// `eventTimestamp le`.
    pub to: Timestamp,
    /// Narrowing.
    pub scope: ActivityLogScope,
}

impl ActivityLogFilter {
    /// The OData expression.
    pub fn to_odata(&self) -> String {
        let mut f = format!("eventTimestamp ge '{}' and eventTimestamp le '{}'", self.from, self.to);
        match &self.scope {
            ActivityLogScope::Resource(id) => f.push_str(&format!(" and resourceUri eq '{id}'")),
            ActivityLogScope::ResourceGroup(rg) => f.push_str(&format!(" and resourceGroupName eq '{rg}'")),
            ActivityLogScope::CorrelationId(id) => f.push_str(&format!(" and correlationId eq '{}'", id.hyphenated())),
            ActivityLogScope::Subscription => {}
        }
        f
    }
}

/// A localizable string (`{value, localizedValue}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalizableString {
    /// Invariant value (Azure sends `null` for an empty one, e.g. `subStatus` of a recorded event).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub value: String,
    /// Localized value.
    #[serde(default)]
    pub localized_value: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// One activity log event (fields the operator uses; `claims` is deliberately not read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    /// Event id.
    #[serde(default)]
    pub id: Option<String>,
    /// Event data id.
    #[serde(default)]
    pub event_data_id: Option<String>,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// `BeginRequest` / `EndRequest`.
    #[serde(default)]
    pub event_name: Option<LocalizableString>,
    /// Operation, e.g. `Microsoft.Storage/storageAccounts/regenerateKey/action`.
    #[serde(default)]
    pub operation_name: Option<LocalizableString>,
    /// `Started` / `Succeeded` / `Failed`.
    #[serde(default)]
    pub status: Option<LocalizableString>,
    /// Sub-status.
    #[serde(default)]
    pub sub_status: Option<LocalizableString>,
    /// Resource id the event is about.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Resource group.
    #[serde(default)]
    pub resource_group_name: Option<String>,
    /// Caller (UPN or object id).
    #[serde(default)]
    pub caller: Option<String>,
    /// Level.
    #[serde(default)]
    pub level: Option<String>,
    /// When it happened.
    #[serde(default)]
    pub event_timestamp: Option<String>,
    /// When it was recorded.
    #[serde(default)]
    pub submission_timestamp: Option<String>,
    /// Subscription.
    #[serde(default)]
    pub subscription_id: Option<String>,
}

impl EventData {
    /// Whether the event's operation is `op` (case-insensitive).
    pub fn is_operation(&self, op: &str) -> bool {
        self.operation_name.as_ref().is_some_and(|o| o.value.eq_ignore_ascii_case(op))
    }
}

impl ArmClient {
    /// ActivityLogs_List with a typed filter, following `nextLink`.
    pub async fn list_activity_log(
        &self,
        sub: SubscriptionId,
        filter: &ActivityLogFilter,
    ) -> Result<Vec<EventData>, ArmError> {
        let call = Call::new(
            "ActivityLogs_List",
            Method::GET,
            format!("/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values"),
            ACTIVITY_LOG_API_VERSION,
            Some(sub),
        )
        .query("$filter", filter.to_odata());
        self.list_all(&call).await
    }
}
