//! Operator metrics (prometheus-client). Every label is bounded: reasons and verbs are fixed
//! sets, kinds are the operator's child kinds. The per-clinic families (last backup, the ends
//! of the certificates, blocked clean-up, the probes) carry the clinic's namespace and name:
//! their series are bounded by the number of ClinicPlatforms and removed when one is deleted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::reconcile::memory::ClinicKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: String,
}

/// One series per clinic: bounded by the number of ClinicPlatforms, removed on deletion.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClinicLabel {
    namespace: String,
    name: String,
}

/// A clinic's probes by outcome (`answered`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabel {
    namespace: String,
    name: String,
    outcome: String,
}

/// A clinic's times the metrics show (Unix seconds), when known.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClinicTimes {
    /// Completion of its newest successful backup.
    pub last_backup: Option<f64>,
    /// End of validity of MariaDB's certificate.
    pub database_certificate_expiry: Option<f64>,
    /// End of validity of the backend's certificate.
    pub backend_certificate_expiry: Option<f64>,
}

pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconciliations: Counter,
    errors: Family<ReasonLabel, Counter>,
    drift: Family<KindLabel, Counter>,
    writes: Family<VerbLabel, Counter>,
    clinics: Family<ReadyLabel, Gauge>,
    last_backup: Family<ClinicLabel, Gauge<f64, AtomicU64>>,
    database_certificate_expiry: Family<ClinicLabel, Gauge<f64, AtomicU64>>,
    backend_certificate_expiry: Family<ClinicLabel, Gauge<f64, AtomicU64>>,
    cleanup_blocked: Family<ClinicLabel, Gauge>,
    probe_success: Family<ClinicLabel, Gauge>,
    probe_duration: Family<ClinicLabel, Gauge<f64, AtomicU64>>,
    probes: Family<ProbeLabel, Counter>,
    /// Ready state per clinic, to count clinics by state.
    ready: Mutex<HashMap<ClinicKey, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clinic_operator");
        // 5 ms to ~20 s.
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0]);
        let reconciliations = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let drift = Family::<KindLabel, Counter>::default();
        let writes = Family::<VerbLabel, Counter>::default();
        let clinics = Family::<ReadyLabel, Gauge>::default();
        let last_backup = Family::<ClinicLabel, Gauge<f64, AtomicU64>>::default();
        let database_certificate_expiry = Family::<ClinicLabel, Gauge<f64, AtomicU64>>::default();
        let backend_certificate_expiry = Family::<ClinicLabel, Gauge<f64, AtomicU64>>::default();
        let cleanup_blocked = Family::<ClinicLabel, Gauge>::default();
        let probe_success = Family::<ClinicLabel, Gauge>::default();
        let probe_duration = Family::<ClinicLabel, Gauge<f64, AtomicU64>>::default();
        let probes = Family::<ProbeLabel, Counter>::default();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile of a ClinicPlatform",
            reconcile_duration.clone(),
        );
        registry.register("reconciliations", "Reconciles run", reconciliations.clone());
        registry.register("reconcile_errors", "Failed reconciles by reason", errors.clone());
        registry.register(
            "drift_corrections",
            "Children changed outside the operator and put back, by kind",
            drift.clone(),
        );
        registry.register("api_writes", "Write requests sent to the API server, by verb", writes.clone());
        registry.register("clinics", "ClinicPlatforms by Ready state", clinics.clone());
        registry.register(
            "clinic_last_backup_timestamp_seconds",
            "Completion time of the newest successful Velero backup of each clinic (age = time() - this)",
            last_backup.clone(),
        );
        registry.register(
            "clinic_database_certificate_expiry_timestamp_seconds",
            "End of validity of each clinic's MariaDB certificate (spec.database.tls)",
            database_certificate_expiry.clone(),
        );
        registry.register(
            "clinic_backend_certificate_expiry_timestamp_seconds",
            "End of validity of each clinic's backend certificate (spec.openmrs.backend.tls)",
            backend_certificate_expiry.clone(),
        );
        registry.register(
            "clinic_cleanup_blocked",
            "1 while a deleted clinic's clean-up fails and its finalizer holds it",
            cleanup_blocked.clone(),
        );
        registry.register(
            "clinic_probe_success",
            "1 when the last probe of the clinic through its gateway (login page and an authenticated REST call) answered in time, else 0",
            probe_success.clone(),
        );
        registry.register(
            "clinic_probe_duration_seconds",
            "How long the last probe of the clinic took",
            probe_duration.clone(),
        );
        registry.register(
            "clinic_probes",
            "Probes of each clinic through its gateway, by outcome (answered, failed)",
            probes.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            reconciliations,
            errors,
            drift,
            writes,
            clinics,
            last_backup,
            database_certificate_expiry,
            backend_certificate_expiry,
            cleanup_blocked,
            probe_success,
            probe_duration,
            probes,
            ready: Mutex::new(HashMap::new()),
        }
    }

    pub fn observe_reconcile(&self, seconds: f64) {
        self.reconciliations.inc();
        self.reconcile_duration.observe(seconds);
    }

    pub fn record_error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    pub fn record_drift(&self, kind: &str) {
        self.drift.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    pub fn record_write(&self, verb: &'static str) {
        self.writes.get_or_create(&VerbLabel { verb: verb.into() }).inc();
    }

    /// Records a clinic's state after a reconcile: whether it is Ready, and (Unix seconds) its
    /// newest backup and the ends of its certificates, when known.
    pub fn observe_clinic(&self, namespace: &str, name: &str, ready: bool, times: ClinicTimes) {
        let mut states = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        states.insert((namespace.to_string(), name.to_string()), ready);
        self.publish_ready_counts(&states);
        let label = ClinicLabel { namespace: namespace.into(), name: name.into() };
        for (family, value) in [
            (&self.last_backup, times.last_backup),
            (&self.database_certificate_expiry, times.database_certificate_expiry),
            (&self.backend_certificate_expiry, times.backend_certificate_expiry),
        ] {
            match value {
                Some(t) => {
                    family.get_or_create(&label).set(t);
                }
                None => {
                    family.remove(&label);
                }
            }
        }
    }

    /// Records a probe of a clinic through its gateway.
    pub fn observe_probe(&self, namespace: &str, name: &str, answered: bool, seconds: f64) {
        let label = ClinicLabel { namespace: namespace.into(), name: name.into() };
        self.probe_success.get_or_create(&label).set(i64::from(answered));
        self.probe_duration.get_or_create(&label).set(seconds);
        let outcome = if answered { "answered" } else { "failed" };
        self.probes
            .get_or_create(&ProbeLabel {
                namespace: namespace.into(),
                name: name.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Marks a deleted clinic whose clean-up fails; the series goes with [`Self::forget_clinic`]
    /// once the clinic is released.
    pub fn cleanup_blocked(&self, namespace: &str, name: &str) {
        let label = ClinicLabel { namespace: namespace.into(), name: name.into() };
        self.cleanup_blocked.get_or_create(&label).set(1);
    }

    /// Forgets a deleted clinic.
    pub fn forget_clinic(&self, namespace: &str, name: &str) {
        let mut states = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        states.remove(&(namespace.to_string(), name.to_string()));
        self.publish_ready_counts(&states);
        let label = ClinicLabel { namespace: namespace.into(), name: name.into() };
        self.last_backup.remove(&label);
        self.database_certificate_expiry.remove(&label);
        self.backend_certificate_expiry.remove(&label);
        self.cleanup_blocked.remove(&label);
        self.probe_success.remove(&label);
        self.probe_duration.remove(&label);
        for outcome in ["answered", "failed"] {
            self.probes.remove(&ProbeLabel {
                namespace: namespace.into(),
                name: name.into(),
                outcome: outcome.into(),
            });
        }
    }

    fn publish_ready_counts(&self, states: &HashMap<ClinicKey, bool>) {
        let ready = states.values().filter(|r| **r).count() as i64;
        self.clinics.get_or_create(&ReadyLabel { ready: "true".into() }).set(ready);
        self.clinics.get_or_create(&ReadyLabel { ready: "false".into() }).set(states.len() as i64 - ready);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
