# clinic-operator: the two quick-start commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export CARGO_BUILD_JOBS ?= 2
CARGO ?= cargo
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target)
OPERATOR_BIN := $(TARGET_DIR)/debug/clinic-operator

.PHONY: help
help: ## Show the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: control-plane
control-plane: ## Build (or find cached) kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok, kubelet, kube-proxy, and the floor's (1.31) kube-apiserver.
	@e2e/cluster/build.sh >/dev/null
	@e2e/cluster/floor/build.sh >/dev/null

.PHONY: node
node: ## Build (or find cached) the real node's add-ons (CoreDNS, kube-router, Traefik) and test images.
	@e2e/node/build.sh >/dev/null
	@e2e/images/build.sh >/dev/null

.PHONY: tools
tools: ## Build (or find cached) promtool, helm, kubeconform, actionlint, kube-score and vegeta (hack/loadtest.sh) from their Go modules.
	@e2e/cluster/tools/build.sh >/dev/null

.PHONY: build
build: ## Build the operator and the e2e tools.
	$(CARGO) build --workspace --bins

.PHONY: lint
lint: tools ## rustfmt, clippy (warnings are errors), gofmt of the e2e modules, actionlint of the workflows.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@test -z "$$(git ls-files '*.go' | xargs -r gofmt -l)"
	$$(e2e/cluster/tools/build.sh)/actionlint -color=false

.PHONY: test
test: lint control-plane node build docs-site ## Every test: unit, CRD drift, rules, mocked API, CLI, the e2e suite on a real control plane, and the real-pods tier on a real node.
	CLINIC_OPERATOR_BIN=$(OPERATOR_BIN) CLINIC_TOOLS_BIN=$$(e2e/cluster/tools/build.sh) \
	  PYTHON=$$(hack/python-env.sh)/bin/python3 $(CARGO) test --workspace --all-targets

.PHONY: crds
crds: ## Regenerate crds/ (and the chart's copy) from the Rust types (also run `make docs`).
	$(CARGO) run -q -p clinic-operator -- crd > crds/clinicplatform.yaml
	cp crds/clinicplatform.yaml charts/clinic-operator/files/crd.yaml

.PHONY: docs
docs: ## Regenerate docs/api.md from the CRD schema.
	$(CARGO) run -q -p clinic-operator -- api-docs > docs/api.md

BENCH_OUT ?= bench/results
BENCH_PLOT ?= docs/benchmarks.png

.PHONY: bench
bench: control-plane ## Fleet benchmark on the local control plane (100, 300, 1000 clinics): bench/results, docs/benchmarks.png.
	$(CARGO) build --release -p clinic-operator --bin clinic-operator
	$(CARGO) build --release -p clinic-operator-e2e --bin fleet-bench
	CLINIC_OPERATOR_BIN=$(TARGET_DIR)/release/clinic-operator $(TARGET_DIR)/release/fleet-bench --out $(BENCH_OUT) $(BENCH_ARGS)
	$$(hack/python-env.sh bench/requirements.txt)/bin/python3 bench/plot.py $(BENCH_OUT) $(BENCH_PLOT)

.PHONY: docs-site
docs-site: ## Build the MkDocs site into site/ with --strict (broken links and anchors fail).
	NO_MKDOCS_2_WARNING=1 $$(hack/python-env.sh)/bin/mkdocs build --strict --quiet

.PHONY: demo
demo: control-plane build ## Start a local control plane with the operator and examples/minimal.yaml.
	@OPERATOR_BIN=$(OPERATOR_BIN) E2E_CLUSTER_BIN=$(TARGET_DIR)/debug/e2e-cluster e2e/demo.sh up

.PHONY: demo-real
demo-real: control-plane node build ## Like demo, on one real node: the containers run (`kubectl logs`/`exec` work).
	@REAL_NODE=1 OPERATOR_BIN=$(OPERATOR_BIN) E2E_CLUSTER_BIN=$(TARGET_DIR)/debug/e2e-cluster e2e/demo.sh up

.PHONY: demo-down
demo-down: ## Stop what `make demo` started.
	@e2e/demo.sh down
