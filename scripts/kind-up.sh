#!/usr/bin/env bash
# For users with Docker: a kind cluster running this checkout, so `make e2e` can run
# against a real kubelet (`make e2e KUBECONFIG=...`). Not runnable on machines without
# a Docker engine (the project's CI uses e2e/cluster instead).
#
#   scripts/kind-up.sh        create cluster `memsidecar`, build + load both images, install the chart
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER:-memsidecar}"
TAG="${IMAGE_TAG:-dev}"
OPERATOR_IMAGE="memsidecar-operator:$TAG"
SIDECAR_IMAGE="memsidecar-sidecar:$TAG"

for tool in docker kind helm kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is required" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
docker build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .
docker build -f Dockerfile.sidecar -t "$SIDECAR_IMAGE" .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$SIDECAR_IMAGE"
helm upgrade --install memsidecar charts/memsidecar \
  --namespace memsidecar-system --create-namespace --wait \
  --set operator.image.repository=memsidecar-operator --set operator.image.tag="$TAG" \
  --set operator.image.pullPolicy=Never \
  --set sidecar.image.repository=memsidecar-sidecar --set sidecar.image.tag="$TAG" \
  --set sidecar.image.pullPolicy=Never
mkdir -p "$HOME/.kube"
kind get kubeconfig --name "$CLUSTER" > "${KIND_KUBECONFIG:-$HOME/.kube/memsidecar-kind}"
echo "cluster ready: make e2e KUBECONFIG=${KIND_KUBECONFIG:-$HOME/.kube/memsidecar-kind} MEMSIDECAR_E2E_EXTERNAL_OPERATOR=1"
