// Pins the releases whose CustomResourceDefinitions the e2e cluster installs. Nothing here is
// built: crds.sh downloads these modules (checked against go.sum) and reads their CRD files, so
// the operator's objects meet the upstream schemas, never hand-written copies.
module github.com/audioprothese/clinic-operator/e2e/cluster/crds

go 1.26

require (
	github.com/argoproj/argo-cd/v3 v3.5.7
	github.com/cert-manager/cert-manager v1.21.2
	github.com/prometheus-operator/prometheus-operator v0.85.0
	github.com/vmware-tanzu/velero v1.18.3
	istio.io/api v1.32.0
	k8s.io/autoscaler/vertical-pod-autoscaler v1.8.1
	sigs.k8s.io/gateway-api v1.6.3
)
