#!/usr/bin/env bash
# Sluice's own single-node Kubernetes cluster, for development and CI.
#
#   deploy/k8s/cluster.sh up       build what is missing (once), start, wait until a pod runs
#   deploy/k8s/cluster.sh down     stop exactly the processes `up` started (pid files), forget pods
#   deploy/k8s/cluster.sh status   what runs, the node, the cluster's memory; exit 0 iff ready
#   deploy/k8s/cluster.sh env      shell exports for kubectl and the tests
#
# Kubernetes v1.20.2 built offline from Debian bookworm's source package, etcd-server,
# dockerd (with runc-clamp-oom beside this file) and kubelet's Docker runtime. Nothing
# is pulled from an image registry: the images are built here and pods use
# imagePullPolicy: Never (or IfNotPresent with a tag). Everything it builds is cached
# outside the repository ($SLUICE_K8S_CACHE); its state lives in $SLUICE_K8S_STATE.
# Ports are not Kubernetes' defaults so it runs beside anything else on the machine.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SLUICE_K8S_CACHE:-/var/cache/sluice-k8s}"
STATE="${SLUICE_K8S_STATE:-/var/lib/sluice-k8s}"
K8S_VERSION="1.20.2"
SRC_GLOB="kubernetes-1.20.5+really1.20.2"
BIN="$CACHE/bin-v$K8S_VERSION"
IMAGES="$CACHE/images"
ETCD_PORT="${SLUICE_K8S_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${SLUICE_K8S_ETCD_PEER_PORT:-23800}"
API_PORT="${SLUICE_K8S_API_PORT:-16443}"
KUBELET_PORT="${SLUICE_K8S_KUBELET_PORT:-20250}"
KUBELET_HEALTHZ_PORT="${SLUICE_K8S_KUBELET_HEALTHZ_PORT:-20248}"
CM_PORT="${SLUICE_K8S_CM_PORT:-20257}"
SCHED_PORT="${SLUICE_K8S_SCHED_PORT:-20259}"
NODE="sluice-node1"
# the images pods use; the busybox one is also tagged as the provider's xcom sidecar image
PYTHON_IMAGE="sluice-k8s/python:bookworm"
BUSYBOX_IMAGE="sluice-k8s/busybox:1.35"
PAUSE_IMAGE="sluice-k8s/pause:3.2"
SIDECAR_TAGS="${SLUICE_K8S_SIDECAR_TAGS:-alpine:3.24.2 alpine:latest}"
# pods get addresses on a bridge of this cluster's own (CNI bridge + host-local): kubelet
# kills a non-hostNetwork pod whose sandbox has no IP at its next sync (the xcom sidecar with it)
POD_CIDR="${SLUICE_K8S_POD_CIDR:-10.244.0.0/24}"
CNI_BRIDGE="sluicek8s0"
# bumped when an image's content changes: up re-imports images of an older revision
IMAGES_REV=2
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler dockerd kubelet"
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
DOCKER_SOCK="$STATE/docker/docker.sock"

log() { printf '%s sluice-k8s: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds; fail naming WHAT
wait_until() {
    local timeout="$1" what="$2"; shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            die "timed out after ${timeout}s waiting for $what (logs: $STATE/log/)"
        fi
        sleep 0.5
    done
}

# --- build (once, cached) -----------------------------------------------------------------
ensure_packages() {
    local missing=()
    command -v go >/dev/null || missing+=(golang-go)
    command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v etcd >/dev/null || missing+=(etcd-server)
    [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
    command -v containerd >/dev/null || missing+=(containerd)
    [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v gcc >/dev/null || missing+=(gcc libc6-dev)
    command -v python3 >/dev/null || missing+=(python3)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        # policy-rc.d-less machines would start the packaged docker/etcd services: this
        # cluster runs its own, so services are not started by the install
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

docker_cli() {
    if command -v docker >/dev/null; then
        docker -H "unix://$DOCKER_SOCK" "$@"
    else
        /usr/bin/docker -H "unix://$DOCKER_SOCK" "$@"
    fi
}

ensure_source() {
    local src
    src="$(ls -d "$CACHE"/src/$SRC_GLOB 2>/dev/null | head -1 || true)"
    if [ -z "$src" ]; then
        if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding a deb-src entry for Debian bookworm (Kubernetes' source package)"
            cat > /etc/apt/sources.list.d/sluice-k8s-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        fi
        apt-get update -qq
        mkdir -p "$CACHE/src"
        (cd "$CACHE/src" && apt-get source -qq kubernetes >/dev/null 2>&1) \
            || die "apt-get source kubernetes failed"
        src="$(ls -d "$CACHE"/src/$SRC_GLOB | head -1)"
    fi
    echo "$src"
}

# Kubernetes 1.20 vendors reflect2 1.0.1 and json-iterator 1.1.10, which fault (SIGSEGV in
# map iteration) when built with Go >= 1.18, as bookworm's golang-go is: the API server dies
# within seconds. Debian's own packages of their fixed releases replace them in vendor/.
patch_vendor() {
    local src="$1" gocode=/usr/share/gocode/src/github.com
    [ -e "$src/vendor/github.com/modern-go/reflect2/go_above_118.go" ] && return 0
    if [ ! -e "$gocode/modern-go/reflect2/go_above_118.go" ] || [ ! -d "$gocode/json-iterator/go" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
    fi
    log "vendoring reflect2 1.0.2 and json-iterator 1.1.12 (Go >= 1.18)"
    rsync -a --delete --exclude '*_test.go' --exclude go.mod --exclude go.sum \
        "$gocode/modern-go/reflect2/" "$src/vendor/github.com/modern-go/reflect2/"
    rsync -a --delete --exclude '*_test.go' --exclude go.mod --exclude go.sum \
        "$gocode/json-iterator/go/" "$src/vendor/github.com/json-iterator/go/"
}

ensure_binaries() {
    local b missing=0
    [ -e "$BIN/.vendor-go118" ] || missing=1
    for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
        [ -x "$BIN/$b" ] || missing=1
    done
    ((missing)) || return 0
    local src; src="$(ensure_source)"
    patch_vendor "$src"
    log "building Kubernetes v$K8S_VERSION from $src (several minutes, once)"
    local t0=$SECONDS
    (
        cd "$src"
        mkdir -p .go/src/k8s.io "$CACHE/home"
        [ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
        export GOPATH="$PWD/.go" CGO_ENABLED=0 GOCACHE="$CACHE/gocache" HOME="$CACHE/home"
        export GOFLAGS=-mod=vendor
        nice -n 5 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl" \
            > "$CACHE/build.log" 2>&1
    ) || die "build failed: $CACHE/build.log"
    mkdir -p "$BIN.tmp"
    for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
        cp "$src/_output/bin/$b" "$BIN.tmp/$b"
    done
    touch "$BIN.tmp/.vendor-go118"
    rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
    log "built in $((SECONDS - t0))s into $BIN"
}

# rootfs tarballs, built once into the cache; imported into this cluster's dockerd by up
build_image_tars() {
    mkdir -p "$IMAGES"
    if [ ! -s "$IMAGES/pause.tar" ]; then
        local src; src="$(ensure_source)"
        local dir; dir="$(mktemp -d)"
        gcc -Os -static -DVERSION=v3.2 -o "$dir/pause" "$src/build/pause/linux/pause.c"
        strip "$dir/pause" 2>/dev/null || true
        tar -C "$dir" -cf "$IMAGES/pause.tar.tmp" pause && mv "$IMAGES/pause.tar.tmp" "$IMAGES/pause.tar"
        rm -rf "$dir"
    fi
    # tarballs of an older revision are rebuilt (busybox, seconds) or amended (python)
    if [ "$(cat "$IMAGES/rev" 2>/dev/null)" != "$IMAGES_REV" ]; then
        rm -f "$IMAGES/busybox.tar"
        if [ -s "$IMAGES/python.tar" ]; then
            local tmp; tmp="$(mktemp -d)"
            mkdir -p "$tmp/usr/bin" && ln -s python3 "$tmp/usr/bin/python"
            tar -C "$tmp" -rf "$IMAGES/python.tar" ./usr/bin/python
            rm -rf "$tmp"
        fi
        echo "$IMAGES_REV" > "$IMAGES/rev"
    fi
    if [ ! -s "$IMAGES/busybox.tar" ]; then
        local dir; dir="$(mktemp -d)"
        mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/root"
        cp /bin/busybox "$dir/bin/busybox"
        local applet
        for applet in $(/bin/busybox --list); do
            [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
        done
        mkdir -p "$dir/usr" && ln -s ../bin "$dir/usr/bin" && ln -s bin "$dir/sbin"
        cp "$HERE/pgrep" "$dir/bin/pgrep"
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dir/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
        chmod 1777 "$dir/tmp"
        tar -C "$dir" -cf "$IMAGES/busybox.tar.tmp" . && mv "$IMAGES/busybox.tar.tmp" "$IMAGES/busybox.tar"
        rm -rf "$dir"
    fi
    if [ ! -s "$IMAGES/python.tar" ]; then
        log "building the python3 task image (debootstrap bookworm minbase, about a minute)"
        local dir="$CACHE/rootfs-python"
        rm -rf "$dir"
        debootstrap --variant=minbase --include=python3 bookworm "$dir" http://deb.debian.org/debian \
            > "$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed: $CACHE/debootstrap.log"
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
        # @task.kubernetes runs `python`: bookworm's python3 has no such name
        ln -sf python3 "$dir/usr/bin/python"
        tar -C "$dir" -cf "$IMAGES/python.tar.tmp" . && mv "$IMAGES/python.tar.tmp" "$IMAGES/python.tar"
        rm -rf "$dir"
    fi
}

# current IMAGE: present in this cluster's dockerd, of this script's image revision
current() {
    [ "$(docker_cli image inspect -f '{{ index .Config.Labels "sluice-k8s.rev" }}' "$1" 2>/dev/null)" \
        = "$IMAGES_REV" ]
}

import_images() {
    local rev="LABEL sluice-k8s.rev=$IMAGES_REV"
    if ! current "$PAUSE_IMAGE"; then
        docker_cli import --change 'ENTRYPOINT ["/pause"]' --change "$rev" \
            "$IMAGES/pause.tar" "$PAUSE_IMAGE" >/dev/null
    fi
    local tag
    if ! current "$BUSYBOX_IMAGE"; then
        docker_cli import --change 'CMD ["sh"]' --change 'ENV PATH=/bin' --change "$rev" \
            "$IMAGES/busybox.tar" "$BUSYBOX_IMAGE" >/dev/null
        for tag in $SIDECAR_TAGS; do docker_cli tag "$BUSYBOX_IMAGE" "$tag"; done
    fi
    for tag in $SIDECAR_TAGS; do
        docker_cli image inspect "$tag" >/dev/null 2>&1 || docker_cli tag "$BUSYBOX_IMAGE" "$tag"
    done
    if ! current "$PYTHON_IMAGE"; then
        docker_cli import --change 'CMD ["python3"]' --change "$rev" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV PYTHONUNBUFFERED=1' "$IMAGES/python.tar" "$PYTHON_IMAGE" >/dev/null
    fi
}

# --- certificates, token, kubeconfig (once per state dir) ---------------------------------
ensure_pki() {
    local pki="$STATE/pki"
    [ -s "$KUBECONFIG_PATH" ] && [ -s "$pki/apiserver.crt" ] && return 0
    mkdir -p "$pki" && chmod 700 "$pki"
    (
        cd "$pki"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt \
            -subj "/CN=sluice-k8s-ca" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' > san.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile san.ext -out apiserver.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        local token; token="$(openssl rand -hex 24)"
        printf '%s,admin,admin,system:masters\n' "$token" > tokens.csv
        chmod 600 ./*.key tokens.csv
        cat > "$KUBECONFIG_PATH.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-k8s
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: admin
  user:
    token: $token
contexts:
- name: sluice-k8s
  context: {cluster: sluice-k8s, user: admin, namespace: default}
current-context: sluice-k8s
EOF
        chmod 600 "$KUBECONFIG_PATH.tmp"
        mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
    )
}

# --- processes ------------------------------------------------------------------------------
pidfile() { echo "$STATE/run/$1.pid"; }

# running NAME: its pid file names a live process running NAME's binary
running() {
    local f; f="$(pidfile "$1")"
    [ -s "$f" ] || return 1
    local pid; pid="$(cat "$f")"
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$1"
}

# start NAME COMMAND...: start COMMAND in a session of its own unless NAME already runs
start() {
    local name="$1"; shift
    if running "$name"; then
        return 0
    fi
    mkdir -p "$STATE/run" "$STATE/log"
    # fd 9 (the lock) is not inherited: a daemon holding it would block every later command
    setsid "$@" > "$STATE/log/$name.log" 2>&1 < /dev/null 9>&- &
    echo $! > "$(pidfile "$name")"
    log "started $name (pid $!)"
}

# stop NAME: SIGTERM the pid we recorded, SIGKILL after 20 s; nothing else is signalled
stop() {
    local name="$1" f; f="$(pidfile "$1")"
    if running "$name"; then
        local pid; pid="$(cat "$f")"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$f"
}

# the node's status through the API directly (kubectl 1.20 cannot patch a subresource)
patch_node_address() {
    local token; token="$(cut -d, -f1 "$STATE/pki/tokens.csv")"
    curl -sf --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $token" -X PATCH \
        -H 'Content-Type: application/merge-patch+json' \
        "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE/status" \
        -d '{"status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"},{"type":"Hostname","address":"'"$NODE"'"}]}}' \
        >/dev/null || die "could not set node $NODE's InternalIP"
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }

api_ready() { kubectl_ get --raw /readyz; }
default_sa() { kubectl_ -n default get serviceaccount default; }
node_registered() { kubectl_ get node "$NODE"; }
node_ready() {
    [ "$(kubectl_ get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
node_has_ip() {
    [ "$(kubectl_ get node "$NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')" = 127.0.0.1 ]
}
docker_ready() { docker_cli version; }
kubelet_healthy() { curl -sf "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"; }

start_etcd() {
    mkdir -p "$STATE/etcd" && chmod 700 "$STATE/etcd"
    start etcd etcd --name sluice-k8s --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "sluice-k8s=http://127.0.0.1:$ETCD_PEER_PORT" \
        --quota-backend-bytes 2147483648 --snapshot-count 10000
}

start_control_plane() {
    local pki="$STATE/pki"
    start kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 \
        --advertise-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
        --authorization-mode Node,RBAC --service-cluster-ip-range 10.0.0.0/24 \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --allow-privileged=true --enable-admission-plugins NamespaceLifecycle,ServiceAccount \
        --kubelet-preferred-address-types InternalIP,Hostname --profiling=false \
        --endpoint-reconciler-type none \
        --cert-dir "$STATE/apiserver-certs"
    wait_until 600 "kube-apiserver to be ready" api_ready
    start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_PATH" \
        --leader-elect=false --service-account-private-key-file "$pki/sa.key" \
        --root-ca-file "$pki/ca.crt" --bind-address 127.0.0.1 --secure-port "$CM_PORT" --port 0 \
        --use-service-account-credentials=false --profiling=false \
        --cert-dir "$STATE/cm-certs"
    start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_PATH" \
        --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --port 0 \
        --profiling=false --cert-dir "$STATE/sched-certs"
}

start_dockerd() {
    mkdir -p "$STATE/docker/data" "$STATE/docker/exec"
    [ -s "$STATE/docker/daemon.json" ] || echo '{}' > "$STATE/docker/daemon.json"
    start dockerd /usr/sbin/dockerd --config-file "$STATE/docker/daemon.json" \
        --data-root "$STATE/docker/data" --exec-root "$STATE/docker/exec" \
        --pidfile "$STATE/docker/dockerd.pid" -H "unix://$DOCKER_SOCK" \
        --iptables=false --ip6tables=false --bridge=none --ip-masq=false --userland-proxy=false \
        --add-runtime "sluice-runc=$HERE/runc-clamp-oom" --default-runtime sluice-runc \
        --exec-opt native.cgroupdriver=cgroupfs
    wait_until 600 "dockerd to answer on $DOCKER_SOCK" docker_ready
}

write_cni_config() {
    mkdir -p "$STATE/cni/net.d" "$STATE/cni/cache" "$STATE/cni/ipam"
    cat > "$STATE/cni/net.d/10-sluice-k8s.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "sluice-k8s", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false,
   "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}}]}
EOF
}

start_kubelet() {
    mkdir -p "$STATE/kubelet" "$STATE/kubelet-plugins" "$STATE/kubelet-pki" "$STATE/dockershim"
    write_cni_config
    start kubelet "$BIN/kubelet" --kubeconfig "$KUBECONFIG_PATH" --container-runtime docker \
        --docker-endpoint "unix://$DOCKER_SOCK" --pod-infra-container-image "$PAUSE_IMAGE" \
        --cgroup-driver cgroupfs --fail-swap-on=false --root-dir "$STATE/kubelet" \
        --experimental-dockershim-root-directory "$STATE/dockershim" \
        --hostname-override "$NODE" --node-ip 127.0.0.1 --address 127.0.0.1 \
        --port "$KUBELET_PORT" --read-only-port 0 --healthz-port "$KUBELET_HEALTHZ_PORT" \
        --authentication-token-webhook=false --anonymous-auth=true --authorization-mode AlwaysAllow \
        --cgroups-per-qos=false --enforce-node-allocatable= --make-iptables-util-chains=false \
        --volume-plugin-dir "$STATE/kubelet-plugins" --cert-dir "$STATE/kubelet-pki" \
        --resolv-conf /etc/resolv.conf --image-gc-high-threshold 100 --eviction-hard= \
        --volume-stats-agg-period 0 --max-pods 110 --v 1 \
        --network-plugin cni --cni-bin-dir /usr/lib/cni --cni-conf-dir "$STATE/cni/net.d" \
        --cni-cache-dir "$STATE/cni/cache"
    wait_until 600 "kubelet's health endpoint" kubelet_healthy
    wait_until 600 "node $NODE to register" node_registered
    # kubelet will not put a loopback address in the node's status; the apiserver reaches
    # the kubelet (pod logs, exec) through the node's InternalIP
    node_has_ip || patch_node_address
    wait_until 600 "node $NODE to be Ready" node_ready
}

smoke_pod() {
    local name="sluice-k8s-smoke"
    kubectl_ -n default delete pod "$name" --ignore-not-found --grace-period=0 --force >/dev/null 2>&1 || true
    kubectl_ -n default run "$name" --image "$BUSYBOX_IMAGE" --image-pull-policy Never \
        --restart Never --command -- sh -c 'echo sluice-k8s-ready; exec sleep 60' >/dev/null
    wait_until 600 "a pod to run" pod_running "$name"
    local got
    got="$(kubectl_ -n default exec "$name" -- sh -c 'echo exec-ok')" || die "exec into a pod failed"
    [ "$got" = exec-ok ] || die "exec into a pod returned '$got'"
    wait_until 120 "a pod's log" pod_logged "$name"
    kubectl_ -n default delete pod "$name" --grace-period=0 --force >/dev/null 2>&1 || true
}
pod_running() { [ "$(kubectl_ -n default get pod "$1" -o jsonpath='{.status.phase}')" = Running ]; }
pod_logged() { kubectl_ -n default logs "$1" | grep -q sluice-k8s-ready; }

# --- commands -------------------------------------------------------------------------------
cmd_up() {
    local t0=$SECONDS
    mkdir -p "$STATE" "$CACHE"
    exec 9> "$STATE/lock"
    flock 9
    ensure_packages
    ensure_binaries
    build_image_tars
    ensure_pki
    start_etcd
    start_control_plane
    start_dockerd
    import_images
    start_kubelet
    wait_until 600 "the default service account" default_sa
    smoke_pod
    log "cluster ready in $((SECONDS - t0))s: export KUBECONFIG=$KUBECONFIG_PATH"
}

unmount_under() {
    local dir="$1" m
    # deepest first; only mounts at or below this cluster's own kubelet directory (kubelet
    # bind-mounts its root directory onto itself, then volumes below it)
    for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

cmd_down() {
    mkdir -p "$STATE"
    exec 9> "$STATE/lock"
    flock 9
    stop kubelet
    if running dockerd; then
        local ids; ids="$(docker_cli ps -aq 2>/dev/null || true)"
        [ -z "$ids" ] || docker_cli rm -f $ids >/dev/null 2>&1 || true
    fi
    stop dockerd
    stop kube-scheduler
    stop kube-controller-manager
    stop kube-apiserver
    stop etcd
    unmount_under "$STATE/kubelet"
    # pods and node state are forgotten; certificates, the token and the images are kept
    rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/dockershim" "$STATE/cni"
    # the pods' bridge, made by the CNI plugin for this cluster's kubelet
    if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
        ip link delete "$CNI_BRIDGE" || true
    fi
    log "down"
}

cmd_status() {
    local ok=0 name pid rss total=0
    for name in $COMPONENTS; do
        if running "$name"; then
            pid="$(cat "$(pidfile "$name")")"
            # the process and its children (dockerd's containerd and shims)
            rss="$(ps -o rss= --pid "$pid" --ppid "$pid" 2>/dev/null | awk '{s+=$1} END {print s+0}')"
            total=$((total + rss))
            printf '%-24s running  pid %-8s %6d MB\n' "$name" "$pid" $((rss / 1024))
        else
            printf '%-24s stopped\n' "$name"
            ok=1
        fi
    done
    printf '%-24s %d MB\n' "memory (RSS)" $((total / 1024))
    if ((ok == 0)) && node_ready; then
        echo "node $NODE Ready; KUBECONFIG=$KUBECONFIG_PATH"
        return 0
    fi
    return 1
}

# the host's address on the pods' bridge (the first of POD_CIDR): where a pod reaches a
# server of this machine, such as a Kubernetes-mode worker's Execution API
host_address() {
    local net="${POD_CIDR%/*}" a b c d
    IFS=. read -r a b c d <<< "$net"
    echo "$a.$b.$c.$((d + 1))"
}

cmd_env() {
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    echo "export SLUICE_K8S_HOST_ADDRESS=$(host_address)"
    echo "export PATH=$BIN:\$PATH"
    echo "export DOCKER_HOST=unix://$DOCKER_SOCK"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    build) mkdir -p "$CACHE"; ensure_packages; ensure_binaries; build_image_tars ;;
    images) mkdir -p "$CACHE"; ensure_packages; build_image_tars ;;
    *) echo "usage: $0 up|down|status|env|build" >&2; exit 2 ;;
esac
