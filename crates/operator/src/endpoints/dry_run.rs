//! `azml-operator plan` for an MlOnlineEndpoint: the same workspace wait, policy check, observe (reads only) and
//! plan as a reconcile, without a write.

use kube::{Client, ResourceExt};

use super::plan::{self, Action};
use crate::api::conditions::Reason;
use crate::api::v1alpha1::MlOnlineEndpoint;
use crate::policy::Grantor;
use crate::reconciler::binding::{self, Ask, Place, Verdict};
use crate::reconciler::credentials::CredentialCache;
use crate::reconciler::error::Error;
use crate::reconciler::{ControllerConfig, parent};

/// What the controller would do for an endpoint right now.
pub type DryRun = crate::reconciler::plan::DryRun<Action>;

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::CreateEndpoint(_) => write!(f, "create the online endpoint (OnlineEndpoints_CreateOrUpdate)"),
            Action::UpdateEndpoint { traffic_changed: true, body } => {
                let traffic = body.properties.traffic.clone().unwrap_or_default();
                let split: Vec<String> = traffic.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "set the traffic to {{{}}} (OnlineEndpoints_CreateOrUpdate)", split.join(", "))
            }
            Action::UpdateEndpoint { .. } => {
                write!(f, "update the endpoint's properties (OnlineEndpoints_CreateOrUpdate)")
            }
            Action::PutDeployment { name, create: true, .. } => {
                write!(f, "create deployment {name} (OnlineDeployments_CreateOrUpdate)")
            }
            Action::PutDeployment { name, .. } => {
                write!(f, "update deployment {name} (OnlineDeployments_CreateOrUpdate)")
            }
            Action::DeleteDeployment { name } => write!(f, "delete deployment {name} (OnlineDeployments_Delete)"),
        }
    }
}

/// The plan for `ep` (reads only: the workspace, the bindings, the endpoint and its deployments).
pub async fn dry_run(client: &Client, config: &ControllerConfig, ep: &MlOnlineEndpoint) -> Result<DryRun, Error> {
    let ws = parent::get_workspace(client, ep).await?;
    let Some(ws) = ws.filter(parent::workspace_ready) else {
        let message = format!("MlWorkspace {} is not Ready", ep.spec.workspace_ref.name);
        return Ok(DryRun::blocked(Reason::WorkspaceNotReady, message));
    };
    let (ep_ref, desired) = match super::desired(ep, &ws) {
        Ok(d) => d,
        Err(invalid) => return Ok(DryRun::blocked(Reason::InvalidSpec, invalid.to_string())),
    };
    let access_entries: Vec<_> = ep.spec.access.iter().map(|a| a.as_resource_entry()).collect();
    let assets = crate::policy::resources::endpoint_asset_uses(&ep.spec);
    let namespace = ws.namespace().unwrap_or_default();
    let ask = Ask {
        namespace: &namespace,
        place: Place::of(&ws.spec),
        workspace: &ws.spec,
        access: &access_entries,
        grantor: Grantor::Endpoint,
        extra: &assets,
    };
    let arm = match binding::authorize(client, &CredentialCache::default(), config, &ask, |_| Ok(())).await? {
        Verdict::Permitted { arm, .. } => arm,
        Verdict::Denied(message) => return Ok(DryRun::blocked(Reason::NotPermitted, message)),
    };
    let observed = super::observe(&arm, &ep_ref, &desired, ep.status.as_ref()).await?;
    Ok(DryRun::Planned(plan::plan(&desired, &observed)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::azure::online_endpoints::OnlineEndpoint;

    fn endpoint() -> MlOnlineEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlOnlineEndpoint",
            "metadata": {"name": "scoring", "namespace": "team-a"},
            "spec": {"workspaceRef": {"name": "fraud"}},
        }))
        .expect("endpoint")
    }

    #[test]
    fn actions_read_as_sentences_naming_the_arm_operation() {
        let body: OnlineEndpoint = serde_json::from_value(
            json!({"location": "westeurope", "properties": {"authMode": "Key", "traffic": {"blue": 90, "green": 10}}}),
        )
        .expect("body");
        let traffic = Action::UpdateEndpoint { body: Box::new(body), traffic_changed: true };
        assert_eq!(traffic.to_string(), "set the traffic to {blue=90, green=10} (OnlineEndpoints_CreateOrUpdate)");
        let delete = Action::DeleteDeployment { name: "blue".into() };
        assert_eq!(delete.to_string(), "delete deployment blue (OnlineDeployments_Delete)");
        let planned = DryRun::Planned(plan::Plan {
            actions: vec![delete],
            waiting: vec!["deployment green is Creating".into()],
            stall: None,
        });
        assert_eq!(
            planned.render(&endpoint()),
            "MlOnlineEndpoint team-a/scoring:\n  1. delete deployment blue (OnlineDeployments_Delete)\n  waiting: deployment green is Creating\n"
        );
        let blocked = DryRun::blocked(Reason::WorkspaceNotReady, "MlWorkspace fraud is not Ready");
        assert!(blocked.render(&endpoint()).contains("blocked (WorkspaceNotReady)"));
    }
}
