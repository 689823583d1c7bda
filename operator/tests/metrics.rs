//! The operator's metrics: names, bounded labels, per-clinic series removed with the clinic.

mod common;

use clinic_operator::metrics::{ClinicTimes, Metrics};

#[test]
fn exposition_has_the_operator_metrics() {
    let m = Metrics::new();
    m.observe_reconcile(0.012);
    m.record_error("ApplyFailed");
    m.record_drift("NetworkPolicy");
    m.record_write("apply");
    m.observe_clinic("clinic-lyon", "lyon", true, common::lyon_times());
    m.observe_clinic("clinic-nice", "nice", false, ClinicTimes::default());
    let text = m.encode();
    for line in [
        "clinic_operator_reconciliations_total 1",
        "clinic_operator_reconcile_errors_total{reason=\"ApplyFailed\"} 1",
        "clinic_operator_drift_corrections_total{kind=\"NetworkPolicy\"} 1",
        "clinic_operator_api_writes_total{verb=\"apply\"} 1",
        "clinic_operator_clinics{ready=\"true\"} 1",
        "clinic_operator_clinics{ready=\"false\"} 1",
        "clinic_operator_clinic_last_backup_timestamp_seconds{namespace=\"clinic-lyon\",name=\"lyon\"} 1763700000.0",
        "clinic_operator_clinic_database_certificate_expiry_timestamp_seconds{namespace=\"clinic-lyon\",name=\"lyon\"} 1771000000.0",
        "clinic_operator_clinic_backend_certificate_expiry_timestamp_seconds{namespace=\"clinic-lyon\",name=\"lyon\"} 1772000000.0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("clinic_operator_reconcile_duration_seconds_bucket{le=\"0.025\"} 1"));
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");

    m.forget_clinic("clinic-lyon", "lyon");
    let text = m.encode();
    assert!(!text.contains("name=\"lyon\""), "a deleted clinic keeps a series:\n{text}");
    assert!(text.lines().any(|l| l == "clinic_operator_clinics{ready=\"true\"} 0"));
}
