//! Unit tests of the endpoint plan.

use super::*;

const OWNER: &str = "team-a/scoring/uid-1";

fn dep(name: &str, model: &str, count: i64) -> DesiredDeployment {
    DesiredDeployment {
        name: name.into(),
        model: model.into(),
        instance_type: "Standard_DS3_v2".into(),
        instance_count: count,
        environment: None,
        description: None,
    }
}

fn traffic(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn desired(deployments: Vec<DesiredDeployment>, t: &[(&str, i64)]) -> DesiredEndpoint {
    DesiredEndpoint {
        location: "westeurope".into(),
        auth_mode: EndpointAuthMode::Key,
        description: None,
        public_network_access: PublicNetworkAccess::Enabled,
        deployments,
        traffic: normalize_traffic(&traffic(t)),
        owner: OWNER.into(),
    }
}

/// The endpoint as Azure reports it after our PUT, in `state`, with `t`.
fn azure_endpoint(d: &DesiredEndpoint, state: ProvisioningState, t: &[(&str, i64)]) -> OnlineEndpoint {
    let mut ep = endpoint_body(d, &traffic(t));
    ep.properties.provisioning_state = Some(state);
    ep.properties.scoring_uri = Some("https://scoring.westeurope.inference.ml.azure.com/score".into());
    ep
}

fn azure_deployment(d: &DesiredEndpoint, dd: &DesiredDeployment, state: ProvisioningState) -> OnlineDeployment {
    let mut o = deployment_body(d, dd);
    o.properties.provisioning_state = Some(state);
    o
}

fn observed(ep: Option<OnlineEndpoint>, deps: Vec<(&str, OnlineDeployment)>) -> ObservedEndpoint {
    ObservedEndpoint { endpoint: ep, deployments: deps.into_iter().map(|(n, d)| (n.to_owned(), d)).collect() }
}

fn put_names(plan: &Plan) -> Vec<(String, bool)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::PutDeployment { name, create, .. } => Some((name.clone(), *create)),
            _ => None,
        })
        .collect()
}

fn endpoint_traffic(plan: &Plan) -> Option<BTreeMap<String, i64>> {
    plan.actions.iter().find_map(|a| match a {
        Action::UpdateEndpoint { body, .. } | Action::CreateEndpoint(body) => body.properties.traffic.clone(),
        _ => None,
    })
}

#[test]
fn a_missing_endpoint_is_created_first_without_traffic() {
    let d = desired(vec![dep("blue", "azureml:m:1", 1)], &[("blue", 100)]);
    let plan = plan(&d, &observed(None, vec![]));
    assert_eq!(plan.actions.len(), 1);
    let Action::CreateEndpoint(body) = &plan.actions[0] else { panic!("{plan:?}") };
    assert_eq!(body.properties.traffic, Some(BTreeMap::new()));
    assert_eq!(body.properties.auth_mode, "Key");
    assert_eq!(body.tags.as_ref().and_then(|t| t.get(OWNER_TAG)).map(String::as_str), Some(OWNER));
    assert!(!plan.converged());
}

#[test]
fn a_busy_endpoint_is_waited_for_without_writes() {
    let d = desired(vec![dep("blue", "azureml:m:1", 1)], &[("blue", 100)]);
    for state in [ProvisioningState::Creating, ProvisioningState::Updating, ProvisioningState::Deleting] {
        let plan = plan(&d, &observed(Some(azure_endpoint(&d, state, &[])), vec![]));
        assert!(plan.actions.is_empty(), "{plan:?}");
        assert_eq!(plan.waiting.len(), 1);
    }
}

#[test]
fn an_endpoint_created_by_someone_else_stalls() {
    let d = desired(vec![], &[]);
    let mut ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[]);
    ep.tags = None;
    let plan = plan(&d, &observed(Some(ep), vec![]));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.stall.as_ref().map(|s| s.0), Some(Reason::AlreadyExists));
}

#[test]
fn deployments_are_created_and_traffic_waits_for_them() {
    let d =
        desired(vec![dep("blue", "azureml:m:1", 1), dep("green", "azureml:m:2", 1)], &[("blue", 90), ("green", 10)]);
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[]);
    let plan = plan(&d, &observed(Some(ep.clone()), vec![]));
    assert_eq!(put_names(&plan), [("blue".to_owned(), true), ("green".to_owned(), true)]);
    assert_eq!(endpoint_traffic(&plan), None, "no traffic to deployments that do not exist yet");
    assert!(plan.waiting.iter().any(|w| w.contains("traffic waits")), "{plan:?}");

    // One ready, one still creating: still no traffic.
    let blue = azure_deployment(&d, &d.deployments[0], ProvisioningState::Succeeded);
    let green = azure_deployment(&d, &d.deployments[1], ProvisioningState::Creating);
    let p = super::plan(&d, &observed(Some(ep.clone()), vec![("blue", blue.clone()), ("green", green)]));
    assert!(p.actions.is_empty(), "{p:?}");

    // Both ready: the traffic is set in one endpoint PUT.
    let green = azure_deployment(&d, &d.deployments[1], ProvisioningState::Succeeded);
    let p = super::plan(&d, &observed(Some(ep), vec![("blue", blue.clone()), ("green", green.clone())]));
    assert_eq!(p.actions.len(), 1);
    assert_eq!(endpoint_traffic(&p), Some(traffic(&[("blue", 90), ("green", 10)])));
    assert!(matches!(&p.actions[0], Action::UpdateEndpoint { traffic_changed: true, .. }));

    // Converged: no writes.
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 90), ("green", 10)]);
    let p = super::plan(&d, &observed(Some(ep), vec![("blue", blue), ("green", green)]));
    assert!(p.converged(), "{p:?}");
}

#[test]
fn zero_entries_and_the_long_model_id_are_not_differences() {
    let d = desired(vec![dep("blue", "azureml:fraud-model:3", 2), dep("green", "azureml:m:1", 1)], &[("blue", 100)]);
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 100), ("green", 0)]);
    let mut blue = azure_deployment(&d, &d.deployments[0], ProvisioningState::Succeeded);
    blue.properties.model = Some(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/models/fraud-model/versions/3".into(),
    );
    let green = azure_deployment(&d, &d.deployments[1], ProvisioningState::Succeeded);
    let p = plan(&d, &observed(Some(ep), vec![("blue", blue), ("green", green)]));
    assert!(p.converged(), "{p:?}");
    assert!(same_asset("azureml:m:1", "azureml:M:1"));
    assert!(!same_asset("azureml:fraud-model:3", ".../models/fraud-model/versions/4"));
    assert!(!same_asset("azureml:a:1", "azureml:b:1"));
}

#[test]
fn a_changed_deployment_is_updated_and_its_traffic_waits() {
    let d = desired(vec![dep("blue", "azureml:m:2", 3)], &[("blue", 100)]);
    let old = desired(vec![dep("blue", "azureml:m:1", 1)], &[("blue", 100)]);
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 100)]);
    let blue = azure_deployment(&old, &old.deployments[0], ProvisioningState::Succeeded);
    let p = plan(&d, &observed(Some(ep), vec![("blue", blue)]));
    assert_eq!(put_names(&p), [("blue".to_owned(), false)]);
    let Action::PutDeployment { body, .. } = &p.actions[0] else { panic!() };
    assert_eq!(body.sku.as_ref().and_then(|s| s.capacity), Some(3));
    assert_eq!(body.properties.model.as_deref(), Some("azureml:m:2"));
    assert_eq!(endpoint_traffic(&p), None);
}

#[test]
fn a_removed_deployment_loses_its_traffic_before_it_is_deleted() {
    let d = desired(vec![dep("green", "azureml:m:2", 1)], &[("green", 100)]);
    let old = desired(vec![dep("blue", "azureml:m:1", 1), dep("green", "azureml:m:2", 1)], &[]);
    let blue = azure_deployment(&old, &old.deployments[0], ProvisioningState::Succeeded);
    let green = azure_deployment(&old, &old.deployments[1], ProvisioningState::Succeeded);

    // blue has 90 %: first the traffic moves; no delete in the same pass.
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 90), ("green", 10)]);
    let p = plan(&d, &observed(Some(ep), vec![("blue", blue.clone()), ("green", green.clone())]));
    assert_eq!(endpoint_traffic(&p), Some(traffic(&[("green", 100)])));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::DeleteDeployment { .. })), "{p:?}");

    // Endpoint still updating: wait.
    let ep = azure_endpoint(&d, ProvisioningState::Updating, &[("green", 100)]);
    let p = plan(&d, &observed(Some(ep), vec![("blue", blue.clone()), ("green", green.clone())]));
    assert!(p.actions.is_empty());

    // Traffic moved: blue is deleted.
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 0), ("green", 100)]);
    let p = plan(&d, &observed(Some(ep.clone()), vec![("blue", blue.clone()), ("green", green.clone())]));
    assert_eq!(p.actions, [Action::DeleteDeployment { name: "blue".into() }]);

    // A deployment someone else made is never deleted.
    let mut foreign = blue;
    foreign.tags = None;
    let p = plan(&d, &observed(Some(ep), vec![("blue", foreign), ("green", green)]));
    assert!(p.converged(), "{p:?}");
}

#[test]
fn traffic_to_a_new_deployment_waits_so_the_old_one_keeps_serving() {
    // blue → green swap: green is created, blue keeps 100 % until green is ready, then blue is removed.
    let d = desired(vec![dep("green", "azureml:m:2", 1)], &[("green", 100)]);
    let old = desired(vec![dep("blue", "azureml:m:1", 1)], &[]);
    let blue = azure_deployment(&old, &old.deployments[0], ProvisioningState::Succeeded);
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 100)]);
    let p = plan(&d, &observed(Some(ep), vec![("blue", blue)]));
    assert_eq!(put_names(&p), [("green".to_owned(), true)]);
    assert_eq!(endpoint_traffic(&p), None);
    assert!(!p.actions.iter().any(|a| matches!(a, Action::DeleteDeployment { .. })));
}

#[test]
fn failed_provisioning_stalls_until_the_spec_changes() {
    let d = desired(vec![dep("blue", "azureml:m:1", 1)], &[("blue", 100)]);
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[]);
    let blue = azure_deployment(&d, &d.deployments[0], ProvisioningState::Failed);
    let p = plan(&d, &observed(Some(ep.clone()), vec![("blue", blue.clone())]));
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(p.stall.as_ref().map(|s| s.0), Some(Reason::ProvisioningFailed));
    assert!(p.stall.as_ref().is_some_and(|(_, message)| message.contains("blue")), "{p:?}");

    // A changed spec retries with a PUT.
    let d2 = desired(vec![dep("blue", "azureml:m:1", 2)], &[("blue", 100)]);
    let p = plan(&d2, &observed(Some(ep), vec![("blue", blue)]));
    assert_eq!(put_names(&p), [("blue".to_owned(), false)]);
    assert!(p.stall.is_none());

    // A failed endpoint with the declared body stalls too.
    let ep = azure_endpoint(&d, ProvisioningState::Failed, &[]);
    let p = plan(&d, &observed(Some(ep), vec![]));
    assert!(p.actions.is_empty());
    assert_eq!(p.stall.as_ref().map(|s| s.0), Some(Reason::ProvisioningFailed));
}

#[test]
fn changed_endpoint_properties_are_put_with_the_current_traffic() {
    let mut d =
        desired(vec![dep("blue", "azureml:m:1", 1), dep("green", "azureml:m:2", 1)], &[("blue", 50), ("green", 50)]);
    let blue = azure_deployment(&d, &d.deployments[0], ProvisioningState::Succeeded);
    let green = azure_deployment(&d, &d.deployments[1], ProvisioningState::Creating);
    let ep = azure_endpoint(&d, ProvisioningState::Succeeded, &[("blue", 100)]);
    d.public_network_access = PublicNetworkAccess::Disabled;
    let p = plan(&d, &observed(Some(ep), vec![("blue", blue), ("green", green)]));
    let Some(Action::UpdateEndpoint { body, traffic_changed }) = p.actions.first() else { panic!("{p:?}") };
    assert!(!traffic_changed);
    assert_eq!(body.properties.public_network_access.as_deref(), Some("Disabled"));
    assert_eq!(body.properties.traffic, Some(traffic(&[("blue", 100)])), "green is not ready: blue keeps it");
}
