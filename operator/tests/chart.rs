//! The Helm chart: lint, render with several value sets, validate every rendered object with
//! kubeconform -strict against the pinned Kubernetes schemas and the CRDs (helm and kubeconform
//! built from their Go modules; schemas generated offline by e2e/cluster/tools/schemas.sh).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clinic_operator::desired::monitoring;
use common::{exercised_metrics, tempdir, text, tool};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    root().join("charts/clinic-operator")
}

fn schemas() -> &'static str {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(root().join("e2e/cluster/tools/schemas.sh")).output().unwrap();
        assert!(out.status.success(), "schemas.sh: {}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

fn helm_template(args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("helm"))
        .args(["template", "clinic-operator"])
        .arg(chart())
        .args(["--namespace", "clinic-system", "--kube-version", "1.34.0"])
        .args(args)
        // Values files are named from the workspace root, as the docs show them.
        .current_dir(root())
        .output()
        .unwrap();
    if out.status.success() { Ok(String::from_utf8(out.stdout).unwrap()) } else { Err(text(&out)) }
}

fn kubeconform(manifests: &str) -> (bool, String) {
    let dir = tempdir("chart-test");
    let file = dir.join("manifests.yaml");
    std::fs::write(&file, manifests).unwrap();
    let location = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", schemas());
    let out = Command::new(tool("kubeconform"))
        .args(["-strict", "-summary", "-schema-location", &location])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), text(&out))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn chart_lints_strictly() {
    let out = Command::new(tool("helm")).args(["lint", "--strict"]).arg(chart()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

const VALUE_SETS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    (
        "everything on",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
        ],
    ),
    ("namespaced", &["--set", "watchNamespaces={clinic-a,clinic-b}"]),
    ("single replica", &["--set", "replicaCount=1,leaderElection.enabled=false,networkPolicy.enabled=false"]),
    ("platform policy", &["-f", "examples/platform-values.yaml"]),
];

#[test]
fn every_rendered_object_passes_kubeconform_strict() {
    for (name, args) in VALUE_SETS {
        let manifests = helm_template(args).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (ok, out) = kubeconform(&manifests);
        assert!(ok, "{name}: {out}");
        assert!(out.contains("Invalid: 0, Errors: 0, Skipped: 0"), "{name}: {out}");
    }
    // The validation does reject a wrong field.
    let (ok, _) =
        kubeconform("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n");
    assert!(!ok);
}

#[test]
fn what_the_operator_renders_passes_kubeconform_strict() {
    // Under the policy the examples are written for (the production one names its backup location).
    let policy =
        clinic_operator::policy::Policy::from_file(&root().join("examples/platform-values.yaml")).unwrap();
    for example in ["examples/minimal.yaml", "examples/production.yaml"] {
        let input = std::fs::read_to_string(root().join(example)).unwrap();
        let rendered = clinic_operator::render::render_with(&input, "default", &policy).unwrap();
        let (ok, out) = kubeconform(&rendered);
        assert!(ok, "{example}: {out}");
        assert!(out.contains("Invalid: 0, Errors: 0, Skipped: 0"), "{example}: {out}");
    }
}

/// kube-score's checks that the operator's choices answer otherwise, each with why.
const KUBE_SCORE_IGNORED: &[(&str, &str)] = &[
    // `spec.images.pullPolicy` decides (IfNotPresent with digests is the documented production
    // choice; Always would fail every pod start while the registry is down).
    ("container-image-pull-policy", "the spec's choice"),
    // The upstream images run as their own users (nginx 101, mysql 999, OpenMRS 1001 with group
    // 0) and own their files as them: another id breaks the images.
    ("container-security-context-user-group-id", "the upstream images' users"),
    // Replicas are spread over nodes by topologySpreadConstraints (ScheduleAnyway), which
    // kube-score does not read.
    ("deployment-has-host-podantiaffinity", "topology spread"),
    ("statefulset-has-host-podantiaffinity", "topology spread"),
];

/// kube-score (a third-party linter, built from its Go module) finds nothing critical and
/// nothing to warn about in what the operator renders, but for the checks above.
#[test]
fn what_the_operator_renders_passes_kube_score() {
    let policy =
        clinic_operator::policy::Policy::from_file(&root().join("examples/platform-values.yaml")).unwrap();
    for example in ["examples/minimal.yaml", "examples/production.yaml"] {
        let input = std::fs::read_to_string(root().join(example)).unwrap();
        let rendered = clinic_operator::render::render_with(&input, "default", &policy).unwrap();
        let dir = tempdir("kube-score");
        let file = dir.join("rendered.yaml");
        std::fs::write(&file, &rendered).unwrap();
        let mut command = Command::new(tool("kube-score"));
        command.args(["score", "--output-format", "ci"]);
        for (check, _) in KUBE_SCORE_IGNORED {
            command.args(["--ignore-test", check]);
        }
        let out = command.arg(&file).output().unwrap();
        let report = text(&out);
        let findings: Vec<&str> =
            report.lines().filter(|l| l.starts_with("[CRITICAL]") || l.starts_with("[WARNING]")).collect();
        assert!(findings.is_empty(), "{example}:\n{}", findings.join("\n"));
        assert!(
            report.lines().filter(|l| l.starts_with("[OK]")).count() > 20,
            "{example}: nothing scored: {report}"
        );
    }
    // It does see what it is asked to find: the same probe twice on a container.
    let dir = tempdir("kube-score-control");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n      - name: x\n        image: x@sha256:0000000000000000000000000000000000000000000000000000000000000000\n        readinessProbe: {httpGet: {path: /, port: 80}}\n        livenessProbe: {httpGet: {path: /, port: 80}}\n",
    )
    .unwrap();
    let out = Command::new(tool("kube-score"))
        .args(["score", "--output-format", "ci"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(text(&out).contains("Container has the same readiness and liveness probe"), "{}", text(&out));
}

#[test]
fn values_outside_the_schema_are_refused() {
    for bad in [
        "replicaCount=0",
        "logFormat=xml",
        "unknownKey=1",
        "image.digest=latest",
        // A misspelt policy key must not silently leave the default in place.
        "policy.veleroNamespace={kube-system}",
        "policy.veleroNamespaces={Kube_System}",
        // Traces need a collector and exactly one way for the agent to get in.
        "policy.tracing.collector.namespace=observability",
        "policy.clinicProbe.operatorNamespace=clinic-operator,policy.clinicProbe.intervalSeconds=1",
        "policy.tracing.collector.namespace=o,policy.tracing.collector.service=c,policy.tracing.javaAgent.image=a,policy.tracing.javaAgent.instrumentation=o/java",
        "policy.tracing.collector.namespace=o,policy.tracing.collector.service=c,policy.tracing.collector.protocol=zipkin,policy.tracing.javaAgent.image=a",
    ] {
        let err = helm_template(&["--set", bad]).expect_err(bad);
        assert!(err.contains("schema"), "{bad}: {err}");
    }
    let err = helm_template(&["--set", "replicaCount=2,leaderElection.enabled=false"]).unwrap_err();
    assert!(err.contains("leaderElection"), "{err}");
}

#[test]
fn deployment_is_restricted_with_probes_and_leader_election() {
    let docs = documents(&helm_template(&[]).unwrap());
    let deployment = find(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--leader-election") && args.contains(&"--log-format=json"), "{args:?}");
    assert_eq!(find(&docs, "PodDisruptionBudget").len(), 1);
    // The CRD survives `helm uninstall` and is upgraded with the release.
    let crd = find(&docs, "CustomResourceDefinition")[0];
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
}

#[test]
fn chart_rbac_is_the_shared_files() {
    fn rules(v: &Value) -> BTreeSet<String> {
        v["rules"].as_array().unwrap().iter().map(|r| r.to_string()).collect()
    }
    let file = |name: &str| -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("files").join(name)).unwrap()).unwrap()
    };
    let docs = documents(&helm_template(&[]).unwrap());
    assert_eq!(rules(find(&docs, "ClusterRole")[0]), rules(&file("clusterrole.yaml")));
    let leader =
        find(&docs, "Role").into_iter().find(|r| r["metadata"]["name"] == "clinic-operator-leader-election");
    assert_eq!(rules(leader.unwrap()), rules(&file("role-leader-election.yaml")));
    // Namespaced: no cluster-wide rights at all.
    let docs = documents(&helm_template(&["--set", "watchNamespaces={clinic-a}"]).unwrap());
    assert!(find(&docs, "ClusterRole").is_empty() && find(&docs, "ClusterRoleBinding").is_empty());
    let role = find(&docs, "Role").into_iter().find(|r| r["metadata"]["namespace"] == "clinic-a").unwrap();
    assert_eq!(rules(role), rules(&file("role-namespaced.yaml")));

    // Velero's rights, in both modes: a Role bound in each namespace the policy allows, and
    // cluster-wide only when the policy allows any namespace.
    let clusterrole = file("clusterrole.yaml");
    assert!(
        !clusterrole["rules"].as_array().unwrap().iter().any(|r| r["apiGroups"][0] == "velero.io"),
        "the ClusterRole grants Velero rights"
    );
    for mode in [&[][..], &["--set", "watchNamespaces={clinic-a}"][..]] {
        let args = [mode, &["--set", "policy.veleroNamespaces={velero,backups}"][..]].concat();
        let docs = documents(&helm_template(&args).unwrap());
        for ns in ["velero", "backups"] {
            let in_ns = |kind: &str| {
                find(&docs, kind)
                    .into_iter()
                    .find(|r| {
                        r["metadata"]["namespace"] == ns && r["metadata"]["name"] == "clinic-operator-velero"
                    })
                    .unwrap_or_else(|| panic!("no Velero {kind} in {ns} ({mode:?})"))
                    .clone()
            };
            assert_eq!(rules(&in_ns("Role")), rules(&file("role-velero.yaml")));
            let binding = in_ns("RoleBinding");
            assert_eq!(binding["roleRef"]["kind"], "Role");
            assert_eq!(binding["subjects"][0]["name"], "clinic-operator");
        }
        assert!(
            !find(&docs, "ClusterRole").iter().any(|r| r["metadata"]["name"] == "clinic-operator-velero")
        );
    }
    let docs = documents(&helm_template(&["--set", "policy.veleroNamespaces={*}"]).unwrap());
    let velero =
        find(&docs, "ClusterRole").into_iter().find(|r| r["metadata"]["name"] == "clinic-operator-velero");
    assert_eq!(
        rules(velero.expect("a Velero ClusterRole for veleroNamespaces: [*]")),
        rules(&file("role-velero.yaml"))
    );
    assert!(!find(&docs, "Role").iter().any(|r| r["metadata"]["name"] == "clinic-operator-velero"));
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let chart_copy = std::fs::read_to_string(chart().join("files/crd.yaml")).unwrap();
    let generated = std::fs::read_to_string(root().join("crds/clinicplatform.yaml")).unwrap();
    assert!(
        chart_copy == generated,
        "charts/clinic-operator/files/crd.yaml differs from crds/: run `make crds`"
    );
}

fn operator_metric_names() -> BTreeSet<String> {
    exercised_metrics()
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn fleet_dashboard_and_operator_alerts_use_real_operator_metrics() {
    let exposed = operator_metric_names();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("dashboards/fleet.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect();
    let groups = operator_rule_groups();
    for r in groups[0]["rules"].as_array().unwrap() {
        exprs.push(r["expr"].as_str().unwrap().to_string());
    }
    for expr in &exprs {
        for name in monitoring::metric_names(expr) {
            assert!(
                exposed.contains(&name) || name == "up",
                "{name} (in {expr}) is not exposed by the operator"
            );
        }
    }
    // Every expression parses (promtool), and the rules are valid rules.
    let panels: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({ "record": format!("fleet:panel_{i}"), "expr": e }))
        .collect();
    let dir = tempdir("chart-rules");
    std::fs::write(
        dir.join("panels.yaml"),
        serde_yaml::to_string(&json!({"groups": [{"name": "p", "rules": panels}]})).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(&json!({"groups": groups})).unwrap())
        .unwrap();
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(dir.join("panels.yaml"))
        .arg(dir.join("rules.yaml"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out));
}

/// The operator's per-clinic series name their clinic's namespace: the scrape keeps it.
#[test]
fn the_operators_service_monitor_keeps_each_clinics_namespace_label() {
    let docs = documents(&helm_template(&["--set", "metrics.serviceMonitor.enabled=true"]).unwrap());
    let monitor = find(&docs, "ServiceMonitor")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true, "{}", monitor["spec"]);
    let groups = operator_rule_groups();
    let per_clinic: Vec<&Value> = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["expr"].as_str().unwrap().contains("by (namespace, name)"))
        .collect();
    assert!(per_clinic.len() >= 2, "{per_clinic:?}");
}

/// The rule groups of the chart's PrometheusRule for the operator.
fn operator_rule_groups() -> Value {
    let docs = documents(&helm_template(&["--set", "metrics.prometheusRule.enabled=true"]).unwrap());
    find(&docs, "PrometheusRule")[0]["spec"]["groups"].clone()
}

/// The alert `alert` of `groups` as promtool expects it for clinic-lyon/lyon, with its runbook.
fn lyon_alert(groups: &Value, alert: &str, severity: &str, summary: &str) -> Value {
    let runbook = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert}"))["annotations"]["runbook_url"]
        .clone();
    json!({
        "exp_labels": {"severity": severity, "namespace": "clinic-lyon", "name": "lyon"},
        "exp_annotations": {"summary": summary, "runbook_url": runbook},
    })
}

/// `promtool test rules` of `groups` on `metric` of clinic-lyon/lyon and clinic-nice/nice (one
/// sample a minute each, in promtool's notation), checking `alerts`.
fn two_clinics_through_the_rules(
    groups: &Value,
    metric: &str,
    [lyon, nice]: [&str; 2],
    alerts: Value,
) -> (bool, String) {
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": format!("{metric}{{namespace=\"clinic-lyon\",name=\"lyon\"}}"), "values": lyon},
                {"series": format!("{metric}{{namespace=\"clinic-nice\",name=\"nice\"}}"), "values": nice},
            ],
            "alert_rule_test": alerts,
        }],
    });
    common::promtool_test_rules(groups, &tests)
}

#[test]
fn an_unrenewed_certificate_alerts_two_weeks_before_its_end() {
    let groups = operator_rule_groups();
    for (alert, metric, whose) in [
        (
            "ClinicDatabaseCertificateExpiring",
            "clinic_operator_clinic_database_certificate_expiry_timestamp_seconds",
            "MariaDB's certificate",
        ),
        (
            "ClinicBackendCertificateExpiring",
            "clinic_operator_clinic_backend_certificate_expiry_timestamp_seconds",
            "The backend's certificate",
        ),
    ] {
        // promtool's clock starts at 0: a certificate ending at 10 days is 10 days away; at 20, 20.
        let (ok, out) = two_clinics_through_the_rules(
            &groups,
            metric,
            ["864000x180", "1728000x180"],
            json!([
                {"eval_time": "30m", "alertname": alert, "exp_alerts": []},
                {"eval_time": "2h", "alertname": alert, "exp_alerts": [lyon_alert(
                    &groups,
                    alert,
                    "warning",
                    &format!("{whose} of clinic clinic-lyon/lyon ends in less than 14 days: it was not renewed."),
                )]},
            ]),
        );
        assert!(ok, "{alert}: {out}");
    }
}

#[test]
fn a_clinic_that_stops_answering_pages_after_five_minutes() {
    let groups = operator_rule_groups();
    // lyon stops answering at 10 minutes; nice misses one probe now and then.
    let (ok, out) = two_clinics_through_the_rules(
        &groups,
        "clinic_operator_clinic_probe_success",
        ["1x10 0x20", "1 1 0 1 1 0 1 1 1 0 1 1 0 1 1 1 0 1 1 1 1 1 1 1 1 1 1 1 1 1"],
        json!([
            {"eval_time": "13m", "alertname": "ClinicNotAnswering", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "ClinicNotAnswering", "exp_alerts": [lyon_alert(
                &groups,
                "ClinicNotAnswering",
                "critical",
                "Clinic clinic-lyon/lyon does not answer its login page or REST API through its gateway, whatever its pods say.",
            )]},
        ]),
    );
    assert!(ok, "{out}");
}

/// A heading's anchor as GitHub and MkDocs write it (`## Operator down` -> `operator-down`).
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn runbook_links_resolve_to_the_docs_of_the_release() {
    // The release workflow tags vX.Y.Z and publishes the image X.Y.Z: the chart's appVersion
    // and the operator's version are that release, so links at the tag exist once it is cut.
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart_yaml["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")), "Chart appVersion");
    let release = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    assert!(release.contains(r#"tags: ["v*.*.*"]"#) && release.contains("type=semver,pattern={{version}}"));
    let tag_prefix = format!("{}/blob/v{}/", env!("CARGO_PKG_REPOSITORY"), env!("CARGO_PKG_VERSION"));

    let mut urls: Vec<String> = Vec::new();
    for rule in operator_rule_groups()[0]["rules"].as_array().unwrap() {
        urls.push(rule["annotations"]["runbook_url"].as_str().unwrap().to_string());
    }
    let cp: clinic_operator::api::ClinicPlatform = serde_yaml::from_str(
        "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: lyon, namespace: clinic-lyon}\nspec: {}\n",
    )
    .unwrap();
    let clinic = clinic_operator::model::validate(&cp).unwrap();
    for group in monitoring::rule_groups(&clinic).as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            urls.push(rule["annotations"]["runbook_url"].as_str().unwrap().to_string());
        }
    }
    assert!(urls.len() > 5, "{urls:?}");
    for url in urls {
        let rest = url.strip_prefix(&tag_prefix).unwrap_or_else(|| panic!("{url} is not at {tag_prefix}"));
        let (file, fragment) = rest.split_once('#').unwrap_or_else(|| panic!("{url} has no anchor"));
        let text = std::fs::read_to_string(root().join(file)).unwrap_or_else(|_| panic!("{url}: no {file}"));
        assert!(
            text.lines().filter_map(|l| l.strip_prefix("## ")).any(|h| anchor(h) == fragment),
            "{url}: {file} has no heading for #{fragment}"
        );
    }
}

/// The policy the chart hands the operator is the values' `policy`, read by the same parser, and
/// the operator is started with it.
#[test]
fn a_probing_operator_may_reach_the_gateways_and_nothing_more() {
    let egress = |args: &[&str]| {
        let docs = documents(&helm_template(args).unwrap());
        find(&docs, "NetworkPolicy")[0]["spec"]["egress"].clone()
    };
    let plain = egress(&[]);
    let probing = egress(&["--set", "policy.clinicProbe.operatorNamespace=clinic-operator"]);
    let added: Vec<&Value> =
        probing.as_array().unwrap().iter().filter(|r| !plain.as_array().unwrap().contains(r)).collect();
    assert_eq!(
        added,
        [&json!({
            "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
                "app.kubernetes.io/component": "gateway",
                "app.kubernetes.io/managed-by": "clinic-operator",
            }}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        })],
        "{probing}"
    );
    // The gateway's port is the operator's (a changed port must change the chart too).
    assert_eq!(clinic_operator::desired::gateway::PORT, 8080);
}

#[test]
fn the_policy_values_reach_the_operator() {
    let values = root().join("examples/platform-values.yaml");
    let docs = documents(&helm_template(&["-f", values.to_str().unwrap()]).unwrap());
    let config = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "clinic-operator-policy")
        .expect("the policy ConfigMap");
    let shipped = config["data"]["policy.yaml"].as_str().unwrap();
    let shipped = clinic_operator::policy::Policy::from_yaml(shipped, "ConfigMap").unwrap();
    assert_eq!(shipped, clinic_operator::policy::Policy::from_file(&values).unwrap());
    let pod = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let args: Vec<&str> =
        pod["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--policy=/etc/clinic-operator/policy.yaml"), "{args:?}");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "clinic-operator-policy");
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["mountPath"], "/etc/clinic-operator");
    // A policy change rolls the pods (the policy is read at start).
    let default = documents(&helm_template(&[]).unwrap());
    let checksum = |docs: &[Value]| {
        find(docs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/policy"].clone()
    };
    assert_ne!(checksum(&docs), checksum(&default));
}
