//! Hostile inputs, generated (proptest): the spec → plan functions of workspaces and online endpoints, and the
//! request parsers of both emulators driven through their HTTP front ends.
//!
//! Properties:
//! - planning never panics, is deterministic, and is idempotent: applying a plan's writes to Azure (as a model) and
//!   planning again converges, and the plan of a converged state is empty;
//! - the Kubernetes API emulator and the ARM simulator answer every request (no panic, no dropped connection, no
//!   5xx), and every refusal is a 4xx with the API's error body (a `Status` / the ARM error envelope).
//!
//! Case counts are moderate so each property runs in seconds on a loaded CI machine.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

/// Text that is sometimes plausible and sometimes hostile.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,14}",
        1 => "[A-Za-z0-9 ./?%#&<>\\\\:_-]{0,24}",
        1 => any::<String>(),
        1 => Just(String::new()),
        1 => "\\PC{200,300}",
    ]
    .boxed()
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Bytes of a request body: JSON of every shape, deep nesting, YAML alias bombs, protobuf-framed noise, garbage.
fn body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => kube_object().prop_map(|v| v.to_string().into_bytes()),
        // Nesting beyond every parser's recursion limit (128), but below the depth at which libyaml's quadratic
        // flow-collection scan takes seconds (see `deep_yaml_flow_mappings_do_not_stall_the_emulator`).
        1 => (1usize..1_500).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        1 => (1usize..1_500).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes()),
        1 => (1usize..30_000).prop_map(|n| format!("{}x", "- ".repeat(n)).into_bytes()),
        1 => Just(yaml_alias_bomb().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| [b"k8s\0".as_slice(), &b].concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => json_patch().prop_map(|v| v.to_string().into_bytes()),
    ]
    .boxed()
}

/// The "billion laughs": nine levels of aliases, each repeating the previous nine times.
fn yaml_alias_bomb() -> String {
    let mut s = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..10 {
        let p = i - 1;
        s.push_str(&format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
    }
    s
}

/// Something shaped like a Kubernetes object, with hostile values where the server looks.
fn kube_object() -> BoxedStrategy<Value> {
    (
        prop_oneof![Just("v1"), Just("azml.dev/v1alpha1"), Just("apiextensions.k8s.io/v1"), Just("x/y/z")],
        prop_oneof![Just("ConfigMap"), Just("Secret"), Just("MlWorkspace"), Just("CustomResourceDefinition"), Just("")],
        prop_oneof![6 => "[a-c]".prop_map(Value::from), 1 => json_value()],
        prop_oneof![
            4 => proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..3).prop_map(|m| json!(m)),
            1 => json_value(),
        ],
        prop_oneof![4 => Just(None), 1 => json_value().prop_map(Some)],
        prop_oneof![
            4 => proptest::collection::btree_map("[a-z]{1,4}", "[ -~]{0,8}", 0..3).prop_map(|m| json!(m)),
            1 => json_value(),
        ],
    )
        .prop_map(|(api, kind, name, labels, hostile, data)| {
            let mut object = json!({
                "apiVersion": api, "kind": kind,
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "data": data.clone(), "spec": data,
            });
            if let Some(h) = hostile {
                object["metadata"]["managedFields"] = h.clone();
                object["metadata"]["finalizers"] = h.clone();
                object["stringData"] = h;
            }
            object
        })
        .boxed()
}

fn json_patch() -> BoxedStrategy<Value> {
    let op = (
        prop_oneof![Just("add"), Just("remove"), Just("replace"), Just("move"), Just("copy"), Just("test"), Just("x")],
        prop_oneof!["(/[a-z~0-9-]{0,6}){0,5}", any::<String>()],
        json_value(),
    )
        .prop_map(|(op, path, value)| json!({"op": op, "path": path, "from": path, "value": value}));
    proptest::collection::vec(op, 0..5).prop_map(Value::Array).boxed()
}

/// `n` cases, or `PROPTEST_CASES` when set (a deeper run than CI's).
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

mod workspace_plan {
    use azml_operator::api::v1alpha1::{MlWorkspace, MlWorkspaceSpec, OWNER_TAG};
    use azml_operator::azure::models::ProvisioningState;
    use azml_operator::azure::workspaces::Workspace;
    use azml_operator::controller::plan::{Action, Desired, Observed, ResourceGroupState, plan};

    use super::*;

    const UID: &str = "11111111-2222-3333-4444-555555555555";
    const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";

    #[derive(Debug, Clone)]
    struct Input {
        spec: Value,
        adopt: bool,
        paused: bool,
        generation: Option<i64>,
        /// None: the workspace does not exist.
        azure: Option<AzureVariant>,
        resource_group: u8,
        last_generation: Option<i64>,
    }

    /// How the workspace found in Azure differs from the spec (each field: 0 = as desired, else a variation).
    #[derive(Debug, Clone)]
    struct AzureVariant {
        owner: u8,
        location: u8,
        tags: BTreeMap<String, String>,
        keep_tags: bool,
        friendly_name: Option<String>,
        description: Option<String>,
        public_network_access: u8,
        storage: u8,
        key_vault: u8,
        insights: u8,
        state: u8,
        garbage: String,
    }

    fn dependency() -> BoxedStrategy<Value> {
        prop_oneof![
            12 => "[a-z0-9]{3,24}".prop_map(|n| json!({"name": n})),
            1 => text().prop_map(|n| json!({"name": n})),
            1 => text().prop_map(|id| json!({"id": id})),
            1 => "[a-z0-9]{3,12}".prop_map(|n| json!({"id": format!("/subscriptions/{SUB}/resourceGroups/rg-other/providers/Microsoft.Storage/storageAccounts/{n}")})),
            1 => json_value(),
        ]
        .boxed()
    }

    fn spec() -> BoxedStrategy<Value> {
        (
            prop_oneof![12 => Just(SUB.to_string()), 1 => text()],
            prop_oneof![12 => "[a-z][a-z0-9_-]{0,20}", 1 => "[a-z][a-z0-9_.()-]{0,20}", 1 => text()],
            prop_oneof![4 => Just("westeurope".to_string()), 1 => Just("West Europe".to_string()), 1 => text()],
            proptest::option::of(prop_oneof![12 => "[a-z][a-z0-9-]{2,20}[a-z0-9]", 1 => text()]),
            (proptest::option::of(text()), proptest::option::of(text())),
            proptest::collection::btree_map(text(), text(), 0..4),
            prop_oneof![Just("Enabled"), Just("Disabled")],
            (dependency(), dependency(), proptest::option::of(dependency()), proptest::option::of(dependency())),
            any::<bool>(),
        )
            .prop_map(|(sub, rg, location, azure_name, (friendly, description), tags, pna, deps, create_rg)| {
                let mut spec = json!({
                    "subscriptionId": sub, "resourceGroup": rg, "location": location, "tags": tags,
                    "publicNetworkAccess": pna, "storageAccount": deps.0, "keyVault": deps.1,
                    "createResourceGroup": create_rg,
                });
                for (key, value) in [
                    ("azureName", azure_name.map(Value::from)),
                    ("friendlyName", friendly.map(Value::from)),
                    ("description", description.map(Value::from)),
                    ("applicationInsights", deps.2),
                    ("containerRegistry", deps.3),
                ] {
                    if let Some(v) = value {
                        spec[key] = v;
                    }
                }
                spec
            })
            .boxed()
    }

    fn azure_variant() -> BoxedStrategy<AzureVariant> {
        (
            (0u8..5, 0u8..4, proptest::collection::btree_map(text(), text(), 0..3), any::<bool>()),
            (proptest::option::of(text()), proptest::option::of(text()), 0u8..4),
            (0u8..4, 0u8..4, 0u8..4, 0u8..9, text()),
        )
            .prop_map(
                |(
                    (owner, location, tags, keep_tags),
                    (friendly_name, description, public_network_access),
                    (storage, key_vault, insights, state, garbage),
                )| AzureVariant {
                    owner,
                    location,
                    tags,
                    keep_tags,
                    friendly_name,
                    description,
                    public_network_access,
                    storage,
                    key_vault,
                    insights,
                    state,
                    garbage,
                },
            )
            .boxed()
    }

    fn input() -> BoxedStrategy<Input> {
        (
            spec(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(0i64..4),
            proptest::option::of(azure_variant()),
            0u8..3,
            proptest::option::of(0i64..4),
        )
            .prop_map(|(spec, adopt, paused, generation, azure, resource_group, last_generation)| Input {
                spec,
                adopt,
                paused,
                generation,
                azure,
                resource_group,
                last_generation,
            })
            .boxed()
    }

    fn resource(input: &Input) -> Option<MlWorkspace> {
        let spec: MlWorkspaceSpec = serde_json::from_value(input.spec.clone()).ok()?;
        let mut ws = MlWorkspace::new("fraud-ws", spec);
        ws.metadata.namespace = Some("team-risk".into());
        ws.metadata.uid = Some(UID.into());
        ws.metadata.generation = input.generation;
        let mut annotations = BTreeMap::new();
        annotations.insert("azml.dev/adopt".to_string(), input.adopt.to_string());
        annotations.insert("azml.dev/paused".to_string(), input.paused.to_string());
        ws.metadata.annotations = Some(annotations);
        Some(ws)
    }

    /// An id as Azure might spell it back: as sent, upper-cased, with a trailing slash, or another resource.
    fn id_variant(id: &str, v: u8) -> Value {
        match v {
            0 => json!(id),
            1 => json!(id.to_ascii_uppercase()),
            2 => json!(format!("{id}/")),
            _ => json!(format!(
                "/subscriptions/{SUB}/resourceGroups/rg-else/providers/Microsoft.Storage/storageAccounts/other"
            )),
        }
    }

    fn azure_workspace(d: &Desired, v: &AzureVariant) -> Option<Workspace> {
        let mut tags: BTreeMap<String, String> = if v.keep_tags { d.tags.clone() } else { v.tags.clone() };
        match v.owner {
            0 => tags.insert(OWNER_TAG.into(), d.owner.tag_value()),
            1 => tags.insert(OWNER_TAG.into(), format!("team-risk/fraud-ws/{}", v.garbage)),
            2 => tags.insert(OWNER_TAG.into(), v.garbage.clone()),
            _ => tags.remove(OWNER_TAG),
        };
        let location = match v.location {
            0 => json!(d.location),
            1 => json!(d.location.to_ascii_uppercase()),
            2 => Value::Null,
            _ => json!(v.garbage),
        };
        let state = ["Succeeded", "Failed", "Canceled", "Creating", "Updating", "Deleting", "Accepted", "Weird"]
            .get(usize::from(v.state))
            .map_or(Value::Null, |s| json!(s));
        let pna = match v.public_network_access {
            0 => json!(d.public_network_access.as_str()),
            1 => json!(d.public_network_access.as_str().to_ascii_lowercase()),
            2 => Value::Null,
            _ => json!(v.garbage),
        };
        let body = json!({
            "id": d.workspace.id(),
            "location": location,
            "tags": tags,
            "properties": {
                "friendlyName": v.friendly_name.clone().or_else(|| d.friendly_name.clone()),
                "description": v.description.clone().or_else(|| d.description.clone()),
                "publicNetworkAccess": pna,
                "storageAccount": id_variant(d.storage_account.as_str(), v.storage),
                "keyVault": id_variant(d.key_vault.as_str(), v.key_vault),
                "applicationInsights": d.application_insights.as_ref().map_or(Value::Null, |id| id_variant(id.as_str(), v.insights)),
                "provisioningState": state,
            },
        });
        serde_json::from_value(body).ok()
    }

    /// What Azure looks like after the writes of `actions` (the model: PUT replaces, PATCH replaces the tags and
    /// the fields it carries, every operation has finished).
    fn apply(d: &Desired, observed: &Observed, actions: &[Action]) -> Observed {
        let mut next = observed.clone();
        next.last_observed_generation = d.generation;
        for action in actions {
            match action {
                Action::CreateResourceGroup { .. } => next.resource_group = ResourceGroupState::Exists,
                Action::CreateWorkspace { id } => {
                    let mut ws = d.workspace_body();
                    ws.id = Some(id.clone());
                    ws.properties.provisioning_state = Some(ProvisioningState::Succeeded);
                    next.workspace = Some(ws);
                }
                Action::UpdateWorkspace { patch, .. } => {
                    let Some(ws) = next.workspace.as_mut() else { continue };
                    if let Some(tags) = &patch.tags {
                        ws.tags = Some(tags.clone());
                    }
                    if let Some(p) = &patch.properties {
                        let props = &mut ws.properties;
                        props.friendly_name = p.friendly_name.clone().or(props.friendly_name.take());
                        props.description = p.description.clone().or(props.description.take());
                        props.public_network_access =
                            p.public_network_access.clone().or(props.public_network_access.take());
                        props.application_insights =
                            p.application_insights.clone().or(props.application_insights.take());
                        props.container_registry = p.container_registry.clone().or(props.container_registry.take());
                    }
                    ws.properties.provisioning_state = Some(ProvisioningState::Succeeded);
                }
                _ => {}
            }
        }
        next
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

        /// Arbitrary specs against arbitrary Azure states: no panic, the same answer twice, and once the plan's
        /// writes are made, nothing more to do.
        #[test]
        fn planning_is_total_deterministic_and_converges(input in input()) {
            let Some(ws) = resource(&input) else { return Ok(()) };
            let Ok(d) = Desired::from_resource(&ws) else { return Ok(()) };
            let again = Desired::from_resource(&ws);
            prop_assert_eq!(again.as_ref(), Ok(&d));
            let resource_group = [ResourceGroupState::Unknown, ResourceGroupState::Exists, ResourceGroupState::Missing]
                [usize::from(input.resource_group) % 3];
            let workspace = input.azure.as_ref().and_then(|v| azure_workspace(&d, v));
            let observed =
                Observed {
                    pending: None,
                    workspace,
                    resource_group,
                    last_observed_generation: input.last_generation,
                    foreign_owner: Default::default(),
                };
            let planned = plan(&d, &observed);
            prop_assert_eq!(&planned, &plan(&d, &observed), "planning is not deterministic");
            let actions = &planned.actions;
            for action in actions {
                // Rendering (the `plan` subcommand and events) is total too.
                prop_assert!(!action.to_string().is_empty());
                if let Action::UpdateWorkspace { fields, .. } = action {
                    prop_assert!(!fields.is_empty(), "an update without a changed field");
                }
            }
            prop_assert!(planned.stall.is_none() || actions.is_empty(), "a stall beside actions: {:?}", planned);
            let writes_only = !actions.is_empty() && actions.iter().all(Action::is_write);
            if planned.converged() || writes_only {
                let converged = apply(&d, &observed, actions);
                let again = plan(&d, &converged);
                prop_assert!(again.converged(), "not converged after {:?}: {:?}", actions, again);
            }
        }
    }
}

mod endpoint_plan {
    use azml_operator::api::v1alpha1::{EndpointAuthMode, OWNER_TAG, PublicNetworkAccess};
    use azml_operator::azure::models::ProvisioningState;
    use azml_operator::azure::online_endpoints::{OnlineDeployment, OnlineEndpoint};
    use azml_operator::endpoints::plan::{
        Action, DesiredDeployment, DesiredEndpoint, ObservedEndpoint, deployment_body, endpoint_body, plan,
    };

    use super::*;

    const OWNER: &str = "team-a/scoring/uid-1";
    const NAMES: [&str; 4] = ["blue", "green", "red", "old"];
    const STATES: [Option<ProvisioningState>; 8] = [
        None,
        Some(ProvisioningState::Succeeded),
        Some(ProvisioningState::Succeeded),
        Some(ProvisioningState::Creating),
        Some(ProvisioningState::Updating),
        Some(ProvisioningState::Failed),
        Some(ProvisioningState::Deleting),
        Some(ProvisioningState::Other),
    ];

    fn desired() -> BoxedStrategy<DesiredEndpoint> {
        let deployment =
            (prop_oneof![Just("azureml:m:1"), Just("azureml:m:2"), Just("/x/models/m/versions/1")], 1i64..3);
        (
            proptest::sample::subsequence(NAMES.to_vec(), 0..=3),
            proptest::collection::vec(deployment, 3),
            proptest::option::of(text()),
            any::<bool>(),
            0usize..4,
        )
            .prop_map(|(names, shapes, description, public, split)| {
                let deployments: Vec<DesiredDeployment> = names
                    .iter()
                    .zip(shapes)
                    .map(|(name, (model, count))| DesiredDeployment {
                        name: (*name).into(),
                        model: model.into(),
                        instance_type: "Standard_DS3_v2".into(),
                        instance_count: count,
                        environment: None,
                        description: None,
                    })
                    .collect();
                // Valid traffic: nothing, or 100 % split over the first `split` deployments.
                let mut traffic = BTreeMap::new();
                let n = split.min(deployments.len());
                for (i, d) in deployments.iter().take(n).enumerate() {
                    let share = if i + 1 == n { 100 - 100 / n as i64 * (n as i64 - 1) } else { 100 / n as i64 };
                    traffic.insert(d.name.clone(), share);
                }
                DesiredEndpoint {
                    location: "westeurope".into(),
                    auth_mode: EndpointAuthMode::Key,
                    description,
                    public_network_access: if public {
                        PublicNetworkAccess::Enabled
                    } else {
                        PublicNetworkAccess::Disabled
                    },
                    deployments,
                    traffic,
                    owner: OWNER.into(),
                }
            })
            .boxed()
    }

    /// The endpoint found in Azure: owner tag variant, provisioning state, traffic (index into NAMES, percent) and
    /// a description edited behind the operator's back.
    #[derive(Debug, Clone)]
    struct AzureEndpoint {
        owner: u8,
        state: u8,
        traffic: Vec<(usize, i64)>,
        description: Option<String>,
    }

    #[derive(Debug, Clone)]
    struct AzureSide {
        endpoint: Option<AzureEndpoint>,
        /// (index into NAMES, owner variant, state, shape variant).
        deployments: Vec<(usize, u8, u8, u8)>,
    }

    fn azure_side() -> BoxedStrategy<AzureSide> {
        (
            proptest::option::of((
                0u8..4,
                0u8..8,
                proptest::collection::vec((0usize..4, 0i64..101), 0..3),
                proptest::option::of(text()),
            )),
            proptest::collection::vec((0usize..4, 0u8..4, 0u8..8, 0u8..3), 0..4),
        )
            .prop_map(|(endpoint, deployments)| AzureSide {
                endpoint: endpoint.map(|(owner, state, traffic, description)| AzureEndpoint {
                    owner,
                    state,
                    traffic,
                    description,
                }),
                deployments,
            })
            .boxed()
    }

    fn tags(owner: u8) -> Option<BTreeMap<String, String>> {
        match owner {
            0 | 1 => Some(BTreeMap::from([(OWNER_TAG.to_string(), OWNER.to_string())])),
            2 => Some(BTreeMap::from([(OWNER_TAG.to_string(), "someone/else/uid".to_string())])),
            _ => None,
        }
    }

    fn observed(d: &DesiredEndpoint, side: &AzureSide) -> ObservedEndpoint {
        let endpoint = side.endpoint.as_ref().map(|e| {
            let traffic: BTreeMap<String, i64> = e.traffic.iter().map(|(i, p)| (NAMES[*i].to_string(), *p)).collect();
            let mut ep = endpoint_body(d, &traffic);
            ep.tags = tags(e.owner);
            ep.properties.provisioning_state = STATES[usize::from(e.state)].clone();
            if e.description.is_some() {
                ep.properties.description = e.description.clone();
            }
            ep
        });
        let mut deployments = BTreeMap::new();
        for (i, owner, state, shape) in &side.deployments {
            let name = NAMES[*i];
            let declared = d.deployments.iter().find(|x| x.name == name).cloned();
            let mut body = deployment_body(
                d,
                &declared.unwrap_or_else(|| DesiredDeployment {
                    name: name.into(),
                    model: "azureml:m:0".into(),
                    instance_type: "Standard_DS3_v2".into(),
                    instance_count: 1,
                    environment: None,
                    description: None,
                }),
            );
            body.tags = tags(*owner);
            body.properties.provisioning_state = STATES[usize::from(*state)].clone();
            match shape {
                0 => {}
                1 => body.properties.model = Some("azureml:changed:9".into()),
                _ => body.sku = None,
            }
            deployments.insert(name.to_string(), body);
        }
        ObservedEndpoint { endpoint, deployments }
    }

    fn succeeded<T>(mut body: T, set: impl FnOnce(&mut T)) -> T {
        set(&mut body);
        body
    }

    /// Azure after the plan's writes, once every operation (ours and others') has finished.
    fn apply(observed: &ObservedEndpoint, actions: &[Action]) -> ObservedEndpoint {
        let mut next = observed.clone();
        for action in actions {
            match action {
                Action::CreateEndpoint(body) | Action::UpdateEndpoint { body, .. } => {
                    next.endpoint = Some(succeeded((**body).clone(), |b: &mut OnlineEndpoint| {
                        b.properties.provisioning_state = Some(ProvisioningState::Succeeded);
                    }));
                }
                Action::PutDeployment { name, body, .. } => {
                    next.deployments.insert(
                        name.clone(),
                        succeeded((**body).clone(), |b: &mut OnlineDeployment| {
                            b.properties.provisioning_state = Some(ProvisioningState::Succeeded);
                        }),
                    );
                }
                Action::DeleteDeployment { name } => {
                    next.deployments.remove(name);
                }
            }
        }
        // Time passes: operations in flight end (deletions remove, the rest succeed).
        next.deployments.retain(|_, d| d.properties.provisioning_state != Some(ProvisioningState::Deleting));
        for d in next.deployments.values_mut() {
            if d.properties.provisioning_state.as_ref().is_some_and(|s| !s.is_terminal()) {
                d.properties.provisioning_state = Some(ProvisioningState::Succeeded);
            }
        }
        if let Some(ep) = next.endpoint.as_mut()
            && ep.properties.provisioning_state.as_ref().is_some_and(|s| !s.is_terminal())
        {
            ep.properties.provisioning_state = Some(ProvisioningState::Succeeded);
        }
        next
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

        /// No panic, deterministic, traffic only to ready deployments, no delete of a deployment that still has
        /// traffic or beside an endpoint PUT, and convergence in a few rounds unless the plan stalls.
        #[test]
        fn endpoint_planning_is_safe_deterministic_and_converges(d in desired(), side in azure_side()) {
            let mut observed = observed(&d, &side);
            for _round in 0..8 {
                let p = plan(&d, &observed);
                prop_assert_eq!(&p, &plan(&d, &observed), "planning is not deterministic");
                let current = observed.endpoint.as_ref().and_then(|e| e.properties.traffic.clone()).unwrap_or_default();
                let endpoint_put = p.actions.iter().any(|a| matches!(a, Action::UpdateEndpoint { .. }));
                for action in &p.actions {
                    match action {
                        Action::UpdateEndpoint { body, .. } => {
                            for (name, share) in body.properties.traffic.clone().unwrap_or_default() {
                                if share == 0 || current.get(&name) == Some(&share) {
                                    continue;
                                }
                                let ready = observed.deployments.get(&name).is_some_and(|o| {
                                    o.properties.provisioning_state.as_ref().is_none_or(|s| *s == ProvisioningState::Succeeded)
                                });
                                let touched = p.actions.iter().any(|a| matches!(a, Action::PutDeployment { name: n, .. } if *n == name));
                                prop_assert!(ready && !touched, "traffic to {} which is not ready: {:?}", name, p);
                            }
                        }
                        Action::DeleteDeployment { name } => {
                            prop_assert!(!endpoint_put, "delete beside an endpoint PUT: {:?}", p);
                            prop_assert!(current.get(name).copied().unwrap_or(0) == 0, "delete of {} with traffic", name);
                            prop_assert!(!d.deployments.iter().any(|x| &x.name == name), "delete of declared {}", name);
                        }
                        _ => {}
                    }
                }
                if p.stall.is_some() {
                    return Ok(());
                }
                if p.converged() {
                    prop_assert!(plan(&d, &observed).converged());
                    return Ok(());
                }
                observed = apply(&observed, &p.actions);
            }
            prop_assert!(false, "no convergence in 8 rounds: {:?}", plan(&d, &observed));
        }
    }
}

mod kube_requests {
    use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};

    use super::*;

    struct Kube {
        server: RunningServer,
        http: reqwest::Client,
    }

    fn kube() -> &'static Kube {
        static KUBE: OnceLock<Kube> = OnceLock::new();
        KUBE.get_or_init(|| {
            runtime().block_on(async {
                let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
                let client = server.client().unwrap_or_else(|e| panic!("{e}"));
                let crds: Api<CustomResourceDefinition> = Api::all(client);
                for crd in azml_operator::api::all_crds() {
                    let name = crd.metadata.name.clone().unwrap_or_default();
                    crds.patch(&name, &PatchParams::apply("fuzz").force(), &Patch::Apply(&crd))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"));
                Kube { server, http }
            })
        })
    }

    fn segment() -> BoxedStrategy<String> {
        prop_oneof![
            Just("api".to_string()), Just("apis".to_string()), Just("v1".to_string()), Just("namespaces".to_string()),
            Just("default".to_string()), Just("configmaps".to_string()), Just("secrets".to_string()),
            Just("azml.dev".to_string()), Just("v1alpha1".to_string()), Just("mlworkspaces".to_string()),
            Just("status".to_string()), Just("watch".to_string()), Just("..".to_string()), Just("%2F".to_string()),
            Just("%00".to_string()), Just(String::new()), "[a-z0-9.-]{1,10}",
            any::<String>().prop_map(|s| percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC).to_string()),
        ]
        .boxed()
    }

    fn path() -> BoxedStrategy<String> {
        let name = prop_oneof![6 => "[a-c]", 2 => "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1 => segment()];
        let resource = prop_oneof![
            Just("/api/v1/namespaces/default/configmaps"),
            Just("/api/v1/namespaces/default/secrets"),
            Just("/api/v1/namespaces"),
            Just("/api/v1/configmaps"),
            Just("/apis/azml.dev/v1alpha1/namespaces/default/mlworkspaces"),
            Just("/apis/azml.dev/v1alpha1/subscriptionbindings"),
            Just("/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
        ];
        prop_oneof![
            6 => (resource, proptest::option::of(name), prop_oneof![6 => Just(""), 2 => Just("/status"), 1 => Just("/scale"), 1 => Just("/x")])
                .prop_map(|(r, n, sub)| match n {
                    Some(n) => format!("{r}/{n}{sub}"),
                    None => r.to_string(),
                }),
            1 => proptest::collection::vec(segment(), 0..8).prop_map(|s| format!("/{}", s.join("/"))),
        ]
        .boxed()
    }

    fn query() -> BoxedStrategy<Vec<(String, String)>> {
        let key = prop_oneof![
            Just("labelSelector"),
            Just("fieldSelector"),
            Just("limit"),
            Just("continue"),
            Just("resourceVersion"),
            Just("resourceVersionMatch"),
            Just("timeoutSeconds"),
            Just("fieldManager"),
            Just("dryRun"),
            Just("force"),
            Just("fieldValidation"),
            Just("propagationPolicy"),
            Just("gracePeriodSeconds"),
            Just("allowWatchBookmarks"),
            Just("sendInitialEvents"),
            Just("x"),
        ];
        let value = prop_oneof![
            "[a-z0-9=!,() ./-]{0,30}",
            "[a-z]{1,5}( in | notin )\\([a-z,]{0,10}\\)?",
            "(metadata\\.name|metadata\\.namespace|spec\\.x)(=|==|!=)[a-z]{0,5}",
            "-?[0-9]{1,20}",
            Just("All".to_string()),
            Just("Strict".to_string()),
            Just("true".to_string()),
            any::<String>(),
        ];
        proptest::collection::vec((key.prop_map(String::from), value), 0..3).boxed()
    }

    fn content_type() -> BoxedStrategy<&'static str> {
        prop_oneof![
            Just("application/json"),
            Just("application/yaml"),
            Just("application/vnd.kubernetes.protobuf"),
            Just("application/json-patch+json"),
            Just("application/merge-patch+json"),
            Just("application/strategic-merge-patch+json"),
            Just("application/apply-patch+yaml"),
            Just("application/apply-patch+cbor"),
            Just("text/plain"),
            Just("application/x-garbage;;;=\"\""),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

        /// Every request gets an answer: never a panic (a dropped connection) nor a 5xx; a refusal of an API path
        /// is a 4xx carrying a `Status` with the same code.
        #[test]
        fn the_kube_emulator_answers_hostile_requests_with_a_status(
            method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE")],
            path in path(),
            query in query(),
            content_type in content_type(),
            body in body(),
        ) {
            let k = kube();
            let mut url = match url::Url::parse(&format!("{}{path}", k.server.url())) {
                Ok(u) => u,
                Err(_) => return Ok(()),
            };
            url.query_pairs_mut().extend_pairs(query.iter());
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let request = k
                .http
                .request(method, url.clone())
                .header("content-type", content_type)
                .header("accept", "application/json")
                .body(body);
            let outcome = runtime().block_on(async move {
                let response = request.send().await.map_err(|e| format!("no answer: {e:?}"))?;
                let status = response.status();
                // A successful watch streams; only refusals are read.
                let text = if status.is_client_error() || status.is_server_error() {
                    response.text().await.map_err(|e| format!("body cut off: {e:?}"))?
                } else {
                    String::new()
                };
                Ok::<_, String>((status, text))
            });
            let (status, text) = match outcome {
                Ok(o) => o,
                Err(e) => return Err(TestCaseError::fail(format!("{url}: {e}"))),
            };
            prop_assert!(!status.is_server_error(), "{} {}: {}", status, url, text);
            let api_path = url.path().starts_with("/api/") || url.path().starts_with("/apis/");
            if status.is_client_error() && api_path {
                let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
                prop_assert_eq!(&parsed["kind"], "Status", "{} {}: not a Status: {}", status, url, text);
                prop_assert_eq!(parsed["code"].as_u64(), Some(u64::from(status.as_u16())), "{}", text);
            }
        }
    }

    /// Sends one request; the status and the body text.
    fn send(method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (reqwest::StatusCode, String) {
        let k = kube();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let request = k
            .http
            .request(method, format!("{}{path}", k.server.url()))
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(body);
        runtime().block_on(async move {
            let response = request.send().await.unwrap_or_else(|e| panic!("{path}: no answer: {e:?}"));
            let status = response.status();
            (status, response.text().await.unwrap_or_else(|e| panic!("{path}: body cut off: {e:?}")))
        })
    }

    /// Deterministic worst cases every content type must survive: nesting far beyond any parser's recursion,
    /// the YAML "billion laughs", and protobuf groups nested 100 000 deep.
    #[test]
    fn deep_and_explosive_bodies_are_refused_with_a_status() {
        // A namespace of its own, so that the random requests of the other properties (run concurrently on the
        // same emulator) rarely delete the object while the cases run; a 404 would still be a client error.
        let (status, text) = send(
            "POST",
            "/api/v1/namespaces",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"deep-bodies"}}"#.to_vec(),
        );
        assert!(status.is_success() || status == reqwest::StatusCode::CONFLICT, "{status}: {text}");
        let (status, text) = send(
            "POST",
            "/api/v1/namespaces/deep-bodies/configmaps",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"target"},"data":{"a":"b"}}"#.to_vec(),
        );
        assert!(status.is_success() || status == reqwest::StatusCode::CONFLICT, "{status}: {text}");
        let depth = 100_000;
        // libyaml scans flow collections quadratically: YAML bodies nest less (see the ignored test below).
        let yaml_depth = 1_000;
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        let objects = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"target"}},"data":{}"x"{}}}"#,
            r#"{"a":"#.repeat(depth),
            "}".repeat(depth)
        )
        .into_bytes();
        let yaml_flow = format!("{}x{}", "{a: ".repeat(yaml_depth), "}".repeat(yaml_depth)).into_bytes();
        let yaml_objects = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"target"}},"data":{}"x"{}}}"#,
            r#"{"a":"#.repeat(yaml_depth),
            "}".repeat(yaml_depth)
        )
        .into_bytes();
        let yaml_bomb = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: target}}\n{}", yaml_alias_bomb());
        // Unknown field 15 as a start-group, nested: parsers that skip unknown fields recurse into each group.
        let mut groups = b"k8s\0".to_vec();
        let mut raw = vec![0x7b; depth];
        raw.extend(std::iter::repeat_n(0x7c, depth));
        let mut unknown = vec![0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09];
        unknown.extend(b"ConfigMap");
        unknown.push(0x12);
        let mut len = raw.len();
        while len >= 0x80 {
            unknown.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        unknown.push(len as u8);
        unknown.extend(raw);
        groups.extend(unknown);
        let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
            ("POST", "", "application/json", arrays.clone()),
            ("POST", "", "application/json", objects.clone()),
            ("PUT", "/target", "application/json", objects.clone()),
            ("PATCH", "/target", "application/merge-patch+json", objects.clone()),
            ("PATCH", "/target", "application/strategic-merge-patch+json", objects.clone()),
            ("PATCH", "/target", "application/json-patch+json", arrays.clone()),
            ("PATCH", "/target?fieldManager=fuzz", "application/apply-patch+yaml", yaml_objects.clone()),
            ("POST", "", "application/yaml", yaml_objects),
            ("POST", "", "application/yaml", yaml_flow.clone()),
            ("PATCH", "/target?fieldManager=fuzz", "application/apply-patch+yaml", yaml_flow),
            ("POST", "", "application/yaml", yaml_bomb.clone().into_bytes()),
            ("PATCH", "/target?fieldManager=fuzz", "application/apply-patch+yaml", yaml_bomb.into_bytes()),
            ("POST", "", "application/vnd.kubernetes.protobuf", groups.clone()),
            ("PUT", "/target", "application/vnd.kubernetes.protobuf", groups),
        ];
        for (method, suffix, content_type, body) in cases {
            let path = format!("/api/v1/namespaces/deep-bodies/configmaps{suffix}");
            let (status, text) = send(method, &path, content_type, body);
            assert!(
                status.is_client_error(),
                "{method} {path} ({content_type}): {status}: {}",
                &text[..text.len().min(300)]
            );
            let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
            assert_eq!(parsed["kind"], "Status", "{method} {path} ({content_type}): {text}");
        }
        // And the server still serves (the discovery document: the random requests of the other properties, run
        // concurrently on the same emulator, may delete any namespace and so any object).
        let (status, _) = send("GET", "/api/v1", "application/json", Vec::new());
        assert!(status.is_success(), "{status}");
    }

    /// Found while writing the test above: a 600 KB apply patch of flow mappings nested 100 000 deep (`{"a":{"a":...`,
    /// valid YAML) keeps serde_yaml/libyaml busy for minutes (its simple-key scan is quadratic in the flow depth:
    /// 8 000 levels take 0.9 s in a release build), and the apply patch is parsed under the store lock, so every
    /// other request waits too. Issue 16 item 5 (body size and depth limits, parsing before the lock) owns the fix:
    /// a cheap depth pre-scan before serde_yaml, refused with 400 as the real server refuses excessive depth.
    #[test]
    #[ignore = "stalls the emulator for minutes until issue 16 item 5 bounds YAML nesting before parsing"]
    fn deep_yaml_flow_mappings_do_not_stall_the_emulator() {
        let depth = 100_000;
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","data":{}"x"{}}}"#,
            r#"{"a":"#.repeat(depth),
            "}".repeat(depth)
        );
        // `send` fails when there is no answer within the client's generous 30 s timeout.
        let (status, text) = send(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/deep?fieldManager=fuzz",
            "application/apply-patch+yaml",
            body.into_bytes(),
        );
        assert!(status.is_client_error(), "{status}: {}", &text[..text.len().min(300)]);
    }
}

mod arm_requests {
    use azml_arm_simulator::{ArmSimulator, RunningSim, SimConfig, ThrottleConfig, World};

    use super::*;

    struct Arm {
        sim: RunningSim,
        world: World,
        http: reqwest::Client,
        token: String,
    }

    fn arm() -> &'static Arm {
        static ARM: OnceLock<Arm> = OnceLock::new();
        ARM.get_or_init(|| {
            azml_operator::tls_provider::install();
            runtime().block_on(async {
                let world = World::default_sandbox();
                let mut config = SimConfig::new(world.state.clone());
                config.lro_duration = Duration::from_millis(20);
                // Unthrottled, so every generated request reaches the parsers.
                config.throttle = ThrottleConfig {
                    read_capacity: 1e9,
                    read_refill_per_sec: 1e9,
                    write_capacity: 1e9,
                    write_refill_per_sec: 1e9,
                };
                let sim = ArmSimulator::start(config).await.unwrap_or_else(|e| panic!("{e}"));
                let cert = reqwest::Certificate::from_pem(sim.ca_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                let http = reqwest::Client::builder()
                    .add_root_certificate(cert)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"));
                let form = [
                    ("client_id", world.operator.client_id.as_str()),
                    ("client_secret", world.operator.secret.expose()),
                    ("scope", "https://management.azure.com/.default"),
                    ("grant_type", "client_credentials"),
                ];
                let answer: Value = http
                    .post(sim.token_url())
                    .form(&form)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .json()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let token = answer["access_token"].as_str().unwrap_or_else(|| panic!("no token: {answer}")).to_string();
                Arm { sim, world, http, token }
            })
        })
    }

    fn path(world: &World) -> BoxedStrategy<String> {
        let sub = prop_oneof![8 => Just(world.subscription_id.clone()), 1 => text()];
        let rg = prop_oneof![8 => Just(world.resource_group.clone()), 1 => "[a-zA-Z0-9_.()-]{1,12}", 1 => text()];
        let resource = prop_oneof![
            (
                Just("Microsoft.MachineLearningServices/workspaces"),
                prop_oneof![
                    3 => Just(""), 1 => Just("/listKeys"), 1 => Just("/resyncKeys"), 2 => Just("/onlineEndpoints/ep1"),
                    2 => Just("/onlineEndpoints/ep1/deployments/blue"), 1 => Just("/onlineEndpoints/ep1/regenerateKeys"),
                    1 => Just("/onlineEndpoints/ep1/listKeys"), 1 => Just("/onlineEndpoints/ep1/deployments"),
                ]
            ),
            (
                Just("Microsoft.Storage/storageAccounts"),
                prop_oneof![2 => Just(""), 1 => Just("/listKeys"), 1 => Just("/regenerateKey")]
            ),
            (Just("Microsoft.KeyVault/vaults"), Just("")),
            (Just("Microsoft.Insights/components"), Just("")),
            (Just("Microsoft.ContainerRegistry/registries"), Just("")),
            (Just("Microsoft.Authorization/roleAssignments"), Just("")),
            (Just("Microsoft.Nope/things"), Just("")),
        ];
        let name = prop_oneof![6 => "[a-c]{3}", 2 => "[a-z][a-z0-9-]{2,14}", 1 => text()];
        let tail = prop_oneof![6 => Just(String::new()), 1 => "(/[A-Za-z0-9.%-]{0,8}){1,4}"];
        let special = prop_oneof![
            Just("/moveResources"),
            Just("/validateMoveResources"),
            Just("/providers/Microsoft.Insights/eventtypes/management/values"),
            Just("/providers/Microsoft.MachineLearningServices/locations/global/operationStatuses/x"),
            Just("/providers/Microsoft.MachineLearningServices/locations/global/operationResults/x"),
        ];
        prop_oneof![
            6 => (sub.clone(), rg.clone(), resource, name, tail)
                .prop_map(|(s, g, (p, child), n, t)| format!("/subscriptions/{s}/resourceGroups/{g}/providers/{p}/{n}{child}{t}")),
            1 => (sub.clone(), rg).prop_map(|(s, g)| format!("/subscriptions/{s}/resourcegroups/{g}")),
            1 => (sub, special).prop_map(|(s, x)| format!("/subscriptions/{s}{x}")),
            1 => "(/[A-Za-z0-9.%~-]{0,10}){0,8}",
        ]
        .boxed()
    }

    fn arm_body(world: &World) -> BoxedStrategy<Vec<u8>> {
        let realistic = json!({
            "storageAccount": world.storage_account_id, "keyVault": world.key_vault_id,
            "applicationInsights": world.app_insights_id, "authMode": "Key", "model": "azureml:m:1",
            "instanceType": "Standard_DS3_v2", "endpointComputeType": "Managed",
            "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", world.subscription_id),
            "principalId": world.users.first().cloned().unwrap_or_default(),
        });
        let shaped = (json_value(), json_value(), json_value(), any::<bool>(), any::<bool>()).prop_map(
            move |(props, tags, other, realistic_props, well_tagged)| {
                let mut properties = if realistic_props { realistic.clone() } else { props.clone() };
                if let (Some(p), Value::Object(extra)) = (properties.as_object_mut(), props) {
                    p.extend(extra.into_iter().take(2));
                }
                let tags = if well_tagged { json!({"team": "a"}) } else { tags };
                json!({"location": "eastus", "properties": properties, "tags": tags, "sku": {"name": "Default", "capacity": 1},
                       "identity": {"type": "SystemAssigned"}, "kind": "Default", "resources": other,
                       "targetResourceGroup": "/subscriptions/x/resourceGroups/y", "keyName": "key1", "keyType": "Primary"})
                    .to_string()
                    .into_bytes()
            },
        );
        prop_oneof![4 => shaped, 1 => body()].boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

        /// Every ARM request gets an answer (no panic, no 5xx); refusals are 4xx with ARM's error envelope.
        #[test]
        fn the_arm_simulator_answers_hostile_requests_with_an_arm_error(
            method in prop_oneof![Just("GET"), Just("PUT"), Just("PATCH"), Just("POST"), Just("DELETE"), Just("HEAD")],
            path in path(&World::default_sandbox()),
            api_version in prop_oneof![
                12 => Just(Some("2025-09-01".to_string())), 1 => Just(Some("2025-06-01".to_string())),
                1 => Just(Some("2022-04-01".to_string())), 1 => Just(Some("2025-04-01".to_string())), 1 => Just(None),
                1 => proptest::option::of(text()),
            ],
            auth in prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            body in arm_body(&World::default_sandbox()),
            json_type in any::<bool>(),
        ) {
            let a = arm();
            let Ok(mut url) = url::Url::parse(&format!("{}{path}", a.sim.endpoint)) else { return Ok(()) };
            if let Some(v) = api_version {
                url.query_pairs_mut().append_pair("api-version", &v);
            }
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let head = method == reqwest::Method::HEAD;
            let mut request = a.http.request(method, url.clone()).body(body);
            if json_type {
                request = request.header("content-type", "application/json");
            }
            request = match auth {
                0 => request.bearer_auth(&a.token),
                1 => request.bearer_auth("not-a-token"),
                _ => request,
            };
            let outcome = runtime().block_on(async move {
                let response = request.send().await.map_err(|e| format!("no answer: {e:?}"))?;
                let status = response.status();
                let text = response.text().await.map_err(|e| format!("body cut off: {e:?}"))?;
                Ok::<_, String>((status, text))
            });
            let (status, text) = match outcome {
                Ok(o) => o,
                Err(e) => return Err(TestCaseError::fail(format!("{url}: {e}"))),
            };
            prop_assert!(!status.is_server_error(), "{} {}: {}", status, url, text);
            if status.is_client_error() && !head {
                let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
                prop_assert!(
                    parsed["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                        && parsed["error"]["message"].is_string(),
                    "{} {}: not an ARM error: {}", status, url, text
                );
            }
        }

        /// The token endpoint refuses malformed forms with Entra's error body, never a 5xx.
        #[test]
        fn the_token_endpoint_answers_hostile_forms_with_an_entra_error(
            tenant in prop_oneof![3 => Just(None), 1 => proptest::option::of("[A-Za-z0-9-][A-Za-z0-9.-]{0,39}")],
            form in proptest::collection::vec(
                (prop_oneof![Just("client_id"), Just("client_secret"), Just("scope"), Just("grant_type"),
                             Just("client_assertion"), Just("client_assertion_type"), Just("x")].prop_map(String::from),
                 prop_oneof![text(), Just("client_credentials".to_string()),
                             Just("https://management.azure.com/.default".to_string()),
                             "[A-Za-z0-9_-]{1,20}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,20}"]),
                0..6),
        ) {
            let a = arm();
            let tenant = tenant.unwrap_or_else(|| a.world.tenant_id.clone());
            let url = format!("{}/{tenant}/oauth2/v2.0/token", a.sim.endpoint);
            let request = a.http.post(url.clone()).form(&form);
            let outcome = runtime().block_on(async move {
                let response = request.send().await.map_err(|e| format!("no answer: {e:?}"))?;
                let status = response.status();
                let text = response.text().await.map_err(|e| format!("body cut off: {e:?}"))?;
                Ok::<_, String>((status, text))
            });
            let (status, text) = match outcome {
                Ok(o) => o,
                Err(e) => return Err(TestCaseError::fail(format!("{url}: {e}"))),
            };
            prop_assert!(!status.is_server_error(), "{} {}: {}", status, url, text);
            if status.is_client_error() {
                let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
                prop_assert!(parsed["error"].is_string() && parsed["error_description"].is_string(), "{}", text);
            }
        }
    }

    /// Bodies nested far beyond the JSON parser's recursion limit are refused with ARM's error, for every family.
    #[test]
    fn deeply_nested_arm_bodies_are_refused_with_an_arm_error() {
        let a = arm();
        let depth = 100_000;
        let base = format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers",
            a.sim.endpoint, a.world.subscription_id, a.world.resource_group
        );
        for (path, api) in [
            ("Microsoft.MachineLearningServices/workspaces/deep-ws", "2025-09-01"),
            ("Microsoft.MachineLearningServices/workspaces/deep-ws/onlineEndpoints/ep", "2025-09-01"),
            ("Microsoft.Storage/storageAccounts/deepsa", "2025-06-01"),
            ("Microsoft.Authorization/roleAssignments/6f1c2a34-5b6c-4d7e-8f90-a1b2c3d4e5f6", "2022-04-01"),
        ] {
            for body in [
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
                format!(r#"{{"location":"eastus","properties":{}1{}}}"#, r#"{"a":"#.repeat(depth), "}".repeat(depth)),
            ] {
                let url = format!("{base}/{path}?api-version={api}");
                let request =
                    a.http.put(url.clone()).bearer_auth(&a.token).header("content-type", "application/json").body(body);
                let (status, text) = runtime().block_on(async move {
                    let response = request.send().await.unwrap_or_else(|e| panic!("no answer: {e:?}"));
                    let status = response.status();
                    (status, response.text().await.unwrap_or_default())
                });
                assert!(status.is_client_error(), "{url}: {status}: {text}");
                let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
                assert!(parsed["error"]["code"].is_string(), "{url}: {text}");
            }
        }
    }
}
