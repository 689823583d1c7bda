//! Fleet benchmark: for each N, a fresh local control plane (kube-apiserver, controller-manager,
//! scheduler, etcd, kwok), the operator (release build, the chart's RBAC), N ClinicPlatforms each
//! in its own namespace, and measurements:
//!
//! - time until all are Ready, and the convergence curve (Ready count every second);
//! - API requests by verb and resource from the API server's `apiserver_request_total`, and the
//!   operator's own writes by verb; writes per converged clinic;
//! - writes during a forced full resync of the converged fleet (the operator restarted: every
//!   clinic reconciled again from fresh caches);
//! - operator peak RSS and CPU seconds; reconcile latency p50/p99 from its histogram.
//!
//! Results go to `<out>/fleet-<N>.json` and `<out>/curve-<N>.csv`. Bounded: each N stops at its
//! timeout. `make bench` runs it; not part of `make test`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clinic_operator_e2e::cluster::{self, ControlPlane, Options};
use clinic_operator_e2e::operator::{self, OperatorProcess};
use clinic_operator_e2e::workspace_root;
use serde_json::{Value, json};

struct Args {
    sizes: Vec<usize>,
    out: PathBuf,
    concurrency: u16,
    timeout: Duration,
}

fn args() -> Result<Args> {
    let mut args = Args {
        sizes: vec![100, 300, 1000],
        out: workspace_root().join("bench/results"),
        concurrency: 16,
        timeout: Duration::from_secs(900),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--clinics" => {
                args.sizes = value()?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--timeout" => args.timeout = Duration::from_secs(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "fleet-bench [--clinics 100,300,1000] [--concurrency 16] [--timeout 900] [--out bench/results]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// `name{labels} value` lines of a Prometheus/OpenMetrics text body, for one metric name.
fn samples(body: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            let Some((labels, value)) = rest.split_once("} ") else { continue };
            (labels, value)
        } else if let Some(value) = rest.strip_prefix(' ') {
            ("", value)
        } else {
            continue;
        };
        let mut map = BTreeMap::new();
        for pair in split_labels(labels) {
            if let Some((k, v)) = pair.split_once('=') {
                map.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
        if let Ok(v) = value.split_whitespace().next().unwrap_or("").parse::<f64>() {
            out.push((map, v));
        }
    }
    out
}

fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// API server requests by (verb, resource[/subresource]).
fn apiserver_requests(plane: &ControlPlane) -> Result<BTreeMap<(String, String), f64>> {
    let body = plane.kubectl(&["get", "--raw", "/metrics"])?;
    let mut out = BTreeMap::new();
    for (labels, v) in samples(&body, "apiserver_request_total") {
        let mut resource = labels.get("resource").cloned().unwrap_or_default();
        if let Some(sub) = labels.get("subresource").filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        *out.entry((labels.get("verb").cloned().unwrap_or_default(), resource)).or_insert(0.0) += v;
    }
    Ok(out)
}

fn delta(
    after: &BTreeMap<(String, String), f64>,
    before: &BTreeMap<(String, String), f64>,
) -> BTreeMap<(String, String), f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

const WRITE_VERBS: &[&str] = &["POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"];

/// Resources only the operator writes (spec, not status, for workloads): its writes as the API
/// server counts them.
fn operator_resource(resource: &str) -> bool {
    matches!(
        resource,
        "clinicplatforms"
            | "clinicplatforms/status"
            | "configmaps"
            | "secrets"
            | "services"
            | "statefulsets"
            | "deployments"
            | "networkpolicies"
            | "horizontalpodautoscalers"
            | "poddisruptionbudgets"
            | "ingresses"
            | "servicemonitors"
            | "prometheusrules"
            | "schedules"
            | "namespaces"
    )
}

/// Operator writes by verb and its reconcile histogram, from its /metrics.
struct OperatorMetrics {
    writes: BTreeMap<String, f64>,
    reconciles: f64,
    buckets: Vec<(f64, f64)>,
    errors: f64,
}

fn operator_metrics(op: &OperatorProcess) -> Result<OperatorMetrics> {
    let (_, body) = op.http_get("/metrics")?;
    let writes = samples(&body, "clinic_operator_api_writes_total")
        .into_iter()
        .map(|(l, v)| (l.get("verb").cloned().unwrap_or_default(), v))
        .collect();
    let reconciles = samples(&body, "clinic_operator_reconciliations_total").iter().map(|(_, v)| v).sum();
    let errors = samples(&body, "clinic_operator_reconcile_errors_total").iter().map(|(_, v)| v).sum();
    let mut buckets: Vec<(f64, f64)> = samples(&body, "clinic_operator_reconcile_duration_seconds_bucket")
        .into_iter()
        .map(|(l, v)| {
            let le = l.get("le").map(String::as_str).unwrap_or("+Inf");
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) }, v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(OperatorMetrics { writes, reconciles, buckets, errors })
}

/// Quantile from cumulative buckets, interpolated inside the bucket (as histogram_quantile).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let within = if count > prev.1 { (rank - prev.1) / (count - prev.1) } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * within);
        }
        prev = (le, count);
    }
    None
}

/// (VmRSS, VmHWM) in MiB and CPU seconds of a process.
fn process_usage(pid: u32) -> Option<(f64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<f64> {
        status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse::<f64>().ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = clock_ticks();
    let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks;
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0, cpu))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn ready_count(plane: &ControlPlane) -> Result<usize> {
    let out = plane.kubectl(&[
        "get",
        "clinicplatforms",
        "-A",
        "--no-headers",
        "-o",
        "custom-columns=R:.status.conditions[?(@.type==\"Ready\")].status",
    ])?;
    Ok(out.lines().filter(|l| l.trim() == "True").count())
}

fn create_clinics(plane: &ControlPlane, n: usize) -> Result<()> {
    // In batches: one kubectl apply per 50 clinics, as a GitOps sync would.
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let mut yaml = String::new();
        for i in chunk {
            let _ = write!(
                yaml,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: clinic-{i:04}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n    pod-security.kubernetes.io/audit: restricted\n    pod-security.kubernetes.io/warn: restricted\n---\napiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: clinic-{i:04}\n  namespace: clinic-{i:04}\nspec: {{}}\n"
            );
        }
        plane.apply_yaml(&yaml)?;
    }
    Ok(())
}

fn writes_of(requests: &BTreeMap<(String, String), f64>, filter: impl Fn(&str) -> bool) -> f64 {
    requests
        .iter()
        .filter(|((verb, resource), _)| WRITE_VERBS.contains(&verb.as_str()) && filter(resource))
        .map(|(_, v)| v)
        .sum()
}

fn table(requests: &BTreeMap<(String, String), f64>) -> Value {
    let mut rows: Vec<_> = requests.iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1));
    Value::Array(
        rows.into_iter()
            .map(|((verb, resource), v)| json!({"verb": verb, "resource": resource, "count": v}))
            .collect(),
    )
}

fn run_one(n: usize, args: &Args, bin: &Path) -> Result<Value> {
    eprintln!("== {n} clinics");
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("clinic-bench-{}-{n}", std::process::id()));
    // ~6 pods per clinic (MariaDB, backend, 2 frontend, 2 gateway), 500 pods per fake node.
    let nodes = (n * 7).div_ceil(500).max(2);
    let options = Options { nodes, pods_per_node: 500, controller_qps: Some(300), ..Options::default() };
    let plane = ControlPlane::start_with(&cluster::binaries()?, &dir, options)?;
    plane.install_crds(&cluster::upstream_crds()?)?;
    plane.install_crds(&[workspace_root().join("crds/clinicplatform.yaml")])?;
    plane.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: velero\n")?;
    let kubeconfig = plane.operator_kubeconfig()?;
    let concurrency = format!("--concurrency={}", args.concurrency);
    let extra = [concurrency.as_str(), "--log-filter=info,kube=warn"];
    let mut op = OperatorProcess::start_with(bin, &kubeconfig, &dir.join("logs"), &extra)?;
    let wait_ready = |op: &OperatorProcess| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if op.http_get("/readyz").is_ok_and(|(c, _)| c == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("operator not ready")
    };
    wait_ready(&op)?;
    eprintln!(
        "   control plane and operator up in {:.0}s ({nodes} fake nodes)",
        started.elapsed().as_secs_f64()
    );

    let before = apiserver_requests(&plane)?;
    let t0 = Instant::now();
    create_clinics(&plane, n)?;
    let created_in = t0.elapsed().as_secs_f64();
    let mut curve = vec![(0.0, 0usize)];
    let mut peak_rss = 0.0f64;
    let mut converged_in = None;
    while t0.elapsed() < args.timeout {
        std::thread::sleep(Duration::from_secs(1));
        let ready = ready_count(&plane)?;
        let t = t0.elapsed().as_secs_f64();
        curve.push((t, ready));
        if let Some((rss, _, _)) = op.pid().and_then(process_usage) {
            peak_rss = peak_rss.max(rss);
        }
        if ready == n {
            converged_in = Some(t);
            break;
        }
        if curve.len() % 15 == 0 {
            eprintln!("   {t:>5.0}s  {ready}/{n} Ready");
        }
    }
    // Let the last status writes and events land before counting.
    std::thread::sleep(Duration::from_secs(3));
    let after = apiserver_requests(&plane)?;
    let converge_requests = delta(&after, &before);
    let om = operator_metrics(&op)?;
    let (rss_now, hwm, cpu) = op.pid().and_then(process_usage).unwrap_or_default();
    let converge_ops = om.writes.values().sum::<f64>();
    eprintln!(
        "   converged: {} in {:.1}s; operator writes {converge_ops:.0} ({:.1}/clinic); peak RSS {:.1} MiB; CPU {cpu:.1}s",
        if converged_in.is_some() { "all" } else { "NOT all" },
        converged_in.unwrap_or(f64::NAN),
        converge_ops / n as f64,
        hwm.max(peak_rss)
    );

    // The fleet is Ready, but controllers still move things (autoscalers raise replicas to their
    // minimum, the last statuses land): wait until the operator has written nothing for 15 s.
    let quiet_since = Instant::now();
    let mut last = operator_metrics(&op)?.writes.values().sum::<f64>();
    let mut still = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(180) && still.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_secs(1));
        let now = operator_metrics(&op)?.writes.values().sum::<f64>();
        if now != last {
            last = now;
            still = Instant::now();
        }
    }
    let settle_writes = last - converge_ops;
    eprintln!(
        "   quiet after {:.0}s more ({settle_writes:.0} writes while settling)",
        quiet_since.elapsed().as_secs_f64()
    );

    // Forced full resync: a fresh operator process lists everything and reconciles every clinic
    // once; a converged fleet must cost no write.
    op.kill();
    let before_resync = apiserver_requests(&plane)?;
    let t1 = Instant::now();
    op.restart()?;
    wait_ready(&op)?;
    // Done when every clinic's status has been looked at again: reconciles that only waited
    // for the caches do not count, so wait for N reconciles after readiness, then for calm.
    let mut resync_reconciles = 0.0;
    let mut previous = -1.0;
    while t1.elapsed() < Duration::from_secs(300) {
        let m = operator_metrics(&op)?;
        resync_reconciles = m.reconciles;
        if m.reconciles >= n as f64 && m.reconciles == previous {
            break;
        }
        previous = m.reconciles;
        std::thread::sleep(Duration::from_secs(2));
    }
    let resync_in = t1.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let resync = operator_metrics(&op)?;
    let resync_requests = delta(&apiserver_requests(&plane)?, &before_resync);
    let (_, resync_hwm, resync_cpu) = op.pid().and_then(process_usage).unwrap_or_default();
    let resync_writes = resync.writes.values().sum::<f64>();
    eprintln!(
        "   resync: {resync_reconciles:.0} reconciles in {resync_in:.1}s, operator writes {resync_writes:.0}, API writes on operator resources {:.0}",
        writes_of(&resync_requests, operator_resource)
    );

    let children = clinic_operator_children();
    let result = json!({
        "clinics": n,
        "fake_nodes": nodes,
        "operator_concurrency": args.concurrency,
        "created_in_seconds": created_in,
        "converged": converged_in.is_some(),
        "converged_in_seconds": converged_in,
        "children_per_clinic": children,
        "operator_writes": om.writes,
        "operator_writes_total": converge_ops,
        "operator_writes_per_clinic": converge_ops / n as f64,
        "operator_writes_while_settling": settle_writes,
        "api_writes_on_operator_resources": writes_of(&converge_requests, operator_resource),
        "api_writes_on_operator_resources_per_clinic": writes_of(&converge_requests, operator_resource) / n as f64,
        "api_writes_all": writes_of(&converge_requests, |_| true),
        "api_requests": table(&converge_requests),
        "reconciles": om.reconciles,
        "reconcile_errors": om.errors,
        "reconcile_p50_seconds": quantile(&om.buckets, 0.5),
        "reconcile_p99_seconds": quantile(&om.buckets, 0.99),
        "operator_peak_rss_mib": hwm.max(peak_rss),
        "operator_rss_after_mib": rss_now,
        "operator_cpu_seconds": cpu,
        "resync": {
            "reconciles": resync_reconciles,
            "seconds": resync_in,
            "operator_writes": resync.writes,
            "operator_writes_total": resync_writes,
            "api_writes_on_operator_resources": writes_of(&resync_requests, operator_resource),
            "api_requests": table(&resync_requests),
            "reconcile_p50_seconds": quantile(&resync.buckets, 0.5),
            "reconcile_p99_seconds": quantile(&resync.buckets, 0.99),
            "operator_peak_rss_mib": resync_hwm,
            "operator_cpu_seconds": resync_cpu,
        },
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join(format!("fleet-{n}.json")), serde_json::to_string_pretty(&result)?)?;
    let mut csv = String::from("seconds,ready\n");
    for (t, r) in &curve {
        let _ = writeln!(csv, "{t:.1},{r}");
    }
    std::fs::write(args.out.join(format!("curve-{n}.csv")), csv)?;
    drop(op);
    drop(plane);
    Ok(result)
}

/// Objects the operator makes for a default clinic: what `render` prints, the Velero Schedule among them.
fn clinic_operator_children() -> usize {
    let yaml = "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata: {name: c, namespace: c}\nspec: {}\n";
    let out = std::process::Command::new(operator::binary().unwrap_or_default())
        .args(["render", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut s| s.write_all(yaml.as_bytes()));
            child.wait_with_output()
        });
    // One top-level `kind:` per document (nested ones are indented).
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("kind: ")).count())
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let args = args()?;
    let bin = operator::binary()?;
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())),
        "memory_gib": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok())).map(|k| (k / 1024.0 / 1024.0).round()),
    });
    let mut results = Vec::new();
    for &n in &args.sizes {
        results.push(run_one(n, &args, &bin)?);
    }
    let summary = json!({ "machine": machine, "results": results });
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    eprintln!("results in {}", args.out.display());
    Ok(())
}
