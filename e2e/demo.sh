#!/usr/bin/env bash
# `make demo`: a real control plane on 127.0.0.1 (see e2e/src/cluster.rs), the operator running
# with the chart's RBAC, and examples/minimal.yaml converged. `make demo-down` stops it all.
# `make demo-real` (REAL_NODE=1): the same on one real node (e2e/src/node.rs) instead of kwok's
# simulated nodes, so the platform's containers really run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.e2e/demo"
kubectl="$("$root/e2e/cluster/build.sh")/kubectl"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

down() {
  if alive "$dir/operator.pid"; then kill "$(cat "$dir/operator.pid")"; fi
  if alive "$dir/pid"; then
    pid=$(cat "$dir/pid")
    kill "$pid"
    for _ in $(seq 1 150); do alive "$dir/pid" || break; sleep 0.2; done
    # A real node's run directory (kept, like the demo's, by E2E_KEEP_DIR; torn down by now).
    rm -rf "${TMPDIR:-/tmp}/clinic-e2e-node-$pid"
  fi
  rm -rf "$dir"
  echo "demo stopped"
}

up() {
  if alive "$dir/pid"; then
    echo "a demo control plane is already running; reusing it ('make demo-down' stops it)"
  else
    rm -rf "$dir"; mkdir -p "$dir"
    if [ -n "${REAL_NODE:-}" ]; then
      echo "starting the control plane and a real node (containerd, kubelet, kube-proxy, CoreDNS, kube-router)..."
      E2E_KEEP_DIR=1 setsid nohup "${E2E_CLUSTER_BIN:?}" up "$dir" --real-node >"$dir/cluster.log" 2>&1 </dev/null &
    else
      echo "starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)..."
      E2E_KEEP_DIR=1 setsid nohup "${E2E_CLUSTER_BIN:?}" up "$dir" >"$dir/cluster.log" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 300); do
      [ -f "$dir/ready" ] && break
      if ! kill -0 $! 2>/dev/null; then echo "control plane failed:"; tail -20 "$dir/cluster.log"; exit 1; fi
      sleep 0.5
    done
    [ -f "$dir/ready" ] || { echo "control plane not ready after 150 s"; tail -20 "$dir/cluster.log"; exit 1; }
  fi
  export KUBECONFIG="$dir/admin.kubeconfig"
  k() { "$kubectl" "$@"; }

  k apply --server-side -f "$root/crds/clinicplatform.yaml" >/dev/null
  # Polled rather than `kubectl wait`: a CRD read before its status is first written has
  # `conditions: null`, which kubectl wait reports as an error instead of waiting (and so does
  # this jsonpath filter: that read counts as not yet Established).
  for _ in $(seq 120); do
    established=$(k get crd clinicplatforms.clinic.audioprothese.fr \
      -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null || true)
    [ "$established" = True ] && break
    sleep 0.5
  done
  [ "$established" = True ] || { echo "the ClinicPlatform CRD is not Established after 60 s"; exit 1; }
  # The operator runs as a ServiceAccount bound to the chart's ClusterRole, as in a cluster.
  k apply --server-side -f "$root/charts/clinic-operator/files/clusterrole.yaml" >/dev/null
  k apply --server-side -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: clinic-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: clinic-operator, namespace: clinic-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: clinic-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clinic-operator}
subjects: [{kind: ServiceAccount, name: clinic-operator, namespace: clinic-system}]
YAML
  token=$(k -n clinic-system create token clinic-operator --duration=24h)
  cp "$KUBECONFIG" "$dir/operator.kubeconfig"
  KUBECONFIG="$dir/operator.kubeconfig" "$kubectl" config set-credentials operator --token="$token" >/dev/null
  KUBECONFIG="$dir/operator.kubeconfig" "$kubectl" config set-context --current --user=operator >/dev/null

  if ! alive "$dir/operator.pid"; then
    KUBECONFIG="$dir/operator.kubeconfig" setsid nohup "${OPERATOR_BIN:?}" run --metrics-addr 127.0.0.1:18080 \
      >"$dir/operator.log" 2>&1 </dev/null &
    echo $! >"$dir/operator.pid"
  fi

  # The example brings its namespace (with the Pod Security labels) and the clinic.
  k apply -f "$root/examples/minimal.yaml"
  echo "waiting for the clinic to be Ready..."
  start=$SECONDS
  k -n clinic-minimal wait --for=condition=Ready clinicplatform/clinic-minimal --timeout=300s
  echo "Ready after $((SECONDS - start)) s"
  echo
  k get clinicplatforms -A
  echo
  k -n clinic-minimal describe clinicplatform clinic-minimal
  cat <<TXT

The cluster keeps running ($(if [ -n "${REAL_NODE:-}" ]; then
    echo "on a real node: the containers run; the backend is a stand-in for OpenMRS, see docs/testing.md"
  else
    echo "pods are simulated by kwok: no containers run; 'make demo-real' runs them"
  fi)).
  export KUBECONFIG=$KUBECONFIG
  $kubectl get all,networkpolicies,secrets -n clinic-minimal
  $kubectl -n clinic-minimal logs clinic-minimal-backend-0    # real node only
  operator log: $dir/operator.log   metrics: curl 127.0.0.1:18080/metrics
Stop everything with: make demo-down
TXT
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
