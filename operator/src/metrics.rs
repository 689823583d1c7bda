//! Operator metrics (prometheus-client). Every label is bounded: reasons and verbs are fixed
//! sets, kinds are the operator's child kinds. No clinic name ever becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

pub struct Metrics {
    registry: Registry,
    reconcile_duration: Histogram,
    reconciliations: Counter,
    errors: Family<ReasonLabel, Counter>,
    drift: Family<KindLabel, Counter>,
    writes: Family<VerbLabel, Counter>,
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
        Self { registry, reconcile_duration, reconciliations, errors, drift, writes }
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

    /// Total write requests of `verb` so far (tests and benchmarks read it).
    pub fn writes(&self, verb: &'static str) -> u64 {
        self.writes.get_or_create(&VerbLabel { verb: verb.into() }).get()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
