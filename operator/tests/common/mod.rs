//! Helpers shared by the integration tests (each test file is its own crate and uses a part).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

use clinic_operator::api::ClinicPlatform;
use clinic_operator::metrics::{ClinicTimes, Metrics};
use clinic_operator::model::{self, Clinic};
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

/// The checked model of clinic `lyon` in `clinic-lyon` with `spec` (YAML, indented by two).
pub fn clinic(spec: &str) -> Clinic {
    annotated_clinic("{}", spec)
}

/// The uid of the clinic [`clinic`] builds.
pub const CLINIC_UID: &str = "6c8e6f2a-1d0b-4a8e-9a53-3f0e3b9c1a11";

/// [`clinic`] with `annotations` (a YAML flow map) on its metadata.
pub fn annotated_clinic(annotations: &str, spec: &str) -> Clinic {
    let yaml = format!(
        "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: lyon\n  namespace: clinic-lyon\n  uid: {CLINIC_UID}\n  annotations: {annotations}\nspec:\n{spec}"
    );
    let cp: ClinicPlatform = serde_yaml::from_str(&yaml).expect("spec parses");
    model::validate(&cp).expect("spec is valid")
}

/// The built object `kind/name`, as its typed struct.
pub fn typed<K: DeserializeOwned>(objects: &[DynamicObject], kind: &str, name: &str) -> K {
    let o = objects
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == kind && o.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{kind}/{name} not built"));
    serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap()
}

/// A check tool built by `e2e/cluster/tools/build.sh` (promtool, helm, kubeconform).
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("CLINIC_TOOLS_BIN").unwrap_or_else(|| {
        panic!("CLINIC_TOOLS_BIN is not set: run `make test`, or `CLINIC_TOOLS_BIN=$(e2e/cluster/tools/build.sh) cargo test`")
    });
    let path = PathBuf::from(dir).join(name);
    assert!(path.is_file(), "{} missing: run e2e/cluster/tools/build.sh", path.display());
    path
}

/// Standard output and error of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A directory of its own under the system's temp dir, removed when dropped (a failing
/// assertion too: the panic unwinds through it).
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tempdir(prefix: &str) -> TempDir {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "clinic-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The Secret and keys `c` mounts at `path` (read-only, group-readable only).
pub fn mounted_secret(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    c: &k8s_openapi::api::core::v1::Container,
    path: &str,
) -> (String, Option<Vec<String>>) {
    let mount = c.volume_mounts.iter().flatten().find(|m| m.mount_path == path).unwrap();
    assert_eq!(mount.read_only, Some(true), "{path} is read-only");
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.default_mode, Some(0o440), "group-readable only");
    (
        secret.secret_name.clone().unwrap(),
        secret.items.as_ref().map(|items| items.iter().map(|i| i.key.clone()).collect()),
    )
}

/// The times of clinic-lyon/lyon the metrics tests record.
pub fn lyon_times() -> ClinicTimes {
    ClinicTimes {
        last_backup: Some(1_763_700_000.0),
        database_certificate_expiry: Some(1_771_000_000.0),
        backend_certificate_expiry: Some(1_772_000_000.0),
    }
}

/// Operator metrics with one sample in every family (so each appears in the exposition).
pub fn exercised_metrics() -> Metrics {
    let m = Metrics::new();
    m.observe_reconcile(0.02);
    m.record_error("ApplyFailed");
    m.record_drift("Service");
    m.record_write("apply");
    m.observe_clinic("clinic-lyon", "lyon", true, lyon_times());
    m.cleanup_blocked("clinic-lyon", "lyon");
    m.observe_probe("clinic-lyon", "lyon", true, 0.02);
    m
}

/// `promtool test rules` on `tests` (a rule unit-test file whose `rule_files` is
/// `["rules.yaml"]`) with `groups` (a rule group list) as `rules.yaml`: (success, what promtool
/// said, followed by the tests).
pub fn promtool_test_rules(groups: &serde_json::Value, tests: &serde_json::Value) -> (bool, String) {
    let dir = tempdir("promtool-test-rules");
    let rules = serde_yaml::to_string(&serde_json::json!({ "groups": groups })).unwrap();
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let tests = serde_yaml::to_string(tests).unwrap();
    std::fs::write(dir.join("tests.yaml"), &tests).unwrap();
    let out = std::process::Command::new(tool("promtool"))
        .args(["test", "rules"])
        .arg(dir.join("tests.yaml"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), format!("{}\n{tests}", text(&out)))
}
