//! Monitoring of one clinic: the exporter sidecars (OpenMRS, MariaDB and the gateway's nginx
//! have no Prometheus endpoint of their own), the Services that expose them, the Prometheus
//! Operator `ServiceMonitor` and `PrometheusRule`, a Grafana dashboard ConfigMap, and the Loki
//! side ([`logs`]: log panels and the log alerts' ConfigMap).
//!
//! Every metric an alert or panel uses is listed in [`KNOWN_METRICS`] with the component that
//! exposes it; a test parses every expression ([`promql`]) and fails on a name outside that list.
//!
//! [`exporters`]: the sidecars and their Services; [`alerts`]: the rules; [`dashboard`]: the
//! panels and Grafana's JSON; [`promql`]: the metrics an expression reads.

mod alerts;
mod dashboard;
mod exporters;
mod logs;
mod promql;

pub use alerts::{Alert, RUNBOOK_BASE, alerts, prometheus_rule, rule_groups};
pub use dashboard::{
    Panel, dashboard, dashboard_json, dashboard_namespace, dashboard_outside, external_dashboard, panels,
};
pub use exporters::{
    EXPORTER_CONFIG_DIR, exporter_init_sql, exporter_secret_name, metrics_services, mysqld_exporter,
    nginx_exporter,
};
pub use logs::{
    AUTH_FAILURE_LINE, BACKEND_START_PATTERN, DATABASE_ERROR_PATTERN, ERROR_PATTERN, OUT_OF_MEMORY_LINE,
    log_alerts, log_panels, logs_and_traces, loki_rule_groups, loki_rules,
};
pub use promql::{KNOWN_METRICS, metric_names};

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

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

/// On objects outside the clinic's namespace: which namespace the clinic lives in (the same
/// label as on Velero objects).
pub use super::backup::CLINIC_NAMESPACE_LABEL;

/// Whether the clinic runs exporters and wants monitors.
pub fn enabled(clinic: &Clinic) -> bool {
    clinic.spec.monitoring.enabled
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

pub fn alertmanager_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1alpha1", "AlertmanagerConfig"),
        "alertmanagerconfigs",
    )
}

/// The clinic's alert routes for the Prometheus Operator's Alertmanager: its alerts (the
/// `clinic` label; the Prometheus Operator adds the namespace's matcher) to the platform's
/// receivers by severity — `critical` to the pager, the rest to the ticket queue. Only where
/// the policy names them (`alertRouting`) and monitoring is on.
pub fn alertmanager_config(clinic: &Clinic) -> Option<DynamicObject> {
    let routing = clinic.alert_routing.as_ref().filter(|_| enabled(clinic))?;
    let name = clinic.child_name("alert-routing");
    let mut config = DynamicObject::new(&name, &alertmanager_config_resource()).within(&clinic.namespace);
    config.metadata = monitoring_metadata(clinic, name);
    let receiver = |name: &str, url: &str| json!({ "name": name, "webhookConfigs": [{ "url": url, "sendResolved": true }] });
    let matcher = |name: &str, value: &str| json!({ "name": name, "value": value, "matchType": "=" });
    config.data = json!({
        "spec": {
            "route": {
                "receiver": "warning",
                "groupBy": ["alertname", "clinic"],
                "groupWait": "30s",
                "groupInterval": "5m",
                "repeatInterval": "4h",
                "matchers": [matcher("clinic", &clinic.name)],
                "routes": [{
                    "receiver": "critical",
                    "matchers": [matcher("severity", "critical")],
                    "repeatInterval": "1h",
                }],
            },
            "receivers": [
                receiver("critical", &routing.critical_webhook),
                receiver("warning", &routing.warning_webhook),
            ],
        },
    });
    Some(config)
}

/// Metadata of a monitoring object: the standard labels plus the spec's extra labels.
pub(super) fn monitoring_metadata(clinic: &Clinic, name: String) -> kube::api::ObjectMeta {
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
