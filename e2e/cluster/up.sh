#!/usr/bin/env bash
# Start a real Kubernetes control plane on loopback, as plain processes:
# etcd + kube-apiserver + kube-controller-manager (no kubelet, no scheduler).
#
#   eval "$(e2e/cluster/up.sh)"     # sets KUBECONFIG and PATH (for kubectl)
#
# Idempotent: builds only what is missing (build.sh), creates the PKI once and
# reuses it, starts only components that are not already running, and when
# everything is up and healthy just prints the environment again.
# stdout carries only `export ...` lines; all progress goes to stderr.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=up
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# Keep stdout clean for the caller's eval: everything else goes to stderr.
exec 3>&1 1>&2

# --- tools ----------------------------------------------------------------------
need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ss >/dev/null || need_pkgs+=(iproute2)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]} (apt)"
    command -v apt-get >/dev/null || die "missing ${need_pkgs[*]} and no apt-get"
    sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_=sudo
    $sudo_ apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

# --- binaries -------------------------------------------------------------------
built_bin="$("$HERE/build.sh")"
[[ "$built_bin" == "$BIN" ]] || die "build.sh put binaries in $built_bin, expected $BIN"

mkdir -p "$STATE" "$RUN" "$LOGS"
chmod 700 "$STATE"

# --- PKI (created once, reused) -------------------------------------------------
# ca            : cluster CA (client certs, apiserver serving cert, CSR signing)
# apiserver     : serving cert for 127.0.0.1 / localhost / kubernetes.default.svc
# admin         : client cert, O=system:masters (the admin kubeconfig)
# controller-manager : client cert CN=system:kube-controller-manager
# sa            : service-account token signing key pair
# front-proxy-ca / front-proxy-client : request-header auth for aggregated APIs
make_pki() {
    local d="$1"
    local sans="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    sans+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1"

    new_ca() { # name cn
        cat >"$d/$1.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = $2
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
EOF
        openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
            -config "$d/$1.cnf" -keyout "$d/$1.key" -out "$d/$1.crt" 2>/dev/null
    }
    new_cert() { # name ca subject eku [sans]
        local name="$1" ca="$2" subj="$3" eku="$4" san="${5:-}"
        {
            echo "[ext]"
            echo "basicConstraints = critical,CA:FALSE"
            echo "keyUsage = critical,digitalSignature,keyEncipherment"
            echo "extendedKeyUsage = $eku"
            echo "authorityKeyIdentifier = keyid"
            [[ -n "$san" ]] && echo "subjectAltName = $san"
        } >"$d/$name.ext"
        openssl req -new -nodes -newkey rsa:2048 -sha256 -subj "$subj" \
            -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
        openssl x509 -req -sha256 -days 3650 -in "$d/$name.csr" \
            -CA "$d/$ca.crt" -CAkey "$d/$ca.key" -CAcreateserial \
            -extfile "$d/$name.ext" -extensions ext -out "$d/$name.crt" 2>/dev/null
        rm -f "$d/$name.csr" "$d/$name.ext"
    }

    new_ca ca "memsidecar-e2e-ca"
    new_ca front-proxy-ca "memsidecar-e2e-front-proxy-ca"
    new_cert apiserver ca "/CN=kube-apiserver" serverAuth "$sans"
    new_cert admin ca "/O=system:masters/CN=memsidecar-e2e-admin" clientAuth
    new_cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
    new_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/sa.key" 2>/dev/null
    openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
    rm -f "$d"/*.cnf "$d"/*.srl
    chmod 600 "$d"/*.key
}

if [[ -f "$PKI/.complete" ]]; then
    log "pki: reusing $PKI"
else
    log "pki: creating CA, apiserver, admin, controller-manager, front-proxy and service-account keys in $PKI"
    tmp_pki="$(mktemp -d "$STATE/.pki.XXXXXX")"
    make_pki "$tmp_pki"
    touch "$tmp_pki/.complete"
    rm -rf "$PKI"
    mv "$tmp_pki" "$PKI"
    chmod 700 "$PKI"
fi

# --- kubeconfigs ------------------------------------------------------------------
write_kubeconfig() { # path user cert key
    local tmp="$1.tmp"
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: memsidecar-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$3")
    client-key-data: $(base64 -w0 <"$4")
contexts:
- name: memsidecar-e2e
  context:
    cluster: memsidecar-e2e
    user: $2
    namespace: default
current-context: memsidecar-e2e
EOF
    chmod 600 "$tmp"
    mv -f "$tmp" "$1"
}
write_kubeconfig "$KUBECONFIG_PATH" admin "$PKI/admin.crt" "$PKI/admin.key"
write_kubeconfig "$STATE/controller-manager.kubeconfig" system:kube-controller-manager \
    "$PKI/controller-manager.crt" "$PKI/controller-manager.key"

# --- process helpers --------------------------------------------------------------
# start NAME PORT... -- CMD...: start CMD detached (own session, logs to
# $LOGS/NAME.log, pid in $RUN/NAME.pid) unless NAME is already running.
start() {
    local name="$1"; shift
    local ports=() pid p
    while [[ "$1" != "--" ]]; do ports+=("$1"); shift; done
    shift
    if pid="$(pid_of "$name")"; then
        log "$name: already running (pid $pid)"
        return 0
    fi
    for p in "${ports[@]}"; do
        port_busy "$p" && die "$name: 127.0.0.1:$p is already in use by another process (not ours: no live $RUN/$name.pid)"
    done
    rm -f "$RUN/$name.pid"
    log "$name: starting (log: $LOGS/$name.log)"
    printf '\n===== %s start %s =====\n' "$name" "$(date -u +%FT%TZ)" >>"$LOGS/$name.log"
    # The inner shell writes its own pid, then execs: the pid is the process's.
    # fd 3 (our real stdout) is closed for it, or a caller's $(up.sh) would
    # wait for the daemon to exit.
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" \
        </dev/null >>"$LOGS/$name.log" 2>&1 3>&- &
    for _ in $(seq 50); do [[ -s "$RUN/$name.pid" ]] && break; sleep 0.1; done
}

# wait_healthy NAME TIMEOUT_S CHECK_CMD...: poll CHECK_CMD until it succeeds.
wait_healthy() {
    local name="$1" timeout="$2"; shift 2
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then
            log "$name: healthy"
            return 0
        fi
        if ! pid_of "$name" >/dev/null; then
            log "$name: exited; last log lines:"
            tail -n 30 "$LOGS/$name.log" >&2 || true
            die "$name failed to start"
        fi
        sleep 0.5
    done
    log "$name: not healthy after ${timeout}s; last log lines:"
    tail -n 30 "$LOGS/$name.log" >&2 || true
    die "$name did not become healthy in ${timeout}s"
}

etcd_healthy() {
    curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'
}
apiserver_ready() {
    [[ "$(curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://127.0.0.1:$APISERVER_PORT/readyz")" == ok ]]
}
kcm_healthy() {
    # Serving cert is self-signed by the controller-manager (in $STATE/kcm-certs).
    [[ "$(curl -fsS -k --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz")" == ok ]]
}

# --- etcd -----------------------------------------------------------------------
mkdir -p "$ETCD_DATA"
chmod 700 "$ETCD_DATA"
start etcd "$ETCD_PORT" "$ETCD_PEER_PORT" -- "$BIN/etcd" \
    --name memsidecar-e2e \
    --data-dir "$ETCD_DATA" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "memsidecar-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --log-level warn
wait_healthy etcd 30 etcd_healthy

# --- kube-apiserver -------------------------------------------------------------
start kube-apiserver "$APISERVER_PORT" -- "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 \
    --secure-port "$APISERVER_PORT" \
    --advertise-address 127.0.0.1 \
    --endpoint-reconciler-type none \
    --cert-dir "$STATE/apiserver-certs" \
    --tls-cert-file "$PKI/apiserver.crt" \
    --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --allow-privileged=true \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --profiling=false \
    --v 1
wait_healthy kube-apiserver 180 apiserver_ready

# --- kube-controller-manager ----------------------------------------------------
start kube-controller-manager "$KCM_PORT" -- "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$KCM_PORT" \
    --cert-dir "$STATE/kcm-certs" \
    --flex-volume-plugin-dir "$STATE/kcm-flexvolume" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" \
    --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --controllers '*' \
    --profiling=false \
    --v 1
wait_healthy kube-controller-manager 90 kcm_healthy

log "control plane up: https://127.0.0.1:$APISERVER_PORT (etcd 127.0.0.1:$ETCD_PORT, controller-manager 127.0.0.1:$KCM_PORT)"
printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH" >&3
# shellcheck disable=SC2016  # $PATH is expanded by the caller's eval
printf 'export PATH=%q:"$PATH"\n' "$BIN" >&3
printf 'export MEMSIDECAR_K8S_STATE=%q\n' "$STATE" >&3
