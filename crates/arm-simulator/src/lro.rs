//! How each long-running operation is announced and polled, shaped after the recorded traffic
//! (`/work/shared/azure/recordings/`) and the swaggers' LRO headers.
//!
//! | operation | first answer | status monitor | result monitor (`Location`) |
//! |---|---|---|---|
//! | workspace PUT/PATCH/DELETE/resyncKeys | 202, both headers, `Retry-After` | `workspaceOperationsStatus/{id}?type=async`: `{status, percentComplete}` | `...?type=location`: 202 while running, 200 + workspace (PUT/PATCH/resync) or 200 empty (DELETE) |
//! | endpoint/deployment PUT | 201/200 + body, `Azure-AsyncOperation` (`mfeOperationsStatus`), `Location` = the resource | `{id, name, status, startTime, endTime, percentComplete}` | GET of the resource |
//! | endpoint PATCH/DELETE/regenerateKeys, deployment PATCH/DELETE | 202, `Location` (`mfeOperationResults`), `Retry-After` | (regenerateKeys also `Azure-AsyncOperation`) | 202 while running, 200 (+ body for PATCH) |
//! | storage account create | 202 + `Location` (`asyncoperations`), `Retry-After` | - | 202 while running, 200 + account |
//! | resource group delete, (validate)moveResources | 202 + `Location` (`/subscriptions/{sub}/operationresults/{id}`) | - | 202 (same Location) while running; 200 empty (RG delete), 204 (valid move / moved) |

use serde::{Deserialize, Serialize};

/// Poll-URL family and answer shapes of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PollStyle {
    /// `Microsoft.MachineLearningServices/locations/{loc}/workspaceOperationsStatus/{id}?type=async|location`.
    MlWorkspace,
    /// Online endpoint/deployment PUT: `mfeOperationsStatus` + the resource's own URL as `Location`.
    MfeCreate,
    /// Other online endpoint/deployment operations: `mfeOperationResults` (`Location`), `mfeOperationsStatus`.
    MfeAction,
    /// `Microsoft.Storage/locations/{loc}/asyncoperations/{id}?monitor=true`.
    Storage,
    /// Azure ML computes (workspaceRP.json): create/update/start/stop/restart announce `Azure-AsyncOperation`,
    /// delete also `Location`; polled on the generic operation URLs.
    MlCompute,
    /// ARM's own `/subscriptions/{sub}/operationresults/{id}` (resource group delete, moves).
    ArmOperationResults,
    /// `{ns}/locations/global/operationResults|operationStatuses/{id}` (anything else).
    #[default]
    Generic,
}

impl PollStyle {
    /// The style of the operation `op` (swagger operationId) starts.
    pub fn of(op: &str) -> Self {
        match op {
            "Workspaces_CreateOrUpdate" | "Workspaces_Update" | "Workspaces_Delete" | "Workspaces_ResyncKeys" => {
                Self::MlWorkspace
            }
            "OnlineEndpoints_CreateOrUpdate" | "OnlineDeployments_CreateOrUpdate" => Self::MfeCreate,
            o if o.starts_with("OnlineEndpoints_") || o.starts_with("OnlineDeployments_") => Self::MfeAction,
            "StorageAccounts_Create" => Self::Storage,
            o if o.starts_with("Compute_") => Self::MlCompute,
            "ResourceGroups_Delete" | "Resources_MoveResources" | "Resources_ValidateMoveResources" => {
                Self::ArmOperationResults
            }
            _ => Self::Generic,
        }
    }

    /// The `Retry-After` Azure sends with this style's 202s and running polls, in seconds, before time scaling;
    /// `None` where the recordings show none.
    ///
    /// ML workspace and MFE action operations: the swaggers declare `Retry-After` (10..600 s) on their 202s; the
    /// lower bound is used. Storage: 17 s, what the storage RP sends on account creation (general knowledge of its
    /// recordings, not in the pack). Resource group delete / moves and MFE creates: the recordings carry none.
    pub fn retry_after_base(self) -> Option<u64> {
        match self {
            Self::MlWorkspace | Self::MfeAction | Self::MlCompute => Some(10),
            Self::Storage => Some(17),
            Self::Generic => Some(10),
            Self::MfeCreate | Self::ArmOperationResults => None,
        }
    }
}

/// `Retry-After` seconds for a base value: `fixed` when configured (0 allowed only then), else the base scaled by
/// `time_scale`, rounded up, never below 1.
pub fn scaled_retry_after(base: u64, time_scale: f64, fixed: Option<u64>) -> u64 {
    if let Some(f) = fixed {
        return f;
    }
    let scaled = (base as f64 * time_scale.max(0.0)).ceil();
    if scaled.is_finite() && scaled >= 1.0 { scaled as u64 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_scaled_but_never_zero_unless_fixed() {
        assert_eq!(scaled_retry_after(10, 1.0, None), 10);
        assert_eq!(scaled_retry_after(10, 0.5, None), 5);
        assert_eq!(scaled_retry_after(10, 0.01, None), 1);
        assert_eq!(scaled_retry_after(10, 0.0, None), 1);
        assert_eq!(scaled_retry_after(600, 0.25, None), 150);
        assert_eq!(scaled_retry_after(10, 0.01, Some(0)), 0);
    }

    #[test]
    fn styles_follow_the_operation() {
        assert_eq!(PollStyle::of("Workspaces_ResyncKeys"), PollStyle::MlWorkspace);
        assert_eq!(PollStyle::of("OnlineDeployments_CreateOrUpdate"), PollStyle::MfeCreate);
        assert_eq!(PollStyle::of("OnlineEndpoints_RegenerateKeys"), PollStyle::MfeAction);
        assert_eq!(PollStyle::of("ResourceGroups_Delete"), PollStyle::ArmOperationResults);
        assert_eq!(PollStyle::of("StorageAccounts_Create"), PollStyle::Storage);
    }
}
