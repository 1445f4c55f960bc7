//! HTTP front end: routing, discovery, OpenAPI, list/watch streaming, and the in-process handle.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};
use super::openapi;
use super::protobuf;
use super::registry::{Registry, ResourceType};
use super::select::{self, FieldSelector, LabelSelector};
use super::store::{EventType, ListQuery, Store, Target, WatchStart, WriteOptions, present};
use super::validation::FieldValidation;
use super::version::KUBE_VERSION;

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Number of events kept for watch resumption; older resourceVersions get 410 Expired.
    pub history_limit: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Interval between BOOKMARK events for watches that allow them.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_limit: 10_000,
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

struct Shared {
    store: Arc<Store>,
    opts: ServerOptions,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

/// Entry point of the emulator.
#[derive(Debug, Clone, Copy)]
pub struct KubeApiServer;

impl KubeApiServer {
    /// Binds and serves on the current Tokio runtime.
    pub async fn start(opts: ServerOptions) -> std::io::Result<RunningServer> {
        let store = Arc::new(Store::new(opts.history_limit));
        Self::start_with_store(opts, store).await
    }

    /// Serves an existing store (e.g. pre-populated).
    pub async fn start_with_store(opts: ServerOptions, store: Arc<Store>) -> std::io::Result<RunningServer> {
        let listener = tokio::net::TcpListener::bind(opts.addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared { store: store.clone(), opts, addr, shutdown: shutdown.clone() });
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let served =
                axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "kube API emulator stopped with an error");
            }
        });
        tracing::info!(%addr, "kube API emulator listening");
        Ok(RunningServer { addr, store, shutdown, task: Some(task) })
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store behind the server, for direct inspection in tests.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A kube-rs client for this server (default namespace `default`).
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        // kube builds a rustls config even for plain http; both ring and aws-lc are linked, so pick one.
        crate::install_tls_provider();
        let uri: http::Uri =
            self.url().parse().map_err(|e: http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
        kube::Client::try_from(kube::Config::new(uri))
    }

    /// A kubeconfig pointing at this server (no credentials, namespace `default`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Stops serving (open watches end) and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            // The task only ends by shutdown; a join error means it panicked, which we only log.
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "kube API emulator task failed");
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = shared.opts.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large(limit).into_response(),
    };
    tracing::debug!(method = %parts.method, uri = %parts.uri, "request");
    match route(&shared, &parts.method, &parts.uri, &parts.headers, bytes).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    add_warnings(&mut resp, warnings);
    resp
}

/// `Warning: 299 - "..."` headers, one per warning.
fn add_warnings(resp: &mut Response, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

/// How a response body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Json,
    Protobuf,
}

/// Content negotiation as the API server does it: the first media type of `Accept` the resource is served in.
/// Built-in kinds are served in protobuf and JSON, custom resources in JSON only; a server-side conversion (`as=Table`)
/// is answered as JSON. `Accept` naming nothing the resource is served in is 406.
fn negotiate(headers: &HeaderMap, rt: &ResourceType, version: &str) -> ApiResult<Wire> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return Ok(Wire::Json) };
    let protobuf = protobuf::has_protobuf(rt, version);
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let conversion = parts.any(|p| p.starts_with("as="));
        match media.as_str() {
            protobuf::MEDIA_TYPE if protobuf && !conversion => return Ok(Wire::Protobuf),
            "" | "*/*" | "application/*" | "application/json" | "application/yaml" => return Ok(Wire::Json),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(if protobuf {
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    } else {
        protobuf::JSON_MEDIA_TYPES
    }))
}

/// A response in the negotiated encoding (objects without a protobuf form stay JSON).
fn respond(wire: Wire, code: StatusCode, body: &Value, warnings: &[String]) -> ApiResult<Response> {
    if wire == Wire::Protobuf
        && let Some(bytes) = protobuf::encode(body).map_err(|e| ApiError::internal(e.to_string()))?
    {
        let mut resp = (code, [(header::CONTENT_TYPE, protobuf::MEDIA_TYPE)], bytes).into_response();
        add_warnings(&mut resp, warnings);
        return Ok(resp);
    }
    Ok(json_response(code, body, warnings))
}

fn ok(body: &Value) -> ApiResult<Response> {
    Ok(json_response(StatusCode::OK, body, &[]))
}

type Query = HashMap<String, String>;

fn parse_query(uri: &http::Uri) -> Query {
    uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// A boolean query parameter, parsed as Go's `strconv.ParseBool` does (the Python client sends `watch=True`).
fn flag(q: &Query, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

async fn route(
    shared: &Shared,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = parse_query(uri);
    let registry = shared.store.registry();
    match segs.as_slice() {
        ["version"] => ok(&version_info()),
        ["healthz" | "readyz" | "livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => ok(&json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}],
        })),
        ["apis"] => ok(&group_list(&registry)),
        ["apis", group] => {
            let groups = registry.groups();
            let versions = groups.get(*group).ok_or_else(|| ApiError::no_route(path))?;
            ok(&api_group(group, versions))
        }
        ["api", "v1"] => ok(&resource_list(&registry, "", "v1")),
        ["apis", group, version] if registry.serves(group, version) => ok(&resource_list(&registry, group, version)),
        ["openapi", "v2"] => ok(&openapi::v2_doc(&registry)),
        ["openapi", "v3"] => ok(&openapi::index(&registry)),
        ["openapi", "v3", rest @ ..] => {
            let (group, version) = match rest {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => return Err(ApiError::no_route(path)),
            };
            if !registry.serves(group, version) {
                return Err(ApiError::no_route(path));
            }
            ok(&openapi::group_version_doc(&registry, group, version))
        }
        ["api", "v1", rest @ ..] => resource(shared, method, headers, &q, body, "", "v1", rest, path).await,
        ["apis", group, version, rest @ ..] => {
            resource(shared, method, headers, &q, body, group, version, rest, path).await
        }
        _ => Err(ApiError::no_route(path)),
    }
}

fn version_info() -> Value {
    let (major, minor) = KUBE_VERSION;
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_group(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|(g, vs)| {
            let mut v = api_group(g, vs);
            if let Some(m) = v.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            v
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for t in registry.all().filter(|t| t.group == group && t.versions.iter().any(|v| v == version)) {
        let mut main = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !t.short_names.is_empty() {
            main["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            main["categories"] = json!(t.categories);
        }
        if t.custom {
            main["storageVersionHash"] = json!(openapi::short_hash(&format!("{}/{}", t.group, t.plural)));
        }
        resources.push(main);
        if t.has_status {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn write_options(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let field_manager = match q.get("fieldManager") {
        Some(m) => m.clone(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
            .unwrap_or_else(|| "unknown".into()),
    };
    Ok(WriteOptions {
        field_manager,
        field_validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        force: flag(q, "force"),
    })
}

fn list_query(q: &Query) -> ApiResult<ListQuery> {
    Ok(ListQuery {
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
        limit: match q.get("limit") {
            Some(l) => Some(l.parse().map_err(|_| ApiError::bad_request(format!("invalid limit \"{l}\"")))?),
            None => None,
        },
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

/// The server-side conversion the first media type of `Accept` asks for (`as=`): a Table (`kubectl get`), or
/// metadata only (`PartialObjectMetadata` for one object or a watch's events, `PartialObjectMetadataList` for a
/// list: controllers that cache only metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conversion {
    None,
    Table,
    Metadata,
    MetadataList,
}

fn conversion(headers: &HeaderMap) -> Conversion {
    let Some(first) =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).map(|a| a.split(',').next().unwrap_or(""))
    else {
        return Conversion::None;
    };
    let param = |key: &str| first.split(';').map(str::trim).find_map(|p| p.strip_prefix(key));
    match (param("as="), param("g=")) {
        (Some("Table"), _) => Conversion::Table,
        (Some("PartialObjectMetadata"), Some("meta.k8s.io")) => Conversion::Metadata,
        (Some("PartialObjectMetadataList"), Some("meta.k8s.io")) => Conversion::MetadataList,
        _ => Conversion::None,
    }
}

/// The API server's answer to a metadata conversion of the wrong shape (a list asked for as one object, or one
/// object as a list).
fn metadata_not_acceptable(wanted: &str) -> ApiError {
    ApiError::not_acceptable(&format!("application/json;as={wanted};g=meta.k8s.io;v=v1"))
}

/// Decodes a create or update body; duplicate fields of a JSON body are answered per `fieldValidation` (refused,
/// returned as warnings, or ignored), the last value kept.
fn decode_body(
    headers: &HeaderMap,
    body: &[u8],
    rt: &ResourceType,
    version: &str,
    mode: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    if protobuf::is_protobuf(ct) {
        // Typed client-go clients (kubectl create, Helm's release storage) send built-in kinds as protobuf.
        return protobuf::decode_object(body, rt, version)
            .map(|v| (v, Vec::new()))
            .map_err(|e| e.to_api_error(rt, version));
    }
    let kind = &rt.kind;
    let cannot = |e: String| {
        ApiError::bad_request(format!("{kind} in version \"{version}\" cannot be handled as a {kind}: {e}"))
    };
    if ct.contains("yaml") {
        let value = super::decode::yaml(body).map_err(cannot)?;
        let duplicates = super::decode::yaml_duplicates(body);
        return match mode {
            _ if duplicates.is_empty() => Ok((value, duplicates)),
            FieldValidation::Strict => {
                Err(cannot(format!("strict decoding error: yaml: unmarshal errors:\n  {}", duplicates.join("\n  "))))
            }
            FieldValidation::Warn => Ok((value, duplicates)),
            FieldValidation::Ignore => Ok((value, Vec::new())),
        };
    }
    let (value, duplicates) = super::decode::json_with_duplicates(body).map_err(|e| cannot(e.to_string()))?;
    let messages: Vec<String> = duplicates.iter().map(|d| format!("duplicate field \"{d}\"")).collect();
    match mode {
        _ if messages.is_empty() => Ok((value, messages)),
        FieldValidation::Strict => Err(cannot(format!("strict decoding error: {}", messages.join(", ")))),
        FieldValidation::Warn => Ok((value, messages)),
        FieldValidation::Ignore => Ok((value, Vec::new())),
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    q: &Query,
    body: Bytes,
    group: &str,
    version: &str,
    rest: &[&str],
    path: &str,
) -> ApiResult<Response> {
    // namespaces/{ns}/{plural}[/{name}[/{sub}]] unless it is the namespace object itself (namespaces/{name}[/status]).
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !(group.is_empty() && matches!(*plural, "status" | "finalize")) => {
            (Some(ns.to_string()), *plural, tail.first().copied(), tail.get(1).copied())
        }
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => return Err(ApiError::no_route(path)),
    };
    if rest.len() > 5 {
        return Err(ApiError::no_route(path));
    }
    let rt = shared.store.registry().find(group, version, plural).ok_or_else(|| ApiError::no_route(path))?;
    let sub = sub.map(|s| if s == "finalize" { "status" } else { s });
    if sub.is_some_and(|s| s != "status" || !rt.has_status) {
        return Err(ApiError::no_route(path));
    }
    let t = Target {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        namespace,
        name: name.map(String::from),
        subresource: sub.map(String::from),
    };
    let conversion = conversion(headers);
    let table = conversion == Conversion::Table;
    let wire = if conversion == Conversion::None { negotiate(headers, &rt, version)? } else { Wire::Json };
    let metadata = conversion == Conversion::Metadata;
    // One object (GET, a write's answer, a watch event) converts as PartialObjectMetadata, a list as
    // PartialObjectMetadataList; the other way round is 406, as the API server answers it.
    let listing = method == Method::GET && name.is_none() && !flag(q, "watch");
    match conversion {
        Conversion::Metadata if listing => return Err(metadata_not_acceptable("PartialObjectMetadataList")),
        Conversion::MetadataList if !listing => return Err(metadata_not_acceptable("PartialObjectMetadata")),
        _ => {}
    }
    let respond = |wire: Wire, code: StatusCode, body: &Value, warnings: &[String]| {
        if metadata {
            Ok(json_response(code, &select::partial_metadata(body), warnings))
        } else {
            respond(wire, code, body, warnings)
        }
    };
    let include = q.get("includeObject").map(String::as_str).unwrap_or("Metadata").to_string();
    match (method.clone(), name) {
        (Method::GET, Some(_)) => {
            let obj = shared.store.get(&t)?;
            if table {
                let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
                return ok(&select::table(&rt, version, &[obj], json!({"resourceVersion": rv}), &include));
            }
            respond(wire, StatusCode::OK, &obj, &[])
        }
        (Method::GET, None) if flag(q, "watch") => watch(shared, &t, q, conversion, wire, include),
        (Method::GET, None) => {
            let page = shared.store.list(&t, &list_query(q)?)?;
            let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
            if let Some(c) = &page.continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(r) = page.remaining {
                meta["remainingItemCount"] = json!(r);
            }
            if table {
                return ok(&select::table(&rt, version, &page.items, meta, &include));
            }
            if conversion == Conversion::MetadataList {
                let items: Vec<Value> = page.items.iter().map(select::partial_metadata).collect();
                return ok(&json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                    "items": items,
                }));
            }
            let list = json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(version),
                "metadata": meta,
                "items": page.items,
            });
            respond(wire, StatusCode::OK, &list, &[])
        }
        (Method::POST, None) => {
            let opts = write_options(q, headers)?;
            let (obj, mut warnings) = decode_body(headers, &body, &rt, version, opts.field_validation)?;
            let out = shared.store.create(&t, obj, &opts)?;
            warnings.extend(out.warnings);
            respond(wire, StatusCode::CREATED, &out.object, &warnings)
        }
        (Method::PUT, Some(_)) => {
            let opts = write_options(q, headers)?;
            let (obj, mut warnings) = decode_body(headers, &body, &rt, version, opts.field_validation)?;
            let out = shared.store.update(&t, obj, &opts)?;
            warnings.extend(out.warnings);
            respond(wire, StatusCode::OK, &out.object, &warnings)
        }
        (Method::PATCH, Some(_)) => {
            let opts = write_options(q, headers)?;
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let out = shared.store.patch(&t, ct, &body, &opts)?;
            let code = if out.created { StatusCode::CREATED } else { StatusCode::OK };
            respond(wire, code, &out.object, &out.warnings)
        }
        (Method::DELETE, Some(_)) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let opts: Value = if body.is_empty() {
                json!({})
            } else if protobuf::is_protobuf(ct) {
                protobuf::decode_delete_options(&body)
                    .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?
            };
            let dry_run = q.get("dryRun").is_some_and(|d| d == "All")
                || opts.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|d| d == "All"));
            let obj = shared.store.delete(&t, &opts, dry_run)?;
            respond(wire, StatusCode::OK, &obj, &[])
        }
        (Method::DELETE, None) => {
            let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
            let items = shared.store.delete_collection(&t, &list_query(q)?, dry_run)?;
            let list = json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": shared.store.resource_version().to_string()},
                "items": items,
            });
            respond(wire, StatusCode::OK, &list, &[])
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

struct WatchCtx {
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    conversion: Conversion,
    /// Length-delimited protobuf frames instead of JSON lines.
    protobuf: bool,
    include: String,
}

impl WatchCtx {
    fn matches(&self, obj: &Value) -> bool {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        self.namespace.as_ref().is_none_or(|want| want == ns) && self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// Maps a stored event to what this watcher sees, honouring selector transitions.
    fn view(&self, type_: EventType, obj: &Value, old: Option<&Value>) -> Option<EventType> {
        let now = self.matches(obj);
        match type_ {
            EventType::Added | EventType::Deleted => now.then_some(type_),
            EventType::Modified => {
                let before = old.is_none_or(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }

    fn encode(&self, type_: &str, obj: &Value) -> Bytes {
        let object = if self.conversion == Conversion::Metadata {
            select::partial_metadata(obj)
        } else if self.conversion == Conversion::Table {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
            select::table(
                &self.rt,
                &self.version,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
                &self.include,
            )
        } else {
            present(obj, &self.rt, &self.version)
        };
        self.frame(type_, &object)
    }

    /// One event on the wire: a JSON line, or a length-delimited protobuf `WatchEvent` frame.
    fn frame(&self, type_: &str, object: &Value) -> Bytes {
        if self.protobuf {
            match protobuf::watch_frame(type_, object) {
                Ok(Some(frame)) => return Bytes::from(frame),
                // Negotiation only picks protobuf for kinds that have it, so this is a stored object that does not
                // fit its message: reported, and the event is sent as an ERROR the client relists on.
                other => {
                    let reason = other.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(%reason, "watch event not encodable as protobuf");
                    let status = ApiError::internal(reason).to_status();
                    return match protobuf::watch_frame("ERROR", &status) {
                        Ok(Some(frame)) => Bytes::from(frame),
                        _ => Bytes::new(),
                    };
                }
            }
        }
        let mut line = json!({"type": type_, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = if self.conversion == Conversion::Metadata {
            select::partial_metadata(&json!({ "metadata": meta }))
        } else {
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(&self.version), "metadata": meta})
        };
        self.frame("BOOKMARK", &obj)
    }
}

fn watch(
    shared: &Shared,
    t: &Target,
    q: &Query,
    conversion: Conversion,
    wire: Wire,
    include: String,
) -> ApiResult<Response> {
    let lq = list_query(q)?;
    let send_initial = flag(q, "sendInitialEvents");
    let start = shared.store.watch(t, q.get("resourceVersion").map(String::as_str), send_initial)?;
    let ctx = WatchCtx {
        rt: start.rt.clone(),
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        labels: lq.labels,
        fields: lq.fields,
        bookmarks: flag(q, "allowWatchBookmarks"),
        conversion,
        protobuf: wire == Wire::Protobuf,
        include,
    };
    let content_type = if ctx.protobuf { protobuf::WATCH_MEDIA_TYPE } else { "application/json" };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let cancel = shared.shutdown.clone();
    let interval = shared.opts.bookmark_interval;
    tokio::spawn(run_watch(start, ctx, send_initial, timeout, interval, cancel, tx));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(format!("building watch response: {e}")))
}

async fn run_watch(
    start: WatchStart,
    ctx: WatchCtx,
    initial_end: bool,
    timeout: Duration,
    bookmark_interval: Duration,
    cancel: CancellationToken,
    tx: mpsc::Sender<Bytes>,
) {
    let WatchStart { initial, mut rx, resource_version, .. } = start;
    for (type_, obj, old) in initial {
        if let Some(seen) = ctx.view(type_, &obj, old.as_deref())
            && tx.send(ctx.encode(seen.as_str(), &obj)).await.is_err()
        {
            return;
        }
    }
    if initial_end && tx.send(ctx.bookmark(resource_version, true)).await.is_err() {
        return;
    }
    let mut last_rv = resource_version;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(bookmark_interval);
    ticker.tick().await;
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if ctx.bookmarks => ctx.bookmark(last_rv, false),
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    last_rv = ev.rv;
                    if ev.key != ctx.rt.key() {
                        continue;
                    }
                    match ctx.view(ev.type_, &ev.object, ev.old.as_deref()) {
                        Some(seen) => ctx.encode(seen.as_str(), &ev.object),
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // The watcher fell behind the bounded buffer: tell it to relist, as a real server does.
                    let status = ApiError::expired(last_rv, last_rv + 1).to_status();
                    let _ = tx.send(ctx.frame("ERROR", &status)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}
