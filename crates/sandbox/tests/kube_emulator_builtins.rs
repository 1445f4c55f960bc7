//! Built-in kinds in the Kubernetes API emulator are decoded, defaulted and validated as the real API server does
//! (typed decoding against the published v1.33 schemas, `fieldValidation`, defaults, required fields, enums and
//! name rules), and typed clients (k8s-openapi through kube-rs) read back what they wrote.

use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

async fn start() -> (RunningServer, reqwest::Client) {
    azml_operator::tls_provider::install();
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let http = reqwest::Client::builder().build().unwrap_or_else(|e| panic!("{e}"));
    (server, http)
}

/// POSTs a JSON text; returns the code, the body and the `Warning` headers.
async fn post(http: &reqwest::Client, url: &str, body: String) -> (u16, Value, Vec<String>) {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let code = resp.status().as_u16();
    let warnings = resp.headers().get_all("warning").iter().filter_map(|v| v.to_str().ok()).map(String::from).collect();
    let body = resp.json().await.unwrap_or(Value::Null);
    (code, body, warnings)
}

fn url(server: &RunningServer, api: &str, plural: &str, query: &str) -> String {
    format!("{}/{api}/namespaces/default/{plural}{query}", server.url())
}

fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (c["field"].as_str().unwrap_or("").to_string(), c["message"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn values_of_the_wrong_type_are_refused_with_the_go_decoders_message() {
    let (server, http) = start().await;
    let cms = url(&server, "api/v1", "configmaps", "");
    let (code, status, _) = post(&http, &cms, json!({"metadata": {"name": "n"}, "data": {"k": 1}}).to_string()).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go struct field ConfigMap.data of type string"
    );
    let deps = url(&server, "apis/apps/v1", "deployments", "");
    let dep = json!({"metadata": {"name": "d"}, "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let (code, status, _) = post(&http, &deps, dep.to_string()).await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"),
        "{status}"
    );
    let secrets = url(&server, "api/v1", "secrets", "");
    let (code, status, _) =
        post(&http, &secrets, json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}}).to_string()).await;
    assert_eq!(code, 400, "{status}");
    assert!(!status["message"].as_str().unwrap_or("").contains("not base64"), "the value is never echoed: {status}");
    // Nothing was stored.
    let resp = http.get(format!("{cms}/n")).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn unknown_and_duplicate_fields_follow_field_validation() {
    let (server, http) = start().await;
    let pod = |name: &str| {
        format!(
            r#"{{"metadata": {{"name": "{name}"}}, "spec": {{"bogus": true, "containers": [{{"name": "c", "image": "nginx:1.27", "image": "nginx:1.28"}}]}}}}"#
        )
    };
    let (code, status, _) =
        post(&http, &url(&server, "api/v1", "pods", "?fieldValidation=Strict"), pod("strict")).await;
    assert_eq!(code, 400, "{status}");
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: "),
        "{message}"
    );
    assert!(message.contains("duplicate field \"spec.containers[0].image\""), "{message}");

    let (code, created, warnings) =
        post(&http, &url(&server, "api/v1", "pods", "?fieldValidation=Warn"), pod("warn")).await;
    assert_eq!(code, 201, "{created}");
    assert!(warnings.contains(&r#"299 - "unknown field \"spec.bogus\"""#.to_string()), "{warnings:?}");
    assert!(warnings.contains(&r#"299 - "duplicate field \"spec.containers[0].image\"""#.to_string()), "{warnings:?}");
    assert!(created["spec"].get("bogus").is_none(), "{created}");
    assert_eq!(created["spec"]["containers"][0]["image"], "nginx:1.28", "the last duplicate wins");

    let (code, _, warnings) =
        post(&http, &url(&server, "api/v1", "pods", "?fieldValidation=Ignore"), pod("ignore")).await;
    assert_eq!((code, warnings.len()), (201, 0), "{warnings:?}");
    // Warn is the default.
    let (code, _, warnings) = post(&http, &url(&server, "api/v1", "pods", ""), pod("default")).await;
    assert_eq!((code, warnings.len()), (201, 2), "{warnings:?}");
}

/// Sends `body` with `method` and `content_type`; returns the code, the body and the `Warning` headers.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value, Vec<String>) {
    let resp = http
        .request(method, url)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let code = resp.status().as_u16();
    let warnings = resp.headers().get_all("warning").iter().filter_map(|v| v.to_str().ok()).map(String::from).collect();
    (code, resp.json().await.unwrap_or(Value::Null), warnings)
}

fn warning(text: &str) -> String {
    format!("299 - \"{}\"", text.replace('"', "\\\""))
}

/// Repeated keys in YAML bodies and in patches are reported as the API server's strict decoders report them: YAML
/// with the line of the repetition, JSON and merge patches with the field's path, JSON patches per operation.
#[tokio::test]
async fn duplicate_fields_in_yaml_bodies_and_patches_follow_field_validation() {
    let (server, http) = start().await;
    let cms = url(&server, "api/v1", "configmaps", "");
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\n  labels:\n    app: a\n    app: b\ndata:\n  k: v\n";
    let (code, status, _) = send(
        &http,
        reqwest::Method::POST,
        &format!("{cms}?fieldValidation=Strict"),
        "application/yaml",
        &yaml.replace("NAME", "strict"),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: yaml: unmarshal errors:\n  line 7: key \"app\" already set in map"
    );
    let (code, created, warnings) =
        send(&http, reqwest::Method::POST, &cms, "application/yaml", &yaml.replace("NAME", "cm")).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(warnings, [warning("line 7: key \"app\" already set in map")]);
    assert_eq!(created["metadata"]["labels"]["app"], "b");

    let cm = format!("{cms}/cm");
    let merge = r#"{"data": {"k": "1", "k": "2"}, "metadata": {"labels": {"x": "1"}}}"#;
    let (code, status, _) = send(
        &http,
        reqwest::Method::PATCH,
        &format!("{cm}?fieldValidation=Strict"),
        "application/merge-patch+json",
        merge,
    )
    .await;
    assert_eq!((code, status["message"].as_str()), (400, Some("strict decoding error: duplicate field \"data.k\"")));
    let (code, patched, warnings) =
        send(&http, reqwest::Method::PATCH, &cm, "application/strategic-merge-patch+json", merge).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(warnings, [warning("duplicate field \"data.k\"")]);
    assert_eq!(patched["data"]["k"], "2");

    let json_patch = r#"[{"op": "replace", "path": "/data/k", "value": "3", "foo": "bar"},
                         {"op": "add", "path": "/data/a", "path": "/data/b", "value": "4"}]"#;
    let (code, patched, warnings) =
        send(&http, reqwest::Method::PATCH, &cm, "application/json-patch+json", json_patch).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(
        warnings,
        [warning("json patch unknown field \"[0].foo\""), warning("json patch duplicate field \"[1].path\"")]
    );
    let (code, _, warnings) = send(
        &http,
        reqwest::Method::PATCH,
        &format!("{cm}?fieldValidation=Ignore"),
        "application/json-patch+json",
        json_patch,
    )
    .await;
    assert_eq!((code, warnings.len()), (200, 0));

    let apply = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n  \"data\": {\n    \"k\": \"5\",\n    \"k\": \"6\"\n  }\n}";
    let (code, status, _) = send(
        &http,
        reqwest::Method::PATCH,
        &format!("{cm}?fieldManager=m&fieldValidation=Strict"),
        "application/apply-patch+yaml",
        apply,
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  line 6: key \"k\" already set in map"
    );
    let (code, applied, warnings) = send(
        &http,
        reqwest::Method::PATCH,
        &format!("{cm}?fieldManager=m&force=true"),
        "application/apply-patch+yaml",
        apply,
    )
    .await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(warnings, [warning("line 6: key \"k\" already set in map")]);
    assert_eq!(applied["data"]["k"], "6");
}

#[tokio::test]
async fn defaults_required_fields_enums_and_names_as_the_real_server() {
    let (server, http) = start().await;
    let client = server.client().unwrap_or_else(|e| panic!("{e}"));

    // Deployment: defaults of SetDefaults_Deployment and of the pod template, generation, empty status.
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"},
                                                      {"name": "side", "image": "busybox:1.36"}]}}}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let created = deployments.create(&PostParams::default(), &dep).await.unwrap_or_else(|e| panic!("{e}"));
    let spec = created.spec.clone();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = spec.strategy.clone().unwrap_or_default();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let containers = spec.template.spec.clone().unwrap_or_default().containers;
    assert_eq!(containers[0].image_pull_policy.as_deref(), Some("Always"), "untagged image");
    assert_eq!(containers[1].image_pull_policy.as_deref(), Some("IfNotPresent"), "tagged image");
    assert_eq!(containers[0].termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "no controller reports status: {:?}", created.status);

    // Service: type and port defaults; an unsupported type and a name that is no DNS-1035 label are 422.
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let svc = services.create(&PostParams::default(), &svc).await.unwrap_or_else(|e| panic!("{e}"));
    let svc_spec = svc.spec.clone().unwrap_or_default();
    assert_eq!(svc_spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc_spec.session_affinity.as_deref(), Some("None"));
    let port = &svc_spec.ports.clone().unwrap_or_default()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    // The API server allocates the cluster IP (no controller needed), and keeps it across updates that omit it.
    let ip = svc_spec.cluster_ip.clone().unwrap_or_default();
    assert!(ip.starts_with("10.") && ip.split('.').count() == 4, "{ip}");
    assert_eq!(svc_spec.cluster_ips, Some(vec![ip.clone()]));
    let mut replaced: Service =
        serde_json::from_value(json!({"metadata": {"name": "web", "resourceVersion": svc.metadata.resource_version},
                                      "spec": {"ports": [{"port": 81}]}}))
        .unwrap_or_else(|e| panic!("{e}"));
    replaced = services.replace("web", &PostParams::default(), &replaced).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(replaced.spec.unwrap_or_default().cluster_ip, Some(ip));
    let svcs = url(&server, "api/v1", "services", "");
    let (code, status, _) = post(
        &http,
        &svcs,
        json!({"metadata": {"name": "bad"}, "spec": {"type": "Internal", "ports": [{"port": 80}]}}).to_string(),
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
    assert_eq!(
        causes(&status),
        vec![(
            "spec.type".to_string(),
            "Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                .to_string()
        )]
    );
    let (code, status, _) = post(&http, &svcs, json!({"metadata": {"name": "1web"}}).to_string()).await;
    assert_eq!(code, 422, "{status}");
    assert!(causes(&status)[0].1.contains("a DNS-1035 label must consist of"), "{status}");

    // Required fields.
    let deps = url(&server, "apis/apps/v1", "deployments", "");
    let (code, status, _) = post(
        &http,
        &deps,
        json!({"metadata": {"name": "nosel"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}})
            .to_string(),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<String> = causes(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, vec!["spec.selector".to_string()], "{status}");

    // A Pod stays Pending: nothing schedules it.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}))
    .unwrap_or_else(|e| panic!("{e}"));
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("{e}"));
    let status = pod.status.unwrap_or_default();
    assert_eq!((status.phase.as_deref(), status.qos_class.as_deref()), (Some("Pending"), Some("BestEffort")));
    assert_eq!(pod.spec.unwrap_or_default().restart_policy.as_deref(), Some("Always"));

    // A Job gets its generated selector and template labels.
    let jobs: Api<Job> = Api::default_namespaced(client);
    let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap_or_else(|e| panic!("{e}"));
    let job = jobs.create(&PostParams::default(), &job).await.unwrap_or_else(|e| panic!("{e}"));
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.unwrap_or_default();
    let selector = spec.selector.unwrap_or_default().match_labels.unwrap_or_default();
    assert_eq!(selector.get("batch.kubernetes.io/controller-uid"), Some(&uid));
    let labels = spec.template.metadata.unwrap_or_default().labels.unwrap_or_default();
    assert_eq!(labels.get("job-name").map(String::as_str), Some("j"));
    assert_eq!((spec.backoff_limit, spec.completions, spec.parallelism), (Some(6), Some(1), Some(1)));
}
