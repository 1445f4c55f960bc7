//! Pure planning of an online endpoint: desired state (from the spec) and observed state (from Azure) in, the
//! actions to take now out. No I/O, so every rule is a unit test.
//!
//! Rules, in order:
//! - the endpoint comes first: absent → create it (without traffic); being provisioned → wait; not tagged as ours
//!   → stall (`AlreadyExists`); failed with the body we want → stall (a changed spec retries);
//! - deployments: absent → create; different → update (PUT); being provisioned → wait; failed with the body we
//!   want → reported failed;
//! - traffic is set (one PUT of the endpoint, together with changed endpoint properties) only when every deployment
//!   it sends traffic to is `Succeeded` and not being changed by this plan;
//! - a deployment no longer declared (and tagged as ours) is deleted only once Azure routes no traffic to it, and
//!   never in the same pass as an endpoint PUT (Azure serialises operations on an endpoint);
//! - nothing differs → no action: steady state makes no write.

use std::collections::BTreeMap;

use crate::api::conditions::Reason;
use crate::api::v1alpha1::{EndpointAuthMode, OWNER_TAG, PublicNetworkAccess};
use crate::azure::models::{ManagedServiceIdentity, ProvisioningState, Sku, Tags};
use crate::azure::online_endpoints::{
    OnlineDeployment, OnlineDeploymentProperties, OnlineEndpoint, OnlineEndpointProperties,
};

/// One declared deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredDeployment {
    /// Name (validated).
    pub name: String,
    /// Model asset.
    pub model: String,
    /// VM size.
    pub instance_type: String,
    /// Instance count.
    pub instance_count: i64,
    /// Environment asset.
    pub environment: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// What the spec asks of Azure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredEndpoint {
    /// Location (the workspace's).
    pub location: String,
    /// Auth mode.
    pub auth_mode: EndpointAuthMode,
    /// Description.
    pub description: Option<String>,
    /// Public network access.
    pub public_network_access: PublicNetworkAccess,
    /// Deployments, in spec order.
    pub deployments: Vec<DesiredDeployment>,
    /// Traffic without zero entries.
    pub traffic: BTreeMap<String, i64>,
    /// Value of the owner tag (`<namespace>/<name>/<uid>`).
    pub owner: String,
}

/// What Azure holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedEndpoint {
    /// The endpoint, when it exists.
    pub endpoint: Option<OnlineEndpoint>,
    /// The deployments found (declared ones, ones the status lists, ones the traffic names), by name.
    pub deployments: BTreeMap<String, OnlineDeployment>,
}

/// One step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// PUT the endpoint (create).
    CreateEndpoint(Box<OnlineEndpoint>),
    /// PUT the endpoint (changed properties and/or traffic).
    UpdateEndpoint {
        /// The body.
        body: Box<OnlineEndpoint>,
        /// Whether the traffic changes (for events).
        traffic_changed: bool,
    },
    /// PUT a deployment.
    PutDeployment {
        /// Deployment name.
        name: String,
        /// The body.
        body: Box<OnlineDeployment>,
        /// Whether it is new.
        create: bool,
    },
    /// DELETE a deployment no longer declared.
    DeleteDeployment {
        /// Deployment name.
        name: String,
    },
}

/// The endpoint's plan: THE plan shape ([`crate::reconciler::plan::Plan`]) of its actions.
pub type Plan = crate::reconciler::plan::Plan<Action>;

impl crate::reconciler::plan::PlanAction for Action {}

fn state(p: Option<&ProvisioningState>) -> ProvisioningState {
    p.cloned().unwrap_or(ProvisioningState::Succeeded)
}

fn state_name(p: &ProvisioningState) -> String {
    serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{p:?}"))
}

fn is_busy(p: &ProvisioningState) -> bool {
    !p.is_terminal()
}

fn is_failed(p: &ProvisioningState) -> bool {
    matches!(p, ProvisioningState::Failed | ProvisioningState::Canceled)
}

fn owned(tags: Option<&Tags>, owner: &str) -> bool {
    tags.and_then(crate::api::v1alpha1::owner_tag_value).is_some_and(|v| v == owner)
}

/// The traffic map without zero entries (Azure lists deployments at 0 %; the spec may omit them).
pub fn normalize_traffic(traffic: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    traffic.iter().filter(|(_, v)| **v != 0).map(|(k, v)| (k.clone(), *v)).collect()
}

/// Whether two asset references name the same asset: equal (case-insensitive), or the short form
/// `azureml:<name>:<version>` against the full id `.../models/<name>/versions/<version>` Azure may report back.
pub fn same_asset(desired: &str, observed: &str) -> bool {
    if desired.eq_ignore_ascii_case(observed) {
        return true;
    }
    let short = |s: &str| -> Option<(String, String)> {
        let rest = s.strip_prefix("azureml:")?;
        let (name, version) = rest.rsplit_once(':')?;
        Some((name.to_ascii_lowercase(), version.to_ascii_lowercase()))
    };
    let long = |s: &str| -> Option<(String, String)> {
        let lower = s.to_ascii_lowercase();
        let mut it = lower.rsplit('/');
        let (version, versions, name) = (it.next()?, it.next()?, it.next()?);
        (versions == "versions").then(|| (name.to_owned(), version.to_owned()))
    };
    match (short(desired), long(observed)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The owner tag value of a resource.
pub fn owner_tags(owner: &str) -> Tags {
    let mut tags = Tags::new();
    tags.insert(OWNER_TAG.to_owned(), owner.to_owned());
    tags
}

/// The endpoint body for `desired` with `traffic`.
pub fn endpoint_body(desired: &DesiredEndpoint, traffic: &BTreeMap<String, i64>) -> OnlineEndpoint {
    OnlineEndpoint {
        location: desired.location.clone(),
        tags: Some(owner_tags(&desired.owner)),
        identity: Some(ManagedServiceIdentity { type_: "SystemAssigned".into(), ..Default::default() }),
        properties: OnlineEndpointProperties {
            auth_mode: desired.auth_mode.as_str().to_owned(),
            description: desired.description.clone(),
            traffic: Some(traffic.clone()),
            public_network_access: Some(desired.public_network_access.as_str().to_owned()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The deployment body for `d`.
pub fn deployment_body(desired: &DesiredEndpoint, d: &DesiredDeployment) -> OnlineDeployment {
    OnlineDeployment {
        location: desired.location.clone(),
        tags: Some(owner_tags(&desired.owner)),
        sku: Some(Sku { name: "Default".into(), capacity: Some(d.instance_count), ..Default::default() }),
        properties: OnlineDeploymentProperties {
            endpoint_compute_type: "Managed".into(),
            model: Some(d.model.clone()),
            instance_type: Some(d.instance_type.clone()),
            description: d.description.clone(),
            environment_id: d.environment.clone(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether the endpoint's mutable properties differ from the spec.
fn endpoint_differs(desired: &DesiredEndpoint, ep: &OnlineEndpoint) -> bool {
    let p = &ep.properties;
    let pna = p.public_network_access.as_deref().unwrap_or("Enabled");
    (desired.description.is_some() && p.description != desired.description)
        || !pna.eq_ignore_ascii_case(desired.public_network_access.as_str())
}

/// Whether a deployment differs from its declaration.
fn deployment_differs(d: &DesiredDeployment, o: &OnlineDeployment) -> bool {
    let p = &o.properties;
    let capacity = o.sku.as_ref().and_then(|s| s.capacity).unwrap_or(1);
    !p.model.as_deref().is_some_and(|m| same_asset(&d.model, m))
        || !p.instance_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(&d.instance_type))
        || capacity != d.instance_count
        || match (&d.environment, &p.environment_id) {
            (None, _) => false,
            (Some(want), Some(have)) => !same_asset(want, have),
            (Some(_), None) => true,
        }
        || (d.description.is_some() && p.description != d.description)
}

/// The plan. Pure; see the module docs for the rules.
pub fn plan(desired: &DesiredEndpoint, observed: &ObservedEndpoint) -> Plan {
    let mut plan = Plan::default();
    // Deployments that failed to provision with the declared body: a stall once nothing else is to be done.
    let mut failed_deployments: Vec<String> = Vec::new();
    let Some(ep) = &observed.endpoint else {
        plan.actions.push(Action::CreateEndpoint(Box::new(endpoint_body(desired, &BTreeMap::new()))));
        plan.waiting.push("creating the endpoint".into());
        return plan;
    };
    if !owned(ep.tags.as_ref(), &desired.owner) {
        plan.stall = Some((
            Reason::AlreadyExists,
            format!(
                "an online endpoint of that name exists in the workspace and was not created by this resource (tag {OWNER_TAG} is not {}); choose another azureName",
                desired.owner
            ),
        ));
        return plan;
    }
    let ep_state = state(ep.properties.provisioning_state.as_ref());
    if is_busy(&ep_state) {
        plan.waiting.push(format!("the endpoint is {}", state_name(&ep_state)));
        return plan;
    }
    let props_differ = endpoint_differs(desired, ep);
    if is_failed(&ep_state) && !props_differ {
        plan.stall = Some((
            Reason::ProvisioningFailed,
            format!("provisioning of the endpoint {}; change the spec to retry", state_name(&ep_state).to_lowercase()),
        ));
        return plan;
    }

    // Deployments.
    let mut ready: Vec<&str> = Vec::new();
    let mut touched: Vec<&str> = Vec::new();
    for d in &desired.deployments {
        match observed.deployments.get(&d.name) {
            None => {
                plan.actions.push(Action::PutDeployment {
                    name: d.name.clone(),
                    body: Box::new(deployment_body(desired, d)),
                    create: true,
                });
                plan.waiting.push(format!("creating deployment {}", d.name));
                touched.push(&d.name);
            }
            Some(o) if !owned(o.tags.as_ref(), &desired.owner) => {
                plan.stall = Some((
                    Reason::AlreadyExists,
                    format!(
                        "deployment {} exists in the endpoint and was not created by this resource; rename it in spec.deployments",
                        d.name
                    ),
                ));
                return plan;
            }
            Some(o) => {
                let s = state(o.properties.provisioning_state.as_ref());
                let differs = deployment_differs(d, o);
                if is_busy(&s) {
                    plan.waiting.push(format!("deployment {} is {}", d.name, state_name(&s)));
                    touched.push(&d.name);
                } else if differs {
                    plan.actions.push(Action::PutDeployment {
                        name: d.name.clone(),
                        body: Box::new(deployment_body(desired, d)),
                        create: false,
                    });
                    plan.waiting.push(format!("updating deployment {}", d.name));
                    touched.push(&d.name);
                } else if is_failed(&s) {
                    failed_deployments.push(d.name.clone());
                } else {
                    ready.push(&d.name);
                }
            }
        }
    }

    // Traffic: only to deployments that are ready and left alone by this plan.
    let current = normalize_traffic(&ep.properties.traffic.clone().unwrap_or_default());
    let wanted = &desired.traffic;
    let mut traffic = current.clone();
    let traffic_changes = &current != wanted;
    if traffic_changes {
        let blocked: Vec<&String> = wanted.keys().filter(|k| !ready.contains(&k.as_str())).collect();
        let failed: Vec<&String> = blocked.iter().copied().filter(|k| failed_deployments.contains(k)).collect();
        if blocked.is_empty() {
            traffic = wanted.clone();
        } else if failed.is_empty() {
            plan.waiting.push(format!(
                "traffic waits for deployment(s) {} to be ready",
                blocked.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let set_traffic = traffic != current;
    if props_differ || set_traffic {
        plan.actions.push(Action::UpdateEndpoint {
            body: Box::new(endpoint_body(desired, &traffic)),
            traffic_changed: set_traffic,
        });
        plan.waiting.push(if set_traffic { "updating the traffic".into() } else { "updating the endpoint".into() });
    }

    // Deployments no longer declared: only ours, only without traffic, never with an endpoint PUT in flight.
    let endpoint_put = props_differ || set_traffic;
    for (name, o) in &observed.deployments {
        if desired.deployments.iter().any(|d| &d.name == name) || !owned(o.tags.as_ref(), &desired.owner) {
            continue;
        }
        let s = state(o.properties.provisioning_state.as_ref());
        if traffic.get(name).copied().unwrap_or(0) > 0 {
            plan.waiting.push(format!("deployment {name} is removed once its traffic has moved away"));
        } else if endpoint_put || matches!(s, ProvisioningState::Deleting) || is_busy(&s) {
            plan.waiting.push(format!("removing deployment {name}"));
        } else {
            plan.actions.push(Action::DeleteDeployment { name: name.clone() });
            plan.waiting.push(format!("removing deployment {name}"));
        }
    }
    if !failed_deployments.is_empty() && plan.stall.is_none() && plan.actions.is_empty() {
        plan.stall = Some((
            Reason::ProvisioningFailed,
            format!(
                "provisioning of deployment(s) {} failed; change their spec to retry",
                failed_deployments.join(", ")
            ),
        ));
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
