#!/usr/bin/env python3
"""Regenerates builtin-v1.33.json: the published Kubernetes v1.33 OpenAPI definitions of the built-in kinds the
emulator serves (and everything they reference), with their descriptions (served in the OpenAPI documents that
`kubectl explain` reads).

Source: the `kubernetes-validate` package (pinned in .ci/run), which ships the upstream OpenAPI converted to JSON
Schema with `additionalProperties: false` ("strict"). Usage:
    python3 generate.py /path/to/site-packages/kubernetes_validate > builtin-v1.33.json
"""
import json
import sys

ROOTS = (
    ["io.k8s.api.core.v1." + k for k in
     ["Pod", "Service", "ConfigMap", "Secret", "ServiceAccount", "Namespace", "Event", "PersistentVolumeClaim",
      "Endpoints", "PodTemplate", "ReplicationController", "PersistentVolume"]]
    + ["io.k8s.api.apps.v1." + k for k in ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ControllerRevision"]]
    + ["io.k8s.api.batch.v1." + k for k in ["Job", "CronJob"]]
    + ["io.k8s.api.events.v1.Event", "io.k8s.api.coordination.v1.Lease", "io.k8s.api.policy.v1.PodDisruptionBudget",
       "io.k8s.api.networking.v1.Ingress", "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"]
    + ["io.k8s.api.rbac.v1." + k for k in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]]
)


def main():
    base = sys.argv[1]
    defs = json.load(open(f"{base}/kubernetes-json-schema/v1.33.0-local-strict/_definitions.json"))["$defs"]
    seen = set()

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                name = ref.split("/")[-1]
                if name not in seen:
                    seen.add(name)
                    walk(defs[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for root in ROOTS:
        seen.add(root)
        walk(defs[root])

    json.dump({name: defs[name] for name in sorted(seen)}, sys.stdout, indent=None, separators=(",", ":"),
              sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
