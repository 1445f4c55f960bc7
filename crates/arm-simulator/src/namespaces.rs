//! The resource provider namespaces ARM knows: the ones the simulator serves (and their types), the real ones its
//! subscriptions have not registered, and ARM's answers for a namespace or type it cannot route. The router answers
//! with them before any handler runs; `generic` lists and registers providers from the same table.

use super::reply::ArmError;

/// The namespaces the simulator serves, canonical casing, with the resource types it implements.
pub(crate) const SERVED: &[(&str, &[&str])] = &[
    ("Microsoft.Storage", &["storageAccounts"]),
    ("Microsoft.KeyVault", &["vaults"]),
    ("Microsoft.Insights", &["components", "eventtypes"]),
    ("Microsoft.ContainerRegistry", &["registries"]),
    (
        "Microsoft.MachineLearningServices",
        &["workspaces", "workspaces/onlineEndpoints", "workspaces/onlineEndpoints/deployments"],
    ),
    ("Microsoft.Authorization", &["roleAssignments", "roleDefinitions"]),
    ("Microsoft.Resources", &["resourceGroups", "subscriptions"]),
];

/// Real Azure namespaces the simulator does not implement: ARM knows them, the simulated subscriptions have not
/// registered them.
const UNREGISTERED_REAL: &[&str] = &[
    "Microsoft.Compute",
    "Microsoft.Network",
    "Microsoft.Web",
    "Microsoft.Sql",
    "Microsoft.ContainerService",
    "Microsoft.OperationalInsights",
    "Microsoft.ManagedIdentity",
    "Microsoft.DocumentDB",
    "Microsoft.EventHub",
    "Microsoft.ServiceBus",
    "Microsoft.CognitiveServices",
    "Microsoft.Databricks",
];

/// ARM's answer for a subscription that has not registered `ns` (409, as ARM answers before any RP sees the call).
pub(crate) fn missing_registration(ns: &str) -> ArmError {
    ArmError::conflict(
        "MissingSubscriptionRegistration",
        format!(
            "The subscription is not registered to use namespace '{ns}'. See https://aka.ms/rps-not-found for how to register subscriptions."
        ),
    )
}

/// ARM's answer for a path below `ns` whose type the namespace does not have (or a namespace ARM does not know).
pub(crate) fn unknown_type(ns: &str, t: &str) -> ArmError {
    if let Some(real) = UNREGISTERED_REAL.iter().find(|r| r.eq_ignore_ascii_case(ns)) {
        return missing_registration(real);
    }
    if !SERVED.iter().any(|(n, _)| n.eq_ignore_ascii_case(ns)) {
        return ArmError::bad_request("InvalidResourceNamespace", format!("The resource namespace '{ns}' is invalid."));
    }
    ArmError::bad_request(
        "InvalidResourceType",
        format!("The resource type '{t}' could not be found in the namespace '{ns}' for api version used."),
    )
}
