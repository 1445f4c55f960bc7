//! MlConnection: the real controllers (workspace and connection) against the Kubernetes API emulator and the ARM
//! simulator (both on port 0): credentials from a Secret (sent once, again only when the Secret changes, never in
//! status), a missing Secret or key, the binding's category and target limits, a connection not created by the
//! operator, drift, pause and both deletion policies. Steady state is asserted by call counts.

use std::time::Duration;

use azml_arm_simulator::CallKind;
use azml_operator::api::conditions::{self, Reason};
use azml_operator::api::v1alpha1::{MlConnection, MlWorkspace};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};

use crate::common;
use crate::env::{TestEnv, env_type};

const NS: &str = "team-a";
const WAIT: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(25);

env_type!(Env);

impl Env {
    /// `limits`: SubscriptionBinding spec fields (allowedConnectionCategories, allowedConnectionTargets).
    async fn start(limits: Value) -> Env {
        // Short resyncs: a changed Secret and drift in Azure are found without a change of the MlConnection.
        let env = Env(TestEnv::builder()
            .lro(Duration::from_millis(150))
            .resync(Duration::from_secs(1))
            .stalled(Duration::from_secs(60))
            .namespaces(&[NS])
            .bind(&[NS], limits)
            .start()
            .await);
        env.create_workspace("ws-c").await;
        env
    }

    fn connections(&self) -> Api<MlConnection> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_workspace(&self, name: &str) {
        let api: Api<MlWorkspace> = Api::namespaced(self.client.clone(), NS);
        let spec = common::workspace_spec(&self.world, json!({}));
        api.create(&PostParams::default(), &MlWorkspace::new(name, spec)).await.unwrap();
        let check = async || {
            let ws = api.get(name).await.unwrap();
            if common::condition(&ws, conditions::READY).is_some_and(|c| c.status == "True") {
                Ok(())
            } else {
                Err(ws.status)
            }
        };
        common::wait_until(WAIT, POLL, check, |s| format!("{name}: workspace not Ready: {s:#?}")).await
    }

    async fn put_secret(&self, name: &str, data: Value) {
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
        match self.secrets().get_opt(name).await.unwrap() {
            None => {
                self.secrets().create(&PostParams::default(), &secret).await.unwrap();
            }
            Some(_) => {
                let patch = json!({"data": null, "stringData": data});
                self.secrets().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            }
        }
    }

    async fn create(&self, name: &str, spec: Value) -> Result<MlConnection, kube::Error> {
        let mc: MlConnection = serde_json::from_value(json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "MlConnection", "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.connections().create(&PostParams::default(), &mc).await
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&MlConnection) -> bool) -> MlConnection {
        common::wait_for(&self.connections(), name, what, (WAIT, POLL), &self.sim, done).await
    }

    async fn wait_reason(&self, name: &str, reason: Reason) -> MlConnection {
        self.wait(name, reason.as_str(), |mc| ready_reason(mc).as_deref() == Some(reason.as_str()) && current(mc)).await
    }

    async fn wait_gone(&self, name: &str) {
        common::wait_gone(&self.connections(), name, WAIT, POLL).await
    }

    fn connection_id(&self, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/ws-c/connections/{name}",
            self.world.subscription_id, self.world.resource_group
        )
    }

    fn azure(&self, name: &str) -> Option<Value> {
        self.sim.handle.resource(&self.connection_id(name))
    }

    /// Writes of the simulator to connections, as `METHOD Operation`.
    fn connection_writes(&self) -> Vec<String> {
        self.sim
            .handle
            .calls()
            .into_iter()
            .filter(|c| c.kind == CallKind::Write && c.path.to_ascii_lowercase().contains("/connections/"))
            .map(|c| format!("{} {}", c.method, c.operation))
            .collect()
    }

    /// Waits until the simulator has seen `n` more GETs of connections (resyncs).
    async fn resyncs(&self, n: usize) {
        let start = self.sim.handle.count("WorkspaceConnections_Get");
        let check = async || {
            let seen = self.sim.handle.count("WorkspaceConnections_Get");
            if seen >= start + n { Ok(()) } else { Err(seen) }
        };
        common::wait_until(WAIT, POLL, check, |seen| format!("only {seen} connection GETs")).await
    }
}

fn condition<'a>(
    mc: &'a MlConnection,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    mc.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

fn ready_reason(mc: &MlConnection) -> Option<String> {
    condition(mc, conditions::READY).map(|c| c.reason.clone())
}

fn current(mc: &MlConnection) -> bool {
    mc.status.as_ref().and_then(|s| s.observed_generation) == mc.metadata.generation
}

fn ready(mc: &MlConnection) -> bool {
    condition(mc, conditions::READY).is_some_and(|c| c.status == "True") && current(mc)
}

fn git(secret: &str) -> Value {
    json!({
        "workspaceRef": {"name": "ws-c"},
        "category": "Git",
        "target": "https://github.com/contoso/fraud-models",
        "authType": "PAT",
        "credentialsFrom": {"secretName": secret},
        "metadata": {"team": "risk"},
        "deletionPolicy": "Delete",
    })
}

/// Create with the Secret's PAT, no writes in steady state, a rotated Secret sent exactly once, a spec change and
/// drift in Azure put back with one PUT each, deletion in Azure with deletionPolicy Delete. Credentials never show in
/// GET responses, status or events.
#[tokio::test]
async fn credentials_are_sent_once_per_change_and_the_connection_follows_the_spec() {
    let env = Env::start(json!({"allowedConnectionCategories": ["Git"]})).await;
    env.put_secret("git-pat", json!({"pat": "ghp_first_token_0001"})).await;
    env.create("repo", git("git-pat")).await.unwrap();
    let mc = env.wait("repo", "Ready", ready).await;
    let status = mc.status.clone().unwrap();
    assert_eq!(status.resource_id.as_deref(), Some(env.connection_id("repo").as_str()));
    assert_eq!((status.category.as_deref(), status.auth_type.as_deref()), (Some("Git"), Some("PAT")));
    let first_hash = status.credentials_hash.clone().expect("hash recorded");
    assert_eq!(first_hash.len(), 64);
    assert_eq!(status.binding.as_deref(), Some("sandbox"));
    let azure = env.azure("repo").unwrap();
    assert_eq!(azure["properties"]["metadata"]["azml.dev-owner"], json!(format!("{NS}/repo/{}", mc.uid().unwrap())));
    assert_eq!(azure["properties"]["metadata"]["team"], json!("risk"));
    assert!(azure["properties"].get("credentials").is_none(), "write-only: GET carries no credentials");
    assert_eq!(
        env.sim.handle.connection_credentials(&env.connection_id("repo")),
        Some(json!({"pat": "ghp_first_token_0001"}))
    );
    let ws: MlWorkspace = Api::namespaced(env.client.clone(), NS).get("ws-c").await.unwrap();
    assert!(mc.owner_references().iter().any(|r| Some(&r.uid) == ws.metadata.uid.as_ref()));
    assert_eq!(env.connection_writes(), ["PUT WorkspaceConnections_Create"]);

    // Steady state: resyncs read the connection (and the Secret) and write nothing.
    env.sim.handle.clear_calls();
    env.resyncs(3).await;
    assert_eq!(env.connection_writes(), Vec::<String>::new(), "steady state wrote");
    assert_eq!(env.sim.handle.count("WorkspaceConnections_ListSecrets"), 0);

    // The Secret rotates: sent exactly once, then nothing again.
    env.put_secret("git-pat", json!({"pat": "ghp_second_token_002"})).await;
    let mc = env
        .wait("repo", "the new hash", |m| {
            ready(m) && m.status.as_ref().unwrap().credentials_hash.as_deref() != Some(first_hash.as_str())
        })
        .await;
    assert_eq!(
        env.sim.handle.connection_credentials(&env.connection_id("repo")),
        Some(json!({"pat": "ghp_second_token_002"}))
    );
    env.resyncs(3).await;
    assert_eq!(env.connection_writes(), ["PUT WorkspaceConnections_Create"], "one PUT per Secret change");
    let notes = common::event_notes(&env.client, NS, "CredentialsUpdated").await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    let status_json = serde_json::to_string(&mc.status).unwrap();
    let events_json = serde_json::to_string(&common::events(&env.client, NS).await).unwrap();
    for secret in ["ghp_first_token_0001", "ghp_second_token_002"] {
        assert!(!status_json.contains(secret) && !events_json.contains(secret), "a credential leaked");
    }

    // A spec change: one PUT, which carries the credentials again (Azure's PUT replaces the connection).
    env.sim.handle.clear_calls();
    let patch = json!({"spec": {"target": "https://github.com/contoso/fraud-models-v2", "metadata": {"team": "risk", "tier": "gold"}}});
    env.connections().patch("repo", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait("repo", "the new target", ready).await;
    let check = async || {
        let v = env.azure("repo").unwrap();
        if v["properties"]["target"] == json!("https://github.com/contoso/fraud-models-v2") { Ok(()) } else { Err(v) }
    };
    common::wait_until(WAIT, POLL, check, |v| format!("target not updated: {v:#}")).await;
    assert_eq!(env.azure("repo").unwrap()["properties"]["metadata"]["tier"], json!("gold"));
    assert_eq!(
        env.sim.handle.connection_credentials(&env.connection_id("repo")),
        Some(json!({"pat": "ghp_second_token_002"}))
    );
    assert_eq!(env.connection_writes(), ["PUT WorkspaceConnections_Create"]);

    // Drift: someone points the connection elsewhere in Azure; the next resync puts the spec back.
    env.sim.handle.clear_calls();
    env.sim
        .handle
        .edit_resource(&env.connection_id("repo"), &json!({"properties": {"target": "https://evil.example/x"}}))
        .unwrap();
    let check = async || {
        let v = env.azure("repo").unwrap();
        if v["properties"]["target"] == json!("https://github.com/contoso/fraud-models-v2") { Ok(()) } else { Err(v) }
    };
    common::wait_until(WAIT, POLL, check, |v| format!("drift not corrected: {v:#}")).await;
    assert_eq!(env.connection_writes(), ["PUT WorkspaceConnections_Create"]);
    assert!(!common::event_notes(&env.client, NS, "DriftCorrected").await.is_empty());

    // Delete: gone in Azure.
    env.connections().delete("repo", &DeleteParams::default()).await.unwrap();
    env.wait_gone("repo").await;
    assert!(env.azure("repo").is_none(), "deletionPolicy Delete deletes the connection in Azure");
    env.stop().await;
}

/// A missing Secret, then a Secret without the key the auth type needs, stall with SecretNotFound naming them and
/// send nothing; fixing the Secret makes the connection Ready without a change of the MlConnection.
#[tokio::test]
async fn a_missing_secret_or_key_stalls_naming_it_until_it_appears() {
    let env = Env::start(json!({"allowedConnectionCategories": ["*"]})).await;
    let mut spec = git("sp-creds");
    spec["category"] = json!("AzureBlob");
    spec["target"] = json!("https://riskdata.blob.core.windows.net/");
    spec["authType"] = json!("ServicePrincipal");
    env.create("blob", spec).await.unwrap();
    let mc = env.wait_reason("blob", Reason::SecretNotFound).await;
    let message = condition(&mc, conditions::STALLED).map(|c| c.message.clone()).unwrap();
    assert!(message.contains("Secret sp-creds (spec.credentialsFrom.secretName) does not exist"), "{message}");
    assert_eq!(env.connection_writes(), Vec::<String>::new());

    env.put_secret("sp-creds", json!({"clientId": "c", "clientSecret": "s3cret-value"})).await;
    let mc = env
        .wait("blob", "the missing key", |m| {
            condition(m, conditions::STALLED).is_some_and(|c| c.message.contains("no key tenantId"))
        })
        .await;
    assert_eq!(ready_reason(&mc).as_deref(), Some(Reason::SecretNotFound.as_str()));
    assert_eq!(env.connection_writes(), Vec::<String>::new());

    env.put_secret("sp-creds", json!({"clientId": "c", "clientSecret": "s3cret-value", "tenantId": "t"})).await;
    env.wait("blob", "Ready", ready).await;
    assert_eq!(
        env.sim.handle.connection_credentials(&env.connection_id("blob")),
        Some(json!({"clientId": "c", "clientSecret": "s3cret-value", "tenantId": "t"}))
    );
    env.stop().await;
}

/// The binding limits categories and targets (NotPermitted, no Azure call for the connection); a connection of the
/// same name not created by this resource is never touched (AlreadyExists); AAD takes no Secret; pause withholds;
/// deletionPolicy Retain leaves Azure as is.
#[tokio::test]
async fn policy_foreign_connections_pause_and_retain() {
    let env = Env::start(json!({
        "allowedConnectionCategories": ["Git", "AzureOpenAI"],
        "allowedConnectionTargets": ["https://github.com/contoso/*", "https://*.openai.azure.com/"],
    }))
    .await;
    env.put_secret("git-pat", json!({"pat": "ghp_x"})).await;
    let mut s3 = git("git-pat");
    s3["category"] = json!("S3");
    s3["authType"] = json!("AccessKey");
    env.create("bucket", s3).await.unwrap();
    let mc = env.wait_reason("bucket", Reason::NotPermitted).await;
    let message = condition(&mc, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("does not allow connection category S3"), "{message}");
    let mut elsewhere = git("git-pat");
    elsewhere["target"] = json!("https://github.com/evil/repo");
    env.create("evil", elsewhere).await.unwrap();
    let mc = env.wait_reason("evil", Reason::NotPermitted).await;
    assert!(condition(&mc, conditions::STALLED).unwrap().message.contains("does not allow connection target"));
    assert_eq!(env.sim.handle.calls().iter().filter(|c| c.path.contains("/connections/")).count(), 0, "no Azure call");

    // A connection someone made in Azure, without the owner mark.
    let foreign =
        json!({"properties": {"category": "Git", "target": "https://github.com/contoso/other", "authType": "None"}});
    env.sim.handle.seed_resource(
        &env.connection_id("shared"),
        "Microsoft.MachineLearningServices/workspaces/connections",
        foreign,
    );
    env.create("shared", git("git-pat")).await.unwrap();
    env.wait_reason("shared", Reason::AlreadyExists).await;
    assert_eq!(env.azure("shared").unwrap()["properties"]["target"], json!("https://github.com/contoso/other"));
    assert_eq!(env.connection_writes(), Vec::<String>::new(), "a foreign connection is never written");
    env.connections().delete("shared", &DeleteParams::default()).await.unwrap();
    env.wait_gone("shared").await;
    assert!(env.azure("shared").is_some(), "nor deleted");

    // AAD: no credentials at all; Retain leaves it in Azure.
    let openai = json!({
        "workspaceRef": {"name": "ws-c"}, "category": "AzureOpenAI", "target": "https://contoso.openai.azure.com/",
        "authType": "AAD", "metadata": {"ApiType": "Azure"},
    });
    env.create("openai", openai).await.unwrap();
    let mc = env.wait("openai", "Ready", ready).await;
    assert_eq!(mc.status.unwrap().credentials_hash, None);
    assert_eq!(env.sim.handle.connection_credentials(&env.connection_id("openai")), None);

    // Paused: a spec change is withheld.
    env.sim.handle.clear_calls();
    let patch = json!({"metadata": {"annotations": {"azml.dev/paused": "true"}}, "spec": {"metadata": {"ApiType": "Azure", "ApiVersion": "2024-10-21"}}});
    env.connections().patch("openai", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let mc = env.wait_reason("openai", Reason::Paused).await;
    assert!(condition(&mc, conditions::READY).unwrap().message.contains("withheld: metadata"));
    env.resyncs(2).await;
    assert_eq!(env.connection_writes(), Vec::<String>::new(), "paused writes nothing");

    env.connections().delete("openai", &DeleteParams::default()).await.unwrap();
    env.wait_gone("openai").await;
    assert!(env.azure("openai").is_some(), "deletionPolicy Retain leaves the connection in Azure");
    env.stop().await;
}

/// A ManagedIdentity connection hands the workspace a user-assigned identity named in its Secret: one outside the
/// binding's resource groups is refused (NotPermitted naming where it came from, nothing sent), and the fixed Secret is
/// picked up without a spec change.
#[tokio::test]
async fn a_managed_identity_outside_the_binding_is_refused() {
    let env = Env::start(json!({"allowedConnectionCategories": ["ContainerRegistry"]})).await;
    let identity = |rg: &str| {
        format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/acr-pull",
            env.world.subscription_id
        )
    };
    let client_id = "00000000-0000-4000-8000-0000000000c1";
    env.put_secret("acr-mi", json!({"clientId": client_id, "resourceId": identity("team-b-identities")})).await;
    let spec = json!({
        "workspaceRef": {"name": "ws-c"}, "category": "ContainerRegistry", "target": "contoso.azurecr.io",
        "authType": "ManagedIdentity", "credentialsFrom": {"secretName": "acr-mi"},
    });
    env.create("acr", spec).await.unwrap();
    let mc = env.wait_reason("acr", Reason::NotPermitted).await;
    let message = condition(&mc, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("credentialsFrom (key resourceId)") && message.contains("team-b-identities"), "{message}");
    assert_eq!(env.connection_writes(), Vec::<String>::new(), "nothing sent for a refused identity");

    // An identity of the team's own resource groups: sent, once.
    env.put_secret("acr-mi", json!({"clientId": client_id, "resourceId": identity("rg-team-a-identities")})).await;
    env.wait("acr", "Ready", ready).await;
    assert_eq!(env.connection_writes(), ["PUT WorkspaceConnections_Create"]);
    env.stop().await;
}

/// `azml-operator plan` for a connection: the controller's own policy, Secret read, GET and plan, and nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_of_a_connection_says_what_would_be_sent_and_sends_nothing() {
    use azml_operator::connection::plan::Put;
    use azml_operator::connection::plan::WriteReason;
    use azml_operator::connection::{DryRun, dry_run};

    let mut env = Env::start(json!({"allowedConnectionCategories": ["Git"]})).await;
    env.put_secret("git-pat", json!({"pat": "ghp_plan_token_00001"})).await;
    env.create("repo", git("git-pat")).await.unwrap();
    let mc = env.wait("repo", "Ready", ready).await;
    match dry_run(&env.client, &env.config, &mc).await.unwrap() {
        DryRun::Planned(plan) if plan.converged() && plan.actions.is_empty() => {}
        other => panic!("a converged connection plans nothing: {other:?}"),
    }

    // With the controller stopped, the Secret rotates: the plan says the credentials would be sent again.
    env.stop_controller().await;
    env.sim.handle.clear_calls();
    env.put_secret("git-pat", json!({"pat": "ghp_plan_token_00002"})).await;
    let mc: MlConnection = env.connections().get("repo").await.unwrap();
    let result = dry_run(&env.client, &env.config, &mc).await.unwrap();
    let one_put = result.plan().is_some_and(|p| {
        p.stall.is_none() && matches!(p.actions.as_slice(), [Put { reason: WriteReason::Credentials, .. }])
    });
    assert!(one_put, "a changed Secret plans one PUT of the credentials: {result:?}");
    let shown = format!("{}{}", serde_json::to_string(&result).unwrap(), result.render(&mc));
    assert!(!shown.contains("ghp_plan_token"), "the plan shows no credential: {shown}");
    assert!(shown.contains("PUT"), "{shown}");
    assert_eq!(env.connection_writes(), Vec::<String>::new(), "planning sent nothing");
    assert_eq!(env.sim.handle.count("WorkspaceConnections_Get"), 1, "one GET");

    // A connection that another binding does not allow is blocked, naming why, before any Azure call.
    let mut denied = mc.clone();
    denied.spec.category = "AzureOpenAI".into();
    env.sim.handle.clear_calls();
    match dry_run(&env.client, &env.config, &denied).await.unwrap() {
        DryRun::Blocked { reason, message } => {
            assert_eq!(reason, azml_operator::api::conditions::Reason::NotPermitted, "{message}");
            assert!(message.contains("AzureOpenAI"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(env.sim.handle.count("WorkspaceConnections_Get"), 0);
}
