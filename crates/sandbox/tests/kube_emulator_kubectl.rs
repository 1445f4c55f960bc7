//! The real kubectl against the Kubernetes API emulator for built-in workload kinds: strict field validation,
//! server-side diff, rollout status without controllers, events, prune, cascading deletion and `wait --for=delete`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};

struct Kubectl {
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(server: &RunningServer) -> Self {
        let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = home.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap_or_else(|e| panic!("{e}"));
        Self { kubeconfig, home }
    }

    /// Runs kubectl to completion (off the async runtime) and returns (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(args)
            .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args).await;
        assert_eq!(code, 0, "kubectl {args:?} failed: {stderr}");
        stdout
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p: &Path = self.home.path();
        let path = p.join(name);
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
        path.to_string_lossy().into_owned()
    }
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: demo}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: demo}
data: {greeting: hello}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_with_workloads_validation_diff_rollout_prune_and_cascading_delete() {
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let k = Kubectl::new(&server);
    let app = k.write("app.yaml", APP);
    k.ok(&["apply", "-f", &app]).await;
    assert_eq!(k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.strategy.type}"]).await, "RollingUpdate");
    assert_eq!(k.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.type}"]).await, "ClusterIP");

    // kubectl asks for strict field validation: an unknown field is an error naming it.
    let bad = k.write("bad.yaml", &APP.replace("replicas: 2", "replicas: 2\n  replica: 3"));
    let (code, _, stderr) = k.run(&["apply", "-f", &bad]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown field \"spec.replica\""), "{stderr}");

    // Server-side diff shows the change, and nothing else (defaults are the server's, on both sides). The fields
    // belong to client-side apply's manager, so as on a cluster the diff needs --force-conflicts.
    let changed = k.write("changed.yaml", &APP.replace("replicas: 2", "replicas: 3"));
    let (code, diff, stderr) = k.run(&["diff", "--server-side", "-f", &changed]).await;
    assert!(code > 1 && stderr.contains("conflicts with \"kubectl-client-side-apply\""), "{code} {stderr}");
    let (code, diff2, stderr) = k.run(&["diff", "--server-side", "--force-conflicts", "-f", &changed]).await;
    let diff = format!("{diff}{diff2}");
    assert_eq!(code, 1, "diff exits 1 when there are differences: {stderr}");
    assert!(diff.contains("-  replicas: 2") && diff.contains("+  replicas: 3"), "{diff}");

    // No controller runs: the Deployment's status never reports the rollout, as on a cluster whose
    // kube-controller-manager is down, and `rollout status` waits until its timeout.
    let (code, stdout, stderr) = k.run(&["rollout", "status", "deploy/web", "--timeout=2s"]).await;
    assert_ne!(code, 0, "{stdout}");
    assert!(format!("{stdout}{stderr}").contains("Waiting for deployment"), "{stdout}{stderr}");

    k.ok(&["events"]).await;

    // `kubectl create deployment/job/cronjob` send protobuf bodies (client-go's typed clients).
    k.ok(&["create", "deployment", "made", "--image=nginx:1.27", "--replicas=2", "--port=8080"]).await;
    let made = k.ok(&["get", "deploy", "made", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.template.spec.containers[0].imagePullPolicy} {.spec.selector.matchLabels.app}"]).await;
    assert_eq!(made, "2 8080 IfNotPresent made");
    k.ok(&["create", "job", "once", "--image=busybox:1.36", "--", "echo", "hi"]).await;
    let once = k
        .ok(&[
            "get",
            "job",
            "once",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].command} {.spec.template.spec.restartPolicy}",
        ])
        .await;
    assert_eq!(once, r#"["echo","hi"] Never"#);
    k.ok(&["create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=*/5 * * * *"]).await;
    let tick = k.ok(&["get", "cronjob", "tick", "-o", "jsonpath={.spec.schedule} {.spec.concurrencyPolicy}"]).await;
    assert_eq!(tick, "*/5 * * * * Allow");

    // Prune: the ConfigMap left out of the applied set is deleted.
    let without_cm =
        k.write("without-cm.yaml", APP.split("---\napiVersion: v1\nkind: ConfigMap").next().unwrap_or(APP));
    let out = k.ok(&["apply", "--prune", "-l", "app=demo", "-f", &without_cm]).await;
    assert!(out.contains("configmap/web-config pruned"), "{out}");

    // Cascading deletion: a ReplicaSet owned by the Deployment goes with it, and wait --for=delete sees it go.
    let uid = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"]).await;
    let rs = k.write(
        "rs.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-1\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}, controller: true, blockOwnerDeletion: true}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: web, image: nginx:1.27}}]\n"
        ),
    );
    k.ok(&["apply", "-f", &rs]).await;
    k.ok(&["delete", "deploy", "web", "--cascade=foreground"]).await;
    k.ok(&["wait", "--for=delete", "rs/web-1", "--timeout=20s"]).await;
    let (code, _, stderr) = k.run(&["get", "rs", "web-1"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("NotFound") || stderr.contains("not found"), "{stderr}");
}

/// Runs `helm` against the emulator, with its caches and config in the kubectl helper's temporary home.
async fn helm(k: &Kubectl, helm: &str, args: &[&str]) -> (bool, String, String) {
    let home = k.home.path();
    let mut cmd = Command::new(helm);
    cmd.env("KUBECONFIG", &k.kubeconfig)
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("helm-cache"))
        .env("HELM_CONFIG_HOME", home.join("helm-config"))
        .env("HELM_DATA_HOME", home.join("helm-data"))
        .env_remove("HELM_DRIVER")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("helm: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Helm's whole release cycle on an application chart with a Deployment, a Service, a ConfigMap and a CRD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_rollback_and_uninstall_an_application_chart() {
    let helm_bin = std::env::var("AZML_HELM").unwrap_or_else(|_| "helm".into());
    if !Command::new(&helm_bin).args(["version", "--short"]).output().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED helm_install_upgrade_rollback_and_uninstall_an_application_chart: cannot run {helm_bin} (set AZML_HELM)"
        );
        return;
    }
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let k = Kubectl::new(&server);
    let run = |args: &'static [&'static str]| {
        let (k, helm_bin) = (&k, helm_bin.clone());
        async move {
            let (ok, out, err) = helm(k, &helm_bin, args).await;
            assert!(ok, "helm {args:?} failed:\n{out}\n{err}");
            out
        }
    };
    let out = run(&["install", "demo", "tests/fixtures/helm-demo"]).await;
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert_eq!(k.ok(&["get", "cm", "demo-config", "-o", "jsonpath={.data.greeting}"]).await, "hello");
    assert_eq!(k.ok(&["get", "deploy", "demo-web", "-o", "jsonpath={.spec.replicas}"]).await, "2");
    assert_eq!(k.ok(&["get", "svc", "demo-web", "-o", "jsonpath={.spec.type}"]).await, "ClusterIP");
    k.ok(&["get", "crd", "gadgets.demo.azml.dev"]).await;

    run(&["upgrade", "demo", "tests/fixtures/helm-demo", "--set", "greeting=bonjour", "--set", "replicas=3"]).await;
    assert_eq!(k.ok(&["get", "cm", "demo-config", "-o", "jsonpath={.data.greeting}"]).await, "bonjour");
    assert_eq!(k.ok(&["get", "deploy", "demo-web", "-o", "jsonpath={.spec.replicas}"]).await, "3");

    run(&["rollback", "demo", "1"]).await;
    assert_eq!(k.ok(&["get", "cm", "demo-config", "-o", "jsonpath={.data.greeting}"]).await, "hello");
    assert_eq!(k.ok(&["get", "deploy", "demo-web", "-o", "jsonpath={.spec.replicas}"]).await, "2");
    let history = run(&["history", "demo"]).await;
    assert!(history.contains("Rollback to 1"), "{history}");

    run(&["uninstall", "demo"]).await;
    for object in ["cm/demo-config", "deploy/demo-web", "svc/demo-web"] {
        let (code, _, stderr) = k.run(&["get", object]).await;
        assert_ne!(code, 0, "{object} survived the uninstall");
        assert!(stderr.contains("NotFound"), "{stderr}");
    }
    // Helm leaves CRDs from crds/ installed, on a cluster as here.
    k.ok(&["get", "crd", "gadgets.demo.azml.dev"]).await;
}

/// `kubectl get --watch-only` prints changes after its list, not the objects that were already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_only_prints_only_later_changes() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let k = Kubectl::new(&server);
    let api: Api<ConfigMap> = Api::default_namespaced(server.client().unwrap_or_else(|e| panic!("{e}")));
    let create = |name: String| {
        let api = api.clone();
        async move {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(name);
            api.create(&PostParams::default(), &cm).await.unwrap_or_else(|e| panic!("{e}"));
        }
    };
    create("before".into()).await;
    let watching = tokio::spawn({
        let args = ["get", "configmaps", "--watch-only", "--request-timeout=8s", "-o", "name"];
        let kubectl =
            Kubectl { kubeconfig: k.kubeconfig.clone(), home: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")) };
        async move { kubectl.run(&args).await }
    });
    // Keep changing things until kubectl's watch ends, whenever it started.
    let mut i = 0;
    while !watching.is_finished() {
        create(format!("after-{i}")).await;
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let (_, stdout, stderr) = watching.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(stdout.contains("configmap/after-"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("configmap/before"), "{stdout}");
}

/// client-go's typed clients (`kubectl create ...`, `kubectl events`) send protobuf and ask for protobuf answers:
/// the emulator reads every built-in kind they send and answers objects, lists and watches in protobuf, which kubectl
/// decodes and prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_typed_clients_get_protobuf_answers() {
    use k8s_openapi::api::core::v1::{Event, ObjectReference};
    use kube::api::{Api, PostParams};
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let k = Kubectl::new(&server);
    // A protobuf answer is `k8s\0` followed by the envelope; kubectl -v=8 dumps the bodies it received in hex.
    let protobuf_answer = |log: &str| log.split("\"Response Body\"").skip(1).any(|b| b.contains("6b 38 73 00"));
    let (code, stdout, stderr) =
        k.run(&["create", "service", "clusterip", "web", "--tcp=80:8080", "-o", "json", "-v=8"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("Content-Type: application/vnd.kubernetes.protobuf") && protobuf_answer(&stderr),
        "{stderr}"
    );
    let svc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(svc["spec"]["clusterIP"].as_str().is_some_and(|ip| ip.starts_with("10.")), "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["sessionAffinity"], "None");

    // The Deployment kubectl prints is the one decoded from the protobuf answer: the server's defaults are in it.
    let out = k.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--port=80", "-o", "json"]).await;
    let dep: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%", "{dep}");
    assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");

    // `kubectl events` lists, then watches, Events through the typed client: both answered in protobuf.
    let events: Api<Event> = Api::default_namespaced(server.client().unwrap_or_else(|e| panic!("{e}")));
    let post = |name: String, reason: &'static str| {
        let events = events.clone();
        async move {
            let mut e = Event::default();
            e.metadata.name = Some(name);
            e.reason = Some(reason.into());
            e.message = Some(format!("{reason} happened"));
            e.type_ = Some("Normal".into());
            e.involved_object =
                ObjectReference { kind: Some("Deployment".into()), name: Some("web".into()), ..Default::default() };
            events.create(&PostParams::default(), &e).await.unwrap_or_else(|e| panic!("{e}"));
        }
    };
    post("first".into(), "Listed").await;
    let (code, stdout, stderr) = k.run(&["events", "-v=8"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Listed") && protobuf_answer(&stderr), "{stdout}\n{stderr}");

    let watching = tokio::spawn({
        let kubectl =
            Kubectl { kubeconfig: k.kubeconfig.clone(), home: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")) };
        async move { kubectl.run(&["events", "--watch", "--request-timeout=8s"]).await }
    });
    let mut i = 0;
    while !watching.is_finished() {
        post(format!("watched-{i}"), "Watched").await;
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let (_, stdout, stderr) = watching.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(stdout.contains("Watched"), "{stdout}\n{stderr}");
}

/// `kubectl explain` documents the built-in kinds from the published v1.33 definitions (fields, types and
/// descriptions), nested fields included; the OpenAPI v2 document carries the same definitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_built_in_kinds() {
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let k = Kubectl::new(&server);
    let out = k.ok(&["explain", "deployment"]).await;
    assert!(out.contains("GROUP:      apps") && out.contains("Deployment enables declarative updates"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.strategy"]).await;
    assert!(out.contains("rollingUpdate\t<RollingUpdateDeployment>"), "{out}");
    assert!(out.contains("The deployment strategy to use to replace existing pods with new ones."), "{out}");
    let out = k.ok(&["explain", "pod.spec.containers"]).await;
    assert!(out.contains("imagePullPolicy\t<string>") && out.contains("livenessProbe\t<Probe>"), "{out}");
    let out = k.ok(&["explain", "pod.spec.containers.livenessProbe.httpGet.port"]).await;
    assert!(out.contains("FIELD: port <IntOrString>"), "{out}");
    let out = k.ok(&["explain", "services.spec", "--recursive"]).await;
    assert!(out.contains("clusterIP\t<string>") && out.contains("targetPort\t<IntOrString>"), "{out}");

    let v2: serde_json::Value = reqwest::get(format!("{}/openapi/v2", server.url()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let container = &v2["definitions"]["io.k8s.api.core.v1.Container"];
    assert_eq!(
        container["properties"]["livenessProbe"]["$ref"], "#/definitions/io.k8s.api.core.v1.Probe",
        "{container}"
    );
}
