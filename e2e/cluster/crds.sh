#!/usr/bin/env bash
# Prints the paths of the upstream CRD files the e2e cluster installs (Velero, Prometheus
# Operator, cert-manager, Gateway API's standard channel, Istio, the Vertical Pod Autoscaler,
# Argo CD's Application), downloading the pinned modules into the Go module cache if needed.
set -euo pipefail
cd "$(dirname "$0")/crds"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
dir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
velero=$(dir github.com/vmware-tanzu/velero)
prom=$(dir github.com/prometheus-operator/prometheus-operator)
cm=$(dir github.com/cert-manager/cert-manager)
argocd=$(dir github.com/argoproj/argo-cd/v3)
gateway=$(dir sigs.k8s.io/gateway-api)
istio=$(dir istio.io/api)
vpa=$(dir k8s.io/autoscaler/vertical-pod-autoscaler)
for f in schedules backups restores backupstoragelocations deletebackuprequests; do
  echo "$velero/config/crd/v1/bases/velero.io_$f.yaml"
done
for f in servicemonitors podmonitors prometheusrules alertmanagerconfigs; do
  echo "$prom/example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml"
done
for f in certificates issuers clusterissuers; do
  echo "$cm/deploy/crds/cert-manager.io_$f.yaml"
done
# The whole standard channel (its admission policy aside): a Gateway implementation watches
# more kinds than the operator writes.
for f in "$gateway"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
  case $f in *_vap_*) ;; *) echo "$f" ;; esac
done
# Istio's released CRDs, all in one file (the operator writes PeerAuthentications and
# AuthorizationPolicies for spec.security.mtls).
echo "$istio/kubernetes/customresourcedefinitions.gen.yaml"
# The Vertical Pod Autoscaler's (spec.autoscaling.verticalRecommendations).
echo "$vpa/deploy/vpa-v1-crd-gen.yaml"
# Argo CD's Application, for the GitOps example of examples/fleet.
echo "$argocd/manifests/crds/application-crd.yaml"
