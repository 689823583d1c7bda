//! The real-pods tier: the platform's pods run for real, on one real node (containerd, runc, the
//! kubelet, kube-proxy, CoreDNS and a NetworkPolicy firewall; see `clinic_operator_e2e::node`),
//! from the images `e2e/images/build.sh` makes. What admission cannot prove is checked here:
//! processes start under the operator's securityContext, probes pass, policies really deny, data
//! survives a pod loss, the backup hook really dumps and the dump restores.
//!
//! Scenarios run one at a time (they share the node's two cores and some share a clinic), in
//! the order listed; each wait is bounded.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clinic_operator_e2e::cluster::{self, ControlPlane, Options};
use clinic_operator_e2e::node::{self, NODE_IP, RealNode};
use clinic_operator_e2e::operator::{self, OperatorProcess};
use clinic_operator_e2e::workspace_root;
use libtest_mimic::Arguments;
use serde_json::Value;
use support::*;

/// Real MariaDB and a real start-up: a clinic takes tens of seconds, not two.
const READY: Duration = Duration::from_secs(300);
const MINIMAL: (&str, &str) = ("clinic-minimal", "clinic-minimal");
/// The clinic most scenarios share, behind an Ingress controller's namespace.
const NET: (&str, &str) = ("e2e-net", "net");

/// The node has two cores and the minimal example's defaults request 1.7 of them (the backend
/// alone asks for upstream's 1 CPU / 2Gi): the other clinics ask for little, so that three fit
/// once the minimal one is gone. Limits stay generous.
const SMALL: &str = "  openmrs:
    backend:
      resources: {requests: {cpu: 50m, memory: 128Mi}, limits: {cpu: '1', memory: 1Gi}}
    frontend:
      resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: 500m, memory: 256Mi}}
    gateway:
      resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: 500m, memory: 256Mi}}
  database:
    resources: {requests: {cpu: 50m, memory: 256Mi}, limits: {cpu: '1', memory: 1Gi}}
";

impl Env {
    fn node(&self) -> &RealNode {
        self.node.as_ref().expect("the real-pods tier has a real node")
    }

    /// Pods of a clinic component, by name, with their IPs.
    fn pods(&self, ns: &str, clinic: &str, component: &str) -> Result<Vec<(String, String)>> {
        let list = self.json(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            &format!("{INSTANCE}={clinic},app.kubernetes.io/component={component}"),
        ])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    p["status"]["podIP"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    fn pod_ip(&self, ns: &str, clinic: &str, component: &str) -> Result<String> {
        self.pods(ns, clinic, component)?
            .into_iter()
            .map(|(_, ip)| ip)
            .next()
            .with_context(|| format!("no running {component} pod in {ns}"))
    }

    /// A pod that only lends its network namespace (its address, its policies) to commands the
    /// test runs there with the host's tools.
    fn client_pod(&self, ns: &str) -> Result<String> {
        self.plane.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: {ns}\n  labels: {{app: e2e-client}}\nspec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: client\n    image: docker.io/openmrs/openmrs-reference-application-3-gateway:3.7.x\n    imagePullPolicy: IfNotPresent\n    command: [sleep, infinity]\n    securityContext: {{runAsNonRoot: true, runAsUser: 65534, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}, seccompProfile: {{type: RuntimeDefault}}}}\n"
        ))?;
        self.kubectl(&["-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=60s"])?;
        let pod = self.json(&["-n", ns, "get", "pod", "client"])?;
        pod["status"]["podIP"].as_str().map(String::from).context("client pod without an IP")
    }

    /// Whether a TCP connection from the pod with `from` to `to:port` is established in 3 s.
    fn connects(&self, from: &str, to: &str, port: u16) -> Result<bool> {
        let (ok, _) = self.node().in_pod_network(
            from,
            "timeout",
            &["3", "bash", "-c", &format!("exec 3<>/dev/tcp/{to}/{port}")],
        )?;
        Ok(ok)
    }

    /// `curl` from a pod's network: (HTTP status, headers and body).
    fn http(&self, from: &str, url: &str, extra: &[&str]) -> Result<(u16, String)> {
        let mut args = vec!["-s", "-i", "-m", "5"];
        args.extend_from_slice(extra);
        args.push(url);
        let (ok, out) = self.node().in_pod_network(from, "curl", &args)?;
        ensure!(ok, "curl {url} from {from} failed: {out}");
        let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, out))
    }

    /// SQL as root inside the MariaDB container (its password never leaves the pod).
    fn sql(&self, ns: &str, pod: &str, statement: &str) -> Result<String> {
        self.kubectl(&[
            "-n",
            ns,
            "exec",
            pod,
            "-c",
            "mariadb",
            "--",
            "bash",
            "-c",
            &format!("MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\" mariadb -uroot -N -B openmrs -e \"{statement}\""),
        ])
    }

    fn every_pod_ready(&self, ns: &str, clinic: &str) -> Result<usize> {
        let pods = self.json(&["-n", ns, "get", "pods", "-l", &format!("{INSTANCE}={clinic}")])?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        for pod in &items {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            ensure!(pod["status"]["phase"] == "Running", "{name} is {}", pod["status"]["phase"]);
            for c in pod["status"]["containerStatuses"].as_array().into_iter().flatten() {
                ensure!(c["ready"] == true, "{name}/{} is not ready: {}", c["name"], c["state"]);
            }
        }
        Ok(items.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// The minimal example, applied as the docs say, turns Ready with every pod Running and every
/// container Ready through its real probes.
fn minimal_example_runs(env: &Env) -> Result<()> {
    let (ns, clinic) = MINIMAL;
    let started = Instant::now();
    env.kubectl(&["apply", "-f", &workspace_root().join("examples/minimal.yaml").display().to_string()])?;
    env.wait_ready(ns, clinic, READY)?;
    eprintln!("    minimal clinic Ready on the real node in {:.1}s", started.elapsed().as_secs_f64());
    // mariadb + backend + 2 frontend + 2 gateway (the autoscalers' minimum).
    eventually("6 pods Running and Ready", Duration::from_secs(60), || {
        Ok(env.every_pod_ready(ns, clinic)? == 6)
    })?;
    // The backend really runs as uid 1001 with group 0, on a read-only root.
    let backend = format!("{clinic}-backend-0");
    let id = env.kubectl(&["-n", ns, "exec", &backend, "--", "id"])?;
    ensure!(id.contains("uid=1001") && id.contains("gid=0(root)"), "backend identity: {id}");
    let write = env.kubectl(&["-n", ns, "exec", &backend, "--", "touch", "/usr/local/x"]);
    ensure!(
        write.as_ref().is_err_and(|e| e.to_string().contains("Read-only file system")),
        "the root filesystem is writable: {write:?}"
    );
    let logs = env.kubectl(&["-n", ns, "logs", &backend])?;
    ensure!(logs.contains("OpenMRS stand-in"), "backend log: {logs}");
    emptydirs_within_their_limits(env, ns, clinic)
}

/// What each emptyDir really holds once the pods run, against its size limit (the kubelet of
/// the test node does not enforce limits: the shared disk must not evict test pods).
fn emptydirs_within_their_limits(env: &Env, ns: &str, clinic: &str) -> Result<()> {
    let pods = env.json(&["-n", ns, "get", "pods", "-l", &format!("{INSTANCE}={clinic}")])?;
    // Largest use of each (component, volume), for the report.
    let mut report: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let limits: BTreeMap<&str, f64> = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, quantity(v["emptyDir"]["sizeLimit"].as_str()?)?)))
            .collect();
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let cname = container["name"].as_str().unwrap_or_default();
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let (Some(volume), Some(path)) = (mount["name"].as_str(), mount["mountPath"].as_str()) else {
                    continue;
                };
                let Some(limit) = limits.get(volume) else { continue };
                let du = env.kubectl(&["-n", ns, "exec", name, "-c", cname, "--", "du", "-sk", path])?;
                let used =
                    du.split_whitespace().next().and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) * 1024.0;
                let component =
                    pod["metadata"]["labels"]["app.kubernetes.io/component"].as_str().unwrap_or(name);
                let entry = report.entry(format!("{component}/{volume}")).or_insert((0.0, *limit));
                entry.0 = entry.0.max(used);
                ensure!(
                    used <= limit / 2.0,
                    "{name}: {volume} holds {used} bytes, over half its {limit}-byte limit"
                );
            }
        }
    }
    let report: Vec<String> = report
        .iter()
        .map(|(v, (used, limit))| format!("{v} {:.1}/{:.0} MiB", used / 1048576.0, limit / 1048576.0))
        .collect();
    eprintln!("    emptyDir usage: {}", report.join(", "));
    Ok(())
}

fn quantity(q: &str) -> Option<f64> {
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let factor = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1048576.0,
        "Gi" => 1073741824.0,
        _ => return None,
    };
    Some(n.parse::<f64>().ok()? * factor)
}

/// Deleting the minimal clinic stops every one of its pods (and frees the node for the rest).
fn minimal_clinic_deleted_stops_its_pods(env: &Env) -> Result<()> {
    let (ns, clinic) = MINIMAL;
    // Earlier scenarios may have rolled pods: wait until only the 6 current ones are left.
    let mut uids: Vec<String> = Vec::new();
    let settled = eventually("the clinic's 6 pods, none terminating", Duration::from_secs(120), || {
        let pods = env.json(&["-n", ns, "get", "pods", "-l", &format!("{INSTANCE}={clinic}")])?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        uids = items.iter().filter_map(|p| p["metadata"]["uid"].as_str().map(String::from)).collect();
        Ok(items.len() == 6 && items.iter().all(|p| p["metadata"]["deletionTimestamp"].is_null()))
    })
    .and_then(|()| {
        ensure!(
            uids.iter().all(|uid| !env.node().pod_processes(uid).is_empty()),
            "a pod had no process to begin with"
        );
        Ok(())
    });
    if settled.is_err() {
        // The clinics after this one need the node's CPU: delete it whatever happened.
        let _ = env.kubectl(&["-n", ns, "delete", "clinicplatform", clinic, "--wait=true", "--timeout=120s"]);
        return settled;
    }
    env.kubectl(&["-n", ns, "delete", "clinicplatform", clinic, "--wait=true", "--timeout=120s"])?;
    eventually("every pod of the clinic gone", Duration::from_secs(120), || {
        let pods = env.json(&["-n", ns, "get", "pods", "-l", &format!("{INSTANCE}={clinic}")])?;
        Ok(pods["items"].as_array().is_none_or(Vec::is_empty))
    })?;
    // And no process of them is left on the node.
    eventually("no process of the clinic's pods left", Duration::from_secs(60), || {
        Ok(uids.iter().all(|uid| env.node().pod_processes(uid).is_empty()))
    })
}

/// Both exporters answer from Prometheus' namespace with live values.
fn exporters_answer(env: &Env) -> Result<()> {
    let (ns, clinic) = MINIMAL;
    env.wait_ready(ns, clinic, READY)?;
    let prometheus = env.client_pod("monitoring")?;
    let db = env.pod_ip(ns, clinic, "database")?;
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    eventually("mysql_up 1", Duration::from_secs(60), || {
        Ok(env.http(&prometheus, &format!("http://{db}:9104/metrics"), &[])?.1.contains("\nmysql_up 1"))
    })?;
    let (_, nginx) = env.http(&prometheus, &format!("http://{gateway}:9113/metrics"), &[])?;
    ensure!(nginx.contains("\nnginx_up 1"), "nginx exporter: {nginx}");
    ensure!(nginx.contains("nginx_connections_active"), "nginx exporter: {nginx}");
    Ok(())
}

/// The gateway serves the frontend (with the start script's substitutions) and proxies the
/// backend's REST API, which authenticates the generated admin password against the database.
fn gateway_serves_frontend_and_backend(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.namespace(ns)?;
    env.clinic(
        ns,
        clinic,
        // Traces to the suite policy's collector, and the Loki rules shipped (see
        // logs_and_traces_join_at_the_gateway). Mutual TLS asked for: no mesh runs on this node
        // (ztunnel cannot be built here), so its pods run with the mesh label and the mesh's
        // NetworkPolicy rules, which network_policy_matrix holds to the same plain graph. The
        // gateway reaches the backend over TLS (the_backend_serves_the_gateway_over_tls_only).
        &format!(
            "{}  ingress:\n    host: emr.net.example.fr\n    tls: {{secretName: net-tls}}\n  monitoring:\n    logs: {{alertRules: true}}\n  tracing: {{enabled: true}}\n  security: {{mtls: true}}\n",
            SMALL.replace("    backend:\n", "    backend:\n      tls: {enabled: true}\n")
        ),
    )?;
    env.wait_ready(ns, clinic, READY)?;
    let ingress = env.client_pod("ingress-nginx")?;
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    let base = format!("http://{gateway}:8080");

    let (code, out) = env.http(&ingress, &format!("{base}/"), &[])?;
    ensure!(code == 301 && out.contains("Location: /openmrs/spa/home"), "GET /: {out}");
    let (code, page) = env.http(&ingress, &format!("{base}/openmrs/spa/home"), &[])?;
    ensure!(code == 200, "GET /openmrs/spa/home: {page}");
    for expected in [
        "test stand-in for the OpenMRS 3 frontend",
        "window.spaBase = \"/openmrs/spa\"",
        "window.openmrsBase = \"/openmrs\"",
        "window.defaultLocale = \"fr\"",
        "X-Content-Type-Options: nosniff",
        "Content-Security-Policy:",
    ] {
        ensure!(page.contains(expected), "the frontend page lacks {expected:?}:\n{page}");
    }
    let (code, session) = env.http(&ingress, &format!("{base}/openmrs/ws/rest/v1/session"), &[])?;
    ensure!(code == 200 && session.contains("\"authenticated\":false"), "anonymous session: {session}");
    let secret = env.json(&["-n", ns, "get", "secret", "net-openmrs-admin"])?;
    let password = base64_decode(secret["data"]["password"].as_str().unwrap_or_default());
    ensure!(password.len() >= 32, "admin password too short");
    let (code, session) = env.http(
        &ingress,
        &format!("{base}/openmrs/ws/rest/v1/session"),
        &["-u", &format!("admin:{password}")],
    )?;
    ensure!(code == 200 && session.contains("\"authenticated\":true"), "admin session: {session}");
    ensure!(!session.contains(&password), "a response echoed the password");
    Ok(())
}

/// What an OTLP/HTTP receiver does, as far as the test needs: every POST body, one per line.
const OTLP_RECEIVER: &str = r#"
import http.server, sys
out = sys.argv[1]
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 4318), Receiver).serve_forever()
"#;

/// The line filters (`|=`, `|~`) of a LogQL expression the operator shipped.
fn line_filters(expr: &str) -> Result<Vec<(bool, regex::Regex)>> {
    let filter = regex::Regex::new(r"\|([=~]) `([^`]*)`")?;
    let filters: Vec<(bool, regex::Regex)> = filter
        .captures_iter(expr)
        .map(|c| {
            let pattern = if &c[1] == "=" { regex::escape(&c[2]) } else { c[2].to_string() };
            Ok((&c[1] == "=", regex::Regex::new(&pattern)?))
        })
        .collect::<Result<_>>()?;
    ensure!(!filters.is_empty(), "no line filter in {expr}");
    Ok(filters)
}

fn lines_matching<'a>(filters: &[(bool, regex::Regex)], log: &'a str) -> Vec<&'a str> {
    log.lines().filter(|l| filters.iter().all(|(_, re)| re.is_match(l))).collect()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Logs and traces on the real node. Traces: the backend of a clinic with `spec.tracing` gets
/// the agent's jar from the policy's agent image (an init container), exports a span per request
/// to the policy's collector through its NetworkPolicy (a pod of that namespace without the
/// collector's labels stays unreachable), and a request's trace id is the same in the gateway's
/// access line, the backend's span and the response; a client's trace context is continued.
/// Logs: the Loki rules and dashboard the operator shipped, read back from the cluster, have
/// line filters that match the pods' real output for a refused login and a start, and that see
/// no database error or out-of-memory in a healthy clinic's logs.
fn logs_and_traces_join_at_the_gateway(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let (backend_pod, backend) =
        env.pods(ns, clinic, "backend")?.into_iter().next().context("no running backend pod")?;
    let pod = env.json(&["-n", ns, "get", "pod", &backend_pod])?;
    let copied = pod["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "otel-agent")
        .context("the backend has no otel-agent init container")?;
    ensure!(copied["state"]["terminated"]["exitCode"] == 0, "otel-agent: {}", copied["state"]);
    let condition = env.condition(ns, clinic, "MonitoringReady")?.context("no MonitoringReady")?;
    let message = condition["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("Loki alert rules in ConfigMap net-loki-rules")
            && message.contains("traces: to http://otel-collector.observability.svc:4318"),
        "MonitoringReady does not say what logs and traces get: {message}"
    );

    // The collector, as the suite's policy names it, and a pod beside it without its labels.
    env.plane.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: observability\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: collector\n  namespace: observability\n  labels: {app.kubernetes.io/name: opentelemetry-collector}\nspec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: collector\n    image: docker.io/openmrs/openmrs-reference-application-3-gateway:3.7.x\n    imagePullPolicy: IfNotPresent\n    command: [sleep, infinity]\n    securityContext: {runAsNonRoot: true, runAsUser: 65534, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: otel-collector\n  namespace: observability\nspec:\n  selector: {app.kubernetes.io/name: opentelemetry-collector}\n  ports:\n  - {name: otlp-http, port: 4318, targetPort: 4318}\n",
    )?;
    env.kubectl(&["-n", "observability", "wait", "--for=condition=Ready", "pod/collector", "--timeout=60s"])?;
    let collector = env.json(&["-n", "observability", "get", "pod", "collector"])?["status"]["podIP"]
        .as_str()
        .map(String::from)
        .context("collector pod without an IP")?;
    let bystander = env.client_pod("observability")?;
    let spans_file = env.plane.dir.join("otlp-spans.jsonl");
    let bystander_file = env.plane.dir.join("otlp-bystander.jsonl");
    let spans_path = spans_file.display().to_string();
    let bystander_path = bystander_file.display().to_string();
    let _receiver =
        env.node().spawn_in_pod_network(&collector, "python3", &["-c", OTLP_RECEIVER, &spans_path])?;
    let _bystander =
        env.node().spawn_in_pod_network(&bystander, "python3", &["-c", OTLP_RECEIVER, &bystander_path])?;
    let ingress = env.client_pod("ingress-nginx")?;
    eventually("the OTLP receivers listen", Duration::from_secs(20), || {
        Ok(env.connects(&ingress, &collector, 4318)? && env.connects(&ingress, &bystander, 4318)?)
    })?;
    let frontend = env.pod_ip(ns, clinic, "frontend")?;
    for (what, from, to, allowed) in [
        ("backend -> collector", &backend, &collector, true),
        ("backend -> another pod of the collector's namespace", &backend, &bystander, false),
        ("frontend -> collector", &frontend, &collector, false),
    ] {
        ensure!(
            env.connects(from, to, 4318)? == allowed,
            "{what}:4318 should be {}",
            if allowed { "open" } else { "closed" }
        );
    }

    // The backend's resolver may hold the collector's name as missing (CoreDNS caches a negative
    // answer for 30 s): its probes' spans say when the export flows.
    eventually("the backend's first spans reach the collector", Duration::from_secs(90), || {
        Ok(std::fs::metadata(&spans_file).is_ok_and(|m| m.len() > 0))
    })?;

    // Three requests through the gateway: no trace context, a client's, and a broken one.
    let (gateway_pod, gateway) =
        env.pods(ns, clinic, "gateway")?.into_iter().next().context("no running gateway pod")?;
    let url = format!("http://{gateway}:8080/openmrs/ws/rest/v1/session");
    let trace_id = |extra: &[&str]| -> Result<String> {
        let (code, out) = env.http(&ingress, &url, extra)?;
        ensure!(code == 200, "GET {url}: {out}");
        let id = header(&out, "X-OpenMRS-Stand-In-Trace-Id").context("the backend got no traceparent")?;
        ensure!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) && id != "0".repeat(32),
            "trace id {id}"
        );
        Ok(id.to_string())
    };
    let started_here = trace_id(&[])?;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let continued = trace_id(&["-H", &format!("traceparent: 00-{client_trace}-{client_span}-01")])?;
    ensure!(continued == client_trace, "the client's trace context was not kept: {continued}");
    let replaced = trace_id(&["-H", &format!("traceparent: 00-{}-{client_span}-01", "0".repeat(32))])?;
    ensure!(replaced != started_here && replaced != client_trace, "a broken traceparent was not replaced");

    let gateway_log = env.kubectl(&["-n", ns, "logs", &gateway_pod, "-c", "gateway"])?;
    for id in [&started_here, &continued, &replaced] {
        ensure!(
            gateway_log
                .lines()
                .any(|l| l.contains("GET /openmrs/ws/rest/v1/session")
                    && l.ends_with(&format!("trace_id={id}"))),
            "no gateway access line with trace_id={id}:\n{gateway_log}"
        );
    }
    let mut spans = Vec::new();
    let exported = eventually("the backend's spans reach the collector", Duration::from_secs(30), || {
        spans.clear();
        for line in std::fs::read_to_string(&spans_file).unwrap_or_default().lines() {
            let body: Value = serde_json::from_str(line)?;
            for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        spans.push((resource["resource"].clone(), span.clone()));
                    }
                }
            }
        }
        Ok([&started_here, &continued, &replaced]
            .iter()
            .all(|id| spans.iter().any(|(_, s)| s["traceId"] == **id)))
    });
    if let Err(e) = exported {
        let log = env.kubectl(&["-n", ns, "logs", &backend_pod, "-c", "openmrs"]).unwrap_or_default();
        let agent: Vec<&str> =
            log.lines().filter(|l| l.contains("OpenTelemetry") || l.contains("spans")).take(10).collect();
        bail!("{e:#}\n{} span(s) received; the backend's agent lines:\n{}", spans.len(), agent.join("\n"));
    }
    let (resource, span) =
        spans.iter().find(|(_, s)| s["traceId"] == client_trace).context("no client span")?;
    ensure!(span["parentSpanId"] == client_span, "the span does not continue the client's: {span}");
    let attribute = |key: &str| -> Option<String> {
        resource["attributes"].as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"]
            .as_str()
            .map(String::from)
    };
    for (key, expected) in [
        ("clinic", clinic),
        ("k8s.namespace.name", ns),
        ("k8s.pod.name", backend_pod.as_str()),
        ("service.name", "openmrs"),
    ] {
        ensure!(
            attribute(key).as_deref() == Some(expected),
            "resource {key} is {:?}: {resource}",
            attribute(key)
        );
    }
    let (_, span) = spans.iter().find(|(_, s)| s["traceId"] == started_here.as_str()).context("no span")?;
    ensure!(
        span["parentSpanId"].as_str().is_some_and(|p| p.len() == 16 && p != "0".repeat(16)),
        "the gateway's span id did not reach the backend: {span}"
    );
    let stray = std::fs::read_to_string(&bystander_file).unwrap_or_default();
    ensure!(stray.is_empty(), "spans reached a pod without the collector's labels");

    // Logs: a refused login, then the shipped filters over the pods' own output.
    let (code, out) = env.http(&ingress, &url, &["-u", "admin:not-the-password"])?;
    ensure!(code == 200 && out.contains("\"authenticated\":false"), "refused login: {out}");
    let rules = env.json(&["-n", ns, "get", "configmap", "net-loki-rules"])?;
    let file = rules["data"].as_object().and_then(|d| d.values().next()).and_then(|v| v.as_str());
    let groups: serde_yaml::Value = serde_yaml::from_str(file.context("net-loki-rules has no rule file")?)?;
    let alert = |name: &str| -> Result<Vec<(bool, regex::Regex)>> {
        let rule = groups["groups"][0]["rules"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|r| r["alert"].as_str() == Some(name))
            .with_context(|| format!("no rule {name}"))?;
        line_filters(rule["expr"].as_str().unwrap_or_default())
    };
    let dashboard = env.json(&["-n", ns, "get", "configmap", "net-dashboard"])?;
    let dashboard: Value = serde_json::from_str(
        dashboard["data"]
            .as_object()
            .and_then(|d| d.values().next())
            .and_then(|v| v.as_str())
            .unwrap_or("{}"),
    )?;
    let start_panel = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == "Backend start")
        .and_then(|p| p["targets"][0]["expr"].as_str())
        .context("no Backend start panel")?;
    let mut backend_log = String::new();
    eventually("the refused login is in the backend's log", Duration::from_secs(20), || {
        backend_log = env.kubectl(&["-n", ns, "logs", &backend_pod, "-c", "openmrs"])?;
        Ok(!lines_matching(&alert("ClinicRepeatedLoginFailures")?, &backend_log).is_empty())
    })?;
    let failed = lines_matching(&alert("ClinicRepeatedLoginFailures")?, &backend_log);
    ensure!(!failed.iter().any(|l| l.contains("not-the-password")), "a refused password was logged");
    ensure!(
        !lines_matching(&line_filters(start_panel)?, &backend_log).is_empty(),
        "no start line in:\n{backend_log}"
    );
    let database_log = env.kubectl(&["-n", ns, "logs", &format!("{clinic}-mariadb-0"), "-c", "mariadb"])?;
    let healthy = format!("{backend_log}\n{database_log}");
    for name in ["ClinicDatabaseErrors", "ClinicBackendOutOfMemory"] {
        let hits = lines_matching(&alert(name)?, &healthy);
        ensure!(hits.is_empty(), "{name}'s filter matches a healthy clinic's log:\n{}", hits.join("\n"));
    }
    eprintln!(
        "    traces: {} spans received, 3 trace ids joined; logs: {} refused-login line(s), {} lines of a healthy clinic clear",
        spans.len(),
        failed.len(),
        healthy.lines().count()
    );
    Ok(())
}

/// Traefik v3.6 (the real binary, from its Go module) as the platform's Gateway implementation:
/// the Gateway `gateway-system/public` of the suite's policy, an HTTPS listener with a wildcard
/// certificate and a plain-HTTP one, and only what its Kubernetes Gateway provider needs.
/// Returns the wildcard certificate's files (PEM): `(cert, key)`.
fn traefik_gateway(env: &Env) -> Result<(String, String)> {
    let dir = env.plane.dir.join("gateway-tls");
    std::fs::create_dir_all(&dir)?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=*.example.fr", "-addext", "subjectAltName=DNS:*.example.fr"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    ensure!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    env.plane.apply_yaml(TRAEFIK)?;
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let secret = env.kubectl(&[
        "-n",
        "gateway-system",
        "create",
        "secret",
        "tls",
        "wildcard-example-fr",
        "--cert",
        &cert,
        "--key",
        &key,
        "--dry-run=client",
        "-o",
        "yaml",
    ])?;
    env.plane.apply_yaml(&secret)?;
    env.kubectl(&["-n", "gateway-system", "rollout", "status", "deploy/traefik", "--timeout=120s"])?;
    eventually("Traefik programs the Gateway", Duration::from_secs(60), || {
        let gateway = env.json(&["-n", "gateway-system", "get", "gateway", "public"])?;
        Ok(gateway["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True"))
    })?;
    Ok((cert, key))
}

fn traefik_ip(env: &Env) -> Result<String> {
    let traefik = env.json(&["-n", "gateway-system", "get", "pods", "-l", "app=traefik"])?;
    traefik["items"][0]["status"]["podIP"].as_str().map(String::from).context("Traefik pod without an IP")
}

const TRAEFIK: &str = "apiVersion: v1
kind: Namespace
metadata: {name: gateway-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: traefik, namespace: gateway-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-traefik}
rules:
  - apiGroups: ['']
    resources: [namespaces, nodes, services, secrets, configmaps]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses, ingressclasses]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses/status]
    verbs: [update]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses, gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies, listenersets, tcproutes, tlsroutes, udproutes]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status, backendtlspolicies/status, listenersets/status, tcproutes/status, tlsroutes/status, udproutes/status]
    verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-traefik}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-traefik}
subjects: [{kind: ServiceAccount, name: traefik, namespace: gateway-system}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: traefik, namespace: gateway-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: traefik}}
  template:
    metadata: {labels: {app: traefik}}
    spec:
      serviceAccountName: traefik
      terminationGracePeriodSeconds: 1
      containers:
        - name: traefik
          image: docker.io/library/traefik:v3.6
          imagePullPolicy: IfNotPresent
          args:
            - --entryPoints.web.address=:8000
            - --entryPoints.websecure.address=:8443
            - --providers.kubernetesgateway=true
            - --providers.kubernetesingress=true
            - --ping=true
            - --ping.entryPoint=web
            - --entryPoints.metrics.address=:9100
            - --metrics.prometheus=true
            - --metrics.prometheus.entryPoint=metrics
            - --global.checkNewVersion=false
            - --global.sendAnonymousUsage=false
            - --log.level=INFO
          ports: [{containerPort: 8000}, {containerPort: 8443}]
          readinessProbe: {httpGet: {path: /ping, port: 8000}, periodSeconds: 2}
          resources: {requests: {cpu: 10m, memory: 64Mi}, limits: {memory: 512Mi}}
          securityContext: {runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {sizeLimit: 16Mi}}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: traefik}
spec: {controller: traefik.io/ingress-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: gateway-system}
spec:
  gatewayClassName: traefik
  listeners:
    - name: https
      protocol: HTTPS
      port: 8443
      hostname: '*.example.fr'
      tls: {mode: Terminate, certificateRefs: [{name: wildcard-example-fr}]}
      allowedRoutes: {namespaces: {from: All}}
    - name: http
      protocol: HTTP
      port: 8000
      hostname: '*.example.fr'
      allowedRoutes: {namespaces: {from: All}}
";

/// A clinic published on the platform's Gateway: Traefik accepts its HTTPRoutes, the clinic turns
/// Ready on that answer, and a real HTTPS request through Traefik reaches the frontend and the
/// backend through the clinic's own gateway (whose NetworkPolicy lets only the Gateway's
/// namespace in); plain HTTP is redirected; a host outside the policy is refused before any write.
fn gateway_api_routes_real_requests(env: &Env) -> Result<()> {
    traefik_gateway(env)?;
    let (ns, clinic) = ("e2e-gw", "gw");
    let host = "emr.gw.example.fr";
    env.namespace(ns)?;
    env.clinic(ns, clinic, &format!("{SMALL}  route:\n    host: {host}\n"))?;
    env.wait_ready(ns, clinic, READY)?;
    let accepted = env.condition(ns, clinic, "RouteAccepted")?.context("no RouteAccepted")?;
    ensure!(
        accepted["status"] == "True"
            && accepted["message"].as_str().is_some_and(|m| m.contains("traefik.io/gateway-controller")),
        "{accepted}"
    );
    let traefik_ip = traefik_ip(env)?;
    let outside = env.client_pod("e2e-gw-outside")?;
    let https = |path: &str| {
        let resolve = format!("{host}:8443:{traefik_ip}");
        env.http(&outside, &format!("https://{host}:8443{path}"), &["-k", "--resolve", &resolve])
    };
    let (code, page) = https("/openmrs/spa/home")?;
    ensure!(
        code == 200 && page.contains("test stand-in for the OpenMRS 3 frontend"),
        "GET /openmrs/spa/home through Traefik: {page}"
    );
    // HTTP/2 through Traefik: header names are lower-case.
    ensure!(
        page.to_ascii_lowercase().contains("strict-transport-security:"),
        "no HSTS through the Gateway:\n{page}"
    );
    let (code, session) = https("/openmrs/ws/rest/v1/session")?;
    ensure!(
        code == 200 && session.contains("\"authenticated\":false"),
        "the backend through Traefik: {session}"
    );
    let resolve = format!("{host}:8000:{traefik_ip}");
    let (code, redirect) =
        env.http(&outside, &format!("http://{host}:8000/openmrs/spa/home"), &["--resolve", &resolve])?;
    ensure!(
        code == 301
            && redirect
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with(&format!("location: https://{host}"))),
        "plain HTTP is not redirected to HTTPS: {redirect}"
    );
    // The clinic's 5xx alert reads the series Traefik really exposes for these requests.
    let rule =
        env.json(&["-n", ns, "get", "prometheusrules.monitoring.coreos.com", &format!("{clinic}-alerts")])?;
    let expr = rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .find(|r| r["alert"] == "ClinicHigh5xxRate")
        .and_then(|r| r["expr"].as_str().map(String::from))
        .context("no ClinicHigh5xxRate alert for a clinic on Traefik")?;
    let backend = expr
        .split("service=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the alert selects no backend")?
        .to_string();
    let (code, metrics) = env.http(&outside, &format!("http://{traefik_ip}:9100/metrics"), &[])?;
    ensure!(code == 200, "Traefik's metrics: {metrics}");
    ensure!(
        metrics.lines().any(|l| l.starts_with("traefik_service_requests_total{")
            && l.contains("code=\"200\"")
            && l.contains(&format!("service=\"{backend}\""))),
        "Traefik exposes no traefik_service_requests_total for {backend}:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("traefik_service_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Only the Gateway's proxies reach the clinic's gateway: not a pod of another namespace.
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    ensure!(
        !env.connects(&outside, &gateway, 8080)?,
        "a pod outside the Gateway's namespace reached the gateway"
    );

    env.clinic(ns, "abroad", "  route:\n    host: emr.gw.example.com\n")?;
    eventually("a host outside the policy refused", Duration::from_secs(60), || {
        Ok(env.condition(ns, "abroad", "Degraded")?.is_some_and(|c| {
            c["reason"] == "NotAllowed"
                && c["message"].as_str().is_some_and(|m| m.contains("spec.route.host"))
        }))
    })?;
    ensure!(env.kubectl(&["-n", ns, "get", "httproute", "abroad"]).is_err(), "a route for a refused host");
    // The node's two cores are shared with the scenarios after this one.
    env.kubectl(&["delete", "namespace", ns, "e2e-gw-outside", "--wait=false"])?;
    Ok(())
}

/// Ingress stays supported beyond ingress-nginx: Traefik as the Ingress controller serves a
/// clinic's Ingress over TLS with the clinic's Secret, and never over plain HTTP (the
/// `router.tls` annotation the operator sets).
fn an_ingress_on_traefik_is_served_over_tls_only(env: &Env) -> Result<()> {
    let (cert, key) = traefik_gateway(env)?;
    let (ns, clinic) = ("e2e-ing", "ing");
    let host = "emr.ing.example.fr";
    env.namespace(ns)?;
    let secret = env.kubectl(&[
        "-n",
        ns,
        "create",
        "secret",
        "tls",
        "ing-tls",
        "--cert",
        &cert,
        "--key",
        &key,
        "--dry-run=client",
        "-o",
        "yaml",
    ])?;
    env.plane.apply_yaml(&secret)?;
    env.clinic(
        ns,
        clinic,
        &format!("{SMALL}  ingress:\n    host: {host}\n    className: traefik\n    controllerNamespace: gateway-system\n    tls: {{secretName: ing-tls}}\n"),
    )?;
    env.wait_ready(ns, clinic, READY)?;
    let traefik_ip = traefik_ip(env)?;
    let outside = env.client_pod("e2e-ing-outside")?;
    let resolve = format!("{host}:8443:{traefik_ip}");
    let https = |path: &str| {
        env.http(&outside, &format!("https://{host}:8443{path}"), &["-k", "--resolve", &resolve])
    };
    let mut page = (0, String::new());
    // Traefik's Ingress provider picks the Ingress up within its own resync.
    eventually("Traefik serves the Ingress", Duration::from_secs(60), || {
        page = https("/openmrs/spa/home")?;
        Ok(page.0 == 200)
    })
    .with_context(|| {
        let log =
            env.kubectl(&["-n", "gateway-system", "logs", "deploy/traefik", "--tail=30"]).unwrap_or_default();
        format!("last answer: {}\n--- Traefik's log\n{log}", page.1)
    })?;
    ensure!(page.1.contains("test stand-in for the OpenMRS 3 frontend"), "{}", page.1);
    let (code, session) = https("/openmrs/ws/rest/v1/session")?;
    ensure!(
        code == 200 && session.contains("\"authenticated\":false"),
        "the backend through Traefik: {session}"
    );
    let plain = format!("{host}:8000:{traefik_ip}");
    let (code, answer) =
        env.http(&outside, &format!("http://{host}:8000/openmrs/spa/home"), &["--resolve", &plain])?;
    ensure!(code == 404, "the clinic answered over plain HTTP: {answer}");
    env.kubectl(&["delete", "namespace", ns, "e2e-ing-outside", "--wait=false"])?;
    Ok(())
}

/// Every flow the NetworkPolicies allow connects; every other one fails, each checked with a
/// real TCP connection from the source pod's own address.
fn network_policy_matrix(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    // The clinic asks for mutual TLS: its policies carry the mesh's tunnel port and probe rule,
    // and the graph below must be the same as without them.
    let probes = env.json(&["-n", ns, "get", "networkpolicy", &format!("{clinic}-mesh-probes")])?;
    ensure!(
        probes["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] == "169.254.7.127/32",
        "{}",
        probes["spec"]
    );
    let ingress = env.client_pod("ingress-nginx")?;
    let prometheus = env.client_pod("monitoring")?;
    let other = env.client_pod("e2e-other")?;
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    let frontend = env.pod_ip(ns, clinic, "frontend")?;
    let backend = env.pod_ip(ns, clinic, "backend")?;
    let db = env.pod_ip(ns, clinic, "database")?;
    let dns = env
        .json(&["-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns"])?["items"][0]["status"]["podIP"]
        .as_str()
        .map(String::from)
        .context("no DNS pod")?;
    // "Outside": a listener on the host, off the pod network, that an unrestricted pod reaches.
    let outside = TcpListener::bind((NODE_IP, 0))?;
    let outside_port = outside.local_addr()?.port();
    let accept = std::thread::spawn(move || {
        let _ = outside.set_nonblocking(true);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let _ = outside.accept();
            std::thread::sleep(Duration::from_millis(20));
        }
    });

    let flows: Vec<(&str, &str, &str, u16, bool)> = vec![
        ("ingress controller -> gateway", &ingress, &gateway, 8080, true),
        ("gateway -> frontend", &gateway, &frontend, 80, true),
        ("gateway -> backend's TLS proxy", &gateway, &backend, 8443, true),
        ("backend -> MariaDB", &backend, &db, 3306, true),
        ("backend -> DNS", &backend, &dns, 53, true),
        ("Prometheus -> mysqld-exporter", &prometheus, &db, 9104, true),
        ("Prometheus -> nginx-exporter", &prometheus, &gateway, 9113, true),
        ("other namespace -> outside listener (control)", &other, NODE_IP, outside_port, true),
        ("other namespace -> MariaDB", &other, &db, 3306, false),
        ("other namespace -> backend", &other, &backend, 8443, false),
        ("gateway -> OpenMRS in plaintext", &gateway, &backend, 8080, false),
        ("other namespace -> gateway", &other, &gateway, 8080, false),
        ("Prometheus -> MariaDB", &prometheus, &db, 3306, false),
        ("frontend -> MariaDB", &frontend, &db, 3306, false),
        ("frontend -> backend", &frontend, &backend, 8080, false),
        ("gateway -> MariaDB", &gateway, &db, 3306, false),
        ("MariaDB -> backend", &db, &backend, 8080, false),
        ("backend -> outside", &backend, NODE_IP, outside_port, false),
        ("frontend -> outside", &frontend, NODE_IP, outside_port, false),
    ];
    let mut wrong = Vec::new();
    for (what, from, to, port, allowed) in &flows {
        if env.connects(from, to, *port)? != *allowed {
            wrong.push(format!(
                "{what} ({from} -> {to}:{port}) {}",
                if *allowed { "failed" } else { "connected" }
            ));
        }
    }
    drop(accept);
    let allowed = flows.iter().filter(|f| f.4).count();
    eprintln!(
        "    network matrix: {allowed} allowed flows, {} denied flows, {} wrong",
        flows.len() - allowed,
        wrong.len()
    );
    ensure!(wrong.is_empty(), "NetworkPolicy matrix broken:\n{}", wrong.join("\n"));
    Ok(())
}

/// MariaDB's pod deleted: it comes back with the same data and the same credentials, and the
/// backend serves again.
fn mariadb_pod_loss_keeps_data_and_credentials(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let pod = format!("{clinic}-mariadb-0");
    let secret = format!("{clinic}-db-credentials");
    let marker = format!("row-{}", std::process::id());
    env.sql(
        ns,
        &pod,
        &format!("CREATE TABLE IF NOT EXISTS e2e_marker (v VARCHAR(64)); INSERT INTO e2e_marker VALUES ('{marker}')"),
    )?;
    let credentials = secret_fingerprint(env, ns, &secret)?;
    let uid = env.json(&["-n", ns, "get", "pod", &pod])?["metadata"]["uid"].clone();
    let lost = Instant::now();
    env.kubectl(&["-n", ns, "delete", "pod", &pod, "--wait=true"])?;
    eventually("a new MariaDB pod Ready", READY, || {
        let p = env.json(&["-n", ns, "get", "pod", &pod])?;
        Ok(p["metadata"]["uid"] != uid
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["ready"] == true)))
    })?;
    let rows = env.sql(ns, &pod, "SELECT v FROM e2e_marker")?;
    ensure!(rows.lines().any(|l| l == marker), "the row is gone: {rows:?}");
    ensure!(secret_fingerprint(env, ns, &secret)? == credentials, "database credentials changed");
    env.wait_ready(ns, clinic, READY)?;
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    let ingress = env.client_pod("ingress-nginx")?;
    eventually("the backend serves again", Duration::from_secs(60), || {
        Ok(env.http(&ingress, &format!("http://{gateway}:8080/openmrs/ws/rest/v1/session"), &[])?.0 == 200)
    })?;
    // The figure docs/availability.md quotes: a single MariaDB's loss, as users see it (the
    // stand-in backend reconnects as fast as its driver retries; the real OpenMRS may differ).
    eprintln!(
        "    MariaDB pod lost: the REST API answers again {:.1}s after the deletion",
        lost.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The Schedule's pre-backup hook for `clinic` (selector, container, command), as Velero reads it.
fn backup_hook(env: &Env, clinic: &str) -> Result<Value> {
    let schedules =
        env.json(&["-n", "velero", "get", "schedules.velero.io", "-l", &format!("{INSTANCE}={clinic}")])?;
    Ok(schedules["items"][0]["spec"]["template"]["hooks"]["resources"][0].clone())
}

/// Runs the hook's command in its declared container of `pod`, as Velero does.
fn run_backup_hook(env: &Env, ns: &str, pod: &str, hook: &Value) -> Result<()> {
    let exec = &hook["pre"][0]["exec"];
    let container = exec["container"].as_str().context("hook without a container")?;
    let command = exec["command"].as_array().context("hook without a command")?;
    let mut args = vec!["-n", ns, "exec", pod, "-c", container, "--"];
    args.extend(command.iter().filter_map(Value::as_str));
    env.kubectl(&args).map(|_| ())
}

/// Where the MariaDB container has the clinic's dump passphrase.
const DUMP_PASSPHRASE: &str = "/etc/mysql/encryption/dump-passphrase";

/// The shell command that decrypts the hook's dump with the passphrase in `pass_file` (as
/// docs/backup.md does with [`DUMP_PASSPHRASE`]).
fn decrypt_dump(pass_file: &str) -> String {
    format!(
        "openssl enc -d -aes-256-cbc -pbkdf2 -iter 200000 -pass file:{pass_file} -in /var/lib/mysql-dump/openmrs.sql.gz.enc"
    )
}

/// The Schedule's pre-backup hook, run as Velero runs it (the declared command in the declared
/// container), leaves a consistent compressed dump on the dump volume; the restore drill of
/// docs/backup.md, run as written, brings the row back in a fresh namespace's clinic.
fn backup_hook_dump_restores_into_a_fresh_clinic(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let pod = format!("{clinic}-mariadb-0");
    let marker = format!("dump-{}", std::process::id());
    env.sql(ns, &pod, &format!("CREATE TABLE IF NOT EXISTS e2e_marker (v VARCHAR(64)); INSERT INTO e2e_marker VALUES ('{marker}')"))?;

    let hook = backup_hook(env, clinic)?;
    // The hook selects the MariaDB pod.
    let selector: Vec<String> = hook["labelSelector"]["matchLabels"]
        .as_object()
        .context("hook without a selector")?
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let selected = env.json(&["-n", ns, "get", "pods", "-l", &selector.join(",")])?;
    ensure!(
        selected["items"][0]["metadata"]["name"] == pod.as_str(),
        "the hook selects {}",
        selected["items"]
    );
    for round in 0..2 {
        // Twice: the second run replaces the first dump instead of failing on it.
        run_backup_hook(env, ns, &pod, &hook)
            .with_context(|| format!("the pre-backup hook failed (run {round})"))?;
    }
    let listing = env.kubectl(&[
        "-n",
        ns,
        "exec",
        &pod,
        "-c",
        "mariadb",
        "--",
        "ls",
        "/var/lib/mysql-dump",
        "/var/lib/mysql",
    ])?;
    ensure!(listing.contains("openmrs.sql.gz.enc") && !listing.contains(".tmp"), "dump volume: {listing}");
    ensure!(!listing.contains("clinic-backup"), "a dump folder in the data directory: {listing}");
    let dumped = env.kubectl(&[
        "-n",
        ns,
        "exec",
        &pod,
        "-c",
        "mariadb",
        "--",
        "bash",
        "-c",
        &format!("{} | gunzip -c | grep -c e2e_marker", decrypt_dump(DUMP_PASSPHRASE)),
    ])?;
    ensure!(dumped.trim().parse::<u32>().unwrap_or(0) > 0, "the dump lacks the marker table");
    // Velero backs up the dump volume and not the scratch ones.
    let sts = env.json(&["-n", ns, "get", "statefulset", &format!("{clinic}-mariadb")])?;
    let excludes =
        sts["spec"]["template"]["metadata"]["annotations"]["backup.velero.io/backup-volumes-excludes"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    ensure!(
        excludes.contains("run") && excludes.contains("tmp") && !excludes.contains("dump"),
        "excludes: {excludes}"
    );

    // The drill, as docs/backup.md writes it.
    let (target_ns, target) = ("e2e-restore", "restored");
    env.namespace(target_ns)?;
    env.clinic(target_ns, target, SMALL)?;
    env.wait_ready(target_ns, target, READY)?;
    let script = doc_block("docs/backup.md", "restore-dump")?;
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("KUBECONFIG", &env.plane.kubeconfig)
        .env("PATH", format!("{}:{}", env.plane.bin.display(), std::env::var("PATH").unwrap_or_default()))
        .envs(BTreeMap::from([
            ("SOURCE_NS", ns),
            ("SOURCE_CLINIC", clinic),
            ("TARGET_NS", target_ns),
            ("TARGET_CLINIC", target),
        ]))
        .output()?;
    ensure!(out.status.success(), "the documented restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let rows = env.sql(target_ns, &format!("{target}-mariadb-0"), "SELECT v FROM e2e_marker")?;
    ensure!(rows.lines().any(|l| l == marker), "the restored clinic lacks the row: {rows:?}");
    Ok(())
}

/// Writes a row to a table of its own in the clinic's database, flushes it to its tablespace, and
/// returns the files of the database volume, as the node holds it, that contain the row's text
/// and those that contain the table's definition (never encrypted: the search's own control).
fn row_on_the_volume(env: &Env, ns: &str, clinic: &str, secret: &str) -> Result<(Vec<String>, Vec<String>)> {
    let pod = format!("{clinic}-mariadb-0");
    let column = format!("col_{}", std::process::id());
    env.sql(
        ns,
        &pod,
        &format!(
            "CREATE TABLE e2e_at_rest ({column} VARCHAR(64)); INSERT INTO e2e_at_rest VALUES ('{secret}'); FLUSH TABLES e2e_at_rest FOR EXPORT; UNLOCK TABLES"
        ),
    )?;
    ensure!(
        env.sql(ns, &pod, &format!("SELECT {column} FROM e2e_at_rest"))?.trim() == secret,
        "row not read back"
    );
    let claim = env.json(&["-n", ns, "get", "pvc", &format!("data-{clinic}-mariadb-0")])?;
    let uid = claim["metadata"]["uid"].as_str().context("claim without uid")?;
    let volume = node::local_volumes().dir.join(uid);
    let search = |needle: &str| -> Result<Vec<String>> {
        let out = Command::new("grep").args(["-r", "-l", "-a", "-F", needle]).arg(&volume).output()?;
        ensure!(out.status.code() != Some(2), "grep failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect())
    };
    let definitions = search(&column)?;
    ensure!(
        definitions.iter().any(|f| f.ends_with("e2e_at_rest.frm")),
        "the search does not see the volume's files: {definitions:?} in {}",
        volume.display()
    );
    Ok((search(secret)?, definitions))
}

/// MariaDB encrypts what it writes (`spec.database.encryptAtRest`, the default): a row is on the
/// volume nowhere in readable form — tables, system tablespace, redo and undo logs — while the
/// server reads it back and the table's definition (not encrypted) is found by the same search;
/// a clinic with `encryptAtRest: false` shows the same row in clear (the search can fail). The
/// pre-backup dump is an openssl file that opens only with the clinic's dump passphrase.
fn mariadb_data_and_dump_are_encrypted_at_rest(env: &Env) -> Result<()> {
    let secret = format!("patient-{}-diagnosis", std::process::id());
    let (plain_ns, plain) = ("e2e-plain", "plain");
    env.namespace(plain_ns)?;
    env.clinic(
        plain_ns,
        plain,
        &format!("{SMALL}    encryptAtRest: false\n  monitoring: {{enabled: false}}\n"),
    )?;
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let pod = format!("{clinic}-mariadb-0");
    let (readable, _) = row_on_the_volume(env, ns, clinic, &secret)?;
    ensure!(readable.is_empty(), "the row is readable on the volume in {readable:?}");
    let scheme = env.sql(
        ns,
        &pod,
        "SELECT ENCRYPTION_SCHEME FROM information_schema.INNODB_TABLESPACES_ENCRYPTION WHERE NAME = 'openmrs/e2e_at_rest'",
    )?;
    ensure!(scheme.trim() == "1", "the table's tablespace is not encrypted: {scheme:?}");
    env.wait_ready(plain_ns, plain, READY)?;
    let (in_clear, _) = row_on_the_volume(env, plain_ns, plain, &secret)?;
    ensure!(!in_clear.is_empty(), "without encryption the row should be readable on the volume");
    env.kubectl(&["delete", "namespace", plain_ns, "--wait=false"])?;

    // The dump, as the pre-backup hook leaves it.
    run_backup_hook(env, ns, &pod, &backup_hook(env, clinic)?).context("the pre-backup hook failed")?;
    let in_pod =
        |script: &str| env.kubectl(&["-n", ns, "exec", &pod, "-c", "mariadb", "--", "bash", "-c", script]);
    let listing = in_pod("ls /var/lib/mysql-dump")?;
    ensure!(
        listing.split_whitespace().collect::<Vec<_>>() == ["openmrs.sql.gz.enc"],
        "dump volume: {listing}"
    );
    let plain = in_pod(&format!(
        "gunzip -c /var/lib/mysql-dump/openmrs.sql.gz.enc 2>/dev/null | grep -c -a -F '{secret}' || true"
    ))?;
    ensure!(plain.trim() == "0", "the dump reads without its key: {plain}");
    let wrong = in_pod(&format!(
        "echo wrong > /tmp/wrong; {} 2>/dev/null | gunzip -c 2>/dev/null | grep -c -a -F e2e_at_rest || true",
        decrypt_dump("/tmp/wrong")
    ))?;
    ensure!(wrong.trim() == "0", "the dump opens with a wrong passphrase: {wrong}");
    let opened =
        in_pod(&format!("{} | gunzip -c | grep -c -a -F '{secret}'", decrypt_dump(DUMP_PASSPHRASE)))?;
    ensure!(opened.trim() == "1", "the dump does not open with the clinic's passphrase: {opened}");
    env.sql(ns, &pod, "DROP TABLE e2e_at_rest")?;
    Ok(())
}

/// A clinic installed without TLS turns it on: OpenMRS connects with the runtime properties its
/// installation wrote, so the new URL must reach them (the start script merges OMRS_EXTRA_
/// variables into them at every start); the backend comes back over TLS with its data.
fn an_installed_clinic_moves_to_tls(env: &Env) -> Result<()> {
    let (ns, clinic) = ("e2e-to-tls", "totls");
    env.namespace(ns)?;
    env.clinic(
        ns,
        clinic,
        &format!("{SMALL}    tls: {{enabled: false}}\n  monitoring: {{enabled: false}}\n"),
    )?;
    env.wait_ready(ns, clinic, READY)?;
    let backend = format!("{clinic}-backend-0");
    let installed = |env: &Env| {
        env.kubectl(&[
            "-n",
            ns,
            "exec",
            &backend,
            "-c",
            "openmrs",
            "--",
            "cat",
            "/openmrs/data/openmrs-runtime.properties",
        ])
    };
    let before = installed(env)?;
    ensure!(
        before.contains("connection.url=jdbc:mysql://"),
        "not installed without TLS: {}",
        before.lines().filter(|l| l.starts_with("connection.url")).collect::<String>()
    );
    let started = Instant::now();
    env.kubectl(&[
        "-n",
        ns,
        "patch",
        "clinicplatform",
        clinic,
        "--type=merge",
        "-p",
        r#"{"spec":{"database":{"tls":{"enabled":true}},"openmrs":{"backend":{"tls":{"enabled":true}}}}}"#,
    ])?;
    eventually("MariaDB and the backend over TLS, the backend back", Duration::from_secs(300), || {
        let cp = env.json(&["-n", ns, "get", "clinicplatform", clinic])?;
        let ready = cp["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        Ok(ready
            && cp["status"]["observedGeneration"] == cp["metadata"]["generation"]
            && cp["status"]["compliance"]["databaseTls"] == true
            && cp["status"]["compliance"]["backendTls"] == true
            && installed(env).is_ok_and(|p| p.contains("sslMode=verify-full")))
    })?;
    // The gateway serves the REST API again, through the backend's TLS proxy (asked from the
    // gateway's own network: without `spec.ingress` no other pod may reach it).
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    let (code, out) = env.http(&gateway, "http://127.0.0.1:8080/openmrs/ws/rest/v1/session", &[])?;
    ensure!(code == 200, "the REST API after the move to TLS: {out}");
    // Only the connection's URL and driver are shown: the file holds the database password.
    let connection = |properties: &str| {
        properties
            .lines()
            .filter(|l| l.starts_with("connection.url=") || l.starts_with("connection.driver_class="))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let after = installed(env)?;
    let log = env.kubectl(&["-n", ns, "logs", &backend, "-c", "openmrs"])?;
    let start: Vec<&str> = log.lines().take(12).collect();
    let listing =
        env.kubectl(&["-n", ns, "exec", &backend, "-c", "openmrs", "--", "ls", "-la", "/openmrs/data"]);
    ensure!(
        after.contains("connection.url=jdbc:mariadb://")
            && after.contains("connection.driver_class=org.mariadb.jdbc.Driver"),
        "the runtime properties did not follow: {}; the backend's start: {start:?}; {listing:?}",
        connection(&after)
    );
    ensure!(
        log.contains("connecting with the runtime properties"),
        "the backend did not read its runtime properties: {start:?}"
    );
    eprintln!(
        "    installed clinic on TLS (MariaDB's and the backend's) and Ready again in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    env.kubectl(&["delete", "namespace", ns, "--wait=false"])?;
    Ok(())
}

/// No generated secret in any container's log, init containers included: the database and
/// admin passwords, the exporter's, the dump passphrase, MariaDB's TLS key (the start scripts of
/// the images run here print none; upstream's backend stopped printing its properties in
/// openmrs-core 2.8.7).
fn no_generated_secret_in_any_container_log(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let mut secrets = Vec::new();
    for (name, keys) in [
        ("db-credentials", &["password", "root-password"][..]),
        ("openmrs-admin", &["password"][..]),
        ("mariadb-exporter", &["password"][..]),
        ("db-encryption", &["dump-passphrase"][..]),
        ("db-tls", &["tls.key"][..]),
        ("backend-tls", &["tls.key"][..]),
    ] {
        let secret = env.json(&["-n", ns, "get", "secret", &format!("{clinic}-{name}")])?;
        for key in keys {
            let value = base64_decode(secret["data"][*key].as_str().unwrap_or_default());
            ensure!(value.len() >= 32, "{clinic}-{name} has no {key}");
            // A PEM key is searched for by its base64 body, line by line.
            let needles: Vec<String> = if value.contains("PRIVATE KEY") {
                value.lines().filter(|l| !l.starts_with("-----") && l.len() > 16).map(String::from).collect()
            } else {
                vec![value]
            };
            secrets.extend(needles.into_iter().map(|n| (format!("{name}/{key}"), n)));
        }
    }
    let pods = env.json(&["-n", ns, "get", "pods", "-l", &format!("{INSTANCE}={clinic}")])?;
    let mut read = 0;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let containers = ["initContainers", "containers"]
            .iter()
            .flat_map(|list| pod["spec"][*list].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["name"].as_str().map(String::from));
        for container in containers {
            let log = env.kubectl(&["-n", ns, "logs", name, "-c", &container])?;
            read += log.lines().count();
            for (what, value) in &secrets {
                ensure!(!log.contains(value.as_str()), "{what} is in the log of {name}/{container}");
            }
        }
    }
    ensure!(read > 20, "only {read} log lines read");
    eprintln!(
        "    {} secret values searched in {read} log lines of every container: none found",
        secrets.len()
    );
    Ok(())
}

/// MariaDB's `Ssl_server_not_after` ("Mar  4 20:12:52 2027 GMT") as a timestamp.
fn openssl_time(text: &str) -> Result<jiff::Timestamp> {
    let squeezed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let civil = jiff::civil::DateTime::strptime("%b %d %H:%M:%S %Y GMT", &squeezed)
        .with_context(|| format!("Ssl_server_not_after {text:?}"))?;
    Ok(civil.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp())
}

/// MariaDB refuses plaintext and serves the certificate of its Secret, which a client that
/// checks the clinic's CA and the Service's name accepts and one with another CA refuses; a new
/// certificate restarts MariaDB with it, and the backend (which verifies it as MariaDB
/// Connector/J does) carries on.
fn mariadb_refuses_plaintext_and_verifies_its_certificate(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let pod = format!("{clinic}-mariadb-0");
    let service = format!("{clinic}-mariadb");
    // (exit status 0, what it wrote): a refused connection is an answer here, not an error.
    let in_pod = |script: &str| -> Result<(bool, String)> {
        Ok(match env.kubectl(&["-n", ns, "exec", &pod, "-c", "mariadb", "--", "bash", "-c", script]) {
            Ok(out) => (true, out),
            Err(e) => (false, format!("{e:#}")),
        })
    };
    let client = |tls: &str| {
        format!(
            "MYSQL_PWD=\"$MARIADB_PASSWORD\" mariadb --protocol=tcp -h {service} -u\"$MARIADB_USER\" {tls} -N -B -e \"SHOW STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_server_not_after')\""
        )
    };
    let (ok, plaintext) = in_pod(&client("--skip-ssl"))?;
    ensure!(!ok, "a plaintext connection was not refused: {plaintext}");
    // MariaDB 10.11 answers an access denial: the same password opens the TLS session below.
    let refusal = plaintext
        .find("ERROR")
        .map(|at| plaintext[at..].lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    // The same account and password over TLS, checking the clinic's CA and the Service's name.
    let verified = "--ssl --ssl-ca=/etc/mysql/tls/ca.crt --ssl-verify-server-cert";
    let (ok, status) = in_pod(&client(verified))?;
    ensure!(ok, "TLS with the clinic's CA and its name failed: {status}");
    let value = |status: &str, name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    let version = value(&status, "Ssl_version");
    ensure!(version == "TLSv1.3" || version == "TLSv1.2", "TLS version {version:?}");
    let recorded = |env: &Env| -> Result<jiff::Timestamp> {
        let cp = env.json(&["-n", ns, "get", "clinicplatform", clinic])?;
        ensure!(
            cp["status"]["compliance"]["databaseTls"] == true,
            "compliance: {}",
            cp["status"]["compliance"]
        );
        Ok(cp["status"]["databaseCertificate"]["notAfter"].as_str().unwrap_or_default().parse()?)
    };
    let not_after = recorded(env)?;
    ensure!(
        openssl_time(&value(&status, "Ssl_server_not_after"))? == not_after,
        "MariaDB serves a certificate ending {}, the status records {not_after}",
        value(&status, "Ssl_server_not_after")
    );
    let (made, out) = in_pod(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /tmp/other.key -out /tmp/other-ca.crt -subj /CN=other-ca -days 1 2>&1",
    )?;
    ensure!(made, "openssl req: {out}");
    let (ok, other) = in_pod(&client("--ssl --ssl-ca=/tmp/other-ca.crt --ssl-verify-server-cert"))?;
    ensure!(!ok, "a client trusting another CA connected: {other}");
    eprintln!(
        "    plaintext refused ({refusal}), {version} with the clinic's CA for {service}, another CA refused"
    );

    // A new certificate (its Secret deleted: the operator's CA signs another) rolls MariaDB.
    let started = Instant::now();
    env.kubectl(&["-n", ns, "delete", "secret", &format!("{clinic}-db-tls")])?;
    let mut renewed = not_after;
    eventually("a new certificate in the status", Duration::from_secs(60), || {
        renewed = recorded(env)?;
        Ok(renewed != not_after)
    })?;
    eventually("MariaDB restarted with the new certificate", Duration::from_secs(180), || {
        let (ok, status) = in_pod(&client(verified))?;
        Ok(ok && openssl_time(&value(&status, "Ssl_server_not_after")).ok() == Some(renewed))
    })?;
    env.wait_ready(ns, clinic, READY)?;
    eprintln!(
        "    new certificate served and the clinic Ready again in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The backend's TLS proxy (`spec.openmrs.backend.tls`): it serves TLS 1.3 with a certificate
/// that verifies against the clinic's CA for the backend Service's name, a client trusting
/// another CA is refused, OpenMRS's own port is closed to the gateway (network_policy_matrix),
/// and every request of the scenarios above went through it. A renewed certificate is served
/// without restarting the backend.
fn the_backend_serves_the_gateway_over_tls_only(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let gateway = env.pod_ip(ns, clinic, "gateway")?;
    let (backend_pod, backend) =
        env.pods(ns, clinic, "backend")?.into_iter().next().context("no running backend pod")?;
    let name = format!("{clinic}-backend.{ns}.svc");
    let dir = std::env::temp_dir().join(format!("e2e-backend-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let secret = env.json(&["-n", ns, "get", "secret", &format!("{clinic}-backend-tls")])?;
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, base64_decode(secret["data"]["ca.crt"].as_str().unwrap_or_default()))?;
    let other_ca = dir.join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-keyout", &dir.join("other.key").to_string_lossy(), "-out", &other_ca.to_string_lossy()])
        .args(["-subj", "/CN=other-ca", "-days", "1"])
        .output()?;
    ensure!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
    // From the gateway's network, as its nginx connects: (verified, what openssl said).
    let handshake = |trusted: &std::path::Path| -> Result<(bool, String)> {
        let connect = format!("{backend}:8443");
        let script = format!(
            "openssl s_client -connect {connect} -servername {name} -verify_hostname {name} -CAfile {} -verify_return_error -brief </dev/null 2>&1; \
             openssl s_client -connect {connect} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -enddate",
            trusted.display()
        );
        let (_, out) = env.node().in_pod_network(&gateway, "bash", &["-c", &script])?;
        Ok((out.contains("Verification: OK"), out))
    };
    let (verified, out) = handshake(&ca)?;
    ensure!(verified && out.contains("Protocol version: TLSv1.3"), "TLS with the clinic's CA: {out}");
    let (verified, refused) = handshake(&other_ca)?;
    ensure!(!verified, "a client trusting another CA accepted the backend: {refused}");
    let served_end = |out: &str| -> Result<jiff::Timestamp> {
        let line = out.lines().find_map(|l| l.strip_prefix("notAfter=")).context("no notAfter")?;
        openssl_time(line)
    };
    let cp = env.json(&["-n", ns, "get", "clinicplatform", clinic])?;
    ensure!(cp["status"]["compliance"]["backendTls"] == true, "compliance: {}", cp["status"]["compliance"]);
    let recorded: jiff::Timestamp =
        cp["status"]["backendCertificate"]["notAfter"].as_str().unwrap_or_default().parse()?;
    ensure!(
        served_end(&out)? == recorded,
        "the proxy serves a certificate ending {out}, the status records {recorded}"
    );
    eprintln!("    TLSv1.3 verified for {name} with the clinic's CA; another CA refused");

    // Renewed (its Secret deleted: the clinic's CA signs another): served by the same pod.
    let uid = env.json(&["-n", ns, "get", "pod", &backend_pod])?["metadata"]["uid"].clone();
    let started = Instant::now();
    env.kubectl(&["-n", ns, "delete", "secret", &format!("{clinic}-backend-tls")])?;
    eventually("the new certificate served", Duration::from_secs(240), || {
        let (verified, out) = handshake(&ca)?;
        Ok(verified && served_end(&out).is_ok_and(|end| end != recorded))
    })?;
    let pod = env.json(&["-n", ns, "get", "pod", &backend_pod])?;
    ensure!(pod["metadata"]["uid"] == uid, "the backend pod was replaced");
    let restarts: Vec<i64> = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["restartCount"].as_i64().unwrap_or(-1))
        .collect();
    ensure!(restarts.iter().all(|r| *r == 0), "containers restarted: {restarts:?}");
    let ingress = env.client_pod("ingress-nginx")?;
    let (code, out) =
        env.http(&ingress, &format!("http://{gateway}:8080/openmrs/ws/rest/v1/session"), &[])?;
    ensure!(code == 200, "the gateway after the renewal: {out}");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "    renewed certificate served by the same pod, no restart, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What hack/loadtest.sh reported: its summary line and the figures the scenario checks.
struct LoadReport {
    line: String,
    success_percent: f64,
    p95_seconds: f64,
}

/// hack/loadtest.sh, as the docs show it, run from the network of the pod with `from` against
/// `url` at `rate` requests/s for `duration`.
fn load(env: &Env, from: &str, url: &str, password: &str, rate: u32, duration: &str) -> Result<LoadReport> {
    let tools = std::env::var("CLINIC_TOOLS_BIN").context("CLINIC_TOOLS_BIN (make test sets it)")?;
    let kit = workspace_root().join("hack/loadtest.sh");
    let (ok, out) = env.node().in_pod_network(
        from,
        "env",
        &[
            &format!("OPENMRS_PASSWORD={password}"),
            &format!("VEGETA={tools}/vegeta"),
            "bash",
            &kit.display().to_string(),
            url,
            &rate.to_string(),
            duration,
        ],
    )?;
    ensure!(ok, "hack/loadtest.sh failed: {out}");
    let line = out.lines().last().unwrap_or_default().to_string();
    let field = |name: &str| -> Result<f64> {
        let value = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .with_context(|| format!("no {name} in {line:?}"))?;
        Ok(value.trim_end_matches(['%', 's']).parse()?)
    };
    Ok(LoadReport { success_percent: field("success")?, p95_seconds: field("p95")?, line })
}

/// The load kit (hack/loadtest.sh, vegeta) against the NET clinic through its gateway Service,
/// as users reach it: at rest, then while one gateway pod is deleted, while the operator is
/// killed, while MariaDB's pod is deleted, and while the backend's pod is deleted, with one
/// replica and then two. The stand-in backend answers, so the figures
/// prove the kit and the path, not OpenMRS's own speed.
fn load_through_faults(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let ingress = env.client_pod("ingress-nginx")?;
    let service = env.json(&["-n", ns, "get", "service", &format!("{clinic}-gateway")])?;
    let url = format!("http://{}", service["spec"]["clusterIP"].as_str().context("no cluster IP")?);
    let secret = env.json(&["-n", ns, "get", "secret", &format!("{clinic}-openmrs-admin")])?;
    let password = base64_decode(secret["data"]["password"].as_str().unwrap_or_default());
    // Ready is what the operator last saw, and a fault's effects outlast it: the backend's
    // readiness probe needs three failures to take it out of its Service, and the operator
    // hears of that a moment later. Each run starts once users are served again: an
    // authenticated session through the gateway, which reads MariaDB.
    let credentials = format!("admin:{password}");
    let session = format!("{url}/openmrs/ws/rest/v1/session");
    let serving_again = || -> Result<()> {
        env.wait_ready(ns, clinic, READY)?;
        eventually("the clinic serving users through its gateway", READY, || {
            Ok(env.http(&ingress, &session, &["-u", &credentials])?.0 == 200)
        })
    };
    serving_again()?;

    let at_rest = load(env, &ingress, &url, &password, 20, "20s")?;
    eprintln!("    at rest:               {}", at_rest.line);
    ensure!(
        at_rest.success_percent == 100.0 && at_rest.p95_seconds <= 3.0,
        "the clinic at rest misses the objectives: {}",
        at_rest.line
    );
    // Each fault 8 s into a 30 s run at 10 requests/s.
    let under = |what: &str, fault: &dyn Fn() -> Result<()>| -> Result<LoadReport> {
        std::thread::scope(|scope| {
            let running = scope.spawn(|| load(env, &ingress, &url, &password, 10, "30s"));
            std::thread::sleep(Duration::from_secs(8));
            let injected = fault();
            let report = running.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
            injected?;
            eprintln!("    {what:<22} {}", report.line);
            Ok(report)
        })
    };
    let (gateway_pod, _) =
        env.pods(ns, clinic, "gateway")?.into_iter().next().context("no running gateway pod")?;
    under("gateway pod deleted:", &|| {
        env.kubectl(&["-n", ns, "delete", "pod", &gateway_pod, "--wait=false"]).map(drop)
    })?;
    serving_again()?;
    let operator_killed = under("operator killed:", &|| {
        env.operator().kill();
        std::thread::sleep(Duration::from_secs(10));
        env.operator().restart()
    })?;
    ensure!(
        operator_killed.success_percent == 100.0,
        "users saw the operator's death: {}",
        operator_killed.line
    );
    serving_again()?;
    under("MariaDB pod deleted:", &|| {
        env.kubectl(&["-n", ns, "delete", "pod", &format!("{clinic}-mariadb-0"), "--wait=false"]).map(drop)
    })?;
    serving_again()?;
    // The backend's one pod lost: an outage for as long as it takes to start and be ready.
    let delete_backend = || {
        env.kubectl(&["-n", ns, "delete", "pod", &format!("{clinic}-backend-0"), "--wait=false"]).map(drop)
    };
    let single = under("backend pod deleted:", &delete_backend)?;
    serving_again()?;
    // Two replicas (spec.openmrs.backend.clustering): the other one serves while it comes back.
    env.plane.apply_yaml(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {clinic}-attachments, namespace: {ns}}}\nspec:\n  accessModes: [ReadWriteMany]\n  storageClassName: standard\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    ))?;
    let clustering = format!(
        r#"{{"spec":{{"openmrs":{{"backend":{{"replicas":2,"clustering":{{"elasticsearchUris":"http://search:9200","attachmentsClaimName":"{clinic}-attachments"}}}}}}}}}}"#
    );
    env.merge_patch(ns, "clinicplatform", clinic, &clustering)?;
    eventually("two backend pods ready", READY, || {
        let statefulset = env.json(&["-n", ns, "get", "statefulset", &format!("{clinic}-backend")])?;
        Ok(statefulset["status"]["readyReplicas"] == 2 && statefulset["status"]["updatedReplicas"] == 2)
    })?;
    serving_again()?;
    let clustered = under("backend pod deleted, 2 replicas:", &delete_backend)?;
    ensure!(
        clustered.success_percent >= single.success_percent,
        "two backend replicas did worse than one: {} vs {}",
        clustered.line,
        single.line
    );
    env.merge_patch(
        ns,
        "clinicplatform",
        clinic,
        r#"{"spec":{"openmrs":{"backend":{"replicas":1,"clustering":null}}}}"#,
    )?;
    eventually("back to one backend pod", READY, || Ok(env.pods(ns, clinic, "backend")?.len() == 1))?;
    serving_again()?;
    Ok(())
}

/// Every process of a pod stopped (SIGSTOP) until dropped, also on a panic: the pod still
/// exists and its containers still run, they just no longer answer.
struct Frozen(Vec<i32>);

impl Frozen {
    fn signal(pids: &[i32], signal: &str) {
        for pid in pids {
            let _ = std::process::Command::new("kill").args([signal, &pid.to_string()]).status();
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        Self::signal(&self.0, "-CONT");
    }
}

/// The operator's own probe (the suite's policy has `clinicProbe`): while the NET clinic's
/// backend is frozen, its pods still Running and (for a while) Ready, the login page still
/// served, `OpenMRSReady` turns False with `NotAnswering` and the probe's metric drops to 0;
/// thawed, the clinic is Ready again.
fn the_operator_sees_what_users_see(env: &Env) -> Result<()> {
    let (ns, clinic) = NET;
    env.wait_ready(ns, clinic, READY)?;
    let success = format!("clinic_operator_clinic_probe_success{{namespace=\"{ns}\",name=\"{clinic}\"}}");
    let probe_metric = |env: &Env| -> Result<Option<String>> {
        let (_, metrics) = env.operator().http_get("/metrics")?;
        Ok(metrics.lines().find(|l| l.starts_with(&success)).map(|l| l[success.len()..].trim().to_string()))
    };
    eventually("the clinic probed and answering", Duration::from_secs(30), || {
        Ok(probe_metric(env)?.as_deref() == Some("1"))
    })?;
    let (pod, _) = env.pods(ns, clinic, "backend")?.into_iter().next().context("no running backend pod")?;
    let uid = env.json(&["-n", ns, "get", "pod", &pod])?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pids = env.node().pod_processes(&uid);
    ensure!(!pids.is_empty(), "no process of {pod} found");
    Frozen::signal(&pids, "-STOP");
    let frozen = Frozen(pids);
    let stopped = Instant::now();
    let mut pods_ready_then = false;
    eventually("OpenMRSReady=False NotAnswering", Duration::from_secs(60), || {
        let said = env.condition(ns, clinic, "OpenMRSReady")?;
        if said.as_ref().is_some_and(|c| c["status"] == "False" && c["reason"] == "NotAnswering") {
            let backend = env.json(&["-n", ns, "get", "pod", &pod])?;
            pods_ready_then = backend["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            return Ok(true);
        }
        Ok(false)
    })?;
    let detected = stopped.elapsed().as_secs_f64();
    ensure!(probe_metric(env)?.as_deref() == Some("0"), "the probe's metric still says 1");
    let ready = env.condition(ns, clinic, "Ready")?.context("no Ready")?;
    ensure!(ready["status"] == "False" && ready["reason"] == "NotAnswering", "Ready: {ready}");
    drop(frozen);
    let thawed = Instant::now();
    env.wait_ready(ns, clinic, READY)?;
    eprintln!(
        "    backend frozen: NotAnswering after {detected:.1}s (its pod still Ready then: {pods_ready_then}); thawed: Ready again after {:.1}s",
        thawed.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The operator SIGKILLed in the middle of converging a clinic with real pods converges it on
/// restart, with no regenerated secret and no duplicate workload. Its MariaDB runs with the
/// PriorityClass its spec names.
fn operator_killed_mid_converge(env: &Env) -> Result<()> {
    let (ns, clinic) = ("e2e-kill", "kill");
    env.namespace(ns)?;
    env.clinic(ns, clinic, &format!("{SMALL}    placement: {{priorityClassName: clinic-critical}}\n"))?;
    eventually("the generated Secrets exist", Duration::from_secs(60), || {
        Ok(env.kubectl(&["-n", ns, "get", "secret", "kill-db-credentials", "kill-openmrs-admin"]).is_ok())
    })?;
    let credentials = secret_fingerprint(env, ns, "kill-db-credentials")?;
    let admin = secret_fingerprint(env, ns, "kill-openmrs-admin")?;
    env.operator().kill();
    std::thread::sleep(Duration::from_secs(3));
    env.operator().restart()?;
    env.wait_ready(ns, clinic, READY)?;
    ensure!(
        secret_fingerprint(env, ns, "kill-db-credentials")? == credentials,
        "database credentials regenerated"
    );
    ensure!(secret_fingerprint(env, ns, "kill-openmrs-admin")? == admin, "admin password regenerated");
    eventually("6 pods Running and Ready", Duration::from_secs(120), || {
        Ok(env.every_pod_ready(ns, clinic)? == 6)
    })?;
    // The PriorityClass its spec names (one the policy lists), resolved by admission.
    let mariadb = env.json(&["-n", ns, "get", "pod", &format!("{clinic}-mariadb-0")])?;
    ensure!(
        mariadb["spec"]["priorityClassName"] == "clinic-critical" && mariadb["spec"]["priority"] == 1_000_000,
        "MariaDB's priority: {} {}",
        mariadb["spec"]["priorityClassName"],
        mariadb["spec"]["priority"]
    );
    let selector = format!("{INSTANCE}={clinic}");
    for (kind, expected) in [("statefulsets", 2), ("deployments", 2), ("replicasets", 2)] {
        let n = env.json(&["-n", ns, "get", kind, "-l", &selector])?["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        ensure!(n == expected, "{n} {kind}, expected {expected}");
    }
    Ok(())
}

/// A clinic made before the backend StatefulSet was governed by its headless Service (it was
/// governed by the ClusterIP Service, and `serviceName` cannot change in place) is moved by
/// making the StatefulSet again around its running pod: same pod, no container restarted.
fn an_old_backend_statefulset_moves_to_its_headless_service(env: &Env) -> Result<()> {
    let (ns, clinic) = ("e2e-kill", "kill");
    env.wait_ready(ns, clinic, READY)?;
    let (statefulset, pod) = (format!("{clinic}-backend"), format!("{clinic}-backend-0"));
    let pod_state = || -> Result<(String, i64, String)> {
        let pod = env.json(&["-n", ns, "get", "pod", &pod])?;
        let restarts = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .sum();
        let owner = pod["metadata"]["ownerReferences"][0]["uid"].as_str().unwrap_or_default().to_string();
        Ok((pod["metadata"]["uid"].as_str().unwrap_or_default().to_string(), restarts, owner))
    };
    let (uid, restarts, _) = pod_state()?;
    // What an operator before the change left, made while no operator runs.
    env.operator().kill();
    let mut old = env.json(&["-n", ns, "get", "statefulset", &statefulset])?;
    env.kubectl(&["-n", ns, "delete", "statefulset", &statefulset, "--cascade=orphan", "--wait=true"])?;
    let metadata = old["metadata"].clone();
    old["metadata"] = serde_json::json!({
        "name": metadata["name"], "namespace": metadata["namespace"], "labels": metadata["labels"],
        "annotations": metadata["annotations"], "ownerReferences": metadata["ownerReferences"],
    });
    old["spec"]["serviceName"] = Value::String(statefulset.clone());
    old.as_object_mut().context("a StatefulSet is an object")?.remove("status");
    env.plane.apply_yaml(&serde_json::to_string(&old)?)?;
    let old_uid = env.json(&["-n", ns, "get", "statefulset", &statefulset])?["metadata"]["uid"].clone();
    eventually("the old-style StatefulSet adopts the pod", Duration::from_secs(60), || {
        Ok(Value::String(pod_state()?.2) == old_uid)
    })?;
    env.operator().restart()?;
    let started = Instant::now();
    eventually("the backend governed by its headless Service", Duration::from_secs(120), || {
        let live = env.json(&["-n", ns, "get", "statefulset", &statefulset])?;
        Ok(live["spec"]["serviceName"] == format!("{clinic}-backend-pods")
            && Value::String(pod_state()?.2) == live["metadata"]["uid"])
    })?;
    eprintln!(
        "    moved and the pod adopted {:.1}s after the operator's start",
        started.elapsed().as_secs_f64()
    );
    env.wait_ready(ns, clinic, READY)?;
    let (uid_after, restarts_after, _) = pod_state()?;
    ensure!(uid_after == uid, "the backend pod was replaced ({uid} -> {uid_after})");
    ensure!(restarts_after == restarts, "containers restarted: {restarts} -> {restarts_after}");
    let events =
        env.json(&["-n", ns, "get", "events", "--field-selector", "reason=GoverningServiceMoved"])?;
    ensure!(
        events["items"].as_array().is_some_and(|items| !items.is_empty()),
        "no GoverningServiceMoved event"
    );
    Ok(())
}

/// A weakened securityContext on a running workload is put back, and the pods that run
/// afterwards have it again (a write to their root filesystem fails).
fn drift_on_running_workload_is_put_back(env: &Env) -> Result<()> {
    let (ns, clinic) = MINIMAL;
    env.wait_ready(ns, clinic, READY)?;
    let deployment = format!("{clinic}-gateway");
    env.kubectl(&["-n", ns, "patch", "deployment", &deployment, "--type=json", "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem","value":false}]"#])?;
    eventually("securityContext put back and the pods rolled", READY, || {
        let d = env.json(&["-n", ns, "get", "deployment", &deployment])?;
        let spec_ok = d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
            == true;
        let rolled = d["status"]["updatedReplicas"] == d["status"]["replicas"]
            && d["status"]["readyReplicas"] == d["status"]["replicas"]
            && d["status"]["unavailableReplicas"].is_null()
            && d["status"]["observedGeneration"] == d["metadata"]["generation"];
        Ok(spec_ok && rolled && env.pods(ns, clinic, "gateway")?.len() == 2)
    })?;
    for (pod, _) in env.pods(ns, clinic, "gateway")? {
        let write = env.kubectl(&["-n", ns, "exec", &pod, "-c", "gateway", "--", "touch", "/etc/x"]);
        ensure!(
            write.as_ref().is_err_and(|e| e.to_string().contains("Read-only file system")),
            "{pod} has a writable root: {write:?}"
        );
    }
    let events = env.json(&["-n", ns, "get", "events", "--field-selector", "reason=DriftCorrected"])?;
    ensure!(
        events["items"].as_array().into_iter().flatten().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("Deployment {deployment}")))),
        "no DriftCorrected event for the Deployment"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn setup() -> Result<Env> {
    let started = Instant::now();
    let bin = cluster::binaries()?;
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "clinic-e2e-real-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    // No kwok nodes: every pod lands on the real node.
    let options = Options { nodes: 0, local_volumes: Some(node::local_volumes()), ..Options::default() };
    let plane = ControlPlane::start_with(&bin, &dir, options)?;
    plane.install_crds(&cluster::upstream_crds()?)?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: velero\n")?;
    let node = RealNode::start(&plane)?;
    let operator_kubeconfig = plane.operator_kubeconfig()?;
    // The suite's policy, and the operator probing every clinic as users reach it, often enough
    // for a scenario to see a verdict change (the_operator_sees_what_users_see).
    let mut policy: serde_yaml::Value = serde_yaml::from_str(&operator::suite_policy()?)?;
    policy["clinicProbe"] = serde_yaml::from_str(
        "{operatorNamespace: clinic-operator, intervalSeconds: 5, timeoutSeconds: 3, failuresBeforeDown: 2}",
    )?;
    // A PriorityClass the platform lets clinics use (operator_killed_mid_converge's MariaDB).
    policy["priorityClasses"] = serde_yaml::from_str("[clinic-critical]")?;
    plane.apply_yaml(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: clinic-critical}\nvalue: 1000000\ndescription: clinic databases (the real-pods tier)\n",
    )?;
    let policy_file = plane.dir.join("policy-probing.yaml");
    std::fs::write(&policy_file, serde_yaml::to_string(&policy)?)?;
    let operator = OperatorProcess::start_with(
        &operator::binary()?,
        &operator_kubeconfig,
        &plane.dir.join("logs"),
        &["--policy", &policy_file.display().to_string()],
    )?;
    let env = Env { plane, node: Some(node), operator: Some(Mutex::new(operator)), operator_kubeconfig };
    eventually("operator /readyz", Duration::from_secs(60), || {
        Ok(env.operator().http_get("/readyz").is_ok_and(|(c, _)| c == 200))
    })?;
    eprintln!("real-pods setup done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(env)
}

fn main() -> ExitCode {
    node::teardown_on_signal();
    let mut args = Arguments::from_args();
    // One scenario at a time: some share a clinic, all share two cores.
    args.test_threads = Some(1);
    let started = Instant::now();
    let env = match setup() {
        Ok(env) => Arc::new(env),
        Err(e) => {
            eprintln!("real-pods setup failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    type Scenario = fn(&Env) -> Result<()>;
    macro_rules! scenarios {
        ($($scenario:ident),* $(,)?) => { vec![$((stringify!($scenario), $scenario as Scenario)),*] };
    }
    let scenarios: Vec<(&str, Scenario)> = scenarios![
        minimal_example_runs,
        exporters_answer,
        drift_on_running_workload_is_put_back,
        minimal_clinic_deleted_stops_its_pods,
        gateway_serves_frontend_and_backend,
        logs_and_traces_join_at_the_gateway,
        no_generated_secret_in_any_container_log,
        network_policy_matrix,
        gateway_api_routes_real_requests,
        an_ingress_on_traefik_is_served_over_tls_only,
        mariadb_pod_loss_keeps_data_and_credentials,
        mariadb_data_and_dump_are_encrypted_at_rest,
        mariadb_refuses_plaintext_and_verifies_its_certificate,
        the_backend_serves_the_gateway_over_tls_only,
        the_operator_sees_what_users_see,
        load_through_faults,
        an_installed_clinic_moves_to_tls,
        backup_hook_dump_restores_into_a_fresh_clinic,
        operator_killed_mid_converge,
        an_old_backend_statefulset_moves_to_its_headless_service,
    ];
    let trials = scenarios.into_iter().map(|(name, scenario)| trial(&env, name, scenario)).collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        eprintln!("--- operator log (tail) ---\n{}", env.operator_log());
        if let Some(node) = env.node.as_ref() {
            eprintln!("--- kubelet log (tail) ---\n{}", node.log_tail("kubelet", 20));
        }
        eprintln!("{}", failure_summary());
    }
    eprintln!("real-pods suite took {:.1}s", started.elapsed().as_secs_f64());
    drop(env);
    conclusion.exit_code()
}
