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
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DryRun {
    /// Nothing can be planned: the reason and message the endpoint would wait or stall with.
    Blocked {
        /// Reason constant.
        reason: Reason,
        /// Message.
        message: String,
    },
    /// The writes the controller would make, what it would wait for, and the stall it would report.
    Planned {
        /// Writes, in order, as sentences naming the ARM operation.
        actions: Vec<String>,
        /// What is in progress in Azure or waits for it (no write needed now).
        waiting: Vec<String>,
        /// (reason, message).
        stall: Option<(String, String)>,
    },
}

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
        return Ok(DryRun::Blocked {
            reason: Reason::WorkspaceNotReady,
            message: format!("MlWorkspace {} is not Ready", ep.spec.workspace_ref.name),
        });
    };
    let (ep_ref, desired) = match super::desired(ep, &ws) {
        Ok(d) => d,
        Err(invalid) => return Ok(DryRun::Blocked { reason: Reason::InvalidSpec, message: invalid.to_string() }),
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
        Verdict::Denied(message) => return Ok(DryRun::Blocked { reason: Reason::NotPermitted, message }),
    };
    let observed = super::observe(&arm, &ep_ref, &desired, ep.status.as_ref()).await?;
    let plan = plan::plan(&desired, &observed);
    Ok(DryRun::Planned {
        actions: plan.actions.iter().map(ToString::to_string).collect(),
        waiting: plan.waiting,
        stall: plan.stall.map(|(r, m)| (r.to_string(), m)),
    })
}

/// The human-readable plan of an endpoint.
pub fn render(ep: &MlOnlineEndpoint, result: &DryRun) -> String {
    let mut out = format!("MlOnlineEndpoint {}/{}:\n", ep.namespace().unwrap_or_default(), ep.name_any());
    match result {
        DryRun::Blocked { reason, message } => out.push_str(&format!("  blocked ({reason}): {message}\n")),
        DryRun::Planned { actions, waiting, stall } => {
            if actions.is_empty() && waiting.is_empty() && stall.is_none() {
                out.push_str("  no changes: Azure matches the spec\n");
            }
            for (i, action) in actions.iter().enumerate() {
                out.push_str(&format!("  {}. {action}\n", i + 1));
            }
            for w in waiting {
                out.push_str(&format!("  waiting: {w}\n"));
            }
            if let Some((reason, message)) = stall {
                out.push_str(&format!("  stalled ({reason}): {message}\n"));
            }
        }
    }
    out
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
        let planned = DryRun::Planned {
            actions: vec![delete.to_string()],
            waiting: vec!["deployment green is Creating".into()],
            stall: None,
        };
        assert_eq!(
            render(&endpoint(), &planned),
            "MlOnlineEndpoint team-a/scoring:\n  1. delete deployment blue (OnlineDeployments_Delete)\n  waiting: deployment green is Creating\n"
        );
        let blocked =
            DryRun::Blocked { reason: Reason::WorkspaceNotReady, message: "MlWorkspace fraud is not Ready".into() };
        assert!(render(&endpoint(), &blocked).contains("blocked (WorkspaceNotReady)"));
    }
}
