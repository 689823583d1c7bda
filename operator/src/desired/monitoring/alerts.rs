//! The alerts a clinic's on-call needs, as the `PrometheusRule` the Prometheus Operator loads.

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::*;
use crate::model::Clinic;
use crate::policy::GatewayMetrics;

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
    if let Some(front) = RequestMetrics::of(clinic) {
        let RequestMetrics { requests, code, duration_bucket, host, .. } = &front;
        alerts.push(Alert {
            name: "ClinicHigh5xxRate",
            expr: format!(
                "(sum(rate({requests},{code}=~\"5..\"}}[5m])) / sum(rate({requests}}}[5m]))) > 0.05"
            ),
            for_: "10m",
            severity: "critical",
            summary: "More than 5% of the requests to the clinic answer 5xx.",
            description: format!("{instance}: {host} answers 5xx to more than 5% of requests."),
        });
        // The 99.9 % availability objective (the hospital brief), as error-budget burn rates
        // over two windows each (the Google SRE workbook's multi-window, multi-burn-rate
        // alerts): the long window says the budget really goes, the short one that it still
        // does now (so the alert stops soon after the clinic recovers).
        let ratio = |window: &str| {
            format!("(sum(rate({requests},{code}=~\"5..\"}}[{window}])) / sum(rate({requests}}}[{window}])))")
        };
        let burning = |long: &str, short: &str, rate: f64| {
            let threshold = rate * ERROR_BUDGET;
            format!("({} > {threshold:.4} and {} > {threshold:.4})", ratio(long), ratio(short))
        };
        alerts.push(Alert {
            name: "ClinicErrorBudgetBurningFast",
            expr: format!("{} or {}", burning("1h", "5m", 14.4), burning("6h", "30m", 6.0)),
            for_: "2m",
            severity: "critical",
            summary: "The clinic burns its 99.9 % availability budget fast: a month's budget in days at this pace.",
            description: format!(
                "{instance}: more than 1.44 % of {host}'s requests over the last hour (or 0.6 % over six hours) answered 5xx, and they still do."
            ),
        });
        alerts.push(Alert {
            name: "ClinicErrorBudgetBurningSlowly",
            expr: format!("{} or {}", burning("1d", "2h", 3.0), burning("3d", "6h", 1.0)),
            for_: "15m",
            severity: "warning",
            summary: "The clinic burns its 99.9 % availability budget faster than it can afford over a month.",
            description: format!(
                "{instance}: more than 0.3 % of {host}'s requests over a day (or 0.1 % over three days) answered 5xx."
            ),
        });
        alerts.push(Alert {
            name: "ClinicSlowResponses",
            expr: format!(
                "histogram_quantile(0.95, sum by (le) (rate({duration_bucket}}}[5m]))) > {SLOW_RESPONSE_SECONDS}"
            ),
            for_: "10m",
            severity: "warning",
            summary: "One request in twenty to the clinic takes longer than 3 seconds.",
            description: format!("{instance}: the 95th percentile of {host}'s response time is above 3 s."),
        });
    }
    if let Some(ingress) = &clinic.spec.ingress {
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

/// The hospital brief's bound on one action's response time.
const SLOW_RESPONSE_SECONDS: u32 = 3;

/// The share of requests that may fail under the brief's 99.9 % availability objective.
const ERROR_BUDGET: f64 = 0.001;

/// Where a published clinic's request metrics come from: its Ingress controller's
/// (ingress-nginx), or the Gateway implementation the policy names for its route. Each field is
/// a selector left open for more matchers (`metric{labels`).
pub struct RequestMetrics {
    /// Requests counted by status code.
    pub requests: String,
    /// The label that holds the status code.
    pub code: &'static str,
    /// Response-time histogram buckets.
    pub duration_bucket: String,
    pub host: String,
    /// What exposes them, for panel titles.
    pub source: &'static str,
}

impl RequestMetrics {
    pub fn of(clinic: &Clinic) -> Option<Self> {
        if let Some(ingress) = &clinic.spec.ingress {
            let by = format!(
                "{{exported_namespace=\"{}\",ingress=\"{}\"",
                clinic.namespace,
                super::ingress::name(clinic)
            );
            return Some(Self {
                requests: format!("nginx_ingress_controller_requests{by}"),
                code: "status",
                duration_bucket: format!("nginx_ingress_controller_request_duration_seconds_bucket{by}"),
                host: ingress.host.clone(),
                source: "Ingress",
            });
        }
        let route = clinic.spec.route.as_ref()?;
        match clinic.gateway.as_ref()?.metrics? {
            GatewayMetrics::Traefik => {
                // Traefik names a Gateway API backend `<namespace>-<Service>-<port name>-<port>`.
                let backend = format!(
                    "{}-{}-http-{}@kubernetesgateway",
                    clinic.namespace,
                    super::gateway::name(clinic),
                    super::gateway::SERVICE_PORT
                );
                let by = format!("{{service=\"{backend}\"");
                Some(Self {
                    requests: format!("traefik_service_requests_total{by}"),
                    code: "code",
                    duration_bucket: format!("traefik_service_request_duration_seconds_bucket{by}"),
                    host: route.host.clone(),
                    source: "Gateway",
                })
            }
        }
    }
}

fn rpo_seconds(clinic: &Clinic) -> u64 {
    crate::model::parse_duration("spec.backup.rpo", &clinic.spec.backup.rpo)
        .map(|d| d.as_secs())
        .unwrap_or(26 * 3600)
}

/// `spec.groups` of the PrometheusRule (also what `promtool check rules` reads in the tests).
pub fn rule_groups(clinic: &Clinic) -> Value {
    let labels = json!({ "clinic": clinic.name });
    let rules: Vec<Value> = alerts(clinic).into_iter().map(|a| rule(a, &labels)).collect();
    json!([{ "name": format!("clinic-{}", clinic.name), "rules": rules }])
}

/// One alerting rule of the rule-group format (Prometheus' and the Loki ruler's), with its
/// severity and `labels`, and its runbook.
pub(super) fn rule(alert: Alert, labels: &Value) -> Value {
    let mut all = json!({ "severity": alert.severity });
    if let (Some(all), Some(labels)) = (all.as_object_mut(), labels.as_object()) {
        all.extend(labels.clone());
    }
    json!({
        "alert": alert.name,
        "expr": alert.expr,
        "for": alert.for_,
        "labels": all,
        "annotations": {
            "summary": alert.summary,
            "description": alert.description,
            "runbook_url": format!("{RUNBOOK_BASE}#{}", alert.name.to_lowercase()),
        },
    })
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
