//! The one status function: conditions computed from what the cluster reports about the
//! children (ready replicas, observed generations), written only when something besides
//! timestamps changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backups::BackupHealth;
use super::caches::WorkloadRecord;
use super::error::{Error, Problem};
use super::exposure::{self, RouteState};
use super::gate::Gate;
use crate::api::{ClinicPlatformStatus, ComponentVersions, Condition, DeletionOutcome};
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
/// Set only on a deleted clinic whose clean-up fails: the finalizer stays until it succeeds.
pub const CLEANUP_BLOCKED: &str = "CleanupBlocked";

/// What a workload reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadState {
    pub name: String,
    pub exists: bool,
    pub desired: i32,
    /// Pods its controller has created (`status.replicas`), ready or not.
    pub created: i32,
    pub ready: i32,
    pub updated: i32,
    /// The controller has seen the newest spec.
    pub current: bool,
    /// Why its controller cannot create pods now (a Deployment's `ReplicaFailure` condition, a
    /// StatefulSet's recent `FailedCreate` event), e.g. Pod Security refusing the template.
    pub failure: Option<String>,
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

    /// What the cache records of a workload, or a missing one.
    pub fn of(name: String, record: Option<&WorkloadRecord>) -> Self {
        let Some(w) = record else {
            return Self::missing(name);
        };
        Self {
            name,
            exists: true,
            desired: w.desired,
            created: w.created,
            ready: w.ready,
            updated: w.updated,
            current: w.current,
            failure: w.failure.as_deref().map(String::from),
        }
    }

    /// A replicated database, as its `MariaDB` reports it: all its servers ready once the
    /// mariadb-operator says `Ready`, none before (it does not count them one by one).
    pub fn of_cluster(name: String, cluster: &super::gather::ClusterState) -> Self {
        if !cluster.exists {
            return Self { failure: cluster.message.clone(), ..Self::missing(name) };
        }
        let ready = if cluster.ready { cluster.replicas } else { 0 };
        Self {
            name,
            exists: true,
            desired: cluster.replicas,
            created: cluster.reported,
            ready,
            updated: ready,
            current: cluster.current,
            failure: cluster.message.clone(),
        }
    }

    fn missing(name: String) -> Self {
        Self {
            name,
            exists: false,
            desired: 0,
            created: 0,
            ready: 0,
            updated: 0,
            current: false,
            failure: None,
        }
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct Observed {
    pub generation: Option<i64>,
    /// The Secret the database was initialised with (`status.databaseCredentialsSecret`).
    pub database_credentials: Option<String>,
    /// The Secret with the keys the data is encrypted with (`status.databaseEncryptionSecret`).
    pub database_encryption: Option<String>,
    pub database: WorkloadState,
    pub backend: WorkloadState,
    /// Versions every pod of the backend and the database runs (else the last reported).
    pub versions: ComponentVersions,
    pub frontend: WorkloadState,
    pub gateway: WorkloadState,
    /// Network policies present and as declared.
    pub network_policies_enforced: bool,
    /// Objects written in this pass.
    pub changed: bool,
    /// The error of this pass, if any.
    pub error: Option<Problem>,
    pub paused: bool,
    /// The upgrade gate's verdict.
    pub gate: Gate,
    /// Velero backups of the clinic.
    pub backup: BackupHealth,
    /// The security controls behind `Compliant`.
    pub controls: crate::api::Compliance,
    /// Whether namespace labels can be read (not in namespaced mode).
    pub namespace_visible: bool,
    /// ServiceMonitor, PrometheusRule and dashboard.
    pub monitoring: MonitoringState,
    /// The clinic's HTTPRoutes with their Gateway (`None` without `spec.route`).
    pub route: Option<RouteState>,
    /// The clinic's mesh policies (`None` without `spec.security.mtls`).
    pub mesh: Option<MeshState>,
    /// What is outside the namespace on the clinic's behalf (`status.outsideObjects`).
    pub outside: Option<Vec<crate::api::OutsideObject>>,
    /// The operator's own probes of the clinic (`None` without the policy's `clinicProbe`, or
    /// before the first).
    pub probe: Option<super::probe::Verdict>,
}

/// The mesh policies of a clinic with `spec.security.mtls`, as this pass found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshState {
    /// Not declared yet: they follow the other children once those are in place.
    Pending,
    /// Istio's security API (`security.istio.io/v1`) is not served.
    NotInstalled,
    /// Some of the PeerAuthentications and AuthorizationPolicies are not in place.
    Incomplete { in_place: usize, expected: usize, error: Option<Problem> },
    /// Every one is in place as declared.
    InForce,
}

/// What the monitoring of a clinic looks like this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitoringState {
    pub enabled: bool,
    /// The Prometheus Operator's CRDs are served.
    pub operator_installed: bool,
    /// How many of the ServiceMonitor and PrometheusRule are in place.
    pub in_place: usize,
    pub error: Option<Problem>,
    /// What the clinic gives the log and trace pipelines (see
    /// [`crate::desired::monitoring::logs_and_traces`]), said in the condition's message.
    pub logs_and_traces: String,
    /// Where the VerticalPodAutoscalers' recommendations stand, when the clinic asks for them
    /// (`spec.autoscaling.verticalRecommendations`), said in the condition's message.
    pub vertical: Option<String>,
    /// Where the clinic's alerts are routed, when the policy names receivers (`alertRouting`),
    /// said in the condition's message.
    pub routing: Option<String>,
}

fn monitoring_condition(m: &MonitoringState, generation: Option<i64>) -> Condition {
    let (ok, reason, message) = match m {
        MonitoringState { enabled: false, .. } => {
            (false, "Disabled", "spec.monitoring.enabled is false: no exporters, monitors or alerts".to_string())
        }
        MonitoringState { error: Some(e), .. } => (false, e.reason, e.message.clone()),
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
    let message =
        if m.logs_and_traces.is_empty() { message } else { format!("{message}; {}", m.logs_and_traces) };
    let message = [&m.vertical, &m.routing]
        .into_iter()
        .flatten()
        .fold(message, |message, part| format!("{message}; {part}"));
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

/// The desired status of a clinic (transition times carried over from `previous`).
pub fn compute(
    clinic: &Clinic,
    observed: &Observed,
    previous: Option<&ClinicPlatformStatus>,
) -> ClinicPlatformStatus {
    let generation = observed.generation;
    let controls = &observed.controls;
    // Routes not looked at this pass (paused, or children not converged) keep their last answer.
    let last_route = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == exposure::ROUTE_ACCEPTED));
    let route = observed.route.as_ref().map(|route| match (route, last_route) {
        (RouteState::Unchecked, Some(last)) => last.clone(),
        _ => exposure::condition(clinic, route, generation),
    });
    let routed = route.as_ref().is_none_or(|c| c.status == "True");
    let mut conditions = vec![
        ready(clinic, observed, routed),
        progressing(observed),
        degraded(observed),
        database_ready(observed),
        openmrs_ready(observed),
        security_enforced(clinic, observed),
        backup_ready(&observed.backup, generation),
        compliant(controls, generation),
        monitoring_condition(&observed.monitoring, generation),
    ];
    conditions.extend(route);
    carry_transition_times(&mut conditions, previous.map(|s| s.conditions.as_slice()).unwrap_or_default());
    ClinicPlatformStatus {
        observed_generation: generation,
        conditions,
        url: Some(clinic.url()),
        versions: Some(observed.versions.clone()).filter(|v| v.openmrs.is_some() || v.database.is_some()),
        compliance: Some(controls.clone()),
        database_credentials_secret: observed.database_credentials.clone(),
        database_encryption_secret: observed.database_encryption.clone(),
        database_certificate: clinic.database_certificate.clone(),
        backend_certificate: clinic.backend_certificate.clone(),
        last_backup_time: observed
            .backup
            .last_success
            .map(Time)
            .or_else(|| previous.and_then(|s| s.last_backup_time.clone())),
        on_deletion: Some(DeletionOutcome {
            data: clinic.deletion_policy(),
            backups_expire: clinic.backups_expire_on_deletion(),
        }),
        outside_objects: observed.outside.clone(),
    }
}

impl Observed {
    fn openmrs_parts(&self) -> [&WorkloadState; 3] {
        [&self.backend, &self.frontend, &self.gateway]
    }

    pub(crate) fn openmrs_ready(&self) -> bool {
        self.openmrs_parts().iter().all(|w| w.is_ready())
    }

    /// What keeps OpenMRS from being ready, workload by workload.
    fn openmrs_not_ready(&self) -> Vec<String> {
        self.openmrs_parts().iter().filter(|w| !w.is_ready()).map(|w| w.describe()).collect()
    }
}

fn database_ready(observed: &Observed) -> Condition {
    let ready = observed.database.is_ready();
    let reason = if ready { "Ready" } else { "NotReady" };
    condition(DATABASE_READY, ready, reason, observed.database.describe(), observed.generation)
}

fn openmrs_ready(observed: &Observed) -> Condition {
    // What users get wins over what the pods say.
    if let Some(probe) = observed.probe.as_ref().filter(|p| !p.answering) {
        let why = probe.failure.as_ref().map(ToString::to_string).unwrap_or_default();
        let pods = if observed.openmrs_ready() {
            "backend, frontend and gateway are ready".to_string()
        } else {
            observed.openmrs_not_ready().join("; ")
        };
        let message = format!(
            "the application does not answer through its gateway: {why} ({} probes in a row; {pods})",
            probe.failures_in_row
        );
        return condition(OPENMRS_READY, false, "NotAnswering", message, observed.generation);
    }
    if observed.openmrs_ready() {
        let message = "backend, frontend and gateway are ready".into();
        condition(OPENMRS_READY, true, "Ready", message, observed.generation)
    } else {
        let message = observed.openmrs_not_ready().join("; ");
        condition(OPENMRS_READY, false, "NotReady", message, observed.generation)
    }
}

fn degraded(observed: &Observed) -> Condition {
    let generation = observed.generation;
    let refused: Vec<String> = [&observed.database, &observed.backend, &observed.frontend, &observed.gateway]
        .iter()
        .filter_map(|w| w.failure.as_ref().map(|why| format!("{}: {why}", w.name)))
        .collect();
    match (&observed.error, &observed.gate) {
        (Some(e), _) => condition(DEGRADED, true, e.reason, e.message.clone(), generation),
        (None, _) if !refused.is_empty() => condition(
            DEGRADED,
            true,
            "PodsRefused",
            format!(
                "pods cannot be created ({}). Check the pod template for fields changed outside the operator and the namespace's Pod Security labels; the operator retries.",
                refused.join("; ")
            ),
            generation,
        ),
        (None, Gate::Blocked { reason, message }) => {
            condition(DEGRADED, true, reason, message.clone(), generation)
        }
        (None, _) => condition(DEGRADED, false, "AsExpected", "no errors".into(), generation),
    }
}

fn progressing(observed: &Observed) -> Condition {
    let generation = observed.generation;
    let database_ready = observed.database.is_ready();
    if observed.paused {
        let message = "spec.paused is true: children are not changed".into();
        condition(PROGRESSING, false, "Paused", message, generation)
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
    } else if observed.changed || !database_ready || !observed.openmrs_ready() {
        let mut waiting = Vec::new();
        if !database_ready {
            waiting.push(observed.database.describe());
        }
        waiting.extend(observed.openmrs_not_ready());
        let message = if waiting.is_empty() {
            "applied changes".to_string()
        } else {
            format!("waiting: {}", waiting.join("; "))
        };
        condition(PROGRESSING, true, "Reconciling", message, generation)
    } else {
        let message = "every component runs the declared spec".into();
        condition(PROGRESSING, false, "Stable", message, generation)
    }
}

fn security_enforced(clinic: &Clinic, observed: &Observed) -> Condition {
    let generation = observed.generation;
    let labelled = observed.namespace_visible && observed.controls.pod_security_restricted;
    let (ok, reason, message) = if !clinic.spec.security.enforce_pod_security && !labelled {
        (
            false,
            "PodSecurityOptOut",
            "spec.security.enforcePodSecurity is false (the platform's policy allows it): the operator does not label the namespace, and it is not held to Pod Security restricted",
        )
    } else if !observed.network_policies_enforced {
        (false, "PoliciesMissing", "NetworkPolicies are not all in place yet")
    } else if observed.namespace_visible && !observed.controls.pod_security_restricted {
        (false, "PodSecurityMissing", "the namespace does not enforce Pod Security restricted yet")
    } else if let Some((reason, message)) = observed.mesh.as_ref().and_then(mesh_shortfall) {
        return condition(SECURITY_ENFORCED, false, reason, message, generation);
    } else if observed.mesh.is_some() {
        (
            true,
            "Enforced",
            "default-deny NetworkPolicies, restricted Pod Security, hardened pods and STRICT mutual TLS through the mesh are in place",
        )
    } else {
        (
            true,
            "Enforced",
            "default-deny NetworkPolicies, restricted Pod Security and hardened pods are in place",
        )
    };
    condition(SECURITY_ENFORCED, ok, reason, message.into(), generation)
}

/// Why the mesh does not hold the clinic's traffic yet, if it does not.
fn mesh_shortfall(mesh: &MeshState) -> Option<(&'static str, String)> {
    match mesh {
        MeshState::InForce => None,
        MeshState::Pending => Some((
            "MeshPending",
            "spec.security.mtls: the mesh policies are declared once the other children are in place".into(),
        )),
        MeshState::NotInstalled => Some((
            "MeshNotInstalled",
            "spec.security.mtls: the cluster serves no Istio security API (security.istio.io/v1 PeerAuthentication and AuthorizationPolicy); the pods carry the mesh label but their traffic is not mutually authenticated until Istio is installed".into(),
        )),
        MeshState::Incomplete { error: Some(e), .. } => Some((e.reason, e.message.clone())),
        MeshState::Incomplete { in_place, expected, error: None } => Some((
            "MeshPoliciesMissing",
            format!("spec.security.mtls: {in_place} of {expected} PeerAuthentications and AuthorizationPolicies are in place"),
        )),
    }
}

fn compliant(controls: &crate::api::Compliance, generation: Option<i64>) -> Condition {
    let failing: Vec<&str> =
        controls.list().iter().filter(|(_, holds, _)| !holds).map(|(_, _, why)| *why).collect();
    if failing.is_empty() {
        condition(COMPLIANT, true, "AllControlsHold", "every security control holds".into(), generation)
    } else {
        condition(COMPLIANT, false, "ControlsFailing", failing.join("; "), generation)
    }
}

/// `routed`: the clinic has no route, or its Gateway accepts it.
fn ready(clinic: &Clinic, observed: &Observed, routed: bool) -> Condition {
    let generation = observed.generation;
    let answering = observed.probe.as_ref().is_none_or(|p| p.answering);
    if observed.database.is_ready()
        && observed.openmrs_ready()
        && observed.error.is_none()
        && routed
        && answering
    {
        condition(READY, true, "Ready", format!("OpenMRS is serving at {}", clinic.url()), generation)
    } else if !answering {
        condition(READY, false, "NotAnswering", "see the OpenMRSReady condition".into(), generation)
    } else if let Some(e) = &observed.error {
        condition(READY, false, e.reason, "see the Degraded condition".into(), generation)
    } else if !routed {
        condition(READY, false, "RouteNotAccepted", "see the RouteAccepted condition".into(), generation)
    } else {
        condition(READY, false, "Progressing", "see the Progressing condition".into(), generation)
    }
}

fn backup_ready(b: &BackupHealth, generation: Option<i64>) -> Condition {
    Condition {
        type_: BACKUP_READY.into(),
        status: b.status.into(),
        reason: b.reason.into(),
        message: b.message.clone(),
        last_transition_time: None,
        observed_generation: generation,
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

/// The conditions that only report the progress of a convergence.
const PROGRESS: [&str; 3] = [PROGRESSING, DATABASE_READY, OPENMRS_READY];

/// A status as compared: without transition times, conditions in type order, and without the
/// conditions of `ignored` types. The one place statuses are compared.
fn settled(status: &ClinicPlatformStatus, ignored: &[&str]) -> ClinicPlatformStatus {
    let mut s = status.clone();
    s.conditions.retain(|c| !ignored.contains(&c.type_.as_str()));
    for c in &mut s.conditions {
        c.last_transition_time = None;
    }
    s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    s
}

/// Whether writing `new` over `old` would change anything but timestamps.
pub fn differs(old: Option<&ClinicPlatformStatus>, new: &ClinicPlatformStatus) -> bool {
    old.is_none_or(|old| settled(old, &[]) != settled(new, &[]))
}

/// Whether a status change may wait: only the progress of a convergence moved (`Progressing`,
/// `DatabaseReady`, `OpenMRSReady`, and the messages of other conditions, which carry replica
/// counts and what is awaited). The phase a user or an alert acts on — the status and reason of
/// `Ready`, `Degraded`, backups, security, compliance, monitoring, and every field outside the
/// conditions — is as already written. Such updates are coalesced, so that a first convergence
/// is written once per phase, not once per step the API server's pace shows.
pub fn may_coalesce(old: Option<&ClinicPlatformStatus>, new: &ClinicPlatformStatus) -> bool {
    let Some(old) = old else {
        return false;
    };
    let phase = |status: &ClinicPlatformStatus| {
        let mut s = settled(status, &PROGRESS);
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    phase(old) == phase(new) || converging_without_bad_news(old, new)
}

/// A clinic not Ready before nor after, for the same reason, at the same generation, nothing
/// degraded or blocked anew, and no condition turned from True to False: what moved (security
/// verified, monitoring in place, a certificate issued...) is a convergence going its way, so
/// it waits like other progress and `Ready` turning True carries it.
fn converging_without_bad_news(old: &ClinicPlatformStatus, new: &ClinicPlatformStatus) -> bool {
    let find = |s: &ClinicPlatformStatus, t: &str| {
        s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let not_ready = |s: &ClinicPlatformStatus| find(s, READY).is_some_and(|(status, _)| status != "True");
    let kept = |t: &str| find(old, t) == find(new, t);
    let turned_false = new
        .conditions
        .iter()
        .any(|c| c.status != "True" && find(old, &c.type_).is_some_and(|(status, _)| status == "True"));
    not_ready(old)
        && not_ready(new)
        && kept(READY)
        && kept(DEGRADED)
        && kept(CLEANUP_BLOCKED)
        && old.observed_generation == new.observed_generation
        && !turned_false
}

/// Sets each of `conditions` in `status`, replacing one of the same type.
pub fn merge_conditions(status: &mut ClinicPlatformStatus, conditions: Vec<Condition>) {
    for c in conditions {
        match status.conditions.iter_mut().find(|e| e.type_ == c.type_) {
            Some(existing) => *existing = c,
            None => status.conditions.push(c),
        }
    }
}

/// `CleanupBlocked` of a deleted clinic whose clean-up failed: why, and the way out that does
/// not need the operator to succeed.
pub fn cleanup_blocked(error: &Error, generation: Option<i64>, previous: &[Condition]) -> Condition {
    let message = format!(
        "clean-up before deletion failed: {}. The finalizer stays and clean-up is retried; to let the clinic go without it, annotate {}=true and remove what status.outsideObjects lists by hand",
        error.to_string().trim_end_matches('.'),
        crate::api::ABANDON_CLEANUP_ANNOTATION
    );
    let mut blocked = vec![Condition {
        type_: CLEANUP_BLOCKED.into(),
        status: "True".into(),
        reason: error.reason().into(),
        message,
        last_transition_time: None,
        observed_generation: generation,
    }];
    carry_transition_times(&mut blocked, previous);
    blocked.remove(0)
}

/// Status of an object whose spec cannot even be read (wrong types in the YAML).
pub fn unreadable(
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Vec<Condition> {
    let mut conditions = vec![
        condition(READY, false, reason, "see the Degraded condition".into(), generation),
        condition(DEGRADED, true, reason, message.into(), generation),
    ];
    carry_transition_times(&mut conditions, previous);
    conditions
}

#[cfg(test)]
mod tests {
    //! Every reason a condition can carry, with its message: each must read as a sentence for
    //! the person running `kubectl describe`.

    use std::collections::BTreeSet;

    use super::*;
    use crate::api::{ClinicPlatform, ClinicPlatformSpec};
    use crate::reconcile::backups::{self, BackupRecord};
    use crate::reconcile::gate::Gate;
    use crate::reconcile::probe::{ProbeFailure, Verdict};

    fn clinic(spec: ClinicPlatformSpec) -> Clinic {
        let mut cp = ClinicPlatform::new("lyon", spec);
        cp.metadata.namespace = Some("clinic-lyon".into());
        let mut clinic = crate::model::unchecked(&cp);
        // As the policy admits a route: on the platform's Gateway.
        if clinic.spec.route.is_some() {
            clinic.gateway = Some(crate::policy::AllowedGateway {
                namespace: "gateway-system".into(),
                name: "public".into(),
                listener: "https".into(),
                redirect_listener: Some("http".into()),
                proxy_namespace: None,
                default: true,
                metrics: None,
            });
        }
        clinic
    }

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure(message, reason).with_code(code).boxed())
    }

    /// Every error of a reconcile, with the API failures a cluster really answers.
    fn errors() -> Vec<Error> {
        let causes = || {
            vec![
                api(404, "NotFound", "namespaces \"velero\" not found"),
                api(
                    403,
                    "Forbidden",
                    "statefulsets.apps is forbidden: User \"system:serviceaccount:clinic-system:clinic-operator\" cannot patch resource",
                ),
                api(409, "Conflict", "Operation cannot be fulfilled: the object has been modified"),
                api(
                    422,
                    "Invalid",
                    "StatefulSet.apps \"lyon-mariadb\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden",
                ),
                api(500, "InternalError", "etcdserver: request timed out"),
            ]
        };
        let mut out = vec![
            Error::InvalidSpec(crate::model::InvalidSpec {
                field: "spec.backup.rpo".into(),
                message: "must be a duration such as 26h or 90m".into(),
            }),
            Error::NotAllowed(crate::model::InvalidSpec {
                field: "spec.backup.veleroNamespace".into(),
                message: "\"kube-system\" is not allowed by the platform's policy (veleroNamespaces: velero)"
                    .into(),
            }),
            Error::CredentialsLost {
                secret: "lyon-mariadb-credentials".into(),
                claim: "data-lyon-mariadb-0".into(),
            },
            Error::EncryptionKeyLost {
                secret: "lyon-db-encryption".into(),
                claim: "data-lyon-mariadb-0".into(),
            },
            Error::CredentialsSwitch { from: "lyon-db-credentials".into(), to: "vault-synced".into() },
            Error::Serialize {
                what: "Schedule clinic-lyon-lyon".into(),
                source: serde_json::from_str::<serde_json::Value>("{").unwrap_err(),
            },
        ];
        for source in causes() {
            out.push(Error::Apply { kind: "StatefulSet".into(), name: "lyon-mariadb".into(), source });
        }
        for source in causes() {
            out.push(Error::Patch { kind: "Service".into(), name: "lyon-gateway".into(), source });
        }
        for source in causes() {
            out.push(Error::Create { kind: "Backup".into(), name: "lyon-pre-upgrade-1a2b".into(), source });
        }
        for source in causes() {
            out.push(Error::Finalizer { name: "lyon".into(), source });
        }
        for source in causes() {
            out.push(Error::Prune { kind: "Ingress".into(), name: "lyon".into(), source });
        }
        for source in causes() {
            out.push(Error::CreateSecret { name: "lyon-openmrs-admin".into(), source });
        }
        for source in causes() {
            out.push(Error::Read { what: "Velero backups".into(), source });
        }
        for source in causes() {
            out.push(Error::Status(source));
        }
        out
    }

    fn backup_record(phase: &str, completed: &str) -> BackupRecord {
        BackupRecord {
            name: "lyon-20261201".into(),
            phase: phase.into(),
            created: completed.parse().ok(),
            completed: completed.parse().ok(),
            failure_reason: (phase != "Completed").then(|| "volume snapshot failed".into()),
        }
    }

    /// Every `BackupReady` the clinic can show.
    fn backup_healths() -> Vec<BackupHealth> {
        let now: jiff::Timestamp = "2026-12-02T06:00:00Z".parse().unwrap();
        let created: Option<jiff::Timestamp> = "2026-11-01T00:00:00Z".parse().ok();
        let enabled = clinic(ClinicPlatformSpec::default());
        let mut disabled_spec = ClinicPlatformSpec::default();
        disabled_spec.backup.enabled = false;
        let disabled = clinic(disabled_spec);
        let listing_failed = Err(Problem::from(Error::Read {
            what: "the clinic's Velero backups".into(),
            source: api(500, "InternalError", "etcdserver: request timed out"),
        }));
        let mut out = vec![
            backups::health(&disabled, created, true, &Ok(vec![]), now),
            backups::health(&enabled, created, false, &Ok(vec![]), now),
            backups::health(&enabled, created, true, &listing_failed, now),
            backups::health(&enabled, Some(now), true, &Ok(vec![]), now),
            backups::health(&enabled, created, true, &Ok(vec![]), now),
            backups::schedule_failed(
                &enabled,
                &(&Error::Apply {
                    kind: "Schedule".into(),
                    name: "velero/clinic-lyon-lyon-3f2a9c1e".into(),
                    source: api(404, "NotFound", "namespaces \"velero\" not found"),
                })
                    .into(),
                None,
            ),
            backups::schedule_failed(
                &enabled,
                &(&Error::NameClash {
                    object: "Schedule velero/clinic-lyon-lyon-3f2a9c1e".into(),
                    holder: Some("clinic-lyon/other".into()),
                })
                    .into(),
                None,
            ),
        ];
        for (phase, completed) in [
            ("Completed", "2026-12-02T01:30:00Z"),
            ("Completed", "2026-11-20T01:30:00Z"),
            ("Failed", "2026-12-02T01:30:00Z"),
            ("PartiallyFailed", "2026-12-02T01:30:00Z"),
        ] {
            out.push(backups::health(
                &enabled,
                created,
                true,
                &Ok(vec![backup_record(phase, completed)]),
                now,
            ));
        }
        out
    }

    fn workloads(ready: bool) -> [WorkloadState; 4] {
        let state = |name: &str| WorkloadState {
            name: name.into(),
            exists: true,
            desired: 1,
            created: 1,
            ready: if ready { 1 } else { 0 },
            updated: 1,
            current: true,
            failure: None,
        };
        [state("lyon-mariadb"), state("lyon-backend"), state("lyon-frontend"), state("lyon-gateway")]
    }

    fn observed(
        [database, backend, frontend, gateway]: [WorkloadState; 4],
        error: Option<&Error>,
        gate: Gate,
        health: BackupHealth,
        monitoring: MonitoringState,
        all_controls: bool,
    ) -> Observed {
        let controls = crate::api::Compliance {
            pod_security_restricted: all_controls,
            default_deny_network: all_controls,
            tls_at_edge: all_controls,
            backups_within_rpo: all_controls,
            data_residency: all_controls,
            encryption_at_rest: all_controls,
            database_encrypted: all_controls,
            database_tls: all_controls,
            mutual_tls: all_controls,
            backend_tls: all_controls,
        };
        Observed {
            generation: Some(3),
            database_credentials: None,
            database_encryption: None,
            database,
            backend,
            versions: ComponentVersions::default(),
            frontend,
            gateway,
            network_policies_enforced: all_controls,
            changed: error.is_none() && !all_controls,
            error: error.map(Problem::from),
            paused: false,
            gate,
            backup: health,
            controls,
            namespace_visible: true,
            monitoring,
            route: None,
            mesh: None,
            outside: None,
            probe: None,
        }
    }

    /// A message for a person: one line, no Rust `Debug` dump, and for a failure the next step.
    fn readable(type_: &str, reason: &str, status: &str, message: &str) -> Result<(), String> {
        let debug_markers =
            ["Some(", "None", "Status {", "ListMeta", "ErrorResponse", "ApiError", "{ ", " }", "\\\""];
        if message.trim().is_empty() {
            return Err("empty".into());
        }
        if message.contains('\n') {
            return Err("more than one line".into());
        }
        if message.len() > 1000 {
            return Err("longer than an event note may be".into());
        }
        if let Some(marker) = debug_markers.iter().find(|m| message.contains(*m)) {
            return Err(format!("Debug output ({marker})"));
        }
        if !reason.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            || !reason.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err("reason is not CamelCase".into());
        }
        // A failure says what to do or what the operator does next.
        let failing = ([DEGRADED, CLEANUP_BLOCKED].contains(&type_) && status == "True")
            || (type_ == BACKUP_READY && status == "False");
        let next_steps = [
            "retries",
            "fix",
            "Restore",
            "report",
            "install",
            "set spec.",
            "Check",
            "See",
            "Remove or rename",
            "disabled",
            "false",
            "annotate",
        ];
        if failing && !next_steps.iter().any(|n| message.contains(n)) {
            return Err("a failure without a next step".into());
        }
        Ok(())
    }

    #[test]
    fn every_reason_has_a_message_for_a_person() {
        let spec = ClinicPlatformSpec::default();
        let mut opted_out = ClinicPlatformSpec::default();
        opted_out.security.enforce_pod_security = false;
        let failing = |error: &Error| MonitoringState {
            enabled: true,
            operator_installed: true,
            in_place: 0,
            error: Some(Problem::from(error)),
            ..Default::default()
        };
        let all_errors = errors();
        let first = |kind: fn(&Error) -> bool| all_errors.iter().find(|e| kind(e)).map(failing);
        let monitored = MonitoringState {
            enabled: true,
            operator_installed: true,
            in_place: 2,
            error: None,
            ..Default::default()
        };
        let monitoring_states: Vec<MonitoringState> = [
            Some(MonitoringState { enabled: false, ..Default::default() }),
            first(|e| matches!(e, Error::Apply { .. })),
            first(|e| matches!(e, Error::Read { .. })),
            Some(failing(&Error::NameClash {
                object: "ConfigMap monitoring/clinic-lyon-lyon-4d703153-dashboard".into(),
                holder: None,
            })),
            Some(MonitoringState {
                enabled: true,
                operator_installed: false,
                in_place: 0,
                error: None,
                ..Default::default()
            }),
            Some(MonitoringState {
                enabled: true,
                operator_installed: true,
                in_place: 1,
                error: None,
                ..Default::default()
            }),
            Some(monitored.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let gates = [Gate::Open, Gate::Waiting { backup: "lyon-pre-upgrade-1a2b".into() }];
        let mut passes = Vec::new();
        for error in errors().iter().map(Some).chain([None]) {
            for health in backup_healths() {
                for monitoring in &monitoring_states {
                    for gate in &gates {
                        for (ready, all_controls) in [(true, true), (false, false)] {
                            passes.push((
                                spec.clone(),
                                observed(
                                    workloads(ready),
                                    error,
                                    gate.clone(),
                                    health.clone(),
                                    monitoring.clone(),
                                    all_controls,
                                ),
                            ));
                        }
                    }
                }
            }
        }
        // Converged but for the one field each case sets.
        let settled = |ready: bool| {
            observed(workloads(ready), None, Gate::Open, backup_healths()[0].clone(), monitored.clone(), true)
        };
        let mut paused = settled(true);
        paused.paused = true;
        passes.push((spec.clone(), paused));
        let mut missing = settled(false);
        missing.database = WorkloadState::missing("lyon-mariadb".into());
        missing.controls.pod_security_restricted = false;
        passes.push((spec.clone(), missing));
        let mut refused = settled(false);
        refused.database.failure = Some(
            "create Pod lyon-mariadb-0 in StatefulSet lyon-mariadb failed error: pods \"lyon-mariadb-0\" is forbidden: violates PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true)".into(),
        );
        passes.push((spec.clone(), refused));
        // Opted out (the policy allows it) and the namespace unlabelled.
        let mut unlabelled = settled(true);
        unlabelled.controls.pod_security_restricted = false;
        passes.push((opted_out, unlabelled));
        // Published on a Gateway: every answer of its controller, ready or not otherwise.
        let mut routed = spec.clone();
        routed.route = Some(crate::api::RouteSpec { host: "emr.lyon.example.fr".into(), gateway: None });
        let route = |name: &str| name.to_string();
        let why = "NotAllowedByListeners: no listener allows routes from namespace clinic-lyon".to_string();
        let route_states = [
            RouteState::ApiMissing,
            RouteState::Failed(Problem::from(&Error::Apply {
                kind: "HTTPRoute".into(),
                name: "lyon".into(),
                source: api(403, "Forbidden", "httproutes.gateway.networking.k8s.io is forbidden"),
            })),
            RouteState::Applying { route: route("lyon") },
            RouteState::AwaitingController { route: route("lyon-redirect") },
            RouteState::NotAccepted { route: route("lyon"), why: why.clone() },
            RouteState::RefsNotResolved {
                route: route("lyon"),
                why: "BackendNotFound: service lyon-gateway not found".into(),
            },
            RouteState::Accepted { controller: "traefik.io/gateway-controller".into() },
            RouteState::Unchecked,
        ];
        for state in route_states {
            for ready in [true, false] {
                let mut pass = settled(ready);
                pass.route = Some(state.clone());
                passes.push((routed.clone(), pass));
            }
        }
        // Mutual TLS asked for: every state of the mesh policies.
        let mut meshed = spec.clone();
        meshed.security.mtls = true;
        let mesh_states = [
            MeshState::Pending,
            MeshState::NotInstalled,
            MeshState::Incomplete { in_place: 3, expected: 8, error: None },
            MeshState::Incomplete {
                in_place: 0,
                expected: 8,
                error: Some(Problem::from(&Error::Apply {
                    kind: "PeerAuthentication".into(),
                    name: "lyon-backend".into(),
                    source: api(403, "Forbidden", "peerauthentications.security.istio.io is forbidden"),
                })),
            },
            MeshState::InForce,
        ];
        for state in mesh_states {
            let mut pass = settled(true);
            pass.mesh = Some(state);
            passes.push((meshed.clone(), pass));
        }
        // The operator's own probes: answering or not, whatever the pods say.
        for ready in [true, false] {
            for failure in [None, Some(ProbeFailure::Timeout), Some(ProbeFailure::Rest(502))] {
                let mut pass = settled(ready);
                pass.probe = Some(probed(failure));
                passes.push((spec.clone(), pass));
            }
        }

        let mut seen = BTreeSet::new();
        let mut problems = BTreeSet::new();
        for (spec, observed) in &passes {
            let status = compute(&clinic(spec.clone()), observed, None);
            for c in &status.conditions {
                seen.insert(format!("{}/{}", c.type_, c.reason));
                if let Err(why) = readable(&c.type_, &c.reason, &c.status, &c.message) {
                    problems.insert(format!("{} {} ({}): {why}: {}", c.type_, c.reason, c.status, c.message));
                }
            }
        }
        for conditions in [unreadable(
            "InvalidSpec",
            "the spec cannot be read: spec.backup: invalid type: string \"x\", expected struct. Fix the field and apply again.",
            Some(3),
            &[],
        )] {
            for c in conditions {
                seen.insert(format!("{}/{}", c.type_, c.reason));
            }
        }
        for error in errors() {
            let c = cleanup_blocked(&error, Some(3), &[]);
            seen.insert(format!("{}/{}", c.type_, c.reason));
            if let Err(why) = readable(&c.type_, &c.reason, &c.status, &c.message) {
                problems.insert(format!("{} {} ({}): {why}: {}", c.type_, c.reason, c.status, c.message));
            }
        }
        assert!(
            problems.is_empty(),
            "messages not fit for a person:\n{}",
            problems.into_iter().collect::<Vec<_>>().join("\n")
        );

        // Every reason the status can carry was walked (the gate's Blocked reasons come from the
        // async gate: they reach Degraded through the same path as the errors above).
        let expected = [
            "Ready/Ready",
            "Ready/Progressing",
            "Ready/InvalidSpec",
            "Ready/NotAllowed",
            "Ready/ApplyFailed",
            "Ready/PruneFailed",
            "Ready/SecretCreateFailed",
            "Ready/CredentialsLost",
            "Ready/EncryptionKeyLost",
            "Ready/CredentialsSwitch",
            "Ready/ReadFailed",
            "Ready/StatusUpdateFailed",
            "Ready/SerializationFailed",
            "Ready/RouteNotAccepted",
            "Progressing/Paused",
            "Progressing/Blocked",
            "Progressing/AwaitingBackup",
            "Progressing/Reconciling",
            "Progressing/Stable",
            "Degraded/AsExpected",
            "Degraded/PodsRefused",
            "Degraded/InvalidSpec",
            "Degraded/NotAllowed",
            "Degraded/ApplyFailed",
            "Degraded/PruneFailed",
            "Degraded/SecretCreateFailed",
            "Degraded/CredentialsLost",
            "Degraded/EncryptionKeyLost",
            "Degraded/CredentialsSwitch",
            "Degraded/ReadFailed",
            "Degraded/StatusUpdateFailed",
            "Degraded/SerializationFailed",
            "DatabaseReady/Ready",
            "DatabaseReady/NotReady",
            "OpenMRSReady/Ready",
            "OpenMRSReady/NotReady",
            "OpenMRSReady/NotAnswering",
            "Ready/NotAnswering",
            "SecurityEnforced/PodSecurityOptOut",
            "SecurityEnforced/PoliciesMissing",
            "SecurityEnforced/PodSecurityMissing",
            "SecurityEnforced/MeshPending",
            "SecurityEnforced/MeshNotInstalled",
            "SecurityEnforced/MeshPoliciesMissing",
            "SecurityEnforced/ApplyFailed",
            "SecurityEnforced/Enforced",
            "BackupReady/BackupDisabled",
            "BackupReady/VeleroNotInstalled",
            "BackupReady/BackupStatusUnknown",
            "BackupReady/AwaitingFirstBackup",
            "BackupReady/NoSuccessfulBackup",
            "BackupReady/ScheduleFailed",
            "BackupReady/NameClash",
            "BackupReady/WithinRPO",
            "BackupReady/RPOExceeded",
            "BackupReady/BackupFailed",
            "BackupReady/BackupPartiallyFailed",
            "Compliant/AllControlsHold",
            "Compliant/ControlsFailing",
            "MonitoringReady/Disabled",
            "MonitoringReady/ApplyFailed",
            "MonitoringReady/ReadFailed",
            "MonitoringReady/NameClash",
            "MonitoringReady/PrometheusOperatorNotInstalled",
            "MonitoringReady/Pending",
            "MonitoringReady/Monitored",
            "RouteAccepted/GatewayApiNotInstalled",
            "RouteAccepted/ApplyFailed",
            "RouteAccepted/Applying",
            "RouteAccepted/AwaitingGateway",
            "RouteAccepted/NotAccepted",
            "RouteAccepted/RefsNotResolved",
            "RouteAccepted/Accepted",
            "RouteAccepted/NotChecked",
            "CleanupBlocked/ReadFailed",
            "CleanupBlocked/ApplyFailed",
        ];
        let missing: Vec<&&str> = expected.iter().filter(|r| !seen.contains(**r)).collect();
        assert!(missing.is_empty(), "reasons not walked: {missing:?}");
    }

    fn probed(failure: Option<ProbeFailure>) -> Verdict {
        Verdict {
            answering: failure.is_none(),
            failures_in_row: if failure.is_some() { 2 } else { 0 },
            failure,
        }
    }

    /// What users get wins over what the pods say: ready pods and a clinic that does not answer
    /// its probes are not Ready, and the condition says why and how the pods are.
    #[test]
    fn a_clinic_that_does_not_answer_is_not_ready_whatever_its_pods_say() {
        let c = clinic(ClinicPlatformSpec::default());
        let monitored =
            MonitoringState { enabled: true, operator_installed: true, in_place: 2, ..Default::default() };
        let mut pass =
            observed(workloads(true), None, Gate::Open, backup_healths()[0].clone(), monitored, true);
        let find =
            |s: &ClinicPlatformStatus, t: &str| s.conditions.iter().find(|x| x.type_ == t).cloned().unwrap();
        pass.probe = Some(probed(None));
        let answering = compute(&c, &pass, None);
        assert_eq!(find(&answering, OPENMRS_READY).status, "True");
        assert_eq!(find(&answering, READY).status, "True");
        pass.probe = Some(probed(Some(ProbeFailure::Timeout)));
        let silent = compute(&c, &pass, Some(&answering));
        let openmrs = find(&silent, OPENMRS_READY);
        assert_eq!((openmrs.status.as_str(), openmrs.reason.as_str()), ("False", "NotAnswering"));
        assert!(
            openmrs.message.contains("no answer within the timeout")
                && openmrs.message.contains("2 probes in a row")
                && openmrs.message.contains("backend, frontend and gateway are ready"),
            "{}",
            openmrs.message
        );
        let ready = find(&silent, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotAnswering"));
        // One failed probe below the policy's threshold is still answering.
        pass.probe =
            Some(Verdict { answering: true, failure: Some(ProbeFailure::Timeout), failures_in_row: 1 });
        assert_eq!(find(&compute(&c, &pass, Some(&silent)), READY).status, "True");
    }

    /// A convergence is written once per phase: a step that only moves counts and messages
    /// waits, one that changes what `Ready` says (or bad news elsewhere) goes out at once.
    #[test]
    fn a_convergence_is_written_once_per_phase() {
        let c = clinic(ClinicPlatformSpec::default());
        let monitored =
            MonitoringState { enabled: true, operator_installed: true, in_place: 2, ..Default::default() };
        let health = backup_healths()[0].clone();
        let pass =
            |w: [WorkloadState; 4]| observed(w, None, Gate::Open, health.clone(), monitored.clone(), true);
        let mut starting = workloads(false);
        starting[0].created = 0;
        let first = compute(&c, &pass(starting), None);
        assert!(!may_coalesce(None, &first), "the first status is written at once");
        let mut one_pod = workloads(false);
        one_pod[0].ready = 1;
        let step = compute(&c, &pass(one_pod), Some(&first));
        assert!(differs(Some(&first), &step), "progress is a change");
        assert!(may_coalesce(Some(&first), &step), "progress waits");
        // Good news while not Ready yet (monitoring in place) waits too; bad news does not.
        let mut unmonitored_pass = pass(workloads(false));
        unmonitored_pass.monitoring.in_place = 0;
        let unmonitored = compute(&c, &unmonitored_pass, Some(&step));
        let monitored_now = compute(&c, &pass(workloads(false)), Some(&unmonitored));
        assert!(differs(Some(&unmonitored), &monitored_now));
        assert!(
            may_coalesce(Some(&unmonitored), &monitored_now),
            "monitoring in place while converging waits"
        );
        assert!(!may_coalesce(Some(&monitored_now), &unmonitored), "monitoring lost is written at once");
        let ready = compute(&c, &pass(workloads(true)), Some(&step));
        assert!(!may_coalesce(Some(&step), &ready), "Ready turning True is written at once");
        let mut unmonitored = pass(workloads(true));
        unmonitored.monitoring.in_place = 0;
        let lost = compute(&c, &unmonitored, Some(&ready));
        assert!(differs(Some(&ready), &lost));
        assert!(!may_coalesce(Some(&ready), &lost), "lost monitoring is written at once");
    }

    /// A paused clinic does not look at its routes: their last answer stands, and so does Ready.
    #[test]
    fn routes_not_looked_at_keep_their_last_answer() {
        let c = clinic(ClinicPlatformSpec {
            route: Some(crate::api::RouteSpec { host: "emr.lyon.example.fr".into(), gateway: None }),
            ..Default::default()
        });
        let monitored = MonitoringState {
            enabled: true,
            operator_installed: true,
            in_place: 2,
            error: None,
            ..Default::default()
        };
        let mut pass =
            observed(workloads(true), None, Gate::Open, backup_healths()[0].clone(), monitored, true);
        pass.route = Some(RouteState::Accepted { controller: "traefik.io/gateway-controller".into() });
        let accepted = compute(&c, &pass, None);
        pass.route = Some(RouteState::Unchecked);
        pass.paused = true;
        let paused = compute(&c, &pass, Some(&accepted));
        let find = |s: &ClinicPlatformStatus, t: &str| s.conditions.iter().find(|x| x.type_ == t).cloned();
        assert_eq!(find(&paused, exposure::ROUTE_ACCEPTED), find(&accepted, exposure::ROUTE_ACCEPTED));
        assert_eq!(find(&paused, READY).map(|r| r.status), Some("True".to_string()));
        // Never looked at yet: said so, and not Ready.
        let first = compute(&c, &pass, None);
        assert_eq!(find(&first, exposure::ROUTE_ACCEPTED).map(|r| r.reason), Some("NotChecked".to_string()));
        assert_eq!(find(&first, READY).map(|r| r.status), Some("False".to_string()));
    }

    #[test]
    fn kubectl_explain_lists_every_condition() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ClinicPlatform::crd()).unwrap();
        let description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for type_ in [
            READY,
            PROGRESSING,
            DEGRADED,
            DATABASE_READY,
            OPENMRS_READY,
            SECURITY_ENFORCED,
            BACKUP_READY,
            COMPLIANT,
            MONITORING_READY,
            exposure::ROUTE_ACCEPTED,
            CLEANUP_BLOCKED,
        ] {
            assert!(description.contains(type_), "status.conditions does not name {type_}: {description}");
        }
    }
}
