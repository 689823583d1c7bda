//! The `clinic-operator` command line: `crd` and `render`, as a platform team runs them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clinic-operator"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

#[test]
fn crd_prints_the_committed_file() {
    let out = run(&["crd"], None);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/clinicplatform.yaml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn render_minimal_example_prints_every_child() {
    let out = run(&["render", "-f", "examples/minimal.yaml"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    // 32 children in the clinic's namespace, and the Velero Schedule in Velero's.
    assert_eq!(docs.len(), 33);
    let (outside, inside): (Vec<_>, Vec<_>) =
        docs.iter().partition(|d| d["metadata"]["namespace"] != "clinic-minimal");
    assert_eq!(inside.len(), 32);
    assert_eq!(outside.len(), 1);
    assert_eq!(
        (outside[0]["kind"].as_str(), outside[0]["metadata"]["namespace"].as_str()),
        (Some("Schedule"), Some("velero"))
    );
}

#[test]
fn render_production_example_includes_the_ingress() {
    let policy = ["--policy", "examples/platform-values.yaml"];
    let out = run(&[&["render", "-f", "examples/production.yaml"][..], &policy].concat(), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    assert!(docs.iter().any(|d| d["kind"] == "Ingress"));
}

/// `render` refuses what the operator would under the platform's policy: the production
/// example names a backup storage location, which the default policy does not allow.
#[test]
fn render_applies_the_platform_policy() {
    let out = run(&["render", "-f", "examples/production.yaml"], None);
    assert!(!out.status.success(), "the default policy allowed storageLocation ovh-gra-hds");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.backup.storageLocation") && stderr.contains("backupStorageLocations"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "something was printed for a refused file");
    // A policy file that does not parse is an error, not the default policy.
    let dir = std::env::temp_dir().join(format!("clinic-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("policy.yaml");
    std::fs::write(
        &bad,
        "policy:
  veleroNamespace: [velero]
",
    )
    .unwrap();
    let out = run(&["render", "-f", "examples/minimal.yaml", "--policy", bad.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("veleroNamespace"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn render_reads_several_clinics_from_stdin() {
    let input = "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: a}\nspec: {}\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: b, namespace: other}\nspec: {}\n";
    let out = run(&["render", "-f", "-", "-n", "clinics"], Some(input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(docs.len(), 66);
    assert!(
        docs.iter().any(|d| d["metadata"]["name"] == "a-backend" && d["metadata"]["namespace"] == "clinics")
    );
    assert!(
        docs.iter().any(|d| d["metadata"]["name"] == "b-backend" && d["metadata"]["namespace"] == "other")
    );
}

#[test]
fn render_refuses_invalid_input_and_prints_nothing() {
    for (input, fragment) in [
        (
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: a}\nspec:\n  openmrs:\n    backend:\n      replicas: 2\n",
            "spec.openmrs.backend.replicas",
        ),
        (
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: a}\nspec:\n  deletionPolicy: Sometimes\n",
            "deletionPolicy",
        ),
        (
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: a}\nspec:\n  database:\n    resources:\n      requests: {memory: 2Gi}\n      limits: {memory: 1Gi}\n",
            "spec.database.resources.requests.memory",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "not a ClinicPlatform"),
        (
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: Bad_Name}\nspec: {}\n",
            "metadata.name",
        ),
        // A valid clinic followed by an invalid one: nothing at all is printed.
        (
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: ok}\nspec: {}\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: ko}\nspec:\n  openmrs:\n    locale: \"??\"\n",
            "spec.openmrs.locale",
        ),
    ] {
        let out = run(&["render", "-f", "-"], Some(input));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{input}");
        assert!(out.stdout.is_empty(), "printed output for invalid input:\n{input}");
        assert!(stderr.contains(fragment), "error does not name {fragment}: {stderr}");
    }
}

#[test]
fn render_of_a_missing_file_fails_cleanly() {
    let out = run(&["render", "-f", "does-not-exist.yaml"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.yaml"));
}
