//! The ARM simulator over HTTPS, checked against the official ARM examples (status codes, headers, JSON shape).
//!
//! Examples are copied byte-for-byte from Azure/azure-rest-api-specs into tests/fixtures/azure-examples.

use std::sync::Arc;
use std::time::Duration;

use azml_arm_simulator::{
    ArmSimulator, FaultAction, FaultRule, RunningSim, SimConfig, StorageLimits, ThrottleConfig, WindowLimit, World,
    roles,
};
use azml_operator::azure::activity_log::odata_time;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ML: &str = "2025-09-01";
const STORAGE: &str = "2025-06-01";
const AUTHZ: &str = "2022-04-01";
const RES: &str = "2025-04-01";

fn example(rel: &str) -> Value {
    let path = format!("{}/tests/fixtures/azure-examples/{rel}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every key of `expected` must exist in `actual` with the same JSON type (null in either matches anything).
fn assert_shape(actual: &Value, expected: &Value, path: &str, ignore: &[&str]) {
    if ignore.contains(&path) {
        return;
    }
    match (actual, expected) {
        (_, Value::Null) | (Value::Null, _) => {}
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if ignore.contains(&p.as_str()) {
                    continue;
                }
                let av = a.get(k).unwrap_or_else(|| panic!("missing key {p}; actual: {actual}"));
                assert_shape(av, ev, &p, ignore);
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            if let (Some(af), Some(ef)) = (a.first(), e.first()) {
                assert_shape(af, ef, &format!("{path}[]"), ignore);
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_)) => {}
        _ => panic!("type mismatch at {path}: actual {actual} vs expected {expected}"),
    }
}

struct Env {
    sim: RunningSim,
    world: World,
    http: reqwest::Client,
    token: String,
}

struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn h(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }
}

fn http_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(10)).build().unwrap()
}

async fn start_with(f: impl FnOnce(&mut SimConfig)) -> Env {
    let world = World::default_sandbox();
    let mut cfg = SimConfig::new(world.state.clone());
    cfg.lro_duration = Duration::from_millis(60);
    f(&mut cfg);
    let sim = ArmSimulator::start(cfg).await.unwrap();
    let http = http_client(&sim.ca_pem);
    let token = get_token(&http, &sim, &world.operator.client_id, world.operator.secret.expose()).await;
    Env { sim, world, http, token }
}

async fn start() -> Env {
    start_with(|_| {}).await
}

async fn get_token(http: &reqwest::Client, sim: &RunningSim, client_id: &str, secret: &str) -> String {
    let r = http
        .post(sim.token_url())
        .form(&[
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", "https://management.azure.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

impl Env {
    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        api: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            match api {
                Some(v) => format!("{}{path}{sep}api-version={v}", self.sim.endpoint),
                None => format!("{}{path}", self.sim.endpoint),
            }
        };
        let mut rb = self.http.request(method, url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        Resp { status, headers, body }
    }

    async fn call(&self, method: Method, path: &str, api: &str, body: Option<Value>) -> Resp {
        self.call_as(Some(&self.token), method, path, Some(api), body).await
    }

    /// Polls a Location URL until it stops answering 202.
    async fn poll_location(&self, url: &str) -> Resp {
        for _ in 0..100 {
            let r = self.call_as(Some(&self.token), Method::GET, url, None, None).await;
            if r.status != StatusCode::ACCEPTED {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("LRO did not finish");
    }

    /// Polls an Azure-AsyncOperation URL until a terminal status.
    async fn poll_async(&self, url: &str) -> Value {
        for _ in 0..100 {
            let r = self.call_as(Some(&self.token), Method::GET, url, None, None).await;
            assert_eq!(r.status, 200);
            let s = r.body["status"].as_str().unwrap().to_string();
            if s != "InProgress" {
                return r.body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("async operation did not finish");
    }

    fn ws_id(&self, name: &str) -> String {
        format!("{}/providers/Microsoft.MachineLearningServices/workspaces/{name}", self.world.resource_group_id)
    }

    fn ws_body(&self) -> Value {
        json!({
            "location": self.world.location,
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "storageAccount": self.world.storage_account_id,
                "keyVault": self.world.key_vault_id,
                "applicationInsights": self.world.app_insights_id,
                "containerRegistry": self.world.container_registry_id,
            }
        })
    }

    async fn create_ws(&self, name: &str) -> Resp {
        let r = self.call(Method::PUT, &self.ws_id(name), ML, Some(self.ws_body())).await;
        assert_eq!(r.status, 202, "{}", r.body);
        self.poll_location(&r.h("location").unwrap()).await
    }
}

/// Replaces the example's foreign ids with the sandbox's.
fn rewrite_example_body(env: &Env, mut body: Value) -> Value {
    let p = &mut body["properties"];
    p["storageAccount"] = json!(env.world.storage_account_id);
    p["keyVault"] = json!(env.world.key_vault_id);
    p["applicationInsights"] = json!(env.world.app_insights_id);
    p["containerRegistry"] = json!(env.world.container_registry_id);
    body
}

#[tokio::test]
async fn tokens_openid_and_authentication() {
    let env = start().await;
    // OpenID configuration points at the token endpoint of the same server.
    let r = env
        .call_as(
            None,
            Method::GET,
            &format!("/{}/v2.0/.well-known/openid-configuration", env.sim.tenant_id),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["token_endpoint"], json!(env.sim.token_url()));

    // Wrong secret / unknown client / wrong tenant.
    let form = |id: &str, secret: &str| {
        vec![
            ("client_id".to_string(), id.to_string()),
            ("client_secret".to_string(), secret.to_string()),
            ("scope".to_string(), "https://management.azure.com/.default".to_string()),
            ("grant_type".to_string(), "client_credentials".to_string()),
        ]
    };
    let r = env.http.post(env.sim.token_url()).form(&form(&env.world.operator.client_id, "nope")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"].as_str().unwrap().starts_with("AADSTS7000215"));
    let r = env.http.post(env.sim.token_url()).form(&form("unknown-app", "x")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = env
        .http
        .post(format!("{}/other-tenant/oauth2/v2.0/token", env.sim.endpoint))
        .form(&form(&env.world.operator.client_id, env.world.operator.secret.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Federated app: an assertion signed by the issuer its federated credential names, with that credential's subject
    // and audience, is accepted; anything else is refused with Entra's code. The secret-only app cannot use one.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let issuer = env.world.federated_issuer.clone();
    let good = json!({"sub": env.world.federated_subject, "aud": ["api://AzureADTokenExchange"]});
    let form = |client: &str, assertion: &str| {
        vec![
            ("client_id".to_string(), client.to_string()),
            ("client_assertion".to_string(), assertion.to_string()),
            ("client_assertion_type".to_string(), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string()),
            ("scope".to_string(), "https://management.azure.com/.default".to_string()),
            ("grant_type".to_string(), "client_credentials".to_string()),
        ]
    };
    let assertion = issuer.token(&good);
    let fed = |client: &str| form(client, &assertion);
    let r = env.http.post(env.sim.token_url()).form(&fed(&env.world.federated.client_id)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let fed_token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    assert_eq!(fed_token.split('.').count(), 3);
    let refused = |assertion: String| {
        let env = &env;
        let form = form(&env.world.federated.client_id, &assertion);
        async move {
            let r = env.http.post(env.sim.token_url()).form(&form).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap()["error_codes"][0].as_u64().unwrap_or_default())
        }
    };
    let unsigned = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "ES256", "kid": issuer.kid})),
        b64(
            &json!({"iss": issuer.issuer, "sub": env.world.federated_subject, "aud": "api://AzureADTokenExchange", "exp": 9_999_999_999i64})
        )
    );
    assert_eq!(refused(unsigned).await, (401, 50013), "unsigned");
    let stranger = azml_arm_simulator::OidcIssuerKey::generate(&issuer.issuer);
    assert_eq!(refused(stranger.token(&good)).await, (401, 50013), "signed by a key the issuer does not publish");
    assert_eq!(
        refused(issuer.token(&json!({"sub": env.world.federated_subject, "aud": "api://other"}))).await,
        (401, 700212)
    );
    assert_eq!(
        refused(issuer.token(&json!({"sub": "system:serviceaccount:x:y", "aud": "api://AzureADTokenExchange"}))).await,
        (401, 700213)
    );
    let other_issuer = azml_arm_simulator::OidcIssuerKey::generate("https://oidc.elsewhere.invalid");
    assert_eq!(refused(other_issuer.token(&good)).await, (401, 700211));
    let r = env.http.post(env.sim.token_url()).form(&fed(&env.world.operator.client_id)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let sa = env.world.storage_account_id.clone();
    // No token → 401 with WWW-Authenticate; garbage token → 401 InvalidAuthenticationToken.
    let r = env.call_as(None, Method::GET, &sa, Some(STORAGE), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "AuthenticationFailed");
    assert!(r.h("www-authenticate").unwrap().starts_with("Bearer authorization_uri="));
    let r = env.call_as(Some("a.b.c"), Method::GET, &sa, Some(STORAGE), None).await;
    assert_eq!(r.body["error"]["code"], "InvalidAuthenticationToken");
    let r = env.call_as(Some(&fed_token), Method::GET, &sa, Some(STORAGE), None).await;
    assert_eq!(r.status, 200);

    // RBAC: nobody → 403 naming principal, action, scope; Reader can read but not listKeys.
    let nobody = get_token(&env.http, &env.sim, &env.world.nobody.client_id, env.world.nobody.secret.expose()).await;
    let r = env.call_as(Some(&nobody), Method::GET, &sa, Some(STORAGE), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["code"], "AuthorizationFailed");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&env.world.nobody.object_id)
            && msg.contains("Microsoft.Storage/storageAccounts/read")
            && msg.contains(&sa)
    );
    let reader = get_token(&env.http, &env.sim, &env.world.reader.client_id, env.world.reader.secret.expose()).await;
    assert_eq!(env.call_as(Some(&reader), Method::GET, &sa, Some(STORAGE), None).await.status, 200);
    let r = env.call_as(Some(&reader), Method::POST, &format!("{sa}/listKeys"), Some(STORAGE), None).await;
    assert_eq!(r.status, 403);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("Microsoft.Storage/storageAccounts/listKeys/action"));
    // Token calls are logged separately from ARM reads/writes.
    assert!(env.sim.handle.count("Token") >= 4);
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    let env = start_with(|c| c.token_lifetime = Duration::from_millis(300)).await;
    assert_eq!(env.call(Method::GET, &env.world.storage_account_id, STORAGE, None).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = env.call(Method::GET, &env.world.storage_account_id, STORAGE, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "ExpiredAuthenticationToken");
}

#[tokio::test]
async fn api_version_errors_and_newer_versions() {
    let env = start().await;
    let sa = env.world.storage_account_id.clone();
    let r = env.call_as(Some(&env.token), Method::GET, &sa, None, None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "MissingApiVersionParameter");
    let r = env.call(Method::GET, &sa, "2025-6-1", None).await;
    assert_eq!(r.body["error"]["code"], "InvalidApiVersionParameter");
    let r = env.call(Method::GET, &sa, "2014-01-01", None).await;
    assert_eq!(r.body["error"]["code"], "NoRegisteredProviderFound");
    // Only versions the specs publish: a made-up one is refused, an older published one (the recordings') served.
    let r = env.call(Method::GET, &sa, "2026-01-01-preview", None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("NoRegisteredProviderFound"))
    );
    assert_eq!(env.call(Method::GET, &sa, "2022-05-01", None).await.status, 200);
    let r = env.call(Method::GET, &env.ws_id("w"), "2099-01-01-preview", None).await;
    assert_eq!(r.body["error"]["code"], "NoRegisteredProviderFound");
    // ARM's own types answer InvalidApiVersionParameter, listing what is supported.
    let r = env.call(Method::GET, &env.world.resource_group_id, "2099-01-01", None).await;
    assert_eq!(r.body["error"]["code"], "InvalidApiVersionParameter");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("2025-04-01"), "{}", r.body);
    // Case-insensitive ids.
    assert_eq!(env.call(Method::GET, &sa.to_uppercase(), STORAGE, None).await.status, 200);
}

#[tokio::test]
async fn resource_group_create_matches_example() {
    let env = start().await;
    let ex = example("resources/CreateResourceGroup.json");
    let path = format!("/subscriptions/{}/resourcegroups/my-resource-group", env.world.subscription_id);
    let r = env.call(Method::PUT, &path, RES, Some(ex["parameters"]["parameters"].clone())).await;
    assert_eq!(r.status, 201);
    assert_shape(&r.body, &ex["responses"]["201"]["body"], "", &[]);
    let r = env.call(Method::PUT, &path, RES, Some(ex["parameters"]["parameters"].clone())).await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &ex["responses"]["200"]["body"], "", &[]);
    let r = env.call(Method::GET, &path.to_uppercase().replace("SUBSCRIPTIONS", "subscriptions"), RES, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "my-resource-group");
    let r = env.call(Method::PUT, &path, RES, Some(json!({"location": "westeurope"}))).await;
    assert_eq!(r.status, 409);
    let r = env
        .call(Method::GET, &format!("/subscriptions/{}/resourceGroups/missing", env.world.subscription_id), RES, None)
        .await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("ResourceGroupNotFound")));
    // Delete is an LRO with Location only; the poll ends in 200 with an empty body (recorded).
    let r = env.call(Method::DELETE, &path, RES, None).await;
    assert_eq!(r.status, 202);
    assert!(r.h("azure-asyncoperation").is_none());
    let loc = r.h("location").unwrap();
    assert!(loc.contains(&format!("/subscriptions/{}/operationresults/", env.world.subscription_id)), "{loc}");
    let done = env.poll_location(&loc).await;
    assert_eq!((done.status, &done.body), (StatusCode::OK, &Value::Null));
    assert_eq!(env.call(Method::GET, &path, RES, None).await.status, 404);
}

#[tokio::test]
async fn storage_get_list_keys_regenerate_match_examples() {
    let env = start().await;
    let sa = env.world.storage_account_id.clone();
    let r = env.call(Method::GET, &format!("{sa}?$expand=geoReplicationStats"), STORAGE, None).await;
    assert_eq!(r.status, 200);
    // Tags are whatever the account was created with.
    assert_shape(
        &r.body,
        &example("storage/StorageAccountGetProperties.json")["responses"]["200"]["body"],
        "",
        &["tags"],
    );
    let t1_before = r.body["properties"]["keyCreationTime"]["key1"].as_str().unwrap().to_string();
    let t2_before = r.body["properties"]["keyCreationTime"]["key2"].as_str().unwrap().to_string();
    assert!(r.h("x-ms-ratelimit-remaining-subscription-reads").is_some());
    assert!(r.h("x-ms-request-id").is_some());

    let r = env.call(Method::POST, &format!("{sa}/listKeys"), STORAGE, None).await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &example("storage/StorageAccountListKeys.json")["responses"]["200"]["body"], "", &[]);
    assert!(r.h("x-ms-ratelimit-remaining-subscription-writes").is_some());
    let key1 = r.body["keys"][0]["value"].as_str().unwrap().to_string();
    assert_eq!(key1, env.sim.handle.storage_key(&sa, "key1").unwrap().expose());

    let since = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = env.call(Method::POST, &format!("{sa}/regenerateKey"), STORAGE, Some(json!({"keyName": "key1"}))).await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &example("storage/StorageAccountRegenerateKey.json")["responses"]["200"]["body"], "", &[]);
    assert_ne!(r.body["keys"][0]["value"].as_str().unwrap(), key1);
    let r = env.call(Method::POST, &format!("{sa}/regenerateKey"), STORAGE, Some(json!({"keyName": "key9"}))).await;
    assert_eq!(r.status, 400);

    // keyCreationTime.key1 moved, key2 did not; visible in the cheap per-subscription list.
    let list = env
        .call(
            Method::GET,
            &format!("/subscriptions/{}/providers/Microsoft.Storage/storageAccounts", env.world.subscription_id),
            STORAGE,
            None,
        )
        .await;
    assert_eq!(list.status, 200);
    let acct = &list.body["value"][0];
    assert_ne!(acct["properties"]["keyCreationTime"]["key1"].as_str().unwrap(), t1_before);
    assert_eq!(acct["properties"]["keyCreationTime"]["key2"].as_str().unwrap(), t2_before);
    let rg_list = env
        .call(
            Method::GET,
            &format!("{}/providers/Microsoft.Storage/storageAccounts", env.world.resource_group_id),
            STORAGE,
            None,
        )
        .await;
    assert_eq!(rg_list.body["value"].as_array().unwrap().len(), 1);

    // The activity log shows the regenerateKey action for this account, once ingested (the simulator's clock is moved
    // past its 5-minute ingestion delay). The spec's $filter: a window, then one narrowing clause.
    env.sim.handle.advance_clock(Duration::from_secs(301));
    let until = odata_time(jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap());
    let filter =
        format!("eventTimestamp ge '{}' and eventTimestamp le '{until}' and resourceUri eq '{sa}'", odata_time(since));
    let path = format!(
        "/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values",
        env.world.subscription_id
    );
    let url = format!("{}{path}?api-version=2015-04-01&$filter={}", env.sim.endpoint, urlencode(&filter));
    let r = env.call_as(Some(&env.token), Method::GET, &url, None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ops: Vec<&str> =
        r.body["value"].as_array().unwrap().iter().map(|e| e["operationName"]["value"].as_str().unwrap()).collect();
    assert!(ops.contains(&"Microsoft.Storage/storageAccounts/regenerateKey/action"), "{ops:?}");
    assert!(
        !ops.contains(&"Microsoft.Storage/storageAccounts/listKeys/action"),
        "listKeys happened before `since`: {ops:?}"
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn workspace_lifecycle_matches_examples() {
    // Long enough that the GET right after the PUT reliably sees the operation still running on a busy machine.
    let env = start_with(|c| c.lro_duration = Duration::from_secs(2)).await;
    let id = env.ws_id("testworkspace");
    let ex = example("ml-workspaces/Workspace_create.json");
    let body = rewrite_example_body(&env, ex["parameters"]["parameters"].clone());
    let r = env.call(Method::PUT, &id, ML, Some(body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = r.h("location").unwrap();
    assert!(r.h("retry-after").unwrap().parse::<u64>().is_ok());
    // While creating, GET shows provisioningState Creating; the poll answers 202.
    let g = env.call(Method::GET, &id, ML, None).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Creating");
    let done = env.poll_location(&loc).await;
    assert_eq!(done.status, 200);
    assert_shape(&done.body, &ex["responses"]["200"]["body"], "", WS_SPEC_ONLY);
    assert_eq!(done.body["properties"]["provisioningState"], "Succeeded");

    let g = env.call(Method::GET, &id, ML, None).await;
    assert_eq!(g.status, 200);
    // The get example has private endpoint connections / an image build compute that this workspace was not given.
    assert_shape(&g.body, &example("ml-workspaces/Workspace_get.json")["responses"]["200"]["body"], "", WS_SPEC_ONLY);

    // listKeys returns the key captured at creation.
    let sa = env.world.storage_account_id.clone();
    let k = env.call(Method::POST, &format!("{id}/listKeys"), ML, None).await;
    assert_eq!(k.status, 200);
    assert_shape(
        &k.body,
        &example("ml-workspaces/Workspace_listKeys.2025-06-01.json")["responses"]["200"]["body"],
        "",
        &[],
    );
    let key1 = env.sim.handle.storage_key(&sa, "key1").unwrap();
    assert_eq!(k.body["userStorageKey"].as_str(), Some(key1.expose()));

    // Rotating the storage key behind the workspace's back: listKeys is stale until resyncKeys.
    env.sim.handle.regenerate_storage_key(&sa, "key1").unwrap();
    let k = env.call(Method::POST, &format!("{id}/listKeys"), ML, None).await;
    assert_eq!(k.body["userStorageKey"].as_str(), Some(key1.expose()));
    let r = env.call(Method::POST, &format!("{id}/resyncKeys"), ML, None).await;
    assert_eq!(r.status, 202);
    assert!(r.h("location").is_some());
    // Recorded: the Location poll of a resync ends in 200 with the whole workspace.
    let done = env.poll_location(&r.h("location").unwrap()).await;
    assert_eq!((done.status, done.body["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    let k = env.call(Method::POST, &format!("{id}/listKeys"), ML, None).await;
    let new_key = env.sim.handle.storage_key(&sa, "key1").unwrap();
    assert_eq!(k.body["userStorageKey"].as_str(), Some(new_key.expose()));

    // PATCH (update example) is an LRO whose final GET matches the example body.
    let upd = example("ml-workspaces/Workspace_update.json");
    let r = env.call(Method::PATCH, &id, ML, Some(upd["parameters"]["parameters"].clone())).await;
    assert_eq!(r.status, 202);
    let done = env.poll_location(&r.h("location").unwrap()).await;
    assert_eq!(done.status, 200);
    assert_shape(&done.body, &upd["responses"]["200"]["body"], "", &[]);
    assert_eq!(done.body["properties"]["friendlyName"], "New friendly name");
    assert_eq!(done.body["properties"]["publicNetworkAccess"], "Disabled");
    // storageAccount is immutable.
    let r =
        env.call(Method::PATCH, &id, ML, Some(json!({"properties": {"storageAccount": env.world.key_vault_id}}))).await;
    assert_eq!(r.status, 400);

    // List by resource group.
    let r = env
        .call(
            Method::GET,
            &format!("{}/providers/Microsoft.MachineLearningServices/workspaces", env.world.resource_group_id),
            ML,
            None,
        )
        .await;
    assert_shape(
        &r.body,
        &example("ml-workspaces/Workspace_listByResourceGroup.2025-06-01.json")["responses"]["200"]["body"],
        "",
        &["nextLink", "value[]"],
    );
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);

    // Delete: 202 + both poll headers, the Location poll ends in 200 with an empty body, then GET 404, DELETE 204.
    let r = env.call(Method::DELETE, &id, ML, None).await;
    assert_eq!(r.status, 202);
    assert!(r.h("azure-asyncoperation").is_some());
    let done = env.poll_location(&r.h("location").unwrap()).await;
    assert_eq!((done.status, &done.body), (StatusCode::OK, &Value::Null));
    let r = env.call(Method::GET, &id, ML, None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("ResourceNotFound")));
    assert_eq!(env.call(Method::DELETE, &id, ML, None).await.status, 204);
}

#[tokio::test]
async fn workspace_dependencies_must_exist() {
    let env = start().await;
    let mut body = env.ws_body();
    body["properties"]["storageAccount"] =
        json!(format!("{}/providers/Microsoft.Storage/storageAccounts/missing", env.world.resource_group_id));
    let r = env.call(Method::PUT, &env.ws_id("ws-bad"), ML, Some(body)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "DependentResourceNotFound");
    assert_eq!(r.body["error"]["target"], "properties.storageAccount");
    let mut body = env.ws_body();
    body["properties"].as_object_mut().unwrap().remove("keyVault");
    let r = env.call(Method::PUT, &env.ws_id("ws-bad"), ML, Some(body)).await;
    assert_eq!(r.status, 400);
    let r = env.call(Method::PUT, &env.ws_id("ws-bad"), ML, Some(json!({"properties": {}}))).await;
    assert_eq!(r.body["error"]["code"], "LocationRequired");
    assert!(env.sim.handle.resource(&env.ws_id("ws-bad")).is_none());
}

#[tokio::test]
async fn role_assignments_match_examples_with_filters_and_paging() {
    let env = start_with(|c| c.page_size = 2).await;
    let ex = example("authorization/RoleAssignments_CreateForResourceGroup.json");
    let scope = env.world.resource_group_id.clone();
    let name = "05c5a614-a7d6-4502-b150-c2fb455033ff";
    let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    let alice = env.world.users[0].clone();
    let body = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{}", env.world.subscription_id, roles::AZUREML_DATA_SCIENTIST),
        "principalId": alice, "principalType": "User"}});
    let r = env.call(Method::PUT, &path, AUTHZ, Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_shape(&r.body, &ex["responses"]["201"]["body"], "", &[]);
    assert_eq!(
        r.body["properties"]["roleDefinitionId"],
        format!("/providers/Microsoft.Authorization/roleDefinitions/{}", roles::AZUREML_DATA_SCIENTIST)
    );
    let r = env.call(Method::PUT, &path, AUTHZ, Some(body.clone())).await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &ex["responses"]["200"]["body"], "", &[]);
    // Same principal/role/scope under another name.
    let other = path.replace(name, "11111111-2222-4333-8444-555555555555");
    let r = env.call(Method::PUT, &other, AUTHZ, Some(body.clone())).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("RoleAssignmentExists")));
    // Unknown principal.
    let mut unknown = body.clone();
    unknown["properties"]["principalId"] = json!("99999999-0000-4000-8000-000000000000");
    let r = env.call(Method::PUT, &other, AUTHZ, Some(unknown)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PrincipalNotFound")));

    let r = env.call(Method::GET, &path, AUTHZ, None).await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &example("authorization/RoleAssignments_Get.json")["responses"]["200"]["body"], "", &[]);

    // Reader cannot create role assignments; the operator (Contributor + UAA) can.
    let reader = get_token(&env.http, &env.sim, &env.world.reader.client_id, env.world.reader.secret.expose()).await;
    let r = env.call_as(Some(&reader), Method::PUT, &other, Some(AUTHZ), Some(body.clone())).await;
    assert_eq!(r.status, 403);

    // List: everything at/above/below the RG (seeded sub-level ones + ours), paged by 2.
    let list_path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
    let mut all = vec![];
    let mut r = env.call(Method::GET, &list_path, AUTHZ, None).await;
    assert_shape(
        &r.body,
        &example("authorization/RoleAssignments_ListForScope.json")["responses"]["200"]["body"],
        "",
        &[],
    );
    loop {
        all.extend(r.body["value"].as_array().unwrap().clone());
        match r.body["nextLink"].as_str() {
            Some(next) => r = env.call_as(Some(&env.token), Method::GET, next, None, None).await,
            None => break,
        }
    }
    assert_eq!(all.len(), 6, "5 seeded on the subscription + ours: {all:?}");
    let filtered = |f: &str| {
        let url = format!("{}{list_path}?api-version={AUTHZ}&$filter={}", env.sim.endpoint, urlencode(f));
        let env = &env;
        async move {
            env.call_as(Some(&env.token), Method::GET, &url, None, None).await.body["value"].as_array().unwrap().len()
        }
    };
    assert_eq!(filtered(&format!("principalId eq '{alice}'")).await, 1);
    assert_eq!(filtered(&format!("principalId eq '{}'", env.world.operator.object_id)).await, 2);
    // alice gets assignments to herself and to her group.
    env.sim.handle.with_state(|s| s.assign_role(&scope, roles::READER, &env.world.group));
    assert_eq!(filtered(&format!("assignedTo('{alice}')")).await, 2);
    // atScope() on the subscription excludes the RG-level ones.
    let sub_list =
        format!("/subscriptions/{}/providers/Microsoft.Authorization/roleAssignments", env.world.subscription_id);
    let url = format!("{}{sub_list}?api-version={AUTHZ}&$filter=atScope()", env.sim.endpoint);
    let r = env.call_as(Some(&env.token), Method::GET, &url, None, None).await;
    let mut n = r.body["value"].as_array().unwrap().len();
    let mut next = r.body["nextLink"].as_str().map(String::from);
    while let Some(u) = next {
        let r = env.call_as(Some(&env.token), Method::GET, &u, None, None).await;
        n += r.body["value"].as_array().unwrap().len();
        next = r.body["nextLink"].as_str().map(String::from);
    }
    assert_eq!(n, 5);

    // Role definition by id.
    let r = env
        .call(Method::GET, &format!("/providers/Microsoft.Authorization/roleDefinitions/{}", roles::OWNER), AUTHZ, None)
        .await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &example("authorization/GetRoleDefinitionById.json")["responses"]["200"]["body"], "", &[]);
    assert_eq!(r.body["properties"]["roleName"], "Owner");

    // Delete 200 with body, then 204.
    let r = env.call(Method::DELETE, &path, AUTHZ, None).await;
    assert_eq!(r.status, 200);
    assert_shape(&r.body, &example("authorization/RoleAssignments_Delete.json")["responses"]["200"]["body"], "", &[]);
    assert_eq!(env.call(Method::DELETE, &path, AUTHZ, None).await.status, 204);
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let env = start_with(|c| {
        c.throttle = ThrottleConfig {
            read_capacity: 3.0,
            read_refill_per_sec: 0.5,
            write_capacity: 1.0,
            write_refill_per_sec: 0.5,
        };
    })
    .await;
    let sa = env.world.storage_account_id.clone();
    let mut remaining = vec![];
    for _ in 0..3 {
        let r = env.call(Method::GET, &sa, STORAGE, None).await;
        assert_eq!(r.status, 200);
        remaining.push(r.h("x-ms-ratelimit-remaining-subscription-reads").unwrap());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = env.call(Method::GET, &sa, STORAGE, None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"]["code"], "SubscriptionRequestsThrottled");
    assert_eq!(r.h("retry-after").as_deref(), Some("2"));
    // Writes have their own bucket.
    assert_eq!(env.call(Method::POST, &format!("{sa}/listKeys"), STORAGE, None).await.status, 200);
    assert_eq!(env.call(Method::POST, &format!("{sa}/listKeys"), STORAGE, None).await.status, 429);
    let s = env.sim.handle.call_summary();
    assert_eq!(s["StorageAccounts_GetProperties"].reads, 4);
    assert_eq!(s["StorageAccounts_GetProperties"].errors, 1);
    assert_eq!(s["StorageAccounts_ListKeys"].writes, 2);
}

#[tokio::test]
async fn injected_faults_errors_latency_and_lro_failures() {
    let env = start().await;
    let sa = env.world.storage_account_id.clone();
    let h = &env.sim.handle;
    h.inject_fault(FaultRule {
        operation: "StorageAccounts_GetProperties".into(),
        action: FaultAction::Error {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: None,
            retry_after: Some(1),
        },
        count: Some(1),
        rate: None,
    });
    let r = env.call(Method::GET, &sa, STORAGE, None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("ServiceUnavailable"))
    );
    assert_eq!(r.h("retry-after").as_deref(), Some("1"));
    assert_eq!(env.call(Method::GET, &sa, STORAGE, None).await.status, 200);

    h.inject_fault(FaultRule {
        operation: "*".into(),
        action: FaultAction::Latency { millis: 150 },
        count: Some(1),
        rate: None,
    });
    let t = std::time::Instant::now();
    assert_eq!(env.call(Method::GET, &sa, STORAGE, None).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    h.inject_fault(FaultRule {
        operation: "Workspaces_CreateOrUpdate".into(),
        action: FaultAction::LroFailure { status: None, code: "InternalError".into(), message: None },
        count: Some(1),
        rate: None,
    });
    let r = env.call(Method::PUT, &env.ws_id("ws-fail"), ML, Some(env.ws_body())).await;
    assert_eq!(r.status, 202);
    let done = env.poll_location(&r.h("location").unwrap()).await;
    assert_eq!((done.status, done.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("InternalError")));
    let g = env.call(Method::GET, &env.ws_id("ws-fail"), ML, None).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Failed");
    // A retry of the PUT succeeds.
    assert_eq!(env.create_ws("ws-fail").await.status, 200);

    // Fault rules over the admin HTTP API.
    let r = env
        .http
        .post(format!("{}/_sim/faults", env.sim.endpoint))
        .json(&FaultRule::error("Workspaces_Get", 500, "InternalServerError").times(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(env.call(Method::GET, &env.ws_id("ws-fail"), ML, None).await.status, 500);
    assert_eq!(env.call(Method::GET, &env.ws_id("ws-fail"), ML, None).await.status, 200);
    let summary: Value =
        env.http.get(format!("{}/_sim/calls/summary", env.sim.endpoint)).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["Workspaces_Get"]["calls"], 3);
    assert_eq!(summary["Workspaces_Get"]["errors"], 1);
}

/// The examples route traffic to a deployment literally named "string"; ours routes to real deployments.
const EP_IGNORE: &[&str] =
    &["properties.traffic", "systemData.createdByType", "systemData.lastModifiedBy", "systemData.lastModifiedByType"];
/// The recorded 201 of an endpoint PUT has no location, identity or system data yet.
const EP_CREATE_IGNORE: &[&str] = &["properties.traffic", "identity", "location", "systemData"];
/// Keys of the spec's workspace examples that the recorded answers do not have.
const WS_SPEC_ONLY: &[&str] = &[
    "properties.allowPublicAccessWhenBehindVnet",
    "properties.privateEndpointConnections",
    "properties.serviceProvisionedResourceGroup",
    "properties.imageBuildCompute",
];

#[tokio::test]
async fn online_endpoints_and_deployments_match_examples() {
    let env = start().await;
    let ws = env.ws_id("ws-ep");
    assert_eq!(env.create_ws("ws-ep").await.status, 200);
    let ep = format!("{ws}/onlineEndpoints/testEndpointName");
    let ex = example("ml-online-endpoints/OnlineEndpoint_createOrUpdate.json");
    let mut body = ex["parameters"]["body"].clone();
    body["properties"]["traffic"] = json!({});
    body["properties"]["authMode"] = json!("Key");
    let r = env.call(Method::PUT, &ep, ML, Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_shape(&r.body, &ex["responses"]["201"]["body"], "", EP_CREATE_IGNORE);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    assert!(r.h("x-ms-async-operation-timeout").is_some());
    let status = env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    assert_eq!(status["status"], "Succeeded");
    let g = env.call(Method::GET, &ep, ML, None).await;
    assert_shape(
        &g.body,
        &example("ml-online-endpoints/OnlineEndpoint_get.json")["responses"]["200"]["body"],
        "",
        EP_IGNORE,
    );
    assert_eq!(g.body["properties"]["provisioningState"], "Succeeded");

    // Deployment.
    let dep = format!("{ep}/deployments/blue");
    let dex = example("ml-online-deployments/ManagedOnlineDeployment_createOrUpdate.json");
    let r = env.call(Method::PUT, &dep, ML, Some(dex["parameters"]["body"].clone())).await;
    assert_eq!(r.status, 201);
    assert_shape(&r.body, &dex["responses"]["201"]["body"], "", EP_IGNORE);
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    let g = env.call(Method::GET, &dep, ML, None).await;
    assert_shape(
        &g.body,
        &example("ml-online-deployments/ManagedOnlineDeployment_get.json")["responses"]["200"]["body"],
        "",
        EP_IGNORE,
    );

    // Traffic to the deployment: update via PUT (200 + Azure-AsyncOperation); unknown deployments are rejected.
    body["properties"]["traffic"] = json!({"blue": 100});
    let r = env.call(Method::PUT, &ep, ML, Some(body.clone())).await;
    assert_eq!(r.status, 200);
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    body["properties"]["traffic"] = json!({"green": 100});
    assert_eq!(env.call(Method::PUT, &ep, ML, Some(body.clone())).await.status, 400);
    // A deployment receiving traffic cannot be deleted.
    assert_eq!(env.call(Method::DELETE, &dep, ML, None).await.status, 400);

    // Keys.
    let k = env.call(Method::POST, &format!("{ep}/listKeys"), ML, None).await;
    assert_shape(
        &k.body,
        &example("ml-online-endpoints/OnlineEndpoint_listKeys.2025-06-01.json")["responses"]["200"]["body"],
        "",
        &[],
    );
    let old_primary = k.body["primaryKey"].as_str().unwrap().to_string();
    let r = env.call(Method::POST, &format!("{ep}/regenerateKeys"), ML, Some(json!({"keyType": "Primary"}))).await;
    assert_eq!(r.status, 202);
    assert!(r.h("azure-asyncoperation").is_some());
    assert_eq!(env.poll_location(&r.h("location").unwrap()).await.status, 200);
    let k2 = env.call(Method::POST, &format!("{ep}/listKeys"), ML, None).await;
    assert_ne!(k2.body["primaryKey"].as_str().unwrap(), old_primary);
    assert_eq!(k2.body["secondaryKey"], k.body["secondaryKey"]);

    // PATCH tags: 202 + Location.
    let r = env.call(Method::PATCH, &ep, ML, Some(json!({"tags": {"team": "ml"}}))).await;
    assert_eq!(r.status, 202);
    let done = env.poll_location(&r.h("location").unwrap()).await;
    assert_shape(
        &done.body,
        &example("ml-online-endpoints/OnlineEndpoint_update.json")["responses"]["200"]["body"],
        "",
        EP_IGNORE,
    );
    assert_eq!(done.body["tags"]["team"], "ml");

    let list = env.call(Method::GET, &format!("{ws}/onlineEndpoints"), ML, None).await;
    assert_shape(
        &list.body,
        &example("ml-online-endpoints/OnlineEndpoint_list.json")["responses"]["200"]["body"],
        "",
        &[
            "nextLink",
            "value[].properties.traffic",
            "value[].systemData.createdByType",
            "value[].systemData.lastModifiedBy",
            "value[].systemData.lastModifiedByType",
        ],
    );

    // Endpoint DELETE removes deployments too.
    let r = env.call(Method::DELETE, &ep, ML, None).await;
    assert_eq!(r.status, 202);
    assert_eq!(env.poll_location(&r.h("location").unwrap()).await.status, 200);
    assert_eq!(env.call(Method::GET, &dep, ML, None).await.status, 404);
}

#[tokio::test]
async fn move_validation_failure_and_successful_move() {
    let env = start().await;
    let sub = env.world.subscription_id.clone();
    let target = format!("/subscriptions/{sub}/resourceGroups/rg-target");
    env.call(Method::PUT, &target, RES, Some(json!({"location": "eastus"}))).await;
    let ws = env.ws_id("ws-move");
    env.create_ws("ws-move").await;
    let ep = format!("{ws}/onlineEndpoints/ep1");
    let r =
        env.call(Method::PUT, &ep, ML, Some(json!({"location": "eastus", "properties": {"authMode": "Key"}}))).await;
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;

    let rg = env.world.resource_group_id.clone();
    let body = json!({"resources": [ws], "targetResourceGroup": target});
    let r = env.call(Method::POST, &format!("{rg}/validateMoveResources"), RES, Some(body.clone())).await;
    assert_eq!(r.status, 202);
    let v = env.poll_location(&r.h("location").unwrap()).await;
    assert_eq!(
        (v.status, v.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ResourceMoveValidationFailed"))
    );
    let details = v.body["error"]["details"].to_string();
    assert!(details.contains("online endpoint"), "{details}");
    // moveResources fails the same way and changes nothing.
    let r = env.call(Method::POST, &format!("{rg}/moveResources"), RES, Some(body)).await;
    assert_eq!(env.poll_location(&r.h("location").unwrap()).await.status, 409);
    assert_eq!(env.call(Method::GET, &ws, ML, None).await.status, 200);

    // Without endpoints the workspace and its storage account move; ids change, references follow.
    let r = env.call(Method::DELETE, &ep, ML, None).await;
    env.poll_location(&r.h("location").unwrap()).await;
    let sa = env.world.storage_account_id.clone();
    let body = json!({"resources": [ws, sa], "targetResourceGroup": target});
    let r = env.call(Method::POST, &format!("{rg}/validateMoveResources"), RES, Some(body.clone())).await;
    assert_eq!(env.poll_location(&r.h("location").unwrap()).await.status, 204);
    let r = env.call(Method::POST, &format!("{rg}/moveResources"), RES, Some(body)).await;
    assert_eq!(r.status, 202);
    assert_eq!(env.poll_location(&r.h("location").unwrap()).await.status, 204);
    assert_eq!(env.call(Method::GET, &ws, ML, None).await.status, 404);
    let new_ws = format!("{target}/providers/Microsoft.MachineLearningServices/workspaces/ws-move");
    let g = env.call(Method::GET, &new_ws, ML, None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["id"], new_ws);
    assert_eq!(
        g.body["properties"]["storageAccount"],
        format!("{target}/providers/Microsoft.Storage/storageAccounts/stsandbox")
    );

    // A missing target group is a 404 up front.
    let body =
        json!({"resources": [new_ws], "targetResourceGroup": format!("/subscriptions/{sub}/resourceGroups/nope")});
    let r = env.call(Method::POST, &format!("{target}/validateMoveResources"), RES, Some(body)).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn activity_log_filters_page_and_match_example() {
    let env = start_with(|c| {
        c.page_size = 3;
        c.activity_log_delay = Duration::ZERO;
    })
    .await;
    let since = jiff::Timestamp::now();
    let rg = env.world.resource_group_id.clone();
    let path = format!("/subscriptions/{}/resourceGroups/rg-other", env.world.subscription_id);
    env.call(Method::PUT, &path, RES, Some(json!({"location": "eastus"}))).await;
    for _ in 0..2 {
        env.call(Method::POST, &format!("{}/listKeys", env.world.storage_account_id), STORAGE, None).await;
    }
    let base = format!(
        "/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values",
        env.world.subscription_id
    );
    let q = |f: &str| format!("{}{base}?api-version=2015-04-01&$filter={}", env.sim.endpoint, urlencode(f));
    let r = env
        .call_as(
            Some(&env.token),
            Method::GET,
            &q(&format!(
                "eventTimestamp ge '{}' and eventTimestamp le '{}' and resourceGroupName eq 'rg-sandbox'",
                odata_time(since),
                odata_time(jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap())
            )),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_shape(
        &r.body,
        &example("activity-log/GetActivityLogsFiltered.json")["responses"]["200"]["body"],
        "",
        &["value[].claims"],
    );
    // 2 listKeys × (Begin + End) = 4 events in rg-sandbox → 3 + 1 with page size 3.
    assert_eq!(r.body["value"].as_array().unwrap().len(), 3);
    let next = r.body["nextLink"].as_str().unwrap().to_string();
    let r2 = env.call_as(Some(&env.token), Method::GET, &next, None, None).await;
    assert_eq!(r2.body["value"].as_array().unwrap().len(), 1);
    assert!(r2.body.get("nextLink").is_none());
    assert!(r.body["value"].as_array().unwrap().iter().all(|e| e["resourceGroupName"] == "rg-sandbox"));
    let _ = rg;
    // Future window: nothing. Anything but the spec's patterns: 400 with the service's bare {code, message}.
    let future = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    let window = |from: jiff::Timestamp| {
        let to = from.checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
        format!("eventTimestamp ge '{}' and eventTimestamp le '{}'", odata_time(from), odata_time(to))
    };
    let r = env.call_as(Some(&env.token), Method::GET, &q(&window(future)), None, None).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 0);
    let long_ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(24 * 91)).unwrap();
    for bad in [
        "resourceGroupName eq 'rg-sandbox'".to_owned(),
        format!("eventTimestamp ge '{}'", odata_time(since)),
        format!("{} and operationName eq 'x'", window(since)),
        format!("{} and resourceGroupName eq 'a' and resourceProvider eq 'b'", window(since)),
        window(long_ago),
        format!(
            "eventTimestamp ge '{}' and eventTimestamp le '{}'",
            odata_time(since).replace('Z', "12Z"),
            odata_time(future)
        ),
    ] {
        let r = env.call_as(Some(&env.token), Method::GET, &q(&bad), None, None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["code"], "BadRequest", "{bad}: {}", r.body);
        assert!(r.body.get("error").is_none(), "the activity log's own error body: {}", r.body);
    }
}

#[tokio::test]
async fn admin_api_and_state_persistence() {
    let env = start().await;
    let sa = env.world.storage_account_id.clone();
    let before = env.sim.handle.storage_key(&sa, "key2").unwrap();
    let r = env
        .http
        .post(format!("{}/_sim/storage/regenerateKey", env.sim.endpoint))
        .json(&json!({"accountId": sa, "keyName": "key2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_ne!(env.sim.handle.storage_key(&sa, "key2").unwrap(), before);
    assert!(
        env.sim
            .handle
            .activity_log()
            .iter()
            .any(|e| e["operationName"]["value"] == "Microsoft.Storage/storageAccounts/regenerateKey/action")
    );

    // Edit a workspace behind the operator's back.
    env.create_ws("ws-edit").await;
    let r = env
        .http
        .patch(format!("{}/_sim/resources", env.sim.endpoint))
        .json(&json!({"id": env.ws_id("ws-edit"), "patch": {"properties": {"description": "edited in portal"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let g = env.call(Method::GET, &env.ws_id("ws-edit"), ML, None).await;
    assert_eq!(g.body["properties"]["description"], "edited in portal");

    // Save → start a fresh simulator from the file → same world.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, serde_json::to_vec(&env.sim.handle.snapshot()).unwrap()).unwrap();
    let env2 = start().await;
    env2.sim.handle.load(&file).unwrap();
    let g = env2.call(Method::GET, &env.ws_id("ws-edit"), ML, None).await;
    assert_eq!(g.body["properties"]["description"], "edited in portal");
    assert_eq!(env2.sim.handle.storage_key(&sa, "key2"), env.sim.handle.storage_key(&sa, "key2"));

    // Call log records method, operation, path and status.
    let calls = env.sim.handle.calls();
    let last = calls.iter().rev().find(|c| c.operation == "Workspaces_Get").unwrap();
    assert_eq!((last.method.as_str(), last.status), ("GET", 200));
    assert!(last.path.ends_with("/workspaces/ws-edit"));
    env.sim.shutdown().await;
}

#[tokio::test]
async fn lro_answers_carry_scaled_retry_after_never_zero() {
    // time_scale 0.3: Azure's 10 s (ML) become 3 s, the storage RP's 17 s become 6 s.
    let env = start_with(|c| {
        c.time_scale = 0.3;
        c.lro_duration = Duration::from_secs(2);
    })
    .await;
    let id = env.ws_id("ws-ra");
    let r = env.call(Method::PUT, &id, ML, Some(env.ws_body())).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.h("retry-after").as_deref(), Some("3"));
    let loc = r.h("location").unwrap();
    assert!(
        loc.contains("/providers/Microsoft.MachineLearningServices/locations/eastus/workspaceOperationsStatus/"),
        "{loc}"
    );
    assert!(loc.ends_with("&type=location"), "{loc}");
    assert!(r.h("azure-asyncoperation").unwrap().ends_with("&type=async"));
    let running = env.call_as(Some(&env.token), Method::GET, &loc, None, None).await;
    assert_eq!((running.status, running.h("retry-after").as_deref()), (StatusCode::ACCEPTED, Some("3")));
    let status = env.call_as(Some(&env.token), Method::GET, &r.h("azure-asyncoperation").unwrap(), None, None).await;
    assert_eq!(status.body["status"], "InProgress");
    assert_eq!(status.h("retry-after").as_deref(), Some("3"));
    assert_eq!(status.body.as_object().unwrap().len(), 2, "only status and percentComplete: {}", status.body);

    // Storage account creation: 202 + Location on the storage RP's asyncoperations monitor; Creating until done.
    let sa = format!("{}/providers/Microsoft.Storage/storageAccounts/stnew", env.world.resource_group_id);
    let r = env
        .call(
            Method::PUT,
            &sa,
            STORAGE,
            Some(json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}})),
        )
        .await;
    assert_eq!((r.status, &r.body), (StatusCode::ACCEPTED, &Value::Null));
    assert_eq!(r.h("retry-after").as_deref(), Some("6"));
    let loc = r.h("location").unwrap();
    assert!(loc.contains("/providers/Microsoft.Storage/locations/eastus/asyncoperations/"), "{loc}");
    assert_eq!(env.call(Method::GET, &sa, STORAGE, None).await.body["properties"]["provisioningState"], "Creating");
    let done = env.poll_location(&loc).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["properties"]["provisioningState"], "Succeeded");

    // Scaled far down, Retry-After is still at least 1 s; only an explicit setting answers 0.
    let env = start_with(|c| c.time_scale = 0.0001).await;
    let r = env.call(Method::PUT, &env.ws_id("ws-ra"), ML, Some(env.ws_body())).await;
    assert_eq!(r.h("retry-after").as_deref(), Some("1"));
    let env = start_with(|c| c.retry_after_secs = Some(0)).await;
    let r = env.call(Method::PUT, &env.ws_id("ws-ra"), ML, Some(env.ws_body())).await;
    assert_eq!(r.h("retry-after").as_deref(), Some("0"));
}

#[tokio::test]
async fn generic_arm_lists_resources_and_answers_for_subscriptions_and_providers() {
    let env = start().await;
    let sub = env.world.subscription_id.clone();
    let ws = env.ws_id("ws-generic");
    env.create_ws("ws-generic").await;
    let r = env
        .call(
            Method::PUT,
            &format!("{ws}/onlineEndpoints/ep1"),
            ML,
            Some(json!({"location": "eastus", "properties": {"authMode": "Key"}})),
        )
        .await;
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;

    // Resources_List: top-level resources only (the endpoint is a child), in GenericResourceExpanded form.
    let r = env.call(Method::GET, &format!("/subscriptions/{sub}/resources"), RES, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let types: Vec<&str> = r.body["value"].as_array().unwrap().iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 5, "{types:?}");
    assert!(types.contains(&"Microsoft.MachineLearningServices/workspaces"), "{types:?}");
    assert!(!types.iter().any(|t| t.contains("onlineEndpoints")), "{types:?}");
    assert!(r.body["value"][0].get("properties").is_none());
    // Resources_ListByResourceGroup with a resourceType filter; an unsupported filter is refused.
    let url = format!(
        "{}{}/resources?api-version={RES}&$filter={}",
        env.sim.endpoint,
        env.world.resource_group_id,
        urlencode("resourceType eq 'Microsoft.Storage/storageAccounts'")
    );
    let r = env.call_as(Some(&env.token), Method::GET, &url, None, None).await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["value"][0]["id"], env.world.storage_account_id);
    let url = format!(
        "{}{}/resources?api-version={RES}&$filter={}",
        env.sim.endpoint,
        env.world.resource_group_id,
        urlencode("location eq 'x'")
    );
    assert_eq!(env.call_as(Some(&env.token), Method::GET, &url, None, None).await.status, 400);

    // An unknown subscription is a 404 SubscriptionNotFound, before authorization.
    let ghost = "00000000-0000-4000-8000-00000000dead";
    for path in [
        format!("/subscriptions/{ghost}/resources"),
        format!("/subscriptions/{ghost}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x"),
    ] {
        let r = env.call(Method::GET, &path, if path.contains("Storage") { STORAGE } else { RES }, None).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("SubscriptionNotFound")),
            "{path}"
        );
    }

    // A namespace the subscription has not registered: 409 MissingSubscriptionRegistration until it registers it.
    env.sim.handle.with_state(|s| {
        s.subscriptions.get_mut(&sub).unwrap().unregistered_providers.push("Microsoft.MachineLearningServices".into())
    });
    let r = env.call(Method::GET, &ws, ML, None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("MissingSubscriptionRegistration"))
    );
    let p = env
        .call(Method::GET, &format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices"), RES, None)
        .await;
    assert_eq!(p.body["registrationState"], "NotRegistered");
    let p = env
        .call(
            Method::POST,
            &format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/register"),
            RES,
            None,
        )
        .await;
    assert_eq!((p.status, p.body["registrationState"].as_str()), (StatusCode::OK, Some("Registered")));
    assert_eq!(env.call(Method::GET, &ws, ML, None).await.status, 200);
    // Real namespaces the simulator does not serve are unregistered; made-up ones are invalid.
    let r = env
        .call(
            Method::GET,
            &format!("{}/providers/Microsoft.Compute/virtualMachines/vm", env.world.resource_group_id),
            "2024-07-01",
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("MissingSubscriptionRegistration"))
    );
    let r = env
        .call(Method::GET, &format!("{}/providers/Foo.Bar/things/x", env.world.resource_group_id), "2024-07-01", None)
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidResourceNamespace"))
    );
    let r = env
        .call(
            Method::GET,
            &format!("{}/providers/Microsoft.Storage/fileShares/x", env.world.resource_group_id),
            STORAGE,
            None,
        )
        .await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidResourceType")));
}

#[tokio::test]
async fn workspace_moves_are_refused_where_the_preview_refuses_them() {
    let env = start().await;
    let sub = env.world.subscription_id.clone();
    let rg = env.world.resource_group_id.clone();
    let ws = env.ws_id("ws-mv");
    env.create_ws("ws-mv").await;
    let verdict = |target: String| {
        let env = &env;
        let ws = ws.clone();
        let rg = rg.clone();
        async move {
            let body = json!({"resources": [ws], "targetResourceGroup": target});
            let r = env.call(Method::POST, &format!("{rg}/validateMoveResources"), RES, Some(body)).await;
            assert_eq!(r.status, 202);
            let loc = r.h("location").unwrap();
            assert!(
                loc.contains(&format!("/subscriptions/{sub}/operationresults/", sub = env.world.subscription_id)),
                "{loc}"
            );
            env.poll_location(&loc).await
        }
    };
    // Same region: allowed.
    env.call(
        Method::PUT,
        &format!("/subscriptions/{sub}/resourceGroups/rg-east"),
        RES,
        Some(json!({"location": "eastus"})),
    )
    .await;
    assert_eq!(verdict(format!("/subscriptions/{sub}/resourceGroups/rg-east")).await.status, 204);
    // Across regions: refused.
    env.call(
        Method::PUT,
        &format!("/subscriptions/{sub}/resourceGroups/rg-west"),
        RES,
        Some(json!({"location": "westus"})),
    )
    .await;
    let v = verdict(format!("/subscriptions/{sub}/resourceGroups/rg-west")).await;
    assert_eq!(
        (v.status, v.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ResourceMoveValidationFailed"))
    );
    assert_eq!(v.body["error"]["details"][0]["code"], "ResourceMoveNotSupported");
    assert!(v.body["error"]["details"].to_string().contains("across regions"), "{}", v.body);
    // Across tenants: refused.
    let foreign = "00000000-0000-4000-8000-0000000000f0";
    env.sim.handle.with_state(|s| {
        s.add_subscription(foreign, "other-tenant");
        s.subscriptions.get_mut(foreign).unwrap().tenant_id = Some("99999999-0000-4000-8000-000000000001".into());
        s.add_resource_group(foreign, "rg-foreign", "eastus");
        s.assign_role(&format!("/subscriptions/{foreign}"), roles::CONTRIBUTOR, &env.world.operator.object_id);
    });
    let v = verdict(format!("/subscriptions/{foreign}/resourceGroups/rg-foreign")).await;
    assert_eq!(v.status, StatusCode::CONFLICT);
    assert!(v.body["error"]["details"].to_string().contains("CrossTenantMoveNotSupported"), "{}", v.body);
    // With a compute: refused.
    env.sim.handle.seed_resource(
        &format!("{ws}/computes/cpu"),
        "Microsoft.MachineLearningServices/workspaces/computes",
        json!({"location": "eastus"}),
    );
    let v = verdict(format!("/subscriptions/{sub}/resourceGroups/rg-east")).await;
    assert_eq!(v.status, StatusCode::CONFLICT);
    assert!(v.body["error"]["details"].to_string().contains("compute"), "{}", v.body);
}

#[tokio::test]
async fn the_storage_provider_throttles_on_its_own_limits() {
    let env = start().await;
    // Three writes per minute (listKeys / regenerateKey are POST actions: writes), two lists per minute.
    env.sim.handle.set_storage_limits(StorageLimits {
        read: vec![WindowLimit { max: 800, window_secs: 300 }],
        write: vec![WindowLimit { max: 3, window_secs: 60 }],
        list: vec![WindowLimit { max: 2, window_secs: 60 }],
    });
    let sa = env.world.storage_account_id.clone();
    for _ in 0..3 {
        assert_eq!(env.call(Method::POST, &format!("{sa}/listKeys"), STORAGE, None).await.status, 200);
    }
    let r = env.call(Method::POST, &format!("{sa}/regenerateKey"), STORAGE, Some(json!({"keyName": "key1"}))).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("TooManyRequests")));
    let wait: u64 = r.h("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Reads have their own budget; ARM's subscription buckets are not what refused the call.
    assert_eq!(env.call(Method::GET, &sa, STORAGE, None).await.status, 200);
    let list = format!("/subscriptions/{}/providers/Microsoft.Storage/storageAccounts", env.world.subscription_id);
    assert_eq!(env.call(Method::GET, &list, STORAGE, None).await.status, 200);
    assert_eq!(env.call(Method::GET, &list, STORAGE, None).await.status, 200);
    let r = env.call(Method::GET, &list, STORAGE, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("List_ObservationWindow_00:01:00"), "{}", r.body);
}

/// ML computes: create (cluster and instance), get, patch, listNodes, stop/start, delete, list, and the usages and
/// VM sizes of a location, against the spec's `Compute/*` and `Usage/list` examples; nodes follow the scale settings
/// within the quota; creation-only properties are refused on an existing compute.
#[tokio::test]
async fn computes_and_usages_match_examples() {
    let env = start().await;
    let ws = env.ws_id("ws-compute");
    assert_eq!(env.create_ws("ws-compute").await.status, 200);
    let sub = &env.world.subscription_id;
    let loc = &env.world.location;

    // Create a cluster from the example's body (in the workspace's location, a size the simulator offers).
    let cluster = format!("{ws}/computes/cpu-cluster");
    let ex = example("ml-computes/BasicAmlCompute.json");
    let mut body = ex["parameters"]["parameters"].clone();
    body["location"] = json!(loc);
    body["properties"]["properties"]["vmSize"] = json!("Standard_DS3_v2");
    body["properties"]["properties"]["scaleSettings"] = json!({"maxNodeCount": 4, "minNodeCount": 2});
    let r = env.call(Method::PUT, &cluster, ML, Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_shape(&r.body, &ex["responses"]["201"]["body"], "", &[]);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    let status = env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    assert_eq!(status["status"], "Succeeded");
    let g = env.call(Method::GET, &cluster, ML, None).await;
    assert_eq!(g.body["properties"]["provisioningState"], "Succeeded");
    let props = &g.body["properties"]["properties"];
    assert_eq!((props["currentNodeCount"].clone(), props["targetNodeCount"].clone()), (json!(2), json!(2)));
    assert_eq!(props["allocationState"], "Steady");

    // Usages: shaped as Usage/list.json's entries; the two nodes hold 8 vCPUs of the DSv2 family.
    let usages = env
        .call(
            Method::GET,
            &format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{loc}/usages"),
            ML,
            None,
        )
        .await;
    assert_eq!(usages.status, 200);
    let entry = json!({"id": "", "type": "", "currentValue": 0, "limit": 0, "name": {"value": "", "localizedValue": ""}, "unit": "Count"});
    let values = usages.body["value"].as_array().unwrap().clone();
    let dsv2 = values.iter().find(|u| u["name"]["value"] == "Standard DSv2 Family Cluster Dedicated vCPUs").unwrap();
    assert_shape(dsv2, &entry, "", &[]);
    assert_eq!(dsv2["currentValue"], 8);
    assert!(dsv2["id"].as_str().unwrap().ends_with("/usages/Standard_DSv2_Family_Cluster_Dedicated_vCPUs"));
    let sizes = env
        .call(
            Method::GET,
            &format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{loc}/vmSizes"),
            ML,
            None,
        )
        .await;
    let ds3 = sizes.body["value"].as_array().unwrap().iter().find(|s| s["name"] == "Standard_DS3_v2").unwrap().clone();
    assert_eq!((ds3["family"].clone(), ds3["vCPUs"].clone()), (json!("standardDSv2Family"), json!(4)));

    // listNodes: one entry per node, shaped as the example.
    let nodes = env.call(Method::POST, &format!("{cluster}/listNodes"), ML, None).await;
    assert_eq!(nodes.status, 200);
    assert_eq!(nodes.body["nodes"].as_array().unwrap().len(), 2);
    assert_shape(
        &nodes.body,
        &example("ml-computes/listNodes.json")["responses"]["200"]["body"],
        "",
        &["nodes[].runId", "nextLink"],
    );

    // Patch the scale settings: 200 with the body and Azure-AsyncOperation; nodes follow, within the quota.
    let px = example("ml-computes/patch.json");
    let mut patch = px["parameters"]["parameters"].clone();
    patch["properties"]["properties"]["scaleSettings"] = json!({"maxNodeCount": 20, "minNodeCount": 20});
    let r = env.call(Method::PATCH, &cluster, ML, Some(patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(&r.body, &px["responses"]["200"]["body"], "", &["properties.description"]);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    let g = env.call(Method::GET, &cluster, ML, None).await;
    let props = &g.body["properties"]["properties"];
    // The default quota: 24 dedicated vCPUs per family = 6 nodes of 4 vCPUs; the shortfall is reported.
    assert_eq!((props["currentNodeCount"].clone(), props["targetNodeCount"].clone()), (json!(6), json!(20)));
    assert_eq!(props["errors"][0]["error"]["code"], "QuotaExceeded");

    // Creation-only properties cannot change in place.
    body["properties"]["properties"]["vmPriority"] = json!("LowPriority");
    let r = env.call(Method::PUT, &cluster, ML, Some(body)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("vmPriority"), "{}", r.body);

    // An instance: created running, stopped (202 + Azure-AsyncOperation), refused a second stop, started.
    env.call(
        Method::PATCH,
        &cluster,
        ML,
        Some(json!({"properties": {"properties": {"scaleSettings": {"maxNodeCount": 4, "minNodeCount": 0}}}})),
    )
    .await;
    let inst = format!("{ws}/computes/alice-nb");
    let body = json!({"location": loc, "properties": {"computeType": "ComputeInstance", "properties": {
        "vmSize": "Standard_DS11_v2",
        "personalComputeInstanceSettings": {"assignedUser": {"objectId": "a11ce000-0000-4000-8000-000000000001", "tenantId": env.world.tenant_id}},
    }}});
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = env.call(Method::PUT, &inst, ML, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    let g = env.call(Method::GET, &inst, ML, None).await;
    assert_shape(
        &g.body,
        &example("ml-computes/ComputeInstance_get.json")["responses"]["200"]["body"],
        "",
        &["properties.description", "properties.properties.subnet", "properties.properties.customServices"],
    );
    assert_eq!(g.body["properties"]["properties"]["state"], "Running");
    let r = env.call(Method::POST, &format!("{inst}/stop"), ML, None).await;
    assert_eq!(r.status, 202);
    assert!(r.h("azure-asyncoperation").is_some());
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    assert_eq!(env.call(Method::GET, &inst, ML, None).await.body["properties"]["properties"]["state"], "Stopped");
    assert_eq!(env.call(Method::POST, &format!("{inst}/stop"), ML, None).await.status, 409);
    let r = env.call(Method::POST, &format!("{inst}/start"), ML, None).await;
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    assert_eq!(env.call(Method::GET, &inst, ML, None).await.body["properties"]["properties"]["state"], "Running");
    let idle = json!({"idleTimeBeforeShutdown": "PT5M"});
    assert_eq!(env.call(Method::POST, &format!("{inst}/updateIdleShutdownSetting"), ML, Some(idle)).await.status, 400);

    // List, then delete: underlyingResourceAction is required; 202 with both poll headers; 204 when gone.
    let list = env.call(Method::GET, &format!("{ws}/computes"), ML, None).await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 2);
    assert_eq!(env.call(Method::DELETE, &inst, ML, None).await.status, 400);
    let r = env.call(Method::DELETE, &format!("{inst}?underlyingResourceAction=Delete"), ML, None).await;
    assert_eq!(r.status, 202);
    assert!(r.h("azure-asyncoperation").is_some() && r.h("location").is_some());
    env.poll_async(&r.h("azure-asyncoperation").unwrap()).await;
    assert_eq!(env.call(Method::GET, &inst, ML, None).await.status, 404);
    let r = env.call(Method::DELETE, &format!("{inst}?underlyingResourceAction=Delete"), ML, None).await;
    assert_eq!(r.status, 204);
}

/// Workspace connections against the spec's `WorkspaceConnection/*` examples: PUT answers 200 synchronously, GET and
/// list never carry credentials (write-only), `listsecrets` returns them, PATCH merges, DELETE answers 200 then 204;
/// the name pattern, `authType`, the credentials' shape per auth type and the parent workspace are checked.
#[tokio::test]
async fn connections_match_examples_and_keep_credentials_write_only() {
    let env = start().await;
    let ws = env.ws_id("ws-conn");
    assert_eq!(env.create_ws("ws-conn").await.status, 200);
    let conn = format!("{ws}/connections/connection-1");

    let ex = example("ml-connections/create.json");
    let r = env.call(Method::PUT, &conn, ML, Some(ex["parameters"]["parameters"].clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.get("azure-asyncoperation").is_none() && r.headers.get("location").is_none(), "not an LRO");
    assert_shape(&r.body, &ex["responses"]["200"]["body"], "", &[]);
    assert_eq!(r.body["properties"], ex["responses"]["200"]["body"]["properties"]);
    let g = env.call(Method::GET, &conn, ML, None).await;
    assert_eq!(g.status, 200);
    assert_shape(&g.body, &example("ml-connections/get.json")["responses"]["200"]["body"], "", &[]);

    // With credentials (the update example's body): stored, never returned but by listsecrets.
    let update = example("ml-connections/update.json");
    let body = update["parameters"]["body"].clone();
    let r = env.call(Method::PUT, &conn, ML, Some(body.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["properties"].get("credentials").is_none(), "the PUT response carries no credentials");
    let g = env.call(Method::GET, &conn, ML, None).await;
    assert!(g.body["properties"].get("credentials").is_none(), "GET carries no credentials");
    assert_shape(&g.body, &update["responses"]["200"]["body"], "", &[]);
    let s = env.call(Method::POST, &format!("{conn}/listsecrets"), ML, None).await;
    assert_eq!(s.status, 200);
    assert_shape(&s.body, &example("ml-connections/listSecrets.json")["responses"]["200"]["body"], "", &[]);
    assert_eq!(s.body["properties"]["credentials"], body["properties"]["credentials"]);
    let listed = env.call(Method::GET, &format!("{ws}/connections"), ML, None).await;
    assert_eq!(listed.status, 200);
    let value = listed.body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_shape(&value[0], &example("ml-connections/list.json")["responses"]["200"]["body"]["value"][0], "", &["id"]);
    assert!(value[0]["properties"].get("credentials").is_none());
    let filtered = env.call(Method::GET, &format!("{ws}/connections?category=Git"), ML, None).await;
    assert_eq!(filtered.body["value"].as_array().map(Vec::len), Some(0), "filtered by category");

    // PATCH (WorkspaceConnections_Update) merges the properties.
    let r = env
        .call(Method::PATCH, &conn, ML, Some(json!({"properties": {"authType": "AccessKey", "target": "other"}})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["properties"]["target"].clone(), r.body["properties"]["category"].clone()),
        (json!("other"), json!("ADLSGen2"))
    );

    // What Azure refuses.
    let bad_name = env.call(Method::PUT, &format!("{ws}/connections/ab"), ML, Some(body.clone())).await;
    assert_eq!(bad_name.status, 400);
    let no_auth =
        env.call(Method::PUT, &conn, ML, Some(json!({"properties": {"category": "Git", "target": "x"}}))).await;
    assert_eq!(no_auth.status, 400);
    let wrong_shape =
        json!({"properties": {"category": "Git", "target": "x", "authType": "PAT", "credentials": {"password": "p"}}});
    assert_eq!(env.call(Method::PUT, &conn, ML, Some(wrong_shape)).await.status, 400);
    let orphan = format!("{}/connections/connection-1", env.ws_id("ws-missing"));
    let r = env.call(Method::PUT, &orphan, ML, Some(body)).await;
    assert_eq!((r.status, r.body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("ParentResourceNotFound")));

    // The workspace's listKeys returns the registry credentials it caches: the same values on every call (they change
    // only when the workspace resyncs its keys), which is what lets exports stay unwritten in steady state.
    let keys = |r: Resp| r.body["containerRegistryCredentials"].clone();
    let first = keys(env.call(Method::POST, &format!("{ws}/listKeys"), ML, None).await);
    let second = keys(env.call(Method::POST, &format!("{ws}/listKeys"), ML, None).await);
    assert!(first["passwords"][0]["value"].as_str().is_some_and(|p| !p.is_empty()), "{first}");
    assert_eq!(first, second, "registry passwords changed between two listKeys calls");

    // DELETE: 200, then 204 (delete.json); GET then 404.
    assert_eq!(env.call(Method::DELETE, &conn, ML, None).await.status, 200);
    assert_eq!(env.call(Method::DELETE, &conn, ML, None).await.status, 204);
    assert_eq!(env.call(Method::GET, &conn, ML, None).await.status, 404);
}
