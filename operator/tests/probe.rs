//! The operator's own probe of each clinic (issue 17, the policy's `clinicProbe`): the policy's
//! bounds, the one NetworkPolicy rule it opens, and how probes turn into a verdict. The real
//! node runs it against a clinic whose backend stops answering while its pods still look fine
//! (`the_operator_sees_what_users_see`); the status it then writes is checked in
//! `reconcile::status`'s tests.

mod common;

use clinic_operator::desired::{self, SecretValues};
use clinic_operator::policy::{ClinicProbePolicy, Policy};
use clinic_operator::reconcile::probe::{ProbeFailure, Probes};
use common::{clinic, typed};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

const PROBED: &str = "clinicProbe: {operatorNamespace: platform-ops, intervalSeconds: 10, timeoutSeconds: 3, failuresBeforeDown: 2}\n";

#[test]
fn the_policy_bounds_the_probe() {
    let policy = Policy::from_yaml(PROBED, "test").unwrap();
    assert_eq!(
        policy.clinic_probe,
        Some(ClinicProbePolicy {
            operator_namespace: "platform-ops".into(),
            interval_seconds: 10,
            timeout_seconds: 3,
            failures_before_down: 2,
        })
    );
    // Defaults: every 30 s, 3 s (the brief's objective per action), down after 2 in a row.
    let defaults = Policy::from_yaml("clinicProbe: {}\n", "test").unwrap().clinic_probe.unwrap();
    assert_eq!(
        (defaults.interval_seconds, defaults.timeout_seconds, defaults.failures_before_down),
        (30, 3, 2)
    );
    assert_eq!(Policy::default().clinic_probe, None, "not probed unless the platform team says so");
    for (bad, field) in [
        ("clinicProbe: {intervalSeconds: 1}", "intervalSeconds"),
        ("clinicProbe: {timeoutSeconds: 0}", "timeoutSeconds"),
        ("clinicProbe: {timeoutSeconds: 31}", "timeoutSeconds"),
        ("clinicProbe: {failuresBeforeDown: 0}", "failuresBeforeDown"),
        ("clinicProbe: {operatorNamespace: Not_A_Namespace}", "operatorNamespace"),
    ] {
        let refused = Policy::from_yaml(bad, "test").unwrap_err().to_string();
        assert!(refused.contains(&format!("clinicProbe.{field}")), "{bad}: {refused}");
    }
    let misspelt = Policy::from_yaml("clinicProbe: {intervalSecond: 10}", "test").unwrap_err();
    assert!(misspelt.to_string().contains("intervalSecond"), "{misspelt}");
}

#[test]
fn the_gateway_admits_the_probe_from_the_operators_namespace_only() {
    let gateway_ingress = |policy: &Policy| {
        let c = policy.admit(clinic("  {}\n")).unwrap();
        let objects = desired::objects(&c, &SecretValues::Placeholder);
        let gateway: NetworkPolicy = typed(&objects, "NetworkPolicy", "lyon-gateway");
        serde_json::to_value(gateway.spec.unwrap().ingress.unwrap_or_default()).unwrap()
    };
    let probed = gateway_ingress(&Policy::from_yaml(PROBED, "test").unwrap());
    let rule = json!({
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform-ops"}}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    });
    assert!(probed.as_array().unwrap().contains(&rule), "{probed}");
    let unprobed = gateway_ingress(&Policy::default());
    assert!(!unprobed.to_string().contains("platform-ops"), "{unprobed}");
    assert_eq!(probed.as_array().unwrap().len(), unprobed.as_array().unwrap().len() + 1);
}

#[test]
fn failures_in_a_row_make_the_verdict_and_one_answer_ends_it() {
    let policy = ClinicProbePolicy { failures_before_down: 2, ..Default::default() };
    let probes = Probes::default();
    let key = ("clinic-lyon".to_string(), "lyon".to_string());
    assert_eq!(probes.verdict("clinic-lyon", "lyon", &policy), None, "never probed: no verdict");
    // The first probe gives a verdict (answering): a change, so the clinic is reconciled.
    assert!(probes.record(&key, &Ok(()), &policy));
    assert!(probes.verdict("clinic-lyon", "lyon", &policy).unwrap().answering);
    assert!(!probes.record(&key, &Ok(()), &policy), "the same verdict asks for nothing");
    // One lost request is not an outage; the second in a row is.
    assert!(!probes.record(&key, &Err(ProbeFailure::Timeout), &policy));
    assert!(probes.verdict("clinic-lyon", "lyon", &policy).unwrap().answering);
    assert!(probes.record(&key, &Err(ProbeFailure::Rest(502)), &policy));
    let down = probes.verdict("clinic-lyon", "lyon", &policy).unwrap();
    assert!(!down.answering);
    assert_eq!((down.failures_in_row, down.failure), (2, Some(ProbeFailure::Rest(502))));
    assert_eq!(ProbeFailure::Rest(502).reason(), "Rest");
    assert!(!probes.record(&key, &Err(ProbeFailure::Timeout), &policy));
    // One answer ends it.
    assert!(probes.record(&key, &Ok(()), &policy));
    let up = probes.verdict("clinic-lyon", "lyon", &policy).unwrap();
    assert!(up.answering && up.failure.is_none());
    probes.forget("clinic-lyon", "lyon");
    assert_eq!(probes.verdict("clinic-lyon", "lyon", &policy), None);
}
