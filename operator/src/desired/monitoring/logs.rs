//! The clinic's side of a Loki log pipeline: the LogQL of its dashboard's log panels and of its
//! log alerts, and the ConfigMap that ships those alerts to the Loki ruler.
//!
//! Every expression selects the clinic's streams by the labels the platform's collector sets
//! (docs/monitoring.md#logs): `namespace`, `clinic` (the pods' `app.kubernetes.io/instance`),
//! `component` (`app.kubernetes.io/component`) and `container`. The line filters are constants
//! so that a test holds each against real log lines of what it detects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::super::*;
use super::*;

/// What OpenMRS logs (at INFO, from its `ContextDAO`) for each refused login, REST or web.
pub const AUTH_FAILURE_LINE: &str = "Failed login attempt";
/// Database errors, as MariaDB logs them (`[ERROR]`) and as the backend's JDBC driver and
/// Hibernate report them (RE2 syntax, LogQL's).
pub const DATABASE_ERROR_PATTERN: &str = r"(?i)(\[ERROR\]|communications link failure|too many connections|deadlock found|lock wait timeout exceeded|access denied for user)";
/// The JVM out of memory: the backend is about to be unusable, whatever its probes say.
pub const OUT_OF_MEMORY_LINE: &str = "java.lang.OutOfMemoryError";
/// A line that reports an error, in any component's format.
pub const ERROR_PATTERN: &str = r"(?i)(\berror\b|\bfatal\b|exception|\[emerg\]|\[crit\])";
/// The milestones of a backend start: Tomcat, the Liquibase migrations, the modules.
pub const BACKEND_START_PATTERN: &str = r"(?i)(initiating openmrs|server startup in|liquibase|starting module|started module|initializ|refreshing|update has been successful)";

/// The stream selector of the clinic's logs, with extra matchers (e.g. `container="openmrs"`).
pub fn streams(clinic: &Clinic, extra: &str) -> String {
    let base = format!("namespace=\"{}\", clinic=\"{}\"", clinic.namespace, clinic.name);
    if extra.is_empty() { format!("{{{base}}}") } else { format!("{{{base}, {extra}}}") }
}

/// A LogQL string literal (backquoted: no escape is interpreted, and none of the patterns
/// holds a backquote).
fn literal(text: &str) -> String {
    format!("`{text}`")
}

/// The log panels of the clinic's dashboard (LogQL, on the `logs` data source variable).
pub fn log_panels(clinic: &Clinic) -> Vec<Panel> {
    if !enabled(clinic) || !clinic.spec.monitoring.logs.dashboard {
        return Vec::new();
    }
    let all = streams(clinic, "");
    let backend = streams(clinic, "container=\"openmrs\"");
    vec![
        Panel {
            title: "Log errors by component",
            unit: "none",
            kind: "timeseries",
            queries: vec![(
                "{{component}}",
                format!("sum by (component) (count_over_time({all} |~ {} [5m]))", literal(ERROR_PATTERN)),
            )],
        },
        Panel {
            title: "Failed logins",
            unit: "none",
            kind: "timeseries",
            queries: vec![(
                "failed logins",
                format!("sum(count_over_time({backend} |= {} [5m]))", literal(AUTH_FAILURE_LINE)),
            )],
        },
        Panel {
            title: "Backend start",
            unit: "none",
            kind: "logs",
            queries: vec![("", format!("{backend} |~ {}", literal(BACKEND_START_PATTERN)))],
        },
    ]
}

/// The clinic's log alerts, evaluated by the Loki ruler.
pub fn log_alerts(clinic: &Clinic) -> Vec<Alert> {
    let backend = streams(clinic, "container=\"openmrs\"");
    let data = streams(clinic, "container=~\"mariadb|openmrs\"");
    vec![
        Alert {
            name: "ClinicRepeatedLoginFailures",
            expr: format!("sum(count_over_time({backend} |= {} [5m])) > 20", literal(AUTH_FAILURE_LINE)),
            for_: "0m",
            severity: "warning",
            summary: "Repeated failed logins",
            description: format!(
                "More than 20 failed logins in 5 minutes on clinic {}/{}: a forgotten password, a misconfigured client or someone guessing.",
                clinic.namespace, clinic.name
            ),
        },
        Alert {
            name: "ClinicDatabaseErrors",
            expr: format!("sum(count_over_time({data} |~ {} [10m])) > 5", literal(DATABASE_ERROR_PATTERN)),
            for_: "0m",
            severity: "warning",
            summary: "Database errors in the logs",
            description: format!(
                "MariaDB or the backend of clinic {}/{} logged more than 5 database errors in 10 minutes.",
                clinic.namespace, clinic.name
            ),
        },
        Alert {
            name: "ClinicBackendOutOfMemory",
            expr: format!("sum(count_over_time({backend} |= {} [5m])) > 0", literal(OUT_OF_MEMORY_LINE)),
            for_: "0m",
            severity: "critical",
            summary: "The backend ran out of memory",
            description: format!(
                "The OpenMRS backend of clinic {}/{} logged an OutOfMemoryError: requests fail until it restarts.",
                clinic.namespace, clinic.name
            ),
        },
    ]
}

/// The rule-group file of the log alerts, in the format the Loki ruler reads (the Prometheus
/// rule-group format with LogQL expressions).
pub fn loki_rule_groups(clinic: &Clinic) -> Value {
    // The ruler is shared by every tenant: the namespace says whose alert it is.
    let labels = json!({ "clinic": clinic.name, "namespace": clinic.namespace });
    let rules: Vec<Value> = log_alerts(clinic).into_iter().map(|a| super::alerts::rule(a, &labels)).collect();
    json!({ "groups": [{ "name": format!("clinic-{}-logs", clinic.name), "rules": rules }] })
}

/// The ConfigMap `<name>-loki-rules` the Loki ruler's sidecar loads, when asked for.
pub fn loki_rules(clinic: &Clinic) -> Option<ConfigMap> {
    let logs = &clinic.spec.monitoring.logs;
    if !enabled(clinic) || !logs.alert_rules {
        return None;
    }
    let mut meta = monitoring_metadata(clinic, clinic.child_name("loki-rules"));
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(logs.rule_label.clone(), logs.rule_label_value.clone());
    let file = serde_yaml::to_string(&loki_rule_groups(clinic)).unwrap_or_default();
    Some(ConfigMap {
        metadata: meta,
        // The sidecar writes every rule file of the cluster into one folder per tenant by this
        // key: unique across clinics, like the dashboard's.
        data: Some(BTreeMap::from([(
            format!("clinic-{}-logs.yaml", super::super::backup::base_name(clinic)),
            file,
        )])),
        ..Default::default()
    })
}

/// What the clinic gives the log and trace pipelines, for `MonitoringReady`'s message: the log
/// panels and Loki rules it ships, and where its traces go.
pub fn logs_and_traces(clinic: &Clinic) -> String {
    let logs = &clinic.spec.monitoring.logs;
    let mut shipped = Vec::new();
    if !log_panels(clinic).is_empty() && clinic.spec.monitoring.dashboard.enabled {
        shipped.push("log panels on the dashboard".to_string());
    }
    if loki_rules(clinic).is_some() {
        shipped.push(format!(
            "Loki alert rules in ConfigMap {} (label {}={:?})",
            clinic.child_name("loki-rules"),
            logs.rule_label,
            logs.rule_label_value
        ));
    }
    let logs = if shipped.is_empty() {
        "logs: none shipped".to_string()
    } else {
        format!("logs: {}", shipped.join(", "))
    };
    let traces = match &clinic.tracing {
        None => "traces: off".to_string(),
        Some(tracing) => {
            let agent = match (&tracing.java_agent.instrumentation, &tracing.java_agent.image) {
                (Some(instrumentation), _) => {
                    format!("injected by the OpenTelemetry Operator ({instrumentation})")
                }
                (None, Some(image)) => format!("copied from {image}"),
                (None, None) => "not set".to_string(),
            };
            format!("traces: to {} (Java agent {agent})", tracing.collector.endpoint())
        }
    };
    format!("{logs}; {traces}")
}
