#!/usr/bin/env bash
# Renders the chart with real Helm into the golden files deploy/helm/rendered/<set>.yaml: `default` with the chart's
# values, and one per value set in deploy/helm/values/. With --check, renders into a temporary directory and fails
# on any difference (CI runs that). HELM names the helm binary (default: helm).
#   deploy/helm/render.sh            # after changing a template or a default: regenerate, review, commit
#   deploy/helm/render.sh --check
set -euo pipefail
cd "$(dirname "$0")"
helm=${HELM:-helm}
out=rendered
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
render() { "$helm" template azml-operator azml-operator --namespace azml-system "$@"; }
render > "$out/default.yaml"
for values in values/*.yaml; do
  render --values "$values" > "$out/$(basename "$values")"
done
if [[ "$out" != rendered ]]; then
  diff -ru rendered "$out" || { echo "deploy/helm/rendered/ is stale: run deploy/helm/render.sh"; exit 1; }
fi
