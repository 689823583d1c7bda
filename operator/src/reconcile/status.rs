//! The one status function: conditions computed from what the cluster reports about the
//! children (ready replicas, observed generations), written only when something besides
//! timestamps changed.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backup::Gate;
use crate::api::{ClinicPlatformStatus, ComponentVersions, Condition};
use crate::model::Clinic;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const OPENMRS_READY: &str = "OpenMRSReady";
pub const SECURITY_ENFORCED: &str = "SecurityEnforced";
pub const BACKUP_READY: &str = "BackupReady";
pub const COMPLIANT: &str = "Compliant";
pub const MONITORING_READY: &str = "MonitoringReady";

/// What a workload reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadState {
    pub name: String,
    pub exists: bool,
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    /// The controller has seen the newest spec.
    pub current: bool,
}

impl WorkloadState {
    pub fn is_ready(&self) -> bool {
        self.exists
            && self.current
            && self.ready >= self.desired.max(1)
            && self.updated >= self.desired.max(1)
    }

    fn describe(&self) -> String {
        if !self.exists {
            format!("{} does not exist yet", self.name)
        } else if !self.current {
            format!("{} has not observed its newest spec yet", self.name)
        } else {
            format!("{}: {}/{} ready, {} updated", self.name, self.ready, self.desired, self.updated)
        }
    }

    pub fn from_stateful_set(name: String, sts: Option<&StatefulSet>) -> Self {
        let Some(sts) = sts else {
            return Self::missing(name);
        };
        let status = sts.status.clone().unwrap_or_default();
        let generation = sts.metadata.generation.unwrap_or(0);
        Self {
            name,
            exists: true,
            desired: sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: status.observed_generation.unwrap_or(0) >= generation,
        }
    }

    pub fn from_deployment(name: String, deployment: Option<&Deployment>) -> Self {
        let Some(d) = deployment else {
            return Self::missing(name);
        };
        let status = d.status.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        Self {
            name,
            exists: true,
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.available_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: status.observed_generation.unwrap_or(0) >= generation,
        }
    }

    fn missing(name: String) -> Self {
        Self { name, exists: false, desired: 0, ready: 0, updated: 0, current: false }
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct Observed {
    pub generation: Option<i64>,
    pub database: WorkloadState,
    pub backend: WorkloadState,
    pub frontend: WorkloadState,
    pub gateway: WorkloadState,
    /// Network policies present and as declared.
    pub network_policies_enforced: bool,
    /// Objects written in this pass.
    pub changed: bool,
    /// The error of this pass, if any: (reason, message).
    pub error: Option<(String, String)>,
    pub paused: bool,
    /// The upgrade gate's verdict.
    pub gate: super::backup::Gate,
    /// Velero backups of the clinic.
    pub backup: super::backup::BackupHealth,
    /// The security controls behind `Compliant`.
    pub controls: crate::api::Compliance,
    /// Whether namespace labels can be read (not in namespaced mode).
    pub namespace_visible: bool,
    /// ServiceMonitor, PrometheusRule and dashboard.
    pub monitoring: MonitoringState,
}

/// What the monitoring of a clinic looks like this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitoringState {
    pub enabled: bool,
    /// The Prometheus Operator's CRDs are served.
    pub operator_installed: bool,
    /// How many of the ServiceMonitor and PrometheusRule are in place.
    pub in_place: usize,
    pub error: Option<String>,
}

fn monitoring_condition(m: &MonitoringState, generation: Option<i64>) -> Condition {
    let (ok, reason, message) = match m {
        MonitoringState { enabled: false, .. } => {
            (false, "Disabled", "spec.monitoring.enabled is false: no exporters, monitors or alerts".to_string())
        }
        MonitoringState { error: Some(e), .. } => (false, "ApplyFailed", e.clone()),
        MonitoringState { operator_installed: false, .. } => (
            false,
            "PrometheusOperatorNotInstalled",
            "exporters run; the ServiceMonitor and PrometheusRule are created once the monitoring.coreos.com/v1 CRDs are installed"
                .to_string(),
        ),
        MonitoringState { in_place, .. } if *in_place < 2 => {
            (false, "Pending", "the ServiceMonitor and PrometheusRule are being applied".to_string())
        }
        _ => (true, "Monitored", "exporters, ServiceMonitor and PrometheusRule are in place".to_string()),
    };
    condition(MONITORING_READY, ok, reason, message, generation)
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: generation,
    }
}

/// The desired status of a clinic (transition times still unset).
pub fn compute(
    clinic: &Clinic,
    observed: &Observed,
    previous: Option<&ClinicPlatformStatus>,
) -> ClinicPlatformStatus {
    let generation = observed.generation;
    let database_ready = observed.database.is_ready();
    let openmrs_parts = [&observed.backend, &observed.frontend, &observed.gateway];
    let openmrs_ready = openmrs_parts.iter().all(|w| w.is_ready());

    let database = if database_ready {
        condition(DATABASE_READY, true, "Ready", observed.database.describe(), generation)
    } else {
        condition(DATABASE_READY, false, "NotReady", observed.database.describe(), generation)
    };
    let not_ready: Vec<String> =
        openmrs_parts.iter().filter(|w| !w.is_ready()).map(|w| w.describe()).collect();
    let openmrs = if openmrs_ready {
        condition(OPENMRS_READY, true, "Ready", "backend, frontend and gateway are ready".into(), generation)
    } else {
        condition(OPENMRS_READY, false, "NotReady", not_ready.join("; "), generation)
    };

    let degraded = match (&observed.error, &observed.gate) {
        (Some((reason, message)), _) => condition(DEGRADED, true, reason, message.clone(), generation),
        (None, Gate::Blocked { reason, message }) => {
            condition(DEGRADED, true, reason, message.clone(), generation)
        }
        (None, _) => condition(DEGRADED, false, "AsExpected", "no errors".into(), generation),
    };

    let progressing = if observed.paused {
        condition(
            PROGRESSING,
            false,
            "Paused",
            "spec.paused is true: children are not changed".into(),
            generation,
        )
    } else if observed.error.is_some() || matches!(observed.gate, Gate::Blocked { .. }) {
        condition(PROGRESSING, false, "Blocked", "see the Degraded condition".into(), generation)
    } else if let Gate::Waiting { backup } = &observed.gate {
        condition(
            PROGRESSING,
            true,
            "AwaitingBackup",
            format!(
                "upgrade waits for the pre-upgrade backup {backup} to complete; the current version keeps running"
            ),
            generation,
        )
    } else if observed.changed || !database_ready || !openmrs_ready {
        let mut waiting = Vec::new();
        if !database_ready {
            waiting.push(observed.database.describe());
        }
        waiting.extend(not_ready.iter().cloned());
        let message = if waiting.is_empty() {
            "applied changes".to_string()
        } else {
            format!("waiting: {}", waiting.join("; "))
        };
        condition(PROGRESSING, true, "Reconciling", message, generation)
    } else {
        condition(PROGRESSING, false, "Stable", "every component runs the declared spec".into(), generation)
    };

    let controls = &observed.controls;
    let security = if !clinic.spec.security.enforce_pod_security {
        condition(
            SECURITY_ENFORCED,
            false,
            "PodSecurityOptOut",
            "spec.security.enforcePodSecurity is false: the namespace is not held to Pod Security restricted"
                .into(),
            generation,
        )
    } else if !observed.network_policies_enforced {
        condition(
            SECURITY_ENFORCED,
            false,
            "PoliciesMissing",
            "NetworkPolicies are not all in place yet".into(),
            generation,
        )
    } else if observed.namespace_visible && !controls.pod_security_restricted {
        condition(
            SECURITY_ENFORCED,
            false,
            "PodSecurityMissing",
            "the namespace does not enforce Pod Security restricted yet".into(),
            generation,
        )
    } else {
        condition(
            SECURITY_ENFORCED,
            true,
            "Enforced",
            "default-deny NetworkPolicies, restricted Pod Security and hardened pods are in place".into(),
            generation,
        )
    };
    let failing: Vec<&str> =
        controls.list().iter().filter(|(_, holds, _)| !holds).map(|(_, _, why)| *why).collect();
    let compliant = if failing.is_empty() {
        condition(COMPLIANT, true, "AllControlsHold", "every security control holds".into(), generation)
    } else {
        condition(COMPLIANT, false, "ControlsFailing", failing.join("; "), generation)
    };

    let ready_now = database_ready && openmrs_ready && observed.error.is_none();
    let ready = if ready_now {
        condition(READY, true, "Ready", format!("OpenMRS is serving at {}", clinic.url()), generation)
    } else if let Some((reason, _)) = &observed.error {
        condition(READY, false, reason, "see the Degraded condition".into(), generation)
    } else {
        condition(READY, false, "Progressing", "see the Progressing condition".into(), generation)
    };

    let b = &observed.backup;
    let backup = Condition {
        type_: BACKUP_READY.into(),
        status: b.status.into(),
        reason: b.reason.into(),
        message: b.message.clone(),
        last_transition_time: None,
        observed_generation: generation,
    };
    let monitoring = monitoring_condition(&observed.monitoring, generation);
    let mut conditions =
        vec![ready, progressing, degraded, database, openmrs, security, backup, compliant, monitoring];
    carry_transition_times(&mut conditions, previous.map(|s| s.conditions.as_slice()).unwrap_or_default());
    ClinicPlatformStatus {
        observed_generation: generation,
        conditions,
        url: Some(clinic.url()),
        versions: Some(ComponentVersions {
            openmrs: Some(
                clinic
                    .spec
                    .openmrs
                    .backend
                    .image
                    .clone()
                    .unwrap_or_else(|| clinic.spec.openmrs.version.clone()),
            ),
            database: Some(
                clinic.spec.database.image.clone().unwrap_or_else(|| clinic.spec.database.version.clone()),
            ),
        }),
        compliance: Some(controls.clone()),
        last_backup_time: observed
            .backup
            .last_success
            .map(Time)
            .or_else(|| previous.and_then(|s| s.last_backup_time.clone())),
    }
}

/// A condition keeps its transition time while its status stays the same.
fn carry_transition_times(conditions: &mut [Condition], previous: &[Condition]) {
    let now = Time(jiff::Timestamp::now());
    for c in conditions {
        c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
            Some(p) if p.status == c.status => p.last_transition_time.clone().or_else(|| Some(now.clone())),
            _ => Some(now.clone()),
        };
    }
}

/// Whether writing `new` over `old` would change anything but timestamps.
pub fn differs(old: Option<&ClinicPlatformStatus>, new: &ClinicPlatformStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ClinicPlatformStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(old) != strip(new)
}

/// Whether a status change may wait: only the progress of a convergence moved (`Progressing`,
/// `DatabaseReady`, `OpenMRSReady`, replica counts in messages). Everything a user or an alert
/// acts on — `Ready`, `Degraded`, backups, security, compliance, monitoring, the generation — is
/// as already written. Such updates are coalesced.
pub fn may_coalesce(old: Option<&ClinicPlatformStatus>, new: &ClinicPlatformStatus) -> bool {
    let Some(old) = old else { return false };
    let progress = [PROGRESSING, DATABASE_READY, OPENMRS_READY];
    let settled = |s: &ClinicPlatformStatus| {
        let mut s = s.clone();
        s.conditions.retain(|c| !progress.contains(&c.type_.as_str()));
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    settled(old) == settled(new)
}

/// Status of an object whose spec cannot even be read (wrong types in the YAML).
pub fn unreadable(message: &str, generation: Option<i64>, previous: &[Condition]) -> Vec<Condition> {
    let mut conditions = vec![
        condition(READY, false, "InvalidSpec", "see the Degraded condition".into(), generation),
        condition(DEGRADED, true, "InvalidSpec", message.into(), generation),
    ];
    carry_transition_times(&mut conditions, previous);
    conditions
}
