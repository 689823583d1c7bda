//! What both e2e tiers share: the environment (control plane, operator, maybe a real node)
//! and bounded waits.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clinic_operator_e2e::cluster::ControlPlane;
use clinic_operator_e2e::node::RealNode;
use clinic_operator_e2e::operator::OperatorProcess;
use clinic_operator_e2e::workspace_root;
use serde_json::Value;

pub struct Env {
    pub plane: ControlPlane,
    /// The real node, in the real-pods tier.
    pub node: Option<RealNode>,
    /// The operator process; `None` when attached to a cluster where the operator runs as a
    /// Deployment (E2E_KUBECONFIG, the kind workflow).
    pub operator: Option<Mutex<OperatorProcess>>,
    pub operator_kubeconfig: PathBuf,
}

/// How long a clinic may take to turn Ready: seconds on kwok, many minutes with real pods.
pub fn wait() -> Duration {
    std::env::var("E2E_READY_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

pub const INSTANCE: &str = "app.kubernetes.io/instance";

impl Env {
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.plane.kubectl(args)
    }

    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all)?)?)
    }

    /// The local operator process (only `Runs::Local` scenarios call this).
    pub fn operator(&self) -> MutexGuard<'_, OperatorProcess> {
        self.operator
            .as_ref()
            .expect("a Runs::Local scenario ran against an attached cluster")
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The operator's recent output, from the process or from the Deployment's pods.
    pub fn operator_log(&self) -> String {
        match &self.operator {
            Some(op) => tail(&op.lock().unwrap_or_else(|p| p.into_inner()).output(), 30),
            None => {
                let ns = std::env::var("E2E_OPERATOR_NAMESPACE").unwrap_or_else(|_| "clinic-system".into());
                self.kubectl(&[
                    "-n",
                    &ns,
                    "logs",
                    "-l",
                    "app.kubernetes.io/name=clinic-operator",
                    "--tail=30",
                ])
                .unwrap_or_else(|e| e.to_string())
            }
        }
    }

    /// A namespace that enforces Pod Security "restricted", as the docs tell platform teams to.
    pub fn namespace(&self, name: &str) -> Result<()> {
        self.plane.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n    pod-security.kubernetes.io/warn: restricted\n"
        ))?;
        Ok(())
    }

    pub fn clinic(&self, namespace: &str, name: &str, spec: &str) -> Result<()> {
        self.plane.apply_yaml(&format!(
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}\n"
        ))?;
        Ok(())
    }

    pub fn wait_ready(&self, namespace: &str, name: &str, timeout: Duration) -> Result<()> {
        self.kubectl(&[
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            &format!("clinicplatform/{name}"),
            &format!("--timeout={}s", timeout.as_secs()),
        ])
        .map(|_| ())
        .with_context(|| {
            format!("clinic {namespace}/{name} not Ready; operator log:\n{}", self.operator_log())
        })
    }

    pub fn condition(&self, namespace: &str, name: &str, type_: &str) -> Result<Option<Value>> {
        let cp = self.json(&["-n", namespace, "get", "clinicplatform", name])?;
        Ok(cp["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned()))
    }

    /// Waits until condition `type_` of the clinic has `status` and `reason`.
    pub fn wait_condition(
        &self,
        namespace: &str,
        name: &str,
        (type_, status, reason): (&str, &str, &str),
        timeout: Duration,
    ) -> Result<()> {
        eventually(&format!("{type_}={status} with {reason}"), timeout, || {
            Ok(self
                .condition(namespace, name, type_)?
                .is_some_and(|c| c["status"] == status && c["reason"] == reason))
        })
    }

    /// Waits until a Warning event with `reason` is recorded in `namespace`.
    pub fn wait_warning_event(&self, namespace: &str, reason: &str, timeout: Duration) -> Result<()> {
        let selector = format!("reason={reason},type=Warning");
        eventually(&format!("Warning event {reason}"), timeout, || {
            let events = self.json(&["-n", namespace, "get", "events", "--field-selector", &selector])?;
            Ok(events["items"].as_array().is_some_and(|i| !i.is_empty()))
        })
    }

    /// Names of the children of `name` of the kinds the operator makes, as `Kind/name`.
    pub fn children(&self, namespace: &str, name: &str) -> Result<BTreeSet<String>> {
        let list = self.json(&[
            "-n",
            namespace,
            "get",
            "secrets,configmaps,services,statefulsets,deployments,networkpolicies,horizontalpodautoscalers,poddisruptionbudgets,ingresses,servicemonitors.monitoring.coreos.com,prometheusrules.monitoring.coreos.com,certificates.cert-manager.io,httproutes.gateway.networking.k8s.io,peerauthentications.security.istio.io,authorizationpolicies.security.istio.io,verticalpodautoscalers.autoscaling.k8s.io,alertmanagerconfigs.monitoring.coreos.com",
            "-l",
            &format!("{INSTANCE}={name}"),
        ])?;
        Ok(list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|o| {
                        format!(
                            "{}/{}",
                            o["kind"].as_str().unwrap_or(""),
                            o["metadata"]["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Env {
    /// Forces a reconcile (an annotation is no spec change).
    /// `kubectl -n <namespace> patch <resource> <name> --type=merge -p <body>`.
    pub fn merge_patch(&self, namespace: &str, resource: &str, name: &str, body: &str) -> Result<()> {
        self.kubectl(&["-n", namespace, "patch", resource, name, "--type=merge", "-p", body])?;
        Ok(())
    }

    pub fn poke(&self, namespace: &str, name: &str) -> Result<()> {
        let stamp = format!(
            "e2e/poke={}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
        );
        self.kubectl(&["-n", namespace, "annotate", "clinicplatform", name, &stamp, "--overwrite"])?;
        Ok(())
    }

    /// Writes a Velero Backup as Velero would after running one (its CRD has no status
    /// subresource, so the status is written with the object).
    pub fn velero_backup(
        &self,
        clinic_ns: &str,
        clinic: &str,
        name: &str,
        phase: &str,
        hours_ago: i64,
    ) -> Result<()> {
        let when = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(hours_ago);
        self.plane.apply_yaml(&format!(
            "apiVersion: velero.io/v1\nkind: Backup\nmetadata:\n  name: {name}\n  namespace: velero\n  labels:\n    app.kubernetes.io/instance: {clinic}\n    clinic.audioprothese.fr/namespace: {clinic_ns}\nspec:\n  includedNamespaces: [{clinic_ns}]\nstatus:\n  phase: {phase}\n  startTimestamp: \"{when}\"\n  completionTimestamp: \"{when}\"\n"
        ))?;
        Ok(())
    }

    pub fn set_backup_phase(&self, name: &str, phase: &str) -> Result<()> {
        let now = jiff::Timestamp::now();
        self.kubectl(&[
            "-n",
            "velero",
            "patch",
            "backups.velero.io",
            name,
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"phase":"{phase}","completionTimestamp":"{now}"}}}}"#),
        ])?;
        Ok(())
    }

    pub fn backend_image(&self, ns: &str, clinic: &str) -> Result<String> {
        let sts = self.json(&["-n", ns, "get", "statefulset", &format!("{clinic}-backend")])?;
        Ok(sts["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string())
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    while Instant::now() < deadline {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    match last_error {
        Some(e) => bail!("timed out after {timeout:?} waiting for {what} (last error: {e:#})"),
        None => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Every object `clinic-operator render` prints for a file, wherever it lives.
pub fn rendered_objects(file: &str, namespace: &str) -> Result<Vec<Value>> {
    let input = std::fs::read_to_string(workspace_root().join(file))?;
    let yaml = clinic_operator::render::render_with(&input, namespace, &platform_policy()?)?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// What `clinic-operator render` says the operator makes for a file in `namespace`, as
/// `Kind/name`.
pub fn rendered_children(file: &str, namespace: &str) -> Result<BTreeSet<String>> {
    Ok(rendered_objects(file, namespace)?
        .iter()
        .filter(|v| v["metadata"]["namespace"].as_str().is_none_or(|ns| ns == namespace))
        .map(|v| {
            format!("{}/{}", v["kind"].as_str().unwrap_or(""), v["metadata"]["name"].as_str().unwrap_or(""))
        })
        .collect())
}

/// Where `actual` differs from `expected` in a field `expected` sets (what the API server
/// adds, defaults and metadata it owns, is not a difference; nor is a zero value it omits:
/// `[]`, `""`, `false`).
pub fn differences(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let here = format!("{path}.{key}");
                match a.get(key) {
                    Some(found) => differences(value, found, &here, out),
                    None if is_zero(value) => {}
                    None => out.push(format!("{here}: missing (want {value})")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (value, found)) in e.iter().zip(a).enumerate() {
                differences(value, found, &format!("{path}[{i}]"), out);
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: want {e}, found {a}")),
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// A scenario as a libtest trial that prints how long it took.
pub fn trial(
    env: &std::sync::Arc<Env>,
    name: &'static str,
    scenario: fn(&Env) -> Result<()>,
) -> libtest_mimic::Trial {
    let env = env.clone();
    libtest_mimic::Trial::test(name, move || {
        let started = Instant::now();
        let result = scenario(&env).map_err(|e| {
            let message = format!("{e:#}");
            FAILURES.lock().unwrap_or_else(|p| p.into_inner()).push((name, message.clone()));
            libtest_mimic::Failed::from(message)
        });
        eprintln!("  {name}: {:.1}s", started.elapsed().as_secs_f64());
        result
    })
}

/// The failed scenarios with their messages, as [`trial`] saw them.
static FAILURES: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

/// Why each failed scenario failed, each message cut to its last lines: printed last, after
/// the operator's log, so that the end of a CI log (often all that is kept) says what failed.
pub fn failure_summary() -> String {
    let failures = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::from("--- failed scenarios ---\n");
    for (name, message) in failures.iter() {
        let head: String = message.chars().take(1500).collect();
        out.push_str(&format!("{name}: {head}\n"));
    }
    out
}

pub fn secret_fingerprint(env: &Env, ns: &str, name: &str) -> Result<String> {
    let s = env.json(&["-n", ns, "get", "secret", name])?;
    Ok(format!("{}:{}", s["metadata"]["uid"], s["data"]))
}

pub fn base64_decode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

/// The shell block of `file` that follows the marker `<!-- test: NAME -->`.
pub fn doc_block(file: &str, name: &str) -> Result<String> {
    let text = std::fs::read_to_string(workspace_root().join(file))?;
    let marker = format!("<!-- test: {name} -->");
    let after = text.split_once(&marker).with_context(|| format!("{file} has no {marker}"))?.1;
    let block = after.split_once("```bash\n").context("no bash block after the marker")?.1;
    Ok(block.split_once("```").context("unterminated block")?.0.to_string())
}

/// Every `bash` block of a doc page with the marker before it: `<!-- test: NAME -->` (run by a
/// test) or `<!-- not run by a test: why -->`. A block with neither is an error: a command a
/// page shows either runs in the suite or says why it cannot.
pub fn doc_blocks(file: &str) -> Result<Vec<(Option<String>, String)>> {
    let text = std::fs::read_to_string(workspace_root().join(file))?;
    let mut out = Vec::new();
    let mut marker: Option<&str> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("<!-- ") {
            marker = Some(line);
            continue;
        }
        if line.trim() == "```bash" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let name = match marker {
                Some(m) if m.starts_with("<!-- test: ") => {
                    Some(m.trim_start_matches("<!-- test: ").trim_end_matches(" -->").to_string())
                }
                Some(m) if m.starts_with("<!-- not run by a test: ") => None,
                _ => bail!("{file}: a bash block without a test marker:\n{}", body.join("\n")),
            };
            out.push((name, body.join("\n") + "\n"));
        }
        if !line.trim().is_empty() {
            marker = None;
        }
    }
    Ok(out)
}

/// The policy the suite's operators run under: `render` is compared with what they wrote under
/// the same one.
pub fn platform_policy() -> Result<clinic_operator::policy::Policy> {
    let yaml = clinic_operator_e2e::operator::suite_policy()?;
    Ok(clinic_operator::policy::Policy::from_yaml(&yaml, "the suite's policy")?)
}
