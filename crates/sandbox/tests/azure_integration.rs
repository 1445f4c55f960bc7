//! The typed ARM client (`azml_operator::azure`) against the ARM + Entra ID simulator
//! (`azml_arm_simulator`) over HTTPS with the simulator's generated CA.
//!
//! Every test starts its own simulator (port 0, LROs of [`LRO_MS`]) and talks to it only through the client and
//! real credentials from `build_credential`; the simulator's `SimHandle` is used to seed, inject faults, read
//! key material and count calls.
//!
//! The last test points the official Azure SDK for Python (tests/sdk/resource_group.py) at the simulator; it is
//! skipped with a notice when the packages are not installed.
//!
//! Not covered: the managed-identity credential. It only talks to IMDS (`http://169.254.169.254`) or the App
//! Service identity endpoint, neither of which can be pointed at the simulator, so it is left to a real cluster.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azml_arm_simulator::{
    ArmSimulator, FaultAction, FaultRule, RunningSim, SeededSp, SimConfig, ThrottleConfig, World, roles,
};
use azml_operator::azure::activity_log::{ActivityLogFilter, ActivityLogScope, REGENERATE_KEY_OPERATION};
use azml_operator::azure::authorization::{PrincipalType, RoleAssignmentCreate, RoleAssignmentFilter};
use azml_operator::azure::credentials::{CredentialConfig, build_credential};
use azml_operator::azure::ids::{OnlineDeploymentName, OnlineEndpointName, ResourceGroupName, WorkspaceName};
use azml_operator::azure::models::ProvisioningState;
use azml_operator::azure::online_endpoints::{
    EndpointKeyType, OnlineDeployment, OnlineDeploymentProperties, OnlineEndpoint, OnlineEndpointProperties,
    RegenerateEndpointKeys,
};
use azml_operator::azure::resource_groups::ResourceGroupCreate;
use azml_operator::azure::resources::MoveRequest;
use azml_operator::azure::storage::StorageKeyName;
use azml_operator::azure::workspaces::{Workspace, WorkspaceProperties, WorkspaceUpdate, WorkspaceUpdateProperties};
use azml_operator::azure::{
    ArmClient, ArmClientOptions, ArmError, AzureCloud, ErrorClass, LroHandle, LroKind, LroOptions, LroPoll, LroStart,
    OnlineDeploymentRef, OnlineEndpointRef, ResourceGroupRef, ResourceId, RetryPolicy, RoleAssignmentRef,
    RoleDefinitionId, Secret, StorageAccountRef, SubscriptionId, ThrottlePolicy, WorkspaceRef,
};
use azure_core::credentials::TokenCredential;
use uuid::Uuid;

/// Duration of every simulated long-running operation.
const LRO_MS: u64 = 80;

// ---------------------------------------------------------------- fixtures

struct Env {
    sim: RunningSim,
    world: World,
    cloud: AzureCloud,
    /// Authenticated as the operator's service principal (client secret).
    client: ArmClient,
}

fn cloud_for(sim: &RunningSim) -> AzureCloud {
    AzureCloud::custom(&sim.endpoint, &sim.endpoint).unwrap().with_extra_root_ca_pem(sim.ca_pem.clone()).unwrap()
}

fn options(cloud: &AzureCloud) -> ArmClientOptions {
    ArmClientOptions {
        cloud: cloud.clone(),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(3),
        },
        // Tiny thresholds: the simulator's default buckets (250 reads) never get near them, the throttling test
        // shrinks the buckets to a few tokens refilled at 4/s; at zero remaining the delay (400 ms) lets more than
        // one token refill.
        throttle: ThrottlePolicy {
            read_threshold: 2,
            write_threshold: 2,
            max_delay: Duration::from_millis(400),
            stale_after: Duration::from_secs(5),
        },
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        metrics: None,
    }
}

fn secret_credential(world: &World, client_id: &str, secret: &str, cloud: &AzureCloud) -> Arc<dyn TokenCredential> {
    build_credential(
        &CredentialConfig::ClientSecret {
            tenant_id: world.tenant_id.clone(),
            client_id: client_id.to_owned(),
            client_secret: Secret::new(secret),
        },
        cloud,
    )
    .unwrap()
}

fn client_as(world: &World, sp: &SeededSp, cloud: &AzureCloud) -> ArmClient {
    ArmClient::new(secret_credential(world, &sp.client_id, sp.secret.expose(), cloud), options(cloud)).unwrap()
}

async fn start_with(f: impl FnOnce(&mut SimConfig)) -> Env {
    let world = World::default_sandbox();
    let mut cfg = SimConfig::new(world.state.clone());
    cfg.lro_duration = Duration::from_millis(LRO_MS);
    f(&mut cfg);
    let sim = ArmSimulator::start(cfg).await.unwrap();
    let cloud = cloud_for(&sim);
    let client = client_as(&world, &world.operator, &cloud);
    Env { sim, world, cloud, client }
}

async fn start() -> Env {
    start_with(|_| {}).await
}

fn lro_opts() -> LroOptions {
    LroOptions {
        timeout: Duration::from_secs(10),
        default_poll_interval: Duration::from_millis(10),
        max_poll_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

impl Env {
    fn sub(&self) -> SubscriptionId {
        SubscriptionId::new(&self.world.subscription_id).unwrap()
    }

    fn rg(&self) -> ResourceGroupRef {
        ResourceGroupRef::new(self.sub(), ResourceGroupName::new(&self.world.resource_group).unwrap())
    }

    fn other_rg(&self, name: &str) -> ResourceGroupRef {
        ResourceGroupRef::new(self.sub(), ResourceGroupName::new(name).unwrap())
    }

    fn ws(&self, name: &str) -> WorkspaceRef {
        WorkspaceRef::new(self.rg(), WorkspaceName::new(name).unwrap())
    }

    fn sa(&self) -> StorageAccountRef {
        StorageAccountRef::parse(&self.world.storage_account_id).unwrap()
    }

    fn ep(&self, ws: &str, name: &str) -> OnlineEndpointRef {
        OnlineEndpointRef::new(self.ws(ws), OnlineEndpointName::new(name).unwrap())
    }

    fn workspace_body(&self) -> Workspace {
        Workspace {
            location: Some(self.world.location.clone()),
            properties: WorkspaceProperties {
                friendly_name: Some("integration".into()),
                storage_account: Some(self.world.storage_account_id.clone()),
                key_vault: Some(self.world.key_vault_id.clone()),
                application_insights: Some(self.world.app_insights_id.clone()),
                container_registry: Some(self.world.container_registry_id.clone()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Current value of a storage key of the seeded account, read behind the client's back.
    fn storage_key(&self, name: &str) -> String {
        self.sim.handle.storage_key(&self.world.storage_account_id, name).unwrap().expose().to_owned()
    }

    /// Calls the simulator saw for `operation`.
    fn count(&self, operation: &str) -> usize {
        self.sim.handle.count(operation)
    }

    /// Statuses the simulator answered `operation` with, in order.
    fn statuses(&self, operation: &str) -> Vec<u16> {
        self.sim
            .handle
            .calls()
            .iter()
            .filter(|c| c.operation.eq_ignore_ascii_case(operation))
            .map(|c| c.status)
            .collect()
    }

    async fn create_workspace(&self, name: &str) -> Workspace {
        self.client.create_or_update_workspace(&self.ws(name), &self.workspace_body(), &lro_opts()).await.unwrap()
    }

    async fn create_endpoint(&self, ws: &str, name: &str) -> OnlineEndpoint {
        let body = OnlineEndpoint {
            location: self.world.location.clone(),
            properties: OnlineEndpointProperties { auth_mode: "Key".into(), ..Default::default() },
            ..Default::default()
        };
        self.client.create_or_update_online_endpoint(&self.ep(ws, name), &body, &lro_opts()).await.unwrap()
    }
}

fn same_id(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// A projected service-account token as AKS workload identity writes it, signed by the world's cluster issuer.
fn write_federated_token(world: &World, path: &Path) {
    let claims = serde_json::json!({"aud": ["api://AzureADTokenExchange"], "sub": world.federated_subject});
    std::fs::write(path, world.federated_issuer.token(&claims)).unwrap();
}

// ---------------------------------------------------------------- credentials

#[tokio::test]
async fn client_secret_credential_gets_tokens_over_tls_and_caches_them() {
    let env = start().await;
    let rg = env.client.get_resource_group(&env.rg()).await.unwrap().expect("seeded resource group");
    assert_eq!(rg.location, env.world.location);
    assert!(env.client.get_storage_account(&env.sa()).await.unwrap().is_some());
    assert!(!env.client.list_storage_accounts(env.sub()).await.unwrap().is_empty());

    // One token for three ARM calls: the credential caches it until shortly before expiry.
    assert_eq!(env.count("Token"), 1);
    let calls = env.sim.handle.calls();
    let token = calls.iter().find(|c| c.operation == "Token").unwrap();
    assert_eq!(token.status, 200);
    assert_eq!(token.path, format!("/{}/oauth2/v2.0/token", env.world.tenant_id));
    // Every ARM call was authenticated as the operator.
    let arm: Vec<_> = calls.iter().filter(|c| c.operation != "Token").collect();
    assert_eq!(arm.len(), 3);
    assert!(arm.iter().all(|c| c.status == 200 && c.principal.as_deref() == Some(&env.world.operator.object_id)));
}

#[tokio::test]
async fn wrong_client_secret_is_a_clear_credential_error_without_the_secret() {
    let env = start().await;
    let wrong = "Wr0ng-client-secret-value~123";
    let client = ArmClient::new(
        secret_credential(&env.world, &env.world.operator.client_id, wrong, &env.cloud),
        options(&env.cloud),
    )
    .unwrap();
    let err = client.get_resource_group(&env.rg()).await.unwrap_err();
    assert!(matches!(err, ArmError::Credential { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Auth);
    let mut text = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    // The error says what Entra ID said (invalid client secret), never the secret itself.
    assert!(text.contains("7000215"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(env.world.operator.secret.expose()), "{text}");
    // Rejected at the token endpoint: ARM never saw a request.
    let calls = env.sim.handle.calls();
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c.operation == "Token" && c.status == 401), "{calls:?}");
}

#[tokio::test]
async fn workload_identity_credential_exchanges_the_federated_token_file() {
    let env = start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    write_federated_token(&env.world, &token_file);
    let federated = |client_id: &str| {
        build_credential(
            &CredentialConfig::WorkloadIdentity {
                tenant_id: env.world.tenant_id.clone(),
                client_id: client_id.to_owned(),
                token_file: token_file.clone(),
            },
            &env.cloud,
        )
        .unwrap()
    };

    let client = ArmClient::new(federated(&env.world.federated.client_id), options(&env.cloud)).unwrap();
    assert!(client.get_resource_group(&env.rg()).await.unwrap().is_some());
    let calls = env.sim.handle.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0].operation.as_str(), calls[0].status), ("Token", 200));
    assert_eq!(calls[1].principal.as_deref(), Some(env.world.federated.object_id.as_str()));

    // An app without a federated credential cannot use the assertion.
    let client = ArmClient::new(federated(&env.world.operator.client_id), options(&env.cloud)).unwrap();
    let err = client.get_resource_group(&env.rg()).await.unwrap_err();
    assert!(matches!(err, ArmError::Credential { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Auth);
}

// ---------------------------------------------------------------- operations

#[tokio::test]
async fn resource_groups_get_and_create() {
    let env = start().await;
    let target = env.other_rg("rg-integration");
    assert!(env.client.get_resource_group(&target).await.unwrap().is_none());
    let body = ResourceGroupCreate {
        location: "westeurope".into(),
        tags: Some([("team".to_string(), "ml".to_string())].into()),
        managed_by: None,
    };
    let created = env.client.create_or_update_resource_group(&target, &body).await.unwrap();
    assert_eq!(created.location, "westeurope");
    assert!(same_id(created.id.as_deref().unwrap(), &target.id()));
    env.client.create_or_update_resource_group(&target, &body).await.unwrap();
    // 201 on create, 200 when it already exists (CONTRACTS: ResourceGroups_CreateOrUpdate).
    assert_eq!(env.statuses("ResourceGroups_CreateOrUpdate"), vec![201, 200]);
    let got = env.client.get_resource_group(&target).await.unwrap().unwrap();
    assert_eq!(got.tags.unwrap().get("team").map(String::as_str), Some("ml"));
}

#[tokio::test]
async fn workspace_lifecycle_keys_and_resync() {
    let env = start().await;
    let o = lro_opts();
    let ws1 = env.ws("ws-one");
    assert!(env.client.get_workspace(&ws1).await.unwrap().is_none());
    assert_eq!(env.statuses("Workspaces_Get"), vec![404]);

    // Create via begin + poll_lro; a longer operation so that the first poll certainly finds it running even on a
    // loaded machine.
    env.sim.handle.set_lro_duration(Duration::from_secs(2));
    let handle = match env.client.begin_create_or_update_workspace(&ws1, &env.workspace_body()).await.unwrap() {
        LroStart::Pending(h) => h,
        LroStart::Done(w) => panic!("the simulator accepts workspace PUTs asynchronously, got {w:?}"),
    };
    // Workspace PUTs answer 202 with both poll headers (recorded): the status monitor is polled.
    assert_eq!(handle.kind, LroKind::AzureAsyncOperation);
    assert!(handle.location_url.is_some());
    let mut handle = handle;
    let mut in_progress = 0;
    let created: Workspace = loop {
        match env.client.poll_lro(&handle).await.unwrap() {
            LroPoll::InProgress(next) => {
                in_progress += 1;
                handle = next;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            LroPoll::Done(w) => break w,
        }
    };
    assert!(in_progress >= 1, "a 2 s operation cannot be done at the first poll");
    env.sim.handle.set_lro_duration(Duration::from_millis(LRO_MS));
    assert_eq!(created.properties.provisioning_state, Some(ProvisioningState::Succeeded));
    assert!(same_id(created.id.as_deref().unwrap(), &ws1.id()));
    assert!(same_id(created.properties.storage_account.as_deref().unwrap(), &env.world.storage_account_id));

    // Create via the waiting variant.
    let ws2 = env.ws("ws-two");
    let created2 = env.create_workspace("ws-two").await;
    assert_eq!(created2.properties.provisioning_state, Some(ProvisioningState::Succeeded));
    assert_eq!(env.statuses("Workspaces_CreateOrUpdate"), vec![202, 202]);

    // PATCH.
    let upd = WorkspaceUpdate {
        tags: Some([("env".to_string(), "test".to_string())].into()),
        properties: Some(WorkspaceUpdateProperties { description: Some("updated".into()), ..Default::default() }),
        ..Default::default()
    };
    let updated = env.client.update_workspace(&ws1, &upd, &o).await.unwrap();
    assert_eq!(updated.properties.description.as_deref(), Some("updated"));
    let got = env.client.get_workspace(&ws1).await.unwrap().unwrap();
    assert_eq!(got.properties.description.as_deref(), Some("updated"));
    assert_eq!(got.tags.unwrap().get("env").map(String::as_str), Some("test"));
    assert_eq!(got.properties.provisioning_state, Some(ProvisioningState::Succeeded));

    // listKeys returns the storage key the workspace captured at creation.
    let key1 = env.storage_key("key1");
    let keys = env.client.list_workspace_keys(&ws1).await.unwrap();
    assert_eq!(keys.user_storage_key.as_ref().unwrap().expose(), key1);
    assert!(same_id(keys.user_storage_resource_id.as_deref().unwrap(), &env.world.storage_account_id));
    assert!(!format!("{keys:?}").contains(&key1));

    // Rotate key1: the workspace keeps the old key until resyncKeys.
    let rotated = env.client.regenerate_storage_account_key(&env.sa(), StorageKeyName::Key1).await.unwrap();
    let new_key1 = rotated.iter().find(|k| k.key_name == "key1").unwrap().value.expose().to_owned();
    assert_ne!(new_key1, key1);
    assert_eq!(new_key1, env.storage_key("key1"));
    let stale = env.client.list_workspace_keys(&ws1).await.unwrap();
    assert_eq!(stale.user_storage_key.unwrap().expose(), key1);
    env.client.resync_workspace_keys(&ws1, &o).await.unwrap();
    let fresh = env.client.list_workspace_keys(&ws1).await.unwrap();
    assert_eq!(fresh.user_storage_key.unwrap().expose(), new_key1);

    // Delete (LRO via Location), then it is gone; deleting again is a no-op.
    env.client.delete_workspace(&ws2, true, &o).await.unwrap();
    assert_eq!(env.statuses("Workspaces_Delete"), vec![202]);
    assert!(env.client.get_workspace(&ws2).await.unwrap().is_none());
    assert!(matches!(env.client.begin_delete_workspace(&ws2, false).await.unwrap(), LroStart::Done(())));
    assert_eq!(env.statuses("Workspaces_Delete"), vec![202, 204]);
}

#[tokio::test]
async fn storage_accounts_keys_key_creation_time_and_activity_log() {
    let env = start().await;
    let t0 = jiff::Timestamp::now();
    let before = env.client.get_storage_account(&env.sa()).await.unwrap().unwrap();
    let kct = before.properties.key_creation_time.clone().expect("keyCreationTime (CONTRACTS §11)");
    assert!(kct.key1.is_some() && kct.key2.is_some());

    let listed = env.client.list_storage_accounts(env.sub()).await.unwrap();
    let mine = listed.iter().find(|a| same_id(a.id.as_deref().unwrap_or(""), &env.world.storage_account_id)).unwrap();
    assert_eq!(mine.properties.key_creation_time.as_ref(), Some(&kct));

    let keys = env.client.list_storage_account_keys(&env.sa()).await.unwrap();
    let names: Vec<_> = keys.iter().map(|k| k.key_name.as_str()).collect();
    assert_eq!(names, ["key1", "key2"]);
    assert_eq!(keys[0].value.expose(), env.storage_key("key1"));
    assert_eq!(keys[1].value.expose(), env.storage_key("key2"));

    let old_key1 = env.storage_key("key1");
    let rotated = env.client.regenerate_storage_account_key(&env.sa(), StorageKeyName::Key2).await.unwrap();
    assert_eq!(rotated[1].value.expose(), env.storage_key("key2"));
    assert_ne!(rotated[1].value.expose(), keys[1].value.expose());
    assert_eq!(rotated[0].value.expose(), old_key1, "key1 is untouched");

    let after = env.client.get_storage_account(&env.sa()).await.unwrap().unwrap();
    let kct2 = after.properties.key_creation_time.unwrap();
    assert_eq!(kct2.key1, kct.key1);
    assert_ne!(kct2.key2, kct.key2);

    // The activity log shows the rotation for this account, but only once Azure has ingested it (the simulator's
    // default ingestion delay is 5 minutes; its clock is moved past it).
    let filter = ActivityLogFilter {
        from: t0.checked_sub(jiff::SignedDuration::from_secs(60)).unwrap(),
        to: jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(60)).unwrap(),
        scope: ActivityLogScope::Resource(env.sa().resource_id()),
    };
    let events = env.client.list_activity_log(env.sub(), &filter).await.unwrap();
    assert!(!events.iter().any(|e| e.is_operation(REGENERATE_KEY_OPERATION)), "not ingested yet: {events:#?}");
    env.sim.handle.advance_clock(Duration::from_secs(301));
    let events = env.client.list_activity_log(env.sub(), &filter).await.unwrap();
    let regen: Vec<_> = events.iter().filter(|e| e.is_operation(REGENERATE_KEY_OPERATION)).collect();
    assert!(!regen.is_empty(), "{events:#?}");
    for e in &regen {
        let (at, submitted) = (e.event_timestamp.as_deref().unwrap(), e.submission_timestamp.as_deref().unwrap());
        assert!(submitted.parse::<jiff::Timestamp>().unwrap() > at.parse::<jiff::Timestamp>().unwrap(), "{e:?}");
    }
    assert!(regen.iter().all(|e| same_id(e.resource_id.as_deref().unwrap_or(""), &env.world.storage_account_id)));
    // Scoped to another resource, the rotation does not show up.
    let other = ActivityLogFilter {
        scope: ActivityLogScope::Resource(ResourceId::parse(&env.world.key_vault_id).unwrap()),
        ..filter
    };
    let events = env.client.list_activity_log(env.sub(), &other).await.unwrap();
    assert!(!events.iter().any(|e| e.is_operation(REGENERATE_KEY_OPERATION)), "{events:#?}");
    // By resource group, as in the official example.
    let by_rg = ActivityLogFilter {
        scope: ActivityLogScope::ResourceGroup(ResourceGroupName::new(&env.world.resource_group).unwrap()),
        ..other
    };
    let events = env.client.list_activity_log(env.sub(), &by_rg).await.unwrap();
    assert!(events.iter().any(|e| e.is_operation(REGENERATE_KEY_OPERATION)), "{events:#?}");

    // A missing account is None, not an error.
    let missing = StorageAccountRef::parse(&env.world.storage_account_id.replace("stsandbox", "stmissing")).unwrap();
    assert!(env.client.get_storage_account(&missing).await.unwrap().is_none());
}

#[tokio::test]
async fn role_assignments_create_conflict_get_delete_list_and_paging() {
    let env = start_with(|c| c.page_size = 2).await;
    let sub = env.sub();
    let scope = env.rg().resource_id();
    let role = |guid: &str| RoleDefinitionId::new(Some(sub), Uuid::parse_str(guid).unwrap());
    let alice = Uuid::parse_str(&env.world.users[0]).unwrap();
    let body = RoleAssignmentCreate {
        role_definition_id: role(roles::AZUREML_DATA_SCIENTIST),
        principal_id: alice,
        principal_type: Some(PrincipalType::User),
        description: Some("integration".into()),
    };
    let ra = RoleAssignmentRef::new(scope.clone(), Uuid::new_v4());

    let created = env.client.create_role_assignment(&ra, &body).await.unwrap();
    assert_eq!(created.principal(), Some(alice));
    assert_eq!(created.role_definition(), Some(role(roles::AZUREML_DATA_SCIENTIST)));
    // The same assignment again is fine.
    env.client.create_role_assignment(&ra, &body).await.unwrap();
    assert_eq!(env.statuses("RoleAssignments_Create"), vec![201, 200]);

    // Same principal + role + scope under another name: 409 RoleAssignmentExists, not retried.
    let dup = RoleAssignmentRef::new(scope.clone(), Uuid::new_v4());
    let err = env.client.create_role_assignment(&dup, &body).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("RoleAssignmentExists")), "{err}");
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert!(err.is_conflict());
    // An unknown principal: 400 PrincipalNotFound, permanent, not retried.
    let ghost = RoleAssignmentCreate { principal_id: Uuid::new_v4(), principal_type: None, ..body.clone() };
    let err = env.client.create_role_assignment(&dup, &ghost).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(400), Some("PrincipalNotFound")), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(env.statuses("RoleAssignments_Create"), vec![201, 200, 409, 400]);

    let got = env.client.get_role_assignment(&ra).await.unwrap().unwrap();
    assert!(same_id(got.id.as_deref().unwrap(), &ra.id()));
    assert_eq!(got.properties.description.as_deref(), Some("integration"));
    assert!(env.client.get_role_assignment(&dup).await.unwrap().is_none());

    // Bob gets three roles on the resource group: listing them by principal at the subscription takes two pages.
    let bob = Uuid::parse_str(&env.world.users[1]).unwrap();
    for guid in [roles::READER, roles::CONTRIBUTOR, roles::AZUREML_COMPUTE_OPERATOR] {
        let b = RoleAssignmentCreate {
            role_definition_id: role(guid),
            principal_id: bob,
            principal_type: None,
            description: None,
        };
        env.client.create_role_assignment(&RoleAssignmentRef::new(scope.clone(), Uuid::new_v4()), &b).await.unwrap();
    }
    env.sim.handle.clear_calls();
    let bobs = env
        .client
        .list_role_assignments(&ResourceId::subscription(sub), Some(RoleAssignmentFilter::PrincipalId(bob)))
        .await
        .unwrap();
    assert_eq!(bobs.len(), 3, "{bobs:#?}");
    assert!(bobs.iter().all(|a| a.principal() == Some(bob)));
    assert_eq!(env.count("RoleAssignments_ListForScope"), 2, "3 items in pages of 2");

    // No filter at the subscription: everything at, above or below it, across all pages.
    env.sim.handle.clear_calls();
    let all = env.client.list_role_assignments(&ResourceId::subscription(sub), None).await.unwrap();
    let in_sub = env.sim.handle.with_state(|s| {
        s.role_assignments.values().filter(|r| r.scope.to_ascii_lowercase().contains(&sub.to_string())).count()
    });
    assert_eq!(all.len(), in_sub);
    assert_eq!(env.count("RoleAssignments_ListForScope"), in_sub.div_ceil(2));

    // atScope() at the resource group: its own and inherited (subscription) assignments, nothing below.
    let at = env.client.list_role_assignments(&scope, Some(RoleAssignmentFilter::AtScope)).await.unwrap();
    assert!(at.iter().any(|a| same_id(a.id.as_deref().unwrap_or(""), &ra.id())));
    assert!(at.iter().any(|a| a.principal().map(|p| p.to_string()) == Some(env.world.operator.object_id.clone())));
    for a in &at {
        let s = a.properties.scope.as_deref().unwrap().to_ascii_lowercase();
        assert!(scope.as_str().to_ascii_lowercase().starts_with(&s), "{s} is not at or above {scope}");
    }

    // assignedTo() also finds what alice gets through her group.
    let group = Uuid::parse_str(&env.world.group).unwrap();
    let via_group = RoleAssignmentRef::new(scope.clone(), Uuid::new_v4());
    let group_body = RoleAssignmentCreate {
        role_definition_id: role(roles::READER),
        principal_id: group,
        principal_type: Some(PrincipalType::Group),
        description: None,
    };
    env.client.create_role_assignment(&via_group, &group_body).await.unwrap();
    let alices = env.client.list_role_assignments(&scope, Some(RoleAssignmentFilter::AssignedTo(alice))).await.unwrap();
    let ids: Vec<_> = alices.iter().filter_map(|a| a.id.as_deref()).collect();
    assert!(ids.iter().any(|id| same_id(id, &via_group.id())), "{ids:?}");
    assert!(ids.iter().any(|id| same_id(id, &ra.id())), "{ids:?}");
    assert!(alices.iter().all(|a| a.principal() == Some(alice) || a.principal() == Some(group)));

    let deleted = env.client.delete_role_assignment(&ra).await.unwrap().expect("200 with the deleted assignment");
    assert_eq!(deleted.principal(), Some(alice));
    assert!(env.client.delete_role_assignment(&ra).await.unwrap().is_none());
    assert!(env.client.get_role_assignment(&ra).await.unwrap().is_none());
}

#[tokio::test]
async fn validate_move_and_move_resources() {
    let env = start().await;
    let o = lro_opts();
    let target = env.other_rg("rg-target");
    env.client
        .create_or_update_resource_group(
            &target,
            &ResourceGroupCreate { location: env.world.location.clone(), tags: None, managed_by: None },
        )
        .await
        .unwrap();
    let storage_move = MoveRequest { resources: vec![env.sa().resource_id()], target_resource_group: target.clone() };
    env.client.validate_move_resources(&env.rg(), &storage_move, &o).await.unwrap();

    // A workspace with an online endpoint cannot move (CONTRACTS §8): 409 with the reason in the details.
    env.create_workspace("ws-move").await;
    env.create_endpoint("ws-move", "ep-move").await;
    let ws_move =
        MoveRequest { resources: vec![env.ws("ws-move").resource_id()], target_resource_group: target.clone() };
    let err = env.client.validate_move_resources(&env.rg(), &ws_move, &o).await.unwrap_err();
    match &err {
        ArmError::Api { status: 409, body, .. } => {
            assert_eq!(body.code, "ResourceMoveValidationFailed");
            assert!(!body.message.is_empty());
            let detail = body.details.iter().find(|d| d.code == "ResourceMoveNotSupported").unwrap();
            assert!(detail.message.contains("online endpoint"), "{}", detail.message);
        }
        other => panic!("expected a 409 API error, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert!(err.to_string().contains("ResourceMoveValidationFailed"), "{err}");

    // Move the storage account: its id changes, its location does not.
    env.client.move_resources(&env.rg(), &storage_move, &o).await.unwrap();
    assert!(env.client.get_storage_account(&env.sa()).await.unwrap().is_none());
    let moved_ref = StorageAccountRef::new(target.clone(), env.sa().name.clone());
    let moved = env.client.get_storage_account(&moved_ref).await.unwrap().expect("account in the target group");
    assert!(same_id(moved.id.as_deref().unwrap(), &moved_ref.id()));
    assert_eq!(moved.location.as_deref(), Some(env.world.location.as_str()));
}

#[tokio::test]
async fn online_endpoints_and_deployments() {
    let env = start().await;
    let o = lro_opts();
    env.create_workspace("ws-serve").await;
    let ep = env.ep("ws-serve", "ep-1");
    assert!(env.client.get_online_endpoint(&ep).await.unwrap().is_none());

    // PUT answers 201 + Azure-AsyncOperation (final state: original URI).
    let body = OnlineEndpoint {
        location: env.world.location.clone(),
        properties: OnlineEndpointProperties { auth_mode: "Key".into(), ..Default::default() },
        ..Default::default()
    };
    let handle = match env.client.begin_create_or_update_online_endpoint(&ep, &body).await.unwrap() {
        LroStart::Pending(h) => h,
        LroStart::Done(e) => panic!("expected a pending create, got {e:?}"),
    };
    assert_eq!(handle.kind, LroKind::AzureAsyncOperation);
    assert_eq!(env.statuses("OnlineEndpoints_CreateOrUpdate"), vec![201]);
    let created: OnlineEndpoint = env.client.wait_lro(handle, &o).await.unwrap();
    assert_eq!(created.properties.provisioning_state, Some(ProvisioningState::Succeeded));
    assert!(created.properties.scoring_uri.is_some());
    let got = env.client.get_online_endpoint(&ep).await.unwrap().unwrap();
    assert_eq!(got.properties.auth_mode, "Key");

    let keys = env.client.list_online_endpoint_keys(&ep).await.unwrap();
    let (p1, s1) = (keys.primary_key.clone().unwrap(), keys.secondary_key.clone().unwrap());
    assert_ne!(p1, s1);
    assert!(!format!("{keys:?}").contains(p1.expose()));
    env.client
        .regenerate_online_endpoint_keys(
            &ep,
            &RegenerateEndpointKeys { key_type: EndpointKeyType::Primary, key_value: None },
            &o,
        )
        .await
        .unwrap();
    let keys = env.client.list_online_endpoint_keys(&ep).await.unwrap();
    assert_ne!(keys.primary_key.as_ref(), Some(&p1));
    assert_eq!(keys.secondary_key.as_ref(), Some(&s1));
    let chosen = Secret::new("caller-chosen-secondary-key-value");
    let req = RegenerateEndpointKeys { key_type: EndpointKeyType::Secondary, key_value: Some(chosen.clone()) };
    env.client.regenerate_online_endpoint_keys(&ep, &req, &o).await.unwrap();
    assert_eq!(env.client.list_online_endpoint_keys(&ep).await.unwrap().secondary_key, Some(chosen));

    // A managed deployment under the endpoint.
    let dep = OnlineDeploymentRef::new(ep.clone(), OnlineDeploymentName::new("blue").unwrap());
    assert!(env.client.get_online_deployment(&dep).await.unwrap().is_none());
    let dep_body = OnlineDeployment {
        location: env.world.location.clone(),
        sku: None,
        properties: OnlineDeploymentProperties {
            endpoint_compute_type: "Managed".into(),
            instance_type: Some("Standard_DS3_v2".into()),
            model: Some("azureml:sklearn-model:1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let d = env.client.create_or_update_online_deployment(&dep, &dep_body, &o).await.unwrap();
    assert_eq!(d.properties.provisioning_state, Some(ProvisioningState::Succeeded));
    assert_eq!(d.properties.instance_type.as_deref(), Some("Standard_DS3_v2"));
    assert_eq!(env.statuses("OnlineDeployments_CreateOrUpdate"), vec![201]);
    assert!(env.client.get_online_deployment(&dep).await.unwrap().is_some());

    env.client.delete_online_deployment(&dep, &o).await.unwrap();
    assert!(env.client.get_online_deployment(&dep).await.unwrap().is_none());
    env.client.delete_online_endpoint(&ep, &o).await.unwrap();
    assert!(env.client.get_online_endpoint(&ep).await.unwrap().is_none());
    assert_eq!(env.statuses("OnlineEndpoints_Delete"), vec![202]);
}

#[tokio::test]
async fn lro_handle_survives_a_client_restart() {
    let env = start().await;
    let ws = env.ws("ws-resume");
    let json = {
        let first = client_as(&env.world, &env.world.operator, &env.cloud);
        match first.begin_create_or_update_workspace(&ws, &env.workspace_body()).await.unwrap() {
            LroStart::Pending(h) => serde_json::to_string(&h).unwrap(),
            LroStart::Done(w) => panic!("expected a pending create, got {w:?}"),
        }
        // `first` (and its credential and token cache) is dropped here, as in a controller restart.
    };
    let fresh = client_as(&env.world, &env.world.operator, &env.cloud);
    let handle: LroHandle = serde_json::from_str(&json).unwrap();
    let done: Workspace = fresh.wait_lro(handle, &lro_opts()).await.unwrap();
    assert_eq!(done.properties.provisioning_state, Some(ProvisioningState::Succeeded));
    let puts = env.sim.handle.calls().iter().filter(|c| c.operation == "Workspaces_CreateOrUpdate").count();
    assert_eq!(puts, 1, "the resumed client polls, it does not PUT again");
    assert_eq!(env.count("Token"), 2, "the new client authenticated on its own");
}

#[tokio::test]
async fn failed_long_running_operations_surface_the_operation_error() {
    let env = start().await;
    let lro_failure = |op: &str, status: u16, code: &str| FaultRule {
        operation: op.into(),
        action: FaultAction::LroFailure {
            status: Some(status),
            code: code.into(),
            message: Some(format!("{code} (injected)")),
        },
        count: Some(1),
        rate: None,
    };

    // Workspace PUT (both poll headers, as recorded): the status monitor says Failed with the operation's error.
    env.sim.handle.inject_fault(lro_failure("Workspaces_CreateOrUpdate", 400, "InvalidWorkspaceConfiguration"));
    let err = env.client.create_or_update_workspace(&env.ws("ws-fail"), &env.workspace_body(), &lro_opts()).await;
    let err = err.unwrap_err();
    assert!(matches!(err, ArmError::LroFailed { .. }), "{err:?}");
    assert_eq!((err.code(), err.class()), (Some("InvalidWorkspaceConfiguration"), ErrorClass::Permanent), "{err}");
    let ws = env.client.get_workspace(&env.ws("ws-fail")).await.unwrap().unwrap();
    assert_eq!(ws.properties.provisioning_state, Some(ProvisioningState::Failed));

    // Azure-AsyncOperation-polled (endpoint PUT): status Failed with the error object.
    env.create_workspace("ws-ok").await;
    env.sim.handle.inject_fault(lro_failure("OnlineEndpoints_CreateOrUpdate", 500, "InternalServerError"));
    let body = OnlineEndpoint {
        location: env.world.location.clone(),
        properties: OnlineEndpointProperties { auth_mode: "Key".into(), ..Default::default() },
        ..Default::default()
    };
    let err = env.client.create_or_update_online_endpoint(&env.ep("ws-ok", "ep-fail"), &body, &lro_opts()).await;
    match err.unwrap_err() {
        e @ ArmError::LroFailed { .. } => {
            assert_eq!(e.code(), Some("InternalServerError"));
            assert_eq!(e.class(), ErrorClass::Transient);
            assert!(e.to_string().contains("Failed"), "{e}");
        }
        other => panic!("expected LroFailed, got {other:?}"),
    }
}

// ---------------------------------------------------------------- errors, retries, throttling

/// Runs `f`, returning its result and how many calls to `operation` the simulator saw meanwhile.
async fn counting<T>(env: &Env, operation: &str, f: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = env.count(operation);
    let out = f.await;
    (out, env.count(operation) - before)
}

#[tokio::test]
async fn error_statuses_are_classified_and_not_retried() {
    let env = start().await;
    env.create_workspace("ws-err").await;

    // 401: a token the simulator no longer accepts (forced with a fault rule; the credential always has a valid one).
    env.sim.handle.inject_fault(FaultRule::error("ResourceGroups_Get", 401, "InvalidAuthenticationToken").times(1));
    let (r, n) = counting(&env, "ResourceGroups_Get", env.client.get_resource_group(&env.rg())).await;
    let err = r.unwrap_err();
    assert_eq!((err.status(), err.class(), n), (Some(401), ErrorClass::Auth, 1), "{err}");

    // 403: the least-privilege reader may read but not write.
    let reader = client_as(&env.world, &env.world.reader, &env.cloud);
    assert!(reader.get_resource_group(&env.rg()).await.unwrap().is_some());
    let body = ResourceGroupCreate { location: env.world.location.clone(), tags: None, managed_by: None };
    let (r, n) = counting(
        &env,
        "ResourceGroups_CreateOrUpdate",
        reader.create_or_update_resource_group(&env.other_rg("rg-denied"), &body),
    )
    .await;
    let err = r.unwrap_err();
    assert_eq!(
        (err.status(), err.code(), err.class(), n),
        (Some(403), Some("AuthorizationFailed"), ErrorClass::Auth, 1)
    );
    assert!(err.to_string().contains(&env.world.reader.object_id), "names the principal: {err}");
    let (r, n) = counting(&env, "StorageAccounts_ListKeys", reader.list_storage_account_keys(&env.sa())).await;
    assert_eq!((r.unwrap_err().status(), n), (Some(403), 1));

    // 404 on an action (GETs map 404 to None).
    let (r, n) = counting(&env, "Workspaces_ListKeys", env.client.list_workspace_keys(&env.ws("ws-missing"))).await;
    let err = r.unwrap_err();
    assert_eq!((err.status(), err.class(), n), (Some(404), ErrorClass::NotFound, 1), "{err}");
    assert!(err.is_not_found());

    // 409: a second PUT while the first is still provisioning (a long operation, so that a loaded machine cannot
    // finish it between the two calls).
    env.sim.handle.set_lro_duration(Duration::from_secs(120));
    let ws = env.ws("ws-busy");
    let first = env.client.begin_create_or_update_workspace(&ws, &env.workspace_body()).await.unwrap();
    assert!(matches!(first, LroStart::Pending(_)), "the first PUT is still running");
    let (r, n) = counting(
        &env,
        "Workspaces_CreateOrUpdate",
        env.client.begin_create_or_update_workspace(&ws, &env.workspace_body()),
    )
    .await;
    let err = r.unwrap_err();
    assert_eq!(
        (err.status(), err.code(), err.class(), n),
        (Some(409), Some("AnotherOperationInProgress"), ErrorClass::Conflict, 1)
    );
    env.sim.handle.set_lro_duration(Duration::from_millis(LRO_MS));

    // 400: a workspace without a location.
    let no_location = Workspace { location: None, ..env.workspace_body() };
    let (r, n) = counting(
        &env,
        "Workspaces_CreateOrUpdate",
        env.client.begin_create_or_update_workspace(&env.ws("ws-bad"), &no_location),
    )
    .await;
    let err = r.unwrap_err();
    assert_eq!(
        (err.status(), err.code(), err.class(), n),
        (Some(400), Some("LocationRequired"), ErrorClass::Permanent, 1)
    );
}

#[tokio::test]
async fn transient_errors_are_retried_until_success_or_budget() {
    let env = start().await;

    // 500 twice on a GET: retried, third attempt succeeds.
    env.sim.handle.inject_fault(FaultRule::error("StorageAccounts_GetProperties", 500, "InternalServerError").times(2));
    let (r, n) = counting(&env, "StorageAccounts_GetProperties", env.client.get_storage_account(&env.sa())).await;
    assert!(r.unwrap().is_some());
    assert_eq!(n, 3);

    // 503 on every attempt: gives up after max_attempts (4) with a transient error.
    env.sim.handle.inject_fault(FaultRule::error("ResourceGroups_Get", 503, "ServiceUnavailable").times(10));
    let (r, n) = counting(&env, "ResourceGroups_Get", env.client.get_resource_group(&env.rg())).await;
    let err = r.unwrap_err();
    assert_eq!((err.status(), err.class(), n), (Some(503), ErrorClass::Transient, 4), "{err}");
    env.sim.handle.clear_faults();

    // A 500 on a POST action is not retried: ARM may have done it (a second regenerateKey would rotate again).
    env.sim.handle.inject_fault(FaultRule::error("StorageAccounts_ListKeys", 500, "InternalServerError").times(1));
    let (r, n) = counting(&env, "StorageAccounts_ListKeys", env.client.list_storage_account_keys(&env.sa())).await;
    assert_eq!((r.unwrap_err().class(), n), (ErrorClass::Transient, 1));

    // 429 + Retry-After twice, even on a POST (ARM did not process it): retried after the wait, then succeeds.
    env.sim.handle.inject_fault(FaultRule {
        operation: "StorageAccounts_ListKeys".into(),
        action: FaultAction::Error {
            status: 429,
            code: "SubscriptionRequestsThrottled".into(),
            message: None,
            retry_after: Some(1),
        },
        count: Some(2),
        rate: None,
    });
    let started = Instant::now();
    let (r, n) = counting(&env, "StorageAccounts_ListKeys", env.client.list_storage_account_keys(&env.sa())).await;
    assert_eq!(r.unwrap().len(), 2);
    assert_eq!(n, 3);
    assert!(started.elapsed() >= Duration::from_secs(2), "honoured Retry-After: {:?}", started.elapsed());
}

#[tokio::test]
async fn client_converges_under_simulator_throttling() {
    let env = start().await;
    // A read bucket of 3 tokens refilled at 4/s: a burst of reads must hit 429s.
    env.sim.handle.set_throttle(ThrottleConfig {
        read_capacity: 3.0,
        read_refill_per_sec: 4.0,
        write_capacity: 200.0,
        write_refill_per_sec: 10.0,
    });
    let reads = 8;
    let sa = env.sa();
    let burst = futures::future::join_all((0..reads).map(|_| env.client.get_storage_account(&sa))).await;
    assert!(burst.into_iter().all(|r| r.is_ok_and(|a| a.is_some())), "every read of the burst eventually succeeds");
    let arm = |env: &Env| -> Vec<_> { env.sim.handle.calls().into_iter().filter(|c| c.operation != "Token").collect() };
    let calls = arm(&env);
    let ok = calls.iter().filter(|c| c.status == 200).count();
    let throttled: Vec<_> = calls.iter().filter(|c| c.status == 429).collect();
    assert_eq!(ok, reads);
    assert_eq!(calls.len(), ok + throttled.len(), "only 200s and 429s: {calls:?}");
    assert!(!throttled.is_empty(), "the burst was throttled");
    // Retry-After (1 s here) holds back the whole subscription: no request goes out within it after a 429.
    for (i, c) in calls.iter().enumerate().filter(|(_, c)| c.status == 200) {
        if let Some(last_429) = calls[..i].iter().rev().find(|p| p.status == 429) {
            let gap = c.time.duration_since(last_429.time);
            assert!(gap >= jiff::SignedDuration::from_millis(900), "request {} only {gap:?} after a 429", c.seq);
        }
    }

    // Sequential reads right after: the limiter paces them by the remaining-reads header, so none is throttled.
    env.sim.handle.clear_calls();
    for _ in 0..6 {
        assert!(env.client.get_resource_group(&env.rg()).await.unwrap().is_some());
    }
    let calls = arm(&env);
    assert_eq!(calls.len(), 6, "paced reads need no retries: {calls:?}");
    assert!(calls.iter().all(|c| c.status == 200));

    // Deletes draw on the write bucket and report `...-remaining-subscription-writes` (CONTRACTS §2): the client
    // paces them by that count too.
    env.sim.handle.set_throttle(ThrottleConfig {
        read_capacity: 250.0,
        read_refill_per_sec: 25.0,
        write_capacity: 3.0,
        write_refill_per_sec: 4.0,
    });
    env.sim.handle.clear_calls();
    for _ in 0..6 {
        let ra = RoleAssignmentRef::new(env.rg().resource_id(), Uuid::new_v4());
        assert!(env.client.delete_role_assignment(&ra).await.unwrap().is_none());
    }
    let calls = arm(&env);
    assert_eq!(calls.len(), 6, "paced deletes need no retries: {calls:?}");
    assert!(calls.iter().all(|c| c.status == 204), "{calls:?}");
}

// ---------------------------------------------------------------- secrets

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_debug_display_errors_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Process-wide: a thread-scoped subscriber loses events to tracing's per-callsite interest cache when other
    // tests run in parallel. Only this test installs one; the other tests' logs land in the buffer too.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let env = start().await;
    let o = lro_opts();
    env.create_workspace("ws-secret").await;
    env.create_endpoint("ws-secret", "ep-secret").await;
    let mut secrets = vec![env.storage_key("key1"), env.storage_key("key2"), env.world.operator.secret.expose().into()];
    let mut shown = String::new();

    // A client whose credential we hold, to read back the (cached) bearer token it sends.
    let cred =
        secret_credential(&env.world, &env.world.operator.client_id, env.world.operator.secret.expose(), &env.cloud);
    let client = ArmClient::new(cred.clone(), options(&env.cloud)).unwrap();
    let keys = client.list_storage_account_keys(&env.sa()).await.unwrap();
    shown.push_str(&format!("{keys:?}"));
    let rotated = client.regenerate_storage_account_key(&env.sa(), StorageKeyName::Key1).await.unwrap();
    shown.push_str(&format!("{rotated:?}"));
    secrets.push(env.storage_key("key1"));
    client.resync_workspace_keys(&env.ws("ws-secret"), &o).await.unwrap();
    let ws_keys = client.list_workspace_keys(&env.ws("ws-secret")).await.unwrap();
    shown.push_str(&format!("{ws_keys:?}"));
    assert_eq!(ws_keys.user_storage_key.as_ref().map(Secret::expose), Some(env.storage_key("key1").as_str()));
    let ep_keys = client.list_online_endpoint_keys(&env.ep("ws-secret", "ep-secret")).await.unwrap();
    shown.push_str(&format!("{ep_keys:?}"));
    secrets.extend(ep_keys.primary_key.iter().chain(ep_keys.secondary_key.iter()).map(|s| s.expose().to_owned()));
    for k in &ws_keys.container_registry_credentials.as_ref().unwrap().passwords {
        secrets.extend(k.value.iter().map(|s| s.expose().to_owned()));
    }

    // Errors on secret-bearing operations.
    env.sim.handle.inject_fault(FaultRule::error("StorageAccounts_ListKeys", 500, "InternalServerError").times(1));
    let err = client.list_storage_account_keys(&env.sa()).await.unwrap_err();
    shown.push_str(&format!("{err} {err:?}"));
    env.sim.handle.inject_fault(FaultRule::error("Workspaces_ListKeys", 403, "AuthorizationFailed").times(1));
    let err = client.list_workspace_keys(&env.ws("ws-secret")).await.unwrap_err();
    shown.push_str(&format!("{err} {err:?}"));
    let bad_secret = "another-Wrong-secret-987";
    secrets.push(bad_secret.into());
    let bad = ArmClient::new(
        secret_credential(&env.world, &env.world.operator.client_id, bad_secret, &env.cloud),
        options(&env.cloud),
    )
    .unwrap();
    let err = bad.list_storage_account_keys(&env.sa()).await.unwrap_err();
    shown.push_str(&format!("{err} {err:?}"));

    // The bearer token the client sent (cached in the shared credential) must not be logged either.
    let token = cred.get_token(&[env.cloud.arm_scope().as_str()], None).await.unwrap();
    secrets.push(token.token.secret().to_owned());

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("ARM call"), "the capture works: {logged}");
    for s in &secrets {
        assert!(!s.is_empty());
        assert!(!shown.contains(s.as_str()), "secret in Debug/Display output: {shown}");
        assert!(!logged.contains(s.as_str()), "secret in logs");
    }
}

// ---------------------------------------------------------------- official SDK (optional)

/// Runs tests/sdk/resource_group.py (the official Azure SDK for Python) against the simulator. Skipped, with a
/// notice, when `azure-identity` and `azure-mgmt-resource` are not importable by `$AZML_SDK_PYTHON` (default
/// `python3`).
#[tokio::test]
async fn official_python_sdk_against_the_simulator() {
    let python = std::env::var("AZML_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import azure.identity, azure.mgmt.resource.resources"])
        .output()
        .await;
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED official_python_sdk_against_the_simulator: {python} cannot import azure.identity and \
             azure.mgmt.resource (pip install azure-identity azure-mgmt-resource, or set AZML_SDK_PYTHON)"
        );
        return;
    }
    let env = start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sim-ca.pem");
    env.sim.write_ca(&ca).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/resource_group.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env("SIM_ENDPOINT", &env.sim.endpoint)
        .env("SIM_TENANT_ID", &env.world.tenant_id)
        .env("SIM_CLIENT_ID", &env.world.operator.client_id)
        .env("SIM_CLIENT_SECRET", env.world.operator.secret.expose())
        .env("SIM_SUBSCRIPTION_ID", &env.world.subscription_id)
        .env("SIM_RESOURCE_GROUP", "rg-from-python-sdk")
        .env("SIM_LOCATION", "westus2")
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("SSL_CERT_FILE", &ca)
        .env("AZURE_AUTHORITY_HOST", &env.sim.endpoint)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("SDK script timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SDK script failed ({}):\n{stdout}\n{stderr}", out.status);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let rg_id = format!("/subscriptions/{}/resourceGroups/rg-from-python-sdk", env.world.subscription_id);
    assert!(same_id(result["created"]["id"].as_str().unwrap(), &rg_id), "{result}");
    assert_eq!(result["got"]["tags"]["createdBy"], "azure-sdk-for-python");
    assert_eq!(result["exists"], true);

    // The SDK authenticated at the simulator's token endpoint and acted as the operator.
    let calls = env.sim.handle.calls();
    assert!(calls.iter().any(|c| c.operation == "Token" && c.status == 200), "{calls:?}");
    let put = calls.iter().find(|c| c.operation == "ResourceGroups_CreateOrUpdate").unwrap();
    assert_eq!((put.status, put.principal.as_deref()), (201, Some(env.world.operator.object_id.as_str())));
    // And our client sees what the SDK created.
    let rg = env.client.get_resource_group(&env.other_rg("rg-from-python-sdk")).await.unwrap().unwrap();
    assert_eq!(rg.location, "westus2");
}
