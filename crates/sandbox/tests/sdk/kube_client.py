"""The official Kubernetes Python client (`kubernetes` on PyPI) against the Kubernetes API emulator.

Driven by tests/kube_emulator_python.rs, which starts the emulator (with the azml.dev CRDs installed) and passes
its URL in KUBE_URL. Every step asserts what a real API server answers; the script prints a JSON summary.
"""
import json
import os
import sys

import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

config = client.Configuration(host=os.environ["KUBE_URL"])
api = client.ApiClient(config)
core = client.CoreV1Api(api)
apps = client.AppsV1Api(api)
custom = client.CustomObjectsApi(api)


def with_content_type(content_type):
    # The client sends a dict as a strategic merge patch and a list as a JSON patch; other patch types are chosen,
    # as its users do, with a default Content-Type header.
    c = client.ApiClient(config)
    c.set_default_header("Content-Type", content_type)
    return c


merge = with_content_type("application/merge-patch+json")
apply = with_content_type("application/apply-patch+yaml")
core_merge, core_apply = client.CoreV1Api(merge), client.CoreV1Api(apply)
apps_merge, custom_merge = client.AppsV1Api(merge), client.CustomObjectsApi(merge)
ns = "default"
summary = {}


def status_of(call):
    try:
        call()
    except ApiException as e:
        return e.status, json.loads(e.body)
    return 200, None


# Create, get, list with label selectors and paging.
for i in range(5):
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"py-{i}", labels={"app": "py", "parity": "even" if i % 2 == 0 else "odd"}),
        data={"i": str(i)}))
assert core.read_namespaced_config_map("py-3", ns).data == {"i": "3"}
even = core.list_namespaced_config_map(ns, label_selector="app=py,parity=even")
assert sorted(c.metadata.name for c in even.items) == ["py-0", "py-2", "py-4"]
pages, token, names = 0, None, []
while True:
    page = core.list_namespaced_config_map(ns, label_selector="app=py", limit=2, _continue=token)
    pages += 1
    names += [c.metadata.name for c in page.items]
    token = page.metadata._continue
    if not token:
        break
assert pages == 3 and names == [f"py-{i}" for i in range(5)], (pages, names)
summary["pages"] = pages

# Watch from a resourceVersion, with bookmarks.
rv = core.list_namespaced_config_map(ns, label_selector="app=py").metadata.resource_version
core.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="py-new", labels={"app": "py"})))
seen = []
w = watch.Watch()
for event in w.stream(core.list_namespaced_config_map, ns, label_selector="app=py", resource_version=rv,
                      allow_watch_bookmarks=True, timeout_seconds=2):
    name = event["object"].metadata.name if event["type"] != "BOOKMARK" else None
    seen.append((event["type"], name))
assert ("ADDED", "py-new") in seen, seen
assert all(not (t == "ADDED" and n != "py-new") for t, n in seen), "only events after the resourceVersion: %s" % seen
assert any(t == "BOOKMARK" for t, _ in seen), seen
summary["watch"] = sorted({t for t, _ in seen})

# Patches: JSON merge, JSON patch, strategic merge, server-side apply with a conflict.
core_merge.patch_namespaced_config_map("py-0", ns, {"data": {"merge": "yes"}})
core.patch_namespaced_config_map("py-0", ns, [{"op": "add", "path": "/data/json", "value": "yes"}])
core.patch_namespaced_config_map("py-0", ns, {"data": {"smp": "yes"}})
assert core.read_namespaced_config_map("py-0", ns).data == {"i": "0", "merge": "yes", "json": "yes", "smp": "yes"}
applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-ssa"}, "data": {"owner": "first"}}
core_apply.patch_namespaced_config_map("py-ssa", ns, applied, field_manager="first")
applied["data"]["owner"] = "second"
code, body = status_of(lambda: core_apply.patch_namespaced_config_map(
    "py-ssa", ns, applied, field_manager="second"))
assert code == 409 and "first" in body["message"], (code, body)
core_apply.patch_namespaced_config_map("py-ssa", ns, applied, field_manager="second", force=True)
assert core.read_namespaced_config_map("py-ssa", ns).data["owner"] == "second"
summary["apply_conflict"] = code

# Strict field validation and typed decoding of a built-in kind.
code, body = status_of(lambda: api.call_api(
    f"/api/v1/namespaces/{ns}/configmaps", "POST", query_params=[("fieldValidation", "Strict")],
    header_params={"Content-Type": "application/json", "Accept": "application/json"},
    body={"metadata": {"name": "py-bad"}, "data": {"n": 1}}, _preload_content=False))
assert code == 400 and "cannot unmarshal number" in body["message"], (code, body)

# Status subresource of a Deployment: a status write leaves the spec alone and vice versa.
dep = apps.create_namespaced_deployment(ns, client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py-web"),
    spec=client.V1DeploymentSpec(
        selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")])))))
assert dep.spec.strategy.type == "RollingUpdate" and dep.spec.replicas == 1
apps_merge.patch_namespaced_deployment_status("py-web", ns, {"status": {"observedGeneration": 1, "replicas": 1}})
apps_merge.patch_namespaced_deployment("py-web", ns, {"spec": {"replicas": 3}, "status": {"replicas": 7}})
dep = apps.read_namespaced_deployment("py-web", ns)
assert dep.spec.replicas == 3 and dep.status.replicas == 1 and dep.metadata.generation == 2, dep
summary["generation"] = dep.metadata.generation

# Deletion with a finalizer and a propagation policy; dependents are garbage-collected.
owner = core.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="py-owner", finalizers=["test.azml.dev/hold"])))
core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(
    name="py-dependent", owner_references=[client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="py-owner", uid=owner.metadata.uid)])))
core.delete_namespaced_config_map("py-owner", ns, body=client.V1DeleteOptions(propagation_policy="Background"))
held = core.read_namespaced_config_map("py-owner", ns)
assert held.metadata.deletion_timestamp is not None
core_merge.patch_namespaced_config_map("py-owner", ns, {"metadata": {"finalizers": None}})
for name in ["py-owner", "py-dependent"]:
    code, _ = status_of(lambda: core.read_namespaced_config_map(name, ns))
    assert code == 404, (name, code)

# MlWorkspace through the dynamic (custom objects) API.
with open(os.environ["WORKSPACE_YAML"]) as f:
    ws = yaml.safe_load(f)
ws["metadata"] = {"name": "py-ws", "namespace": ns}
group, version, plural = "azml.dev", "v1alpha1", "mlworkspaces"
custom.create_namespaced_custom_object(group, version, ns, plural, ws)
got = custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws")
assert got["spec"]["location"] == ws["spec"]["location"]
listed = custom.list_namespaced_custom_object(group, version, ns, plural, limit=1)
assert [i["metadata"]["name"] for i in listed["items"]] == ["py-ws"]
custom_merge.patch_namespaced_custom_object(group, version, ns, plural, "py-ws", {"spec": {"friendlyName": "From Python"}})
code, body = status_of(lambda: custom_merge.patch_namespaced_custom_object(
    group, version, ns, plural, "py-ws", {"spec": {"location": "northeurope"}}))
assert code == 422, (code, body)
custom_merge.patch_namespaced_custom_object_status(group, version, ns, plural, "py-ws",
                                             {"status": {"observedGeneration": 2}})
got = custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws")
assert got["spec"]["friendlyName"] == "From Python" and got["status"]["observedGeneration"] == 2, got
custom.delete_namespaced_custom_object(group, version, ns, plural, "py-ws",
                                       body=client.V1DeleteOptions(propagation_policy="Foreground"))
code, _ = status_of(lambda: custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws"))
assert code == 404, code
summary["immutable_location"] = 422


def workspace(name, labels=None, finalizers=None):
    body = json.loads(json.dumps(ws))
    body["metadata"] = {"name": name, "namespace": ns, "labels": labels or {}}
    if finalizers:
        body["metadata"]["finalizers"] = finalizers
    return body


# MlWorkspace: label selectors and paging.
for i in range(3):
    custom.create_namespaced_custom_object(group, version, ns, plural,
                                           workspace(f"py-ws-{i}", {"team": "py", "tier": "gold" if i else "silver"}))
gold = custom.list_namespaced_custom_object(group, version, ns, plural, label_selector="team=py,tier=gold")
assert sorted(i["metadata"]["name"] for i in gold["items"]) == ["py-ws-1", "py-ws-2"], gold
token, names = None, []
while True:
    page = custom.list_namespaced_custom_object(group, version, ns, plural, label_selector="team=py", limit=1,
                                                _continue=token)
    names += [i["metadata"]["name"] for i in page["items"]]
    token = page["metadata"].get("continue")
    if not token:
        break
assert names == ["py-ws-0", "py-ws-1", "py-ws-2"], names

# MlWorkspace: watch from a resourceVersion, with bookmarks.
rv = custom.list_namespaced_custom_object(group, version, ns, plural)["metadata"]["resourceVersion"]
custom_merge.patch_namespaced_custom_object(group, version, ns, plural, "py-ws-0", {"metadata": {"labels": {"seen": "yes"}}})
seen = []
for event in watch.Watch().stream(custom.list_namespaced_custom_object, group, version, ns, plural,
                                  resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=2):
    seen.append((event["type"], event["object"]["metadata"].get("name")))
assert ("MODIFIED", "py-ws-0") in seen and all(t in ("MODIFIED", "BOOKMARK") for t, _ in seen), seen
summary["watch_workspace"] = sorted({t for t, _ in seen})

# MlWorkspace: JSON patch, strategic merge refused (custom resources have no patch strategies), server-side apply
# with a conflict naming the other manager.
custom_json_patch = client.CustomObjectsApi(with_content_type("application/json-patch+json"))
custom_json_patch.patch_namespaced_custom_object(group, version, ns, plural, "py-ws-0",
                                                 [{"op": "add", "path": "/spec/friendlyName", "value": "json-patched"}])
got = custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws-0")
assert got["spec"]["friendlyName"] == "json-patched", got
custom_smp = client.CustomObjectsApi(with_content_type("application/strategic-merge-patch+json"))
code, body = status_of(lambda: custom_smp.patch_namespaced_custom_object(
    group, version, ns, plural, "py-ws-0", {"spec": {"friendlyName": "smp"}}))
assert code == 415, (code, body)
custom_apply = client.CustomObjectsApi(apply)
applied = workspace("py-ws-ssa")
applied["spec"]["friendlyName"] = "first"
custom_apply.patch_namespaced_custom_object(group, version, ns, plural, "py-ws-ssa", applied, field_manager="py-first")
applied["spec"]["friendlyName"] = "second"
code, body = status_of(lambda: custom_apply.patch_namespaced_custom_object(
    group, version, ns, plural, "py-ws-ssa", applied, field_manager="py-second"))
assert code == 409 and "py-first" in body["message"] and ".spec.friendlyName" in body["message"], (code, body)
custom_apply.patch_namespaced_custom_object(group, version, ns, plural, "py-ws-ssa", applied,
                                            field_manager="py-second", force=True)
got = custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws-ssa")
assert got["spec"]["friendlyName"] == "second", got
summary["apply_conflict_workspace"] = code

# MlWorkspace: deletion waits for finalizers, with deletionTimestamp set.
custom.create_namespaced_custom_object(group, version, ns, plural,
                                       workspace("py-ws-held", finalizers=["test.azml.dev/hold"]))
custom.delete_namespaced_custom_object(group, version, ns, plural, "py-ws-held",
                                       body=client.V1DeleteOptions(propagation_policy="Background"))
held = custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws-held")
assert held["metadata"].get("deletionTimestamp"), held
custom_merge.patch_namespaced_custom_object(group, version, ns, plural, "py-ws-held",
                                            {"metadata": {"finalizers": None}})
code, _ = status_of(lambda: custom.get_namespaced_custom_object(group, version, ns, plural, "py-ws-held"))
assert code == 404, code

# Deployment: foreground deletion of an owner waits for its blocking dependents.
rs_owner = apps.read_namespaced_deployment("py-web", ns)
core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(
    name="py-rs-held", finalizers=["test.azml.dev/hold"], owner_references=[client.V1OwnerReference(
        api_version="apps/v1", kind="Deployment", name="py-web", uid=rs_owner.metadata.uid,
        block_owner_deletion=True)])))
apps.delete_namespaced_deployment("py-web", ns, body=client.V1DeleteOptions(propagation_policy="Foreground"))
waiting = apps.read_namespaced_deployment("py-web", ns)
assert "foregroundDeletion" in waiting.metadata.finalizers and waiting.metadata.deletion_timestamp, waiting.metadata
core_merge.patch_namespaced_config_map("py-rs-held", ns, {"metadata": {"finalizers": None}})
code, _ = status_of(lambda: apps.read_namespaced_deployment("py-web", ns))
assert code == 404, code
summary["foreground"] = "released"

json.dump(summary, sys.stdout)
