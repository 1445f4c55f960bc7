//! Response bodies shaped as Azure sends them (recordings in `/work/shared/azure/recordings/`): the keys, nulls and
//! defaults of the recorded workspace, online endpoint and deployment bodies. Keys the recorded answers lack are not
//! invented.

use serde_json::{Map, Value, json};

/// Server-owned and defaulted workspace properties, as in the recorded `Workspaces_Get` (api-version 2024-04-01):
/// `prev` is the stored body's properties (kept across updates), `name`/`location`/`id` the workspace's.
pub(crate) fn workspace_properties(
    props: &mut Map<String, Value>,
    prev: &Value,
    name: &str,
    location: &str,
    id: &str,
    tenant_id: &str,
    now: &str,
) {
    let keep = |k: &str, default: Value| prev.get(k).cloned().unwrap_or(default);
    let workspace_id = keep("workspaceId", json!(uuid::Uuid::new_v4().to_string()));
    let short: String = name.chars().take(9).collect();
    let notebook = json!({
        "resourceId": uuid::Uuid::new_v4().simple().to_string(),
        "fqdn": format!("ml-{short}-{location}-{}.{location}.notebooks.azure.net", workspace_id.as_str().unwrap_or_default()),
        "isPrivateLinkEnabled": false,
        "notebookPreparationError": null,
    });
    let owned = [
        ("tenantId", json!(tenant_id)),
        ("workspaceId", workspace_id.clone()),
        ("creationTime", keep("creationTime", json!(now))),
        ("notebookInfo", keep("notebookInfo", notebook)),
        ("storageHnsEnabled", json!(false)),
        ("linkedModelInventoryArmId", Value::Null),
        ("privateLinkCount", json!(0)),
        ("discoveryUrl", json!(format!("https://{location}.api.azureml.ms/discovery"))),
        ("mlFlowTrackingUri", json!(format!("azureml://{location}.api.azureml.ms/mlflow/v1.0{id}"))),
        ("sdkTelemetryAppInsightsKey", keep("sdkTelemetryAppInsightsKey", json!(uuid::Uuid::new_v4().to_string()))),
    ];
    for (k, v) in owned {
        props.insert(k.into(), v);
    }
    let defaults = [
        ("friendlyName", json!("")),
        ("description", json!("")),
        ("hbiWorkspace", json!(false)),
        ("imageBuildCompute", Value::Null),
        ("allowRoleAssignmentOnRG", json!(true)),
        ("v1LegacyMode", json!(false)),
        ("softDeleteEnabled", json!(false)),
        ("publicNetworkAccess", json!("Enabled")),
        ("ipAllowlist", json!([])),
        ("networkAcls", json!({"defaultAction": "Allow", "bypass": "", "ipRules": [], "resourceAccessRules": []})),
        ("serverlessComputeSettings", Value::Null),
        ("EnableSoftwareBillOfMaterials", json!(false)),
        ("enableDataIsolation", json!(false)),
        (
            "managedNetwork",
            json!({
                "changeableIsolationModes": ["AllowInternetOutbound", "AllowOnlyApprovedOutbound"],
                "isolationMode": "Disabled",
                "enableNetworkMonitor": false,
                "enableFirewallLog": false,
            }),
        ),
    ];
    for (k, v) in defaults {
        if !props.contains_key(k) {
            props.insert(k.into(), keep(k, v));
        }
    }
    // Request-only switches never show in an answer.
    props.remove("provisionNetworkNow");
}

/// The recorded `systemData` of a workspace: six fields, `createdByType`/`lastModifiedByType` included.
pub(crate) fn workspace_system_data(prev: &Value, who: &str, now: &str) -> Value {
    json!({
        "createdAt": prev.pointer("/systemData/createdAt").cloned().unwrap_or(json!(now)),
        "createdBy": prev.pointer("/systemData/createdBy").cloned().unwrap_or(json!(who)),
        "createdByType": prev.pointer("/systemData/createdByType").cloned().unwrap_or(json!("Application")),
        "lastModifiedAt": now, "lastModifiedBy": who, "lastModifiedByType": "Application",
    })
}

/// The recorded `systemData` of online endpoints and deployments: `createdAt`, `createdBy`, `lastModifiedAt`.
pub(crate) fn mfe_system_data(prev: Option<&Value>, who: &str, now: &str) -> Value {
    json!({
        "createdAt": prev.and_then(|p| p.pointer("/systemData/createdAt")).cloned().unwrap_or(json!(now)),
        "createdBy": prev.and_then(|p| p.pointer("/systemData/createdBy")).cloned().unwrap_or(json!(who)),
        "lastModifiedAt": now,
    })
}

/// Defaults of an online endpoint's properties (recorded `OnlineEndpoints_Get`).
pub(crate) fn endpoint_properties(props: &mut Map<String, Value>, id: &str, async_uri: &str) {
    for (k, v) in [
        ("description", Value::Null),
        ("compute", Value::Null),
        ("publicNetworkAccess", json!("Enabled")),
        ("traffic", json!({})),
        ("mirrorTraffic", json!({})),
    ] {
        props.entry(k).or_insert(v);
    }
    let mut inner = props.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    inner.insert("azureml.onlineendpointid".into(), json!(id.to_ascii_lowercase()));
    inner.insert("AzureAsyncOperationUri".into(), json!(async_uri));
    props.insert("properties".into(), Value::Object(inner));
}

/// The body of the 201 an endpoint PUT answers (recorded): the stored endpoint without `location` and `identity`,
/// empty `systemData`, no URIs yet, and the operation URI added to the free-form properties.
pub(crate) fn endpoint_create_answer(stored: &Value, async_uri: &str) -> Value {
    let mut out = stored.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("location");
        o.remove("identity");
        o.insert("systemData".into(), json!({}));
    }
    if let Some(p) = out.get_mut("properties").and_then(Value::as_object_mut) {
        p.insert("scoringUri".into(), Value::Null);
        p.insert("swaggerUri".into(), Value::Null);
        // The caller's own free-form properties and the operation URI; the endpoint id is added once created.
        let mut inner = p.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        inner.remove("azureml.onlineendpointid");
        inner.insert("AzureAsyncOperationUri".into(), json!(async_uri));
        p.insert("properties".into(), Value::Object(inner));
    }
    out
}

/// Defaults of a managed online deployment's properties (recorded `OnlineDeployments_CreateOrUpdate` answer).
pub(crate) fn deployment_properties(props: &mut Map<String, Value>, async_uri: &str) {
    let probe = json!({"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S", "period": "PT10S", "initialDelay": "PT10S"});
    for (k, v) in [
        ("description", Value::Null),
        ("environmentVariables", json!({})),
        ("scaleSettings", json!({"scaleType": "Default"})),
        (
            "requestSettings",
            json!({"maxQueueWait": "PT0S", "requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1}),
        ),
        ("modelMountPath", Value::Null),
        ("appInsightsEnabled", json!(false)),
        ("livenessProbe", probe.clone()),
        ("readinessProbe", probe),
        ("egressPublicNetworkAccess", json!("Enabled")),
        ("dataCollector", Value::Null),
    ] {
        props.entry(k).or_insert(v);
    }
    let mut inner = props.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    inner.insert("AzureAsyncOperationUri".into(), json!(async_uri));
    props.insert("properties".into(), Value::Object(inner));
}

/// A deployment's `sku` as answered: the request's, with the tier Azure fills in.
pub(crate) fn deployment_sku(sku: Option<&Value>) -> Value {
    let mut s = sku.cloned().filter(Value::is_object).unwrap_or(json!({"name": "Default", "capacity": 1}));
    if s.get("tier").is_none() {
        s["tier"] = json!("Standard");
    }
    s
}
