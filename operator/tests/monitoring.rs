//! Monitoring of a clinic: exporter sidecars, ServiceMonitor, alerts and dashboard. Rule and
//! panel expressions are checked by `promtool` (built from the Prometheus Go module by
//! `e2e/cluster/tools/build.sh`; `make test` passes its directory in `CLINIC_TOOLS_BIN`).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use clinic_operator::desired::{self, SecretValues, monitoring};
use clinic_operator::model::Clinic;
use common::{clinic, exercised_metrics, promtool_test_rules, tempdir, tool, typed};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use serde_json::{Value, json};

const PRODUCTION: &str = "  ingress:\n    host: emr.lyon.example.fr\n    tls:\n      issuerRef:\n        name: letsencrypt\n  backup:\n    enabled: true\n    rpo: 12h\n  monitoring:\n    labels:\n      release: kube-prometheus-stack\n";

/// Runs `promtool` with `args` on `input` (a file written to a temporary directory when
/// `file` is set, else stdin); returns (success, combined output).
fn promtool(args: &[&str], input: &str, file: Option<&str>) -> (bool, String) {
    let dir = tempdir("monitoring-test");
    let mut command = Command::new(tool("promtool"));
    command.args(args);
    if let Some(file) = file {
        let path = dir.join(file);
        std::fs::write(&path, input).unwrap();
        command.arg(path);
    }
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    if file.is_none() {
        let mut stdin = stdin;
        stdin.write_all(input.as_bytes()).unwrap();
    } else {
        drop(stdin);
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn rules_file(groups: &Value) -> String {
    serde_yaml::to_string(&json!({ "groups": groups })).unwrap()
}

#[test]
fn exporters_run_next_to_mariadb_and_nginx() {
    let c = clinic("  {}\n");
    let objects = desired::objects(&c, &SecretValues::Placeholder);
    let db: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
    let pod = db.spec.unwrap().template.spec.unwrap();
    let exporter = pod.containers.iter().find(|c| c.name == "mysqld-exporter").expect("sidecar");
    assert!(exporter.image.as_deref().unwrap().starts_with("docker.io/prom/mysqld-exporter:v"));
    assert_eq!(exporter.ports.as_ref().unwrap()[0].container_port, monitoring::MYSQLD_EXPORTER_PORT);
    let password =
        exporter.env.as_ref().unwrap().iter().find(|e| e.name == "MYSQLD_EXPORTER_PASSWORD").unwrap();
    let key = password.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((key.name.as_str(), key.key.as_str()), ("lyon-mariadb-exporter", "password"));
    // MariaDB runs the account SQL at every start from the same Secret.
    let cnf: ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    assert!(cnf.data.unwrap()["clinic.cnf"].contains("init_file = /etc/mysql/clinic-exporter/init.sql"));
    let init = pod.volumes.iter().flatten().find(|v| v.name == "exporter-init").unwrap();
    assert_eq!(init.secret.as_ref().unwrap().secret_name.as_deref(), Some("lyon-mariadb-exporter"));

    let gw: Deployment = typed(&objects, "Deployment", "lyon-gateway");
    let pod = gw.spec.unwrap().template.spec.unwrap();
    let nginx = pod.containers.iter().find(|c| c.name == "nginx-exporter").expect("sidecar");
    assert!(
        nginx
            .args
            .as_ref()
            .unwrap()
            .contains(&"--nginx.scrape-uri=http://127.0.0.1:8081/stub_status".to_string())
    );
    let conf = desired::gateway::nginx_conf(&c);
    assert!(
        conf.contains(
            "location = /stub_status {\n      stub_status;\n      allow 127.0.0.1;\n      deny all;"
        )
    );

    for container in [exporter, nginx] {
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert!(container.resources.as_ref().unwrap().limits.is_some());
        assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
    }
}

#[test]
fn exporter_account_sql_uses_the_generated_password_and_least_privilege() {
    let c = clinic("  {}\n");
    let generated = desired::secrets::generated(&c);
    let exporter = generated.iter().find(|g| g.name == "lyon-mariadb-exporter").unwrap();
    let secret: Secret = desired::secrets::secret(&c, exporter, SecretValues::Generate);
    let data = secret.string_data.unwrap();
    let password = &data["password"];
    assert_eq!(password.len(), desired::secrets::PASSWORD_LENGTH);
    let sql = &data["init.sql"];
    assert_eq!(sql.matches(&format!("IDENTIFIED BY '{password}'")).count(), 2, "{sql}");
    assert!(sql.contains("GRANT PROCESS, REPLICATION CLIENT ON *.* TO 'exporter'@'127.0.0.1'"));
    assert!(!sql.contains("SELECT") && !sql.contains("ALL PRIVILEGES"), "no data access: {sql}");
}

#[test]
fn monitoring_off_removes_sidecars_services_and_monitors() {
    let c = clinic("  monitoring:\n    enabled: false\n");
    let objects = desired::objects(&c, &SecretValues::Placeholder);
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o.types.as_ref().unwrap().kind, o.metadata.name.as_deref().unwrap()))
        .collect();
    for absent in [
        "Secret/lyon-mariadb-exporter",
        "Service/lyon-mariadb-metrics",
        "ServiceMonitor/lyon-metrics",
        "PrometheusRule/lyon-alerts",
        "ConfigMap/lyon-dashboard",
    ] {
        assert!(!kinds.contains(absent), "{absent} built with monitoring off");
    }
    let db: StatefulSet = typed(&objects, "StatefulSet", "lyon-mariadb");
    assert_eq!(db.spec.unwrap().template.spec.unwrap().containers.len(), 1);
    let cnf: ConfigMap = typed(&objects, "ConfigMap", "lyon-mariadb-config");
    assert!(!cnf.data.unwrap()["clinic.cnf"].contains("init_file"));
}

#[test]
fn service_monitor_selects_exactly_the_metrics_services() {
    let c = clinic(PRODUCTION);
    let objects = desired::objects(&c, &SecretValues::Placeholder);
    let monitor = objects.iter().find(|o| o.types.as_ref().unwrap().kind == "ServiceMonitor").unwrap();
    assert_eq!(monitor.metadata.labels.as_ref().unwrap()["release"], "kube-prometheus-stack");
    let selector = monitor.data["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let port = monitor.data["spec"]["endpoints"][0]["port"].as_str().unwrap();
    let selected: Vec<Service> = objects
        .iter()
        .filter(|o| o.types.as_ref().unwrap().kind == "Service")
        .map(|o| serde_json::from_value::<Service>(serde_json::to_value(o).unwrap()).unwrap())
        .filter(|s| {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
        .collect();
    let names: Vec<_> = selected.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["lyon-mariadb-metrics", "lyon-gateway-metrics"]);
    for s in &selected {
        assert!(
            s.spec.as_ref().unwrap().ports.as_ref().unwrap().iter().any(|p| p.name.as_deref() == Some(port))
        );
    }
}

/// A clinic published on the suite's Traefik Gateway (the policy names its metrics).
fn routed_on_traefik() -> Clinic {
    let policy = clinic_operator::policy::Policy::from_yaml(
        "gateways:\n  - {namespace: gateway-system, name: public, listener: https, default: true, metrics: traefik}\n",
        "test",
    )
    .unwrap();
    policy.admit(clinic("  route:\n    host: emr.lyon.example.fr\n")).unwrap()
}

/// The minimal clinic, one behind an Ingress and one on a Gateway.
fn clinics() -> Vec<Clinic> {
    vec![clinic("  {}\n"), clinic(PRODUCTION), routed_on_traefik()]
}

fn all_alert_exprs(c: &Clinic) -> Vec<String> {
    monitoring::alerts(c).into_iter().map(|a| a.expr).collect()
}

fn all_panel_exprs(c: &Clinic) -> Vec<String> {
    monitoring::panels(c).into_iter().flat_map(|p| p.queries.into_iter().map(|(_, e)| e)).collect()
}

#[test]
fn the_alerts_an_on_call_needs_are_there() {
    let names: BTreeSet<&str> = monitoring::alerts(&clinic(PRODUCTION)).iter().map(|a| a.name).collect();
    for wanted in [
        "OpenMRSBackendDown",
        "OpenMRSBackendNotStarted",
        "OpenMRSRestApiFailing",
        "ClinicDatabaseDown",
        "ClinicHigh5xxRate",
        "ClinicBackupTooOld",
        "ClinicVolumeNearlyFull",
        "ClinicPodRestarting",
        "ClinicCertificateExpiringSoon",
        "ClinicGatewayDown",
    ] {
        assert!(names.contains(wanted), "{wanted} missing");
    }
    // The RPO of the spec is the backup alert's threshold.
    let backup =
        monitoring::alerts(&clinic(PRODUCTION)).into_iter().find(|a| a.name == "ClinicBackupTooOld").unwrap();
    assert!(backup.expr.ends_with("> 43200"), "{}", backup.expr);
}

#[test]
fn metric_name_extraction_sees_names_not_functions_labels_or_keywords() {
    let names = monitoring::metric_names(
        "sum by (namespace, pod) (rate(a_total{x=\"b_c\",pod=~\"d-.+\"}[5m])) / on (pod) group_left max(b) > 3 and c unless time() - d_seconds < 14 * 86400",
    );
    assert_eq!(names, ["a_total", "b", "c", "d_seconds"]);
}

#[test]
fn every_alert_and_panel_uses_only_metrics_that_exist() {
    let known: BTreeSet<&str> = monitoring::KNOWN_METRICS.iter().map(|(name, _)| *name).collect();
    for c in clinics() {
        for expr in all_alert_exprs(&c).iter().chain(all_panel_exprs(&c).iter()) {
            let names = monitoring::metric_names(expr);
            assert!(!names.is_empty(), "no metric found in {expr}");
            for name in names {
                assert!(
                    known.contains(name.as_str()),
                    "{name} (in {expr}) is not exposed by any known source"
                );
            }
        }
    }
}

#[test]
fn every_rule_passes_promtool_check_rules() {
    for c in clinics() {
        let (ok, out) =
            promtool(&["check", "rules"], &rules_file(&monitoring::rule_groups(&c)), Some("rules.yaml"));
        assert!(ok, "promtool check rules failed:\n{out}");
        assert!(out.contains("SUCCESS"), "{out}");
    }
    // promtool does refuse a broken expression (the check above can fail).
    let broken = json!([{ "name": "x", "rules": [{ "alert": "Broken", "expr": "rate(x[5m]" }] }]);
    let (ok, _) = promtool(&["check", "rules"], &rules_file(&broken), Some("rules.yaml"));
    assert!(!ok);
}

#[test]
fn every_panel_query_parses() {
    // promtool has no "check query"; recording rules carry each panel expression through its parser.
    let rules: Vec<Value> = clinics()
        .iter()
        .flat_map(all_panel_exprs)
        .enumerate()
        .map(|(i, expr)| json!({ "record": format!("clinic:panel_{i}"), "expr": expr }))
        .collect();
    let (ok, out) = promtool(
        &["check", "rules"],
        &rules_file(&json!([{ "name": "panels", "rules": rules }])),
        Some("p.yaml"),
    );
    assert!(ok, "a panel query does not parse:\n{out}");
}

/// On a Gateway the request alerts read the implementation's series for the clinic's backend:
/// 10% of 5xx and a slow 95th percentile fire, a healthy rate does not.
#[test]
fn request_alerts_of_a_clinic_on_traefik_fire_on_its_series() {
    let c = routed_on_traefik();
    let names: BTreeSet<&str> = monitoring::alerts(&c).iter().map(|a| a.name).collect();
    assert!(names.contains("ClinicHigh5xxRate") && names.contains("ClinicSlowResponses"), "{names:?}");
    assert!(
        !names.contains("ClinicCertificateExpiringSoon"),
        "the Gateway's certificate is not the clinic's"
    );
    let backend = "clinic-lyon-lyon-gateway-http-80@kubernetesgateway";
    let series = |metric: &str, labels: &str| format!("{metric}{{service=\"{backend}\",{labels}}}");
    let alert = expected_alert;
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                // 100 requests a minute; from minute 10, 10 of them answer 502.
                { "series": series("traefik_service_requests_total", "code=\"200\""), "values": "0+100x40" },
                { "series": series("traefik_service_requests_total", "code=\"502\""), "values": "0x10 0+10x30" },
                // Every request under 0.3 s until minute 10, then most above 5 s.
                { "series": series("traefik_service_request_duration_seconds_bucket", "le=\"0.3\""), "values": "0+100x10 1000x30" },
                { "series": series("traefik_service_request_duration_seconds_bucket", "le=\"5\""), "values": "0+100x10 1000+10x30" },
                { "series": series("traefik_service_request_duration_seconds_bucket", "le=\"+Inf\""), "values": "0+100x40" },
            ],
            "alert_rule_test": [
                { "eval_time": "9m", "alertname": "ClinicHigh5xxRate", "exp_alerts": [] },
                { "eval_time": "9m", "alertname": "ClinicSlowResponses", "exp_alerts": [] },
                { "eval_time": "30m", "alertname": "ClinicHigh5xxRate", "exp_alerts": [alert(
                    "ClinicHigh5xxRate", "critical",
                    "More than 5% of the requests to the clinic answer 5xx.",
                    "clinic-lyon/lyon: emr.lyon.example.fr answers 5xx to more than 5% of requests.",
                )] },
                { "eval_time": "30m", "alertname": "ClinicSlowResponses", "exp_alerts": [alert(
                    "ClinicSlowResponses", "warning",
                    "One request in twenty to the clinic takes longer than 3 seconds.",
                    "clinic-lyon/lyon: the 95th percentile of emr.lyon.example.fr's response time is above 3 s.",
                )] },
            ],
        }],
    });
    let (ok, out) = promtool_test_rules(&monitoring::rule_groups(&c), &tests);
    assert!(ok, "promtool test rules:\n{out}");
}

/// An alert of clinic `lyon` as promtool's `exp_alerts` spells it.
fn expected_alert(name: &str, severity: &str, summary: &str, description: &str) -> Value {
    json!({
        "exp_labels": { "severity": severity, "clinic": "lyon" },
        "exp_annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": format!("{}#{}", monitoring::RUNBOOK_BASE, name.to_lowercase()),
        },
    })
}

/// The 99.9 % objective's error-budget alerts: a fast burn pages, a slow one opens a ticket, a
/// clinic within its budget stays quiet.
#[test]
fn availability_budget_alerts_fire_on_a_burn_and_stay_quiet_within_the_budget() {
    let c = routed_on_traefik();
    let backend = "clinic-lyon-lyon-gateway-http-80@kubernetesgateway";
    let requests =
        |code: &str| format!("traefik_service_requests_total{{service=\"{backend}\",code=\"{code}\"}}");
    let expected = |name: &str, severity: &str, summary: &str, description: &str| {
        json!([expected_alert(name, severity, summary, description)])
    };
    let fast = expected(
        "ClinicErrorBudgetBurningFast",
        "critical",
        "The clinic burns its 99.9 % availability budget fast: a month's budget in days at this pace.",
        "clinic-lyon/lyon: more than 1.44 % of emr.lyon.example.fr's requests over the last hour (or 0.6 % over six hours) answered 5xx, and they still do.",
    );
    let slow = expected(
        "ClinicErrorBudgetBurningSlowly",
        "warning",
        "The clinic burns its 99.9 % availability budget faster than it can afford over a month.",
        "clinic-lyon/lyon: more than 0.3 % of emr.lyon.example.fr's requests over a day (or 0.1 % over three days) answered 5xx.",
    );
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                // 1,000 requests a minute; from minute 10, 2 % answer 502.
                "interval": "1m",
                "input_series": [
                    { "series": requests("200"), "values": "0+1000x100" },
                    { "series": requests("502"), "values": "0x10 0+20x90" },
                ],
                "alert_rule_test": [
                    { "eval_time": "9m", "alertname": "ClinicErrorBudgetBurningFast", "exp_alerts": [] },
                    { "eval_time": "80m", "alertname": "ClinicErrorBudgetBurningFast", "exp_alerts": fast },
                ],
            },
            {
                // 0.05 % failing for six hours: within the budget.
                "interval": "1m",
                "input_series": [
                    { "series": requests("200"), "values": "0+2000x400" },
                    { "series": requests("500"), "values": "0+1x400" },
                ],
                "alert_rule_test": [
                    { "eval_time": "6h", "alertname": "ClinicErrorBudgetBurningFast", "exp_alerts": [] },
                    { "eval_time": "6h", "alertname": "ClinicErrorBudgetBurningSlowly", "exp_alerts": [] },
                ],
            },
            {
                // 0.5 % failing for 30 hours (samples every 5 minutes): too slow to page, too
                // much for the month.
                "interval": "5m",
                "input_series": [
                    { "series": requests("200"), "values": "0+5000x360" },
                    { "series": requests("503"), "values": "0+25x360" },
                ],
                "alert_rule_test": [
                    { "eval_time": "26h", "alertname": "ClinicErrorBudgetBurningFast", "exp_alerts": [] },
                    { "eval_time": "26h", "alertname": "ClinicErrorBudgetBurningSlowly", "exp_alerts": slow },
                ],
            },
        ],
    });
    let (ok, out) = promtool_test_rules(&monitoring::rule_groups(&c), &tests);
    assert!(ok, "promtool test rules:\n{out}");
}

/// Alert behaviour, not only syntax: promtool's rule unit tests feed series and expect alerts.
#[test]
fn backup_and_database_alerts_fire_when_they_should() {
    let c = clinic(PRODUCTION);
    let schedule = desired::backup::base_name(&c);
    // Backup: last success at t=0; RPO 12h; at 12h30 the alert fires, at 11h it does not.
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                // Every minute: a sample older than the 5-minute lookback would read as absent.
                "interval": "1m",
                "input_series": [
                    { "series": format!("velero_backup_last_successful_timestamp{{schedule=\"{schedule}\"}}"), "values": "0x800" },
                ],
                "alert_rule_test": [
                    { "eval_time": "11h", "alertname": "ClinicBackupTooOld", "exp_alerts": [] },
                    { "eval_time": "12h30m", "alertname": "ClinicBackupTooOld", "exp_alerts": [{
                        "exp_labels": { "severity": "critical", "clinic": "lyon", "schedule": schedule },
                        "exp_annotations": {
                            "summary": "The last successful backup is older than the clinic's RPO.",
                            "description": "clinic-lyon/lyon: no successful Velero backup within spec.backup.rpo (12h).",
                            "runbook_url": format!("{}#clinicbackuptooold", monitoring::RUNBOOK_BASE),
                        },
                    }] },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    { "series": "mysql_up{namespace=\"clinic-lyon\",service=\"lyon-mariadb-metrics\",pod=\"lyon-mariadb-0\"}", "values": "1 1 1 0 0 0 0 0 0 0" },
                    { "series": "kube_statefulset_status_replicas_ready{namespace=\"clinic-lyon\",statefulset=\"lyon-mariadb\"}", "values": "1x10" },
                ],
                "alert_rule_test": [
                    { "eval_time": "3m", "alertname": "ClinicDatabaseDown", "exp_alerts": [] },
                    { "eval_time": "6m", "alertname": "ClinicDatabaseDown", "exp_alerts": [{
                        "exp_labels": { "severity": "critical", "clinic": "lyon", "namespace": "clinic-lyon" },
                        "exp_annotations": {
                            "summary": "The clinic's MariaDB is down or unreachable.",
                            "description": "clinic-lyon/lyon: MariaDB lyon-mariadb does not answer.",
                            "runbook_url": format!("{}#clinicdatabasedown", monitoring::RUNBOOK_BASE),
                        },
                    }] },
                ],
            },
        ],
    });
    let (ok, out) = promtool_test_rules(&monitoring::rule_groups(&c), &tests);
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn operator_metrics_pass_the_prometheus_text_parser() {
    let m = exercised_metrics();
    let (ok, out) = promtool(&["check", "metrics", "--lint=none", "--extended"], &m.encode(), None);
    assert!(ok, "promtool check metrics:\n{out}");
    // The parser does refuse broken exposition.
    let (ok, _) = promtool(
        &["check", "metrics", "--lint=none", "--extended"],
        "# TYPE x counter\nx_total{a=\"1\" 1\n",
        None,
    );
    assert!(!ok);
}

#[test]
fn dashboard_is_a_grafana_dashboard_with_the_sidecar_label() {
    let c = clinic(PRODUCTION);
    let dashboard = monitoring::dashboard(&c).unwrap();
    let labels = dashboard.metadata.labels.clone().unwrap();
    assert_eq!(labels["grafana_dashboard"], "1");
    assert_eq!(labels["release"], "kube-prometheus-stack");
    assert_eq!(dashboard.metadata.namespace.as_deref(), Some("clinic-lyon"));
    assert!(dashboard.metadata.owner_references.is_some());
    let json: Value = serde_json::from_str(dashboard.data.unwrap().values().next().unwrap()).unwrap();
    let panels = json["panels"].as_array().unwrap();
    assert_eq!(panels.len(), monitoring::panels(&c).len() + monitoring::log_panels(&c).len());
    // Metric panels read the Prometheus variable, log panels the Loki one, and both variables
    // are declared.
    let sources: BTreeSet<(&str, &str)> = panels
        .iter()
        .map(|p| (p["datasource"]["type"].as_str().unwrap(), p["datasource"]["uid"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, BTreeSet::from([("prometheus", "${datasource}"), ("loki", "${logs}")]));
    let variables: BTreeSet<(&str, &str)> = json["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["query"].as_str().unwrap()))
        .collect();
    assert_eq!(variables, BTreeSet::from([("datasource", "prometheus"), ("logs", "loki")]));
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    assert!(panels.iter().all(|p| !p["targets"].as_array().unwrap().is_empty()));

    // In Grafana's namespace: no owner reference (not allowed across namespaces), a name that
    // cannot collide between clinics, and the clinic's namespace on a label.
    let c = clinic(
        "  monitoring:\n    dashboard:\n      namespace: grafana\n      label: dashboards\n      labelValue: clinics\n",
    );
    let dashboard = monitoring::dashboard(&c).unwrap();
    assert_eq!(dashboard.metadata.namespace.as_deref(), Some("grafana"));
    assert_eq!(dashboard.metadata.name.as_deref(), Some("clinic-lyon-lyon-4d703153-dashboard"));
    assert!(dashboard.metadata.owner_references.is_none());
    let labels = dashboard.metadata.labels.unwrap();
    assert_eq!(labels["dashboards"], "clinics");
    assert_eq!(labels[monitoring::CLINIC_NAMESPACE_LABEL], "clinic-lyon");
    // And it is not among the same-namespace children.
    assert!(
        desired::objects(&c, &SecretValues::Placeholder)
            .iter()
            .all(|o| o.metadata.name.as_deref() != Some("clinic-lyon-lyon-4d703153-dashboard"))
    );
}

#[test]
fn docs_describe_every_alert_and_panel() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let runbooks = std::fs::read_to_string(format!("{root}/docs/operations/alerts.md")).unwrap();
    let page = std::fs::read_to_string(format!("{root}/docs/monitoring.md")).unwrap();
    let c = clinic(PRODUCTION);
    let metric_alerts = monitoring::alerts(&c).into_iter().map(|a| (a, "table"));
    let log_alerts = monitoring::log_alerts(&c).into_iter().map(|a| (a, "log alerts table"));
    for (alert, table) in metric_alerts.chain(log_alerts) {
        assert!(
            runbooks.contains(&format!("\n## {}\n", alert.name)),
            "no runbook section for {}",
            alert.name
        );
        assert!(
            page.contains(&format!("| `{}` | {} |", alert.name, alert.severity)),
            "{} not in the {table}",
            alert.name
        );
    }
    for panel in monitoring::panels(&c).into_iter().chain(monitoring::log_panels(&c)) {
        assert!(page.contains(&format!("| {} |", panel.title)), "panel {} not listed", panel.title);
    }
    // Each line filter is written out next to what it detects.
    for pattern in [
        monitoring::AUTH_FAILURE_LINE,
        monitoring::DATABASE_ERROR_PATTERN,
        monitoring::OUT_OF_MEMORY_LINE,
        monitoring::ERROR_PATTERN,
        monitoring::BACKEND_START_PATTERN,
    ] {
        assert!(page.contains(pattern), "{pattern} is not in docs/monitoring.md");
    }
    for (metric, _) in monitoring::KNOWN_METRICS {
        assert!(page.contains(&format!("`{metric}`")), "{metric} missing from the sources table");
    }
}

/// The platform's alert routing: every monitored clinic's alerts, by severity, to the receivers
/// the policy names, and nothing a tenant chooses.
#[test]
fn alerts_are_routed_by_severity_to_the_platforms_receivers() {
    use clinic_operator::policy::{Policy, PolicyError};
    let routing = "alertRouting:\n  criticalWebhook: https://alerts.example.fr/pager\n  warningWebhook: https://alerts.example.fr/tickets\n";
    let policy = Policy::from_yaml(routing, "test").unwrap();
    let routed = policy.admit(clinic("  monitoring: {labels: {release: kube-prometheus-stack}}\n")).unwrap();
    let config = monitoring::alertmanager_config(&routed).expect("an AlertmanagerConfig");
    assert_eq!(config.metadata.name.as_deref(), Some("lyon-alert-routing"));
    // The Alertmanager's alertmanagerConfigSelector finds it by the clinic's monitoring labels.
    assert_eq!(config.metadata.labels.as_ref().unwrap()["release"], "kube-prometheus-stack");
    let spec = &config.data["spec"];
    assert_eq!(spec["route"]["matchers"], json!([{"name": "clinic", "value": "lyon", "matchType": "="}]));
    assert_eq!(spec["route"]["receiver"], "warning");
    assert_eq!(
        spec["route"]["routes"],
        json!([{"receiver": "critical", "matchers": [{"name": "severity", "value": "critical", "matchType": "="}], "repeatInterval": "1h"}])
    );
    assert_eq!(
        spec["receivers"],
        json!([
            {"name": "critical", "webhookConfigs": [{"url": "https://alerts.example.fr/pager", "sendResolved": true}]},
            {"name": "warning", "webhookConfigs": [{"url": "https://alerts.example.fr/tickets", "sendResolved": true}]},
        ])
    );
    // Every severity the rules carry has a route.
    for alert in monitoring::alerts(&routed) {
        assert!(["critical", "warning"].contains(&alert.severity), "{}: {}", alert.name, alert.severity);
    }
    // No routing in the policy, or monitoring off: none.
    assert!(monitoring::alertmanager_config(&Policy::default().admit(clinic("  {}\n")).unwrap()).is_none());
    let quiet = policy.admit(clinic("  monitoring: {enabled: false}\n")).unwrap();
    assert!(monitoring::alertmanager_config(&quiet).is_none());
    // A receiver is a URL and nothing else.
    for bad in ["ftp://x", "https://a b", "https://x/{{ .Values }}", "https://x/\"quote"] {
        let yaml = format!("alertRouting:\n  criticalWebhook: '{bad}'\n  warningWebhook: https://x\n");
        assert!(matches!(Policy::from_yaml(&yaml, "test"), Err(PolicyError::Webhook { .. })), "{bad}");
    }
}
