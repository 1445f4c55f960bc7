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
    /// `resourceProvider eq '{namespace}'`, e.g. `Microsoft.Storage`: the cost of a query then does not grow with
    /// unrelated activity in the subscription.
    ResourceProvider(&'static str),
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
        let mut f =
            format!("eventTimestamp ge '{}' and eventTimestamp le '{}'", odata_time(self.from), odata_time(self.to));
        match &self.scope {
            ActivityLogScope::Resource(id) => f.push_str(&format!(" and resourceUri eq '{id}'")),
            ActivityLogScope::ResourceGroup(rg) => f.push_str(&format!(" and resourceGroupName eq '{rg}'")),
            ActivityLogScope::CorrelationId(id) => f.push_str(&format!(" and correlationId eq '{}'", id.hyphenated())),
            ActivityLogScope::ResourceProvider(ns) => f.push_str(&format!(" and resourceProvider eq '{ns}'")),
            ActivityLogScope::Subscription => {}
        }
        f
    }
}

/// A timestamp as the service writes and parses them: UTC with 7 fractional digits (100 ns ticks, .NET's
/// precision; more digits are refused).
pub fn odata_time(t: Timestamp) -> String {
    let ticks = t.as_nanosecond().rem_euclid(1_000_000_000) / 100;
    format!("{}.{ticks:07}Z", t.strftime("%Y-%m-%dT%H:%M:%S"))
}

/// A localizable string (`{value, localizedValue}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalizableString {
    /// Invariant value (Azure sends `null` for an empty one, e.g. `subStatus` of a recorded event).
    #[serde(default, deserialize_with = "super::nullable::or_default")]
    pub value: String,
    /// Localized value.
    #[serde(default)]
    pub localized_value: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::transport::Page;

    #[test]
    fn filters_use_seven_fractional_digits() {
        let from: Timestamp = "2026-06-01T11:00:00.123456789Z".parse().unwrap();
        let to: Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        let f = ActivityLogFilter { from, to, scope: ActivityLogScope::ResourceProvider("Microsoft.Storage") };
        assert_eq!(
            f.to_odata(),
            "eventTimestamp ge '2026-06-01T11:00:00.1234567Z' and eventTimestamp le '2026-06-01T12:00:00.0000000Z' \
             and resourceProvider eq 'Microsoft.Storage'"
        );
    }

    /// The recorded page (recordings/activity-log.json): `$select`ed fields, `subStatus.value` null, no
    /// eventDataId, a `nextLink` on the first page only.
    #[test]
    fn the_recorded_pages_decode() {
        let event = serde_json::json!({
            "caller": "Microsoft.Insights/alertRules",
            "correlationId": "/subscriptions/a93fb07c-6c93-40be-bf3b-4f0deba10f4b/resourceGroups/Default-Web-EastUS/providers/Microsoft.Insights/alertrules/checkrule3/incidents/L3N1",
            "category": {"value": "Microsoft.Insights/alertrules", "localizedValue": "Microsoft Insights Alert Settings"},
            "id": "/subscriptions/a93fb07c-6c93-40be-bf3b-4f0deba10f4b/resourceGroups/Default-Web-EastUS/providers/Microsoft.Insights/alertrules/checkrule3/events/9671a563-8b4d-4ba5-afe4-5b82340cbdea/ticks/635569505853936836",
            "resourceUri": "/subscriptions/a93fb07c-6c93-40be-bf3b-4f0deba10f4b/resourceGroups/Default-Web-EastUS/providers/Microsoft.Insights/alertrules/checkrule3",
            "operationName": {"value": "ResolveAlert", "localizedValue": "Resolve alert."},
            "status": {"value": "Resolved", "localizedValue": "Resolved"},
            "subStatus": {"value": null},
            "eventTimestamp": "2015-01-15T20:29:45.3936836Z",
            "subscriptionId": "a93fb07c-6c93-40be-bf3b-4f0deba10f4b"
        });
        let first = serde_json::json!({"value": [event], "nextLink": "https://hello.com/subscriptions/a93fb07c-6c93-40be-bf3b-4f0deba10f4b/providers/Microsoft.Insights/eventtypes/management/values?$skipToken=moreRecords"});
        let page: Page<EventData> = serde_json::from_value(first).unwrap();
        assert_eq!(page.value.len(), 1);
        assert!(page.next_link.is_some());
        let e = &page.value[0];
        assert_eq!(e.sub_status.as_ref().map(|s| s.value.as_str()), Some(""));
        assert!(e.event_timestamp.as_deref().unwrap().parse::<Timestamp>().is_ok(), "7 fractional digits parse");
        let last: Page<EventData> = serde_json::from_value(serde_json::json!({"value": [event]})).unwrap();
        assert!(last.next_link.is_none());
        let empty: Page<EventData> = serde_json::from_value(serde_json::json!({"value": null})).unwrap();
        assert!(empty.value.is_empty());
    }
}
