//! Shared set-up of the integration tests that run the controller against both emulators: the CRDs, namespaces and
//! the operator's client-secret credential and SubscriptionBinding, and the simulated cloud.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use azml_operator::api::v1alpha1::SubscriptionBinding;
use azml_operator::azure::AzureCloud;
use azml_operator::sandbox::arm::{RunningSim, World};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::runtime::wait::{await_condition, conditions as kube_conditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Name of the Secret holding the operator's client secret, and of the binding that names it.
pub const OPERATOR_SECRET: &str = "operator-sp";

/// Creates the CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client, crds: Vec<CustomResourceDefinition>) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.name_any();
        api.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(5),
            await_condition(api.clone(), &name, kube_conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} not established: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Creates namespaces.
pub async fn create_namespaces(client: &Client, names: &[&str]) {
    for name in names {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    }
}

/// The operator's client secret in `operator_ns`, and the binding `sandbox` that lets `namespaces` use the world's
/// subscription in resource groups `rg-*`; `limits` adds spec fields (allowedRoles, allowedScopes, ...).
pub async fn seed_operator_binding(
    client: &Client,
    world: &World,
    operator_ns: &str,
    namespaces: &[&str],
    limits: Value,
) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": OPERATOR_SECRET},
        "stringData": {"clientSecret": world.operator.secret.expose()},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), operator_ns).create(&PostParams::default(), &secret).await.unwrap();
    let mut spec = json!({
        "subscriptionId": world.subscription_id,
        "tenantId": world.tenant_id,
        "credential": {"clientSecret": {
            "clientId": world.operator.client_id,
            "secretRef": {"name": OPERATOR_SECRET, "key": "clientSecret"},
        }},
        "namespaces": namespaces,
        "resourceGroups": ["rg-*"],
    });
    if let (Some(spec), Some(limits)) = (spec.as_object_mut(), limits.as_object()) {
        spec.extend(limits.clone());
    }
    let binding: SubscriptionBinding = serde_json::from_value(json!({
        "apiVersion": "azml.dev/v1alpha1",
        "kind": "SubscriptionBinding",
        "metadata": {"name": "sandbox"},
        "spec": spec,
    }))
    .unwrap();
    Api::<SubscriptionBinding>::all(client.clone()).create(&PostParams::default(), &binding).await.unwrap();
}

/// The simulated cloud: ARM and the authority on the simulator, its CA trusted.
pub fn sim_cloud(sim: &RunningSim) -> AzureCloud {
    AzureCloud::custom(&sim.endpoint, &sim.endpoint)
        .and_then(|c| c.with_extra_root_ca_pem(sim.ca_pem.clone()))
        .unwrap_or_else(|e| panic!("cloud: {e}"))
}
