//! ARM client against small local HTTPS servers (axum behind rustls, throwaway CA from rcgen).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use azml_operator::azure::activity_log::{ActivityLogFilter, ActivityLogScope};
use azml_operator::azure::authorization::{PrincipalType, RoleAssignmentCreate, RoleAssignmentFilter};
use azml_operator::azure::credentials::{CredentialConfig, build_credential};
use azml_operator::azure::ids::{
    OnlineDeploymentName, OnlineEndpointName, ResourceGroupName, StorageAccountName, WorkspaceName,
};
use azml_operator::azure::online_endpoints::{
    EndpointKeyType, OnlineDeployment, OnlineEndpoint, RegenerateEndpointKeys,
};
use azml_operator::azure::resource_groups::ResourceGroupCreate;
use azml_operator::azure::resources::MoveRequest;
use azml_operator::azure::storage::StorageKeyName;
use azml_operator::azure::workspaces::{Workspace, WorkspaceProperties, WorkspaceUpdate, WorkspaceUpdateProperties};
use azml_operator::azure::{
    ArmClient, ArmClientOptions, ArmError, AzureCloud, ErrorClass, LroHandle, LroOptions, LroPoll, LroStart,
    OnlineDeploymentRef, OnlineEndpointRef, ResourceGroupRef, ResourceId, RetryPolicy, RoleAssignmentRef,
    RoleDefinitionId, Secret, StorageAccountRef, SubscriptionId, ThrottlePolicy, WorkspaceRef,
};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const SUB: &str = "00000000-1111-2222-3333-444444444444";
const TOKEN: &str = "test-bearer-token-value";

// ---------- test fixtures ----------

struct Tls {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

fn tls() -> Tls {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Tls { ca_pem: ca_cert.pem(), acceptor: TlsAcceptor::from(Arc::new(cfg)) }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    auth: Option<String>,
    body: Value,
}

type Responder = dyn Fn(&Seen, usize) -> Response + Send + Sync;

#[derive(Clone)]
struct Srv {
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Arc<Responder>,
}

async fn handle(State(srv): State<Srv>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let query =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let seen = Seen {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query,
        auth: parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        },
    };
    let n = {
        let mut s = srv.seen.lock().unwrap();
        s.push(seen.clone());
        s.len()
    };
    (srv.responder)(&seen, n)
}

struct Server {
    base: String,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(responder: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static) -> Server {
    azml_operator::tls_provider::install();
    let tls = tls();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback(handle).with_state(Srv { seen: seen.clone(), responder: Arc::new(responder) });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls.acceptor.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { base: format!("https://127.0.0.1:{port}"), ca_pem: tls.ca_pem, seen }
}

#[derive(Debug)]
struct StaticToken;

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _o: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(TOKEN, azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1)))
    }
}

fn cloud(srv: &Server) -> AzureCloud {
    AzureCloud::custom(&srv.base, &srv.base).unwrap().with_extra_root_ca_pem(srv.ca_pem.clone()).unwrap()
}

fn fast_options(srv: &Server) -> ArmClientOptions {
    ArmClientOptions {
        cloud: cloud(srv),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(2),
        },
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn client(srv: &Server) -> ArmClient {
    ArmClient::new(Arc::new(StaticToken), fast_options(srv)).unwrap()
}

fn lro_opts() -> LroOptions {
    LroOptions {
        timeout: Duration::from_secs(10),
        default_poll_interval: Duration::from_millis(5),
        max_poll_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

fn sub() -> SubscriptionId {
    SubscriptionId::new(SUB).unwrap()
}
fn rg() -> ResourceGroupRef {
    ResourceGroupRef::new(sub(), ResourceGroupName::new("rg-1").unwrap())
}
fn ws() -> WorkspaceRef {
    WorkspaceRef::new(rg(), WorkspaceName::new("ws1").unwrap())
}
fn sa() -> StorageAccountRef {
    StorageAccountRef::new(rg(), StorageAccountName::new("acct1").unwrap())
}
fn ep() -> OnlineEndpointRef {
    OnlineEndpointRef::new(ws(), OnlineEndpointName::new("ep1").unwrap())
}
fn dep() -> OnlineDeploymentRef {
    OnlineDeploymentRef::new(ep(), OnlineDeploymentName::new("blue").unwrap())
}
fn ws_path() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/ws1")
}

fn json_resp(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn with_headers(status: u16, headers: &[(&str, String)], body: Option<Value>) -> Response {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let status = StatusCode::from_u16(status).unwrap();
    match body {
        Some(b) => (status, h, axum::Json(b)).into_response(),
        None => (status, h, Bytes::new()).into_response(),
    }
}

fn arm_error(status: u16, code: &str) -> Response {
    with_headers(
        status,
        &[("x-ms-request-id", format!("req-{code}")), ("x-ms-correlation-request-id", "corr-1".into())],
        Some(json!({"error": {"code": code, "message": format!("{code} happened"), "target": "t"}})),
    )
}

// ---------- request shapes ----------

/// Answers every operation synchronously with a body of the right shape.
fn sync_responder(seen: &Seen, _n: usize) -> Response {
    let p = seen.path.as_str();
    let ws_body = json!({"id": ws_path(), "name": "ws1", "location": "westeurope",
        "properties": {"friendlyName": "F", "storageAccount": "/s", "provisioningState": "Succeeded", "unknownNew": {"x": 1}}});
    let keys = json!({"keys": [{"keyName": "key1", "value": "storage-secret-1", "permissions": "FULL"},
                               {"keyName": "key2", "value": "storage-secret-2", "permissions": "FULL"}]});
    let ra = json!({"id": "x", "name": "n", "properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/f6c7c914-8db3-469d-8ca1-694a8f32e121", "principalId": "ce2ce14e-85d7-4629-bdbc-454d0519d987"}});
    match (seen.method.clone(), p) {
        (Method::DELETE, p) if p.contains("roleAssignments") => with_headers(204, &[], None),
        (Method::DELETE, _) => with_headers(200, &[], None),
        (_, p) if p.ends_with("/workspaces/ws1/listKeys") => {
            json_resp(200, json!({"userStorageKey": "ws-secret-key", "userStorageArmId": "/s"}))
        }
        (_, p) if p.ends_with("/resyncKeys") => with_headers(200, &[], None),
        (_, p) if p.ends_with("/storageAccounts/acct1/listKeys") || p.ends_with("/regenerateKey") => {
            json_resp(200, keys)
        }
        (_, p) if p.ends_with("/onlineEndpoints/ep1/listKeys") => {
            json_resp(200, json!({"primaryKey": "ep-secret-1", "secondaryKey": "ep-secret-2"}))
        }
        (_, p) if p.ends_with("/regenerateKeys") => with_headers(200, &[], None),
        (_, p) if p.ends_with("/validateMoveResources") || p.ends_with("/moveResources") => {
            with_headers(204, &[], None)
        }
        (_, p)
            if p.ends_with("/roleAssignments")
                || p.ends_with("/values")
                || p.ends_with("Microsoft.Storage/storageAccounts") =>
        {
            json_resp(200, json!({"value": []}))
        }
        (_, p) if p.contains("/roleAssignments/") => json_resp(201, ra),
        (_, p) if p.ends_with("/storageAccounts/acct1") => json_resp(
            200,
            json!({"name": "acct1", "properties": {"keyCreationTime": {"key1": "2021-03-18T04:42:22.4322836Z", "key2": null}}}),
        ),
        (_, p) if p.ends_with("/deployments/blue") => json_resp(
            200,
            json!({"location": "westeurope", "properties": {"endpointComputeType": "Managed", "provisioningState": "Succeeded"}}),
        ),
        (_, p) if p.ends_with("/onlineEndpoints/ep1") => json_resp(
            200,
            json!({"location": "westeurope", "properties": {"authMode": "Key", "provisioningState": "Succeeded"}}),
        ),
        (_, p) if p.ends_with("/workspaces/ws1") => json_resp(200, ws_body),
        (_, p) if p.ends_with("/resourceGroups/rg-1") => {
            json_resp(200, json!({"name": "rg-1", "location": "westeurope"}))
        }
        _ => arm_error(404, "NoRoute"),
    }
}

/// (method, path, api-version, extra query, body) of one expected request.
type Expected = (Method, String, &'static str, Vec<(&'static str, String)>, Value);

#[tokio::test]
async fn every_operation_sends_the_documented_request() {
    let srv = serve(sync_responder).await;
    let c = client(&srv);
    let o = lro_opts();
    let rgp = format!("/subscriptions/{SUB}/resourceGroups/rg-1");
    let sap = format!("{rgp}/providers/Microsoft.Storage/storageAccounts/acct1");
    let epp = format!("{}/onlineEndpoints/ep1", ws_path());
    let ra_ref = RoleAssignmentRef::new(
        rg().resource_id(),
        uuid::Uuid::parse_str("05c5a614-a7d6-4502-b150-c2fb455033ff").unwrap(),
    );
    let role = RoleDefinitionId::parse(&format!(
        "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/f6c7c914-8db3-469d-8ca1-694a8f32e121"
    ))
    .unwrap();
    let principal = uuid::Uuid::parse_str("ce2ce14e-85d7-4629-bdbc-454d0519d987").unwrap();

    // (method, path, api-version, extra query, body) expected for each call, in order.
    let mut expected: Vec<Expected> = Vec::new();

    assert_eq!(c.get_resource_group(&rg()).await.unwrap().unwrap().location, "westeurope");
    expected.push((Method::GET, rgp.clone(), "2025-04-01", vec![], Value::Null));
    c.create_or_update_resource_group(
        &rg(),
        &ResourceGroupCreate { location: "westeurope".into(), tags: None, managed_by: None },
    )
    .await
    .unwrap();
    expected.push((Method::PUT, rgp.clone(), "2025-04-01", vec![], json!({"location": "westeurope"})));

    let w = c.get_workspace(&ws()).await.unwrap().unwrap();
    assert_eq!(w.properties.friendly_name.as_deref(), Some("F"));
    expected.push((Method::GET, ws_path(), "2025-09-01", vec![], Value::Null));
    let body = Workspace {
        location: Some("westeurope".into()),
        tags: Some([("a".to_string(), "b".to_string())].into()),
        properties: WorkspaceProperties { storage_account: Some("/s".into()), ..Default::default() },
        ..Default::default()
    };
    c.create_or_update_workspace(&ws(), &body, &o).await.unwrap();
    expected.push((
        Method::PUT,
        ws_path(),
        "2025-09-01",
        vec![],
        json!({"location": "westeurope", "tags": {"a": "b"}, "properties": {"storageAccount": "/s"}}),
    ));
    let upd = WorkspaceUpdate {
        properties: Some(WorkspaceUpdateProperties { description: Some("d".into()), ..Default::default() }),
        ..Default::default()
    };
    c.update_workspace(&ws(), &upd, &o).await.unwrap();
    expected.push((Method::PATCH, ws_path(), "2025-09-01", vec![], json!({"properties": {"description": "d"}})));
    c.delete_workspace(&ws(), true, &o).await.unwrap();
    expected.push((Method::DELETE, ws_path(), "2025-09-01", vec![("forceToPurge", "true".into())], Value::Null));
    let keys = c.list_workspace_keys(&ws()).await.unwrap();
    assert_eq!(keys.user_storage_key.as_ref().unwrap().expose(), "ws-secret-key");
    assert_eq!(keys.user_storage_resource_id.as_deref(), Some("/s"));
    assert!(!format!("{keys:?}").contains("ws-secret-key"));
    expected.push((Method::POST, format!("{}/listKeys", ws_path()), "2025-09-01", vec![], Value::Null));
    c.resync_workspace_keys(&ws(), &o).await.unwrap();
    expected.push((Method::POST, format!("{}/resyncKeys", ws_path()), "2025-09-01", vec![], Value::Null));

    let acct = c.get_storage_account(&sa()).await.unwrap().unwrap();
    assert_eq!(acct.properties.key_creation_time.unwrap().key1.as_deref(), Some("2021-03-18T04:42:22.4322836Z"));
    expected.push((Method::GET, sap.clone(), "2025-06-01", vec![], Value::Null));
    assert!(c.list_storage_accounts(sub()).await.unwrap().is_empty());
    expected.push((
        Method::GET,
        format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts"),
        "2025-06-01",
        vec![],
        Value::Null,
    ));
    let k = c.list_storage_account_keys(&sa()).await.unwrap();
    assert_eq!(k[1].value.expose(), "storage-secret-2");
    assert!(!format!("{k:?}").contains("storage-secret"));
    expected.push((Method::POST, format!("{sap}/listKeys"), "2025-06-01", vec![], Value::Null));
    c.regenerate_storage_account_key(&sa(), StorageKeyName::Key2).await.unwrap();
    expected.push((Method::POST, format!("{sap}/regenerateKey"), "2025-06-01", vec![], json!({"keyName": "key2"})));

    let created = c
        .create_role_assignment(
            &ra_ref,
            &RoleAssignmentCreate {
                role_definition_id: role.clone(),
                principal_id: principal,
                principal_type: Some(PrincipalType::ServicePrincipal),
                description: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.role_definition(), Some(role.clone()));
    let rap = format!("{rgp}/providers/Microsoft.Authorization/roleAssignments/05c5a614-a7d6-4502-b150-c2fb455033ff");
    expected.push((
        Method::PUT,
        rap.clone(),
        "2022-04-01",
        vec![],
        json!({"properties": {"roleDefinitionId": role.to_string(), "principalId": principal.to_string(), "principalType": "ServicePrincipal"}}),
    ));
    assert!(c.get_role_assignment(&ra_ref).await.unwrap().is_some());
    expected.push((Method::GET, rap.clone(), "2022-04-01", vec![], Value::Null));
    assert!(c.delete_role_assignment(&ra_ref).await.unwrap().is_none());
    expected.push((Method::DELETE, rap.clone(), "2022-04-01", vec![], Value::Null));
    c.list_role_assignments(&rg().resource_id(), Some(RoleAssignmentFilter::PrincipalId(principal))).await.unwrap();
    expected.push((
        Method::GET,
        format!("{rgp}/providers/Microsoft.Authorization/roleAssignments"),
        "2022-04-01",
        vec![("$filter", format!("principalId eq '{principal}'"))],
        Value::Null,
    ));

    let mv = MoveRequest {
        resources: vec![sa().resource_id()],
        target_resource_group: ResourceGroupRef::new(sub(), ResourceGroupName::new("rg-2").unwrap()),
    };
    let mv_body =
        json!({"resources": [sap.clone()], "targetResourceGroup": format!("/subscriptions/{SUB}/resourceGroups/rg-2")});
    c.validate_move_resources(&rg(), &mv, &o).await.unwrap();
    expected.push((Method::POST, format!("{rgp}/validateMoveResources"), "2025-04-01", vec![], mv_body.clone()));
    c.move_resources(&rg(), &mv, &o).await.unwrap();
    expected.push((Method::POST, format!("{rgp}/moveResources"), "2025-04-01", vec![], mv_body));

    let from: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
    let to: jiff::Timestamp = "2025-01-02T00:00:00Z".parse().unwrap();
    c.list_activity_log(sub(), &ActivityLogFilter { from, to, scope: ActivityLogScope::Resource(sa().resource_id()) })
        .await
        .unwrap();
    expected.push((
        Method::GET,
        format!("/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values"),
        "2015-04-01",
        vec![("$filter", format!("eventTimestamp ge '2025-01-01T00:00:00.0000000Z' and eventTimestamp le '2025-01-02T00:00:00.0000000Z' and resourceUri eq '{sap}'"))],
        Value::Null,
    ));

    let e = c.get_online_endpoint(&ep()).await.unwrap().unwrap();
    assert_eq!(e.properties.auth_mode, "Key");
    expected.push((Method::GET, epp.clone(), "2025-09-01", vec![], Value::Null));
    let ep_body = OnlineEndpoint {
        location: "westeurope".into(),
        properties: azml_operator::azure::online_endpoints::OnlineEndpointProperties {
            auth_mode: "Key".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    c.create_or_update_online_endpoint(&ep(), &ep_body, &o).await.unwrap();
    expected.push((
        Method::PUT,
        epp.clone(),
        "2025-09-01",
        vec![],
        json!({"location": "westeurope", "properties": {"authMode": "Key"}}),
    ));
    c.delete_online_endpoint(&ep(), &o).await.unwrap();
    expected.push((Method::DELETE, epp.clone(), "2025-09-01", vec![], Value::Null));
    let ek = c.list_online_endpoint_keys(&ep()).await.unwrap();
    assert_eq!(ek.primary_key.as_ref().unwrap().expose(), "ep-secret-1");
    assert!(!format!("{ek:?}").contains("ep-secret"));
    expected.push((Method::POST, format!("{epp}/listKeys"), "2025-09-01", vec![], Value::Null));
    c.regenerate_online_endpoint_keys(
        &ep(),
        &RegenerateEndpointKeys { key_type: EndpointKeyType::Secondary, key_value: None },
        &o,
    )
    .await
    .unwrap();
    expected.push((
        Method::POST,
        format!("{epp}/regenerateKeys"),
        "2025-09-01",
        vec![],
        json!({"keyType": "Secondary"}),
    ));
    let d = c.get_online_deployment(&dep()).await.unwrap().unwrap();
    assert_eq!(d.properties.endpoint_compute_type, "Managed");
    expected.push((Method::GET, format!("{epp}/deployments/blue"), "2025-09-01", vec![], Value::Null));
    let dep_body = OnlineDeployment { location: "westeurope".into(), ..Default::default() };
    c.create_or_update_online_deployment(&dep(), &dep_body, &o).await.unwrap();
    expected.push((
        Method::PUT,
        format!("{epp}/deployments/blue"),
        "2025-09-01",
        vec![],
        json!({"location": "westeurope", "properties": {"endpointComputeType": ""}}),
    ));
    c.delete_online_deployment(&dep(), &o).await.unwrap();
    expected.push((Method::DELETE, format!("{epp}/deployments/blue"), "2025-09-01", vec![], Value::Null));

    let seen = srv.seen();
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for (s, (method, path, api, extra, body)) in seen.iter().zip(expected) {
        assert_eq!(s.method, method, "{path}");
        assert_eq!(s.path, path);
        assert_eq!(s.query.get("api-version").map(String::as_str), Some(api), "{path}");
        assert_eq!(s.query.len(), 1 + extra.len(), "{path}: {:?}", s.query);
        for (k, v) in extra {
            assert_eq!(s.query.get(k), Some(&v), "{path}");
        }
        assert_eq!(s.body, body, "{method} {path}");
        assert_eq!(s.auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    }
}

// ---------- long-running operations ----------

#[tokio::test]
async fn lro_via_location_honours_retry_after_then_reads_original_uri() {
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let srv = serve(move |s, n| {
        let base = b2.lock().unwrap().clone();
        match (n, s.path.as_str()) {
            (1, _) => with_headers(
                202,
                &[("location", format!("{base}/ops/1?api-version=2025-09-01")), ("retry-after", "1".into())],
                None,
            ),
            (2, "/ops/1") => {
                with_headers(202, &[("location", format!("{base}/ops/2")), ("retry-after", "0".into())], None)
            }
            (3, "/ops/2") => with_headers(200, &[], Some(json!({"status": "done"}))),
            (4, p) if p == ws_path() => {
                json_resp(200, json!({"name": "ws1", "properties": {"provisioningState": "Succeeded"}}))
            }
            _ => arm_error(500, "Unexpected"),
        }
    })
    .await;
    *base.lock().unwrap() = srv.base.clone();
    let c = client(&srv);
    let started = Instant::now();
    let opts = LroOptions { max_poll_interval: Duration::from_secs(2), ..lro_opts() };
    let w = c.create_or_update_workspace(&ws(), &Workspace::default(), &opts).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After: 1 not honoured");
    assert_eq!(w.name.as_deref(), Some("ws1"));
    let paths: Vec<_> = srv.seen().into_iter().map(|s| (s.method, s.path)).collect();
    assert_eq!(
        paths,
        vec![
            (Method::PUT, ws_path()),
            (Method::GET, "/ops/1".into()),
            (Method::GET, "/ops/2".into()),
            (Method::GET, ws_path())
        ]
    );
}

/// ARM asks for up to 600 s between polls; the client never polls sooner than asked, neither in `wait_lro` (not cut
/// to `max_poll_interval`) nor through `poll_lro` called early (as a reconcile woken by something else would).
#[tokio::test]
async fn retry_after_is_honoured_in_full_and_across_early_poll_calls() {
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let srv = serve(move |s, n| {
        let base = b2.lock().unwrap().clone();
        match (n, s.path.as_str()) {
            (1, _) => with_headers(
                202,
                &[
                    ("location", format!("{base}/ops/1")),
                    ("azure-asyncoperation", format!("{base}/st/1")),
                    ("retry-after", "2".into()),
                ],
                None,
            ),
            (2, "/st/1") => json_resp(200, json!({"status": "Succeeded", "percentComplete": 100.0})),
            (3, p) if p == ws_path() => json_resp(200, json!({"name": "ws1"})),
            _ => arm_error(500, "Unexpected"),
        }
    })
    .await;
    *base.lock().unwrap() = srv.base.clone();
    let c = client(&srv);
    let started = Instant::now();
    let LroStart::Pending(handle) = c.begin_create_or_update_workspace(&ws(), &Workspace::default()).await.unwrap()
    else {
        panic!("202 is pending");
    };
    assert_eq!(handle.retry_after_secs, Some(2));
    assert!(handle.wait_remaining().is_some());
    // Polling right away sends nothing: the handle comes back unchanged.
    for _ in 0..3 {
        match c.poll_lro::<Workspace>(&handle).await.unwrap() {
            LroPoll::InProgress(h) => assert_eq!(h, handle),
            LroPoll::Done(_) => panic!("polled before Retry-After"),
        }
    }
    assert_eq!(srv.seen().len(), 1, "only the PUT reached the server");
    // The handle survives serialisation (status) with its deadline.
    let stored: LroHandle = serde_json::from_str(&serde_json::to_string(&handle).unwrap()).unwrap();
    assert!(stored.wait_remaining().is_some());
    // wait_lro waits the full 2 s although max_poll_interval is 50 ms.
    let w: Workspace = c.wait_lro(stored, &lro_opts()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1950), "polled after {:?}", started.elapsed());
    assert_eq!(w.name.as_deref(), Some("ws1"));
    assert_eq!(srv.seen().len(), 3);
}

#[tokio::test]
async fn lro_via_azure_async_operation_succeeds_and_fails() {
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let srv = serve(move |s, _n| {
        let base = b2.lock().unwrap().clone();
        match (s.method.clone(), s.path.as_str()) {
            (Method::PUT, p) if p.ends_with("/ep1") => with_headers(
                201,
                &[("azure-asyncoperation", format!("{base}/status/ok")), ("x-ms-async-operation-timeout", "PT1H".into())],
                Some(json!({"location": "westeurope", "properties": {"authMode": "Key", "provisioningState": "Creating"}})),
            ),
            (Method::PUT, p) if p.ends_with("/ep2") => {
                with_headers(201, &[("azure-asyncoperation", format!("{base}/status/bad"))], Some(json!({"location": "x"})))
            }
            (Method::GET, "/status/ok") => json_resp(200, json!({"status": if OK_POLLS.fetch_add(1, Ordering::SeqCst) == 0 { "InProgress" } else { "Succeeded" }})),
            (Method::GET, "/status/bad") => {
                json_resp(200, json!({"status": "Failed", "error": {"code": "QuotaExceeded", "message": "no cores"}}))
            }
            (Method::GET, p) if p.ends_with("/ep1") => {
                json_resp(200, json!({"location": "westeurope", "properties": {"authMode": "Key", "provisioningState": "Succeeded"}}))
            }
            _ => arm_error(500, "Unexpected"),
        }
    })
    .await;
    static OK_POLLS: AtomicUsize = AtomicUsize::new(0);
    *base.lock().unwrap() = srv.base.clone();
    let c = client(&srv);
    let body = OnlineEndpoint { location: "westeurope".into(), ..Default::default() };
    let done = c.create_or_update_online_endpoint(&ep(), &body, &lro_opts()).await.unwrap();
    assert_eq!(done.properties.provisioning_state, Some(azml_operator::azure::models::ProvisioningState::Succeeded));
    assert_eq!(OK_POLLS.load(Ordering::SeqCst), 2);

    let ep2 = OnlineEndpointRef::new(ws(), OnlineEndpointName::new("ep2").unwrap());
    let err = c.create_or_update_online_endpoint(&ep2, &body, &lro_opts()).await.unwrap_err();
    assert!(matches!(err, ArmError::LroFailed { .. }), "{err:?}");
    assert_eq!(err.code(), Some("QuotaExceeded"));
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn lro_handle_resumes_after_restart_without_reissuing_the_put() {
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let srv = serve(move |s, _n| {
        let base = b2.lock().unwrap().clone();
        match (s.method.clone(), s.path.as_str()) {
            (Method::PUT, _) => {
                with_headers(202, &[("location", format!("{base}/ops/9")), ("retry-after", "0".into())], None)
            }
            (Method::GET, "/ops/9") => with_headers(200, &[], None),
            (Method::GET, _) => json_resp(200, json!({"name": "ws1"})),
            _ => arm_error(500, "Unexpected"),
        }
    })
    .await;
    *base.lock().unwrap() = srv.base.clone();
    let stored = {
        let c = client(&srv);
        match c.begin_create_or_update_workspace(&ws(), &Workspace::default()).await.unwrap() {
            LroStart::Pending(h) => serde_json::to_string(&h).unwrap(),
            LroStart::Done(_) => panic!("expected a pending operation"),
        }
    };
    // A new client (as after an operator restart) resumes from the stored JSON.
    let handle: LroHandle = serde_json::from_str(&stored).unwrap();
    assert_eq!(handle.operation, "Workspaces_CreateOrUpdate");
    let c2 = client(&srv);
    let w: Workspace = c2.wait_lro(handle, &lro_opts()).await.unwrap();
    assert_eq!(w.name.as_deref(), Some("ws1"));
    let puts = srv.seen().iter().filter(|s| s.method == Method::PUT).count();
    assert_eq!(puts, 1);

    // A tampered handle pointing elsewhere is refused before any request carries the token.
    let mut evil: LroHandle = serde_json::from_str(&stored).unwrap();
    evil.poll_url = "https://attacker.example/steal".into();
    let before = srv.seen().len();
    let err = c2.poll_lro::<Workspace>(&evil).await.unwrap_err();
    assert!(matches!(err, ArmError::Protocol { .. }), "{err:?}");
    assert_eq!(srv.seen().len(), before);
}

#[tokio::test]
async fn lro_wait_times_out_and_can_be_cancelled() {
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let srv = serve(move |s, _n| {
        let base = b2.lock().unwrap().clone();
        match s.method {
            Method::PUT => with_headers(202, &[("location", format!("{base}/ops/forever"))], None),
            _ => with_headers(202, &[], None),
        }
    })
    .await;
    *base.lock().unwrap() = srv.base.clone();
    let c = client(&srv);
    let opts = LroOptions { timeout: Duration::from_millis(100), ..lro_opts() };
    let err = c.create_or_update_workspace(&ws(), &Workspace::default(), &opts).await.unwrap_err();
    assert!(matches!(err, ArmError::LroTimeout { .. }), "{err:?}");
    let opts = lro_opts();
    opts.cancel.cancel();
    let err = c.create_or_update_workspace(&ws(), &Workspace::default(), &opts).await.unwrap_err();
    assert!(matches!(err, ArmError::Cancelled { .. }), "{err:?}");
}

// ---------- paging ----------

#[tokio::test]
async fn list_follows_next_link_and_refuses_foreign_links() {
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let srv = serve(move |s, _n| {
        let base = b2.lock().unwrap().clone();
        let item = |n: &str| json!({"name": n, "properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", "principalId": "p"}});
        match s.query.get("$skipToken").map(String::as_str) {
            None if s.path.contains("rg-evil") => json_resp(200, json!({"value": [item("a")], "nextLink": "https://evil.example/next"})),
            None => json_resp(200, json!({"value": [item("a")], "nextLink": format!("{base}{}?api-version=2022-04-01&$skipToken=p2", s.path)})),
            Some("p2") => json_resp(200, json!({"value": [item("b"), item("c")], "nextLink": null})),
            _ => arm_error(400, "BadToken"),
        }
    })
    .await;
    *base.lock().unwrap() = srv.base.clone();
    let c = client(&srv);
    let all = c.list_role_assignments(&rg().resource_id(), Some(RoleAssignmentFilter::AtScope)).await.unwrap();
    let names: Vec<_> = all.iter().map(|r| r.name.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(srv.seen()[0].query.get("$filter").map(String::as_str), Some("atScope()"));
    let evil = ResourceGroupRef::new(sub(), ResourceGroupName::new("rg-evil").unwrap());
    let err = c.list_role_assignments(&evil.resource_id(), None).await.unwrap_err();
    assert!(matches!(err, ArmError::Protocol { .. }), "{err:?}");
}

// ---------- retries and error classes ----------

#[tokio::test]
async fn retries_429_with_retry_after_and_500_then_succeeds() {
    let srv = serve(|s, n| match (s.path.ends_with("rg-1"), n) {
        (true, 1) => with_headers(
            429,
            &[("retry-after", "1".into())],
            Some(json!({"error": {"code": "SubscriptionRequestsThrottled", "message": "slow down"}})),
        ),
        (true, 2) => arm_error(500, "InternalServerError"),
        (true, _) => json_resp(200, json!({"name": "rg-1", "location": "x"})),
        _ => arm_error(404, "NoRoute"),
    })
    .await;
    let c = client(&srv);
    let started = Instant::now();
    let g = c.get_resource_group(&rg()).await.unwrap().unwrap();
    assert_eq!(g.name.as_deref(), Some("rg-1"));
    assert_eq!(srv.seen().len(), 3);
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After not honoured: {:?}", started.elapsed());
}

#[tokio::test]
async fn permanent_errors_are_classified_and_not_retried() {
    let srv = serve(|s, _n| {
        // Route by the resource group segment (the last segment may be an assignment GUID).
        let code =
            s.path.split("/resourceGroups/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_owned();
        match code.as_str() {
            "e400" => arm_error(400, "InvalidRequestContent"),
            "e403" => arm_error(403, "AuthorizationFailed"),
            "e404" => arm_error(404, "ResourceNotFound"),
            "e409" => arm_error(409, "RoleAssignmentExists"),
            "e503" => arm_error(503, "ServiceUnavailable"),
            _ => json_resp(418, json!("not an envelope")),
        }
    })
    .await;
    let c = client(&srv);
    let cases = [
        ("e400", ErrorClass::Permanent, 1),
        ("e403", ErrorClass::Auth, 1),
        ("e409", ErrorClass::Conflict, 1),
        ("e503", ErrorClass::Transient, 3),
    ];
    for (name, class, attempts) in cases {
        let before = srv.seen().len();
        let r = RoleAssignmentRef::new(
            ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/{name}")).unwrap(),
            uuid::Uuid::new_v4(),
        );
        let err = c
            .create_role_assignment(
                &r,
                &RoleAssignmentCreate {
                    role_definition_id: RoleDefinitionId::new(None, uuid::Uuid::new_v4()),
                    principal_id: uuid::Uuid::new_v4(),
                    principal_type: None,
                    description: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(srv.seen().len() - before, attempts, "{name}");
        assert_eq!(err.class(), class, "{name}: {err}");
        assert_eq!(err.request_id(), Some(format!("req-{}", err.code().unwrap()).as_str()));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "token leaked into error: {shown}");
    }
    // 404 on a GET is "absent", on other calls a NotFound error.
    let missing = WorkspaceRef::new(
        ResourceGroupRef::new(sub(), ResourceGroupName::new("e404").unwrap()),
        WorkspaceName::new("e404").unwrap(),
    );
    assert!(c.get_workspace(&missing).await.unwrap().is_none());
    let err = c.list_workspace_keys(&missing).await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.code(), Some("ResourceNotFound"));
    assert_eq!(srv.seen().last().unwrap().path, format!("{}/listKeys", missing.id()));
}

#[tokio::test]
async fn limiter_slows_down_when_remaining_reads_run_low() {
    let srv = serve(|_s, _n| {
        with_headers(
            200,
            &[("x-ms-ratelimit-remaining-subscription-reads", "50".into())],
            Some(json!({"name": "rg-1", "location": "x"})),
        )
    })
    .await;
    let opts = ArmClientOptions {
        throttle: ThrottlePolicy {
            read_threshold: 100,
            write_threshold: 100,
            max_delay: Duration::from_millis(600),
            stale_after: Duration::from_secs(30),
        },
        ..fast_options(&srv)
    };
    let c = ArmClient::new(Arc::new(StaticToken), opts).unwrap();
    c.get_resource_group(&rg()).await.unwrap();
    let t1 = Instant::now();
    c.get_resource_group(&rg()).await.unwrap();
    let second = t1.elapsed();
    assert!(second >= Duration::from_millis(290), "second call not delayed: {second:?}");
    // Writes use their own bucket and are not slowed.
    assert_eq!(c.limiter().delay_for(sub(), azml_operator::azure::throttle::RequestKind::Write), Duration::ZERO);
}

#[test]
fn path_injection_is_rejected_before_any_request() {
    for bad in ["../other", "ws/x", "ws?x=1", "ws%2Fx", "ws#f"] {
        assert!(WorkspaceName::new(bad).is_err(), "{bad}");
        assert!(ResourceGroupName::new(bad).is_err(), "{bad}");
        assert!(OnlineDeploymentName::new(bad).is_err(), "{bad}");
    }
    assert!(
        ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a%2F.."
        ))
        .is_err()
    );
    assert!(
        WorkspaceRef::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/../x"
        ))
        .is_err()
    );
    let s = Secret::new("abc");
    assert_eq!(format!("{s:?} {s}"), "[REDACTED] [REDACTED]");
}

// ---------- credentials ----------

#[tokio::test]
async fn client_secret_credential_gets_token_over_tls_with_custom_ca() {
    let token_calls = Arc::new(AtomicUsize::new(0));
    let tc = token_calls.clone();
    let forms = Arc::new(Mutex::new(Vec::<HashMap<String, String>>::new()));
    let f2 = forms.clone();
    let srv = serve(move |s, _n| {
        if s.path == "/my-tenant/oauth2/v2.0/token" && s.method == Method::POST {
            tc.fetch_add(1, Ordering::SeqCst);
            let form: HashMap<String, String> = match &s.body {
                Value::String(raw) => url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect(),
                _ => HashMap::new(),
            };
            f2.lock().unwrap().push(form);
            return json_resp(200, json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "issued-by-fake-entra"}));
        }
        if s.auth.as_deref() == Some("Bearer issued-by-fake-entra") {
            json_resp(200, json!({"name": "rg-1", "location": "x"}))
        } else {
            arm_error(401, "InvalidAuthenticationToken")
        }
    })
    .await;
    let cloud = cloud(&srv);
    let cred = build_credential(
        &CredentialConfig::ClientSecret {
            tenant_id: "my-tenant".into(),
            client_id: "app-1".into(),
            client_secret: Secret::new("s3cr3t-value"),
        },
        &cloud,
    )
    .unwrap();
    let c = ArmClient::new(cred, ArmClientOptions { cloud: cloud.clone(), ..fast_options(&srv) }).unwrap();
    c.get_resource_group(&rg()).await.unwrap().unwrap();
    c.get_resource_group(&rg()).await.unwrap().unwrap();
    assert_eq!(token_calls.load(Ordering::SeqCst), 1, "token not cached");
    let form = forms.lock().unwrap()[0].clone();
    assert_eq!(form.get("client_secret").map(String::as_str), Some("s3cr3t-value"));
    assert_eq!(form.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(form.get("scope"), Some(&format!("{}/.default", srv.base)));

    // Without the CA the TLS handshake fails: no code path skips verification.
    let untrusted = AzureCloud::custom(&srv.base, &srv.base).unwrap();
    let cred = build_credential(
        &CredentialConfig::ClientSecret {
            tenant_id: "my-tenant".into(),
            client_id: "app-1".into(),
            client_secret: Secret::new("s3cr3t-value"),
        },
        &untrusted,
    )
    .unwrap();
    let c = ArmClient::new(cred, ArmClientOptions { cloud: untrusted, ..fast_options(&srv) }).unwrap();
    let err = c.get_resource_group(&rg()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cr3t-value"));
    assert_eq!(token_calls.load(Ordering::SeqCst), 1);
}
