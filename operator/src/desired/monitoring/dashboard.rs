//! The clinic's Grafana dashboard: its panels and the ConfigMap Grafana's sidecar loads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::super::*;
use super::alerts::RequestMetrics;
use super::*;

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
    if let Some(front) = RequestMetrics::of(clinic) {
        let RequestMetrics { requests, code, duration_bucket, source, .. } = front;
        panels.push(Panel {
            title: if source == "Ingress" {
                "Requests by status (Ingress)"
            } else {
                "Requests by status (Gateway)"
            },
            unit: "reqps",
            kind: "timeseries",
            queries: vec![(
                if code == "status" { "{{status}}" } else { "{{code}}" },
                format!("sum by ({code}) (rate({requests}}}[5m]))"),
            )],
        });
        panels.push(Panel {
            title: if source == "Ingress" {
                "Response time p95 (Ingress)"
            } else {
                "Response time p95 (Gateway)"
            },
            unit: "s",
            kind: "timeseries",
            queries: vec![(
                "p95",
                format!("histogram_quantile(0.95, sum by (le) (rate({duration_bucket}}}[5m])))"),
            )],
        });
    }
    panels
}

/// Grafana dashboard JSON (schema 39) with a Prometheus data source variable, and a Loki one
/// for the log panels.
pub fn dashboard_json(clinic: &Clinic) -> Value {
    let metric_panels = panels(clinic).into_iter().map(|p| ("prometheus", "${datasource}", p));
    let log_panels: Vec<Panel> = super::logs::log_panels(clinic);
    let has_logs = !log_panels.is_empty();
    let panels: Vec<Value> = metric_panels
        .chain(log_panels.into_iter().map(|p| ("loki", "${logs}", p)))
        .enumerate()
        .map(|(i, (source, uid, p))| {
            let (w, h) = if p.kind == "stat" { (6, 4) } else { (12, 8) };
            let (x, y) =
                if p.kind == "stat" { ((i % 4) * 6, 0) } else { (((i - 4) % 2) * 12, 4 + ((i - 4) / 2) * 8) };
            json!({
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "datasource": { "type": source, "uid": uid },
                "gridPos": { "x": x, "y": y, "w": w, "h": h },
                "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
                "targets": p.queries.iter().enumerate().map(|(j, (legend, expr))| json!({
                    "refId": ((b'A' + j as u8) as char).to_string(),
                    "expr": expr,
                    "legendFormat": legend,
                    "datasource": { "type": source, "uid": uid },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut variables = vec![
        json!({ "name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source" }),
    ];
    if has_logs {
        variables.push(json!({ "name": "logs", "type": "datasource", "query": "loki", "label": "Logs" }));
    }
    json!({
        "uid": format!("clinic-{}", &hash_of(&(&clinic.namespace, &clinic.name))[..12]),
        "title": format!("Clinic {} / {}", clinic.namespace, clinic.name),
        "tags": ["clinic-operator", "openmrs"],
        "schemaVersion": 39,
        "editable": false,
        "time": { "from": "now-6h", "to": "now" },
        "refresh": "1m",
        "templating": { "list": variables },
        "panels": panels,
    })
}
