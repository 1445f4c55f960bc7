//! The api-versions each resource provider serves: the versions the official specs publish
//! (`Azure/azure-rest-api-specs`, `specification/<service>/resource-manager/<namespace>/{stable,preview}/<version>/`)
//! for the operations the simulator implements. Anything else is refused as ARM refuses it:
//! ARM's own types (resource groups, subscriptions, moves, resource lists) with `InvalidApiVersionParameter`,
//! resource-provider types with `NoRegisteredProviderFound`, both 400.
//!
//! The versions the operator pins (ML 2025-09-01, storage 2025-06-01, resources 2025-04-01, authorization
//! 2022-04-01, activity log 2015-04-01), the recordings' (ML 2024-04-01, storage 2022-05-01, resources 2020-06-01)
//! and the official Python SDK's (azure-mgmt-resource: 2025-04-01) are all published ones.

use super::reply::ArmError;
use super::route::Family;

/// Microsoft.Resources: resources.json (resource groups, moves, resource lists) and subscriptions.json.
const RESOURCES: &[&str] = &[
    "2015-11-01",
    "2016-02-01",
    "2016-06-01",
    "2016-07-01",
    "2016-09-01",
    "2017-05-10",
    "2018-02-01",
    "2018-05-01",
    "2019-03-01",
    "2019-05-01",
    "2019-05-10",
    "2019-06-01",
    "2019-07-01",
    "2019-08-01",
    "2019-10-01",
    "2019-11-01",
    "2020-01-01",
    "2020-06-01",
    "2020-08-01",
    "2020-10-01",
    "2021-01-01",
    "2021-04-01",
    "2022-01-01",
    "2022-09-01",
    "2022-12-01",
    "2023-07-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-03-01",
    "2025-04-01",
];

/// Microsoft.Storage: storage.json.
const STORAGE: &[&str] = &[
    "2015-05-01-preview",
    "2015-06-15",
    "2016-01-01",
    "2016-05-01",
    "2016-12-01",
    "2017-06-01",
    "2017-10-01",
    "2018-02-01",
    "2018-03-01-preview",
    "2018-07-01",
    "2018-11-01",
    "2019-04-01",
    "2019-06-01",
    "2020-08-01-preview",
    "2021-01-01",
    "2021-02-01",
    "2021-04-01",
    "2021-06-01",
    "2021-08-01",
    "2021-09-01",
    "2022-05-01",
    "2022-09-01",
    "2023-01-01",
    "2023-04-01",
    "2023-05-01",
    "2024-01-01",
    "2025-01-01",
    "2025-06-01",
];

/// Microsoft.MachineLearningServices: workspaceRP.json / machineLearningServices.json and mfe.json.
const MACHINE_LEARNING: &[&str] = &[
    "2018-03-01-preview",
    "2018-11-19",
    "2019-05-01",
    "2019-06-01",
    "2019-11-01",
    "2020-01-01",
    "2020-02-18-preview",
    "2020-03-01",
    "2020-04-01",
    "2020-04-01-preview",
    "2020-05-01-preview",
    "2020-05-15-preview",
    "2020-06-01",
    "2020-08-01",
    "2020-09-01-preview",
    "2021-01-01",
    "2021-03-01-preview",
    "2021-04-01",
    "2021-07-01",
    "2022-01-01-preview",
    "2022-02-01-preview",
    "2022-05-01",
    "2022-06-01-preview",
    "2022-10-01",
    "2022-10-01-preview",
    "2022-12-01-preview",
    "2023-02-01-preview",
    "2023-04-01",
    "2023-04-01-preview",
    "2023-06-01-preview",
    "2023-08-01-preview",
    "2023-10-01",
    "2024-01-01-preview",
    "2024-04-01",
    "2024-04-01-preview",
    "2024-07-01-preview",
    "2024-10-01",
    "2024-10-01-preview",
    "2025-01-01-preview",
    "2025-04-01",
    "2025-04-01-preview",
    "2025-06-01",
    "2025-07-01-preview",
    "2025-09-01",
    "2025-12-01",
];

/// Microsoft.Authorization: role assignments and role definitions.
const AUTHORIZATION: &[&str] = &[
    "2015-07-01",
    "2018-01-01-preview",
    "2018-09-01-preview",
    "2020-03-01-preview",
    "2020-04-01-preview",
    "2020-08-01-preview",
    "2020-10-01-preview",
    "2022-01-01-preview",
    "2022-04-01",
    "2022-05-01-preview",
];

/// Microsoft.Insights eventtypes (activityLogs_API.json).
const ACTIVITY_LOG: &[&str] = &["2014-04-01", "2015-04-01"];

/// Microsoft.KeyVault vaults.
const KEY_VAULT: &[&str] = &[
    "2015-06-01",
    "2016-10-01",
    "2018-02-14",
    "2019-09-01",
    "2021-04-01-preview",
    "2021-06-01-preview",
    "2021-10-01",
    "2022-07-01",
    "2022-11-01",
    "2023-02-01",
    "2023-07-01",
    "2024-11-01",
];

/// Microsoft.Insights components.
const INSIGHTS: &[&str] = &["2015-05-01", "2018-05-01-preview", "2020-02-02", "2020-02-02-preview"];

/// Microsoft.ContainerRegistry registries.
const CONTAINER_REGISTRY: &[&str] = &[
    "2017-10-01",
    "2019-05-01",
    "2019-12-01-preview",
    "2020-11-01-preview",
    "2021-06-01-preview",
    "2021-08-01-preview",
    "2021-09-01",
    "2021-12-01-preview",
    "2022-02-01-preview",
    "2022-12-01",
    "2023-01-01-preview",
    "2023-06-01-preview",
    "2023-07-01",
    "2023-08-01-preview",
    "2023-11-01-preview",
    "2024-11-01-preview",
    "2025-04-01",
];

/// The published versions of a family (`None`: poll URLs, which echo the originating call's version).
pub(crate) fn published(family: Family) -> Option<&'static [&'static str]> {
    Some(match family {
        Family::Resources => RESOURCES,
        Family::Storage => STORAGE,
        Family::MachineLearning => MACHINE_LEARNING,
        Family::Authorization => AUTHORIZATION,
        Family::ActivityLog => ACTIVITY_LOG,
        Family::KeyVault => KEY_VAULT,
        Family::Insights => INSIGHTS,
        Family::ContainerRegistry => CONTAINER_REGISTRY,
        Family::Poll => return None,
    })
}

fn namespace(family: Family) -> &'static str {
    match family {
        Family::Resources | Family::Poll => "Microsoft.Resources",
        Family::Storage => "Microsoft.Storage",
        Family::MachineLearning => "Microsoft.MachineLearningServices",
        Family::Authorization => "Microsoft.Authorization",
        Family::ActivityLog | Family::Insights => "Microsoft.Insights",
        Family::KeyVault => "Microsoft.KeyVault",
        Family::ContainerRegistry => "Microsoft.ContainerRegistry",
    }
}

fn well_formed(v: &str) -> bool {
    let date = v.get(..10).unwrap_or("");
    let suffix = v.get(10..).unwrap_or("");
    date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() })
        && date.get(5..7).is_some_and(|m| ("01".."13").contains(&m))
        && date.get(8..10).is_some_and(|d| ("01".."32").contains(&d))
        && (suffix.is_empty()
            || (suffix.starts_with('-') && suffix.len() > 1 && suffix[1..].bytes().all(|b| b.is_ascii_alphanumeric())))
}

/// Checks `api-version` as ARM does: missing → `MissingApiVersionParameter`; malformed, or not published for ARM's
/// own types → `InvalidApiVersionParameter`; not published by a resource provider → `NoRegisteredProviderFound`.
pub(crate) fn check(v: Option<&str>, family: Family) -> Result<(), ArmError> {
    let Some(v) = v else {
        return Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let list = published(family);
    let supported = list.map(|l| l.iter().rev().copied().collect::<Vec<_>>().join(",")).unwrap_or_default();
    if !well_formed(v) {
        return Err(ArmError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{supported}'."),
        ));
    }
    let Some(list) = list else {
        return Ok(());
    };
    if list.iter().any(|p| p.eq_ignore_ascii_case(v)) {
        return Ok(());
    }
    Err(match family {
        Family::Resources => ArmError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{supported}'."),
        ),
        _ => ArmError::bad_request(
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for API version '{v}' and namespace '{}'. The supported api-versions are '{supported}'.",
                namespace(family)
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_versions_are_served() {
        assert_eq!(check(None, Family::Storage).unwrap_err().code, "MissingApiVersionParameter");
        assert_eq!(check(Some("2025-13-01"), Family::Storage).unwrap_err().code, "InvalidApiVersionParameter");
        assert_eq!(check(Some("latest"), Family::Storage).unwrap_err().code, "InvalidApiVersionParameter");
        assert_eq!(
            check(Some("2099-01-01-preview"), Family::MachineLearning).unwrap_err().code,
            "NoRegisteredProviderFound"
        );
        assert_eq!(check(Some("2026-01-01"), Family::Storage).unwrap_err().code, "NoRegisteredProviderFound");
        assert_eq!(check(Some("2099-01-01"), Family::Resources).unwrap_err().code, "InvalidApiVersionParameter");
        // The operator's, the recordings' and the Python SDK's versions.
        for (v, f) in [
            ("2025-09-01", Family::MachineLearning),
            ("2024-04-01", Family::MachineLearning),
            ("2025-06-01", Family::Storage),
            ("2022-05-01", Family::Storage),
            ("2025-04-01", Family::Resources),
            ("2020-06-01", Family::Resources),
            ("2022-04-01", Family::Authorization),
            ("2015-04-01", Family::ActivityLog),
        ] {
            assert!(check(Some(v), f).is_ok(), "{v} {f:?}");
        }
        // Poll URLs echo whatever the originating call used.
        assert!(check(Some("2024-04-01"), Family::Poll).is_ok());
    }

    #[test]
    fn api_versions_are_checked_like_arm() {
        assert_eq!(check(None, Family::Storage).unwrap_err().code, "MissingApiVersionParameter");
        assert_eq!(check(Some("2019-01-01"), Family::Storage).unwrap_err().code, "NoRegisteredProviderFound");
        assert!(check(Some("2025-06-01"), Family::Storage).is_ok());
        assert_eq!(
            check(Some("2099-01-01-preview"), Family::MachineLearning).unwrap_err().code,
            "NoRegisteredProviderFound"
        );
    }
}
