#!/usr/bin/env bash
# Smoke test of the loopback control plane (starts it with up.sh if needed):
#  1. /readyz through kubectl;
#  2. a mutating webhook served on https://127.0.0.1:<port> (python3 stdlib,
#     cert signed by the cluster CA) is registered for one throwaway namespace;
#  3. `kubectl create deployment` there; within a bounded wait the ReplicaSet
#     controller creates a Pod (it stays Pending: no scheduler, no kubelet) and
#     that Pod carries the annotation the webhook patched in;
#  4. everything it created is deleted again. The cluster is left running.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=smoke
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# Two steps, so that a failing up.sh stops this script (eval "$(...)" would not).
env_out="$("$HERE/up.sh")"
eval "$env_out"
WEBHOOK_PORT="${MEMSIDECAR_SMOKE_WEBHOOK_PORT:-58443}"
NS="memsidecar-smoke-$$"
WORK="$(mktemp -d)"
hook_pid=""

cleanup() {
    set +e
    kubectl delete mutatingwebhookconfiguration "$NS" --ignore-not-found >/dev/null 2>&1
    kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1
    [[ -n "$hook_pid" ]] && kill "$hook_pid" 2>/dev/null && wait "$hook_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

log "1. kubectl get --raw /readyz"
[[ "$(kubectl get --raw /readyz)" == ok ]] || die "/readyz is not ok"

log "2. webhook on https://127.0.0.1:$WEBHOOK_PORT/mutate"
port_busy "$WEBHOOK_PORT" && die "port $WEBHOOK_PORT busy"
printf '[e]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl req -new -nodes -newkey rsa:2048 -subj /CN=127.0.0.1 \
    -keyout "$WORK/hook.key" -out "$WORK/hook.csr" 2>/dev/null
openssl x509 -req -days 1 -in "$WORK/hook.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -CAserial "$WORK/ca.srl" -extfile "$WORK/ext" -extensions e \
    -out "$WORK/hook.crt" 2>/dev/null
cat >"$WORK/hook.py" <<'EOF'
import base64, json, ssl, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, cert, key, calls = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        req = review["request"]
        obj = req["object"]
        if obj.get("metadata", {}).get("annotations"):
            patch = [{"op": "add", "path": "/metadata/annotations/memsidecar-smoke~1mutated", "value": "true"}]
        else:
            patch = [{"op": "add", "path": "/metadata/annotations", "value": {"memsidecar-smoke/mutated": "true"}}]
        with open(calls, "a") as f:
            f.write(f"{req['operation']} {req['kind']['kind']} {req['namespace']} by {req['userInfo']['username']}\n")
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": True, "patchType": "JSONPatch",
                         "patch": base64.b64encode(json.dumps(patch).encode()).decode()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
EOF
python3 "$WORK/hook.py" "$WEBHOOK_PORT" "$WORK/hook.crt" "$WORK/hook.key" "$WORK/calls" \
    >"$WORK/hook.log" 2>&1 &
hook_pid=$!
for _ in $(seq 50); do port_busy "$WEBHOOK_PORT" && break; sleep 0.1; done
port_busy "$WEBHOOK_PORT" || { cat "$WORK/hook.log" >&2; die "webhook server did not start"; }

kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: $NS
webhooks:
- name: smoke.memsidecar.io
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  reinvocationPolicy: IfNeeded
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: $NS
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["pods"]
  clientConfig:
    url: https://127.0.0.1:$WEBHOOK_PORT/mutate
    caBundle: $(base64 -w0 <"$PKI/ca.crt")
EOF

log "3. kubectl create deployment web --image=nginx (namespace $NS)"
kubectl -n "$NS" create deployment web --image=nginx >/dev/null
pod=""
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    pod="$(kubectl -n "$NS" get pods -l app=web -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
    [[ -n "$pod" ]] && break
    sleep 1
done
kubectl -n "$NS" get deployment,replicaset,pods -o wide >&2
[[ -n "$pod" ]] || {
    kubectl -n "$NS" get events >&2 || true
    die "no Pod was created within 60s"
}
owner="$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.ownerReferences[0].kind}')"
mutated="$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.memsidecar-smoke/mutated}')"
log "pod $pod: owner=$owner, phase=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.status.phase}'), webhook annotation=${mutated:-<none>}"
log "webhook calls: $(tr '\n' ';' <"$WORK/calls" 2>/dev/null)"
[[ "$owner" == ReplicaSet ]] || die "pod is not owned by a ReplicaSet"
[[ "$mutated" == true ]] || die "the webhook did not mutate the pod"

log "4. cleanup"
kubectl -n "$NS" delete deployment web >/dev/null
log "smoke test passed"
