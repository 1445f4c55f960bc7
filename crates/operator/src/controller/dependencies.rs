//! A workspace stalled because a dependent resource is missing (`DependencyMissing`) waits for that resource.
//!
//! When the create request fails because the storage account, key vault, Application Insights or container registry
//! does not exist, the controller records which one in `status.missingDependency` ([`find_missing`]: from the ARM
//! error when it names the resource, else one GET per dependency, once). At every stalled requeue of the same
//! generation it then makes one GET of that resource ([`waiting_for`]) and sends the create request again only once
//! it exists; a spec change ends the wait at once.

use tracing::instrument;

use super::plan::Desired;
use crate::api::conditions::{self, reasons};
use crate::api::v1alpha1::{MlWorkspace, MlWorkspaceStatus};
use crate::azure::ids::ResourceId;
use crate::azure::{ArmClient, ArmError, ArmErrorBody};
use crate::reconciler::error::{Disposition, Error, classify};

/// The dependent resources of the desired workspace.
fn dependency_ids(desired: &Desired) -> Vec<&ResourceId> {
    let mut ids = vec![&desired.storage_account, &desired.key_vault];
    ids.extend(desired.application_insights.as_ref());
    ids.extend(desired.container_registry.as_ref());
    ids
}

/// The recorded missing dependency and the stall message, when the workspace is waiting for it: status describes
/// this generation, is Stalled with reason DependencyMissing, and the recorded id is one of the spec's dependencies
/// (an edited status cannot aim the GET anywhere else).
pub fn waiting_for(
    ws: &MlWorkspace,
    desired: &Desired,
    status: Option<&MlWorkspaceStatus>,
) -> Option<(ResourceId, String)> {
    let status = status?;
    if status.observed_generation != ws.metadata.generation || status.pending_operation.is_some() {
        return None;
    }
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::STALLED && c.status == "True" && c.reason == reasons::DEPENDENCY_MISSING)?;
    let recorded = status.missing_dependency.as_deref()?;
    let id = dependency_ids(desired).into_iter().find(|id| id.as_str().eq_ignore_ascii_case(recorded))?;
    Some((id.clone(), stalled.message.clone()))
}

/// Whether `err` stalls the workspace with reason DependencyMissing.
pub fn is_dependency_missing(err: &Error) -> bool {
    matches!(classify(err), Disposition::Stall { reason, .. } if reason == reasons::DEPENDENCY_MISSING)
}

/// The dependency an ARM error names: its `target` (`properties.storageAccount`, ...) or an id in its message or
/// details.
pub fn named_in_error<'a>(desired: &'a Desired, err: &Error) -> Option<&'a ResourceId> {
    let Error::Arm { source, .. } = err else { return None };
    let body = match source.as_ref() {
        ArmError::Api { body, .. } | ArmError::LroFailed { body, .. } => body.as_ref(),
        _ => return None,
    };
    let targets = [
        ("properties.storageAccount", Some(&desired.storage_account)),
        ("properties.keyVault", Some(&desired.key_vault)),
        ("properties.applicationInsights", desired.application_insights.as_ref()),
        ("properties.containerRegistry", desired.container_registry.as_ref()),
    ];
    let mut bodies: Vec<&ArmErrorBody> = vec![body];
    let mut i = 0;
    while i < bodies.len() {
        let b = bodies[i];
        bodies.extend(b.details.iter());
        if let Some(target) = &b.target
            && let Some((_, Some(id))) = targets.iter().find(|(t, _)| t.eq_ignore_ascii_case(target))
        {
            return Some(id);
        }
        let message = b.message.to_ascii_lowercase();
        if let Some(id) =
            dependency_ids(desired).into_iter().find(|id| message.contains(&id.as_str().to_ascii_lowercase()))
        {
            return Some(id);
        }
        i += 1;
    }
    None
}

/// The dependency whose absence made the create request fail: named by the error, else the first that a GET
/// finds missing (once, in the reconcile that failed). `None` when all exist (then the next reconcile tries again).
#[instrument(skip_all)]
pub async fn find_missing(arm: &ArmClient, desired: &Desired, err: &Error) -> Result<Option<ResourceId>, Error> {
    if let Some(id) = named_in_error(desired, err) {
        return Ok(Some(id.clone()));
    }
    for id in dependency_ids(desired) {
        if !arm.dependency_exists(id).await.map_err(Error::arm("read dependent resource"))? {
            return Ok(Some(id.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::MlWorkspaceSpec;

    fn spec() -> MlWorkspaceSpec {
        serde_json::from_value(serde_json::json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333", "resourceGroup": "rg-risk-ml",
            "location": "westeurope", "storageAccount": {"name": "riskmlsa"}, "keyVault": {"name": "risk-ml-kv"},
        }))
        .unwrap()
    }

    fn resource(spec: MlWorkspaceSpec) -> MlWorkspace {
        let mut ws = MlWorkspace::new("fraud-ws", spec);
        ws.metadata.namespace = Some("team-risk".into());
        ws.metadata.uid = Some("11111111-2222-3333-4444-555555555555".into());
        ws.metadata.generation = Some(1);
        ws
    }

    fn arm_error(body: serde_json::Value) -> Error {
        let body: ArmErrorBody = serde_json::from_value(body).unwrap();
        Error::Arm {
            step: "create workspace",
            source: Box::new(ArmError::Api {
                operation: "Workspaces_CreateOrUpdate",
                status: 400,
                body: Box::new(body),
                ids: Default::default(),
                retry_after: None,
            }),
        }
    }

    #[test]
    fn the_error_names_the_missing_dependency() {
        let d = Desired::from_resource(&resource(spec())).unwrap();
        let by_target = arm_error(
            serde_json::json!({"code": "DependentResourceNotFound", "message": "x", "target": "properties.keyVault"}),
        );
        assert_eq!(named_in_error(&d, &by_target), Some(&d.key_vault));
        assert!(is_dependency_missing(&by_target));
        let in_details = arm_error(serde_json::json!({"code": "BadRequest", "message": "failed", "details": [
            {"code": "NotFound", "message": format!("Resource {} was not found", d.storage_account.as_str().to_uppercase())}
        ]}));
        assert_eq!(named_in_error(&d, &in_details), Some(&d.storage_account));
        let neither = arm_error(serde_json::json!({"code": "ResourceNotFound", "message": "something"}));
        assert_eq!(named_in_error(&d, &neither), None);
    }

    #[test]
    fn only_a_current_dependency_stall_of_a_spec_dependency_waits() {
        let ws = resource(spec());
        let d = Desired::from_resource(&ws).unwrap();
        let stalled = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: conditions::STALLED.into(),
            status: "True".into(),
            reason: reasons::DEPENDENCY_MISSING.into(),
            message: "DependentResourceNotFound: ...".into(),
            observed_generation: ws.metadata.generation,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        };
        let status = MlWorkspaceStatus {
            observed_generation: ws.metadata.generation,
            conditions: vec![stalled],
            missing_dependency: Some(d.storage_account.as_str().to_uppercase()),
            ..Default::default()
        };
        let (id, message) = waiting_for(&ws, &d, Some(&status)).unwrap();
        assert_eq!(id, d.storage_account);
        assert!(message.starts_with("DependentResourceNotFound"));
        let newer = MlWorkspaceStatus { observed_generation: Some(0), ..status.clone() };
        assert!(waiting_for(&ws, &d, Some(&newer)).is_none(), "a spec change ends the wait");
        let elsewhere = MlWorkspaceStatus {
            missing_dependency: Some("/subscriptions/0b1f6471-1bf0-4dda-aec3-999999999999/resourceGroups/x/providers/Microsoft.Storage/storageAccounts/y".into()),
            ..status.clone()
        };
        assert!(waiting_for(&ws, &d, Some(&elsewhere)).is_none(), "only the spec's own dependencies are read");
        let ready = MlWorkspaceStatus { conditions: Vec::new(), ..status };
        assert!(waiting_for(&ws, &d, Some(&ready)).is_none());
    }
}
