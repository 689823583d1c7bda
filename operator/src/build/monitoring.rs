//! Monitoring of one clinic: the exporter sidecars (OpenMRS, MariaDB and the gateway's nginx
//! have no Prometheus endpoint of their own), the Services that expose them, the Prometheus
//! Operator `ServiceMonitor` and `PrometheusRule`, and a Grafana dashboard ConfigMap.
//!
//! Every metric an alert or panel uses is listed in [`KNOWN_METRICS`] with the component that
//! exposes it; a test parses every expression and fails on a name outside that list.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ContainerPort, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::frontend::web_probe;
use super::*;

/// Port of mysqld-exporter in the MariaDB pod.
pub const MYSQLD_EXPORTER_PORT: i32 = 9104;
/// Port of nginx-prometheus-exporter in the gateway pod.
pub const NGINX_EXPORTER_PORT: i32 = 9113;
/// `nobody`: the exporters' images run as it.
pub const EXPORTER_UID: i64 = 65534;
/// Database account of mysqld-exporter (localhost only, PROCESS and REPLICATION CLIENT).
pub const EXPORTER_DB_USER: &str = "exporter";
/// Where MariaDB finds the SQL that keeps the exporter account in step with its Secret.
pub const EXPORTER_INIT_DIR: &str = "/etc/mysql/clinic-exporter";
/// Key of the exporter Secret holding that SQL.
pub const KEY_INIT_SQL: &str = "init.sql";
/// Label that marks the metrics Services (the ServiceMonitor selects on it).
pub const METRICS_LABEL: &str = "clinic.audioprothese.fr/metrics";

const MYSQLD_EXPORTER_IMAGE: (&str, &str) = ("prom/mysqld-exporter", "v0.17.2");
const NGINX_EXPORTER_IMAGE: (&str, &str) = ("nginx/nginx-prometheus-exporter", "1.4.2");

/// Whether the clinic runs exporters and wants monitors.
pub fn enabled(clinic: &Clinic) -> bool {
    clinic.spec.monitoring.enabled
}

pub fn exporter_secret_name(clinic: &Clinic) -> String {
    clinic.child_name("mariadb-exporter")
}

/// Run by MariaDB at every start (`init_file`), so the account exists on databases created
/// before monitoring was turned on and follows a rotated password. Statements are idempotent
/// and valid on every supported MariaDB version: a failing init file stops the server.
pub fn exporter_init_sql(password: &str) -> String {
    let account = format!("'{EXPORTER_DB_USER}'@'127.0.0.1'");
    format!(
        "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS 3;\n\
         ALTER USER {account} IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS 3;\n\
         GRANT PROCESS, REPLICATION CLIENT ON *.* TO {account};\n"
    )
}

fn metrics_port(port: i32) -> ContainerPort {
    ContainerPort {
        name: Some("metrics".into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// mysqld-exporter, connecting over loopback with its own least-privilege account.
pub fn mysqld_exporter(clinic: &Clinic) -> Container {
    let (path, tag) = MYSQLD_EXPORTER_IMAGE;
    Container {
        name: "mysqld-exporter".into(),
        image: Some(clinic.image(None, path, tag)),
        image_pull_policy: Some(pull_policy(clinic)),
        args: Some(vec![
            format!("--mysqld.address=127.0.0.1:{}", super::database::PORT),
            format!("--mysqld.username={EXPORTER_DB_USER}"),
            format!("--web.listen-address=:{MYSQLD_EXPORTER_PORT}"),
            // SHOW REPLICA STATUS needs more than REPLICATION CLIENT, and there is no replica.
            "--no-collect.slave_status".into(),
        ]),
        env: Some(vec![env_from_secret(
            "MYSQLD_EXPORTER_PASSWORD",
            &exporter_secret_name(clinic),
            "password",
        )]),
        ports: Some(vec![metrics_port(MYSQLD_EXPORTER_PORT)]),
        resources: Some(resources(None, ("10m", "32Mi"), ("200m", "64Mi"))),
        security_context: Some(container_security_context(EXPORTER_UID)),
        readiness_probe: Some(web_probe(IntOrString::String("metrics".into()), "/", 30)),
        liveness_probe: Some(web_probe(IntOrString::String("metrics".into()), "/", 60)),
        ..Default::default()
    }
}

/// nginx-prometheus-exporter on the gateway's loopback-only `stub_status`.
pub fn nginx_exporter(clinic: &Clinic) -> Container {
    let (path, tag) = NGINX_EXPORTER_IMAGE;
    Container {
        name: "nginx-exporter".into(),
        image: Some(clinic.image(None, path, tag)),
        image_pull_policy: Some(pull_policy(clinic)),
        args: Some(vec![
            format!("--nginx.scrape-uri=http://127.0.0.1:{}/stub_status", super::gateway::HEALTH_PORT),
            format!("--web.listen-address=:{NGINX_EXPORTER_PORT}"),
        ]),
        ports: Some(vec![metrics_port(NGINX_EXPORTER_PORT)]),
        resources: Some(resources(None, ("10m", "16Mi"), ("100m", "32Mi"))),
        security_context: Some(container_security_context(EXPORTER_UID)),
        readiness_probe: Some(web_probe(IntOrString::String("metrics".into()), "/", 30)),
        liveness_probe: Some(web_probe(IntOrString::String("metrics".into()), "/", 60)),
        ..Default::default()
    }
}

/// The Services that expose the exporters; only Prometheus' namespace may reach them.
pub fn metrics_services(clinic: &Clinic) -> Vec<Service> {
    if !enabled(clinic) {
        return Vec::new();
    }
    [
        (super::database::name(clinic), Component::Database, MYSQLD_EXPORTER_PORT),
        (super::gateway::name(clinic), Component::Gateway, NGINX_EXPORTER_PORT),
    ]
    .into_iter()
    .map(|(base, component, port)| {
        let mut service = port_service(clinic, format!("{base}-metrics"), component, "metrics", port);
        service.metadata.labels.get_or_insert_with(BTreeMap::new).insert(METRICS_LABEL.into(), "true".into());
        service
    })
    .collect()
}

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// Metadata of a monitoring object: the standard labels plus the spec's extra labels.
fn monitoring_metadata(clinic: &Clinic, name: String) -> kube::api::ObjectMeta {
    let mut meta = metadata(clinic, name, Component::Platform);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in &clinic.spec.monitoring.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    meta
}

/// The ServiceMonitor scraping both exporters, with a `clinic` label on every series.
pub fn service_monitor(clinic: &Clinic) -> Option<DynamicObject> {
    if !enabled(clinic) {
        return None;
    }
    let name = clinic.child_name("metrics");
    let mut monitor = DynamicObject::new(&name, &service_monitor_resource()).within(&clinic.namespace);
    monitor.metadata = monitoring_metadata(clinic, name);
    monitor.data = json!({
        "spec": {
            "selector": { "matchLabels": {
                "app.kubernetes.io/instance": clinic.name,
                METRICS_LABEL: "true",
            } },
            "namespaceSelector": { "matchNames": [clinic.namespace] },
            "endpoints": [{
                "port": "metrics",
                "path": "/metrics",
                "scheme": "http",
                "interval": clinic.spec.monitoring.scrape_interval,
                "scrapeTimeout": "10s",
                "relabelings": [{
                    "action": "replace",
                    "targetLabel": "clinic",
                    "replacement": clinic.name,
                }],
            }],
        }
    });
    Some(monitor)
}

/// One alert of a clinic: what the on-call sees and where the runbook step is.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: &'static str,
    pub expr: String,
    pub for_: &'static str,
    pub severity: &'static str,
    pub summary: &'static str,
    pub description: String,
}

/// Label matchers shared by the expressions of one clinic.
struct Selectors {
    namespace: String,
    pods: String,
}

impl Selectors {
    fn of(clinic: &Clinic) -> Self {
        Self {
            namespace: format!("namespace=\"{}\"", clinic.namespace),
            // Clinic names are DNS labels (checked by `validate`): nothing in them needs escaping.
            pods: format!("pod=~\"{}-(mariadb|backend|frontend|gateway)-.+\"", clinic.name),
        }
    }
}

/// The alerts a clinic on-call needs. Thresholds follow the spec where it has one (the RPO).
pub fn alerts(clinic: &Clinic) -> Vec<Alert> {
    let s = Selectors::of(clinic);
    let ns = &s.namespace;
    let backend = super::backend::name(clinic);
    let database = super::database::name(clinic);
    let gateway = super::gateway::name(clinic);
    let instance = format!("{}/{}", clinic.namespace, clinic.name);
    let mut alerts = vec![
        Alert {
            name: "OpenMRSBackendDown",
            expr: format!("kube_statefulset_status_replicas_ready{{{ns},statefulset=\"{backend}\"}} < 1"),
            for_: "5m",
            severity: "critical",
            summary: "No OpenMRS backend replica is ready: the clinic cannot work.",
            description: format!("{instance}: statefulset {backend} has no ready replica for 5 minutes."),
        },
        Alert {
            name: "OpenMRSBackendNotStarted",
            expr: format!(
                "(kube_pod_container_status_ready{{{ns},pod=~\"{backend}-[0-9]+\",container=\"openmrs\"}} == 0) \
                 and on (namespace, pod) \
                 ((time() - kube_pod_start_time{{{ns},pod=~\"{backend}-[0-9]+\"}}) > 1800)"
            ),
            for_: "5m",
            severity: "warning",
            summary: "The OpenMRS backend has not become ready 30 minutes after its pod started.",
            description: format!(
                "{instance}: pod {{{{ $labels.pod }}}} is still not ready; module loading or a database migration is stuck."
            ),
        },
        Alert {
            name: "OpenMRSRestApiFailing",
            expr: format!(
                "sum by (namespace, pod) (increase(prober_probe_total{{{ns},pod=~\"{backend}-[0-9]+\",container=\"openmrs\",probe_type=\"Readiness\",result=\"failed\"}}[5m])) > 3"
            ),
            for_: "5m",
            severity: "critical",
            summary: "The OpenMRS REST API (/openmrs/ws/rest/v1/session) keeps failing its checks.",
            description: format!(
                "{instance}: the readiness check of {{{{ $labels.pod }}}}, which calls the REST API and the database, failed more than 3 times in 5 minutes."
            ),
        },
        Alert {
            name: "ClinicDatabaseDown",
            expr: format!(
                "(max by (namespace) (mysql_up{{{ns},service=\"{database}-metrics\"}}) == 0) \
                 or (max by (namespace) (kube_statefulset_status_replicas_ready{{{ns},statefulset=\"{database}\"}}) < 1)"
            ),
            for_: "2m",
            severity: "critical",
            summary: "The clinic's MariaDB is down or unreachable.",
            description: format!("{instance}: MariaDB {database} does not answer."),
        },
        Alert {
            name: "ClinicBackupTooOld",
            expr: format!(
                "(time() - velero_backup_last_successful_timestamp{{schedule=\"{}\"}}) > {}",
                super::backup::base_name(clinic),
                rpo_seconds(clinic)
            ),
            for_: "10m",
            severity: "critical",
            summary: "The last successful backup is older than the clinic's RPO.",
            description: format!(
                "{instance}: no successful Velero backup within spec.backup.rpo ({}).",
                clinic.spec.backup.rpo
            ),
        },
        Alert {
            name: "ClinicVolumeNearlyFull",
            expr: format!(
                "(kubelet_volume_stats_available_bytes{{{ns},persistentvolumeclaim=~\"data-({database}|{backend})-[0-9]+\"}} \
                 / kubelet_volume_stats_capacity_bytes{{{ns},persistentvolumeclaim=~\"data-({database}|{backend})-[0-9]+\"}}) < 0.10"
            ),
            for_: "15m",
            severity: "warning",
            summary: "A data volume of the clinic has less than 10% free space.",
            description: format!(
                "{instance}: {{{{ $labels.persistentvolumeclaim }}}} is over 90% full; grow spec.database.storage or spec.openmrs.backend.storage."
            ),
        },
        Alert {
            name: "ClinicPodRestarting",
            expr: format!(
                "increase(kube_pod_container_status_restarts_total{{{ns},{pods}}}[30m]) > 3",
                pods = s.pods
            ),
            for_: "5m",
            severity: "warning",
            summary: "A container of the clinic restarts repeatedly.",
            description: format!(
                "{instance}: {{{{ $labels.pod }}}}/{{{{ $labels.container }}}} restarted more than 3 times in 30 minutes."
            ),
        },
        Alert {
            name: "ClinicGatewayDown",
            expr: format!(
                "(max by (namespace) (nginx_up{{{ns},service=\"{gateway}-metrics\"}}) == 0) \
                 or (kube_deployment_status_replicas_available{{{ns},deployment=\"{gateway}\"}} < 1)"
            ),
            for_: "5m",
            severity: "critical",
            summary: "The clinic's gateway (nginx in front of OpenMRS) is down.",
            description: format!("{instance}: gateway {gateway} has no available replica."),
        },
    ];
    if let Some(ingress) = &clinic.spec.ingress {
        let ingress_name = super::ingress::name(clinic);
        let requests = format!(
            "nginx_ingress_controller_requests{{exported_namespace=\"{}\",ingress=\"{ingress_name}\"",
            clinic.namespace
        );
        alerts.push(Alert {
            name: "ClinicHigh5xxRate",
            expr: format!(
                "(sum(rate({requests},status=~\"5..\"}}[5m])) / sum(rate({requests}}}[5m]))) > 0.05"
            ),
            for_: "10m",
            severity: "critical",
            summary: "More than 5% of the requests to the clinic answer 5xx.",
            description: format!("{instance}: {} answers 5xx to more than 5% of requests.", ingress.host),
        });
        alerts.push(Alert {
            name: "ClinicCertificateExpiringSoon",
            expr: format!(
                "(certmanager_certificate_expiration_timestamp_seconds{{{ns},name=\"{}\"}} - time()) < 14 * 86400",
                clinic.child_name("tls")
            ),
            for_: "1h",
            severity: "warning",
            summary: "The clinic's TLS certificate expires in less than 14 days.",
            description: format!("{instance}: the certificate of {} has not been renewed.", ingress.host),
        });
    }
    alerts
}

fn rpo_seconds(clinic: &Clinic) -> u64 {
    crate::model::parse_duration("spec.backup.rpo", &clinic.spec.backup.rpo)
        .map(|d| d.as_secs())
        .unwrap_or(26 * 3600)
}

/// `spec.groups` of the PrometheusRule (also what `promtool check rules` reads in the tests).
pub fn rule_groups(clinic: &Clinic) -> Value {
    let rules: Vec<Value> = alerts(clinic)
        .into_iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": { "severity": a.severity, "clinic": clinic.name },
                "annotations": {
                    "summary": a.summary,
                    "description": a.description,
                    "runbook_url": format!("{RUNBOOK_BASE}#{}", a.name.to_lowercase()),
                },
            })
        })
        .collect();
    json!([{ "name": format!("clinic-{}", clinic.name), "rules": rules }])
}

/// Where each alert's runbook step is: the alerts page of the docs at this operator's release
/// tag (one anchor per alert), which the release ships; no separate site has to be published.
pub const RUNBOOK_BASE: &str =
    concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/v", env!("CARGO_PKG_VERSION"), "/docs/operations/alerts.md");

pub fn prometheus_rule(clinic: &Clinic) -> Option<DynamicObject> {
    if !enabled(clinic) {
        return None;
    }
    let name = clinic.child_name("alerts");
    let mut rule = DynamicObject::new(&name, &prometheus_rule_resource()).within(&clinic.namespace);
    rule.metadata = monitoring_metadata(clinic, name);
    rule.data = json!({ "spec": { "groups": rule_groups(clinic) } });
    Some(rule)
}

/// Namespace of the dashboard ConfigMap.
pub fn dashboard_namespace(clinic: &Clinic) -> String {
    clinic.spec.monitoring.dashboard.namespace.clone().unwrap_or_else(|| clinic.namespace.clone())
}

/// The dashboard ConfigMap. In the clinic's namespace it is owned like every child; elsewhere
/// an owner reference is not allowed, so the finalizer removes it.
pub fn dashboard(clinic: &Clinic) -> Option<ConfigMap> {
    let spec = &clinic.spec.monitoring.dashboard;
    if !enabled(clinic) || !spec.enabled {
        return None;
    }
    let namespace = dashboard_namespace(clinic);
    let name = if namespace == clinic.namespace {
        clinic.child_name("dashboard")
    } else {
        format!("{}-dashboard", super::backup::base_name(clinic))
    };
    let mut meta = monitoring_metadata(clinic, name);
    meta.labels.get_or_insert_with(BTreeMap::new).insert(spec.label.clone(), spec.label_value.clone());
    if namespace != clinic.namespace {
        meta.owner_references = None;
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(CLINIC_NAMESPACE_LABEL.into(), clinic.namespace.clone());
    }
    meta.namespace = Some(namespace);
    let json = serde_json::to_string_pretty(&dashboard_json(clinic)).unwrap_or_default();
    Some(ConfigMap {
        metadata: meta,
        // Grafana's sidecar writes every dashboard of its namespace into one folder by this
        // key: it must be unique across clinics, like the name.
        data: Some(BTreeMap::from([(format!("clinic-{}.json", super::backup::base_name(clinic)), json)])),
        ..Default::default()
    })
}

/// The dashboard when it lives outside the clinic's namespace: not an owned child, applied and
/// removed by its own path behind the finalizer.
pub fn external_dashboard(clinic: &Clinic) -> Option<ConfigMap> {
    if !dashboard_outside(clinic) {
        return None;
    }
    dashboard(clinic)
}

/// Whether the clinic wants a dashboard outside its namespace (without building it).
pub fn dashboard_outside(clinic: &Clinic) -> bool {
    enabled(clinic)
        && clinic.spec.monitoring.dashboard.enabled
        && dashboard_namespace(clinic) != clinic.namespace
}

/// On objects outside the clinic's namespace: which namespace the clinic lives in (the same
/// label as on Velero objects).
pub use super::backup::CLINIC_NAMESPACE_LABEL;

/// One dashboard panel: a title, its unit and PromQL queries (`legend`, `expr`).
pub struct Panel {
    pub title: &'static str,
    pub unit: &'static str,
    pub kind: &'static str,
    pub queries: Vec<(&'static str, String)>,
}

/// The panels of a clinic's dashboard, in reading order.
pub fn panels(clinic: &Clinic) -> Vec<Panel> {
    let s = Selectors::of(clinic);
    let ns = &s.namespace;
    let pods = &s.pods;
    let backend = super::backend::name(clinic);
    let database = super::database::name(clinic);
    let gateway = super::gateway::name(clinic);
    let db_metrics = format!("{ns},service=\"{database}-metrics\"");
    let gw_metrics = format!("{ns},service=\"{gateway}-metrics\"");
    let mut panels = vec![
        Panel {
            title: "Backend ready replicas",
            unit: "none",
            kind: "stat",
            queries: vec![(
                "ready",
                format!("kube_statefulset_status_replicas_ready{{{ns},statefulset=\"{backend}\"}}"),
            )],
        },
        Panel {
            title: "Database up",
            unit: "none",
            kind: "stat",
            queries: vec![("up", format!("max(mysql_up{{{db_metrics}}})"))],
        },
        Panel {
            title: "Gateway up",
            unit: "none",
            kind: "stat",
            queries: vec![("up", format!("max(nginx_up{{{gw_metrics}}})"))],
        },
        Panel {
            title: "Time since last successful backup",
            unit: "s",
            kind: "stat",
            queries: vec![(
                "age",
                format!(
                    "time() - velero_backup_last_successful_timestamp{{schedule=\"{}\"}}",
                    super::backup::base_name(clinic)
                ),
            )],
        },
        Panel {
            title: "Gateway requests per second",
            unit: "reqps",
            kind: "timeseries",
            queries: vec![("{{pod}}", format!("rate(nginx_http_requests_total{{{gw_metrics}}}[5m])"))],
        },
        Panel {
            title: "Gateway connections",
            unit: "none",
            kind: "timeseries",
            queries: vec![
                ("active", format!("sum(nginx_connections_active{{{gw_metrics}}})")),
                ("waiting", format!("sum(nginx_connections_waiting{{{gw_metrics}}})")),
            ],
        },
        Panel {
            title: "Database connections",
            unit: "none",
            kind: "timeseries",
            queries: vec![
                ("connected", format!("mysql_global_status_threads_connected{{{db_metrics}}}")),
                ("max", format!("mysql_global_variables_max_connections{{{db_metrics}}}")),
            ],
        },
        Panel {
            title: "Database queries per second",
            unit: "qps",
            kind: "timeseries",
            queries: vec![
                ("queries", format!("rate(mysql_global_status_queries{{{db_metrics}}}[5m])")),
                ("slow", format!("rate(mysql_global_status_slow_queries{{{db_metrics}}}[5m])")),
            ],
        },
        Panel {
            title: "CPU by container",
            unit: "cores",
            kind: "timeseries",
            queries: vec![(
                "{{pod}}/{{container}}",
                format!(
                    "sum by (pod, container) (rate(container_cpu_usage_seconds_total{{{ns},{pods},container!=\"\"}}[5m]))"
                ),
            )],
        },
        Panel {
            title: "Memory by container",
            unit: "bytes",
            kind: "timeseries",
            queries: vec![(
                "{{pod}}/{{container}}",
                format!(
                    "sum by (pod, container) (container_memory_working_set_bytes{{{ns},{pods},container!=\"\"}})"
                ),
            )],
        },
        Panel {
            title: "Container restarts (1h)",
            unit: "none",
            kind: "timeseries",
            queries: vec![(
                "{{pod}}/{{container}}",
                format!("increase(kube_pod_container_status_restarts_total{{{ns},{pods}}}[1h])"),
            )],
        },
        Panel {
            title: "Data volume usage",
            unit: "percentunit",
            kind: "timeseries",
            queries: vec![(
                "{{persistentvolumeclaim}}",
                format!(
                    "kubelet_volume_stats_used_bytes{{{ns}}} / kubelet_volume_stats_capacity_bytes{{{ns}}}"
                ),
            )],
        },
    ];
    if clinic.spec.ingress.is_some() {
        let ingress = super::ingress::name(clinic);
        panels.push(Panel {
            title: "Requests by status class (Ingress)",
            unit: "reqps",
            kind: "timeseries",
            queries: vec![(
                "{{status}}",
                format!(
                    "sum by (status) (rate(nginx_ingress_controller_requests{{exported_namespace=\"{}\",ingress=\"{ingress}\"}}[5m]))",
                    clinic.namespace
                ),
            )],
        });
    }
    panels
}

/// Grafana dashboard JSON (schema 39) with a Prometheus data source variable.
pub fn dashboard_json(clinic: &Clinic) -> Value {
    let panels: Vec<Value> = panels(clinic)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let (w, h) = if p.kind == "stat" { (6, 4) } else { (12, 8) };
            let (x, y) =
                if p.kind == "stat" { ((i % 4) * 6, 0) } else { (((i - 4) % 2) * 12, 4 + ((i - 4) / 2) * 8) };
            json!({
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "datasource": { "type": "prometheus", "uid": "${datasource}" },
                "gridPos": { "x": x, "y": y, "w": w, "h": h },
                "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
                "targets": p.queries.iter().enumerate().map(|(j, (legend, expr))| json!({
                    "refId": ((b'A' + j as u8) as char).to_string(),
                    "expr": expr,
                    "legendFormat": legend,
                    "datasource": { "type": "prometheus", "uid": "${datasource}" },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "uid": format!("clinic-{}", &hash_of(&(&clinic.namespace, &clinic.name))[..12]),
        "title": format!("Clinic {} / {}", clinic.namespace, clinic.name),
        "tags": ["clinic-operator", "openmrs"],
        "schemaVersion": 39,
        "editable": false,
        "time": { "from": "now-6h", "to": "now" },
        "refresh": "1m",
        "templating": { "list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Data source",
        }] },
        "panels": panels,
    })
}

/// Every metric the alerts and panels may use, with what exposes it. Only names here may
/// appear in an expression (a test checks); the operator's own are checked against its
/// registry separately.
pub const KNOWN_METRICS: &[(&str, &str)] = &[
    ("mysql_up", "mysqld-exporter"),
    ("mysql_global_status_threads_connected", "mysqld-exporter"),
    ("mysql_global_status_queries", "mysqld-exporter"),
    ("mysql_global_status_slow_queries", "mysqld-exporter"),
    ("mysql_global_variables_max_connections", "mysqld-exporter"),
    ("nginx_up", "nginx-prometheus-exporter"),
    ("nginx_http_requests_total", "nginx-prometheus-exporter"),
    ("nginx_connections_active", "nginx-prometheus-exporter"),
    ("nginx_connections_waiting", "nginx-prometheus-exporter"),
    ("kube_statefulset_status_replicas_ready", "kube-state-metrics"),
    ("kube_deployment_status_replicas_available", "kube-state-metrics"),
    ("kube_pod_container_status_ready", "kube-state-metrics"),
    ("kube_pod_container_status_restarts_total", "kube-state-metrics"),
    ("kube_pod_start_time", "kube-state-metrics"),
    ("kubelet_volume_stats_available_bytes", "kubelet"),
    ("kubelet_volume_stats_capacity_bytes", "kubelet"),
    ("kubelet_volume_stats_used_bytes", "kubelet"),
    ("prober_probe_total", "kubelet (/metrics/probes)"),
    ("container_cpu_usage_seconds_total", "kubelet cAdvisor"),
    ("container_memory_working_set_bytes", "kubelet cAdvisor"),
    ("velero_backup_last_successful_timestamp", "Velero"),
    ("nginx_ingress_controller_requests", "ingress-nginx controller"),
    ("certmanager_certificate_expiration_timestamp_seconds", "cert-manager"),
];

/// Metric names used by a PromQL expression: identifiers outside label matchers, strings and
/// ranges that are neither functions, keywords nor numbers.
pub fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    let mut names = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth_brace, mut depth_bracket) = (0, 0, 0);
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            '(' => {}
            ')' => after_grouping = false,
            _ if (c.is_ascii_alphabetic() || c == '_' || c == ':')
                && depth_brace == 0
                && depth_bracket == 0 =>
            {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '_' || chars[i + 1] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                let is_function = next == Some(&'(');
                let grouping = matches!(
                    word.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                if grouping {
                    // `group_left` may stand alone; only a parenthesised label list follows.
                    after_grouping = next == Some(&'(');
                } else if !is_function && !KEYWORDS.contains(&word.as_str()) && !after_grouping {
                    names.push(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}
