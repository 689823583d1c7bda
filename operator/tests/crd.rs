//! The CRD: generated without panic, identical to `crds/`, structural, and its CEL rules accept
//! and reject the right specs (evaluated offline by the same rules the API server runs).

use clinic_operator::api::ClinicPlatform;
use clinic_operator::model;
use kube::CustomResourceExt;
use serde_json::Value;

fn clinic(spec: &str) -> ClinicPlatform {
    let yaml = format!(
        "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: lyon\n  namespace: clinic-lyon\nspec:\n{spec}"
    );
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("test spec does not parse: {e}\n{yaml}"))
}

#[test]
fn crd_matches_the_committed_file() {
    let generated = clinic_operator::render::crd_yaml().expect("CRD serialises");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/clinicplatform.yaml"))
            .expect("crds/clinicplatform.yaml exists");
    assert!(
        generated == committed,
        "crds/clinicplatform.yaml is stale: run `cargo run -p clinic-operator -- crd > crds/clinicplatform.yaml`"
    );
}

#[test]
fn api_reference_matches_the_committed_doc() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).expect("docs/api.md");
    assert!(clinic_operator::render::api_reference() == committed, "docs/api.md is stale: run `make docs`");
}

#[test]
fn crd_names_printer_columns_and_status() {
    let crd = ClinicPlatform::crd();
    assert_eq!(crd.spec.group, "clinic.audioprothese.fr");
    assert_eq!(crd.spec.names.kind, "ClinicPlatform");
    assert_eq!(crd.spec.names.plural, "clinicplatforms");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["clinic".to_string()][..]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "status subresource");
    let columns: Vec<_> =
        version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Ready", "Version", "URL", "Last backup", "Age", "Compliant", "Backup"]);
}

/// A structural schema: every node says its type (or is int-or-string / preserves unknown
/// fields), and no JSON-schema composition or reference is left.
fn check_structural(path: &str, node: &Value, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    for banned in ["$ref", "oneOf", "anyOf", "allOf", "not", "definitions", "$defs"] {
        if obj.contains_key(banned) {
            problems.push(format!("{path}: has {banned}"));
        }
    }
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed {
        problems.push(format!("{path}: no type"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(&format!("{path}.{k}"), v, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(&format!("{path}[]"), items, problems);
    }
    if let Some(additional) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(&format!("{path}{{}}"), additional, problems);
    }
}

#[test]
fn schema_is_structural_and_documented() {
    let crd = ClinicPlatform::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap(),
    )
    .unwrap();
    let mut problems = Vec::new();
    check_structural("", &schema, &mut problems);
    assert!(problems.is_empty(), "non-structural schema:\n{}", problems.join("\n"));

    // Every field under spec has a description (it is `kubectl explain`).
    fn undocumented(path: &str, node: &Value, out: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                    out.push(p.clone());
                }
                undocumented(&p, v, out);
            }
        }
        if let Some(items) = node.get("items") {
            undocumented(&format!("{path}[]"), items, out);
        }
    }
    let mut missing = Vec::new();
    undocumented("spec", &schema["properties"]["spec"], &mut missing);
    assert!(missing.is_empty(), "fields without a doc comment: {missing:?}");
}

#[test]
fn minimal_and_full_specs_pass_the_rules() {
    for spec in [
        "  {}\n",
        "  openmrs:\n    version: 3.7.1\n    locale: fr_FR\n",
        "  openmrs:\n    backend:\n      replicas: 2\n      clustering:\n        elasticsearchUris: http://es.search:9200\n        attachmentsClaimName: shared-attachments\n",
        "  ingress:\n    host: emr.clinique-lyon.example.fr\n    tls:\n      issuerRef:\n        name: letsencrypt\n",
        "  security:\n    extraEgress:\n      - cidr: 10.20.0.0/16\n        port: 443\n      - cidr: 2001:db8:40::/48\n        port: 443\n      - cidr: 10.0.0.0/8\n        port: 443\n",
        "  openmrs:\n    spaConfigUrls: [\"https://config.clinique-lyon.example.fr:8443/o3/config.json?v=2#x\", /openmrs/spa/site-config.json]\n    backend:\n      javaMemoryOpts: -Xms1g -Xmx3g -XX:MaxMetaspaceSize=512m -XX:+ExitOnOutOfMemoryError\n",
        "  openmrs:\n    backend:\n      javaMemoryOpts: -XX:MaxRAMPercentage=75.0 -XX:+ExitOnOutOfMemoryError\n",
        "  monitoring:\n    labels: {release: kube-prometheus-stack}\n    dashboard: {label: grafana_dashboard}\n",
        "  images:\n    registry: registry.example.fr/mirror\n    pullSecrets: [mirror-pull]\n",
        "  autoscaling:\n    frontend:\n      minReplicas: 3\n      maxReplicas: 3\n",
    ] {
        let cp = clinic(spec);
        if let Err(e) = cp.validate_cel() {
            panic!("rejected a valid spec:\n{spec}\n{e}");
        }
        model::validate(&cp).unwrap_or_else(|e| panic!("validate rejected a valid spec:\n{spec}\n{e}"));
    }
}

/// The specs that must be refused, shared with the e2e suite (which asks the API server).
fn invalid_specs() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/invalid-specs.yaml");
    let cases: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("yaml");
    cases
        .as_sequence()
        .expect("a list")
        .iter()
        .map(|c| {
            let doc = format!(
                "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {{name: lyon, namespace: clinic-lyon}}\nspec: {}\n",
                serde_json::to_string(&c["spec"]).expect("spec")
            );
            (doc, c["field"].as_str().expect("field").to_string())
        })
        .collect()
}

#[test]
fn invalid_specs_are_refused_offline_naming_the_field() {
    let cases = invalid_specs();
    assert!(cases.len() >= 10);
    for (doc, field) in cases {
        // `render` runs what the reconciler runs: parse, the CRD's CEL rules, then `validate`.
        match clinic_operator::render::render(&doc, "default") {
            Ok(_) => panic!("accepted an invalid spec:\n{doc}"),
            Err(e) => assert!(e.to_string().contains(&field), "message for\n{doc}does not name {field}: {e}"),
        }
    }
}

#[test]
fn a_too_long_name_is_refused() {
    let mut cp = clinic("  {}\n");
    cp.metadata.name = Some("x".repeat(41));
    let err = cp.validate_cel().expect_err("41 characters is too long").to_string();
    assert!(err.contains("metadata.name"), "{err}");
}

#[test]
fn unknown_enum_values_do_not_parse() {
    let yaml = "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: a, namespace: b}\nspec:\n  deletionPolicy: Forget\n";
    let err = serde_yaml::from_str::<ClinicPlatform>(yaml).expect_err("Forget is not a policy").to_string();
    assert!(err.contains("Forget") && err.contains("Retain"), "{err}");
}
